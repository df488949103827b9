"""Many Python threads calling fastconv at once.

Each call's result must equal, bit for bit, its single-threaded result
computed beforehand (the kernels' reduction order does not depend on the
thread count, and calls share no mutable state). A barrier starts the
threads together so that their calls really overlap; every shape here is
above the size below which a call runs on one thread, so calls with
num_threads > 1 start OpenMP teams of their own inside each Python thread.
"""

import os
import threading
import time

import numpy as np
import pytest

import fastconv
from checks import make_conv_inputs, random_array

N_THREADS = 8
# Each job repeats its call for about this long (single-threaded time), so
# that jobs of different sizes overlap from start to end.
JOB_SECONDS = 0.05


def _jobs(rng):
    """(name, call(num_threads) -> result, num_threads) for each Python thread:
    every kernel family, both layouts, the layers, with different shapes
    and thread counts (None: the package default)."""
    x1, w1, b1 = make_conv_inputs(rng, n=2, h=17, w=15, c=32, k=40, kh=3, kw=3)
    x2, w2, b2 = make_conv_inputs(rng, n=1, h=30, w=29, c=3, k=16, kh=5, kw=5, dtype=np.float64)
    x3, w3, b3 = make_conv_inputs(rng, n=2, h=20, w=21, c=24, k=24, kh=3, kw=3, groups=24)
    x4, w4, b4 = make_conv_inputs(rng, n=1, h=19, w=18, c=64, k=48, kh=1, kw=1)
    x5 = np.ascontiguousarray(x1.transpose(0, 3, 1, 2))
    w5 = np.ascontiguousarray(w1.transpose(3, 2, 0, 1))
    a6, b6 = random_array(rng, (300, 130), np.float32), random_array(rng, (130, 70), np.float32)
    a7 = random_array(rng, (5, 3000), np.float64)
    b7 = random_array(rng, (3000, 40), np.float64)
    layer = fastconv.Conv2d(w1, b1, padding="same", activation="relu")
    linear = fastconv.Linear(random_array(rng, (130, 90), np.float32),
                             random_array(rng, (90,), np.float32), activation="relu")
    return [
        ("conv3x3", lambda t: fastconv.conv2d(x1, w1, b1, padding=1, num_threads=t), 2),
        ("conv5x5-rgb-f64", lambda t: fastconv.conv2d(x2, w2, b2, stride=2, padding=2,
                                                      activation="relu", num_threads=t), 3),
        ("depthwise", lambda t: fastconv.conv2d(x3, w3, b3, padding=1, groups=24,
                                                num_threads=t), None),
        ("pointwise", lambda t: fastconv.conv2d(x4, w4, b4, num_threads=t), 2),
        ("conv3x3-nchw", lambda t: fastconv.conv2d(x5, w5, b1, padding=(1, 2), layout="NCHW",
                                                   num_threads=t), 4),
        ("matmul", lambda t: fastconv.matmul(a6, b6, activation="relu", num_threads=t), 2),
        ("matmul-few-rows-f64", lambda t: fastconv.matmul(a7, b7, num_threads=t), 3),
        ("Conv2d+Linear", lambda t: (layer(x1, num_threads=t), layer(x1[:1], num_threads=t),
                                     linear(a6, num_threads=t)), None),
    ]


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _expected(jobs):
    """Each job's single-threaded result, and how many rounds make it last
    about JOB_SECONDS."""
    expected, rounds = [], []
    for _, call, _ in jobs:
        start = time.perf_counter()
        expected.append(_as_tuple(call(1)))
        seconds = time.perf_counter() - start
        rounds.append(min(200, max(3, int(JOB_SECONDS / max(seconds, 1e-6)))))
    return expected, rounds


def _run_together(jobs, expected, rounds, extra=None):
    """Run every job its number of rounds on its own Python thread, all started by
    one barrier; `extra(done)`, if given, runs on one more thread started by
    the same barrier and must return once the event `done` (set when every
    job has finished) is set. Returns the errors seen, and checks that all
    the jobs were running at one instant (their spans of calls overlap)."""
    errors, spans = [], []
    barrier = threading.Barrier(len(jobs) + (extra is not None))
    done = threading.Event()
    remaining = [len(jobs)]
    lock = threading.Lock()

    def worker(i):
        name, call, threads = jobs[i]
        try:
            barrier.wait(timeout=60)
            start = time.perf_counter()
            for round_ in range(rounds[i]):
                for got, want in zip(_as_tuple(call(threads)), expected[i]):
                    if not np.array_equal(got, want):
                        errors.append(f"{name}, round {round_}: differs from its "
                                      f"single-threaded result")
            spans.append((start, time.perf_counter()))
        except BaseException as exc:  # reported by the main thread
            errors.append(f"{name}: {exc!r}")
        finally:
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

    def other():
        try:
            barrier.wait(timeout=60)
            extra(done)
        except BaseException as exc:
            errors.append(f"extra thread: {exc!r}")

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    if extra is not None:
        workers.append(threading.Thread(target=other))
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=300)
        assert not thread.is_alive(), "a thread did not finish"
    if not errors:
        assert max(s for s, _ in spans) < min(e for _, e in spans), "the calls did not overlap"
    return errors


def test_eight_python_threads_get_their_single_threaded_results(rng):
    jobs = _jobs(rng)
    assert len(jobs) == N_THREADS
    errors = _run_together(jobs, *_expected(jobs))
    assert not errors, errors


def test_set_num_threads_while_other_threads_compute(rng):
    """One thread changes the default thread count again and again while
    seven others compute with num_threads=None: nothing crashes, and every
    result is still exact (each call runs with whatever count it read)."""
    jobs = [(name, call, None) for name, call, _ in _jobs(rng)[:N_THREADS - 1]]
    changes = []

    def switcher(done):
        counts = (1, 2, 3, 4, 7)
        while not done.is_set():
            fastconv.set_num_threads(counts[len(changes) % len(counts)])
            changes.append(fastconv.get_num_threads())

    original = fastconv.get_num_threads()
    try:
        errors = _run_together(jobs, *_expected(jobs), extra=switcher)
    finally:
        fastconv.set_num_threads(original)
    assert not errors, errors
    assert len(set(changes)) == 5, "the switcher did not run while the others computed"


def _thread_cpu_times():
    """CPU time (clock ticks) of each thread of this process, by thread id."""
    times = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            times[tid] = int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return times


def _threads_that_ran(call, seconds=0.6):
    """How many threads of this process gained CPU time while `call` ran
    repeatedly for about `seconds`."""
    before = _thread_cpu_times()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        call()
    after = _thread_cpu_times()
    return sum(1 for tid, t in after.items() if t - before.get(tid, 0) >= 5)


def test_threadpoolctl_limits_fastconv(rng):
    """threadpool_limits(1) lowers OpenMP's limit, and fastconv's calls that
    pass no num_threads then run one thread (they ran two before); an
    explicit num_threads is honoured as given."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fastconv.config()["openmp"] or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs OpenMP and two CPUs")
    x, w, _ = make_conv_inputs(rng, n=1, h=56, w=56, c=64, k=64, kh=3, kw=3, bias=False)
    layer = fastconv.Conv2d(w, padding=1)
    previous = fastconv.get_num_threads()
    fastconv.set_num_threads(2)
    try:
        assert _threads_that_ran(lambda: layer(x)) >= 2
        with threadpoolctl.threadpool_limits(1):
            assert _threads_that_ran(lambda: layer(x)) == 1
            assert _threads_that_ran(lambda: fastconv.conv2d(x, w, padding=1)) == 1
            assert _threads_that_ran(lambda: layer(x, num_threads=2)) >= 2
        assert _threads_that_ran(lambda: layer(x)) >= 2
        openmp = [info for info in threadpoolctl.threadpool_info()
                  if info["user_api"] == "openmp"]
        assert openmp, "threadpoolctl sees fastconv's OpenMP runtime"
    finally:
        fastconv.set_num_threads(previous)
