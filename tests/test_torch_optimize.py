"""fastconv.torch.optimize against torch's own outputs: residual networks,
MobileNetV2-style and U-Net-style models (written here: torchvision is not
required), layouts, dtypes, batches, state_dict, inference-only checks,
re-packing, threads, torch.compile and torch.export."""
import gc
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import fastconv.torch as ft  # noqa: E402

# The folder the fastconv under test was imported from, for the subprocesses
# (the installed package, or an in-place build: never the unbuilt sources).
SRC = os.path.dirname(os.path.dirname(os.path.abspath(ft.__file__)))


# ---------------------------------------------------------------------------
# Test models

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)  # shared, called twice (as torchvision's)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride=1):
        super().__init__()
        cout = mid * 4
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                        nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.downsample(x))


class ResNetish(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 24, 2))
        self.layer2 = nn.Sequential(Bottleneck(24, 8, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_bn_relu6(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [conv_bn_relu6(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2ish(nn.Module):
    def __init__(self, classes=7):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu6(3, 16, 3, 2), InvertedResidual(16, 8, 1, 1),
            InvertedResidual(8, 12, 2, 6), InvertedResidual(12, 12, 1, 6),
            conv_bn_relu6(12, 40, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(40, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class UNetish(nn.Module):
    def __init__(self):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1),
                                 nn.ReLU(inplace=True))

        self.enc1, self.enc2 = block(3, 8), block(8, 16)
        self.pool = nn.MaxPool2d(2)
        self.mid = block(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = block(32, 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
        self.dec1 = block(16, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(F.relu(d1))


class Untraceable(nn.Module):
    """fx cannot trace this (control flow on values): the Sequential's
    children are fused by order."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1, dilation=1), nn.ReLU6())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = self.body(x)
        if y.sum() > 0:
            y = y * 2
        return self.head(y.mean((2, 3)))


MODELS = {"resnet": (ResNetish, (3, 32, 32)), "mobilenetv2": (MobileNetV2ish, (3, 32, 32)),
          "unet": (UNetish, (3, 16, 24)), "untraceable": (Untraceable, (3, 9, 11))}


def make(name, dtype=torch.float32, seed=0):
    """The model, in eval mode, with random BatchNorm statistics and affine
    parameters (the defaults would make every BatchNorm the identity)."""
    torch.manual_seed(seed)
    cls, shape = MODELS[name]
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.to(dtype).eval(), shape


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10,
                                                                           atol=1e-10)


def run(model, x):
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------------------
# Outputs

@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_torch(name, dtype, batch, channels_last):
    model, shape = make(name, dtype)
    x = torch.randn((batch,) + shape, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = run(model, x)
    opt = ft.optimize(model)
    before = dict(ft._counters)
    y = run(opt, x)
    torch.testing.assert_close(y, expected, **tol(dtype))
    # no replaced layer converted its input: the pre-hook converted the
    # model's input once, and every layer hands channels_last on
    assert ft._counters["layer_conversions"] == before["layer_conversions"]
    # the weights were packed once, at the first call; a second packs nothing
    packs = ft._counters["packs"]
    torch.testing.assert_close(run(opt, x), expected, **tol(dtype))
    assert ft._counters["packs"] == packs


def test_every_convolution_and_linear_is_replaced():
    model, _ = make("resnet")
    opt = ft.optimize(model)
    kinds = [type(m) for m in opt.modules()]
    assert nn.Conv2d not in kinds and nn.Linear not in kinds
    assert kinds.count(ft.Conv2d) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    unet = ft.optimize(make("unet")[0])
    assert sum(type(m) is ft.ConvTranspose2d for m in unet.modules()) == 2


def test_fusions_fx():
    model, shape = make("resnet")
    opt = ft.optimize(model)
    # stem: conv1 -> bn1 -> relu (called once): BN folded, relu in the store
    assert opt.conv1._bn and opt.conv1.activation == "relu"
    assert type(opt.bn1) is ft.FoldedBatchNorm2d and type(opt.relu) is nn.Identity
    # in a block the ReLU module is called twice: in the store, and the
    # module skips what the convolution activated (and computes the rest)
    block = opt.layer1[0]
    assert block.conv1.activation == "relu" and type(block.relu) is ft.SkippingReLU
    # a block's last BatchNorm feeds the residual add: folded, no activation
    assert block.conv2._bn and block.conv2.activation == ""
    assert type(opt.layer1[1].downsample[1]) is ft.FoldedBatchNorm2d
    # MobileNetV2: ReLU6 modules called once become Identity
    mb = ft.optimize(make("mobilenetv2")[0])
    stem = mb.features[0]
    assert stem[0].activation == "relu6" and type(stem[2]) is nn.Identity
    # the U-Net's functional relu before the head is not after a conv; the
    # blocks' second conv takes the ReLU module after it
    un = ft.optimize(make("unet")[0])
    assert un.enc1[3].activation == "relu" and type(un.enc1[4]) is nn.Identity


def test_a_skipping_relu_computes_what_no_convolution_activated():
    conv = ft.Conv2d(nn.Conv2d(2, 3, 3).eval(), activation="relu")
    relu = ft.SkippingReLU()
    x = torch.randn(1, 2, 6, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = conv(x)
        assert relu(y) is y and (y >= 0).all()  # activated: passed through
        y -= 1  # changed since: computed
        torch.testing.assert_close(relu(y), F.relu(y))
        z = torch.randn(4)
        torch.testing.assert_close(relu(z), F.relu(z))
    r6 = ft.SkippingReLU6()
    torch.testing.assert_close(r6(torch.tensor([-1.0, 3.0, 9.0])), torch.tensor([0.0, 3.0, 6.0]))


def test_fusions_by_sequential_order_when_fx_fails():
    model, shape = make("untraceable")
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)
    opt = ft.optimize(model)
    body = opt.body
    assert body[0]._bn and body[0].activation == "relu"
    assert type(body[1]) is ft.FoldedBatchNorm2d and type(body[2]) is nn.Identity
    assert body[3].activation == "relu6" and type(body[4]) is nn.Identity


def test_a_batchnorm_read_by_two_is_not_folded_into_a_shared_reader():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # the conv's output has two readers

    torch.manual_seed(1)
    model = TwoReaders().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
    opt = ft.optimize(model)
    assert not opt.conv._bn and type(opt.bn) is nn.BatchNorm2d
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(run(opt, x), run(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(kernel_size=4, padding="same"),
                                dict(kernel_size=3, padding="same", dilation=2),
                                dict(kernel_size=(3, 5), padding=(1, 2), stride=(2, 1)),
                                dict(kernel_size=3, padding="valid", stride=3),
                                dict(kernel_size=3, padding=2, dilation=(2, 1), groups=2),
                                dict(kernel_size=3, padding=1, groups=6, bias=False)])
def test_conv_options(kw):
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 12 if kw.get("groups", 1) != 6 else 6, **kw).eval()
    x = torch.randn(2, 6, 11, 10)
    torch.testing.assert_close(run(ft.optimize(conv), x), run(conv, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("module,shape", [
    (lambda: nn.Conv2d(1, 4, 3, padding=1), (2, 1, 5, 5)),  # one channel: both layouts at once
    (lambda: nn.Conv2d(4, 4, 1), (3, 4, 1, 1)),  # one pixel
    (lambda: nn.ConvTranspose2d(1, 2, 2, stride=2), (1, 1, 3, 3)),
    (lambda: nn.Conv2d(3, 4, 3), (0, 3, 5, 5)),  # an empty batch: torch's
])
def test_degenerate_shapes(module, shape):
    torch.manual_seed(8)
    m = module().eval()
    x = torch.randn(shape)
    y = run(ft.optimize(m), x)
    assert y.shape == run(m, x).shape
    torch.testing.assert_close(y, run(m, x), rtol=1e-4, atol=1e-4)


def test_other_padding_modes_stay_torch():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
                          nn.BatchNorm2d(4)).eval()
    opt = ft.optimize(model)
    assert type(opt[0]) is nn.Conv2d and type(opt[1]) is nn.BatchNorm2d
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(run(opt, x), run(model, x))


@pytest.mark.parametrize("kw", [dict(kernel_size=2, stride=2),
                                dict(kernel_size=3, stride=2, padding=1, output_padding=1),
                                dict(kernel_size=4, stride=3, padding=(1, 2), dilation=2),
                                dict(kernel_size=3, stride=2, groups=2)])
def test_conv_transpose_options(kw):
    torch.manual_seed(3)
    conv = nn.ConvTranspose2d(4, 6, **kw).eval()
    x = torch.randn(2, 4, 5, 7)
    torch.testing.assert_close(run(ft.optimize(conv), x), run(conv, x), rtol=1e-4, atol=1e-4)


def test_conv_transpose_output_size():
    torch.manual_seed(4)
    conv = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).eval()
    opt = ft.optimize(conv)
    x = torch.randn(1, 3, 5, 5)
    for size in ([9, 9], [10, 10], [1, 2, 10, 9]):
        with torch.no_grad():
            torch.testing.assert_close(opt(x, output_size=size), conv(x, output_size=size),
                                       rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="output size"):
        with torch.no_grad():
            opt(x, output_size=[12, 12])


@pytest.mark.parametrize("shape", [(5, 16), (2, 3, 16), (16,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear(shape, dtype):
    torch.manual_seed(5)
    lin = nn.Linear(16, 9).to(dtype).eval()
    x = torch.randn(shape, dtype=dtype)
    y = run(ft.optimize(lin), x)
    assert y.shape == shape[:-1] + (9,)
    torch.testing.assert_close(y, run(lin, x), **tol(dtype))
    x_t = torch.randn(16, 4, dtype=dtype).t()  # a non-contiguous input
    torch.testing.assert_close(run(ft.optimize(lin), x_t), run(lin, x_t), **tol(dtype))


def test_outputs_come_back_channels_last():
    model, shape = make("unet")
    x = torch.randn((2,) + shape)
    y = run(ft.optimize(model), x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, run(model, x), rtol=1e-4, atol=1e-4)


def test_a_layer_given_nchw_converts_once_and_counts_it():
    conv = nn.Conv2d(3, 4, 3).eval()
    opt = ft.optimize(conv)
    x = torch.randn(1, 3, 6, 6)
    before = ft._counters["layer_conversions"]
    with torch.no_grad():
        y = opt.forward(x)  # the module itself, without the model's pre-hook
    assert ft._counters["layer_conversions"] == before + 1
    torch.testing.assert_close(y, run(conv, x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# The model as given, state_dict, re-packing

def test_inplace_false_leaves_the_original_untouched():
    model, shape = make("resnet")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = [type(m) for m in model.modules()]
    opt = ft.optimize(model)
    assert opt is not model
    assert [type(m) for m in model.modules()] == kinds
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    assert model._forward_pre_hooks == {} and opt._forward_pre_hooks


def test_inplace_true_replaces_in_the_model():
    model, shape = make("mobilenetv2")
    x = torch.randn((1,) + shape)
    expected = run(model, x)
    weight = model.features[0][0].weight
    opt = ft.optimize(model, inplace=True)
    assert opt is model and type(model.features[0][0]) is ft.Conv2d
    assert model.features[0][0].weight is weight  # the same parameters
    torch.testing.assert_close(run(model, x), expected, rtol=1e-4, atol=1e-4)
    assert len(model._forward_pre_hooks) == 1
    ft.optimize(model, inplace=True)  # again: nothing more, one hook
    assert len(model._forward_pre_hooks) == 1


def test_a_model_that_is_one_layer_is_replaced():
    conv = nn.Conv2d(2, 3, 3).eval()
    opt = ft.optimize(conv, inplace=True)
    assert type(opt) is ft.Conv2d and type(conv) is nn.Conv2d


@pytest.mark.parametrize("name", ["resnet", "unet", "untraceable"])
def test_state_dict_keeps_keys_shapes_and_layouts(name):
    model, shape = make(name)
    opt = ft.optimize(model)
    ours, theirs = opt.state_dict(), model.state_dict()
    assert list(ours) == list(theirs)
    for k in theirs:
        assert ours[k].shape == theirs[k].shape and ours[k].stride() == theirs[k].stride()
        assert torch.equal(ours[k], theirs[k])
    # the original's state loads into the optimized model (and is packed)
    other, _ = make(name, seed=7)
    opt.load_state_dict(other.state_dict())
    x = torch.randn((2,) + shape)
    torch.testing.assert_close(run(opt, x), run(other, x), rtol=1e-4, atol=1e-4)


def test_weights_changed_in_place_are_packed_again():
    model, shape = make("resnet")
    opt = ft.optimize(model)
    x = torch.randn((1,) + shape)
    run(opt, x)
    packs = ft._counters["packs"]
    with torch.no_grad():
        for m in (model, opt):  # the same changes to both
            m.conv1.weight.mul_(1.5)
            m.layer1[0].bn1.running_var.add_(0.3)  # a folded BatchNorm's statistics
            m.fc.bias.sub_(1.0)
    torch.testing.assert_close(run(opt, x), run(model, x), rtol=1e-4, atol=1e-4)
    assert ft._counters["packs"] == packs + 3


def test_new_tensors_are_packed_again_and_dead_ones_leave_the_cache():
    conv = nn.Conv2d(3, 4, 3).eval()
    opt = ft.optimize(conv)
    x = torch.randn(1, 3, 6, 6)
    run(opt, x)
    gc.collect()  # (other tests' dead models leave first)
    size = len(ft._cache)
    with torch.no_grad():
        opt.weight.data = torch.randn(4, 3, 3, 3)  # other memory, same Parameter
        conv.weight.data = opt.weight.data.clone()
    torch.testing.assert_close(run(opt, x), run(conv, x), rtol=1e-4, atol=1e-4)
    assert len(ft._cache) == size  # the entry was replaced, not added
    del opt
    gc.collect()
    assert len(ft._cache) == size - 1


def test_clear_cache_packs_a_change_through_data_again():
    conv = nn.Conv2d(3, 4, 3).eval()
    opt = ft.optimize(conv)
    x = torch.randn(1, 3, 6, 6)
    run(opt, x)
    for m in (conv, opt):
        m.weight.data.mul_(3)  # in place through .data: the version stays
    ft.clear_cache()
    torch.testing.assert_close(run(opt, x), run(conv, x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# Inference only; dtypes and devices torch runs

@pytest.mark.parametrize("name", ["unet", "resnet"])
def test_inference_mode(name):
    model, shape = make(name)
    opt = ft.optimize(model)
    x = torch.randn((2,) + shape)
    with torch.inference_mode():
        y = opt(x)
    torch.testing.assert_close(y, run(model, x), rtol=1e-4, atol=1e-4)


def test_training_mode_raises():
    model, shape = make("resnet")
    opt = ft.optimize(model).train()
    with pytest.raises(RuntimeError, match=r"inference only.*training mode"):
        run(opt, torch.randn((1,) + shape))
    with pytest.raises(RuntimeError, match="'bn1'.*training mode"):
        opt.bn1(torch.randn(1, 16, 4, 4))


def test_an_input_that_requires_grad_raises_with_grad_enabled():
    model, shape = make("unet")
    opt = ft.optimize(model)
    x = torch.randn((1,) + shape, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"'enc1\.0'.*requires grad.*no_grad"):
        opt(x)
    torch.testing.assert_close(run(opt, x), run(model, x), rtol=1e-4, atol=1e-4)


def test_parameters_that_require_grad_run_without_a_graph():
    model, shape = make("mobilenetv2")
    opt = ft.optimize(model)
    assert all(p.requires_grad for p in opt.parameters())
    x = torch.randn((1,) + shape)
    y = opt(x)  # grad enabled, input without grad: inference, no graph
    assert not y.requires_grad
    torch.testing.assert_close(y, run(model, x), rtol=1e-4, atol=1e-4)


def test_other_dtypes_run_torch():
    model, shape = make("resnet")
    opt = ft.optimize(model).to(torch.bfloat16)
    ref = model.to(torch.bfloat16)
    x = torch.randn((1,) + shape, dtype=torch.bfloat16)
    torch.testing.assert_close(run(opt, x), run(ref, x))


def test_other_devices_run_torch():
    model, shape = make("unet")
    opt = ft.optimize(model).to("meta")
    y = run(opt, torch.empty((2,) + shape, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 2) + shape[1:]


def test_inputs_the_module_cannot_take():
    model = nn.Sequential(nn.Conv2d(3, 4, 5), nn.Linear(2, 3)).eval()
    opt = ft.optimize(model)
    with pytest.raises(ValueError, match=r"Conv2d '0': Conv2d: the kernel \(5x5.*larger than "
                                         r"the padded input \(3x3\)"):
        run(opt, torch.randn(1, 3, 3, 3))
    # the wrong number of channels or features: torch's own error, as the original's
    with pytest.raises(RuntimeError) as theirs:
        run(model, torch.randn(1, 2, 9, 9))
    with pytest.raises(RuntimeError) as ours:
        run(opt, torch.randn(1, 2, 9, 9))
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        run(opt[1], torch.randn(4, 5))


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module; got list"):
        ft.optimize([nn.Conv2d(1, 1, 1)])
    with pytest.raises(TypeError, match="inplace must be a bool; got str"):
        ft.optimize(nn.Conv2d(1, 1, 1), "yes")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_threads must be None or an int >= 1"):
            ft.optimize(nn.Conv2d(1, 1, 1), num_threads=bad)


# ---------------------------------------------------------------------------
# The custom ops: fake implementations, torch.compile, torch.export

def test_opcheck():
    torch.manual_seed(6)
    x = torch.randn(2, 4, 7, 9).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(6, 2, 3, 3), torch.randn(6)
    bn = (torch.rand(6) + 0.5, torch.randn(6), torch.randn(6), torch.rand(6) + 0.5)
    torch.library.opcheck(ft._conv2d_op, (x, w, b) + bn + (1e-5, [2, 1], [1, 0, 2, 1], [1, 2],
                                                           2, "relu", 0))
    torch.library.opcheck(ft._conv2d_op, (x, w, None, None, None, None, None, 0.0, [1, 1],
                                          [0, 0, 0, 0], [1, 1], 2, "", 1))
    torch.library.opcheck(ft._linear_op, (torch.randn(3, 5, 4), torch.randn(6, 4),
                                          torch.randn(6), "relu6", 0))
    torch.library.opcheck(ft._conv_transpose2d_op, (x, torch.randn(4, 3, 3, 3), None, [2, 2],
                                                    [1, 0], [1, 0], [1, 1], 1, "", 0))


def _graph_ops(gm):
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


def test_export():
    model, shape = make("unet")
    opt = ft.optimize(model)
    x = torch.randn((2,) + shape)
    with torch.no_grad():
        ep = torch.export.export(opt, (x,))
    ops = _graph_ops(ep.graph_module)
    assert {"fastconv.conv2d.default", "fastconv.conv_transpose2d.default"} <= ops
    assert "aten.convolution.default" not in ops
    # the exported program's parameters are the state_dict's, keys unchanged
    assert set(ep.state_dict) <= set(model.state_dict())
    x2 = torch.randn((2,) + shape)
    torch.testing.assert_close(run(ep.module(), x2), run(model, x2), rtol=1e-4, atol=1e-4)


def test_dynamic_shapes():
    """The fake implementations compute the shapes symbolically."""
    model, shape = make("unet")
    opt = ft.optimize(model)
    compiled = torch.compile(opt, backend="eager", dynamic=True)
    for hw in ((16, 24), (32, 16), (48, 40)):
        x = torch.randn((2, 3) + hw)
        torch.testing.assert_close(run(compiled, x), run(model, x), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ep = torch.export.export(opt, (torch.randn((2,) + shape),),
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    for n in (1, 4):
        x = torch.randn((n,) + shape)
        torch.testing.assert_close(run(ep.module(), x), run(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_compile(backend):
    model, shape = make("resnet")
    opt = ft.optimize(model)
    compiled = torch.compile(opt, backend=backend)
    x = torch.randn((1,) + shape)
    expected = run(model, x)
    torch.testing.assert_close(run(compiled, x), expected, rtol=1e-4, atol=1e-4)
    packs = ft._counters["packs"]
    torch.testing.assert_close(run(compiled, x), expected, rtol=1e-4, atol=1e-4)
    assert ft._counters["packs"] == packs  # the compiled model hands the same tensors
    with torch.no_grad():  # a change in place reaches the compiled model too
        for m in (model, opt):
            m.conv1.weight.mul_(0.5)
    torch.testing.assert_close(run(compiled, x), run(model, x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# Threads

def test_thread_count_follows_torch_unless_given(monkeypatch):
    from fastconv._conv import ConvWeights, GemmWeights
    seen = []
    for cls in (ConvWeights, GemmWeights):
        method = cls.execute if cls is ConvWeights else cls.run

        def record(self, *args, _method=method, **kwargs):
            seen.append(args[3])  # (plan, x, out, nthreads) / (a, act, out, nthreads)
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(cls, "execute" if cls is ConvWeights else "run", record)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 4, 2, 2), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 2)).eval()
    x = torch.randn(1, 3, 6, 6)
    opt, fixed = ft.optimize(model), ft.optimize(model, num_threads=3)
    old = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            seen.clear()
            run(opt, x)
            assert seen == [n, n, n]
            seen.clear()
            run(fixed, x)
            assert seen == [3, 3, 3]
    finally:
        torch.set_num_threads(old)


THREADS_SCRIPT = textwrap.dedent("""
    import os, sys, threading, time
    first = sys.argv[1]
    if first == "fastconv":
        import fastconv.torch as ft, torch
    else:
        import torch, fastconv.torch as ft
    from torch import nn

    def running(exclude):
        n = 0
        for t in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{t}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            n += int(t) != exclude and s[s.rindex(")") + 2] == "R"
        return n

    torch_threads, opt_threads = int(sys.argv[2]), int(sys.argv[3]) or None
    torch.set_num_threads(torch_threads)
    limit = opt_threads or torch_threads
    conv = nn.Conv2d(64, 128, 3, padding=1).eval()
    opt = ft.optimize(conv, num_threads=opt_threads)
    x = torch.randn(1, 64, 160, 160).contiguous(memory_format=torch.channels_last)
    a = torch.randn(1500, 1500)
    samples, stop, me = [], [], []

    def sampler():
        me.append(threading.get_native_id())
        while not stop:
            samples.append(running(me[0]))

    with torch.no_grad():
        opt(x)  # packed, outside the sampling
        th = threading.Thread(target=sampler)
        th.start()
        for _ in range(4):
            a @ a  # torch's parallel work, then fastconv's at once
            torch.relu(a)
            opt(x)
        stop.append(1)
        th.join()
    print(max(samples), len(samples))
""")


@pytest.mark.parametrize("first", ["torch", "fastconv"])
@pytest.mark.parametrize("torch_threads,opt_threads", [(2, 0), (1, 0), (2, 1)])
def test_threads_never_oversubscribe(first, torch_threads, opt_threads):
    """While torch's and fastconv's parallel work alternate, the threads
    running (state R, the sampling thread left out) never exceed the thread
    count: fastconv follows torch.get_num_threads() (or num_threads), and
    the two share one OpenMP pool, whichever is imported first."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/task")
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, first, str(torch_threads),
                          str(opt_threads)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    most, count = map(int, out.stdout.split())
    assert count > 100  # enough samples to have seen the calls
    assert most <= max(torch_threads, opt_threads)


def test_import_fastconv_does_not_import_torch():
    code = "import fastconv, fastconv.nn, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=SRC), timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------------------
# The reference networks (torchvision's definitions, at reduced widths)

def _networks():
    return pytest.importorskip("fastconv._torch_networks").SMALL


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "vgg16", "unet",
                                  "fcn8s"])
@pytest.mark.parametrize("dtype,batch", [(torch.float32, 1), (torch.float64, 3)])
def test_reference_networks(name, dtype, batch):
    build, shape = _networks()[name]
    model = build().to(dtype)
    x = torch.randn((batch,) + shape, dtype=dtype)
    expected = run(model, x)
    opt = ft.optimize(model)
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)
                   for m in opt.modules())
    before = ft._counters["layer_conversions"]
    torch.testing.assert_close(run(opt, x), expected, **tol(dtype))
    assert ft._counters["layer_conversions"] == before
    assert list(opt.state_dict()) == list(model.state_dict())
