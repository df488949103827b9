"""Upsample: resizing a batch of maps as torch.nn.functional.interpolate does
(modes "nearest" and "bilinear"), which ONNX Resize also describes.

The resize is separable: each output column takes its values from one
(nearest) or two (bilinear) input columns with fixed weights, and each
output row likewise from input rows. The source indices and weights of an
axis depend only on its input and output sizes and the options, so they are
computed once per size (and kept, see _axis_plan) as vectors; the map is
then gathered and weighted along the width, then along the height, by whole
NumPy array operations (no loop over pixels).

Matching PyTorch (2.x, CPU)
---------------------------
The index and weight arithmetic is torch's (aten/src/ATen/native/UpSample.h),
operation by operation, in the precision torch uses:

nearest
    src = min(floor(dst * scale), in - 1), computed in float32 for either
    dtype, with scale = float32(1 / scale_factor) when a scale factor was
    given, else float32(in) / float32(out); an axis whose size is unchanged
    is copied, and one whose size doubles takes dst // 2 (torch's special
    cases, which hold even when the given scale factor was not 1 or 2).
    The result is bitwise torch's for float32 (every kernel), and for
    float64 that of torch's channels-last kernel. (torch's contiguous
    float64 kernel, for an explicit size and a large enough output,
    computes dst * in / out in float64 instead, so where that product is
    an integer that float32 rounds below, e.g. 30 -> 194 at dst 97, it takes
    the next source pixel: the float32 rule is kept, so that both dtypes
    select the same pixels.)
bilinear
    In the dtype of x: scale = (in - 1) / (out - 1) with align_corners
    (0 for a one-pixel output), else 1 / scale_factor or in / out; the
    source coordinate src = scale * dst (align_corners) or
    max(scale * (dst + 0.5) - 0.5, 0), the latter rounded once, as the
    fused multiply-add that torch's compiled kernels (AVX2 and AVX-512
    builds) evaluate; i0 = min(floor(float32(src)), in - 1) (torch's
    floorf, which rounds a float64 coordinate to float32 first), i1 =
    min(i0 + 1, in - 1), w1 = clamp(src - i0, 0, 1), w0 = 1 - w1. An axis
    whose size is unchanged keeps i0 = i1 = dst, w0 = 1, w1 = 0 (and is
    still computed: x * 1 + x * 0 turns an infinity into NaN as in torch).
    These indices and weights are bitwise torch's. The interpolation is
    t = x[i0] * w0 + x[i1] * w1 along the width, then the same along the
    height, each product and sum rounded in x's dtype; torch's generic
    kernel computes the same expression in the same order but contracts
    each a * b + c * d into one fused multiply-add, so results differ from
    torch's by those roundings: within 2 * gamma_4 * sum(|x| * weights)
    (see tests/test_nn_resize.py). (torch's DEFAULT-capability build, no
    FMA, rounds scale * (dst + 0.5) before subtracting 0.5: its weights can
    differ from these in the last bit.)

The output size for a scale factor s is floor(in * s), in float64, as
torch computes it with recompute_scale_factor unset (the scale factor
itself, not out / in, then enters the index arithmetic above; an explicit
size gives what recompute_scale_factor=True gives).

ONNX Resize: mode "nearest" is coordinate_transformation_mode "asymmetric"
with nearest_mode "floor", and "bilinear" is mode "linear" with
"half_pixel" (align_corners=False; "pytorch_half_pixel" differs only for a
one-pixel output, where it takes the first pixel) or "align_corners".
ONNX Runtime computes the source coordinate as dst / (out / in) rather
than dst * (in / out), so it may select the neighbouring pixel where the
exact coordinate is an integer, and its weights differ from torch's in the
last bits; given scales, it rounds the output size floor(in * s) in float32
(6 * 0.8333333 gives 5, not torch's 4), and for "nearest" it has torch's
special case of an unchanged size but not that of a doubled one (a factor
2.1 on 5 pixels: torch takes dst // 2, ONNX Runtime floor(dst / 2.1)).
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Optional, Tuple

import numpy as np

from fastconv._config import resolve_threads
from fastconv._validate import check_nbytes, int_pair, layout_name
from fastconv.nn.layers import Layer, Shape, _batch, _map_shape, _spatial

__all__ = ["Upsample"]

MODES = ("nearest", "bilinear")

# The (indices, weights) of the axis sizes recently used: a network sees few.
AXIS_PLAN_CACHE_SIZE = 64


def _scale_factor(fn: str, value: Any) -> Tuple[float, float]:
    """A positive finite number or a pair (height, width) of them, as floats."""
    def one(v: Any) -> float:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{fn}: scale_factor must be a positive number or a pair of "
                            f"them (height, width); got {value!r}")
        f = float(v)
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"{fn}: scale_factor must be positive and finite; got {value!r}")
        return f

    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise TypeError(f"{fn}: scale_factor must be a positive number or a pair of "
                            f"them (height, width); got {value!r}")
        return one(value[0]), one(value[1])
    f = one(value)
    return f, f


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a * b + c for float32 arrays, rounded once to float32 (a fused
    multiply-add). The product of two float32 values is exact in float64;
    the sum is rounded to float64 "to odd" (an inexact sum whose last bit is
    0 moves to its neighbour towards the exact value), and a value rounded
    to odd with 29 spare bits rounds to float32 as the exact value would."""
    p = a.astype(np.float64) * b
    c64 = c.astype(np.float64)
    s = p + c64
    bv = s - p
    err = (p - (s - bv)) + (c64 - bv)  # p + c = s + err exactly (TwoSum)
    even = (s.view(np.uint64) & np.uint64(1)) == 0
    fix = (err != 0) & even
    if fix.any():
        s[fix] = np.nextafter(s[fix], np.where(err[fix] > 0, np.inf, -np.inf))
    return s.astype(np.float32)


def _half_pixel64(scale: float, n: int) -> np.ndarray:
    """scale * (dst + 0.5) - 0.5 for dst = 0 .. n-1, rounded once to float64
    (a fused multiply-add): exactly, in integers (scale = num / den, den a
    power of two), each quotient rounded to nearest by Python's int
    division."""
    num, den = float(scale).as_integer_ratio()
    k = 2 * np.arange(n, dtype=object) + 1
    return ((num * k - den) / (2 * den)).astype(np.float64)


@functools.lru_cache(maxsize=AXIS_PLAN_CACHE_SIZE)
def _axis_plan(mode: str, n_in: int, n_out: int, scale_factor: Optional[float],
               align_corners: bool, dtype_name: str):
    """The source indices (and for bilinear the weights) of one axis:
    (i0,) for nearest, (i0, i1, w0, w1) for bilinear; read-only arrays."""
    dst = np.arange(n_out)
    if mode == "nearest":
        if n_out == n_in:
            i0 = dst
        elif n_out == 2 * n_in:
            i0 = dst >> 1
        else:
            f32 = np.float32
            scale = (f32(1.0 / scale_factor) if scale_factor is not None
                     else f32(n_in) / f32(n_out))
            i0 = np.minimum(np.floor(dst.astype(f32) * scale).astype(np.int64), n_in - 1)
        i0.flags.writeable = False
        return (i0,)
    dt = np.dtype(dtype_name)
    T = dt.type
    if n_out == n_in:
        i0, w0, w1 = dst, np.ones(n_out, dt), np.zeros(n_out, dt)
        i1 = dst
    else:
        if align_corners:
            scale = T(n_in - 1) / T(n_out - 1) if n_out > 1 else T(0)
            src = scale * dst.astype(dt)
        else:
            scale = (T(1.0 / scale_factor) if scale_factor is not None
                     else T(n_in) / T(n_out))
            if dt == np.float32:
                src = _fma32(np.full(n_out, scale), dst.astype(dt) + T(0.5),
                             np.full(n_out, T(-0.5), dt))
            else:
                src = _half_pixel64(scale, n_out)
            src = np.where(src < 0, T(0), src)
        i0 = np.minimum(np.floor(src.astype(np.float32)).astype(np.int64), n_in - 1)
        w1 = np.minimum(np.maximum(src - i0.astype(dt), T(0)), T(1))
        i1 = i0 + (i0 < n_in - 1)
        w0 = T(1) - w1
    for a in (i0, i1, w0, w1):
        a.flags.writeable = False
    return i0, i1, w0, w1


def _used(i0: np.ndarray, i1: np.ndarray, n_in: int):
    """(the input positions i0 and i1 read, in order, or None if all;
    i0 and i1 as positions among them)."""
    rows = np.union1d(i0, i1)
    if rows.size == n_in:
        return None, i0, i1
    return rows, np.searchsorted(rows, i0), np.searchsorted(rows, i1)


class Upsample(Layer):
    """Resize maps as torch.nn.functional.interpolate (and nn.Upsample) does.

    Parameters
    ----------
    size : int or (int, int), optional
        The output (height, width).
    scale_factor : number or (number, number), optional
        The output is (floor(H * sh), floor(W * sw)); the factors, not the
        sizes' ratio, enter the coordinate arithmetic (torch's default,
        recompute_scale_factor unset). Exactly one of size and scale_factor.
    mode : "nearest" or "bilinear"
        "nearest" is torch's legacy nearest (src = floor(dst * in / out)).
    align_corners : bool, optional
        Only for "bilinear" (default False): True maps the corner pixels'
        centres onto each other; False (half-pixel) maps the maps' edges.
    layout : "NHWC" or "NCHW"
    name : str, optional

    Input (N, H, W, C) or (N, C, H, W), float32 or float64; the result has
    the input's dtype. The module docstring details how the arithmetic
    follows torch's (bitwise for "nearest"; for "bilinear" the indices and
    weights are bitwise torch's, the interpolation within a few roundings).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> up = nn.Upsample(scale_factor=2)
    >>> up(np.arange(4, dtype=np.float32).reshape(1, 2, 2, 1))[0, :, :, 0]
    array([[0., 0., 1., 1.],
           [0., 0., 1., 1.],
           [2., 2., 3., 3.],
           [2., 2., 3., 3.]], dtype=float32)
    """

    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: Optional[bool] = None, layout: str = "NHWC",
                 name: Optional[str] = None) -> None:
        fn = "Upsample"
        super().__init__(name)
        if (size is None) == (scale_factor is None):
            raise ValueError(f"{fn}: exactly one of size and scale_factor must be given; got "
                             f"size={size!r}, scale_factor={scale_factor!r}")
        self.size: Optional[Tuple[int, int]] = (None if size is None
                                                 else int_pair(fn, "size", size))
        self.scale_factor: Optional[Tuple[float, float]] = (
            None if scale_factor is None else _scale_factor(fn, scale_factor))
        if not isinstance(mode, str) or mode not in MODES:
            raise ValueError(f"{fn}: mode must be 'nearest' or 'bilinear'; got {mode!r}")
        self.mode = mode
        if mode == "nearest":
            if align_corners is not None:
                raise ValueError(f"{fn}: align_corners can only be set with mode 'bilinear' "
                                 f"(as in torch); got align_corners={align_corners!r} with "
                                 f"mode 'nearest'")
            self.align_corners: Optional[bool] = None
        else:
            if align_corners is not None and not isinstance(align_corners, (bool, np.bool_)):
                raise TypeError(f"{fn}: align_corners must be a bool or None; "
                                f"got {align_corners!r}")
            self.align_corners = bool(align_corners)
        self.layout = layout_name(fn, layout)

    def _out_hw(self, h: int, w: int) -> Tuple[int, int]:
        fn = "Upsample"
        if h < 1 or w < 1:
            raise ValueError(f"{fn}: x has an empty spatial side ({h}x{w}); height and width "
                             f"must be at least 1 (as in torch)")
        if self.size is not None:
            return self.size
        sh, sw = self.scale_factor
        ho, wo = math.floor(h * sh), math.floor(w * sw)
        if ho < 1 or wo < 1:
            raise ValueError(f"{fn}: scale_factor {self.scale_factor} makes an input of "
                             f"{h}x{w} an empty output ({ho}x{wo}); the output must be at "
                             f"least 1x1")
        return ho, wo

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ValueError(f"Upsample: input must be a 3-D map (no batch axis); "
                             f"got {tuple(shape)}")
        h, w, c = _spatial(self.layout, tuple(shape))
        ho, wo = self._out_hw(h, w)
        return _map_shape(self.layout, ho, wo, c)

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        fn = "Upsample"
        nhwc = self.layout == "NHWC"
        xa = _batch(fn, x, 4, "(N, H, W, C)" if nhwc else "(N, C, H, W)")
        resolve_threads(fn, num_threads)  # (checked; NumPy runs on one thread)
        h, w, c = _spatial(self.layout, xa.shape[1:])
        ho, wo = self._out_hw(h, w)
        out_shape = (xa.shape[0],) + _map_shape(self.layout, ho, wo, c)
        check_nbytes(fn, "the result", out_shape, xa.itemsize,
                     f"x of shape {xa.shape} resized to {ho}x{wo} gives too large a result")
        return self._resize(xa, self.axis_plans(h, w, xa.dtype), h, w)

    def axis_plans(self, h: int, w: int, dtype: Any) -> Tuple[tuple, tuple]:
        """The source indices (and bilinear weights) of every output row and
        column for an input of h x w: (i0,) or (i0, i1, w0, w1) per axis."""
        ho, wo = self._out_hw(h, w)
        sh, sw = (None, None) if self.scale_factor is None else self.scale_factor
        name = np.dtype(dtype).name
        return (_axis_plan(self.mode, h, ho, sh, bool(self.align_corners), name),
                _axis_plan(self.mode, w, wo, sw, bool(self.align_corners), name))

    def _resize(self, xa: np.ndarray, plans: Tuple[tuple, tuple], h: int, w: int
                ) -> np.ndarray:
        """xa resized by the axis plans, whose indices are rows and columns
        of xa (h x w): forward's arithmetic, also over a region of a map
        (the whole map's plans sliced, fastconv.nn.regions)."""
        nhwc = self.layout == "NHWC"
        hax, wax = (1, 2) if nhwc else (2, 3)
        hplan, wplan = plans
        ho, wo = len(hplan[0]), len(wplan[0])
        if self.mode == "nearest":
            # (one axis, then the other: the smaller intermediate first)
            rows, cols = hplan[0], wplan[0]
            if ho * w <= h * wo:
                return np.take(np.take(xa, rows, axis=hax), cols, axis=wax)
            return np.take(np.take(xa, cols, axis=wax), rows, axis=hax)
        # Along the width (on the input rows the height pass reads), then
        # the height: t = x[i0] * w0 + x[i1] * w1, as torch orders it.
        hi0, hi1, hw0, hw1 = hplan
        wi0, wi1, ww0, ww1 = wplan
        rows, hi0, hi1 = _used(hi0, hi1, h)
        xr = xa if rows is None else np.take(xa, rows, axis=hax)
        wshape = (-1, 1) if nhwc else (-1,)
        hshape = (-1, 1, 1) if nhwc else (-1, 1)
        # (Inf * 0 is NaN and a sum may overflow, as in torch: no warning)
        with np.errstate(invalid="ignore", over="ignore"):
            t = np.take(xr, wi0, axis=wax)
            t *= ww0.reshape(wshape)
            t1 = np.take(xr, wi1, axis=wax)
            t1 *= ww1.reshape(wshape)
            t += t1
            del t1
            y = np.take(t, hi0, axis=hax)
            y *= hw0.reshape(hshape)
            y1 = np.take(t, hi1, axis=hax)
            y1 *= hw1.reshape(hshape)
            y += y1
        return y

    def _describe(self):
        params = dict(size=self.size, scale_factor=self.scale_factor, mode=self.mode,
                      align_corners=self.align_corners, layout=self.layout)
        return params, {}

    def __repr__(self) -> str:
        what = (f"size={self.size}" if self.size is not None
                else f"scale_factor={self.scale_factor}")
        corners = "" if self.mode == "nearest" else f", align_corners={self.align_corners}"
        named = "" if self.name is None else f", name={self.name!r}"
        return (f"Upsample({what}, mode={self.mode!r}{corners}, layout={self.layout!r}"
                f"{named})")
