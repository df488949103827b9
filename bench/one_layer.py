"""Time one convolution layer alone: fastconv.Conv2d (NHWC) against torch's
conv2d in channels_last and NCHW, interleaved, median of many calls.

For a closer look at a single row of the suite tables, away from the other
contenders' memory traffic. Example (VGG16's conv1_1):

    python bench/one_layer.py --hw 224 --c 3 --k 64 --ksize 3 --pad 1 --threads 1,2
"""
import argparse
import time

import numpy as np

import fastconv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hw", type=int, required=True, help="input height = width")
    parser.add_argument("--c", type=int, required=True, help="input channels")
    parser.add_argument("--k", type=int, required=True, help="output channels")
    parser.add_argument("--ksize", type=int, required=True, help="kernel height = width")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per contender")
    args = parser.parse_args()
    import torch  # for the comparison only

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, args.hw, args.hw, args.c), dtype=np.float32)
    w = rng.standard_normal((args.ksize, args.ksize, args.c, args.k), dtype=np.float32)
    layer = fastconv.Conv2d(w, stride=args.stride, padding=args.pad)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
    xcl, wcl = (t.contiguous(memory_format=torch.channels_last) for t in (xt, wt))
    conv = torch.nn.functional.conv2d
    flops = 2.0 * layer(x).size * args.ksize ** 2 * args.c
    for nt in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(nt)
        calls = {"fastconv": lambda: layer(x, num_threads=nt),
                 "torch_cl": lambda: conv(xcl, wcl, stride=args.stride, padding=args.pad),
                 "torch": lambda: conv(xt, wt, stride=args.stride, padding=args.pad)}
        times = {name: [] for name in calls}
        with torch.no_grad():
            for f in calls.values():
                f()
            for _ in range(args.calls):
                for name, f in calls.items():
                    start = time.perf_counter()
                    f()
                    times[name].append(time.perf_counter() - start)
        med = {name: float(np.median(t)) for name, t in times.items()}
        best_torch = min(med["torch"], med["torch_cl"])
        print(f"{nt} thread(s): " + ", ".join(
            f"{name} {1e3 * t:.3f} ms ({flops / t / 1e9:.1f} GFLOP/s)" for name, t in med.items())
            + f"; fastconv vs best torch {best_torch / med['fastconv']:.2f}x")


if __name__ == "__main__":
    main()
