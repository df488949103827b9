"""The register-tile micro-kernels and every algorithm, in XNNPACK's style:
sizes swept across the boundaries of each ISA's configuration (rows below,
at and above MR, partial NR panels, reductions across the KC blocks), each
algorithm forced on the shapes it allows, on every ISA and dtype, against
the float64 reference. The boundaries come from the ISA's own configuration
(fastconv.config()["isa_config"]), so a retuned tile keeps its coverage.
"""

import numpy as np
import pytest

import fastconv
from checks import (DTYPE_IDS, FLOAT_DTYPES, assert_close_to_reference, make_conv_inputs,
                    random_array, reference_for, run_layer)
from fastconv import _conv
from reference import matmul_magnitude, matmul_ref

dtypes = pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)


def tile(dtype):
    """The active ISA's configuration for dtype."""
    return fastconv.config()["isa_config"][np.dtype(dtype).name]


def sweep(n):
    """Sizes around a boundary n: just under, at, just over, and twice."""
    return sorted({max(1, n - 1), n, n + 1, 2 * n + 1})


def gemm(a, b, bias, relu, algorithm):
    """a @ b through the GEMM operator with `algorithm` forced."""
    weights = _conv.GemmWeights("matmul", b, bias, 1, one_call=True)
    act = ("relu", 0.0, 0.0) if relu else None
    call, ran = weights.plan(a.shape[0], act, algorithm)
    assert ran == algorithm
    return weights.run(a, act, None, 2, algorithm)


@pytest.mark.parametrize("algorithm", ["gemm", "gemm-in-place", "dense"])
@dtypes
def test_gemm_rows_around_mr(isa, rng, algorithm, dtype):
    """M from 1 to 2 * MR + 1 rows: full and partial register tiles, and the
    one-row micro-kernel."""
    cfg = tile(dtype)
    k, n = 37, 2 * cfg["nr"]
    b = random_array(rng, (k, n), dtype)
    bias = random_array(rng, (n,), dtype)
    for m in range(1, 2 * cfg["mr"] + 2):
        a = random_array(rng, (m, k), dtype)
        for relu in (False, True):
            y = gemm(a, b, bias, relu, algorithm)
            assert_close_to_reference(y, matmul_ref(a, b, bias, relu), matmul_magnitude(
                a, b, bias), k, dtype)


@pytest.mark.parametrize("algorithm", ["gemm", "dense"])
@dtypes
def test_gemm_partial_panels(isa, rng, algorithm, dtype):
    """N across the panel boundaries: one lane, a partial vector, a whole
    vector, a partial panel, whole panels and one more lane."""
    cfg = tile(dtype)
    vlen, nr, m, k = cfg["vlen"], cfg["nr"], cfg["mr"] + 1, 19
    a = random_array(rng, (m, k), dtype)
    for n in sorted({1, vlen - 1, vlen, vlen + 1, nr - 1, nr, nr + 1, 2 * nr + vlen - 1}):
        b = random_array(rng, (k, n), dtype)
        y = gemm(a, b, None, False, algorithm)
        assert_close_to_reference(y, matmul_ref(a, b), matmul_magnitude(a, b), k, dtype)


@pytest.mark.parametrize("algorithm", ["gemm", "gemm-in-place", "dense"])
@dtypes
def test_gemm_reductions_across_kc_blocks(isa, rng, algorithm, dtype):
    """K across the GEMM's reduction blocks (kc_gemm), where later blocks add
    to the tile and the last applies bias and ReLU."""
    cfg = tile(dtype)
    m, n = cfg["mr"] + 2, cfg["nr"]
    for k in sweep(cfg["kc_gemm"]) + [1]:
        a, b = random_array(rng, (m, k), dtype), random_array(rng, (k, n), dtype)
        bias = random_array(rng, (n,), dtype)
        y = gemm(a, b, bias, True, algorithm)
        assert_close_to_reference(y, matmul_ref(a, b, bias, True), matmul_magnitude(a, b, bias),
                                  k, dtype)


def test_gemm_in_place_needs_whole_vectors(rng):
    """The weights are read in place only when each row is a whole number of
    vectors; forcing it otherwise is refused, and auto packs them."""
    cfg = tile(np.float32)
    a = random_array(rng, (3 * cfg["mr"], 8), np.float32)
    b = random_array(rng, (8, cfg["vlen"] + 1), np.float32)
    weights = _conv.GemmWeights("matmul", b, None, 1, one_call=True)
    assert weights.plan(a.shape[0], None)[1] == "gemm"
    with pytest.raises(ValueError):
        weights.plan(a.shape[0], None, "gemm-in-place")


def conv_case(rng, dtype, *, n=1, h=7, w=6, c, k, kh=3, kw=3, stride=1, padding=1,
              dilation=1, groups=1, algorithm):
    """A Conv2d layer and the conv2d function, each forced to `algorithm`
    where it can run it, against the reference."""
    x, wt, b = make_conv_inputs(rng, n=n, h=h, w=w, c=c, k=k, kh=kh, kw=kw, groups=groups,
                                dtype=dtype)
    expected, magnitude, n_red = reference_for(x, wt, b, stride=stride, padding=padding,
                                               dilation=dilation, groups=groups, relu=True)
    y, ran = _conv.conv2d_algorithm(x, wt, b, stride=stride, padding=padding,
                                    dilation=dilation, groups=groups, activation="relu",
                                    algorithm=algorithm)
    assert ran == algorithm
    assert_close_to_reference(y, expected, magnitude, n_red, dtype)
    if algorithm in ("dense", "gemm-in-place"):  # (the function's alone: weights in place)
        return
    layer = fastconv.Conv2d(wt, b, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, activation="relu")
    y_layer, ran = run_layer(layer, x, algorithm)
    assert ran == algorithm
    assert_close_to_reference(y_layer, expected, magnitude, n_red, dtype)
    assert np.array_equal(y_layer, y), "the layer and the function run the same kernel"


@dtypes
def test_igemm_3x3_channels_across_kc_blocks(isa, rng, dtype):
    """A 3x3 direct convolution with C around and above KC: several reduction
    blocks per tap (not covered by any network layer of the other tests)."""
    cfg = tile(dtype)
    for c in sweep(cfg["kc"]):
        conv_case(rng, dtype, h=5, w=4, c=c, k=cfg["nr"] + 3, algorithm="igemm")


@dtypes
def test_igemm_few_channels_merged_rows(isa, rng, dtype):
    """Few input channels (an RGB first layer): a kernel row's taps read as
    one run from the zero-padded copy, with stride, asymmetric padding and
    rows of MR pixels that wrap across output rows and images."""
    cfg = tile(dtype)
    for c in (1, 3, 31):
        conv_case(rng, dtype, n=2, h=cfg["mr"] + 3, w=cfg["mr"] - 1, c=c, k=cfg["vlen"] + 5,
                  kh=3, kw=5, stride=2, padding=((2, 0), (1, 3)), algorithm="igemm")


@pytest.mark.parametrize("algorithm, options", [
    ("igemm", dict(kh=3, kw=2, stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2))),
    ("igemm", dict(kh=1, kw=1, stride=2, padding=0)),
    ("igemm", dict(kh=3, kw=3, groups=4)),
    ("gemm", dict(kh=1, kw=1, padding=0)),
    ("gemm-in-place", dict(kh=1, kw=1, padding=0)),
    ("dense", dict(h=3, w=4, kh=3, kw=4, padding=0)),
    ("dense", dict(h=3, w=4, kh=5, kw=4, padding=((2, 0), (0, 0)))),
    ("depthwise", dict(kh=3, kw=3, groups=-1)),
    ("depthwise", dict(kh=5, kw=3, stride=2, dilation=(1, 2), groups=-1)),
    ("winograd-f2x2-3x3", dict(kh=3, kw=3)),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}{v[k]}" for k in v))
@dtypes
def test_each_algorithm_forced(isa, rng, algorithm, options, dtype):
    """Every algorithm, forced on shapes it allows, with channels that leave
    partial vectors and panels, against the reference."""
    cfg = tile(dtype)
    c = k = 2 * cfg["vlen"] if algorithm != "winograd-f2x2-3x3" else cfg["winograd_min_channels"]
    options = dict(options)
    if options.get("groups") == -1:
        options["groups"] = c  # depthwise: one group per channel
    conv_case(rng, dtype, n=2, c=c, k=k if algorithm != "igemm" else k + 3 * 4,
              algorithm=algorithm, **options)


def test_an_algorithm_that_cannot_run_is_refused(rng):
    x = random_array(rng, (1, 6, 6, 8), np.float32)
    w = random_array(rng, (3, 3, 8, 8), np.float32)
    for algorithm, options in (("gemm", {}), ("dense", {}), ("depthwise", {}),
                               ("winograd-f2x2-3x3", {"stride": 2}),
                               ("igemm", {"_1x1": True})):
        weight = w[:1, :1] if options.pop("_1x1", False) else w
        with pytest.raises(ValueError, match=f"conv2d: algorithm '{algorithm}' cannot run"):
            _conv.conv2d_algorithm(x, weight, algorithm=algorithm, **options)
    with pytest.raises(ValueError, match="conv2d: algorithm must be one of"):
        _conv.conv2d_algorithm(x, w, algorithm="fft")
    layer = fastconv.Conv2d(w[:1, :1])
    for algorithm in ("dense", "gemm-in-place"):  # a layer keeps no weights in place
        with pytest.raises(ValueError, match=f"Conv2d: algorithm '{algorithm}' cannot run"):
            run_layer(layer, x, algorithm)
