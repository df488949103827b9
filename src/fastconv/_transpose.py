"""conv_transpose2d: the transposed convolution (PyTorch's conv_transpose2d,
TensorFlow's conv2d_transpose), on the convolution operators.

TransposedWeights turns the weights into their equivalent direct kernel
(taps flipped, input and output channels swapped per group) and makes the
operator with FC_CONV_TRANSPOSED (csrc/fastconv.h): with stride 1 it is that
direct convolution; otherwise the operator runs one direct convolution per
phase of the output with the sub-kernel of the taps that reach it
(sub-pixel decomposition), each storing into its phase. transposed_geometry
gives the padding and output size by PyTorch's and TensorFlow's rules.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from fastconv._config import resolve_threads
from fastconv._conv import ConvWeights, IntPair, Padding, operator_growth
from fastconv._prepared import prepared
from fastconv._validate import (check_nbytes, check_out, explicit_padding, float_arrays,
                                int_pair, layout_name, positive_int)

__all__ = ["conv_transpose2d"]


def transposed_geometry(fn: str, in_hw: Tuple[int, int], k_hw: Tuple[int, int],
                        stride: Tuple[int, int], dilation: Tuple[int, int], padding: Any,
                        output_padding: Any, output_size: Any
                        ) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """(pad_top, pad_left), (Ho, Wo) of a transposed convolution.

    Explicit padding (PyTorch, and ONNX's pads for ((top, bottom), (left,
    right))): the full output, (H - 1) * s + d * (k - 1) + 1 rows, less the
    padding, plus output_padding rows (0 <= output_padding < max(s, d)) at
    the bottom; output_size picks the output_padding instead (PyTorch's
    rule: from 0 to s - 1), refused when none fits. "same" and "valid"
    (TensorFlow's conv2d_transpose with output_shape = output_size): the
    output is the size whose forward convolution (that padding, the same
    stride) gives H, the padding that forward convolution's (odd totals put
    the extra row at the bottom); without output_size it is H * s ("same")
    or (H - 1) * s + max(d * (k - 1) + 1, s) ("valid"), as in Keras.
    """
    spans = tuple(d * (k - 1) + 1 for k, d in zip(k_hw, dilation))
    if output_size is not None:
        size = int_pair(fn, "output_size", output_size)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode not in ("same", "valid"):
            raise ValueError(f"{fn}: padding must be an int, a pair, ((top, bottom), (left, "
                             f"right)), 'same' or 'valid'; got {padding!r}")
        if output_padding not in (0, (0, 0), [0, 0]):
            raise ValueError(f"{fn}: output_padding goes with explicit padding; with "
                             f"padding={padding!r} give output_size instead; got "
                             f"output_padding={output_padding!r}")
        if min(in_hw) < 1:
            raise ValueError(f"{fn}: x has an empty spatial side {tuple(in_hw)}; with "
                             f"padding={padding!r} it must be at least 1x1")
        pads, out = [], []
        for axis, (n, s, span) in enumerate(zip(in_hw, stride, spans)):
            if mode == "same":
                lo, hi = (n - 1) * s + 1, n * s
            else:
                lo, hi = (n - 1) * s + span, n * s + span - 1
            o = (n * s if mode == "same" else (n - 1) * s + max(span, s)) \
                if output_size is None else size[axis]
            if not lo <= o <= hi:
                raise ValueError(
                    f"{fn}: output_size {size} does not fit an input of {tuple(in_hw)} with "
                    f"padding {padding!r}, stride {tuple(stride)} and a kernel spanning "
                    f"{spans}: on the {'height' if axis == 0 else 'width'} only an output of "
                    f"{lo} to {hi} has a forward convolution of size {n}")
            total = max((n - 1) * s + span - o, 0) if mode == "same" else 0
            pads.append(total // 2)
            out.append(o)
        return (pads[0], pads[1]), (out[0], out[1])
    (pt, pb), (pl, pr) = explicit_padding(fn, padding)
    op = int_pair(fn, "output_padding", output_padding, minimum=0)
    natural = [(n - 1) * s + span - a - b for n, s, span, (a, b) in
               zip(in_hw, stride, spans, ((pt, pb), (pl, pr)))]
    if output_size is not None:
        if op != (0, 0):
            raise ValueError(f"{fn}: give output_size or output_padding, not both; got "
                             f"output_size={output_size!r}, output_padding={output_padding!r}")
        for axis, (lo, s) in enumerate(zip(natural, stride)):
            if not lo <= size[axis] <= lo + s - 1:
                raise ValueError(f"{fn}: output_size {size} cannot be reached: with padding "
                                 f"{padding!r} and stride {tuple(stride)} the "
                                 f"{'height' if axis == 0 else 'width'} can be {lo} to "
                                 f"{lo + s - 1} (an input of {tuple(in_hw)})")
        op = (size[0] - natural[0], size[1] - natural[1])
    for o, s, d in zip(op, stride, dilation):
        if o >= max(s, d):
            raise ValueError(f"{fn}: output_padding must be smaller than the stride or the "
                             f"dilation; got output_padding={tuple(op)} with stride "
                             f"{tuple(stride)} and dilation {tuple(dilation)}")
    out = (natural[0] + op[0], natural[1] + op[1])
    if min(out) < 1:
        raise ValueError(f"{fn}: the result would be empty: an input of {tuple(in_hw)} with "
                         f"padding {padding!r}, stride {tuple(stride)} and a kernel spanning "
                         f"{spans} gives {out}")
    return (pt, pl), out


class TransposedWeights(ConvWeights):
    """Checked transposed-convolution weights and their operator: weight is
    PyTorch's (C, K/groups, kh, kw) for layout "NCHW", TensorFlow's
    conv2d_transpose filter (kh, kw, K/groups, C) for "NHWC"; the operator
    reads their direct kernel (kh, kw, C/groups, K), made here (a copy)."""

    transposed = True

    def _weight_dims(self) -> str:
        return ("(kh, kw, K/groups, C) (TensorFlow's conv2d_transpose filter)"
                if self.layout == "NHWC" else "(C, K/groups, kh, kw) (PyTorch's)")

    def _kernel(self, w: np.ndarray) -> np.ndarray:
        if self.layout == "NHWC":
            kh, kw, kg, c = w.shape
            wt = w.transpose(3, 2, 0, 1)
        else:
            c, kg, kh, kw = w.shape
            wt = w
        G = self.groups
        if c % G:
            raise ValueError(f"{self.fn}: groups={G} must divide the input channels C={c} "
                             f"of weight")
        self.kh, self.kw, self.cg, self.k = kh, kw, c // G, kg * G
        self._axes = (0, 1, 2, 3)
        # direct[ty, tx, c, g * kg + k] = wt[g * C/G + c, k, kh-1-ty, kw-1-tx]
        direct = wt.reshape(G, c // G, kg, kh, kw)[:, :, :, ::-1, ::-1].transpose(3, 4, 1, 0, 2)
        return np.ascontiguousarray(direct).reshape(kh, kw, c // G, G * kg)

    def weight(self) -> np.ndarray:
        """A new array of the weights in the layout given."""
        if self._w is not None:
            direct = self._w
        else:
            direct = np.empty((self.kh, self.kw, self.cg, self.k), self.dtype)
            self._op.unpack(direct, self._axes)
        G = self.groups
        kg = self.k // G
        wt = direct.reshape(self.kh, self.kw, self.cg, G, kg)[::-1, ::-1].transpose(3, 2, 4, 0, 1)
        wt = wt.reshape(self.c, kg, self.kh, self.kw)
        return np.ascontiguousarray(wt if self.layout == "NCHW" else wt.transpose(2, 3, 1, 0))

    def _geometry(self, shape, N, H, W, C, padding, output_padding=0, output_size=None):
        fn = self.fn
        pads, out = transposed_geometry(fn, (H, W), (self.kh, self.kw), self.stride,
                                        self.dilation, padding, output_padding, output_size)
        # Every index of the phases' convolutions lies within the input and
        # the result's extents (the kernel's span beside them).
        check_nbytes(fn, "the input (N, H, W, C)", (N, H, W, C), self.dtype.itemsize,
                     f"x of shape {tuple(shape)} is too large")
        return pads, out


def conv_transpose2d(x, weight, bias=None, *, stride: IntPair = 1, padding: Padding = 0,
                     output_padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                     activation: Any = None, layout: str = "NHWC",
                     output_size: Optional[IntPair] = None, out: Optional[np.ndarray] = None,
                     num_threads: Optional[int] = None) -> np.ndarray:
    """2-D transposed convolution (PyTorch's conv_transpose2d, TensorFlow's
    conv2d_transpose): each input pixel adds the kernel, scaled by it, into
    the output at stride steps; the gradient of conv2d with respect to its
    input.

    Parameters
    ----------
    x : array_like, float32 or float64
        (N, H, W, C) for layout "NHWC", (N, C, H, W) for "NCHW"; 3-D without
        the batch axis gives a 3-D result.
    weight : array_like
        TensorFlow's filter (kh, kw, K/groups, C) for "NHWC"; PyTorch's
        (C, K/groups, kh, kw) for "NCHW". Same dtype as x.
    bias : array_like, optional
        (K,), added to every output pixel (those no input reaches too).
    stride, dilation : int or (int, int)
    padding : int, (ph, pw), ((top, bottom), (left, right)), "same" or "valid"
        Explicit padding crops the full output, (H - 1) * stride +
        dilation * (kh - 1) + 1 rows, at the top and bottom (PyTorch; ONNX's
        pads as ((top, bottom), (left, right))). "same" and "valid" follow
        TensorFlow's conv2d_transpose with output_shape = output_size: the
        output is a size whose forward convolution with that padding gives
        H, padded as that convolution is (an odd total puts the extra row at
        the bottom and right); without output_size it is H * stride
        ("same") or (H - 1) * stride + max(dilation * (kh - 1) + 1, stride)
        ("valid"), as Keras' Conv2DTranspose.
    output_padding : int or (int, int)
        Rows and columns added at the bottom and right (explicit padding
        only), each below max(stride, dilation).
    groups : int
        Divides C and K.
    activation : None, "relu", "relu6", "sigmoid", "tanh", "silu",
        "hard_sigmoid", "hard_swish", "leaky_relu", ("clip", lo, hi),
        ("leaky_relu", slope) or ("hard_sigmoid", alpha, beta); applied in
        the kernels' store.
    output_size : int or (int, int), optional
        The output's height and width: with explicit padding it picks
        output_padding (PyTorch's rule; a ValueError when none fits), with
        "same" or "valid" it is TensorFlow's output_shape.
    out, num_threads
        As for conv2d. The result is bitwise the same for every thread count.

    Notes
    -----
    With stride 1 this is the direct convolution of the flipped kernel, run
    by conv2d's algorithms. Otherwise each of the stride_h * stride_w
    phases of the output (the rows q * stride + r) is a direct convolution
    of x with the sub-kernel of the taps that reach it, stored straight into
    its phase, all in one parallel region of the indirect GEMM: no
    zero-stuffed input, no scatter into an intermediate buffer. The weights
    are rearranged and packed in the call, and kept for later calls with the
    same weight array while its values do not change (as conv2d's: see
    fastconv.set_weight_cache); fastconv.nn.ConvTranspose2d does it once.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 2, 2, 1), np.float32)
    >>> w = np.ones((2, 2, 1, 1), np.float32)      # (kh, kw, K, C)
    >>> fastconv.conv_transpose2d(x, w, stride=2)[0, :, :, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]], dtype=float32)
    """
    fn = "conv_transpose2d"
    layout = layout_name(fn, layout)
    _, arr = float_arrays(fn, x=x, weight=weight, bias=bias)
    stride, dilation = int_pair(fn, "stride", stride), int_pair(fn, "dilation", dilation)
    groups = positive_int(fn, "groups", groups)
    nthreads = resolve_threads(fn, num_threads)

    def make(w: np.ndarray, b: Optional[np.ndarray]) -> TransposedWeights:
        return TransposedWeights(fn, w, b, groups, layout, nthreads, pack_now=False,
                                 stride=stride, dilation=dilation)

    w, b = arr["weight"], arr["bias"]
    weights = (prepared(("conv_transpose2d", groups, layout, stride, dilation), weight, w, b,
                        make, operator_growth) or make(w, b))
    xa = arr["x"]
    plan = weights.cached_plan(xa.shape, padding, activation, output_padding=output_padding,
                               output_size=output_size)
    out = check_out(fn, out, plan.result, weights.dtype,
                    {"x": (x, xa), "weight": (weight, w), "bias": (bias, b)})
    return weights.execute(plan, xa, out, nthreads)
