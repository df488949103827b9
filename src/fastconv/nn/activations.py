"""Activation layers: the activations a convolution's store applies
(activation= on Conv2d, Linear, ConvTranspose2d), as layers of their own.
They run the kernels' own code (csrc/kernels/activation.h), so a fused
activation gives bitwise the result of the unfused one; NaN stays NaN."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fastconv import _core
from fastconv._config import get_flush_denormals, resolve_threads
from fastconv._validate import activation_spec, float_arrays
from fastconv.nn.layers import Layer, Shape

__all__ = ["Activation", "ReLU6", "Sigmoid", "Tanh", "SiLU", "HardSigmoid", "HardSwish",
           "LeakyReLU", "Clip"]


class Activation(Layer):
    """An activation by name, as conv2d's activation= takes it: "relu",
    "relu6", "sigmoid", "tanh", "silu", "hard_sigmoid", "hard_swish",
    "leaky_relu", ("leaky_relu", slope), ("clip", low, high) or
    ("hard_sigmoid", alpha, beta) (ONNX's clip(alpha * x + beta, 0, 1); the
    default is torch's hardsigmoid, relu6(x + 3) / 6).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.Activation("relu6")(np.array([-1.0, 3.0, 9.0]))
    array([0., 3., 6.])
    """

    def __init__(self, activation: Any, name: Optional[str] = None) -> None:
        fn = type(self).__name__
        super().__init__(name)
        self._spec = activation_spec(fn, activation)
        if self._spec is None:
            raise ValueError(f"{fn}: activation must name an activation; got None")
        self.activation = activation

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        fn = type(self).__name__
        _, arr = float_arrays(fn, x=x)
        xa = np.ascontiguousarray(arr["x"])
        y = np.empty_like(xa)
        _core.activate(xa, y, self._spec, get_flush_denormals(), resolve_threads(fn, num_threads))
        return y

    def output_shape(self, shape: Shape) -> Shape:
        return tuple(shape)

    def _describe(self):
        return {"activation": self.activation}, {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.activation!r})"


class _Named(Activation):
    """An activation with a fixed name (and no parameters)."""

    kind = ""

    def __init__(self, name: Optional[str] = None) -> None:
        super().__init__(self.kind, name=name)

    def _describe(self):
        return {}, {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU6(_Named):
    """min(max(x, 0), 6)."""
    kind = "relu6"


class Sigmoid(_Named):
    """1 / (1 + exp(-x))."""
    kind = "sigmoid"


class Tanh(_Named):
    kind = "tanh"


class SiLU(_Named):
    """x * sigmoid(x)."""
    kind = "silu"


class HardSwish(_Named):
    """x * relu6(x + 3) / 6."""
    kind = "hard_swish"


class HardSigmoid(Activation):
    """clip(alpha * x + beta, 0, 1); the defaults are torch's hardsigmoid."""

    def __init__(self, alpha: float = 1 / 6, beta: float = 0.5,
                 name: Optional[str] = None) -> None:
        super().__init__(("hard_sigmoid", alpha, beta), name=name)
        self.alpha, self.beta = self._spec[1], self._spec[2]

    def _describe(self):
        return {"alpha": self.alpha, "beta": self.beta}, {}

    def __repr__(self) -> str:
        return f"HardSigmoid(alpha={self.alpha}, beta={self.beta})"


class LeakyReLU(Activation):
    """x if x >= 0 else negative_slope * x."""

    def __init__(self, negative_slope: float = 0.01, name: Optional[str] = None) -> None:
        super().__init__(("leaky_relu", negative_slope), name=name)
        self.negative_slope = self._spec[1]

    def _describe(self):
        return {"negative_slope": self.negative_slope}, {}

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"


class Clip(Activation):
    """min(max(x, low), high) (ONNX's Clip, torch's clamp/hardtanh)."""

    def __init__(self, low: float, high: float, name: Optional[str] = None) -> None:
        super().__init__(("clip", low, high), name=name)
        self.low, self.high = self._spec[1], self._spec[2]

    def _describe(self):
        return {"low": self.low, "high": self.high}, {}

    def __repr__(self) -> str:
        return f"Clip(low={self.low}, high={self.high})"
