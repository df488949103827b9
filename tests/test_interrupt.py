"""Ctrl-C stops a long call within about FC_POLL_SECONDS (0.05 s): the
calling (main) thread runs Python's signal handlers between blocks of work,
and the call raises their KeyboardInterrupt. Each case runs in a fresh
interpreter that sends itself SIGINT 0.2 s into a call several times longer
(the signal would otherwise land in pytest), with a timeout."""
import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix",
                                reason="needs POSIX signals")

SCRIPT = """
import json, os, signal, threading, time
import numpy as np
import fastconv
from fastconv._conv import conv2d_algorithm
rng = np.random.default_rng(0)
def normal(*shape):
    return rng.standard_normal(shape, dtype=np.float32)
if NAME == "igemm":
    x, w = normal(1, 64, 64, 512), normal(7, 7, 512, 512)
    call = lambda: conv2d_algorithm(x, w, algorithm="igemm")
elif NAME == "winograd":
    x, w = normal(1, 256, 256, 512), normal(3, 3, 512, 512)
    call = lambda: conv2d_algorithm(x, w, padding=1, algorithm="winograd-f2x2-3x3")
else:
    x, pool = normal(1, 160, 160, 64), fastconv.nn.AvgPool2d(101, 1, 50)
    call = lambda: pool(x)
start = time.perf_counter(); call(); full = time.perf_counter() - start
result = {"full": full}
timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
start = time.perf_counter()
timer.start()
try:
    call()
    result["raised"] = None
except KeyboardInterrupt:
    result["raised"] = "KeyboardInterrupt"
result["after"] = time.perf_counter() - start
try:
    timer.join()  # (a call that ended before the signal: it lands here)
except KeyboardInterrupt:
    pass
print(json.dumps(result))
"""


@pytest.mark.parametrize("name", ["igemm", "winograd", "avgpool"])
def test_ctrl_c_interrupts_a_long_call(name):
    done = subprocess.run([sys.executable, "-c", f"NAME = {name!r}\n" + SCRIPT],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    if result["full"] < 0.6:
        pytest.skip(f"the call takes {result['full']:.2f} s here: too short to interrupt")
    assert result["raised"] == "KeyboardInterrupt"
    # stopped well before the end (the call runs for full seconds otherwise)
    assert result["after"] < 0.2 + 0.5 * (result["full"] - 0.2), result
