"""Sizes past what 64-bit arithmetic or the machine can hold give a
ValueError or a MemoryError, never a crash.

Every size, offset and index the C kernels compute is an int64_t: the
Python layer checks that the integer arguments, the result, the
zero-padded input and the packed weights all fit in 2**63 - 1 bytes before
any kernel runs (and the bindings check again with Python integers), and
an allocation that fails raises MemoryError. The huge inputs here are
zero-strided views (numpy.lib.stride_tricks.as_strided), which occupy no
memory; every case fails before it allocates more than a few bytes, or
asks for terabytes, which the allocator refuses at once.
"""

import numpy as np
import pytest
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
