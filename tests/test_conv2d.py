"""fastconv.conv2d against the independent float64 reference (tests/reference.py).

Every sweep runs on every instruction set this CPU supports (``isa`` fixture)
and in both dtypes; accuracy is checked elementwise against the forward error
bound documented in tests/checks.py.
"""

import numpy as np
import pytest
from hypothesis import given, settings

import fastconv
from checks import (
    DTYPE_IDS,
    FLOAT_DTYPES,
    assert_close_to_reference,
    check_conv,
    in_memory,
    make_conv_inputs,
    reference_for,
    to_layout,
)
from reference import hwio_to_oihw
from strategies import conv_configs, examples

LAYOUTS = ("NHWC", "NCHW")

dtypes = pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)
layouts = pytest.mark.parametrize("layout", LAYOUTS)


# --------------------------------------------------------------------------
# Geometry: stride, every padding form, dilation, non-square kernels/images
# --------------------------------------------------------------------------
# (id, h, w, kh, kw, stride, padding, dilation)
GEOMETRIES = [
    ("k3-s1-p0", 9, 11, 3, 3, 1, 0, 1),
    ("k3-s2-p1", 9, 11, 3, 3, 2, 1, 1),
    ("k3-s3-p2", 10, 13, 3, 3, 3, 2, 1),
    ("k3x5-s(1,2)-p(1,2)", 8, 9, 3, 5, (1, 2), (1, 2), 1),
    ("k2x3-s(3,1)-asym", 11, 7, 2, 3, (3, 1), ((0, 2), (1, 0)), 1),
    ("k3-asym-pad", 7, 8, 3, 3, 1, ((2, 1), (0, 3)), 1),
    ("k5x2-s2-valid", 12, 6, 5, 2, 2, "valid", 1),
    ("k3-same-s1", 9, 7, 3, 3, 1, "same", 1),
    ("k4x2-same-s1-odd-total", 7, 9, 4, 2, 1, "same", 1),
    ("k3-same-s2-odd-total", 8, 10, 3, 3, 2, "same", 1),
    ("k4-same-s2", 9, 9, 4, 4, 2, "same", 1),
    ("k2-same-s2", 7, 6, 2, 2, 2, "same", 1),
    ("k3-same-s3-d2", 10, 11, 3, 3, 3, "same", 2),
    ("k3-same-s1-d3", 8, 8, 3, 3, 1, "same", 3),
    ("k1-same-s2", 9, 8, 1, 1, 2, "same", 1),
    ("k3-d2", 11, 12, 3, 3, 1, 0, 2),
    ("k3x2-d3-p3", 9, 10, 3, 2, 1, 3, 3),
    ("k3-s2-d(2,3)-asym", 13, 14, 3, 3, 2, ((1, 0), (2, 2)), (2, 3)),
    ("k1-s2", 9, 10, 1, 1, 2, 0, 1),
    ("k1-p1", 5, 6, 1, 1, 1, 1, 1),
    ("k7x1-p(3,0)", 9, 5, 7, 1, 1, (3, 0), 1),
    ("k3-s3-d3-valid", 12, 13, 3, 3, 3, "valid", 3),
    ("alexnet-k11-s4-p2", 23, 27, 11, 11, 4, 2, 1),
    ("resnet-stem-k7-s2-p3", 15, 14, 7, 7, 2, 3, 1),
    ("k7-same-s4", 13, 10, 7, 7, 4, "same", 1),
    # taps of a kernel row merged into one run (C < 32), kernel rows dh apart
    ("k3-d(2,1)-p(2,1)", 10, 9, 3, 3, 1, (2, 1), (2, 1)),
    ("k3x2-s(2,1)-d(3,1)-asym", 13, 8, 3, 2, (2, 1), ((3, 1), (0, 2)), (3, 1)),
    # padding wider than the kernel: whole output rows and columns of padding
    ("k2-p3", 5, 6, 2, 2, 1, 3, 1),
]


@pytest.mark.parametrize(
    "h, w, kh, kw, stride, padding, dilation",
    [case[1:] for case in GEOMETRIES], ids=[case[0] for case in GEOMETRIES])
@layouts
@dtypes
def test_geometry_sweep(isa, rng, h, w, kh, kw, stride, padding, dilation,
                        layout, dtype):
    check_conv(rng, n=2, h=h, w=w, c=3, k=5, kh=kh, kw=kw, stride=stride,
               padding=padding, dilation=dilation, layout=layout, dtype=dtype)


# --------------------------------------------------------------------------
# Groups: grouped, depthwise (groups == C), depthwise with a multiplier
# --------------------------------------------------------------------------
# (id, c, k, groups, kh, kw, stride, padding, dilation)
GROUP_CASES = [
    ("g2", 4, 6, 2, 3, 3, 1, 1, 1),
    ("g2-s2-same", 6, 4, 2, 3, 3, 2, "same", 1),
    ("g3-1x1", 9, 6, 3, 1, 1, 1, 0, 1),
    ("g17-c34-k51", 34, 51, 17, 3, 3, 1, 1, 1),
    ("g2-c34-k10-d2", 34, 10, 2, 3, 2, 1, 2, 2),
    ("dw8", 8, 8, 8, 3, 3, 1, 1, 1),
    ("dw17-s2-same", 17, 17, 17, 3, 3, 2, "same", 1),
    ("dw3-k5", 3, 3, 3, 5, 5, 1, 2, 1),
    ("dw33-d2", 33, 33, 33, 3, 3, 1, 2, 2),
    ("dw64", 64, 64, 64, 3, 3, 1, 1, 1),
    ("dw24-k7", 24, 24, 24, 7, 7, 1, 3, 1),
    ("dw1", 1, 1, 1, 3, 3, 1, 1, 1),
    ("dw-mult2-c8", 8, 16, 8, 3, 3, 1, 1, 1),
    ("dw-mult2-c17-s2-asym", 17, 34, 17, 3, 3, 2, ((0, 1), (1, 0)), 1),
    ("dw-mult3-c5-k3x5-same", 5, 15, 5, 3, 5, (1, 2), "same", 1),
    ("dw-mult2-c16-1x1", 16, 32, 16, 1, 1, 1, 0, 1),
    ("dw-mult2-c3-d(1,2)-valid", 3, 6, 3, 3, 3, 1, "valid", (1, 2)),
]


@pytest.mark.parametrize(
    "c, k, groups, kh, kw, stride, padding, dilation",
    [case[1:] for case in GROUP_CASES], ids=[case[0] for case in GROUP_CASES])
@layouts
@dtypes
def test_groups_sweep(isa, rng, c, k, groups, kh, kw, stride, padding,
                      dilation, layout, dtype):
    check_conv(rng, n=2, h=10, w=9, c=c, k=k, kh=kh, kw=kw, stride=stride,
               padding=padding, dilation=dilation, groups=groups,
               layout=layout, dtype=dtype)


def test_output_channel_belongs_to_group_k_div_k_per_group(isa):
    """Output channel k reads group k // (K / groups), as in PyTorch.

    Input channel g holds the constant g + 1 and every weight is 1, so with
    groups == C and K == 2C each output channel equals its group index + 1.
    """
    c, multiplier = 4, 2
    x = np.broadcast_to(np.arange(1, c + 1, dtype=np.float32), (1, 3, 3, c)).copy()
    weight = np.ones((1, 1, 1, c * multiplier), dtype=np.float32)
    result = fastconv.conv2d(x, weight, groups=c)
    expected_channels = np.arange(c * multiplier) // multiplier + 1
    np.testing.assert_array_equal(
        result, np.broadcast_to(expected_channels, (1, 3, 3, c * multiplier)))


# --------------------------------------------------------------------------
# Channel counts that are not multiples of any SIMD width
# --------------------------------------------------------------------------
IN_CHANNELS = (1, 3, 17, 33, 63)
OUT_CHANNELS = (1, 3, 5, 17, 40, 63, 70, 130)


@pytest.mark.parametrize("c", IN_CHANNELS, ids=lambda v: f"C{v}")
@pytest.mark.parametrize("k", OUT_CHANNELS, ids=lambda v: f"K{v}")
@pytest.mark.parametrize("ksize", (1, 3), ids=lambda v: f"k{v}x{v}")
@dtypes
def test_channel_sweep_nhwc(isa, rng, c, k, ksize, dtype):
    # 5 x 7 = 35 output pixels: not a multiple of 6 or 12.
    check_conv(rng, n=1, h=5, w=7, c=c, k=k, kh=ksize, kw=ksize,
               padding=ksize // 2, layout="NHWC", dtype=dtype)


@pytest.mark.parametrize("c, k", list(zip(IN_CHANNELS, OUT_CHANNELS)),
                         ids=lambda v: str(v))
@pytest.mark.parametrize("ksize", (1, 3), ids=lambda v: f"k{v}x{v}")
@dtypes
def test_channel_sweep_nchw(isa, rng, c, k, ksize, dtype):
    check_conv(rng, n=1, h=5, w=7, c=c, k=k, kh=ksize, kw=ksize,
               padding=ksize // 2, layout="NCHW", dtype=dtype)


# --------------------------------------------------------------------------
# Output pixel counts (not multiples of register tile heights) and batch
# --------------------------------------------------------------------------
# (n, h, w): output pixels per image (3x3 with padding 1 keeps h x w)
PIXEL_CASES = [
    (1, 1, 1), (3, 1, 1), (1, 1, 5), (1, 1, 7), (3, 5, 7), (1, 13, 1),
    (1, 11, 13), (3, 3, 4), (1, 4, 6), (3, 2, 23),
]


@pytest.mark.parametrize("n, h, w", PIXEL_CASES,
                         ids=lambda v: str(v))
@pytest.mark.parametrize("ksize", (1, 3), ids=lambda v: f"k{v}x{v}")
@dtypes
def test_output_pixel_counts(isa, rng, n, h, w, ksize, dtype):
    check_conv(rng, n=n, h=h, w=w, c=17, k=40, kh=ksize, kw=ksize,
               padding=ksize // 2, dtype=dtype)


# --------------------------------------------------------------------------
# Random cross-product of every option, on every ISA (the hypothesis profile
# of conftest.py: "ci" tries the same examples every run, "long" new ones).
# Four times the profile's examples: the widest sweep, cheap per example.
# --------------------------------------------------------------------------
@settings(max_examples=examples(4))
@given(config=conv_configs())
def test_random_configurations(isa, config):
    config = dict(config)
    rng = np.random.default_rng(config.pop("seed"))
    check_conv(rng, **config)


# --------------------------------------------------------------------------
# Long reductions and many pixels: cross cache-blocking boundaries
# --------------------------------------------------------------------------
# (id, n, h, w, c, k, ksize, groups)
BLOCKING_CASES = [
    ("3x3-C130-K70", 1, 6, 7, 130, 70, 3, 1),   # reduction 1170
    ("1x1-C600-K33", 1, 5, 5, 600, 33, 1, 1),   # reduction 600
    ("1x1-many-pixels", 3, 17, 19, 20, 36, 1, 1),   # 969 pixels
    ("3x3-many-pixels", 2, 23, 21, 8, 20, 3, 1),    # 966 pixels
    ("depthwise-many-pixels", 2, 29, 31, 19, 19, 3, 19),
]


@pytest.mark.parametrize("n, h, w, c, k, ksize, groups",
                         [case[1:] for case in BLOCKING_CASES],
                         ids=[case[0] for case in BLOCKING_CASES])
@dtypes
def test_cache_blocking_boundaries(isa, rng, n, h, w, c, k, ksize, groups, dtype):
    check_conv(rng, n=n, h=h, w=w, c=c, k=k, kh=ksize, kw=ksize,
               padding=ksize // 2, groups=groups, relu=True, dtype=dtype)


@dtypes
def test_padded_1x1_long_reduction(isa, rng, dtype):
    # a padded 1x1 reads its padding taps from the zero row over a whole
    # reduction block of a GEMM (the larger block size)
    check_conv(rng, n=1, h=4, w=5, c=600, k=40, kh=1, kw=1, stride=2, padding=1,
               relu=True, dtype=dtype)


# --------------------------------------------------------------------------
# Fused bias / ReLU and out= on each kernel family
# --------------------------------------------------------------------------
# (id, c, k, groups, ksize): dense 3x3, pointwise 1x1, depthwise 3x3
KINDS = {
    "dense3x3": (5, 7, 1, 3),
    "pointwise": (9, 7, 1, 1),
    "depthwise": (6, 6, 6, 3),
    "depthwise-mult2": (6, 12, 6, 3),
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("bias", (False, True), ids=("nobias", "bias"))
@pytest.mark.parametrize("relu", (False, True), ids=("linear", "relu"))
@layouts
@dtypes
def test_bias_and_relu(isa, rng, kind, bias, relu, layout, dtype):
    c, k, groups, ksize = KINDS[kind]
    check_conv(rng, n=3, h=6, w=5, c=c, k=k, kh=ksize, kw=ksize,
               padding=ksize // 2, groups=groups, bias=bias, relu=relu,
               layout=layout, dtype=dtype)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("relu", (False, True), ids=("linear", "relu"))
@layouts
@dtypes
def test_out_argument(isa, rng, kind, relu, layout, dtype):
    c, k, groups, ksize = KINDS[kind]
    check_conv(rng, n=2, h=6, w=5, c=c, k=k, kh=ksize, kw=ksize, stride=2,
               padding="same", groups=groups, relu=relu, layout=layout,
               dtype=dtype, use_out=True)


def test_out_is_returned_and_filled(rng):
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    weight = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    expected = fastconv.conv2d(x, weight, padding=1)
    out = np.full((2, 5, 5, 4), np.nan, dtype=np.float32)
    result = fastconv.conv2d(x, weight, padding=1, out=out)
    assert result is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("kind", list(KINDS))
@dtypes
def test_relu_propagates_nan(isa, rng, kind, dtype):
    """ReLU(NaN) is NaN: a NaN input reaches every output whose window holds it."""
    c, k, groups, ksize = KINDS[kind]
    x_nhwc, w_hwio, b = make_conv_inputs(rng, n=1, h=5, w=5, c=c, k=k, kh=ksize,
                                         kw=ksize, groups=groups, dtype=dtype)
    x_nhwc[0, 2, 2, :] = np.nan
    expected, magnitude, n_red = reference_for(
        x_nhwc, w_hwio, b, padding=ksize // 2, groups=groups, relu=True)
    assert np.isnan(expected).any() and not np.isnan(expected).all()
    result = fastconv.conv2d(x_nhwc, w_hwio, b, padding=ksize // 2,
                             groups=groups, activation="relu")
    assert_close_to_reference(result, expected, magnitude, n_red, dtype)


# --------------------------------------------------------------------------
# Thread count: results must not depend on it (bitwise)
# --------------------------------------------------------------------------
# (id, n, h, w, c, k, groups, ksize)
THREAD_CASES = [
    ("conv3x3", 2, 20, 19, 32, 48, 1, 3),
    ("pointwise", 2, 21, 20, 64, 64, 1, 1),
    ("depthwise", 2, 28, 27, 32, 32, 32, 3),  # above the single-thread work limit
]


@pytest.mark.parametrize("n, h, w, c, k, groups, ksize",
                         [case[1:] for case in THREAD_CASES],
                         ids=[case[0] for case in THREAD_CASES])
@pytest.mark.parametrize("threads", (2, 3), ids=lambda v: f"1vs{v}threads")
@dtypes
def test_thread_count_gives_bitwise_equal_results(isa, rng, n, h, w, c, k,
                                                  groups, ksize, threads, dtype):
    x, weight, b = make_conv_inputs(rng, n=n, h=h, w=w, c=c, k=k, kh=ksize,
                                    kw=ksize, groups=groups, dtype=dtype)
    kwargs = dict(padding=ksize // 2, groups=groups, activation="relu")
    single = fastconv.conv2d(x, weight, b, num_threads=1, **kwargs)
    multi = fastconv.conv2d(x, weight, b, num_threads=threads, **kwargs)
    assert np.array_equal(single, multi)


# --------------------------------------------------------------------------
# Shapes: unbatched input, empty batch
# --------------------------------------------------------------------------
@layouts
@dtypes
@pytest.mark.parametrize("use_out", (False, True), ids=("alloc", "out"))
def test_unbatched_3d_input_gives_3d_result(isa, rng, layout, dtype, use_out):
    result = check_conv(rng, n=None, h=6, w=7, c=4, k=5, padding=1,
                        layout=layout, dtype=dtype, use_out=use_out)
    assert result.ndim == 3


@layouts
@pytest.mark.parametrize("use_out", (False, True), ids=("alloc", "out"))
def test_empty_batch_gives_empty_result(layout, use_out):
    x_nhwc = np.zeros((0, 6, 7, 4), dtype=np.float32)
    w_hwio = np.zeros((3, 3, 4, 5), dtype=np.float32)
    x, weight = to_layout(x_nhwc, w_hwio, layout)
    shape = (0, 3, 4, 5) if layout == "NHWC" else (0, 5, 3, 4)
    out = np.empty(shape, np.float32) if use_out else None
    result = fastconv.conv2d(x, weight, np.zeros(5, np.float32), stride=2,
                             padding=1, layout=layout, out=out)
    assert result.shape == shape
    assert result.dtype == np.float32
    if use_out:
        assert result is out


# --------------------------------------------------------------------------
# Non-contiguous / oddly strided inputs
# --------------------------------------------------------------------------
def _views_of(base, kind):
    """A non-contiguous array with the same values as ``base``."""
    if kind == "step-slice":
        big = np.zeros((base.shape[0] * 2,) + tuple(s * 3 for s in base.shape[1:]),
                       base.dtype)
        view = big[::2, ::3, ::3, ::3]
    elif kind == "transposed":
        big = np.zeros(base.shape[::-1], base.dtype)
        view = big.transpose(3, 2, 1, 0)
    elif kind == "fortran":
        view = np.asfortranarray(np.zeros_like(base))
    elif kind == "reversed":
        big = np.zeros_like(base)
        view = big[::-1, ::-1, ::-1, ::-1]
    else:
        raise AssertionError(kind)
    view[...] = base
    assert not view.flags.c_contiguous
    return view


VIEW_KINDS = ("step-slice", "transposed", "fortran", "reversed")


# Each pair has at least one non-contiguous argument.
VIEW_PAIRS = ([(kind, None) for kind in VIEW_KINDS]
              + [(None, kind) for kind in VIEW_KINDS]
              + [(kind, kind) for kind in VIEW_KINDS])


@pytest.mark.parametrize("x_view, w_view", VIEW_PAIRS,
                         ids=[f"x={xv}-w={wv}" for xv, wv in VIEW_PAIRS])
@layouts
def test_non_contiguous_inputs(isa, rng, x_view, w_view, layout):
    x_nhwc, w_hwio, b = make_conv_inputs(rng, n=2, h=7, w=6, c=5, k=4, kh=3,
                                         kw=2, dtype=np.float32)
    x, weight = to_layout(x_nhwc, w_hwio, layout)
    kwargs = dict(stride=(2, 1), padding=1, layout=layout, activation="relu")
    contiguous = fastconv.conv2d(x, weight, b, **kwargs)
    x_arg = x if x_view is None else _views_of(x, x_view)
    w_arg = weight if w_view is None else _views_of(weight, w_view)
    result = fastconv.conv2d(x_arg, w_arg, b, **kwargs)

    expected, magnitude, n_red = reference_for(
        x_nhwc, w_hwio, b, stride=(2, 1), padding=1, relu=True, layout=layout)
    assert_close_to_reference(result, expected, magnitude, n_red, np.float32)
    assert np.array_equal(result, contiguous), \
        "a strided view must give the same result as its contiguous copy"
    # The inputs are not modified.
    np.testing.assert_array_equal(x_arg, x)
    np.testing.assert_array_equal(w_arg, weight)


ODD_MEMORY = {kind: (lambda a, kind=kind: in_memory(a, kind))
              for kind in ("read-only", "unaligned", "byteswapped")}


@pytest.mark.parametrize("kind", list(ODD_MEMORY))
def test_odd_memory_inputs(rng, kind):
    x, weight, b = make_conv_inputs(rng, n=2, h=6, w=5, c=3, k=4, kh=3, kw=3)
    expected = fastconv.conv2d(x, weight, b, padding=1)
    convert = ODD_MEMORY[kind]
    result = fastconv.conv2d(convert(x), convert(weight), convert(b), padding=1)
    assert result.dtype == np.float32
    assert np.array_equal(result, expected)


@layouts
def test_broadcast_zero_stride_input(isa, rng, layout):
    """A broadcast view (stride 0 along several axes) is a valid input."""
    per_channel = rng.uniform(-1, 1, 3).astype(np.float64)
    shape = (2, 5, 6, 3) if layout == "NHWC" else (2, 3, 5, 6)
    values = per_channel if layout == "NHWC" else per_channel[:, None, None]
    x = np.broadcast_to(values, shape)
    assert 0 in x.strides
    w_hwio = rng.uniform(-1, 1, (3, 2, 3, 4))
    b = rng.uniform(-1, 1, 4)
    weight = w_hwio if layout == "NHWC" else np.ascontiguousarray(hwio_to_oihw(w_hwio))
    result = fastconv.conv2d(x, weight, b, padding=1, layout=layout)
    np.testing.assert_array_equal(
        result, fastconv.conv2d(np.ascontiguousarray(x), weight, b, padding=1,
                                layout=layout))


def test_strided_bias(rng):
    x, weight, _ = make_conv_inputs(rng, n=1, h=5, w=5, c=3, k=4, kh=3, kw=3)
    bias_storage = rng.uniform(-1, 1, 8).astype(np.float32)
    bias = bias_storage[::2]
    assert not bias.flags.c_contiguous
    result = fastconv.conv2d(x, weight, bias, padding=1)
    np.testing.assert_array_equal(
        result, fastconv.conv2d(x, weight, bias.copy(), padding=1))


# --------------------------------------------------------------------------
# Worked examples
# --------------------------------------------------------------------------
@layouts
@dtypes
def test_seed_example_1x1_conv_is_relu_of_affine_map(isa, layout, dtype):
    """3 input maps, 2 output maps, a 1x1 conv with ReLU.

    w1 = (0, 1, 1), w2 = (2, 3, 5), b = (8, 13): each pixel x in R^3 maps to
    ReLU((w1 . x, w2 . x) + b). Small integers are exact in float32, so the
    comparison is exact.
    """
    w1 = np.array([0, 1, 1])
    w2 = np.array([2, 3, 5])
    b = np.array([8, 13], dtype=dtype)
    pixels = np.array([
        [[1, 2, 3], [0, 0, 0], [-4, 1, 1]],
        [[-10, -1, 0], [2, -7, 3], [1, 1, -20]],
    ])  # (H=2, W=3, C=3), chosen so that ReLU clips some outputs
    expected = np.empty((2, 3, 2))
    for i in range(2):
        for j in range(3):
            x_ij = pixels[i, j]
            expected[i, j] = np.maximum([w1 @ x_ij + 8, w2 @ x_ij + 13], 0)
    assert (expected == 0).any() and (expected > 0).any()

    x = pixels[np.newaxis].astype(dtype)           # (1, 2, 3, 3) NHWC
    weight = np.stack([w1, w2], axis=1).reshape(1, 1, 3, 2).astype(dtype)  # HWIO
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        weight = np.ascontiguousarray(weight.transpose(3, 2, 0, 1))
        expected = expected.transpose(2, 0, 1)
    result = fastconv.conv2d(x, weight, b, activation="relu", layout=layout)
    np.testing.assert_array_equal(result, expected[np.newaxis])


@dtypes
def test_vgg_like_3x3_64_to_64(isa, rng, dtype):
    check_conv(rng, n=1, h=16, w=16, c=64, k=64, kh=3, kw=3, padding=1,
               relu=True, dtype=dtype)


@layouts
@dtypes
def test_fc6_like_kernel_covers_the_whole_map(isa, rng, layout, dtype):
    result = check_conv(rng, n=2, h=7, w=7, c=16, k=10, kh=7, kw=7,
                        padding="valid", relu=True, layout=layout, dtype=dtype)
    assert result.shape == ((2, 1, 1, 10) if layout == "NHWC" else (2, 10, 1, 1))


@pytest.mark.parametrize(
    "h, w, kh, kw, padding",
    [(3, 3, 5, 5, 1), (2, 4, 4, 6, ((1, 1), (1, 1))), (3, 3, 5, 5, "same"),
     (1, 1, 3, 3, "same"), (2, 3, 4, 4, ((2, 0), (0, 1)))],
    ids=["k5-on-3-p1", "k4x6-on-2x4-p1", "k5-on-3-same", "k3-on-1-same",
         "k4-on-2x3-asym"])
@dtypes
def test_kernel_covers_map_only_after_padding(isa, rng, h, w, kh, kw, padding,
                                              dtype):
    check_conv(rng, n=2, h=h, w=w, c=6, k=5, kh=kh, kw=kw, padding=padding,
               dtype=dtype)
