"""Shared fixtures, hypothesis profiles and the report of the examples tried.
The numerical tolerance lives in checks.py (see there)."""

import os
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

import fastconv  # noqa: E402
from fastconv import _config  # noqa: E402

AVAILABLE_ISAS = list(_config.available_isas())


# --------------------------------------------------------------------------
# Hypothesis profiles. Every property test takes its number of examples from
# the loaded profile (tests/strategies.py: examples(scale) for a test that
# tries a multiple of it):
#   ci    the default: sized for CI time, and derandomized, so that every run
#         tries the same examples (a failure is reproducible from the log).
#   long  pytest --hypothesis-profile=long: 25 times as many examples, drawn
#         anew at every run (a failure prints the @reproduce_failure blob).
# Neither keeps an example database (no .hypothesis/ directory is written).
# The isa fixture is function-scoped on purpose: every example of a test runs
# on the instruction set the fixture selected.
# --------------------------------------------------------------------------
_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=2500, derandomize=False, **_COMMON)
# hypothesis' pytest plugin loads --hypothesis-profile's after this file is
# imported, so "ci" is only the default.
settings.load_profile("ci")


# The examples each property test tried, from hypothesis' statistics (the
# per-test detail is --hypothesis-show-statistics), printed as one line per
# test at the end of the run.
_hypothesis_counts = {}


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item):
    """Record the statistics of a hypothesis test, passing them on to the
    collector hypothesis' own plugin installed (trylast: this wrapper runs
    inside that plugin's)."""
    try:
        from hypothesis.statistics import collector
    except ImportError:  # pragma: no cover - hypothesis moved it
        yield
        return
    previous = collector.value

    def note(stats):
        cases = [case for phase in ("explicit", "reuse", "generate", "shrink")
                 for case in stats.get(f"{phase}-phase", {}).get("test-cases", [])]
        statuses = [case.get("status") for case in cases]
        _hypothesis_counts[item.nodeid] = (
            len(cases), statuses.count("valid"), statuses.count("interesting"),
            len(cases) - statuses.count("valid") - statuses.count("interesting"),
            stats.get("stopped-because", ""))
        if previous is not None:
            previous(stats)

    with collector.with_value(note):
        yield


def pytest_terminal_summary(terminalreporter):
    if not _hypothesis_counts:
        return
    terminalreporter.section(
        f"hypothesis examples tried (profile {settings.get_current_profile_name()!r})")
    for nodeid, (tried, passed, failed, invalid, why) in _hypothesis_counts.items():
        terminalreporter.write_line(
            f"{nodeid}: {tried} examples ({passed} passed, {failed} failed, "
            f"{invalid} invalid){'; ' + why if why else ''}")
    total = sum(counts[0] for counts in _hypothesis_counts.values())
    terminalreporter.write_line(f"total: {total} examples in {len(_hypothesis_counts)} tests")


# --------------------------------------------------------------------------
# Instruction-set fixture
# --------------------------------------------------------------------------
@pytest.fixture(params=AVAILABLE_ISAS, ids=lambda name: f"isa={name}")
def isa(request):
    """Run the test once per instruction set this CPU supports.

    ``_config.set_isa`` makes the operators made from then on run that ISA's
    kernels and returns the previous ISA name, which is restored afterwards.
    """
    previous = _config.set_isa(request.param)
    try:
        yield request.param
    finally:
        _config.set_isa(previous)


@pytest.fixture(autouse=True)
def _restore_process_state():
    """No test may leak a changed ISA or thread count into the next one; the
    denormal flushing a test sets is put back after it."""
    isa = fastconv.config()["isa"]
    threads = fastconv.get_num_threads()
    flush = fastconv.get_flush_denormals()
    yield
    fastconv.set_flush_denormals(flush)
    assert fastconv.get_num_threads() == threads, "test leaked set_num_threads"
    assert fastconv.config()["isa"] == isa, "test leaked set_isa"


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test id: deterministic, per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


