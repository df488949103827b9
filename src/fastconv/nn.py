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
from typing import Any, Iterator, List, NoReturn, Optional, Sequence, Tuple, Union

import numpy as np

import fastconv
from fastconv import _core
from fastconv._config import resolve_threads
from fastconv._fc import fc_to_conv
from fastconv._validate import float_arrays, int_pair, layout_name

__all__ = ["Layer", "Conv2d", "Linear", "ReLU", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
           "Flatten", "Softmax", "Dropout", "Sequential", "to_fully_convolutional", "load",
           "from_torch", "from_keras"]

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


def _read_only(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """a (a new array, or None) marked read-only: writing to a layer's weights
    would not change the packed weights that run, so it is refused."""
    if a is not None:
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
        # Packing copies the weights: the layer keeps only the packed ones
        # (so a huge layer, VGG's fc6, takes its weights' size once), and
        # changing the caller's arrays later changes nothing.
        self.conv = fastconv.Conv2d(weight, bias, stride=stride, padding=padding,
                                    dilation=dilation, groups=groups, activation=activation,
                                    layout=layout)
        self.layout = self.conv.layout

    @property
    def weight(self) -> np.ndarray:
        """The weights (HWIO or OIHW by layout), read back from the packed
        ones into a new, read-only array."""
        return _read_only(self.conv.weight)

    @property
    def bias(self) -> Optional[np.ndarray]:
        return _read_only(self.conv.bias)

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

    Only the packed weights are kept; `weight` reads them back, so
    to_fully_convolutional and save() see exactly what runs.
    """

    def __init__(self, weight: Any, bias: Any = None, *, activation: Optional[str] = None,
                 weight_layout: str = "IO") -> None:
        self.linear = fastconv.Linear(weight, bias, activation=activation,
                                      weight_layout=weight_layout)
        self.weight_layout = weight_layout
        self.activation = activation

    @property
    def weight(self) -> np.ndarray:
        """The weights in weight_layout, read back from the packed ones into a
        new, read-only array."""
        return _read_only(self.linear.weight)

    @property
    def bias(self) -> Optional[np.ndarray]:
        return _read_only(self.linear.bias)

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


# --------------------------------------------------------------------------
# Import from Keras / TensorFlow conventions (Keras itself optional)
# --------------------------------------------------------------------------
_KERAS_SUPPORTED = ("InputLayer, Conv2D, DepthwiseConv2D, Dense, Activation, ReLU, Softmax, "
                    "Flatten, Dropout, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D")


def _same_pool_padding(k: int, s: int) -> Optional[int]:
    """The padding on each side with which a ceil_mode pool of window k and
    stride s has TensorFlow's "same" windows on every input size, or None.

    On an input of size n = q*s - r (0 <= r < s) TensorFlow pads
    max(k - s + r, 0) in all, the smaller half before: a pool with fixed
    symmetric padding can only follow when that half does not depend on r.
    """
    if s == 1 and k % 2 == 1:
        return (k - 1) // 2  # k - 1 in all, split evenly
    if s == 2 and k % 2 == 0:
        return k // 2 - 1    # k - 2 or k - 1 in all: the extra one at the end
    if k <= min(s, 2):
        return 0             # 0 or 1 in all, at the end
    return None


class _KerasImport:
    """The state of from_keras while it walks the layers of a config: the
    weights used so far, the layers built and the shape reaching the next
    layer (Keras's (H, W, C) or (F,); None where it is unknown)."""

    fn = "from_keras"

    def __init__(self, weights: List[Any], layout: str) -> None:
        self.weights, self.used, self.layout = weights, 0, layout
        self.shape: Optional[Tuple[Optional[int], ...]] = None
        self.layers: List[Layer] = []
        self.where = ""

    # -- messages and config values -------------------------------------
    def refuse(self, why: str) -> NoReturn:
        raise ValueError(f"{self.fn}: {self.where} {why}")

    def value(self, cfg: dict, key: str, default: Any = ...) -> Any:
        if key in cfg:
            return cfg[key]
        if default is ...:
            self.refuse(f"has no {key!r} in its config")
        return default

    def count(self, cfg: dict, key: str, default: Any = ...) -> int:
        v = self.value(cfg, key, default)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            self.refuse(f"has {key}={v!r}; expected an int >= 1")
        return int(v)

    def pair(self, cfg: dict, key: str, default: Any = ...) -> Tuple[int, int]:
        v = self.value(cfg, key, default)
        items = list(v) if isinstance(v, (list, tuple)) else [v, v]
        if len(items) != 2 or any(isinstance(i, bool) or not isinstance(i, (int, np.integer))
                                  or i < 1 for i in items):
            self.refuse(f"has {key}={v!r}; expected an int >= 1 or a pair of them")
        return int(items[0]), int(items[1])

    def channels_last(self, cfg: dict) -> None:
        data_format = cfg.get("data_format")
        if data_format not in (None, "channels_last"):
            self.refuse(f"has data_format={data_format!r}; only 'channels_last' (Keras's "
                        f"default, NHWC) is supported")

    def float_weights(self, cfg: dict) -> None:
        policy = cfg.get("dtype")
        quantized = isinstance(policy, dict) and "Quantized" in str(policy.get("class_name"))
        if quantized or cfg.get("quantization_config") is not None:
            self.refuse("is quantized; only float weights are supported")
        if cfg.get("lora_rank"):
            self.refuse("has LoRA weights (lora_rank); only plain kernels are supported")

    def activation(self, cfg: dict) -> Tuple[Optional[str], bool]:
        """(the activation to fuse, whether a Softmax follows)."""
        act = cfg.get("activation")
        if act in (None, "linear"):
            return None, False
        if act == "relu":
            return "relu", False
        if act == "softmax":
            return None, True
        self.refuse(f"has activation {act!r}; supported: 'linear', 'relu', 'softmax'")

    # -- weights, shapes and layers --------------------------------------
    def take(self, what: str, expected: Tuple[Optional[int], ...]) -> np.ndarray:
        """The next array, checked against `expected` (None: any size)."""
        index = self.used
        if index >= len(self.weights):
            self.refuse(f"needs its {what} as array {index}, but weights has only "
                        f"{len(self.weights)} arrays")
        a = np.asarray(self.weights[index])
        if a.ndim != len(expected) or any(e is not None and e != g
                                          for e, g in zip(expected, a.shape)):
            shown = "(" + ", ".join("?" if e is None else str(e) for e in expected) + \
                    ("," if len(expected) == 1 else "") + ")"
            self.refuse(f"expects its {what} (array {index}) of shape {shown}; "
                        f"got {a.shape}")
        self.used += 1
        return a

    def rank(self) -> Optional[int]:
        return None if self.shape is None else len(self.shape)

    def needs_map(self) -> Optional[int]:
        """The channels of the (H, W, C) map this layer receives (None: unknown)."""
        if self.rank() not in (None, 3):
            self.refuse(f"receives a flat input of shape {self.shape}; it needs an "
                        f"(H, W, C) map")
        return None if self.shape is None else self.shape[2]

    def add(self, cls: Any, *args: Any, spatial: bool = False, channels: Optional[int] = None,
            **kwargs: Any) -> None:
        """Build a layer (its own errors named with this Keras layer); for a
        spatial one, follow the map through it (channels: those it makes)."""
        try:
            layer = cls(*args, **kwargs)
            if spatial:
                h, w, c = self.shape if self.shape is not None else (None, None, None)
                if h is not None and w is not None and c is not None:
                    self.shape = _spatial(self.layout,
                                          layer.output_shape(_map_shape(self.layout, h, w, c)))
                else:
                    self.shape = (None, None, channels)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{self.fn}: {self.where}: {exc}") from None
        self.layers.append(layer)

    def input_shape(self, batch_shape: Any) -> None:
        """Take the shape from a Keras batch shape ([None, H, W, C] or
        [None, F]; None: not given)."""
        if batch_shape is None:
            return
        if not isinstance(batch_shape, (list, tuple)) or len(batch_shape) not in (2, 4):
            self.refuse(f"has input shape {batch_shape!r}; only (batch, H, W, C) maps and "
                        f"(batch, features) vectors are supported")
        self.shape = tuple(None if d is None else int(d) for d in batch_shape[1:])

    def kernel(self, hwio: np.ndarray) -> np.ndarray:
        return hwio if self.layout == "NHWC" else hwio.transpose(3, 2, 0, 1)

    def softmax(self) -> None:
        nchw_map = self.rank() == 3 and self.layout == "NCHW"
        self.layers.append(Softmax(1 if nchw_map else -1))  # over the channels/features

    # -- the layers --------------------------------------------------------
    def conv(self, cfg: dict, depthwise: bool) -> None:
        self.channels_last(cfg)
        self.float_weights(cfg)
        kh, kw = self.pair(cfg, "kernel_size")
        stride = self.pair(cfg, "strides", 1)
        dilation = self.pair(cfg, "dilation_rate", 1)
        padding = str(self.value(cfg, "padding", "valid")).lower()
        if padding not in ("valid", "same"):
            self.refuse(f"has padding={padding!r}; only 'valid' and 'same' are supported")
        fused, then_softmax = self.activation(cfg)
        c = self.needs_map()
        if depthwise:
            multiplier = self.count(cfg, "depth_multiplier", 1)
            w = self.take("depthwise_kernel", (kh, kw, c, multiplier))
            c = w.shape[2]
            groups, k = c, c * multiplier
            # Output channel c * multiplier + m reads input channel c: groups of
            # `multiplier` consecutive outputs, as fastconv's grouped HWIO.
            w = w.reshape(kh, kw, 1, k)
        else:
            groups, k = self.count(cfg, "groups", 1), self.count(cfg, "filters")
            if c is not None and c % groups:
                self.refuse(f"has groups={groups}, which does not divide its {c} input "
                            f"channels")
            w = self.take("kernel", (kh, kw, None if c is None else c // groups, k))
        bias = self.take("bias", (k,)) if self.value(cfg, "use_bias", True) else None
        # fastconv's "same" is TensorFlow's: ceil(in / stride) outputs, an odd
        # total padding's extra row/column at the bottom/right.
        self.add(Conv2d, self.kernel(w), bias, stride=stride, padding=padding,
                 dilation=dilation, groups=groups, activation=fused, layout=self.layout,
                 spatial=True, channels=k)
        if then_softmax:
            self.softmax()

    def dense(self, cfg: dict) -> None:
        self.float_weights(cfg)
        units = self.count(cfg, "units")
        fused, then_softmax = self.activation(cfg)
        features = None if self.shape is None else self.shape[-1]
        w = self.take("kernel", (features, units))
        bias = self.take("bias", (units,)) if self.value(cfg, "use_bias", True) else None
        if self.rank() == 3:
            # Keras applies a Dense on a map at every pixel: a 1x1 convolution.
            self.add(Conv2d, self.kernel(w.reshape((1, 1) + w.shape)), bias,
                     activation=fused, layout=self.layout, spatial=True, channels=units)
        else:
            self.add(Linear, w, bias, activation=fused)
            self.shape = (units,)
        if then_softmax:
            self.softmax()

    def pool(self, cfg: dict, cls: Any) -> None:
        self.channels_last(cfg)
        size = self.pair(cfg, "pool_size", 2)
        stride = size if cfg.get("strides") is None else self.pair(cfg, "strides")
        padding = str(self.value(cfg, "padding", "valid")).lower()
        if padding == "valid":
            pads, ceil_mode = (0, 0), False
        elif padding == "same":
            # TensorFlow's "same" pools ignore the padding (max: it never
            # wins; average: it is not counted): ceil_mode windows with
            # count_include_pad=False, where a fixed padding gives its windows.
            found = [_same_pool_padding(k, s) for k, s in zip(size, stride)]
            if None in found:
                self.refuse(f"pools with padding='same', pool_size={size} and strides="
                            f"{stride}, where TensorFlow's padding before depends on the "
                            f"input size; fastconv reproduces 'same' pooling with strides 1 "
                            f"and an odd pool size, strides 2 and an even pool size, or a "
                            f"pool size of 1 or 2 not above the strides")
            pads, ceil_mode = (found[0], found[1]), True
        else:
            self.refuse(f"has padding={padding!r}; only 'valid' and 'same' are supported")
        kwargs = {} if cls is MaxPool2d else {"count_include_pad": False}
        self.add(cls, size, stride, pads, ceil_mode, layout=self.layout, spatial=True,
                 channels=self.needs_map(), **kwargs)

    def layer(self, index: int, record: Any) -> None:
        """Import one entry of the config's "layers"."""
        if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
            raise ValueError(f"{self.fn}: layer {index} of the config is not a "
                             f"{{'class_name': ..., 'config': {{...}}}} record: {record!r}")
        kind, cfg = record.get("class_name"), record.get("config", {})
        name = f" {cfg['name']!r}" if "name" in cfg else ""
        self.where = f"layer {index}{name} ({kind})"
        if kind == "InputLayer":
            self.input_shape(cfg.get("batch_shape", cfg.get("batch_input_shape")))
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            self.conv(cfg, depthwise=kind == "DepthwiseConv2D")
        elif kind == "Dense":
            self.dense(cfg)
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            self.pool(cfg, MaxPool2d if kind == "MaxPooling2D" else AvgPool2d)
        elif kind == "GlobalAveragePooling2D":
            self.channels_last(cfg)
            if cfg.get("keepdims"):
                self.refuse("has keepdims=True; only keepdims=False is supported")
            c = self.needs_map()
            self.add(GlobalAvgPool2d, self.layout)
            self.shape = (c,)
        elif kind == "Flatten":
            self.channels_last(cfg)
            if self.rank() != 1:  # flattening a flat input changes nothing
                # Keras flattens its NHWC maps in H, W, C order, in either layout here.
                self.add(Flatten, "HWC", layout=self.layout)
                known = self.shape is not None and None not in self.shape
                self.shape = (int(np.prod(self.shape)),) if known else (None,)
        elif kind == "Dropout":
            self.add(Dropout, self.value(cfg, "rate", 0.5))
        elif kind == "Activation":
            fused, then_softmax = self.activation(cfg)
            if fused:
                self.layers.append(ReLU())
            elif then_softmax:
                self.softmax()
        elif kind == "ReLU":
            options = {k: cfg.get(k) for k in ("max_value", "negative_slope", "threshold")}
            if options["max_value"] is not None or any(options[k] not in (None, 0)
                                                       for k in ("negative_slope", "threshold")):
                self.refuse(f"has {', '.join(f'{k}={v!r}' for k, v in options.items())}; "
                            f"only the plain ReLU (max_value=None, negative_slope=0, "
                            f"threshold=0) is supported")
            self.layers.append(ReLU())
        elif kind == "Softmax":
            axis = cfg.get("axis", -1)
            last = -1 if self.rank() is None else self.rank()
            if axis not in (-1, [-1], last, [last]):
                self.refuse(f"has axis={axis!r}; only the last axis (the channels or "
                            f"features, -1) is supported")
            self.softmax()
        else:
            self.refuse(f"has no fastconv.nn equivalent; supported layers: {_KERAS_SUPPORTED}")


def _keras_layers(config: Any) -> Tuple[List[Any], Any]:
    """The "layers" of a keras.Sequential config (a dict, its JSON text, or
    model.to_json()'s wrapper around it) and its build_input_shape."""
    fn = "from_keras"
    if isinstance(config, (str, bytes, bytearray)):
        try:
            config = json.loads(config)
        except ValueError as exc:
            raise ValueError(f"{fn}: config is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise TypeError(f"{fn}: config must be a keras.Sequential config (a dict or its JSON "
                        f"text) or a Keras model; got {type(config).__name__}")
    if "layers" not in config and isinstance(config.get("config"), dict):
        if config.get("class_name") not in (None, "Sequential"):  # model.to_json()
            raise ValueError(f"{fn}: config describes a {config['class_name']} model; only "
                             f"keras.Sequential models are supported")
        config = config["config"]
    if "input_layers" in config or "output_layers" in config:
        raise ValueError(f"{fn}: config describes a functional Keras model; only "
                         f"keras.Sequential models are supported")
    layers = config.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"{fn}: config has no 'layers' list; expected what a "
                         f"keras.Sequential's get_config() returns")
    return layers, config.get("build_input_shape")


def from_keras(config: Any, weights: Optional[Sequence[Any]] = None,
               layout: str = "NHWC") -> Sequential:
    """A fastconv.nn.Sequential computing what a keras.Sequential computes,
    from its architecture and weights (Keras itself is not needed).

    Supported layers: InputLayer, Conv2D and DepthwiseConv2D (padding "valid"
    or "same", strides, dilation, groups, bias), Dense, Activation, ReLU,
    Softmax (last axis), Flatten, Dropout, MaxPooling2D, AveragePooling2D and
    GlobalAveragePooling2D (keepdims=False); activations "linear", "relu"
    (fused into the layer) and "softmax" (a Softmax after it); channels_last
    data only. Kernels are HWIO as Keras keeps them (OIHW for layout "NCHW"),
    Dense weights (in, out), and Flatten takes Keras's H, W, C order in either
    layout, so the Dense weights after it keep their meaning. A Dense on a map
    acts at every pixel, as in Keras (a 1x1 Conv2d).

    Convolutions pad "same" as TensorFlow does (an odd total's extra row or
    column at the bottom/right, for any stride). TensorFlow's "same" pooling
    ignores the padding; it is reproduced exactly (a ceil_mode pool,
    count_include_pad=False) where the padding before does not depend on the
    input size: strides 1 with an odd pool size, strides 2 with an even one,
    or a pool size of 1 or 2 not above the strides. Other "same" pools are
    refused. (A map smaller than a pool's padded window, which TensorFlow
    still pools, makes the fastconv pool raise.)

    Parameters
    ----------
    config : dict, str or Keras model
        What ``model.get_config()`` returns for a keras.Sequential, or its
        JSON text, or ``model.to_json()``; or the model itself (anything with
        get_config() and get_weights()).
    weights : sequence of array_like, optional
        ``model.get_weights()``: for each layer in turn its kernel, then its
        bias if it has one. Taken from the model when `config` is one.
    layout : "NHWC" or "NCHW"
        The layout of the returned model's inputs and maps.

    Returns
    -------
    Sequential

    Raises
    ------
    ValueError
        A layer or option with no exact fastconv equivalent, or weights that
        do not fit the config (too few, too many, a wrong shape), named with
        the layer's index, Keras name and class.
    TypeError
        config or weights of the wrong type; weights that are not float32 or
        float64.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> config = {"layers": [
    ...     {"class_name": "InputLayer", "config": {"batch_shape": [None, 8, 8, 3]}},
    ...     {"class_name": "Conv2D", "config": {"name": "conv", "filters": 4,
    ...      "kernel_size": [3, 3], "padding": "same", "activation": "relu"}},
    ...     {"class_name": "MaxPooling2D", "config": {"name": "pool"}},
    ...     {"class_name": "Flatten", "config": {"name": "flatten"}},
    ...     {"class_name": "Dense", "config": {"name": "dense", "units": 10,
    ...      "activation": "softmax"}}]}
    >>> rng = np.random.default_rng(0)
    >>> weights = [rng.standard_normal(shape).astype(np.float32)
    ...            for shape in [(3, 3, 3, 4), (4,), (4 * 4 * 4, 10), (10,)]]
    >>> model = nn.from_keras(config, weights)
    >>> model(np.ones((2, 8, 8, 3), np.float32)).shape
    (2, 10)

    With Keras installed, ``nn.from_keras(keras_model)`` reads both from the
    model; without it, ``nn.from_keras(json_text, arrays)`` with the text of
    ``model.to_json()`` and the list of ``model.get_weights()`` saved earlier.
    """
    fn = "from_keras"
    layout = layout_name(fn, layout)
    if hasattr(config, "get_config") and hasattr(config, "get_weights"):
        model = config
        config = model.get_config()
        if weights is None:
            weights = model.get_weights()
    layers, build_input_shape = _keras_layers(config)
    if weights is None:
        raise TypeError(f"{fn}: weights is required with a config: the list "
                        f"model.get_weights() returns")
    if isinstance(weights, (str, bytes, np.ndarray)) or hasattr(weights, "keys") \
            or not hasattr(weights, "__iter__"):
        raise TypeError(f"{fn}: weights must be a sequence of arrays in the order "
                        f"model.get_weights() returns them; got {type(weights).__name__}")
    weights = list(weights)
    imp = _KerasImport(weights, layout)
    if layers and isinstance(layers[0], dict) and layers[0].get("class_name") != "InputLayer":
        # Without an InputLayer: the model's build_input_shape, or the input
        # a built first layer records (Keras 3) or was given (Keras 2).
        first, build = layers[0].get("config"), layers[0].get("build_config")
        imp.where = "the config's build_input_shape"
        imp.input_shape(build_input_shape)
        imp.where = "layer 0"
        if imp.shape is None and isinstance(build, dict):
            imp.input_shape(build.get("input_shape"))
        if imp.shape is None and isinstance(first, dict):
            imp.input_shape(first.get("batch_input_shape"))
    for index, record in enumerate(layers):
        imp.layer(index, record)
    if imp.used != len(weights):
        raise ValueError(f"{fn}: weights has {len(weights)} arrays but the config's layers "
                         f"use {imp.used}; array {imp.used} (shape "
                         f"{np.shape(weights[imp.used])}) and any after it belong to no layer")
    return Sequential(*imp.layers, layout=layout)
