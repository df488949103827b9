"""fastconv.nn.from_keras: models in Keras / TensorFlow conventions.

Without Keras, configs are written out in Keras 3's get_config() format (the
builders below; test_keras_torch_config_format checks them against Keras
itself) with random weights, and compared with a float64 NumPy computation
of what Keras computes, written from TensorFlow's definitions and sharing no
code with fastconv. With Keras installed, random keras.Sequential models are
compared with Keras's own outputs.

The tests that import Keras run it on its torch backend (the numpy backend of
Keras 3 imports jax) and have "keras_torch" in their names, so that
`-k "not torch"` deselects them with the torch tests.
"""

import json
import os

import numpy as np
import pytest

from fastconv import nn
from checks import assert_close_to_reference, random_array, reference_for
from reference import (conv2d_magnitude, conv2d_ref, matmul_magnitude, matmul_ref,
                       nhwc_to_nchw, same_padding)

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]
# The torch parity tests' tolerances (tests/test_nn_torch.py), for whole
# models whose values are of order one.
MODEL_ATOL = {np.float32: 1e-5, np.float64: 1e-12}


# --------------------------------------------------------------------------
# Configs in Keras 3's get_config() format
# --------------------------------------------------------------------------
GLOROT = {"module": "keras.initializers", "class_name": "GlorotUniform",
          "config": {"seed": None, "input_axes": None, "output_axes": None},
          "registered_name": None}
ZEROS = {"module": "keras.initializers", "class_name": "Zeros", "config": {},
         "registered_name": None}


def policy(dtype="float32"):
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype},
            "registered_name": None}


def pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def record(class_name, name, **options):
    return {"module": "keras.layers", "class_name": class_name,
            "config": {"name": name, "trainable": True, "dtype": policy(), **options},
            "registered_name": None}


def input_layer(shape):
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": [None, *shape], "dtype": "float32", "sparse": False,
                       "ragged": False, "name": "input_layer", "optional": False},
            "registered_name": None}


def conv2d(name, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
           groups=1, activation="linear", use_bias=True):
    return record("Conv2D", name, filters=filters, kernel_size=pair(kernel_size),
                  strides=pair(strides), padding=padding, data_format="channels_last",
                  dilation_rate=pair(dilation_rate), groups=groups, activation=activation,
                  use_bias=use_bias, kernel_initializer=GLOROT, bias_initializer=ZEROS,
                  kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                  kernel_constraint=None, bias_constraint=None)


def depthwise_conv2d(name, kernel_size, depth_multiplier=1, strides=1, padding="valid",
                     dilation_rate=1, activation="linear", use_bias=True):
    return record("DepthwiseConv2D", name, depth_multiplier=depth_multiplier,
                  kernel_size=pair(kernel_size), strides=pair(strides), padding=padding,
                  data_format="channels_last", dilation_rate=pair(dilation_rate),
                  activation=activation, use_bias=use_bias, depthwise_initializer=GLOROT,
                  bias_initializer=ZEROS, depthwise_regularizer=None, bias_regularizer=None,
                  activity_regularizer=None, depthwise_constraint=None, bias_constraint=None)


def dense(name, units, activation="linear", use_bias=True):
    return record("Dense", name, units=units, activation=activation, use_bias=use_bias,
                  kernel_initializer=GLOROT, bias_initializer=ZEROS, kernel_regularizer=None,
                  bias_regularizer=None, kernel_constraint=None, bias_constraint=None,
                  quantization_config=None)


def pooling(class_name, name, pool_size, strides=None, padding="valid"):
    return record(class_name, name, pool_size=pair(pool_size),
                  padding=padding, strides=pair(pool_size if strides is None else strides),
                  data_format="channels_last")


def flatten(name="flatten"):
    return record("Flatten", name, data_format="channels_last")


def global_average_pooling2d(name="gap", keepdims=False):
    return record("GlobalAveragePooling2D", name, data_format="channels_last",
                  keepdims=keepdims)


def dropout(name, rate):
    return record("Dropout", name, rate=rate, seed=None, noise_shape=None)


def activation(name, act):
    return record("Activation", name, activation=act)


def relu(name, max_value=None, negative_slope=0.0, threshold=0.0):
    return record("ReLU", name, max_value=max_value, negative_slope=negative_slope,
                  threshold=threshold)


def softmax(name, axis=-1):
    return record("Softmax", name, axis=axis)


def sequential(input_shape, *layers, name="sequential"):
    """A keras.Sequential's get_config() (input_shape None: no InputLayer)."""
    config = {"name": name, "trainable": True, "dtype": policy(), "layers": list(layers)}
    if input_shape is not None:
        config["layers"].insert(0, input_layer(input_shape))
        config["build_input_shape"] = [None, *input_shape]
    return config


# --------------------------------------------------------------------------
# What Keras computes, in float64 NumPy from TensorFlow's definitions
# --------------------------------------------------------------------------
def tf_pool_ref(x, pool_size, strides, padding, is_max):
    """TensorFlow's max/average pooling of NHWC x: "same" gives ceil(n / s)
    outputs padded by reference.same_padding's rule, and the padding takes no
    part (never the max, not counted in the mean)."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = pool_size, strides
    if padding == "same":
        (top, _), (left, _) = same_padding((h, w), (kh, kw), (sh, sw))
        ho, wo = -(-h // sh), -(-w // sw)
    else:
        top = left = 0
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.empty((n, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * sh - top, j * sw - left
            win = x[:, max(r0, 0):min(r0 + kh, h), max(c0, 0):min(c0 + kw, w)]
            y[:, i, j] = win.max(axis=(1, 2)) if is_max else win.mean(axis=(1, 2))
    return y


def depthwise_ref(x, w, b, *, strides, padding, dilation):
    """(result, magnitude) of a Keras depthwise convolution, channel by
    channel: output c * M + m is input channel c convolved with w[..., c, m]."""
    kh, kw, c, m = w.shape
    pads = (same_padding(x.shape[1:3], (kh, kw), strides, dilation) if padding == "same"
            else ((0, 0), (0, 0)))
    kwargs = dict(stride=strides, padding=pads, dilation=dilation)
    outs, mags = [], []
    for ci in range(c):
        for mi in range(m):
            bias = None if b is None else b[ci * m + mi:ci * m + mi + 1]
            xi, wi = x[..., ci:ci + 1], w[:, :, ci:ci + 1, mi:mi + 1]
            outs.append(conv2d_ref(xi, wi, bias, **kwargs))
            mags.append(conv2d_magnitude(xi, wi, bias, **kwargs))
    return np.concatenate(outs, axis=-1), np.concatenate(mags, axis=-1)


def keras_ref(config, weights, x):
    """A keras.Sequential config and its get_weights() applied to NHWC x."""
    weights = iter(weights)
    y = np.asarray(x, np.float64)

    def act(y, name):
        if name == "relu":
            return np.maximum(y, 0)
        if name == "softmax":
            e = np.exp(y - y.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        assert name in ("linear", None), name
        return y

    for layer in config["layers"]:
        kind, cfg = layer["class_name"], layer["config"]
        if kind == "Conv2D":
            w = next(weights)
            b = next(weights) if cfg["use_bias"] else None
            kh, kw = w.shape[:2]
            pads = (same_padding(y.shape[1:3], (kh, kw), cfg["strides"], cfg["dilation_rate"])
                    if cfg["padding"] == "same" else ((0, 0), (0, 0)))
            y = act(conv2d_ref(y, w, b, stride=cfg["strides"], padding=pads,
                               dilation=cfg["dilation_rate"], groups=cfg["groups"]),
                    cfg["activation"])
        elif kind == "DepthwiseConv2D":
            w = next(weights)
            b = next(weights) if cfg["use_bias"] else None
            y = act(depthwise_ref(y, w, b, strides=cfg["strides"], padding=cfg["padding"],
                                  dilation=cfg["dilation_rate"])[0], cfg["activation"])
        elif kind == "Dense":
            w = next(weights).astype(np.float64)
            b = next(weights) if cfg["use_bias"] else 0
            y = act(y @ w + b, cfg["activation"])  # on the last axis, as Keras
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            y = tf_pool_ref(y, cfg["pool_size"], cfg["strides"], cfg["padding"],
                            kind == "MaxPooling2D")
        elif kind == "GlobalAveragePooling2D":
            y = y.mean(axis=(1, 2))
        elif kind == "Flatten":
            y = y.reshape(y.shape[0], -1)  # NHWC in memory order: H, W, C
        elif kind in ("Activation", "ReLU", "Softmax"):
            y = act(y, {"ReLU": "relu", "Softmax": "softmax"}.get(kind, cfg.get("activation")))
        else:
            assert kind in ("InputLayer", "Dropout"), kind
    assert next(weights, None) is None
    return y


def random_weights(rng, shapes, dtype):
    """Uniform weights scaled by 1/sqrt(fan-in), so that values stay of order one."""
    return [(random_array(rng, s, np.float64) / np.sqrt(np.prod(s[:-1]) if len(s) > 1 else 4)
             ).astype(dtype) for s in shapes]


def in_layout(x_nhwc, layout):
    return x_nhwc if layout == "NHWC" else np.ascontiguousarray(nhwc_to_nchw(x_nhwc))


def run(model, x_nhwc, layout):
    """The model on NHWC x given in `layout`; a map result back in NHWC."""
    y = model(in_layout(x_nhwc, layout))
    return np.moveaxis(y, 1, -1) if layout == "NCHW" and y.ndim == 4 else y


# --------------------------------------------------------------------------
# Single layers against the reference, within checks.py's error bound
# --------------------------------------------------------------------------
CONV_CASES = [
    # (h, w, c, filters, kernel, strides, padding, dilation, groups)
    (7, 9, 3, 5, 3, 1, "valid", 1, 1),
    (7, 9, 3, 5, 3, 1, "same", 1, 1),
    (7, 9, 3, 5, 3, 2, "same", 1, 1),          # odd total on both axes
    (8, 10, 3, 4, 3, 2, "same", 1, 1),         # even sizes, stride 2: 1 extra at the end
    (7, 8, 4, 6, (4, 2), 1, "same", 1, 2),     # even kernels: odd total at stride 1
    (9, 9, 4, 4, 5, 2, "same", 1, 1),
    (11, 10, 3, 4, 3, (2, 1), "same", (1, 2), 1),
    (9, 8, 4, 6, 3, 1, "same", 2, 1),          # dilation 2
    (9, 11, 2, 3, (3, 2), 2, "valid", (2, 1), 1),
    (6, 6, 8, 16, 1, 1, "valid", 1, 1),        # 1x1
]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("act,use_bias", [("linear", True), ("relu", False)])
def test_conv2d_matches_reference(rng, case, layout, dtype, act, use_bias):
    h, w, c, k, kernel, strides, padding, dilation, groups = case
    kh, kw = pair(kernel)
    config = sequential((h, w, c), conv2d("conv", k, kernel, strides, padding, dilation,
                                          groups, act, use_bias))
    kernel_w = random_array(rng, (kh, kw, c // groups, k), dtype)
    bias = random_array(rng, (k,), dtype) if use_bias else None
    model = nn.from_keras(config, [kernel_w] + ([bias] if use_bias else []), layout=layout)
    x = random_array(rng, (2, h, w, c), dtype)
    pads = same_padding((h, w), (kh, kw), strides, dilation) if padding == "same" else 0
    expected, magnitude, n_red = reference_for(x, kernel_w, bias, stride=strides,
                                               padding=pads, dilation=dilation,
                                               groups=groups, relu=act == "relu",
                                               layout=layout)
    assert_close_to_reference(model(in_layout(x, layout)), expected, magnitude, n_red, dtype)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("h,w,c,m,kernel,strides,padding,dilation", [
    (7, 9, 4, 1, 3, 1, "same", 1),
    (7, 9, 3, 2, 3, 2, "same", 1),
    (8, 8, 5, 3, (2, 3), 2, "same", 1),
    (9, 9, 4, 2, 3, 1, "valid", 2),
])
def test_depthwise_conv2d_matches_reference(rng, layout, dtype, h, w, c, m, kernel, strides,
                                            padding, dilation):
    kh, kw = pair(kernel)
    config = sequential((h, w, c), depthwise_conv2d("dw", kernel, m, strides, padding,
                                                    dilation, activation="relu"))
    kernel_w = random_array(rng, (kh, kw, c, m), dtype)
    bias = random_array(rng, (c * m,), dtype)
    model = nn.from_keras(config, [kernel_w, bias], layout=layout)
    x = random_array(rng, (2, h, w, c), dtype)
    expected, magnitude = depthwise_ref(x, kernel_w, bias, strides=strides, padding=padding,
                                        dilation=dilation)
    assert_close_to_reference(run(model, x, layout), np.maximum(expected, 0), magnitude,
                              kh * kw, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_reference(rng, dtype, use_bias):
    config = sequential((37,), dense("fc", 11, "relu", use_bias))
    w = random_array(rng, (37, 11), dtype)
    b = random_array(rng, (11,), dtype) if use_bias else None
    model = nn.from_keras(config, [w] + ([b] if use_bias else []))
    x = random_array(rng, (5, 37), dtype)
    assert_close_to_reference(model(x), matmul_ref(x, w, b, relu=True),
                              matmul_magnitude(x, w, b), 37, dtype)


# Every (pool_size, strides) whose "same" pooling fastconv reproduces, and
# some "valid" ones.
POOL_CASES = [((k, k), (s, s), "same") for k, s in [(1, 3), (2, 2), (2, 3), (3, 1), (4, 2),
                                                    (5, 1)]]
POOL_CASES += [((2, 4), (2, 2), "same"), ((3, 2), (1, 2), "same"),
               ((3, 3), (2, 2), "valid"), ((2, 3), (2, 1), "valid")]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("size,strides,padding", POOL_CASES,
                         ids=[f"{p}-k{k[0]}x{k[1]}-s{s[0]}x{s[1]}" for k, s, p in POOL_CASES])
def test_pooling_matches_tensorflow_on_every_input_size(rng, layout, dtype, size, strides,
                                                        padding):
    kh, kw = size
    configs = {kind: sequential(None, pooling(kind, "pool", size, strides, padding))
               for kind in ("MaxPooling2D", "AveragePooling2D")}
    max_model = nn.from_keras(configs["MaxPooling2D"], [], layout=layout)
    avg_model = nn.from_keras(configs["AveragePooling2D"], [], layout=layout)
    eps = np.finfo(dtype).eps
    # Every remainder of the size by the stride, on both axes.
    for h in range(max(kh, 2), kh + 2 * strides[0] + 1):
        for w in range(max(kw, 2), kw + 2 * strides[1] + 1):
            x = random_array(rng, (2, h, w, 3), dtype)
            expected_max = tf_pool_ref(x, size, strides, padding, True)
            assert np.array_equal(run(max_model, x, layout), expected_max.astype(dtype)), (h, w)
            expected = tf_pool_ref(x, size, strides, padding, False)
            got = run(avg_model, x, layout)
            assert got.shape == expected.shape, (h, w)
            # As in test_nn.py: a sum of at most kh*kw values and one scaling.
            bound = (kh * kw + 1) * eps * tf_pool_ref(np.abs(x), size, strides, padding, False)
            assert np.all(np.abs(got - expected) <= bound), (h, w)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_flatten_takes_keras_hwc_order_in_both_layouts(rng, layout):
    x = random_array(rng, (2, 3, 4, 5), np.float32)
    model = nn.from_keras(sequential((3, 4, 5), flatten()), [], layout=layout)
    assert np.array_equal(model(in_layout(x, layout)), x.reshape(2, -1))


# --------------------------------------------------------------------------
# Whole models against the reference, both layouts, config as dict and JSON
# --------------------------------------------------------------------------
def classifier(input_shape=(15, 13, 3)):
    """conv same s2 relu (odd sizes), depthwise same, grouped dilated conv,
    max pool same, flatten, dense relu, dropout, dense: (config, weight shapes)."""
    config = sequential(
        input_shape,
        conv2d("conv1", 8, 3, strides=2, padding="same", activation="relu"),
        depthwise_conv2d("dw", 3, depth_multiplier=2, padding="same", activation="relu"),
        conv2d("conv2", 6, (2, 3), dilation_rate=(2, 1), groups=2),
        pooling("MaxPooling2D", "pool1", 2, padding="same"),
        pooling("AveragePooling2D", "pool2", 3, strides=1, padding="same"),
        relu("relu"),
        flatten(),
        dense("fc1", 16, "relu"), dropout("drop", 0.3),
        dense("fc2", 5))
    shapes = [(3, 3, 3, 8), (8,), (3, 3, 8, 2), (16,), (2, 3, 8, 6), (6,),
              (3 * 3 * 6, 16), (16,), (16, 5), (5,)]
    return config, shapes


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_classifier_matches_reference(rng, layout, dtype):
    config, shapes = classifier()
    weights = random_weights(rng, shapes, dtype)
    x = random_array(rng, (3, 15, 13, 3), dtype)
    expected = keras_ref(config, weights, x)
    model = nn.from_keras(config, weights, layout=layout)
    got = model(in_layout(x, layout))
    assert got.dtype == dtype and got.shape == expected.shape == (3, 5)
    assert np.allclose(got, expected, rtol=0, atol=MODEL_ATOL[dtype])
    assert model.output_shape(in_layout(x, layout).shape[1:]) == (5,)
    # The same config as JSON text, and as model.to_json() wraps it.
    for text in (json.dumps(config),
                 json.dumps({"module": "keras", "class_name": "Sequential", "config": config,
                             "registered_name": None})):
        assert np.array_equal(nn.from_keras(text, weights, layout=layout)(
            in_layout(x, layout)), got)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_softmax_heads_and_dense_on_a_map(rng, layout):
    """Dense on a map acts at every pixel; softmax (as an activation, an
    Activation or a Softmax layer) acts on the channels or features."""
    config = sequential(
        (6, 7, 3),
        conv2d("conv", 4, 3, padding="same", activation="softmax"),
        dense("pixelwise", 5, "relu"),
        activation("act_softmax", "softmax"),
        dense("pixelwise2", 3), softmax("sm"),
        global_average_pooling2d(),
        flatten("flat_again"),             # on (N, C): changes nothing
        dense("head", 4, "softmax"),
        activation("identity", "linear"), activation("act_relu", "relu"))
    shapes = [(3, 3, 3, 4), (4,), (4, 5), (5,), (5, 3), (3,), (3, 4), (4,)]
    weights = random_weights(rng, shapes, np.float32)
    x = random_array(rng, (2, 6, 7, 3), np.float32)
    got = nn.from_keras(config, weights, layout=layout)(in_layout(x, layout))
    assert np.allclose(got, keras_ref(config, weights, x), rtol=0, atol=MODEL_ATOL[np.float32])
    # Without the head: the per-pixel softmax map, in the model's layout.
    trunk = dict(config, layers=config["layers"][:6])
    got_map = run(nn.from_keras(trunk, weights[:6], layout=layout), x, layout)
    expected_map = keras_ref(trunk, weights[:6], x)
    assert got_map.shape == (2, 6, 7, 3)
    assert np.allclose(got_map, expected_map, rtol=0, atol=MODEL_ATOL[np.float32])


def test_input_shape_from_build_config_or_none(rng):
    """Without an InputLayer the shape comes from the first layer's
    build_config; without either, from the first kernel."""
    config, shapes = classifier()
    weights = random_weights(rng, shapes, np.float32)
    x = random_array(rng, (2, 15, 13, 3), np.float32)
    expected = nn.from_keras(config, weights)(x)
    no_input = dict(config, layers=config["layers"][1:])
    del no_input["build_input_shape"]
    built = json.loads(json.dumps(no_input))
    built["layers"][0]["build_config"] = {"input_shape": [None, 15, 13, 3]}
    assert np.array_equal(nn.from_keras(built, weights)(x), expected)
    # A wrong Dense kernel is found only when the map size is known...
    bad = weights[:6] + [random_array(rng, (3 * 3 * 6 + 1, 16), np.float32)] + weights[7:]
    with pytest.raises(ValueError, match=r"layer 7 'fc1' \(Dense\) expects its kernel "
                                         r"\(array 6\) of shape \(54, 16\); got \(55, 16\)"):
        nn.from_keras(built, bad)
    # ... but channels are followed from the first kernel on.
    assert np.array_equal(nn.from_keras(no_input, weights)(x), expected)
    with pytest.raises(ValueError, match=r"layer 1 'dw' \(DepthwiseConv2D\) expects its "
                                         r"depthwise_kernel \(array 2\) of shape "
                                         r"\(3, 3, 8, 2\); got \(3, 3, 7, 2\)"):
        nn.from_keras(no_input, weights[:2] + [weights[2][:, :, :7]] + weights[3:])


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------
def small_config(*middle):
    return sequential((8, 8, 3), conv2d("conv", 4, 3), *middle)


def small_weights(rng):
    return random_weights(rng, [(3, 3, 3, 4), (4,)], np.float32)


def test_wrong_number_of_weights(rng):
    config, shapes = classifier()
    weights = random_weights(rng, shapes, np.float32)
    with pytest.raises(ValueError, match=r"from_keras: layer 10 'fc2' \(Dense\) needs its "
                                         r"bias as array 9, but weights has only 9 arrays"):
        nn.from_keras(config, weights[:-1])
    with pytest.raises(ValueError, match=r"from_keras: weights has 11 arrays but the config's "
                                         r"layers use 10; array 10 \(shape \(5,\)\)"):
        nn.from_keras(config, weights + [weights[-1]])
    with pytest.raises(ValueError, match=r"layer 1 'conv' \(Conv2D\) needs its kernel as "
                                         r"array 0, but weights has only 0 arrays"):
        nn.from_keras(small_config(), [])


def test_wrong_weight_shapes_name_the_layer(rng):
    w, b = small_weights(rng)
    with pytest.raises(ValueError, match=r"from_keras: layer 1 'conv' \(Conv2D\) expects its "
                                         r"kernel \(array 0\) of shape \(3, 3, 3, 4\); "
                                         r"got \(3, 3, 2, 4\)"):
        nn.from_keras(small_config(), [w[:, :, :2], b])
    with pytest.raises(ValueError, match=r"layer 1 'conv' \(Conv2D\) expects its bias "
                                         r"\(array 1\) of shape \(4,\); got \(4, 1\)"):
        nn.from_keras(small_config(), [w, b[:, None]])
    # Keras's (in, out) Dense kernel, not PyTorch's (out, in).
    with pytest.raises(ValueError, match=r"layer 3 'fc' \(Dense\) expects its kernel "
                                         r"\(array 2\) of shape \(144, 2\); got \(2, 144\)"):
        nn.from_keras(small_config(flatten(), dense("fc", 2)),
                      [w, b, np.zeros((2, 144), np.float32), np.zeros(2, np.float32)])
    with pytest.raises(TypeError, match=r"layer 1 'conv' \(Conv2D\): Conv2d: weight must "
                                        r"have dtype float32 or float64; got float16"):
        nn.from_keras(small_config(), [w.astype(np.float16), b])


@pytest.mark.parametrize("layer,message", [
    (record("LayerNormalization", "ln", axis=-1, epsilon=0.001),
     r"layer 2 'ln' \(LayerNormalization\) has no fastconv.nn equivalent; supported layers: "
     r"InputLayer, Conv2D, DepthwiseConv2D, Conv2DTranspose, Dense, BatchNormalization"),
    (conv2d("c2", 4, 3, activation="tanh"),
     r"layer 2 'c2' \(Conv2D\) has activation 'tanh'; supported: 'linear', 'relu', 'softmax'"),
    (conv2d("c2", 4, 3, padding="causal"),
     r"layer 2 'c2' \(Conv2D\) has padding='causal'; only 'valid' and 'same'"),
    (dict(conv2d("c2", 4, 3), config=dict(conv2d("c2", 4, 3)["config"],
                                         data_format="channels_first")),
     r"layer 2 'c2' \(Conv2D\) has data_format='channels_first'; only 'channels_last'"),
    (conv2d("c2", 4, 3, groups=3),
     r"layer 2 'c2' \(Conv2D\) has groups=3, which does not divide its 4 input channels"),
    (relu("relu6", max_value=6.0),
     r"layer 2 'relu6' \(ReLU\) has max_value=6.0, negative_slope=0.0, threshold=0.0; "
     r"only the plain ReLU"),
    (relu("leaky", negative_slope=0.1), r"layer 2 'leaky' \(ReLU\) has max_value=None, "
                                        r"negative_slope=0.1"),
    (activation("act", "sigmoid"), r"layer 2 'act' \(Activation\) has activation 'sigmoid'"),
    (softmax("sm", axis=1), r"layer 2 'sm' \(Softmax\) has axis=1; only the last axis"),
    (pooling("MaxPooling2D", "pool", 3, 2, "same"),
     r"layer 2 'pool' \(MaxPooling2D\) pools with padding='same', pool_size=\(3, 3\) and "
     r"strides=\(2, 2\), where TensorFlow's padding before depends on the input size"),
    (pooling("AveragePooling2D", "pool", 2, 1, "same"),
     r"layer 2 'pool' \(AveragePooling2D\) pools with padding='same', pool_size=\(2, 2\) "
     r"and strides=\(1, 1\)"),
    (global_average_pooling2d("gap", keepdims=True),
     r"layer 2 'gap' \(GlobalAveragePooling2D\) has keepdims=True"),
    (dict(dense("fc", 3), config=dict(dense("fc", 3)["config"],
                                      quantization_config={"mode": "int8"})),
     r"layer 2 'fc' \(Dense\) is quantized; only float weights"),
    (conv2d("big", 2, 9),
     r"layer 2 'big' \(Conv2D\): Conv2d: the kernel \(9x9.* is larger than the padded input"),
])
def test_unsupported_layers_and_options_are_refused(rng, layer, message):
    with pytest.raises(ValueError, match="from_keras: " + message):
        nn.from_keras(small_config(layer), small_weights(rng) + random_weights(
            rng, [(9, 9, 4, 2), (2,)] if layer["config"]["name"] == "big"
            else [(3, 3, 4, 4), (4,)], np.float32))


def test_bad_configs_and_arguments(rng):
    w = small_weights(rng)
    with pytest.raises(ValueError, match=r"from_keras: config is not valid JSON"):
        nn.from_keras("{'layers': []}", w)
    with pytest.raises(ValueError, match=r"config describes a Bogus model; only "
                                         r"keras.Sequential and functional"):
        nn.from_keras({"class_name": "Bogus", "config": {"layers": []}}, w)
    with pytest.raises(ValueError, match=r"from_keras: config's input_layers must be a \[layer "
                                         r"name, node index, tensor index\] triple"):
        nn.from_keras({"class_name": "Functional", "config": {"layers": []}}, w)
    with pytest.raises(ValueError, match=r"config's input_layers must be"):
        nn.from_keras({"layers": [], "input_layers": [], "output_layers": []}, w)
    with pytest.raises(ValueError, match=r"config has no 'layers' list"):
        nn.from_keras({"name": "sequential"}, w)
    with pytest.raises(TypeError, match=r"from_keras: config must be a keras.Sequential "
                                        r"config .* got list"):
        nn.from_keras([conv2d("conv", 4, 3)], w)
    with pytest.raises(TypeError, match=r"from_keras: weights is required with a config"):
        nn.from_keras(small_config())
    with pytest.raises(TypeError, match=r"weights must be a sequence of arrays .* got dict"):
        nn.from_keras(small_config(), {"kernel": w[0], "bias": w[1]})
    with pytest.raises(ValueError, match=r"from_keras: layout must be 'NHWC' or 'NCHW'"):
        nn.from_keras(small_config(), w, layout="HWCN")
    with pytest.raises(ValueError, match=r"layer 0 'input_layer' \(InputLayer\) has input "
                                         r"shape \[None, 10, 4\]; only \(batch, H, W, C\)"):
        nn.from_keras(sequential((10, 4), dense("fc", 2)), w)
    with pytest.raises(ValueError, match=r"layer 3 'pool' \(MaxPooling2D\) receives a flat "
                                         r"input of shape \(144,\); it needs an \(H, W, C\) map"):
        nn.from_keras(small_config(flatten(), pooling("MaxPooling2D", "pool", 2)), w)
    with pytest.raises(ValueError, match=r"layer 1 'conv' \(Conv2D\) has no 'filters' in its "
                                         r"config"):
        bad = small_config()
        del bad["layers"][1]["config"]["filters"]
        nn.from_keras(bad, w)
    with pytest.raises(ValueError, match=r"layer 1 'conv' \(Conv2D\) has strides=\[0, 1\]; "
                                         r"expected an int >= 1 or a pair"):
        nn.from_keras(sequential((8, 8, 3), conv2d("conv", 4, 3, strides=(0, 1))), w)


def test_keras_model_object_is_duck_typed(rng):
    """Anything with get_config() and get_weights() is read as a model."""
    config, shapes = classifier()
    weights = random_weights(rng, shapes, np.float32)

    class FakeModel:
        def get_config(self):
            return config

        def get_weights(self):
            return weights

    x = random_array(rng, (2, 15, 13, 3), np.float32)
    expected = nn.from_keras(config, weights)(x)
    assert np.array_equal(nn.from_keras(FakeModel())(x), expected)
    # Weights given with a model are used instead of the model's.
    other = random_weights(rng, shapes, np.float32)
    assert np.array_equal(nn.from_keras(FakeModel(), other)(x),
                          nn.from_keras(config, other)(x))


# --------------------------------------------------------------------------
# Against Keras itself (torch backend); skipped without Keras
# --------------------------------------------------------------------------
# Keras 3.15's variables and tensors warn under numpy 2 when converted.
keras_warnings = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture(scope="module")
def keras():
    """Keras on its torch backend, chosen here so that no environment
    variable is needed (Keras reads KERAS_BACKEND when first imported)."""
    pytest.importorskip("torch")
    previous = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        keras = pytest.importorskip("keras")
    finally:
        if previous is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = previous
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras was imported earlier with the {keras.backend.backend()} backend")
    # Keras's defaults, whatever ~/.keras/keras.json says.
    keras.config.set_floatx("float32")
    keras.config.set_image_data_format("channels_last")
    return keras


def keras_model(keras, rng, input_shape, *layers):
    """A keras.Sequential with random weights of order one (biases too)."""
    model = keras.Sequential([keras.Input(input_shape), *layers])
    model.set_weights(random_weights(rng, [w.shape for w in model.get_weights()],
                                     np.float32))
    return model


def keras_models(keras, rng):
    L = keras.layers
    yield "convs-maxpool-dense", keras_model(
        keras, rng, (15, 13, 3),
        L.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        L.Conv2D(8, (4, 2), padding="same"), L.ReLU(),
        L.Conv2D(6, 3, strides=2, padding="valid", dilation_rate=1, groups=2),
        L.MaxPooling2D(2, padding="same"),
        L.Flatten(), L.Dense(16, activation="relu"), L.Dropout(0.5), L.Dense(5))
    yield "depthwise-avgpool-softmax", keras_model(
        keras, rng, (14, 11, 4),
        L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same",
                          activation="relu"),
        L.AveragePooling2D(3, strides=1, padding="same"),
        L.Conv2D(6, 3, padding="same", dilation_rate=2),
        L.AveragePooling2D(2, padding="same"),
        L.MaxPooling2D(3, strides=1, padding="valid"),
        L.Flatten(), L.Dense(7, activation="softmax"))
    yield "dense-on-map-gap", keras_model(
        keras, rng, (9, 10, 3),
        L.Conv2D(5, 1), L.Dense(6, activation="relu"), L.Activation("softmax"),
        L.MaxPooling2D(2, strides=3, padding="same"), L.Softmax(),
        L.GlobalAveragePooling2D(), L.Dense(4), L.Activation("relu"))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@keras_warnings
def test_keras_torch_models_match_keras(keras, rng, layout):
    for name, model in keras_models(keras, rng):
        shape = model.inputs[0].shape[1:]
        x = rng.standard_normal((3, *shape)).astype(np.float32)
        expected = model.predict(x, verbose=0)
        got = nn.from_keras(model, layout=layout)(in_layout(x, layout))
        assert got.shape == expected.shape, name
        assert np.allclose(got, expected, rtol=0, atol=1e-5), name
        # From stored JSON and arrays, without the model: the same model.
        for text in (model.to_json(), json.dumps(model.get_config())):
            again = nn.from_keras(text, model.get_weights(), layout=layout)
            assert np.array_equal(again(in_layout(x, layout)), got), name


@keras_warnings
def test_keras_torch_conv_same_padding_matches_keras(keras, rng):
    """TensorFlow's "same": the odd pixel at the bottom/right, at strides 1
    and 2, odd and even sizes and kernels."""
    L = keras.layers
    for h, w in [(7, 9), (8, 10), (9, 8)]:
        for kernel, strides in [(3, 2), (2, 1), (4, 2), ((5, 2), (2, 3)), (1, 2)]:
            model = keras_model(keras, rng, (h, w, 3),
                                L.Conv2D(4, kernel, strides=strides, padding="same"))
            x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
            expected = model.predict(x, verbose=0)
            got = nn.from_keras(model)(x)
            assert got.shape == expected.shape, (h, w, kernel, strides)
            assert np.allclose(got, expected, rtol=0, atol=1e-5), (h, w, kernel, strides)


@keras_warnings
def test_keras_torch_refusals(keras, rng):
    L = keras.layers
    model = keras_model(keras, rng, (8, 8, 3), L.Conv2D(4, 3, name="c"),
                        L.LayerNormalization(name="ln"))
    with pytest.raises(ValueError, match=r"from_keras: layer 2 'ln' \(LayerNormalization\) "
                                         r"has no fastconv.nn equivalent"):
        nn.from_keras(model)
    model = keras_model(keras, rng, (8, 8, 3), L.MaxPooling2D(3, strides=2, padding="same",
                                                              name="p"))
    with pytest.raises(ValueError, match=r"layer 1 'p' \(MaxPooling2D\) pools with "
                                         r"padding='same', pool_size=\(3, 3\)"):
        nn.from_keras(model)
    model = keras_model(keras, rng, (8, 8, 3), L.ReLU(max_value=6.0, name="relu6"))
    with pytest.raises(ValueError, match=r"layer 1 'relu6' \(ReLU\) has max_value=6.0"):
        nn.from_keras(model)


@keras_warnings
def test_keras_torch_config_format(keras):
    """The builders above write what Keras 3's get_config() returns (as JSON;
    build_config, which Keras adds to built layers, left out)."""
    L = keras.layers
    model = keras.Sequential([
        keras.Input((12, 12, 4), name="input_layer"),  # not input_layer_<n> in a session
        L.Conv2D(8, 3, strides=2, padding="same", dilation_rate=1, groups=2,
                 activation="relu", name="conv"),
        L.DepthwiseConv2D((3, 2), depth_multiplier=2, padding="valid", use_bias=False,
                          name="dw"),
        L.MaxPooling2D(2, padding="same", name="max"),
        L.AveragePooling2D(2, strides=1, name="avg"),
        L.ReLU(name="relu"), L.Activation("softmax", name="act"), L.Softmax(name="sm"),
        L.Dropout(0.25, name="drop"), L.Flatten(name="flatten"),
        L.Dense(3, activation="softmax", name="fc")])
    expected = sequential(
        (12, 12, 4),
        conv2d("conv", 8, 3, strides=2, padding="same", groups=2, activation="relu"),
        depthwise_conv2d("dw", (3, 2), 2, use_bias=False),
        pooling("MaxPooling2D", "max", 2, padding="same"),
        pooling("AveragePooling2D", "avg", 2, strides=1),
        relu("relu"), activation("act", "softmax"), softmax("sm"), dropout("drop", 0.25),
        flatten("flatten"), dense("fc", 3, "softmax"), name=model.name)
    got = json.loads(json.dumps(model.get_config()))
    for layer in got["layers"]:
        layer.pop("build_config", None)
    assert got == expected


# -- functional models ---------------------------------------------------------------
def randomized(keras, rng, model):
    """A Keras model with random weights of order one and BatchNormalization
    statistics far from the defaults (variances > 0)."""
    model.set_weights(random_weights(rng, [w.shape for w in model.get_weights()], np.float32))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            ws = layer.get_weights()  # [gamma], [beta], moving mean, moving variance
            if layer.scale:
                ws[0] = ws[0] + 1
            ws[-1] = np.abs(ws[-1]) + 0.5
            layer.set_weights(ws)
    return model


def residual_functional(keras):
    """Two inputs, a BN-ReLU stem, a residual block (depthwise, BN, Add),
    a shared 1x1 conv applied twice, and two outputs (a softmax head and a map)."""
    L = keras.layers
    x = keras.Input((16, 15, 3), name="image")
    extra = keras.Input((16, 15, 8), name="extra")
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    h = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(h))
    r = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(h)
    r = L.BatchNormalization(name="bn1")(L.DepthwiseConv2D(3, padding="same", name="dw")(r))
    h = L.Activation("relu", name="act")(L.Add(name="add")([h, r]))
    shared = L.Conv2D(8, 1, name="shared")
    h = L.Add(name="add2")([shared(h), shared(extra)])
    head = L.Dense(5, activation="softmax", name="fc")(L.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model([x, extra], [head, h])


def unet_functional(keras):
    """A small U-Net: a Conv2DTranspose and bilinear and nearest UpSampling2D,
    skips joined by Concatenate, ZeroPadding2D, Cropping2D, Multiply."""
    L = keras.layers
    x = keras.Input((20, 18, 3), name="img")
    d1 = L.Conv2D(8, 3, padding="same", activation="relu", name="d1")(x)
    d2 = L.Conv2D(16, 3, padding="same", name="d2")(L.MaxPooling2D(2, name="p1")(d1))
    d2 = L.ReLU(name="d2_relu")(L.BatchNormalization(name="d2_bn")(d2))
    u1 = L.Conv2DTranspose(8, 2, strides=2, padding="same", name="up1")(d2)
    c1 = L.Concatenate(name="cat1")([u1, d1])
    u2 = L.UpSampling2D(2, interpolation="bilinear", name="up2")(c1)
    u2 = L.Conv2D(4, 3, name="c2")(u2)
    u2 = L.Cropping2D(((2, 1), (1, 0)), name="crop")(L.ZeroPadding2D(((1, 2), (0, 1)),
                                                                     name="zp")(u2))
    u3 = L.Conv2D(4, 3, name="c3")(L.UpSampling2D(2, name="up3")(d1))
    u4 = L.Conv2DTranspose(4, 3, strides=2, padding="valid", name="up4")(d1)
    u4 = L.Cropping2D(((0, 1), (0, 1)), name="crop4")(L.Conv2D(4, 3, name="c4")(u4))
    out = L.Concatenate(axis=2, name="cat_w")([L.Multiply(name="mul")([u2, u3]), u4])
    return keras.Model(x, out)


def run_all(model, xs, layout):
    """The model's outputs, as a list, on NHWC inputs given in `layout`."""
    ins = [in_layout(x, layout) for x in xs]
    out = model(ins if len(ins) > 1 else ins[0])
    return out if isinstance(out, list) else [out]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@keras_warnings
def test_keras_torch_functional_models_match_keras(keras, rng, layout):
    for make in (residual_functional, unet_functional):
        model = randomized(keras, rng, make(keras))
        xs = [rng.standard_normal((2, *t.shape[1:])).astype(np.float32) for t in model.inputs]
        expected = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
        expected = expected if isinstance(expected, list) else [expected]
        imported = nn.from_keras(model, layout=layout)
        assert imported.input_names == [t.name for t in model.inputs]
        got = run_all(imported, xs, layout)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            g = np.moveaxis(g, 1, -1) if layout == "NCHW" and g.ndim == 4 else g
            assert g.shape == e.shape, make.__name__
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-5 * max(1, np.abs(e).max()))
        # From stored JSON and arrays, without the model: the same model.
        again = nn.from_keras(model.to_json(), model.get_weights(), layout=layout)
        for a, g in zip(run_all(again, xs, layout), got):
            np.testing.assert_array_equal(a, g)


@keras_warnings
def test_keras_torch_functional_fusions_and_names(keras, rng):
    model = nn.from_keras(randomized(keras, rng, residual_functional(keras)))
    assert ("stem", "stem_bn", "stem_relu") in model.fusions
    assert ("dw", "bn1", "add", "act") in model.fusions  # BN folded, residual and ReLU fused
    assert model.output_names == ["fc_softmax", "add2"]
    assert isinstance(model.get_layer("shared"), nn.Conv2d)
    assert sum(node.layer is model.get_layer("shared") for node in model.nodes) == 2


@keras_warnings
def test_keras_torch_functional_refusals(keras, rng):
    L = keras.layers
    x = keras.Input((8, 8, 3), name="x")
    y = L.LayerNormalization(name="ln")(L.Conv2D(4, 3, name="c")(x))
    with pytest.raises(ValueError, match=r"from_keras: layer 2 'ln' \(LayerNormalization\) has "
                                         r"no fastconv.nn equivalent; supported layers"):
        nn.from_keras(randomized(keras, rng, keras.Model(x, y)))
    a, b = L.Conv2D(4, 3, name="a")(x), L.Conv2D(4, 3, name="b")(x)
    with pytest.raises(ValueError, match=r"layer 3 'sub' \(Subtract\) has no fastconv.nn "
                                         r"equivalent"):
        nn.from_keras(randomized(keras, rng, keras.Model(x, L.Subtract(name="sub")([a, b]))))
    inner = keras.Model(x, L.Conv2D(4, 1, name="inner_conv")(x), name="inner")
    z = keras.Input((8, 8, 3), name="z")
    with pytest.raises(ValueError, match=r"layer 1 'inner' \(Functional\) has no fastconv.nn "
                                         r"equivalent"):
        nn.from_keras(randomized(keras, rng, keras.Model(z, inner(z))))
    with pytest.raises(ValueError, match=r"layer 3 'add' \(Add\) merges shapes \(6, 6, 4\), "
                                         r"\(1, 1, 4\); fastconv's Add takes inputs of one "
                                         r"shape"):
        pooled = L.MaxPooling2D(6, name="pool")(a)
        nn.from_keras(randomized(keras, rng, keras.Model(x, L.Add(name="add")([a, pooled]))))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@keras_warnings
def test_keras_torch_sequential_new_layers_match_keras(keras, rng, layout):
    L = keras.layers
    model = randomized(keras, rng, keras.Sequential([
        keras.Input((9, 7, 3)), L.Conv2D(6, 3, padding="same", use_bias=False),
        L.BatchNormalization(epsilon=0.01), L.ReLU(),
        L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu"),
        L.ZeroPadding2D(((0, 1), (2, 0))), L.UpSampling2D((2, 3), interpolation="bilinear"),
        L.Cropping2D(((3, 1), (0, 2))), L.BatchNormalization(center=False, scale=False),
        L.UpSampling2D(2), L.Conv2DTranspose(2, (2, 3), strides=(1, 2), padding="valid")]))
    x = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    imported = nn.from_keras(model, layout=layout)
    assert isinstance(imported, nn.Sequential)
    got = run(imported, x, layout)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * max(1, np.abs(expected).max()))


def keras_tensor(name, node=0, index=0):
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, node, index]}}


def functional_config(conv_reads="x"):
    """A functional get_config(), written out: x -> conv c (same), Add(x, c)."""
    def applied(rec, *args):
        return dict(rec, name=rec["config"]["name"],
                    inbound_nodes=[{"args": list(args), "kwargs": {}}])

    inp = dict(input_layer((6, 5, 2)), name="input_layer", inbound_nodes=[])
    conv = applied(conv2d("c", 2, 3, padding="same"), keras_tensor(conv_reads))
    add = applied(record("Add", "add"), [keras_tensor("input_layer"), keras_tensor("c")])
    return {"name": "functional", "trainable": True, "layers": [inp, conv, add],
            "input_layers": [["input_layer", 0, 0]], "output_layers": [["add", 0, 0]]}


def test_functional_config_without_keras(rng):
    weights = random_weights(rng, [(3, 3, 2, 2), (2,)], np.float64)
    model = nn.from_keras(functional_config("input_layer"), weights)
    assert model.fusions == [("c", "add")]
    x = random_array(rng, (2, 6, 5, 2), np.float64)
    pads = same_padding((6, 5), (3, 3))
    ref = conv2d_ref(x, weights[0], weights[1], padding=pads) + x
    mag = conv2d_magnitude(x, weights[0], weights[1], padding=pads) + np.abs(x)
    assert_close_to_reference(model(x), ref, mag, 3 * 3 * 2 + 2, np.float64)
    with pytest.raises(ValueError, match=r"from_keras: layer 1 'c' \(Conv2D\) reads tensor "
                                         r"\['x', 0, 0\], which no earlier layer of the config "
                                         r"makes"):
        nn.from_keras(functional_config("x"), weights)
    bad = functional_config("input_layer")
    bad["layers"][2]["inbound_nodes"][0]["args"] = [[{"class_name": "__keras_tensor__"}]]
    with pytest.raises(ValueError, match=r"layer 2 'add' \(Add\) is applied to .*; expected "
                                         r"Keras tensors"):
        nn.from_keras(bad, weights)
    with pytest.raises(ValueError, match=r"weights has 3 arrays but the config's layers use 2"):
        nn.from_keras(functional_config("input_layer"), weights + [weights[1]])
