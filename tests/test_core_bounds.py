"""The bindings check every buffer the C code reads or writes against the
shapes and strides it is used with (SECURITY.md): weights are addressed only
through their own array's shape and strides, and inputs, results and biases
that are too small, non-contiguous, unaligned or of another dtype are
refused, so that no call into fastconv._core can read or write outside an
array, whatever its arguments."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from fastconv import _core

HWIO = (0, 1, 2, 3)


def conv_op(w, bias=None, groups=1, one_call=False):
    return _core.ConvOp(w, HWIO, groups, bias, (1, 1), (1, 1), one_call, False, False, 1)


def call(N=1, H=4, W=4, C=2, K=3, pad=(0, 0), out=(2, 2), kernel=(3, 3), algorithm="auto"):
    return _core.ConvCall(N, H, W, C, K, *pad, *out, kernel, (1, 1), (1, 1), None, True, True,
                          algorithm, 4)


def test_the_weights_sizes_are_the_arrays_own():
    """The old pack() took sizes and strides from its caller: a 4-element
    buffer read as 64x64. Now both come from the array itself."""
    op = conv_op(np.ones((1, 1, 2, 2), np.float32))
    assert (op.kh, op.kw, op.C, op.K) == (1, 1, 2, 2)
    w = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    back = np.empty((1, 1, 2, 2), np.float32)
    conv_op(w).unpack(back, HWIO)
    assert np.array_equal(back, w)
    # a zero-strided view is read as what it is: one value repeated
    virtual = as_strided(np.ones(1, np.float32), shape=(3, 3, 4, 5), strides=(0,) * 4)
    back = np.empty((3, 3, 4, 5), np.float32)
    conv_op(virtual).unpack(back, HWIO)
    assert np.array_equal(back, np.ones_like(back))


@pytest.mark.parametrize("what", ["x", "out"])
def test_run_refuses_buffers_smaller_than_the_call(what):
    op = conv_op(np.ones((3, 3, 2, 3), np.float32))
    x, y = np.ones((1, 4, 4, 2), np.float32), np.empty((1, 2, 2, 3), np.float32)
    if what == "x":
        x = x[:, :3]
    else:
        y = y[:, :1]
    with pytest.raises(ValueError, match=f"internal: {what} holds"):
        op.run(call(), np.ascontiguousarray(x), np.ascontiguousarray(y), 1)
    # a call whose sizes exceed the buffers given is the same mistake
    with pytest.raises(ValueError, match="internal: x holds"):
        op.run(call(H=40, W=40, out=(38, 38)), np.ones((1, 4, 4, 2), np.float32),
               np.empty((1, 38, 38, 3), np.float32), 1)


def test_run_refuses_strided_unaligned_and_other_dtypes():
    op = conv_op(np.ones((3, 3, 2, 3), np.float32))
    y = np.empty((1, 2, 2, 3), np.float32)
    x = np.ones((1, 4, 8, 2), np.float32)[:, :, ::2]
    with pytest.raises(ValueError, match="internal: x is not C-contiguous"):
        op.run(call(), x, y, 1)
    raw = np.zeros(4 * 4 * 2 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(1, 4, 4, 2)
    with pytest.raises(ValueError, match="internal: x is not aligned"):
        op.run(call(), raw, y, 1)
    with pytest.raises(TypeError, match="internal: x has dtype float64"):
        op.run(call(), np.ones((1, 4, 4, 2)), y, 1)


def test_calls_with_negative_or_overflowing_sizes_are_refused():
    with pytest.raises(ValueError, match="64-bit sizes"):
        call(H=-1)
    with pytest.raises(ValueError, match="64-bit sizes"):
        call(N=2**40, H=2**20, W=2**20, out=(2**20, 2**20))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        call(algorithm="bogus")


def test_bias_shorter_than_the_outputs_is_refused():
    with pytest.raises(ValueError, match="internal: bias holds 2 elements, needs 3"):
        conv_op(np.ones((1, 1, 2, 3), np.float32), bias=np.ones(2, np.float32))


def test_packed_sizes_past_64_bits_are_refused_before_packing():
    virtual = as_strided(np.ones(1, np.float32), shape=(2**30, 2**30, 1, 1), strides=(0,) * 4)
    with pytest.raises(OverflowError, match="2\\*\\*63 - 1"):
        conv_op(virtual)


def test_unpack_refuses_other_shapes_and_read_only_arrays():
    op = conv_op(np.ones((3, 3, 2, 3), np.float32))
    with pytest.raises(ValueError, match="another shape"):
        op.unpack(np.empty((3, 3, 2, 2), np.float32), HWIO)
    read_only = np.empty((3, 3, 2, 3), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        op.unpack(read_only, HWIO)


def test_pool_refuses_mismatched_arrays():
    x = np.ones((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="pooling output shape"):
        _core.pool(x, np.empty((1, 2, 2, 2), np.float32), 2, 2, 2, 2, 0, 0, True, False, 1)
    with pytest.raises(ValueError, match="internal: out is not C-contiguous"):
        _core.pool(x, np.empty((1, 2, 4, 3), np.float32)[:, :, ::2], 2, 2, 2, 2, 0, 0, True,
                   False, 1)
