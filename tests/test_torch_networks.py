"""The torch reference networks of fastconv._torch_networks: their output
shapes, that torch.fx traces them (the traced graph computing what the module
does), that a seed fixes their weights, and that their BatchNorm layers are
far from the identity (so that an importer's folding is exercised)."""
import pytest

torch = pytest.importorskip("torch")
fx = pytest.importorskip("torch.fx")

from fastconv import _torch_networks as tn  # noqa: E402

# tn.SMALL's reduced widths keep the tests quick; the structure is the full
# networks'. Each network's output shape, and the batch it is run with:
OUT_SHAPES = {"resnet18": ((1, 10), 1), "resnet50": ((1, 10), 1), "mobilenet_v2": ((1, 10), 1),
              "vgg16": ((2, 10), 2), "unet": ((1, 3, 48, 80), 1), "fcn8s": ((1, 5, 45, 61), 1)}
SMALL = {name: (make, (OUT_SHAPES[name][1],) + shape, OUT_SHAPES[name][0])
         for name, (make, shape) in tn.SMALL.items()}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_and_fx_trace(name):
    make, in_shape, out_shape = SMALL[name]
    model = make()
    assert not model.training
    x = torch.randn(*in_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        traced = fx.symbolic_trace(model)
        y_traced = traced(x)
    assert tuple(y.shape) == out_shape
    assert torch.isfinite(y).all()
    assert y.std() > 0
    torch.testing.assert_close(y_traced, y, rtol=0, atol=0)
    # every convolution of the module is a node of the traced graph
    convs = [n for n, m in model.named_modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    targets = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    assert set(convs) <= targets


def test_seed_fixes_the_weights_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = tn.resnet18(width=8, seed=3), tn.resnet18(width=8, seed=3)
    c = tn.resnet18(width=8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])


def test_batchnorm_statistics_are_randomised():
    model = tn.mobilenet_v2(num_classes=10, width_mult=0.25)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 52  # torchvision's mobilenet_v2 has 52
    for bn in bns:
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
        assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))
        assert not torch.allclose(bn.bias, torch.zeros_like(bn.bias))


def test_torchvision_names_and_sizes():
    """The full networks' parameter counts are torchvision's (resnet18
    11,689,512; resnet50 25,557,032; mobilenet_v2 3,504,872), so their
    structures match layer for layer."""
    counts = {"resnet18": 11689512, "resnet50": 25557032, "mobilenet_v2": 3504872}
    for name, count in counts.items():
        model = tn.NETWORKS[name][0]()
        assert sum(p.numel() for p in model.parameters()) == count, name
    keys = tn.resnet50(width=8).state_dict().keys()
    assert {"layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.bias"} <= set(keys)


def test_fcn8s_upsampling_is_bilinear():
    model = tn.fcn8s(num_classes=3, width=1 / 16, fc_channels=16)
    w = model.upscore2.weight.detach()
    assert w.shape == (3, 3, 4, 4) and model.upscore2.bias is None
    filt = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(w[1, 1], filt[:, None] * filt[None, :])
    assert float(w[0, 1].abs().max()) == 0.0
