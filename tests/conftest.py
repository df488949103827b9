"""Shared fixtures. The numerical tolerance lives in checks.py (see there)."""

import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fastconv  # noqa: E402
from fastconv import _config  # noqa: E402

AVAILABLE_ISAS = list(_config.available_isas())


# --------------------------------------------------------------------------
# Instruction-set fixture
# --------------------------------------------------------------------------
@pytest.fixture(params=AVAILABLE_ISAS, ids=lambda name: f"isa={name}")
def isa(request):
    """Run the test once per instruction set this CPU supports.

    ``_config.set_isa`` switches every kernel family for the whole process and
    returns the previous ISA name, which is restored afterwards.
    """
    previous = _config.set_isa(request.param)
    try:
        dispatch = fastconv.config()["dispatch"]
        for family in ("gemm", "conv", "depthwise"):
            assert dispatch[family] == request.param, (family, dispatch)
        yield request.param
    finally:
        _config.set_isa(previous)


@pytest.fixture(autouse=True)
def _restore_process_state():
    """No test may leak a changed ISA or thread count into the next one."""
    dispatch = dict(fastconv.config()["dispatch"])
    threads = fastconv.get_num_threads()
    yield
    assert fastconv.get_num_threads() == threads, "test leaked set_num_threads"
    assert fastconv.config()["dispatch"] == dispatch, "test leaked set_isa"


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test id: deterministic, per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


