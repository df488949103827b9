"""A plain-NumPy FCN-8s (``fastconv.nn.fcn``'s variant "8s" and
``fastconv.nn.predict_labels``), which the tests of the segmentation demo
(tests/test_demo_segment.py) check the real one against on the demo's own
classifier and page.

It follows the contract the demo is written against, with the ops of
tests/tf_reference.py (TensorFlow's SAME conv2d, max_pool and
conv2d_transpose in float64):

    classifier: a Sequential of pooled conv blocks (Conv2d [+ ReLU] ...,
    MaxPool2d), Flatten, then three Linear layers (fc6, fc7, fc8).
    pools -> 2x2/2 SAME max-pools; fc6 -> a k x k SAME conv (k x k the map
    reaching the Flatten at input_shape), fc7 -> 1x1 + ReLU, fc8 -> score_fr
    (1x1, the classifier's classes when num_classes is None).
    upscore2  = conv2d_transpose(score_fr, bilinear 4, stride 2) -> size of
                the pool before the last ("pool4")
    fuse_pool4 = upscore2 + score_pool4(that pool)     (1x1, zero by default)
    upscore4  = conv2d_transpose(fuse_pool4, bilinear 4, stride 2) -> size of
                the pool before that ("pool3")
    fuse_pool3 = upscore4 + score_pool3(that pool)
    upscore32 = conv2d_transpose(fuse_pool3, bilinear 2S, stride S) -> the
                input's size, S the stride of "pool3".
"""

import math

import numpy as np

from fastconv import nn
from tf_reference import tf_conv2d, tf_conv2d_transpose, tf_max_pool

__all__ = ["fcn", "predict_labels", "bilinear", "StandinFCN"]


def bilinear(ksize, channels):
    """fcn8_vgg.py's get_deconv_filter: (ksize, ksize, channels, channels)."""
    f = math.ceil(ksize / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    t = 1.0 - np.abs(np.arange(ksize) / f - c)
    w = np.zeros((ksize, ksize, channels, channels))
    for i in range(channels):
        w[:, :, i, i] = np.outer(t, t)
    return w


class StandinFCN:
    """The FCN-8s of a classifier; ``model(x)`` -> (N, H, W, classes) float32."""

    def __init__(self, classifier, input_shape, num_classes=None, variant="8s",
                 score_pool4=None, score_pool3=None):
        if variant != "8s":
            raise ValueError(f"the stand-in builds FCN-8s only; got {variant!r}")
        self.blocks = []          # [[(weight, bias, relu), ...], ...], one list per pool
        convs = []
        fcs = []
        shape = tuple(input_shape)
        flat_shape = None
        relu_layers = (nn.ReLU,)
        for layer in classifier:
            if isinstance(layer, nn.Conv2d):
                convs.append([np.asarray(layer.weight, np.float64),
                              np.zeros(layer.out_channels) if layer.bias is None
                              else np.asarray(layer.bias, np.float64),
                              layer.activation == "relu"])
            elif isinstance(layer, relu_layers):
                if fcs:
                    fcs[-1][2] = True
                else:
                    convs[-1][2] = True
            elif isinstance(layer, nn.MaxPool2d):
                if layer.kernel_size != (2, 2) or layer.stride != (2, 2):
                    raise ValueError("the stand-in takes 2x2/2 pools only")
                self.blocks.append(convs)
                convs = []
            elif isinstance(layer, nn.Flatten):
                flat_shape = shape
            elif isinstance(layer, nn.Linear):
                fcs.append([np.asarray(layer.weight, np.float64),
                            np.asarray(layer.bias, np.float64), layer.activation == "relu"])
            else:
                raise ValueError(f"the stand-in does not take {layer!r}")
            shape = layer.output_shape(shape)
        if len(self.blocks) < 3 or len(fcs) != 3 or flat_shape is None or convs:
            raise ValueError("the stand-in needs >= 3 pooled conv blocks, Flatten, 3 Linear")
        kh, kw, c = flat_shape
        (w6, b6, r6), (w7, b7, r7), (w8, b8, _) = fcs
        self.fc = [(w6.reshape(kh, kw, c, -1), b6, r6), (w7[None, None], b7, r7),
                   (w8[None, None], b8, False)]
        self.num_classes = w8.shape[1] if num_classes is None else int(num_classes)
        if self.num_classes != w8.shape[1]:
            raise ValueError("the stand-in keeps the classifier's classes")
        nc = self.num_classes
        chans = [blk[-1][0].shape[3] for blk in self.blocks]
        self.skips = {}
        for name, given, ch in (("score_pool4", score_pool4, chans[-2]),
                                ("score_pool3", score_pool3, chans[-3])):
            if given is None:
                self.skips[name] = (np.zeros((1, 1, ch, nc)), np.zeros(nc))
            else:
                w, b = given
                self.skips[name] = (np.asarray(w, np.float64).reshape(1, 1, ch, nc),
                                    np.asarray(b, np.float64))
        self.final_stride = 2 ** (len(self.blocks) - 2)

    def forward(self, x):
        """Every named map, float64, as a dict."""
        h = np.asarray(x, np.float64)
        named = {"input": h}
        pools = []
        for convs in self.blocks:
            for w, b, relu in convs:
                h = tf_conv2d(h, w, 1, "SAME") + b
                if relu:
                    h = np.maximum(h, 0.0)
            h = tf_max_pool(h, 2, 2, "SAME")
            pools.append(h)
        for w, b, relu in self.fc:
            h = tf_conv2d(h, w, 1, "SAME") + b
            if relu:
                h = np.maximum(h, 0.0)
        named["score_fr"] = h
        nc = self.num_classes
        n = h.shape[0]
        for name, pool, skip in (("upscore2", pools[-2], "score_pool4"),
                                 ("upscore4", pools[-3], "score_pool3")):
            h = tf_conv2d_transpose(h, bilinear(4, nc), (n,) + pool.shape[1:3] + (nc,), 2,
                                    "SAME")
            named[name] = h
            w, b = self.skips[skip]
            named[skip] = tf_conv2d(pool, w, 1, "SAME") + b
            h = h + named[skip]
            named["fuse_pool" + skip[-1]] = h
        s = self.final_stride
        h = tf_conv2d_transpose(h, bilinear(2 * s, nc), (n,) + named["input"].shape[1:3] + (nc,),
                                s, "SAME")
        named["upscore32"] = h
        named["pools"] = pools
        return named

    def __call__(self, x, *, num_threads=None):
        return self.forward(x)["upscore32"].astype(np.float32)


def fcn(classifier, input_shape, num_classes=None, variant="8s", **skips):
    return StandinFCN(classifier, input_shape, num_classes, variant, **skips)


def predict_labels(model, x, num_threads=None):
    return np.argmax(model(x, num_threads=num_threads), axis=-1)
