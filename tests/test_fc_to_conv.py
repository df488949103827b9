"""fastconv.fc_to_conv: a dense layer after a flatten equals a conv2d.

Each test builds the dense layer explicitly: flatten the (H, W, C) feature
map in the given axis order, then flat @ W (weight_layout "IO") or W @ flat
("OI"), plus bias, in float64.
"""

import itertools

import numpy as np
import pytest

import fastconv
from checks import DTYPE_IDS, FLOAT_DTYPES, assert_close_to_reference, random_array

FLATTEN_ORDERS = ["".join(p) for p in itertools.permutations("HWC")]
WEIGHT_LAYOUTS = ("IO", "OI")
LAYOUTS = ("NHWC", "NCHW")

dtypes = pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)


def flatten(fmap, order):
    """Flatten an (H, W, C) map with its axes taken in ``order``."""
    return fmap.transpose(["HWC".index(axis) for axis in order]).ravel()


def dense_weight(rng, features, k, weight_layout, dtype):
    shape = (features, k) if weight_layout == "IO" else (k, features)
    return random_array(rng, shape, dtype)


def dense(flat, weight, bias, weight_layout):
    """(result, magnitude) of the dense layer in float64."""
    flat = np.asarray(flat, np.float64)
    weight = np.asarray(weight, np.float64)
    w_io = weight if weight_layout == "IO" else weight.T
    result = flat @ w_io
    magnitude = np.abs(flat) @ np.abs(w_io)
    if bias is not None:
        result = result + bias
        magnitude = magnitude + np.abs(np.asarray(bias, np.float64))
    return result, magnitude


def conv_nhwc(fmap, kernel, bias, layout):
    """conv2d of one (H, W, C) map in ``layout``; result returned as (Ho, Wo, K)."""
    if layout == "NHWC":
        return fastconv.conv2d(fmap[np.newaxis], kernel, bias, layout="NHWC")[0]
    x = np.ascontiguousarray(fmap.transpose(2, 0, 1))[np.newaxis]
    return fastconv.conv2d(x, kernel, bias, layout="NCHW")[0].transpose(1, 2, 0)


@pytest.mark.parametrize("flatten_order", FLATTEN_ORDERS)
@pytest.mark.parametrize("weight_layout", WEIGHT_LAYOUTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@dtypes
def test_dense_layer_equals_full_map_conv(rng, flatten_order, weight_layout,
                                          layout, dtype):
    h, w, c, k = 3, 4, 5, 6
    fmap = random_array(rng, (h, w, c), dtype)
    weight = dense_weight(rng, h * w * c, k, weight_layout, dtype)
    bias = random_array(rng, (k,), dtype)

    kernel, kernel_bias = fastconv.fc_to_conv(
        weight, (h, w, c), bias, weight_layout=weight_layout,
        flatten_order=flatten_order, layout=layout)
    assert kernel.shape == ((h, w, c, k) if layout == "NHWC" else (k, c, h, w))
    assert kernel.dtype == weight.dtype

    result = conv_nhwc(fmap, kernel, kernel_bias, layout)
    assert result.shape == (1, 1, k)
    expected, magnitude = dense(flatten(fmap, flatten_order), weight, bias,
                                weight_layout)
    assert_close_to_reference(result[0, 0], expected, magnitude, h * w * c, dtype)


@pytest.mark.parametrize("flatten_order", FLATTEN_ORDERS)
@pytest.mark.parametrize("weight_layout", WEIGHT_LAYOUTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_larger_input_gives_dense_layer_at_every_window(rng, flatten_order,
                                                        weight_layout, layout):
    h, w, c, k = 2, 3, 4, 5
    dtype = np.float64
    fmap = random_array(rng, (h + 3, w + 2, c), dtype)
    weight = dense_weight(rng, h * w * c, k, weight_layout, dtype)
    bias = random_array(rng, (k,), dtype)
    kernel, kernel_bias = fastconv.fc_to_conv(
        weight, (h, w, c), bias, weight_layout=weight_layout,
        flatten_order=flatten_order, layout=layout)

    result = conv_nhwc(fmap, kernel, kernel_bias, layout)
    assert result.shape == (4, 3, k)
    for i in range(4):
        for j in range(3):
            window = fmap[i:i + h, j:j + w]
            expected, magnitude = dense(flatten(window, flatten_order), weight,
                                        bias, weight_layout)
            assert_close_to_reference(result[i, j], expected, magnitude,
                                      h * w * c, dtype)


@pytest.mark.parametrize("flatten_order", ("HWC", "CHW", "WCH"))
@pytest.mark.parametrize("weight_layout", WEIGHT_LAYOUTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fc7_like_1x1_input_gives_pointwise_conv(rng, flatten_order,
                                                 weight_layout, layout):
    c, k = 12, 7
    dtype = np.float32
    weight = dense_weight(rng, c, k, weight_layout, dtype)
    bias = random_array(rng, (k,), dtype)
    kernel, kernel_bias = fastconv.fc_to_conv(
        weight, (1, 1, c), bias, weight_layout=weight_layout,
        flatten_order=flatten_order, layout=layout)
    assert kernel.shape == ((1, 1, c, k) if layout == "NHWC" else (k, c, 1, 1))

    fmap = random_array(rng, (5, 6, c), dtype)
    result = conv_nhwc(fmap, kernel, kernel_bias, layout)
    expected, magnitude = dense(fmap.reshape(-1, c), weight, bias, weight_layout)
    assert_close_to_reference(result.reshape(-1, k), expected, magnitude, c, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bias_none_gives_none(rng, layout):
    weight = random_array(rng, (2 * 2 * 3, 4), np.float32)
    kernel, kernel_bias = fastconv.fc_to_conv(weight, (2, 2, 3), layout=layout)
    assert kernel_bias is None
    fmap = random_array(rng, (2, 2, 3), np.float32)
    result = conv_nhwc(fmap, kernel, None, layout)
    expected, magnitude = dense(flatten(fmap, "HWC"), weight, None, "IO")
    assert_close_to_reference(result[0, 0], expected, magnitude, 12, np.float32)


def test_defaults_are_keras_convention(rng):
    """Defaults: weight_layout "IO", flatten_order "HWC", layout "NHWC"."""
    weight = random_array(rng, (3 * 2 * 4, 5), np.float64)
    kernel, _ = fastconv.fc_to_conv(weight, (3, 2, 4))
    np.testing.assert_array_equal(kernel, weight.reshape(3, 2, 4, 5))


def test_pytorch_convention_is_plain_reshape(rng):
    """PyTorch: flatten of NCHW, weight (out, in) -> OIHW = W.reshape(K, C, H, W)."""
    weight = random_array(rng, (5, 4 * 3 * 2), np.float64)
    kernel, _ = fastconv.fc_to_conv(weight, (3, 2, 4), weight_layout="OI",
                                    flatten_order="CHW", layout="NCHW")
    np.testing.assert_array_equal(kernel, weight.reshape(5, 4, 3, 2))


@pytest.mark.parametrize("weight_layout", WEIGHT_LAYOUTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_weight_and_input_untouched(rng, weight_layout, layout):
    weight = dense_weight(rng, 2 * 3 * 4, 5, weight_layout, np.float32)
    view = np.asfortranarray(weight)
    kwargs = dict(weight_layout=weight_layout, flatten_order="WCH", layout=layout)
    expected, _ = fastconv.fc_to_conv(weight.copy(), (2, 3, 4), **kwargs)
    kernel, _ = fastconv.fc_to_conv(view, (2, 3, 4), **kwargs)
    np.testing.assert_array_equal(kernel, expected)
    np.testing.assert_array_equal(view, weight)


@pytest.mark.parametrize("weight_layout, shape", [("IO", (59, 6)), ("OI", (6, 61))])
def test_size_mismatch_names_both_sizes(weight_layout, shape):
    weight = np.zeros(shape, np.float32)
    with pytest.raises(ValueError) as excinfo:
        fastconv.fc_to_conv(weight, (3, 4, 5), weight_layout=weight_layout)
    message = str(excinfo.value)
    assert "60" in message, message
    assert str(shape[0] if weight_layout == "IO" else shape[1]) in message, message


@pytest.mark.parametrize("flatten_order", ("HW", "HWCC", "XYZ", "HHC"))
def test_bad_flatten_order(flatten_order):
    weight = np.zeros((60, 6), np.float32)
    with pytest.raises(ValueError, match="flatten_order") as excinfo:
        fastconv.fc_to_conv(weight, (3, 4, 5), flatten_order=flatten_order)
    assert flatten_order in str(excinfo.value)


@pytest.mark.parametrize("weight_layout", ("IOX", "HW", "", "OO"))
def test_bad_weight_layout(weight_layout):
    weight = np.zeros((60, 6), np.float32)
    with pytest.raises(ValueError, match="weight_layout"):
        fastconv.fc_to_conv(weight, (3, 4, 5), weight_layout=weight_layout)


def test_bad_layout():
    weight = np.zeros((60, 6), np.float32)
    with pytest.raises(ValueError, match="layout") as excinfo:
        fastconv.fc_to_conv(weight, (3, 4, 5), layout="NHCW")
    assert "NHCW" in str(excinfo.value)
