import numpy as np
import pytest
import torch

from srexport.archs.bicubic import MatlabBicubicUpsample, phase_weights, symmetric_pad2
from srexport.data import imresize


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (2, 2), (3, 7), (13, 11), (32, 24)])
def test_matches_matlab_imresize_port(scale, h, w):
    rng = np.random.default_rng(h * 100 + w)
    img = rng.random((h, w))
    expected = imresize(img, scale)
    got = MatlabBicubicUpsample(scale)(torch.from_numpy(img).float()[None, None])[0, 0].double().numpy()
    assert got.shape == (scale * h, scale * w)
    assert np.abs(got - expected).max() < 1e-6


def test_phase_weights_are_normalised_keys_cubic():
    w = phase_weights(2)
    assert np.allclose(w.sum(axis=1), 1)
    # x2 phase 0 sits a quarter pixel left of its input pixel: Keys weights at distances 1.75..-2.25.
    assert np.allclose(w[0], [-0.0234375, 0.2265625, 0.8671875, -0.0703125, 0.0])


def test_symmetric_pad_mirrors_half_sample():
    x = torch.arange(4.0).view(1, 1, 1, 4)
    padded = symmetric_pad2(x)[0, 0, 2]
    assert padded.tolist() == [1, 0, 0, 1, 2, 3, 3, 2]
    one = symmetric_pad2(torch.ones(1, 1, 1, 1) * 5)
    assert one.shape == (1, 1, 5, 5) and (one == 5).all()
