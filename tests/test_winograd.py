"""Winograd F(2x2, 3x3): 3x3, stride 1, one-group convolutions with at least
WINOGRAD_MIN_CHANNELS input and output channels (see fastconv.get_winograd).

Results are checked against the float64 direct reference with an error
bound for the Winograd computation itself (below): its rounding differs
from the direct kernel's, so bitwise comparisons are only made between calls
that both run it (thread counts, layer and function, layouts, blocks)."""

import contextlib
import warnings

import numpy as np
import pytest

import fastconv
from checks import (DTYPE_IDS, FLOAT_DTYPES, assert_within_bound, forward_error_bound,
                    random_array, reference_error_bound)
from fastconv import _conv
from reference import conv2d_ref, normalize_padding

C_MIN = _conv.WINOGRAD_MIN_CHANNELS
A = np.array([[1, 0], [1, 1], [1, -1], [0, -1]], np.float64)     # A (4x2); y = A^T M A
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])  # U = G g G^T


def winograd_magnitude(x, w, bias, pads):
    """|A|^T (sum over c of |B^T d B| . |G g G^T|) |A| (+ |bias|) per output,
    NHWC: what the rounding errors of the input transform (two additions
    deep), the weights' one rounding, the GEMM over C and the output
    transform (four additions deep, then the bias) are proportional to. To
    first order the computed result is then within gamma(C + 8) of it."""
    (pt, pb), (pl, pr) = pads
    n, h, wd, c = x.shape
    ho, wo = h + pt + pb - 2, wd + pl + pr - 2
    th, tw = -(-ho // 2), -(-wo // 2)
    xp = np.zeros((n, 2 * th + 2, 2 * tw + 2, c))
    xp[:, pt:pt + h, pl:pl + wd] = np.abs(x)
    # patches (n, th, tw, 4, 4, c), transformed with |B^T| on both sides
    idx = 2 * np.arange(th)[:, None] + np.arange(4)
    jdx = 2 * np.arange(tw)[:, None] + np.arange(4)
    patches = xp[:, idx[:, None, :, None], jdx[None, :, None, :]]
    v = np.einsum("ai,nyxijc,bj->nyxabc", np.abs(BT), patches, np.abs(BT))
    u = np.abs(np.einsum("ai,ijck,bj->abck", G, np.asarray(w, np.float64), G))
    m = np.einsum("nyxabc,abck->nyxabk", v, u)
    y = np.einsum("ai,nyxijk,jb->nyaxbk", np.abs(A.T), m, np.abs(A))
    y = y.reshape(n, 2 * th, 2 * tw, -1)[:, :ho, :wo]
    return y + (0 if bias is None else np.abs(np.asarray(bias, np.float64)))


def check_winograd(rng, n, h, w, c, k, padding, bias, relu, dtype, layout="NHWC"):
    x = random_array(rng, (n, h, w, c), dtype)
    wt = random_array(rng, (3, 3, c, k), dtype)
    b = random_array(rng, (k,), dtype) if bias else None
    pads = normalize_padding(padding, (h, w), (3, 3))
    expected = conv2d_ref(x, wt, b, padding=pads, relu=relu)
    xa, wa = x, wt
    if layout == "NCHW":
        xa, wa = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(
            wt.transpose(3, 2, 0, 1))
    act = "relu" if relu else None
    y = fastconv.conv2d(xa, wa, b, padding=padding, activation=act, layout=layout)
    if layout == "NCHW":
        y = y.transpose(0, 2, 3, 1)
    magnitude = winograd_magnitude(x, wt, b, pads)
    bound = (forward_error_bound(magnitude, c + 8, dtype)
             + reference_error_bound(np.maximum(magnitude, 0), 9 * c))
    assert_within_bound(y, expected, bound)
    return x, wt, b, y


@contextlib.contextmanager
def winograd_off():
    """Every convolution inside runs the direct kernels."""
    fastconv.set_winograd(False)
    try:
        yield
    finally:
        fastconv.set_winograd(True)


@pytest.fixture(autouse=True)
def winograd_on_small_inputs(monkeypatch):
    """Winograd needs WINOGRAD_MIN_MACS of work per image, and conv2d
    (whose weights serve one call) WINOGRAD_ONE_CALL_MIN_TILES tiles per
    image; the tests here use small inputs, so they lift both (the tests of
    those thresholds set them as they are)."""
    monkeypatch.setattr(_conv, "WINOGRAD_MIN_MACS", 0)
    monkeypatch.setattr(_conv, "WINOGRAD_ONE_CALL_MIN_TILES", 0)


@pytest.fixture
def winograd_calls(monkeypatch):
    """Records whether each convolution ran (True) or declined (False) Winograd."""
    seen = []
    run = _conv.ConvWeights._run_winograd

    def spy(self, *args):
        seen.append(run(self, *args))
        return seen[-1]

    monkeypatch.setattr(_conv.ConvWeights, "_run_winograd", spy)
    return seen


# (n, h, w, c, k, padding): even and odd outputs (a last row/column of
# half tiles), padding on no side, every side, one side, "same"; channels
# not a multiple of a vector.
SHAPES = [
    (1, 12, 12, C_MIN, C_MIN + 8, 1),
    (2, 9, 11, C_MIN + 3, C_MIN + 5, 1),
    (1, 14, 13, C_MIN, C_MIN, 0),
    (1, 11, 12, C_MIN + 17, C_MIN, ((0, 2), (1, 0))),
    (3, 7, 8, C_MIN, C_MIN + 1, "same"),
    (2, 2, 1, C_MIN, C_MIN + 2, 3),          # more padding than image
    (1, 4, 3, C_MIN + 1, C_MIN, ((3, 0), (0, 2))),
]


@pytest.mark.parametrize("n, h, w, c, k, padding", SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)
def test_winograd_matches_reference(isa, rng, winograd_calls, n, h, w, c, k, padding, layout,
                                    dtype):
    for bias, relu in ((False, False), (True, True)):
        check_winograd(rng, n, h, w, c, k, padding, bias, relu, dtype, layout)
    assert winograd_calls == [True, True]


def test_winograd_out_and_unbatched_input(rng, winograd_calls):
    x = random_array(rng, (9, 10, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    b = random_array(rng, (C_MIN,), np.float32)
    out = np.full((9, 10, C_MIN), np.nan, np.float32)
    assert fastconv.conv2d(x, w, b, padding=1, out=out) is out
    assert np.array_equal(out, fastconv.conv2d(x[None], w, b, padding=1)[0])
    assert winograd_calls == [True, True]


def test_an_image_gets_the_same_result_in_any_batch(rng, monkeypatch, winograd_calls):
    """The thresholds are per image: a batch does not change which path
    (and so which rounding) an image gets."""
    monkeypatch.setattr(_conv, "WINOGRAD_MIN_MACS", 12 * 12 * C_MIN * C_MIN * 9)
    x = random_array(rng, (3, 12, 12, C_MIN), np.float32)
    layer = fastconv.Conv2d(random_array(rng, (3, 3, C_MIN, C_MIN), np.float32), padding=1)
    whole = layer(x)
    for i in range(3):
        assert np.array_equal(layer(x[i:i + 1]), whole[i:i + 1])
    small = x[:, :11, :11]  # under the threshold at any batch size
    assert np.array_equal(layer(small)[:1], layer(small[:1]))
    assert winograd_calls == [True] * 4


def test_winograd_nchw_is_the_nhwc_result(rng, winograd_calls):
    x, wt, b, y = check_winograd(rng, 2, 10, 9, C_MIN, C_MIN, 1, True, True, np.float32)
    got = fastconv.conv2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
                          np.ascontiguousarray(wt.transpose(3, 2, 0, 1)), b, padding=1,
                          activation="relu", layout="NCHW")
    assert np.array_equal(got.transpose(0, 2, 3, 1), y)
    assert winograd_calls == [True, True]


def test_winograd_bitwise_for_any_thread_count_layer_and_function(rng, winograd_calls):
    x = random_array(rng, (2, 13, 12, C_MIN + 4), np.float32)
    w = random_array(rng, (3, 3, C_MIN + 4, C_MIN), np.float32)
    b = random_array(rng, (C_MIN,), np.float32)
    layer = fastconv.Conv2d(w, b, padding=1, activation="relu")
    one = layer(x, num_threads=1)
    for nt in (2, 3, 8):
        assert np.array_equal(layer(x, num_threads=nt), one)
    assert np.array_equal(fastconv.conv2d(x, w, b, padding=1, activation="relu"), one)
    assert all(winograd_calls) and len(winograd_calls) == 5


def test_winograd_blocks_of_tiles_give_the_same_result(rng, monkeypatch, winograd_calls):
    x = random_array(rng, (2, 12, 10, C_MIN), np.float32)  # 2 * 6 * 5 = 60 tiles
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    whole = fastconv.conv2d(x, w, padding=1)
    # blocks of 7 tiles: several blocks, the last one partial, across images
    monkeypatch.setattr(_conv, "WINOGRAD_BLOCK_BYTES", 16 * 7 * C_MIN * 4)
    assert np.array_equal(fastconv.conv2d(x, w, padding=1), whole)
    assert winograd_calls == [True, True]


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_nonfinite_input_runs_the_direct_convolution(rng, winograd_calls, value):
    """An Inf or NaN input would reach every output of its tiles through the
    transforms (Inf - Inf): such calls run the direct kernel, whose NaN/Inf
    pattern is the reference's."""
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    x[0, 4, 5, 7] = value
    got = fastconv.conv2d(x, w, padding=1)
    with winograd_off():
        direct = fastconv.conv2d(x, w, padding=1)
    assert np.array_equal(got, direct, equal_nan=True)
    expected = conv2d_ref(x, w, padding=((1, 1), (1, 1)))
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    assert winograd_calls == [False]


def test_overflow_in_the_input_transform_runs_the_direct_convolution(rng, winograd_calls):
    """Finite inputs whose transform overflows (3e38 + 3e38 in float32)
    would turn into Inf where the direct convolution stays finite."""
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32) * np.float32(1e-3)
    x[0, 4:6, 5, :] = 3e38  # rows 1 and 2 of a patch: B^T d adds them
    got = fastconv.conv2d(x, w, padding=1)
    with winograd_off():
        direct = fastconv.conv2d(x, w, padding=1)
    assert np.isfinite(direct).all()
    assert np.array_equal(got, direct)
    assert winograd_calls == [False]


def test_overflow_in_the_products_runs_the_direct_convolution(rng, winograd_calls):
    """Finite transformed values whose products overflow give Inf - Inf
    (NaN) in the output transform where the direct convolution gives Inf."""
    x = np.full((1, 8, 8, C_MIN), 1e36, np.float32)
    w = np.abs(random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)) + np.float32(1)
    got = fastconv.conv2d(x, w, padding=1)
    with winograd_off():
        direct = fastconv.conv2d(x, w, padding=1)
    assert np.isposinf(direct).any()
    assert np.array_equal(got, direct)
    assert winograd_calls == [False]


@pytest.mark.parametrize("value", [np.inf, np.nan, 3e38])
def test_nonfinite_weights_run_the_direct_convolution(rng, winograd_calls, value):
    """Weights holding Inf or NaN, or whose transform overflows (nine taps
    of 3e38 make 0.25 * 9 * 3e38, Inf in float32), never take the Winograd
    path: they give the direct kernel's result, bit for bit, and no numpy
    warning about the overflow or the Inf - Inf met on the way."""
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    w[:, :, 3, 4] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fastconv.Conv2d(w, padding=1)(x)
    with winograd_off():
        direct = fastconv.Conv2d(w, padding=1)(x)
    assert np.array_equal(got, direct, equal_nan=True)
    assert winograd_calls == [False]


def test_direct_only_when_winograd_is_off_or_not_applicable(rng, winograd_calls):
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    with winograd_off():
        assert fastconv.get_winograd() is False
        assert fastconv.config()["winograd"] is False
        fastconv.conv2d(x, w, padding=1)
    fastconv.conv2d(x, w, padding=1, stride=2)
    fastconv.conv2d(x, w, padding=2, dilation=2)
    fastconv.conv2d(x[..., :C_MIN - 1], w[:, :, :C_MIN - 1], padding=1)
    _conv.WINOGRAD_MIN_MACS = 1 << 24  # (restored by the autouse fixture)
    fastconv.conv2d(x[:, :4, :4], w, padding=1)  # too little work for the transforms
    fastconv.conv2d(np.concatenate([x[:, :4, :4]] * 20), w, padding=1)  # per image
    assert winograd_calls == []


def test_a_layer_follows_set_winograd(rng, winograd_calls):
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    layer = fastconv.Conv2d(random_array(rng, (3, 3, C_MIN, C_MIN), np.float32), padding=1)
    layer(x)
    with winograd_off():
        layer(x)
    assert winograd_calls == [True]


def test_set_winograd_checks_its_argument():
    with pytest.raises(TypeError, match="set_winograd: enabled must be a bool; got 1"):
        fastconv.set_winograd(1)


def test_conv2d_needs_enough_tiles(rng, monkeypatch, winograd_calls):
    """conv2d transforms and packs the weights in every call: Winograd pays
    for that only over enough tiles. A layer transforms them once."""
    monkeypatch.setattr(_conv, "WINOGRAD_ONE_CALL_MIN_TILES", 512)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    small = random_array(rng, (1, 12, 12, C_MIN), np.float32)      # 36 tiles
    large = random_array(rng, (1, 46, 45, C_MIN), np.float32)      # 23 * 23 = 529
    fastconv.conv2d(small, w, padding=1)
    assert winograd_calls == []
    fastconv.Conv2d(w, padding=1)(small)
    fastconv.conv2d(large, w, padding=1)
    assert winograd_calls == [True, True]


def test_a_layer_transforms_its_weights_at_construction(rng, monkeypatch, winograd_calls):
    """A stride-1 layer transforms its weights when it is built, so that its
    first call is not the slow one; a stride-2 one never does."""
    transforms = []
    real = _conv._core.wino_weights

    def counting(*args):
        transforms.append(args[1:3])
        return real(*args)

    monkeypatch.setattr(_conv._core, "wino_weights", counting)
    w = random_array(rng, (3, 3, C_MIN, C_MIN + 2), np.float32)
    layer = fastconv.Conv2d(w, padding=1)
    assert transforms == [(C_MIN, C_MIN + 2)]
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    layer(x)
    layer(x)
    fastconv.Conv2d(w, padding=1, stride=2)(x)
    assert transforms == [(C_MIN, C_MIN + 2)]
    assert winograd_calls == [True, True]
