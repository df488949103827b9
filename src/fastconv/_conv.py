"""conv2d and matmul: argument handling, layouts, and the choice of kernel.

The same steps serve the functions here and the packed layers in _layers.py:
ConvWeights checks and packs the weights, ConvWeights.plan checks an input
shape and the options against them, and ConvWeights.execute runs the
kernels.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np

from fastconv import _core
from fastconv._config import get_flush_denormals, get_winograd, resolve_threads
from fastconv._validate import (activation_is_relu, check_bias, check_nbytes, check_ndim,
                                check_out, float_arrays, int_pair, layout_name,
                                padding_amounts, positive_int)

__all__ = ["conv2d", "matmul"]

# matmul reads b in place, without packing it, below this many rows of a.
DIRECT_GEMM_MAX_ROWS = 512
# Up to this many rows (one pass of the dense kernel over the weights), a
# dense layer, and a convolution whose kernel covers its whole input, stream
# their weights in place through the dense kernel: they are bound by memory
# bandwidth (batch-1 fully-connected layers).
DENSE_MAX_ROWS = 8

# Winograd F(2x2, 3x3) (see get_winograd) for 3x3 convolutions with at least
# this many input and output channels (measured at 1 thread, 64 -> 64 on
# 224x224: 0.98x the direct kernel, the transforms' memory traffic eating the
# gain; 128 -> 128 on 112x112: 1.3x; 512 -> 512 on 28x28: 1.85x) and at least
# WINOGRAD_MIN_MACS multiply-adds of the direct convolution per image (about
# 0.3 ms: each call also runs 16 GEMMs and two transforms from Python; per
# image, so that an image's result does not depend on the batch it comes
# in). The tiles are done in blocks whose transformed inputs (or products)
# take about WINOGRAD_BLOCK_BYTES.
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_MACS = 1 << 24
WINOGRAD_BLOCK_BYTES = 8 << 20
# conv2d's weights serve one call, which also pays for their transform and
# packing (16 C x K matrices, ~30 ms at 512 -> 512 on one thread): it takes
# Winograd only from this many 2x2 tiles per image (28x28x512 -> 512, 196
# tiles, took 50 ms against the direct kernel's 34; 56x56x256 -> 256, 784
# tiles, 25 against 33). A stride-1 layer transforms its weights once, when
# it is built.
WINOGRAD_ONE_CALL_MIN_TILES = 512

# The widest vector of any kernel set, in values (AVX-512, float32): packed
# weights round each group's output channels up to a multiple of the vector.
MAX_VLEN = 16

IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, str, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]]]


def _element_strides(a: np.ndarray) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """(a, its strides in elements), a copied to C order first if some stride
    is not a multiple of the item size."""
    size = a.itemsize
    if any(s % size for s in a.strides):
        a = np.ascontiguousarray(a)
    return a, tuple(s // size for s in a.strides)


def input_array(fn: str, x: Any, dtype: np.dtype) -> np.ndarray:
    """x as an ndarray of `dtype`, the weights' (TypeError otherwise)."""
    _, arr = float_arrays(fn, x=x)
    xa = arr["x"]
    if xa.dtype != dtype:
        raise TypeError(f"{fn}: x and weight must share one dtype; got x {xa.dtype}, "
                        f"weight {dtype}")
    return xa


def _unpacked(p: "_core.Packed", shape: Tuple[int, ...], axes: Tuple[int, ...]) -> np.ndarray:
    """A new C-ordered array of `shape` holding the weights p was packed from;
    axes names its tap row, tap column, input channel and output channel
    axes (as ConvWeights packs them). Not for depthwise taps."""
    if p.direct:  # a GEMM's (C, K) matrix, kept as it was
        return np.array(p.buffer, order="C").reshape(shape)
    w = np.empty(shape, p.buffer.dtype)
    strides = tuple(s // w.itemsize for s in w.strides)
    p.unpack(w, tuple(strides[a] for a in axes))
    return w


class ConvWeights:
    """Checked convolution weights (and bias), packed for the kernels.

    Parameters are those of conv2d; `fn` names the caller in messages.
    """

    def __init__(self, fn: str, weight: Any, bias: Any, groups: Any, layout: Any,
                 nthreads: int, pack_now: bool = True, winograd_now: bool = False) -> None:
        self.fn = fn
        self.layout = layout_name(fn, layout)
        self.dtype, arr = float_arrays(fn, weight=weight, bias=bias)
        w, b = arr["weight"], arr["bias"]
        wdims = ("HWIO (kh, kw, C/groups, K)" if self.layout == "NHWC"
                 else "OIHW (K, C/groups, kh, kw)")
        check_ndim(fn, "weight", w, (4,), f"4-D {wdims}")
        if self.layout == "NHWC":
            self.kh, self.kw, self.cg, self.k = w.shape
            axes = (0, 1, 2, 3)  # tap row, tap column, channel, output
        else:
            self.k, self.cg, self.kh, self.kw = w.shape
            axes = (2, 3, 1, 0)
        self.groups = positive_int(fn, "groups", groups)
        # conv2d's weights serve one call (see WINOGRAD_ONE_CALL_MIN_TILES)
        self._one_call = not pack_now
        if self.k % self.groups:
            raise ValueError(f"{fn}: groups={self.groups} must divide the output channels "
                             f"K={self.k} of weight")
        if self.kh < 1 or self.kw < 1:
            raise ValueError(f"{fn}: weight must have a kernel of at least 1x1; "
                             f"got {self.kh}x{self.kw}")
        check_bias(fn, b, self.k)
        self.c = self.cg * self.groups
        self.has_bias = b is not None
        # Until the weights are packed (at once, or with pack_now=False at the
        # first call that needs it: conv2d's calls whose kernel covers the
        # whole input never do), the checked arrays are kept as given.
        self._w: Optional[np.ndarray] = w
        self._axes = axes
        # A copy: the depthwise kernel reads the bias in place, and a layer
        # must not change when the caller later writes to its arrays.
        self._bias = None if b is None else np.array(b, order="C")
        self._packed: Optional["_core.Packed"] = None
        # Winograd's 16 transformed weight matrices, each packed as a (C, K)
        # GEMM's: None until needed, False if they cannot be used (see
        # _winograd_weights).
        self._winograd: Any = None
        # Once packed: for weights holding Inf or NaN, the packed 0/1 masks of
        # each kind of non-finite value present ("+inf", "-inf", "nan") and
        # the finite stand-in weights ("finite"); empty otherwise (see _run).
        self._nonfinite: Optional[dict] = None
        # A 3x3 kernel Winograd can run (given a stride-1, undilated call)
        self._winograd_kernel = ((self.kh, self.kw, self.groups) == (3, 3, 1)
                                 and min(self.c, self.k) >= WINOGRAD_MIN_CHANNELS)
        if pack_now:
            # A layer that will run Winograd transforms its weights now, from
            # the arrays as given (not at its first call, which would then
            # take several times longer than the next ones).
            if winograd_now and self._winograd_kernel and get_winograd():
                self._winograd_weights(nthreads)
            self._pack(nthreads)

    @property
    def packed(self) -> "_core.Packed":
        """The packed weights (packed now if they were not yet)."""
        if self._packed is None:
            self._pack(resolve_threads(self.fn, None))
        return self._packed

    def weight(self) -> np.ndarray:
        """A new array of the weights as given: HWIO for layout "NHWC", OIHW
        for "NCHW"; once packed, read back from the packed panels (a layer
        keeps no other copy)."""
        if self._w is not None:
            return np.array(self._w, order="C")
        p = self._packed
        if p.depthwise:  # (kh, kw, C) taps
            taps = np.asarray(p.buffer).reshape(self.kh, self.kw, self.c)
            return np.array(taps[:, :, None, :] if self.layout == "NHWC"
                            else taps.transpose(2, 0, 1)[:, None], order="C")
        shape = ((self.kh, self.kw, self.cg, self.k) if self.layout == "NHWC"
                 else (self.k, self.cg, self.kh, self.kw))
        return _unpacked(p, shape, self._axes)

    @property
    def bias(self) -> Optional[np.ndarray]:
        """A new array of the bias (None without one)."""
        return None if self._bias is None else self._bias.copy()

    def _pack(self, nthreads: int, allow_direct: bool = False) -> None:
        """Pack the weights; with allow_direct, a GEMM's C-contiguous (C, K)
        weights (HWIO of a 1x1 kernel) are kept and read in place instead."""
        w = self._w
        kg = self.k // self.groups
        check_nbytes(self.fn, "weight, packed for the kernels (each group's K/groups outputs "
                     f"rounded up to {MAX_VLEN}, and a row for the bias),",
                     (self.groups, -(-kg // MAX_VLEN) * MAX_VLEN,
                      self.kh * self.kw * self.cg + 1), self.dtype.itemsize,
                     f"weight of shape {w.shape} is too large")
        self._nonfinite = {}
        if not np.isfinite(w).all():
            # Inf or NaN weights (see _run): the kernels also get w with
            # +-Inf as +-1 and NaN as 0 ("finite"), and 0/1 masks of where
            # each kind of non-finite value is, to count the non-finite
            # products of each output. self._packed keeps w as given.
            self._nonfinite = {
                kind: self._packed_weights(mask.astype(self.dtype), self._axes, None, nthreads)
                for kind, mask in (("+inf", w == np.inf), ("-inf", w == -np.inf),
                                   ("nan", np.isnan(w))) if mask.any()}
            finite = np.where(np.isnan(w), 0, np.where(np.isinf(w), np.sign(w), w))
            self._nonfinite["finite"] = self._packed_weights(finite.astype(self.dtype),
                                                             self._axes, self._bias, nthreads)
        self._packed = self._packed_weights(w, self._axes, self._bias, nthreads,
                                            allow_direct and not self._nonfinite)
        self._w = None

    def _packed_weights(self, w: np.ndarray, axes: Tuple[int, ...], bias: Optional[np.ndarray],
                        nthreads: int, allow_direct: bool = False) -> "_core.Packed":
        if self.groups > 1 and self.groups == self.c == self.k:
            # Depthwise, multiplier 1: its own kernel reads (kh, kw, C) taps.
            # (A copy, read in place by the kernel: see self._bias.)
            taps = w[:, :, 0, :] if self.layout == "NHWC" else w[:, 0].transpose(1, 2, 0)
            return _core.pack(self.dtype.name, self.c, self.k, self.groups, self.kh, self.kw,
                              np.array(taps, order="C"), (), bias, True, nthreads)
        w, strides = _element_strides(w)
        return _core.pack(self.dtype.name, self.c, self.k, self.groups, self.kh, self.kw,
                          w, tuple(strides[a] for a in axes), bias, False, nthreads,
                          allow_direct)

    def plan(self, shape: Tuple[int, ...], stride: Any, padding: Any, dilation: Any,
             activation: Any) -> "ConvPlan":
        """Check an input of this shape and the options against the weights."""
        fn = self.fn
        dims = "(N, H, W, C)" if self.layout == "NHWC" else "(N, C, H, W)"
        if len(shape) not in (3, 4):
            raise ValueError(f"{fn}: x must be 4-D {dims} or 3-D without the batch axis; "
                             f"got {len(shape)}-D array of shape {shape}")
        unbatched = len(shape) == 3
        shape4 = (1,) + tuple(shape) if unbatched else tuple(shape)
        if self.layout == "NHWC":
            N, H, W, C = shape4
        else:
            N, C, H, W = shape4
        groups = self.groups
        if C % groups:
            raise ValueError(f"{fn}: groups={groups} must divide the input channels C={C}")
        if C != self.c:
            raise ValueError(f"{fn}: weight has {self.cg} input channels per group; x has "
                             f"C={C} channels and groups={groups}, so expected {C // groups}")
        kh, kw = self.kh, self.kw
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
        K = self.k
        # Sizes the kernels compute in int64_t (every index and offset lies
        # within these two arrays' extents).
        check_nbytes(fn, "the zero-padded input (N, H + padding, W + padding, C)",
                     (N, H + pt + pb, W + pl + pr, C), self.dtype.itemsize,
                     f"x of shape {tuple(shape)} with padding (({pt}, {pb}), ({pl}, {pr})) "
                     f"is too large")
        check_nbytes(fn, "the result (N, Ho, Wo, K)", (N, Ho, Wo, K), self.dtype.itemsize,
                     f"x of shape {tuple(shape)} and weight with K={K} give too large a result")
        flush = get_flush_denormals()
        args = (self.dtype.name, N, H, W, C, K, groups, kh, kw, sh, sw, dh, dw, pt, pl, Ho, Wo)
        geom = _core.Geometry(*args, relu, self.has_bias, flush)
        result = (N, Ho, Wo, K) if self.layout == "NHWC" else (N, K, Ho, Wo)
        # One output pixel from an undilated kernel: a dense layer on the
        # (zero-padded) input window at (-pt, -pl), with the kernel as its
        # matrix (the fully-connected layer written as a convolution).
        window = None
        if Ho == Wo == 1 and groups == 1 and dh == dw == 1 and N <= DENSE_MAX_ROWS:
            window = (pt, pl)
        # A GEMM over few pixels (ResNet's last 1x1 layers at 7x7): weights
        # not yet packed may be read in place, as matmul does below
        # DIRECT_GEMM_MAX_ROWS rows, packing them would cost more than it saves.
        gemm_in_place = (kh == kw == 1 and groups == 1 and (sh, sw, pt, pb, pl, pr) ==
                         (1, 1, 0, 0, 0, 0) and N * H * W < DIRECT_GEMM_MAX_ROWS)
        winograd = (get_winograd() and self._winograd_kernel and (sh, sw, dh, dw) == (1, 1, 1, 1)
                    and Ho * Wo * C * K * 9 >= WINOGRAD_MIN_MACS
                    and (not self._one_call or
                         -(-Ho // 2) * -(-Wo // 2) >= WINOGRAD_ONE_CALL_MIN_TILES))
        return ConvPlan(geom, args, (N, Ho, Wo, K), result[1:] if unbatched else result,
                        relu, flush, any((pt, pb, pl, pr)), window, gemm_in_place, winograd)

    def execute(self, plan: "ConvPlan", xa: np.ndarray, out: Optional[np.ndarray],
                nthreads: int) -> np.ndarray:
        """Run a plan on xa (checked to have the plan's shape and the dtype)."""
        if plan.window is not None and self._w is not None and not (
                plan.padded and not np.isfinite(self._w).all()):  # see _run
            return self._execute_dense(plan, xa, out, nthreads)
        # The kernels work in NHWC; an NCHW input is transposed once on the
        # way in and the result once on the way out.
        if self.layout == "NHWC":
            y = out if out is not None else np.empty(plan.result, self.dtype)
            self._run(plan, np.ascontiguousarray(xa), y, nthreads)
            return y
        x4 = xa.reshape((1,) + xa.shape) if xa.ndim == 3 else xa
        y = np.empty(plan.nhwc, self.dtype)
        self._run(plan, np.ascontiguousarray(x4.transpose(0, 2, 3, 1)), y, nthreads)
        y = y.transpose(0, 3, 1, 2).reshape(plan.result)
        if out is not None:
            np.copyto(out, y)
            return out
        return np.ascontiguousarray(y)

    def _run(self, plan: "ConvPlan", x: np.ndarray, y: np.ndarray, nthreads: int) -> None:
        """y = the convolution of x (both contiguous NHWC, of the plan's shapes).

        A tap in the padding adds nothing to an output (as if it were not
        there), so an Inf or NaN weight reaches exactly the outputs that see
        it at a tap inside the image. The kernels instead multiply padding
        taps by zeros, and 0 * Inf is NaN; that changes nothing for finite
        weights, so only weights holding Inf or NaN take this longer way:
        the kernels run on the weights with +-Inf as +-1 and NaN as 0 (the
        Inf and NaN inputs then meet them with the right sign), and each
        output then adds the IEEE sum of its non-finite products at taps
        inside the image: NaN if one is NaN (Inf times 0 or NaN, NaN times
        anything) or both signs of Inf occur, else that Inf. Which kinds
        occur is counted by the kernels themselves, on 0/1 masks of the
        input and of the weights, whose padding does add nothing.
        """
        if plan.winograd and self._run_winograd(plan, x, y, nthreads):
            return
        if self._packed is None:  # conv2d's call: see plan.gemm_in_place
            self._pack(nthreads, allow_direct=plan.gemm_in_place)
        packed = self._packed  # (packing sets self._nonfinite)
        if not self._nonfinite:
            plan.geometry.run(x, packed, y, nthreads)
            return
        _core.Geometry(*plan.args, False, self.has_bias, plan.flush).run(
            x, self._nonfinite["finite"], y, nthreads)
        counting = _core.Geometry(*plan.args, False, False, False)

        def meets(x_mask: np.ndarray, kind: str) -> np.ndarray:
            """Outputs where an input in x_mask meets a weight of this kind."""
            if kind not in self._nonfinite:
                return np.zeros(y.shape, bool)
            counts = np.empty(y.shape, self.dtype)
            counting.run(x_mask.astype(self.dtype), self._nonfinite[kind], counts, nthreads)
            return counts > 0

        positive, negative = x > 0, x < 0
        zero_or_nan = ~(positive | negative)
        plus = meets(positive, "+inf") | meets(negative, "-inf")
        minus = meets(negative, "+inf") | meets(positive, "-inf")
        nan = (meets(zero_or_nan, "+inf") | meets(zero_or_nan, "-inf")
               | meets(np.ones_like(positive), "nan") | (plus & minus))
        with np.errstate(invalid="ignore"):  # Inf - Inf where both meet: set to NaN next
            np.add(y, np.inf, out=y, where=plus)
            np.add(y, -np.inf, out=y, where=minus)
        y[nan] = np.nan
        if plan.relu:
            y[y < 0] = 0  # as the kernels' ReLU: NaN and -0.0 stay

    def _winograd_weights(self, nthreads: int) -> Optional[list]:
        """The 16 packed (C, K) matrices of U = G g G^T (computed in double
        from the weights as given, then rounded once), or None for weights
        holding Inf or NaN, or large enough (above the dtype's largest value
        / 2.25, the most G g G^T can grow) that U might overflow."""
        if self._winograd is None:
            w = self._w if self._w is not None else self.weight()
            limit = np.finfo(self.dtype).max / 2.25
            # (NaN fails both comparisons)
            packed: Any = False
            if np.max(w) <= limit and np.min(w) >= -limit:
                w, strides = _element_strides(w)
                u = np.empty((16, self.c, self.k), self.dtype)
                _core.wino_weights(self.dtype.name, self.c, self.k, w,
                                   tuple(strides[a] for a in self._axes), u, nthreads)
                packed = [_core.pack(self.dtype.name, self.c, self.k, 1, 1, 1, ui,
                                     (0, 0, self.k, 1), None, False, nthreads) for ui in u]
            self._winograd = packed  # in one step: other threads may be calling
        return self._winograd or None

    def _run_winograd(self, plan: "ConvPlan", x: np.ndarray, y: np.ndarray,
                      nthreads: int) -> bool:
        """y = the convolution of x through Winograd F(2x2, 3x3): for each
        block of 2x2 output tiles, the 16 transformed input patches (V),
        16 GEMMs V[i] @ U[i] (the packed GEMM kernel), and the output
        transform with bias and ReLU. False, with y to be rewritten, when the
        weights or x hold Inf or NaN (the transforms mix the values of a tile,
        so one of them would reach outputs that do not see it) or a
        transformed value or an output overflows (where the direct
        convolution, summing in another order, may not, or may give Inf where
        this gives Inf - Inf)."""
        u = self._winograd_weights(nthreads)
        if u is None:
            return False
        geometry, C, K = plan.geometry, self.c, self.k
        tiles = geometry.tiles()
        block = max(1, min(tiles, WINOGRAD_BLOCK_BYTES // (16 * max(C, K) * self.dtype.itemsize)))
        for t0 in range(0, tiles, block):
            n = min(block, tiles - t0)
            v = np.empty((16, n, C), self.dtype)
            if not geometry.wino_input(x, t0, t0 + n, v, nthreads):
                return False
            m = np.empty((16, n, K), self.dtype)
            # (the n transformed patches as the pixels of a 1 x n image)
            gemm = _core.Geometry(self.dtype.name, 1, 1, n, C, K, 1, 1, 1, 1, 1, 1, 1, 0, 0,
                                  1, n, False, False, plan.flush)
            for i in range(16):
                gemm.run(v[i], u[i], m[i], nthreads)
            if not geometry.wino_output(m, t0, t0 + n, self._bias, y, nthreads):
                return False
        return True

    def _execute_dense(self, plan: "ConvPlan", xa: np.ndarray, out: Optional[np.ndarray],
                       nthreads: int) -> np.ndarray:
        """A one-pixel result through the dense kernel, the weights read in
        place: HWIO as a (kh*kw*C, K) matrix against the NHWC window, OIHW as
        (K, C*kh*kw) against the NCHW one. No transposes, no packing."""
        nchw = self.layout == "NCHW"
        x4 = xa.reshape((1,) + xa.shape) if xa.ndim == 3 else xa
        N = x4.shape[0]
        H, W = x4.shape[2:] if nchw else x4.shape[1:3]
        pt, pl = plan.window
        kh, kw = self.kh, self.kw
        # Rows -pt .. kh-pt-1 and columns -pl .. kw-pl-1 of x: inside x, or
        # padding zeros.
        if (pt, pl) == (0, 0) and (H, W) == (kh, kw):
            window = x4
        else:
            rows = slice(max(0, -pt), min(H, kh - pt))
            cols = slice(max(0, -pl), min(W, kw - pl))
            to_rows = slice(rows.start + pt, rows.stop + pt)
            to_cols = slice(cols.start + pl, cols.stop + pl)
            if nchw:
                window = np.zeros((N, self.c, kh, kw), self.dtype)
                window[:, :, to_rows, to_cols] = x4[:, :, rows, cols]
            else:
                window = np.zeros((N, kh, kw, self.c), self.dtype)
                window[:, to_rows, to_cols] = x4[:, rows, cols]
        y = out if out is not None else np.empty(plan.result, self.dtype)
        w = np.ascontiguousarray(self._w)
        _core.dense(np.ascontiguousarray(window).reshape(N, -1),
                    w.reshape(self.k, -1) if nchw else w.reshape(-1, self.k), nchw,
                    self._bias, y.reshape(N, self.k), plan.relu, plan.flush, nthreads)
        return y

    def run(self, x: Any, *, stride: Any, padding: Any, dilation: Any, activation: Any,
            out: Any, num_threads: Any, originals: dict) -> np.ndarray:
        """Convolve x with these weights (every check on x and the options
        first). `originals` are the caller's arrays, for the overlap check."""
        xa = input_array(self.fn, x, self.dtype)
        plan = self.plan(xa.shape, stride, padding, dilation, activation)
        nthreads = resolve_threads(self.fn, num_threads)
        out = check_out(self.fn, out, plan.result, self.dtype, originals)
        return self.execute(plan, xa, out, nthreads)


class ConvPlan:
    """A checked convolution for one input shape: the kernel geometry and the
    arguments it was made from (dtype and sizes, before relu, has_bias and
    flush), the NHWC shape the kernels write, the shape returned to the
    caller, relu and flush as the geometry has them, whether it pads; for a
    one-pixel result that a dense layer can compute, the window's offset
    (pad_top, pad_left), else None; whether the weights of this GEMM may be
    read in place; and whether it may run as Winograd F(2x2, 3x3)."""
    __slots__ = ("geometry", "args", "nhwc", "result", "relu", "flush", "padded", "window",
                 "gemm_in_place", "winograd")

    def __init__(self, geometry: "_core.Geometry", args: tuple, nhwc: Tuple[int, ...],
                 result: Tuple[int, ...], relu: bool, flush: bool, padded: bool,
                 window: Optional[Tuple[int, int]], gemm_in_place: bool,
                 winograd: bool) -> None:
        self.geometry, self.args, self.nhwc, self.result = geometry, args, nhwc, result
        self.relu, self.flush, self.padded = relu, flush, padded
        self.window, self.gemm_in_place, self.winograd = window, gemm_in_place, winograd


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
        the total is odd the extra row/column goes at the bottom/right. A
        tap in the padding adds no term (so an Inf or NaN weight never
        reaches an output through the padding, while 0 * Inf inside the
        image is NaN).
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
    The weights are packed on every call; fastconv.Conv2d packs them once.
    A result of one pixel per image from an undilated kernel (a
    fully-connected layer written as a convolution: VGG's fc6 as a 7x7
    kernel on a 7x7 map) at batch <= 8 reads the weights in place as one
    matrix instead, with no packing, at the speed of memory.
    A 1x1, stride 1, unpadded convolution runs as a GEMM over the pixels;
    a 3x3, stride 1 one with at least 128 input and output channels, over
    at least 512 tiles of 2x2 outputs per image, runs as Winograd F(2x2,
    3x3) (see fastconv.get_winograd; fastconv.Conv2d, which transforms its
    weights once, does so over fewer tiles too); other kernels run
    as an indirect convolution with no im2col buffer; a depthwise one
    (groups == C == K) has its own kernel. The GIL is released while the
    kernels run.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 4, 4, 3), np.float32)
    >>> w = np.array([[0, 2], [1, 3], [1, 5]], np.float32).reshape(1, 1, 3, 2)
    >>> fastconv.conv2d(x, w, np.array([8, 13], np.float32), activation="relu")[0, 0, 0]
    array([10., 23.], dtype=float32)
    """
    fn = "conv2d"
    layout_name(fn, layout)
    # One dtype check over all three, so a mismatch names every dtype seen;
    # the converted arrays go on (converted once).
    _, arr = float_arrays(fn, x=x, weight=weight, bias=bias)
    weights = ConvWeights(fn, arr["weight"], arr["bias"], groups, layout,
                          resolve_threads(fn, num_threads), pack_now=False)
    return weights.run(arr["x"], stride=stride, padding=padding, dilation=dilation,
                       activation=activation, out=out, num_threads=num_threads,
                       originals={"x": (x, arr["x"]), "weight": (weight, arr["weight"]),
                                  "bias": (bias, arr["bias"])})


class GemmWeights:
    """The b operand of a GEMM (and its bias), packed once: a (M, K) @ b (K, N)
    is the 1x1 convolution of an (M, 1) image with K channels."""

    def __init__(self, fn: str, b: np.ndarray, bias: Optional[np.ndarray],
                 nthreads: int, allow_direct: bool = False, name: str = "b") -> None:
        self.fn = fn
        self.dtype = b.dtype
        self.k, self.n = b.shape
        check_bias(fn, bias, self.n)
        self.has_bias = bias is not None
        check_nbytes(fn, f"{name}, packed for the kernels ({self.n} outputs rounded up to "
                     f"{MAX_VLEN}, and a row for the bias),",
                     (-(-self.n // MAX_VLEN) * MAX_VLEN, self.k + 1), self.dtype.itemsize,
                     f"{name} with {self.k} inputs and {self.n} outputs is too large")
        b, strides = _element_strides(b)
        self._bias = None if bias is None else np.array(bias, order="C")
        self.packed = _core.pack(self.dtype.name, self.k, self.n, 1, 1, 1, b,
                                 (0, 0, strides[0], strides[1]), self._bias, False,
                                 nthreads, allow_direct)

    def weight(self) -> np.ndarray:
        """A new (K, N) array of b, read back from the packed panels."""
        b = _unpacked(self.packed, (1, 1, self.k, self.n), (0, 1, 2, 3))  # a 1x1 kernel
        return b.reshape(self.k, self.n)

    @property
    def bias(self) -> Optional[np.ndarray]:
        """A new array of the bias (None without one)."""
        return None if self._bias is None else self._bias.copy()

    def run(self, a: np.ndarray, relu: bool, out: Optional[np.ndarray], nthreads: int
            ) -> np.ndarray:
        """a (M, K), already checked, @ the packed b, into out or a new array."""
        M = a.shape[0]
        y = out if out is not None else np.empty((M, self.n), self.dtype)
        geom = _core.Geometry(self.dtype.name, 1, M, 1, self.k, self.n, 1, 1, 1, 1, 1, 1, 1,
                              0, 0, M, 1, relu, self.has_bias, get_flush_denormals())
        geom.run(np.ascontiguousarray(a), self.packed, y, nthreads)
        return y


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
    relu = activation_is_relu(fn, activation)
    check_bias(fn, bias_a, ba.shape[1])
    nthreads = resolve_threads(fn, num_threads)
    out = check_out(fn, out, (M, ba.shape[1]), dtype,
                    {"a": (a, aa), "b": (b, ba), "bias": (bias, bias_a)})
    # A few rows (a batch-1 dense layer): b streamed once, in place, in its
    # own orientation (C order, or F order as b = W.T of PyTorch's weights).
    if M <= DENSE_MAX_ROWS and (ba.flags.c_contiguous or ba.flags.f_contiguous):
        w_out_in = not ba.flags.c_contiguous
        y = out if out is not None else np.empty((M, ba.shape[1]), dtype)
        _core.dense(np.ascontiguousarray(aa), ba.T if w_out_in else ba, w_out_in,
                    None if bias_a is None else np.ascontiguousarray(bias_a), y, relu,
                    get_flush_denormals(), nthreads)
        return y
    # With few rows, packing b would cost more than reading it in place saves
    # (measured, 1 thread: 49x2048x512 66 -> 86 GFLOP/s read in place, while
    # 1024^3 drops 100 -> 93 and 2048^3 99 -> 75 as the strided rows of b
    # are read again for every block of rows).
    direct = M < DIRECT_GEMM_MAX_ROWS
    return GemmWeights(fn, ba, bias_a, nthreads, allow_direct=direct).run(aa, relu, out, nthreads)
