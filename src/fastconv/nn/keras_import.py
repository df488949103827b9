"""The import of a keras.Sequential from its config and weights, in Keras /
TensorFlow conventions (Keras itself is not needed)."""
from __future__ import annotations

import json
import math
from typing import Any, List, NoReturn, Optional, Sequence, Tuple

import numpy as np

from fastconv._validate import _is_int, clip, layout_name, short_repr
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer,
                                Linear, MaxPool2d, ReLU, Softmax, _map_shape, _spatial)
from fastconv.nn.model import Sequential

__all__ = ["from_keras"]

_KERAS_SUPPORTED = ("InputLayer, Conv2D, DepthwiseConv2D, Dense, Activation, ReLU, Softmax, "
                    "Flatten, Dropout, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D")


def _name(value: Any) -> str:
    """A class name from the config as it is, or its short repr (a long or
    non-string one)."""
    return value if isinstance(value, str) and len(value) <= 80 else short_repr(value)


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
            self.refuse(f"has {key}={short_repr(v)}; expected an int >= 1")
        return int(v)

    def pair(self, cfg: dict, key: str, default: Any = ...) -> Tuple[int, int]:
        v = self.value(cfg, key, default)
        items = list(v) if isinstance(v, (list, tuple)) else [v, v]
        if len(items) != 2 or any(isinstance(i, bool) or not isinstance(i, (int, np.integer))
                                  or i < 1 for i in items):
            self.refuse(f"has {key}={short_repr(v)}; expected an int >= 1 or a pair of them")
        return int(items[0]), int(items[1])

    def channels_last(self, cfg: dict) -> None:
        data_format = cfg.get("data_format")
        if data_format not in (None, "channels_last"):
            self.refuse(f"has data_format={short_repr(data_format)}; only 'channels_last' "
                        f"(Keras's default, NHWC) is supported")

    def float_weights(self, cfg: dict) -> None:
        policy = cfg.get("dtype")
        kind = policy.get("class_name") if isinstance(policy, dict) else None
        quantized = isinstance(kind, str) and "Quantized" in kind
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
        self.refuse(f"has activation {short_repr(act)}; supported: 'linear', 'relu', 'softmax'")

    def padding(self, cfg: dict) -> str:
        padding = self.value(cfg, "padding", "valid")
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            self.refuse(f"has padding={short_repr(padding)}; only 'valid' and 'same' are "
                        f"supported")
        return padding.lower()

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
            raise type(exc)(f"{self.fn}: {self.where}: {clip(str(exc))}") from None
        self.layers.append(layer)

    def input_shape(self, batch_shape: Any) -> None:
        """Take the shape from a Keras batch shape ([None, H, W, C] or
        [None, F]; None: not given)."""
        if batch_shape is None:
            return
        if not isinstance(batch_shape, (list, tuple)) or len(batch_shape) not in (2, 4):
            self.refuse(f"has input shape {short_repr(batch_shape)}; only (batch, H, W, C) "
                        f"maps and (batch, features) vectors are supported")
        if not all(d is None or (_is_int(d) and d >= 1) for d in batch_shape[1:]):
            self.refuse(f"has input shape {short_repr(batch_shape)}; expected sizes that are "
                        f"ints >= 1 or None")
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
        padding = self.padding(cfg)
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
        padding = self.padding(cfg)
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
        kwargs = {} if cls is MaxPool2d else {"count_include_pad": False}
        self.add(cls, size, stride, pads, ceil_mode, layout=self.layout, spatial=True,
                 channels=self.needs_map(), **kwargs)

    def layer(self, index: int, record: Any) -> None:
        """Import one entry of the config's "layers"."""
        if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
            raise ValueError(f"{self.fn}: layer {index} of the config is not a "
                             f"{{'class_name': ..., 'config': {{...}}}} record: "
                             f"{short_repr(record)}")
        kind, cfg = record.get("class_name"), record.get("config", {})
        name = f" {short_repr(cfg['name'])}" if "name" in cfg else ""
        self.where = f"layer {index}{name} ({_name(kind)})"
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
                self.shape = (math.prod(self.shape),) if known else (None,)
        elif kind == "Dropout":
            rate = self.value(cfg, "rate", 0.5)
            if isinstance(rate, bool) or not isinstance(rate, (int, float, np.number)):
                self.refuse(f"has rate={short_repr(rate)}; expected a number in [0, 1)")
            self.add(Dropout, rate)
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
                shown = ", ".join(f"{k}={short_repr(v)}" for k, v in options.items())
                self.refuse(f"has {shown}; only the plain ReLU (max_value=None, negative_slope=0, "
                            f"threshold=0) is supported")
            self.layers.append(ReLU())
        elif kind == "Softmax":
            axis = cfg.get("axis", -1)
            last = -1 if self.rank() is None else self.rank()
            if axis not in (-1, [-1], last, [last]):
                self.refuse(f"has axis={short_repr(axis)}; only the last axis (the channels "
                            f"or features, -1) is supported")
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
        except RecursionError:
            raise ValueError(f"{fn}: config is JSON nested too deeply") from None
        except ValueError as exc:
            raise ValueError(f"{fn}: config is not valid JSON ({clip(str(exc))})") from None
    if not isinstance(config, dict):
        raise TypeError(f"{fn}: config must be a keras.Sequential config (a dict or its JSON "
                        f"text) or a Keras model; got {type(config).__name__}")
    if "layers" not in config and isinstance(config.get("config"), dict):
        if config.get("class_name") not in (None, "Sequential"):  # model.to_json()
            raise ValueError(f"{fn}: config describes a {_name(config['class_name'])} model; "
                             f"only keras.Sequential models are supported")
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
    try:
        for index, record in enumerate(layers):
            imp.layer(index, record)
    except RecursionError:  # (a config nested deeper than any Keras writes)
        raise ValueError(f"{fn}: {imp.where} has a config nested too deeply") from None
    if imp.used != len(weights):
        raise ValueError(f"{fn}: weights has {len(weights)} arrays but the config's layers "
                         f"use {imp.used}; array {imp.used} (shape "
                         f"{np.shape(weights[imp.used])}) and any after it belong to no layer")
    return Sequential(*imp.layers, layout=layout)
