"""nn.from_onnx: an ONNX graph as an nn.Model that runs NHWC inside.

How layouts work. Every ONNX tensor the graph computes at run time (a
"dynamic" tensor) has its logical shape (the graph's, NCHW for maps, axis 0
the batch) and a physical permutation `perm`: the array that runs is
``logical.transpose(perm)``. Maps made by convolutions, pools, resizes live
channels-last (perm (0, 2, 3, 1), (0, 2, 1) for 1-D maps); elementwise
layers run on whatever comes (their constants permuted at import); axis
ops remap their axes; Transpose changes only the permutation (no layer);
Squeeze/Unsqueeze insert or drop size-1 axes (a reshape). A physical
transpose is made only where an op needs another order (a graph input or
output, a Reshape of a map whose order matters), once per tensor and order.
A map flattened for a Gemm/MatMul keeps its NHWC order: the flat features
carry a column permutation that the Gemm's weight rows absorb at import.

The batch axis: the model's inputs are declared without it (nn.Input) and
axis 0 of every graph input is the batch, which stays the physical arrays'
axis 0 throughout. An op that acts on the batch axis (Concat, Split, Slice,
Gather, Softmax or a reduction over it, a Reshape or Flatten that changes
it) is refused with a ValueError. A Transpose may move it (attention's
(3, N, heads, L, d)): only Transpose, and Gather, Slice and Squeeze on other
axes, read such a tensor; every other op and the graph outputs need the
batch first again. A dynamic batch ("N") works, including torch's
``x.view(x.size(0), -1)`` (Shape(x)[0] feeding a Reshape); a static batch
(1) runs any batch size where the ops allow.

Other dynamic sizes (an image's H and W): convolutions (explicit pads),
pools, Resize by scales, ConvTranspose without output_shape,
BatchNormalization, Concat and the elementwise ops take them; an op that
needs static sizes (Reshape, Flatten, Slice, Pad, auto_pad SAME, Shape, ...)
refuses, and ``input_shapes=`` fixes them at import.

Shape, Gather, Cast, ConstantOfShape, Concat, Unsqueeze, Range and the
arithmetic ops fold to constants where their inputs are constants or static
shapes. Malformed files are ValueErrors: every tensor's data is checked
against its declared dims and type before it is read, external data must lie
inside the model's directory and its file, folded constants are bounded.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["from_onnx", "SUPPORTED_OPS"]

OPSETS = range(7, 22)
# The largest constant folding may make (elements): an import never
# allocates more for a value the file does not hold itself.
MAX_FOLDED = 1 << 24
# The largest static side Resize plans index arrays for.
MAX_SIDE = 1 << 24
INT_MAX = 2**63 - 1


class _BatchDim:
    """The batch size in a shape folded at import when it is dynamic: it may
    be moved around (Gather, Concat, Unsqueeze) and reach a Reshape as its
    first size, but takes no arithmetic."""

    def __repr__(self) -> str:
        return "N"

    def _refuse(self, *args: Any) -> Any:
        raise _BatchArithmetic()

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __neg__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = __int__ = __index__ = __float__ = _refuse


class _BatchArithmetic(Exception):
    pass


BATCH = _BatchDim()


class _Dyn:
    """A tensor computed when the model runs (see the module docstring)."""

    __slots__ = ("shape", "perm", "cols", "versions")

    def __init__(self, sym: Any, shape: Tuple[Any, ...], perm: Tuple[int, ...],
                 cols: Optional[np.ndarray] = None) -> None:
        self.shape, self.perm, self.cols = tuple(shape), tuple(perm), cols
        self.versions = {self.perm: sym}  # perm -> the symbolic tensor in that order

    @property
    def sym(self) -> Any:
        return self.versions[self.perm]

    @property
    def rank(self) -> int:
        return len(self.shape)


def _identity(r: int) -> Tuple[int, ...]:
    return tuple(range(r))


def _channels_last(r: int) -> Tuple[int, ...]:
    return (0,) + tuple(range(2, r)) + (1,)


def _free(shape: Sequence[Any], perm: Sequence[int]) -> bool:
    """Whether the transpose by perm moves only axes of size 1 (then the
    physical array, reshaped, is the logical one)."""
    order = [p for p in perm if p == 0 or shape[p] != 1]
    return order == sorted(order)


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("fastconv.nn.from_onnx needs the onnx package: pip install onnx "
                          "(or pip install fastconv[onnx])") from exc
    return onnx


# -- reading the file ----------------------------------------------------------------

# ONNX TensorProto data types: numpy dtype, the typed field holding them.
_DTYPES = {1: (np.float32, "float_data"), 2: (np.uint8, "int32_data"),
           3: (np.int8, "int32_data"), 4: (np.uint16, "int32_data"),
           5: (np.int16, "int32_data"), 6: (np.int32, "int32_data"),
           7: (np.int64, "int64_data"), 9: (np.bool_, "int32_data"),
           10: (np.float16, "int32_data"), 11: (np.float64, "double_data"),
           12: (np.uint32, "uint64_data"), 13: (np.uint64, "uint64_data")}


class _Reader:
    """Decodes TensorProtos with every size checked before anything is read."""

    def __init__(self, base: Optional[str]) -> None:
        self.base = base

    def tensor(self, t: Any, what: str) -> np.ndarray:
        if t.data_type not in _DTYPES:
            raise ValueError(f"from_onnx: {what} has data type {t.data_type}, which is not "
                             f"supported (float, double, float16, bool and integers are)")
        dtype, field = _DTYPES[t.data_type]
        dims = tuple(t.dims)
        if any(d < 0 for d in dims):
            raise ValueError(f"from_onnx: {what} has negative dims {dims}")
        count = math.prod(dims)
        itemsize = np.dtype(dtype).itemsize
        if t.HasField("segment"):
            raise ValueError(f"from_onnx: {what} is segmented; segmented tensors are not "
                             f"supported")
        if t.data_location == 1:  # EXTERNAL
            raw = self._external(t, what, count * itemsize)
        elif t.HasField("raw_data"):
            raw = t.raw_data
            if len(raw) != count * itemsize:
                raise ValueError(f"from_onnx: {what} has {len(raw)} bytes of raw_data; its dims "
                                 f"{dims} and type {np.dtype(dtype).name} make "
                                 f"{count * itemsize}")
        else:
            values = getattr(t, field)
            if len(values) != count:
                raise ValueError(f"from_onnx: {what} holds {len(values)} values in {field}; its "
                                 f"dims {dims} make {count}")
            if t.string_data:
                raise ValueError(f"from_onnx: {what} holds strings; not supported")
            if dtype is np.float16:
                return np.array(values, np.uint16).view(np.float16).reshape(dims)
            return np.array(values, dtype=dtype).reshape(dims)
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(
            dtype).reshape(dims)

    def _external(self, t: Any, what: str, nbytes: int) -> bytes:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location")
        if self.base is None:
            raise ValueError(f"from_onnx: {what} keeps its data in an external file "
                             f"({location!r}); give the model as a path so that file can be "
                             f"found beside it")
        if not location or os.path.isabs(location):
            raise ValueError(f"from_onnx: {what} has external data location {location!r}; "
                             f"expected a path relative to the model's directory")
        path = os.path.realpath(os.path.join(self.base, location))
        if os.path.commonpath([path, self.base]) != self.base:
            raise ValueError(f"from_onnx: {what} has external data location {location!r}, "
                             f"outside the model's directory")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info.get("length", str(nbytes)))
        except ValueError:
            raise ValueError(f"from_onnx: {what} has external data offset/length "
                             f"{info.get('offset')!r}/{info.get('length')!r}; expected ints"
                             ) from None
        if offset < 0 or length != nbytes:
            raise ValueError(f"from_onnx: {what} has external data offset {offset} and length "
                             f"{length}; its dims and type make {nbytes} bytes")
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if offset + length > size:
                    raise ValueError(f"from_onnx: {what} reads bytes {offset} to "
                                     f"{offset + length} of {location!r}, which has {size}")
                f.seek(offset)
                data = f.read(length)
        except OSError as exc:
            raise ValueError(f"from_onnx: {what}: cannot read external data {location!r}: "
                             f"{exc}") from None
        if len(data) != length:
            raise ValueError(f"from_onnx: {what}: external data {location!r} ended early")
        return data


def _load(model: Any):
    onnx = _import_onnx()
    base = None
    if isinstance(model, onnx.ModelProto):
        return model, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ValueError(f"from_onnx: cannot read model file {path!r}: {exc}") from None
        base = os.path.dirname(os.path.realpath(path))
    else:
        raise TypeError(f"from_onnx: model must be a path, bytes or an onnx.ModelProto; got "
                        f"{type(model).__name__}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # (protobuf's DecodeError, RecursionError on deep nesting)
        raise ValueError(f"from_onnx: the data is not an ONNX model (protobuf could not parse "
                         f"it: {exc})") from None
    return proto, base


def _attrs(node: Any, reader: _Reader, label: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for a in node.attribute:
        kind = a.type
        if kind == 1:
            out[a.name] = a.f
        elif kind == 2:
            out[a.name] = a.i
        elif kind == 3:
            out[a.name] = a.s.decode("utf-8", "replace")
        elif kind == 4:
            out[a.name] = reader.tensor(a.t, f"{label} attribute {a.name!r}")
        elif kind == 6:
            out[a.name] = list(a.floats)
        elif kind == 7:
            out[a.name] = list(a.ints)
        elif kind == 8:
            out[a.name] = [s.decode("utf-8", "replace") for s in a.strings]
        else:
            out[a.name] = ("unsupported attribute type", kind)
    return out


# -- the importer --------------------------------------------------------------------

class _Unsupported(ValueError):
    pass


def _pads_same(n: int, k: int, s: int, mode: str) -> Tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    small = total // 2
    return (small, total - small) if mode == "SAME_UPPER" else (total - small, small)


class _Importer:
    def __init__(self, proto: Any, reader: _Reader, input_shapes: Optional[dict]) -> None:
        self.proto, self.reader = proto, reader
        self.input_shapes = dict(input_shapes or {})
        self.values: Dict[str, Any] = {}
        self.used_names: set = set()
        self.dtype: Optional[np.dtype] = None
        self.opset = 0

    # -- naming ---------------------------------------------------------------
    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used_names:
            name = f"{base}_{k}"
            k += 1
        self.used_names.add(name)
        return name

    def name(self, suffix: Optional[str] = None) -> str:
        base = self.node_name if suffix is None else f"{self.node_name}/{suffix}"
        return self.unique(base)

    def fail(self, message: str) -> ValueError:
        return ValueError(f"from_onnx: node {self.node_label} ({self.op}): {message}")

    # -- values ---------------------------------------------------------------
    def const(self, i: int, what: str, optional: bool = False) -> Optional[np.ndarray]:
        if i >= len(self.inputs) or self.inputs[i] == "":
            if optional:
                return None
            raise self.fail(f"input {i} ({what}) is missing")
        v = self.values[self.inputs[i]]
        if isinstance(v, _Dyn):
            raise self.fail(f"input {i} ({what}, {self.inputs[i]!r}) must be a constant (an "
                            f"initializer or folded at import); it is computed at run time")
        return v

    def dyn(self, i: int, what: str = "X", batch_anywhere: bool = False) -> _Dyn:
        if i >= len(self.inputs) or self.inputs[i] == "":
            raise self.fail(f"input {i} ({what}) is missing")
        v = self.values[self.inputs[i]]
        if not isinstance(v, _Dyn):
            raise _Fold()
        if not batch_anywhere:
            self.batch_first(v)
        return v

    def batch_first(self, v: Any) -> None:
        """A Transpose may move the batch axis (attention's (3, N, ...) of
        q, k and v); only Transpose and Gather take it elsewhere than 0."""
        if isinstance(v, _Dyn) and v.perm[0] != 0:
            raise self.fail(f"reads a tensor of shape {v.shape} whose batch axis a Transpose "
                            f"moved to position {v.perm[0]}; only Transpose and Gather (on "
                            f"another axis) take it there, every other op needs it first")

    def floats(self, a: np.ndarray) -> np.ndarray:
        if a.dtype == object:
            raise self.fail("a value depends on the batch size where a number is needed")
        return np.asarray(a, dtype=self.dtype)

    def ints(self, a: Optional[np.ndarray], what: str) -> List[int]:
        if a is None:
            return []
        if a.dtype == object or a.dtype.kind not in "iub":
            raise self.fail(f"{what} must be integers known at import; got {a!r}")
        return [int(v) for v in a.reshape(-1)]

    def version(self, dyn: _Dyn, perm: Tuple[int, ...]) -> Any:
        """dyn's symbolic tensor in physical order perm (a Transpose layer
        the first time this order is asked for)."""
        from fastconv.nn.tensor_ops import Gather, Transpose
        if dyn.cols is not None:
            inverse = np.argsort(dyn.cols)
            sym = Gather(1, inverse, name=self.name("unflatten"))(dyn.sym)
            dyn.cols = None
            dyn.versions = {dyn.perm: sym}
        if perm not in dyn.versions:
            q = dyn.perm
            r = tuple(q.index(p) for p in perm)
            dyn.versions[perm] = Transpose(r, name=self.name("transpose"))(dyn.versions[q])
        return dyn.versions[perm]

    def plain(self, dyn: _Dyn) -> Any:
        """dyn without a column permutation, in its own order."""
        return self.version(dyn, dyn.perm)

    def physical_const(self, dyn_shape: Tuple[Any, ...], perm: Tuple[int, ...],
                       cols: Optional[np.ndarray], c: np.ndarray) -> np.ndarray:
        """Constant c (broadcast against a dynamic tensor of logical rank
        len(perm)) in that tensor's physical order, batch axis of size 1."""
        r = len(perm)
        c = self.floats(c)
        if c.ndim > r:
            raise self.fail(f"a constant of shape {c.shape} broadcast against a tensor of "
                            f"{r} axes would add axes before the batch axis")
        c = c.reshape((1,) * (r - c.ndim) + c.shape)
        if c.shape[0] != 1:
            raise self.fail(f"a constant of shape {c.shape} would act on the batch axis")
        if cols is not None and c.shape[1] != 1:
            c = c[:, cols]
        return np.ascontiguousarray(c.transpose(perm))

    def logical_axis(self, axis: int, rank: int, what: str = "axis", batch: int = 0) -> int:
        a = axis + rank if axis < 0 else axis
        if not 0 <= a < rank:
            raise self.fail(f"{what} {axis} is out of range for a tensor of {rank} axes")
        if a == batch:
            raise self.fail(f"{what} {a} is the batch axis; ops on the batch axis are not "
                            f"supported (fastconv models treat axis 0 as the batch)")
        return a

    def out_shape(self, sym: Any, perm: Tuple[int, ...], batch: Any) -> Tuple[Any, ...]:
        """The logical shape of a physical symbolic tensor in order perm."""
        phys = (batch,) + tuple(sym.shape)
        shape = [None] * len(perm)
        for j, p in enumerate(perm):
            shape[p] = phys[j]
        return tuple(shape)

    def new(self, sym: Any, perm: Tuple[int, ...], batch: Any,
            cols: Optional[np.ndarray] = None, shape: Optional[Tuple[Any, ...]] = None) -> _Dyn:
        """A run-time tensor of the layer output sym in order perm: its
        logical shape from sym's, or (where an input had dynamic sizes, and
        sym's shape is known only when the model runs) `shape`."""
        if sym.shape is None:
            if shape is None:
                raise self.fail("needs the static sizes of its inputs, which depend on a "
                                "dynamic axis of a graph input here; give input_shapes=")
            return _Dyn(sym, shape, perm, cols)
        return _Dyn(sym, self.out_shape(sym, perm, batch), perm, cols)

    def static(self, *values: Any) -> None:
        """Refuse run-time tensors whose sizes (but the batch's) are dynamic."""
        for v in values:
            if isinstance(v, _Dyn) and any(d is None for i, d in enumerate(v.shape)
                                           if i != v.perm[0]):
                raise self.fail(f"needs the static sizes of its input, of shape {v.shape} "
                                f"(None: dynamic) here; give input_shapes= to fix them")

    # -- driving ---------------------------------------------------------------
    def run(self):
        from fastconv.nn import Model
        from fastconv.nn.structural import Identity
        proto = self.proto
        if not proto.HasField("graph"):
            raise ValueError("from_onnx: the data is not an ONNX model (it has no graph)")
        versions = [imp.version for imp in proto.opset_import if imp.domain in ("", "ai.onnx")]
        if not versions:
            raise ValueError("from_onnx: the model imports no opset of the default ONNX domain")
        self.opset = max(versions)
        if self.opset not in OPSETS:
            raise ValueError(f"from_onnx: the model uses opset {self.opset} of the default "
                             f"domain; opsets {OPSETS.start} to {OPSETS.stop - 1} are supported")
        graph = proto.graph
        for k, node in enumerate(graph.node):
            if node.domain not in ("", "ai.onnx") or node.op_type not in _HANDLERS:
                raise ValueError(
                    f"from_onnx: node {_label(node, k)} has op_type {node.op_type!r}"
                    f"{' of domain ' + repr(node.domain) if node.domain else ''}, which is not "
                    f"supported; supported: {', '.join(SUPPORTED_OPS)}")
        if graph.sparse_initializer:
            raise ValueError("from_onnx: sparse initializers are not supported")
        for t in graph.initializer:
            if t.name in self.values:
                raise ValueError(f"from_onnx: initializer {t.name!r} is defined twice")
            self.values[t.name] = self.reader.tensor(t, f"initializer {t.name!r}")
        inputs = self.graph_inputs(graph)
        self.used_names.update(o.name for o in graph.output)
        self.used_names.update(t.name for t in inputs)
        nodes = self.order(graph)
        for index, node in nodes:
            self.node(index, node)
        from fastconv.nn.tensor_ops import Copy, Transpose
        outs = []
        seen: set = set()
        given: set = set()
        for o in graph.output:
            if o.name in seen:
                raise ValueError(f"from_onnx: graph output {o.name!r} is listed twice")
            seen.add(o.name)
            passed = [t for t in inputs if t.name == o.name]
            if passed:
                # A graph input given back as an output: the model returns
                # the caller's array itself (onnxruntime returns a copy), as
                # a layer of that name could not be told from the input.
                outs.append(passed[0])
                given.add(id(passed[0]))
                continue
            v = self.values.get(o.name)
            if v is None:
                raise ValueError(f"from_onnx: graph output {o.name!r} is not computed by any "
                                 f"node")
            if not isinstance(v, _Dyn):
                raise ValueError(f"from_onnx: graph output {o.name!r} is a constant (it does "
                                 f"not depend on the inputs); not supported")
            self.node_name, self.node_label, self.op = o.name, repr(o.name), "output"
            if v.perm[0] != 0:
                raise ValueError(f"from_onnx: graph output {o.name!r} has its batch axis at "
                                 f"position {v.perm[0]} (a Transpose moved it); not supported")
            target = _identity(v.rank)
            if v.cols is None and target not in v.versions:
                q = v.perm
                sym = Transpose(tuple(q.index(p) for p in target), name=o.name)(v.sym)
            else:
                sym = self.version(v, target)
                # (an input, or a tensor already given as an output, is copied:
                # onnxruntime's outputs are arrays of their own)
                copy = sym.is_input or id(sym) in given
                sym = (Copy if copy else Identity)(name=o.name)(sym)
            given.add(id(sym))
            given.update(id(t) for t in sym.inputs)
            outs.append(sym)
        try:
            return Model(inputs, outs, layout="NHWC", name=graph.name or None)
        except ValueError as exc:
            raise ValueError(f"from_onnx: {exc}") from None

    def graph_inputs(self, graph: Any):
        from fastconv.nn import Input
        inputs = []
        dtypes = set()
        for vi in graph.input:
            if vi.name in self.values:
                continue  # (IR < 4 lists initializers among the inputs)
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            if tt is None or tt.elem_type not in (1, 11):
                raise ValueError(f"from_onnx: graph input {vi.name!r} must be a float or double "
                                 f"tensor")
            dtypes.add(np.float32 if tt.elem_type == 1 else np.float64)
            if vi.name in self.input_shapes:
                shape = tuple(self.input_shapes[vi.name])
            elif not tt.HasField("shape"):
                raise ValueError(f"from_onnx: graph input {vi.name!r} has no shape; give one "
                                 f"with input_shapes={{{vi.name!r}: (N, ...)}}")
            else:
                shape = tuple(d.dim_value if d.HasField("dim_value") else None
                              for d in tt.shape.dim)
            if len(shape) < 1:
                raise ValueError(f"from_onnx: graph input {vi.name!r} is a scalar; inputs need "
                                 f"a batch axis")
            if isinstance(shape[0], int) and shape[0] < 0:
                shape = (None,) + shape[1:]  # (some exporters write -1 for a dynamic batch)
            if any(d is not None and (not isinstance(d, int) or d < 0) for d in shape):
                raise ValueError(f"from_onnx: graph input {vi.name!r} has shape "
                                 f"{tuple('?' if d is None else d for d in shape)}; expected "
                                 f"sizes >= 0 or dynamic axes")
            if math.prod(d for d in shape[1:] if d is not None) > INT_MAX // 8:
                raise ValueError(f"from_onnx: graph input {vi.name!r} has shape {shape}, too "
                                 f"large")
            inputs.append((vi.name, shape))
        unknown = set(self.input_shapes) - {n for n, _ in inputs}
        if unknown:
            raise ValueError(f"from_onnx: input_shapes names {sorted(unknown)}, which are not "
                             f"graph inputs ({[n for n, _ in inputs]})")
        if not inputs:
            raise ValueError("from_onnx: the graph has no inputs (besides initializers)")
        if len(dtypes) > 1:
            raise ValueError("from_onnx: the graph inputs mix float and double; a model has one "
                             "dtype")
        self.dtype = np.dtype(dtypes.pop())
        syms = []
        for name, shape in inputs:
            sym = Input(shape[1:], name=name, dtype=self.dtype)
            self.values[name] = _Dyn(sym, (shape[0],) + shape[1:], _identity(len(shape)))
            syms.append(sym)
        return syms

    def order(self, graph: Any):
        """The nodes in an order where each reads only what is defined
        (Kahn's algorithm; ONNX asks for topological order, but only a cycle
        or an undefined tensor makes it impossible)."""
        producer: Dict[str, int] = {}
        for k, node in enumerate(graph.node):
            for o in node.output:
                if o == "":
                    continue
                if o in producer or o in self.values:
                    raise ValueError(f"from_onnx: tensor {o!r} is defined twice (node "
                                     f"{_label(node, k)})")
                producer[o] = k
        waiting = [0] * len(graph.node)
        readers: Dict[int, List[int]] = {}
        for k, node in enumerate(graph.node):
            for i in node.input:
                if i == "" or i in self.values:
                    continue
                if i not in producer:
                    raise ValueError(f"from_onnx: node {_label(node, k)} ({node.op_type}) reads "
                                     f"tensor {i!r}, which no node, input or initializer "
                                     f"defines")
                waiting[k] += 1
                readers.setdefault(producer[i], []).append(k)
        ready = [k for k in range(len(graph.node)) if waiting[k] == 0]
        ready.reverse()
        out = []
        while ready:
            k = ready.pop()
            out.append((k, graph.node[k]))
            for j in readers.get(k, []):
                waiting[j] -= 1
                if waiting[j] == 0:
                    ready.append(j)
        if len(out) != len(graph.node):
            stuck = next(k for k in range(len(graph.node)) if waiting[k] > 0)
            raise ValueError(f"from_onnx: the graph has a cycle (through node "
                             f"{_label(graph.node[stuck], stuck)})")
        return out

    def node(self, index: int, node: Any) -> None:
        self.op = node.op_type
        self.node_label = _label(node, index)
        self.node_name = self.unique(node.name or f"{node.op_type}_{index}")
        self.used_names.discard(self.node_name)  # (the node's first layer takes it)
        self.inputs = list(node.input)
        self.node_outputs = list(node.output)
        if node.domain not in ("", "ai.onnx") or self.op not in _HANDLERS:
            raise ValueError(f"from_onnx: node {self.node_label} has op_type {node.op_type!r}"
                             f"{' of domain ' + repr(node.domain) if node.domain else ''}, "
                             f"which is not supported; supported: {', '.join(SUPPORTED_OPS)}")
        self.attrs = _attrs(node, self.reader, f"node {self.node_label}")
        for key, value in self.attrs.items():
            if isinstance(value, tuple):
                raise self.fail(f"attribute {key!r} has a graph or sparse type; not supported")
        handler = _HANDLERS[self.op]
        try:
            try:
                results = handler(self)
            except _Fold:
                results = self.fold()
        except _BatchArithmetic:
            raise self.fail("computes with the batch size (Shape of a tensor with a dynamic "
                            "batch) where only moving it to a Reshape is supported") from None
        except _Unsupported:
            raise
        except (IndexError, KeyError):
            raise self.fail(f"has {len(self.inputs)} inputs, fewer than this op reads (or "
                            f"one of them is empty)") from None
        except (TypeError, ValueError) as exc:
            text = str(exc)
            if text.startswith("from_onnx: node"):
                raise
            raise self.fail(text) from None
        if not isinstance(results, list):
            results = [results]
        outputs = [o for o in node.output]
        for name, value in zip(outputs, results):
            if name != "":
                value = _normal(value)
                if isinstance(value, np.ndarray) and value.size > MAX_FOLDED:
                    raise self.fail(f"folds to a constant of {value.size} values; at most "
                                    f"{MAX_FOLDED} are made at import")
                self.values[name] = value
        self.used_names.add(self.node_name)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def refuse_attr(self, key: str, value: Any, allowed: str) -> ValueError:
        return _Unsupported(f"from_onnx: node {self.node_label} ({self.op}): attribute "
                            f"{key!r} = {value!r} is not supported; allowed: {allowed}")

    # -- constant folding -----------------------------------------------------------
    def fold(self) -> Any:
        fn = _FOLDERS.get(self.op)
        if fn is None:
            raise self.fail("its inputs are constants, and this op is not folded at import; "
                            "it takes a tensor computed at run time")
        args = [None if i == "" else self.values[i] for i in self.inputs]
        if any(isinstance(a, _Dyn) for a in args):
            raise self.fail("mixes run-time tensors and constants in a way that is not "
                            "supported")
        return fn(self, args)


def _normal(value: Any) -> Any:
    """A folded value as an ndarray: object arrays (shapes holding the
    dynamic batch) only while they hold it."""
    if isinstance(value, _Dyn):
        return value
    if value is BATCH:
        a = np.empty((), object)
        a[()] = BATCH
        return a
    a = np.asarray(value)
    if a.dtype == object and not any(v is BATCH for v in a.reshape(-1)):
        a = np.array(a.tolist())
    return a


class _Fold(Exception):
    """Raised by a handler whose data input is a constant: fold the node."""


def _label(node: Any, index: int) -> str:
    return repr(node.name) if node.name else f"#{index} (unnamed)"


# -- handlers ---------------------------------------------------------------------------------

def _spatial_attrs(im: _Importer, x: _Dyn, kernel: Sequence[int], has_dilations: bool = True):
    """(strides, dilations, pads ((begin, end) per spatial axis)) of a
    Conv/pool node for input x, auto_pad resolved."""
    nsp = len(kernel)
    strides = list(im.attr("strides", [1] * nsp))
    dilations = list(im.attr("dilations", [1] * nsp)) if has_dilations else [1] * nsp
    pads = list(im.attr("pads", [0] * (2 * nsp)))
    if len(strides) != nsp or len(dilations) != nsp or len(pads) != 2 * nsp:
        raise im.fail(f"strides {strides}, dilations {dilations} and pads {pads} do not fit a "
                      f"{nsp}-D kernel")
    if min(strides) < 1 or min(dilations) < 1 or min(pads) < 0:
        raise im.fail(f"strides {strides} and dilations {dilations} must be >= 1 and pads "
                      f"{pads} >= 0")
    auto = im.attr("auto_pad", "NOTSET")
    spatial = x.shape[2:]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        im.static(x)
        pairs = [_pads_same(n, (k - 1) * d + 1, s, auto)
                 for n, k, s, d in zip(spatial, kernel, strides, dilations)]
    elif auto == "VALID":
        pairs = [(0, 0)] * nsp
    elif auto == "NOTSET":
        pairs = [(pads[i], pads[i + nsp]) for i in range(nsp)]
    else:
        raise im.refuse_attr("auto_pad", auto, "NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    return strides, dilations, pairs


def _as_2d(im: _Importer, x: _Dyn, what: str):
    """x's symbolic tensor as an NHWC map: a 4-D tensor channels-last, a 3-D
    one (N, C, L) as (N, 1, L, C) (a reshape of its channels-last form)."""
    from fastconv.nn.tensor_ops import Reshape
    if x.rank == 4:
        return im.version(x, _channels_last(4))
    if x.rank == 3:
        im.static(x)
        sym = im.version(x, _channels_last(3))
        return Reshape((1,) + tuple(sym.shape), name=im.name("to_2d"))(sym)
    raise im.fail(f"{what} takes 1-D or 2-D maps ((N, C, L) or (N, C, H, W)); got a tensor of "
                  f"shape {x.shape}")


def _from_2d(im: _Importer, sym: Any, x: _Dyn, channels: int) -> _Dyn:
    """The _Dyn of sym, the NHWC output of a layer that read x (through
    _as_2d). Where x's sizes are static but sym's shape is not known (a
    dynamic axis further up, nn's shapes are then None throughout), the
    layer computes it from x's."""
    from fastconv.nn.tensor_ops import Reshape
    rank, batch = x.rank, x.shape[0]
    if rank == 3:
        sym = Reshape(tuple(sym.shape[1:]), name=im.name("to_1d"))(sym)
    shape = (batch, channels) + (None,) * (rank - 2)
    if sym.shape is None and rank == 4 and None not in x.shape[1:]:
        h, w, c = sym.layer.output_shape(tuple(x.shape[2:]) + (x.shape[1],))
        shape = (batch, c, h, w)
    return im.new(sym, _channels_last(rank), batch, shape=shape)


def _conv(im: _Importer):
    from fastconv.nn import Conv2d
    x = im.dyn(0)
    w = im.floats(im.const(1, "W"))
    b = im.const(2, "B", optional=True)
    if w.ndim != x.rank:
        raise im.fail(f"W of shape {w.shape} does not fit X of shape {x.shape}")
    strides, dilations, pads = _spatial_attrs(im, x, w.shape[2:])
    group = int(im.attr("group", 1))
    sym = _as_2d(im, x, "Conv")
    if x.rank == 3:
        w = w[:, :, None, :]
        strides, dilations, pads = [1] + strides, [1] + dilations, [(0, 0)] + pads
    layer = Conv2d(w.transpose(2, 3, 1, 0), None if b is None else im.floats(b),
                   stride=tuple(strides), dilation=tuple(dilations), padding=tuple(pads),
                   groups=group, name=im.name())
    return _from_2d(im, layer(sym), x, layer.out_channels)


def _conv_transpose(im: _Importer):
    from fastconv.nn import ConvTranspose2d
    x = im.dyn(0)
    w = im.floats(im.const(1, "W"))
    b = im.const(2, "B", optional=True)
    if w.ndim != x.rank or x.rank not in (3, 4):
        raise im.fail(f"W of shape {w.shape} does not fit X of shape {x.shape} (1-D and 2-D "
                      f"maps are supported)")
    nsp = x.rank - 2
    group = int(im.attr("group", 1))
    kernel = w.shape[2:]
    strides = list(im.attr("strides", [1] * nsp))
    dilations = list(im.attr("dilations", [1] * nsp))
    out_pad = list(im.attr("output_padding", [0] * nsp))
    pads = list(im.attr("pads", [0] * (2 * nsp)))
    if not (len(strides) == len(dilations) == len(out_pad) == nsp and len(pads) == 2 * nsp):
        raise im.fail("strides, dilations, output_padding and pads do not fit the kernel")
    auto = im.attr("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise im.refuse_attr("auto_pad", auto, "NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    target = im.attr("output_shape")
    spatial = x.shape[2:]
    full = [None if n is None else s * (n - 1) + op + (k - 1) * d + 1
            for n, k, s, d, op in zip(spatial, kernel, strides, dilations, out_pad)]
    if target is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        im.static(x)
        if target is None:
            target = [n * s for n, s in zip(spatial, strides)]
        target = list(target)[-nsp:]
        pairs = []
        for f, t in zip(full, target):
            total = f - t
            if total < 0:
                raise im.fail(f"output_shape {target} is larger than the transposed "
                              f"convolution makes ({full} with no padding)")
            small = total // 2
            pairs.append((small, total - small) if auto == "SAME_UPPER" else
                         (total - small, small))
    elif auto == "VALID":
        pairs = [(0, 0)] * nsp
    else:
        pairs = [(pads[i], pads[i + nsp]) for i in range(nsp)]
    sym = _as_2d(im, x, "ConvTranspose")
    if x.rank == 3:
        w = w[:, :, None, :]
        strides, dilations, out_pad, pairs = ([1] + strides, [1] + dilations, [0] + out_pad,
                                              [(0, 0)] + pairs)
    layer = ConvTranspose2d(w.transpose(2, 3, 1, 0), None if b is None else im.floats(b),
                            stride=tuple(strides), padding=tuple(pairs),
                            output_padding=tuple(out_pad), dilation=tuple(dilations),
                            groups=group, name=im.name())
    return _from_2d(im, layer(sym), x, layer.out_channels)


def _batchnorm(im: _Importer):
    from fastconv.nn import BatchNorm2d
    from fastconv.nn.tensor_ops import Binary
    x = im.dyn(0)
    gamma, beta, mean, var = (im.floats(im.const(i, what)) for i, what in
                              ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")))
    if im.attr("training_mode", 0):
        raise im.refuse_attr("training_mode", 1, "0 (inference)")
    if im.attr("spatial", 1) != 1:
        raise im.refuse_attr("spatial", im.attr("spatial"), "1")
    eps = float(im.attr("epsilon", 1e-5))
    if x.rank == 4 and x.cols is None:
        sym = im.version(x, _channels_last(4))
        layer = BatchNorm2d(gamma.reshape(-1), beta.reshape(-1), mean.reshape(-1),
                            var.reshape(-1), eps=eps, name=im.name())
        return im.new(layer(sym), _channels_last(4), x.shape[0], shape=x.shape)
    if x.rank < 2:
        raise im.fail(f"X of shape {x.shape} has no channel axis")
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shift = beta.astype(np.float64) - mean.astype(np.float64) * scale
    shape = (1, -1) + (1,) * (x.rank - 2)
    mul = Binary("mul", im.physical_const(x.shape, x.perm, x.cols, scale.reshape(shape)),
                 name=im.name())
    add = Binary("add", im.physical_const(x.shape, x.perm, x.cols, shift.reshape(shape)),
                 name=im.name("shift"))
    return _Dyn(add(mul(x.sym)), x.shape, x.perm, x.cols)


def _unary(make):
    def handler(im: _Importer):
        x = im.dyn(0)
        layer = make(im)
        return _Dyn(layer(x.sym), x.shape, x.perm, x.cols)
    return handler


def _hard_swish(im: _Importer):
    """x * hard_sigmoid(x) with ONNX's alpha, 1/6 as a float32: in float32
    the kernels' hard_swish (x * relu6(x + 3) / 6, which fuses into a
    convolution's store) is within rounding of it; in float64 the float32
    alpha shows, so x times a HardSigmoid layer with that alpha."""
    from fastconv import nn
    x = im.dyn(0)
    if im.dtype == np.float32:
        return _Dyn(nn.HardSwish(name=im.name())(x.sym), x.shape, x.perm, x.cols)
    gate = nn.HardSigmoid(float(np.float32(1 / 6)), 0.5, name=im.name("gate"))(x.sym)
    return _Dyn(nn.Multiply(name=im.name())([x.sym, gate]), x.shape, x.perm, x.cols)


def _clip(im: _Importer):
    """Clip with both bounds finite: the kernels' clip (which fuses into a
    convolution's store); with one bound infinite, a maximum or minimum;
    with none, nothing."""
    from fastconv.nn import Clip
    from fastconv.nn.tensor_ops import Binary
    x = im.dyn(0)
    if im.opset < 11:
        low, high = float(im.attr("min", -np.inf)), float(im.attr("max", np.inf))
    else:
        lo, hi = im.const(1, "min", True), im.const(2, "max", True)
        low = -np.inf if lo is None else float(im.floats(lo).reshape(-1)[0])
        high = np.inf if hi is None else float(im.floats(hi).reshape(-1)[0])
    if math.isfinite(low) and math.isfinite(high):
        layer = Clip(low, high, name=im.name())
    elif math.isfinite(low) or math.isfinite(high):
        bound = low if math.isfinite(low) else high
        const = np.full((1,) * x.rank, bound, im.dtype)
        layer = Binary("max" if math.isfinite(low) else "min", const, name=im.name())
    else:
        return x
    return _Dyn(layer(x.sym), x.shape, x.perm, x.cols)


# ONNX's attribute defaults are float32 values (what onnxruntime computes with)
_F32_02, _F32_001 = float(np.float32(0.2)), float(np.float32(0.01))


def _activation_layers():
    from fastconv import nn
    return {
        "Relu": lambda im: nn.ReLU(name=im.name()),
        "Sigmoid": lambda im: nn.Sigmoid(name=im.name()),
        "Tanh": lambda im: nn.Tanh(name=im.name()),
        "HardSigmoid": lambda im: nn.HardSigmoid(float(im.attr("alpha", _F32_02)),
                                                 float(im.attr("beta", 0.5)), name=im.name()),
        "LeakyRelu": lambda im: nn.LeakyReLU(float(im.attr("alpha", _F32_001)),
                                               name=im.name()),
    }


def _alias(im: _Importer):
    v = im.values[im.inputs[0]]
    return v


def _prelu(im: _Importer):
    from fastconv.nn.tensor_ops import Binary
    x = im.dyn(0)
    slope = im.const(1, "slope")
    c = im.physical_const(x.shape, x.perm, x.cols, slope)
    return _Dyn(Binary("prelu", c, name=im.name())(x.sym), x.shape, x.perm, x.cols)


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow"}
_UNARY = {"Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Neg": "neg", "Abs": "abs",
          "Reciprocal": "reciprocal", "Floor": "floor", "Ceil": "ceil"}


def _unary_op(im: _Importer):
    from fastconv.nn.tensor_ops import Unary
    x = im.dyn(0)
    return _Dyn(Unary(_UNARY[im.op], name=im.name())(x.sym), x.shape, x.perm, x.cols)


def _broadcast_shape(im: _Importer, a: Sequence[Any], b: Sequence[Any]) -> Tuple[Any, ...]:
    r = max(len(a), len(b))
    a = (1,) * (r - len(a)) + tuple(a)
    b = (1,) * (r - len(b)) + tuple(b)
    out = []
    for i, (p, q) in enumerate(zip(a, b)):
        if i == 0:
            out.append(p if q == 1 else q if p == 1 else p)
        elif p == q or q == 1 or q is None and p != 1:
            out.append(p)  # (a dynamic size against a static one > 1 is that one)
        elif p == 1 or p is None:
            out.append(q)
        else:
            raise im.fail(f"shapes {a} and {b} do not broadcast")
    return tuple(out)


def _binary(im: _Importer):
    from fastconv.nn import Add, Multiply
    from fastconv.nn.tensor_ops import Binary
    op = _BINARY[im.op]
    va, vb = im.values[im.inputs[0]], im.values[im.inputs[1]]
    im.batch_first(va)
    im.batch_first(vb)
    if not isinstance(va, _Dyn) and not isinstance(vb, _Dyn):
        raise _Fold()
    if not isinstance(va, _Dyn) or not isinstance(vb, _Dyn):
        x, c = (va, vb) if isinstance(va, _Dyn) else (vb, va)
        const = im.physical_const(x.shape, x.perm, x.cols, c)
        layer = Binary(op, const, constant_first=x is vb, name=im.name())
        shape = _broadcast_shape(im, x.shape, np.shape(c))
        return _Dyn(layer(x.sym), shape, x.perm, x.cols)
    if va.rank != vb.rank:
        raise im.fail(f"run-time tensors of shapes {va.shape} and {vb.shape} have different "
                      f"numbers of axes; broadcasting them would move the batch axis")
    shape = _broadcast_shape(im, va.shape, vb.shape)
    cols = None
    if va.cols is not None and vb.cols is not None and np.array_equal(va.cols, vb.cols):
        cols, sa, sb = va.cols, va.sym, vb.sym
    else:
        sa = im.plain(va)
        sb = im.version(vb, va.perm)
    if va.shape == vb.shape and op in ("add", "mul"):
        layer = (Add if op == "add" else Multiply)(name=im.name())
    else:
        layer = Binary(op, name=im.name())
    return _Dyn(layer([sa, sb]), shape, va.perm, cols)


def _concat(im: _Importer):
    from fastconv.nn import Concatenate
    vals = [im.values[i] for i in im.inputs if i != ""]
    if not any(isinstance(v, _Dyn) for v in vals):
        raise _Fold()
    for v in vals:
        im.batch_first(v)
    dyns = [v for v in vals if isinstance(v, _Dyn)]
    if len(dyns) < len(vals):
        return _concat_constants(im, vals)
    first = vals[0]
    axis = im.logical_axis(int(im.attr("axis", 1)), first.rank)
    if len(vals) == 1:
        return first
    syms = [im.plain(first)] + [im.version(v, first.perm) for v in vals[1:]]
    layer = Concatenate(axis=first.perm.index(axis), name=im.name())
    joined = [v.shape[axis] for v in vals]
    shape = first.shape[:axis] + (None if None in joined else sum(joined),) + \
        first.shape[axis + 1:]
    return im.new(layer(syms), first.perm, first.shape[0], shape=shape)


def _concat_constants(im: _Importer, vals: List[Any]) -> _Dyn:
    """One run-time tensor joined with constants (batch axis 1, broadcast,
    or the graph's static batch size)."""
    from fastconv.nn.tensor_ops import ConcatConstant
    dyns = [k for k, v in enumerate(vals) if isinstance(v, _Dyn)]
    im.static(*vals)
    if len(dyns) != 1:
        raise im.fail("concatenates several run-time tensors with constants; only one "
                      "run-time tensor among constants is supported")
    k = dyns[0]
    x = vals[k]
    axis = im.logical_axis(int(im.attr("axis", 1)), x.rank)
    parts = []
    for consts in (vals[:k], vals[k + 1:]):
        if not consts:
            parts.append(None)
            continue
        cs = [im.floats(c) for c in consts]
        if any(c.ndim != x.rank for c in cs):
            raise im.fail(f"constants of shapes {[c.shape for c in cs]} do not join a tensor "
                          f"of shape {x.shape}")
        c = np.concatenate(cs, axis=axis)
        if c.shape[0] != 1 and c.shape[0] != x.shape[0]:
            raise im.fail(f"a constant of shape {c.shape} would set the batch axis")
        parts.append(np.ascontiguousarray(c.transpose(x.perm)))
    sym = im.plain(x)
    layer = ConcatConstant(x.perm.index(axis), parts[0], parts[1], name=im.name())
    return im.new(layer(sym), x.perm, x.shape[0])


def _slices_1d(start: int, end: int, step: int, n: int) -> slice:
    """ONNX Slice's clamping for one axis of size n, as a Python slice."""
    if step == 0:
        raise ValueError("a step of 0")
    if start < 0:
        start += n
    if end < 0:
        end += n
    if step > 0:
        start, end = min(max(start, 0), n), min(max(end, 0), n)
        return slice(start, end, step)
    start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
    return slice(start, None if end < 0 else end, step)


def _slice_spec(im: _Importer):
    if im.opset < 10:
        starts, ends = list(im.attr("starts", [])), list(im.attr("ends", []))
        axes = list(im.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = im.ints(im.const(1, "starts"), "starts")
        ends = im.ints(im.const(2, "ends"), "ends")
        axes = im.ints(im.const(3, "axes", True), "axes") or list(range(len(starts)))
        steps = im.ints(im.const(4, "steps", True), "steps") or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise im.fail(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in "
                      f"length")
    if 0 in steps:
        raise im.fail(f"steps {steps} hold 0")
    return starts, ends, axes, steps


def _slice(im: _Importer):
    from fastconv.nn.tensor_ops import Slice
    x = im.dyn(0, batch_anywhere=True)
    im.static(x)
    b = x.perm[0]  # (the batch's logical axis)
    starts, ends, axes, steps = _slice_spec(im)
    per_axis: Dict[int, slice] = {}
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a + x.rank if a < 0 else a
        if not 0 <= a < x.rank or a in per_axis:
            raise im.fail(f"axes {axes} are out of range or repeated for shape {x.shape}")
        if a == b:
            n = x.shape[b]
            if s == 0 and st == 1 and (e >= INT_MAX // 2 or (n is not None and e >= n)):
                continue  # the whole batch
            raise im.fail(f"slices the batch axis ({b}); not supported")
        per_axis[a] = _slices_1d(s, e, st, x.shape[a])
    if not per_axis:
        return x
    sym = im.plain(x)
    phys = [per_axis.get(p, slice(None)) for p in x.perm[1:]]
    layer = Slice([[s.start, s.stop, s.step] for s in phys], name=im.name())
    return im.new(layer(sym), x.perm, x.shape[b])


def _split(im: _Importer):
    from fastconv.nn.tensor_ops import Slice
    x = im.dyn(0)
    im.static(x)
    axis = im.logical_axis(int(im.attr("axis", 0)), x.rank)
    n = x.shape[axis]
    count = len([o for o in im.node_outputs])
    if im.opset >= 13:
        sizes = im.ints(im.const(1, "split", True), "split")
    else:
        sizes = list(im.attr("split", []))
    if not sizes:
        parts = int(im.attr("num_outputs", count))
        if parts < 1:
            raise im.fail(f"num_outputs {parts} must be >= 1")
        chunk = -(-n // parts)
        sizes = [min(chunk, max(n - chunk * i, 0)) for i in range(parts)]
    if sum(sizes) != n or min(sizes) < 0 or len(sizes) != count:
        raise im.fail(f"split sizes {sizes} do not cut axis {axis} of size {n} into {count} "
                      f"outputs")
    sym = im.plain(x)
    pa = x.perm.index(axis)
    outs, start = [], 0
    for k, size in enumerate(sizes):
        phys = [[None, None, None]] * (x.rank - 1)
        phys = [list(p) for p in phys]
        phys[pa - 1] = [start, start + size, 1]
        layer = Slice(phys, name=im.name() if k == 0 else im.name(str(k)))
        outs.append(im.new(layer(sym), x.perm, x.shape[0]))
        start += size
    return outs


def _reshape_target(im: _Importer, x_shape: Tuple[Any, ...], target: np.ndarray,
                    allowzero: bool) -> Tuple[Any, ...]:
    """The logical output shape of a Reshape of a run-time tensor (batch first)."""
    t = list(target.reshape(-1))
    if not t:
        raise im.fail("reshapes to a scalar, which has no batch axis")
    for i, v in enumerate(t):
        if v is BATCH and i != 0:
            raise im.fail(f"moves the batch size to axis {i} of the shape {t}")
    per_sample = math.prod(x_shape[1:])
    rest = []
    for i, v in enumerate(t[1:], start=1):
        v = int(v)
        if v == 0 and not allowzero:
            if i >= len(x_shape):
                raise im.fail(f"shape {t} copies axis {i}, which the input {x_shape} lacks")
            v = x_shape[i]
        rest.append(v)
    if rest.count(-1) > 1 or any(v < -1 for v in rest):
        raise im.fail(f"shape {t} has more than one -1 or a negative size")
    first = t[0]
    keeps = first is BATCH or (int(first) == 0 and not allowzero) or (
        x_shape[0] is not None and int(first) == x_shape[0])
    if not keeps and int(first) == -1 and -1 not in rest and math.prod(rest) == per_sample:
        keeps = True
    if not keeps:
        raise im.fail(f"reshapes {x_shape} to {t}, which changes the batch axis (0); "
                      f"fastconv models keep axis 0 as the batch")
    if -1 in rest:
        known = math.prod(v for v in rest if v != -1)
        if known == 0 or per_sample % known:
            raise im.fail(f"cannot reshape {x_shape} to {t}")
        rest[rest.index(-1)] = per_sample // known
    if math.prod(rest) != per_sample:
        raise im.fail(f"cannot reshape {x_shape} to {t}")
    return (x_shape[0],) + tuple(rest)


def _reshape_to(im: _Importer, x: _Dyn, shape: Tuple[Any, ...]) -> _Dyn:
    """x reshaped to logical `shape` (batch first), as cheaply as its
    physical order allows."""
    from fastconv.nn.tensor_ops import Reshape
    if shape == x.shape:
        return x
    if x.cols is not None:
        if len(shape) == 2:
            return x
        im.plain(x)
    if _free(x.shape, x.perm):
        sym = x.sym
    elif len(shape) == 2 and x.rank > 2 and shape[1] <= MAX_FOLDED:
        # Flattened in its own order: the features carry the permutation
        # (a Gemm after it permutes its weight rows instead).
        logical = np.arange(math.prod(x.shape[1:])).reshape(x.shape[1:])
        cols = logical.transpose([p - 1 for p in x.perm[1:]]).reshape(-1)
        layer = Reshape(shape[1:], name=im.name())
        return _Dyn(layer(x.sym), shape, _identity(2), cols)
    else:
        sym = im.version(x, _identity(x.rank))
    layer = Reshape(shape[1:], name=im.name())
    return _Dyn(layer(sym), shape, _identity(len(shape)))


def _reshape(im: _Importer):
    x = im.dyn(0)
    im.static(x)
    target = im.const(1, "shape")
    shape = _reshape_target(im, x.shape, target, bool(im.attr("allowzero", 0)))
    return _reshape_to(im, x, shape)


def _flatten(im: _Importer):
    x = im.dyn(0)
    im.static(x)
    axis = int(im.attr("axis", 1))
    axis = axis + x.rank if axis < 0 else axis
    if not 0 <= axis <= x.rank:
        raise im.fail(f"axis {axis} is out of range for shape {x.shape}")
    if axis == 0 or math.prod(x.shape[1:axis]) != 1:
        raise im.fail(f"axis {axis} flattens the batch axis together with others; only "
                      f"flattening from an axis after which the batch stays alone is supported")
    return _reshape_to(im, x, (x.shape[0], math.prod(x.shape[axis:])))


def _transpose(im: _Importer):
    x = im.dyn(0, batch_anywhere=True)
    perm = [int(p) for p in im.attr("perm", list(range(x.rank))[::-1])]
    if sorted(perm) != list(range(x.rank)):
        raise im.fail(f"perm {perm} is not a permutation of the {x.rank} axes")
    if perm == list(range(x.rank)):
        return x
    im.plain(x)
    inverse = np.argsort(perm)
    q = tuple(int(inverse[p]) for p in x.perm)
    y = _Dyn(x.sym, tuple(x.shape[p] for p in perm), q)
    for old_perm, sym in x.versions.items():
        y.versions[tuple(int(inverse[p]) for p in old_perm)] = sym
    return y


def _squeeze_axes(im: _Importer, rank: int, shape: Tuple[Any, ...], batch: int
                  ) -> List[int]:
    if im.opset >= 13:
        axes = im.ints(im.const(1, "axes", True), "axes")
    else:
        axes = list(im.attr("axes", []))
    if not axes:
        if shape[batch] == 1:
            raise im.fail("squeezes every axis of size 1 (no axes given), which would remove "
                          "the batch axis of this graph's batch size 1; give axes")
        axes = [i for i in range(rank) if i != batch and shape[i] == 1]
    return axes


def _relabel(im: _Importer, x: _Dyn, shape: Tuple[Any, ...], perm: Tuple[int, ...]) -> _Dyn:
    """x with size-1 axes added or removed: a reshape of its physical array
    to `shape` in order `perm`."""
    from fastconv.nn.tensor_ops import Reshape
    sym = im.plain(x) if x.cols is not None and len(shape) != 2 else x.sym
    cols = x.cols if len(shape) == 2 else None
    phys = tuple(shape[p] for p in perm[1:])
    if tuple(sym.shape) == phys:
        return _Dyn(sym, shape, perm, cols)
    return _Dyn(Reshape(phys, name=im.name())(sym), shape, perm, cols)


def _squeeze(im: _Importer):
    x = im.dyn(0, batch_anywhere=True)
    im.static(x)
    axes = sorted({im.logical_axis(a, x.rank, "axes entry", batch=x.perm[0])
                   for a in _squeeze_axes(im, x.rank, x.shape, x.perm[0])})
    for a in axes:
        if x.shape[a] != 1:
            raise im.fail(f"squeezes axis {a} of size {x.shape[a]}")
    keep = [i for i in range(x.rank) if i not in axes]
    renumber = {old: new for new, old in enumerate(keep)}
    perm = tuple(renumber[p] for p in x.perm if p in renumber)
    return _relabel(im, x, tuple(x.shape[i] for i in keep), perm)


def _unsqueeze(im: _Importer):
    x = im.dyn(0)
    im.static(x)
    if im.opset >= 13:
        axes = im.ints(im.const(1, "axes"), "axes")
    else:
        axes = list(im.attr("axes", []))
    r = x.rank + len(axes)
    axes = sorted({im.logical_axis(a, r, "axes entry") for a in axes})
    if len(axes) != len(set(axes)):
        raise im.fail(f"axes {axes} repeat")
    old = [i for i in range(r) if i not in axes]
    shape = [1] * r
    for i, o in enumerate(old):
        shape[o] = x.shape[i]
    perm = tuple(old[p] for p in x.perm) + tuple(axes)
    return _relabel(im, x, tuple(shape), perm)


def _pool(im: _Importer):
    from fastconv.nn import AvgPool2d, MaxPool2d
    from fastconv.nn.tensor_ops import Pool2d
    x = im.dyn(0)
    is_max = im.op == "MaxPool"
    kernel = list(im.attr("kernel_shape", []))
    if len(kernel) != x.rank - 2 or x.rank not in (3, 4):
        raise im.fail(f"kernel_shape {kernel} does not fit X of shape {x.shape} (1-D and 2-D "
                      f"pools are supported)")
    strides, dilations, pads = _spatial_attrs(im, x, kernel)
    if any(d != 1 for d in dilations) and not is_max:
        raise im.refuse_attr("dilations", dilations, "all 1 (dilations are for MaxPool)")
    if im.attr("storage_order", 0) != 0:
        raise im.refuse_attr("storage_order", im.attr("storage_order"), "0")
    ceil = bool(im.attr("ceil_mode", 0))
    include = bool(im.attr("count_include_pad", 0))
    sym = _as_2d(im, x, im.op)
    if x.rank == 3:
        kernel, strides, pads = [1] + kernel, [1] + strides, [(0, 0)] + pads
        dilations = [1] + dilations
    symmetric = all(b == e and 2 * b <= k for (b, e), k in zip(pads, kernel)) and \
        all(d == 1 for d in dilations)
    if symmetric and (is_max or not ceil):
        # nn.MaxPool2d/AvgPool2d: the same sizes and values (torch's rules are
        # ONNX's for symmetric padding of at most half the window; their
        # averages differ only where ceil_mode lets a window pass the padding)
        p = tuple(b for b, _ in pads)
        layer = (MaxPool2d(tuple(kernel), tuple(strides), p, ceil, name=im.name()) if is_max
                 else AvgPool2d(tuple(kernel), tuple(strides), p, ceil, include,
                                name=im.name()))
    else:
        layer = Pool2d("max" if is_max else "avg", kernel, strides, pads, ceil, include,
                       dilations, name=im.name())
    return _from_2d(im, layer(sym), x, x.shape[1])


def _reduce_layer(im: _Importer, x: _Dyn, op: str, axes: List[int], keepdims: bool) -> _Dyn:
    from fastconv.nn.tensor_ops import Reduce
    axes = sorted({im.logical_axis(a, x.rank, "axes entry") for a in axes})
    sym = im.plain(x)
    layer = Reduce(op, [x.perm.index(a) for a in axes], keepdims, name=im.name())
    if keepdims:
        shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
        return _Dyn(layer(sym), shape, x.perm)
    keep = [i for i in range(x.rank) if i not in axes]
    renumber = {old: new for new, old in enumerate(keep)}
    return _Dyn(layer(sym), tuple(x.shape[i] for i in keep),
                tuple(renumber[p] for p in x.perm if p in renumber))


_REDUCE = {"ReduceMean": ("mean", 18), "ReduceSum": ("sum", 13), "ReduceMax": ("max", 18),
           "ReduceMin": ("min", 18)}


def _reduce(im: _Importer):
    x = im.dyn(0)
    op, from_opset = _REDUCE[im.op]
    if im.opset >= from_opset:
        axes = im.ints(im.const(1, "axes", True), "axes")
    else:
        axes = list(im.attr("axes", []))
    if not axes:
        if im.attr("noop_with_empty_axes", 0):
            return x
        raise im.fail("reduces over every axis, the batch axis included; not supported")
    return _reduce_layer(im, x, op, axes, bool(im.attr("keepdims", 1)))


def _global_pool(im: _Importer):
    x = im.dyn(0)
    if x.rank < 3:
        raise im.fail(f"X of shape {x.shape} has no spatial axes")
    return _reduce_layer(im, x, "mean" if im.op == "GlobalAveragePool" else "max",
                         list(range(2, x.rank)), True)


def _softmax(im: _Importer):
    from fastconv.nn.tensor_ops import SoftmaxAxes
    x = im.dyn(0)
    if im.opset >= 13:
        axes = [im.logical_axis(int(im.attr("axis", -1)), x.rank)]
    else:
        axis = int(im.attr("axis", 1))
        axis = axis + x.rank if axis < 0 else axis
        axes = [im.logical_axis(a, x.rank) for a in range(axis, x.rank)] or [
            im.logical_axis(axis, x.rank)]
    if x.cols is not None and axes == [1]:
        sym = x.sym  # (softmax over all features commutes with their permutation)
    else:
        sym = im.plain(x)
    layer = SoftmaxAxes([x.perm.index(a) for a in axes], log=im.op == "LogSoftmax",
                        name=im.name())
    return _Dyn(layer(sym), x.shape, x.perm, x.cols if sym is x.sym else None)


def _gemm(im: _Importer):
    a = im.dyn(0, "A")
    b = im.floats(im.const(1, "B"))
    c = im.values.get(im.inputs[2]) if len(im.inputs) > 2 and im.inputs[2] else None
    if a.rank != 2 or b.ndim != 2:
        raise im.fail(f"A of shape {a.shape} and B of shape {b.shape} must be 2-D")
    if im.attr("transA", 0):
        raise im.fail("transA=1 transposes the run-time A with its batch axis; not supported")
    w = b.T if im.attr("transB", 0) else b
    alpha, beta = float(im.attr("alpha", 1.0)), float(im.attr("beta", 1.0))
    w = w.astype(np.float64) * alpha if alpha != 1 else w
    bias = None
    if isinstance(c, _Dyn):
        return _gemm_runtime_c(im, a, w, c, beta)
    if c is not None:
        c = im.floats(c)
        m = w.shape[1]
        if c.size not in (1, m) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            raise im.fail(f"C of shape {c.shape} is not broadcast over the batch as (M,) = "
                          f"({m},) or a scalar; not supported")
        bias = np.broadcast_to(c.reshape(-1).astype(np.float64) * beta, (m,))
    return _linear(im, a, w, bias)


def _gemm_runtime_c(im: _Importer, a: _Dyn, w: np.ndarray, c: _Dyn, beta: float) -> _Dyn:
    """A @ B + beta * C with C computed at run time: a Linear, then the sum."""
    from fastconv.nn.tensor_ops import Binary
    y = _linear(im, a, w, None)
    if c.rank != 2:
        raise im.fail(f"C of shape {c.shape} must be 2-D (N, M) when computed at run time")
    sc = im.plain(c)
    if beta != 1:
        sc = Binary("mul", np.full((1, 1), beta, im.dtype), name=im.name("beta"))(sc)
    shape = _broadcast_shape(im, y.shape, c.shape)
    return _Dyn(Binary("add", name=im.name("add_c"))([y.sym, sc]), shape, (0, 1))


def _linear(im: _Importer, a: _Dyn, w: np.ndarray, bias: Optional[np.ndarray]) -> _Dyn:
    from fastconv.nn import Linear
    from fastconv.nn.tensor_ops import MatMul
    if a.shape[-1] != w.shape[0]:
        raise im.fail(f"A of shape {a.shape} does not fit B of {w.shape[0]} rows")
    w = np.asarray(w, dtype=im.dtype)
    bias = None if bias is None else np.asarray(bias, dtype=im.dtype)
    if a.rank == 2:
        if a.cols is not None:
            w = w[a.cols]
        layer = Linear(np.ascontiguousarray(w), bias, weight_layout="IO", name=im.name())
        return _Dyn(layer(a.sym), (a.shape[0], w.shape[1]), (0, 1))
    perm = a.perm if a.perm[-1] == a.rank - 1 else _identity(a.rank)
    sym = im.version(a, perm)
    layer = MatMul(np.ascontiguousarray(w), bias, name=im.name())
    return _Dyn(layer(sym), a.shape[:-1] + (w.shape[1],), perm)


def _matmul(im: _Importer):
    """A run-time A times a 2-D constant B: a Linear (packed weights);
    anything else np.matmul on the logical layout (the leading axes
    broadcast; the batch axis stays axis 0)."""
    from fastconv.nn.tensor_ops import Binary
    va, vb = im.values[im.inputs[0]], im.values[im.inputs[1]]
    if not isinstance(va, _Dyn) and not isinstance(vb, _Dyn):
        raise _Fold()
    im.batch_first(va)
    im.batch_first(vb)
    if isinstance(va, _Dyn) and not isinstance(vb, _Dyn) and np.ndim(vb) == 2 and va.rank >= 2:
        return _linear(im, va, im.floats(vb), None)
    im.static(va, vb)
    if isinstance(va, _Dyn) and isinstance(vb, _Dyn):
        if va.rank != vb.rank or va.rank < 3:
            raise im.fail(f"multiplies run-time tensors of shapes {va.shape} and {vb.shape}; "
                          f"both must have one number of axes (3 or more: the batch first)")
        sa, sb = (im.version(v, _identity(v.rank)) for v in (va, vb))
        sym = Binary("matmul", name=im.name())([sa, sb])
        return im.new(sym, _identity(va.rank), va.shape[0])
    x, c = (va, vb) if isinstance(va, _Dyn) else (vb, va)
    c = im.floats(c)
    if c.ndim < 2 or c.ndim > x.rank or x.rank < 3:
        raise im.fail(f"multiplies a run-time tensor of shape {x.shape} by a constant of shape "
                      f"{c.shape}; the constant must have 2 to {x.rank} axes, the tensor 3 or "
                      f"more (or 2 with a 2-D constant B)")
    c = c.reshape((1,) * (x.rank - c.ndim) + c.shape)
    if c.shape[0] != 1:
        raise im.fail(f"a constant of shape {c.shape} would act on the batch axis")
    sym = im.version(x, _identity(x.rank))
    layer = Binary("matmul", np.ascontiguousarray(c), constant_first=x is vb, name=im.name())
    return im.new(layer(sym), _identity(x.rank), x.shape[0])


def _resize_params(im: _Importer, x: _Dyn):
    """(scales, sizes) of a Resize/Upsample node over X's axes (either None)."""
    if im.op == "Upsample":
        if im.opset < 9:
            return [float(s) for s in im.attr("scales", [])], None
        return [float(s) for s in im.floats(im.const(1, "scales")).reshape(-1)], None
    if im.opset == 10:
        return [float(s) for s in im.floats(im.const(1, "scales")).reshape(-1)], None
    scales = im.const(2, "scales", True)
    sizes = im.const(3, "sizes", True)
    scales = None if scales is None or scales.size == 0 else [
        float(s) for s in np.asarray(scales, np.float64).reshape(-1)]
    if sizes is not None and sizes.size:
        return scales if scales else None, list(sizes.reshape(-1))
    return scales, None


def _resize(im: _Importer):
    from fastconv.nn.tensor_ops import Resize
    x = im.dyn(0)
    if x.rank != 4:
        raise im.fail(f"resizes a tensor of shape {x.shape}; 4-D maps are supported")
    mode = im.attr("mode", "nearest")
    if mode == "bilinear":
        mode = "linear"
    if mode not in ("nearest", "linear"):
        raise im.refuse_attr("mode", mode, "nearest, linear")
    old = im.op == "Upsample" or im.opset < 11
    coord = "asymmetric" if old else im.attr("coordinate_transformation_mode", "half_pixel")
    if coord not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                     "tf_half_pixel_for_nearest") or (
            mode == "linear" and coord == "tf_half_pixel_for_nearest"):
        raise im.refuse_attr("coordinate_transformation_mode", coord,
                             "half_pixel, pytorch_half_pixel, align_corners, asymmetric (and "
                             "tf_half_pixel_for_nearest for nearest)")
    for key, allowed in (("antialias", 0), ("exclude_outside", 0)):
        if im.attr(key, 0) != allowed:
            raise im.refuse_attr(key, im.attr(key), str(allowed))
    if im.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise im.refuse_attr("keep_aspect_ratio_policy", im.attr("keep_aspect_ratio_policy"),
                             "stretch")
    scales, sizes = _resize_params(im, x)
    axes = im.attr("axes")
    h, w = x.shape[2], x.shape[3]
    f = im.dtype.type
    if axes is not None:
        axes = [a + 4 if a < 0 else a for a in axes]
        full_s, full_z = [1.0] * 4, list(x.shape)
        for k, a in enumerate(axes):
            if scales:
                full_s[a] = scales[k]
            if sizes:
                full_z[a] = sizes[k]
        scales = full_s if scales else None
        sizes = full_z if sizes else None
    if sizes is not None:
        if len(sizes) != 4:
            raise im.fail(f"sizes {sizes} do not fit X of shape {x.shape}")
        first = sizes[0]
        # (a literal batch size in sizes, with a dynamic batch, is taken to be the batch)
        if not (first is BATCH or x.shape[0] is None or first == x.shape[0]) \
                or int(sizes[1]) != x.shape[1]:
            raise im.fail(f"sizes {sizes} resize the batch or channel axis; only height and "
                          f"width may change")
        im.static(x)
        oh, ow = int(sizes[2]), int(sizes[3])
        if min(oh, ow) < 1:
            raise im.fail(f"sizes {sizes} make an empty map")
        sh, sw = float(f(oh) / f(h)), float(f(ow) / f(w))
    else:
        if not scales or len(scales) != 4:
            raise im.fail(f"scales {scales} do not fit X of shape {x.shape} (one per axis)")
        if scales[0] != 1 or scales[1] != 1:
            raise im.fail(f"scales {scales} resize the batch or channel axis; only height and "
                          f"width may change")
        sh, sw = scales[2], scales[3]
        if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
            raise im.fail(f"scales {scales} must be finite and > 0")
        if h is None or w is None:
            oh = ow = None  # (the layer sizes each input: floor(side * scale))
        else:
            oh, ow = int(f(h) * f(sh)), int(f(w) * f(sw))
            if min(oh, ow) < 1:
                raise im.fail(f"scales {scales} make a {h}x{w} map empty")
    if oh is not None and max(oh, ow) > MAX_SIDE:
        raise im.fail(f"the output {oh}x{ow} is larger than {MAX_SIDE} on a side")
    if old:
        if (sh < 1) != (sw < 1):
            raise im.fail(f"scales {scales} shrink one axis and grow the other; not supported "
                          f"for opset {im.opset}'s nearest rounding")
        nearest = "ceil" if sh < 1 else "floor"
    else:
        nearest = im.attr("nearest_mode", "round_prefer_floor")
        if nearest not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
            raise im.refuse_attr("nearest_mode", nearest,
                                 "round_prefer_floor, round_prefer_ceil, floor, ceil")
    sym = im.version(x, _channels_last(4))
    layer = Resize(None if oh is None else (oh, ow), (sh, sw), mode, coord, nearest,
                   name=im.name())
    return im.new(layer(sym), _channels_last(4), x.shape[0], shape=x.shape[:2] + (oh, ow))


def _pad(im: _Importer):
    from fastconv.nn.tensor_ops import Pad
    x = im.dyn(0)
    im.static(x)
    mode = im.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        raise im.refuse_attr("mode", mode, "constant, reflect, edge")
    if im.opset < 11:
        pads = list(im.attr("pads", []))
        value = float(im.attr("value", 0.0))
        axes = list(range(x.rank))
    else:
        pads = im.ints(im.const(1, "pads"), "pads")
        v = im.const(2, "constant_value", True)
        value = 0.0 if v is None or v.size == 0 else float(im.floats(v).reshape(-1)[0])
        axes = im.ints(im.const(3, "axes", True), "axes") or list(range(x.rank))
    if len(pads) != 2 * len(axes):
        raise im.fail(f"pads {pads} do not fit axes {axes}")
    amounts = {}
    for k, a in enumerate(axes):
        a = a + x.rank if a < 0 else a
        if not 0 <= a < x.rank:
            raise im.fail(f"axis {a} is out of range for shape {x.shape}")
        amounts[a] = (pads[k], pads[k + len(axes)])
    if amounts.get(0, (0, 0)) != (0, 0):
        raise im.fail(f"pads {pads} pad the batch axis (0); not supported")
    if all(v == (0, 0) for v in amounts.values()):
        return x
    sym = im.plain(x)
    layer = Pad([amounts.get(p, (0, 0)) for p in x.perm[1:]], mode, value, name=im.name())
    return im.new(layer(sym), x.perm, x.shape[0])


def _gather(im: _Importer):
    from fastconv.nn.tensor_ops import Gather
    x = im.dyn(0, batch_anywhere=True)
    idx = im.const(1, "indices")
    im.static(x)
    if idx.dtype.kind not in "iu":
        raise im.fail(f"indices must be integers; got {idx.dtype}")
    b = x.perm[0]  # (the batch's logical axis: 0 unless a Transpose moved it)
    axis = im.logical_axis(int(im.attr("axis", 0)), x.rank, batch=b)
    n = x.shape[axis]
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise im.fail(f"indices are out of range for axis {axis} of size {n}")
    if idx.ndim == 0:
        sym = im.plain(x)
        pa = x.perm.index(axis)
        layer = Gather(pa, idx, True, name=im.name())
        renumber = {p: (p if p < axis else p - 1) for p in x.perm if p != axis}
        return _Dyn(layer(sym), x.shape[:axis] + x.shape[axis + 1:],
                    tuple(renumber[p] for p in x.perm if p != axis))
    if idx.ndim == 1:
        sym = im.plain(x)
        layer = Gather(x.perm.index(axis), idx, name=im.name())
        return im.new(layer(sym), x.perm, x.shape[b])
    im.batch_first(x)
    sym = im.version(x, _identity(x.rank))
    layer = Gather(axis, idx, name=im.name())
    shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    return _Dyn(layer(sym), shape, _identity(len(shape)))


def _cast(im: _Importer):
    x = im.dyn(0)
    to = int(im.attr("to", 0))
    if _DTYPES.get(to, (None,))[0] != im.dtype.type:
        raise im.fail(f"casts a run-time tensor to type {to}; only to the model's own "
                      f"{im.dtype} is supported")
    return x


def _shape_of(im: _Importer):
    v = im.values[im.inputs[0]]
    im.static(v)
    shape = list(v.shape) if isinstance(v, _Dyn) else list(np.shape(v))
    if isinstance(v, _Dyn) and shape[v.perm[0]] is None:
        shape[v.perm[0]] = BATCH
    start, end = int(im.attr("start", 0)), im.attr("end")
    shape = shape[start:] if end is None else shape[start:int(end)]
    if any(s is BATCH for s in shape):
        return np.array(shape, dtype=object)
    return np.array(shape, dtype=np.int64)


def _size(im: _Importer):
    v = im.values[im.inputs[0]]
    im.static(v)
    if isinstance(v, _Dyn):
        if v.shape[0] is None:
            raise _BatchArithmetic()
        return np.array(math.prod(v.shape), np.int64)
    return np.array(np.size(v), np.int64)


def _handlers():
    acts = _activation_layers()
    table = {op: _unary(make) for op, make in acts.items()}
    table.update({
        "Conv": _conv, "ConvTranspose": _conv_transpose, "BatchNormalization": _batchnorm,
        "Gemm": _gemm, "MatMul": _matmul, "PRelu": _prelu, "Clip": _clip,
        "HardSwish": _hard_swish,
        "Add": _binary, "Sub": _binary, "Mul": _binary, "Div": _binary, "Pow": _binary,
        "Concat": _concat, "Split": _split, "Slice": _slice, "Reshape": _reshape,
        "Flatten": _flatten, "Transpose": _transpose, "Squeeze": _squeeze,
        "Unsqueeze": _unsqueeze, "MaxPool": _pool, "AveragePool": _pool,
        "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
        "ReduceMean": _reduce, "ReduceSum": _reduce, "ReduceMax": _reduce, "ReduceMin": _reduce,
        "Softmax": _softmax, "LogSoftmax": _softmax, "Resize": _resize, "Upsample": _resize,
        "Pad": _pad, "Identity": _alias, "Dropout": _alias, "Gather": _gather, "Cast": _cast,
        "Shape": _shape_of, "Size": _size,
    })
    table.update({op: _unary_op for op in _UNARY})
    for op in _FOLDERS:
        table.setdefault(op, _fold_only)
    return table


def _fold_only(im: _Importer):
    raise _Fold()


# -- folding at import --------------------------------------------------------------------

def _int_div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        if (b == 0).any():
            raise ValueError("divides an integer by zero")
        q = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -q, q).astype(np.result_type(a, b))
    return np.divide(a, b)


def _np_binary(fn):
    def folder(im, args):
        a, b = np.asarray(args[0]), np.asarray(args[1])
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise im.fail(f"shapes {a.shape} and {b.shape} do not broadcast") from None
        _check_count(im, shape)
        return np.asarray(fn(a, b))
    return folder


def _check_count(im: _Importer, shape: Sequence[int]) -> None:
    if any(int(d) < 0 for d in shape):
        raise im.fail(f"shape {list(shape)} holds a negative size")
    if math.prod(int(d) for d in shape) > MAX_FOLDED:
        raise im.fail(f"folds to a constant of shape {list(shape)}, more than {MAX_FOLDED} "
                      f"values")


def _fold_constant(im: _Importer, args):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in im.attrs:
            v = im.attrs[key]
            if key == "value":
                return v
            dtype = np.float32 if "float" in key else np.int64
            return np.array(v, dtype=dtype)
    raise im.fail(f"has none of the supported attributes value, value_float(s), value_int(s); "
                  f"got {sorted(im.attrs)}")


def _fold_constant_of_shape(im: _Importer, args):
    shape = args[0]
    if shape.dtype == object:
        raise _BatchArithmetic()
    shape = [int(d) for d in shape.reshape(-1)]
    _check_count(im, shape)
    value = im.attrs.get("value", np.zeros(1, np.float32))
    return np.full(shape, value.reshape(-1)[0], dtype=value.dtype)


def _fold_range(im: _Importer, args):
    start, limit, delta = (np.asarray(a).reshape(()) for a in args[:3])
    if delta == 0:
        raise im.fail("delta is 0")
    n = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    _check_count(im, [n])
    dtype = np.result_type(start, limit, delta)
    return (start + np.arange(n) * delta).astype(dtype)


def _fold_reshape(im: _Importer, args):
    data, shape = args[0], [v for v in args[1].reshape(-1)]
    allowzero = bool(im.attr("allowzero", 0))
    out = [data.shape[i] if (int(v) == 0 and not allowzero) else int(v)
           for i, v in enumerate(shape)]
    return data.reshape(out)


def _fold_unsqueeze(im: _Importer, args):
    data = args[0]
    axes = (im.ints(args[1], "axes") if im.opset >= 13 else list(im.attr("axes", [])))
    r = data.ndim + len(axes)
    axes = sorted(a + r if a < 0 else a for a in axes)
    out = data
    for a in axes:
        out = np.expand_dims(out, a)
    return out


def _fold_squeeze(im: _Importer, args):
    data = args[0]
    axes = (im.ints(args[1], "axes") if im.opset >= 13 and len(args) > 1 and args[1] is not None
            else list(im.attr("axes", [])))
    if not axes:
        return np.squeeze(data)
    return np.squeeze(data, axis=tuple(a + data.ndim if a < 0 else a for a in axes))


def _fold_concat(im: _Importer, args):
    arrays = [np.asarray(a) for a in args if a is not None]
    axis = int(im.attr("axis", 0))
    return np.concatenate(arrays, axis=axis)


def _fold_gather(im: _Importer, args):
    data, idx = args[0], args[1]
    if idx.dtype.kind not in "iu":
        raise im.fail(f"indices must be integers; got {idx.dtype}")
    axis = int(im.attr("axis", 0))
    axis = axis + data.ndim if axis < 0 else axis
    if not 0 <= axis < data.ndim:
        raise im.fail(f"axis {axis} is out of range for data of shape {data.shape}")
    n = data.shape[axis]
    idx = np.where(idx < 0, idx + n, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise im.fail(f"indices are out of range for axis {axis} of size {n}")
    return np.take(data, idx, axis=axis)


def _fold_slice(im: _Importer, args):
    data = args[0]
    starts, ends, axes, steps = _slice_spec(im)
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a + data.ndim if a < 0 else a
        index[a] = _slices_1d(s, e, st, data.shape[a])
    return data[tuple(index)]


def _fold_cast(im: _Importer, args):
    to = int(im.attr("to", 0))
    if to not in _DTYPES:
        raise im.fail(f"casts to type {to}, which is not supported")
    if args[0].dtype == object:
        return args[0]
    return args[0].astype(_DTYPES[to][0])


def _fold_split(im: _Importer, args):
    data = args[0]
    axis = int(im.attr("axis", 0))
    count = len(im.node_outputs)
    sizes = (im.ints(args[1], "split") if im.opset >= 13 and len(args) > 1 and args[1] is not None
             else list(im.attr("split", [])))
    if not sizes:
        n = data.shape[axis]
        chunk = -(-n // count)
        sizes = [min(chunk, max(n - chunk * i, 0)) for i in range(count)]
    return np.split(data, np.cumsum(sizes)[:-1], axis=axis)


def _fold_expand(im: _Importer, args):
    shape = [int(d) for d in args[1].reshape(-1)]
    target = np.broadcast_shapes(args[0].shape, tuple(shape))
    _check_count(im, target)
    return np.broadcast_to(args[0], target).copy()


def _fold_where(im: _Importer, args):
    _check_count(im, np.broadcast_shapes(*(np.shape(a) for a in args[:3])))
    return np.where(args[0], args[1], args[2])


def _fold_transpose(im: _Importer, args):
    perm = im.attr("perm")
    return np.transpose(args[0], perm)


def _fold_flatten(im: _Importer, args):
    axis = int(im.attr("axis", 1))
    data = args[0]
    axis = axis + data.ndim if axis < 0 else axis
    return data.reshape(math.prod(data.shape[:axis]), -1)


def _fold_reduce(fn):
    def folder(im: _Importer, args):
        data = np.asarray(args[0])
        if im.opset >= 18 or (im.op == "ReduceSum" and im.opset >= 13):
            axes = im.ints(args[1], "axes") if len(args) > 1 and args[1] is not None else []
        else:
            axes = list(im.attr("axes", []))
        if not axes and im.attr("noop_with_empty_axes", 0):
            return data
        axis = tuple(a + data.ndim if a < 0 else a for a in axes) if axes else None
        return fn(data, axis=axis, keepdims=bool(im.attr("keepdims", 1)))
    return folder


def _fold_unary(fn):
    return lambda im, args: np.asarray(fn(args[0]))


_FOLDERS: Dict[str, Any] = {
    "Constant": _fold_constant, "ConstantOfShape": _fold_constant_of_shape,
    "Range": _fold_range, "Reshape": _fold_reshape, "Unsqueeze": _fold_unsqueeze,
    "Squeeze": _fold_squeeze, "Concat": _fold_concat, "Gather": _fold_gather,
    "Slice": _fold_slice, "Cast": _fold_cast, "Split": _fold_split, "Expand": _fold_expand,
    "Where": _fold_where, "Transpose": _fold_transpose, "Flatten": _fold_flatten,
    "Add": _np_binary(np.add), "Sub": _np_binary(np.subtract),
    "Mul": _np_binary(np.multiply), "Div": _np_binary(_int_div),
    "Equal": _np_binary(np.equal), "Less": _np_binary(np.less),
    "Greater": _np_binary(np.greater), "Max": _np_binary(np.maximum),
    "Min": _np_binary(np.minimum), "Pow": _np_binary(np.power),
    "Neg": _fold_unary(np.negative), "Abs": _fold_unary(np.abs),
    "Floor": _fold_unary(np.floor), "Ceil": _fold_unary(np.ceil),
    "Sqrt": _fold_unary(np.sqrt), "Not": _fold_unary(np.logical_not),
    "Exp": _fold_unary(np.exp), "Log": _fold_unary(np.log),
    "Reciprocal": _fold_unary(np.reciprocal),
    "Identity": lambda im, args: args[0], "Dropout": lambda im, args: args[0],
    "ReduceProd": _fold_reduce(np.prod), "ReduceSum": _fold_reduce(np.sum),
    "ReduceMax": _fold_reduce(np.max), "ReduceMin": _fold_reduce(np.min),
    "ReduceMean": _fold_reduce(np.mean),
}

_HANDLERS = _handlers()
SUPPORTED_OPS = tuple(sorted(_HANDLERS))


def from_onnx(model: Any, *, input_shapes: Optional[Dict[str, Sequence[Optional[int]]]] = None):
    """An ONNX model as an nn.Model that runs NHWC inside, with weights
    packed once.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        A path (external data is read from beside it), the serialized model,
        or a loaded ModelProto (without external data).
    input_shapes : dict, optional
        Shapes (batch axis first, None for a dynamic axis) for graph inputs,
        by name: fixes dynamic sizes the graph's ops need static (see the
        module docstring).

    Returns
    -------
    nn.Model
        Called as onnxruntime's InferenceSession.run is fed: ``m(x)`` for one
        input, ``m([x1, x2])`` or ``m({"name": x})`` for several, with the
        batch axis, in the graph's own layouts (NCHW); returns one array or
        a list in the graph's output order, as onnxruntime does (each an
        array of its own, except a graph input listed as an output with no
        node between: that output is the caller's array).
        ``m.input_names`` and ``m.output_names`` are the graph's; each
        node's main layer is named after the node (``m.get_layer(name)``).

    Raises
    ------
    ValueError
        An unsupported op (naming the node, its op_type and the supported
        ops), attribute value, or opset (7 to 21 are supported); an op on
        the batch axis (see the module docstring); a malformed file.
    ImportError
        Without the onnx package (pip install onnx).
    """
    proto, base = _load(model)
    im = _Importer(proto, _Reader(base), input_shapes)
    try:
        return im.run()
    except RecursionError:
        raise ValueError("from_onnx: the model nests too deeply") from None
