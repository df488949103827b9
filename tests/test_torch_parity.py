"""fastconv.conv2d against torch.nn.functional.conv2d.

Both are computed in the same dtype; each is within the forward error bound
of the exact result, so they may differ by at most twice that bound
(tests/checks.py).
"""

import numpy as np
import pytest

import fastconv
from checks import DTYPE_IDS, FLOAT_DTYPES, assert_close_to_other_impl, random_array
from reference import (
    conv2d_magnitude_nchw,
    normalize_padding,
    same_padding,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using padding='same':UserWarning")

# (id, n, c, k, h, w, kh, kw, stride, padding, dilation, groups, relu)
CONFIGS = [
    ("basic-3x3-p1", 2, 3, 8, 9, 10, 3, 3, 1, 1, 1, 1, False),
    ("s2-p0-relu", 1, 5, 7, 11, 9, 3, 3, 2, 0, 1, 1, True),
    ("d2-p2", 2, 4, 6, 10, 10, 3, 3, 1, 2, 2, 1, False),
    ("s(2,1)-d(1,2)-p(1,2)", 1, 6, 5, 9, 12, 3, 3, (2, 1), (1, 2), (1, 2), 1, True),
    ("groups2", 2, 8, 6, 8, 7, 3, 3, 1, 1, 1, 2, False),
    ("groups4-s2", 1, 8, 12, 9, 9, 3, 3, 2, 1, 1, 4, True),
    ("depthwise", 2, 16, 16, 8, 9, 3, 3, 1, 1, 1, 16, True),
    ("depthwise-mult2-s2", 1, 5, 10, 9, 8, 5, 5, 2, 2, 1, 5, False),
    ("asym-pad", 2, 3, 4, 7, 8, 3, 2, 1, ((0, 2), (1, 0)), 1, 1, False),
    ("asym-pad-s2-d2", 1, 4, 4, 11, 10, 3, 3, 2, ((2, 1), (0, 3)), 2, 2, True),
    ("same-s1-k3", 2, 3, 5, 7, 9, 3, 3, 1, "same", 1, 1, False),
    ("same-s1-k4-odd-total", 1, 4, 6, 7, 8, 4, 2, 1, "same", 1, 1, True),
    ("same-s1-d2", 1, 4, 4, 9, 9, 3, 3, 1, "same", 2, 4, False),
    ("same-s2-odd-total", 2, 3, 5, 8, 10, 3, 3, 2, "same", 1, 1, False),
    ("same-s2-k4", 1, 6, 6, 9, 9, 4, 4, 2, "same", 1, 3, True),
    ("valid-k5", 1, 3, 4, 9, 8, 5, 5, 1, "valid", 1, 1, False),
    ("vgg-3x3-64", 1, 64, 64, 12, 12, 3, 3, 1, 1, 1, 1, True),
]


def torch_conv_nchw(x, weight, bias, *, stride, padding, dilation, groups, relu):
    """torch conv2d of NCHW/OIHW numpy arrays, any padding form of fastconv."""
    tx = torch.from_numpy(x)
    tw = torch.from_numpy(weight)
    tb = None if bias is None else torch.from_numpy(bias)
    kh, kw = weight.shape[2:]
    if padding == "same" and stride == 1:
        result = F.conv2d(tx, tw, tb, stride=1, padding="same",
                          dilation=dilation, groups=groups)
    else:
        # torch only takes symmetric padding: pad explicitly (left, right, top, bottom).
        (top, bottom), (left, right) = normalize_padding(
            padding, x.shape[2:], (kh, kw), stride, dilation)
        tx = F.pad(tx, (left, right, top, bottom))
        result = F.conv2d(tx, tw, tb, stride=stride, padding=0,
                          dilation=dilation, groups=groups)
    if relu:
        result = torch.relu(result)
    return result.numpy()


@pytest.mark.parametrize(
    "n, c, k, h, w, kh, kw, stride, padding, dilation, groups, relu",
    [case[1:] for case in CONFIGS], ids=[case[0] for case in CONFIGS])
@pytest.mark.parametrize("layout", ("NCHW", "NHWC"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)
def test_matches_torch(isa, rng, n, c, k, h, w, kh, kw, stride, padding, dilation,
                       groups, relu, layout, dtype):
    x = random_array(rng, (n, c, h, w), dtype)
    weight = random_array(rng, (k, c // groups, kh, kw), dtype)
    bias = random_array(rng, (k,), dtype)
    expected = torch_conv_nchw(x, weight, bias, stride=stride, padding=padding,
                               dilation=dilation, groups=groups, relu=relu)

    kwargs = dict(stride=stride, padding=padding, dilation=dilation,
                  groups=groups, activation="relu" if relu else None)
    if layout == "NCHW":
        result = fastconv.conv2d(x, weight, bias, layout="NCHW", **kwargs)
    else:
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        w_hwio = np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
        result = fastconv.conv2d(x_nhwc, w_hwio, bias, layout="NHWC", **kwargs)
        result = result.transpose(0, 3, 1, 2)
    assert result.dtype == dtype
    assert result.shape == expected.shape

    pads = normalize_padding(padding, (h, w), (kh, kw), stride, dilation)
    magnitude = conv2d_magnitude_nchw(x, weight, bias, stride=stride, padding=pads,
                                      dilation=dilation, groups=groups)
    assert_close_to_other_impl(result, expected, magnitude, kh * kw * (c // groups),
                               dtype)


@pytest.mark.parametrize("h, kh, stride, dilation",
                         [(7, 3, 1, 1), (8, 4, 1, 1), (7, 2, 1, 1), (9, 3, 1, 2),
                          (6, 5, 1, 1)])
def test_same_padding_helper_matches_torch_same(h, kh, stride, dilation):
    """The test-side "same" rule agrees with torch's padding="same" at stride 1."""
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((1, 1, h, h)))
    w = torch.from_numpy(rng.standard_normal((1, 1, kh, kh)))
    (top, bottom), (left, right) = same_padding((h, h), (kh, kh), stride, dilation)
    explicit = F.conv2d(F.pad(x, (left, right, top, bottom)), w, dilation=dilation)
    builtin = F.conv2d(x, w, padding="same", dilation=dilation)
    assert torch.equal(explicit, builtin)
