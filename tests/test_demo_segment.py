"""`python -m fastconv demo segment`: a VGG-style digit classifier trained in
NumPy, made an FCN-8s by fastconv.nn.fcn, labels every pixel of a page of
unseen digits in one pass; scored against the page's truth and timed against
the classifier run on every window. No speed is asserted.

tests/segment_standin.py is a plain-NumPy FCN-8s the real one is checked
against on the demo's own classifier and page.
"""

import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

pytest.importorskip("sklearn")

from fastconv import _demo, _demo_segment as ds, nn  # noqa: E402
from fastconv.__main__ import build_parser, main  # noqa: E402

import segment_standin  # noqa: E402
from tf_reference import tf_conv2d_transpose  # noqa: E402

try:
    import matplotlib  # noqa: F401
    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One run_demo(quick=True) for the module (with a plot if matplotlib is
    here)."""
    plot = str(tmp_path_factory.mktemp("segment") / "segment.png") if HAVE_MATPLOTLIB else None
    return ds.run_demo(quick=True, plot=plot)


@pytest.fixture(scope="module")
def digits():
    images, labels = _demo.load_digits()
    train_idx, test_idx = _demo.split(labels, np.random.default_rng(0))
    return images, labels, train_idx, test_idx


def _python(args, **kwargs):
    """The venv's Python in the temp directory (so that the checkout is not on
    sys.path by accident): the CompletedProcess."""
    return subprocess.run([sys.executable, *args], cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=600, **kwargs)


# --------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------
def test_training_reaches_the_accuracy_threshold(quick):
    # The held-out digits, centred as in scikit-learn; background (class 10)
    # counts as wrong. Seed 0 gives ~97%.
    assert quick["accuracy"] >= ds.MIN_ACCURACY == 0.95
    assert quick["n_test"] == 450
    # the held-out windows: shifted digits and the three kinds of background
    assert quick["background_accuracy"] >= 0.95
    assert quick["digit_window_accuracy"] >= 0.85


def test_the_sequential_equals_the_numpy_model(digits):
    images, labels, train_idx, test_idx = digits
    rng = np.random.default_rng(1)
    x, y = ds.make_windows(images, labels, test_idx[:60], rng)
    params = ds.train(x, y, rng, (1, 32, 3e-3, 1e-4))
    model = ds.build_classifier(params)
    got = model(x.astype(np.float32), num_threads=1).astype(np.float64)
    want = ds.forward(params, x)
    # float32 against float64, the same weights (rounded once to float32):
    # logits of size ~10 agree to ~1e-5 of their size
    assert np.max(np.abs(got - want)) <= 1e-4 * max(1.0, np.max(np.abs(want)))
    assert np.array_equal(np.argmax(got, 1), np.argmax(want, 1))


def test_the_trained_sequential_gives_the_numpy_classes(quick):
    # run_demo compares argmax of both on the held-out digits and windows
    assert quick["n_checked"] == quick["n_test"] + quick["n_windows_test"]
    assert quick["agreement"] == quick["n_checked"]


def test_backward_is_the_gradient():
    rng = np.random.default_rng(2)
    params = ds.init_params(rng)
    for k in params:
        if k.endswith("_b"):
            params[k] = rng.normal(0, 0.1, params[k].shape)
    x = rng.random((3, 8, 8, 1))
    y = np.array([1, ds.BACKGROUND, 3])
    onehot = np.eye(ds.CLASSES)[y]

    def loss(p):
        return -np.mean(np.log(ds.softmax(ds.forward(p, x))[np.arange(3), y]))

    logits, cache = ds._forward(params, x, keep=True)
    grads = ds._backward(params, cache, (ds.softmax(logits) - onehot) / 3)
    assert set(grads) == set(params)
    checked = 0
    for k, value in params.items():
        flat = value.reshape(-1)
        for j in np.linspace(0, flat.size - 1, 5).astype(int):
            old = flat[j]
            flat[j] = old + 1e-6
            up = loss(params)
            flat[j] = old - 1e-6
            down = loss(params)
            flat[j] = old
            assert grads[k].reshape(-1)[j] == pytest.approx((up - down) / 2e-6, abs=1e-7), (k, j)
            checked += 1
    assert checked == 5 * len(params)


def test_windows_are_labelled_as_documented(digits):
    images, labels, _, test_idx = digits
    idx = test_idx[:40]
    x, y = ds.make_windows(images, labels, idx, np.random.default_rng(3))
    per = ds.DIGIT_COPIES + ds.BACKGROUND_COPIES
    assert x.shape == (per * len(idx), 8, 8, 1) and x.dtype == np.float64
    n = ds.DIGIT_COPIES * len(idx)
    assert np.array_equal(y[:n], np.repeat(labels[idx], ds.DIGIT_COPIES))
    assert np.all(y[n:] == ds.BACKGROUND)
    # every digit's first window is the digit itself, on paper
    first = x[:n:ds.DIGIT_COPIES, :, :, 0]
    ink = images[idx] > ds.NOISE_MAX
    assert np.array_equal(first[ink], images[idx][ink])
    assert np.all(first >= images[idx])
    paper = x[x <= ds.NOISE_MAX]
    assert paper.min() >= 0
    # a background window holds at most half of a digit's rows or columns
    # from each of at most two digits: far less ink than a digit window
    ink_digit = (x[:n] > ds.INK).sum(axis=(1, 2, 3))
    ink_back = (x[n:] > ds.INK).sum(axis=(1, 2, 3))
    assert np.median(ink_back) < 0.5 * np.median(ink_digit)
    again, _ = ds.make_windows(images, labels, idx, np.random.default_rng(3))
    assert np.array_equal(x, again)


# --------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape, n", [((67, 101), 20), ((128, 192), 60), ((31, 30), 4)])
def test_page_and_truth(digits, shape, n):
    images, labels, _, test_idx = digits
    page, truth, boxes = ds.make_page(images, labels, test_idx, shape, n, np.random.default_rng(4))
    assert page.shape == truth.shape == shape and page.dtype == np.float32
    assert len(boxes) == n
    s, gap = ds.SIDE, ds.MIN_GAP
    owner = np.full(shape, -1)
    for k, (y, x, c) in enumerate(boxes):
        assert 0 <= y <= shape[0] - s and 0 <= x <= shape[1] - s
        # the boxes never overlap, and are at least MIN_GAP apart
        for y2, x2, _ in boxes[:k]:
            assert abs(y - y2) >= s + gap or abs(x - x2) >= s + gap
        assert np.all(owner[y:y + s, x:x + s] == -1)
        owner[y:y + s, x:x + s] = k
        # the box holds one unseen test digit of its class: its ink is exactly
        # one of the test images of that class
        box = page[y:y + s, x:x + s]
        same = [i for i in test_idx[labels[test_idx] == c]
                if np.array_equal(box[images[i] > ds.NOISE_MAX],
                                  images[i][images[i] > ds.NOISE_MAX])
                and np.all(box[images[i] <= ds.NOISE_MAX] <= ds.NOISE_MAX)]
        assert same, (k, y, x, c)
        # every ink pixel is its class, every other pixel of the box background
        digit = images[same[0]]
        assert np.all(truth[y:y + s, x:x + s][digit > ds.INK] == c)
        assert np.all(truth[y:y + s, x:x + s][digit <= ds.INK] == ds.BACKGROUND)
    assert np.all(truth[owner == -1] == ds.BACKGROUND)
    assert np.all(page[owner == -1] <= ds.NOISE_MAX)
    # on the page, ink and "brighter than INK" are the same pixels
    assert np.array_equal(truth != ds.BACKGROUND, page > ds.INK)


def test_page_is_deterministic_for_a_seed(digits):
    images, labels, _, test_idx = digits
    a = ds.make_page(images, labels, test_idx, (67, 101), 20, np.random.default_rng(5))
    b = ds.make_page(images, labels, test_idx, (67, 101), 20, np.random.default_rng(5))
    c = ds.make_page(images, labels, test_idx, (67, 101), 20, np.random.default_rng(6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[1], c[1])
    # twenty digits cycle through the classes: each twice
    assert sorted(cls for _, _, cls in a[2]) == sorted(2 * list(range(10)))


def test_page_too_small_is_a_value_error(digits):
    images, labels, _, test_idx = digits
    with pytest.raises(ValueError, match="no room for digit"):
        ds.make_page(images, labels, test_idx, (20, 20), 5, np.random.default_rng(7))


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------
BG = ds.BACKGROUND


def test_metrics_on_hand_made_maps():
    truth = np.array([[0, 0, BG],
                      [1, 1, BG]])
    pred = np.array([[0, BG, BG],
                     [1, 0, BG]])
    # class 0: true {(0,0), (0,1)}, predicted {(0,0), (1,1)}: 1 / 3
    # class 1: true {(1,0), (1,1)}, predicted {(1,0)}: 1 / 2
    # background: true {(0,2), (1,2)}, predicted {(0,1), (0,2), (1,2)}: 2 / 3
    iou = ds.iou_per_class(truth, pred)
    assert iou[0] == pytest.approx(1 / 3) and iou[1] == pytest.approx(1 / 2)
    assert iou[BG] == pytest.approx(2 / 3)
    assert np.all(np.isnan(iou[2:BG]))             # in neither map: not counted
    assert ds.mean_iou(truth, pred) == pytest.approx((1 / 3 + 1 / 2 + 2 / 3) / 3)
    assert ds.pixel_accuracy(truth, pred) == pytest.approx(4 / 6)
    cm = ds.confusion(truth, pred)
    assert cm.sum() == 6 and cm[0, 0] == 1 and cm[0, BG] == 1 and cm[1, 0] == 1


def test_metrics_count_a_class_only_predicted():
    truth = np.full((4, 4), BG)
    pred = truth.copy()
    pred[0, 0] = 7                                 # a false digit: IoU 0 for class 7
    assert ds.iou_per_class(truth, pred)[7] == 0
    assert ds.mean_iou(truth, pred) == pytest.approx((0 + 15 / 16) / 2)
    assert ds.pixel_accuracy(truth, pred) == pytest.approx(15 / 16)
    assert ds.mean_iou(truth, truth) == 1.0 and ds.pixel_accuracy(truth, truth) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        ds.confusion(truth, pred[:3])


# --------------------------------------------------------------------------
# The segmenter's skip layers, modelled in NumPy
# --------------------------------------------------------------------------
@pytest.mark.parametrize("n_in, n_out", [(9, 17), (17, 34), (34, 67), (4, 8), (16, 32),
                                         (1, 2), (2, 3)])
def test_upsampling_is_fcn8_vgg_upscore(n_in, n_out):
    # TensorFlow's conv2d_transpose (SAME, the output size given) with
    # fcn8_vgg.py's bilinear 4x4 filter, from the independent reference
    x = np.random.default_rng(8).normal(size=(n_in, n_in + 1, 3))
    out = (n_out, 2 * (n_in + 1))
    got = ds._upsample(x, out)
    want = tf_conv2d_transpose(x[None], segment_standin.bilinear(4, 3), (1,) + out + (3,), 2,
                               "SAME")[0]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-12


def test_segmenter_is_its_zero_skip_scores_plus_the_skip_model(quick):
    # the segmenter built with the fitted skips, on the page, against the
    # zero-skip segmenter plus skip_scores (float32 scores of size ~30)
    assert quick["skip_check"] <= 1e-3
    assert set(quick["skips"]) == {"score_pool4", "score_pool3"}
    (w4, b4), (w3, b3) = quick["skips"]["score_pool4"], quick["skips"]["score_pool3"]
    assert w4.shape == (1, 1, ds.CHANNELS[1], ds.CLASSES) and b4.shape == (ds.CLASSES,)
    assert w3.shape == (1, 1, ds.CHANNELS[0], ds.CLASSES) and b3.shape == (ds.CLASSES,)


# --------------------------------------------------------------------------
# The demo's figures
# --------------------------------------------------------------------------
def test_result_has_the_documented_figures(quick):
    assert quick["page_shape"] == ds.PAGES[True][0] == (67, 101)   # odd: SAME at work
    assert quick["n_digits"] == ds.PAGES[True][1]
    for name in ("fcn", "fcn_zero_skips", "windows"):
        m = quick[name]
        assert m["pixel_accuracy"] == ds.pixel_accuracy(quick["truth"], quick["maps"][name])
        assert m["mean_iou"] == ds.mean_iou(quick["truth"], quick["maps"][name])
        assert quick["maps"][name].shape == quick["page_shape"]
        # most of the page is background, which every method gets mostly right
        assert m["pixel_accuracy"] > 0.85
    assert quick["n_windows"] == 67 * 101
    assert quick["calls"] == math.ceil(67 / (ds.CHUNK // 101)) == 2


def test_the_methods_label_the_digits(quick):
    # The classifier's labels come per window, not per ink pixel, so no
    # method reaches the truth's outline; but both find the digits. Seed 0
    # (the stand-in of nn.fcn): mIoU 0.34 for the windows, 0.23 for the FCN
    # with fitted skips, 0.084 with zero skips (background everywhere: its
    # IoU, 0.92, over the 11 classes). Over seeds 0-7: windows 0.31-0.35,
    # fitted FCN 0.22-0.35, zero skips 0.084-0.093.
    assert quick["windows"]["mean_iou"] > 0.25
    assert quick["fcn"]["mean_iou"] > 0.15
    assert quick["fcn"]["mean_iou"] > quick["fcn_zero_skips"]["mean_iou"] + 0.1


def test_window_baseline_is_the_classifier_on_the_centred_window(quick):
    page, model = quick["page"], quick["classifier"]
    scores = ds.window_scores(model, page, chunk=500)
    padded = np.pad(page, ((3, 4), (3, 4)))
    for i, j in [(0, 0), (66, 100), (30, 50), (12, 99)]:
        window = padded[i:i + 8, j:j + 8][None, :, :, None]
        assert np.array_equal(scores[i, j], model(window, num_threads=1)[0])
    assert np.array_equal(np.argmax(scores, -1), quick["maps"]["windows"])


def test_timings_are_reported(quick):
    for key in ("fcn_seconds", "windows_seconds", "speedup", "train_seconds"):
        assert math.isfinite(quick[key]) and quick[key] > 0, (key, quick[key])
    assert quick["speedup"] == pytest.approx(quick["windows_seconds"] / quick["fcn_seconds"])


@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="needs matplotlib")
def test_plot_is_written(quick):
    with open(quick["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_prints_every_figure(quick):
    text = ds.format_report(quick)
    assert f"test accuracy: {100 * quick['accuracy']:.2f}% on 450 held-out digits" in text
    assert "page: 67x101, 20 unseen test digits" in text
    for name in ("fcn", "windows"):
        m = quick[name]
        assert f"{100 * m['pixel_accuracy']:.2f}% {m['mean_iou']:9.3f}" in text
    assert f"speedup: {quick['speedup']:.1f}x" in text
    assert f"{quick['agreement']}/{quick['n_checked']}" in text


def test_exit_code_1_below_the_accuracy_threshold(quick, monkeypatch, capsys):
    monkeypatch.setattr(ds, "run_demo", lambda *a, **k: dict(quick, accuracy=0.9))
    assert main(["demo", "segment", "--quick"]) == 1
    assert "below 95%" in capsys.readouterr().err


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def test_cli_parses_demo_segment_and_plain_demo():
    parser = build_parser()
    args = parser.parse_args(["demo", "segment", "--quick", "--seed", "3", "--plot", "a.png"])
    assert (args.command, args.mode, args.quick, args.seed, args.plot) == (
        "demo", "segment", True, 3, "a.png")
    args = parser.parse_args(["demo", "--quick", "segment"])
    assert args.mode == "segment" and args.quick
    args = parser.parse_args(["demo"])
    assert (args.mode, args.quick, args.seed, args.plot) == (None, False, 0, None)
    args = parser.parse_args(["demo", "--quick", "--seed", "2"])
    assert (args.mode, args.quick, args.seed) == (None, True, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "segmnet"])


def test_cli_dispatches_demo_and_demo_segment(monkeypatch):
    calls = []
    monkeypatch.setattr(_demo, "run", lambda args: calls.append(("demo", args.quick)) or 0)
    monkeypatch.setattr(ds, "run", lambda args: calls.append(("segment", args.seed)) or 0)
    assert main(["demo", "--quick"]) == 0
    assert main(["demo", "segment", "--seed", "4"]) == 0
    assert calls == [("demo", True), ("segment", 4)]


WITHOUT = ("import sys; sys.modules[{name!r}] = None; "
           "from fastconv.__main__ import main; sys.exit(main({argv!r}))")


def test_missing_sklearn_is_a_message_and_exit_code_2():
    proc = _python(["-c", WITHOUT.format(name="sklearn", argv=["demo", "segment", "--quick"])])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "pip install scikit-learn" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_matplotlib_with_plot_is_a_message_and_exit_code_2():
    path = os.path.join(tempfile.gettempdir(), "fastconv-segment-never-written.png")
    proc = _python(["-c", WITHOUT.format(name="matplotlib",
                                         argv=["demo", "segment", "--quick", "--plot", path])])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "pip install matplotlib" in proc.stderr
    assert not os.path.exists(path)


# --------------------------------------------------------------------------
# The real fastconv.nn.fcn / nn.predict_labels
# --------------------------------------------------------------------------
def test_nn_fcn_equals_the_standin(quick):
    """The real FCN-8s of the trained classifier, with and without the
    fitted skips, against the NumPy stand-in (float64) on the odd-sized
    page, and nn.predict_labels against the argmax."""
    x = quick["page"][None, :, :, None]
    for skips in (None, quick["skips"]):
        real = ds.build_segmenter(quick["classifier"], skips)
        standin = segment_standin.fcn(quick["classifier"], ds.INPUT_SHAPE, **(skips or {}))
        got = real(x, num_threads=1)
        want = standin.forward(x)["upscore32"]
        assert got.shape == want.shape == (1, 67, 101, ds.CLASSES)
        assert np.max(np.abs(got - want)) <= 1e-4 * max(1.0, float(np.max(np.abs(want))))
        labels = np.asarray(nn.predict_labels(real, x))
        assert labels.shape == (1, 67, 101)
        assert np.array_equal(labels, np.argmax(got, axis=-1))


def test_command_line_quick_run_end_to_end():
    """`python -m fastconv demo segment --quick`, the real segmenter, in a
    fresh process."""
    proc = _python(["-m", "fastconv", "demo", "segment", "--quick"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "% on 450 held-out digits" in out and "page: 67x101, 20 unseen test digits" in out
    assert "FCN-8s, one pass" in out and "classifier on every window" in out
    assert "speedup: " in out
