"""Every ```python block of README.md runs as written, each on its own in a
fresh namespace and an empty working directory: an example can never rot.
A block that imports an optional package (torch, dask) is skipped without it."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = [(TEXT.count("\n", 0, m.start()) + 1, m.group(1))
          for m in re.finditer(r"```python\n(.*?)```", TEXT, re.S)]
# the optional packages a block may need, by what it mentions
OPTIONAL = {"import torch": "torch", "predict_tiled": "dask"}


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_runs(line, code, tmp_path, monkeypatch):
    for marker, package in OPTIONAL.items():
        if marker in code:
            pytest.importorskip(package)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
