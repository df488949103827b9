"""Untrusted files: fastconv.nn.load reads a .npz of plain arrays and a JSON
description with numpy's allow_pickle=False, so a pickled object inside the
file is refused with a clear error and none of its code runs (SECURITY.md).
"""

import numpy as np
import pytest

from fastconv import nn


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
