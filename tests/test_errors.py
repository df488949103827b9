"""Bad inputs raise ValueError / TypeError before any kernel runs.

Each message must name the argument, and where it makes sense show the
value that was given.
"""

import contextlib
import re

import numpy as np
import pytest

import fastconv


@contextlib.contextmanager
def raises_naming(exc, argument, *given):
    """pytest.raises(exc) whose message names ``argument`` and contains ``given``."""
    with pytest.raises(exc) as excinfo:
        yield excinfo
    message = str(excinfo.value)
    assert re.search(rf"\b{re.escape(argument)}\b", message), \
        f"message does not name {argument!r}: {message!r}"
    for text in given:
        assert str(text) in message, f"message does not show {text!r}: {message!r}"


def conv_args(n=1, h=6, w=6, c=4, k=5, kh=3, kw=3, groups=1, dtype=np.float32,
              layout="NHWC"):
    rng = np.random.default_rng(0)
    if layout == "NHWC":
        x = rng.standard_normal((n, h, w, c)).astype(dtype)
        weight = rng.standard_normal((kh, kw, c // groups, k)).astype(dtype)
    else:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        weight = rng.standard_normal((k, c // groups, kh, kw)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    return x, weight, bias


# --------------------------------------------------------------------------
# conv2d: shapes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 6), (1, 1, 6, 6, 4), (24,)],
                         ids=["2d", "5d", "1d"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv2d_x_wrong_ndim(shape, layout):
    _, weight, _ = conv_args(layout=layout)
    x = np.zeros(shape, np.float32)
    with raises_naming(ValueError, "x", f"{len(shape)}"):
        fastconv.conv2d(x, weight, layout=layout)


@pytest.mark.parametrize("shape", [(3, 3, 4), (1, 3, 3, 4, 5), (20,)],
                         ids=["3d", "5d", "1d"])
def test_conv2d_weight_wrong_ndim(shape):
    x, _, _ = conv_args()
    with raises_naming(ValueError, "weight", f"{len(shape)}"):
        fastconv.conv2d(x, np.zeros(shape, np.float32))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv2d_channel_mismatch(layout):
    x, _, _ = conv_args(c=4, layout=layout)
    _, weight, _ = conv_args(c=3, layout=layout)
    with pytest.raises(ValueError, match=r"(?i)channel") as excinfo:
        fastconv.conv2d(x, weight, layout=layout)
    message = str(excinfo.value)
    assert "4" in message and "3" in message, message


def test_conv2d_channel_mismatch_with_groups():
    # C = 6, groups = 2 -> weight must have 3 input channels, has 2.
    x, _, _ = conv_args(c=6)
    weight = np.zeros((3, 3, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"(?i)channel|groups"):
        fastconv.conv2d(x, weight, groups=2)


def test_conv2d_groups_not_dividing_c():
    x, _, _ = conv_args(c=6)
    weight = np.zeros((3, 3, 1, 8), np.float32)  # would need C/groups = 6/4
    with raises_naming(ValueError, "groups", "4"):
        fastconv.conv2d(x, weight, groups=4)


def test_conv2d_groups_not_dividing_k():
    x, _, _ = conv_args(c=6)
    weight = np.zeros((3, 3, 2, 4), np.float32)  # K = 4 with groups = 3
    with raises_naming(ValueError, "groups", "3"):
        fastconv.conv2d(x, weight, groups=3)


@pytest.mark.parametrize("groups", [0, -2])
def test_conv2d_groups_below_one(groups):
    x, weight, _ = conv_args()
    with raises_naming(ValueError, "groups", str(groups)):
        fastconv.conv2d(x, weight, groups=groups)


@pytest.mark.parametrize("groups", ["2", 2.5])
def test_conv2d_groups_wrong_type(groups):
    x, weight, _ = conv_args(c=4, groups=2)
    with raises_naming(TypeError, "groups"):
        fastconv.conv2d(x, weight, groups=groups)


@pytest.mark.parametrize(
    "h, w, kh, kw, padding, dilation",
    [(3, 3, 5, 5, 0, 1), (6, 6, 7, 3, 0, 1), (3, 3, 5, 5, ((0, 1), (1, 0)), 1),
     (5, 5, 3, 3, 0, 3), (6, 6, 4, 4, "valid", 2)],
    ids=["k5-on-3", "k7x3-on-6", "k5-on-3-pad1-asym", "dilated-k7-on-5",
         "valid-dilated"])
def test_conv2d_kernel_larger_than_padded_input(h, w, kh, kw, padding, dilation):
    x, weight, _ = conv_args(h=h, w=w, kh=kh, kw=kw)
    with pytest.raises(ValueError, match=r"(?i)kernel|weight"):
        fastconv.conv2d(x, weight, padding=padding, dilation=dilation)


# --------------------------------------------------------------------------
# conv2d: stride / dilation / padding values
# --------------------------------------------------------------------------
@pytest.mark.parametrize("argument", ["stride", "dilation"])
@pytest.mark.parametrize("value, shown", [(0, "0"), (-1, "-1"), ((1, 0), "0"),
                                          ((-2, 1), "-2")],
                         ids=["0", "-1", "(1,0)", "(-2,1)"])
def test_conv2d_stride_dilation_below_one(argument, value, shown):
    x, weight, _ = conv_args()
    with raises_naming(ValueError, argument, shown):
        fastconv.conv2d(x, weight, **{argument: value})


@pytest.mark.parametrize("argument", ["stride", "dilation"])
@pytest.mark.parametrize("value", [1.5, 2.0, (1, 2.0), "2"], ids=str)
def test_conv2d_stride_dilation_wrong_type(argument, value):
    x, weight, _ = conv_args()
    with raises_naming(TypeError, argument):
        fastconv.conv2d(x, weight, **{argument: value})


@pytest.mark.parametrize("argument", ["stride", "dilation"])
def test_conv2d_stride_dilation_wrong_length(argument):
    x, weight, _ = conv_args()
    # A sequence of the wrong length: either error class is acceptable.
    with raises_naming((ValueError, TypeError), argument):
        fastconv.conv2d(x, weight, **{argument: (1, 1, 1)})


@pytest.mark.parametrize("padding, shown",
                         [(-1, "-1"), ((0, -1), "-1"), (((0, 0), (-2, 0)), "-2"),
                          (((0, -1), (0, 0)), "-1")],
                         ids=["int", "pair", "asym-left", "asym-bottom"])
def test_conv2d_negative_padding(padding, shown):
    x, weight, _ = conv_args()
    with raises_naming(ValueError, "padding", shown):
        fastconv.conv2d(x, weight, padding=padding)


@pytest.mark.parametrize("padding", ["full", "SAMEE", "causal"])
def test_conv2d_unknown_padding_string(padding):
    x, weight, _ = conv_args()
    with raises_naming(ValueError, "padding", padding):
        fastconv.conv2d(x, weight, padding=padding)


@pytest.mark.parametrize("padding", [(1, 2, 3), ((1, 2, 3), (0, 0)), ((1,), (1,))],
                         ids=["triple", "bad-inner-triple", "bad-inner-single"])
def test_conv2d_malformed_padding(padding):
    x, weight, _ = conv_args()
    with raises_naming((ValueError, TypeError), "padding"):
        fastconv.conv2d(x, weight, padding=padding)


@pytest.mark.parametrize("layout", ["NCWH", "nhwcc", "HWC", ""])
def test_conv2d_unknown_layout(layout):
    x, weight, _ = conv_args()
    with raises_naming(ValueError, "layout", *([layout] if layout else [])):
        fastconv.conv2d(x, weight, layout=layout)


@pytest.mark.parametrize("activation", ["gelu", "softplus", "mish", "RELUX"])
def test_conv2d_unknown_activation(activation):
    x, weight, _ = conv_args()
    with raises_naming(ValueError, "activation", activation):
        fastconv.conv2d(x, weight, activation=activation)


@pytest.mark.parametrize("shape, shown", [((6,), "6"), ((1, 5), "(1, 5)"),
                                          ((4,), "4"), ((), "()")],
                         ids=["K+1", "2d", "K-1", "scalar"])
def test_conv2d_wrong_bias_shape(shape, shown):
    x, weight, _ = conv_args(k=5)
    with raises_naming(ValueError, "bias", shown):
        fastconv.conv2d(x, weight, np.zeros(shape, np.float32))


# --------------------------------------------------------------------------
# conv2d: dtypes
# --------------------------------------------------------------------------
@pytest.mark.parametrize("x_dtype, w_dtype, b_dtype", [
    (np.float32, np.float64, np.float32),
    (np.float64, np.float32, np.float64),
    (np.float32, np.float32, np.float64),
    (np.float64, np.float64, np.float32),
], ids=["x32-w64", "x64-w32", "b64", "b32"])
def test_conv2d_mixed_dtypes_name_both(x_dtype, w_dtype, b_dtype):
    x, weight, bias = conv_args()
    with pytest.raises(TypeError) as excinfo:
        fastconv.conv2d(x.astype(x_dtype), weight.astype(w_dtype), bias.astype(b_dtype))
    message = str(excinfo.value)
    assert "float32" in message and "float64" in message, message


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.complex64,
                                   np.complex128, np.bool_, object],
                         ids=lambda d: np.dtype(d).name)
def test_conv2d_unsupported_dtype(dtype):
    x, weight, _ = conv_args()
    with pytest.raises(TypeError) as excinfo:
        fastconv.conv2d(x.astype(dtype), weight.astype(dtype))
    assert np.dtype(dtype).name in str(excinfo.value), str(excinfo.value)


# --------------------------------------------------------------------------
# conv2d: out=
# --------------------------------------------------------------------------
def test_conv2d_out_wrong_shape():
    x, weight, _ = conv_args()  # result (1, 4, 4, 5)
    out = np.empty((1, 4, 4, 6), np.float32)
    with raises_naming(ValueError, "out", "(1, 4, 4, 6)", "(1, 4, 4, 5)"):
        fastconv.conv2d(x, weight, out=out)


def test_conv2d_out_wrong_shape_nchw():
    x, weight, _ = conv_args(layout="NCHW")  # result (1, 5, 4, 4)
    out = np.empty((1, 4, 4, 5), np.float32)
    with raises_naming(ValueError, "out", "(1, 5, 4, 4)"):
        fastconv.conv2d(x, weight, layout="NCHW", out=out)


def test_conv2d_out_wrong_dtype():
    x, weight, _ = conv_args()
    out = np.empty((1, 4, 4, 5), np.float64)
    with raises_naming(ValueError, "out", "float64", "float32"):
        fastconv.conv2d(x, weight, out=out)


def test_conv2d_out_read_only():
    x, weight, _ = conv_args()
    out = np.zeros((1, 4, 4, 5), np.float32)
    out.setflags(write=False)
    with raises_naming(ValueError, "out"):
        fastconv.conv2d(x, weight, out=out)
    assert (out == 0).all()


@pytest.mark.parametrize("kind", ["fortran", "strided"])
def test_conv2d_out_not_c_contiguous(kind):
    x, weight, _ = conv_args()
    if kind == "fortran":
        out = np.empty((1, 4, 4, 5), np.float32, order="F")
    else:
        out = np.empty((1, 4, 8, 5), np.float32)[:, :, ::2, :]
    assert not out.flags.c_contiguous
    with raises_naming(ValueError, "out"):
        fastconv.conv2d(x, weight, out=out)


def _unaligned_empty(shape, dtype):
    """A C-contiguous array of `shape` whose data starts at an odd byte offset."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    out = np.frombuffer(np.zeros(size + 1, np.uint8)[1:].data, dtype).reshape(shape)
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


def test_conv2d_out_unaligned():
    """The kernels write whole, aligned elements: an odd byte offset is refused."""
    x, weight, _ = conv_args(k=16)
    out = _unaligned_empty((1, 4, 4, 16), np.float32)
    with raises_naming(ValueError, "out", "aligned"):
        fastconv.conv2d(x, weight, out=out)


def test_conv2d_out_is_x():
    x, _, _ = conv_args(c=5, k=5)
    weight = np.ones((1, 1, 5, 5), np.float32)
    with raises_naming(ValueError, "out"):
        fastconv.conv2d(x, weight, out=x)


def _overlapping(size_a, size_b, shift, dtype=np.float32):
    """Two flat C-contiguous views of one buffer; b starts ``shift`` before a ends."""
    buffer = np.zeros(size_a + size_b - shift, dtype)
    return buffer[:size_a], buffer[size_a - shift:]


@pytest.mark.parametrize("argument", ["x", "weight", "bias"])
def test_conv2d_out_overlapping_an_input(argument):
    x, weight, bias = conv_args()  # result (1, 4, 4, 5): 80 elements
    arrays = {"x": x, "weight": weight, "bias": bias}
    source = arrays[argument]
    flat_in, flat_out = _overlapping(source.size, 80, shift=1)
    flat_in[...] = source.ravel()
    arrays[argument] = flat_in.reshape(source.shape)
    out = flat_out.reshape(1, 4, 4, 5)
    assert np.shares_memory(out, arrays[argument])
    with raises_naming(ValueError, "out"):
        fastconv.conv2d(arrays["x"], arrays["weight"], arrays["bias"], out=out)


def test_conv2d_error_leaves_out_untouched():
    """Errors are raised before any kernel runs: out= is not written."""
    x, weight, _ = conv_args()
    out = np.full((1, 4, 4, 5), 7.0, np.float32)
    with pytest.raises(ValueError):
        fastconv.conv2d(x, weight, np.zeros(6, np.float32), out=out)
    with pytest.raises(ValueError):
        fastconv.conv2d(x, weight, activation="gelu", out=out)
    assert (out == 7.0).all()


# --------------------------------------------------------------------------
# conv2d: num_threads
# --------------------------------------------------------------------------
@pytest.mark.parametrize("num_threads", [0, -1])
def test_conv2d_num_threads_below_one(num_threads):
    x, weight, _ = conv_args()
    with raises_naming(ValueError, "num_threads", str(num_threads)):
        fastconv.conv2d(x, weight, num_threads=num_threads)


@pytest.mark.parametrize("num_threads", [1.5, "2", 2.0])
def test_conv2d_num_threads_wrong_type(num_threads):
    x, weight, _ = conv_args()
    with raises_naming(TypeError, "num_threads"):
        fastconv.conv2d(x, weight, num_threads=num_threads)


def test_conv2d_numpy_integer_arguments_accepted():
    """np.int64 values are ints: accepted for stride, padding, groups, num_threads."""
    x, weight, _ = conv_args()
    reference = fastconv.conv2d(x, weight, stride=2, padding=1, num_threads=1)
    result = fastconv.conv2d(x, weight, stride=np.int64(2), padding=np.int64(1),
                             groups=np.int64(1), num_threads=np.int64(1))
    np.testing.assert_array_equal(result, reference)


# --------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------
def mm_args(m=3, k=4, n=5, dtype=np.float32):
    rng = np.random.default_rng(1)
    return (rng.standard_normal((m, k)).astype(dtype),
            rng.standard_normal((k, n)).astype(dtype),
            rng.standard_normal(n).astype(dtype))


@pytest.mark.parametrize("argument", ["a", "b"])
@pytest.mark.parametrize("ndim", [1, 3])
def test_matmul_operand_not_2d(argument, ndim):
    a, b, _ = mm_args()
    arrays = {"a": a, "b": b}
    arrays[argument] = np.zeros((4,) * ndim, np.float32)
    with raises_naming(ValueError, argument, str(ndim)):
        fastconv.matmul(arrays["a"], arrays["b"])


def test_matmul_inner_size_mismatch_names_both_sizes():
    a = np.zeros((3, 4), np.float32)
    b = np.zeros((7, 5), np.float32)
    with pytest.raises(ValueError) as excinfo:
        fastconv.matmul(a, b)
    message = str(excinfo.value)
    assert "4" in message and "7" in message, message


@pytest.mark.parametrize("shape", [(4,), (6,), (1, 5)], ids=str)
def test_matmul_wrong_bias_shape(shape):
    a, b, _ = mm_args(n=5)
    with raises_naming(ValueError, "bias"):
        fastconv.matmul(a, b, np.zeros(shape, np.float32))


def test_matmul_mixed_dtypes_name_both():
    a, b, bias = mm_args()
    with pytest.raises(TypeError) as excinfo:
        fastconv.matmul(a, b.astype(np.float64), bias)
    message = str(excinfo.value)
    assert "float32" in message and "float64" in message, message


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex128, object],
                         ids=lambda d: np.dtype(d).name)
def test_matmul_unsupported_dtype(dtype):
    a, b, _ = mm_args()
    with pytest.raises(TypeError) as excinfo:
        fastconv.matmul(a.astype(dtype), b.astype(dtype))
    assert np.dtype(dtype).name in str(excinfo.value), str(excinfo.value)


def test_matmul_unknown_activation():
    a, b, _ = mm_args()
    with raises_naming(ValueError, "activation", "gelu"):
        fastconv.matmul(a, b, activation="gelu")


@pytest.mark.parametrize("case", ["shape", "dtype", "fortran", "read-only",
                                  "overlaps-a", "overlaps-b", "is-a", "unaligned"])
def test_matmul_bad_out(case):
    a, b, bias = mm_args(m=3, k=4, n=5)
    out = np.empty((3, 5), np.float32)
    if case == "shape":
        out = np.empty((5, 3), np.float32)
    elif case == "dtype":
        out = np.empty((3, 5), np.float64)
    elif case == "fortran":
        out = np.empty((3, 5), np.float32, order="F")
    elif case == "read-only":
        out.setflags(write=False)
    elif case == "overlaps-a":
        flat_a, flat_out = _overlapping(12, 15, shift=2)
        flat_a[...] = a.ravel()
        a, out = flat_a.reshape(3, 4), flat_out.reshape(3, 5)
    elif case == "overlaps-b":
        flat_b, flat_out = _overlapping(20, 15, shift=3)
        flat_b[...] = b.ravel()
        b, out = flat_b.reshape(4, 5), flat_out.reshape(3, 5)
    elif case == "is-a":
        a = np.zeros((3, 3), np.float32)
        b = np.zeros((3, 3), np.float32)
        out = a
        bias = None
    elif case == "unaligned":
        out = _unaligned_empty((3, 5), np.float32)
    with raises_naming(ValueError, "out"):
        fastconv.matmul(a, b, bias, out=out)


@pytest.mark.parametrize("num_threads, exc", [(0, ValueError), (-3, ValueError),
                                              (1.5, TypeError), ("2", TypeError)],
                         ids=str)
def test_matmul_bad_num_threads(num_threads, exc):
    a, b, _ = mm_args()
    with raises_naming(exc, "num_threads"):
        fastconv.matmul(a, b, num_threads=num_threads)


# --------------------------------------------------------------------------
# fc_to_conv (size mismatch and flatten_order are in test_fc_to_conv.py)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(60,), (60, 6, 1)], ids=["1d", "3d"])
def test_fc_to_conv_weight_not_2d(shape):
    with raises_naming(ValueError, "weight"):
        fastconv.fc_to_conv(np.zeros(shape, np.float32), (3, 4, 5))


@pytest.mark.parametrize("input_shape", [(12, 5), (3, 4, 5, 1), (3, 0, 5),
                                         (3, -4, 5)], ids=str)
def test_fc_to_conv_bad_input_shape(input_shape):
    with raises_naming(ValueError, "input_shape"):
        fastconv.fc_to_conv(np.zeros((60, 6), np.float32), input_shape)


@pytest.mark.parametrize("shape", [(7,), (1, 6)], ids=str)
def test_fc_to_conv_wrong_bias_shape(shape):
    with raises_naming(ValueError, "bias"):
        fastconv.fc_to_conv(np.zeros((60, 6), np.float32), (3, 4, 5),
                            np.zeros(shape, np.float32))
