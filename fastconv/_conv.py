"""conv2d and matmul: argument handling, layout, and the choice of kernel."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from fastconv import _core
from fastconv._config import resolve_threads
from fastconv._validate import (activation_is_relu, check_bias, check_ndim, check_out,
                                float_arrays, int_pair, layout_name, padding_amounts,
                                positive_int)

__all__ = ["conv2d", "matmul"]

IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, str, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]]]


def _element_strides(a: np.ndarray) -> Optional[Tuple[int, ...]]:
    """Strides of a in elements, or None when some stride is not a multiple
    of the item size (then the caller copies)."""
    size = a.itemsize
    if any(s % size for s in a.strides):
        return None
    return tuple(s // size for s in a.strides)


def _pack(geom: "_core.Geometry", w: np.ndarray, axes: Tuple[int, int, int, int],
          bias: Optional[np.ndarray]) -> np.ndarray:
    """Pack w, whose axes (tap row, tap column, channel, output) are `axes`,
    straight from its own strides."""
    strides = _element_strides(w)
    if strides is None:
        w = np.ascontiguousarray(w)
        strides = _element_strides(w)
    packed = np.empty(geom.packed_size, dtype=w.dtype)
    geom.pack(w, tuple(strides[a] for a in axes),
              None if bias is None else np.ascontiguousarray(bias), packed)
    return packed


def conv2d(x, weight, bias=None, *, stride: IntPair = 1, padding: Padding = 0,
           dilation: IntPair = 1, groups: int = 1, activation: Optional[str] = None,
           layout: str = "NHWC", out: Optional[np.ndarray] = None,
           num_threads: Optional[int] = None) -> np.ndarray:
    """2-D convolution (cross-correlation, as in PyTorch, TensorFlow and ONNX).

    Parameters
    ----------
    x : array_like, float32 or float64
        Input of shape (N, H, W, C) for layout "NHWC" or (N, C, H, W) for
        "NCHW"; a 3-D input (no batch axis) gives a 3-D result.
    weight : array_like
        Kernel, HWIO (kh, kw, C/groups, K) for "NHWC" or OIHW
        (K, C/groups, kh, kw) for "NCHW". Same dtype as x.
    bias : array_like, optional
        Shape (K,), added to every output pixel.
    stride, dilation : int or (int, int)
        Each >= 1.
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
        Zero padding. "same" gives an output of size ceil(in / stride); where
        the total is odd the extra row/column goes at the bottom/right.
    groups : int
        Divides C and K; groups == C is a depthwise convolution (any
        channel multiplier K / C).
    activation : None or "relu"
        Applied in the kernel's store. ReLU(NaN) is NaN.
    layout : "NHWC" or "NCHW"
    out : numpy.ndarray, optional
        C-contiguous array of the result's shape and dtype, sharing no memory
        with x, weight or bias; filled and returned.
    num_threads : int, optional
        Threads for this call (default get_num_threads()). The result is
        bitwise the same for every thread count.

    Returns
    -------
    numpy.ndarray
        (N, Ho, Wo, K) for "NHWC", (N, K, Ho, Wo) for "NCHW", where
        Ho = (H + top + bottom - dilation*(kh-1) - 1) // stride + 1.

    Raises
    ------
    TypeError
        Unsupported or mixed dtypes; arguments of the wrong type.
    ValueError
        Inconsistent shapes or options, with the argument named.

    Notes
    -----
    A 1x1, stride 1, unpadded convolution runs as a GEMM over the pixels;
    other kernels run as an indirect convolution with no im2col buffer; a
    depthwise one (groups == C == K) has its own kernel. The GIL is released
    while the kernels run.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 4, 4, 3), np.float32)
    >>> w = np.array([[0, 2], [1, 3], [1, 5]], np.float32).reshape(1, 1, 3, 2)
    >>> fastconv.conv2d(x, w, np.array([8, 13], np.float32), activation="relu")[0, 0, 0]
    array([10., 23.], dtype=float32)
    """
    fn = "conv2d"
    layout = layout_name(fn, layout)
    dtype, arr = float_arrays(fn, x=x, weight=weight, bias=bias)
    xa, wa, ba = arr["x"], arr["weight"], arr["bias"]
    dims = "(N, H, W, C)" if layout == "NHWC" else "(N, C, H, W)"
    check_ndim(fn, "x", xa, (3, 4), f"4-D {dims} or 3-D without the batch axis")
    wdims = "HWIO (kh, kw, C/groups, K)" if layout == "NHWC" else "OIHW (K, C/groups, kh, kw)"
    check_ndim(fn, "weight", wa, (4,), f"4-D {wdims}")
    unbatched = xa.ndim == 3
    x4 = xa[None] if unbatched else xa
    if layout == "NHWC":
        N, H, W, C = x4.shape
        kh, kw, Cg, K = wa.shape
        waxes = (0, 1, 2, 3)
    else:
        N, C, H, W = x4.shape
        K, Cg, kh, kw = wa.shape
        waxes = (2, 3, 1, 0)
    groups = positive_int(fn, "groups", groups)
    if C % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the input channels C={C}")
    if K % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the output channels K={K} of weight")
    if Cg != C // groups:
        raise ValueError(f"{fn}: weight has {Cg} input channels per group; x has C={C} "
                         f"channels and groups={groups}, so expected {C // groups}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: weight must have a kernel of at least 1x1; got {kh}x{kw}")
    sh, sw = int_pair(fn, "stride", stride)
    dh, dw = int_pair(fn, "dilation", dilation)
    (pt, pb), (pl, pr) = padding_amounts(fn, padding, (H, W), (kh, kw), (sh, sw), (dh, dw))
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if H + pt + pb < span_h or W + pl + pr < span_w:
        raise ValueError(
            f"{fn}: the kernel ({kh}x{kw}, dilation {dh}x{dw}, spanning {span_h}x{span_w}) "
            f"is larger than the padded input ({H + pt + pb}x{W + pl + pr}); the result "
            f"would be empty")
    Ho, Wo = (H + pt + pb - span_h) // sh + 1, (W + pl + pr - span_w) // sw + 1
    relu = activation_is_relu(fn, activation)
    check_bias(fn, ba, K)
    nthreads = resolve_threads(fn, num_threads)
    shape = (N, Ho, Wo, K) if layout == "NHWC" else (N, K, Ho, Wo)
    out = check_out(fn, out, shape[1:] if unbatched else shape, dtype,
                    {"x": x, "weight": weight, "bias": bias})

    # Kernels work in NHWC; an NCHW input is transposed once on the way in
    # and the result once on the way out.
    if layout == "NHWC":
        xk = np.ascontiguousarray(x4)
        y = out.reshape(shape) if out is not None else np.empty(shape, dtype)
    else:
        xk = np.ascontiguousarray(x4.transpose(0, 2, 3, 1))
        y = np.empty((N, Ho, Wo, K), dtype)
    geom = _core.Geometry(dtype.name, N, H, W, C, K, groups, kh, kw, sh, sw, dh, dw,
                          pt, pl, Ho, Wo, relu, ba is not None)
    if groups > 1 and groups == C == K:
        # Depthwise with multiplier 1: (kh, kw, C) taps, channels contiguous.
        wdw = wa[:, :, 0, :] if layout == "NHWC" else wa[:, 0].transpose(1, 2, 0)
        geom.dwconv(xk, np.ascontiguousarray(wdw), None if ba is None else
                    np.ascontiguousarray(ba), y, nthreads)
    else:
        geom.conv(xk, _pack(geom, wa, waxes, ba), y, nthreads)

    if layout == "NCHW":
        result = y.transpose(0, 3, 1, 2)
        if out is not None:
            np.copyto(out.reshape(shape), result)
            return out
        y = np.ascontiguousarray(result)
    if out is not None:
        return out
    return y[0] if unbatched else y


def matmul(a, b, bias=None, *, activation: Optional[str] = None,
           out: Optional[np.ndarray] = None, num_threads: Optional[int] = None) -> np.ndarray:
    """Matrix product a @ b (+ bias), optionally followed by ReLU.

    This is the GEMM behind fastconv's 1x1 convolutions, exposed so that it
    can be used and benchmarked on its own.

    Parameters
    ----------
    a : array_like, shape (M, K), float32 or float64
    b : array_like, shape (K, N), same dtype
    bias : array_like, shape (N,), optional
    activation : None or "relu"
    out : numpy.ndarray, optional
        C-contiguous (M, N) array of the dtype, sharing no memory with the
        inputs; filled and returned.
    num_threads : int, optional
        Threads for this call (default get_num_threads()); the result is
        bitwise the same for every thread count.

    Returns
    -------
    numpy.ndarray, shape (M, N)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.matmul(np.eye(2, dtype=np.float32), np.ones((2, 3), np.float32))
    array([[1., 1., 1.],
           [1., 1., 1.]], dtype=float32)
    """
    fn = "matmul"
    dtype, arr = float_arrays(fn, a=a, b=b, bias=bias)
    aa, ba, bias_a = arr["a"], arr["b"], arr["bias"]
    check_ndim(fn, "a", aa, (2,), "2-D (M, K)")
    check_ndim(fn, "b", ba, (2,), "2-D (K, N)")
    M, K = aa.shape
    if ba.shape[0] != K:
        raise ValueError(f"{fn}: a has K={K} columns but b has {ba.shape[0]} rows; "
                         f"a (M, K) @ b (K, N) needs them equal")
    N = ba.shape[1]
    relu = activation_is_relu(fn, activation)
    check_bias(fn, bias_a, N)
    nthreads = resolve_threads(fn, num_threads)
    out = check_out(fn, out, (M, N), dtype, {"a": a, "b": b, "bias": bias})
    y = out if out is not None else np.empty((M, N), dtype)
    # A GEMM is the 1x1 convolution of an (M, 1) image with K channels.
    geom = _core.Geometry(dtype.name, 1, M, 1, K, N, 1, 1, 1, 1, 1, 1, 1, 0, 0, M, 1,
                          relu, bias_a is not None)
    b4 = ba[None, None]  # (1, 1, K, N): HWIO
    geom.conv(np.ascontiguousarray(aa), _pack(geom, b4, (0, 1, 2, 3), bias_a), y, nthreads)
    return y
