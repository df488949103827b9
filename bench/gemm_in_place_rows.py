"""A 1x1 conv2d first call (weights not kept) reading its weights in place
against packing them in the call, per row count: what DIRECT_GEMM_MAX_ROWS
is set from (bench/RESULTS.md: gip.py). python bench/gemm_in_place_rows.py"""
import numpy as np, time, statistics, fastconv
from fastconv._conv import conv2d_algorithm
fastconv.set_weight_cache(0)
r = np.random.default_rng(0)
for hw, C, K in [(2, 512, 2048), (3, 512, 2048), (4, 512, 2048), (5, 1024, 1024), (6, 256, 256), (3, 64, 64)]:
    x = r.standard_normal((1, hw, hw, C), dtype=np.float32); w = r.standard_normal((1, 1, C, K), dtype=np.float32)
    res = {a: [] for a in ("gemm-in-place", "gemm")}
    for rep in range(9):
        for a in res:
            t = time.perf_counter(); conv2d_algorithm(x, w, algorithm=a, num_threads=1); res[a].append(time.perf_counter() - t)
    m = {a: statistics.median(v) * 1e3 for a, v in res.items()}
    print(f"{hw*hw} rows {C}->{K}: in place {m['gemm-in-place']:.3f} ms, packed in the call {m['gemm']:.3f} ms, ratio {m['gemm-in-place']/m['gemm']:.2f}")
