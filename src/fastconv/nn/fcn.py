"""The fully convolutional networks for semantic segmentation of Long,
Shelhamer and Darrell (FCN-32s, FCN-16s, FCN-8s), built from a classifier
as MarvinTeichmann/tensorflow-fcn's fcn32_vgg.py, fcn16_vgg.py and
fcn8_vgg.py build them from VGG16: nn.fcn and nn.predict_labels.

The classifier's fully-connected layers become convolutions (fc6 a k x k
convolution over pool5's map, fc7 and fc8 1x1; fc8 becomes score_fr, its
classes averaged in groups when fewer are asked for), its pools SAME pools
(ceil mode: an odd side rounds up), and the coarse score map is upsampled
by transposed convolutions that start as bilinear interpolation, each given
the exact size of the tensor it is added to, with 1x1 score layers on
earlier pools added in (the skip connections), so that any input size
gives a score map of its own size.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from fastconv._fc import fc_to_conv
from fastconv._validate import float_arrays
from fastconv.nn.activations import Activation
from fastconv.nn.conv_transpose import ConvTranspose2d, bilinear_kernel
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d,
                                ReLU, Softmax, _spatial)
from fastconv.nn.model import Model, Sequential
from fastconv.nn.structural import Add
from fastconv.nn.symbolic import Input

__all__ = ["fcn", "predict_labels", "reduce_classes"]

VARIANTS = {"32s": 0, "16s": 1, "8s": 2}  # the skip connections of each


def reduce_classes(weight: np.ndarray, bias: Optional[np.ndarray], num_classes: int
                   ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """fc8's (in, out) weights and bias for fewer classes, as fcn8_vgg.py's
    _summary_reshape and _bias_reshape make them: class j is the mean of the
    n = out // num_classes adjacent classes j * n ... j * n + n - 1; the last
    out % num_classes classes are left out."""
    out = weight.shape[1]
    n = out // num_classes
    w = weight[:, :n * num_classes].reshape(weight.shape[0], num_classes, n).mean(axis=2)
    b = None if bias is None else bias[:n * num_classes].reshape(num_classes, n).mean(axis=1)
    return w.astype(weight.dtype), None if b is None else b.astype(bias.dtype)


def _score_weights(fn: str, name: str, given: Any, channels: int, num_classes: int,
                   layout: str, dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray]:
    """A 1x1 score layer's (weight, bias): given, or zeros."""
    shape = (1, 1, channels, num_classes) if layout == "NHWC" else (num_classes, channels, 1, 1)
    if given is None:
        return np.zeros(shape, dtype), np.zeros(num_classes, dtype)
    if not isinstance(given, (tuple, list)) or len(given) != 2:
        raise TypeError(f"{fn}: {name} must be a (weight, bias) pair; got {type(given).__name__}")
    _, arr = float_arrays(fn, **{f"{name} weight": given[0], f"{name} bias": given[1]})
    w, b = arr[f"{name} weight"], arr[f"{name} bias"]
    if w.shape != shape or b.shape != (num_classes,):
        raise ValueError(f"{fn}: {name} must be a weight of shape {shape} ("
                         f"{'HWIO' if layout == 'NHWC' else 'OIHW'}) and a bias of shape "
                         f"({num_classes},); got {w.shape} and {b.shape}")
    return w.astype(dtype), b.astype(dtype)


def fcn(classifier: Sequential, input_shape: Sequence[int], num_classes: Optional[int] = None,
        variant: str = "8s", score_pool4: Any = None, score_pool3: Any = None) -> Model:
    """The FCN-32s, FCN-16s or FCN-8s segmentation network of a classifier.

    Parameters
    ----------
    classifier : nn.Sequential
        VGG-style: convolution blocks each ending in a pool (MaxPool2d or
        AvgPool2d with kernel == stride, no padding), then Flatten and
        Linear layers (ReLU, Dropout between them, a final Softmax allowed);
        VGG16's five pooled blocks, Flatten, fc6, fc7, fc8. From from_torch,
        from_keras or built by hand.
    input_shape : the input the classifier was trained on, without batch
        axis, e.g. (224, 224, 3) (NCHW: (3, 224, 224)).
    num_classes : int, optional
        Fewer classes than the last Linear's outputs: its weights and bias
        averaged in groups of adjacent classes (reduce_classes), as
        fcn8_vgg.py does for 21 PASCAL classes from ImageNet's 1000.
    variant : "32s", "16s" or "8s"
        "32s": score_fr upsampled at once to the input's size ("up").
        "16s": upsampled x2 ("upscore2") to the size of the pool before the
        last ("pool4" in VGG16), plus "score_pool4" on that pool
        ("fuse_pool4"), then to the input's size ("upscore32"). "8s" also
        goes through the pool before that ("upscore4", "score_pool3",
        "fuse_pool3") before "upscore32". Each upsampling by f is a
        ConvTranspose2d of bilinear_kernel(num_classes, 2f), stride f,
        TensorFlow's SAME rule with the size of the tensor it meets.
    score_pool4, score_pool3 : (weight, bias), optional
        The skip layers' 1x1 weights (HWIO (1, 1, C, num_classes), or OIHW
        for an NCHW classifier) and biases; zeros without them (the
        original draws them at random, to be trained), so that the variant
        then adds exactly zero.

    Returns
    -------
    nn.Model
        (N, H, W, C) of any size -> per-pixel class scores (N, H, W,
        num_classes) (NCHW: (N, num_classes, H, W)). Layer names as in
        fcn8_vgg.py: the classifier's own, "fc6", "fc7", ..., "score_fr" for
        the Linear layers, "pool1", "pool2", ... for its pools, and the
        names above. nn.predict_labels gives the argmax.

    Notes
    -----
    The classifier's convolutions keep their own padding (a 3x3 with
    padding 1 is SAME); fc6 pads as SAME. So, as the original's author
    notes, the network equals the classifier on its training size only
    "when applying both networks without padding": inside a larger image, a
    window sees the image where the classifier, on its own input, saw the
    zero padding. FCN-32s's score_fr at pixel (i, j) of a larger image is
    the classifier's answer for the window around (i * S, j * S) (S the
    total stride) only away from the image's border.
    """
    fn = "fcn"
    if not isinstance(classifier, Sequential):
        raise TypeError(f"{fn}: classifier must be a fastconv.nn.Sequential; got "
                        f"{type(classifier).__name__}")
    if variant not in VARIANTS:
        raise ValueError(f"{fn}: variant must be one of {sorted(VARIANTS)}; got {variant!r}")
    skips = VARIANTS[variant]
    for name, given, needs in (("score_pool4", score_pool4, 1), ("score_pool3", score_pool3, 2)):
        if given is not None and skips < needs:
            raise ValueError(f"{fn}: FCN-{variant} has no {name} layer; got {name} weights")
    layout = classifier.layout
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{fn}: input_shape must be 3-D (H, W, C) or (C, H, W) by the "
                         f"classifier's layout; got {shape}")
    layers = list(classifier)
    flatten_at = next((i for i, la in enumerate(layers) if isinstance(la, Flatten)), None)
    if flatten_at is None:
        raise ValueError(f"{fn}: the classifier has no Flatten followed by Linear layers")
    trunk, head = layers[:flatten_at], layers[flatten_at + 1:]

    # The trunk: its layers as they are, its pools in ceil mode (TensorFlow's
    # SAME for kernel == stride), noting the tensor after each pool and the
    # total stride there.
    channels = _spatial(layout, shape)[2]
    x = Input((None, None, channels) if layout == "NHWC" else (channels, None, None),
              name="input")
    t, stride, pools = x, 1, []  # pools: (tensor, total stride, channels)
    for i, layer in enumerate(trunk):
        if isinstance(layer, (Linear, Flatten)):
            raise ValueError(f"{fn}: layer {i} ({layer!r}) before the Flatten")
        step = getattr(layer, "stride", (1, 1))
        if step[0] != step[1]:
            raise ValueError(f"{fn}: layer {i} ({layer!r}) has unequal strides")
        shape = layer.output_shape(shape)
        stride *= step[0]
        if isinstance(layer, (MaxPool2d, AvgPool2d)):
            if layer.kernel_size != layer.stride or layer.padding != (0, 0):
                raise ValueError(f"{fn}: layer {i} ({layer!r}) is a pool whose kernel is not its "
                                 f"stride or that pads; FCN pools are SAME pools with kernel == "
                                 f"stride (VGG's 2x2/2)")
            t = type(layer)(layer.kernel_size, layer.stride, ceil_mode=True, layout=layout,
                            name=layer.name if layer._name_given else f"pool{len(pools) + 1}")(t)
            pools.append((t, stride, _spatial(layout, shape)[2]))
        else:
            t = layer(t)
    if len(pools) < skips + 1:
        raise ValueError(f"{fn}: FCN-{variant} needs at least {skips + 1} pooled blocks; the "
                         f"classifier has {len(pools)}")

    # The head: fc6 a k x k SAME convolution over the Flatten's map, the
    # later Linear layers 1x1 convolutions, ReLU fused, Dropout and a final
    # Softmax dropped (the scores are upsampled before any argmax).
    map_shape = _spatial(layout, shape)
    linears: List[Tuple[Linear, bool]] = []
    for j, layer in enumerate(head):
        i = flatten_at + 1 + j
        if isinstance(layer, Linear):
            linears.append((layer, layer.activation is not None))
        elif isinstance(layer, ReLU) or (isinstance(layer, Activation)
                                         and layer.activation == "relu"):
            if not linears or linears[-1][1]:
                raise ValueError(f"{fn}: layer {i} ({layer!r}) does not follow a Linear")
            linears[-1] = (linears[-1][0], True)
        elif isinstance(layer, Dropout) or (isinstance(layer, Softmax) and j == len(head) - 1):
            continue
        else:
            raise ValueError(f"{fn}: layer {i} ({layer!r}) after the Flatten cannot be written "
                             f"as a convolution (Linear, ReLU, Dropout and a final Softmax can)")
    if not linears:
        raise ValueError(f"{fn}: the classifier has no Linear layer after its Flatten")
    flatten = layers[flatten_at]
    in_shape = map_shape
    for k, (layer, relu) in enumerate(linears):
        last = k == len(linears) - 1
        w = layer.weight if layer.weight_layout == "IO" else layer.weight.T
        b = layer.bias
        if last and num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                    or not 1 <= num_classes <= w.shape[1]:
                raise ValueError(f"{fn}: num_classes must be an int from 1 to the classifier's "
                                 f"{w.shape[1]} classes; got {num_classes!r}")
            if num_classes < w.shape[1]:
                w, b = reduce_classes(np.asarray(w), None if b is None else np.asarray(b),
                                      int(num_classes))
        kernel, bias = fc_to_conv(w, in_shape if k == 0 else (1, 1, w.shape[0]), b,
                                  flatten_order=flatten.order if k == 0 else "HWC",
                                  layout=layout)
        name = "score_fr" if last else f"fc{6 + k}"
        activation = layer.activation if layer.activation is not None else (
            "relu" if relu else None)
        if last and activation is not None:
            raise ValueError(f"{fn}: the last Linear ({layer!r}) has an activation; its "
                             f"outputs are the class scores")
        t = Conv2d(kernel, bias, padding="same" if k == 0 else 0, activation=activation,
                   layout=layout, name=name)(t)
    classes = linears[-1][0].out_features if num_classes is None else int(num_classes)
    dtype = linears[-1][0].dtype

    def upscore(name: str, source: Any, like: Any, factor: int) -> Any:
        up = ConvTranspose2d(bilinear_kernel(classes, 2 * factor, dtype, layout), stride=factor,
                             padding="same", layout=layout, name=name)
        return up([source, like])

    def skip(name: str, given: Any, pool: Tuple) -> Any:
        w, b = _score_weights(fn, name, given, pool[2], classes, layout, dtype)
        return Conv2d(w, b, layout=layout, name=name)(pool[0])

    total = pools[-1][1]
    if skips == 0:
        out = upscore("up", t, x, total)
    else:
        pool4 = pools[-2]
        t = upscore("upscore2", t, pool4[0], total // pool4[1])
        t = Add(name="fuse_pool4")([t, skip("score_pool4", score_pool4, pool4)])
        here = pool4[1]
        if skips == 2:
            pool3 = pools[-3]
            t = upscore("upscore4", t, pool3[0], here // pool3[1])
            t = Add(name="fuse_pool3")([t, skip("score_pool3", score_pool3, pool3)])
            here = pool3[1]
        out = upscore("upscore32", t, x, here)
    return Model(x, out, layout=layout, name=f"fcn{variant}")


def predict_labels(model: Layer, x: Any, num_threads: Optional[int] = None) -> np.ndarray:
    """The per-pixel class (argmax of the scores) of model(x): (N, H, W)
    integers for an (N, H, W, C) or (N, C, H, W) input (fcn8_vgg.py's
    pred_up); (H, W) for an unbatched one."""
    scores = model(x, num_threads=num_threads)
    layout = getattr(model, "layout", "NHWC")
    batched = np.ndim(x) == 4
    axis = -1 if layout == "NHWC" else (1 if batched else 0)
    return np.argmax(scores, axis=axis)
