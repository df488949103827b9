"""pytest-benchmark cases: `pytest bench/ --benchmark-only`.

Each case benchmarks fastconv and its NumPy baseline under the same group,
so pytest-benchmark's table shows them side by side.
"""
import numpy as np
import pytest

import fastconv
from fastconv._bench import CONV_QUICK, GEMM_QUICK, im2col_matmul

rng = np.random.default_rng(0)


@pytest.mark.parametrize("name,M,K,N", GEMM_QUICK, ids=[c[0] for c in GEMM_QUICK])
@pytest.mark.parametrize("impl", ["fastconv", "numpy"])
def test_gemm(benchmark, name, M, K, N, impl):
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    benchmark.group = name
    benchmark.extra_info["gflop"] = 2e-9 * M * K * N
    f = fastconv.matmul if impl == "fastconv" else np.matmul
    benchmark(f, a, b)


@pytest.mark.parametrize("name,H,W,C,K,k,s,p", CONV_QUICK, ids=[c[0] for c in CONV_QUICK])
@pytest.mark.parametrize("impl", ["fastconv", "numpy"])
def test_conv(benchmark, name, H, W, C, K, k, s, p, impl):
    x = rng.standard_normal((1, H, W, C)).astype(np.float32)
    w = rng.standard_normal((k, k, C, K)).astype(np.float32)
    benchmark.group = name
    if impl == "fastconv":
        benchmark(fastconv.conv2d, x, w, stride=s, padding=p)
    else:
        benchmark(im2col_matmul, x, w, s, p)
