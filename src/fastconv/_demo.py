"""`python -m fastconv demo`: a digit classifier made fully convolutional.

A small classifier, Flatten -> Linear(64, 64, relu) -> Linear(64, 10) ->
Softmax, is trained in NumPy on the 8x8 handwritten digits that scikit-learn
ships. fastconv.nn.to_fully_convolutional turns it into convolutions (the
first Linear, which sees the whole 8x8 image, becomes an 8x8 Conv2d; the
second a 1x1 Conv2d), which run ONCE over a wide image holding a row of test
digits and give the classifier's answer at every stride-1 window. The digits
are read off that score map at columns 0, 8, 16, ..., and the score map is
compared, for time and value, with the original classifier run on every
window, one call per window.

scikit-learn (the data) is needed; matplotlib only for --plot.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["run_demo", "run", "MissingDependency"]

SIDE = 8                # the digits are SIDE x SIDE images
CLASSES = 10
HIDDEN = 64             # width of the hidden layer
MIN_ACCURACY = 0.95     # the demo fails below this test accuracy
TEST_FRACTION = 0.25    # of each class, held out
# (epochs, batch size, Adam step size, L2 weight decay); the same in --quick:
# the training takes well under a second.
TRAINING = (40, 32, 3e-3, 1e-4)
# Digits in the wide image, and best-of repeats of the two timings:
# quick -> (digits, repeats of the single pass, repeats of the window loop).
SIZES = {True: (10, 20, 3), False: (40, 50, 5)}
# Threads of every fastconv call. The work is tiny (one pass over the 8 x 80
# image is ~0.3 M multiply-adds): a second thread only adds its start-up, and
# where another process holds a core, waiting for it can take milliseconds.
# One thread each keeps the comparison of the two methods about the methods.
THREADS = 1

SKLEARN_HINT = ("the demo needs scikit-learn for its data (the 8x8 digits): "
                "pip install scikit-learn (or pip install \"fastconv[demo]\")")
MATPLOTLIB_HINT = "--plot needs matplotlib: pip install matplotlib"


class MissingDependency(RuntimeError):
    """An optional package the demo needs is not installed (message: how to get it)."""


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images (N, 8, 8) float32 in [0, 1], labels (N,) int)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise MissingDependency(SKLEARN_HINT) from exc
    digits = sk_load_digits()
    images = (np.asarray(digits.images, np.float64) / 16.0).astype(np.float32)
    return images, np.asarray(digits.target, np.int64)


def split(labels: np.ndarray, rng: np.random.Generator,
          test_fraction: float = TEST_FRACTION) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices: test_fraction of each class is held out."""
    train, test = [], []
    for c in range(CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), np.sort(np.concatenate(test))


# --------------------------------------------------------------------------
# Training (plain NumPy, float64)
# --------------------------------------------------------------------------
def init_params(rng: np.random.Generator, n_in: int = SIDE * SIDE, hidden: int = HIDDEN,
                n_out: int = CLASSES) -> Dict[str, np.ndarray]:
    """He-initialised weights, (in, out) layout as fastconv.nn.Linear's "IO"."""
    return {"w1": rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, hidden)),
            "b1": np.zeros(hidden),
            "w2": rng.normal(0.0, np.sqrt(2.0 / hidden), (hidden, n_out)),
            "b2": np.zeros(n_out)}


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def forward(params: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class probabilities for flattened images x (N, 64): the NumPy model."""
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
    return softmax(h @ params["w2"] + params["b2"])


def train(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
          training: Tuple[int, int, float, float] = TRAINING) -> Dict[str, np.ndarray]:
    """Mini-batch Adam on the softmax cross-entropy (+ L2 on the weights).

    x: (N, 64) flattened images, y: (N,) labels. Deterministic given rng.
    """
    epochs, batch, lr, decay = training
    x = np.asarray(x, np.float64)
    params = init_params(rng, x.shape[1])
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    onehot = np.eye(CLASSES)[y]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            xb, tb = x[idx], onehot[idx]
            # forward
            a1 = xb @ params["w1"] + params["b1"]
            h = np.maximum(a1, 0.0)
            p = softmax(h @ params["w2"] + params["b2"])
            # backward: d(mean cross-entropy)/d(logits) = (p - t) / batch
            g_logits = (p - tb) / len(idx)
            g_h = (g_logits @ params["w2"].T) * (a1 > 0)
            grads = {"w2": h.T @ g_logits + decay * params["w2"],
                     "b2": g_logits.sum(axis=0),
                     "w1": xb.T @ g_h + decay * params["w1"],
                     "b1": g_h.sum(axis=0)}
            step += 1
            for k, g in grads.items():
                m, v = moments[k]
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * g * g
                m_hat = m / (1 - beta1 ** step)
                v_hat = v / (1 - beta2 ** step)
                params[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


# --------------------------------------------------------------------------
# The wide image and its reading
# --------------------------------------------------------------------------
def make_strip(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int,
               rng: np.random.Generator) -> Tuple[np.ndarray, List[int]]:
    """A (1, 8, 8*n, 1) float32 image of n digits side by side, and their labels.

    The digits are drawn without replacement from the indices `pool` (the
    test split), cycling over the classes in a fresh random order every ten
    digits so that every class appears.
    """
    by_class = {c: list(rng.permutation(pool[labels[pool] == c])) for c in range(CLASSES)}
    chosen: List[int] = []
    while len(chosen) < n:
        for c in rng.permutation(CLASSES):
            if len(chosen) < n and by_class[int(c)]:
                chosen.append(int(by_class[int(c)].pop()))
        if not any(by_class.values()):
            break
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} digits to draw from; asked for {n}")
    strip = np.concatenate([images[i] for i in chosen], axis=1)      # (8, 8n)
    return np.ascontiguousarray(strip[None, :, :, None], np.float32), [int(labels[i])
                                                                       for i in chosen]


def read_digits(scores: np.ndarray, n: int) -> List[int]:
    """The class of highest score at columns 0, 8, ..., 8(n-1) of a (W', classes) map."""
    return [int(np.argmax(scores[SIDE * k])) for k in range(n)]


def windows(image: np.ndarray) -> List[np.ndarray]:
    """Every stride-1 8x8 window of a (1, 8, W, 1) image, as (1, 8, 8, 1) views."""
    return [image[:, :, j:j + SIDE, :] for j in range(image.shape[2] - SIDE + 1)]


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The shortest of `repeats` timed calls of fn (after one untimed warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------
def build_model(params: Dict[str, np.ndarray]):
    """The trained classifier as a float32 fastconv.nn.Sequential on (N, 8, 8, 1)."""
    from fastconv import nn

    f32 = {k: np.ascontiguousarray(v, np.float32) for k, v in params.items()}
    return nn.Sequential(
        nn.Flatten(order="HWC"),
        nn.Linear(f32["w1"], f32["b1"], activation="relu"),
        nn.Linear(f32["w2"], f32["b2"]),
        nn.Softmax(),
    )


def _pyplot():
    """matplotlib.pyplot on a file-only backend; MissingDependency if not installed."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependency(MATPLOTLIB_HINT) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def run_demo(quick: bool, seed: int = 0, plot: Optional[str] = None) -> dict:
    """Train, convert, read a row of digits in one pass; return the figures.

    Parameters
    ----------
    quick : bool
        10 digits in the wide image and fewer timing repeats (CI), else 40.
    seed : int
        Seeds the split, the initialisation, the batches and the digits drawn.
    plot : str, optional
        A .png path: draw the image and the per-class score map (matplotlib).

    Returns
    -------
    dict
        accuracy (on the held-out split), digits_read, digits_true, matches,
        fcn_seconds (one fully convolutional pass), per_window_seconds (the
        original classifier called on every stride-1 window), speedup (their
        ratio), max_abs_diff (score map vs per-window scores); for the
        report: n_test, train_seconds, windows, image_shape, score_map_shape,
        summary and fcn_summary (the two models' summaries), plot; and the
        trained model (fastconv.nn.Sequential) and the wide image.

    Raises
    ------
    MissingDependency
        scikit-learn (or, with plot, matplotlib) is not installed.
    """
    plt = _pyplot() if plot else None          # fail before any work is done
    images, labels = load_digits()
    from fastconv import nn

    n_digits, fcn_repeats, window_repeats = SIZES[bool(quick)]
    rng = np.random.default_rng(seed)
    train_idx, test_idx = split(labels, rng)
    flat = images.reshape(len(images), -1)

    t0 = time.perf_counter()
    params = train(flat[train_idx], labels[train_idx], rng)
    train_seconds = time.perf_counter() - t0

    model = build_model(params)
    input_shape = (SIDE, SIDE, 1)
    probs = model(images[test_idx, :, :, None], num_threads=THREADS)
    accuracy = float(np.mean(np.argmax(probs, axis=1) == labels[test_idx]))

    fcn = nn.to_fully_convolutional(model, input_shape)
    image, truth = make_strip(images, labels, test_idx, n_digits, rng)
    score_map = fcn(image, num_threads=THREADS)   # (1, 1, 8n-7, 10): ONE pass
    expected_shape = (1, 1, image.shape[2] - SIDE + 1, CLASSES)
    if score_map.shape != expected_shape:
        raise RuntimeError(f"the fully convolutional model gave a {score_map.shape} score "
                           f"map; expected {expected_shape}")
    scores = score_map[0, 0]
    read = read_digits(scores, n_digits)

    wins = windows(image)
    per_window = np.concatenate([model(w, num_threads=THREADS) for w in wins])  # (8n-7, 10)
    max_abs_diff = float(np.max(np.abs(scores.astype(np.float64) - per_window)))

    fcn_seconds = best_time(lambda: fcn(image, num_threads=THREADS), fcn_repeats)
    per_window_seconds = best_time(lambda: [model(w, num_threads=THREADS) for w in wins],
                                   window_repeats)

    result = {
        "accuracy": accuracy,
        "digits_read": read,
        "digits_true": truth,
        "matches": int(sum(r == t for r, t in zip(read, truth))),
        "fcn_seconds": fcn_seconds,
        "per_window_seconds": per_window_seconds,
        "speedup": per_window_seconds / fcn_seconds,
        "max_abs_diff": max_abs_diff,
        "n_test": int(len(test_idx)),
        "train_seconds": train_seconds,
        "windows": len(wins),
        "image_shape": tuple(image.shape),
        "score_map_shape": tuple(score_map.shape),
        "summary": model.summary(input_shape),
        "fcn_summary": fcn.summary(tuple(image.shape[1:])),
        "plot": plot,
        "model": model,
        "image": image,
    }
    if plt is not None:
        draw(plt, plot, image, scores, read, truth)
    return result


def draw(plt, path: str, image: np.ndarray, scores: np.ndarray, read: List[int],
         truth: List[int]) -> None:
    """The wide image over its per-class score map, the read digits marked."""
    n = len(read)
    width = image.shape[2]
    # One x axis for both panels (the column of the image; a window by its
    # left column), so that each digit sits above the windows that start on it.
    fig, (top, bottom) = plt.subplots(2, 1, layout="constrained",
                                      figsize=(max(6.0, 0.5 * n + 2.0), 4.6),
                                      gridspec_kw={"height_ratios": [1, 2.6]})
    top.imshow(image[0, :, :, 0], cmap="gray_r", aspect="auto", interpolation="nearest",
               extent=(-0.5, width - 0.5, SIDE - 0.5, -0.5))
    top.set_title(f"{n} held-out test digits in one {SIDE}x{width} image (true labels below)")
    top.set_yticks([])
    top.set_xlim(-0.5, width - 0.5)
    top.set_xticks([SIDE * k + (SIDE - 1) / 2 for k in range(n)])
    top.set_xticklabels([str(t) for t in truth])
    top.tick_params(axis="x", length=0)
    im = bottom.imshow(scores.T, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                       origin="lower", interpolation="nearest",
                       extent=(-0.5, scores.shape[0] - 0.5, -0.5, CLASSES - 0.5))
    for k, (r, t) in enumerate(zip(read, truth)):
        bottom.plot(SIDE * k, r, marker="o", mfc="none", ms=9, mew=1.5,
                    mec="white" if r == t else "red")
    bottom.set_xlim(-0.5, width - 0.5)
    bottom.set_xticks([SIDE * k for k in range(n)])
    bottom.set_yticks(range(CLASSES))
    bottom.set_ylabel("class")
    bottom.set_xlabel("window (its left column); circles: the digits read at columns "
                      "0, 8, 16, ... (red: wrong)")
    bottom.set_title("score map of the fully convolutional classifier, from one pass")
    fig.colorbar(im, ax=[top, bottom], label="probability", pad=0.01)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def format_report(r: dict) -> str:
    """The figures of run_demo, readably."""
    n = len(r["digits_true"])
    marks = " ".join(" " if a == b else "^" for a, b in zip(r["digits_read"], r["digits_true"]))
    lines = [
        f"classifier (trained in NumPy in {r['train_seconds']:.2f} s):",
        *("  " + s for s in r["summary"].splitlines()),
        f"test accuracy: {100 * r['accuracy']:.2f}% on {r['n_test']} held-out digits",
        "",
        f"fully convolutional, on the {r['image_shape'][1]}x{r['image_shape'][2]} image "
        f"of {n} unseen test digits:",
        *("  " + s for s in r["fcn_summary"].splitlines()),
        f"score map: {r['score_map_shape']} (one answer per stride-1 window)",
        "",
        "digits read: " + " ".join(str(d) for d in r["digits_read"]),
        "digits true: " + " ".join(str(d) for d in r["digits_true"]),
        *(["             " + marks.rstrip()] if marks.strip() else []),
        f"matches: {r['matches']}/{n}",
        "",
        f"one fully convolutional pass over the image: {_ms(r['fcn_seconds'])}",
        f"the classifier on each of the {r['windows']} windows: "
        f"{_ms(r['per_window_seconds'])} ({r['windows']} calls, one per window)",
        f"speedup: {r['speedup']:.1f}x (best of repeated runs, {THREADS} thread"
        f"{'s' if THREADS > 1 else ''} each)",
        f"largest |score map - per-window scores|: {r['max_abs_diff']:.3g}",
    ]
    if r.get("plot"):
        lines.append(f"plot: {r['plot']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`python -m fastconv demo`: 0, 1 if the test accuracy is below 95%, 2 if a package
    is missing."""
    return run_command(run_demo, format_report, args)


def run_command(run_demo: Callable[..., dict], format_report: Callable[[dict], str],
                args: argparse.Namespace) -> int:
    """Run a demo's run_demo and print its report: the exit status of a demo
    command (both demos share it), 0, 1 if the test accuracy is below
    MIN_ACCURACY, 2 if a package is missing."""
    try:
        result = run_demo(args.quick, seed=args.seed, plot=args.plot)
    except MissingDependency as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(result))
    if result["accuracy"] < MIN_ACCURACY:
        print(f"error: the test accuracy, {100 * result['accuracy']:.2f}%, is below "
              f"{100 * MIN_ACCURACY:.0f}%", file=sys.stderr)
        return 1
    return 0
