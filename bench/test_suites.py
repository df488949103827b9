"""pytest-benchmark cases over every layer of fastconv._shapes (the suites of
`python -m fastconv bench`): `pytest bench/ --benchmark-only`.

Each test times one contender (fastconv, numpy, torch, torch_cl: see
fastconv._bench) on one layer, float32, batch 1, at one thread count; the
groups are the suites at each thread count (1 and the package default).
Useful selections:

    pytest bench/ --benchmark-only -m quick                # the --quick subset
    pytest bench/ --benchmark-only -k "resnet50 and t1"    # one suite, 1 thread
    pytest bench/ --benchmark-only --benchmark-sort=name   # contenders side by side
"""
import numpy as np
import pytest

import fastconv
from fastconv import _bench
from fastconv._shapes import SUITES

THREADS = sorted({1, fastconv.get_num_threads()})


@pytest.fixture(scope="module", params=[
    pytest.param((suite, layer), id=f"{suite}:{layer.name}",
                 marks=[pytest.mark.quick] if layer.quick else [])
    for suite, layers in SUITES.items() for layer in layers])
def layer_calls(request):
    """(suite, layer, {contender: callable}); the inputs are made once per layer."""
    suite, layer = request.param
    calls, plan = _bench.contenders(
        layer, *_bench.layer_inputs(layer, np.dtype("float32"), np.random.default_rng(0)))
    return suite, layer, calls, plan


@pytest.mark.parametrize("nt", THREADS, ids=lambda nt: f"t{nt}")
@pytest.mark.parametrize("contender", _bench.CONTENDERS)
def test_layer(benchmark, layer_calls, contender, nt):
    suite, layer, calls, plan = layer_calls
    if contender not in calls:
        pytest.skip(f"{contender}: torch is not installed, or no such variant for a GEMM")
    benchmark.group = f"{suite}, {nt} thread{'s' if nt > 1 else ''}"
    benchmark.extra_info.update(layer=layer.name, shape=_bench.shape_text(layer),
                                count=layer.count, gflop=_bench.flops(layer) / 1e9,
                                algorithm=plan.algorithm, executed_gflop=2 * plan.macs / 1e9)
    with _bench.thread_limits(nt):
        benchmark(calls[contender], nt)
