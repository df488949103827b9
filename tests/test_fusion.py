"""A Model runs a convolution (or Linear, or transposed convolution) and
the BatchNorm2d and activation layer that alone read it as one step: the
fused activation is bitwise the layer's (one implementation), the folded
batch normalization equal within rounding; what else reads the tensor in
between, or a model output, keeps it unfused."""

import numpy as np
import pytest

from fastconv import nn


def layer_by_layer(model, x):
    """The model's nodes run one by one, no fusion."""
    values = {0: x}
    for node in model.nodes:
        args = [values[i] for i in node.inputs]
        values[node.output] = node.layer.forward(args if len(args) > 1 else args[0])
    return values[max(values)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_batchnorm_activation_run_as_one(dtype):
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x = nn.Input((None, None, 3))
    c1 = nn.Conv2d(r(3, 3, 3, 8), r(8), padding=1, name="c1")(x)
    b1 = nn.BatchNorm2d(r(8), r(8), r(8), np.abs(r(8)) + 0.5, name="bn1")(c1)
    a1 = nn.ReLU(name="relu1")(b1)
    p1 = nn.MaxPool2d(2, ceil_mode=True)(a1)
    c2 = nn.Conv2d(r(1, 1, 8, 8), name="c2")(p1)
    a2 = nn.Sigmoid(name="sig")(c2)
    up = nn.ConvTranspose2d(r(4, 4, 5, 8), stride=2, padding="same", name="up")([a2, x])
    a3 = nn.Activation(("leaky_relu", 0.2), name="leaky")(up)
    model = nn.Model(x, a3)
    assert model.fusions == [("c1", "bn1", "relu1"), ("c2", "sig"), ("up", "leaky")]
    img = r(2, 9, 11, 3)
    fused, plain = model(img), layer_by_layer(model, img)
    assert fused.shape == plain.shape == (2, 9, 11, 5)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(fused, plain, rtol=tol, atol=tol)
    # the names and layers stay as given
    assert [layer.name for layer in model.layers][:3] == ["c1", "bn1", "relu1"]


def test_activation_fusion_alone_is_bitwise():
    rng = np.random.default_rng(1)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    seq = nn.Sequential(nn.Conv2d(r(3, 3, 2, 4), r(4), padding=1), nn.HardSwish(),
                        nn.Conv2d(r(3, 3, 4, 4)), nn.Tanh(), nn.Flatten(),
                        nn.Linear(r(64, 5), r(5)), nn.ReLU6())
    assert len(seq.fusions) == 3
    img = r(3, 6, 6, 2)
    assert np.array_equal(seq(img), layer_by_layer(seq, img))


def test_a_tensor_read_twice_or_returned_is_not_fused_away():
    rng = np.random.default_rng(2)
    r = lambda *s: rng.standard_normal(s)  # noqa: E731
    x = nn.Input((6, 6, 2))
    c = nn.Conv2d(r(3, 3, 2, 2), padding=1)(x)
    a = nn.ReLU()(c)
    res = nn.Add()([a, c])            # c is read twice: no fusion
    c2 = nn.Conv2d(r(1, 1, 2, 2))(res)
    a2 = nn.Tanh()(c2)
    model = nn.Model(x, [c2, a2])     # c2 is an output: no fusion
    assert model.fusions == []
    img = r(1, 6, 6, 2)
    out = model(img)
    assert np.array_equal(out[1], nn.Tanh()(out[0]))
    with_act = nn.Conv2d(r(3, 3, 2, 2), activation="relu")
    b = nn.Sigmoid()(with_act(x))     # the conv has its own activation: kept apart
    assert nn.Model(x, b).fusions == []
