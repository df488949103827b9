"""Winograd F(4x4, 3x3) (algorithm "winograd-f4x4-3x3"), forced, against the
float64 direct reference, with its error bound derived here.

The error bound. F(4x4)'s transforms (Lavin and Gray's points 0, +-1, +-2,
inf) are y = A^T [(G g G^T) . (B^T d B)] A with 6x6 patches d. Each computed
quantity is a sum of products; by the usual forward analysis (Higham, 3.1)
the computed result is within gamma(n) of the same sums taken over absolute
values, n the deepest chain of roundings an output goes through:
  - B^T d B: winograd.c's rows of B^T are at most three roundings deep (e.g.
    4 d0 - 5 d2 + d4: the product by 5, then two additions; the products by
    2 and 4 are exact), twice (rows, then columns): 6;
  - U = G g G^T: computed in double and rounded once: 1 in float32; in
    float64 its own chain (divisions by 4, 6, 12, 24, then two additions,
    twice), absorbed by taking |G| |g| |G|^T for U's magnitude, which
    bounds |U| and the products' error alike;
  - the 36 GEMMs over C: C;
  - A^T m A: at most three roundings deep (e.g. (m1 - m2) + 8 (m3 - m4) + m5),
    twice: 6; then the bias: 1.
So |computed - exact| <= gamma(C + 14) |A|^T (sum_c |B^T| |d| |B| . |G| |g|
|G|^T) |A| (+ |bias|), against F(2x2)'s gamma(C + 8) of its own magnitudes
(tests/test_winograd.py). F(4x4)'s matrices hold 4, 5 and 8: its magnitude,
and its observed error, are about ten times F(2x2)'s (see
test_the_bound_is_not_vacuous)."""

import numpy as np
import pytest

import fastconv
from checks import (DTYPE_IDS, FLOAT_DTYPES, assert_within_bound, forward_error_bound,
                    random_array, reference_error_bound, run_layer)
from fastconv import _conv
from reference import conv2d_ref, normalize_padding

F4 = "winograd-f4x4-3x3"
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], np.float64)              # y = A^T M A (4x6)
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])  # U = G g G^T
DEPTH = 14  # the roundings besides the GEMM's C (the module's docstring)


def test_the_matrices_compute_a_convolution():
    """The test's matrices are F(4x4, 3x3)'s: A^T[(G g G^T).(B^T d B)]A is the
    4x4 valid correlation of the 6x6 patch d with g."""
    rng = np.random.default_rng(1)
    d, g = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(4)] for i in range(4)])
    assert np.allclose(AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T, direct, atol=1e-12)


def f4_magnitude(x, w, bias, pads, residual=None):
    """|A|^T (sum over c of |B^T| |d| |B| . |G| |g| |G|^T) |A| (+ |bias|,
    + |residual|) per output, NHWC."""
    (pt, pb), (pl, pr) = pads
    n, h, wd, c = x.shape
    ho, wo = h + pt + pb - 2, wd + pl + pr - 2
    th, tw = -(-ho // 4), -(-wo // 4)
    xp = np.zeros((n, 4 * th + 2, 4 * tw + 2, c))
    xp[:, pt:pt + h, pl:pl + wd] = np.abs(x)
    idx = 4 * np.arange(th)[:, None] + np.arange(6)
    jdx = 4 * np.arange(tw)[:, None] + np.arange(6)
    patches = xp[:, idx[:, None, :, None], jdx[None, :, None, :]]  # (n, th, tw, 6, 6, c)
    v = np.einsum("ai,nyxijc,bj->nyxabc", np.abs(BT), patches, np.abs(BT))
    u = np.einsum("ai,ijck,bj->abck", np.abs(G), np.abs(np.asarray(w, np.float64)), np.abs(G))
    m = np.einsum("nyxabc,abck->nyxabk", v, u)
    y = np.einsum("ai,nyxijk,bj->nyaxbk", np.abs(AT), m, np.abs(AT))
    y = y.reshape(n, 4 * th, 4 * tw, -1)[:, :ho, :wo]
    y = y + (0 if bias is None else np.abs(np.asarray(bias, np.float64)))
    return y + (0 if residual is None else np.abs(np.asarray(residual, np.float64)))


def f4_bound(x, w, bias, pads, dtype, residual=None):
    magnitude = f4_magnitude(x, w, bias, pads, residual)
    extra = 0 if residual is None else 1
    return (forward_error_bound(magnitude, x.shape[-1] + DEPTH + extra, dtype)
            + reference_error_bound(magnitude, 9 * x.shape[-1] + 2))


def check_f4(rng, n, h, w, c, k, padding, bias, activation, dtype, residual=False,
             num_threads=None):
    x = random_array(rng, (n, h, w, c), dtype)
    wt = random_array(rng, (3, 3, c, k), dtype)
    b = random_array(rng, (k,), dtype) if bias else None
    pads = normalize_padding(padding, (h, w), (3, 3))
    conv = conv2d_ref(x, wt, b, padding=pads)
    res = random_array(rng, conv.shape, dtype) if residual else None
    expected = conv + (0 if res is None else res)
    if activation == "relu":
        expected = np.maximum(expected, 0)
    elif activation == "relu6":
        expected = np.clip(expected, 0, 6)
    layer = fastconv.Conv2d(wt, b, padding=padding, activation=activation)
    wts = layer._weights
    plan = wts.plan(x.shape, layer.padding, layer.activation, F4)
    threads = fastconv.get_num_threads() if num_threads is None else num_threads
    y, ran = wts.execute_algorithm(plan, x, None, threads, res)
    assert ran == F4
    assert_within_bound(y, expected, f4_bound(x, wt, b, pads, dtype, res))
    return x, wt, b, y


# (n, h, w, c, k, padding): Ho, Wo = 0..3 mod 4 (a last row/column of partial
# tiles), padding on no side, every side, one side, more than the image;
# channels not a multiple of any vector.
SHAPES = [
    (1, 12, 12, 16, 24, 1),          # 12 x 12: whole tiles
    (2, 9, 11, 19, 21, 1),           # 9 x 11: 1 and 3 mod 4
    (1, 16, 15, 16, 16, 0),          # 14 x 13: 2 and 1 mod 4
    (1, 11, 12, 33, 16, ((0, 2), (1, 0))),  # 11 x 11
    (3, 7, 8, 8, 9, "same"),          # 7 x 8, batch 3
    (2, 2, 1, 5, 7, 3),              # more padding than image
    (1, 4, 3, 17, 3, ((3, 0), (0, 2))),
]


@pytest.mark.parametrize("n, h, w, c, k, padding", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)
def test_f4_matches_reference(isa, rng, n, h, w, c, k, padding, dtype):
    for bias, activation, residual in ((False, None, False), (True, "relu", False),
                                       (True, "relu6", True), (False, None, True)):
        check_f4(rng, n, h, w, c, k, padding, bias, activation, dtype, residual)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)
def test_the_bound_is_not_vacuous(isa, rng, dtype):
    """A worst-case bound over random signs: at C = 64 the observed error is
    about 1/1000 of it (F(2x2)'s about 1/170 of its own), and it is no looser
    than that. F(4x4) is really the less accurate: its observed error is
    15-20 times F(2x2)'s (its bound about 85 times), in both dtypes."""
    import test_winograd as f2
    x = random_array(rng, (1, 20, 20, 64), dtype)
    w = random_array(rng, (3, 3, 64, 64), dtype)
    pads = ((1, 1), (1, 1))
    expected = conv2d_ref(x, w, padding=pads)
    y, ran = _conv.conv2d_algorithm(x, w, padding=1, algorithm=F4)
    assert ran == F4
    err = np.abs(y - expected)
    bound = forward_error_bound(f4_magnitude(x, w, None, pads), 64 + DEPTH, dtype)
    assert (err <= bound).all()
    assert (err / bound).max() >= 1 / 4000
    y2, ran2 = _conv.conv2d_algorithm(x, w, padding=1, algorithm=f2.WINOGRAD)
    assert ran2 == f2.WINOGRAD
    bound2 = forward_error_bound(f2.winograd_magnitude(x, w, None, pads), 64 + 8, dtype)
    err2 = np.abs(y2 - expected)
    assert 5 <= err.max() / err2.max() <= bound.max() / bound2.max()


CONFIG = fastconv.config()["isa_config"]["float32"]


def test_auto_picks_f4_where_the_thresholds_say(rng):
    """Where F(2x2) would run: F(4x4) from winograd_f4_min_tiles 4x4 tiles
    per image for a layer, winograd_f4_one_call_min_tiles for conv2d."""
    c = CONFIG["winograd_min_channels"]
    w = random_array(rng, (3, 3, c, c), np.float32)
    layer = fastconv.Conv2d(w, padding=1)
    side4 = 4 * next(t for t in range(1, 200) if t * t >= CONFIG["winograd_f4_min_tiles"])
    assert run_layer(layer, random_array(rng, (1, side4, side4, c), np.float32))[1] == F4
    assert layer.plan((2, side4, side4, c))["macs"] == 2 * (side4 // 4) ** 2 * 36 * c * c
    assert run_layer(layer, random_array(rng, (1, side4 - 4, side4 - 4, c),
                                         np.float32))[1] == "winograd-f2x2-3x3"
    side1 = 4 * next(t for t in range(1, 200) if t * t >= CONFIG["winograd_f4_one_call_min_tiles"])
    for side, expected in ((side1, F4), (side1 - 4, "winograd-f2x2-3x3")):
        x = random_array(rng, (1, side, side, c), np.float32)
        assert _conv.conv2d_algorithm(x, w, padding=1)[1] == expected
    with_off = fastconv.get_winograd()
    fastconv.set_winograd(False)
    try:
        assert run_layer(layer, random_array(rng, (1, side4, side4, c), np.float32))[1] == "igemm"
    finally:
        fastconv.set_winograd(with_off)


@pytest.mark.parametrize("n, h, w", [(2, 13, 12), (2, 70, 66)], ids=["one-block", "blocks"])
def test_f4_bitwise_for_any_thread_count_layer_and_function(rng, n, h, w):
    """Thread counts change how tiles fall into blocks, never the result; the
    function (weights transformed per call) gives the layer's bits."""
    x = random_array(rng, (n, h, w, 68), np.float32)
    wt = random_array(rng, (3, 3, 68, 64), np.float32)
    b = random_array(rng, (64,), np.float32)
    layer = fastconv.Conv2d(wt, b, padding=1, activation="relu")
    one, algorithm = run_layer(layer, x, F4, num_threads=1)
    assert algorithm == F4
    for nt in (2, 3):
        assert np.array_equal(run_layer(layer, x, F4, num_threads=nt)[0], one)
    got, algorithm = _conv.conv2d_algorithm(x, wt, b, padding=1, activation="relu", algorithm=F4)
    assert algorithm == F4 and np.array_equal(got, one)


def direct(x, w, **options):
    y, algorithm = _conv.conv2d_algorithm(x, w, algorithm="igemm", **options)
    assert algorithm == "igemm"
    return y


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_nonfinite_input_runs_the_direct_convolution(isa, rng, value):
    x = random_array(rng, (1, 13, 13, 16), np.float32)
    w = random_array(rng, (3, 3, 16, 16), np.float32)
    x[0, 4, 5, 7] = value
    got, algorithm = _conv.conv2d_algorithm(x, w, padding=1, algorithm=F4)
    assert algorithm == "igemm"
    assert np.array_equal(got, direct(x, w, padding=1), equal_nan=True)


def test_overflow_in_the_transforms_runs_the_direct_convolution(isa, rng):
    """Finite inputs whose transform overflows (4 * 1e38 - 5 * -1e38 in
    float32) would turn into Inf where the direct convolution stays finite."""
    x = random_array(rng, (1, 12, 12, 16), np.float32)
    w = random_array(rng, (3, 3, 16, 16), np.float32) * np.float32(1e-3)
    x[0, 0, 0, :], x[0, 2, 0, :] = 1e38, -1e38  # rows 0 and 2 of the first patch
    got, algorithm = _conv.conv2d_algorithm(x, w, padding=0, algorithm=F4)
    expected = direct(x, w, padding=0)
    assert np.isfinite(expected).all()
    assert algorithm == "igemm" and np.array_equal(got, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)
def test_the_weight_guard_is_f4s(rng, dtype):
    """|G g G^T| <= max |g| for F(4x4) (G's absolute row sums are at most 1):
    weights at the dtype's largest value run it, finite, where F(2x2)'s guard
    (max / 2.25) refuses them; Inf weights neither."""
    big = np.finfo(dtype).max
    x = np.full((1, 8, 8, 4), 1e-30 if dtype == np.float32 else 1e-300, dtype)
    w = np.zeros((3, 3, 4, 4), dtype)
    w[:, :, 0, 0] = big
    y4, ran4 = _conv.conv2d_algorithm(x, w, padding=1, algorithm=F4)
    assert ran4 == F4 and np.isfinite(y4).all()
    with pytest.raises(ValueError, match="cannot run this convolution"):
        _conv.conv2d_algorithm(x, w, padding=1, algorithm="winograd-f2x2-3x3")
    w[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="cannot run this convolution"):
        _conv.conv2d_algorithm(x, w, padding=1, algorithm=F4)


def test_f4_is_reported_and_cannot_run_strided(rng):
    x = random_array(rng, (1, 12, 12, 8), np.float32)
    w = random_array(rng, (3, 3, 8, 8), np.float32)
    assert _conv.conv2d_algorithm(x, w, padding=1, algorithm=F4)[1] == F4
    with pytest.raises(ValueError, match="cannot run this convolution"):
        _conv.conv2d_algorithm(x, w, padding=1, stride=2, algorithm=F4)
