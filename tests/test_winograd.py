"""Winograd F(2x2, 3x3): 3x3, stride 1, one-group convolutions with at least
winograd_min_channels input and output channels (the ISA's configuration;
see fastconv.get_winograd).

Results are checked against the float64 direct reference with an error
bound for the Winograd computation itself (below): its rounding differs
from the direct kernel's, so bitwise comparisons are only made between calls
that both run it (thread counts, layer and function, layouts, blocks). The
tests force the algorithm on inputs smaller than the thresholds ask for, and
check the algorithm that ran, which the operators report."""

import contextlib
import warnings

import numpy as np
import pytest

import fastconv
from checks import (DTYPE_IDS, FLOAT_DTYPES, assert_within_bound, forward_error_bound,
                    random_array, reference_error_bound, run_layer)
from fastconv import _conv
from reference import conv2d_ref, normalize_padding

CONFIG = fastconv.config()["isa_config"]["float32"]  # (the same for float64 and every ISA)
C_MIN = CONFIG["winograd_min_channels"]
WINOGRAD = "winograd-f2x2-3x3"
F4 = "winograd-f4x4-3x3"  # (auto runs it over enough 4x4 tiles: test_winograd_f4.py)
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
    y, ran = _conv.conv2d_algorithm(xa, wa, b, padding=padding, activation=act, layout=layout,
                                    algorithm=WINOGRAD)
    assert ran == WINOGRAD
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


def winograd(x, w, bias=None, **options):
    """conv2d forced to run Winograd: (result, the algorithm that ran)."""
    return _conv.conv2d_algorithm(x, w, bias, algorithm=WINOGRAD, **options)


def ran(x, w, **options):
    """The algorithm conv2d chooses for this call."""
    return _conv.conv2d_algorithm(x, w, **options)[1]


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
def test_winograd_matches_reference(isa, rng, n, h, w, c, k, padding, layout, dtype):
    for bias, relu in ((False, False), (True, True)):
        check_winograd(rng, n, h, w, c, k, padding, bias, relu, dtype, layout)


def test_winograd_out_and_unbatched_input(rng):
    x = random_array(rng, (9, 10, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    b = random_array(rng, (C_MIN,), np.float32)
    out = np.full((9, 10, C_MIN), np.nan, np.float32)
    assert winograd(x, w, b, padding=1, out=out) == (out, WINOGRAD)
    assert np.array_equal(out, winograd(x[None], w, b, padding=1)[0][0])


def test_an_image_gets_the_same_result_in_any_batch(rng):
    """The thresholds are per image: a batch does not change which path
    (and so which rounding) an image gets."""
    # the smallest square map over the work threshold, and one under it
    side = next(s for s in range(2, 200) if s * s * C_MIN * C_MIN * 9 >= CONFIG["winograd_min_macs"])
    x = random_array(rng, (3, side, side, C_MIN), np.float32)
    layer = fastconv.Conv2d(random_array(rng, (3, 3, C_MIN, C_MIN), np.float32), padding=1)
    whole, algorithm = run_layer(layer, x)
    assert algorithm == WINOGRAD
    for i in range(3):
        assert np.array_equal(layer(x[i:i + 1]), whole[i:i + 1])
    small = x[:, :side - 1, :side - 1]  # under the threshold at any batch size
    assert run_layer(layer, small)[1] == run_layer(layer, small[:1])[1] == "igemm"
    assert np.array_equal(layer(small)[:1], layer(small[:1]))


def test_winograd_nchw_is_the_nhwc_result(rng):
    x, wt, b, y = check_winograd(rng, 2, 10, 9, C_MIN, C_MIN, 1, True, True, np.float32)
    got, _ = winograd(np.ascontiguousarray(x.transpose(0, 3, 1, 2)),
                      np.ascontiguousarray(wt.transpose(3, 2, 0, 1)), b, padding=1,
                      activation="relu", layout="NCHW")
    assert np.array_equal(got.transpose(0, 2, 3, 1), y)


@pytest.mark.parametrize("n, h, w", [(2, 13, 12), (2, 40, 36)], ids=["one-block", "blocks"])
def test_winograd_bitwise_for_any_thread_count_layer_and_function(rng, n, h, w):
    """The thread count changes how the tiles fall into blocks (one per
    thread at least; at 40x36, 2 * 20 * 18 = 720 tiles, several blocks per
    thread, the last ones partial and across images): never the result."""
    x = random_array(rng, (n, h, w, C_MIN + 4), np.float32)
    wt = random_array(rng, (3, 3, C_MIN + 4, C_MIN), np.float32)
    b = random_array(rng, (C_MIN,), np.float32)
    layer = fastconv.Conv2d(wt, b, padding=1, activation="relu")
    assert layer.algorithm == WINOGRAD
    one, algorithm = run_layer(layer, x, WINOGRAD, num_threads=1)
    assert algorithm == WINOGRAD
    for nt in (2, 3, 8):
        assert np.array_equal(run_layer(layer, x, WINOGRAD, num_threads=nt)[0], one)
    assert np.array_equal(winograd(x, wt, b, padding=1, activation="relu")[0], one)


def direct(x, w, **options):
    """conv2d with Winograd switched off: the direct kernels."""
    with winograd_off():
        y, algorithm = _conv.conv2d_algorithm(x, w, **options)
    assert algorithm == "igemm"
    return y


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_nonfinite_input_runs_the_direct_convolution(rng, value):
    """An Inf or NaN input would reach every output of its tiles through the
    transforms (Inf - Inf): such calls run the direct kernel, whose NaN/Inf
    pattern is the reference's."""
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    x[0, 4, 5, 7] = value
    got, algorithm = winograd(x, w, padding=1)
    assert algorithm == "igemm"
    assert np.array_equal(got, direct(x, w, padding=1), equal_nan=True)
    expected = conv2d_ref(x, w, padding=((1, 1), (1, 1)))
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    assert np.array_equal(np.isinf(got), np.isinf(expected))


def test_overflow_in_the_input_transform_runs_the_direct_convolution(rng):
    """Finite inputs whose transform overflows (3e38 + 3e38 in float32)
    would turn into Inf where the direct convolution stays finite."""
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32) * np.float32(1e-3)
    x[0, 4:6, 5, :] = 3e38  # rows 1 and 2 of a patch: B^T d adds them
    got, algorithm = winograd(x, w, padding=1)
    expected = direct(x, w, padding=1)
    assert np.isfinite(expected).all()
    assert algorithm == "igemm" and np.array_equal(got, expected)


def test_overflow_in_the_products_runs_the_direct_convolution(rng):
    """Finite transformed values whose products overflow give Inf - Inf
    (NaN) in the output transform where the direct convolution gives Inf."""
    x = np.full((1, 8, 8, C_MIN), 1e36, np.float32)
    w = np.abs(random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)) + np.float32(1)
    got, algorithm = winograd(x, w, padding=1)
    expected = direct(x, w, padding=1)
    assert np.isposinf(expected).any()
    assert algorithm == "igemm" and np.array_equal(got, expected)


@pytest.mark.parametrize("value", [np.inf, np.nan, 3e38])
def test_nonfinite_weights_run_the_direct_convolution(rng, value):
    """Weights holding Inf or NaN, or whose transform overflows (nine taps
    of 3e38 make 0.25 * 9 * 3e38, Inf in float32), never take the Winograd
    path: they give the direct kernel's result, bit for bit, and no numpy
    warning about the overflow or the Inf - Inf met on the way."""
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    w[:, :, 3, 4] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = fastconv.Conv2d(w, padding=1)
        got, algorithm = run_layer(layer, x)
    assert layer.algorithm == "igemm" and algorithm == "igemm"
    with winograd_off():
        expected = fastconv.Conv2d(w, padding=1)(x)
    assert np.array_equal(got, expected, equal_nan=True)
    with pytest.raises(ValueError, match="cannot run this convolution"):
        run_layer(layer, x, WINOGRAD)


def test_direct_only_when_winograd_is_off_or_not_applicable(rng):
    side = 64  # over every threshold, for the function too (32 * 32 tiles)
    x = random_array(rng, (1, side, side, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    assert ran(x, w, padding=1) == F4
    with winograd_off():
        assert fastconv.get_winograd() is False
        assert fastconv.config()["winograd"] is False
        assert ran(x, w, padding=1) == "igemm"
    assert ran(x, w, padding=1, stride=2) == "igemm"
    assert ran(x, w, padding=2, dilation=2) == "igemm"
    assert ran(x[..., :C_MIN - 1], w[:, :, :C_MIN - 1], padding=1) == "igemm"
    assert ran(x, w[..., :C_MIN - 1], padding=1) == "igemm"
    for options in ({"stride": 2}, {"dilation": 2}):
        with pytest.raises(ValueError, match="cannot run this convolution"):
            winograd(x, w, padding=1, **options)
    # too little work per image for the transforms to pay, at any batch size
    side = next(s for s in range(2, 200) if s * s * C_MIN * C_MIN * 9 >= CONFIG["winograd_min_macs"])
    small = x[:, :side - 1, :side - 1]
    layer = fastconv.Conv2d(w, padding=1)
    assert run_layer(layer, small)[1] == "igemm"
    assert run_layer(layer, np.concatenate([small] * 20))[1] == "igemm"
    assert run_layer(layer, x[:, :side, :side])[1] == WINOGRAD


def test_a_layer_follows_set_winograd(rng):
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    layer = fastconv.Conv2d(random_array(rng, (3, 3, C_MIN, C_MIN), np.float32), padding=1)
    assert run_layer(layer, x)[1] == WINOGRAD
    with winograd_off():
        assert run_layer(layer, x)[1] == "igemm"
        assert layer.plan(x.shape)["algorithm"] == "igemm"
    assert layer.plan(x.shape) == {"algorithm": WINOGRAD, "macs": 36 * 16 * C_MIN * C_MIN,
                                   "direct_macs": 144 * 9 * C_MIN * C_MIN,
                                   "output_shape": (1, 12, 12, C_MIN)}


def test_a_layer_built_with_winograd_off_transforms_when_it_is_on(rng):
    """Switched on after construction, the first call that runs Winograd
    transforms the weights (from the packed ones: the layer keeps no other
    copy) and gives the same result as a layer built with it on."""
    x = random_array(rng, (1, 12, 12, C_MIN), np.float32)
    w = random_array(rng, (3, 3, C_MIN, C_MIN + 3), np.float32)
    with winograd_off():
        late = fastconv.Conv2d(w, padding=1)
    assert late.algorithm == "igemm"
    got, algorithm = run_layer(late, x)
    assert algorithm == WINOGRAD
    assert np.array_equal(got, fastconv.Conv2d(w, padding=1)(x))


def test_set_winograd_checks_its_argument():
    with pytest.raises(TypeError, match="set_winograd: enabled must be a bool; got 1"):
        fastconv.set_winograd(1)


def test_conv2d_needs_enough_tiles(rng):
    """conv2d transforms and packs the weights in every call: Winograd pays
    for that only over enough tiles. A layer transforms them once."""
    tiles = CONFIG["winograd_one_call_min_tiles"]
    side = 2 * next(t for t in range(1, 200) if t * t >= tiles)  # output side of enough tiles
    w = random_array(rng, (3, 3, C_MIN, C_MIN), np.float32)
    small = random_array(rng, (1, side - 2, side - 2, C_MIN), np.float32)
    large = random_array(rng, (1, side, side, C_MIN), np.float32)
    assert ran(small, w, padding=1) == "igemm"
    assert run_layer(fastconv.Conv2d(w, padding=1), small)[1] == F4
    assert ran(large, w, padding=1) == WINOGRAD


def test_a_layer_transforms_its_weights_at_construction(rng):
    """A stride-1 layer transforms its weights when it is built, so that its
    first call is not the slow one; a stride-2 one never does."""
    w = random_array(rng, (3, 3, C_MIN, C_MIN + 2), np.float32)
    assert fastconv.Conv2d(w, padding=1).algorithm == WINOGRAD
    assert fastconv.Conv2d(w, padding=1, stride=2).algorithm == "igemm"
    assert fastconv.Conv2d(w[:, :, :C_MIN - 1], padding=1).algorithm == "igemm"
