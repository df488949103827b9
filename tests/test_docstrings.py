"""The examples in fastconv's docstrings (``>>>``) run and print what they
say, each module's with doctest: an example can never rot."""
import doctest
import importlib
import os
import pkgutil
import sys

import pytest

import fastconv

MODULES = sorted({"fastconv"} | {
    m.name for m in pkgutil.walk_packages(fastconv.__path__, "fastconv.")
    if not m.name.startswith("fastconv.__main__")})
# a module whose examples need an optional package
OPTIONAL = {"fastconv.torch": "torch", "fastconv.nn.torch_import": "torch",
            "fastconv.nn.keras_import": "keras", "fastconv.nn.onnx_import": "onnx",
            "fastconv.nn.tiled": "dask", "fastconv._torch_networks": "torch"}


def _examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError:
        return []
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, name) if t.examples and t.name.startswith(name)]


CASES = [(name, t.name) for name in MODULES for t in _examples(name)]


def test_there_are_examples():
    assert len(CASES) >= 10


@pytest.mark.parametrize("module, test", CASES, ids=[t for _, t in CASES])
def test_docstring_example(module, test):
    if module in OPTIONAL:
        if OPTIONAL[module] == "keras" and "keras" not in sys.modules:
            os.environ.setdefault("KERAS_BACKEND", "torch")  # (as the from_keras tests run it)
        pytest.importorskip(OPTIONAL[module])
    [case] = [t for t in _examples(module) if t.name == test]
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(case)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{test}: {result.failed} of {result.attempted} examples failed"
