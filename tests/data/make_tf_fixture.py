"""Check tests/tf_reference.py against real TensorFlow, and write the golden
fixture tests/data/tf_reference_golden.npz.

NOT part of the test suite (it needs TensorFlow, which the tests must not):
run it by hand in a separate environment, e.g.

    python3 -m venv /tmp/tfv && /tmp/tfv/bin/pip install tensorflow-cpu numpy
    /tmp/tfv/bin/python tests/data/make_tf_fixture.py [--no-write]

It prints the number of cases and the largest differences of every grid it
checks (the record of the last run is in tests/tf_reference.py's docstring).
Everything runs in float64 in TensorFlow too, so the differences are at
rounding level. The FCN networks are built here with TensorFlow ops following
fcn{8,16,32}_vgg.py's build() (own code; the weight helpers are written as the
repo's loops, a second formulation next to fcn_reference's vectorised ones).
"""

import math
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tf_reference import (  # noqa: E402
    conv2d_transpose_output_ok,
    tf_conv2d,
    tf_conv2d_transpose,
    tf_max_pool,
)

OUT = os.path.join(HERE, "tf_reference_golden.npz")


class Worst:
    def __init__(self, what):
        self.what, self.count, self.abs, self.rel = what, 0, 0.0, 0.0

    def add(self, ours, theirs):
        theirs = np.asarray(theirs, np.float64)
        assert ours.shape == theirs.shape, (self.what, ours.shape, theirs.shape)
        err = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
        scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
        self.count += 1
        self.abs = max(self.abs, err)
        self.rel = max(self.rel, err / scale if scale else err)

    def report(self):
        print(f"{self.what}: {self.count} cases, max abs error {self.abs:.3g}, "
              f"max relative to max|TF| {self.rel:.3g}")


def tf_transpose(x, w, shape, strides, padding):
    return tf.nn.conv2d_transpose(x, w, shape, strides=[1, strides[0], strides[1], 1],
                                  padding=padding).numpy()


# ---------------------------------------------------------------- the op grids
def check_conv2d_transpose(rng):
    worst = Worst("conv2d_transpose SAME/VALID grid")
    for padding in ("SAME", "VALID"):
        for s in range(1, 5):
            for kh in range(1, 6):
                for kw in range(1, 6):
                    for ho in range(1, 14):
                        wo = (ho * 7) % 13 + 1
                        sh, sw = s, (s % 4) + 1 if kh != kw else s
                        ins = []
                        for size, k, st in ((ho, kh, sh), (wo, kw, sw)):
                            cands = [i for i in range(1, 14)
                                     if conv2d_transpose_output_ok(i, size, k, st, padding)]
                            ins.append(cands)
                        if not ins[0] or not ins[1]:
                            continue
                        hi, wi = ins[0][0], ins[1][0]
                        x = rng.normal(size=(2, hi, wi, 2))
                        w = rng.normal(size=(kh, kw, 3, 2))
                        shape = (2, ho, wo, 3)
                        worst.add(tf_conv2d_transpose(x, w, shape, (sh, sw), padding),
                                  tf_transpose(x, w, shape, (sh, sw), padding))
    worst.report()


def bilinear_loop(ksize, num_classes):
    """get_deconv_filter, written as the repo's loops."""
    f = math.ceil(ksize / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    bilinear = np.zeros([ksize, ksize])
    for x in range(ksize):
        for y in range(ksize):
            bilinear[x, y] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    weights = np.zeros([ksize, ksize, num_classes, num_classes])
    for i in range(num_classes):
        weights[:, :, i, i] = bilinear
    return weights


def check_fcn_upsampling(rng):
    worst = Worst("conv2d_transpose SAME, FCN kernels 4/16/32/64, strides 2/8/16/32")
    kept = {}
    for k, s in ((4, 2), (16, 8), (32, 16), (64, 32)):
        outs = list(range(1, 4 * s + 1))
        for index, ho in enumerate(outs):
            wo = outs[-1 - index]
            hi, wi = -(-ho // s), -(-wo // s)
            for name, w in (("bilinear", bilinear_loop(k, 2)),
                            ("random", rng.normal(size=(k, k, 2, 2)))):
                x = rng.normal(size=(1, hi, wi, 2))
                shape = (1, ho, wo, 2)
                theirs = tf_transpose(x, w, shape, (s, s), "SAME")
                worst.add(tf_conv2d_transpose(x, w, shape, s, "SAME"), theirs)
                # keep a few for the fixture (odd and even, not always a
                # multiple of the stride): random filters for k 4 and 16,
                # the bilinear one (which compresses well) for k 32 and 64
                keep = {4: (3, 4, 5), 16: (9, 16)}.get(k, (s + 3,))
                if ho in keep and (name == "random") == (k <= 16):
                    if k >= 32:  # a narrower output, to keep the file small
                        x, shape = x[:, :, :1, :], (1, ho, s - 3, 2)
                    kept[f"up_k{k}_s{s}_o{shape[1]}x{shape[2]}"] = (x, w, shape, s)
    worst.report()
    return kept


def check_conv2d_and_pool(rng):
    conv = Worst("conv2d SAME/VALID grid")
    pool = Worst("max_pool SAME/VALID grid (all-negative inputs)")
    for padding in ("SAME", "VALID"):
        for s in range(1, 5):
            for h in range(1, 12):
                wd = (h * 5) % 11 + 1
                for kh in range(1, 6):
                    for kw in range(1, 6):
                        if padding == "VALID" and (h < kh or wd < kw):
                            continue
                        x = rng.normal(size=(2, h, wd, 2))
                        w = rng.normal(size=(kh, kw, 2, 3))
                        conv.add(tf_conv2d(x, w, s, padding),
                                 tf.nn.conv2d(x, w, [1, s, s, 1], padding).numpy())
                        if kh <= 4 and kw <= 4:
                            # float32: TF 2.21's float64 MaxPool was seen rounding
                            # its results to float32 (a max of float32 values is exact)
                            xn = (-np.abs(x) - 1.0).astype(np.float32)
                            ours = tf_max_pool(xn, (kh, kw), s, padding)
                            theirs = tf.nn.max_pool2d(xn, [kh, kw], [s, s], padding).numpy()
                            assert np.array_equal(ours, theirs), (padding, s, h, wd, kh, kw)
                            assert np.isfinite(ours).all()
                            pool.add(ours, theirs)
    conv.report()
    pool.report()


def check_validity():
    count = disagree = 0
    for padding in ("SAME", "VALID"):
        for s in range(1, 5):
            for k in range(1, 6):
                for size_in in range(1, 14):
                    for size_out in range(1, 14):
                        x = np.ones((1, size_in, 1, 1))
                        w = np.ones((k, 1, 1, 1))
                        try:
                            tf_transpose(x, w, (1, size_out, 1, 1), (s, 1), padding)
                            tf_ok = True
                        except (tf.errors.InvalidArgumentError, ValueError):
                            tf_ok = False
                        try:
                            tf_conv2d_transpose(x, w, (1, size_out, 1, 1), (s, 1), padding)
                            ours_ok = True
                        except ValueError:
                            ours_ok = False
                        count += 1
                        disagree += tf_ok != ours_ok
    print(f"output_shape validity: {count} (in, out, k, s, padding) cases, "
          f"{disagree} disagreements with TF")
    assert disagree == 0


# ---------------------------------------------------------------- FCN in TF
CONV_LAYERS = (("conv1_1", "conv1_2"), ("conv2_1", "conv2_2"),
               ("conv3_1", "conv3_2", "conv3_3"), ("conv4_1", "conv4_2", "conv4_3"),
               ("conv5_1", "conv5_2", "conv5_3"))


def summary_reshape_loop(fweight, shape, num_new):
    """_summary_reshape, as the repo's loop."""
    num_orig = shape[3]
    shape = list(shape)
    shape[3] = num_new
    assert num_new < num_orig
    n = num_orig // num_new
    avg = np.zeros(shape)
    for i in range(0, num_orig, n):
        idx = i // n
        if idx == num_new:
            break
        avg[:, :, :, idx] = np.mean(fweight[:, :, :, i:i + n], axis=3)
    return avg


def bias_reshape_loop(bweight, num_orig, num_new):
    n = num_orig // num_new
    avg = np.zeros(num_new)
    for i in range(0, num_orig, n):
        idx = i // n
        if idx == num_new:
            break
        avg[idx] = np.mean(bweight[i:i + n])
    return avg


def tf_fcn(params, x, variant, num_classes):
    """build(bgr already preprocessed, train=False) with tf.nn ops, float64."""
    bgr = tf.constant(x, tf.float64)
    layers = {}
    h = bgr
    for block, names in enumerate(CONV_LAYERS, start=1):
        for name in names:
            w, b = params[name]
            h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, w, [1, 1, 1, 1], "SAME"), b))
        h = tf.nn.max_pool(h, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding="SAME")
        layers[f"pool{block}"] = h
    c5 = h.shape[3]
    w6, b6 = params["fc6"]
    k = math.isqrt(w6.shape[0] // c5)
    h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, w6.reshape(k, k, c5, -1), [1, 1, 1, 1], "SAME"), b6))
    w7, b7 = params["fc7"]
    h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, w7.reshape(1, 1, *w7.shape), [1, 1, 1, 1], "SAME"), b7))
    w8, b8 = params["fc8"]
    shape8 = [1, 1, w8.shape[0], w8.shape[1]]
    w8 = summary_reshape_loop(w8.reshape(shape8), shape8, num_classes)
    b8 = bias_reshape_loop(b8, b8.shape[0], num_classes)
    h = tf.nn.bias_add(tf.nn.conv2d(h, w8, [1, 1, 1, 1], "SAME"), b8)
    layers["score_fr"] = h

    def upscore(bottom, shape, ksize, stride):
        new_shape = tf.stack([shape[0], shape[1], shape[2], num_classes])
        return tf.nn.conv2d_transpose(bottom, bilinear_loop(ksize, num_classes), new_shape,
                                      strides=[1, stride, stride, 1], padding="SAME")

    def score(pool, name):
        w, b = params[name]
        return tf.nn.bias_add(tf.nn.conv2d(pool, w.reshape(1, 1, *w.shape), [1, 1, 1, 1], "SAME"), b)

    if variant == "32s":
        up = upscore(h, tf.shape(bgr), 64, 32)
    elif variant == "16s":
        fuse4 = upscore(h, tf.shape(layers["pool4"]), 4, 2) + score(layers["pool4"], "score_pool4")
        up = upscore(fuse4, tf.shape(bgr), 32, 16)
    else:
        fuse4 = upscore(h, tf.shape(layers["pool4"]), 4, 2) + score(layers["pool4"], "score_pool4")
        fuse3 = upscore(fuse4, tf.shape(layers["pool3"]), 4, 2) + score(layers["pool3"], "score_pool3")
        up = upscore(fuse3, tf.shape(bgr), 16, 8)
    return up.numpy()


def small_params(rng, channels, fc, window, num_fc8, num_classes):
    """A scaled-down VGG-style dict (vgg16.npy format); values rounded to
    float32 so the fixture can store them as float32 exactly."""
    def r(std, shape):
        return rng.normal(0, std, shape).astype(np.float32).astype(np.float64)
    params, cin = {}, 3
    for cout, names in zip(channels, CONV_LAYERS):
        for name in names:
            params[name] = (r(math.sqrt(2.0 / (9 * cin)), (3, 3, cin, cout)), r(0.1, (cout,)))
            cin = cout
    rows = window * window * cin
    params["fc6"] = (r(math.sqrt(2.0 / rows), (rows, fc[0])), r(0.1, (fc[0],)))
    params["fc7"] = (r(math.sqrt(2.0 / fc[0]), (fc[0], fc[1])), r(0.1, (fc[1],)))
    params["fc8"] = (r(math.sqrt(2.0 / fc[1]), (fc[1], num_fc8)), r(0.1, (num_fc8,)))
    params["score_pool4"] = (r(0.3, (channels[3], num_classes)), r(0.1, (num_classes,)))
    params["score_pool3"] = (r(0.3, (channels[2], num_classes)), r(0.1, (num_classes,)))
    return params


FCN_CASES = (
    # name, variant, (N, H, W), parameter set
    ("fcn8s_21x29", "8s", (1, 21, 29), "k2"),
    ("fcn16s_21x29", "16s", (1, 21, 29), "k2"),
    ("fcn32s_21x29", "32s", (1, 21, 29), "k2"),
    ("fcn8s_19x23_k3", "8s", (2, 19, 23), "k3"),
)
# parameter set -> (fc6 window, fc8 width K, num_classes); channels
# (2, 4, 4, 8, 8), fc sizes (16, 16)
FCN_PARAMS = {"k2": (2, 11, 3), "k3": (3, 7, 2)}


def main(write=True):
    rng = np.random.default_rng(20240611)
    check_conv2d_transpose(rng)
    kept = check_fcn_upsampling(rng)
    check_conv2d_and_pool(rng)
    check_validity()

    fixture = {}
    for key, (x, w, shape, s) in kept.items():
        x32, w32 = x.astype(np.float32), w.astype(np.float32)
        fixture[key + "/x"] = x32
        fixture[key + "/w"] = w32
        fixture[key + "/stride"] = np.array(s)
        fixture[key + "/out"] = tf_transpose(x32.astype(np.float64), w32.astype(np.float64),
                                             shape, (s, s), "SAME")
    for pname, (window, num_fc8, nc) in FCN_PARAMS.items():
        params = small_params(rng, (2, 4, 4, 8, 8), (16, 16), window, num_fc8, nc)
        fixture[f"params_{pname}/num_classes"] = np.array(nc)
        for layer, (wt, b) in params.items():
            fixture[f"params_{pname}/{layer}/w"] = wt.astype(np.float32)
            fixture[f"params_{pname}/{layer}/b"] = b.astype(np.float32)
        for name, variant, (n, h, w), which in FCN_CASES:
            if which != pname:
                continue
            x = rng.normal(size=(n, h, w, 3)).astype(np.float32)
            theirs = tf_fcn(params, x.astype(np.float64), variant, nc)
            fixture[f"{name}/x"] = x
            fixture[f"{name}/variant"] = np.array(variant)
            fixture[f"{name}/params"] = np.array(pname)
            fixture[f"{name}/upscore"] = theirs
            print(f"{name}: TF output {theirs.shape}, max |.| {np.max(np.abs(theirs)):.3g}")
    if write:
        np.savez_compressed(OUT, **fixture)
        print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes, {len(fixture)} arrays")


if __name__ == "__main__":
    main(write="--no-write" not in sys.argv)
