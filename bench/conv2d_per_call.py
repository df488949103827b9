"""conv2d (the function), a Conv2d layer and torch F.conv2d (NCHW, channels_last)
per call, interleaved, medians: python bench/conv2d_per_call.py tiny,vgg16 1,2
(suites of fastconv._shapes, or "tiny": 8x8x16, 3x3, 16 outputs; thread counts)."""
import sys, time, statistics, numpy as np, torch, fastconv
from fastconv import _shapes
from fastconv import nn
suites = sys.argv[1].split(",")
threads = [int(t) for t in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1]
rng = np.random.default_rng(0)
def tm(f, reps):
    f(); ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return ts
layers = []
for s in suites:
    if s == "tiny":
        layers += [_shapes.Conv("tiny 8x8x16", 8, 16, 16, 3, pad=1)]
    else:
        layers += _shapes.SUITES[s]
tot = {}
for nt in threads:
    torch.set_num_threads(nt)
    print(f"threads {nt}")
    print(f"{'layer':22s} {'fn ms':>8s} {'layer ms':>8s} {'torch ms':>8s} {'tcl ms':>8s} fn/torch fn/layer alg")
    for L in layers:
        cg = L.C // L.groups
        x = rng.standard_normal((1, L.hw, L.hw, L.C), dtype=np.float32)
        w = (rng.standard_normal((L.k, L.k, cg, L.K)) / np.sqrt(L.k*L.k*cg)).astype(np.float32)
        b = rng.standard_normal(L.K).astype(np.float32)
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()); tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()); tb = torch.from_numpy(b)
        txc = tx.contiguous(memory_format=torch.channels_last); twc = tw.contiguous(memory_format=torch.channels_last)
        layer = nn.Conv2d(w, b, stride=L.stride, padding=L.pad, groups=L.groups)
        from fastconv._conv import conv2d_algorithm
        alg = conv2d_algorithm(x, w, b, stride=L.stride, padding=L.pad, groups=L.groups, num_threads=nt)[1]
        f = {"fn": lambda: fastconv.conv2d(x, w, b, stride=L.stride, padding=L.pad, groups=L.groups, num_threads=nt),
             "layer": (lambda: layer(x, num_threads=nt)) if layer else (lambda: None),
             "torch": lambda: torch.nn.functional.conv2d(tx, tw, tb, stride=L.stride, padding=L.pad, groups=L.groups),
             "tcl": lambda: torch.nn.functional.conv2d(txc, twc, tb, stride=L.stride, padding=L.pad, groups=L.groups)}
        flops = 2*L.hw*L.hw*L.K*L.k*L.k*cg/L.stride**2
        reps = max(5, min(200, int(2e9 / flops)))
        res = {k: [] for k in f}
        with torch.no_grad():
            for r in range(5):
                for k in f:
                    res[k] += tm(f[k], reps // 5 + 1)
        med = {k: statistics.median(v)*1e3 for k, v in res.items()}
        for k in med: tot.setdefault((nt, k), 0); tot[(nt, k)] += med[k]*L.count
        bt = min(med["torch"], med["tcl"])
        print(f"{L.name:22s} {med['fn']:8.3f} {med['layer']:8.3f} {med['torch']:8.3f} {med['tcl']:8.3f} {bt/med['fn']:7.2f}x {med['layer']/med['fn']:6.2f}x {alg}")
    t = {k: tot[(nt, k)] for k in ("fn", "layer", "torch", "tcl")}
    print("total (count-weighted) ms:", {k: round(v, 2) for k, v in t.items()}, "best torch/fn %.2fx" % (min(t['torch'], t['tcl'])/t['fn']))
