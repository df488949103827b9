"""Per-channel layers: BatchNorm2d at inference (and its folding into the
convolution before it, fold_batchnorm) and PReLU."""
from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np

from fastconv._config import resolve_threads
from fastconv._validate import check_ndim, float_arrays, layout_name
from fastconv.nn.layers import Conv2d, Layer, Shape, _batch, _read_only, _spatial

__all__ = ["BatchNorm2d", "PReLU", "fold_batchnorm"]


def _input(fn: str, x: Any, layout: str, dtype: np.dtype, channels: int,
           what: str) -> np.ndarray:
    """x as a 4-D array of the layer's dtype whose channel axis has
    `channels` entries (any number if channels is None)."""
    xa = _batch(fn, x, 4, "(N, H, W, C)" if layout == "NHWC" else "(N, C, H, W)")
    if xa.dtype != dtype:
        raise TypeError(f"{fn}: x and {what} must share one dtype; got x {xa.dtype}, "
                        f"{what} {dtype}")
    c = xa.shape[3 if layout == "NHWC" else 1]
    if channels is not None and c != channels:
        raise ValueError(f"{fn}: x has {c} channels ({layout}: shape {xa.shape}); the layer "
                         f"has {channels}")
    return xa


def _channel_shape(layout: str) -> tuple:
    """The shape a (C,) vector takes to broadcast along a map's channel axis."""
    return (-1,) if layout == "NHWC" else (-1, 1, 1)


def _check_map(fn: str, shape: Shape, layout: str, channels: Optional[int]) -> Shape:
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"{fn}: input must be a 3-D map (no batch axis); got {shape}")
    c = _spatial(layout, shape)[2]
    if channels is not None and c != channels:
        raise ValueError(f"{fn}: input shape {shape} ({layout}) has {c} channels; the layer "
                         f"has {channels}")
    return shape


class BatchNorm2d(Layer):
    """Batch normalization at inference, as torch.nn.BatchNorm2d in eval
    mode: y = (x - mean) / sqrt(var + eps) * gamma + beta, per channel.

    Parameters
    ----------
    gamma, beta, mean, var : array_like, shape (C,)
        The scale, the shift and the running statistics; one dtype, float32
        or float64, which is the layer's: x must have it too (as for
        Conv2d's weights). var must be >= 0, and var + eps > 0.
    eps : float, default 1e-5
    layout : "NHWC" or "NCHW"
    name : str, optional

    The layer computes y = x * scale + shift: scale = gamma / sqrt(var +
    eps) and shift = beta - mean * scale are computed once, in float64, and
    rounded once to the layer's dtype (see ``scale`` and ``shift``).
    """

    def __init__(self, gamma: Any, beta: Any, mean: Any, var: Any, eps: float = 1e-5,
                 layout: str = "NHWC", name: Optional[str] = None) -> None:
        fn = "BatchNorm2d"
        super().__init__(name)
        self.layout = layout_name(fn, layout)
        self.dtype, arr = float_arrays(fn, gamma=gamma, beta=beta, mean=mean, var=var)
        for key, a in arr.items():
            check_ndim(fn, key, a, (1,), "1-D (C,), one value per channel")
        c = arr["gamma"].shape[0]
        for key, a in arr.items():
            if a.shape != (c,):
                raise ValueError(f"{fn}: gamma, beta, mean and var must have one shape (C,); "
                                 f"got gamma {arr['gamma'].shape}, {key} {a.shape}")
        if c < 1:
            raise ValueError(f"{fn}: gamma, beta, mean and var must have at least one "
                             f"channel; got shape (0,)")
        if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
            raise TypeError(f"{fn}: eps must be a number; got {eps!r}")
        eps = float(eps)
        if not (np.isfinite(eps) and eps >= 0):
            raise ValueError(f"{fn}: eps must be finite and >= 0; got {eps!r}")
        self.eps = eps
        # Copies: changing the caller's arrays later changes nothing.
        self._params = {key: np.array(a, dtype=self.dtype, order="C")
                        for key, a in arr.items()}
        var64 = self._params["var"].astype(np.float64)
        bad = np.flatnonzero(var64 < 0)
        if bad.size:
            raise ValueError(f"{fn}: var must be >= 0 (a variance); channel {bad[0]} has "
                             f"var {var64[bad[0]]!r}")
        bad = np.flatnonzero(var64 + eps == 0)
        if bad.size:
            raise ValueError(f"{fn}: var + eps must be > 0 (it is divided by); channel "
                             f"{bad[0]} has var 0 with eps {eps!r}")
        # scale and shift in float64 from the parameters (exact in float64),
        # each rounded once to the layer's dtype: y = x * scale + shift then
        # rounds twice more, so |y - exact| stays within a few units of
        # |x * scale| + |mean * scale| + |beta|. (torch computes them in the
        # tensors' dtype: float32 rounds each step.)
        g, b, m = (self._params[k].astype(np.float64) for k in ("gamma", "beta", "mean"))
        scale64 = g / np.sqrt(var64 + eps)
        self._scale64 = scale64  # (fold_batchnorm's, unrounded)
        self._scale = scale64.astype(self.dtype)
        self._shift = (b - m * scale64).astype(self.dtype)
        self._scale.flags.writeable = False
        self._shift.flags.writeable = False

    @property
    def num_features(self) -> int:
        return self._params["gamma"].shape[0]

    @property
    def gamma(self) -> np.ndarray:
        """A new, read-only array of gamma (the per-channel scale, torch's weight)."""
        return _read_only(self._params["gamma"].copy())

    @property
    def beta(self) -> np.ndarray:
        """A new, read-only array of beta (the per-channel shift, torch's bias)."""
        return _read_only(self._params["beta"].copy())

    @property
    def mean(self) -> np.ndarray:
        """A new, read-only array of the running mean."""
        return _read_only(self._params["mean"].copy())

    @property
    def var(self) -> np.ndarray:
        """A new, read-only array of the running variance."""
        return _read_only(self._params["var"].copy())

    @property
    def scale(self) -> np.ndarray:
        """gamma / sqrt(var + eps), computed in float64, in the layer's dtype."""
        return self._scale.copy()

    @property
    def shift(self) -> np.ndarray:
        """beta - mean * scale, computed in float64, in the layer's dtype."""
        return self._shift.copy()

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        fn = "BatchNorm2d"
        xa = _input(fn, x, self.layout, self.dtype, self.num_features, "the parameters")
        resolve_threads(fn, num_threads)  # (checked; NumPy runs on one thread)
        shape = _channel_shape(self.layout)
        with np.errstate(invalid="ignore", over="ignore"):  # Inf * 0, as in torch
            y = xa * self._scale.reshape(shape)
            y += self._shift.reshape(shape)
        return y

    def output_shape(self, shape: Shape) -> Shape:
        return _check_map("BatchNorm2d", shape, self.layout, self.num_features)

    def _describe(self):
        return (dict(eps=self.eps, layout=self.layout),
                {key: self._params[key].copy() for key in ("gamma", "beta", "mean", "var")})

    def __repr__(self) -> str:
        named = "" if self.name is None else f", name={self.name!r}"
        return (f"BatchNorm2d({self.num_features}, eps={self.eps}, layout={self.layout!r}, "
                f"dtype={self.dtype}{named})")


class PReLU(Layer):
    """y = x where x > 0, else slope * x (torch.nn.PReLU), per channel.

    Parameters
    ----------
    weight : array_like, shape (C,), (1,) or ()
        One slope per channel, or one for all; float32 or float64, the
        layer's dtype (x must have it too, as for Conv2d's weights): a
        Python float makes a float64 layer.
    layout : "NHWC" or "NCHW"
    name : str, optional

    As torch computes it: x > 0 keeps x, anything else (zeros of either
    sign, negatives, NaN) becomes slope * x, so NaN stays NaN, -0.0 gives
    slope * -0.0 (-0.0 for a positive slope) and +0.0 with a negative slope
    gives -0.0.
    """

    def __init__(self, weight: Any, layout: str = "NHWC", name: Optional[str] = None) -> None:
        fn = "PReLU"
        super().__init__(name)
        self.layout = layout_name(fn, layout)
        self.dtype, arr = float_arrays(fn, weight=weight)
        w = arr["weight"]
        check_ndim(fn, "weight", w, (0, 1), "a scalar or 1-D (C,) or (1,): one slope per "
                   "channel, or one for all")
        if w.size < 1:
            raise ValueError(f"{fn}: weight must hold at least one slope; got shape {w.shape}")
        self._weight = np.array(w.reshape(-1), order="C")  # a copy, (C,) or (1,)
        self._weight.flags.writeable = False

    @property
    def num_parameters(self) -> int:
        """The number of slopes: C, or 1 (one for every channel)."""
        return self._weight.shape[0]

    @property
    def weight(self) -> np.ndarray:
        """A new, read-only array of the slopes, shape (num_parameters,)."""
        return _read_only(self._weight.copy())

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        fn = "PReLU"
        n = self.num_parameters
        xa = _input(fn, x, self.layout, self.dtype, None if n == 1 else n, "weight")
        resolve_threads(fn, num_threads)  # (checked; NumPy runs on one thread)
        with np.errstate(invalid="ignore", over="ignore"):  # Inf * 0, as in torch
            y = xa * self._weight.reshape(_channel_shape(self.layout))
            np.copyto(y, xa, where=xa > 0)
        return y

    def output_shape(self, shape: Shape) -> Shape:
        n = self.num_parameters
        return _check_map("PReLU", shape, self.layout, None if n == 1 else n)

    def _describe(self):
        return dict(layout=self.layout), {"weight": self._weight.copy()}

    def __repr__(self) -> str:
        named = "" if self.name is None else f", name={self.name!r}"
        return (f"PReLU(num_parameters={self.num_parameters}, layout={self.layout!r}, "
                f"dtype={self.dtype}{named})")


def fold_batchnorm(conv: Conv2d, bn: BatchNorm2d) -> Conv2d:
    """The Conv2d computing bn(conv(x)): a new layer with conv's stride,
    padding, dilation, groups and layout, whose weights are conv's scaled
    per output channel by bn's scale = gamma / sqrt(var + eps), and whose
    bias is (b - mean) * scale + beta (b = 0 without a bias), computed in
    float64 from both layers' parameters and rounded once to conv's dtype.

    Raises
    ------
    TypeError
        conv is not a Conv2d or bn not a BatchNorm2d.
    ValueError
        conv has an activation (a ReLU between them cannot be folded), or
        the layers disagree on the channels or the layout.
    """
    fn = "fold_batchnorm"
    if not isinstance(conv, Conv2d):
        raise TypeError(f"{fn}: conv must be a fastconv.nn.Conv2d; got {type(conv).__name__}")
    if not isinstance(bn, BatchNorm2d):
        raise TypeError(f"{fn}: bn must be a fastconv.nn.BatchNorm2d; got {type(bn).__name__}")
    both = f"conv {conv!r} and bn {bn!r}"
    if conv.activation is not None:
        raise ValueError(f"{fn}: conv applies activation {conv.activation!r} before bn; only a "
                         f"convolution without activation folds ({both})")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"{fn}: conv has {conv.out_channels} output channels but bn has "
                         f"{bn.num_features} ({both})")
    if conv.layout != bn.layout:
        raise ValueError(f"{fn}: conv is {conv.layout} but bn is {bn.layout}; both must have "
                         f"one layout ({both})")
    scale = bn._scale64
    mean, beta = (bn._params[k].astype(np.float64) for k in ("mean", "beta"))
    w = conv.weight.astype(np.float64)
    b = np.zeros(conv.out_channels) if conv.bias is None else conv.bias.astype(np.float64)
    # HWIO: output channels on the last axis; OIHW: on the first.
    ws = w * (scale if conv.layout == "NHWC" else scale.reshape(-1, 1, 1, 1))
    bias = (b - mean) * scale + beta
    return Conv2d(ws.astype(conv.dtype), bias.astype(conv.dtype), stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  layout=conv.layout)
