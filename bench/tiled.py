"""nn.predict_tiled against the whole-image pass, and its scaling over
dask.distributed workers.

Two fully convolutional models over one image each:
- digits: `demo slide`'s classifier made fully convolutional (8x8 conv
  1 -> 64, relu, 1x1 conv 64 -> 10, softmax) over a 2048 x 2048 uint8 image;
- fcn: a small FCN (3x3 convs 3 -> 32 -> 64 with pools, a 1x1 score layer,
  a stride-4 transposed convolution back up) over a 2048 x 2048 x 3 image.

Contenders, interleaved round by round (medians of --rounds), each given the
same total thread count T (--threads, default 2):
- whole: model(image, num_threads=T), one process;
- tiled-threads: predict_tiled(...).compute() on dask's threads scheduler
  (T workers, one fastconv thread per task);
- zarr-cluster-N: on a LocalCluster of N worker processes x 1 thread, for
  N = 1 .. T, as on an image larger than memory: the image read from a zarr
  array (1024 x 1024 chunks), the result written to another (out=); the
  workers started with nn.tiled.cluster_config().
Every tiled result is checked bitwise against the whole pass.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/tiled.py
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np


def digits_model():
    from fastconv import _demo, _demo_slide
    images, labels = _demo.load_digits()
    rng = np.random.default_rng(0)
    train_idx, _ = _demo.split(labels, rng)
    params = _demo.train(images.reshape(len(images), -1)[train_idx], labels[train_idx], rng)
    return _demo_slide.slide_model(params)


def fcn_model():
    from fastconv import nn
    rng = np.random.default_rng(1)

    def w(*s):
        return (rng.standard_normal(s) / np.sqrt(np.prod(s[:-1]))).astype(np.float32)
    return nn.Sequential(nn.Conv2d(w(3, 3, 3, 32), padding=1, activation="relu"),
                         nn.MaxPool2d(2),
                         nn.Conv2d(w(3, 3, 32, 64), padding=1, activation="relu"),
                         nn.MaxPool2d(2),
                         nn.Conv2d(w(1, 1, 64, 8)),
                         nn.ConvTranspose2d(w(8, 8, 8, 8), stride=4, padding=2))


def macs(model, shape):
    """Multiply-adds of the model's convolutions on an input of `shape`."""
    from fastconv.nn.regions import RegionPlan
    plan = RegionPlan(model, shape)
    total = 0
    for step in plan.steps:
        rule = step.rule
        if hasattr(rule, "weights"):
            w = rule.weights
            ho, wo = rule.out_hw
            hi, wi = rule.in_hw[0]
            if rule.transposed:
                total += hi * wi * w.kh * w.kw * w.cg * w.k
            else:
                total += ho * wo * w.kh * w.kw * w.cg * w.k
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--pause", type=float, default=1.0)
    args = parser.parse_args()
    import dask
    import distributed
    import zarr
    from fastconv.nn.tiled import cluster_config
    import fastconv
    from fastconv import nn
    T = args.threads
    rng = np.random.default_rng(2)
    cases = {
        "digits": (digits_model(), rng.integers(0, 256, (args.size, args.size), np.uint8)),
        "fcn": (fcn_model(), rng.standard_normal((args.size, args.size, 3)).astype(np.float32)),
    }
    print(f"fastconv {fastconv.__version__}, isa {fastconv.config()['isa']}, "
          f"{T} threads in all, tile {args.tile}, {args.size} x {args.size}, "
          f"medians of {args.rounds} rounds")
    tmp = tempfile.mkdtemp(prefix="fastconv-bench-tiled-")
    clusters = {}
    for n in range(1, T + 1):
        with dask.config.set(cluster_config()):
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1,
                                               processes=True, dashboard_address=None)
        clusters[n] = (cluster, distributed.Client(cluster, set_as_default=False))
    try:
        for name, (model, image) in cases.items():
            x = image[None, :, :, None] if image.ndim == 2 else image[None]
            x = x.astype(np.float32)
            whole = model(x, num_threads=T)[0]
            shape = x.shape[1:]
            work = macs(model, shape)
            runs = {"whole": lambda: model(x, num_threads=T)[0],
                    "tiled-threads": lambda: nn.predict_tiled(
                        model, image, tile=args.tile, scheduler="threads").compute(
                        scheduler="threads", num_workers=T)}
            src = zarr.open_array(os.path.join(tmp, f"{name}.zarr"), mode="w",
                                  shape=image.shape, dtype=image.dtype,
                                  chunks=(1024, 1024) + image.shape[2:])
            src[:] = image
            out = os.path.join(tmp, "out.zarr")

            def on_cluster(client):
                shutil.rmtree(out, ignore_errors=True)
                return nn.predict_tiled(model, src, tile=args.tile, scheduler=client, out=out,
                                        progress=False)
            for n, (_, client) in clusters.items():
                runs[f"zarr-cluster-{n}"] = (lambda c=client: on_cluster(c))
            times = {k: [] for k in runs}
            for k, run in runs.items():  # (warm-up, and the bitwise check)
                y = run()
                assert np.array_equal(y[:], whole), (name, k)
            for _ in range(args.rounds):
                for k, run in runs.items():
                    time.sleep(args.pause)
                    t0 = time.perf_counter()
                    run()
                    times[k].append(time.perf_counter() - t0)
            base = statistics.median(times["whole"])
            print(f"\n{name}: {work / 1e9:.1f} G multiply-adds")
            for k, ts in times.items():
                t = statistics.median(ts)
                print(f"  {k:18s} {t * 1e3:9.1f} ms  {2 * work / t / 1e9:7.1f} GFLOP/s  "
                      f"{base / t:5.2f}x whole")
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
