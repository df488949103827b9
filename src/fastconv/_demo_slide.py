"""`python -m fastconv demo slide`: a classifier over a "slide" larger than
the memory of the cluster that reads it, tile by tile, exactly.

The digits classifier of `demo` (trained in NumPy on scikit-learn's 8x8
digits) is made fully convolutional and run by nn.predict_tiled over a
synthetic grey "slide" (by default 32768 x 32768 pixels, 1 GiB of uint8 in a
tiled zarr array) of test digits scattered on a noisy background, on a dask
LocalCluster of 2 workers whose memory limits together are below the
slide's size. Each tile's 10-class scores become a class map (the class
where the classifier is confident, 255 elsewhere), written to zarr. The
report gives the throughput, each worker's peak memory, the digits read at
their true positions, and the agreement, bitwise, with the whole-image pass
on a crop.

Needs scikit-learn, dask, distributed and zarr (pip install
"fastconv[tiled,demo]"); matplotlib for --plot.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from fastconv._demo import (MIN_ACCURACY, SIDE, MissingDependency, _pyplot,
                            build_model, load_digits, split, train)

__all__ = ["run_demo", "run"]

CELL = 48               # one digit at most per CELL x CELL cell, jittered in it
CHUNK = 1024            # the slide's zarr chunks
TILE = 512              # predict_tiled's tile (the 64-channel hidden map of a tile: 64 MiB)
CONFIDENT = 0.9         # the class map's threshold on the top probability
CROP = 768              # the side of the crop compared with the whole-image pass
SIZES = {True: 4096, False: 32768}
DEPS_HINT = ("the slide demo needs scikit-learn, dask, distributed and zarr: "
             "pip install \"fastconv[tiled,demo]\"")


def _need() -> Tuple[Any, Any]:
    try:
        import distributed
        import zarr
        import dask  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"{DEPS_HINT} ({exc.name} is missing)") from exc
    return distributed, zarr


def write_slide(zarr: Any, path: str, size: int, digits: np.ndarray, labels: np.ndarray,
                pool: np.ndarray, seed: int) -> np.ndarray:
    """A size x size uint8 zarr array at `path`: noise (mean 20, sd 8) with
    test digits (scaled to 0-255) in about a third of the CELL x CELL cells.
    Written a chunk at a time (never whole in memory). Returns the digits'
    (row, column, label) of their top-left corners."""
    z = zarr.open_array(path, mode="w", shape=(size, size), chunks=(CHUNK, CHUNK), dtype="u1")
    truth = []
    for r0 in range(0, size, CHUNK):
        for c0 in range(0, size, CHUNK):
            rng = np.random.default_rng([seed, r0, c0])
            h, w = min(CHUNK, size - r0), min(CHUNK, size - c0)
            block = rng.normal(20.0, 8.0, (h, w))
            for y in range(0, h - CELL + 1, CELL):
                for x in range(0, w - CELL + 1, CELL):
                    if rng.random() < 1 / 3:
                        dy, dx = rng.integers(0, CELL - SIDE, 2)
                        k = int(pool[rng.integers(len(pool))])
                        patch = block[y + dy:y + dy + SIDE, x + dx:x + dx + SIDE]
                        np.maximum(patch, digits[k] * 255.0, out=patch)
                        truth.append((r0 + y + dy, c0 + x + dx, int(labels[k])))
            z[r0:r0 + h, c0:c0 + w] = np.clip(np.rint(block), 0, 255).astype(np.uint8)
    return np.asarray(truth, np.int64).reshape(-1, 3)


def slide_model(params: Dict[str, np.ndarray]) -> Any:
    """The classifier made fully convolutional, reading uint8 pixels: a 1x1
    convolution by 1/255 first (the classifier was trained on [0, 1])."""
    from fastconv import nn
    fcn = nn.to_fully_convolutional(build_model(params), (SIDE, SIDE, 1))
    scale = nn.Conv2d(np.full((1, 1, 1, 1), 1 / 255, np.float32), name="to_unit_range")
    return nn.Sequential(scale, *fcn.layers)


def classes(scores: np.ndarray) -> np.ndarray:
    """The class map of a tile of scores (H, W, 10): the class where its
    probability is at least CONFIDENT, else 255."""
    best = scores.argmax(-1).astype(np.uint8)
    best[scores.max(-1) < CONFIDENT] = 255
    return best


def _peak_rss_mib() -> float:
    """This process's peak resident memory (a worker's, run there)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_at(z: Any, truth: np.ndarray) -> np.ndarray:
    """The class map at each digit's top-left corner, chunk by chunk."""
    read = np.empty(len(truth), np.int64)
    ch, cw = z.chunks
    keys = (truth[:, 0] // ch) * (z.shape[1] // cw + 1) + truth[:, 1] // cw
    for key in np.unique(keys):
        sel = np.flatnonzero(keys == key)
        r0, c0 = truth[sel[0], 0] // ch * ch, truth[sel[0], 1] // cw * cw
        block = z[r0:r0 + ch, c0:c0 + cw]
        read[sel] = block[truth[sel, 0] - r0, truth[sel, 1] - c0]
    return read


def run_demo(quick: bool, seed: int = 0, plot: Optional[str] = None, size: Optional[int] = None,
             workers: int = 2, memory_limit: str = "384MiB",
             directory: Optional[str] = None) -> Dict[str, Any]:
    """Make the slide, run the classifier over it on a LocalCluster, check it.

    Returns a dict of the figures format_report prints (accuracy of the
    classifier on held-out digits, slide_bytes, worker memory, seconds,
    digits found, crop_equal, ...).
    """
    plt = _pyplot() if plot else None
    distributed, zarr = _need()
    import dask
    from fastconv import nn
    size = SIZES[bool(quick)] if size is None else int(size)
    if size < 2 * CELL:
        raise ValueError(f"demo slide: --size must be at least {2 * CELL}; got {size}")
    images, labels = load_digits()
    rng = np.random.default_rng(seed)
    train_idx, test_idx = split(labels, rng)
    flat = images.reshape(len(images), -1)
    params = train(flat[train_idx], labels[train_idx], rng)
    probs = build_model(params)(images[test_idx, :, :, None])
    accuracy = float(np.mean(np.argmax(probs, axis=1) == labels[test_idx]))
    model = slide_model(params)

    own_dir = directory is None
    work = tempfile.mkdtemp(prefix="fastconv-slide-") if own_dir else directory
    try:
        slide_path, out_path = os.path.join(work, "slide.zarr"), os.path.join(work, "classes")
        t0 = time.perf_counter()
        truth = write_slide(zarr, slide_path, size, images, labels, test_idx, seed)
        write_seconds = time.perf_counter() - t0
        slide = zarr.open_array(slide_path, mode="r")
        # (dask's defaults would spill and pause the workers; the tasks' memory is bounded)
        from fastconv.nn.tiled import cluster_config
        with dask.config.set({"distributed.worker.memory.target": False,
                              "distributed.worker.memory.spill": False, **cluster_config()}):
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                          memory_limit=memory_limit, processes=True,
                                          dashboard_address=None) as cluster, \
                    distributed.Client(cluster) as client:
                limit = sum(w["memory_limit"] for w in client.scheduler_info()["workers"]
                            .values())
                t0 = time.perf_counter()
                result = nn.predict_tiled(model, slide, tile=TILE, out=out_path,
                                          scheduler=client, postprocess=classes,
                                          progress=sys.stderr.isatty())
                seconds = time.perf_counter() - t0
                peaks = sorted(client.run(_peak_rss_mib).values())
        read = read_at(result, truth)
        found = int(np.sum(read == truth[:, 2]))
        # the whole-image pass on a crop: the same classes and, bitwise, the same scores
        c0 = max(0, min(size // 2, size - CROP))
        crop = np.asarray(slide[c0:c0 + CROP, c0:c0 + CROP])
        whole = model(crop[None, :, :, None].astype(np.float32))[0]
        n = CROP - SIDE + 1
        crop_equal = bool(np.array_equal(classes(whole), result[c0:c0 + n, c0:c0 + n]))
        tiled_scores = nn.predict_tiled(model, crop, tile=100).compute(scheduler="threads")
        scores_equal = bool(np.array_equal(tiled_scores, whole))
        if plt is not None:
            draw(plt, plot, slide, truth, read)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    pixels = (size - SIDE + 1) ** 2
    macs = pixels * sum(layer.num_params for layer in model.layers)
    return {
        "accuracy": accuracy, "size": size, "slide_bytes": size * size,
        "memory_limit_bytes": int(limit), "workers": workers, "peak_rss_mib": peaks,
        "write_seconds": write_seconds, "seconds": seconds, "pixels": pixels,
        "gflops": 2 * macs / seconds / 1e9, "digits": len(truth), "found": found,
        "crop_equal": crop_equal, "scores_equal": scores_equal, "crop": CROP, "tile": TILE,
        "plot": plot,
    }


def draw(plt: Any, path: str, slide: Any, truth: np.ndarray, read: np.ndarray) -> None:
    """A thumbnail of the slide with the digits read right (green) and not (red)."""
    step = max(1, slide.shape[0] // 1024)
    thumb = np.asarray(slide[::step, ::step])
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(thumb, cmap="gray", vmin=0, vmax=255,
              extent=(0, slide.shape[1], slide.shape[0], 0))
    shown = truth[: 20000]
    ok = read[: len(shown)] == shown[:, 2]
    ax.scatter(shown[ok, 1], shown[ok, 0], s=2, c="lime", label="read right")
    ax.scatter(shown[~ok, 1], shown[~ok, 0], s=2, c="red", label="missed")
    ax.set_title(f"{slide.shape[0]} x {slide.shape[1]} slide (shown at 1/{step}), "
                 f"digits' positions")
    ax.legend(loc="lower right", markerscale=5)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def format_report(r: Dict[str, Any]) -> str:
    gib = 1 << 30
    lines = [
        f"classifier: {100 * r['accuracy']:.2f}% on held-out digits; made fully "
        f"convolutional (8x8 conv -> 1x1 conv -> softmax, at every stride-1 window)",
        f"slide: {r['size']} x {r['size']} uint8 ({r['slide_bytes'] / gib:.2f} GiB, zarr "
        f"chunks {CHUNK}), {r['digits']} digits; written in {r['write_seconds']:.1f} s",
        f"cluster: {r['workers']} workers x 1 thread, memory limits "
        f"{r['memory_limit_bytes'] / gib:.2f} GiB in all "
        f"({r['memory_limit_bytes'] / r['slide_bytes']:.2f} of the slide)",
        f"predict_tiled (tile {r['tile']}): {r['seconds']:.1f} s, "
        f"{r['pixels'] / r['seconds'] / 1e6:.1f} Mpixel/s, {r['gflops']:.1f} GFLOP/s",
        f"peak memory per worker: {', '.join(f'{m:.0f} MiB' for m in r['peak_rss_mib'])}",
        f"digits read at their positions: {r['found']}/{r['digits']} "
        f"({100 * r['found'] / max(r['digits'], 1):.2f}%)",
        f"{r['crop']}x{r['crop']} crop against the whole-image pass: class map "
        f"{'equal' if r['crop_equal'] else 'DIFFERENT'}, scores "
        f"{'bitwise equal' if r['scores_equal'] else 'DIFFERENT'}",
    ]
    if r.get("plot"):
        lines.append(f"plot: {r['plot']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`python -m fastconv demo slide`: 0; 1 if the classifier is below
    MIN_ACCURACY or the tiled result differs from the whole-image pass; 2
    if a package is missing."""
    try:
        r = run_demo(args.quick, seed=args.seed, plot=args.plot, size=args.size,
                     workers=args.workers, memory_limit=args.memory_limit,
                     directory=args.dir)
    except MissingDependency as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(r))
    if r["accuracy"] < MIN_ACCURACY or not (r["crop_equal"] and r["scores_equal"]):
        print("error: the classifier is below its accuracy, or the tiled result differs from "
              "the whole-image pass", file=sys.stderr)
        return 1
    return 0

