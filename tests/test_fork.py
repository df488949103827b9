"""A process forked from one that ran fastconv works.

GNU OpenMP keeps the worker threads of a multi-threaded region and does not
survive fork(): a child's next region would wait for workers it does not
have, forever. fastconv notices the fork (pthread_atfork) and runs such a
child single-threaded. Each case runs in a fresh interpreter with a
timeout, so that a hang fails the test instead of the suite.
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")

SETUP = """
import os, sys, threading, time
import numpy as np
import fastconv
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 40, 40, 32), dtype=np.float32)
w = rng.standard_normal((3, 3, 32, 64), dtype=np.float32)
expected = fastconv.conv2d(x, w, padding=1, num_threads=2)  # starts OpenMP's workers

def child_status():
    y = fastconv.conv2d(x, w, padding=1, num_threads=2)
    # (without OpenMP, or on one processor, the parent had no workers to lose)
    threads_lost = fastconv.config()["openmp"] and len(os.sched_getaffinity(0)) > 1
    ok = (np.array_equal(y, expected)
          and fastconv.config()["single_threaded_after_fork"] == threads_lost)
    return 0 if ok else 3
"""


def run(script, timeout=120):
    """Run SETUP + script in a new interpreter; its output, or a failure if
    it hangs or fails."""
    try:
        done = subprocess.run([sys.executable, "-c", SETUP + textwrap.dedent(script)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_forked_child_runs_conv2d():
    out = run("""
        assert not fastconv.config()["single_threaded_after_fork"]
        pid = os.fork()
        if pid == 0:
            os._exit(child_status())
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        # the parent keeps its threads
        assert not fastconv.config()["single_threaded_after_fork"]
        assert np.array_equal(fastconv.conv2d(x, w, padding=1, num_threads=2), expected)
    """)
    assert out.split() == ["0"]


def test_fork_pool_runs_conv2d():
    """multiprocessing's "fork" start method (Linux's default before Python
    3.14), several tasks per worker."""
    out = run("""
        import multiprocessing
        def task(i):
            return child_status()
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print(pool.map(task, range(6)))
    """)
    assert out.strip() == "[0, 0, 0, 0, 0, 0]"


def test_fork_while_another_thread_is_inside_a_kernel():
    out = run("""
        big = rng.standard_normal((1, 200, 200, 64), dtype=np.float32)
        wb = rng.standard_normal((3, 3, 64, 64), dtype=np.float32)
        busy = threading.Event()
        def work():
            busy.set()
            for _ in range(4):
                fastconv.conv2d(big, wb, padding=1, num_threads=2)
        thread = threading.Thread(target=work)
        thread.start()
        busy.wait()
        time.sleep(0.05)
        pid = os.fork()
        if pid == 0:
            os._exit(child_status())
        _, status = os.waitpid(pid, 0)
        thread.join()
        print(os.waitstatus_to_exitcode(status))
    """)
    assert out.split() == ["0"]


def test_fork_while_another_thread_holds_the_weight_cache():
    """A child forked while a thread of the parent held the lock of the
    weights conv2d keeps (fastconv._prepared) gets a lock of its own, and
    its calls that keep weights do not wait for the parent's thread."""
    out = run("""
        from fastconv import _prepared
        fastconv.conv2d(x, w, padding=1, num_threads=2)  # kept: the second call
        held, release = threading.Event(), threading.Event()
        def hold():
            with _prepared._lock:
                held.set()
                release.wait()
        thread = threading.Thread(target=hold)
        thread.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            w2 = w * 2
            ys = [fastconv.conv2d(x, w2, padding=1, num_threads=1) for _ in range(3)]
            ok = child_status() == 0 and all(np.array_equal(y, ys[0]) for y in ys)
            ok = ok and _prepared.get_weight_cache()["weights"] >= 2
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        release.set()
        thread.join()
        print(os.waitstatus_to_exitcode(status))
    """, timeout=30)
    assert out.split() == ["0"]


def test_child_of_a_process_that_never_ran_threads_keeps_them():
    """Only a fork that left OpenMP workers behind costs the child its
    threads: a child forked before any multi-threaded call uses them."""
    script = """
import os
import numpy as np
import fastconv
x = np.ones((1, 40, 40, 32), np.float32)
w = np.ones((3, 3, 32, 64), np.float32)
pid = os.fork()
if pid == 0:
    ok = not fastconv.config()["single_threaded_after_fork"]
    y = fastconv.conv2d(x, w, padding=1, num_threads=2)
    ok = ok and not fastconv.config()["single_threaded_after_fork"] and y[0, 1, 1, 0] == 288
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]
