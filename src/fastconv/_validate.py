"""Argument checks shared by the public functions.

Every message names the function, the argument, what was expected and what
was given, and every check runs before any kernel does.
"""
from __future__ import annotations

import math
import operator
import reprlib
from typing import Any, Optional, Sequence, Tuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LAYOUTS = ("NHWC", "NCHW")
# Every size, offset and index the kernels compute is a signed 64-bit
# integer: integer arguments, and the sizes in bytes of the arrays a call
# makes or addresses (the result, the zero-padded input, the packed weights),
# must stay below this, so that no arithmetic in C can overflow.
INT64_MAX = 2**63 - 1

# Values read from a file (nn.load, from_keras on JSON text) appear in
# messages only through short_repr: a file may hold a string of megabytes or
# lists nested a thousand deep.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlong = 40
_SHORT.maxlevel = 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8


def short_repr(value: Any) -> str:
    """repr(value) cut to about 80 characters (and 3 levels of nesting)."""
    return _SHORT.repr(value)


def clip(text: str, limit: int = 300) -> str:
    """text, cut to `limit` characters (a message that may quote a file)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_int(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
        return True
    except TypeError:
        return False


def positive_int(fn: str, name: str, value: Any, minimum: int = 1) -> int:
    """value as an int >= minimum (bools and floats are refused)."""
    if type(value) is int and minimum <= value <= INT64_MAX:  # (the common case, at once)
        return value
    if not _is_int(value):
        raise TypeError(f"{fn}: {name} must be an int >= {minimum}; got {value!r} "
                        f"of type {type(value).__name__}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}; got {value}")
    if value > INT64_MAX:
        raise ValueError(f"{fn}: {name} must be at most 2**63 - 1 (a 64-bit size); got {value}")
    return value


def int_pair(fn: str, name: str, value: Any, minimum: int = 1) -> Tuple[int, int]:
    """An int or a pair of ints (height, width), each >= minimum."""
    if type(value) is int and minimum <= value <= INT64_MAX:  # (the common case, at once)
        return value, value
    if _is_int(value):
        v = positive_int(fn, name, value, minimum)
        return v, v
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return (positive_int(fn, name, value[0], minimum),
                positive_int(fn, name, value[1], minimum))
    raise TypeError(f"{fn}: {name} must be an int or a pair of ints (height, width); "
                    f"got {value!r}")


def padding_amounts(fn: str, padding: Any, in_hw: Sequence[int], k_hw: Sequence[int],
                    stride: Sequence[int], dilation: Sequence[int]
                    ) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """((top, bottom), (left, right)) from any accepted padding form."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            # Output size ceil(in / stride); an odd total puts the extra row or
            # column at the bottom/right (TensorFlow, ONNX SAME_UPPER).
            amounts = []
            for n, k, s, d in zip(in_hw, k_hw, stride, dilation):
                out = -(-n // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
                amounts.append((total // 2, total - total // 2))
            return amounts[0], amounts[1]
        raise ValueError(f"{fn}: padding must be an int, a pair, ((top, bottom), (left, right)), "
                         f"'valid' or 'same'; got {padding!r}")
    return explicit_padding(fn, padding)


def explicit_padding(fn: str, padding: Any) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """((top, bottom), (left, right)) from an int, (ph, pw) or ((top, bottom),
    (left, right))."""
    if _is_int(padding):
        p = positive_int(fn, "padding", padding, 0)
        return (p, p), (p, p)
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(_is_int(p) for p in padding):
            ph, pw = (positive_int(fn, "padding", p, 0) for p in padding)
            return (ph, ph), (pw, pw)
        if all(isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(q) for q in p)
               for p in padding):
            (t, b), (l, r) = ((positive_int(fn, "padding", q, 0) for q in p) for p in padding)
            return (t, b), (l, r)
    raise TypeError(f"{fn}: padding must be an int, a pair (ph, pw), ((top, bottom), "
                    f"(left, right)), 'valid' or 'same'; got {padding!r}")


# The activations fused into a convolution's or a GEMM's store (and run by
# the activation layers of fastconv.nn), by name: the kernels' kind and the
# defaults of its two parameters. A tuple (name, p1[, p2]) gives the
# parameters: ("clip", low, high), ("leaky_relu", slope),
# ("hard_sigmoid", alpha, beta) (ONNX's: clip(alpha * x + beta, 0, 1)).
ACTIVATION_KINDS = {
    "relu": ("relu", ()),
    "relu6": ("clip", (0.0, 6.0)),
    "clip": ("clip", None),                   # no default: (low, high) required
    "leaky_relu": ("leaky_relu", (0.01,)),    # torch's default slope
    "sigmoid": ("sigmoid", ()),
    "hard_sigmoid": ("hard_sigmoid", (1 / 6, 0.5)),  # torch's relu6(x + 3) / 6
    "hard_swish": ("hard_swish", ()),
    "silu": ("silu", ()),
    "tanh": ("tanh", ()),
}
_ACTIVATION_PARAMS = {"clip": 2, "leaky_relu": 1, "hard_sigmoid": 2}


def activation_spec(fn: str, activation: Any) -> Optional[Tuple[str, float, float]]:
    """The kernels' (kind, a, b) of an activation: None, a name of
    ACTIVATION_KINDS, or (name, parameters...). None for no activation."""
    if activation is None:
        return None
    expected = (f"None, one of {sorted(ACTIVATION_KINDS)}, ('clip', low, high), "
                f"('leaky_relu', slope) or ('hard_sigmoid', alpha, beta)")
    if isinstance(activation, str):
        name, params = activation.lower(), None
    elif (isinstance(activation, (tuple, list)) and activation
          and isinstance(activation[0], str)):
        name, params = activation[0].lower(), tuple(activation[1:])
    else:
        raise TypeError(f"{fn}: activation must be {expected}; got {short_repr(activation)}")
    if name not in ACTIVATION_KINDS:
        raise ValueError(f"{fn}: activation must be {expected}; got {short_repr(activation)}")
    kind, defaults = ACTIVATION_KINDS[name]
    wanted = _ACTIVATION_PARAMS.get(name, 0)
    if not params:
        if defaults is None:
            raise ValueError(f"{fn}: activation {name!r} needs its parameters: "
                             f"('clip', low, high); got {short_repr(activation)}")
        params = defaults
    elif len(params) != wanted:
        raise ValueError(f"{fn}: activation {name!r} takes {wanted} parameters; got "
                         f"{short_repr(activation)}")
    values = []
    for p in params:
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(p)):
            raise ValueError(f"{fn}: the parameters of activation {name!r} must be finite "
                             f"numbers; got {short_repr(activation)}")
        values.append(float(p))
    # (hard_sigmoid runs as clip((x + beta / alpha) * alpha, 0, 1): alpha and
    # beta / alpha must be normal float32 numbers)
    if kind == "hard_sigmoid" and not (values[0] >= 2.0**-100
                                       and abs(values[1] / values[0]) <= 2.0**100):
        raise ValueError(f"{fn}: activation ('hard_sigmoid', alpha, beta) needs alpha > 0 "
                         f"(at least 2**-100, and |beta / alpha| at most 2**100); got "
                         f"{short_repr(activation)}")
    if kind == "clip" and values[0] > values[1]:
        raise ValueError(f"{fn}: activation ('clip', low, high) needs low <= high; got "
                         f"{short_repr(activation)}")
    values += [0.0] * (2 - len(values))
    return kind, values[0], values[1]


def layout_name(fn: str, layout: Any, name: str = "layout") -> str:
    if isinstance(layout, str) and layout.upper() in LAYOUTS:
        return layout.upper()
    raise ValueError(f"{fn}: {name} must be 'NHWC' or 'NCHW'; got {layout!r}")


def float_arrays(fn: str, **arrays: Any) -> Tuple[np.dtype, dict]:
    """Convert each named argument (bias=None is passed through) to an aligned
    ndarray of native byte order and check they share one float32/float64
    dtype (the kernels read whole elements: a view at an odd byte offset is
    copied)."""
    converted = {}
    for name, value in arrays.items():
        if value is None and name == "bias":  # the one optional array
            converted[name] = None
            continue
        try:
            arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        except Exception as exc:  # e.g. a ragged list, a tensor that requires grad
            raise TypeError(f"{fn}: {name} must be an array of float32 or float64 (a numpy "
                            f"array or anything numpy.asarray converts); converting the "
                            f"given {type(value).__name__} failed: {exc}") from exc
        dt = arr.dtype
        if dt.kind != "f" or dt.itemsize not in (4, 8):
            raise TypeError(f"{fn}: {name} must have dtype float32 or float64; got {dt}")
        if not dt.isnative or not arr.flags.aligned:
            arr = arr.astype(dt.newbyteorder("="))
        converted[name] = arr
    seen = {name: a.dtype for name, a in converted.items() if a is not None}
    if len(set(seen.values())) > 1:
        listing = ", ".join(f"{name} {dt}" for name, dt in seen.items())
        raise TypeError(f"{fn}: {', '.join(seen)} must share one dtype; got {listing}")
    return next(iter(seen.values())), converted


def check_ndim(fn: str, name: str, arr: np.ndarray, ndims: Sequence[int], what: str) -> None:
    if arr.ndim not in ndims:
        raise ValueError(f"{fn}: {name} must be {what}; got {arr.ndim}-D array of shape "
                         f"{arr.shape}")


def check_nbytes(fn: str, what: str, shape: Sequence[int], itemsize: int, hint: str) -> None:
    """ValueError unless an array of `shape` fits in 64-bit sizes (see INT64_MAX);
    `hint` names the arguments that made it this large.

    An empty dimension does not excuse the others: the kernels compute row
    and plane offsets from the non-empty ones, so it is their product that
    must fit (a (0, 2**62, 2**62, 0) array is refused, not passed as empty)."""
    extent = math.prod(max(d, 1) for d in shape) * itemsize
    if extent > INT64_MAX:
        raise ValueError(f"{fn}: {what} would have shape {tuple(shape)}, whose non-empty "
                         f"dimensions span {extent} bytes: more than 2**63 - 1, the largest "
                         f"64-bit size; {hint}")


def check_bias(fn: str, bias: Optional[np.ndarray], k: int) -> None:
    if bias is not None and bias.shape != (k,):
        raise ValueError(f"{fn}: bias must have shape ({k},) (one value per output channel); "
                         f"got shape {bias.shape}")


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    # The bounds test is cheap; the exact test only runs when bounds overlap.
    return np.may_share_memory(a, b) and np.shares_memory(a, b)


def check_out(fn: str, out: Any, shape: Tuple[int, ...], dtype: np.dtype,
              inputs: dict) -> Optional[np.ndarray]:
    """out must be a writeable, aligned, C-contiguous ndarray of exactly
    shape/dtype that shares no memory with any input."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{fn}: out must be a numpy.ndarray; got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{fn}: out must have shape {tuple(shape)}; got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"{fn}: out must have dtype {dtype}; got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{fn}: out must be C-contiguous; got an array with strides {out.strides}")
    if not out.flags.aligned:
        raise ValueError(f"{fn}: out must be aligned to its item size ({out.itemsize} bytes); "
                         f"got data at an odd byte offset")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out must be writeable; got a read-only array")
    for name, arrays in inputs.items():
        # (the caller's object and the array it was converted to, which may
        # view the same memory through the buffer protocol or __array__)
        for arr in arrays if isinstance(arrays, tuple) else (arrays,):
            if isinstance(arr, np.ndarray) and _overlaps(out, arr):
                raise ValueError(f"{fn}: out must not overlap {name}; they share memory")
    return out
