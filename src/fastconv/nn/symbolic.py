"""Symbolic tensors: what nn.Input returns and what a layer applied to one
returns, recording the graph a Model is built from (Keras's functional
style). They hold no data: a shape without the batch axis, a dtype where it
is known, the layer that produced them and the tensors that layer read."""
from __future__ import annotations

import operator
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from fastconv._validate import FLOAT_DTYPES, INT64_MAX, _is_int

__all__ = ["Input", "SymbolicTensor"]

# numpy 1.x arrays have at most 32 dimensions (numpy 2: 64); an Input of
# more could never be fed.
MAX_INPUT_DIMS = 32

# A shape without the batch axis; None for a size known only when the model
# runs (an Input's "any size" axis, and everything computed from it).
SymbolicShape = Tuple[Optional[int], ...]


class SymbolicTensor:
    """A tensor of the graph being built: ``nn.Input(...)`` or what a layer
    applied to symbolic tensors returns. It holds no data.

    Attributes
    ----------
    shape : tuple or None
        Without the batch axis. An Input's axes may be None (any size); a
        layer's output computed from such an axis has shape None (known when
        the model runs).
    dtype : numpy.dtype or None
        float32 or float64 where known (an Input given a dtype, or the
        output of a layer whose weights have one), else None.
    layer : Layer or None
        The layer that produced it; None for an Input.
    inputs : tuple of SymbolicTensor
        The tensors that layer read (empty for an Input).
    name : str or None
        An Input's name: the one given, or the one the first Model built
        with it gave it (None before); None for a layer's output (see its
        layer's name).
    """

    __slots__ = ("_shape", "_dtype", "_layer", "_inputs", "_name", "_name_given")

    def __init__(self, shape: Optional[SymbolicShape], dtype: Optional[np.dtype],
                 layer: Any, inputs: Tuple["SymbolicTensor", ...],
                 name: Optional[str] = None) -> None:
        self._shape, self._dtype, self._layer = shape, dtype, layer
        self._inputs, self._name, self._name_given = inputs, name, name is not None

    shape = property(lambda self: self._shape)
    dtype = property(lambda self: self._dtype)
    layer = property(lambda self: self._layer)
    inputs = property(lambda self: self._inputs)
    name = property(lambda self: self._name)

    @property
    def is_input(self) -> bool:
        """Whether this is an nn.Input (it has no producing layer)."""
        return self._layer is None

    def __repr__(self) -> str:
        dtype = None if self._dtype is None else self._dtype.name
        if self.is_input:
            return f"Input(shape={self._shape}, name={self._name!r}, dtype={dtype!r})"
        return (f"<SymbolicTensor shape={self._shape} dtype={dtype!r} from "
                f"{layer_label(self._layer)}>")


def layer_label(layer: Any) -> str:
    """A layer as messages name it: its name and type, or its type alone."""
    kind = type(layer).__name__
    name = getattr(layer, "name", None)
    return f"{name!r} ({kind})" if name is not None else f"{kind} (unnamed)"


def input_label(tensor: SymbolicTensor) -> str:
    if tensor.name is not None:
        return f"Input {tensor.name!r}"
    return f"an unnamed Input of shape {tensor.shape}"


def check_name(fn: str, name: Any) -> Optional[str]:
    """A layer's, Input's or Model's name: None or a non-empty str."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise TypeError(f"{fn}: name must be None or a non-empty str; got {name!r} of type "
                        f"{type(name).__name__}")
    if not name:
        raise ValueError(f"{fn}: name must be None or a non-empty str; got ''")
    return name


def check_dtype(fn: str, dtype: Any) -> Optional[np.dtype]:
    """None, or float32 / float64 as a numpy dtype."""
    if dtype is None:
        return None
    dt = None
    if isinstance(dtype, (str, type, np.dtype)):  # (not numpy's structured forms)
        try:
            dt = np.dtype(dtype)
        except (TypeError, ValueError):
            pass
    if dt is None or dt not in FLOAT_DTYPES:  # (None == np.dtype("float64") holds)
        raise TypeError(f"{fn}: dtype must be None, float32 or float64; got {dtype!r}")
    return dt


def Input(shape: Sequence[Optional[int]], name: Optional[str] = None,
          dtype: Any = None) -> SymbolicTensor:
    """A model input: a symbolic tensor to apply layers to (``layer(x)``).

    Parameters
    ----------
    shape : sequence of int or None
        Without the batch axis: (H, W, C) for an NHWC map, (C, H, W) for
        NCHW, (F,) for features. None for an axis of any size (an image
        size a fully convolutional model takes): layers after it then learn
        their shapes when the model runs.
    name : str, optional
        Its name in the model (a dict of inputs is keyed by it); by default
        "input", "input_1", ..., given by the first Model built with it.
    dtype : None, float32 or float64
        If given, the model refuses an input of another dtype.

    Examples
    --------
    >>> from fastconv import nn
    >>> nn.Input((32, 32, 3), name="image")
    Input(shape=(32, 32, 3), name='image', dtype=None)
    """
    fn = "Input"
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{fn}: shape must be a tuple of ints >= 0 or None (without the batch "
                        f"axis); got {shape!r}")
    if not 1 <= len(shape) <= MAX_INPUT_DIMS:
        raise ValueError(f"{fn}: shape must have 1 to {MAX_INPUT_DIMS} axes (without the batch "
                         f"axis); got {tuple(shape)}")
    for d in shape:
        if d is not None and not _is_int(d):
            raise TypeError(f"{fn}: shape must be a tuple of ints >= 0 or None; got {shape!r}")
        if d is not None and not 0 <= operator.index(d) <= INT64_MAX:
            raise ValueError(f"{fn}: shape must hold sizes from 0 to 2**63 - 1 or None; "
                             f"got {tuple(shape)}")
    dims = tuple(None if d is None else operator.index(d) for d in shape)
    return SymbolicTensor(dims, check_dtype(fn, dtype), None, (), check_name(fn, name))


def unknown_input() -> SymbolicTensor:
    """The input of a Sequential: no shape (its layers take any they accept)."""
    return SymbolicTensor(None, None, None, ())


def is_symbolic(x: Any) -> bool:
    """Whether a layer's argument is a symbolic tensor or a list of them."""
    if isinstance(x, SymbolicTensor):
        return True
    return isinstance(x, (list, tuple)) and any(isinstance(t, SymbolicTensor) for t in x)


def known(shape: Optional[SymbolicShape]) -> bool:
    return shape is not None and all(d is not None for d in shape)


def infer_shape(layer: Any, shapes: Sequence[Optional[SymbolicShape]], takes_list: bool
                ) -> Optional[SymbolicShape]:
    """The output shape of `layer` for its input shapes (one, or a list for
    a layer that takes a list); None if one of them is not known yet. A
    shape the layer refuses is a ValueError naming the layer and the shapes."""
    if not all(known(s) for s in shapes):
        return None
    arg: Any = [tuple(s) for s in shapes] if takes_list else tuple(shapes[0])
    try:
        return tuple(layer.output_shape(arg))
    except ValueError as exc:
        shown = ", ".join(str(tuple(s)) for s in shapes)
        what = "input shapes" if takes_list else "input shape"
        raise ValueError(f"layer {layer_label(layer)} cannot take {what} {shown}: {exc}"
                         ) from None
