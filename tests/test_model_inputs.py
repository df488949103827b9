"""What a model takes and how it says what went wrong: uint8, integer and
float16 images and lists converted to the model's dtype; a map without its
batch axis run as a batch of one through every layer (pools included);
errors that name the layer (index and name) and the model's input."""
import numpy as np
import pytest

from fastconv import nn


def _classifier():
    rng = np.random.default_rng(0)
    return nn.Sequential(nn.Conv2d(rng.standard_normal((3, 3, 3, 8), np.float32), padding=1,
                                   activation="relu"),
                         nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(rng.standard_normal((8 * 8 * 8, 4), np.float32)))


def test_uint8_float16_int_and_list_images_are_converted_to_the_models_dtype():
    model = _classifier()
    image = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    want = model(image.astype(np.float32))
    assert want.dtype == np.float32
    np.testing.assert_array_equal(model(image), want)
    np.testing.assert_array_equal(model(image.astype(np.int64)), want)
    np.testing.assert_array_equal(model(image.astype(np.float16)), want)
    np.testing.assert_array_equal(model(image.tolist()), want)  # (float64 from a list)
    # a float64 array for float32 weights is still refused, not rounded silently
    with pytest.raises(TypeError, match="must share one dtype"):
        model(image.astype(np.float64))


def test_a_map_without_its_batch_axis_runs_through_every_layer():
    model = _classifier()
    image = np.random.default_rng(2).standard_normal((16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(image), model(image[None])[0])
    x = nn.Input((16, 16, 3))
    graph = nn.Model(x, nn.MaxPool2d(2)(nn.ReLU()(x)))
    np.testing.assert_array_equal(graph(image), graph(image[None])[0])


def test_errors_name_the_layer_and_the_models_input():
    model = _classifier()
    with pytest.raises(ValueError, match=r"Sequential: at layer 3 'linear' \(Linear\), for the "
                                         r"model's input of shape \(1, 20, 20, 3\): Linear"):
        model(np.zeros((1, 20, 20, 3), np.float32))
    with pytest.raises(ValueError, match=r"at layer 0 'conv2d' \(Conv2d\), for the model's "
                                         r"input of shape \(1, 3, 16, 16\): Conv2d: x has C=16 "
                                         r"channels, but the weight has 3 input channels per "
                                         r"group \(groups=1, so x needs 3\)\. x of shape "
                                         r"\(1, 3, 16, 16\) looks NCHW .* pass "
                                         r"x\.transpose\(0, 2, 3, 1\)"):
        model(np.zeros((1, 3, 16, 16), np.float32))  # (NCHW into an NHWC model)


def test_calling_a_layer_or_model_is_documented():
    doc = nn.Sequential.__call__.__doc__
    assert doc and "forward" in doc and "num_threads" in doc and "symbolic" in doc
