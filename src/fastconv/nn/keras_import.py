"""The import of a Keras model (keras.Sequential, or a functional
keras.Model) from its config and weights, in Keras / TensorFlow conventions
(Keras itself is not needed)."""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

import numpy as np

from fastconv._validate import _is_int, clip, layout_name, short_repr
from fastconv.nn.conv_transpose import ConvTranspose2d
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer,
                                Linear, MaxPool2d, ReLU, Softmax, _map_shape, _spatial)
from fastconv.nn.model import Model, Sequential
from fastconv.nn.normalization import BatchNorm2d
from fastconv.nn.resize import Upsample
from fastconv.nn.structural import Add, Concatenate, Cropping2d, Multiply, ZeroPad2d
from fastconv.nn.symbolic import Input

__all__ = ["from_keras"]

_KERAS_SUPPORTED = ("InputLayer, Conv2D, DepthwiseConv2D, Conv2DTranspose, Dense, "
                    "BatchNormalization, Activation, ReLU, Softmax, Flatten, Dropout, "
                    "MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, UpSampling2D, "
                    "ZeroPadding2D, Cropping2D; in functional models also Add, Multiply, "
                    "Concatenate")


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

    def amounts(self, cfg: dict, key: str) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """ZeroPadding2D's and Cropping2D's ((top, bottom), (left, right))."""
        v = self.value(cfg, key)
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(q) and q >= 0 for q in p)
            for p in v)
        if not ok:
            self.refuse(f"has {key}={short_repr(v)}; expected ((top, bottom), (left, right)) "
                        f"of ints >= 0")
        (t, b), (left, r) = v
        return (int(t), int(b)), (int(left), int(r))

    # -- the layers --------------------------------------------------------
    def kernel_options(self, cfg: dict) -> Tuple[int, int, Tuple[int, int], Tuple[int, int], Any]:
        """kh, kw, stride, dilation, padding of a convolution's config (channels
        last, float weights)."""
        self.channels_last(cfg)
        self.float_weights(cfg)
        kh, kw = self.pair(cfg, "kernel_size")
        return (kh, kw, self.pair(cfg, "strides", 1), self.pair(cfg, "dilation_rate", 1),
                self.padding(cfg))

    def conv_transpose(self, cfg: dict) -> None:
        kh, kw, stride, dilation, padding = self.kernel_options(cfg)
        if cfg.get("output_padding") is not None:
            self.refuse(f"has output_padding={short_repr(cfg['output_padding'])}; only None "
                        f"(Keras's output size for 'same' and 'valid') is supported")
        fused, then_softmax = self.activation(cfg)
        c, k = self.needs_map(), self.count(cfg, "filters")
        w = self.take("kernel", (kh, kw, k, c))  # TensorFlow's (kh, kw, out, in)
        bias = self.take("bias", (k,)) if self.value(cfg, "use_bias", True) else None
        self.add(ConvTranspose2d, w if self.layout == "NHWC" else w.transpose(3, 2, 0, 1),
                 bias, stride=stride, padding=padding, dilation=dilation, activation=fused,
                 layout=self.layout, spatial=True, channels=k)
        if then_softmax:
            self.softmax()

    def batch_norm(self, cfg: dict) -> None:
        self.float_weights(cfg)
        axis = cfg.get("axis", -1)
        if axis not in (-1, 3, [-1], [3]):
            self.refuse(f"has axis={short_repr(axis)}; only the channels (-1) are supported")
        if cfg.get("renorm"):
            self.refuse("has renorm=True; only plain batch normalization is supported")
        c = self.needs_map()
        eps = self.value(cfg, "epsilon", 1e-3)
        gamma = self.take("gamma", (c,)) if self.value(cfg, "scale", True) else None
        beta = self.take("beta", (c,)) if self.value(cfg, "center", True) else None
        mean = self.take("moving_mean", (c,))
        var = self.take("moving_variance", (mean.shape[0],))
        gamma = np.ones_like(mean) if gamma is None else gamma
        beta = np.zeros_like(mean) if beta is None else beta
        self.add(BatchNorm2d, gamma, beta, mean, var, eps, layout=self.layout, spatial=True,
                 channels=mean.shape[0])

    def upsampling(self, cfg: dict) -> None:
        self.channels_last(cfg)
        size = self.pair(cfg, "size", 2)
        mode = cfg.get("interpolation", "nearest")
        if mode not in ("nearest", "bilinear"):
            self.refuse(f"has interpolation={short_repr(mode)}; only 'nearest' and "
                        f"'bilinear' are supported")
        # Keras's bilinear resize is half-pixel (align_corners False); nearest
        # at an integer factor repeats each pixel, as torch's nearest.
        self.add(Upsample, scale_factor=size, mode=mode,
                 align_corners=False if mode == "bilinear" else None, layout=self.layout,
                 spatial=True, channels=self.needs_map())

    def conv(self, cfg: dict, depthwise: bool) -> None:
        kh, kw, stride, dilation, padding = self.kernel_options(cfg)
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
        kind, cfg = self.record(index, record)
        self.dispatch(kind, cfg)

    def record(self, index: int, record: Any) -> Tuple[Any, dict]:
        """(class name, config) of an entry of "layers", which `where` now names."""
        if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
            raise ValueError(f"{self.fn}: layer {index} of the config is not a "
                             f"{{'class_name': ..., 'config': {{...}}}} record: "
                             f"{short_repr(record)}")
        kind, cfg = record.get("class_name"), record.get("config", {})
        name = f" {short_repr(cfg['name'])}" if "name" in cfg else ""
        self.where = f"layer {index}{name} ({_name(kind)})"
        return kind, cfg

    def dispatch(self, kind: Any, cfg: dict) -> None:
        """Add the layers of one Keras layer, following self.shape through them."""
        if kind == "InputLayer":
            self.input_shape(cfg.get("batch_shape", cfg.get("batch_input_shape")))
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            self.conv(cfg, depthwise=kind == "DepthwiseConv2D")
        elif kind == "Dense":
            self.dense(cfg)
        elif kind == "Conv2DTranspose":
            self.conv_transpose(cfg)
        elif kind == "BatchNormalization":
            self.batch_norm(cfg)
        elif kind == "UpSampling2D":
            self.upsampling(cfg)
        elif kind in ("ZeroPadding2D", "Cropping2D"):
            self.channels_last(cfg)
            is_pad = kind == "ZeroPadding2D"
            amounts = self.amounts(cfg, "padding" if is_pad else "cropping")
            self.add(ZeroPad2d if is_pad else Cropping2d, amounts, layout=self.layout,
                     spatial=True, channels=self.needs_map())
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


def _keras_layers(config: Any) -> Tuple[List[Any], Any, Optional[dict]]:
    """The "layers" of a keras.Sequential or functional model's config (a
    dict, its JSON text, or model.to_json()'s wrapper around it), the
    Sequential's build_input_shape, and the functional model's config (None
    for a Sequential)."""
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
    wrapper = None
    if "layers" not in config and isinstance(config.get("config"), dict):
        wrapper = config.get("class_name")
        if config.get("class_name") not in (None, "Sequential", "Functional", "Model"):
            raise ValueError(f"{fn}: config describes a {_name(config['class_name'])} model; "
                             f"only keras.Sequential and functional models are supported")
        config = config["config"]
    layers = config.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"{fn}: config has no 'layers' list; expected what a "
                         f"keras.Sequential's or functional model's get_config() returns")
    functional = "input_layers" in config or "output_layers" in config or \
        wrapper in ("Functional", "Model")
    return layers, config.get("build_input_shape"), config if functional else None


def _tensor_keys(fn: str, value: Any, what: str) -> List[Tuple[str, int, int]]:
    """input_layers / output_layers: a [name, node, tensor] triple or a list of them."""
    def triple(v: Any) -> bool:
        return isinstance(v, (list, tuple)) and len(v) == 3 and isinstance(v[0], str) \
            and _is_int(v[1]) and _is_int(v[2])

    items = [value] if triple(value) else value
    if not isinstance(items, (list, tuple)) or not items or not all(triple(v) for v in items):
        raise ValueError(f"{fn}: config's {what} must be a [layer name, node index, tensor "
                         f"index] triple or a non-empty list of them; got {short_repr(value)}")
    return [(v[0], int(v[1]), int(v[2])) for v in items]


class _Functional:
    """The import of a functional Keras model: each layer of the config is
    made once (its weights, in the order get_weights() gives them) and
    applied at each of its inbound nodes to the tensors they name."""

    fn = "from_keras"
    merges = ("Add", "Multiply", "Concatenate")

    def __init__(self, config: dict, weights: List[Any], layout: str) -> None:
        self.imp = _KerasImport(weights, layout)
        self.layout = layout
        # (layer name, node index, tensor index) -> (symbolic tensor, Keras shape)
        self.tensors: Dict[Tuple[str, int, int], Tuple[Any, Any]] = {}
        self.config = config

    def refuse(self, why: str) -> NoReturn:
        self.imp.refuse(why)

    def source(self, arg: Any) -> Tuple[Any, Any]:
        """The tensor a __keras_tensor__ argument names."""
        cfg = arg.get("config") if isinstance(arg, dict) else None
        history = cfg.get("keras_history") if isinstance(cfg, dict) else None
        if not (isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__"
                and isinstance(history, (list, tuple)) and len(history) == 3
                and isinstance(history[0], str) and _is_int(history[1])
                and _is_int(history[2])):
            self.refuse(f"is applied to {short_repr(arg)}; expected Keras tensors "
                        f"({{'class_name': '__keras_tensor__', ...}})")
        key = (history[0], int(history[1]), int(history[2]))
        if key not in self.tensors:
            self.refuse(f"reads tensor {short_repr(list(key))}, which no earlier layer of the "
                        f"config makes")
        return self.tensors[key]

    def arguments(self, node: Any) -> List[Tuple[Any, Any]]:
        """The tensors an inbound node applies its layer to."""
        # (get_config() gives tuples where its JSON has lists)
        if not isinstance(node, dict) or not isinstance(node.get("args"), (list, tuple)) \
                or len(node["args"]) != 1:
            self.refuse(f"has an inbound node {short_repr(node)}; expected {{'args': [tensor "
                        f"or list of tensors], 'kwargs': {{...}}}}")
        kwargs = node.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            self.refuse(f"has an inbound node whose kwargs are {short_repr(kwargs)}; expected "
                        f"a dict")
        extra = {k: v for k, v in kwargs.items() if v is not None
                 and not (k == "training" and v is False)}
        if extra:
            self.refuse(f"is called with {short_repr(extra)}; only its tensors are supported")
        arg = node["args"][0]
        items = arg if isinstance(arg, (list, tuple)) else [arg]
        if not items:
            self.refuse("has an inbound node with no tensor")
        return [self.source(a) for a in items]

    def merge(self, kind: str, cfg: dict, shapes: List[Any]) -> Tuple[Layer, Any]:
        """A Add, Multiply or Concatenate layer and its output's Keras shape."""
        if len(shapes) < 2:
            self.refuse(f"merges {len(shapes)} tensor; it needs 2 or more")
        if kind != "Concatenate":
            if any(s != shapes[0] for s in shapes):
                self.refuse(f"merges shapes {', '.join(str(s) for s in shapes)}; fastconv's "
                            f"{kind} takes inputs of one shape (no broadcasting)")
            return (Add() if kind == "Add" else Multiply()), shapes[0]
        rank = len(shapes[0]) + 1
        axis = self.imp.value(cfg, "axis", -1)
        if not _is_int(axis) or not -rank <= axis < rank or axis % rank == 0:
            self.refuse(f"has axis={short_repr(axis)}; expected an axis other than the batch "
                        f"of its {rank}-D inputs")
        axis = int(axis) % rank
        if any(len(s) != rank - 1 for s in shapes):
            self.refuse(f"joins tensors of different ranks: {shapes}")
        size = None if any(s[axis - 1] is None for s in shapes) else \
            sum(s[axis - 1] for s in shapes)
        out = tuple(shapes[0][:axis - 1]) + (size,) + tuple(shapes[0][axis:])
        if rank == 4 and self.layout == "NCHW":
            axis = {1: 2, 2: 3, 3: 1}[axis]  # Keras's NHWC axis in NCHW maps
        return Concatenate(axis), out

    def name(self, layers: List[Layer], name: str) -> None:
        """Name the fastconv layers of a Keras layer after it (a softmax that
        a layer's activation adds: name_softmax)."""
        for i, layer in enumerate(layers):
            layer._name = name if i == 0 else f"{name}_{type(layer).__name__.lower()}"
            layer._name_given = True

    def build(self) -> Model:
        imp, config = self.imp, self.config
        inputs: Dict[str, Any] = {}
        for index, record in enumerate(config["layers"]):
            kind, cfg = imp.record(index, record)
            name = record.get("name", cfg.get("name"))
            if not isinstance(name, str) or not name:
                self.refuse("has no name; a functional model's layers are named")
            if kind == "InputLayer":
                imp.shape = None
                imp.input_shape(cfg.get("batch_shape", cfg.get("batch_input_shape")))
                if imp.shape is None:
                    self.refuse("has no batch_shape")
                shape = imp.shape
                t = Input(shape if len(shape) == 1 or self.layout == "NHWC"
                          else (shape[2], shape[0], shape[1]), name=name)
                inputs[name] = t
                self.tensors[(name, 0, 0)] = (t, shape)
                continue
            nodes = record.get("inbound_nodes")
            if not isinstance(nodes, (list, tuple)) or not nodes:
                self.refuse("is applied to no tensor (no inbound_nodes); fastconv imports the "
                            "layers of the model's graph")
            made: Optional[List[Layer]] = None
            first_shapes = None
            for k, node in enumerate(nodes):
                args = self.arguments(node)
                shapes = [shape for _, shape in args]
                if made is None:
                    if kind in self.merges:
                        layer, out_shape = self.merge(kind, cfg, shapes)
                        made = [layer]
                    else:
                        imp.shape = shapes[0]
                        start = len(imp.layers)
                        imp.dispatch(kind, cfg)  # (a layer it does not know: refused here)
                        if len(args) != 1:
                            self.refuse(f"is applied to {len(args)} tensors; it takes one")
                        made, out_shape = imp.layers[start:], imp.shape
                    self.name(made, name)
                    first_shapes = shapes
                elif shapes != first_shapes:
                    self.refuse(f"is applied to shapes {shapes} at node {k} but {first_shapes} "
                                f"at node 0; fastconv shares a layer between inputs of one "
                                f"shape")
                try:
                    if kind in self.merges:
                        t = made[0]([a for a, _ in args])
                    else:
                        t = args[0][0]
                        for layer in made:
                            t = layer(t)
                except (TypeError, ValueError) as exc:
                    self.refuse(f"cannot be applied to its inputs: {clip(str(exc))}")
                self.tensors[(name, k, 0)] = (t, out_shape)
        model_inputs = [self.named(key, "input_layers") for key in
                        _tensor_keys(self.fn, config.get("input_layers"), "input_layers")]
        outputs = [self.named(key, "output_layers") for key in
                   _tensor_keys(self.fn, config.get("output_layers"), "output_layers")]
        if imp.used != len(imp.weights):
            raise ValueError(f"{self.fn}: weights has {len(imp.weights)} arrays but the "
                             f"config's layers use {imp.used}; array {imp.used} (shape "
                             f"{np.shape(imp.weights[imp.used])}) and any after it belong to "
                             f"no layer")
        return Model(model_inputs, outputs if len(outputs) > 1 else outputs[0],
                     layout=self.layout, name=config.get("name") if isinstance(
                         config.get("name"), str) and config.get("name") else None)

    def named(self, key: Tuple[str, int, int], what: str) -> Any:
        if key not in self.tensors:
            raise ValueError(f"{self.fn}: config's {what} names tensor {list(key)}, which no "
                             f"layer of the config makes")
        return self.tensors[key][0]


def from_keras(config: Any, weights: Optional[Sequence[Any]] = None,
               layout: str = "NHWC") -> Model:
    """A fastconv.nn.Sequential computing what a keras.Sequential computes,
    or a fastconv.nn.Model computing what a functional Keras model computes,
    from its architecture and weights (Keras itself is not needed).

    Supported layers: InputLayer, Conv2D and DepthwiseConv2D (padding "valid"
    or "same", strides, dilation, groups, bias), Dense, Activation, ReLU,
    Softmax (last axis), Flatten, Dropout, MaxPooling2D, AveragePooling2D and
    GlobalAveragePooling2D (keepdims=False), Conv2DTranspose (padding "valid"
    or "same", output_padding None), BatchNormalization (over the channels;
    Model folds it into the convolution before it), UpSampling2D (nearest,
    bilinear), ZeroPadding2D and Cropping2D; activations "linear", "relu"
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

    A functional model (a config with input_layers, output_layers and each
    layer's inbound_nodes) becomes an nn.Model with the same inputs and
    outputs (in order, named as in Keras), its layers named as Keras names
    them; Add, Multiply (of inputs of one shape) and Concatenate join
    tensors, a layer applied at several nodes shares its weights. Nested
    models are refused.

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
    Sequential (a keras.Sequential) or Model (a functional model)

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
    layers, build_input_shape, functional = _keras_layers(config)
    if weights is None:
        raise TypeError(f"{fn}: weights is required with a config: the list "
                        f"model.get_weights() returns")
    if isinstance(weights, (str, bytes, np.ndarray)) or hasattr(weights, "keys") \
            or not hasattr(weights, "__iter__"):
        raise TypeError(f"{fn}: weights must be a sequence of arrays in the order "
                        f"model.get_weights() returns them; got {type(weights).__name__}")
    weights = list(weights)
    if functional is not None:
        try:
            return _Functional(functional, weights, layout).build()
        except RecursionError:  # (a config nested deeper than any Keras writes)
            raise ValueError(f"{fn}: the config is nested too deeply") from None
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
