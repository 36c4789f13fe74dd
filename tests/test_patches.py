"""srexport.patches: aligned LR/HR patch pairs by the evaluation protocol, dihedral augmentation."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srexport.data import imresize, load_image, protocol_pair, round_uint8, y_channel
from srexport.errors import SRExportError
from srexport.patches import PatchSet, default_holdout, dihedral, split_holdout

T91 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "T91"


def texture(rng: np.random.Generator, h: int, w: int, gray: bool = False) -> np.ndarray:
    """A random texture with detail at several scales (noise upscaled from coarse grids)."""
    img = np.zeros((h, w, 3))
    for cells in (4, 9, 23):
        coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        img += np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float64)
    img = img / 3 + rng.normal(0, 6, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img[..., 0] if gray else img


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "train"
    d.mkdir()
    for i, (h, w) in enumerate([(50, 61), (47, 40), (64, 64), (20, 90)]):
        Image.fromarray(texture(rng, h, w, gray=(i == 1))).save(d / f"im{i}.png")
    return d


@pytest.mark.parametrize("scale, hr_patch, lp", [(2, 33, 16), (3, 33, 11), (4, 33, 8), (3, 21, 7)])
def test_shapes(folder, scale, hr_patch, lp):
    ps = PatchSet.from_folder(folder, scale, hr_patch, 10)
    assert ps.lr.dtype == np.uint8 and ps.hr.dtype == np.uint8
    assert ps.lr.shape[1:] == (lp, lp) and ps.hr.shape[1:] == (lp * scale, lp * scale)
    assert len(ps) == len(ps.lr) == len(ps.hr) == len(ps.origins) > 0
    assert ps.lr_patch == lp and ps.hr_patch == lp * scale
    lr, hr, mask = next(ps.batches(5, np.random.default_rng(0)))
    assert lr.shape == (5, 1, lp, lp) and hr.shape == (5, 1, lp * scale, lp * scale) and mask is None


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_is_the_protocol_imresize_of_hr(folder, scale):
    ps = PatchSet.from_folder(folder, scale, 24, 8)
    lp, hp = ps.lr_patch, ps.hr_patch
    pairs = {i: protocol_pair(load_image(folder / name), scale) for i, name in enumerate(ps.sources)}
    for n in range(len(ps)):
        img, factor, r, c = ps.origins[n]
        assert factor == 0
        hr_y, lr_y = pairs[img]
        np.testing.assert_array_equal(ps.lr[n], lr_y[r:r + lp, c:c + lp])
        np.testing.assert_array_equal(ps.hr[n], hr_y[r * scale:r * scale + hp, c * scale:c * scale + hp])
    # the 20x90 image is too small for 24-pixel patches at every scale: it contributes none
    assert 3 not in set(ps.origins[:, 0].tolist())


def test_resize_factors_add_downscaled_copies(folder):
    one = PatchSet.from_folder(folder, 2, 16, 8)
    more = PatchSet.from_folder(folder, 2, 16, 8, resize_factors=(1.0, 0.8))
    assert len(more) > len(one)
    n = int(np.flatnonzero(more.origins[:, 1] == 1)[0])
    img, _, r, c = more.origins[n]
    y = round_uint8(imresize(y_channel(load_image(folder / more.sources[img])), 0.8))
    y = y[: y.shape[0] // 2 * 2, : y.shape[1] // 2 * 2]
    lr = round_uint8(imresize(y, 0.5))
    np.testing.assert_array_equal(more.lr[n], lr[r:r + 8, c:c + 8])
    np.testing.assert_array_equal(more.hr[n], y[2 * r:2 * r + 16, 2 * c:2 * c + 16])


def test_dihedral_is_the_group_of_8_flips_and_rotations():
    a = np.arange(12).reshape(3, 4)
    expected = [np.rot90(a, k) for k in range(4)] + [np.rot90(np.fliplr(a), k) for k in range(4)]
    for k in range(8):
        np.testing.assert_array_equal(dihedral(a, k), expected[k])
    sq = np.random.default_rng(0).integers(0, 255, (5, 5))
    assert len({dihedral(sq, k).tobytes() for k in range(8)}) == 8



@pytest.mark.parametrize("scale, context", [(2, 3), (3, 2), (4, 1)])
def test_context_windows_are_real_image_around_the_patch(folder, scale, context):
    ps = PatchSet.from_folder(folder, scale, 12 * scale, 4 * scale, context=context)
    lp, w = 12, 12 + 2 * context
    assert ps.lr_patch == lp and ps.hr_patch == lp * scale
    assert ps.lr.shape[1:] == (w, w) and ps.hr.shape[1:] == (w * scale, w * scale)
    pairs = {i: protocol_pair(load_image(folder / name), scale) for i, name in enumerate(ps.sources)}
    for n in range(len(ps)):
        img, _, r, c = ps.origins[n]
        hr_y, lr_y = pairs[img]
        np.testing.assert_array_equal(ps.lr[n], lr_y[r:r + w, c:c + w])
        np.testing.assert_array_equal(ps.hr[n], hr_y[r * scale:(r + w) * scale, c * scale:(c + w) * scale])
        h, wd = lr_y.shape
        np.testing.assert_array_equal(ps.edges[n], [r == 0, r + w == h, c == 0, c + w == wd])


@pytest.mark.parametrize("scale, context", [(2, 3), (4, 2)])
def test_loss_masks_leave_out_the_context_except_at_image_edges_and_cover_every_pixel(folder, scale, context):
    ps = PatchSet.from_folder(folder, scale, 8 * scale, 5 * scale, context=context)
    m = context * scale
    masks = ps.loss_mask(np.arange(len(ps)))
    covered = {}
    for n in range(len(ps)):
        img, _, r, c = ps.origins[n]
        top, bottom, left, right = ps.edges[n]
        rows = np.flatnonzero(masks[n].any(1))
        cols = np.flatnonzero(masks[n].any(0))
        assert masks[n].sum() == len(rows) * len(cols)  # a rectangle
        w = masks.shape[-1]
        assert (rows[0], rows[-1], cols[0], cols[-1]) == (0 if top else m, w - 1 if bottom else w - 1 - m,
                                                          0 if left else m, w - 1 if right else w - 1 - m)
        hr_shape = protocol_pair(load_image(folder / ps.sources[img]), scale)[0].shape
        cover = covered.setdefault(img, np.zeros(hr_shape, bool))
        cover[r * scale:r * scale + w, c * scale:c * scale + w] |= masks[n].astype(bool)
    # every HR pixel of every image that has a window is in some window's loss, image edges included
    assert covered and all(cover.all() for cover in covered.values())


def test_loss_masks_are_transformed_with_their_patches(folder):
    ps = PatchSet.from_folder(folder, 3, 24, 9, context=2)
    idx = np.arange(len(ps))
    ks = idx % 8
    lr, hr, mask = ps.batch(idx, ks)
    plain = ps.loss_mask(idx)
    assert mask.dtype == np.uint8 and mask.shape == hr.shape
    for j in idx:
        np.testing.assert_array_equal(lr[j, 0], dihedral(ps.lr[j], ks[j]))
        np.testing.assert_array_equal(hr[j, 0], dihedral(ps.hr[j], ks[j]))
        np.testing.assert_array_equal(mask[j, 0], dihedral(plain[j], ks[j]))
    untransformed = ps.batch(idx)[2]
    assert untransformed.shape == hr.shape and (untransformed[:, 0] == plain).all()


def test_without_context_the_patches_are_the_plain_grid(folder):
    ps = PatchSet.from_folder(folder, 3, 24, 8)
    assert ps.context == 0 and ps.lr.shape[1:] == (8, 8)
    for img, _, r, c in ps.origins:
        assert r % 3 == 0 and c % 3 == 0  # stride 8 HR -> 3 LR, no extra window at the edges
    assert all(b[2] is None for b in ps.batches(4, np.random.default_rng(0), steps=2))
    with pytest.raises(SRExportError, match="context"):
        PatchSet.from_folder(folder, 3, 24, 8, context=-1)


def test_an_image_smaller_than_the_window_gives_no_window(folder):
    # the fixture's 20x90 image holds 16-pixel patches at x2, not 28-pixel windows (context 3)
    assert PatchSet.from_folder(folder, 2, 16, 8).images_used == 4
    assert PatchSet.from_folder(folder, 2, 16, 8, context=3).images_used == 3


def test_augmentation_applies_the_same_transform_to_lr_and_hr(folder):
    ps = PatchSet.from_folder(folder, 3, 24, 8)
    idx = np.arange(min(len(ps), 40))
    for k in range(8):
        lr, hr, _ = ps.batch(idx, np.full(len(idx), k))
        for j, n in enumerate(idx):
            np.testing.assert_array_equal(lr[j, 0], dihedral(ps.lr[n], k))
            np.testing.assert_array_equal(hr[j, 0], dihedral(ps.hr[n], k))
    # mixed transforms in one batch: each sample gets its own
    ks = np.arange(len(idx)) % 8
    lr, hr, _ = ps.batch(idx, ks)
    for j, n in enumerate(idx):
        np.testing.assert_array_equal(lr[j, 0], dihedral(ps.lr[n], ks[j]))
        np.testing.assert_array_equal(hr[j, 0], dihedral(ps.hr[n], ks[j]))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_transformed_pairs_are_still_protocol_pairs(scale):
    # MATLAB bicubic commutes with the dihedral group on a modcropped image, so an augmented
    # (HR, LR) pair is (HR', imresize(HR', 1/s)) for the transformed image.
    hr = y_channel(texture(np.random.default_rng(2), 12 * scale, 12 * scale))
    lr = imresize(hr, 1 / scale)
    for k in range(8):
        np.testing.assert_allclose(imresize(dihedral(hr, k), 1 / scale), dihedral(lr, k), atol=1e-9)


def test_batches_cover_an_epoch_and_are_reproducible(folder):
    ps = PatchSet.from_folder(folder, 2, 16, 6, augment=False)
    seen = []
    for lr, hr, _ in ps.batches(7, np.random.default_rng(3)):
        seen += [x.tobytes() for x in hr[:, 0]]
    assert len(seen) == len(ps) and sorted(seen) == sorted(x.tobytes() for x in ps.hr)
    a = [b[1].copy() for b in PatchSet.from_folder(folder, 2, 16, 6).batches(7, np.random.default_rng(5), steps=4)]
    b = [b[1].copy() for b in PatchSet.from_folder(folder, 2, 16, 6).batches(7, np.random.default_rng(5), steps=4)]
    assert len(a) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_batches_follow_the_epoch_plan(folder):
    ps = PatchSet.from_folder(folder, 3, 24, 8)
    perm, ks = ps.epoch_plan(4, np.random.default_rng(9))
    lr, hr, _ = next(ps.batches(4, np.random.default_rng(9)))
    for j in range(4):
        np.testing.assert_array_equal(lr[j, 0], dihedral(ps.lr[perm[j]], ks[j]))
        np.testing.assert_array_equal(hr[j, 0], dihedral(ps.hr[perm[j]], ks[j]))


def test_steps_wrap_around_a_small_set(folder):
    ps = PatchSet.from_folder(folder, 4, 32, 32)
    n = sum(len(lr) for lr, _, _ in ps.batches(4, np.random.default_rng(0), steps=3 * len(ps)))
    assert n >= 3 * len(ps)


@pytest.mark.parametrize("context, world", [(0, 2), (2, 3)])
def test_shards_split_each_batch_over_the_processes_with_their_shares_of_its_loss(folder, context, world):
    ps = PatchSet.from_folder(folder, 2, 16, 6, context=context)
    whole = list(ps.batches(5, np.random.default_rng(4), steps=6))
    parts = [list(ps.shards(5, np.random.default_rng(4), rank, world, steps=6)) for rank in range(world)]
    for step, (lr, hr, mask) in enumerate(whole):
        got = [parts[rank][step] for rank in range(world)]
        # the ranks' parts, in rank order, are the one-process batch, sample for sample
        np.testing.assert_array_equal(np.concatenate([b[0] for b, _ in got]), lr)
        np.testing.assert_array_equal(np.concatenate([b[1] for b, _ in got]), hr)
        assert sorted(len(b[0]) for b, _ in got) in ([2, 3], [1, 2, 2])
        shares = [share for _, share in got]
        assert sum(shares) == pytest.approx(1.0)
        if context:  # the share is the part's loss-mask pixels, which differ between windows
            np.testing.assert_array_equal(np.concatenate([b[2] for b, _ in got]), mask)
            assert shares == pytest.approx([b[2].sum() / mask.sum() for b, _ in got])
        else:
            assert shares == pytest.approx([len(b[0]) / len(lr) for b, _ in got])


def test_a_process_without_a_sample_gets_a_stand_in_that_carries_no_weight(folder):
    ps = PatchSet.from_folder(folder, 2, 16, 6, augment=False)
    rng = np.random.default_rng(0)
    (batch, share), = ps.shards(2, rng, 2, 3, steps=1)  # a batch of 2 over 3 processes: rank 2 has none
    assert share == 0.0 and len(batch[0]) == 1
    with pytest.raises(SRExportError, match=r"process rank 3 is not in 0..2"):
        next(ps.shards(2, rng, 3, 3))


def test_cache_round_trip(folder, tmp_path):
    cache = tmp_path / "cache"
    a = PatchSet.from_folder(folder, 3, 24, 8, cache_dir=cache)
    files = list(cache.glob("patches-*.npz"))
    assert len(files) == 1
    b = PatchSet.from_folder(folder, 3, 24, 8, cache_dir=cache)
    np.testing.assert_array_equal(a.lr, b.lr)
    np.testing.assert_array_equal(a.hr, b.hr)
    np.testing.assert_array_equal(a.origins, b.origins)
    PatchSet.from_folder(folder, 2, 24, 8, cache_dir=cache)  # other settings, other file
    assert len(list(cache.glob("patches-*.npz"))) == 2
    c = PatchSet.from_folder(folder, 3, 24, 8, cache_dir=cache, context=2)
    d = PatchSet.from_folder(folder, 3, 24, 8, cache_dir=cache, context=2)
    assert len(list(cache.glob("patches-*.npz"))) == 3
    assert d.context == 2 and d.lr.shape[1:] == (12, 12)
    np.testing.assert_array_equal(c.edges, d.edges)


def test_split_holdout():
    paths = [Path(f"im{i}.png") for i in range(20)]
    train, val = split_holdout(paths, 3, seed=4)
    assert len(val) == 3 and len(train) == 17 and not set(train) & set(val)
    assert set(train) | set(val) == set(paths)
    assert split_holdout(paths, 3, seed=4) == (train, val)
    assert train == sorted(train, key=paths.index)
    assert split_holdout(paths, 3, seed=5)[1] != val or split_holdout(paths, 3, seed=6)[1] != val
    with pytest.raises(SRExportError):
        split_holdout(paths[:2], 2, seed=0)
    with pytest.raises(SRExportError):
        split_holdout(paths, 0, seed=0)
    assert default_holdout(91) == 5 and default_holdout(4) == 1


def test_user_errors(tmp_path, folder):
    with pytest.raises(SRExportError, match="no such folder"):
        PatchSet.from_folder(tmp_path / "missing", 2, 32, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SRExportError, match="no images"):
        PatchSet.from_folder(tmp_path / "empty", 2, 32, 16)
    with pytest.raises(SRExportError, match=rf"^{re.escape(str(folder))}: no training image is at least 200x200 "
                                            r"pixels, the HR window at x2 \(the largest is \d+x\d+\)$"):
        PatchSet.from_folder(folder, 2, 200, 16)
    with pytest.raises(SRExportError, match="the HR window at x2 with context 60"):
        PatchSet.from_folder(folder, 2, 32, 16, context=60)


@pytest.mark.slow
def test_t91_throughput():
    if not T91.is_dir():
        pytest.skip(f"dataset not found: {T91}")
    ps = PatchSet.from_folder(T91, 3, 33, 14)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    n = sum(len(lr) for lr, _, _ in ps.batches(128, rng))
    rate = n / (time.perf_counter() - t)
    print(f"T91 x3 33/14: {len(ps)} patches, {rate:,.0f} samples/s")
    assert rate > 20_000
