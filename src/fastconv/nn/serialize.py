"""Saving and loading models: a plain .npz, one array per weight plus a JSON
description of the graph, never a pickle.

Format version 2 (what save writes) describes a model as a record:
``{"type": "Sequential", "name", "layout", "layers": [...], "order": [...]}``
("order", the layer indices in turn, only where a layer repeats), or
``{"type": "Model", "name", "layout", "inputs": [{"name", "shape",
"dtype"}], "layers": [...], "nodes": [{"layer": i, "inputs": [ids]}],
"outputs": [ids]}`` (ids as in model.Node: the inputs, then each node's
output in turn). Each layer is ``{"type", "name", "params", "arrays"}``, or
a nested model's record. The arrays are members ``layer{i}.{name}``, a
nested model's ``layer{i}.layer{j}.{name}``. Version 1 (fastconv before
graph models) is the top record of a Sequential without names.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import zipfile
import zlib
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

import fastconv
from fastconv._validate import LAYOUTS, clip, short_repr
from fastconv.nn.activations import (Activation, Clip, HardSigmoid, HardSwish, LeakyReLU,
                                     ReLU6, SiLU, Sigmoid, Tanh)
from fastconv.nn.conv_transpose import ConvTranspose2d
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer,
                                Linear, MaxPool2d, ReLU, Softmax, list_input)
from fastconv.nn.model import Model, Sequential
from fastconv.nn.normalization import BatchNorm2d, PReLU
from fastconv.nn.resize import Upsample
from fastconv.nn.structural import Add, Concatenate, Cropping2d, Identity, Multiply, ZeroPad2d
from fastconv.nn.symbolic import Input, SymbolicTensor

__all__ = ["save", "load", "register_layer_type"]

FORMAT = "fastconv.nn"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)


class LayerType(NamedTuple):
    """How save and load handle one layer class (see register_layer_type)."""
    cls: type
    arrays: Dict[str, int]     # the arrays it saves, by name: their ndim
    required: Tuple[str, ...]  # those it cannot be built without
    # (what, params, {name: header}) -> None: the arrays' shapes against
    # each other and the parameters, a ValueError where they disagree
    check: Optional[Callable[[str, dict, Dict[str, "_Npy"]], None]]


# The layer types load builds, by class name (a file names no other). The
# two graph types, Model and Sequential, are records of their own.
LAYER_TYPES: Dict[str, LayerType] = {}


def register_layer_type(cls: type, arrays: Optional[Dict[str, int]] = None,
                        required: Tuple[str, ...] = (),
                        check: Optional[Callable[[str, dict, Dict[str, "_Npy"]], None]] = None
                        ) -> None:
    """Let save write and load build layers of class `cls`.

    The layer's ``_describe()`` returns (constructor keywords, {array name:
    array or None}); load calls ``cls(**arrays, **keywords, name=name)``.
    `arrays` gives the ndim of each array it may save (float32 or float64,
    checked from the .npy headers before anything is read), `required`
    those it always saves, and `check` compares their shapes with each
    other and the keywords (a ValueError: see _check_conv below).
    """
    LAYER_TYPES[cls.__name__] = LayerType(cls, dict(arrays or {}), tuple(required), check)


def _check_conv(what: str, params: dict, arrays: Dict[str, "_Npy"]) -> None:
    layout = params.get("layout", "NHWC")
    if not (isinstance(layout, str) and layout.upper() in LAYOUTS):
        raise ValueError(f"{what} has layout {short_repr(layout)}; expected 'NHWC' or 'NCHW'")
    _check_bias(what, arrays, 3 if layout.upper() == "NHWC" else 0)


def _check_linear(what: str, params: dict, arrays: Dict[str, "_Npy"]) -> None:
    weight_layout = params.get("weight_layout", "IO")
    if weight_layout not in ("IO", "OI"):
        raise ValueError(f"{what} has weight_layout {short_repr(weight_layout)}; expected "
                         f"'IO' or 'OI'")
    _check_bias(what, arrays, 1 if weight_layout == "IO" else 0)


def _check_bias(what: str, arrays: Dict[str, "_Npy"], axis: int) -> None:
    """A bias of one value per output, the weight's axis `axis`."""
    weight, bias = arrays["weight"], arrays.get("bias")
    if bias is not None and bias.shape != (weight.shape[axis],):
        raise ValueError(f"{what}: {bias.info.filename} has shape {short_repr(bias.shape)}; the "
                         f"weight's shape {weight.shape} makes the bias ({weight.shape[axis]},)")


def _check_batchnorm(what: str, params: dict, arrays: Dict[str, "_Npy"]) -> None:
    """gamma, beta, mean and var: one value per channel each."""
    shapes = {name: arrays[name].shape for name in ("gamma", "beta", "mean", "var")}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{what}: gamma, beta, mean and var must have one shape; got "
                         f"{short_repr(shapes)}")


def _check_conv_transpose(what: str, params: dict, arrays: Dict[str, "_Npy"]) -> None:
    """A bias of one value per output: K/groups, the weight's axis 2 (NHWC,
    TensorFlow's filter) or 1 (NCHW, PyTorch's), times groups."""
    layout, groups = params.get("layout", "NHWC"), params.get("groups", 1)
    if not (isinstance(layout, str) and layout.upper() in LAYOUTS):
        raise ValueError(f"{what} has layout {short_repr(layout)}; expected 'NHWC' or 'NCHW'")
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups < 2**62:
        raise ValueError(f"{what} has groups {short_repr(groups)}; expected a positive int")
    weight, bias = arrays["weight"], arrays.get("bias")
    k = weight.shape[2 if layout.upper() == "NHWC" else 1] * groups
    if bias is not None and bias.shape != (k,):
        raise ValueError(f"{what}: {bias.info.filename} has shape {short_repr(bias.shape)}; the "
                         f"weight's shape {weight.shape} and groups={groups} make the bias "
                         f"({k},)")


for _cls in (ReLU, MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten, Softmax, Dropout, Add,
             Multiply, Concatenate, Identity, ZeroPad2d, Cropping2d, Activation, ReLU6, Sigmoid,
             Tanh, SiLU, HardSwish, HardSigmoid, LeakyReLU, Clip, Upsample):
    register_layer_type(_cls)
register_layer_type(Conv2d, {"weight": 4, "bias": 1}, ("weight",), _check_conv)
register_layer_type(Linear, {"weight": 2, "bias": 1}, ("weight",), _check_linear)
register_layer_type(ConvTranspose2d, {"weight": 4, "bias": 1}, ("weight",),
                    _check_conv_transpose)
register_layer_type(BatchNorm2d, {"gamma": 1, "beta": 1, "mean": 1, "var": 1},
                    ("gamma", "beta", "mean", "var"), _check_batchnorm)
register_layer_type(PReLU, {"weight": 1}, ("weight",))
_GRAPH_TYPES = {"Model": Model, "Sequential": Sequential}


# What load reads at most (SECURITY.md, "Model files"). A file of S bytes
# may declare arrays of max(MIN_ARRAY_BYTES, ARRAY_BYTES_PER_FILE_BYTE * S)
# bytes in all: what save writes (stored, uncompressed) declares at most S;
# real float weights compressed by numpy.savez_compressed barely shrink (a
# ratio of 1.1 to 2), and 64 MiB leaves room for zeros, which compress a
# thousandfold. (No ratio per member: a zero bias compresses a hundredfold.)
# So a file under 13 MB makes load read at most 64 MiB of arrays, and hold
# at most about 300 MB at its peak (the layers' packed copies: a 3x3
# Conv2d's Winograd and GEMM weights take about three times its own).
MIN_ARRAY_BYTES = 64 * 2**20
ARRAY_BYTES_PER_FILE_BYTE = 5
MAX_DESCRIPTION_BYTES = 2 * 2**20  # the JSON description (thousands of layers)
MAX_HEADER_BYTES = 10_000          # one .npy header: numpy's own limit
MAX_PARAM_DEPTH = 4                # lists in a layer parameter: save writes 2
MAX_OTHER_MEMBERS = 1000           # members the description does not name
MAX_MODEL_DEPTH = 16               # models nested in models
_CHUNK = 2**20
_NPY_MAGIC = b"\x93NUMPY"


def _param(value: Any, depth: int = 0) -> Any:
    """A JSON parameter back to what the constructor was given (lists to
    tuples); nothing save does not write (dicts, deeper lists)."""
    if isinstance(value, list):
        if depth >= MAX_PARAM_DEPTH:
            raise ValueError(f"lists nested deeper than {MAX_PARAM_DEPTH}")
        return tuple(_param(v, depth + 1) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"a {type(value).__name__}")


def save(model: Model, path: Any) -> None:
    """Write `model` (a Model or Sequential) to `path` as a plain .npz: one
    array per weight and a JSON description of the graph (no pickle; load
    reads it). A layer of a type load does not know is refused here."""
    arrays: Dict[str, np.ndarray] = {}
    description = {"format": FORMAT, "version": FORMAT_VERSION,
                   "fastconv": fastconv.__version__,
                   **_graph_record(model, model.name, "", arrays, 0)}
    arrays["__model__"] = np.frombuffer(json.dumps(description).encode(), np.uint8)
    np.savez(path, **arrays)


def _graph_record(model: Model, name: Optional[str], member: str,
                  arrays: Dict[str, np.ndarray], depth: int) -> Dict[str, Any]:
    """The record of a model called `name` whose arrays are members
    `member`layer{i}.* (every name written is the one the model uses)."""
    kind = type(model).__name__
    if _GRAPH_TYPES.get(kind) is not type(model):
        raise ValueError(f"save: {kind} {model.name!r} is a subclass of Model, which nn.load "
                         f"cannot build")
    if depth > MAX_MODEL_DEPTH:
        raise ValueError(f"save: models nested deeper than {MAX_MODEL_DEPTH}, which nn.load "
                         f"refuses")
    model._current()  # (a Sequential's list may have changed since its last call)
    sequence = model.layers  # (a Sequential's in turn, with repeats; a Model's once each)
    layers = list({id(layer): layer for layer in sequence}.values())
    index = {id(layer): i for i, layer in enumerate(layers)}
    record: Dict[str, Any] = {"type": kind, "name": name, "layout": model.layout,
                              "layers": [_layer_record(layer, model._name_of(layer),
                                                       f"{member}layer{i}.", arrays, depth)
                                         for i, layer in enumerate(layers)]}
    if isinstance(model, Sequential):
        order = [index[id(layer)] for layer in sequence]
        if order != list(range(len(layers))):
            record["order"] = order
        return record
    record["inputs"] = [{"name": model._name_of(t), "shape": list(t.shape),
                         "dtype": None if t.dtype is None else t.dtype.name}
                        for t in model.inputs]
    record["nodes"] = [{"layer": index[id(node.layer)], "inputs": list(node.inputs)}
                       for node in model.nodes]
    record["outputs"] = list(model._output_ids)
    return record


def _layer_record(layer: Layer, name: str, member: str, arrays: Dict[str, np.ndarray],
                  depth: int) -> Dict[str, Any]:
    if isinstance(layer, Model):
        return _graph_record(layer, name, member, arrays, depth + 1)
    kind = type(layer).__name__
    known = LAYER_TYPES.get(kind)
    if known is None or known.cls is not type(layer):
        raise ValueError(f"save: layer {name!r} is a {kind}, which nn.load does not "
                         f"know (serialize.register_layer_type adds a type)")
    params, named = layer._describe()
    stored = []
    for array, value in named.items():
        if value is not None:
            arrays[f"{member}{array}"] = np.asarray(value)
            stored.append(array)
    return {"type": kind, "name": name, "params": params, "arrays": stored}


class _Unreadable(Exception):
    """The archive itself is refused (load's message says it is not a
    readable .npz model file)."""


class _Npy(NamedTuple):
    """A .npy member of the archive, from its header alone."""
    info: zipfile.ZipInfo
    offset: int        # where the data starts in the member
    dtype: np.dtype
    shape: Tuple[int, ...]
    fortran: bool
    nbytes: int        # the size of the data its header declares


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Optional[_Npy]:
    """The header of a member (None: not a .npy), read without its data;
    _Unreadable if it is malformed or holds Python objects."""
    try:
        member = _parse_header(zf, info)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        # (numpy parses the header, at most MAX_HEADER_BYTES, with
        # ast.literal_eval: any of these on a malformed one)
        raise _Unreadable(f"member {short_repr(info.filename)} {clip(str(exc), 200)}"
                          ) from None
    if member is not None and member.dtype.hasobject:
        raise _Unreadable(f"member {short_repr(info.filename)} is an object array, which "
                          f"only pickle can read; refused, as numpy.load does with "
                          f"allow_pickle=False")
    return member


def _parse_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Optional[_Npy]:
    with zf.open(info) as f:
        prefix = f.read(len(_NPY_MAGIC) + 2)
        if not prefix.startswith(_NPY_MAGIC):
            return None
        length_size = {b"\x01\x00": 2, b"\x02\x00": 4}.get(prefix[6:])
        if length_size is None:
            raise ValueError(f"has .npy format version {short_repr(prefix[6:])}; "
                             f"1.0 and 2.0 are read")
        length = f.read(length_size)
        size = int.from_bytes(length, "little")
        if len(length) != length_size or size > MAX_HEADER_BYTES:
            raise ValueError(f"has a .npy header of {size} bytes; at most "
                             f"{MAX_HEADER_BYTES} are read")
        header = f.read(size)
    fp = io.BytesIO(prefix + length + header)
    version = np.lib.format.read_magic(fp)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read(fp, max_header_size=MAX_HEADER_BYTES)
    if any(d < 0 for d in shape):
        raise ValueError(f"has a .npy header of shape {short_repr(shape)}")
    return _Npy(info, fp.tell(), dtype, shape, fortran,
                math.prod(shape) * dtype.itemsize)


def _read_npy(zf: zipfile.ZipFile, member: _Npy) -> np.ndarray:
    """The array of a member whose header _check_size has checked against
    the zip's records, never reading more than the header declares.

    Not numpy.load: it trusts each member's header, allocating what the
    header declares and reading what the zip member inflates to, in full,
    so a file of a few hundred bytes can ask for terabytes or inflate to
    gigabytes. Here the size is checked first, and the data read in chunks
    into an array of exactly that size.
    """
    name = member.info.filename
    data = np.empty(member.nbytes, np.uint8)
    view = memoryview(data)
    with zf.open(member.info) as f:
        f.read(member.offset)  # the header
        done = 0
        while done < member.nbytes:
            try:  # (zipfile: EOFError where the file ends before the member)
                got = f.readinto(view[done:done + _CHUNK])
            except EOFError:
                got = 0
            if not got:
                raise _Unreadable(f"{name} ends after {done} of the {member.nbytes} "
                                  f"bytes of data its header declares")
            done += got
    array = data.view(member.dtype)
    if member.fortran:
        return array.reshape(member.shape[::-1]).T
    return array.reshape(member.shape)


def _check_size(member: _Npy) -> None:
    """The zip's records of a member agree with its .npy header (numpy
    writes exactly the header and the data; stored data is not compressed)."""
    info = member.info
    if info.file_size != member.offset + member.nbytes:
        raise ValueError(f"{info.filename} declares {member.nbytes} bytes of data (shape "
                         f"{short_repr(member.shape)}, {clip(str(member.dtype), 80)}) but the "
                         f"archive records {info.file_size - member.offset}")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ValueError(f"{info.filename} is stored uncompressed in {info.compress_size} "
                         f"bytes but declares {info.file_size}")


class _LayerRecord(NamedTuple):
    """A layer record of the description, every field checked for its type."""
    at: str                       # "layer 2", within its model's `where`
    what: str                     # "layer 2 (Conv2d)"
    kind: LayerType
    params: dict
    arrays: List[str]             # the names of its arrays
    member: str                   # its arrays are members `member`{name}
    name: Optional[str]


class _GraphRecord(NamedTuple):
    """A model's record (the description's top, or a nested model)."""
    where: str                    # "" for the top, "layer 3 (Model): " within it
    cls: type                     # Model or Sequential
    layout: str
    name: Optional[str]
    layers: List[Any]             # _LayerRecord or _GraphRecord
    order: List[int]              # Sequential: its layers in turn
    inputs: List[SymbolicTensor]  # Model: its nn.Inputs (checked by nn.Input)
    nodes: List[Tuple[int, List[int]]]  # Model: (layer index, tensor ids read)
    outputs: List[int]            # Model: tensor ids


def _name_field(what: str, record: dict) -> Optional[str]:
    name = record.get("name")
    if name is not None and not (isinstance(name, str) and name):
        raise ValueError(f"{what} has name {short_repr(name)}; expected a non-empty string "
                         f"or null")
    return name


def _index_list(what: str, value: Any, stop: int, empty: bool = False) -> List[int]:
    """A list of ints in range(stop)."""
    if (not isinstance(value, list) or (not value and not empty)
            or not all(type(i) is int and 0 <= i < stop for i in value)):
        raise ValueError(f"{what} is {short_repr(value)}; expected a list of indices from 0 "
                         f"to {stop - 1}")
    return value


def _graph(record: Any, where: str, member: str, depth: int, kind: Optional[str] = None
           ) -> _GraphRecord:
    """The model record `record` checked, its nested models too (`kind`:
    the top record of a version-1 file is a Sequential whatever it says)."""
    if depth > MAX_MODEL_DEPTH:
        # (the nesting first: `where` is as long as the nesting is deep)
        raise ValueError(f"models nested deeper than {MAX_MODEL_DEPTH}: {where}")
    kind = record.get("type", "Sequential") if kind is None else kind
    cls = _GRAPH_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"{where}the model has type {short_repr(kind)}; expected 'Model' or "
                         f"'Sequential'")
    name = _name_field(f"{where}the model", record)
    layout = record.get("layout")
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"{where}the model has layout {short_repr(layout)}; expected 'NHWC' or "
                         f"'NCHW'")
    records = record.get("layers")
    if not isinstance(records, list):
        raise ValueError(f"{where}'layers' is {short_repr(records)}; expected a list of layers")
    layers = [_layer(r, i, where, f"{member}layer{i}.", depth) for i, r in enumerate(records)]
    n = len(layers)
    if cls is Sequential:
        order = (_index_list(f"{where}'order'", record["order"], n, empty=True)
                 if "order" in record else list(range(n)))
        used, inputs, nodes, outputs = set(order), [], [], []
    else:
        specs = record.get("inputs")
        if not isinstance(specs, list) or not specs:
            raise ValueError(f"{where}'inputs' is {short_repr(specs)}; expected a non-empty "
                             f"list of inputs")
        inputs = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict):
                raise ValueError(f"{where}input {i} is {short_repr(spec)}; expected a "
                                 f"{{'name': ..., 'shape': [...], 'dtype': ...}} record")
            try:
                inputs.append(Input(spec.get("shape"), _name_field(f"{where}input {i}", spec),
                                    spec.get("dtype")))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}input {i}: {exc}") from None
        nodes_list = record.get("nodes")
        if not isinstance(nodes_list, list):
            raise ValueError(f"{where}'nodes' is {short_repr(nodes_list)}; expected a list of "
                             f"nodes")
        nodes = []
        for k, node in enumerate(nodes_list):
            if not isinstance(node, dict):
                raise ValueError(f"{where}node {k} is {short_repr(node)}; expected a "
                                 f"{{'layer': ..., 'inputs': [...]}} record")
            layer = node.get("layer")
            if type(layer) is not int or not 0 <= layer < n:
                raise ValueError(f"{where}node {k} has layer {short_repr(layer)}; expected an "
                                 f"index from 0 to {n - 1}")
            # Only the inputs and earlier nodes' outputs: no reference to an
            # unknown tensor, and no cycle.
            nodes.append((layer, _index_list(f"{where}node {k}'s 'inputs'", node.get("inputs"),
                                             len(inputs) + k)))
        outputs = _index_list(f"{where}'outputs'", record.get("outputs"),
                              len(inputs) + len(nodes))
        # What the outputs need: every node, input and layer must be.
        needed = [False] * (len(inputs) + len(nodes))
        for i in outputs:
            needed[i] = True
        for k in range(len(nodes) - 1, -1, -1):
            if needed[len(inputs) + k]:
                for i in nodes[k][1]:
                    needed[i] = True
            else:
                raise ValueError(f"{where}node {k} is used by no output")
        for i in range(len(inputs)):
            if not needed[i]:
                raise ValueError(f"{where}input {i} is used by no output")
        used, order = {layer for layer, _ in nodes}, []
    for i in range(n):
        if i not in used:
            raise ValueError(f"{where}layer {i} is used by no node")
    return _GraphRecord(where, cls, layout, name, layers, order, inputs, nodes, outputs)


def _layer(record: Any, i: int, where: str, member: str, depth: int) -> Any:
    """Layer record i of a model (a _LayerRecord, or a nested model's
    _GraphRecord)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}layer {i} is {short_repr(record)}; expected a "
                         f"{{'type': ..., 'params': {{...}}, 'arrays': [...]}} record")
    kind = record.get("type")
    if isinstance(kind, str) and kind in _GRAPH_TYPES:
        return _graph(record, f"{where}layer {i} ({kind}): ", member, depth + 1)
    known = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
    if known is None:
        raise ValueError(f"{where}layer {i} has unknown type {short_repr(kind)}")
    what = f"{where}layer {i} ({kind})"
    params, names = record.get("params"), record.get("arrays")
    if not isinstance(params, dict):
        raise ValueError(f"{what} has params {short_repr(params)}; expected a dict of "
                         f"keyword arguments")
    converted = {}
    for key, value in params.items():
        try:
            converted[key] = _param(value)
        except ValueError as exc:
            raise ValueError(f"{what} has parameter {short_repr(key)} = "
                             f"{short_repr(value)}: {exc}, which no layer takes") from None
    required = list(known.required)
    optional = [a for a in known.arrays if a not in known.required]
    if (not isinstance(names, list) or not all(isinstance(a, str) for a in names)
            or len(set(names)) != len(names) or any(a not in known.arrays for a in names)
            or any(a not in names for a in required)):
        expected = (f"{required}" if not optional else
                    f"{required} or {required + optional}" if len(optional) == 1 else
                    f"{required} with any of {optional}")
        raise ValueError(f"{what} has arrays {short_repr(names)}; expected {expected}")
    return _LayerRecord(f"{where}layer {i}", what, known, converted, names, member,
                        _name_field(what, record))


def _check_arrays(layer: _LayerRecord, arrays: Dict[str, _Npy]) -> None:
    """The headers of a layer's members against what the layer takes:
    float32 or float64, of its ndim, and its own check (a bias of one value
    per output channel)."""
    what, kind = layer.what, layer.kind
    for member in arrays.values():
        if member.dtype.kind != "f" or member.dtype.itemsize not in (4, 8):
            raise ValueError(f"{what}: {member.info.filename} is {clip(str(member.dtype), 80)}; "
                             f"weights are float32 or float64")
    for name, member in arrays.items():
        if len(member.shape) != kind.arrays[name]:
            raise ValueError(f"{what}: {member.info.filename} has shape "
                             f"{short_repr(member.shape)}; the {name} of a {kind.cls.__name__} "
                             f"is {kind.arrays[name]}-D")
    if kind.check is not None:
        kind.check(what, layer.params, arrays)


def _walk(graph: _GraphRecord):
    """Every layer record of a model, nested models' too."""
    for layer in graph.layers:
        if isinstance(layer, _GraphRecord):
            yield from _walk(layer)
        else:
            yield layer


@contextlib.contextmanager
def _archive(path: Any):
    """(the open zip, the size of the file) for a path or a binary file."""
    with contextlib.ExitStack() as stack:
        f = path if hasattr(path, "read") else stack.enter_context(open(os.fspath(path), "rb"))
        start = f.tell()
        if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise _Unreadable("it is a .npy file, one array, not a .npz archive")
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(start)
        try:
            zf = stack.enter_context(zipfile.ZipFile(f))
        except ValueError as exc:  # (e.g. a member's name that is not UTF-8)
            raise _Unreadable(f"{type(exc).__name__}: {clip(str(exc))}") from None
        yield zf, size


class _Unbuildable(Exception):
    """A layer or model that the checked description names cannot be built
    (load's message says so)."""


def load(path: Any) -> Model:
    """Read a model written by Model.save or Sequential.save (format
    version 2, or version 1: a Sequential).

    `path` is a file name or a binary file opened for reading. Never executes
    code from the file and reads only what its description names, each
    array's size checked before it is read (SECURITY.md, "Model files"):

    - every member of the archive must be stored or deflated, unencrypted,
      as numpy.savez and savez_compressed write them;
    - the description (``__model__``, at most MAX_DESCRIPTION_BYTES, 2 MiB,
      of JSON) is read and checked first: its layer types among
      LAYER_TYPES, a graph whose nodes read only the inputs and earlier
      nodes (so no cycle) and whose every node, input and layer some
      output needs, models nested at most MAX_MODEL_DEPTH (16) deep; then
      the .npy header of each array it names: float32 or float64, of the
      shape its layer takes, and of exactly the size the zip records for it;
    - the arrays together may declare at most max(64 MiB, 5 times the
      file's size) bytes (MIN_ARRAY_BYTES, ARRAY_BYTES_PER_FILE_BYTE): a file
      save wrote, uncompressed, always can; no array is read beyond what its
      header declares;
    - up to MAX_OTHER_MEMBERS (1000) members the description does not name
      are ignored, read no further than their .npy header, which may not
      hold Python objects there either (as numpy.load with
      allow_pickle=False).

    Raises
    ------
    ValueError
        The file is not a fastconv.nn model, is corrupt, breaks one of the
        limits above, describes a graph that cannot be built (shapes,
        names, layouts: as nn.Model checks them), or was written in another
        format version.
    """
    try:
        with _archive(path) as (zf, file_size):
            return _load(path, zf, file_size)
    except (OSError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        # (zipfile: a corrupt or truncated archive, or zip features it lacks;
        # zlib: corrupt deflated data)
        raise ValueError(f"nn.load: {path!s} is not a readable .npz model file "
                         f"({type(exc).__name__}: {clip(str(exc))})") from None
    except _Unreadable as exc:
        raise ValueError(f"nn.load: {path!s} is not a readable .npz model file ({exc})"
                         ) from None
    except _Unbuildable as exc:
        raise ValueError(f"nn.load: {path!s} describes a model that cannot be built ({exc})"
                         ) from None


def _load(path: Any, zf: zipfile.ZipFile, file_size: int) -> Model:
    infos = zf.infolist()
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) \
                or info.flag_bits & 0x1:
            raise _Unreadable(f"member {short_repr(info.filename)} is encrypted or compressed "
                              f"with method {info.compress_type}; numpy writes stored or "
                              f"deflated members")
    by_name = {info.filename: info for info in infos}  # (the last of a name, as zipfile)
    named: List[zipfile.ZipInfo] = []

    def member(name: str) -> Optional[_Npy]:
        """The .npy header of the member numpy.load would call `name`."""
        info = by_name.get(f"{name}.npy", by_name.get(name))
        if info is None:
            return None
        named.append(info)
        found = _npy_header(zf, info)
        if found is None:
            raise _Unreadable(f"member {info.filename} is not a .npy array")
        return found

    # 1. The description, checked before anything else is read.
    try:
        description = member("__model__")
        if description is None:
            raise ValueError("no __model__ array")
        if description.dtype != np.uint8 or len(description.shape) != 1:
            raise ValueError(f"__model__ is {clip(str(description.dtype), 80)} of shape "
                             f"{short_repr(description.shape)}; expected the uint8 bytes of "
                             f"its JSON text")
        if description.nbytes > MAX_DESCRIPTION_BYTES:
            raise ValueError(f"__model__ declares {description.nbytes} bytes; at most "
                             f"{MAX_DESCRIPTION_BYTES} are read")
        _check_size(description)
        description = json.loads(_read_npy(zf, description).tobytes().decode())
    except RecursionError:
        raise ValueError(f"nn.load: {path!s} has no valid fastconv.nn model description "
                         f"(its JSON is nested too deeply)") from None
    except ValueError as exc:  # (json's errors and UnicodeDecodeError are ValueErrors)
        raise ValueError(f"nn.load: {path!s} has no valid fastconv.nn model description "
                         f"({type(exc).__name__}: {clip(str(exc))})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"nn.load: {path!s} is not a fastconv.nn model file")
    version = description.get("version")
    if type(version) is not int or version not in READ_VERSIONS:
        raise ValueError(f"nn.load: {path!s} is format version {short_repr(version)} "
                         f"(written by fastconv {short_repr(description.get('fastconv'))}); "
                         f"this fastconv {fastconv.__version__} reads versions "
                         f"{' and '.join(map(str, READ_VERSIONS))}")
    # 2. The graph, then the headers of the arrays it names, against their
    # layers.
    try:
        graph = _graph(description, "", "", 0, "Sequential" if version == 1 else None)
        headers: Dict[str, Dict[str, _Npy]] = {}
        for layer in _walk(graph):
            found = {}
            for name in layer.arrays:
                found[name] = member(f"{layer.member}{name}")
                if found[name] is None:
                    raise ValueError(f"{layer.what} names array {name!r}, but the file has no "
                                     f"member {layer.member}{name}.npy")
            _check_arrays(layer, found)
            headers[layer.member] = found
    except ValueError as exc:
        raise ValueError(f"nn.load: {path!s} describes a model that cannot be built "
                         f"(ValueError: {clip(str(exc))})") from None
    # 3. Their sizes, against the zip's records and the file's size.
    try:
        for found in headers.values():
            for npy in found.values():
                _check_size(npy)
    except ValueError as exc:
        raise _Unreadable(str(exc)) from None
    total = sum(npy.nbytes for found in headers.values() for npy in found.values())
    limit = max(MIN_ARRAY_BYTES, ARRAY_BYTES_PER_FILE_BYTE * file_size)
    if total > limit:
        raise _Unreadable(f"its arrays declare {total} bytes in all; a file of {file_size} "
                          f"bytes may declare at most {limit} (max(64 MiB, "
                          f"{ARRAY_BYTES_PER_FILE_BYTE} x its size): SECURITY.md)")
    # 4. Any other member: no pickle either, but otherwise ignored, unread.
    chosen = {id(info) for info in named}
    others = [info for info in infos if id(info) not in chosen]
    if len(others) > MAX_OTHER_MEMBERS:
        raise _Unreadable(f"it holds {len(others)} members its description does not name; "
                          f"at most {MAX_OTHER_MEMBERS} are accepted")
    for info in others:
        _npy_header(zf, info)

    # 5. The layers, each layer's arrays read just before it is built (it
    # packs a copy): no more than one layer's are held besides the layers.
    def build_layer(layer: _LayerRecord) -> Layer:
        data = {name: _read_npy(zf, npy) for name, npy in headers[layer.member].items()}
        try:
            return layer.kind.cls(**data, **layer.params, name=layer.name)
        except (TypeError, ValueError) as exc:
            raise _Unbuildable(f"{layer.at}: {type(exc).__name__}: {clip(str(exc))}") from None

    return _build(graph, build_layer)


def _build(graph: _GraphRecord, build_layer: Callable[[_LayerRecord], Layer]) -> Model:
    """The model of a checked record, its layers made by build_layer; the
    graph is rebuilt through the public API (layers applied to nn.Inputs),
    which checks its shapes, names and layouts."""
    layers = [_build(r, build_layer) if isinstance(r, _GraphRecord) else build_layer(r)
              for r in graph.layers]
    try:
        if graph.cls is Sequential:
            return Sequential(*(layers[i] for i in graph.order), layout=graph.layout,
                              name=graph.name)
        tensors = list(graph.inputs)
        for k, (index, ids) in enumerate(graph.nodes):
            layer, args = layers[index], [tensors[i] for i in ids]
            if layer.takes_list is False and len(args) != 1:
                raise ValueError(f"node {k} gives {len(args)} inputs to layer {index} "
                                 f"({type(layer).__name__}), which takes one")
            tensors.append(layer(args if list_input(layer, len(args)) else args[0]))
        return Model(graph.inputs, [tensors[i] for i in graph.outputs], layout=graph.layout,
                     name=graph.name)
    except (TypeError, ValueError) as exc:
        raise _Unbuildable(f"{graph.where}{type(exc).__name__}: {clip(str(exc))}") from None
