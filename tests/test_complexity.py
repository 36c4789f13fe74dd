import pytest

from srexport.archs import build
from srexport.complexity import macs, macs_for_output


def test_published_multiply_adds_for_1280x720():
    # REFERENCE: SRCNN 9-5-5 52.7 G, VDSR 612.6 G, DRCN 17,974 G for one 1280x720 output.
    assert macs_for_output(build("srcnn_955", 2)) / 1e9 == pytest.approx(52.7, abs=0.05)
    assert macs_for_output(build("vdsr", 2)) / 1e9 == pytest.approx(612.6, abs=0.05)
    assert macs_for_output(build("drcn", 2)) / 1e9 == pytest.approx(17974, abs=1)


def test_hand_counted_espcn_and_fsrcnn():
    h, w = 10, 7
    espcn = (25 * 64 + 9 * 64 * 32 + 9 * 32 * 9) * h * w
    assert macs(build("espcn", 3), h, w) == espcn
    d, s, m = 56, 12, 4
    body = (25 * d + d * s + m * 9 * s * s + s * d) * h * w
    deconv = h * w * d * 81  # each LR pixel scatters a 9x9 kernel
    assert macs(build("fsrcnn", 2), h, w) == body + deconv
