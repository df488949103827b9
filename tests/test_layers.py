"""fastconv.Conv2d and fastconv.Linear (the classes of fastconv.nn): packed
once, same results and checks as the functions; and the flush-to-zero switch."""

import numpy as np
import pytest

import fastconv
import fastconv.nn
from checks import (assert_close_to_reference, make_conv_inputs, random_array,
                    reference_for, to_layout)
from fastconv import _config, _conv


def same_kernel(a, b):
    """Whether algorithms a and b compute bitwise the same result (the GEMM
    reads its weights packed or in place through one micro-kernel and one
    reduction order)."""
    return a == b or {a, b} <= {"gemm", "gemm-in-place"}

CONV_CASES = [
    # (h, w, c, k, kh, kw, stride, padding, dilation, groups)
    (9, 8, 3, 64, 3, 3, 1, 1, 1, 1),          # RGB first layer: packed rows
    (7, 7, 3, 20, 7, 7, 2, 3, 1, 1),          # stem, 7x7 stride 2
    (6, 5, 17, 70, 3, 3, 1, "same", 1, 1),    # ragged panel widths
    (8, 8, 16, 16, 3, 3, 2, ((1, 0), (0, 1)), 1, 1),
    (8, 8, 12, 12, 3, 3, 1, 1, 1, 12),        # depthwise
    (8, 8, 12, 24, 3, 3, 1, 1, 2, 6),         # grouped, dilated
    (5, 5, 40, 33, 1, 1, 1, 0, 1, 1),         # GEMM path
    (7, 7, 16, 10, 7, 7, 1, 0, 1, 1),         # fc6-like: kernel covers the map
]
# conv2d computes a one-pixel result (fc6-like) with the dense kernel, the
# weights read in place; the layer's weights are packed for the GEMM kernel.
# Both are checked against the reference; where the algorithms differ, their
# rounding may too.


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv2d_layer_matches_reference_and_function(isa, rng, case, layout, dtype):
    h, w, c, k, kh, kw, stride, padding, dilation, groups = case
    x_nhwc, w_hwio, b = make_conv_inputs(rng, n=2, h=h, w=w, c=c, k=k, kh=kh, kw=kw,
                                         groups=groups, dtype=dtype)
    expected, magnitude, n_red = reference_for(x_nhwc, w_hwio, b, stride=stride,
                                               padding=padding, dilation=dilation,
                                               groups=groups, relu=True, layout=layout)
    x, weight = to_layout(x_nhwc, w_hwio, layout)
    layer = fastconv.Conv2d(weight, b, stride=stride, padding=padding, dilation=dilation,
                            groups=groups, activation="relu", layout=layout)
    assert layer.isa == isa
    for _ in range(2):  # the packed weights are reused unchanged
        y = layer(x)
        assert_close_to_reference(y, expected, magnitude, n_red, dtype)
    function, ran = _conv.conv2d_algorithm(x, weight, b, stride=stride, padding=padding,
                                           dilation=dilation, groups=groups,
                                           activation="relu", layout=layout)
    assert_close_to_reference(function, expected, magnitude, n_red, dtype)
    if same_kernel(layer.plan(x.shape)["algorithm"], ran):
        assert np.array_equal(y, function), "layer and conv2d run the same kernel"


def test_conv2d_layer_keeps_its_isa_after_a_switch(rng):
    """Weights packed for one ISA's register tile are read by that ISA's kernels."""
    isas = _config.available_isas()
    if len(isas) < 2:
        pytest.skip("one ISA only")
    x, w, b = make_conv_inputs(rng, n=1, h=9, w=9, c=8, k=40, kh=3, kw=3)
    layer = fastconv.Conv2d(w, b, padding=1)
    before = layer(x)
    previous = _config.set_isa(isas[-1])
    try:
        assert layer.isa == isas[0]
        assert np.array_equal(layer(x), before)
    finally:
        _config.set_isa(previous)


def test_conv2d_layer_other_input_sizes_and_same_padding(rng):
    x, w, b = make_conv_inputs(rng, n=1, h=5, w=5, c=4, k=6, kh=3, kw=3)
    layer = fastconv.Conv2d(w, b, stride=2, padding="same")
    for hw in [(5, 5), (8, 11), (1, 1)]:
        xi = random_array(rng, (1,) + hw + (4,), np.float32)
        y, (function, ran) = layer(xi), _conv.conv2d_algorithm(xi, w, b, stride=2,
                                                               padding="same")
        if y.shape[1:3] != (1, 1):
            assert ran == layer.plan(xi.shape)["algorithm"] == "igemm"
            assert np.array_equal(y, function)
            continue
        assert ran == "dense" and layer.plan(xi.shape)["algorithm"] == "igemm"
        # one pixel: conv2d's dense kernel against the layer's packed one
        expected, magnitude, n_red = reference_for(xi, w, b, stride=2, padding="same")
        assert_close_to_reference(y, expected, magnitude, n_red, np.float32)
        assert_close_to_reference(function, expected, magnitude, n_red, np.float32)


def test_conv2d_layer_out_and_unbatched(rng):
    x, w, b = make_conv_inputs(rng, n=None, h=6, w=6, c=4, k=5, kh=3, kw=3)
    layer = fastconv.Conv2d(w, b)
    out = np.empty((4, 4, 5), np.float32)
    assert layer(x, out=out) is out
    assert np.array_equal(out, fastconv.conv2d(x, w, b))


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(stride=0), ValueError, ["stride", "0"]),
    (dict(dilation=(1, -1)), ValueError, ["dilation", "-1"]),
    (dict(padding="full"), ValueError, ["padding", "full"]),
    (dict(padding=-1), ValueError, ["padding", "-1"]),
    (dict(activation="gelu"), ValueError, ["activation", "gelu"]),
    (dict(layout="NWHC"), ValueError, ["layout", "NWHC"]),
    (dict(groups=3), ValueError, ["groups=3", "K=4"]),
])
def test_conv2d_layer_rejects_bad_options_at_construction(kwargs, exc, words):
    w = np.zeros((3, 3, 6, 4), np.float32)
    with pytest.raises(exc) as info:
        fastconv.Conv2d(w, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert str(info.value).startswith("Conv2d:")


def test_conv2d_layer_rejects_bad_input():
    layer = fastconv.Conv2d(np.zeros((3, 3, 6, 4), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: x has C=5 channels, but the weight has 6 input "
                                         r"channels per group"):
        layer(np.zeros((1, 8, 8, 5), np.float32))
    with pytest.raises(TypeError, match=r"Conv2d: x and weight must share one dtype; "
                                        r"got x float64, weight float32"):
        layer(np.zeros((1, 8, 8, 6), np.float64))
    with pytest.raises(ValueError, match=r"Conv2d: the kernel .* larger than the padded input"):
        layer(np.zeros((1, 2, 8, 6), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: num_threads must be >= 1; got 0"):
        layer(np.zeros((1, 8, 8, 6), np.float32), num_threads=0)


@pytest.mark.parametrize("weight_layout", ["IO", "OI"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n,fin,fout", [(1, 300, 70), (5, 17, 1), (64, 64, 130)])
def test_linear_matches_dense_layer(isa, rng, n, fin, fout, weight_layout, dtype):
    x = random_array(rng, (n, fin), dtype)
    w_io = random_array(rng, (fin, fout), dtype)
    b = random_array(rng, (fout,), dtype)
    weight = w_io if weight_layout == "IO" else np.ascontiguousarray(w_io.T)
    layer = fastconv.Linear(weight, b, activation="relu", weight_layout=weight_layout)
    assert (layer.in_features, layer.out_features) == (fin, fout)
    expected = np.maximum(x.astype(np.float64) @ w_io + b, 0)
    magnitude = np.abs(x).astype(np.float64) @ np.abs(w_io) + np.abs(b)
    assert_close_to_reference(layer(x), expected, magnitude, fin, dtype)
    assert_close_to_reference(layer(x[0]), expected[0], magnitude[0], fin, dtype)
    function = fastconv.matmul(x, w_io, b, activation="relu")
    assert layer.algorithm == layer.plan(x.shape)["algorithm"] == "gemm"
    ran = _conv.GemmWeights("matmul", w_io, b, 1, one_call=True).plan(n, ("relu", 0.0, 0.0))[1]
    if same_kernel(ran, "gemm"):  # weights packed or read in place
        assert np.array_equal(layer(x), function)
    else:  # matmul's dense kernel against the layer's GEMM kernel
        assert ran == "dense"
        assert_close_to_reference(function, expected, magnitude, fin, dtype)


def test_linear_rejects_bad_input():
    with pytest.raises(ValueError, match=r"Linear: weight_layout must be 'IO' .*got 'XY'"):
        fastconv.Linear(np.zeros((3, 2), np.float32), weight_layout="XY")
    with pytest.raises(ValueError, match=r"Linear: bias must have shape \(2,\).*\(3,\)"):
        fastconv.Linear(np.zeros((3, 2), np.float32), np.zeros(3, np.float32))
    layer = fastconv.Linear(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"Linear: x has 4 features; the layer takes "
                                         r"in_features=3"):
        layer(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"Linear: out must have shape \(2, 2\); got \(2, 3\)"):
        layer(np.zeros((2, 3), np.float32), out=np.zeros((2, 3), np.float32))


# --------------------------------------------------------------------------
# Flush-to-zero / denormals-are-zero
# --------------------------------------------------------------------------
def _subnormal_case(dtype):
    tiny = np.finfo(dtype).smallest_normal
    x = np.full((1, 4, 4, 8), tiny / 16, dtype)     # subnormal inputs
    w = np.full((1, 1, 8, 4), 0.5, dtype)
    return x, w, tiny


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_flush_denormals_switch(isa, dtype):
    x, w, tiny = _subnormal_case(dtype)
    assert fastconv.get_flush_denormals() is True  # the documented default
    flushed = fastconv.conv2d(x, w)
    assert np.all(flushed == 0), "subnormal inputs must read as zero with FTZ/DAZ"
    fastconv.set_flush_denormals(False)
    try:
        exact = fastconv.conv2d(x, w)
    finally:
        fastconv.set_flush_denormals(True)
    # 8 * 0.5 * tiny/16 = tiny/4, a subnormal computed exactly.
    assert np.all(exact == dtype(tiny / 4))


def test_flush_denormals_does_not_leak_into_the_caller():
    """The kernel threads restore their floating-point mode: numpy in the
    calling thread still produces subnormals afterwards."""
    x, w, tiny = _subnormal_case(np.float32)
    fastconv.conv2d(x, w)
    assert np.float32(tiny) / np.float32(4) > 0


def test_set_flush_denormals_rejects_non_bool():
    with pytest.raises(TypeError, match=r"set_flush_denormals: enabled must be a bool; got 1"):
        fastconv.set_flush_denormals(1)


# --------------------------------------------------------------------------
# Depthwise kernel: wide rows so that tiles inside the image (no bounds
# checks, and the 3-tap stride-1 path) and border tiles both run.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kh,kw,stride,dilation,padding", [
    (3, 3, 1, 1, 1), (3, 3, 1, 1, 0), (3, 3, 2, 1, 1), (5, 5, 1, 1, 2),
    (3, 3, 1, 2, 2), (3, 5, (1, 2), 1, ((0, 2), (3, 1))), (1, 3, 1, 1, "same"),
])
@pytest.mark.parametrize("c", [16, 35])
def test_depthwise_wide_rows(isa, rng, kh, kw, stride, dilation, padding, c):
    x_nhwc, w_hwio, b = make_conv_inputs(rng, n=2, h=6, w=41, c=c, k=c, kh=kh, kw=kw,
                                         groups=c, dtype=np.float32)
    expected, magnitude, n_red = reference_for(x_nhwc, w_hwio, b, stride=stride,
                                               padding=padding, dilation=dilation,
                                               groups=c, relu=True)
    y = fastconv.conv2d(x_nhwc, w_hwio, b, stride=stride, padding=padding,
                        dilation=dilation, groups=c, activation="relu")
    assert_close_to_reference(y, expected, magnitude, n_red, np.float32)
    y2 = fastconv.conv2d(x_nhwc, w_hwio, b, stride=stride, padding=padding,
                         dilation=dilation, groups=c, activation="relu", num_threads=2)
    assert np.array_equal(y, y2)


def test_conv2d_layer_plans_follow_the_flush_setting():
    """A layer keeps its checked plan per input shape; the flush setting,
    which the kernels read from the plan, must still take effect."""
    x, w, tiny = _subnormal_case(np.float32)
    layer = fastconv.Conv2d(w)
    assert np.all(layer(x) == 0)
    fastconv.set_flush_denormals(False)
    try:
        assert np.all(layer(x) == np.float32(tiny / 4))
    finally:
        fastconv.set_flush_denormals(True)
    assert np.all(layer(x) == 0)


def test_conv2d_layer_from_many_python_threads(rng):
    """One layer called at once from several Python threads, with several
    input shapes and thread counts, gives each call's single-threaded result."""
    import concurrent.futures

    _, w, b = make_conv_inputs(rng, n=1, h=4, w=4, c=8, k=24, kh=3, kw=3)
    layer = fastconv.Conv2d(w, b, padding="same", activation="relu")
    inputs = [random_array(rng, (n, h, h, 8), np.float32)
              for n, h in [(1, 9), (2, 16), (1, 31), (3, 7)]]
    expected = [layer(xi, num_threads=1) for xi in inputs]
    jobs = [(i % len(inputs), 1 + i % 2) for i in range(32)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: layer(inputs[job[0]], num_threads=job[1]), jobs))
    for (i, _), y in zip(jobs, results):
        assert np.array_equal(y, expected[i])


# --------------------------------------------------------------------------
# The layers keep only their packed weights, and read them back exactly
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv2d_layer_gives_back_its_weights(isa, rng, case, layout):
    h, w, c, k, kh, kw, stride, padding, dilation, groups = case
    _, w_hwio, b = make_conv_inputs(rng, n=1, h=h, w=w, c=c, k=k, kh=kh, kw=kw,
                                    groups=groups, dtype=np.float32)
    specials = np.array([np.inf, -np.inf, np.nan, -0.0], np.float32)
    w_hwio.flat[::7] = np.resize(specials, w_hwio.flat[::7].size)  # kept exactly too
    _, weight = to_layout(np.zeros((1, 1, 1, c), np.float32), w_hwio, layout)
    layer = fastconv.Conv2d(weight, b, groups=groups, layout=layout)
    back = layer.weight
    assert back.shape == weight.shape and back.dtype == weight.dtype
    assert np.array_equal(back, weight, equal_nan=True)
    assert np.array_equal(np.signbit(back), np.signbit(weight))
    assert np.array_equal(layer.bias, b)
    with pytest.raises(ValueError, match="read-only"):
        back[...] = 0  # refused: it would not change the packed weights that run
    back.flags.writeable = True  # a copy of the caller's own: writing to it
    back[...] = 0                # leaves the layer unchanged
    assert np.array_equal(layer.weight, weight, equal_nan=True)


@pytest.mark.parametrize("weight_layout", ["IO", "OI"])
@pytest.mark.parametrize("shape", [(1, 1), (37, 70), (300, 5), (64, 33)], ids=str)
def test_linear_layer_gives_back_its_weights(isa, rng, weight_layout, shape):
    weight = random_array(rng, shape, np.float64)
    bias = random_array(rng, (shape[1] if weight_layout == "IO" else shape[0],), np.float64)
    layer = fastconv.Linear(weight, bias, weight_layout=weight_layout)
    assert np.array_equal(layer.weight, weight)
    assert np.array_equal(layer.bias, bias)
    assert layer.bias is not layer.bias  # a new array each time


def test_layers_hold_their_weights_once():
    """A layer's memory is its packed weights (plus rounding of the output
    channels up to the register tile), not a second copy: VGG's fc6 must fit
    once (issue: at most about 1.1x the weights)."""
    tracemalloc = pytest.importorskip("tracemalloc")
    weight = np.ones((7, 7, 64, 512), np.float32)  # 6.4 MB
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        layers = [fastconv.Conv2d(weight), fastconv.nn.Conv2d(weight),
                  fastconv.Linear(weight.reshape(-1, 512)),
                  fastconv.nn.Linear(weight.reshape(-1, 512))]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= 1.1 * len(layers) * weight.nbytes, held / weight.nbytes
