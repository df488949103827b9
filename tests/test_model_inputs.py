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


def test_a_classifier_given_the_wrong_image_size_says_which_size_fits():
    model = _classifier()  # (16x16x3 -> 8x8x8 at the Flatten -> 512 features)
    hint = (r"Linear: x has 800 features; the layer takes in_features=512\. The Linear after "
            r"the Flatten fixes the input's size: \(16, 16, 3\) fits it .* "
            r"nn\.to_fully_convolutional\(model, <that size>\)")
    with pytest.raises(ValueError, match=r"at layer 3 'linear' \(Linear\), .*" + hint):
        model(np.zeros((1, 20, 20, 3), np.float32))
    with pytest.raises(ValueError, match=hint):
        model(np.zeros((20, 20, 3), np.float32))
    # to_fully_convolutional given the large image's shape instead of the
    # classifier's says so, in the user's terms (not fc_to_conv's)
    with pytest.raises(ValueError, match=r"to_fully_convolutional: input_shape must be the input "
                                         r"the classifier was built for \(an input of "
                                         r"\(16, 16, 3\) fits it\), not the larger image"):
        nn.to_fully_convolutional(model, (20, 20, 3))
    fcn = nn.to_fully_convolutional(model, (16, 16, 3))
    assert fcn(np.zeros((1, 20, 20, 3), np.float32)).shape == (1, 3, 3, 4)


def test_the_size_that_fits_follows_the_layout_and_non_square_inputs():
    rng = np.random.default_rng(3)
    # NCHW, 3 input rows by 5 columns of a 2x2-pooled 3x3 convolution:
    # an input of 8 x 12 (conv -> 6 x 10, pool -> 3 x 5)
    model = nn.Sequential(nn.Conv2d(rng.standard_normal((4, 2, 3, 3), np.float32),
                                    layout="NCHW"),
                          nn.MaxPool2d(2, layout="NCHW"), nn.Flatten(order="CHW", layout="NCHW"),
                          nn.Linear(rng.standard_normal((4 * 3 * 5, 2), np.float32)),
                          layout="NCHW")
    assert model(np.zeros((1, 2, 8, 12), np.float32)).shape == (1, 2)
    with pytest.raises(ValueError, match=r"\(2, 8, 12\) fits it"):
        model(np.zeros((1, 2, 10, 10), np.float32))
    # a Linear that no input size can fit (features not a multiple of the
    # channels) gets no size hint
    odd = nn.Sequential(nn.Conv2d(rng.standard_normal((1, 1, 2, 4), np.float32)), nn.Flatten(),
                        nn.Linear(rng.standard_normal((10, 2), np.float32)))
    with pytest.raises(ValueError, match=r"x has 64 features; the layer takes "
                                         r"in_features=10$"):
        odd(np.zeros((1, 4, 4, 2), np.float32))


def test_a_weight_in_the_other_layouts_order_is_named_with_the_fix():
    import fastconv
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 9, 9, 3)).astype(np.float32)
    w_oihw = rng.standard_normal((16, 3, 5, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"x has C=3 channels, but the weight has 5 input .* "
                                         r"The weight of shape \(16, 3, 5, 5\) looks OIHW .* "
                                         r"layout='NHWC' takes weights HWIO .* pass "
                                         r"weight\.transpose\(2, 3, 1, 0\)"):
        fastconv.conv2d(x, w_oihw)
    # the fix it gives is right: the NHWC result is the NCHW one transposed
    got = fastconv.conv2d(x, w_oihw.transpose(2, 3, 1, 0))
    want = fastconv.conv2d(x.transpose(0, 3, 1, 2).copy(), w_oihw, layout="NCHW")
    np.testing.assert_allclose(got, want.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    w_hwio = w_oihw.transpose(2, 3, 1, 0).copy()
    with pytest.raises(ValueError, match=r"The weight of shape \(5, 5, 3, 16\) looks HWIO .* "
                                         r"pass weight\.transpose\(3, 2, 0, 1\)"):
        fastconv.conv2d(x.transpose(0, 3, 1, 2).copy(), w_hwio, layout="NCHW")
    np.testing.assert_array_equal(w_hwio.transpose(3, 2, 0, 1), w_oihw)


def test_reprs_print_geometry_one_way_and_summary_columns_line_up():
    rng = np.random.default_rng(5)
    assert repr(nn.MaxPool2d(2)) == ("MaxPool2d(kernel_size=2, stride=2, padding=0, "
                                     "ceil_mode=False, layout='NHWC')")
    assert repr(nn.AvgPool2d((2, 3), 1, (1, 0))) == (
        "AvgPool2d(kernel_size=(2, 3), stride=1, padding=(1, 0), ceil_mode=False, "
        "count_include_pad=True, layout='NHWC')")
    conv = nn.Conv2d(rng.standard_normal((3, 3, 2, 2), np.float32), stride=(2, 1), padding=1,
                     dilation=3)
    assert "stride=(2, 1), padding=1, dilation=3," in repr(conv)
    model = nn.Sequential(conv, nn.Conv2d(rng.standard_normal((1, 1, 2, 2), np.float32),
                                          name="a_layer_with_a_long_name_indeed"),
                          nn.MaxPool2d(2))
    lines = model.summary((1000, 1000, 2)).splitlines()[1:-2]
    for column in ("type", "output shape"):
        starts = {line.index(word) for line, word in zip(
            lines, [column, "Input", "Conv2d", "Conv2d", "MaxPool2d"] if column == "type"
            else [column, "(1000, 1000, 2)", "(498, 996, 2)", "(498, 996, 2)",
                  "(249, 498, 2)"])}
        assert len(starts) == 1, (column, lines)
