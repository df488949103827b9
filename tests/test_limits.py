"""Sizes past what 64-bit arithmetic or the machine can hold give a
ValueError or a MemoryError, never a crash.

Every size, offset and index the C kernels compute is an int64_t: the
Python layer checks that the integer arguments, the result, the
zero-padded input and the packed weights all fit in 2**63 - 1 bytes before
any kernel runs (and the bindings check again with Python integers), and
an allocation that fails raises MemoryError. The huge inputs here are
zero-strided views (numpy.lib.stride_tricks.as_strided), which occupy no
memory; every case fails before it allocates more than a few bytes, or
asks for terabytes, which the allocator refuses at once. A size counts
the product of its non-empty dimensions, so an empty batch, channel or
output dimension never lets a huge padding, stride or group count through
(fuzzed at the end of this file).
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided

import fastconv
from test_errors import raises_naming

TB = 2**40


def virtual(shape, dtype=np.float32):
    """A zero-strided array of `shape` (one element of memory)."""
    return as_strided(np.ones(1, dtype), shape=shape, strides=(0,) * len(shape))


def small_x(c=1):
    return np.ones((1, 2, 2, c), np.float32)


# --------------------------------------------------------------------------
# Integer arguments past 64 bits
# --------------------------------------------------------------------------
@pytest.mark.parametrize("argument", ["stride", "dilation", "padding", "groups", "num_threads"])
@pytest.mark.parametrize("value", [2**63, 2**70], ids=["2**63", "2**70"])
def test_integer_arguments_past_64_bits(argument, value):
    with raises_naming(ValueError, argument, str(value), "2**63 - 1"):
        fastconv.conv2d(small_x(), np.ones((1, 1, 1, 1), np.float32), **{argument: value})


@pytest.mark.parametrize("argument", ["stride", "padding", "dilation"])
def test_layer_integer_arguments_past_64_bits(argument):
    with raises_naming(ValueError, argument, str(2**64)):
        fastconv.Conv2d(np.ones((1, 1, 1, 1), np.float32), **{argument: 2**64})


def test_set_num_threads_past_64_bits():
    with raises_naming(ValueError, "n", str(2**64)):
        fastconv.set_num_threads(2**64)


def test_fc_to_conv_input_shape_past_64_bits():
    with raises_naming(ValueError, "input_shape", str(2**64)):
        fastconv.fc_to_conv(np.ones((4, 2), np.float32), (2**64, 1, 1))


# --------------------------------------------------------------------------
# Padding, stride and dilation whose padded input overflows
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, kh", [
    (dict(padding=2**62), 1),
    (dict(padding=((0, 2**62), (0, 0))), 1),
    (dict(padding=2**40, stride=2**40), 3),
    # the padded rows times the padded columns wrap to exactly 2**64: before
    # the check, the kernels' copy of the padded input was 0 bytes long
    (dict(padding=2**31 - 1, stride=2**32 - 3), 3),
    (dict(padding=2**62, dilation=2**62), 3),
], ids=["pad-2**62", "pad-bottom-2**62", "pad-and-stride-2**40", "wraps-to-2**64",
        "dilation-2**62"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_padded_input_past_64_bits(kwargs, kh, layout):
    x = small_x() if layout == "NHWC" else small_x().transpose(0, 3, 1, 2)
    weight = np.ones((kh, kh, 1, 1) if layout == "NHWC" else (1, 1, kh, kh), np.float32)
    with raises_naming(ValueError, "padding", "zero-padded input", "2**63 - 1"):
        fastconv.conv2d(x, weight, layout=layout, **kwargs)
    layer = fastconv.Conv2d(weight, layout=layout, **kwargs)
    with raises_naming(ValueError, "padding", "zero-padded input"):
        layer(x)


def test_padded_input_that_cannot_be_allocated():
    """Valid in 64 bits but 4 TiB: the kernels' zero-padded copy of the
    input (few channels, 3x3) fails to allocate."""
    with pytest.raises(MemoryError):
        fastconv.conv2d(small_x(), np.ones((3, 3, 1, 1), np.float32), padding=2**19,
                        stride=2**19)


# --------------------------------------------------------------------------
# Huge inputs, results, kernels and weights
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_huge_input_view(layout):
    """x of shape (1, 2**20, 2**20, 1024): 4 PiB described by one element.
    A 1x1 kernel's result is 4 TiB; a strided 3x3 one's is small, but the
    kernels need the input itself in memory: both cannot be allocated."""
    shape = (1, 2**20, 2**20, 1024) if layout == "NHWC" else (1, 1024, 2**20, 2**20)
    x = virtual(shape)
    with pytest.raises(MemoryError):
        fastconv.conv2d(x, np.ones((1, 1, 1024, 1) if layout == "NHWC" else (1, 1024, 1, 1),
                                   np.float32), layout=layout)
    weight = np.ones((3, 3, 1024, 2) if layout == "NHWC" else (2, 1024, 3, 3), np.float32)
    with pytest.raises(MemoryError):
        fastconv.conv2d(x, weight, stride=2**19, layout=layout)


def test_result_past_64_bits():
    x = virtual((1, 2**20, 2**20, 1))
    weight = virtual((1, 1, 1, 2**24))
    with raises_naming(ValueError, "result", "weight", "2**63 - 1"):
        fastconv.conv2d(x, weight)


def test_huge_out_is_refused_before_anything_runs():
    """out= of the wrong (huge) shape is a ValueError naming out."""
    out = virtual((1, 2**20, 2**20, 4))
    with raises_naming(ValueError, "out", str(out.shape)):
        fastconv.conv2d(small_x(), np.ones((1, 1, 1, 4), np.float32), out=out)


def test_huge_kernel():
    """A (2**30, 2**30) kernel: larger than the padded input, or, padded
    enough to fit, too large to pack."""
    weight = virtual((2**30, 2**30, 1, 1))
    with raises_naming(ValueError, "kernel", "padded input"):
        fastconv.conv2d(small_x(), weight)
    with raises_naming(ValueError, "weight", "packed", "2**63 - 1"):
        fastconv.conv2d(small_x(), weight, padding=2**29)


@pytest.mark.parametrize("case", ["Conv2d", "Conv2d-grouped", "Linear", "matmul"])
def test_weights_whose_packed_size_overflows(case):
    """The packed copy rounds output channels up to whole vectors: a weight
    of 2**60 values with one output each would pack to 16 * 2**60 values,
    which wrapped to 16 in int64_t (and crashed) before the check."""
    if case == "Conv2d":
        call = lambda: fastconv.Conv2d(virtual((2**30, 2**30, 1, 1)))  # noqa: E731
        name = "weight"
    elif case == "Conv2d-grouped":
        call = lambda: fastconv.Conv2d(virtual((2**29, 2**29, 1, 4)), groups=4)  # noqa: E731
        name = "weight"
    elif case == "Linear":
        call = lambda: fastconv.Linear(virtual((2**60, 1)))  # noqa: E731
        name = "weight"
    else:
        call = lambda: fastconv.matmul(virtual((1, 2**58)), virtual((2**58, 1)))  # noqa: E731
        name = "b"
    with raises_naming(ValueError, name, "packed", "2**63 - 1"):
        call()


def test_weights_that_cannot_be_allocated():
    """Packed weights valid in 64 bits but of 4 TiB and more."""
    with pytest.raises(MemoryError):
        fastconv.Conv2d(virtual((1, 1, 2**20, 2**20)))
    with pytest.raises(MemoryError):
        fastconv.Linear(virtual((2**20, 2**20)))
    with pytest.raises(MemoryError):  # depthwise taps are copied
        fastconv.Conv2d(virtual((2**20, 2**20, 1, 4)), groups=4)


def test_huge_matmul_operands():
    with pytest.raises(MemoryError):  # the 4 TiB result
        fastconv.matmul(virtual((2**30, 2**30)), virtual((2**30, 2**10)))
    with pytest.raises(MemoryError):  # b packed: 64 TiB
        fastconv.matmul(virtual((1, 2**40)), virtual((2**40, 1)))


def test_linear_input_too_large():
    """x of 16 TiB (one element of memory): the kernels need it contiguous."""
    layer = fastconv.Linear(np.ones((2**20, 1), np.float32))
    with pytest.raises(MemoryError):
        layer(virtual((2**22, 2**20)))


def test_fc_to_conv_flattened_size_past_64_bits():
    with raises_naming(ValueError, "input_shape", str(2**40)):
        fastconv.fc_to_conv(np.ones((4, 2), np.float32), (2**40, 2**40, 2**40))


# --------------------------------------------------------------------------
# An empty dimension never hides an overflow, and empty calls are answered
# --------------------------------------------------------------------------
def test_zero_channels_with_huge_padding_and_stride_is_refused_at_once():
    """C = 0 made every byte count zero: the padded input's 2**62-row loop
    ran (and ignored Ctrl-C). Its non-empty dimensions are what count."""
    with raises_naming(ValueError, "padding", "2**63 - 1"):
        fastconv.conv2d(np.zeros((1, 2, 2, 0), np.float32), np.ones((3, 3, 0, 1), np.float32),
                        padding=2**62, stride=2**62)


@pytest.mark.parametrize("padding", [2**63 - 1, 2**31])
def test_empty_batch_with_huge_padding_is_refused(padding):
    with raises_naming(ValueError, "padding", str(padding)):
        fastconv.conv2d(np.zeros((0, 2, 2, 1), np.float32), np.ones((3, 3, 1, 1), np.float32),
                        padding=padding)


def test_no_outputs_with_huge_groups_names_groups():
    with raises_naming(ValueError, "groups", str(2**63 - 1)):
        fastconv.conv2d(np.zeros((1, 2, 2, 0), np.float32), np.ones((1, 1, 0, 0), np.float32),
                        groups=2**63 - 1)
    with raises_naming(ValueError, "groups", str(2**62)):
        fastconv.conv2d(np.zeros((1, 2, 2, 4), np.float32), np.ones((3, 3, 2, 0), np.float32),
                        groups=2**62)


def test_empty_batch_and_empty_reduction_give_shaped_results():
    bias = np.arange(5, dtype=np.float32)
    y = fastconv.conv2d(np.zeros((0, 1, 1, 3), np.float32), np.ones((1, 1, 3, 5), np.float32))
    assert y.shape == (0, 1, 1, 5)
    y = fastconv.conv2d(np.ones((2, 4, 4, 0), np.float32), np.ones((3, 3, 0, 5), np.float32),
                        bias)
    assert y.shape == (2, 2, 2, 5) and (y == bias).all()
    for layer_bias, expected in ((None, 0), (bias, bias)):
        y = fastconv.nn.Linear(np.ones((0, 5), np.float32), layer_bias)(np.ones((3, 0),
                                                                                 np.float32))
        assert y.shape == (3, 5) and (y == expected).all()
        y = fastconv.nn.Linear(np.ones((0, 5), np.float32), layer_bias)(np.ones(0, np.float32))
        assert y.shape == (5,) and (y == expected).all()
    y = fastconv.matmul(np.ones((3, 0), np.float32), np.ones((0, 5), np.float32), bias)
    assert y.shape == (3, 5) and (y == bias).all()


def test_one_pixel_window_wholly_inside_the_padding():
    """The one output reads only padding: zeros, on the function and the
    layer alike (the dense path once sliced with a negative stop)."""
    x, w = np.ones((1, 5, 7, 1), np.float32), np.ones((1, 1, 1, 3), np.float32)
    options = dict(padding=((2, 2), (1, 2)), stride=10)
    for y in (fastconv.conv2d(x, w, **options), fastconv.Conv2d(w, **options)(x)):
        assert y.shape == (1, 1, 1, 3) and (y == 0).all()


@pytest.mark.parametrize("kernel, padding", [(2**32 + 2, 2**31 + 1), (2**40, 2**39)])
def test_average_pool_divisor_past_int64(kernel, padding):
    """A window's area can pass 2**63 (two sides of 2**32): the divisor is
    computed in double, not in an overflowing int64."""
    y = fastconv.nn.AvgPool2d(kernel, padding=padding)(np.ones((1, 1, 1, 1), np.float32))
    assert y.shape == (1, 1, 1, 1)
    np.testing.assert_allclose(y.item(), 1 / float(kernel) ** 2, rtol=1e-6)
    y = fastconv.nn.AvgPool2d(kernel, padding=padding, count_include_pad=False)(
        np.full((1, 1, 1, 1), 3, np.float32))
    assert y.item() == 3


def test_average_pool_with_a_huge_divisor_survives_save_and_load(tmp_path):
    model = fastconv.nn.Sequential(fastconv.nn.AvgPool2d(2**32 + 2, padding=2**31 + 1))
    model.save(tmp_path / "pool.npz")
    loaded = fastconv.nn.load(tmp_path / "pool.npz")
    x = np.ones((1, 1, 1, 1), np.float32)
    assert np.array_equal(loaded(x), model(x))


def test_pool_on_an_empty_image_side_is_refused():
    for pool in (fastconv.nn.MaxPool2d(2, 1, 1), fastconv.nn.AvgPool2d(2, 1, 1)):
        with raises_naming(ValueError, "height"):
            pool(np.ones((1, 0, 3, 2), np.float32))
        assert pool(np.ones((0, 3, 3, 2), np.float32)).shape == (0, 4, 4, 2)
        assert pool(np.ones((1, 3, 3, 0), np.float32)).shape == (1, 4, 4, 0)


# Fuzzing: empty dimensions with huge paddings, strides, dilations, groups and
# pool windows. Each call either gives the right result (its shape from the
# formulas below; zeros in, so the bias or zero out) or a ValueError from
# the checks, exactly when these independent rules say the call cannot be
# made; never another exception, and never a long run.
INT64_MAX = 2**63 - 1
HUGE = st.sampled_from([0, 1, 2, 3, 2**20, 2**31, 2**32 + 1, 2**62, INT64_MAX])
POSITIVE_HUGE = st.sampled_from([1, 2, 3, 2**20, 2**31, 2**32 + 1, 2**62, INT64_MAX])
SMALL = st.sampled_from([0, 0, 1, 2, 3])


def extent(*sizes):
    """Bytes spanned by the non-empty dimensions (float32)."""
    return 4 * math.prod(max(s, 1) for s in sizes)


@given(n=SMALL, h=SMALL, w=SMALL, k=SMALL, kh=st.integers(1, 3), kw=st.integers(1, 3),
       groups=st.sampled_from([1, 2, 2**31, 2**62, INT64_MAX]), cg=SMALL,
       padding=HUGE, stride=POSITIVE_HUGE, dilation=POSITIVE_HUGE, bias=st.booleans())
@pytest.mark.parametrize("api", ["conv2d", "Conv2d"])
def test_fuzz_conv2d_empty_dimensions_with_huge_arguments(api, n, h, w, k, kh, kw, groups, cg,
                                                          padding, stride, dilation, bias):
    c, kk = cg * groups, k * groups
    assume(0 in (n, h, w, c, kk))
    assume(c <= 64 and kk <= 64)
    x = np.zeros((n, h, w, c), np.float32)
    weight = np.ones((kh, kw, cg, kk), np.float32)
    b = np.arange(1, kk + 1, dtype=np.float32) if bias else None
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    hp, wp = h + 2 * padding, w + 2 * padding
    possible = (hp >= span_h and wp >= span_w and extent(n, hp, wp, c) <= INT64_MAX)
    if possible:
        ho, wo = (hp - span_h) // stride + 1, (wp - span_w) // stride + 1
        possible = extent(n, ho, wo, kk) <= INT64_MAX
    # the weights as the kernels pack them: each group's outputs rounded up
    # to whole vectors, plus a bias row (a refusal naming groups is allowed)
    packing_fits = extent(groups, k + 64, kh * kw * cg + 1) <= INT64_MAX
    if possible:
        # the kernels compute outputs (and may copy the padded input) only
        # where there are images, channels and outputs: keep that small
        assume(n * ho * wo * kk <= 10**6)
        assume(n * c * kk == 0 or extent(n, hp, wp, c) <= 2**28)
    options = dict(padding=padding, stride=stride, dilation=dilation, groups=groups)
    try:
        if api == "conv2d":
            y = fastconv.conv2d(x, weight, b, **options)
        else:
            y = fastconv.Conv2d(weight, b, **options)(x)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(f"{api}: ") and "internal" not in message, message
        assert not possible or (not packing_fits and "groups" in message), message
        return
    assert possible, f"accepted a call the rules refuse: {y.shape}"
    assert y.shape == (n, ho, wo, kk)
    assert (y == (b if bias else 0)).all()


@given(n=SMALL, h=st.integers(1, 3), w=st.integers(1, 3), c=SMALL,
       kernel=st.sampled_from([1, 2, 3, 2**20, 2**31, 2**32 + 2, 2**62]),
       stride=st.one_of(st.none(), POSITIVE_HUGE), half=st.booleans(),
       ceil_mode=st.booleans(), average=st.booleans(), include_pad=st.booleans())
def test_fuzz_pools_with_huge_windows(n, h, w, c, kernel, stride, half, ceil_mode, average,
                                      include_pad):
    padding = kernel // 2 if half else 0
    s = kernel if stride is None else stride

    def out_size(size):
        if size + 2 * padding + kernel + s > INT64_MAX:  # the windows' bounds are int64
            return None
        span = size + 2 * padding - kernel
        if span < 0:
            return None
        out = (-(-span // s) if ceil_mode else span // s) + 1
        return out - 1 if ceil_mode and (out - 1) * s >= size + padding else out
    ho, wo = out_size(h), out_size(w)
    possible = ho is not None and wo is not None and extent(n, ho, wo, c) <= INT64_MAX
    if possible:
        assume(n * ho * wo * c <= 10**6)
    options = dict(padding=padding, ceil_mode=ceil_mode)
    if average:
        pool = fastconv.nn.AvgPool2d(kernel, stride, count_include_pad=include_pad, **options)
    else:
        pool = fastconv.nn.MaxPool2d(kernel, stride, **options)
    x = np.ones((n, h, w, c), np.float32)
    try:
        y = pool(x)
    except ValueError as exc:
        assert not possible, str(exc)
        return
    assert possible and y.shape == (n, ho, wo, c)
    if average and include_pad:  # the window's area divides its image pixels
        assert ((y > 0) & (y <= 1)).all()
    else:
        assert (y == 1).all()
