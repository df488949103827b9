"""Where Winograd F(2x2, 3x3) pays: for 3x3, stride 1, "same" layers of C
input and output channels over an H x W map, the time of Winograd against the
direct convolution (igemm), both forced, for the layer (fastconv.Conv2d,
weights prepared once) and for the conv2d function (which also packs or
transforms the weights in its call). Prints, per shape and thread count,
the ratio direct / Winograd (above 1: Winograd is faster). The thresholds
of csrc/configs/<isa>.h come from this table (bench/RESULTS.md).

    python bench/winograd_thresholds.py --threads 1,2
    python bench/winograd_thresholds.py --channels 32,64 --sizes 7,14,28 --threads 1

Run against a fastconv from before the operator API (which ran Winograd from
a Python loop and had no way to force an algorithm), it switches Winograd
with set_winograd and lifts that version's Python thresholds instead, so that
the same command measures both.
"""
import argparse

import numpy as np

import fastconv
from fastconv import _bench, _conv, _core

WINOGRAD = "winograd-f2x2-3x3"


OLD = not hasattr(_conv, "conv2d_algorithm")
if OLD:  # Winograd wherever it can run, switched per call
    _conv.WINOGRAD_MIN_CHANNELS = _conv.WINOGRAD_MIN_MACS = 0
    _conv.WINOGRAD_ONE_CALL_MIN_TILES = 0


def switched(call, algorithm):
    def run():
        fastconv.set_winograd(algorithm == WINOGRAD)
        return call()
    return run


def layer_call(layer, x, algorithm, nt):
    if OLD:
        return switched(lambda: layer(x, num_threads=nt), algorithm)
    weights = layer._weights
    plan = weights.plan(x.shape, layer.padding, None, algorithm)
    assert plan.algorithm == algorithm, plan.algorithm
    return lambda: weights.execute(plan, x, None, nt)


def function_call(x, w, algorithm, nt):
    if OLD:
        return switched(lambda: fastconv.conv2d(x, w, padding=1, num_threads=nt), algorithm)
    return lambda: _conv.conv2d_algorithm(x, w, padding=1, algorithm=algorithm, num_threads=nt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="32,64,128,256,512", help="C = K values")
    parser.add_argument("--sizes", default="7,14,28,56,112", help="H = W values")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--reps", type=int, default=7, help="samples per contender")
    parser.add_argument("--min-time", type=float, default=0.03, help="seconds per sample")
    parser.add_argument("--max-mmac", type=float, default=2000,
                        help="skip shapes of more multiply-adds (millions) per image")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"fastconv {fastconv.__version__}, ISA {_core.active_isa()}; "
          "ratio = direct time / Winograd time (above 1: Winograd faster)")
    print(f"{'C=K':>5} {'HxW':>8} {'thr':>3} {'MMAC/img':>9} {'tiles':>6} {'direct ms':>10} "
          f"{'wino ms':>8} {'layer':>6} {'fn direct':>10} {'fn wino':>8} {'fn':>6}")
    for c in (int(v) for v in args.channels.split(",")):
        w = rng.standard_normal((3, 3, c, c), dtype=np.float32) / (3 * c ** 0.5)
        layer = fastconv.Conv2d(w, padding=1)
        for hw in (int(v) for v in args.sizes.split(",")):
            if hw * hw * c * c * 9 > args.max_mmac * 1e6:
                continue
            x = rng.standard_normal((1, hw, hw, c), dtype=np.float32)
            for nt in (int(t) for t in args.threads.split(",")):
                calls = [layer_call(layer, x, "igemm", nt), layer_call(layer, x, WINOGRAD, nt),
                         function_call(x, w, "igemm", nt), function_call(x, w, WINOGRAD, nt)]
                with _bench.thread_limits(nt):
                    t = _bench.time_interleaved(calls, args.reps, args.min_time, settled=nt > 1)
                tiles = ((hw + 1) // 2) ** 2
                print(f"{c:>5} {f'{hw}x{hw}':>8} {nt:>3} {hw * hw * c * c * 9 / 1e6:>9.1f} "
                      f"{tiles:>6} {1e3 * t[0]:>10.3f} {1e3 * t[1]:>8.3f} {t[0] / t[1]:>6.2f} "
                      f"{1e3 * t[2]:>10.3f} {1e3 * t[3]:>8.3f} {t[2] / t[3]:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
