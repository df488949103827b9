"""config(), show_config(), `python -m fastconv info`, ISA forcing, threads."""

import importlib.metadata
import json
import math
import os
import subprocess
import tempfile
import sys
import threading
import time

import numpy as np
import pytest

import fastconv
from checks import make_conv_inputs, random_array
from fastconv import _config



def run_python(*args, env_update=None):
    """Run the interpreter on `args` outside the source tree: `python -c` and
    `-m` put the working directory first on sys.path, and the checkout's
    fastconv/ (without the compiled extension) must not shadow the
    installed package."""
    env = dict(os.environ)
    env.pop("FASTCONV_ISA", None)
    env.update(env_update or {})
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tempfile.gettempdir())


# --------------------------------------------------------------------------
# config() / show_config() / python -m fastconv info
# --------------------------------------------------------------------------
def test_config_keys_and_types():
    config = fastconv.config()
    assert isinstance(config, dict)
    assert isinstance(config["version"], str) and config["version"]
    assert isinstance(config["compiler"], str) and config["compiler"]
    assert isinstance(config["openmp"], bool)

    features = config["cpu_features"]
    assert isinstance(features, dict) and features
    assert all(isinstance(name, str) and isinstance(flag, bool)
               for name, flag in features.items())

    isas = config["isa_available"]
    assert isinstance(isas, list) and isas
    assert all(isinstance(name, str) for name in isas)
    assert isas[-1] == "generic"
    assert len(set(isas)) == len(isas)
    assert isas == list(_config.available_isas())

    assert config["isa"] in isas
    for dtype, itemsize in (("float32", 4), ("float64", 8)):
        tile = config["isa_config"][dtype]
        assert all(isinstance(v, int) and v > 0 for v in tile.values()), tile
        # the register tile is whole vectors of the ISA's width
        assert tile["nr"] % tile["vlen"] == 0
        assert tile["vlen"] * itemsize == {"avx512": 64, "avx2": 32, "generic": 16}[config["isa"]]


def test_config_version_matches_installed_metadata():
    assert fastconv.config()["version"] == importlib.metadata.version("fastconv")


def test_config_returns_a_fresh_dict():
    """Mutating the returned dict does not change the library's state."""
    config = fastconv.config()
    config["isa_config"]["float32"]["mr"] = -1
    config["isa_available"].append("bogus")
    assert fastconv.config()["isa_config"]["float32"]["mr"] > 0
    assert "bogus" not in fastconv.config()["isa_available"]


def test_show_config_prints_the_config(capsys):
    config = fastconv.config()
    fastconv.show_config()
    printed = capsys.readouterr().out
    assert config["version"] in printed
    assert f"isa: {config['isa']}" in printed
    for key, value in config["isa_config"]["float32"].items():
        assert f"{key}: {value}" in printed
    assert "openmp" in printed.lower()


def test_module_info_command_prints_the_same(capsys):
    fastconv.show_config()
    shown = capsys.readouterr().out
    completed = run_python("-m", "fastconv", "info")
    assert completed.returncode == 0, completed.stderr
    assert fastconv.config()["version"] in completed.stdout
    assert completed.stdout.strip() == shown.strip()


@pytest.mark.parametrize("forced", list(_config.available_isas()))
def test_fastconv_isa_environment_variable_forces_dispatch(forced):
    """The variable picks the ISA that config() reports and that every
    kernel family's operators run."""
    code = ("import fastconv, json, numpy as np\n"
            "w = np.ones((3, 3, 4, 4), np.float32)\n"
            "layers = [fastconv.Conv2d(w), fastconv.Conv2d(w[:1, :1]),\n"
            "          fastconv.Conv2d(np.ones((3, 3, 1, 4), np.float32), groups=4)]\n"
            "print(json.dumps([fastconv.config()['isa']] + [l.isa for l in layers]))")
    completed = run_python("-c", code, env_update={"FASTCONV_ISA": forced})
    assert completed.returncode == 0, completed.stderr
    isas = json.loads(completed.stdout.strip().splitlines()[-1])
    assert isas == [forced] * 4


# --------------------------------------------------------------------------
# set_isa (the private test hook)
# --------------------------------------------------------------------------
def test_set_isa_returns_previous_and_switches_every_family():
    """Operators made after set_isa run its kernels; those made before keep
    theirs."""
    isas = list(_config.available_isas())
    w = np.ones((3, 3, 4, 4), np.float32)
    original = _config.set_isa("generic")
    try:
        assert original in isas
        before = fastconv.Conv2d(w)
        for name in isas:
            previous = _config.set_isa(name)
            assert fastconv.config()["isa"] == name
            assert fastconv.Conv2d(w).isa == name
            assert fastconv.Conv2d(np.ones((3, 3, 1, 4), np.float32), groups=4).isa == name
            assert fastconv.Linear(np.ones((4, 4), np.float32))._weights._op.isa == name
            assert before.isa == "generic"
            assert _config.set_isa(previous) == name
            _config.set_isa(name)
    finally:
        _config.set_isa(original)


# --------------------------------------------------------------------------
# set_num_threads / get_num_threads
# --------------------------------------------------------------------------
def test_get_num_threads_is_a_positive_int():
    n = fastconv.get_num_threads()
    assert isinstance(n, int) and n >= 1


def test_set_num_threads_round_trip():
    original = fastconv.get_num_threads()
    try:
        for n in (1, 3, 2):
            fastconv.set_num_threads(n)
            assert fastconv.get_num_threads() == n
    finally:
        fastconv.set_num_threads(original)
    assert fastconv.get_num_threads() == original


@pytest.mark.parametrize("value, exc", [(0, ValueError), (-1, ValueError),
                                        (1.5, TypeError), ("2", TypeError),
                                        (2.0, TypeError)], ids=str)
def test_set_num_threads_rejects_bad_values(value, exc):
    original = fastconv.get_num_threads()
    with pytest.raises(exc, match=r"\bn\b|num_threads|threads"):
        fastconv.set_num_threads(value)
    assert fastconv.get_num_threads() == original


def test_set_num_threads_does_not_change_results(rng):
    x, weight, bias = make_conv_inputs(rng, n=2, h=15, w=14, c=16, k=24, kh=3, kw=3)
    expected = fastconv.conv2d(x, weight, bias, padding=1, num_threads=1)
    original = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(2)
        result = fastconv.conv2d(x, weight, bias, padding=1)
    finally:
        fastconv.set_num_threads(original)
    assert np.array_equal(result, expected)


# --------------------------------------------------------------------------
# Python threads: concurrent calls and GIL release
# --------------------------------------------------------------------------
def test_concurrent_python_threads_match_single_threaded(rng):
    cases = []
    for i in range(4):
        groups = 8 if i % 2 else 1
        x, weight, bias = make_conv_inputs(rng, n=2, h=18, w=17, c=8, k=16, kh=3,
                                           kw=3, groups=groups)
        cases.append((x, weight, bias, groups))
    expected = [fastconv.conv2d(x, weight, bias, padding=1, groups=groups,
                                num_threads=1)
                for x, weight, bias, groups in cases]
    results = [[] for _ in cases]
    errors = []
    barrier = threading.Barrier(len(cases))

    def worker(i):
        x, weight, bias, groups = cases[i]
        try:
            barrier.wait()
            for _ in range(10):
                results[i].append(fastconv.conv2d(x, weight, bias, padding=1,
                                                  groups=groups))
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for got_list, want in zip(results, expected):
        assert len(got_list) == 10
        for got in got_list:
            assert np.array_equal(got, want)


def _long_conv2d(rng, scale):
    # 2 * 16 * 16 * 256 * 256 * 9 = 0.3 GFLOP per image, 256 KiB of input.
    x, weight, bias = make_conv_inputs(rng, n=scale, h=16, w=16, c=256, k=256,
                                       kh=3, kw=3)
    return lambda: fastconv.conv2d(x, weight, bias, padding=1, num_threads=1)


def _long_matmul(rng, scale):
    # 2 * (64 * scale) * 1024 * 1024 = 0.13 GFLOP per unit of scale.
    a = random_array(rng, (64 * scale, 1024), np.float32)
    b = random_array(rng, (1024, 1024), np.float32)
    return lambda: fastconv.matmul(a, b, num_threads=1)


@pytest.mark.parametrize("make_call", [_long_conv2d, _long_matmul],
                         ids=["conv2d", "matmul"])
def test_gil_is_released_while_the_kernel_runs(rng, make_call):
    """A Python thread keeps running while another thread is inside the kernel.

    If the GIL were held for the whole call, the main thread's loop would
    stall for (about) the call's full duration.
    """
    call = make_call(rng, 2)
    call()  # warm-up
    start = time.perf_counter()
    call()
    per_unit = (time.perf_counter() - start) / 2
    call = make_call(rng, min(256, max(2, math.ceil(0.4 / per_unit))))

    timing = {}

    def worker():
        t0 = time.perf_counter()
        call()
        timing["duration"] = time.perf_counter() - t0

    thread = threading.Thread(target=worker)
    last = time.perf_counter()
    max_gap = 0.0
    thread.start()
    while thread.is_alive():
        now = time.perf_counter()
        max_gap = max(max_gap, now - last)
        last = now
    thread.join()
    duration = timing["duration"]
    assert duration > 0.1, "calibration failed to make a long enough call"
    assert max_gap < 0.5 * duration, (
        f"main thread stalled {max_gap:.3f} s during a {duration:.3f} s call: "
        "the GIL seems to be held while the kernel runs")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="an ELF check")
@pytest.mark.skipif("-g" in os.environ.get("FASTCONV_EXTRA_CFLAGS", "").split(),
                    reason="a build asked for debug information")
def test_the_compiled_module_ships_without_debug_information():
    # (setup.py compiles with -g0: Python's CFLAGS' -g tripled the module's size)
    from fastconv import _core
    with open(_core.__file__, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF"
    if b"libasan.so" in data:
        # scripts/sanitize.sh's build: it asks for -g so that ASan's reports
        # name source lines (the environment it set is gone by test time)
        pytest.skip("a sanitizer build, compiled with -g on purpose")
    assert b".debug_info" not in data
