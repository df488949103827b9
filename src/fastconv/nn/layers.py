"""The layers of fastconv.nn: each maps a batch to a batch and reports the
shape it produces (Layer), and applied to symbolic tensors records itself in
a graph (see Layer). Conv2d and Linear, also fastconv.Conv2d and
fastconv.Linear, pack their weights once, at construction."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from fastconv import _core
from fastconv._config import get_flush_denormals, get_winograd, resolve_threads
from fastconv._conv import ConvWeights, GemmWeights, IntPair, Padding, input_array
from fastconv._validate import (INT64_MAX, activation_spec, check_nbytes, check_ndim,
                                check_out, float_arrays, int_pair, layout_name,
                                padding_amounts)
from fastconv.nn.symbolic import (SymbolicTensor, check_name, infer_shape, is_symbolic,
                                  layer_label)

__all__ = ["Layer", "Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
           "Flatten", "Softmax", "Dropout"]

# Input shapes whose checked plan a Conv2d keeps (a network sees few).
PLAN_CACHE_SIZE = 32

Shape = Tuple[int, ...]


def _batch(fn: str, x: Any, ndim: int, what: str) -> np.ndarray:
    """x as a float32/float64 array with a batch axis of `ndim` dimensions."""
    _, arr = float_arrays(fn, x=x)
    xa = arr["x"]
    if xa.ndim != ndim:
        raise ValueError(f"{fn}: x must be {ndim}-D {what}; got shape {xa.shape}")
    return xa


def _spatial(layout: str, shape: Shape) -> Tuple[int, int, int]:
    """(H, W, C) of a map shape (no batch axis) in `layout`."""
    if layout == "NHWC":
        return shape[0], shape[1], shape[2]
    return shape[1], shape[2], shape[0]


def geometry_text(value: Any) -> str:
    """A stride, padding, dilation or kernel size as the reprs print it: one
    number when both axes agree (3, not (3, 3)), else the pair; strings and
    per-side paddings as they are. One form for every layer's repr."""
    if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) for v in value):
        return str(int(value[0])) if value[0] == value[1] else f"({value[0]}, {value[1]})"
    return repr(value)


def _read_only(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """a (a new array, or None) marked read-only: writing to a layer's weights
    would not change the packed weights that run, so it is refused."""
    if a is not None:
        a.flags.writeable = False
    return a


def _map_dims(fn: str, shape: Shape) -> None:
    """A map's shape (no batch axis) must be 3-D."""
    if len(shape) != 3:
        raise ValueError(f"{fn}: input must be a 3-D map (no batch axis); got {tuple(shape)}")


def _map_shape(layout: str, h: int, w: int, c: int) -> Shape:
    return (h, w, c) if layout == "NHWC" else (c, h, w)


class Layer:
    """Base class: a layer maps a batch to a batch and reports the shape it
    produces for an input shape without the batch axis.

    Calling a layer, ``layer(x, ...)``, runs ``layer.forward(x, ...)`` on
    arrays (``forward(x, *, num_threads=None)``; Conv2d and Linear take
    ``out`` second); on a symbolic tensor (nn.Input, or another layer's
    output), or a list of them, it records the layer in the graph a Model is
    built from and returns its symbolic output, whose shape comes from
    ``output_shape`` (a shape the layer refuses is a ValueError there and
    then). A layer that takes several inputs (``takes_list``: Add,
    Concatenate, ...) takes a list of arrays in forward and a list of
    shapes in output_shape.

    Every layer takes ``name=None``: None or a non-empty str. A layer
    without one is named by the first Model built with it ("conv2d",
    "conv2d_1", ..., unique in that model): see Model for names in a model.
    """

    layout: Optional[str] = None  # None: works in either layout
    takes_list: Optional[bool] = False  # forward takes a list of arrays (None: either)
    _name: Optional[str] = None   # (a subclass that never calls __init__ has no name)
    _name_given = False           # given by the caller, not by a model

    def __init__(self, name: Optional[str] = None) -> None:
        self._name = check_name(type(self).__name__, name)
        self._name_given = self._name is not None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass that defines __call__ would skip the graph recording
        # below: refused where it is defined rather than failing later.
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: a fastconv.nn layer defines forward(x, ...), "
                            f"not __call__ (Layer.__call__ runs forward on arrays and records "
                            f"the layer on symbolic tensors)")

    @property
    def name(self) -> Optional[str]:
        """The layer's name: the one given, or the one the first model built
        with it gave it (None before)."""
        return self._name

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the layer, or add it to a graph.

        ``layer(x, ...)`` with an array (or a list of them, for a layer
        that takes several) runs ``layer.forward(x, ...)``: a model or layer
        takes ``num_threads=`` (and Conv2d, ConvTranspose2d and Linear
        ``out=``). ``layer(t)`` with a symbolic tensor (nn.Input, or what a
        layer applied to one returned) returns the symbolic output, a node of
        the nn.Model to be built from them.
        """
        if is_symbolic(x):
            if args or kwargs:
                raise TypeError(f"{type(self).__name__}: a layer applied to symbolic tensors "
                                f"takes no other arguments (num_threads is given when the "
                                f"model runs); got {len(args)} more positional and keywords "
                                f"{sorted(kwargs)}")
            return self._apply(x)
        return self.forward(x, *args, **kwargs)

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        raise NotImplementedError

    def output_shape(self, shape: Shape) -> Shape:
        """The shape this layer produces for an input of `shape` (no batch axis)."""
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        """The number of values in the layer's weights (what summary() counts)."""
        return sum(a.size for a in self._describe()[1].values() if a is not None)

    def _apply(self, x: Any) -> SymbolicTensor:
        """The symbolic output of this layer applied to x, a symbolic tensor
        (or a list of them for a layer that takes a list)."""
        fn = type(self).__name__
        many = isinstance(x, (list, tuple))
        tensors = tuple(x) if many else (x,)
        for i, t in enumerate(tensors):
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"{fn}: a layer applied to symbolic tensors takes symbolic "
                                f"tensors only (nn.Input or a layer's output); got "
                                f"{type(t).__name__} at position {i}")
        if self.takes_list is not None and many != self.takes_list:
            if self.takes_list:
                raise TypeError(f"{fn}: takes a list of tensors; got one tensor")
            raise TypeError(f"{fn}: takes one tensor; got a {type(x).__name__} of "
                            f"{len(tensors)}")
        dtypes = {t.dtype: "its input" for t in tensors if t.dtype is not None}
        own = getattr(self, "dtype", None)  # a layer with weights: theirs
        if own is not None:
            dtypes.setdefault(np.dtype(own), "its weights")
        if len(dtypes) > 1:
            listing = ", ".join(f"{what} {dt}" for dt, what in dtypes.items())
            raise TypeError(f"layer {layer_label(self)}: its inputs and weights must share one "
                            f"dtype; got {listing}")
        shape = infer_shape(self, [t.shape for t in tensors], many)
        return SymbolicTensor(shape, next(iter(dtypes), None), self, tensors)

    def _describe(self):
        """(JSON-able constructor keywords, named arrays) for save()."""
        return {}, {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def list_input(layer: Layer, n: int) -> bool:
    """Whether `layer` applied to `n` tensors takes them as a list: a layer
    with takes_list None (ConvTranspose2d: x, or [x, like]) takes a list of
    two or more."""
    return layer.takes_list if layer.takes_list is not None else n > 1


class Conv2d(Layer):
    """A convolution layer: conv2d with fixed weights, packed once.

    Parameters
    ----------
    weight, bias, stride, padding, dilation, groups, activation, layout
        As for fastconv.conv2d, and checked the same way (options now, the
        input at each call): weight is HWIO for layout "NHWC", OIHW for
        "NCHW".

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> layer = fastconv.Conv2d(np.ones((3, 3, 8, 16), np.float32), padding="same",
    ...                         activation="relu")
    >>> layer(np.ones((1, 8, 8, 8), np.float32)).shape
    (1, 8, 8, 16)
    """

    def __init__(self, weight: Any, bias: Any = None, *, stride: IntPair = 1,
                 padding: Padding = 0, dilation: IntPair = 1, groups: int = 1,
                 activation: Optional[str] = None, layout: str = "NHWC",
                 name: Optional[str] = None) -> None:
        fn = "Conv2d"
        super().__init__(name)
        # Packing copies the weights: the layer keeps only the packed ones
        # (so a huge layer, VGG's fc6, takes its weights' size once), and
        # changing the caller's arrays later changes nothing.
        # The options are checked now, so that a bad one fails at
        # construction rather than at the first call.
        stride, dilation = int_pair(fn, "stride", stride), int_pair(fn, "dilation", dilation)
        self._weights = ConvWeights(fn, weight, bias, groups, layout, resolve_threads(fn, None),
                                    winograd_now=True, stride=stride, dilation=dilation)
        padding_amounts(fn, padding, (1, 1), (1, 1), stride, dilation)
        self.padding = padding
        activation_spec(fn, activation)
        self.activation = activation
        self._plans: dict = {}

    @property
    def stride(self) -> Tuple[int, int]:
        return self._weights.stride

    @property
    def dilation(self) -> Tuple[int, int]:
        return self._weights.dilation

    @property
    def layout(self) -> str:
        return self._weights.layout

    @property
    def groups(self) -> int:
        return self._weights.groups

    @property
    def in_channels(self) -> int:
        return self._weights.c

    @property
    def out_channels(self) -> int:
        return self._weights.k

    @property
    def kernel_size(self) -> tuple:
        return (self._weights.kh, self._weights.kw)

    @property
    def dtype(self) -> np.dtype:
        return self._weights.dtype

    @property
    def isa(self) -> str:
        """The instruction set whose kernels the packed weights are for."""
        return self._weights.isa

    @property
    def algorithm(self) -> str:
        """The algorithm the layer prepared its weights for:
        "winograd-f2x2-3x3", "winograd-f4x4-3x3", "gemm", "igemm" or "depthwise". An input too
        small for Winograd's transforms to pay runs "igemm" instead, and a
        one-pixel result "gemm" through the one-row micro-kernel:
        plan(input_shape) tells what a given input runs."""
        return self._weights.algorithm

    @property
    def weight(self) -> np.ndarray:
        """The weights (HWIO for "NHWC", OIHW for "NCHW"), read back from the
        packed ones into a new, read-only array: the layer keeps no other copy."""
        return _read_only(self._weights.weight())

    @property
    def bias(self) -> Optional[np.ndarray]:
        """A new, read-only array of the bias, or None."""
        return _read_only(self._weights.bias)

    def forward(self, x: Any, out: Optional[np.ndarray] = None,
                 num_threads: Optional[int] = None) -> np.ndarray:
        """Run the layer on x ((N, H, W, C) or (N, C, H, W) by layout, or 3-D).

        Parameters
        ----------
        x : array_like of the layer's dtype
        out : numpy.ndarray, optional
            As for conv2d.
        num_threads : int, optional

        Returns
        -------
        numpy.ndarray
        """
        return self._forward_activation(x, None, num_threads, out)

    def _forward_activation(self, x: Any, activation: Any, num_threads: Optional[int] = None,
                            out: Optional[np.ndarray] = None,
                            residual: Optional[np.ndarray] = None) -> np.ndarray:
        """forward with `activation` in the store instead of the layer's own
        (None: its own), and `residual` (an array of the result's shape and
        dtype) added before it: a Model fusing the layers after it."""
        weights = self._weights
        xa = input_array("Conv2d", x, weights.dtype)
        plan = self._plan(xa.shape, activation)
        nthreads = resolve_threads("Conv2d", num_threads)
        if out is not None:
            out = check_out("Conv2d", out, plan.result, weights.dtype, {"x": (x, xa)})
        if residual is not None:
            residual = input_array("Conv2d", residual, weights.dtype)
            if residual.shape != plan.result:
                raise ValueError(f"Conv2d: the residual must have the result's shape "
                                 f"{plan.result}; got {residual.shape}")
        return weights.execute(plan, xa, out, nthreads, residual)

    def _plan(self, shape: Tuple[int, ...], activation: Any = None):
        """The checked plan of an input shape (with `activation`, else the
        layer's), kept: a network sees few (the flush and Winograd settings
        are part of the key: the plan holds them)."""
        # (activation: None for the layer's own, else a str or tuple, hashable)
        key = (tuple(shape), activation, get_flush_denormals(), get_winograd())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._weights.plan(tuple(shape), self.padding,
                                      self.activation if activation is None else activation)
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def plan(self, input_shape: Sequence[int]) -> dict:
        """What the layer runs on an input of this shape (with its batch
        axis, or 3-D): ``algorithm`` (see the ``algorithm`` property),
        ``macs``, the multiply-adds it executes (Winograd: its 16 or 36
        products per tile and channel pair, not the transforms), ``direct_macs``,
        those of the direct convolution, and ``output_shape``."""
        p = self._plan(tuple(input_shape))
        return {"algorithm": p.algorithm, "macs": int(p.macs), "direct_macs": int(p.direct_macs),
                "output_shape": p.result}

    def output_shape(self, shape: Shape) -> Shape:
        return tuple(self._plan((1,) + tuple(shape)).result[1:])

    @property
    def num_params(self) -> int:
        w = self._weights  # (counted, not read back from the packed weights)
        return w.kh * w.kw * w.cg * w.k + (w.k if w.has_bias else 0)

    def _describe(self):
        params = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                      groups=self.groups, activation=self.activation, layout=self.layout)
        return params, {"weight": self.weight, "bias": self.bias}

    def __repr__(self) -> str:
        w = self._weights
        return (f"Conv2d({w.c}, {w.k}, kernel={w.kh}x{w.kw}, "
                f"stride={geometry_text(self.stride)}, padding={geometry_text(self.padding)}, "
                f"dilation={geometry_text(self.dilation)}, groups={w.groups}, "
                f"bias={w.has_bias}, activation={self.activation!r}, layout={w.layout!r}, "
                f"dtype={w.dtype})")


class Linear(Layer):
    """A fully-connected layer on (N, in_features) or (in_features,) inputs,
    weights packed once.

    Parameters
    ----------
    weight : array_like, float32 or float64
        (in_features, out_features) for weight_layout "IO" (Keras:
        y = x @ W) or (out_features, in_features) for "OI" (PyTorch:
        y = x @ W.T).
    bias : array_like, shape (out_features,), optional
    activation : None, a name or (name, parameters...)
        As for fastconv.conv2d, applied in the kernels' store.
    weight_layout : "IO" or "OI"

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fc = fastconv.Linear(np.ones((4, 2), np.float32), np.array([1, -9], np.float32),
    ...                      activation="relu")
    >>> fc(np.ones((3, 4), np.float32))
    array([[5., 0.],
           [5., 0.],
           [5., 0.]], dtype=float32)
    """

    def __init__(self, weight: Any, bias: Any = None, *, activation: Optional[str] = None,
                 weight_layout: str = "IO", name: Optional[str] = None) -> None:
        fn = "Linear"
        super().__init__(name)
        self.dtype, arr = float_arrays(fn, weight=weight, bias=bias)
        w = arr["weight"]
        check_ndim(fn, "weight", w, (2,), "2-D (in_features, out_features) for 'IO' or "
                   "(out_features, in_features) for 'OI'")
        if weight_layout not in ("IO", "OI"):
            raise ValueError(f"{fn}: weight_layout must be 'IO' (in, out) or 'OI' (out, in); "
                             f"got {weight_layout!r}")
        self.weight_layout = weight_layout
        self._act = activation_spec(fn, activation)
        self.activation = activation
        self._weights = GemmWeights(fn, w if weight_layout == "IO" else w.T, arr["bias"],
                                    resolve_threads(fn, None), name="weight")

    @property
    def weight(self) -> np.ndarray:
        """The weights in the layer's weight_layout, read back from the packed
        ones into a new, read-only array (so to_fully_convolutional and save()
        see exactly what runs): the layer keeps no other copy."""
        w = self._weights.weight()
        return _read_only(w if self.weight_layout == "IO" else np.ascontiguousarray(w.T))

    @property
    def bias(self) -> Optional[np.ndarray]:
        """A new, read-only array of the bias, or None."""
        return _read_only(self._weights.bias)

    @property
    def in_features(self) -> int:
        return self._weights.k

    @property
    def out_features(self) -> int:
        return self._weights.n

    @property
    def algorithm(self) -> str:
        """The algorithm the layer prepared its weights for: "gemm" (a
        single row runs it through the one-row micro-kernel)."""
        return self._weights.algorithm

    def plan(self, input_shape: Sequence[int]) -> dict:
        """What the layer runs on an input of shape (N, in_features):
        ``algorithm``, ``macs`` (executed, equal to ``direct_macs``) and
        ``output_shape``."""
        n = int(np.prod(tuple(input_shape)[:-1], dtype=np.int64))
        _, algorithm = self._weights.plan(n, self._act)
        macs = n * self.in_features * self.out_features
        return {"algorithm": algorithm, "macs": macs, "direct_macs": macs,
                "output_shape": tuple(input_shape)[:-1] + (self.out_features,)}

    def forward(self, x: Any, out: Optional[np.ndarray] = None,
                 num_threads: Optional[int] = None) -> np.ndarray:
        """y = activation(x @ W + b) for x of shape (N, in_features) or (in_features,).

        Parameters
        ----------
        x : array_like of the layer's dtype
        out : numpy.ndarray, optional
            C-contiguous, of the result's shape and dtype, not overlapping x.
        num_threads : int, optional

        Returns
        -------
        numpy.ndarray, shape (N, out_features) or (out_features,)
        """
        return self._forward_activation(x, None, num_threads, out)

    def _forward_activation(self, x: Any, activation: Any, num_threads: Optional[int] = None,
                            out: Optional[np.ndarray] = None) -> np.ndarray:
        """forward with `activation` in the store instead of the layer's own
        (None: its own)."""
        fn = "Linear"
        act = self._act if activation is None else activation_spec(fn, activation)
        xa = input_array(fn, x, self.dtype)
        check_ndim(fn, "x", xa, (1, 2), "2-D (N, in_features) or 1-D (in_features,)")
        if xa.shape[-1] != self.in_features:
            raise ValueError(f"{fn}: x has {xa.shape[-1]} features; the layer takes "
                             f"in_features={self.in_features}")
        x2 = xa.reshape(math.prod(xa.shape[:-1]), self.in_features)  # (-1 fails if empty)
        nthreads = resolve_threads(fn, num_threads)
        shape = xa.shape[:-1] + (self.out_features,)
        out = check_out(fn, out, shape, self.dtype, {"x": (x, xa)})
        y = self._weights.run(x2, act, None if out is None else out.reshape(
            x2.shape[0], self.out_features), nthreads)
        return out if out is not None else y.reshape(shape)

    def output_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != (self.in_features,):
            raise ValueError(f"Linear: input shape must be ({self.in_features},); "
                             f"got {tuple(shape)}")
        return (self.out_features,)

    @property
    def num_params(self) -> int:
        return (self.in_features + self._weights.has_bias) * self.out_features

    def _describe(self):
        return (dict(activation=self.activation, weight_layout=self.weight_layout),
                {"weight": self.weight, "bias": self.bias})

    def __repr__(self) -> str:
        return (f"Linear({self.in_features}, {self.out_features}, "
                f"bias={self._weights.has_bias}, "
                f"activation={self.activation!r}, dtype={self.dtype})")


class ReLU(Layer):
    """max(x, 0) as torch.relu computes it: values below zero become +0.0;
    NaN and -0.0 stay (np.maximum(-0.0, 0) would give +0.0)."""

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        _, arr = float_arrays("ReLU", x=x)
        x = arr["x"]
        return np.where(x < 0, x.dtype.type(0), x)

    def output_shape(self, shape: Shape) -> Shape:
        return tuple(shape)


class Dropout(Layer):
    """Identity at inference (p is kept for the record)."""

    def __init__(self, p: float = 0.5, *, name: Optional[str] = None) -> None:
        super().__init__(name)
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1); got {p!r}")
        self.p = float(p)

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        _, arr = float_arrays("Dropout", x=x)
        return arr["x"]

    def output_shape(self, shape: Shape) -> Shape:
        return tuple(shape)

    def _describe(self):
        return dict(p=self.p), {}

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class _Pool2d(Layer):
    """Max or average pooling with PyTorch's rules (padding at most half the
    window; ceil_mode lets the last window run past the input, but never
    start inside the right/bottom padding)."""

    is_max = True
    # (the pooling kernel: channels in SIMD lanes, OpenMP over output rows)
    algorithm = "pool"

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 layout: str = "NHWC", *, name: Optional[str] = None) -> None:
        fn = type(self).__name__
        super().__init__(name)
        self.kernel_size = int_pair(fn, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair(fn, "stride", stride)
        self.padding = int_pair(fn, "padding", padding, minimum=0)
        for p, k in zip(self.padding, self.kernel_size):
            if 2 * p > k:
                raise ValueError(f"{fn}: padding must be at most half the kernel size; got "
                                 f"padding {self.padding} for kernel {self.kernel_size}")
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.layout = layout_name(fn, layout)

    def _out_size(self, n: int, k: int, s: int, p: int) -> int:
        if n == 0:  # (a window of padding alone has no max, nor a mean without it)
            raise ValueError(f"{type(self).__name__}: x has an empty spatial side; every "
                             f"window needs an input pixel, so height and width must be at "
                             f"least 1 (as in PyTorch)")
        if n + 2 * p + k + s > INT64_MAX:  # the kernel's window bounds are int64_t
            raise ValueError(f"{type(self).__name__}: an input side of {n} with padding {p}, "
                             f"kernel_size {k} and stride {s} spans more than 2**63 - 1 "
                             f"positions")
        span = n + 2 * p - k
        if span < 0:
            raise ValueError(f"{type(self).__name__}: the window ({k}) is larger than the "
                             f"padded input ({n + 2 * p})")
        out = (-(-span // s) if self.ceil_mode else span // s) + 1
        if self.ceil_mode and (out - 1) * s >= n + p:
            out -= 1  # the last window would start in the padding
        return out

    def output_shape(self, shape: Shape) -> Shape:
        _map_dims(type(self).__name__, shape)
        h, w, c = _spatial(self.layout, shape)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return _map_shape(self.layout, self._out_size(h, kh, sh, ph),
                          self._out_size(w, kw, sw, pw), c)

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        return self._forward_region(x, num_threads)

    def _forward_region(self, x: Any, num_threads: Optional[int] = None,
                        region: Optional[tuple] = None) -> np.ndarray:
        """forward; with region = ((Hm, Wm), (y_origin, x_origin),
        (oy_origin, ox_origin), (Ho, Wo)), x is the part of a map of Hm x Wm
        from row y_origin and column x_origin, and the result the Ho x Wo
        outputs of the whole map's from (oy_origin, ox_origin), bitwise the
        whole map's (fastconv.nn.regions: tiled inference)."""
        fn = type(self).__name__
        xa = _batch(fn, x, 4, "(N, H, W, C)" if self.layout == "NHWC" else "(N, C, H, W)")
        nhwc = xa if self.layout == "NHWC" else xa.transpose(0, 2, 3, 1)
        if region is None:
            ho, wo, c = _spatial(self.layout, self.output_shape(xa.shape[1:]))
            core_region = None
        else:
            (hm, wm), origin, out_origin, (ho, wo) = region
            c = nhwc.shape[3]
            core_region = (hm, wm) + tuple(origin) + tuple(out_origin)
        check_nbytes(fn, "the result (N, Ho, Wo, C)", (xa.shape[0], ho, wo, c), xa.itemsize,
                     f"x of shape {xa.shape} with kernel_size {self.kernel_size}, stride "
                     f"{self.stride} and padding {self.padding} gives too large a result")
        y = np.empty((xa.shape[0], ho, wo, c), xa.dtype)
        _core.pool(np.ascontiguousarray(nhwc), y, *self.kernel_size, *self.stride,
                   *self.padding, self.is_max, self.count_include_pad,
                   resolve_threads(fn, num_threads), core_region)
        return y if self.layout == "NHWC" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))

    def _describe(self):
        params = dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                      ceil_mode=self.ceil_mode, layout=self.layout)
        if not self.is_max:
            params["count_include_pad"] = self.count_include_pad
        return params, {}

    def __repr__(self) -> str:
        counted = "" if self.is_max else f", count_include_pad={self.count_include_pad}"
        return (f"{type(self).__name__}(kernel_size={geometry_text(self.kernel_size)}, "
                f"stride={geometry_text(self.stride)}, padding={geometry_text(self.padding)}, "
                f"ceil_mode={self.ceil_mode}{counted}, layout={self.layout!r})")


class MaxPool2d(_Pool2d):
    """Max pooling (padding never wins; NaN propagates)."""

    is_max = True

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, layout: str = "NHWC", *,
                 name: Optional[str] = None) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, True, layout, name=name)


class AvgPool2d(_Pool2d):
    """Average pooling; count_include_pad as in PyTorch (default True)."""

    is_max = False


class GlobalAvgPool2d(Layer):
    """The mean over height and width: (N, H, W, C) -> (N, C)."""

    def __init__(self, layout: str = "NHWC", *, name: Optional[str] = None) -> None:
        super().__init__(name)
        self.layout = layout_name("GlobalAvgPool2d", layout)

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        xa = _batch("GlobalAvgPool2d", x, 4, "(N, H, W, C)")
        axes = (1, 2) if self.layout == "NHWC" else (2, 3)
        return xa.mean(axis=axes, dtype=xa.dtype)

    def output_shape(self, shape: Shape) -> Shape:
        _map_dims("GlobalAvgPool2d", shape)
        return (_spatial(self.layout, shape)[2],)

    def _describe(self):
        return dict(layout=self.layout), {}


class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C), the axes taken in `order` (any permutation
    of "H", "W", "C": "HWC" as Keras flattens NHWC, "CHW" as PyTorch flattens
    NCHW)."""

    def __init__(self, order: str = "HWC", layout: str = "NHWC", *,
                 name: Optional[str] = None) -> None:
        super().__init__(name)
        if not isinstance(order, str) or sorted(order.upper()) != ["C", "H", "W"]:
            raise ValueError(f"Flatten: order must be a permutation of 'H', 'W', 'C'; "
                             f"got {order!r}")
        self.order = order.upper()
        self.layout = layout_name("Flatten", layout)

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        xa = _batch("Flatten", x, 4, "(N, H, W, C)" if self.layout == "NHWC" else "(N, C, H, W)")
        axis = {a: i + 1 for i, a in enumerate("HWC" if self.layout == "NHWC" else "CHW")}
        return np.ascontiguousarray(
            xa.transpose(0, *(axis[a] for a in self.order))).reshape(xa.shape[0], -1)

    def output_shape(self, shape: Shape) -> Shape:
        _map_dims("Flatten", shape)
        return (math.prod(shape),)  # (not np.prod: it wraps around past 2**63)

    def _describe(self):
        return dict(order=self.order, layout=self.layout), {}

    def __repr__(self) -> str:
        return f"Flatten(order={self.order!r})"


class Softmax(Layer):
    """exp(x) / sum(exp(x)) along `axis` (computed stably)."""

    def __init__(self, axis: int = -1, *, name: Optional[str] = None) -> None:
        super().__init__(name)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Softmax: axis must be an int; got {axis!r}")
        self.axis = int(axis)

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        _, arr = float_arrays("Softmax", x=x)
        xa = arr["x"]
        e = np.exp(xa - xa.max(axis=self.axis, keepdims=True))
        return e / e.sum(axis=self.axis, keepdims=True)

    def output_shape(self, shape: Shape) -> Shape:
        ndim = len(shape) + 1  # the axis counts the batch axis
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"Softmax: axis {self.axis} is out of range for an input of shape "
                             f"{tuple(shape)} (with the batch axis, {ndim}-D)")
        return tuple(shape)

    def _describe(self):
        return dict(axis=self.axis), {}

    def __repr__(self) -> str:
        return f"Softmax(axis={self.axis})"
