"""Saving and loading models: a plain .npz, one array per weight plus a JSON
description of the layers, never a pickle."""
from __future__ import annotations

import json
import zipfile
from typing import Any

import numpy as np

import fastconv
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Linear,
                                MaxPool2d, ReLU, Softmax)
from fastconv.nn.model import Sequential

__all__ = ["save", "load"]

FORMAT = "fastconv.nn"
FORMAT_VERSION = 1
_LAYER_TYPES = {cls.__name__: cls for cls in (Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d,
                                              GlobalAvgPool2d, Flatten, Softmax, Dropout)}


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the constructors were given."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


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


def load(path: Any) -> Sequential:
    """Read a model written by Sequential.save.

    Never executes code from the file (numpy.load with allow_pickle=False).

    Raises
    ------
    ValueError
        The file is not a fastconv.nn model, is corrupt, or was written in
        another format version.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"nn.load: {path!s} is not a readable .npz model file ({exc})") from None
    try:
        description = json.loads(arrays.pop("__model__").tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"nn.load: {path!s} has no valid fastconv.nn model description "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"nn.load: {path!s} is not a fastconv.nn model file")
    if description.get("version") != FORMAT_VERSION:
        raise ValueError(f"nn.load: {path!s} is format version {description.get('version')!r} "
                         f"(written by fastconv {description.get('fastconv')!r}); this fastconv "
                         f"{fastconv.__version__} reads version {FORMAT_VERSION}")
    layers = []
    try:
        for i, record in enumerate(description["layers"]):
            cls = _LAYER_TYPES.get(record["type"])
            if cls is None:
                raise ValueError(f"layer {i} has unknown type {record['type']!r}")
            params = {k: _tuples(v) for k, v in record["params"].items()}
            named = {name: arrays[f"layer{i}.{name}"] for name in record["arrays"]}
            if cls in (Conv2d, Linear):
                layers.append(cls(named["weight"], named.get("bias"), **params))
            else:
                layers.append(cls(**params))
        return Sequential(*layers, layout=description["layout"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"nn.load: {path!s} describes a model that cannot be built "
                         f"({type(exc).__name__}: {exc})") from None
