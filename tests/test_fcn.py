"""nn.fcn (FCN-32s/16s/8s) against the independent implementation of
fcn8_vgg.py / fcn16_vgg.py / fcn32_vgg.py's forward pass in
tests/fcn_reference.py (torch float64, TensorFlow's SAME rules, itself
checked against TensorFlow), on scaled-down VGG16-style weights at odd
input sizes; and the layer names, reduce_classes, predict_labels, the
NCHW form, save/load and the argument checks."""

import numpy as np
import pytest

from fastconv import nn

torch = pytest.importorskip("torch")
import fcn_reference as ref  # noqa: E402  (needs torch)

CONV_NAMES = [name for block in ref.CONV_LAYERS for name in block]


def classifier_from(params, layout="NHWC"):
    """A fastconv Sequential VGG16 (13 convolutions with ReLU in 5 pooled
    blocks, Flatten in TF's HWC order, fc6, fc7, fc8) with these weights."""
    layers = []
    for block in ref.CONV_LAYERS:
        for name in block:
            w, b = params[name]
            w = np.asarray(w)
            if layout == "NCHW":
                w = w.transpose(3, 2, 0, 1)
            layers.append(nn.Conv2d(w, np.asarray(b), padding=1, activation="relu",
                                    layout=layout, name=name))
        layers.append(nn.MaxPool2d(2, layout=layout))
    layers.append(nn.Flatten(order="HWC", layout=layout))
    for name in ("fc6", "fc7", "fc8"):
        w, b = params[name]
        layers.append(nn.Linear(np.asarray(w), np.asarray(b),
                                activation=None if name == "fc8" else "relu", name=name))
        if name != "fc8":
            layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers, layout=layout)


def skip_weights(params, name):
    w, b = params[name]
    return np.asarray(w).reshape(1, 1, *np.shape(w)[-2:]), np.asarray(b)


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
@pytest.mark.parametrize("hw", [(37, 53), (64, 64), (75, 50)])
def test_matches_the_independent_forward_pass(variant, hw):
    rng = np.random.default_rng(sum(hw))
    params = ref.random_vgg_params(rng, fc6_window=2, num_fc8=12, num_classes=4)
    model = nn.fcn(classifier_from(params), (64, 64, 3), num_classes=4, variant=variant,
                   score_pool4=skip_weights(params, "score_pool4") if variant != "32s" else None,
                   score_pool3=skip_weights(params, "score_pool3") if variant == "8s" else None)
    x = rng.standard_normal((2,) + hw + (3,))
    expected, labels = ref.fcn_forward(params, x, variant=variant, num_classes=4)
    got = model(x)
    assert got.shape == (2,) + hw + (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    # (where two classes' scores tie to rounding the argmax may differ)
    agree = np.mean(nn.predict_labels(model, x) == labels)
    assert agree > 0.999


def test_float32_and_nchw_agree_with_the_float64_nhwc_network():
    rng = np.random.default_rng(3)
    params = ref.random_vgg_params(rng, fc6_window=2, num_fc8=12, num_classes=4)
    x = rng.standard_normal((1, 41, 67, 3))
    expected, _ = ref.fcn_forward(params, x, variant="8s", num_classes=4)
    p32 = {k: tuple(np.asarray(a, np.float32) for a in v) for k, v in params.items()}
    skips = dict(score_pool4=skip_weights(p32, "score_pool4"),
                 score_pool3=skip_weights(p32, "score_pool3"))
    nhwc = nn.fcn(classifier_from(p32), (64, 64, 3), num_classes=4, **skips)
    y32 = nhwc(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())
    nchw_skips = {k: (w.transpose(3, 2, 0, 1), b) for k, (w, b) in skips.items()}
    nchw = nn.fcn(classifier_from(p32, "NCHW"), (3, 64, 64), num_classes=4, **nchw_skips)
    y = nchw(np.ascontiguousarray(x.astype(np.float32).transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(y.transpose(0, 2, 3, 1), y32, rtol=1e-5,
                               atol=1e-5 * np.abs(y32).max())
    assert nn.predict_labels(nchw, x.astype(np.float32).transpose(0, 3, 1, 2)).shape == (1, 41, 67)


def test_zero_skips_add_exactly_nothing_and_names_follow_fcn8_vgg():
    rng = np.random.default_rng(5)
    params = ref.random_vgg_params(rng, fc6_window=2, num_fc8=6, num_classes=None)
    classifier = classifier_from(params)
    model = nn.fcn(classifier, (64, 64, 3))
    for name in ("fc6", "fc7", "score_fr", "upscore2", "score_pool4", "fuse_pool4", "upscore4",
                 "score_pool3", "fuse_pool3", "upscore32", "pool3", "pool4", "conv5_3"):
        model.get_layer(name)
    assert model.get_layer("upscore32").kernel_size == (16, 16)
    assert model.get_layer("upscore32").stride == (8, 8)
    assert model.get_layer("fc6").kernel_size == (2, 2)
    assert not model.get_layer("score_pool4").weight.any()
    x = rng.standard_normal((1, 45, 38, 3))
    # (fc8 kept whole: the reference's score_fr entry; zero skips there too)
    expected, _ = ref.fcn_forward(dict(params, score_fr=params["fc8"]), x, variant="8s")
    np.testing.assert_allclose(model(x), expected, rtol=1e-9,
                               atol=1e-9 * np.abs(expected).max())
    up = nn.fcn(classifier, (64, 64, 3), variant="32s").get_layer("up")
    assert (up.kernel_size, up.stride) == ((64, 64), (32, 32))
    assert np.array_equal(up.weight, nn.bilinear_kernel(6, 64, np.float64))


def test_reduce_classes_averages_groups_as_summary_reshape_does():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((5, 1000)), rng.standard_normal(1000)
    rw, rb = nn.fcn.__globals__["reduce_classes"](w, b, 21)
    np.testing.assert_allclose(rw, ref.summary_reshape(w, 21), rtol=1e-12)
    np.testing.assert_allclose(rb, ref.bias_reshape(b, 21), rtol=1e-12)
    assert rw.shape == (5, 21)


def test_save_and_load_give_the_same_network(tmp_path):
    rng = np.random.default_rng(2)
    params = ref.random_vgg_params(rng, fc6_window=2, num_fc8=5)
    model = nn.fcn(classifier_from(params), (64, 64, 3), variant="16s")
    model.save(tmp_path / "fcn.npz")
    again = nn.load(tmp_path / "fcn.npz")
    x = rng.standard_normal((1, 33, 35, 3))
    assert np.array_equal(again(x), model(x))


def test_bad_arguments_are_named():
    rng = np.random.default_rng(1)
    params = ref.random_vgg_params(rng, fc6_window=2, num_fc8=5)
    classifier = classifier_from(params)
    with pytest.raises(ValueError, match="variant"):
        nn.fcn(classifier, (64, 64, 3), variant="4s")
    with pytest.raises(ValueError, match="num_classes"):
        nn.fcn(classifier, (64, 64, 3), num_classes=6)
    with pytest.raises(ValueError, match="score_pool4"):
        nn.fcn(classifier, (64, 64, 3), score_pool4=(np.zeros((1, 1, 3, 5)), np.zeros(5)))
    with pytest.raises(ValueError, match="FCN-32s has no score_pool4"):
        nn.fcn(classifier, (64, 64, 3), variant="32s",
               score_pool4=(np.zeros((1, 1, 16, 5)), np.zeros(5)))
    with pytest.raises(TypeError, match="Sequential"):
        nn.fcn("vgg", (64, 64, 3))
    no_pools = nn.Sequential(nn.Flatten(), nn.Linear(np.ones((12, 2))))
    with pytest.raises(ValueError, match="pooled blocks"):
        nn.fcn(no_pools, (2, 2, 3))
    overlapping = nn.Sequential(nn.MaxPool2d(3, 2), nn.Flatten(), nn.Linear(np.ones((12, 2))))
    with pytest.raises(ValueError, match="kernel == stride"):
        nn.fcn(overlapping, (5, 5, 3), variant="32s")


def test_to_fully_convolutional_converts_a_global_pool_head_of_a_graph():
    """A residual classifier ending in GlobalAvgPool2d + Linear (ResNet's
    head): an AvgPool2d over the pooled map's size at stride 1 and a 1x1
    Conv2d, whose score map holds the classifier's answer at every window."""
    rng = np.random.default_rng(8)
    r = lambda *s: rng.standard_normal(s)  # noqa: E731
    x = nn.Input((8, 8, 3))
    a = nn.Conv2d(r(3, 3, 3, 6), r(6), activation="relu")(x)        # 6x6 (no padding)
    b = nn.Conv2d(r(1, 1, 6, 6), r(6))(a)
    res = nn.Activation("relu")(nn.Add()([a, b]))
    pooled = nn.GlobalAvgPool2d()(res)
    logits = nn.Linear(r(6, 5), r(5), activation="tanh")(pooled)
    probs = nn.Softmax()(nn.Linear(r(5, 4), r(4))(logits))
    model = nn.Model(x, probs)
    dense = nn.to_fully_convolutional(model, (8, 8, 3))
    assert isinstance(dense, nn.Model) and not isinstance(dense, nn.Sequential)
    img = rng.standard_normal((2, 8, 8, 3))
    np.testing.assert_allclose(dense(img)[:, 0, 0], model(img), rtol=1e-12, atol=1e-12)
    big = rng.standard_normal((1, 11, 13, 3))
    scores = dense(big)
    assert scores.shape == (1, 4, 6, 4)
    for i in range(4):
        for j in range(6):
            np.testing.assert_allclose(scores[0, i, j], model(big[:, i:i + 8, j:j + 8])[0],
                                       rtol=1e-12, atol=1e-12)
    seq = nn.Sequential(nn.Conv2d(r(3, 3, 3, 4)), nn.ReLU(), nn.GlobalAvgPool2d(),
                        nn.Linear(r(4, 3)))
    dense_seq = nn.to_fully_convolutional(seq, (8, 8, 3))
    assert isinstance(dense_seq, nn.Sequential)
    np.testing.assert_allclose(dense_seq(img)[:, 0, 0], seq(img), rtol=1e-12, atol=1e-12)
