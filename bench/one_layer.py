"""Time one convolution layer alone: fastconv.Conv2d (NHWC, weights packed
once) and fastconv.conv2d (the function) against torch's conv2d in
channels_last and NCHW, and for a one-pixel result (a fully-connected layer
as a convolution) numpy.matmul on the flattened input and weights.

The timing is the suite's (fastconv._bench.time_interleaved: rounds of
interleaved samples, each lasting at least --min-time, median; at 2 threads
or more, each sample waits until the previous one's worker threads are idle), for a closer look at a single row
of the suite tables. Examples (VGG16's conv1_1; fc6 at batch 1):

    python bench/one_layer.py --hw 224 --c 3 --k 64 --ksize 3 --pad 1 --threads 1,2
    python bench/one_layer.py --hw 7 --c 512 --k 4096 --ksize 7 --threads 1,2
"""
import argparse

import numpy as np

import fastconv
from fastconv import _bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hw", type=int, required=True, help="input height = width")
    parser.add_argument("--c", type=int, required=True, help="input channels")
    parser.add_argument("--k", type=int, required=True, help="output channels")
    parser.add_argument("--ksize", type=int, required=True, help="kernel height = width")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--reps", type=int, default=15, help="samples per contender")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per sample")
    args = parser.parse_args()
    torch = _bench._torch()  # for the comparison only
    if torch is None:
        parser.error("this comparison needs torch (pip install torch==2.13.0)")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, args.hw, args.hw, args.c), dtype=np.float32)
    w = rng.standard_normal((args.ksize, args.ksize, args.c, args.k), dtype=np.float32)
    layer = fastconv.Conv2d(w, stride=args.stride, padding=args.pad)
    result = layer(x)
    flops = 2.0 * result.size * args.ksize ** 2 * args.c
    one_pixel = result.shape[1:3] == (1, 1) and args.pad == 0 and args.hw == args.ksize
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    xcl, wcl = (t.contiguous(memory_format=torch.channels_last) for t in (xt, wt))
    conv = torch.nn.functional.conv2d
    for nt in (int(t) for t in args.threads.split(",")):
        calls = {"fastconv": lambda: layer(x, num_threads=nt),
                 "fastconv.conv2d": lambda: fastconv.conv2d(
                     x, w, stride=args.stride, padding=args.pad, num_threads=nt),
                 "torch_cl": lambda: conv(xcl, wcl, stride=args.stride, padding=args.pad),
                 "torch": lambda: conv(xt, wt, stride=args.stride, padding=args.pad)}
        if one_pixel:
            x2, w2 = x.reshape(1, -1), w.reshape(-1, args.k)
            calls["numpy"] = lambda: np.matmul(x2, w2)
        with _bench.thread_limits(nt):
            seconds = _bench.time_interleaved(list(calls.values()), args.reps, args.min_time,
                                              settled=nt > 1)
        med = dict(zip(calls, seconds))
        best_torch = min(med["torch"], med["torch_cl"])
        line = f"{nt} thread(s): " + ", ".join(
            f"{name} {1e3 * t:.3f} ms ({flops / t / 1e9:.1f} GFLOP/s)" for name, t in med.items())
        line += f"; fastconv vs best torch {best_torch / med['fastconv']:.2f}x"
        if one_pixel:
            line += (f"; vs numpy: layer {med['numpy'] / med['fastconv']:.2f}x, conv2d "
                     f"{med['numpy'] / med['fastconv.conv2d']:.2f}x (weights streamed "
                     f"{w.nbytes / med['fastconv.conv2d'] / 1e9:.1f} GB/s)")
        print(line, flush=True)


if __name__ == "__main__":
    main()
