"""`python -m fastconv demo segment`: a digit classifier made a segmentation network.

A small VGG-style classifier (three pooled 3x3 conv blocks, 8 -> 4 -> 2 -> 1,
then three Linear layers) is trained in NumPy on scikit-learn's 8x8 digits
plus an eleventh class, "background": what an 8x8 window of a page holds
when it is not on a digit. fastconv.nn.fcn turns it into an FCN-8s (the fc
layers as convolutions, SAME pools, bilinear transposed-convolution
upsampling with skip layers from the earlier pools), which labels every
pixel of a page of unseen test digits in ONE pass. Its label map is scored
against the page's ground truth (pixel accuracy, mean IoU) and compared, for
time and for quality, with the classifier run on every stride-1 window.

Classes and ground truth
------------------------
Classes 0-9 are the digits, class 10 (BACKGROUND) everything else. On a page,
a pixel's true class is the digit whose INK covers it (the digit's own
intensity above INK = 0.25, i.e. 5/16 or more on scikit-learn's 0-16 scale),
else background. The paper is noise of at most NOISE_MAX < INK, so on a
page "ink" and "brighter than INK" are the same thing.

The training windows of the classifier (make_windows) are labelled by where
they sit: the window whose corner is (dy, dx) off a digit's 8x8 box is that
digit if |dy| + |dx| <= SHIFT = 2; it is background if it is at least OFF =
4 pixels off every digit in rows or in columns, so that it holds at most
half of any digit's rows or columns: a window mostly off a digit is
background. The windows in between are ambiguous and never trained on.
Background windows are blank paper, a sliver of one digit at the border, or
the slivers of two neighbouring digits (on a page, digits are at least
MIN_GAP = 2 pixels apart, so a digit window never sees a second digit).

The segmenter
-------------
build_segmenter is nn.fcn(classifier, (8, 8, 1), variant="8s"): score_fr
has the classifier's stride, 8, so each of its pixels is the classifier's
answer for one 8x8 block, but SEEN WITH ITS SURROUNDINGS: a padded
convolution of the classifier saw zeros past its window, the FCN's sees the
page (see the README: windows equal the classifier only without padding).
A digit astride blocks is then rarely any block's digit, and with its skip
layers zero (fcn8_vgg.py's default for a network not trained end to end)
the FCN labels nearly everything background. So the demo fits the two skip
layers, score_pool4 and score_pool3 (1x1 convolutions of the stride-4 and
stride-2 pools), to the truth of other pages (fit_skips: a convex problem,
solved in NumPy in about a second), and reports both.

The window baseline labels pixel (i, j) with the classifier's class for the
8x8 window whose corner is (i - 3, j - 3) (the page zero-padded), batched
CHUNK windows per call. Neither method reaches the ink's outline (they
label windows, not strokes), so mean IoUs are modest (~0.3 for the baseline).

scikit-learn (the data) is needed; matplotlib only for --plot.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastconv._demo import (MIN_ACCURACY, MissingDependency, _ms, _pyplot, best_time,
                            load_digits, make_strip, run_command, softmax, split)

__all__ = ["run_demo", "run", "build_classifier", "build_segmenter", "make_page",
           "make_windows", "train", "forward", "window_scores", "fit_skips", "confusion",
           "pixel_accuracy", "iou_per_class", "mean_iou", "MissingDependency", "MIN_ACCURACY"]

SIDE = 8                  # the digits are SIDE x SIDE images, the classifier's input
INPUT_SHAPE = (SIDE, SIDE, 1)
DIGITS = 10
BACKGROUND = 10           # the eleventh class
CLASSES = DIGITS + 1
CLASS_NAMES = [str(d) for d in range(DIGITS)] + ["bg"]
CHANNELS = (16, 32, 32)   # the three conv blocks (3x3, pad 1, ReLU, 2x2 max-pool)
HIDDEN = (64, 64)         # the two hidden Linear layers; the third gives CLASSES
INK = 0.25                # a digit's pixel is ink above this intensity
NOISE_STD, NOISE_MAX = 0.03, 0.15   # the paper: |N(0, NOISE_STD)|, at most NOISE_MAX
MIN_GAP = 2               # pixels between the 8x8 boxes of two digits on a page
SHIFT = 2                 # a window at most this far off a digit is the digit
OFF = 4                   # a window this far off every digit is background
# Training windows per training digit: DIGIT_COPIES of the digit (the first
# one centred, the others shifted by up to SHIFT) and BACKGROUND_COPIES of
# background, drawn as (blank paper, one digit's sliver, two digits' slivers)
# with probabilities BACKGROUND_KINDS.
DIGIT_COPIES, BACKGROUND_COPIES = 3, 2
BACKGROUND_KINDS = (0.2, 0.5, 0.3)
# (epochs, batch size, Adam's step size at the start (a cosine decay takes it
# to 0 at the end), L2 weight decay); the same in --quick: ~3 s.
TRAINING = (4, 64, 1e-2, 1e-4)
# quick -> ((page height, width), digits on it, repeats of the one pass,
# repeats of the window baseline). The quick page has odd sides on purpose:
# SAME pools and the upsampling to an odd size are exercised.
PAGES = {True: ((67, 101), 20, 20, 3), False: ((128, 192), 60, 20, 3)}
# score_pool4 and score_pool3 are fitted on SKIP_PAGES pages of training
# digits (of the quick size, in both modes) by SKIP_STEPS steps of Adam.
SKIP_PAGES, SKIP_STEPS, SKIP_RATE = 2, 150, 0.1
CHUNK = 4096              # windows per call of the classifier in the baseline
THREADS = 1               # as in _demo: one thread for every timed call


# --------------------------------------------------------------------------
# Training windows
# --------------------------------------------------------------------------
def paper(rng: np.random.Generator, shape: Tuple[int, ...]) -> np.ndarray:
    """Blank paper: |N(0, NOISE_STD)| noise, clipped to NOISE_MAX (below INK)."""
    return np.minimum(np.abs(rng.normal(0.0, NOISE_STD, shape)), NOISE_MAX)


def make_windows(images: np.ndarray, labels: np.ndarray, idx: np.ndarray,
                 rng: np.random.Generator, digit_copies: int = DIGIT_COPIES,
                 background_copies: int = BACKGROUND_COPIES) -> Tuple[np.ndarray, np.ndarray]:
    """Labelled 8x8 windows made from the digits images[idx] (see the module).

    Returns (windows (M, 8, 8, 1) float64, labels (M,) int64): for every
    digit, `digit_copies` windows of it (the first centred, the others at a
    random offset (dy, dx) with |dy| + |dx| <= SHIFT), then `background_copies`
    background windows each: blank paper, a sliver of the digit (the window
    OFF to SIDE pixels off it in one axis, up to as far in the other), or
    the slivers of the digit and of another one of idx beside it or below
    it, their boxes MIN_GAP to MIN_GAP + 2 apart, the window at least OFF
    off each along that axis (and it and the other digit up to 3 pixels
    off the first across it). Every window is paper with the digits on it.
    """
    s = SIDE
    idx = np.asarray(idx)
    n = len(idx)
    # A window holds up to two digits, a and b (index -1: none), each at an
    # offset = the window's corner minus the digit's, in -SIDE..SIDE.
    a = np.repeat(idx, digit_copies)
    r = np.arange(-SHIFT, SHIFT + 1)
    grid = np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    allowed = grid[np.abs(grid).sum(1) <= SHIFT]
    off_a = allowed[rng.integers(0, len(allowed), len(a))]
    off_a[::digit_copies] = 0                     # the first copy is centred
    b = np.full(len(a), -1)
    off_b = np.zeros_like(off_a)
    y = labels[a]

    nb = n * background_copies
    kind = rng.choice(3, nb, p=BACKGROUND_KINDS)   # blank, one sliver, two
    first = np.where(kind > 0, np.repeat(idx, background_copies), -1)
    # one sliver: `far` off in one axis, up to `far` in the other
    far = rng.integers(OFF, s + 1, nb)
    near = rng.integers(-far, far + 1)
    far = far * rng.choice((-1, 1), nb)
    sliver = np.stack([far, near], axis=1)
    # two slivers, side by side: the other digit gap + 8 further along,
    # `jitter` off across; the window `along` off the first along the axis
    gap = rng.integers(MIN_GAP, MIN_GAP + 3, nb)
    along = rng.integers(OFF, s + gap - OFF + 1)
    jitter, across = rng.integers(-3, 4, (2, nb))
    pair_first = np.stack([across, along], axis=1)
    pair_second = np.stack([across - jitter, along - s - gap], axis=1)
    turn = rng.random(nb) < 0.5                     # swap the axes
    for offsets in (sliver, pair_first, pair_second):
        offsets[turn] = offsets[turn, ::-1]
    second = np.where(kind == 2, idx[rng.integers(0, n, nb)], -1)
    a = np.concatenate([a, first])
    off_a = np.concatenate([off_a, np.where((kind == 1)[:, None], sliver, pair_first)])
    b = np.concatenate([b, second])
    off_b = np.concatenate([off_b, pair_second])
    y = np.concatenate([y, np.full(nb, BACKGROUND)])

    # Digit k's window at offset (dy, dx) is the (s + dy, s + dx) 8x8 window
    # of the digit padded by s on every side; "digit" -1 is blank.
    padded = np.pad(np.concatenate([images[idx], np.zeros((1, s, s), images.dtype)]),
                    ((0, 0), (s, s), (s, s)))
    views = np.lib.stride_tricks.sliding_window_view(padded, (s, s), axis=(1, 2))
    row = np.full(len(images) + 1, n)               # image index -> row of padded
    row[idx] = np.arange(n)
    x = paper(rng, (len(y), s, s))
    for k, off in ((a, off_a), (b, off_b)):
        np.maximum(x, views[row[k], s + off[:, 0], s + off[:, 1]], out=x)
    return x[:, :, :, None], np.asarray(y, np.int64)


# --------------------------------------------------------------------------
# The classifier in NumPy (float64, NHWC, HWIO weights, (in, out) Linears)
# --------------------------------------------------------------------------
def init_params(rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """He-initialised weights: conv1..conv3 (3, 3, in, out), fc1..fc3 (in, out)."""
    params: Dict[str, np.ndarray] = {}
    cin = INPUT_SHAPE[2]
    for i, cout in enumerate(CHANNELS, 1):
        params[f"conv{i}_w"] = rng.normal(0.0, np.sqrt(2.0 / (9 * cin)), (3, 3, cin, cout))
        params[f"conv{i}_b"] = np.zeros(cout)
        cin = cout
    sizes = (cin,) + HIDDEN + (CLASSES,)          # the map reaching Flatten is 1x1
    for i in range(3):
        params[f"fc{i + 1}_w"] = rng.normal(0.0, np.sqrt(2.0 / sizes[i]), sizes[i:i + 2])
        params[f"fc{i + 1}_b"] = np.zeros(sizes[i + 1])
    return params


def _im2col(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N*H*W, 9*C): the 3x3 neighbourhoods (zero padding 1),
    in the (kh, kw, c) order of an HWIO kernel's rows."""
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.empty((n, h, w, 3, 3, c))
    for i in range(3):
        for j in range(3):
            cols[:, :, :, i, j] = xp[:, i:i + h, j:j + w]
    return cols.reshape(n * h * w, 9 * c)


def _col2im(g: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """The adjoint of _im2col: (N*H*W, 9*C) -> (N, H, W, C), overlaps summed."""
    n, h, w, c = shape
    g = g.reshape(n, h, w, 3, 3, c)
    out = np.zeros((n, h + 2, w + 2, c))
    for i in range(3):
        for j in range(3):
            out[:, i:i + h, j:j + w] += g[:, :, :, i, j]
    return out[:, 1:-1, 1:-1]


def _pool(x: np.ndarray) -> np.ndarray:
    """2x2/2 max-pool of an even-sided (N, H, W, C) map."""
    return np.maximum(np.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
                      np.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


def _unpool(g: np.ndarray, x: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """The gradient of _pool at x: each window's g sent to its maximum (the
    first one in row-major order on a tie: saturated digit pixels, 16/16,
    can give two equal values)."""
    n, h2, w2, c = g.shape
    out = np.zeros((n, h2, 2, w2, 2, c))
    taken = np.zeros(g.shape, bool)
    for i in range(2):
        for j in range(2):
            win = (x[:, i::2, j::2] == pooled) & ~taken
            taken |= win
            out[:, :, i, :, j] = win * g
    return out.reshape(x.shape)


def _forward(params: Dict[str, np.ndarray], x: np.ndarray, keep: bool = False):
    """Logits (N, CLASSES) of windows x (N, 8, 8, 1); with keep, also what
    the backward pass needs."""
    cache = []
    h = np.asarray(x, np.float64)
    for i in range(1, len(CHANNELS) + 1):
        w = params[f"conv{i}_w"]
        cols = _im2col(h)
        a = (cols @ w.reshape(-1, w.shape[3]) + params[f"conv{i}_b"]).reshape(
            h.shape[:3] + (w.shape[3],))
        r = np.maximum(a, 0.0)
        p = _pool(r)
        cache.append((h.shape, cols, a, r, p))
        h = p
    h = h.reshape(len(h), -1)                  # Flatten ("HWC"; the map is 1x1)
    for i in range(1, 4):
        a = h @ params[f"fc{i}_w"] + params[f"fc{i}_b"]
        cache.append((h, a))
        h = np.maximum(a, 0.0) if i < 3 else a
    return (h, cache) if keep else h


def forward(params: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class scores (logits, N x CLASSES) of the NumPy model on x (N, 8, 8, 1)."""
    return _forward(params, x)


def _backward(params: Dict[str, np.ndarray], cache, g: np.ndarray) -> Dict[str, np.ndarray]:
    """Gradients of the parameters given g = d(loss)/d(logits)."""
    grads: Dict[str, np.ndarray] = {}
    nconv = len(CHANNELS)
    for i in range(3, 0, -1):
        h, a = cache[nconv + i - 1]
        if i < 3:
            g = g * (a > 0)
        grads[f"fc{i}_w"] = h.T @ g
        grads[f"fc{i}_b"] = g.sum(axis=0)
        g = g @ params[f"fc{i}_w"].T
    g = g.reshape(len(g), 1, 1, -1)
    for i in range(nconv, 0, -1):
        shape, cols, a, r, p = cache[i - 1]
        g = _unpool(g, r, p) * (a > 0)
        w = params[f"conv{i}_w"]
        g2 = g.reshape(-1, w.shape[3])
        grads[f"conv{i}_w"] = (cols.T @ g2).reshape(w.shape)
        grads[f"conv{i}_b"] = g2.sum(axis=0)
        if i > 1:
            g = _col2im(g2 @ w.reshape(-1, w.shape[3]).T, shape)
    return grads


def train(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
          training: Tuple[int, int, float, float] = TRAINING) -> Dict[str, np.ndarray]:
    """Mini-batch Adam on the softmax cross-entropy (+ L2 on the weights).

    x: (N, 8, 8, 1) windows, y: (N,) classes 0..10. Deterministic given rng.
    """
    epochs, batch, lr, decay = training
    x = np.asarray(x, np.float64)
    params = init_params(rng)
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    onehot = np.eye(CLASSES)[y]
    step = 0
    steps = epochs * (-(-len(x) // batch))
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            logits, cache = _forward(params, x[idx], keep=True)
            # d(mean cross-entropy)/d(logits) = (softmax - onehot) / batch
            grads = _backward(params, cache, (softmax(logits) - onehot[idx]) / len(idx))
            step += 1
            rate = lr * 0.5 * (1 + np.cos(np.pi * (step - 1) / steps))
            for k, g in grads.items():
                if k.endswith("_w"):
                    g = g + decay * params[k]
                m, v = moments[k]
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * g * g
                m_hat = m / (1 - beta1 ** step)
                v_hat = v / (1 - beta2 ** step)
                params[k] -= rate * m_hat / (np.sqrt(v_hat) + eps)
    return params


def build_classifier(params: Dict[str, np.ndarray]):
    """The trained classifier as a float32 fastconv.nn.Sequential on (N, 8, 8, 1):
    three blocks Conv2d(3x3, padding 1, relu) + MaxPool2d(2), Flatten, three
    Linear (relu, relu, none): logits of the CLASSES classes."""
    from fastconv import nn

    f32 = {k: np.ascontiguousarray(v, np.float32) for k, v in params.items()}
    layers = []
    for i in range(1, len(CHANNELS) + 1):
        layers += [nn.Conv2d(f32[f"conv{i}_w"], f32[f"conv{i}_b"], padding=1,
                             activation="relu"),
                   nn.MaxPool2d(2)]
    layers.append(nn.Flatten(order="HWC"))
    for i in range(1, 4):
        layers.append(nn.Linear(f32[f"fc{i}_w"], f32[f"fc{i}_b"],
                                activation="relu" if i < 3 else None))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------
def make_page(images: np.ndarray, labels: np.ndarray, pool: np.ndarray,
              shape: Tuple[int, int], n_digits: int, rng: np.random.Generator,
              tries: int = 2000) -> Tuple[np.ndarray, np.ndarray, List[Tuple[int, int, int]]]:
    """A page of n_digits digits from `pool` (the test split) and its truth.

    The digits are drawn as _demo.make_strip draws them (every class in turn)
    and put at uniformly random positions, each new one at the first of up
    to `tries` draws whose 8x8 box is at least MIN_GAP pixels from every box
    already placed (in rows or in columns), on paper (see paper()).

    Returns
    -------
    page : (H, W) float32
    truth : (H, W) int64
        The digit's class where its ink (intensity above INK) lies, else
        BACKGROUND.
    boxes : list of (row, column, class)
        The top-left corner of each digit's box.

    Raises
    ------
    ValueError
        A digit found no place (the page is too small for n_digits).
    """
    h, w = shape
    s = SIDE
    strip, classes = make_strip(images, labels, pool, n_digits, rng)
    digits = strip[0, :, :, 0].reshape(s, n_digits, s).transpose(1, 0, 2)
    page = paper(rng, (h, w))
    truth = np.full((h, w), BACKGROUND, np.int64)
    corners = np.zeros((0, 2), np.int64)
    boxes: List[Tuple[int, int, int]] = []
    for digit, cls in zip(digits, classes):
        for _ in range(tries):
            yx = np.array([rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)])
            if np.all(np.any(np.abs(corners - yx) >= s + MIN_GAP, axis=1)):
                break
        else:
            raise ValueError(f"no room for digit {len(boxes) + 1} of {n_digits} on a "
                             f"{h}x{w} page")
        y, x = (int(v) for v in yx)
        corners = np.vstack([corners, yx])
        box = page[y:y + s, x:x + s]
        np.maximum(box, digit, out=box)
        truth[y:y + s, x:x + s][digit > INK] = cls
        boxes.append((y, x, int(cls)))
    return page.astype(np.float32), truth, boxes


# --------------------------------------------------------------------------
# The segmenter, and its two skip layers fitted in NumPy
# --------------------------------------------------------------------------
def build_segmenter(classifier, skips: Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]] = None):
    """The FCN-8s of the classifier: (N, H, W, 1) pages -> (N, H, W, CLASSES)
    scores, from fastconv.nn.fcn.

    skips: None (score_pool4 and score_pool3 zero), or {"score_pool4":
    (weight (1, 1, C, CLASSES) HWIO, bias (CLASSES,)), "score_pool3": ...}
    (fit_skips' result), passed to nn.fcn by those names.
    """
    from fastconv import nn

    return nn.fcn(classifier, INPUT_SHAPE, num_classes=None, variant="8s",
                  **(skips or {}))


def label_map(segmenter, page: np.ndarray) -> np.ndarray:
    """The per-pixel classes (H, W) the segmenter gives a (H, W) page."""
    from fastconv import nn

    return np.asarray(nn.predict_labels(segmenter, page[None, :, :, None],
                                        num_threads=THREADS))[0]


def _upsampling(n_in: int, n_out: int, stride: int = 2, size: int = 4) -> np.ndarray:
    """(n_out, n_in): one axis of the segmenter's upsampling, a SAME transposed
    convolution (TensorFlow's conv2d_transpose with the output size given, as
    fcn8_vgg.py's upscore layers) with fcn8_vgg.py's bilinear filter, which
    is separable and acts on each class alone. Output o takes input i with
    weight t[o + pad - i * stride], pad the SAME padding of a conv2d over
    n_out pixels."""
    f = -(-size // 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    t = 1 - np.abs(np.arange(size) / f - c)
    pad = max((-(-n_out // stride) - 1) * stride + size - n_out, 0) // 2
    tap = np.arange(n_out)[:, None] + pad - stride * np.arange(n_in)[None, :]
    inside = (tap >= 0) & (tap < size)
    return np.where(inside, t[np.clip(tap, 0, size - 1)], 0.0)


def _upsample(x: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """(h, w, C) -> (H, W, C) by _upsampling along each axis."""
    a, b = _upsampling(x.shape[0], shape[0]), _upsampling(x.shape[1], shape[1])
    return np.einsum("oi,ijc,pj->opc", a, x, b, optimize=True)


def skip_features(classifier, page: np.ndarray) -> np.ndarray:
    """(H*W, C2 + 1 + C1 + 1): what score_pool4 and score_pool3 add to the
    segmenter's scores, as features of each pixel.

    pool2 and pool1 (the pools before the last one and before that, SAME)
    are computed by the classifier's own layers (build_classifier's: a
    Conv2d with its ReLU, then the pool, per block). score_pool4 (1x1 on pool2,
    weight W4, bias b4) is upsampled by upscore4 and upscore32 before it
    reaches the output, score_pool3 (on pool1) by upscore32; the upsampling
    acts on each channel alike, so it commutes with the 1x1 layers and the
    scores are base + U(pool2) W4 + U(1) b4 + V(pool1) W3 + V(1) b3, linear
    in (W4, b4, W3, b3): these features times stack([W4, b4, W3, b3]).
    """
    from fastconv import nn

    h, w = page.shape
    x = page[None, :, :, None].astype(np.float32)
    maps = []
    for i in (0, 2):                    # blocks 1 and 2: Conv2d, MaxPool2d
        x = nn.MaxPool2d(2, ceil_mode=True)(classifier[i](x, num_threads=THREADS))
        maps.append(x[0].astype(np.float64))
    pool1, pool2 = maps
    ones2 = np.ones(pool2.shape[:2] + (1,))
    ones1 = np.ones(pool1.shape[:2] + (1,))
    up2 = _upsample(_upsample(np.concatenate([pool2, ones2], -1), pool1.shape[:2]), (h, w))
    up1 = _upsample(np.concatenate([pool1, ones1], -1), (h, w))
    return np.concatenate([up2, up1], -1).reshape(h * w, -1)


def fit_skips(classifier, base_scores: Sequence[np.ndarray], pages: Sequence[np.ndarray],
              truths: Sequence[np.ndarray], steps: int = SKIP_STEPS,
              rate: float = SKIP_RATE) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """score_pool4 and score_pool3 fitted to pages with known truth.

    base_scores: the segmenter's (H, W, CLASSES) scores of each page with
    zero skips. The skips' contribution is linear in their parameters (see
    skip_features), so this is a multinomial logistic regression of the
    pixels' true classes with the base scores as a fixed offset: convex,
    fitted by full-batch Adam from zero. Returns build_segmenter's `skips`.
    """
    feats = np.concatenate([skip_features(classifier, p) for p in pages])
    base = np.concatenate([np.asarray(b, np.float64).reshape(-1, CLASSES)
                           for b in base_scores])
    onehot = np.eye(CLASSES)[np.concatenate([t.ravel() for t in truths])]
    theta = np.zeros((feats.shape[1], CLASSES))
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for step in range(1, steps + 1):
        g = feats.T @ (softmax(base + feats @ theta) - onehot) / len(feats)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        theta -= rate * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    c2 = classifier[2].out_channels
    c1 = classifier[0].out_channels
    w4, b4 = theta[:c2], theta[c2]
    w3, b3 = theta[c2 + 1:c2 + 1 + c1], theta[c2 + 1 + c1]
    return {"score_pool4": (w4.reshape(1, 1, c2, CLASSES).astype(np.float32),
                            b4.astype(np.float32)),
            "score_pool3": (w3.reshape(1, 1, c1, CLASSES).astype(np.float32),
                            b3.astype(np.float32))}


def skip_scores(classifier, page: np.ndarray,
                skips: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(H, W, CLASSES): what the skip layers add to the segmenter's scores of
    the page, computed in NumPy (skip_features): the segmenter with them
    should give its zero-skip scores plus these."""
    (w4, b4), (w3, b3) = skips["score_pool4"], skips["score_pool3"]
    theta = np.concatenate([np.reshape(w4, (-1, CLASSES)), np.reshape(b4, (1, CLASSES)),
                            np.reshape(w3, (-1, CLASSES)), np.reshape(b3, (1, CLASSES))])
    return (skip_features(classifier, page) @ theta.astype(np.float64)).reshape(
        page.shape + (CLASSES,))


# --------------------------------------------------------------------------
# The baseline: the classifier on every window
# --------------------------------------------------------------------------
# The window of pixel (i, j) has its corner at (i - 3, j - 3): 3 rows above
# the pixel and 4 below (as an even SAME kernel pads), the page zero-padded.
BEFORE = (SIDE - 1) // 2


def window_scores(classifier, page: np.ndarray, chunk: int = CHUNK,
                  num_threads: Optional[int] = THREADS) -> np.ndarray:
    """The classifier's scores (H, W, CLASSES) on the window of every pixel
    of the (H, W) page, ~chunk windows (whole rows of them) per call."""
    h, w = page.shape
    padded = np.pad(np.asarray(page, np.float32),
                    ((BEFORE, SIDE - 1 - BEFORE), (BEFORE, SIDE - 1 - BEFORE)))
    views = np.lib.stride_tricks.sliding_window_view(padded, (SIDE, SIDE))  # (H, W, 8, 8)
    rows = max(1, chunk // w)
    out = np.empty((h, w, CLASSES), np.float32)
    for r in range(0, h, rows):
        batch = np.ascontiguousarray(views[r:r + rows]).reshape(-1, SIDE, SIDE, 1)
        out[r:r + rows] = classifier(batch, num_threads=num_threads).reshape(-1, w, CLASSES)
    return out


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------
def confusion(truth: np.ndarray, pred: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """(classes, classes) pixel counts: row the true class, column the predicted."""
    t = np.asarray(truth, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction differ in shape: {np.shape(truth)} vs "
                         f"{np.shape(pred)}")
    return np.bincount(t * classes + p, minlength=classes * classes).reshape(classes, classes)


def pixel_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """The fraction of pixels whose predicted class is the true one."""
    cm = confusion(truth, pred)
    return float(np.trace(cm) / cm.sum())


def iou_per_class(truth: np.ndarray, pred: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """|pred == c and truth == c| / |pred == c or truth == c| for each class c;
    NaN for a class in neither."""
    cm = confusion(truth, pred, classes).astype(np.float64)
    inter = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def mean_iou(truth: np.ndarray, pred: np.ndarray, classes: int = CLASSES) -> float:
    """The mean of iou_per_class over the classes present in truth or prediction."""
    iou = iou_per_class(truth, pred, classes)
    return float(np.mean(iou[~np.isnan(iou)]))


# --------------------------------------------------------------------------
# The plot
# --------------------------------------------------------------------------
def _class_colours():
    """One colour per class: tab10 for the digits, white for background."""
    import matplotlib
    from matplotlib.colors import ListedColormap
    colours = [matplotlib.colormaps["tab10"](d) for d in range(DIGITS)] + [(1, 1, 1, 1)]
    return ListedColormap(colours)


def draw(plt, path: str, page: np.ndarray, truth: np.ndarray,
         maps: Sequence[Tuple[str, np.ndarray]]) -> None:
    """The page and its ground truth, then for each (title, label map) of
    `maps` the map and its errors (wrong pixels highlighted on the page)."""
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    cmap = _class_colours()
    norm = BoundaryNorm(np.arange(CLASSES + 1) - 0.5, CLASSES)
    h, w = page.shape
    rows = 1 + len(maps)
    fig, axes = plt.subplots(rows, 2, layout="constrained", squeeze=False,
                             figsize=(2 * 3.2 * w / h + 1.2, 3.0 * rows))
    axes[0, 0].imshow(page, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes[0, 0].set_title(f"the {h}x{w} page")
    im = axes[0, 1].imshow(truth, cmap=cmap, norm=norm, interpolation="nearest")
    axes[0, 1].set_title(f"ground truth (ink above {INK})")
    # errors: a wrong label on a digit's ink (missed or misread), and a
    # digit where there is none
    err_cmap = ListedColormap([(1, 1, 1, 0), (0.85, 0.1, 0.1, 1), (1.0, 0.6, 0.0, 1)])
    for r, (title, labels) in enumerate(maps, 1):
        axes[r, 0].imshow(labels, cmap=cmap, norm=norm, interpolation="nearest")
        axes[r, 0].set_title(title)
        kind = np.where(labels == truth, 0, np.where(truth != BACKGROUND, 1, 2))
        axes[r, 1].imshow(page, cmap="gray_r", vmin=0, vmax=2.5, interpolation="nearest")
        axes[r, 1].imshow(kind, cmap=err_cmap, vmin=-0.5, vmax=2.5, interpolation="nearest")
        acc = float(np.mean(labels == truth))
        axes[r, 1].set_title(f"its errors ({100 * (1 - acc):.1f}% of the pixels)")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(im, ax=axes[:, 1].tolist(), ticks=range(CLASSES), shrink=0.6,
                       label="class", pad=0.02)
    bar.ax.set_yticklabels(CLASS_NAMES)
    fig.legend(handles=[Patch(color=err_cmap(1), label="ink given a wrong class"),
                        Patch(color=err_cmap(2), label="a digit where there is no ink")],
               loc="outside lower center", ncols=2, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------
def run_demo(quick: bool, seed: int = 0, plot: Optional[str] = None) -> dict:
    """Train, build the segmenter, label a page in one pass; return the figures.

    Parameters
    ----------
    quick : bool
        A 67x101 page of 20 digits (CI), else 128x192 with 60.
    seed : int
        Seeds the split, the windows, the training, the pages.
    plot : str, optional
        A .png path: draw the page, the truth and both label maps with their
        errors (matplotlib).

    Returns
    -------
    dict
        accuracy (the classifier on the held-out digits), window_accuracy,
        digit_window_accuracy, background_accuracy (on held-out windows),
        agreement and n_checked (the float32 Sequential vs the NumPy model,
        argmax, on the held-out digits and windows); for the page and each
        method ("fcn": the segmenter with its fitted skips, "fcn_zero_skips",
        "windows": the classifier on every window): pixel_accuracy,
        mean_iou, iou (per class); fcn_seconds, windows_seconds, speedup;
        skip_check (largest |segmenter - (zero-skip segmenter + skip_scores)|);
        for the report: n_test, n_windows_train, n_windows_test, train_seconds,
        skip_seconds, page_shape, n_digits, ink_fraction, n_windows (of the
        baseline), calls, summary, plot; and the classifier (the float32
        Sequential), segmenter, skips (fit_skips' result), page, truth,
        boxes (make_page's) and maps (the three label maps, by method).

    Raises
    ------
    MissingDependency
        scikit-learn (or, with plot, matplotlib) is not installed.
    """
    plt = _pyplot() if plot else None          # fail before any work is done
    images, labels = load_digits()

    shape, n_digits, fcn_repeats, window_repeats = PAGES[bool(quick)]
    rng = np.random.default_rng(seed)
    train_idx, test_idx = split(labels, rng)
    x_train, y_train = make_windows(images, labels, train_idx, rng)
    x_test, y_test = make_windows(images, labels, test_idx, rng)

    t0 = time.perf_counter()
    with _one_blas_thread():
        params = train(x_train, y_train, rng)
    train_seconds = time.perf_counter() - t0

    classifier = build_classifier(params)
    digits = images[test_idx, :, :, None]
    checked = np.concatenate([digits.astype(np.float64), x_test])
    numpy_pred = np.argmax(forward(params, checked), axis=1)
    fast_pred = np.argmax(classifier(checked.astype(np.float32), num_threads=THREADS), axis=1)
    n_digit = len(test_idx)
    fast_digits, fast_windows = fast_pred[:n_digit], fast_pred[n_digit:]
    is_digit = y_test != BACKGROUND

    # The skip layers, fitted on pages of training digits
    t0 = time.perf_counter()
    plain = build_segmenter(classifier)
    fit_pages = [make_page(images, labels, train_idx, PAGES[True][0], PAGES[True][1], rng)
                 for _ in range(SKIP_PAGES)]
    base = [plain(p[None, :, :, None], num_threads=THREADS)[0] for p, _, _ in fit_pages]
    with _one_blas_thread():
        skips = fit_skips(classifier, base, [p for p, _, _ in fit_pages],
                          [t for _, t, _ in fit_pages])
    segmenter = build_segmenter(classifier, skips)
    skip_seconds = time.perf_counter() - t0

    # The page, labelled three ways
    page, truth, boxes = make_page(images, labels, test_idx, shape, n_digits, rng)
    x = page[None, :, :, None]
    scores = segmenter(x, num_threads=THREADS)
    expected = (1,) + page.shape + (CLASSES,)
    if tuple(scores.shape) != expected:
        raise RuntimeError(f"the segmenter gave scores of shape {tuple(scores.shape)}; "
                           f"expected {expected}")
    plain_scores = plain(x, num_threads=THREADS)[0]
    skip_check = float(np.max(np.abs(scores[0] - (plain_scores
                                                  + skip_scores(classifier, page, skips)))))
    maps = {"fcn": label_map(segmenter, page),
            "fcn_zero_skips": label_map(plain, page),
            "windows": np.argmax(window_scores(classifier, page), axis=-1)}

    fcn_seconds = best_time(lambda: segmenter(x, num_threads=THREADS), fcn_repeats)
    windows_seconds = best_time(lambda: window_scores(classifier, page), window_repeats)

    result = {
        "accuracy": float(np.mean(fast_digits == labels[test_idx])),
        "window_accuracy": float(np.mean(fast_windows == y_test)),
        "digit_window_accuracy": float(np.mean(fast_windows[is_digit] == y_test[is_digit])),
        "background_accuracy": float(np.mean(fast_windows[~is_digit] == BACKGROUND)),
        "agreement": int(np.sum(numpy_pred == fast_pred)),
        "n_checked": int(len(fast_pred)),
        "fcn_seconds": fcn_seconds,
        "windows_seconds": windows_seconds,
        "speedup": windows_seconds / fcn_seconds,
        "skip_check": skip_check,
        "n_test": n_digit,
        "n_windows_train": int(len(y_train)),
        "n_windows_test": int(len(y_test)),
        "train_seconds": train_seconds,
        "skip_seconds": skip_seconds,
        "page_shape": page.shape,
        "n_digits": len(boxes),
        "ink_fraction": float(np.mean(truth != BACKGROUND)),
        "n_windows": int(page.size),
        "calls": -(-page.shape[0] // max(1, CHUNK // page.shape[1])),
        "summary": classifier.summary(INPUT_SHAPE),
        "plot": plot,
        "classifier": classifier,
        "segmenter": segmenter,
        "skips": skips,
        "page": page,
        "truth": truth,
        "boxes": boxes,
        "maps": maps,
    }
    for name, pred in maps.items():
        result[name] = {"pixel_accuracy": pixel_accuracy(truth, pred),
                        "mean_iou": mean_iou(truth, pred),
                        "iou": iou_per_class(truth, pred)}
    if plt is not None:
        draw(plt, plot, page, truth,
             [("FCN-8s, one pass (skips fitted)", maps["fcn"]),
              ("the classifier on every window", maps["windows"])])
    return result


class _one_blas_thread:
    """A context in which NumPy's BLAS runs one thread (threadpoolctl, which
    scikit-learn brings; nothing if absent). The training's matrices are
    small: on a shared machine more threads only wait for one another."""

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            self._limit = None
        else:
            self._limit = threadpool_limits(1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._limit is not None:
            self._limit.restore_original_limits()
        return False


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def format_report(r: dict) -> str:
    """The figures of run_demo, readably."""
    h, w = r["page_shape"]
    rows = [("FCN-8s, one pass", r["fcn"], _ms(r["fcn_seconds"])),
            ("  (the same, skips zero)", r["fcn_zero_skips"], ""),
            ("classifier on every window", r["windows"], _ms(r["windows_seconds"]))]
    lines = [
        f"classifier (trained in NumPy in {r['train_seconds']:.2f} s on "
        f"{r['n_windows_train']} windows):",
        *("  " + s for s in r["summary"].splitlines()),
        f"test accuracy: {100 * r['accuracy']:.2f}% on {r['n_test']} held-out digits "
        f"(classes 0-9 of {CLASSES}: 10 is background)",
        f"held-out windows: {100 * r['window_accuracy']:.2f}% of {r['n_windows_test']} "
        f"(digits shifted by |dy| + |dx| <= {SHIFT}: {100 * r['digit_window_accuracy']:.2f}%, "
        f"background: {100 * r['background_accuracy']:.2f}%)",
        f"float32 Sequential vs the NumPy model: the same class on {r['agreement']}/"
        f"{r['n_checked']} held-out digits and windows",
        "",
        f"skip layers score_pool4, score_pool3 fitted in {r['skip_seconds']:.2f} s on "
        f"{SKIP_PAGES} pages of training digits "
        f"(largest |segmenter - NumPy model of its skips|: {r['skip_check']:.2g})",
        f"page: {h}x{w}, {r['n_digits']} unseen test digits, "
        f"{100 * r['ink_fraction']:.1f}% of its pixels ink",
        f"  {'':28s} {'pixel accuracy':>14s} {'mean IoU':>9s} {'time':>11s}",
        *(f"  {name:28s} {100 * m['pixel_accuracy']:13.2f}% {m['mean_iou']:9.3f} {t:>11s}"
          for name, m, t in rows),
        f"the windows: {r['n_windows']} of {SIDE}x{SIDE}, one per pixel, in {r['calls']} "
        f"calls of up to {CHUNK}",
        f"speedup: {r['speedup']:.1f}x (best of repeated runs, {THREADS} thread"
        f"{'s' if THREADS > 1 else ''} each)",
    ]
    if r.get("plot"):
        lines.append(f"plot: {r['plot']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`python -m fastconv demo segment`: 0, 1 if the test accuracy is below 95%,
    2 if a package is missing."""
    return run_command(run_demo, format_report, args)
