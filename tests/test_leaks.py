"""Memory: the process's resident set stays flat over tens of thousands of
calls, those that succeed and those that raise (Linux only: it reads
/proc/self/statm).

Each case runs its call WARMUP times (caches, thread pools and the
allocators' free lists reach their steady state), then CALLS times more,
and the resident set may grow by at most SLACK bytes between the two.
A leak of 100 bytes per call would grow it by CALLS * 100 = 2,000,000
bytes; SLACK is about half of that: 256 pages of 4 KiB, room for the
allocators to map a few more pages of their own (pymalloc takes memory in
16 KiB pools, glibc trims its heap only past 128 KiB free) while the steady
state measured here is 0 bytes. test_a_leak_of_100_bytes_per_call_is_caught
shows that such a leak does fail the same check.

The measurements run in a fresh interpreter (this file run as a script):
in the test process, memory that earlier tests freed in small pieces stays
resident, and a leak could take it without the resident set growing.
"""

import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastconv
from checks import random_array

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="reads the resident set from /proc (Linux)")

WARMUP = 2000
CALLS = 20000
SLACK = 1 << 20


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


MALLOC_TRIM = _malloc_trim()


def resident_bytes():
    """The resident set after a garbage collection, and with every free page
    of the C heap given back to the system (glibc's malloc_trim), so that a
    leak cannot hide in memory freed earlier (by other tests) and still
    resident: whatever the calls keep must be paged in again."""
    gc.collect()
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def growth(call, expected_error=None, calls=CALLS, warmup=WARMUP):
    """Bytes the resident set grows over `calls` calls, after `warmup` calls."""
    def run(times):
        for _ in range(times):
            if expected_error is None:
                call()
            else:
                try:
                    call()
                except expected_error:
                    pass
                else:
                    raise AssertionError("the call did not raise")

    run(warmup)
    before = resident_bytes()
    run(calls)
    return resident_bytes() - before


def _cases():
    rng = np.random.default_rng(5)
    x = random_array(rng, (1, 6, 6, 8), np.float32)
    w = random_array(rng, (3, 3, 8, 8), np.float32)
    b = random_array(rng, (8,), np.float32)
    x_wide = random_array(rng, (1, 4, 5, 40), np.float64)
    w_wide = random_array(rng, (3, 3, 40, 8), np.float64)
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    w_oihw = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    out_nchw = np.empty((1, 8, 6, 6), np.float32)
    dw = random_array(rng, (3, 3, 1, 8), np.float32)
    w_full = random_array(rng, (6, 6, 8, 4), np.float32)  # one output pixel
    w_inf = w.copy()
    w_inf[0, 0, 0, 0] = np.inf
    a = random_array(rng, (20, 8), np.float32)
    layer = fastconv.Conv2d(w, b, padding="same", activation="relu")
    linear = fastconv.Linear(w[0, 0], b)
    read_only = np.zeros((1, 6, 6, 8), np.float32)
    read_only.setflags(write=False)
    tiny = np.ones((1, 2, 2, 1), np.float32)
    k3 = np.ones((3, 3, 1, 1), np.float32)
    return {
        # calls that succeed, one per kernel path
        "conv2d-few-channels": (lambda: fastconv.conv2d(x, w, b, padding=1), None),
        "conv2d-f64-taps": (lambda: fastconv.conv2d(x_wide, w_wide, stride=2, padding=1),
                            None),
        "conv2d-nchw-out": (lambda: fastconv.conv2d(x_nchw, w_oihw, b, padding=1,
                                                    layout="NCHW", out=out_nchw), None),
        "conv2d-depthwise": (lambda: fastconv.conv2d(x, dw, b, padding=1, groups=8), None),
        "conv2d-one-pixel": (lambda: fastconv.conv2d(x, w_full), None),
        "conv2d-inf-weight": (lambda: fastconv.conv2d(x, w_inf, padding=1), None),
        "matmul": (lambda: fastconv.matmul(a, w[0, 0], b, activation="relu"), None),
        "matmul-few-rows": (lambda: fastconv.matmul(a[:3], w[0, 0]), None),
        "Conv2d-layer": (lambda: layer(x), None),
        "Linear-layer": (lambda: linear(a), None),
        # calls that raise
        "bad-shape": (lambda: fastconv.conv2d(x, w[:, :, :5]), ValueError),
        "bad-dtype": (lambda: fastconv.matmul(a.astype(np.int32), w[0, 0]), TypeError),
        "read-only-out": (lambda: fastconv.conv2d(x, w, b, padding=1, out=read_only),
                          ValueError),
        "layer-bad-input": (lambda: layer(x_wide), TypeError),
        "huge-padding": (lambda: fastconv.conv2d(tiny, k3, padding=2**40), ValueError),
        # the C workspace cannot be allocated (a 4 TiB zero-padded copy)
        "out-of-memory": (lambda: fastconv.conv2d(tiny, k3, stride=2**19, padding=2**19),
                          MemoryError),
    }


def _two_threads():
    """Calls with enough work to run an OpenMP team of two (each thread
    takes its own workspace)."""
    rng = np.random.default_rng(6)
    a = random_array(rng, (256, 32), np.float32)
    b = random_array(rng, (32, 32), np.float32)
    x = random_array(rng, (1, 16, 16, 32), np.float32)
    w = random_array(rng, (1, 1, 32, 32), np.float32)

    def call():
        fastconv.matmul(a, b, num_threads=2)
        fastconv.conv2d(x, w, num_threads=2)
    return call


def _leak_100_bytes():
    """A C malloc of 100 bytes that is never freed."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    return lambda: libc.malloc(100)


CASE_NAMES = list(_cases()) if os.path.exists("/proc/self/statm") else []


def measure():
    """{case: bytes grown} for every case, in this process. Waking an OpenMP
    team costs tens of microseconds (milliseconds on a loaded 2-core
    machine), so the two-thread case makes 2000 calls (two per round): a leak
    of 1 KiB per call would still show. The deliberate leak runs last, after
    every fastconv case."""
    grown = {name: growth(call, error) for name, (call, error) in _cases().items()}
    grown["two-threads"] = growth(_two_threads(), calls=1000, warmup=100)
    grown["leak-100-bytes"] = growth(_leak_100_bytes())
    return grown


@pytest.fixture(scope="module")
def grown():
    """Run measure() in a new interpreter (outside the source tree, so that
    the installed fastconv is imported)."""
    completed = subprocess.run([sys.executable, os.path.abspath(__file__)],
                               capture_output=True, text=True, timeout=900,
                               cwd=tempfile.gettempdir())
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", CASE_NAMES)
def test_resident_memory_is_flat(grown, name):
    assert grown[name] <= SLACK, f"resident set grew {grown[name]} bytes over {CALLS} calls"


@pytest.mark.slow
def test_resident_memory_is_flat_for_calls_on_two_threads(grown):
    assert grown["two-threads"] <= SLACK, \
        f"resident set grew {grown['two-threads']} bytes over 2000 calls"


def test_a_leak_of_100_bytes_per_call_is_caught(grown):
    """The check above fails for a leak of 100 bytes per call."""
    assert grown["leak-100-bytes"] > SLACK


if __name__ == "__main__":
    print(json.dumps(measure()))
