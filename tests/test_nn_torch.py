"""fastconv.nn.from_torch against the torch modules it imports."""

import copy
import operator

import numpy as np
import pytest

from fastconv import nn

torch = pytest.importorskip("torch")
tnn = torch.nn
F = torch.nn.functional
import torch_models  # tests/torch_models.py (it needs torch)
from fastconv import _torch_networks as tn  # (it needs torch)


def torch_output(module, x_nchw):
    with torch.no_grad():
        return module(torch.from_numpy(x_nchw)).numpy()


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_from_torch_matches_torch(layout, dtype):
    torch.manual_seed(0)
    module = tnn.Sequential(
        tnn.Conv2d(3, 8, 3, padding=1), tnn.ReLU(),
        tnn.Conv2d(8, 8, 3, stride=2, padding=(1, 0), dilation=(1, 2), groups=2), tnn.ReLU(),
        tnn.MaxPool2d(2, ceil_mode=True),
        tnn.AvgPool2d(3, 1, 1, count_include_pad=False),
        tnn.Conv2d(8, 8, 3, padding="same"),
        tnn.Flatten(), tnn.Linear(8 * 4 * 5, 20), tnn.ReLU(), tnn.Dropout(0.3),
        tnn.Linear(20, 5), tnn.Softmax(dim=1)).to(dtype).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 15, 22)).astype(
        np.float32 if dtype == torch.float32 else np.float64)
    expected = torch_output(module, x)
    model = nn.from_torch(module, layout=layout)
    got = model(x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert got.shape == expected.shape
    assert np.allclose(got, expected, rtol=0, atol=tol)


def test_from_torch_global_pool_head():
    torch.manual_seed(1)
    module = tnn.Sequential(tnn.Conv2d(3, 6, 3), tnn.ReLU(), tnn.AdaptiveAvgPool2d(1),
                            tnn.Flatten(), tnn.Linear(6, 4)).eval()
    x = np.random.default_rng(1).standard_normal((3, 3, 9, 9)).astype(np.float32)
    model = nn.from_torch(module)
    got = model(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    assert np.allclose(got, torch_output(module, x), rtol=0, atol=1e-5)


def test_from_torch_sequential_stays_sequential():
    # (nn.fcn and to_fully_convolutional take a Sequential classifier)
    module = tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.ReLU(), tnn.Flatten(), tnn.Linear(36, 2))
    model = nn.from_torch(module)
    assert isinstance(model, nn.Sequential)
    assert [layer.name for layer in model.layers] == ["0", "1", "2", "3"]


def test_from_torch_refuses_unsupported_layers():
    with pytest.raises(ValueError, match=r"layer 0 .* pads with 'reflect'"):
        nn.from_torch(tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")))


# -- any module torch.fx traces ---------------------------------------------------

def small_vgg16():
    return tn.vgg16(num_classes=10, width=1 / 16, fc_channels=32)


# fastconv._torch_networks' networks (torchvision's definitions) at reduced
# widths, and the U-Nets of tests/torch_models.py whose skips it does not have.
NETWORKS = {
    "resnet18": (lambda: tn.resnet18(num_classes=10, width=16), (3, 64, 64)),
    "resnet50": (lambda: tn.resnet50(num_classes=10, width=8), (3, 64, 64)),
    "mobilenet_v2": (lambda: tn.mobilenet_v2(num_classes=10, width_mult=0.35), (3, 64, 64)),
    "unet": (lambda: tn.unet(num_classes=2, base=8, levels=3), (3, 64, 64)),
    "unet_cropped": (lambda: torch_models.randomize_bn(torch_models.UNet(cropped=True)),
                     (3, 92, 92)),
    "unet_bilinear": (lambda: torch_models.randomize_bn(torch_models.UNet(cropped=False)),
                      (3, 45, 37)),
    "fcn8s": (lambda: tn.fcn8s(num_classes=3, width=1 / 8, fc_channels=64), (3, 40, 52)),
    "vgg16": (small_vgg16, (3, 224, 224)),  # (7x7 before the 7x7 pool)
    "vgg16_pooled": (small_vgg16, (3, 448, 224)),  # (14x7: 2x1 windows)
}
# The float32 tolerance against torch's float32 where 1e-5 (relative to the
# output's largest magnitude) is not enough: ResNet-50's measured BatchNorm
# statistics amplify rounding through its 16 blocks, so that torch's own
# float32 output is 2.7e-5 off its float64 one and fastconv's 3.4e-5 off torch's.
# MobileNetV2 likewise on an AVX-512 machine (AMD EPYC Zen 4, 2026-12-02):
# torch's float32 is 1.1e-5 off float64 there (its AVX-512 kernels; below
# 1e-5 on AVX2), fastconv's 7.5e-6 off float64 and so 1.5e-5 off torch's.
# (assert_float32_as_torch bounds fastconv's own error against float64.)
F32_TOL = {"resnet50": 1e-4, "mobilenet_v2": 3e-5}


def to_layout(x, layout):
    return x if layout == "NCHW" or x.ndim != 4 else np.ascontiguousarray(
        x.transpose(0, 2, 3, 1))


def from_layout(y, layout):
    return y if layout == "NCHW" or y.ndim != 4 else y.transpose(0, 3, 1, 2)


def check_against_torch(module, x, layout, input_shape=None, tol=None):
    """module's output on x (NCHW) against the imported model's; the model
    and its output (NCHW)."""
    expected = torch_output(module, x)
    model = nn.from_torch(module, layout=layout, input_shape=input_shape)
    got = from_layout(model(to_layout(x, layout)), layout)
    if tol is None:
        tol = 1e-5 if x.dtype == np.float32 else 1e-12
    assert got.shape == expected.shape
    assert got.dtype == x.dtype
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol * max(1, np.abs(expected).max()))
    return model, got


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_from_torch_networks(network, layout):
    torch.manual_seed(0)  # (the initial weights of tests/torch_models.py's U-Nets)
    make, shape = NETWORKS[network]
    module = make()
    module64 = copy.deepcopy(module).double()
    x32 = np.random.default_rng(0).standard_normal((2,) + shape).astype(np.float32)
    # float64 to rounding, float32 against torch's float32
    for m, x, tol in ((module64, x32.astype(np.float64), None),
                      (module, x32, F32_TOL.get(network))):
        model, got = check_against_torch(m, x, layout, input_shape=shape, tol=tol)
        # Every BatchNorm2d is folded into the convolution before it, every
        # activation after a convolution runs in its store: no such layer is a step.
        steps = [step.layer for step in model._steps]
        assert not any(isinstance(s, (nn.BatchNorm2d, nn.ReLU, nn.ReLU6)) for s in steps)
    assert_float32_as_torch(module, module64, x32, got)


def assert_float32_as_torch(module, module64, x32, got):
    """got, the imported float32 model's output on x32, is as close to the
    float64 result as torch's own float32 is (the BatchNorm statistics that
    _torch_networks measures amplify rounding through the depth)."""
    expected64 = torch_output(module64, x32.astype(np.float64))
    torch_error = np.abs(torch_output(module, x32) - expected64).max()
    assert got.shape == expected64.shape
    assert np.abs(got - expected64).max() <= 4 * torch_error + 1e-6 * max(
        1, np.abs(expected64).max())


def test_from_torch_resnet_fusions_and_names():
    module = tn.resnet18(num_classes=10, width=8)
    model = nn.from_torch(module, input_shape=(3, 32, 32))
    fusions = model.fusions
    assert ("conv1", "bn1", "relu") in fusions
    assert ("layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu") in fusions
    # the residual add (fx node "add"; out += identity) and the ReLU after it
    assert ("layer1.0.conv2", "layer1.0.bn2", "add", "layer1.0.relu") in fusions
    # a downsampling block: its shortcut conv is folded with its BN, and the
    # residual joins the main branch's conv2
    assert ("layer2.0.downsample.0", "layer2.0.downsample.1") in fusions
    assert any(f[:2] == ("layer2.0.conv2", "layer2.0.bn2") and f[-1] == "layer2.0.relu"
               for f in fusions)
    conv = model.get_layer("layer3.1.conv2")
    assert isinstance(conv, nn.Conv2d) and conv.layout == "NHWC"
    np.testing.assert_array_equal(
        conv.weight, module.layer3[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0))
    assert isinstance(model.get_layer("fc"), nn.Linear)


class Functional(tnn.Module):
    """The functional and method forms, nested containers and several outputs."""

    def __init__(self):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.Identity(),
                                   tnn.Sequential(tnn.BatchNorm2d(8), tnn.Hardtanh(0, 6)))
        self.a = tnn.Conv2d(8, 8, 3, padding="same", groups=8)
        self.b = tnn.Conv2d(8, 8, 1, bias=False)
        self.prelu = tnn.PReLU(8)
        self.up = tnn.Upsample(scale_factor=2, mode="nearest")
        self.pad = tnn.ZeroPad2d((1, 0, 2, 1))
        self.drop = tnn.Dropout2d(0.3)
        self.acts = tnn.ModuleList([tnn.LeakyReLU(0.2), tnn.Sigmoid(), tnn.Tanh(), tnn.SiLU(),
                                    tnn.Hardswish(), tnn.Hardsigmoid(), tnn.ReLU6(),
                                    tnn.Hardtanh(-0.5, 0.5)])
        self.fc = tnn.Linear(16 * 4 * 5, 6)
        self.fc2 = tnn.Linear(16, 6)
        self.softmax = tnn.Softmax(dim=1)

    def forward(self, x):
        x = self.stem(x)
        y = F.relu(self.a(x)).relu()
        y = torch.add(y, self.b(x))
        y = operator.mul(y, torch.sigmoid(x))
        y = self.drop(self.prelu(y))
        for act in self.acts:
            y = act(y) + y
        y = F.leaky_relu(torch.tanh(F.hardtanh(y, -2.0, 2.0)), 0.1).add(F.silu(y))
        z = torch.cat([F.max_pool2d(y, 2), F.avg_pool2d(y, 3, 2, 1, count_include_pad=False)],
                      dim=1)
        z = F.hardswish(F.hardsigmoid(z) * z)
        z = self.pad(self.up(z))
        z = F.interpolate(z, size=(8, 10), mode="bilinear", align_corners=True)
        z = F.max_pool2d(z, 2).contiguous()
        flat = self.fc(z.view(z.size(0), -1))
        pooled = self.fc2(z.mean((2, 3)))
        kept = torch.flatten(z.mean(dim=(-1, -2), keepdim=True), 1)
        maps = F.softmax(z[:, :, 1:, :-1], dim=1)
        return self.softmax(flat + pooled), kept.reshape(-1, 16), maps


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_from_torch_functional_forms(layout, dtype):
    torch.manual_seed(2)
    module = torch_models.randomize_bn(Functional())
    if dtype == np.float64:
        module = module.double()
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 12)).astype(dtype)
    expected = [e.numpy() for e in torch_output_many(module, x)]
    model = nn.from_torch(module, layout=layout, input_shape=(3, 8, 12))
    got = model(to_layout(x, layout))
    assert len(got) == 3
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for g, e in zip(got, expected):
        g = from_layout(g, layout)
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=tol)
    # reshape(-1, 16) flattens only if C * H * W is 16, which the sizes tell
    with pytest.raises(ValueError, match=r"node reshape \(method reshape\) \(at .*kept\.reshape"
                                         r"\(-1, 16\).* give from_torch input_shape="):
        nn.from_torch(module, layout=layout)
    assert ("stem.0", "stem.2.0", "stem.2.1") in model.fusions  # Hardtanh(0, 6) is ReLU6
    assert model.output_names[0] == "softmax"


def torch_output_many(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x))


class TwoInputs(tnn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = tnn.Conv2d(3, 4, 3, padding=1), tnn.Conv2d(2, 4, 1)
        self.fc = tnn.Linear(5, 4)

    def forward(self, image, mask, features):
        y = torch.cat([self.c1(image), self.c2(mask)], 1)
        return torch.cat([y.mean((2, 3)), self.fc(features)], dim=1)


def test_from_torch_several_inputs():
    torch.manual_seed(3)
    module = TwoInputs().eval()
    rng = np.random.default_rng(3)
    image = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    mask = rng.standard_normal((2, 2, 6, 7)).astype(np.float32)
    features = rng.standard_normal((2, 5)).astype(np.float32)
    with torch.no_grad():
        expected = module(*(torch.from_numpy(a) for a in (image, mask, features))).numpy()
    model = nn.from_torch(module, input_shape=[(3, 6, 7), (2, 6, 7), (5,)])
    assert model.input_names == ["image", "mask", "features"]
    got = model({"image": to_layout(image, "NHWC"), "mask": to_layout(mask, "NHWC"),
                 "features": features})
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


class Block(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(4, 4, 3, padding=1)
        self.attn = tnn.MultiheadAttention(4, 1)

    def forward(self, x):
        return self.attn(self.conv(x), x, x)


class UsesErf(tnn.Module):
    def forward(self, x):
        return torch.erf(x)


class UsesSizes(tnn.Module):
    def forward(self, x):
        return x[:, :, : x.size(2) // 2]


class Untraceable(tnn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_from_torch_errors():
    blocks = tnn.Sequential(tnn.Conv2d(3, 4, 1), tnn.Sequential(tnn.ReLU(), Block()))
    with pytest.raises(ValueError, match=r"from_torch: layer 1\.1\.attn \(MultiheadAttention\) "
                                         r"has no fastconv\.nn equivalent; supported modules: "
                                         r"Conv2d"):
        nn.from_torch(blocks)
    with pytest.raises(ValueError, match=r"from_torch: node erf \(function erf\) \(at .*"
                                         r"test_nn_torch\.py:\d+: return torch\.erf\(x\)\) has no "
                                         r"fastconv\.nn equivalent; supported: relu"):
        nn.from_torch(UsesErf())
    with pytest.raises(ValueError, match=r"could not trace Untraceable .*TraceError"):
        nn.from_torch(Untraceable())
    with pytest.raises(ValueError, match=r"node .*size.* only when the model runs.*input_shape="):
        nn.from_torch(UsesSizes())
    # with input_shape the same slicing is a crop
    model = nn.from_torch(UsesSizes(), layout="NCHW", input_shape=(2, 6, 5))
    x = np.arange(2 * 2 * 6 * 5, dtype=np.float32).reshape(2, 2, 6, 5)
    np.testing.assert_array_equal(model(x), x[:, :, :3])
    with pytest.raises(ValueError, match=r"layer avgpool \(AdaptiveAvgPool2d\) pools a 5x5 map "
                                         r"to 7x7; fastconv pools adaptively to a size that "
                                         r"divides"):
        nn.from_torch(small_vgg16(), input_shape=(3, 160, 160))
    with pytest.raises(ValueError, match=r"layer avgpool .* whose windows depend on the "
                                         r"input's size: give from_torch input_shape="):
        nn.from_torch(small_vgg16())
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2d\) pads with 'circular'"):
        nn.from_torch(tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")))
    with pytest.raises(ValueError, match=r"track_running_stats=False"):
        nn.from_torch(tnn.Sequential(tnn.Conv2d(3, 4, 3),
                                     tnn.BatchNorm2d(4, track_running_stats=False)))
    with pytest.raises(ValueError, match=r"node view \(method view\).*reshapes to .*\(batch, "
                                         r"-1\)"):
        nn.from_torch(ViewBad())
    with pytest.raises(ValueError, match=r"node add \(function add\).* combines a tensor with "
                                         r"1\.0"):
        nn.from_torch(AddScalar())
    with pytest.raises(ValueError, match=r"layer 1 \(Linear\) reads a map"):
        nn.from_torch(tnn.Sequential(tnn.Conv2d(3, 4, 1), tnn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"input_shape must give one shape per input"):
        nn.from_torch(tnn.Conv2d(3, 4, 1), input_shape=[(3, 4, 4), (3, 4, 4)])
    with pytest.raises(ValueError, match=r"node relu \(function relu\).* changes conv in place, "
                                         r"which add read after it"):
        nn.from_torch(InPlaceReadAgain())
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.Module; got int"):
        nn.from_torch(3)


class ViewBad(tnn.Module):
    def forward(self, x):
        return x.view(x.size(0), 3, -1)


class AddScalar(tnn.Module):
    def forward(self, x):
        return x + 1.0


class InPlaceReadAgain(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(3, 3, 1)

    def forward(self, x):
        a = self.conv(x)
        return a + F.relu(a, inplace=True)  # (torch: a is changed before the add reads it)


def test_from_torch_without_input_shape_takes_any_size():
    module = tn.mobilenet_v2(num_classes=10, width_mult=0.25, seed=4)
    module64 = copy.deepcopy(module).double()
    model = nn.from_torch(module, layout="NCHW")
    assert model.inputs[0].shape is None
    for hw in ((32, 32), (40, 56)):
        x = np.random.default_rng(4).standard_normal((1, 3) + hw).astype(np.float32)
        # (not within 1e-5 of torch's float32: at 40x56 fastconv's is 1.1e-5
        # off torch's, which is itself 9e-6 off the float64 result, fastconv's 7e-6)
        assert_float32_as_torch(module, module64, x, model(x))


class OptionalArguments(tnn.Module):
    """forward's optional arguments keep their defaults (the branches they
    take are traced as constants)."""

    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x, mask=None, double=False, scale=1):
        y = self.conv(x)
        if mask is not None:
            y = y * mask
        if double:
            y = y + y
        return F.relu(y) if scale == 1 else y


def test_from_torch_optional_arguments_keep_their_defaults():
    torch.manual_seed(5)
    module = OptionalArguments().eval()
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 6)).astype(np.float32)
    model, _ = check_against_torch(module, x, "NHWC", input_shape=(3, 6, 6))
    assert model.input_names == ["x"]
    assert model.fusions == [("conv", "relu")]


def test_from_torch_mobilenet_fusions():
    module = tn.mobilenet_v2(num_classes=10, width_mult=0.25, seed=7)
    model = nn.from_torch(module, input_shape=(3, 32, 32))
    fusions = model.fusions
    assert ("features.0.0", "features.0.1", "features.0.2") in fusions  # conv, BN, ReLU6
    assert ("features.3.conv.1.0", "features.3.conv.1.1", "features.3.conv.1.2") in fusions
    # the inverted residual: the projection's conv and BN with the add (x + conv(x));
    # at this width features.1 (8 channels in and out) has the first add
    assert ("features.1.conv.1", "features.1.conv.2", "add") in fusions
    assert ("features.3.conv.2", "features.3.conv.3", "add_1") in fusions
    assert model.get_layer("features.3.conv.1.0").groups == model.get_layer(
        "features.3.conv.1.0").in_channels  # depthwise
