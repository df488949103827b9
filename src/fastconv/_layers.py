"""Reusable layers whose weights are packed once, at construction."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fastconv._config import get_flush_denormals, get_winograd, resolve_threads
from fastconv._conv import ConvWeights, GemmWeights, IntPair, Padding, input_array
from fastconv._validate import (activation_is_relu, check_ndim, check_out, float_arrays,
                                int_pair, padding_amounts)

__all__ = ["Conv2d", "Linear"]

# Input shapes whose checked plan a Conv2d keeps (a network sees few).
PLAN_CACHE_SIZE = 32


class Conv2d:
    """A convolution layer: conv2d with fixed weights, packed once.

    Parameters
    ----------
    weight, bias, stride, padding, dilation, groups, activation, layout
        As for fastconv.conv2d, and checked the same way (options now, the
        input at each call).

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
                 activation: Optional[str] = None, layout: str = "NHWC") -> None:
        fn = "Conv2d"
        # The options are checked now, so that a bad one fails at
        # construction rather than at the first call.
        self.stride = int_pair(fn, "stride", stride)
        self.dilation = int_pair(fn, "dilation", dilation)
        self._weights = ConvWeights(fn, weight, bias, groups, layout, resolve_threads(fn, None),
                                    winograd_now=True, stride=self.stride,
                                    dilation=self.dilation)
        padding_amounts(fn, padding, (1, 1), (1, 1), self.stride, self.dilation)
        self.padding = padding
        activation_is_relu(fn, activation)
        self.activation = activation
        self._plans: dict = {}

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
        "winograd-f2x2-3x3", "gemm", "igemm" or "depthwise". An input too
        small for Winograd's transforms to pay runs "igemm" instead; plan()
        tells what a given input runs."""
        return self._weights.algorithm

    @property
    def weight(self) -> np.ndarray:
        """A new array of the weights (HWIO for "NHWC", OIHW for "NCHW"),
        read back from the packed ones: the layer keeps no other copy."""
        return self._weights.weight()

    @property
    def bias(self) -> Optional[np.ndarray]:
        """A new array of the bias, or None."""
        return self._weights.bias

    def __call__(self, x: Any, out: Optional[np.ndarray] = None,
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
        weights = self._weights
        xa = input_array("Conv2d", x, weights.dtype)
        # The checks of an input shape are done once: its plan is kept (the
        # flush and Winograd settings are part of the key: the plan holds them).
        key = (xa.shape, get_flush_denormals(), get_winograd())
        plan = self._plans.get(key)
        if plan is None:
            plan = weights.plan(xa.shape, self.stride, self.padding, self.dilation,
                                self.activation)
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        nthreads = resolve_threads("Conv2d", num_threads)
        if out is not None:
            out = check_out("Conv2d", out, plan.result, weights.dtype, {"x": (x, xa)})
        return weights.execute(plan, xa, out, nthreads)

    def __repr__(self) -> str:
        w = self._weights
        return (f"Conv2d({w.c}, {w.k}, kernel={w.kh}x{w.kw}, stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}, groups={w.groups}, "
                f"bias={w.has_bias}, activation={self.activation!r}, layout={w.layout!r}, "
                f"dtype={w.dtype})")


class Linear:
    """A fully-connected layer on (N, in_features) inputs, weights packed once.

    Parameters
    ----------
    weight : array_like, float32 or float64
        (in_features, out_features) for weight_layout "IO" (Keras:
        y = x @ W) or (out_features, in_features) for "OI" (PyTorch:
        y = x @ W.T).
    bias : array_like, shape (out_features,), optional
    activation : None or "relu"
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
                 weight_layout: str = "IO") -> None:
        fn = "Linear"
        self.dtype, arr = float_arrays(fn, weight=weight, bias=bias)
        w = arr["weight"]
        check_ndim(fn, "weight", w, (2,), "2-D (in_features, out_features) for 'IO' or "
                   "(out_features, in_features) for 'OI'")
        if weight_layout not in ("IO", "OI"):
            raise ValueError(f"{fn}: weight_layout must be 'IO' (in, out) or 'OI' (out, in); "
                             f"got {weight_layout!r}")
        self.weight_layout = weight_layout
        self._relu = activation_is_relu(fn, activation)
        self.activation = activation
        self._weights = GemmWeights(fn, w if weight_layout == "IO" else w.T, arr["bias"],
                                    resolve_threads(fn, None), name="weight")

    @property
    def weight(self) -> np.ndarray:
        """A new array of the weights in the layer's weight_layout, read back
        from the packed ones: the layer keeps no other copy."""
        w = self._weights.weight()
        return w if self.weight_layout == "IO" else np.ascontiguousarray(w.T)

    @property
    def bias(self) -> Optional[np.ndarray]:
        """A new array of the bias, or None."""
        return self._weights.bias

    @property
    def in_features(self) -> int:
        return self._weights.k

    @property
    def out_features(self) -> int:
        return self._weights.n

    def __call__(self, x: Any, out: Optional[np.ndarray] = None,
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
        fn = "Linear"
        xa = input_array(fn, x, self.dtype)
        check_ndim(fn, "x", xa, (1, 2), "2-D (N, in_features) or 1-D (in_features,)")
        if xa.shape[-1] != self.in_features:
            raise ValueError(f"{fn}: x has {xa.shape[-1]} features; the layer takes "
                             f"in_features={self.in_features}")
        x2 = xa.reshape(-1, self.in_features)
        nthreads = resolve_threads(fn, num_threads)
        shape = xa.shape[:-1] + (self.out_features,)
        out = check_out(fn, out, shape, self.dtype, {"x": (x, xa)})
        y = self._weights.run(x2, self._relu, None if out is None else out.reshape(
            x2.shape[0], self.out_features), nthreads)
        return out if out is not None else y.reshape(shape)

    def __repr__(self) -> str:
        return (f"Linear({self.in_features}, {self.out_features}, "
                f"bias={self._weights.has_bias}, "
                f"activation={self.activation!r}, dtype={self.dtype})")
