"""ConvTranspose2d: conv_transpose2d with fixed weights, packed once."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from fastconv._config import get_flush_denormals, get_winograd, resolve_threads
from fastconv._conv import IntPair, Padding, input_array
from fastconv._transpose import TransposedWeights, transposed_geometry
from fastconv._validate import (activation_spec, check_out, int_pair, layout_name,
                                positive_int)
from fastconv.nn.layers import (PLAN_CACHE_SIZE, Layer, Shape, _map_shape, _read_only, _spatial,
                                geometry_text)

__all__ = ["ConvTranspose2d", "bilinear_kernel"]


class ConvTranspose2d(Layer):
    """A transposed convolution layer (upsampling: FCN's upscore layers,
    decoders): fastconv.conv_transpose2d with fixed weights, packed once.

    Parameters
    ----------
    weight, bias, stride, padding, output_padding, dilation, groups, activation, layout
        As for fastconv.conv_transpose2d: weight is TensorFlow's
        (kh, kw, K/groups, C) for layout "NHWC", PyTorch's (C, K/groups, kh, kw)
        for "NCHW".
    name : str, optional

    Calling
    -------
    ``layer(x, out=None, num_threads=None, output_size=None)``; or
    ``layer([x, like])``: the output takes the height and width of the map
    `like` (TensorFlow's output_shape from another tensor, as fcn8_vgg.py
    gives upscore2 the shape of pool4), which in a graph model is a second
    input of the layer (its values are not read).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> up = nn.ConvTranspose2d(nn.bilinear_kernel(1, 4), stride=2, padding="same")
    >>> up(np.ones((1, 3, 3, 1), np.float32)).shape
    (1, 6, 6, 1)
    """

    def __init__(self, weight: Any, bias: Any = None, *, stride: IntPair = 1,
                 padding: Padding = 0, output_padding: IntPair = 0, dilation: IntPair = 1,
                 groups: int = 1, activation: Any = None, layout: str = "NHWC",
                 name: Optional[str] = None) -> None:
        fn = "ConvTranspose2d"
        super().__init__(name)
        stride, dilation = int_pair(fn, "stride", stride), int_pair(fn, "dilation", dilation)
        self._weights = TransposedWeights(fn, weight, bias, groups, layout,
                                          resolve_threads(fn, None), winograd_now=True,
                                          stride=stride, dilation=dilation)
        # the options, checked now on a 1x1 input (what fails then fails for every input)
        int_pair(fn, "output_padding", output_padding, minimum=0)
        if isinstance(padding, str) and padding.lower() not in ("same", "valid"):
            raise ValueError(f"{fn}: padding must be an int, a pair, ((top, bottom), (left, "
                             f"right)), 'same' or 'valid'; got {padding!r}")
        self.padding, self.output_padding = padding, output_padding
        activation_spec(fn, activation)
        self.activation = activation
        self._plans: dict = {}

    takes_list = None  # x, or [x, like]

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
    def algorithm(self) -> str:
        """What the packed weights are for: "igemm" (the output's phases) for
        a stride above 1; with stride 1, the direct convolution's algorithm."""
        return self._weights.algorithm

    @property
    def weight(self) -> np.ndarray:
        """The weights in the layout given, read back from the packed ones
        into a new, read-only array."""
        return _read_only(self._weights.weight())

    @property
    def bias(self) -> Optional[np.ndarray]:
        return _read_only(self._weights.bias)

    def _split(self, x: Any) -> Tuple[Any, Optional[Tuple[int, int]]]:
        """x, or [x, like]: the input and the output size `like` gives. A pair
        is [x, like] when both are arrays of different shapes (what a graph
        passes); otherwise it is x (a batch of two images as a list)."""
        if (isinstance(x, (list, tuple)) and len(x) == 2
                and all(isinstance(t, np.ndarray) for t in x) and x[0].shape != x[1].shape):
            xa, like = x
            like_shape = np.shape(like)
            if len(like_shape) not in (3, 4):
                raise ValueError(f"ConvTranspose2d: the map whose size the output takes must "
                                 f"be 3-D or 4-D; got shape {like_shape}")
            h, w, _ = _spatial(self.layout, like_shape[-3:])
            return xa, (h, w)
        return x, None

    def _plan(self, shape: Tuple[int, ...], output_size: Any, activation: Any = None):
        # (activation: None for the layer's own, else a str or tuple, hashable)
        key = (tuple(shape), output_size, activation, get_flush_denormals(), get_winograd())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._weights.plan(tuple(shape), self.padding,
                                      self.activation if activation is None else activation,
                                      output_padding=self.output_padding,
                                      output_size=output_size)
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def plan(self, input_shape: Any, output_size: Any = None) -> dict:
        """What the layer runs on an input of this shape (with its batch
        axis, or 3-D): ``algorithm`` ("igemm", the output's phases, for a
        stride above 1), ``macs`` (the multiply-adds it executes),
        ``direct_macs`` (every input pixel times the kernel) and
        ``output_shape``."""
        if output_size is not None:
            output_size = int_pair("ConvTranspose2d", "output_size", output_size)
        p = self._plan(tuple(input_shape), output_size)
        return {"algorithm": p.algorithm, "macs": int(p.macs), "direct_macs": int(p.direct_macs),
                "output_shape": p.result}

    def forward(self, x: Any, out: Optional[np.ndarray] = None,
                num_threads: Optional[int] = None, output_size: Any = None) -> np.ndarray:
        """Run the layer on x (or [x, like]: see the class)."""
        return self._forward_activation(x, None, num_threads, out, output_size)

    def _forward_activation(self, x: Any, activation: Any, num_threads: Optional[int] = None,
                            out: Optional[np.ndarray] = None, output_size: Any = None,
                            residual: Optional[np.ndarray] = None) -> np.ndarray:
        """forward with `activation` in the store instead of the layer's own
        (None: its own), and `residual` (of the result's shape and dtype)
        added before it."""
        fn = "ConvTranspose2d"
        x, like_size = self._split(x)
        if like_size is not None:
            if output_size is not None:
                raise ValueError(f"{fn}: give output_size or a map to take the size of, "
                                 f"not both")
            output_size = like_size
        weights = self._weights
        xa = input_array(fn, x, weights.dtype)
        if output_size is not None:
            output_size = int_pair(fn, "output_size", output_size)
        plan = self._plan(xa.shape, output_size, activation)
        nthreads = resolve_threads(fn, num_threads)
        if out is not None:
            out = check_out(fn, out, plan.result, weights.dtype, {"x": (x, xa)})
        if residual is not None:
            residual = input_array(fn, residual, weights.dtype)
            if residual.shape != plan.result:
                raise ValueError(f"{fn}: the residual must have the result's shape "
                                 f"{plan.result}; got {residual.shape}")
        return weights.execute(plan, xa, out, nthreads, residual)

    def output_shape(self, shape: Any) -> Shape:
        """The output's shape for an input of `shape` (no batch axis), or for
        [shape, like_shape]."""
        fn = "ConvTranspose2d"
        if isinstance(shape, (list, tuple)) and len(shape) == 2 and all(
                isinstance(s, (list, tuple)) for s in shape):
            shape, like = shape
            h, w, _ = _spatial(self.layout, tuple(like))
            size: Optional[Tuple[int, int]] = (h, w)
        else:
            size = None
        if len(shape) != 3:
            raise ValueError(f"{fn}: input must be a 3-D map (no batch axis); got {tuple(shape)}")
        h, w, c = _spatial(self.layout, tuple(shape))
        if c != self.in_channels:
            raise ValueError(f"{fn}: the layer takes {self.in_channels} input channels; the "
                             f"input has {c} (shape {tuple(shape)}, layout {self.layout})")
        _, (ho, wo) = transposed_geometry(fn, (h, w), self.kernel_size, self.stride,
                                          self.dilation, self.padding, self.output_padding, size)
        return _map_shape(self.layout, ho, wo, self.out_channels)

    def _describe(self):
        params = dict(stride=self.stride, padding=self.padding,
                      output_padding=self.output_padding, dilation=self.dilation,
                      groups=self.groups, activation=self.activation, layout=self.layout)
        return params, {"weight": self.weight, "bias": self.bias}

    def __repr__(self) -> str:
        w = self._weights
        return (f"ConvTranspose2d({w.c}, {w.k}, kernel={w.kh}x{w.kw}, "
                f"stride={geometry_text(self.stride)}, padding={geometry_text(self.padding)}, "
                f"output_padding={geometry_text(self.output_padding)}, "
                f"dilation={geometry_text(self.dilation)}, groups={w.groups}, bias={w.has_bias}, "
                f"activation={self.activation!r}, layout={w.layout!r}, dtype={w.dtype})")


def bilinear_kernel(channels: int, size: int, dtype: Any = np.float32,
                    layout: str = "NHWC") -> np.ndarray:
    """The upsampling kernel fcn8_vgg.py starts its upscore layers with
    (get_deconv_filter): for each channel, on the diagonal (channel i to
    channel i, zero elsewhere), the bilinear map (1 - |x / f - c|) *
    (1 - |y / f - c|) with f = ceil(size / 2) and c = (2f - 1 - f % 2) / (2f).
    With stride f and size 2f (4/2, 16/8, 32/16, 64/32) it is bilinear
    interpolation. Returned as conv_transpose2d's weight for `layout`:
    (size, size, channels, channels) for "NHWC", (channels, channels, size,
    size) for "NCHW"."""
    fn = "bilinear_kernel"
    channels = positive_int(fn, "channels", channels)
    size = positive_int(fn, "size", size)
    layout = layout_name(fn, layout)
    f = -(-size // 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    t = 1 - np.abs(np.arange(size) / f - c)
    bilinear = np.outer(t, t)
    w = np.zeros((size, size, channels, channels), np.float64)
    for i in range(channels):
        w[:, :, i, i] = bilinear
    w = w.astype(dtype)
    return w if layout == "NHWC" else np.ascontiguousarray(w.transpose(3, 2, 0, 1))
