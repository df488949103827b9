"""Saving and loading models: a plain .npz, one array per weight plus a JSON
description of the layers, never a pickle."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import zipfile
import zlib
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

import fastconv
from fastconv._validate import LAYOUTS, clip, short_repr
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Linear,
                                MaxPool2d, ReLU, Softmax)
from fastconv.nn.model import Sequential

__all__ = ["save", "load"]

FORMAT = "fastconv.nn"
FORMAT_VERSION = 1
_LAYER_TYPES = {cls.__name__: cls for cls in (Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d,
                                              GlobalAvgPool2d, Flatten, Softmax, Dropout)}


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
_CHUNK = 2**20
_NPY_MAGIC = b"\x93NUMPY"
_WEIGHTS = {Conv2d: 4, Linear: 2}  # the layers with arrays, and their weight's ndim


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


def save(model: Sequential, path: Any) -> None:
    """Write `model` to `path` as a plain .npz: one array per weight and
    a JSON description of the layers (no pickle; load reads it)."""
    layers, arrays = [], {}
    for i, layer in enumerate(model.layers):
        params, named = layer._describe()
        stored = []
        for name, value in named.items():
            if value is not None:
                arrays[f"layer{i}.{name}"] = np.asarray(value)
                stored.append(name)
        layers.append({"type": type(layer).__name__, "params": params, "arrays": stored})
    description = {"format": FORMAT, "version": FORMAT_VERSION,
                   "fastconv": fastconv.__version__, "layout": model.layout,
                   "layers": layers}
    arrays["__model__"] = np.frombuffer(json.dumps(description).encode(), np.uint8)
    np.savez(path, **arrays)


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


def _layer_records(description: Dict[str, Any]) -> Tuple[str, List[Tuple[Any, dict, list]]]:
    """The model's layout and, for each layer, (class, parameters, names of
    its arrays), every field checked for its type."""
    layout = description.get("layout")
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"the model has layout {short_repr(layout)}; expected 'NHWC' or "
                         f"'NCHW'")
    records = description.get("layers")
    if not isinstance(records, list):
        raise ValueError(f"'layers' is {short_repr(records)}; expected a list of layers")
    layers = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"layer {i} is {short_repr(record)}; expected a "
                             f"{{'type': ..., 'params': {{...}}, 'arrays': [...]}} record")
        kind = record.get("type")
        cls = _LAYER_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"layer {i} has unknown type {short_repr(kind)}")
        what = f"layer {i} ({kind})"
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
        allowed = ("weight", "bias") if cls in _WEIGHTS else ()
        if (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
                or len(set(names)) != len(names) or any(n not in allowed for n in names)
                or (allowed and "weight" not in names)):
            raise ValueError(f"{what} has arrays {short_repr(names)}; expected "
                             + ("['weight'] or ['weight', 'bias']" if allowed else "[]"))
        # (what _check_arrays needs to find a weight's output channels)
        conv_layout = converted.get("layout", "NHWC")
        if cls is Conv2d and not (isinstance(conv_layout, str)
                                  and conv_layout.upper() in LAYOUTS):
            raise ValueError(f"{what} has layout {short_repr(conv_layout)}; expected "
                             f"'NHWC' or 'NCHW'")
        weight_layout = converted.get("weight_layout", "IO")
        if cls is Linear and weight_layout not in ("IO", "OI"):
            raise ValueError(f"{what} has weight_layout {short_repr(weight_layout)}; "
                             f"expected 'IO' or 'OI'")
        layers.append((cls, converted, names))
    return layout, layers


def _check_arrays(i: int, cls: Any, params: dict, arrays: Dict[str, _Npy]) -> None:
    """The headers of a layer's members against what the layer takes: float32
    or float64, a 4-D (Conv2d) or 2-D (Linear) weight, a bias of one value
    per output channel."""
    what = f"layer {i} ({cls.__name__})"
    for member in arrays.values():
        if member.dtype.kind != "f" or member.dtype.itemsize not in (4, 8):
            raise ValueError(f"{what}: {member.info.filename} is {clip(str(member.dtype), 80)}; "
                             f"weights are float32 or float64")
    weight = arrays["weight"]
    if len(weight.shape) != _WEIGHTS[cls]:
        raise ValueError(f"{what}: {weight.info.filename} has shape {short_repr(weight.shape)}; "
                         f"the weight of a {cls.__name__} is {_WEIGHTS[cls]}-D")
    if "bias" in arrays:
        if cls is Conv2d:
            outputs = weight.shape[3 if params.get("layout", "NHWC").upper() == "NHWC" else 0]
        else:
            outputs = weight.shape[1 if params.get("weight_layout", "IO") == "IO" else 0]
        bias = arrays["bias"]
        if bias.shape != (outputs,):
            raise ValueError(f"{what}: {bias.info.filename} has shape {short_repr(bias.shape)}; "
                             f"the weight's shape {weight.shape} makes the bias ({outputs},)")


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


def load(path: Any) -> Sequential:
    """Read a model written by Sequential.save.

    `path` is a file name or a binary file opened for reading. Never executes
    code from the file and reads only what its description names, each
    array's size checked before it is read (SECURITY.md, "Model files"):

    - every member of the archive must be stored or deflated, unencrypted,
      as numpy.savez and savez_compressed write them;
    - the description (``__model__``, at most MAX_DESCRIPTION_BYTES, 2 MiB,
      of JSON) is read and checked first, then the .npy header of each array
      it names: float32 or float64, of the shape its layer takes, and of
      exactly the size the zip records for it;
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
        limits above, or was written in another format version.
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


def _load(path: Any, zf: zipfile.ZipFile, file_size: int) -> Sequential:
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
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ValueError(f"nn.load: {path!s} is format version {short_repr(version)} "
                         f"(written by fastconv {short_repr(description.get('fastconv'))}); "
                         f"this fastconv {fastconv.__version__} reads version {FORMAT_VERSION}")
    # 2. The headers of the arrays it names, against their layers.
    try:
        layout, records = _layer_records(description)
        arrays: List[Dict[str, _Npy]] = []
        for i, (cls, params, names) in enumerate(records):
            found = {}
            for name in names:
                found[name] = member(f"layer{i}.{name}")
                if found[name] is None:
                    raise ValueError(f"layer {i} ({cls.__name__}) names array {name!r}, but "
                                     f"the file has no member layer{i}.{name}.npy")
            if found:
                _check_arrays(i, cls, params, found)
            arrays.append(found)
    except ValueError as exc:
        raise ValueError(f"nn.load: {path!s} describes a model that cannot be built "
                         f"(ValueError: {clip(str(exc))})") from None
    # 3. Their sizes, against the zip's records and the file's size.
    try:
        for found in arrays:
            for npy in found.values():
                _check_size(npy)
    except ValueError as exc:
        raise _Unreadable(str(exc)) from None
    total = sum(npy.nbytes for found in arrays for npy in found.values())
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
    layers = []
    for i, ((cls, params, _), found) in enumerate(zip(records, arrays)):
        data = {name: _read_npy(zf, npy) for name, npy in found.items()}
        try:
            if cls in _WEIGHTS:
                layers.append(cls(data["weight"], data.get("bias"), **params))
            else:
                layers.append(cls(**params))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"nn.load: {path!s} describes a model that cannot be built "
                             f"(layer {i}: {type(exc).__name__}: {clip(str(exc))})") from None
    try:
        return Sequential(*layers, layout=layout)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"nn.load: {path!s} describes a model that cannot be built "
                         f"({type(exc).__name__}: {clip(str(exc))})") from None
