"""Sequential models, and the conversion of a classifier into a fully
convolutional network."""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from fastconv._fc import fc_to_conv
from fastconv._validate import layout_name
from fastconv.nn.layers import (Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer, Linear, ReLU,
                                Shape, Softmax, _spatial)

__all__ = ["Sequential", "to_fully_convolutional"]


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

    def __call__(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
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
        # (imported here: serialize builds Sequentials, so it imports this module)
        from fastconv.nn import serialize
        serialize.save(self, path)

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
            map_shape = (1, 1, layer.out_features)
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
