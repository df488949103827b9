"""Structural layers: they move and combine values without weights. Add,
Multiply and Concatenate take a list of 2 or more inputs (a list of arrays
in forward, a list of shapes in output_shape); Identity, ZeroPad2d and
Cropping2d take one."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from fastconv._validate import _is_int, check_nbytes, float_arrays, layout_name, positive_int
from fastconv.nn.layers import Layer, Shape, _map_dims, _spatial

__all__ = ["Add", "Multiply", "Concatenate", "Identity", "ZeroPad2d", "Cropping2d"]

Amounts = Tuple[Tuple[int, int], Tuple[int, int]]


def _arrays(fn: str, xs: Any) -> List[np.ndarray]:
    """The inputs of a layer that takes a list: 2 or more arrays of one
    float dtype."""
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"{fn}: takes a list or tuple of 2 or more arrays; got "
                        f"{type(xs).__name__}")
    if len(xs) < 2:
        raise ValueError(f"{fn}: takes 2 or more inputs; got {len(xs)}")
    _, converted = float_arrays(fn, **{f"inputs[{i}]": x for i, x in enumerate(xs)})
    return list(converted.values())


def _shapes(fn: str, shapes: Any) -> List[Shape]:
    """output_shape's argument for a layer that takes a list: 2 or more shapes."""
    if not isinstance(shapes, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) for s in shapes):
        raise TypeError(f"{fn}: output_shape takes a list of 2 or more shapes; got {shapes!r}")
    if len(shapes) < 2:
        raise ValueError(f"{fn}: takes 2 or more inputs; got {len(shapes)}")
    return [tuple(s) for s in shapes]


class _Elementwise(Layer):
    """An element-wise operation on 2 or more inputs of one shape, applied
    from the first input to the last. No broadcasting: shapes must be equal
    (a mismatch in a residual connection is an error, not a silent
    expansion)."""

    takes_list = True
    ufunc = np.add

    def forward(self, xs: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        fn = type(self).__name__
        arrays = _arrays(fn, xs)
        self._same(fn, [a.shape for a in arrays], "")
        out = self.ufunc(arrays[0], arrays[1])
        for a in arrays[2:]:
            self.ufunc(out, a, out=out)
        return out

    @staticmethod
    def _same(fn: str, shapes: List[Shape], what: str) -> None:
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"{fn}: the inputs must have one shape (no broadcasting); got "
                             f"{what}shapes {', '.join(map(str, shapes))}")

    def output_shape(self, shapes: Any) -> Shape:  # type: ignore[override]
        fn = type(self).__name__
        shapes = _shapes(fn, shapes)
        self._same(fn, shapes, "input ")
        return shapes[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Add(_Elementwise):
    """The sum of 2 or more inputs of one shape (a residual connection).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> nn.Add()([np.ones(3), np.arange(3.0)])
    array([1., 2., 3.])
    """

    ufunc = np.add


class Multiply(_Elementwise):
    """The product of 2 or more inputs of one shape (a gate)."""

    ufunc = np.multiply


class Concatenate(Layer):
    """2 or more inputs joined along one axis; the others must agree.

    Parameters
    ----------
    axis : int, optional
        By default the channel axis: the last for NHWC maps and for
        features, the third from last for NCHW maps (so either works with
        or without the batch axis). An int counts the batch axis as Keras
        and torch.cat do (1 is NCHW's channels, -1 the last); a negative
        one works with or without it; 0, the batch axis, is refused. With
        an axis the layer works in either layout.
    layout : "NHWC" or "NCHW", optional
        Whose channel axis is the default (NHWC if not given).
    """

    takes_list = True

    def __init__(self, axis: Optional[int] = None, layout: Optional[str] = None, *,
                 name: Optional[str] = None) -> None:
        fn = "Concatenate"
        super().__init__(name)
        if axis is not None:
            if not _is_int(axis):
                raise TypeError(f"{fn}: axis must be None or an int; got {axis!r}")
            if int(axis) == 0:
                raise ValueError(f"{fn}: axis must not be 0, the batch axis; got 0")
            axis = int(axis)
        self.axis = axis
        self.layout = (layout_name(fn, layout) if layout is not None
                       else "NHWC" if axis is None else None)

    def _axis(self, ndim: int) -> int:
        """The axis, counted from the end, in inputs of `ndim` dimensions
        with the batch axis (an unbatched map of 3 is still a map)."""
        if self.axis is None:
            return -3 if self.layout == "NCHW" and ndim >= 3 else -1
        return self.axis - ndim if self.axis > 0 else self.axis

    def _joined(self, shapes: List[Shape], ndim: int, what: str) -> Shape:
        """The shape of the result for inputs of `shapes`, of `ndim`
        dimensions with the batch axis."""
        fn = "Concatenate"
        axis = self._axis(ndim)
        shown = ", ".join(map(str, shapes))
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes) or not -rank <= axis < 0:
            raise ValueError(f"{fn}: the inputs must have one number of axes, including axis "
                             f"{self.axis if self.axis is not None else axis}; got {what}shapes "
                             f"{shown}")
        at = rank + axis
        if any(s[:at] + s[at + 1:] != shapes[0][:at] + shapes[0][at + 1:] for s in shapes):
            raise ValueError(f"{fn}: the inputs must agree on every axis but axis "
                             f"{self.axis if self.axis is not None else axis}; got {what}shapes "
                             f"{shown}")
        return shapes[0][:at] + (sum(s[at] for s in shapes),) + shapes[0][at + 1:]

    def forward(self, xs: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        arrays = _arrays("Concatenate", xs)
        ndim = arrays[0].ndim
        shape = self._joined([a.shape for a in arrays], ndim, "")
        check_nbytes("Concatenate", "the result", shape, arrays[0].itemsize,
                     "the inputs are too large together")
        return np.concatenate(arrays, axis=self._axis(ndim))

    def output_shape(self, shapes: Any) -> Shape:  # type: ignore[override]
        shapes = _shapes("Concatenate", shapes)
        return self._joined(shapes, len(shapes[0]) + 1, "input ")

    def _describe(self):
        return dict(axis=self.axis, layout=self.layout), {}

    def __repr__(self) -> str:
        return f"Concatenate(axis={self.axis}, layout={self.layout!r})"


class Identity(Layer):
    """Its input, unchanged (a placeholder, or a named point in a graph)."""

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        _, arr = float_arrays("Identity", x=x)
        return arr["x"]

    def output_shape(self, shape: Shape) -> Shape:
        return tuple(shape)


def _amounts(fn: str, name: str, value: Any) -> Amounts:
    """((top, bottom), (left, right)) from an int, (h, w) or ((top, bottom),
    (left, right)), each >= 0."""
    def amount(v: Any) -> int:
        return positive_int(fn, name, v, 0)

    if _is_int(value):
        p = amount(value)
        return (p, p), (p, p)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        if all(_is_int(v) for v in value):
            h, w = (amount(v) for v in value)
            return (h, h), (w, w)
        if all(isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(q) for q in v)
               for v in value):
            (t, b), (left, r) = ((amount(q) for q in v) for v in value)
            return (t, b), (left, r)
    raise TypeError(f"{fn}: {name} must be an int, a pair (h, w) or ((top, bottom), (left, "
                    f"right)) of ints >= 0 (torch's (left, right, top, bottom) is ((top, "
                    f"bottom), (left, right))); got {value!r}")


class _Spatial(Layer):
    """ZeroPad2d and Cropping2d: one amount per side of the map's height
    and width, on (N, H, W, C) / (N, C, H, W) or 3-D inputs."""

    argument = "padding"

    def __init__(self, amounts: Any, layout: str = "NHWC", *,
                 name: Optional[str] = None) -> None:
        fn = type(self).__name__
        super().__init__(name)
        (self.top, self.bottom), (self.left, self.right) = _amounts(fn, self.argument, amounts)
        self.layout = layout_name(fn, layout)

    @property
    def amounts(self) -> Amounts:
        """((top, bottom), (left, right))."""
        return (self.top, self.bottom), (self.left, self.right)

    def _sizes(self, h: int, w: int) -> Tuple[int, int]:
        raise NotImplementedError

    def output_shape(self, shape: Shape) -> Shape:
        _map_dims(type(self).__name__, shape)
        h, w, c = _spatial(self.layout, shape)
        ho, wo = self._sizes(h, w)
        return (ho, wo, c) if self.layout == "NHWC" else (c, ho, wo)

    def _input(self, x: Any) -> Tuple[np.ndarray, Tuple[int, ...], int]:
        """(x as an array, the shape of the result, the index of the height
        axis in x)."""
        fn = type(self).__name__
        _, arr = float_arrays(fn, x=x)
        xa = arr["x"]
        if xa.ndim not in (3, 4):
            dims = "(N, H, W, C)" if self.layout == "NHWC" else "(N, C, H, W)"
            raise ValueError(f"{fn}: x must be 4-D {dims} or 3-D without the batch axis; got "
                             f"shape {xa.shape}")
        shape = xa.shape[:xa.ndim - 3] + self.output_shape(xa.shape[-3:])
        return xa, shape, xa.ndim - (3 if self.layout == "NHWC" else 2)

    def _describe(self):
        return {self.argument: self.amounts, "layout": self.layout}, {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.amounts}, layout={self.layout!r})"


class ZeroPad2d(_Spatial):
    """Zeros around the map, as torch.nn.ZeroPad2d and keras ZeroPadding2D.

    Parameters
    ----------
    padding : int, (h, w) or ((top, bottom), (left, right))
        Rows and columns of zeros on each side (torch's 4-tuple (left,
        right, top, bottom) is ((top, bottom), (left, right)) here).
    layout : "NHWC" or "NCHW"
    """

    argument = "padding"

    def __init__(self, padding: Any, layout: str = "NHWC", *,
                 name: Optional[str] = None) -> None:
        super().__init__(padding, layout, name=name)

    def _sizes(self, h: int, w: int) -> Tuple[int, int]:
        return h + self.top + self.bottom, w + self.left + self.right

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        xa, shape, hax = self._input(x)
        check_nbytes("ZeroPad2d", "the result", shape, xa.itemsize,
                     f"x of shape {xa.shape} with padding {self.amounts} gives too large a "
                     f"result")
        y = np.zeros(shape, xa.dtype)
        index = [slice(None)] * xa.ndim
        index[hax] = slice(self.top, self.top + xa.shape[hax])
        index[hax + 1] = slice(self.left, self.left + xa.shape[hax + 1])
        y[tuple(index)] = xa
        return y


class Cropping2d(_Spatial):
    """Rows and columns removed from each side, as keras Cropping2D.

    Parameters
    ----------
    cropping : int, (h, w) or ((top, bottom), (left, right))
        What to remove; at least one row and column must remain (unless
        nothing is removed).
    layout : "NHWC" or "NCHW"
    """

    argument = "cropping"

    def __init__(self, cropping: Any, layout: str = "NHWC", *,
                 name: Optional[str] = None) -> None:
        super().__init__(cropping, layout, name=name)

    def _sizes(self, h: int, w: int) -> Tuple[int, int]:
        for side, n, (a, b) in (("height", h, (self.top, self.bottom)),
                                ("width", w, (self.left, self.right))):
            if a + b and a + b >= n:
                raise ValueError(f"Cropping2d: cropping {(a, b)} removes the whole {side} of "
                                 f"an input of {side} {n}")
        return h - self.top - self.bottom, w - self.left - self.right

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> np.ndarray:
        xa, shape, hax = self._input(x)
        index: List[Any] = [slice(None)] * xa.ndim
        index[hax] = slice(self.top, self.top + shape[hax])
        index[hax + 1] = slice(self.left, self.left + shape[hax + 1])
        # A copy, not a view: a view would keep the whole input alive after
        # the model frees it.
        return np.ascontiguousarray(xa[tuple(index)])
