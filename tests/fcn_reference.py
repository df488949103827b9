"""Independent reference for the FCN-32s / FCN-16s / FCN-8s forward pass of
MarvinTeichmann/tensorflow-fcn (fcn32_vgg.py, fcn16_vgg.py, fcn8_vgg.py,
``FCN{32,16,8}VGG.build`` with train=False), in torch float64.

Nothing here imports fastconv; it needs torch (a test module importing it
should ``pytest.importorskip("torch")`` first). The layers use torch.nn.functional with
TensorFlow's SAME padding made explicit (F.pad, bottom/right getting the odd
pixel); the transposed convolutions reproduce tf.nn.conv2d_transpose
(see tests/tf_reference.py for the rule and a NumPy scatter version).

Parameter dict ("vgg16.npy format", the data_dict the repo loads)
------------------------------------------------------------------
``params[name] = (weight, bias)`` (any 2-sequence; arrays of any float dtype):

    conv1_1 .. conv5_3   weight (3, 3, Cin, Cout) HWIO, bias (Cout,)
                         (blocks of 2, 2, 3, 3, 3 convolutions; in real VGG16
                         Cout = 64, 128, 256, 512, 512)
    fc6                  weight (k * k * C5, F6): a Keras/TF dense kernel
                         (in, out) whose rows are pool5's k x k x C5 window
                         flattened in TF's HWC (row-major h, w, c) order;
                         bias (F6,). Real VGG16: (25088, 4096), k = 7.
                         A 4-D (k, k, C5, F6) weight is also accepted.
    fc7                  weight (F6, F7) (or (1, 1, F6, F7)), bias (F7,)
    fc8                  weight (F7, K) (or (1, 1, F7, K)), bias (K,);
                         real VGG16: K = 1000 ImageNet classes.

Optional entries (the layers the repo initialises itself):

    score_fr             (weight (F7, nc) or (1, 1, F7, nc), bias (nc,)):
                         replaces the fc8-derived classifier (the repo's
                         random_init_fc8=True path, ``_score_layer``). Without
                         it, score_fr is fc8 reduced to num_classes by
                         summary_reshape / bias_reshape (``_fc_layer('score_fr')``).
    score_pool4          (weight (C4, nc) or (1, 1, C4, nc), bias (nc,)),
    score_pool3          (weight (C3, nc) or (1, 1, C3, nc), bias (nc,)):
                         the skip 1x1 convolutions (``_score_layer``). The repo
                         draws their weights from a truncated normal (stddev
                         0.001 / 0.0001) with zero bias, which no reference can
                         reproduce: if absent here they are ZERO (weights and
                         bias), so that fuse_pool4 = upscore2 exactly.
    upscore2, upscore4, upscore32 (8s), upscore2, upscore32 (16s), up (32s):
                         a (ksize, ksize, nc, nc) filter replacing the
                         bilinear initial value of that upscore layer
                         (the repo's variable scopes carry these names).

Channel counts (C1..C5 of the five blocks, F6, F7, K) and fc6's window k are
inferred from the shapes, so a scaled-down "VGG-style" set (e.g. channels 4,
8, 8, 16, 16, fc sizes 32, 32, K, and k = 2 for a 64 x 64 training size)
runs through the same code as real VGG16 (k = 7 at 224 x 224).

Input: ``x`` (N, H, W, 3), any H, W >= 1. With ``preprocess=True`` it is RGB
in [0, 255] and the repo's 'Processing' step is applied (RGB -> BGR, minus
VGG_MEAN = (103.939, 116.779, 123.68) in B, G, R order); with
``preprocess=False`` (the default) ``x`` is used as is, i.e. it is the
already preprocessed ``bgr`` tensor of ``build()``.

Details of the original worth knowing (all reproduced here)
------------------------------------------------------------
* Every upscore is tf.nn.conv2d_transpose(..., padding='SAME') with an
  explicit output_shape: upscore2 -> pool4's (N, H, W), upscore4 -> pool3's,
  up (32s) / upscore32 (16s, 8s) -> the input's; the channel entry is
  num_classes. Pools round up (SAME), pool_k = ceil(H / 2^k), and
  ceil(ceil(H/2)/2) = ceil(H/4) etc., so every output_shape is consistent
  (ceil(target / s) == input) at every H, W.
* The SAME crop of a transposed conv is pad_top = ((n-1) s + k - out) // 2
  with n = ceil(out / s): at out = n s it is the symmetric (k - s) / 2
  (1, 4, 8, 16 for the 4/2, 16/8, 32/16, 64/32 layers), but at other sizes
  it grows with n s - out (e.g. FCN-32s, H = 37: n = 2, pad_top = 29 not 16),
  and an odd total puts the extra row at the bottom. So for H not a multiple
  of the stride the upsampled map is shifted by about (n s - H) / 2 pixels.
* fc6 at a SAME k x k conv: only the pixel whose window is pool5 exactly
  (the centre (3, 3) at 224 x 224 for k = 7, pixel (0, 0) for an even k = 2,
  whose SAME padding is (0, 1)) equals VGG's dense fc6.
* fc8 reduction: groups of K // num_classes adjacent classes, the last
  K % num_classes classes unused; num_classes must be < K (the repo asserts).
* The upscore filters are the bilinear initial values (the "stddev" computed
  in _upscore_layer is unused); score_pool4/3 and a random score_fr start
  random (see above). fcn8_vgg.py's use_dilated=True path is not reproduced.
* The 8s and 16s outputs are both called upscore32 (their last upsampling is
  x8 and x16); the 32s output is ``upscore`` (variable scope 'up').
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "VGG_MEAN",
    "CONV_LAYERS",
    "UPSCORE_LAYERS",
    "bilinear_kernel",
    "summary_reshape",
    "bias_reshape",
    "preprocess_rgb",
    "fcn_forward",
    "random_vgg_params",
]

VGG_MEAN = (103.939, 116.779, 123.68)  # B, G, R (fcn*_vgg.py: VGG_MEAN)

CONV_LAYERS = (
    ("conv1_1", "conv1_2"),
    ("conv2_1", "conv2_2"),
    ("conv3_1", "conv3_2", "conv3_3"),
    ("conv4_1", "conv4_2", "conv4_3"),
    ("conv5_1", "conv5_2", "conv5_3"),
)

# variant -> the upscore layers of build(): (name, ksize, stride, the tensor
# whose shape is the output_shape, the tensor added to the result or None).
UPSCORE_LAYERS = {
    "32s": (("up", 64, 32, "input", None),),
    "16s": (("upscore2", 4, 2, "pool4", "score_pool4"),
            ("upscore32", 32, 16, "input", None)),
    "8s": (("upscore2", 4, 2, "pool4", "score_pool4"),
           ("upscore4", 4, 2, "pool3", "score_pool3"),
           ("upscore32", 16, 8, "input", None)),
}


# --------------------------------------------------------------------------
# The repo's NumPy weight helpers, reproduced exactly
# --------------------------------------------------------------------------
def bilinear_kernel(ksize, num_classes):
    """``FCN8VGG.get_deconv_filter([ksize, ksize, num_classes, num_classes])``.

    f = ceil(ksize / 2), c = (2f - 1 - f % 2) / (2f),
    bilinear[x, y] = (1 - |x / f - c|) * (1 - |y / f - c|),
    weights[:, :, i, i] = bilinear, zero off the diagonal (i != j).

    Returns a float64 (ksize, ksize, num_classes, num_classes) array in TF's
    conv2d_transpose layout (kh, kw, out, in). (The repo stores it as
    float32; for ksize 4, 16, 32, 64 every value is a multiple of 1/ksize^2
    and so exact in float32.)

    Note the centre uses the parity of f, not of ksize: the kernel is the
    usual symmetric bilinear one only when ksize % 4 is 0 or 1 (4, 16, 32 and
    64, the sizes the repo uses, qualify). For ksize % 4 == 2 or 3 it is
    shifted: ksize 2 gives the 1-D profile (1, 0), ksize 3 gives
    (0.25, 0.75, 0.75), ksize 6 gives (1/3, 2/3, 1, 2/3, 1/3, 0). This
    function reproduces that too.
    """
    ksize = int(ksize)
    f = math.ceil(ksize / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    profile = 1.0 - np.abs(np.arange(ksize) / f - c)
    bilinear = np.outer(profile, profile)
    weights = np.zeros((ksize, ksize, num_classes, num_classes), np.float64)
    for i in range(num_classes):
        weights[:, :, i, i] = bilinear
    return weights


def summary_reshape(fc8_weight, num_classes):
    """``FCN8VGG._summary_reshape``: fc8's K output classes -> num_classes.

    With n = K // num_classes, new class j is the mean of old classes
    j*n .. j*n + n - 1 (adjacent groups, in order). The last
    K - n * num_classes old classes are DROPPED (e.g. K = 1000,
    num_classes = 21: n = 47, classes 987..999 are unused; num_classes = 3:
    n = 333, class 999 is unused). The repo asserts num_classes < K, so
    num_classes == K (or more) raises AssertionError here too.

    The averaged axis is the last one: ``fc8_weight`` may be the dense
    (F7, K) kernel or the reshaped (1, 1, F7, K) filter; the result has the
    same rank, float64.
    """
    w = np.asarray(fc8_weight, np.float64)
    num_orig = w.shape[-1]
    if not num_classes < num_orig:  # the repo: assert(num_new < num_orig)
        raise AssertionError(f"summary_reshape needs num_classes < {num_orig}, got {num_classes}")
    n = num_orig // num_classes
    groups = w[..., :n * num_classes].reshape(w.shape[:-1] + (num_classes, n))
    return groups.mean(axis=-1)


def bias_reshape(bias, num_classes):
    """``FCN8VGG._bias_reshape``: fc8's bias reduced like summary_reshape
    (means of groups of K // num_classes adjacent entries, the remainder
    dropped). The repo has no assert here: num_classes == K is the identity,
    num_classes > K fails (range() with step 0: ValueError)."""
    b = np.asarray(bias, np.float64)
    num_orig = b.shape[0]
    n = num_orig // num_classes
    if n == 0:
        raise ValueError(f"bias_reshape: num_classes {num_classes} > {num_orig}")
    return b[:n * num_classes].reshape(num_classes, n).mean(axis=-1)


def preprocess_rgb(rgb):
    """build()'s 'Processing' scope: RGB in [0, 255] -> BGR minus VGG_MEAN."""
    rgb = np.asarray(rgb, np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([blue - VGG_MEAN[0], green - VGG_MEAN[1], red - VGG_MEAN[2]], axis=-1)


# --------------------------------------------------------------------------
# torch layers with TensorFlow semantics (NCHW float64 tensors inside)
# --------------------------------------------------------------------------
def _tf_same(size, kernel, stride):
    """TF SAME along one axis: (out, pad_before, pad_after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _t(array):
    return torch.as_tensor(np.asarray(array, np.float64))


def _conv_same(x, w_hwio, bias, relu):
    """tf.nn.conv2d(stride 1, SAME) + bias_add (+ relu): ``_conv_layer`` /
    ``_fc_layer`` / ``_score_layer``."""
    kh, kw = w_hwio.shape[0], w_hwio.shape[1]
    _, top, bottom = _tf_same(x.shape[2], kh, 1)
    _, left, right = _tf_same(x.shape[3], kw, 1)
    x = F.pad(x, (left, right, top, bottom))
    y = F.conv2d(x, _t(w_hwio).permute(3, 2, 0, 1), _t(bias))
    return torch.relu(y) if relu else y


def _max_pool_same(x):
    """``_max_pool``: tf.nn.max_pool 2x2, stride 2, SAME (an odd size rounds
    up; the pad is -inf at the bottom/right, so it never wins)."""
    _, _, bottom = _tf_same(x.shape[2], 2, 2)
    _, _, right = _tf_same(x.shape[3], 2, 2)
    x = F.pad(x, (0, right, 0, bottom), value=-math.inf)
    return F.max_pool2d(x, 2, 2)


def _conv_transpose_same(x, w_tf, out_hw, stride):
    """tf.nn.conv2d_transpose(x, w, [N, out_h, out_w, C], stride, 'SAME').

    torch's conv_transpose2d with padding 0 gives the full scatter
    ((in - 1) * s + k long); TF's output is that crop starting at the pad_before
    of a SAME conv2d over ``out`` pixels (zeros past the scatter's end)."""
    kh, kw = w_tf.shape[0], w_tf.shape[1]
    for size_in, size_out, k in ((x.shape[2], out_hw[0], kh), (x.shape[3], out_hw[1], kw)):
        if _tf_same(size_out, k, stride)[0] != size_in:
            raise ValueError(f"conv2d_transpose: output size {size_out} is not consistent "
                             f"with input size {size_in} (stride {stride}, SAME)")
    full = F.conv_transpose2d(x, _t(w_tf).permute(3, 2, 0, 1), stride=stride)
    _, top, _ = _tf_same(out_hw[0], kh, stride)
    _, left, _ = _tf_same(out_hw[1], kw, stride)
    extra_h = max(top + out_hw[0] - full.shape[2], 0)
    extra_w = max(left + out_hw[1] - full.shape[3], 0)
    full = F.pad(full, (0, extra_w, 0, extra_h))
    return full[:, :, top:top + out_hw[0], left:left + out_hw[1]]


def _as_filter(weight, kh=1, kw=1):
    """A dense (in, out) kernel -> a (kh, kw, in/(kh*kw), out) HWIO filter
    (``get_fc_weight_reshape``: numpy C-order reshape, i.e. HWC rows)."""
    w = np.asarray(weight, np.float64)
    if w.ndim == 4:
        return w
    rows, cols = w.shape
    return w.reshape(kh, kw, rows // (kh * kw), cols)


def _fc6_filter(weight, c5):
    """fc6's dense kernel (k*k*C5, F6) -> (k, k, C5, F6), k inferred."""
    w = np.asarray(weight, np.float64)
    if w.ndim == 4:
        if w.shape[2] != c5 or w.shape[0] != w.shape[1]:
            raise ValueError(f"fc6 filter {w.shape} does not fit pool5's {c5} channels")
        return w
    rows = w.shape[0]
    k = math.isqrt(rows // c5) if rows % c5 == 0 else 0
    if k < 1 or k * k * c5 != rows:
        raise ValueError(f"fc6 has {rows} input rows, not k*k*{c5} for an integer k")
    return w.reshape(k, k, c5, w.shape[1])


# --------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------
def fcn_forward(params, x, variant="8s", num_classes=None, preprocess=False,
                return_all=False):
    """``FCN{32,16,8}VGG.build(rgb, train=False, num_classes=num_classes)``.

    ``params``: the dict described in the module docstring. ``x``: (N, H, W, 3)
    (see ``preprocess``). ``variant``: "32s", "16s" or "8s".
    ``num_classes``: number of output classes; None means the score_fr entry's
    width if given, else it is required.

    Returns ``(upscore, pred_up)``: the class scores at the input's size,
    float64 (N, H, W, num_classes) (the repo's ``upscore`` for 32s,
    ``upscore32`` for 16s and 8s), and their argmax over classes (N, H, W)
    int64 (ties -> the lowest class, as tf.argmax). With ``return_all=True``
    a dict of every named tensor of build() as NHWC float64 arrays instead
    (bgr, conv*, pool1..pool5, fc6, fc7, score_fr, pred, the upscore layers,
    score_pool4/3 and fuse_pool4/3 where the variant has them, pred_up, and
    "upscore" = the final scores in every variant).

    Layer by layer: 13 x (3x3 conv SAME + bias + ReLU) in blocks 2-2-3-3-3,
    each block followed by max_pool 2x2/2 SAME; fc6 = k x k conv SAME + ReLU,
    fc7 = 1x1 conv + ReLU, score_fr = 1x1 conv (no ReLU) with fc8 reduced by
    summary_reshape/bias_reshape (or params["score_fr"]); then the variant's
    upscore layers (UPSCORE_LAYERS): conv2d_transpose SAME with a bilinear
    filter and output_shape = [N, H_t, W_t, num_classes] where (H_t, W_t) is
    the spatial size of pool4 (upscore2), pool3 (upscore4) or the input
    (up / upscore32); after upscore2 / upscore4 the skip score_pool4 / 3
    (1x1 conv + bias of pool4 / pool3, no ReLU) is added.
    No dropout (train=False).
    """
    if variant not in UPSCORE_LAYERS:
        raise ValueError(f"variant must be one of {sorted(UPSCORE_LAYERS)}, got {variant!r}")
    x = np.asarray(x, np.float64)
    if x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"x must be (N, H, W, 3), got {x.shape}")
    if preprocess:
        x = preprocess_rgb(x)

    if num_classes is None:
        if "score_fr" not in params:
            raise ValueError("num_classes is required unless params has 'score_fr'")
        num_classes = np.asarray(params["score_fr"][0]).shape[-1]
    num_classes = int(num_classes)

    named = {"bgr": x}
    h = _t(x).permute(0, 3, 1, 2)
    for block, names in enumerate(CONV_LAYERS, start=1):
        for name in names:
            w, b = params[name]
            h = _conv_same(h, np.asarray(w, np.float64), b, relu=True)
            named[name] = h
        h = _max_pool_same(h)
        named[f"pool{block}"] = h

    c5 = named["pool5"].shape[1]
    h = _conv_same(h, _fc6_filter(params["fc6"][0], c5), params["fc6"][1], relu=True)
    named["fc6"] = h
    h = _conv_same(h, _as_filter(params["fc7"][0]), params["fc7"][1], relu=True)
    named["fc7"] = h
    if "score_fr" in params:
        w, b = params["score_fr"]
        w = _as_filter(w)
        b = np.asarray(b, np.float64)
    else:
        w = summary_reshape(_as_filter(params["fc8"][0]), num_classes)
        b = bias_reshape(params["fc8"][1], num_classes)
    if w.shape[3] != num_classes or b.shape != (num_classes,):
        raise ValueError(f"score_fr weight {w.shape} / bias {b.shape} do not give {num_classes} classes")
    h = _conv_same(h, w, b, relu=False)
    named["score_fr"] = h

    for name, ksize, stride, shape_of, skip in UPSCORE_LAYERS[variant]:
        target = named["bgr"].shape[1:3] if shape_of == "input" else tuple(named[shape_of].shape[2:4])
        filt = params[name] if name in params else bilinear_kernel(ksize, num_classes)
        filt = np.asarray(filt, np.float64)
        if filt.shape != (ksize, ksize, num_classes, num_classes):
            raise ValueError(f"{name} filter must be {(ksize, ksize, num_classes, num_classes)}, "
                             f"got {filt.shape}")
        h = _conv_transpose_same(h, filt, target, stride)
        named[name] = h
        if skip is not None:
            pool = named["pool" + skip[-1]]
            if skip in params:
                sw, sb = params[skip]
                sw = _as_filter(sw)
            else:
                sw = np.zeros((1, 1, pool.shape[1], num_classes))
                sb = np.zeros(num_classes)
            score = _conv_same(pool, sw, sb, relu=False)
            named[skip] = score
            h = h + score
            named["fuse_pool" + skip[-1]] = h
    named["upscore"] = h

    out = {}
    for key, value in named.items():
        if isinstance(value, torch.Tensor):
            value = value.permute(0, 2, 3, 1).numpy()
        out[key] = value
    out["pred"] = np.argmax(out["score_fr"], axis=3)
    out["pred_up"] = np.argmax(out["upscore"], axis=3)
    if return_all:
        return out
    return out["upscore"], out["pred_up"]


def random_vgg_params(rng, channels=(4, 8, 8, 16, 16), fc=(32, 32), fc6_window=2,
                      num_fc8=10, num_classes=None, skips=True):
    """A scaled-down VGG16-style parameter dict in the format above, for tests.

    ``channels``: output channels of blocks 1..5; ``fc``: (F6, F7);
    ``fc6_window``: k; ``num_fc8``: K, fc8's width. With ``num_classes`` and
    ``skips``, random score_pool4 / score_pool3 entries are added too.
    Weights are He-scaled normals (so activations neither vanish nor
    explode through the 16 layers), biases small normals.
    """
    params = {}
    cin = 3
    for cout, names in zip(channels, CONV_LAYERS):
        for name in names:
            std = math.sqrt(2.0 / (9 * cin))
            params[name] = (rng.normal(0, std, (3, 3, cin, cout)), rng.normal(0, 0.1, cout))
            cin = cout
    f6, f7 = fc
    rows = fc6_window * fc6_window * cin
    params["fc6"] = (rng.normal(0, math.sqrt(2.0 / rows), (rows, f6)), rng.normal(0, 0.1, f6))
    params["fc7"] = (rng.normal(0, math.sqrt(2.0 / f6), (f6, f7)), rng.normal(0, 0.1, f7))
    params["fc8"] = (rng.normal(0, math.sqrt(2.0 / f7), (f7, num_fc8)), rng.normal(0, 0.1, num_fc8))
    if num_classes is not None and skips:
        params["score_pool4"] = (rng.normal(0, 0.3, (channels[3], num_classes)),
                                 rng.normal(0, 0.1, num_classes))
        params["score_pool3"] = (rng.normal(0, 0.3, (channels[2], num_classes)),
                                 rng.normal(0, 0.1, num_classes))
    return params
