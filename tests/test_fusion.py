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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_residual_add_runs_in_the_convolution_store(isa, dtype):
    """A ResNet block: the second convolution adds the block's input and
    applies the ReLU in its store, bitwise the unfused Add and ReLU, on
    every algorithm that can run it (Winograd, igemm, GEMM, depthwise,
    the transposed convolution's phases)."""
    rng = np.random.default_rng(4)
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    x = nn.Input((None, None, 64))
    h = nn.Conv2d(r(3, 3, 64, 64) / 24, r(64), padding=1, activation="relu")(x)
    y = nn.Conv2d(r(3, 3, 64, 64) / 24, r(64), padding=1, name="c2")(h)    # Winograd
    y = nn.ReLU(name="r2")(nn.Add(name="add")([x, y]))
    z = nn.Conv2d(r(1, 1, 64, 64) / 8, name="c3")(y)                        # GEMM
    z = nn.Add(name="add3")([z, y])
    d = nn.Conv2d(r(3, 3, 1, 64), padding=1, groups=64, name="dw")(z)       # depthwise
    d = nn.Activation("relu6", name="r6")(nn.Add(name="add_dw")([d, z]))
    s = nn.Conv2d(r(3, 3, 64, 8), stride=2, padding=1, name="down")(d)       # igemm
    u = nn.ConvTranspose2d(r(4, 4, 8, 8), stride=2, padding="same", name="up")([s, x])
    skip = nn.Conv2d(r(1, 1, 64, 8), name="skip")(d)
    out = nn.Add(name="fuse")([u, skip])
    model = nn.Model(x, out)
    assert ("c2", "add", "r2") in model.fusions and ("c3", "add3") in model.fusions
    assert ("dw", "add_dw", "r6") in model.fusions
    assert any(group[-1] == "fuse" for group in model.fusions)
    img = r(2, 20, 18, 64)
    assert np.array_equal(model(img), layer_by_layer(model, img))
    assert model.get_layer("c2").plan(img.shape)["algorithm"] == "winograd-f4x4-3x3"


@pytest.mark.parametrize("groups,k", [(1, 3), (1, 1), (5, 3)], ids=["igemm", "gemm", "depthwise"])
def test_residual_on_small_odd_maps(groups, k):
    """Tiles that straddle output rows and channel tails (the per-thread
    buffer's path) add the residual as the direct stores do."""
    rng = np.random.default_rng(6)
    x = nn.Input((None, None, 5))
    c = nn.Conv2d(rng.standard_normal((k, k, 5 // groups, 5)), rng.standard_normal(5),
                  padding=k // 2, groups=groups)(x)
    y = nn.Activation("silu")(nn.Add()([x, c]))
    model = nn.Model(x, y)
    assert len(model.fusions) == 1
    for shape in [(1, 7, 3, 5), (3, 5, 11, 5), (1, 1, 1, 5)]:
        img = rng.standard_normal(shape)
        assert np.array_equal(model(img), layer_by_layer(model, img))
        assert np.array_equal(model(img, num_threads=2), model(img, num_threads=1))
