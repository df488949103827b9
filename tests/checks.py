"""Accuracy checks shared by the test modules.

The tolerance below is the one every accuracy test uses: a standard floating
point forward error bound, elementwise, with no extra slack.
"""

import numpy as np

import fastconv
from reference import (
    conv2d_magnitude,
    conv2d_ref,
    hwio_to_oihw,
    nhwc_to_nchw,
    normalize_padding,
)

FLOAT_DTYPES = (np.float32, np.float64)
DTYPE_IDS = {np.float32: "f32", np.float64: "f64"}


def random_array(rng, shape, dtype, low=-1.0, high=1.0):
    """Uniform random values, rounded once to ``dtype``.

    The reference is always fed these rounded values (converted exactly to
    float64), so input rounding never enters the comparison.
    """
    return rng.uniform(low, high, size=shape).astype(dtype)


# --------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------
# Every conv/matmul output is   y = sum_{i=1..n} x_i * w_i  (+ b)   (+ ReLU).
# For a sum of n products evaluated in floating point in ANY order (blocked,
# pairwise, with or without FMA) the classic forward error bound
# (Higham, "Accuracy and Stability of Numerical Algorithms", Thm 3.1 / 3.5) is
#
#     |fl(y) - y| <= gamma_m * sum_i |x_i| |w_i|  (+ |b|),
#     gamma_m = m u / (1 - m u),  u = eps / 2 (unit roundoff),
#
# with m = n + 1 when the bias is folded in as one more term, and m = n + 2
# allowing one extra rounding when a wider accumulator is stored to the
# output dtype. ReLU is 1-Lipschitz, so the bound survives it. The right-hand
# magnitude is computed elementwise with the reference applied to |x|, |w|,
# |b|.
#
# The float64 reference has its own error, gamma_{n+1}(u_64) * magnitude; it
# is negligible against a float32 result but of the same size as a float64
# result's, so it is added to the allowance. No other slack is allowed.
def gamma(m, dtype):
    u = np.finfo(dtype).eps / 2.0
    return m * u / (1.0 - m * u)


def forward_error_bound(magnitude, reduction_len, dtype):
    """Elementwise bound on |computed - exact| for one implementation."""
    return gamma(reduction_len + 2, dtype) * np.asarray(magnitude, np.float64)


def reference_error_bound(magnitude, reduction_len):
    return gamma(reduction_len + 1, np.float64) * np.asarray(magnitude, np.float64)


def assert_within_bound(actual, expected, bound, what="result"):
    actual64 = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual64.shape == expected.shape, (actual64.shape, expected.shape)
    assert np.array_equal(np.isnan(actual64), np.isnan(expected)), \
        f"{what}: NaN pattern differs from the reference"
    for sign in (1, -1):
        assert np.array_equal(actual64 == sign * np.inf, expected == sign * np.inf), \
            f"{what}: {'+' if sign > 0 else '-'}Inf pattern differs from the reference"
    finite = np.isfinite(expected)
    err = np.abs(actual64[finite] - expected[finite])
    bound = np.broadcast_to(bound, expected.shape)[finite]
    bad = err > bound
    if bad.any():
        idx = np.flatnonzero(bad)
        worst = idx[np.argmax(err[idx] - bound[idx])]
        ratio = err[worst] / bound[worst] if bound[worst] > 0 else np.inf
        pos = np.unravel_index(np.flatnonzero(finite)[worst], expected.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} elements outside the forward "
            f"error bound; worst at {pos}: got {actual64[pos]!r}, expected "
            f"{expected[pos]!r}, |err|={err[worst]:.3e} > bound={bound[worst]:.3e} "
            f"(x{ratio:.2f})")


def assert_close_to_reference(actual, expected, magnitude, reduction_len, dtype):
    """Check a fastconv result against the float64 reference.

    ``reduction_len`` is the number of products summed per output
    (kh * kw * C/groups for conv, K for matmul).
    """
    assert np.asarray(actual).dtype == np.dtype(dtype), \
        f"result dtype {np.asarray(actual).dtype} != input dtype {np.dtype(dtype)}"
    bound = (forward_error_bound(magnitude, reduction_len, dtype)
             + reference_error_bound(magnitude, reduction_len))
    assert_within_bound(actual, expected, bound)


def assert_close_to_other_impl(actual, other, magnitude, reduction_len, dtype):
    """Two implementations in ``dtype`` each within the bound of the exact value."""
    bound = 2.0 * forward_error_bound(magnitude, reduction_len, dtype)
    assert_within_bound(actual, other, bound, what="result vs other implementation")


# --------------------------------------------------------------------------
# A complete conv2d check: random inputs, fastconv call, reference, bound.
# --------------------------------------------------------------------------
def make_conv_inputs(rng, *, n, h, w, c, k, kh, kw, groups=1, bias=True,
                     dtype=np.float32):
    """Random NHWC input, HWIO weight and bias (or None)."""
    shape = (h, w, c) if n is None else (n, h, w, c)
    x = random_array(rng, shape, dtype)
    weight = random_array(rng, (kh, kw, c // groups, k), dtype)
    b = random_array(rng, (k,), dtype) if bias else None
    return x, weight, b


def to_layout(x_nhwc, w_hwio, layout):
    """Contiguous arrays in the argument layout of ``layout``."""
    if layout == "NHWC":
        return np.ascontiguousarray(x_nhwc), np.ascontiguousarray(w_hwio)
    return (np.ascontiguousarray(nhwc_to_nchw(x_nhwc)),
            np.ascontiguousarray(hwio_to_oihw(w_hwio)))


def reference_for(x_nhwc, w_hwio, bias, *, stride=1, padding=0, dilation=1,
                  groups=1, relu=False, layout="NHWC"):
    """(expected, magnitude, reduction_len) in ``layout``."""
    kh, kw, c_per_group, _ = w_hwio.shape
    pads = normalize_padding(padding, x_nhwc.shape[-3:-1], (kh, kw), stride, dilation)
    kwargs = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
    expected = conv2d_ref(x_nhwc, w_hwio, bias, relu=relu, **kwargs)
    magnitude = conv2d_magnitude(x_nhwc, w_hwio, bias, **kwargs)
    if layout == "NCHW":
        expected, magnitude = nhwc_to_nchw(expected), nhwc_to_nchw(magnitude)
    return expected, magnitude, kh * kw * c_per_group


def strided_view(a):
    """A non-contiguous view (every other element of every axis) holding ``a``."""
    big = np.zeros(tuple(2 * s for s in a.shape), a.dtype)
    view = big[(slice(None, None, 2),) * a.ndim]
    view[...] = a
    return view


# How an input can be held in memory; each kind is a valid input.
MEMORY_KINDS = ("contiguous", "strided", "reversed", "fortran", "byteswapped",
                "read-only", "unaligned")


def in_memory(a, kind):
    """A new array equal to ``a`` (same shape and values) held as ``kind``:
    "strided" every other element of every axis, "reversed" negative strides
    on every axis, "fortran" column-major, "byteswapped" the non-native byte
    order, "read-only" not writeable, "unaligned" at an odd byte offset."""
    a = np.asarray(a)
    if kind == "contiguous":
        return a.copy()
    if kind == "strided":
        return strided_view(a)
    if kind == "reversed":
        view = np.zeros_like(a)[(slice(None, None, -1),) * a.ndim]
    elif kind == "fortran":
        view = np.zeros(a.shape, a.dtype, order="F")
    elif kind == "byteswapped":
        view = np.zeros(a.shape, a.dtype.newbyteorder())
    elif kind == "read-only":
        view = a.copy()
        view.setflags(write=False)
        return view
    elif kind == "unaligned":
        buffer = np.zeros(a.nbytes + 1, np.uint8)
        view = np.frombuffer(buffer[1:].data, a.dtype, count=a.size).reshape(a.shape)
    else:
        raise AssertionError(kind)
    view[...] = a
    return view


def check_conv(rng, *, n=2, h=7, w=6, c=3, k=4, kh=3, kw=3, stride=1,
               padding=0, dilation=1, groups=1, bias=True, relu=False,
               layout="NHWC", dtype=np.float32, use_out=False,
               num_threads=None, strided_inputs=False, call="conv2d"):
    """Run fastconv.conv2d (or with call="layer" a fastconv.Conv2d layer
    built from the same arguments) on random data and check it against the
    reference.

    ``strided_inputs`` passes x, weight and bias as non-contiguous views.
    Returns the fastconv result.
    """
    x_nhwc, w_hwio, b = make_conv_inputs(rng, n=n, h=h, w=w, c=c, k=k, kh=kh,
                                         kw=kw, groups=groups, bias=bias,
                                         dtype=dtype)
    expected, magnitude, reduction_len = reference_for(
        x_nhwc, w_hwio, b, stride=stride, padding=padding, dilation=dilation,
        groups=groups, relu=relu, layout=layout)
    x, weight = to_layout(x_nhwc, w_hwio, layout)
    if strided_inputs:
        x, weight = strided_view(x), strided_view(weight)
        b = None if b is None else strided_view(b)
    out = None
    if use_out:
        # NaN-filled so that any element the library forgets to write shows.
        out = np.full(expected.shape, np.nan, dtype=dtype)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                   activation="relu" if relu else None, layout=layout)
    if call == "layer":
        result = fastconv.Conv2d(weight, b, **options)(x, out=out, num_threads=num_threads)
    else:
        assert call == "conv2d", call
        result = fastconv.conv2d(x, weight, b, out=out, num_threads=num_threads, **options)
    assert isinstance(result, np.ndarray)
    if use_out:
        assert result is out, "conv2d(out=...) must return the out array itself"
    assert result.shape == expected.shape, (result.shape, expected.shape)
    assert_close_to_reference(result, expected, magnitude, reduction_len, dtype)
    return result


def run_layer(layer, x, algorithm="auto", num_threads=None):
    """(layer(x), the algorithm that computed it), with `algorithm` forced
    unless "auto": for tests that must know which path they exercise."""
    weights = layer._weights
    xa = np.asarray(x)
    plan = weights.plan(xa.shape, layer.padding, layer.activation, algorithm)
    threads = fastconv.get_num_threads() if num_threads is None else num_threads
    return weights.execute_algorithm(plan, xa, None, threads)
