"""Untrusted files: fastconv.nn.load reads a .npz of plain arrays and a JSON
description, never unpickling, so a pickled object inside the file is refused
with a clear error and none of its code runs; and it reads only what the
description names, each array's size checked first, so that a crafted or
corrupt file (deep JSON, wrong types, lying sizes, zip bombs) is a short
ValueError, not a crash or gigabytes of memory. from_keras on JSON text is
held to the same messages (SECURITY.md, "Model files").
"""

import io
import json
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest

from fastconv import nn
from fastconv.nn import serialize


class _Payload:
    """Unpickling this creates the file `path` (a stand-in for any code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickled_array(path):
    values = np.empty(1, dtype=object)
    values[0] = _Payload(path)
    return values


def _model_arrays(tmp_path):
    model = nn.Sequential(nn.Conv2d(np.ones((3, 3, 2, 4), np.float32)), nn.Flatten(),
                          nn.Linear(np.ones((4 * 6 * 6, 3), np.float32)))
    model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as data:
        return {name: data[name] for name in data.files}


def test_the_payload_would_run_if_unpickled(tmp_path):
    """The check below is meaningful: loading this file with pickle allowed
    does run the payload."""
    marker = tmp_path / "ran"
    np.savez(tmp_path / "evil.npz", __model__=_pickled_array(marker))
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as data:
        data["__model__"]
    assert marker.exists()


@pytest.mark.parametrize("where", ["description", "weight", "extra-entry"])
def test_load_refuses_pickled_objects_and_runs_nothing(tmp_path, where):
    marker = tmp_path / "ran"
    arrays = _model_arrays(tmp_path)
    if where == "description":
        arrays["__model__"] = _pickled_array(marker)
    elif where == "weight":
        arrays["layer0.weight"] = _pickled_array(marker)
    else:
        arrays["notes"] = _pickled_array(marker)
    path = tmp_path / "evil.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"nn\.load: .*evil\.npz is not a readable \.npz "
                                         r"model file .*allow_pickle=False"):
        nn.load(path)
    assert not marker.exists(), "loading ran code from the file"


# --------------------------------------------------------------------------
# Crafted archives, written member by member
# --------------------------------------------------------------------------
HUGE = (2**20, 2**20)  # float32: 4 TiB


def _npy(shape, descr="<f4", data=None):
    """A .npy member: a header declaring `shape` and `descr`, then `data`
    (by default as many zero bytes as it declares)."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    if data is None:
        data = bytes(int(np.prod(shape)) * np.dtype(descr).itemsize)
    return f.getvalue() + data


def _description_member(description):
    text = description if isinstance(description, bytes) else json.dumps(description).encode()
    return _npy((len(text),), "|u1", text)


def _write(path, members, compression=zipfile.ZIP_STORED):
    """An archive of {name: bytes} (no zip64 records: small sizes stay in
    the central directory's own fields, which _patch_central edits)."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _model():
    """conv 3x3 (2 -> 4, bias), flatten, linear 144 -> 3 (no bias), for (8, 8, 2)."""
    return nn.Sequential(nn.Conv2d(np.ones((3, 3, 2, 4), np.float32), np.ones(4, np.float32)),
                         nn.Flatten(), nn.Linear(np.full((4 * 6 * 6, 3), 0.5, np.float32)))


def _saved(tmp_path):
    """(the model, its description, its members as {name: bytes})."""
    model = _model()
    model.save(tmp_path / "saved.npz")
    with zipfile.ZipFile(tmp_path / "saved.npz") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with np.load(tmp_path / "saved.npz") as data:
        description = json.loads(data["__model__"].tobytes())
    return model, description, members


def _same_model(loaded, model):
    x = np.linspace(-1, 1, 2 * 8 * 8 * 2, dtype=np.float32).reshape(2, 8, 8, 2)
    assert repr(loaded) == repr(model)
    assert np.array_equal(loaded(x), model(x))


def _patch_central(path, name, *, crc=None, compress_size=None, file_size=None, flags=None):
    """Edit the central directory's record of member `name` (what zipfile
    trusts): a file whose zip records lie."""
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    pos = int.from_bytes(data[end + 16:end + 20], "little")
    while data[pos:pos + 4] == b"PK\x01\x02":
        nlen, elen, clen = struct.unpack("<HHH", data[pos + 28:pos + 34])
        if data[pos + 46:pos + 46 + nlen] == name.encode():
            for offset, value in ((8, flags), (16, crc), (20, compress_size), (24, file_size)):
                if value is not None:
                    size = 2 if offset == 8 else 4
                    data[pos + offset:pos + offset + size] = value.to_bytes(size, "little")
            path.write_bytes(bytes(data))
            return path
        pos += 46 + nlen + elen + clen
    raise AssertionError(f"no central directory record of {name}")


# The child's peak resident memory, in bytes. Linux's VmHWM, not ru_maxrss:
# exec carries the old address space's peak into ru_maxrss, and subprocess
# forks this pytest process (vfork), so a child's ru_maxrss is at least the
# peak this process had reached.
_PEAK = """
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status
                    if line.startswith("VmHWM:"))
except OSError:
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak *= 1 if sys.platform == "darwin" else 1024
print(peak)
"""


def _load_in_child(path):
    """nn.load(path) in a fresh interpreter: (its ValueError's message or
    "loaded", its peak resident memory in bytes)."""
    code = ("import sys\n"
            "from fastconv import nn\n"
            "try:\n"
            "    nn.load(sys.argv[1])\n"
            "    print('loaded')\n"
            "except ValueError as exc:\n"
            "    print(exc)\n" + _PEAK)
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120, cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr
    message, peak = done.stdout.rstrip("\n").rsplit("\n", 1)
    return message, int(peak)


def _zeros_bomb(path, header, mib, file_size=None):
    """__model__ naming a Linear weight (no bias) whose deflated member is
    `header` then `mib` MiB of zeros (about 1 MB on disk per 256 MiB)."""
    description = {"format": "fastconv.nn", "version": 1, "layout": "NHWC",
                   "layers": [{"type": "Linear", "params": {}, "arrays": ["weight"]}]}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("__model__.npy", _description_member(description))
        with zf.open("layer0.weight.npy", "w") as f:
            f.write(header)
            zero = bytes(2**20)
            for _ in range(mib):
                f.write(zero)
    if file_size is not None:
        _patch_central(path, "layer0.weight.npy", file_size=file_size)
    return path


# --------------------------------------------------------------------------
# The description: JSON, types, sizes
# --------------------------------------------------------------------------
def test_load_refuses_deeply_nested_json(tmp_path):
    path = _write(tmp_path / "deep.npz", {"__model__.npy": _description_member(b"[" * 100_000)})
    with pytest.raises(ValueError, match=r"deep\.npz has no valid fastconv\.nn model "
                                         r"description \(its JSON is nested too deeply\)"):
        nn.load(path)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"layers": [' * 50_000,
                                  b'{"config": ' * 50_000])
def test_from_keras_refuses_deeply_nested_json_text(text):
    with pytest.raises(ValueError, match=r"^from_keras: config is JSON nested too deeply$"):
        nn.from_keras(text, [])


def test_from_keras_refuses_a_deep_list_within_the_json_limit():
    """Nested 900 deep (json itself parses it): refused by type, in a
    message that shows three levels."""
    text = ('{"layers": [{"class_name": "Dense", "config": {"units": '
            + "[" * 900 + "]" * 900 + "}}]}")
    with pytest.raises(ValueError, match=r"^from_keras: layer 0 \(Dense\) has "
                                         r"units=\[\[\[\[\.\.\.\]\]\]\]; expected an int >= 1$"):
        nn.from_keras(text, [])


def _layers(d):
    return d["layers"]


# (how to break a saved model's description, what the message says)
WRONG_FIELDS = {
    "params-not-a-dict": (lambda d: _layers(d)[0].update(params=[1, 2]),
                          r"layer 0 \(Conv2d\) has params \[1, 2\]; expected a dict"),
    "layers-not-a-list": (lambda d: d.update(layers={"0": _layers(d)[0]}),
                          r"'layers' is \{'0': .*\}; expected a list of layers"),
    "record-not-a-dict": (lambda d: _layers(d).__setitem__(1, "Flatten"),
                          r"layer 1 is 'Flatten'; expected a \{'type': \.\.\., "),
    "arrays-a-string": (lambda d: _layers(d)[0].update(arrays="weight"),
                        r"layer 0 \(Conv2d\) has arrays 'weight'; expected \['weight'\] or"),
    "arrays-not-strings": (lambda d: _layers(d)[0].update(arrays=[["weight"]]),
                           r"layer 0 \(Conv2d\) has arrays \[\['weight'\]\]; expected"),
    "arrays-twice": (lambda d: _layers(d)[0].update(arrays=["weight", "weight"]),
                     r"has arrays \['weight', 'weight'\]; expected"),
    "arrays-no-weight": (lambda d: _layers(d)[0].update(arrays=["bias"]),
                         r"layer 0 \(Conv2d\) has arrays \['bias'\]; expected \['weight'\]"),
    "arrays-on-flatten": (lambda d: _layers(d)[1].update(arrays=["weight"]),
                          r"layer 1 \(Flatten\) has arrays \['weight'\]; expected \[\]"),
    "arrays-missing": (lambda d: _layers(d)[2].pop("arrays"),
                       r"layer 2 \(Linear\) has arrays None; expected"),
    "type-not-a-string": (lambda d: _layers(d)[0].update(type=["Conv2d"]),
                          r"layer 0 has unknown type \['Conv2d'\]"),
    "type-missing": (lambda d: _layers(d)[0].pop("type"), r"layer 0 has unknown type None"),
    "layout-not-a-string": (lambda d: d.update(layout=1),
                            r"the model has layout 1; expected 'NHWC' or 'NCHW'"),
    "conv-layout-not-a-string": (lambda d: _layers(d)[0]["params"].update(layout=None),
                                 r"layer 0 \(Conv2d\) has layout None; expected 'NHWC'"),
    "weight-layout-not-a-string": (
        lambda d: _layers(d)[2]["params"].update(weight_layout=5),
        r"layer 2 \(Linear\) has weight_layout 5; expected 'IO' or 'OI'"),
    "param-a-dict": (lambda d: _layers(d)[0]["params"].update(stride={"h": 1}),
                     r"layer 0 \(Conv2d\) has parameter 'stride' = \{'h': 1\}: a dict, "
                     r"which no layer takes"),
    "param-nested-deep": (lambda d: _layers(d)[0]["params"].update(
        padding=json.loads("[" * 500 + "]" * 500)),
        r"has parameter 'padding' = \[\[\[\[\.\.\.\]\]\]\]: lists nested deeper than 4"),
    "param-a-string": (lambda d: _layers(d)[0]["params"].update(stride="x"),
                       r"\(layer 0: TypeError: Conv2d: stride must be an int or a pair"),
    "param-unknown": (lambda d: _layers(d)[1]["params"].update(bogus=1),
                      r"\(layer 1: TypeError: .*unexpected keyword argument 'bogus'"),
    "version-true": (lambda d: d.update(version=True), r"is format version True \("),
    "format-missing": (lambda d: d.pop("format"), r"is not a fastconv\.nn model file$"),
}


@pytest.mark.parametrize("case", sorted(WRONG_FIELDS))
def test_load_refuses_wrong_typed_fields(tmp_path, case):
    _, description, members = _saved(tmp_path)
    change, message = WRONG_FIELDS[case]
    change(description)
    members["__model__.npy"] = _description_member(description)
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=r"^nn\.load: .*model\.npz .*" + message):
        nn.load(path)


def test_load_refuses_a_description_of_the_wrong_dtype(tmp_path):
    _, _, members = _saved(tmp_path)
    members["__model__.npy"] = _npy((4,), "<f4")
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=r"no valid fastconv\.nn model description \(ValueError: "
                                         r"__model__ is float32 of shape \(4,\); expected the "
                                         r"uint8 bytes"):
        nn.load(path)


@pytest.mark.parametrize("where", ["type", "param"])
def test_load_messages_stay_short_on_a_long_string(tmp_path, where):
    """A megabyte string from the file is quoted in 80 characters at most."""
    _, description, members = _saved(tmp_path)
    if where == "type":
        _layers(description)[1]["type"] = "X" * 2**20
        message = r"layer 1 has unknown type 'XXXX*\.\.\.XXXX*'\)$"
    else:
        _layers(description)[0]["params"]["activation"] = "X" * 2**20
        message = r"Conv2d: activation must be None, one of .*; got 'XXX*\.\.\.XXX*'"
    members["__model__.npy"] = _description_member(description)
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=message) as info:
        nn.load(path)
    assert len(str(info.value)) < 1000


def test_load_refuses_a_50_mb_description_unread(tmp_path):
    """A 50 MB layer type: the description is over its 2 MiB limit, refused
    from its header, in a short message."""
    _, description, members = _saved(tmp_path)
    _layers(description)[0]["type"] = "X" * 50_000_000
    members["__model__.npy"] = _description_member(description)
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=r"no valid fastconv\.nn model description \(ValueError: "
                                         r"__model__ declares 500\d{5} bytes; at most 2097152 "
                                         r"are read\)$") as info:
        nn.load(path)
    assert len(str(info.value)) < 1000


def test_from_keras_messages_stay_short_on_a_50_mb_class_name():
    text = json.dumps({"layers": [{"class_name": "X" * 50_000_000,
                                   "config": {"name": "n" * 1_000_000}}]})
    with pytest.raises(ValueError, match=r"^from_keras: layer 0 'nnnn*\.\.\.nnnn*' "
                                         r"\('XXXX*\.\.\.XXXX*'\) has no fastconv\.nn "
                                         r"equivalent") as info:
        nn.from_keras(text, [])
    assert len(str(info.value)) < 1000


# --------------------------------------------------------------------------
# The archive: what it is, what it holds, what its headers declare
# --------------------------------------------------------------------------
def test_load_refuses_a_plain_npy_file(tmp_path):
    np.save(tmp_path / "weights.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"weights\.npy is not a readable \.npz model file \(it "
                                         r"is a \.npy file, one array, not a \.npz archive\)"):
        nn.load(tmp_path / "weights.npy")
    with open(tmp_path / "weights.npy", "rb") as f, \
            pytest.raises(ValueError, match=r"it is a \.npy file"):
        nn.load(f)


@pytest.mark.parametrize("kind", ["str", "path", "file", "bytesio"])
def test_load_reads_paths_and_binary_files(tmp_path, kind):
    model = _model()
    path = tmp_path / "model.npz"
    model.save(path)
    if kind in ("str", "path"):
        _same_model(nn.load(str(path) if kind == "str" else path), model)
    elif kind == "file":
        with open(path, "rb") as f:
            _same_model(nn.load(f), model)
    else:
        _same_model(nn.load(io.BytesIO(path.read_bytes())), model)


def test_load_ignores_unreferenced_members_unread(tmp_path):
    """A member that declares 4 TiB (and holds 8 bytes) and one that is not
    a .npy, both named by nothing: the model loads, neither is read."""
    model = _model()
    path = tmp_path / "model.npz"
    model.save(path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("junk.npy", _npy(HUGE, data=bytes(8)))
        zf.writestr("notes.txt", b"not an array")
    _same_model(nn.load(path), model)


def test_load_checks_the_description_before_any_array(tmp_path):
    """The 677-byte file: a 4 TiB member beside a description that is not a
    model's (numpy.load read every member first: MemoryError)."""
    path = _write(tmp_path / "tiny.npz", {
        "__model__.npy": _description_member({"format": "something else"}),
        "layer0.weight.npy": _npy(HUGE, data=bytes(8))})
    assert path.stat().st_size < 1000
    with pytest.raises(ValueError, match=r"tiny\.npz is not a fastconv\.nn model file$"):
        nn.load(path)


def test_load_refuses_a_named_member_declaring_more_than_it_holds(tmp_path):
    _, _, members = _saved(tmp_path)
    members["layer2.weight.npy"] = _npy(HUGE, data=bytes(8))  # the Linear's, 2-D
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=r"not a readable \.npz model file \(layer2\.weight\.npy "
                                         r"declares 4398046511104 bytes of data \(shape "
                                         r"\(1048576, 1048576\), float32\) but the archive "
                                         r"records 8\)"):
        nn.load(path)


def test_load_refuses_a_truncated_member(tmp_path):
    """The bias's header declares 4 floats; the member holds 2."""
    _, _, members = _saved(tmp_path)
    members["layer0.bias.npy"] = _npy((4,), data=bytes(8))
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=r"not a readable \.npz model file \(layer0\.bias\.npy "
                                         r"declares 16 bytes of data \(shape \(4,\), float32\) "
                                         r"but the archive records 8\)"):
        nn.load(path)


def test_load_refuses_a_member_whose_zip_records_lie(tmp_path):
    """Header and central directory both claim the Linear's 1728 bytes; the
    archive holds 8: the read runs short or into other members, refused."""
    _, _, members = _saved(tmp_path)
    header = _npy((144, 3), data=b"")
    members["layer2.weight.npy"] = header + bytes(8)
    path = _write(tmp_path / "model.npz", members)
    size = len(header) + 144 * 3 * 4
    _patch_central(path, "layer2.weight.npy", compress_size=size, file_size=size)
    with pytest.raises(ValueError, match=r"not a readable \.npz model file \((layer2\.weight"
                                         r"\.npy ends after \d+ of the 1728 bytes|BadZipFile: "
                                         r"Bad CRC-32|BadZipFile: Overlapped entries)"):
        nn.load(path)


def test_load_refuses_a_truncated_file(tmp_path):
    model = _model()
    model.save(tmp_path / "model.npz")
    data = (tmp_path / "model.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz is not a readable \.npz model file "
                                         r"\(BadZipFile: "):
        nn.load(tmp_path / "cut.npz")


# (the member replaced, what its header declares, what the message says)
WRONG_ARRAYS = {
    "conv-bias-length": ("layer0.bias.npy", (5,), "<f4",
                         r"layer0\.bias\.npy has shape \(5,\); the "
                         r"weight's shape \(3, 3, 2, 4\) makes the bias \(4,\)"),
    "conv-bias-2d": ("layer0.bias.npy", (4, 1), "<f4", r"layer0\.bias\.npy has shape \(4, 1\)"),
    "conv-weight-2d": ("layer0.weight.npy", (18, 4), "<f4",
                       r"layer0\.weight\.npy has shape \(18, 4\); the weight of a Conv2d "
                       r"is 4-D"),
    "linear-weight-3d": ("layer2.weight.npy", (144, 3, 1), "<f4",
                         r"layer2\.weight\.npy has shape \(144, 3, 1\); the weight of a "
                         r"Linear is 2-D"),
    "int-weight": ("layer0.weight.npy", (3, 3, 2, 4), "<i4",
                   r"layer0\.weight\.npy is int32; weights are float32 or float64"),
    "half-weight": ("layer2.weight.npy", (144, 3), "<f2",
                    r"layer2\.weight\.npy is float16; weights are float32 or float64"),
    "bytes-weight": ("layer2.weight.npy", (144, 3), "|S4", r"layer2\.weight\.npy is \|S4;"),
}


@pytest.mark.parametrize("case", sorted(WRONG_ARRAYS))
def test_load_refuses_arrays_that_do_not_fit_their_layer(tmp_path, case):
    """Checked from the headers, before any array is read."""
    _, _, members = _saved(tmp_path)
    name, shape, descr, message = WRONG_ARRAYS[case]
    members[name] = _npy(shape, descr)
    path = _write(tmp_path / "model.npz", members)
    layer = "layer 0 \\(Conv2d\\)" if name.startswith("layer0") else "layer 2 \\(Linear\\)"
    with pytest.raises(ValueError, match=r"describes a model that cannot be built \(ValueError: "
                                         + layer + ": " + message):
        nn.load(path)


def test_load_refuses_a_missing_array(tmp_path):
    _, _, members = _saved(tmp_path)
    del members["layer0.bias.npy"]
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2d\) names array 'bias', but the file "
                                         r"has no member layer0\.bias\.npy"):
        nn.load(path)


def test_load_reads_fortran_ordered_and_byte_swapped_weights(tmp_path):
    """What numpy.savez writes for such arrays loads as numpy.load reads it."""
    model = _model()
    _, description, members = _saved(tmp_path)
    arrays = {"__model__": np.frombuffer(json.dumps(description).encode(), np.uint8),
              "layer0.weight": np.asfortranarray(model[0].weight),
              "layer0.bias": model[0].bias.astype(">f4"),
              "layer2.weight": np.asfortranarray(model[2].weight).astype(">f4", order="F")}
    assert arrays["layer2.weight"].flags.f_contiguous
    np.savez(tmp_path / "model.npz", **arrays)
    _same_model(nn.load(tmp_path / "model.npz"), model)


def test_load_refuses_other_compression_and_encryption(tmp_path):
    _, _, members = _saved(tmp_path)
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data, zipfile.ZIP_BZIP2 if name == "layer0.bias.npy" else None)
    with pytest.raises(ValueError, match=r"not a readable \.npz model file \(member "
                                         r"'layer0\.bias\.npy' is encrypted or compressed with "
                                         r"method 12; numpy writes stored or deflated"):
        nn.load(path)
    _patch_central(_write(path, members), "layer0.bias.npy", flags=1)
    with pytest.raises(ValueError, match=r"member 'layer0\.bias\.npy' is encrypted"):
        nn.load(path)


def test_load_accepts_at_most_1000_other_members(tmp_path):
    model = _model()
    path = tmp_path / "model.npz"
    model.save(path)
    with zipfile.ZipFile(path, "a") as zf:
        for i in range(serialize.MAX_OTHER_MEMBERS):
            zf.writestr(f"extra{i}.npy", _npy((1,)))
    _same_model(nn.load(path), model)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("one-more.txt", b"")
    with pytest.raises(ValueError, match=r"not a readable \.npz model file \(it holds 1001 members "
                                         r"its description does not name; at most 1000 are "
                                         r"accepted\)"):
        nn.load(path)


# --------------------------------------------------------------------------
# Compression: what legitimate files need, what a zip bomb gets
# --------------------------------------------------------------------------
def test_load_reads_savez_compressed_models(tmp_path):
    """Real weights, and 16 MiB of zeros (a thousandfold compressed, within
    the 64 MiB that any file may declare)."""
    model = _model()
    _, description, _ = _saved(tmp_path)
    arrays = {"__model__": np.frombuffer(json.dumps(description).encode(), np.uint8),
              "layer0.weight": model[0].weight, "layer0.bias": model[0].bias,
              "layer2.weight": model[2].weight}
    np.savez_compressed(tmp_path / "model.npz", **arrays)
    _same_model(nn.load(tmp_path / "model.npz"), model)
    zeros = {"format": "fastconv.nn", "version": 1, "layout": "NHWC",
             "layers": [{"type": "Linear", "params": {}, "arrays": ["weight"]}]}
    np.savez_compressed(tmp_path / "zeros.npz", **{
        "__model__": np.frombuffer(json.dumps(zeros).encode(), np.uint8),
        "layer0.weight": np.zeros((2048, 2048), np.float32)})
    assert (tmp_path / "zeros.npz").stat().st_size < 2**20
    loaded = nn.load(tmp_path / "zeros.npz")
    assert loaded[0].weight.shape == (2048, 2048) and not loaded[0].weight.any()


def test_load_refuses_a_zip_bomb_in_little_memory(tmp_path):
    """A 1 MB file inflating to a 256 MiB weight its header declares
    honestly: over max(64 MiB, 5 x the file's size), refused before it is
    read. (Reading every member first, as numpy.load does, peaked at 283 MB
    here, before the Linear packed its copy.)"""
    header = _npy((65536, 1024), data=b"")
    path = _zeros_bomb(tmp_path / "bomb.npz", header, 256)
    assert path.stat().st_size < 2 * 2**20
    message, peak = _load_in_child(path)
    assert "bomb.npz is not a readable .npz model file (its arrays declare 268435456 bytes in " \
           "all; a file of" in message and "may declare at most 67108864" in message, message
    assert peak < 150 * 2**20, f"peak resident memory {peak / 2**20:.0f} MiB"


def test_load_reads_a_member_no_further_than_its_header_declares(tmp_path):
    """A member whose header and zip record declare a (16, 3) weight but
    whose deflated data runs on for 256 MiB: load reads the 192 bytes, and
    the zip's checksum (of all of it) refuses them."""
    header = _npy((16, 3), data=b"")
    path = _zeros_bomb(tmp_path / "bomb.npz", header, 256, file_size=len(header) + 192)
    message, peak = _load_in_child(path)
    assert message.startswith(f"nn.load: {path} is not a readable .npz model file (BadZipFile: "
                              f"Bad CRC-32"), message
    assert peak < 150 * 2**20, f"peak resident memory {peak / 2**20:.0f} MiB"


# --------------------------------------------------------------------------
# The graph of a format-version-2 model: references, cycles, sizes, nesting
# --------------------------------------------------------------------------
def _graph_model():
    """x (8, 8, 2) -> conv 3x3 (2 -> 4, bias) -> y; add(inner(y), y) with
    inner = Sequential(relu, conv 1x1); flatten; linear 144 -> 3. Layers
    0-4: conv, inner, add, flat, fc; nodes 0-4 write tensors 1-5."""
    x = nn.Input((8, 8, 2), name="x")
    conv = nn.Conv2d(np.ones((3, 3, 2, 4), np.float32), np.ones(4, np.float32), name="conv")
    inner = nn.Sequential(nn.ReLU(), nn.Conv2d(np.full((1, 1, 4, 4), 0.25, np.float32)),
                          name="inner")
    y = conv(x)
    z = nn.Add(name="add")([inner(y), y])
    out = nn.Linear(np.full((144, 3), 0.5, np.float32), name="fc")(nn.Flatten(name="flat")(z))
    return nn.Model(x, out, name="graph")


def _graph_saved(tmp_path):
    """(the model, its description, its members as {name: bytes})."""
    model = _graph_model()
    model.save(tmp_path / "graph.npz")
    with zipfile.ZipFile(tmp_path / "graph.npz") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with np.load(tmp_path / "graph.npz") as data:
        description = json.loads(data["__model__"].tobytes())
    return model, description, members


def test_the_graph_model_round_trips(tmp_path):
    model, description, members = _graph_saved(tmp_path)
    assert sorted(members) == ["__model__.npy", "layer0.bias.npy", "layer0.weight.npy",
                               "layer1.layer1.weight.npy", "layer4.weight.npy"]
    assert description["nodes"] == [{"layer": 0, "inputs": [0]}, {"layer": 1, "inputs": [1]},
                                    {"layer": 2, "inputs": [2, 1]}, {"layer": 3, "inputs": [3]},
                                    {"layer": 4, "inputs": [4]}]
    _same_model(nn.load(_write(tmp_path / "model.npz", members)), model)


def _nodes(d):
    return d["nodes"]


def _extra_input(d):
    """A second input, unused: tensor ids from 1 on move up by one."""
    d["inputs"].append({"name": "spare", "shape": [3], "dtype": None})
    for node in _nodes(d):
        node["inputs"] = [i + (i >= 1) for i in node["inputs"]]
    d["outputs"] = [i + 1 for i in d["outputs"]]


# (how to break the graph's description, what the message says)
WRONG_GRAPHS = {
    "node-reads-a-later-tensor": (lambda d: _nodes(d)[0].update(inputs=[2]),
                                  r"node 0's 'inputs' is \[2\]; expected a list of indices from "
                                  r"0 to 0"),
    "node-reads-itself": (lambda d: _nodes(d)[2].update(inputs=[3, 1]),
                          r"node 2's 'inputs' is \[3, 1\]; expected a list of indices from 0 "
                          r"to 2"),
    "node-reads-unknown": (lambda d: _nodes(d)[1].update(inputs=[99]),
                           r"node 1's 'inputs' is \[99\]"),
    "node-reads-negative": (lambda d: _nodes(d)[1].update(inputs=[-1]),
                            r"node 1's 'inputs' is \[-1\]"),
    "node-reads-nothing": (lambda d: _nodes(d)[1].update(inputs=[]), r"node 1's 'inputs' is \[\]"),
    "node-reads-a-bool": (lambda d: _nodes(d)[1].update(inputs=[True]),
                          r"node 1's 'inputs' is \[True\]"),
    "node-reads-a-float": (lambda d: _nodes(d)[1].update(inputs=[1.0]),
                           r"node 1's 'inputs' is \[1\.0\]"),
    "node-layer-unknown": (lambda d: _nodes(d)[0].update(layer=9),
                           r"node 0 has layer 9; expected an index from 0 to 4"),
    "node-layer-a-string": (lambda d: _nodes(d)[0].update(layer="conv"),
                            r"node 0 has layer 'conv'; expected an index"),
    "node-not-a-dict": (lambda d: _nodes(d).__setitem__(0, [0, [0]]),
                        r"node 0 is \[0, \[0\]\]; expected a \{'layer': \.\.\., 'inputs'"),
    "nodes-not-a-list": (lambda d: d.update(nodes={"0": 1}), r"'nodes' is \{'0': 1\}; expected"),
    "outputs-unknown": (lambda d: d.update(outputs=[6]),
                        r"'outputs' is \[6\]; expected a list of indices from 0 to 5"),
    "outputs-empty": (lambda d: d.update(outputs=[]), r"'outputs' is \[\]; expected"),
    "node-unused": (lambda d: d.update(outputs=[4]), r"node 4 is used by no output"),
    "input-unused": (_extra_input, r"input 1 is used by no output"),
    "layer-unused": (lambda d: d["layers"].append({"type": "ReLU", "params": {}, "arrays": []}),
                     r"layer 5 is used by no node"),
    "inputs-empty": (lambda d: d.update(inputs=[]), r"'inputs' is \[\]; expected a non-empty"),
    "input-not-a-dict": (lambda d: d.update(inputs=[[8, 8, 2]]), r"input 0 is \[8, 8, 2\]; "),
    "input-shape-huge": (lambda d: d["inputs"][0].update(shape=[2**70, 8, 2]),
                         r"input 0: Input: shape must hold sizes from 0 to 2\*\*63 - 1"),
    "input-shape-many-axes": (lambda d: d["inputs"][0].update(shape=[1] * 33),
                              r"input 0: Input: shape must have 1 to 32 axes"),
    "input-shape-float": (lambda d: d["inputs"][0].update(shape=[8.0, 8, 2]),
                          r"input 0: Input: shape must be a tuple of ints"),
    "input-shape-missing": (lambda d: d["inputs"][0].pop("shape"),
                            r"input 0: Input: shape must be a tuple"),
    "input-dtype": (lambda d: d["inputs"][0].update(dtype="int8"),
                    r"input 0: Input: dtype must be None, float32 or float64; got 'int8'"),
    "input-dtype-structured": (lambda d: d["inputs"][0].update(dtype=[["a", "<f4"]] * 3),
                               r"input 0: Input: dtype must be None, float32 or float64; got "
                               r"\[\['a', '<f4'\]"),
    "input-name-an-int": (lambda d: d["inputs"][0].update(name=5),
                          r"input 0 has name 5; expected a non-empty string or null"),
    "layer-name-empty": (lambda d: d["layers"][0].update(name=""),
                         r"layer 0 \(Conv2d\) has name ''; expected a non-empty string"),
    "model-type-unknown": (lambda d: d.update(type="Graph"),
                           r"the model has type 'Graph'; expected 'Model' or 'Sequential'"),
    "nested-layout": (lambda d: d["layers"][1].update(layout=7),
                      r"layer 1 \(Sequential\): the model has layout 7; expected"),
    "nested-unknown-type": (lambda d: d["layers"][1]["layers"][0].update(type="Evil"),
                            r"layer 1 \(Sequential\): layer 0 has unknown type 'Evil'"),
    "nested-order": (lambda d: d["layers"][1].update(order=[0, 5]),
                     r"layer 1 \(Sequential\): 'order' is \[0, 5\]; expected a list of indices "
                     r"from 0 to 1"),
    "nested-order-skips-a-layer": (lambda d: d["layers"][1].update(order=[1]),
                                   r"layer 1 \(Sequential\): layer 0 is used by no node"),
    "nested-arrays": (lambda d: d["layers"][1]["layers"][1].update(arrays=[]),
                      r"layer 1 \(Sequential\): layer 1 \(Conv2d\) has arrays \[\]; expected "
                      r"\['weight'\] or \['weight', 'bias'\]"),
    # These pass the description's checks and fail as the graph is rebuilt.
    "two-inputs-to-a-flatten": (lambda d: _nodes(d)[3].update(inputs=[3, 3]),
                                r"ValueError: node 3 gives 2 inputs to layer 3 \(Flatten\), "
                                r"which takes one\)$"),
    "one-input-to-an-add": (lambda d: _nodes(d)[2].update(inputs=[2]),
                            r"ValueError: layer 'add' \(Add\) cannot take input shapes "
                            r"\(6, 6, 4\): Add: takes 2 or more inputs; got 1\)$"),
    "duplicate-names": (lambda d: d["layers"][2].update(name="conv"),
                        r"ValueError: Model 'graph': a Conv2d layer and an Add layer are both "
                        r"named 'conv'"),
    "shapes-incompatible": (lambda d: d["inputs"][0].update(shape=[8, 8, 3]),
                            r"ValueError: layer 'conv' \(Conv2d\) cannot take input shape "
                            r"\(8, 8, 3\): Conv2d: x has C=3 channels, but the weight has 2 "
                            r"input channels"),
    "layouts-disagree": (lambda d: d.update(layout="NCHW"),
                         r"ValueError: Model 'graph': layer 'conv' \(Conv2d\) is NHWC but the "
                         r"model is NCHW\)$"),
    "nested-layouts-disagree": (lambda d: d["layers"][1].update(layout="NCHW"),
                                r"layer 1 \(Sequential\): ValueError: Sequential: layer 1 "
                                r"\(Conv2d\(.*\)\) is NHWC but the model is NCHW\)$"),
}


@pytest.mark.parametrize("case", sorted(WRONG_GRAPHS))
def test_load_refuses_a_wrong_graph(tmp_path, case):
    _, description, members = _graph_saved(tmp_path)
    change, message = WRONG_GRAPHS[case]
    change(description)
    members["__model__.npy"] = _description_member(description)
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=r"^nn\.load: .*model\.npz describes a model that "
                                         r"cannot be built \(.*" + message):
        nn.load(path)


@pytest.mark.parametrize("where", ["pickled", "wrong-shape", "missing"])
def test_load_checks_a_nested_models_arrays(tmp_path, where):
    marker = tmp_path / "ran"
    _, _, members = _graph_saved(tmp_path)
    name = "layer1.layer1.weight.npy"
    if where == "pickled":
        f = io.BytesIO()
        np.save(f, _pickled_array(marker), allow_pickle=True)
        members[name] = f.getvalue()
        message = r"not a readable \.npz model file .*allow_pickle=False"
    elif where == "wrong-shape":
        members[name] = _npy((4, 4))
        message = (r"cannot be built \(ValueError: layer 1 \(Sequential\): layer 1 \(Conv2d\): "
                   r"layer1\.layer1\.weight\.npy has shape \(4, 4\); the weight of a Conv2d is "
                   r"4-D\)")
    else:
        del members[name]
        message = (r"layer 1 \(Sequential\): layer 1 \(Conv2d\) names array 'weight', but the "
                   r"file has no member layer1\.layer1\.weight\.npy")
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=message):
        nn.load(path)
    assert not marker.exists()


def _nested(depth):
    """A Sequential of one ReLU inside `depth` more Sequentials."""
    model = nn.Sequential(nn.ReLU())
    for _ in range(depth):
        model = nn.Sequential(model)
    return model


def test_models_nest_at_most_16_deep(tmp_path):
    deepest = _nested(serialize.MAX_MODEL_DEPTH)
    deepest.save(tmp_path / "deep.npz")
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    assert np.array_equal(nn.load(tmp_path / "deep.npz")(x), np.maximum(x, 0))
    with pytest.raises(ValueError, match=r"save: models nested deeper than 16"):
        _nested(serialize.MAX_MODEL_DEPTH + 1).save(tmp_path / "deeper.npz")
    record = {"type": "Sequential", "layout": "NHWC",
              "layers": [{"type": "ReLU", "params": {}, "arrays": []}]}
    for _ in range(200):
        record = {"type": "Sequential", "layout": "NHWC", "layers": [record]}
    path = _write(tmp_path / "crafted.npz", {"__model__.npy": _description_member(
        {"format": "fastconv.nn", "version": 2, **record})})
    with pytest.raises(ValueError, match=r"cannot be built \(ValueError: models nested deeper "
                                         r"than 16: (layer 0 \(Sequential\): )+") as info:
        nn.load(path)
    assert len(str(info.value)) < 1000


def test_load_reads_a_long_graph_without_recursion(tmp_path):
    """20,000 nodes (a 1 MB description): built and run without recursing
    per node, and 20,000 inputs: in time linear in their number."""
    n = 20_000
    description = {"format": "fastconv.nn", "version": 2, "type": "Model", "layout": "NHWC",
                   "inputs": [{"name": "x", "shape": [3], "dtype": None}],
                   "layers": [{"type": "ReLU", "params": {}, "arrays": []},
                              {"type": "Identity", "params": {}, "arrays": []}],
                   "nodes": [{"layer": k % 2, "inputs": [k]} for k in range(n)],
                   "outputs": [n]}
    path = _write(tmp_path / "long.npz", {"__model__.npy": _description_member(description)})
    model = nn.load(path)
    assert len(model.nodes) == n and [layer.name for layer in model.layers] == ["relu",
                                                                                 "identity"]
    assert np.array_equal(model(np.array([[-1.0, 0.5, 2.0]])), [[0.0, 0.5, 2.0]])
    # 20,000 unnamed inputs into one Add: named and checked in linear time
    description.update(inputs=[{"shape": [3]}] * n, layers=[{"type": "Add", "params": {},
                                                             "arrays": []}],
                       nodes=[{"layer": 0, "inputs": list(range(n))}], outputs=[n])
    path = _write(tmp_path / "wide.npz", {"__model__.npy": _description_member(description)})
    model = nn.load(path)
    assert model.input_names[-1] == f"input_{n - 1}" and model.output_shape([(3,)] * n) == (3,)


def test_load_messages_stay_short_on_long_names(tmp_path):
    _, description, members = _graph_saved(tmp_path)
    description["layers"][0]["name"] = description["layers"][2]["name"] = "N" * 2**19
    members["__model__.npy"] = _description_member(description)
    path = _write(tmp_path / "model.npz", members)
    with pytest.raises(ValueError, match=r"are both named 'NNNN*\.\.\. \(\d+ characters\)\)$") \
            as info:
        nn.load(path)
    assert len(str(info.value)) < 1000
