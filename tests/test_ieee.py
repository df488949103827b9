"""IEEE 754 behaviour: NaN and Inf reach exactly the outputs they touch,
ReLU keeps NaN and -0.0, and subnormals are flushed (or not) as
fastconv.set_flush_denormals says, without changing the caller's
floating-point mode.

What is expected comes from the float64 reference (tests/reference.py),
where a tap in the padding contributes nothing: an Inf or NaN weight never
reaches an output through a padding tap (0 * Inf would be NaN), while an
Inf input meeting a zero weight inside the image does give NaN.
assert_close_to_reference compares the NaN, +Inf and -Inf patterns exactly
and the finite values within the forward error bound.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from checks import (assert_close_to_reference, make_conv_inputs, random_array,
                    reference_for, to_layout)
from reference import matmul_ref
from strategies import conv_configs, examples

NONFINITE = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}

# (n, h, w, c, k, kh, kw, stride, padding, dilation, groups): one of each
# kernel family and of the paths inside them.
FAMILIES = {
    "3x3-few-channels": (2, 6, 7, 3, 5, 3, 3, 1, 1, 1, 1),   # taps merged in rows (C < 32)
    "3x3": (1, 6, 7, 33, 5, 3, 3, 1, 1, 1, 1),               # a pointer per tap
    "3x3-stride2": (1, 9, 8, 4, 6, 3, 3, 2, 1, 1, 1),
    "3x3-dilated": (1, 8, 9, 5, 4, 3, 3, 1, 2, 2, 1),
    "asym-padding": (1, 6, 7, 4, 5, 2, 3, 1, ((2, 0), (0, 2)), 1, 1),
    "1x1": (2, 5, 6, 7, 9, 1, 1, 1, 0, 1, 1),                # GEMM over the pixels
    "1x1-padded": (1, 4, 5, 7, 9, 1, 1, 1, 1, 1, 1),
    "depthwise3x3": (1, 6, 20, 16, 16, 3, 3, 1, 1, 1, 16),   # inside tiles, the 3-tap path
    "depthwise3x3-stride2": (1, 7, 21, 16, 16, 3, 3, 2, 1, 1, 16),
    "depthwise5x5": (1, 6, 20, 19, 19, 5, 5, 1, 2, 1, 19),   # and a channel tail
    "depthwise-multiplier": (1, 6, 7, 4, 8, 3, 3, 1, 1, 1, 4),
    "grouped": (1, 6, 7, 6, 4, 3, 3, 1, 1, 1, 2),
    "one-pixel": (2, 5, 5, 3, 4, 5, 5, 1, 0, 1, 1),          # kernel = map: the dense kernel
    "one-pixel-padded": (2, 5, 5, 3, 4, 7, 7, 1, 1, 1, 1),
}


def _poison_cases(x, w, rng):
    """(what, index) pairs: a corner and an inner input pixel/channel, the
    corner tap (in the padding for the border outputs) and the centre tap of
    one weight, one bias value."""
    n, h, wd, c = x.shape
    kh, kw, cg, k = w.shape
    return [("x", (0, 0, 0, 0)), ("x", (n - 1, h // 2, wd // 2, c - 1)),
            ("weight", (0, 0, 0, 0)), ("weight", (kh // 2, kw // 2, cg - 1, k - 1)),
            ("bias", (int(rng.integers(k)),))]


def _check_conv_nonfinite(rng, family, value, dtype, relu, layout="NHWC"):
    n, h, w, c, k, kh, kw, stride, padding, dilation, groups = FAMILIES[family]
    x0, w0, b0 = make_conv_inputs(rng, n=n, h=h, w=w, c=c, k=k, kh=kh, kw=kw, groups=groups,
                                  dtype=dtype)
    # Zeros for 0 * Inf: channel 0 of two pixels, and output 0's weights of
    # input channel 0 at every tap.
    x0[0, h - 1, w - 1, 0] = x0[-1, 1, 1, 0] = 0
    w0[:, :, 0, 0] = 0
    for what, index in _poison_cases(x0, w0, rng):
        arrays = {"x": x0.copy(), "weight": w0.copy(), "bias": b0.copy()}
        arrays[what][index] = value
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        expected, magnitude, n_red = reference_for(arrays["x"], arrays["weight"],
                                                   arrays["bias"], relu=relu, layout=layout,
                                                   **kwargs)
        # The value reaches some output before the activation (unless it is
        # the corner tap of a weight, which may lie in the padding for all).
        if (what, index) != ("weight", (0, 0, 0, 0)):
            linear, _, _ = reference_for(arrays["x"], arrays["weight"], arrays["bias"],
                                         **kwargs)
            assert not np.isfinite(linear).all(), (what, index)
        x, weight = to_layout(arrays["x"], arrays["weight"], layout)
        for call in ("conv2d", "layer"):
            options = dict(activation="relu" if relu else None, layout=layout, **kwargs)
            if call == "conv2d":
                result = fastconv.conv2d(x, weight, arrays["bias"], **options)
            else:
                result = fastconv.Conv2d(weight, arrays["bias"], **options)(x)
            try:
                assert_close_to_reference(result, expected, magnitude, n_red, dtype)
            except AssertionError as exc:
                raise AssertionError(f"{call}, {value} at {what}{list(index)}: {exc}") from None


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("value", list(NONFINITE))
def test_conv_nonfinite_reaches_exactly_the_outputs_it_touches(isa, rng, family, value):
    for dtype, relu in ((np.float32, False), (np.float64, True)):
        _check_conv_nonfinite(rng, family, NONFINITE[value], dtype, relu)


@pytest.mark.parametrize("family", ["3x3-few-channels", "depthwise3x3", "one-pixel-padded"])
def test_conv_nonfinite_nchw(rng, family):
    for value in NONFINITE.values():
        _check_conv_nonfinite(rng, family, value, np.float32, True, layout="NCHW")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_padding_taps_never_turn_an_inf_weight_into_nan(isa, family):
    """All inputs 1, all weights 0 but +Inf at the corner tap: an output is
    +Inf where that tap lies inside the image and exactly 0 where it lies in
    the padding (NaN from 0 * Inf would appear if padding were multiplied)."""
    n, h, w, c, k, kh, kw, stride, padding, dilation, groups = FAMILIES[family]
    x = np.ones((n, h, w, c), np.float32)
    weight = np.zeros((kh, kw, c // groups, k), np.float32)
    weight[0, 0] = np.inf
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    expected, _, _ = reference_for(x, weight, None, **kwargs)
    assert set(np.unique(expected)) <= {0.0, np.inf}
    for result in (fastconv.conv2d(x, weight, **kwargs), fastconv.Conv2d(weight, **kwargs)(x)):
        np.testing.assert_array_equal(result, expected)


@settings(max_examples=examples(1))
@given(config=conv_configs(), where=st.sampled_from(["x", "weight", "bias"]),
       value=st.sampled_from(list(NONFINITE.values())), position=st.floats(0, 1),
       zero_fraction=st.sampled_from([0.0, 0.3]))
def test_conv_nonfinite_random_configurations(isa, config, where, value, position,
                                              zero_fraction):
    """One NaN or Inf at a random place of x, the weight or the bias, with
    some zeros for 0 * Inf, in every kind of convolution."""
    config = dict(config)
    rng = np.random.default_rng(config.pop("seed"))
    dtype, layout, relu = config["dtype"], config["layout"], config["relu"]
    n = config["n"] or 1
    x, weight, bias = make_conv_inputs(rng, n=n, h=config["h"], w=config["w"], c=config["c"],
                                       k=config["k"], kh=config["kh"], kw=config["kw"],
                                       groups=config["groups"], dtype=dtype)
    x[rng.random(x.shape) < zero_fraction] = 0
    weight[rng.random(weight.shape) < zero_fraction] = 0
    target = {"x": x, "weight": weight, "bias": bias}[where]
    target.flat[min(int(position * target.size), target.size - 1)] = value
    kwargs = dict(stride=config["stride"], padding=config["padding"],
                  dilation=config["dilation"], groups=config["groups"])
    expected, magnitude, n_red = reference_for(x, weight, bias, relu=relu, layout=layout,
                                               **kwargs)
    xl, wl = to_layout(x, weight, layout)
    result = fastconv.conv2d(xl, wl, bias, activation="relu" if relu else None,
                             layout=layout, **kwargs)
    assert_close_to_reference(result, expected, magnitude, n_red, dtype)


# --------------------------------------------------------------------------
# matmul and Linear
# --------------------------------------------------------------------------
def _products_sum(a, b, bias, relu):
    """a @ b (+ bias) (ReLU) in float64, summed as written (IEEE: no BLAS)."""
    out = np.einsum("mk,kn->mn", np.asarray(a, np.float64), np.asarray(b, np.float64))
    if bias is not None:
        out = out + bias
    return np.maximum(out, 0.0) if relu else out


@pytest.mark.parametrize("m", [3, 20, 600], ids=["dense-kernel", "in-place", "packed"])
@pytest.mark.parametrize("value", list(NONFINITE))
@pytest.mark.parametrize("call", ["matmul", "Linear"])
def test_matmul_nonfinite_reaches_exactly_the_outputs_it_touches(isa, rng, m, value, call):
    k, n = 37, 32
    for dtype, relu in ((np.float32, False), (np.float64, True)):
        a0 = random_array(rng, (m, k), dtype)
        b0 = random_array(rng, (k, n), dtype)
        bias0 = random_array(rng, (n,), dtype)
        a0[1, 0] = 0       # 0 * Inf
        b0[0, 2] = 0
        for what, index in (("a", (0, 0)), ("a", (m - 1, k - 1)), ("b", (0, 0)),
                            ("b", (k - 1, n - 1)), ("bias", (n // 2,))):
            arrays = {"a": a0.copy(), "b": b0.copy(), "bias": bias0.copy()}
            arrays[what][index] = NONFINITE[value]
            expected = _products_sum(arrays["a"], arrays["b"], arrays["bias"], relu)
            magnitude = _products_sum(np.abs(arrays["a"]), np.abs(arrays["b"]),
                                      np.abs(arrays["bias"]), False)
            activation = "relu" if relu else None
            if call == "matmul":
                result = fastconv.matmul(arrays["a"], arrays["b"], arrays["bias"],
                                         activation=activation)
            else:
                result = fastconv.Linear(arrays["b"], arrays["bias"],
                                         activation=activation)(arrays["a"])
            assert_close_to_reference(result, expected, magnitude, k, dtype)


# --------------------------------------------------------------------------
# ReLU: NaN stays NaN (as in PyTorch), -0.0 stays -0.0, v < 0 becomes +0.0
# --------------------------------------------------------------------------
def _relu_cases(rng, dtype):
    """(name, linear(), relu()) calls on inputs giving negative, positive, NaN
    and (where FTZ flushes a negative subnormal result on FMA hardware) -0.0
    values before the activation."""
    tiny = dtype(2.0 ** (-70 if dtype == np.float32 else -540))
    x = random_array(rng, (1, 6, 8, 16), dtype)
    x[0, :3] = -tiny              # rows of tiny negative inputs...
    x[0, 4, 4, 3] = np.nan
    w = random_array(rng, (3, 3, 16, 16), dtype)
    w[:, :, :, :4] = (np.abs(w[:, :, :, :4]) + 0.5) * tiny  # ...times tiny weights:
    # subnormal products, flushed
    dw = np.abs(random_array(rng, (3, 3, 1, 16), dtype)) * tiny
    bad = w.copy()
    bad[1, 1, 0, 5] = np.nan      # non-finite weights take their own way
    a = x.reshape(-1, 16)
    cases = {
        "conv3x3": lambda act: fastconv.conv2d(x, w, padding=1, activation=act),
        "pointwise": lambda act: fastconv.conv2d(x, w[1:2, 1:2], activation=act),
        "depthwise": lambda act: fastconv.conv2d(x, dw, groups=16, activation=act),
        "nan-weight": lambda act: fastconv.conv2d(x, bad, padding=1, activation=act),
        "matmul": lambda act: fastconv.matmul(a, w[1, 1], activation=act),
        "matmul-few-rows": lambda act: fastconv.matmul(a[33:38], w[1, 1], activation=act),
        "Linear": lambda act: fastconv.Linear(w[1, 1], activation=act)(a),
    }
    return cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_relu_keeps_nan_and_zeroes_negatives(isa, rng, dtype):
    """relu(v) is +0.0 where v < 0 and v itself otherwise, bit for bit: NaN
    stays NaN (PyTorch's torch.relu(nan) is nan), and so does -0.0."""
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for name, call in _relu_cases(rng, dtype).items():
        linear, relu = call(None), call("relu")
        assert np.isnan(linear).any() and (linear < 0).any() and (linear > 0).any(), name
        expected = np.where(linear < 0, dtype(0), linear)
        assert np.array_equal(relu.view(bits), expected.view(bits)), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_relu_keeps_negative_zero(isa, rng, dtype):
    """A -0.0 before the activation is -0.0 after it. A kernel's sum starts
    at +0.0 and so is never -0.0, except when flush-to-zero writes a tiny
    negative result as -0.0: a fused multiply-add does that in these cases,
    separate multiplies and adds do not (the generic kernels, or a build
    that does not contract them), where there is nothing to check."""
    found = 0
    for name, call in _relu_cases(rng, dtype).items():
        linear = call(None)
        negative_zero = np.signbit(linear) & (linear == 0)
        if negative_zero.any():
            found += 1
            relu = call("relu")
            assert np.signbit(relu[negative_zero]).all() and (relu[negative_zero] == 0).all(), name
    if not found:
        pytest.skip("these kernels made no -0.0 for ReLU to keep (no fused multiply-add)")


# --------------------------------------------------------------------------
# Subnormals: flushed to zero by default, exact IEEE 754 with the flush off
# --------------------------------------------------------------------------
def _scale(dtype, kind):
    """Powers of two for exact values: "inputs" makes x (and the bias)
    subnormal; "products" makes x and the weights normal with subnormal
    products. Every sum stays subnormal and exactly representable."""
    if kind == "inputs":
        return (2.0**-140, 1.0) if dtype == np.float32 else (2.0**-1040, 1.0)
    return (2.0**-70, 2.0**-70) if dtype == np.float32 else (2.0**-520, 2.0**-520)


# name: (function, options, x shape, weight shape); matmul and Linear take
# x as (pixels, C) and the weight's (C, K) 1x1 tap.
SUBNORMAL_CALLS = {
    "conv3x3": ("conv2d", dict(padding=1), (1, 24, 24, 16), (3, 3, 16, 16)),
    "conv3x3-few-channels": ("conv2d", dict(padding=1), (2, 7, 6, 3), (3, 3, 3, 5)),
    "conv-stride2": ("conv2d", dict(stride=2), (1, 9, 9, 8), (3, 3, 8, 8)),
    "pointwise": ("conv2d", {}, (1, 24, 24, 16), (1, 1, 16, 64)),
    "depthwise": ("conv2d", dict(padding=1, groups=32), (1, 32, 40, 32), (3, 3, 1, 32)),
    "one-pixel": ("conv2d", {}, (2, 3, 3, 8), (3, 3, 8, 16)),
    "Conv2d": ("Conv2d", dict(padding="same"), (1, 12, 12, 16), (3, 3, 16, 16)),
    "matmul": ("matmul", {}, (1, 40, 40, 16), (1, 1, 16, 32)),
    "matmul-few-rows": ("matmul", {}, (1, 1, 3, 16), (1, 1, 16, 32)),
    "Linear": ("Linear", {}, (1, 4, 5, 16), (1, 1, 16, 24)),
}


def _subnormal_call(name, x, w, b, num_threads):
    function, options, _, _ = SUBNORMAL_CALLS[name]
    if function == "conv2d":
        return fastconv.conv2d(x, w, b, num_threads=num_threads, **options)
    if function == "Conv2d":
        return fastconv.Conv2d(w, b, **options)(x, num_threads=num_threads)
    rows = x.reshape(-1, x.shape[-1])
    if function == "matmul":
        return fastconv.matmul(rows, w[0, 0], b, num_threads=num_threads)
    return fastconv.Linear(w[0, 0], b)(rows, num_threads=num_threads)


def _subnormal_inputs(rng, name, dtype, kind):
    """Exactly representable x, w, b (small integers times powers of two) and
    the exact result: the reference on the integers, scaled afterwards."""
    function, options, x_shape, w_shape = SUBNORMAL_CALLS[name]
    sx, sw = _scale(dtype, kind)
    xi = rng.integers(-3, 4, x_shape).astype(np.float64)
    wi = rng.integers(-3, 4, w_shape).astype(np.float64)
    bi = rng.integers(-3, 4, w_shape[-1]).astype(np.float64)
    if function in ("conv2d", "Conv2d"):
        exact, _, _ = reference_for(xi, wi, bi, **options)
    else:
        exact = matmul_ref(xi.reshape(-1, x_shape[-1]), wi[0, 0], bi)
    scale = sx * sw
    return ((xi * sx).astype(dtype), (wi * sw).astype(dtype), (bi * scale).astype(dtype),
            exact * scale)


@pytest.fixture
def flush_off():
    fastconv.set_flush_denormals(False)
    yield
    fastconv.set_flush_denormals(True)


def _caller_keeps_subnormals():
    """The calling thread's own arithmetic still produces subnormals: its
    MXCSR (FTZ/DAZ) is as it was."""
    for dtype, half in ((np.float32, 2.0**-70), (np.float64, 2.0**-530)):
        product = np.multiply(dtype(half), dtype(half))
        assert product == dtype(half * half) and product != 0, dtype


@pytest.mark.parametrize("name", list(SUBNORMAL_CALLS))
@pytest.mark.parametrize("kind", ["inputs", "products"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_subnormals_flushed_by_default(isa, rng, name, kind, dtype):
    """Flush on (the default): subnormal inputs read as zero and subnormal
    products and sums are written as zero, so every result here is zero,
    the reference's value with subnormals treated as zero."""
    assert fastconv.get_flush_denormals()
    x, w, b, exact = _subnormal_inputs(rng, name, dtype, kind)
    assert (exact != 0).any() and (np.abs(exact) < np.finfo(dtype).smallest_normal).all()
    for threads in (1, 2):
        result = _subnormal_call(name, x, w, b, threads)
        assert result.dtype == dtype and result.shape == exact.shape
        assert (result == 0).all(), f"{np.count_nonzero(result)} results not flushed"
        _caller_keeps_subnormals()


@pytest.mark.parametrize("name", list(SUBNORMAL_CALLS))
@pytest.mark.parametrize("kind", ["inputs", "products"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_subnormals_exact_with_flush_off(isa, rng, flush_off, name, kind, dtype):
    """Flush off: subnormal inputs, products and sums are kept, exactly (all
    values here are small integers times a power of two). Run after a
    flushing call on the same threads, so a kernel thread that kept its
    flush mode would show."""
    x, w, b, exact = _subnormal_inputs(rng, name, dtype, kind)
    for threads in (1, 2):
        fastconv.set_flush_denormals(True)
        _subnormal_call(name, x, w, b, threads)
        fastconv.set_flush_denormals(False)
        result = _subnormal_call(name, x, w, b, threads)
        np.testing.assert_array_equal(result, exact.astype(dtype))
        _caller_keeps_subnormals()


def test_flush_setting_never_changes_the_callers_mode_after_errors():
    """A call that fails its checks, and one that runs, leave the caller's
    floating-point mode as it was."""
    x = np.ones((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError):
        fastconv.conv2d(x, np.ones((3, 3, 3, 2), np.float32), padding=-1)
    fastconv.conv2d(x, np.ones((3, 3, 3, 2), np.float32), num_threads=2)
    _caller_keeps_subnormals()


def test_relu_layer_agrees_with_the_fused_activation(isa, rng):
    """nn.ReLU on a call's linear result is bit for bit the call's fused
    activation="relu": NaN and -0.0 stay, v < 0 becomes +0.0."""
    for dtype in (np.float32, np.float64):
        bits = np.uint32 if dtype == np.float32 else np.uint64
        values = np.array([-0.0, 0.0, -1.5, 2.5, np.nan, -np.inf, np.inf], dtype)
        assert np.array_equal(fastconv.nn.ReLU()(values).view(bits),
                              np.array([-0.0, 0.0, 0.0, 2.5, np.nan, 0.0, np.inf],
                                       dtype).view(bits))
        for name, call in _relu_cases(rng, dtype).items():
            layer = fastconv.nn.ReLU()(call(None))
            assert np.array_equal(layer.view(bits), call("relu").view(bits)), name


def test_subnormal_times_inf_is_one_rule_on_every_path(isa):
    """With the flush on, a subnormal input reads as zero everywhere, so it
    meets an Inf weight as 0 * Inf = NaN, on the GEMM, one-pixel, several-
    pixel and non-finite-weight paths alike; with it off, -1e-39 * Inf is
    -Inf everywhere."""
    a = np.array([[-1e-39, 0.5]], np.float32)
    b = np.array([[np.inf], [1.0]], np.float32)
    two = np.concatenate([a, a]).reshape(1, 1, 2, 2)
    calls = {
        "matmul": lambda: fastconv.matmul(a, b),
        "Linear": lambda: fastconv.Linear(b)(a),
        "conv2d one pixel": lambda: fastconv.conv2d(a.reshape(1, 1, 1, 2), b.reshape(1, 1, 2, 1)),
        "conv2d two pixels": lambda: fastconv.conv2d(two, b.reshape(1, 1, 2, 1)),
        "Conv2d": lambda: fastconv.Conv2d(b.reshape(1, 1, 2, 1))(two),
        "conv2d padded": lambda: fastconv.conv2d(two, b.reshape(1, 1, 2, 1), padding=1),
    }
    try:
        for flush, expected in ((True, np.nan), (False, -np.inf)):
            fastconv.set_flush_denormals(flush)
            for name, call in calls.items():
                result = call().ravel()
                inside = result if name != "conv2d padded" else result.reshape(3, 4)[1, 1:3]
                np.testing.assert_array_equal(inside, expected, err_msg=f"{name}, flush={flush}")
    finally:
        fastconv.set_flush_denormals(True)


# --------------------------------------------------------------------------
# The caller's floating-point mode never reaches the kernels
# --------------------------------------------------------------------------
_FE_TOWARDZERO, _FE_TONEAREST = 0xC00, 0  # x86 <fenv.h>


def _caller_modes():
    """Ways a caller may have set its thread's floating-point mode, each a
    (set, unset) pair: round toward zero (fesetround, the C library's), and
    flush-to-zero + denormals-are-zero (torch.set_flush_denormal, if torch
    is installed)."""
    import ctypes
    import platform
    modes = {}
    if platform.machine() in ("x86_64", "AMD64"):
        libc = ctypes.CDLL(None)
        modes["round-toward-zero"] = (lambda: libc.fesetround(_FE_TOWARDZERO),
                                      lambda: libc.fesetround(_FE_TONEAREST),
                                      lambda: libc.fegetround() == _FE_TOWARDZERO)
    try:
        import torch
    except ImportError:
        pass
    else:
        modes["ftz-daz"] = (lambda: torch.set_flush_denormal(True),
                            lambda: torch.set_flush_denormal(False),
                            lambda: np.multiply(np.float32(2.0**-70), np.float32(2.0**-70)) == 0)
    return modes


def _mode_sensitive_calls(rng):
    """Calls whose results a caller's rounding or flush mode would change: a
    sum of products with subnormal and inexact terms, on every kernel family
    (direct, GEMM, one pixel, Winograd, depthwise, average pooling)."""
    from fastconv._conv import conv2d_algorithm
    x = (rng.standard_normal((1, 12, 12, 64)) * 2.0**-62).astype(np.float32)
    w = (rng.standard_normal((3, 3, 64, 64)) * 2.0**-62).astype(np.float32)
    one = (rng.standard_normal((2, 3, 3, 64)) * 2.0**-62).astype(np.float32)
    dw = (rng.standard_normal((3, 3, 1, 64)) * 2.0**-62).astype(np.float32)
    # (subnormal sums: pooling keeps them whatever the flush setting)
    pool, tiny = fastconv.nn.AvgPool2d(3, 1, 1), x * np.float32(2.0**-70)

    def forced(algorithm, xs, ws, **options):
        return lambda t: conv2d_algorithm(xs, ws, algorithm=algorithm, num_threads=t,
                                          **options)[0]
    return {
        "igemm": forced("igemm", x, w, padding=1),
        "winograd": forced("winograd-f2x2-3x3", x, w, padding=1),
        "gemm": forced("gemm", x, w[1:2, 1:2]),
        "dense": forced("dense", one, w),
        "depthwise": forced("depthwise", x, dw, padding=1, groups=64),
        "avgpool": lambda t: pool(tiny, num_threads=t),
        "matmul": lambda t: fastconv.matmul(x.reshape(-1, 64), w[1, 1], num_threads=t),
    }


def test_results_do_not_depend_on_the_callers_fp_mode(isa, rng):
    """Whatever rounding or flush mode the calling thread has, every kernel
    runs round-to-nearest with subnormals flushed exactly as
    get_flush_denormals() says, on every thread: the results are bitwise
    those of a caller in the default mode, for 1 and 2 threads, and the
    caller's mode is as it was afterwards."""
    modes = _caller_modes()
    if not modes:
        pytest.skip("no way to set the caller's floating-point mode here")
    calls = _mode_sensitive_calls(rng)
    try:
        for flush in (True, False):
            fastconv.set_flush_denormals(flush)
            expected = {name: call(1) for name, call in calls.items()}
            for name in expected:
                assert np.array_equal(expected[name], calls[name](2)), (name, flush)
            for mode, (enter, leave, active) in modes.items():
                enter()
                try:
                    results = {(name, t): call(t) for name, call in calls.items()
                               for t in (1, 2)}
                    assert active(), f"fastconv changed the caller's {mode} mode"
                finally:
                    leave()
                for (name, t), result in results.items():
                    assert np.array_equal(result, expected[name]), (
                        f"{name}, {t} threads, caller in {mode}, flush={flush}: "
                        f"{np.count_nonzero(result != expected[name])} values differ")
    finally:
        fastconv.set_flush_denormals(True)
