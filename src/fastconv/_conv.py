"""conv2d and matmul: argument handling, layouts, and the C operators.

The same steps serve the functions here and the packed layers of
fastconv.nn: ConvWeights checks the weights and makes the operator
(csrc/operators/convolution.c) that chooses the algorithm and prepares the
weights, ConvWeights.plan checks an input shape and the options against
them, and ConvWeights.execute runs the operator. No kernel constant, tile
arithmetic or loop over kernels lives here: the operator decides.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np

from fastconv import _core
from fastconv._config import get_flush_denormals, get_winograd, resolve_threads
from fastconv._prepared import prepared
from fastconv._validate import (activation_spec, check_bias, check_nbytes,
                                check_ndim, check_out, float_arrays, int_pair, layout_name,
                                padding_amounts, positive_int)

__all__ = ["conv2d", "matmul"]

IntPair = Union[int, Tuple[int, int]]
Padding = Union[int, str, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]]]

# The names of the algorithms a convolution may run (and "auto": let the
# operator choose), as the operators report them.
ALGORITHMS = tuple(_core.algorithm_names())


def _op_weights(a: np.ndarray) -> np.ndarray:
    """a, copied to C order first if the operator cannot address it in place
    (unaligned, or a stride that is not a multiple of the item size)."""
    if not a.flags.aligned or any(s % a.itemsize for s in a.strides):
        return np.ascontiguousarray(a)
    return a


def input_array(fn: str, x: Any, dtype: np.dtype) -> np.ndarray:
    """x as an ndarray of `dtype`, the weights' (TypeError otherwise)."""
    _, arr = float_arrays(fn, x=x)
    xa = arr["x"]
    if xa.dtype != dtype:
        raise TypeError(f"{fn}: x and weight must share one dtype; got x {xa.dtype}, "
                        f"weight {dtype}")
    return xa


def _operator(fn: str, what: str, w: np.ndarray, axes: Tuple[int, ...], groups: int,
              bias: Optional[np.ndarray], stride: Tuple[int, int], dilation: Tuple[int, int],
              one_call: bool, no_winograd: bool, winograd_now: bool,
              nthreads: int, transposed: bool = False) -> "_core.ConvOp":
    """The C operator for these weights (see _core.ConvOp), its size errors
    turned into ValueErrors that name the weights (`what` describes them)."""
    try:
        return _core.ConvOp(_op_weights(w), axes, groups, bias, stride, dilation, one_call,
                            no_winograd, winograd_now, nthreads, transposed)
    except OverflowError:
        raise ValueError(f"{fn}: {what} with groups={groups}, packed for the kernels (each "
                         f"group's outputs rounded up to whole vectors, and a row for the bias), "
                         f"would take more than 2**63 - 1 bytes, the largest 64-bit size; it "
                         f"is too large") from None


class ConvWeights:
    """Checked convolution weights (and bias) and their C operator.

    Parameters are those of conv2d; `fn` names the caller in messages. With
    pack_now=False (the conv2d function) the weights serve one call: the
    operator reads them in place where its algorithm can, and packs them
    only if the call needs it. Otherwise (a layer) the operator packs them
    now, and with winograd_now transforms them for Winograd too, where the
    switch allows and the kernel is one Winograd can run.
    """

    def __init__(self, fn: str, weight: Any, bias: Any, groups: Any, layout: Any,
                 nthreads: int, pack_now: bool = True, winograd_now: bool = False,
                 stride: Tuple[int, int] = (1, 1), dilation: Tuple[int, int] = (1, 1)) -> None:
        self.fn = fn
        self.layout = layout_name(fn, layout)
        self.dtype, arr = float_arrays(fn, weight=weight, bias=bias)
        w, b = arr["weight"], arr["bias"]
        check_ndim(fn, "weight", w, (4,), f"4-D {self._weight_dims()}")
        self.groups = positive_int(fn, "groups", groups)
        w = self._kernel(w)
        if self.kh < 1 or self.kw < 1:
            raise ValueError(f"{fn}: weight must have a kernel of at least 1x1; "
                             f"got {self.kh}x{self.kw}")
        check_bias(fn, b, self.k)
        self.c = self.cg * self.groups
        self.has_bias = b is not None
        self.stride, self.dilation = stride, dilation
        self._one_call = not pack_now
        # A copy: an operator keeps its own, and a layer must not change
        # when the caller later writes to its arrays.
        self._bias = None if b is None else np.array(b, order="C")
        # The conv2d function's weights, kept as given (its operator reads
        # them in place); a layer keeps only its operator's packed copy.
        self._w: Optional[np.ndarray] = w if self._one_call else None
        self._op: Optional["_core.ConvOp"] = None
        # Weights holding Inf or NaN: operators on finite stand-ins and on
        # 0/1 masks of each kind of non-finite value present (see _run);
        # empty otherwise.
        self._nonfinite: dict = {}
        self._nthreads = nthreads
        self._plans: dict = {}
        if not self._one_call:
            self._make_operators(w, winograd_now and get_winograd())

    # A transposed convolution's weights (TransposedWeights) are the same
    # operators' on its equivalent direct kernel.
    transposed = False

    def _weight_dims(self) -> str:
        return ("HWIO (kh, kw, C/groups, K)" if self.layout == "NHWC"
                else "OIHW (K, C/groups, kh, kw)")

    def _kernel(self, w: np.ndarray) -> np.ndarray:
        """Sets kh, kw, cg (input channels per group), k and the axes of w
        the operator reads (tap row, tap column, channel, output) from the
        weight w as given; returns the array the operator reads."""
        if self.layout == "NHWC":
            self.kh, self.kw, self.cg, self.k = w.shape
            self._axes = (0, 1, 2, 3)
        else:
            self.k, self.cg, self.kh, self.kw = w.shape
            self._axes = (2, 3, 1, 0)
        if self.k % self.groups:
            raise ValueError(f"{self.fn}: groups={self.groups} must divide the output channels "
                             f"K={self.k} of weight")
        return w

    def _make_operators(self, w: np.ndarray, winograd_now: bool) -> None:
        """The operator of the weights, and those of the non-finite path.
        The conv2d function makes them only once the call's shapes are
        checked (an input error comes first, and the weights are not
        scanned before their operator knows their sizes fit)."""
        nthreads = self._nthreads
        op = self._make_operator(w, self._bias, no_winograd=False, winograd_now=winograd_now,
                                 nthreads=nthreads)
        if not np.isfinite(w).all():
            masks = {kind: mask for kind, mask in (("+inf", w == np.inf), ("-inf", w == -np.inf),
                                                   ("nan", np.isnan(w))) if mask.any()}
            self._nonfinite = {kind: self._make_operator(mask.astype(self.dtype), None, True,
                                                         False, nthreads)
                               for kind, mask in masks.items()}
            finite = np.where(np.isnan(w), 0, np.where(np.isinf(w), np.sign(w), w))
            self._nonfinite["finite"] = self._make_operator(finite.astype(self.dtype),
                                                            self._bias, True, False, nthreads)
        self._op = op

    def _make_operator(self, w: np.ndarray, bias: Optional[np.ndarray], no_winograd: bool,
                       winograd_now: bool, nthreads: int) -> "_core.ConvOp":
        return _operator(self.fn, f"weight of shape {w.shape}", w, self._axes, self.groups,
                         bias, self.stride, self.dilation, self._one_call, no_winograd,
                         winograd_now, nthreads, self.transposed)

    @property
    def algorithm(self) -> str:
        """The algorithm a layer prepared its weights for:
        "winograd-f2x2-3x3", "winograd-f4x4-3x3", "gemm", "igemm" or "depthwise"."""
        return self._op.algorithm

    @property
    def isa(self) -> str:
        """The instruction set whose kernels a layer's operator runs."""
        return self._op.isa

    def weight(self) -> np.ndarray:
        """A new array of the weights as given: HWIO for layout "NHWC", OIHW
        for "NCHW"; a layer's are read back from its packed weights (it keeps
        no other copy)."""
        if self._w is not None:
            return np.array(self._w, order="C")
        shape = ((self.kh, self.kw, self.cg, self.k) if self.layout == "NHWC"
                 else (self.k, self.cg, self.kh, self.kw))
        w = np.empty(shape, self.dtype)
        self._op.unpack(w, self._axes)
        return w

    @property
    def bias(self) -> Optional[np.ndarray]:
        """A new array of the bias (None without one)."""
        return None if self._bias is None else self._bias.copy()

    def _geometry(self, shape: Tuple[int, ...], N: int, H: int, W: int, C: int,
                  padding: Any) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """The padding before the first row and column and the result's
        height and width for an input (N, H, W, C) (`shape` as given),
        checked."""
        fn, kh, kw = self.fn, self.kh, self.kw
        (sh, sw), (dh, dw) = self.stride, self.dilation
        (pt, pb), (pl, pr) = padding_amounts(fn, padding, (H, W), (kh, kw), (sh, sw), (dh, dw))
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if H + pt + pb < span_h or W + pl + pr < span_w:
            raise ValueError(
                f"{fn}: the kernel ({kh}x{kw}, dilation {dh}x{dw}, spanning {span_h}x{span_w}) "
                f"is larger than the padded input ({H + pt + pb}x{W + pl + pr}); the result "
                f"would be empty")
        # Sizes the kernels compute in int64_t (every index and offset lies
        # within the padded input's and the result's extents).
        check_nbytes(fn, "the zero-padded input (N, H + padding, W + padding, C)",
                     (N, H + pt + pb, W + pl + pr, C), self.dtype.itemsize,
                     f"x of shape {tuple(shape)} with padding (({pt}, {pb}), ({pl}, {pr})) "
                     f"is too large")
        return (pt, pl), ((H + pt + pb - span_h) // sh + 1, (W + pl + pr - span_w) // sw + 1)

    def plan(self, shape: Tuple[int, ...], padding: Any, activation: Any,
             algorithm: str = "auto", **options: Any) -> "ConvPlan":
        """Check an input of this shape and the options against the weights
        (and their stride and dilation). `algorithm` forces one (see
        ALGORITHMS; a ValueError where it cannot run this call); `options`
        go to _geometry (a transposed convolution's output_padding and
        output_size)."""
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
            message = (f"{fn}: x has C={C} channels, but the weight has {self.cg} input "
                       f"channels per group (groups={groups}, so x needs {self.c})")
            # the likely mistake: x in the other layout (its other channel axis fits)
            other, axis, fix = (("NCHW", 1, "x.transpose(0, 2, 3, 1)") if self.layout == "NHWC"
                                else ("NHWC", 3, "x.transpose(0, 3, 1, 2)"))
            if shape4[axis] == self.c:
                message += (f". x of shape {tuple(shape)} looks {other} (axis {axis} has "
                            f"{self.c}): this is {self.layout}, so pass {fix}, or "
                            f"layout={other!r} with the weight in {other}'s layout")
            elif groups == 1 and not self.transposed:
                # or the weight in the other layout's order (its other
                # input-channel axis fits x)
                given, fits, wfix, wother = (
                    ((self.kh, self.kw, self.cg, self.k), self.kw, "weight.transpose(2, 3, 1, 0)",
                     "OIHW") if self.layout == "NHWC" else
                    ((self.k, self.cg, self.kh, self.kw), self.kh, "weight.transpose(3, 2, 0, 1)",
                     "HWIO"))
                if fits == C:
                    message += (f". The weight of shape {given} looks {wother} (its axis "
                                f"{1 if wother == 'OIHW' else 2} has {C}, x's channels): "
                                f"layout={self.layout!r} takes weights {self._weight_dims()}, "
                                f"so pass {wfix}")
            raise ValueError(message)
        kh, kw = self.kh, self.kw
        (sh, sw), (dh, dw) = self.stride, self.dilation
        (pt, pl), (Ho, Wo) = self._geometry(shape, N, H, W, C, padding, **options)
        act = activation_spec(fn, activation)
        K = self.k
        check_nbytes(fn, "the result (N, Ho, Wo, K)", (N, Ho, Wo, K), self.dtype.itemsize,
                     f"x of shape {tuple(shape)} and weight with K={K} give too large a result")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"{fn}: algorithm must be one of {list(ALGORITHMS)}; "
                             f"got {algorithm!r}")
        sizes = (N, H, W, C, K, pt, pl, Ho, Wo, (kh, kw), (sh, sw), (dh, dw))
        flush = get_flush_denormals()
        call = _core.ConvCall(*sizes, act, flush, get_winograd(), algorithm,
                              self.dtype.itemsize, self.transposed)
        if self._op is None:
            self._make_operators(self._w, False)
        # (weights holding Inf or NaN run their finite stand-ins: see _run)
        op = self._nonfinite.get("finite", self._op)
        try:
            name, macs, direct_macs = op.plan(call)
        except ValueError:
            raise ValueError(f"{fn}: algorithm {algorithm!r} cannot run this convolution "
                             f"(x of shape {tuple(shape)}, a {kh}x{kw} kernel, stride "
                             f"{(sh, sw)}, dilation {(dh, dw)}, groups {groups})") from None
        result = (N, Ho, Wo, K) if self.layout == "NHWC" else (N, K, Ho, Wo)
        return ConvPlan(call, sizes, (N, Ho, Wo, K), result[1:] if unbatched else result,
                        act, flush, name, macs, direct_macs)

    def cached_plan(self, shape: Tuple[int, ...], padding: Any, activation: Any,
                    algorithm: str = "auto", **options: Any) -> "ConvPlan":
        """plan(), kept per input shape, options and setting (at most
        PLAN_CACHE_SIZE: a network or a loop of calls sees few shapes).
        Options are keyed with their types (1 == True == 1.0 as keys, not as
        options); an option of another type (a numpy integer, say) is planned
        anew at every call."""
        try:
            key = (tuple(shape), _typed(padding), _typed(activation), algorithm,
                   _typed(tuple(options.values())), get_flush_denormals(), get_winograd())
        except TypeError:
            return self.plan(shape, padding, activation, algorithm, **options)
        plan = self._plans.get(key)
        if plan is None:
            plan = self.plan(shape, padding, activation, algorithm, **options)
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def execute(self, plan: "ConvPlan", xa: np.ndarray, out: Optional[np.ndarray],
                nthreads: int, residual: Optional[np.ndarray] = None) -> np.ndarray:
        """Run a plan on xa (checked to have the plan's shape and the dtype),
        adding residual (an array of the result's shape and dtype, or None)
        in the store, before the activation."""
        return self.execute_algorithm(plan, xa, out, nthreads, residual)[0]

    def execute_algorithm(self, plan: "ConvPlan", xa: np.ndarray, out: Optional[np.ndarray],
                          nthreads: int, residual: Optional[np.ndarray] = None
                          ) -> Tuple[np.ndarray, str]:
        """execute, and the name of the algorithm that computed the result."""
        # The operators work in NHWC; an NCHW input is transposed once on the
        # way in and the result once on the way out.
        if self.layout == "NHWC":
            y = out if out is not None else np.empty(plan.result, self.dtype)
            if residual is not None:
                residual = np.ascontiguousarray(residual).reshape(plan.nhwc)
                if np.shares_memory(residual, y):
                    residual = residual.copy()
            ran = self._run(plan, np.ascontiguousarray(xa), y, nthreads, residual)
            return y, ran
        x4 = xa.reshape((1,) + xa.shape) if xa.ndim == 3 else xa
        y = np.empty(plan.nhwc, self.dtype)
        if residual is not None:
            r4 = residual.reshape((1,) + residual.shape) if residual.ndim == 3 else residual
            residual = np.ascontiguousarray(r4.transpose(0, 2, 3, 1))
        ran = self._run(plan, np.ascontiguousarray(x4.transpose(0, 2, 3, 1)), y, nthreads,
                        residual)
        y = y.transpose(0, 3, 1, 2).reshape(plan.result)
        if out is not None:
            np.copyto(out, y)
            return out, ran
        return np.ascontiguousarray(y), ran

    def _run(self, plan: "ConvPlan", x: np.ndarray, y: np.ndarray, nthreads: int,
             residual: Optional[np.ndarray] = None) -> str:
        """y = the convolution of x (both contiguous NHWC, of the plan's
        shapes), plus residual (the same, or None); returns the algorithm
        that ran.

        A tap in the padding adds nothing to an output (as if it were not
        there), so an Inf or NaN weight reaches exactly the outputs that see
        it at a tap inside the image. The kernels instead multiply padding
        taps by zeros, and 0 * Inf is NaN; that changes nothing for finite
        weights, so only weights holding Inf or NaN take this longer way:
        the operator runs on the weights with +-Inf as +-1 and NaN as 0 (the
        Inf and NaN inputs then meet them with the right sign), and each
        output then adds the IEEE sum of its non-finite products at taps
        inside the image: NaN if one is NaN (Inf times 0 or NaN, NaN times
        anything) or both signs of Inf occur, else that Inf. Which kinds
        occur is counted by the operators themselves, on 0/1 masks of the
        input and of the weights, whose padding does add nothing. None of
        these operators runs Winograd, whose transforms would spread the
        values of a tile.
        """
        if not self._nonfinite:
            return self._op.run(plan.call, x, y, nthreads, residual)
        plain = _core.ConvCall(*plan.sizes, None, plan.flush, False, plan.algorithm,
                               self.dtype.itemsize, self.transposed)
        ran = self._nonfinite["finite"].run(plain, x, y, nthreads, residual)
        counting = _core.ConvCall(*plan.sizes, None, False, False, plan.algorithm,
                                  self.dtype.itemsize, self.transposed)

        def meets(x_mask: np.ndarray, kind: str) -> np.ndarray:
            """Outputs where an input in x_mask meets a weight of this kind."""
            if kind not in self._nonfinite:
                return np.zeros(y.shape, bool)
            counts = np.empty(y.shape, self.dtype)
            self._nonfinite[kind].run(counting, x_mask.astype(self.dtype), counts, nthreads)
            return counts > 0

        # With denormals flushed, the kernels read a subnormal input as zero
        # (DAZ), so it meets an Inf weight as 0 * Inf = NaN here too.
        if plan.flush:
            tiny = np.finfo(self.dtype).tiny  # the smallest normal number
            positive, negative = x >= tiny, x <= -tiny
        else:
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
        if plan.act:  # (the kernels' own activation code)
            _core.activate(y, y, plan.act, plan.flush, nthreads)
        return ran


# Plans kept per weights (ConvWeights.cached_plan).
PLAN_CACHE_SIZE = 32


def _typed(value: Any) -> tuple:
    """value with the type of each of its parts, as a cache key; TypeError
    for a type other than int, float, str, None, tuple and list."""
    kind = type(value)
    if kind is tuple or kind is list:
        return (kind,) + tuple(_typed(v) for v in value)
    if kind is int or kind is float or kind is str or value is None:
        return (kind, value)
    raise TypeError(f"no cache key for {kind.__name__}")


class ConvPlan:
    """A checked convolution for one input shape: the operator's call, the
    sizes it was made from, the NHWC shape the kernels write, the shape
    returned to the caller, the activation (kind, a, b) or None and flush as
    the call has them, and what
    the operator plans to run: the algorithm, the multiply-adds it executes
    and those of the direct convolution."""
    __slots__ = ("call", "sizes", "nhwc", "result", "act", "flush", "algorithm", "macs",
                 "direct_macs")

    def __init__(self, call: "_core.ConvCall", sizes: tuple, nhwc: Tuple[int, ...],
                 result: Tuple[int, ...], act: Optional[tuple], flush: bool, algorithm: str,
                 macs: float, direct_macs: float) -> None:
        self.call, self.sizes, self.nhwc, self.result = call, sizes, nhwc, result
        self.act, self.flush = act, flush
        self.algorithm, self.macs, self.direct_macs = algorithm, macs, direct_macs


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
    activation : None, a name or (name, parameters...)
        Applied in the kernels' store, after the bias: "relu", "relu6",
        "sigmoid", "tanh", "silu", "hard_sigmoid" (torch's), "hard_swish",
        "leaky_relu" (slope 0.01), ("leaky_relu", slope), ("clip", low,
        high), ("hard_sigmoid", alpha, beta) (ONNX's clip(alpha * x + beta,
        0, 1), computed as clip((x + beta / alpha) * alpha, 0, 1)). NaN
        stays NaN; ReLU keeps -0.0. The same code as fastconv.nn.Activation.
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
    The first call with a weight array prepares its weights for that call
    alone; a second call with the same array keeps a copy of them and their
    packed (and Winograd) forms, so that later calls pack nothing, until the
    array's values change: each call compares the weights and bias with the
    copy, so a result is never stale, and it is bitwise the first call's
    (see fastconv.set_weight_cache; fastconv.Conv2d packs once, with no
    comparison). A result of one pixel per image from an undilated kernel (a
    fully-connected layer written as a convolution: VGG's fc6 as a 7x7
    kernel on a 7x7 map) at batch <= 8 reads the weights in place as one
    matrix instead, with no packing, at the speed of memory.
    A 1x1, stride 1, unpadded convolution runs as a GEMM over the pixels;
    a 3x3, stride 1 one with enough channels, over enough tiles of 2x2
    outputs per image (config()["isa_config"]: winograd_min_channels and
    winograd_one_call_min_tiles), runs as Winograd F(2x2, 3x3), or F(4x4,
    3x3) over enough 4x4 tiles (winograd_f4_one_call_min_tiles) (see
    fastconv.get_winograd; fastconv.Conv2d, which transforms its weights
    once, does so over fewer tiles too); other kernels run
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
    y, _ = conv2d_algorithm(x, weight, bias, stride=stride, padding=padding,
                            dilation=dilation, groups=groups, activation=activation,
                            layout=layout, out=out, num_threads=num_threads)
    return y


def operator_growth(weights: "ConvWeights") -> float:
    """The most memory the operators of checked weights make, in multiples
    of the weights' bytes: their packed panels (about 1, with the rounding
    of K to whole vectors), and for a kernel Winograd can run, F(2x2)'s 16/9
    and F(4x4)'s 36/9 transformed weights."""
    winograd = ((weights.kh, weights.kw) == (3, 3) and weights.stride == (1, 1)
                and weights.dilation == (1, 1) and weights.groups == 1)
    return 1.5 + (52 / 9 if winograd else 0)


def conv2d_algorithm(x, weight, bias=None, *, stride: IntPair = 1, padding: Padding = 0,
                     dilation: IntPair = 1, groups: int = 1, activation: Optional[str] = None,
                     layout: str = "NHWC", out: Optional[np.ndarray] = None,
                     num_threads: Optional[int] = None,
                     algorithm: str = "auto") -> Tuple[np.ndarray, str]:
    """conv2d, with an algorithm forced (one of ALGORITHMS, "auto" letting
    the operator choose; a ValueError where it cannot run the call), and the
    name of the algorithm that ran returned beside the result: for the
    tests and the benchmark, which must know which path they measure."""
    fn = "conv2d"
    layout = layout_name(fn, layout)
    # One dtype check over all three, so a mismatch names every dtype seen;
    # the converted arrays go on (converted once).
    _, arr = float_arrays(fn, x=x, weight=weight, bias=bias)
    stride, dilation = int_pair(fn, "stride", stride), int_pair(fn, "dilation", dilation)
    groups = positive_int(fn, "groups", groups)
    nthreads = resolve_threads(fn, num_threads)

    def make(w: np.ndarray, b: Optional[np.ndarray]) -> ConvWeights:
        return ConvWeights(fn, w, b, groups, layout, nthreads, pack_now=False, stride=stride,
                           dilation=dilation)

    w, b = arr["weight"], arr["bias"]
    weights = (prepared(("conv2d", groups, layout, stride, dilation), weight, w, b, make,
                        operator_growth) or make(w, b))
    xa = arr["x"]
    plan = weights.cached_plan(xa.shape, padding, activation, algorithm)
    out = check_out(fn, out, plan.result, weights.dtype,
                    {"x": (x, xa), "weight": (weight, w), "bias": (bias, b)})
    return weights.execute_algorithm(plan, xa, out, nthreads)


class GemmWeights:
    """The b operand of a GEMM (and its bias) and its C operator: a (M, K) @
    b (K, N) is the 1x1 convolution of M images of one pixel with K
    channels. With one_call (the matmul function) b is read in place where
    the operator can (the dense kernel for a few rows, the GEMM in place
    below a few hundred), else packed once."""

    def __init__(self, fn: str, b: np.ndarray, bias: Optional[np.ndarray],
                 nthreads: int, one_call: bool = False, name: str = "b") -> None:
        self.fn = fn
        self.dtype = b.dtype
        self.k, self.n = b.shape
        check_bias(fn, bias, self.n)
        self.has_bias = bias is not None
        self._bias = None if bias is None else np.array(bias, order="C")
        # b as a 1x1 kernel: HWIO (1, 1, K, N), or, when b is F-ordered (the
        # transpose of PyTorch's (out, in) weight), OIHW (N, K, 1, 1), so
        # that the operator sees it contiguous in one layout or the other.
        oihw = b.flags.f_contiguous and not b.flags.c_contiguous
        w4, axes = (b.T.reshape(self.n, self.k, 1, 1), (2, 3, 1, 0)) if oihw else (
            b.reshape(1, 1, self.k, self.n), (0, 1, 2, 3))
        self._op = _operator(fn, f"{name} with {self.k} inputs and {self.n} outputs", w4, axes,
                             1, self._bias, (1, 1), (1, 1), one_call, True, False, nthreads)

    @property
    def algorithm(self) -> str:
        return self._op.algorithm

    def weight(self) -> np.ndarray:
        """A new (K, N) array of b, read back from the packed panels."""
        b = np.empty((1, 1, self.k, self.n), self.dtype)  # a 1x1 kernel, HWIO
        self._op.unpack(b, (0, 1, 2, 3))
        return b.reshape(self.k, self.n)

    @property
    def bias(self) -> Optional[np.ndarray]:
        """A new array of the bias (None without one)."""
        return None if self._bias is None else self._bias.copy()

    def plan(self, M: int, act: Optional[tuple],
             algorithm: str = "auto") -> Tuple["_core.ConvCall", str]:
        """The call of a GEMM with M rows and what it runs."""
        call = _core.ConvCall(M, 1, 1, self.k, self.n, 0, 0, 1, 1, (1, 1), (1, 1), (1, 1),
                              act, get_flush_denormals(), False, algorithm,
                              self.dtype.itemsize)
        return call, self._op.plan(call)[0]

    def run(self, a: np.ndarray, act: Optional[tuple], out: Optional[np.ndarray], nthreads: int,
            algorithm: str = "auto") -> np.ndarray:
        """a (M, K), already checked, @ b, into out or a new array."""
        M = a.shape[0]
        y = out if out is not None else np.empty((M, self.n), self.dtype)
        call, _ = self.plan(M, act, algorithm)
        self._op.run(call, np.ascontiguousarray(a), y, nthreads)
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
    activation : None, a name or (name, parameters...)
        As for conv2d.
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
    act = activation_spec(fn, activation)
    check_bias(fn, bias_a, ba.shape[1])
    nthreads = resolve_threads(fn, num_threads)
    out = check_out(fn, out, (M, ba.shape[1]), dtype,
                    {"a": (a, aa), "b": (b, ba), "bias": (bias, bias_a)})

    def make(b_: np.ndarray, bias_: Optional[np.ndarray]) -> GemmWeights:
        return GemmWeights(fn, b_, bias_, nthreads, one_call=True)

    gemm = prepared(("matmul",), b, ba, bias_a, make, lambda _: 1.5) or make(ba, bias_a)
    return gemm.run(aa, act, out, nthreads)
