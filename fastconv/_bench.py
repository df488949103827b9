"""`python -m fastconv bench`: fastconv against numpy.matmul, side by side.

Each case is timed interleaved with its baseline (fastconv, baseline,
fastconv, ...) after a warm-up, and the medians are compared, so that the
noise of a shared machine hits both sides alike. Baselines: numpy.matmul for
GEMMs and 1x1 convolutions; im2col + numpy.matmul for n x n convolutions.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional

import numpy as np

import fastconv

# (name, M, K, N)
GEMM_QUICK = [("gemm 3136x64x256", 3136, 64, 256), ("gemm 784x128x512", 784, 128, 512),
              ("gemm 1024^3", 1024, 1024, 1024)]
# (name, H, W, C, K, kernel, stride, padding)
CONV_QUICK = [("vgg16 conv3_2 3x3", 56, 56, 256, 256, 3, 1, 1),
              ("resnet50 1x1 56x56 64->256", 56, 56, 64, 256, 1, 1, 0),
              ("resnet50 3x3 14x14 256", 14, 14, 256, 256, 3, 1, 1)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a short run (fewer repetitions)")
    parser.add_argument("--threads", default=None,
                        help="comma-separated thread counts, e.g. 1,2 (default: the package default)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")


@contextmanager
def _blas_threads(n: int):
    """Limit numpy's BLAS to n threads where threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield True


def blas_info() -> List[Dict[str, object]]:
    """Which BLAS numpy runs, and which kernel (threadpoolctl), if known."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed: numpy's BLAS not identified"}]
    return [{k: v for k, v in info.items() if k in
             ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def _time_pair(f: Callable[[], object], g: Callable[[], object], reps: int,
               min_time: float) -> tuple:
    """Medians of interleaved timings of f and g (each call repeated until it
    lasts min_time, to time short calls accurately)."""
    def calls_for(h):
        n, t = 1, 0.0
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                h()
            t = time.perf_counter() - t0
            if t >= min_time or n >= 1 << 16:
                return n
            n *= 2

    nf, ng = calls_for(f), calls_for(g)
    tf, tg = [], []
    for _ in range(reps):
        for h, n, acc in ((f, nf, tf), (g, ng, tg)):
            t0 = time.perf_counter()
            for _ in range(n):
                h()
            acc.append((time.perf_counter() - t0) / n)
    return statistics.median(tf), statistics.median(tg)


def im2col_matmul(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """The NumPy baseline for an n x n convolution: im2col, then numpy.matmul."""
    N, H, W, C = x.shape
    kh, kw, _, K = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    cols = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    cols = cols[:, ::stride, ::stride][:, :Ho, :Wo]  # (N, Ho, Wo, C, kh, kw)
    cols = cols.transpose(0, 1, 2, 4, 5, 3).reshape(N * Ho * Wo, kh * kw * C)
    return np.matmul(cols, w.reshape(kh * kw * C, K)).reshape(N, Ho, Wo, K)


def _cases(dtype, rng):
    for name, M, K, N in GEMM_QUICK:
        a = rng.standard_normal((M, K)).astype(dtype)
        b = rng.standard_normal((K, N)).astype(dtype)
        yield (name, 2.0 * M * K * N,
               lambda nt, a=a, b=b: fastconv.matmul(a, b, num_threads=nt),
               lambda a=a, b=b: np.matmul(a, b), "numpy.matmul")
    for name, H, W, C, K, k, s, p in CONV_QUICK:
        x = rng.standard_normal((1, H, W, C)).astype(dtype)
        w = (rng.standard_normal((k, k, C, K)) / np.sqrt(k * k * C)).astype(dtype)
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        flops = 2.0 * Ho * Wo * K * k * k * C
        if k == 1 and s == 1:
            base = lambda x=x, w=w: np.matmul(x.reshape(-1, x.shape[-1]), w[0, 0])
            base_name = "numpy.matmul"
        else:
            base = lambda x=x, w=w, s=s, p=p: im2col_matmul(x, w, s, p)
            base_name = "im2col+numpy.matmul"
        yield (name, flops, lambda nt, x=x, w=w, s=s, p=p:
               fastconv.conv2d(x, w, stride=s, padding=p, num_threads=nt), base, base_name)


def run(args: argparse.Namespace) -> int:
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else [fastconv.get_num_threads()])
    reps, min_time = (5, 0.02) if args.quick else (15, 0.05)
    dtype = np.dtype(args.dtype)
    cfg = fastconv.config()
    print(f"fastconv {cfg['version']} ({cfg['dispatch']['conv']}, {cfg['compiler']}), "
          f"numpy {np.__version__}, {platform.processor() or platform.machine()}")
    for info in blas_info():
        print("numpy BLAS:", ", ".join(f"{k}={v}" for k, v in info.items()))
    rows = []
    header = f"{'case':34s} {'thr':>3s} {'fastconv':>10s} {'baseline':>10s} {'ratio':>6s}  baseline"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    cases = list(_cases(dtype, rng))
    for nt in threads:
        with _blas_threads(nt):
            for i, (name, flops, f, g, base_name) in enumerate(cases):
                print(f"  [{i + 1}/{len(cases)}] {name} ...", end="\r", file=sys.stderr, flush=True)
                tf, tg = _time_pair(lambda: f(nt), g, reps, min_time)
                row = {"case": name, "threads": nt, "dtype": dtype.name, "flops": flops,
                       "fastconv_s": tf, "baseline_s": tg, "baseline": base_name,
                       "fastconv_gflops": flops / tf / 1e9, "baseline_gflops": flops / tg / 1e9,
                       "speedup": tg / tf}
                rows.append(row)
                print(f"{name:34s} {nt:3d} {row['fastconv_gflops']:7.1f} GF {row['baseline_gflops']:7.1f} GF "
                      f"{row['speedup']:5.2f}x  {base_name}")
    geo = statistics.geometric_mean([r["speedup"] for r in rows])
    print(f"geometric mean speedup over the baselines: {geo:.2f}x "
          f"(GF = GFLOP/s, median of {reps} interleaved repetitions)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg, "blas": blas_info(), "results": rows}, f, indent=1)
    return 0
