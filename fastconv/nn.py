"""fastconv.nn: inference layers, Sequential models, and the conversion of a
classifier into a fully convolutional network.

Every layer maps a batch to a batch: ``layer(x, num_threads=None)``, and
reports the shape it produces for an input shape without the batch axis
(``layer.output_shape(shape)``), which Sequential.summary() prints. Maps are
NHWC by default; a model (and each of its spatial layers) may be NCHW.
"""
from __future__ import annotations

import json
import zipfile
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

import fastconv
from fastconv import _core
from fastconv._config import resolve_threads
from fastconv._fc import fc_to_conv
from fastconv._validate import float_arrays, int_pair, layout_name

__all__ = ["Layer", "Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
           "Flatten", "Softmax", "Dropout", "Sequential", "to_fully_convolutional", "load",
           "from_torch"]

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


def _frozen_copy(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """A read-only copy of a (None stays None)."""
    if a is None:
        return None
    a = a.copy()
    a.flags.writeable = False
    return a


def _map_shape(layout: str, h: int, w: int, c: int) -> Shape:
    return (h, w, c) if layout == "NHWC" else (c, h, w)


class Layer:
    """Base class: a layer maps a batch to a batch."""

    layout: Optional[str] = None  # None: works in either layout

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        raise NotImplementedError

    def output_shape(self, shape: Shape) -> Shape:
        """The shape this layer produces for an input of `shape` (no batch axis)."""
        raise NotImplementedError

    def _describe(self):
        """(JSON-able constructor keywords, named arrays) for save()."""
        return {}, {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Conv2d(Layer):
    """A convolution (fastconv.Conv2d: weights packed once).

    Parameters are those of fastconv.conv2d: weight is HWIO for layout
    "NHWC", OIHW for "NCHW".
    """

    def __init__(self, weight: Any, bias: Any = None, *, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, activation: Optional[str] = None,
                 layout: str = "NHWC") -> None:
        # Copies, packed from: changing the caller's arrays later cannot make
        # the saved or converted model differ from the one that runs.
        _, arr = float_arrays("Conv2d", weight=weight, bias=bias)
        self.weight, self.bias = _frozen_copy(arr["weight"]), _frozen_copy(arr["bias"])
        self.conv = fastconv.Conv2d(self.weight, self.bias, stride=stride, padding=padding,
                                    dilation=dilation, groups=groups, activation=activation,
                                    layout=layout)
        self.layout = self.conv.layout

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        return self.conv(x, num_threads=num_threads)

    def output_shape(self, shape: Shape) -> Shape:
        c = self.conv
        plan = c._weights.plan((1,) + tuple(shape), c.stride, c.padding, c.dilation,
                               c.activation)
        return tuple(plan.result[1:])

    def _describe(self):
        c = self.conv
        params = dict(stride=c.stride, padding=c.padding, dilation=c.dilation,
                      groups=c.groups, activation=c.activation, layout=c.layout)
        return params, {"weight": self.weight, "bias": self.bias}

    def __repr__(self) -> str:
        c = self.conv
        return (f"Conv2d({c.in_channels}, {c.out_channels}, kernel={c.kernel_size[0]}x"
                f"{c.kernel_size[1]}, stride={c.stride}, padding={c.padding!r}, "
                f"groups={c.groups}, activation={c.activation!r})")


class Linear(Layer):
    """A fully-connected layer on (N, in_features) (fastconv.Linear).

    A read-only copy of the weight is kept (besides the packed one) so that
    to_fully_convolutional and save() see exactly what runs.
    """

    def __init__(self, weight: Any, bias: Any = None, *, activation: Optional[str] = None,
                 weight_layout: str = "IO") -> None:
        _, arr = float_arrays("Linear", weight=weight, bias=bias)
        self.weight, self.bias = _frozen_copy(arr["weight"]), _frozen_copy(arr["bias"])
        self.linear = fastconv.Linear(self.weight, self.bias, activation=activation,
                                      weight_layout=weight_layout)
        self.weight_layout = weight_layout
        self.activation = activation

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        return self.linear(_batch("Linear", x, 2, "(N, in_features)"), num_threads=num_threads)

    def output_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != (self.linear.in_features,):
            raise ValueError(f"Linear: input shape must be ({self.linear.in_features},); "
                             f"got {tuple(shape)}")
        return (self.linear.out_features,)

    def _describe(self):
        return (dict(activation=self.activation, weight_layout=self.weight_layout),
                {"weight": self.weight, "bias": self.bias})

    def __repr__(self) -> str:
        return (f"Linear({self.linear.in_features}, {self.linear.out_features}, "
                f"activation={self.activation!r})")


class ReLU(Layer):
    """max(x, 0); NaN stays NaN."""

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        _, arr = float_arrays("ReLU", x=x)
        return np.maximum(arr["x"], 0)

    def output_shape(self, shape: Shape) -> Shape:
        return tuple(shape)


class Dropout(Layer):
    """Identity at inference (p is kept for the record)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1); got {p!r}")
        self.p = float(p)

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
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

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 layout: str = "NHWC") -> None:
        fn = type(self).__name__
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
        span = n + 2 * p - k
        if span < 0:
            raise ValueError(f"{type(self).__name__}: the window ({k}) is larger than the "
                             f"padded input ({n + 2 * p})")
        out = (-(-span // s) if self.ceil_mode else span // s) + 1
        if self.ceil_mode and (out - 1) * s >= n + p:
            out -= 1  # the last window would start in the padding
        return out

    def output_shape(self, shape: Shape) -> Shape:
        fn = type(self).__name__
        if len(shape) != 3:
            raise ValueError(f"{fn}: input must be a 3-D map (no batch axis); got {tuple(shape)}")
        h, w, c = _spatial(self.layout, shape)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return _map_shape(self.layout, self._out_size(h, kh, sh, ph),
                          self._out_size(w, kw, sw, pw), c)

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        fn = type(self).__name__
        xa = _batch(fn, x, 4, "(N, H, W, C)" if self.layout == "NHWC" else "(N, C, H, W)")
        nhwc = xa if self.layout == "NHWC" else xa.transpose(0, 2, 3, 1)
        out_shape = self.output_shape(xa.shape[1:])
        ho, wo, c = _spatial(self.layout, out_shape)
        y = np.empty((xa.shape[0], ho, wo, c), xa.dtype)
        _core.pool(np.ascontiguousarray(nhwc), y, *self.kernel_size, *self.stride,
                   *self.padding, self.is_max, self.count_include_pad,
                   resolve_threads(fn, num_threads))
        return y if self.layout == "NHWC" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))

    def _describe(self):
        params = dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                      ceil_mode=self.ceil_mode, layout=self.layout)
        if not self.is_max:
            params["count_include_pad"] = self.count_include_pad
        return params, {}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, ceil_mode={self.ceil_mode})")


class MaxPool2d(_Pool2d):
    """Max pooling (padding never wins; NaN propagates)."""

    is_max = True

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, layout: str = "NHWC") -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, True, layout)


class AvgPool2d(_Pool2d):
    """Average pooling; count_include_pad as in PyTorch (default True)."""

    is_max = False


class GlobalAvgPool2d(Layer):
    """The mean over height and width: (N, H, W, C) -> (N, C)."""

    def __init__(self, layout: str = "NHWC") -> None:
        self.layout = layout_name("GlobalAvgPool2d", layout)

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        xa = _batch("GlobalAvgPool2d", x, 4, "(N, H, W, C)")
        axes = (1, 2) if self.layout == "NHWC" else (2, 3)
        return xa.mean(axis=axes, dtype=xa.dtype)

    def output_shape(self, shape: Shape) -> Shape:
        return (_spatial(self.layout, shape)[2],)

    def _describe(self):
        return dict(layout=self.layout), {}


class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C), the axes taken in `order` (any permutation
    of "H", "W", "C": "HWC" as Keras flattens NHWC, "CHW" as PyTorch flattens
    NCHW)."""

    def __init__(self, order: str = "HWC", layout: str = "NHWC") -> None:
        if not isinstance(order, str) or sorted(order.upper()) != ["C", "H", "W"]:
            raise ValueError(f"Flatten: order must be a permutation of 'H', 'W', 'C'; "
                             f"got {order!r}")
        self.order = order.upper()
        self.layout = layout_name("Flatten", layout)

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        xa = _batch("Flatten", x, 4, "(N, H, W, C)" if self.layout == "NHWC" else "(N, C, H, W)")
        axis = {a: i + 1 for i, a in enumerate("HWC" if self.layout == "NHWC" else "CHW")}
        return np.ascontiguousarray(
            xa.transpose(0, *(axis[a] for a in self.order))).reshape(xa.shape[0], -1)

    def output_shape(self, shape: Shape) -> Shape:
        return (int(np.prod(shape)),)

    def _describe(self):
        return dict(order=self.order, layout=self.layout), {}

    def __repr__(self) -> str:
        return f"Flatten(order={self.order!r})"


class Softmax(Layer):
    """exp(x) / sum(exp(x)) along `axis` (computed stably)."""

    def __init__(self, axis: int = -1) -> None:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Softmax: axis must be an int; got {axis!r}")
        self.axis = int(axis)

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        _, arr = float_arrays("Softmax", x=x)
        xa = arr["x"]
        e = np.exp(xa - xa.max(axis=self.axis, keepdims=True))
        return e / e.sum(axis=self.axis, keepdims=True)

    def output_shape(self, shape: Shape) -> Shape:
        return tuple(shape)

    def _describe(self):
        return dict(axis=self.axis), {}

    def __repr__(self) -> str:
        return f"Softmax(axis={self.axis})"


class Sequential(Layer):
    """Layers applied in turn.

    Parameters
    ----------
    *layers : Layer
    layout : "NHWC" or "NCHW"
        The layout of the model's maps; every layer that has one must agree.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> w = np.ones((3, 3, 1, 4), np.float32)
    >>> model = nn.Sequential(nn.Conv2d(w, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    >>> model(np.ones((1, 8, 8, 1), np.float32)).shape
    (1, 4, 4, 4)
    """

    def __init__(self, *layers: Layer, layout: str = "NHWC") -> None:
        self.layout = layout_name("Sequential", layout)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} must be a fastconv.nn layer; "
                                f"got {type(layer).__name__}")
            if layer.layout is not None and layer.layout != self.layout:
                raise ValueError(f"Sequential: layer {i} ({layer!r}) is {layer.layout} but "
                                 f"the model is {self.layout}")
        self.layers: List[Layer] = list(layers)

    def __call__(self, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
        for layer in self.layers:
            x = layer(x, num_threads=num_threads)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: Union[int, slice]) -> Union[Layer, "Sequential"]:
        if isinstance(index, slice):
            return Sequential(*self.layers[index], layout=self.layout)
        return self.layers[index]

    def output_shape(self, shape: Shape) -> Shape:
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return tuple(shape)

    def summary(self, input_shape: Sequence[int]) -> str:
        """Each layer with the shape it produces for `input_shape` (no batch axis)."""
        shape = tuple(input_shape)
        lines = [f"Sequential ({self.layout}), input {shape}"]
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            lines.append(f"  {i:2d}  {layer!r:70s} -> {shape}")
        return "\n".join(lines)

    def save(self, path: Any) -> None:
        """Write the model to `path` as a plain .npz: one array per weight and
        a JSON description of the layers (no pickle; nn.load reads it)."""
        layers, arrays = [], {}
        for i, layer in enumerate(self.layers):
            params, named = layer._describe()
            stored = []
            for name, value in named.items():
                if value is not None:
                    arrays[f"layer{i}.{name}"] = np.asarray(value)
                    stored.append(name)
            layers.append({"type": type(layer).__name__, "params": params, "arrays": stored})
        description = {"format": FORMAT, "version": FORMAT_VERSION,
                       "fastconv": fastconv.__version__, "layout": self.layout,
                       "layers": layers}
        arrays["__model__"] = np.frombuffer(json.dumps(description).encode(), np.uint8)
        np.savez(path, **arrays)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(layout={self.layout!r}){inner}"


def to_fully_convolutional(model: Sequential, input_shape: Sequence[int]) -> Sequential:
    """The classifier `model` as a fully convolutional network.

    Flatten and the first Linear after it become one Conv2d whose kernel
    covers the map that reaches the Flatten at `input_shape` (through
    fastconv.fc_to_conv, honouring the Flatten's order); every later Linear
    becomes a 1x1 Conv2d and a Softmax acts on the channel axis. On an input
    of exactly `input_shape` the result equals the original model's, as an
    (N, 1, 1, classes) map (NHWC); on a larger input it is a score map whose
    entry (i, j) is the original model applied to the window at
    (i * S, j * S), S being the product of the strides before the Flatten.

    Parameters
    ----------
    model : Sequential
    input_shape : the input the classifier was built for, without batch axis

    Raises
    ------
    ValueError
        A layer that cannot be converted (anything but Linear, ReLU, Dropout
        or Softmax after the Flatten; no Flatten followed by a Linear), named
        with its index.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"to_fully_convolutional: model must be a fastconv.nn.Sequential; "
                        f"got {type(model).__name__}")
    layout = model.layout
    shape = tuple(input_shape)
    layers: List[Layer] = []
    flatten: Optional[Flatten] = None
    map_shape: Tuple[int, int, int] = (0, 0, 0)  # (H, W, C) the next Linear reads
    converted = 0
    for i, layer in enumerate(model.layers):
        if flatten is None:
            if isinstance(layer, Flatten):
                if len(shape) != 3:
                    raise ValueError(f"to_fully_convolutional: layer {i} (Flatten) receives "
                                     f"shape {shape}, not a 3-D map")
                flatten, map_shape = layer, _spatial(layout, shape)
            elif isinstance(layer, (Linear, GlobalAvgPool2d)):
                raise ValueError(f"to_fully_convolutional: layer {i} ({layer!r}) mixes every "
                                 f"spatial position before any Flatten; nothing to convert")
            else:
                layers.append(layer)
            shape = layer.output_shape(shape)
            continue
        if isinstance(layer, Linear):
            h, w, c = map_shape
            kernel, bias = fc_to_conv(layer.weight, (h, w, c), layer.bias,
                                      weight_layout=layer.weight_layout,
                                      flatten_order=flatten.order, layout=layout)
            layers.append(Conv2d(kernel, bias, activation=layer.activation, layout=layout))
            map_shape = (1, 1, layer.linear.out_features)
            converted += 1
        elif isinstance(layer, (ReLU, Dropout)):
            layers.append(layer)
        elif isinstance(layer, Softmax):
            if layer.axis not in (1, -1):
                raise ValueError(f"to_fully_convolutional: layer {i} ({layer!r}) after the "
                                 f"Flatten acts on axis {layer.axis}, not the features")
            layers.append(Softmax(axis=-1 if layout == "NHWC" else 1))
        else:
            raise ValueError(f"to_fully_convolutional: layer {i} ({layer!r}) after the Flatten "
                             f"cannot be written as a convolution")
        shape = layer.output_shape(shape)
    if not converted:
        raise ValueError("to_fully_convolutional: the model has no Flatten followed by a Linear")
    return Sequential(*layers, layout=layout)


# --------------------------------------------------------------------------
# Saving and loading: a plain .npz, arrays plus a JSON description, no pickle
# --------------------------------------------------------------------------
FORMAT = "fastconv.nn"
FORMAT_VERSION = 1
_LAYER_TYPES = {cls.__name__: cls for cls in (Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d,
                                              GlobalAvgPool2d, Flatten, Softmax, Dropout)}


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the constructors were given."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def load(path: Any) -> Sequential:
    """Read a model written by Sequential.save.

    Never executes code from the file (numpy.load with allow_pickle=False).

    Raises
    ------
    ValueError
        The file is not a fastconv.nn model, is corrupt, or was written in
        another format version.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"nn.load: {path!s} is not a readable .npz model file ({exc})") from None
    try:
        description = json.loads(arrays.pop("__model__").tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"nn.load: {path!s} has no valid fastconv.nn model description "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"nn.load: {path!s} is not a fastconv.nn model file")
    if description.get("version") != FORMAT_VERSION:
        raise ValueError(f"nn.load: {path!s} is format version {description.get('version')!r} "
                         f"(written by fastconv {description.get('fastconv')!r}); this fastconv "
                         f"{fastconv.__version__} reads version {FORMAT_VERSION}")
    layers = []
    try:
        for i, record in enumerate(description["layers"]):
            cls = _LAYER_TYPES.get(record["type"])
            if cls is None:
                raise ValueError(f"layer {i} has unknown type {record['type']!r}")
            params = {k: _tuples(v) for k, v in record["params"].items()}
            named = {name: arrays[f"layer{i}.{name}"] for name in record["arrays"]}
            if cls in (Conv2d, Linear):
                layers.append(cls(named["weight"], named.get("bias"), **params))
            else:
                layers.append(cls(**params))
        return Sequential(*layers, layout=description["layout"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"nn.load: {path!s} describes a model that cannot be built "
                         f"({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------
# Import from PyTorch (optional dependency)
# --------------------------------------------------------------------------
def from_torch(module: Any, layout: str = "NHWC") -> Sequential:
    """A fastconv.nn.Sequential computing what a torch.nn.Sequential computes.

    Supported layers: Conv2d (zero padding), Linear, ReLU, MaxPool2d
    (dilation 1), AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Dropout and
    Softmax over the features. OIHW kernels become HWIO for layout "NHWC";
    torch's Flatten of an NCHW map becomes Flatten(order="CHW"), so the
    Linear weights after it keep their meaning in either layout.

    Parameters
    ----------
    module : torch.nn.Sequential
    layout : "NHWC" or "NCHW"
        The layout of the returned model's inputs and maps.

    Raises
    ------
    ImportError
        torch is not installed.
    ValueError
        A layer (named with its index) that has no fastconv equivalent.
    """
    import torch  # the caller has a torch module, so torch is installed

    fn = "from_torch"
    layout = layout_name(fn, layout)
    tnn = torch.nn
    if not isinstance(module, tnn.Sequential):
        raise TypeError(f"{fn}: module must be a torch.nn.Sequential; got {type(module).__name__}")

    def array(t: Any) -> Optional[np.ndarray]:
        return None if t is None else t.detach().cpu().numpy().copy()

    layers: List[Layer] = []
    after_global_pool = False
    for i, m in enumerate(module):
        def refuse(why: str) -> None:
            raise ValueError(f"{fn}: layer {i} ({m!r}) {why}")

        if isinstance(m, tnn.Conv2d):
            if m.padding_mode != "zeros":
                refuse(f"pads with {m.padding_mode!r}; only zero padding is supported")
            w = array(m.weight)
            layers.append(Conv2d(w if layout == "NCHW" else w.transpose(2, 3, 1, 0),
                                 array(m.bias), stride=tuple(m.stride),
                                 padding=m.padding if isinstance(m.padding, str)
                                 else tuple(m.padding),
                                 dilation=tuple(m.dilation), groups=m.groups, layout=layout))
        elif isinstance(m, tnn.Linear):
            layers.append(Linear(array(m.weight), array(m.bias), weight_layout="OI"))
        elif isinstance(m, tnn.ReLU):
            layers.append(ReLU())
        elif isinstance(m, tnn.MaxPool2d):
            if m.dilation not in (1, (1, 1)) or m.return_indices:
                refuse("uses dilation or return_indices, which MaxPool2d does not support")
            layers.append(MaxPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, layout))
        elif isinstance(m, tnn.AvgPool2d):
            if m.divisor_override is not None:
                refuse("sets divisor_override, which AvgPool2d does not support")
            layers.append(AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                    m.count_include_pad, layout))
        elif isinstance(m, tnn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1, 1)):
                refuse("pools to a size other than 1x1")
            layers.append(GlobalAvgPool2d(layout))
            after_global_pool = True
            continue
        elif isinstance(m, tnn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                refuse("flattens other axes than all but the batch")
            if not after_global_pool:  # a global pool's (N, C) is already flat
                layers.append(Flatten("CHW", layout=layout))
        elif isinstance(m, tnn.Dropout):
            layers.append(Dropout(m.p))
        elif isinstance(m, tnn.Softmax):
            if m.dim not in (1, -1):
                refuse("acts on an axis other than the features")
            layers.append(Softmax(-1))
        else:
            refuse("has no fastconv.nn equivalent")
        after_global_pool = False
    return Sequential(*layers, layout=layout)
