"""nn.from_onnx: the layout design (NHWC inside, transposes only at the
edges, Flatten -> Gemm folded into the weights, conv chains fused), whole
networks exported by both torch.onnx exporters, malformed files, and
save/load of an imported model. Every result is compared with onnxruntime
(and torch for the exported networks); op-by-op coverage is in
test_onnx_ops.py."""
import io
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastconv import nn  # noqa: E402
from fastconv.nn import tensor_ops  # noqa: E402

F32 = TensorProto.FLOAT


def run_ort(model, feeds):
    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_close(ours, ref):
    """float32 results of one network computed two ways: within 1e-5 of
    the largest output magnitude (a few thousand roundings of ~6e-8)."""
    ours = ours if isinstance(ours, list) else [ours]
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())))


def tensor(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def make(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F32, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F32, None) for n in outputs], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def kinds(model):
    return [type(layer).__name__ for layer in model.layers]


# -- the layout design --------------------------------------------------------------------

def bn_inits(rng, prefix, c):
    return [tensor(f"{prefix}_g", rng.uniform(0.5, 1.5, c).astype(np.float32)),
            tensor(f"{prefix}_b", rng.uniform(-0.5, 0.5, c).astype(np.float32)),
            tensor(f"{prefix}_m", rng.uniform(-0.5, 0.5, c).astype(np.float32)),
            tensor(f"{prefix}_v", rng.uniform(0.5, 2.0, c).astype(np.float32))]


def residual_block(rng, c=8):
    w1 = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.2
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "bn1_g", "bn1_b", "bn1_m", "bn1_v"],
                         ["b1"], name="bn1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("BatchNormalization", ["c2", "bn2_g", "bn2_b", "bn2_m", "bn2_v"],
                         ["b2"], name="bn2"),
        helper.make_node("Add", ["b2", "x"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu2"),
    ]
    inits = [tensor("w1", w1), tensor("w2", w2)] + bn_inits(rng, "bn1", c) + \
        bn_inits(rng, "bn2", c)
    return make(nodes, [("x", ["N", c, 6, 7])], ["y"], inits)


def test_residual_block_fuses_and_transposes_only_at_the_edges():
    rng = np.random.default_rng(0)
    model = residual_block(rng)
    m = nn.from_onnx(model)
    assert m.input_names == ["x"] and m.output_names == ["y"]
    assert ("conv1", "bn1", "relu1") in m.fusions
    assert ("conv2", "bn2", "add", "relu2") in m.fusions
    assert kinds(m).count("Transpose") == 2  # the input to NHWC, the output back
    assert isinstance(m.get_layer("conv1"), nn.Conv2d)
    assert m.get_layer("conv1").layout == "NHWC"
    for batch in (1, 3):
        x = rng.standard_normal((batch, 8, 6, 7)).astype(np.float32)
        assert_close(m(x), run_ort(model, {"x": x}))


def test_flatten_gemm_permutes_the_weights_instead_of_the_map():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3
    fc = rng.standard_normal((10, 6 * 4 * 5)).astype(np.float32) * 0.1
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], transB=1, name="fc")]
    model = make(nodes, [("x", ["N", 3, 4, 5])], ["y"],
                 [tensor("w", w), tensor("fc", fc),
                  tensor("fc_b", rng.standard_normal(10).astype(np.float32))])
    m = nn.from_onnx(model)
    # The map is flattened in its NHWC order: one transpose (the input), no gather.
    assert kinds(m).count("Transpose") == 1 and "Gather" not in kinds(m)
    assert isinstance(m.get_layer("fc"), nn.Linear)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert_close(m(x), run_ort(model, {"x": x}))


def test_a_transpose_of_a_map_is_only_a_change_of_order():
    """Transpose -> Relu -> Transpose back: no layer for either."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Sigmoid", ["t"], ["s"]),
             helper.make_node("Transpose", ["s"], ["y"], perm=[0, 3, 1, 2])]
    rng = np.random.default_rng(2)
    model = make(nodes, [("x", ["N", 2, 5, 5])], ["y"],
                 [tensor("w", rng.standard_normal((4, 2, 1, 1)).astype(np.float32))])
    m = nn.from_onnx(model)
    assert kinds(m).count("Transpose") == 2
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    assert_close(m(x), run_ort(model, {"x": x}))


def test_batchnorm_after_a_shared_conv_is_a_layer_of_its_own():
    """A conv read twice cannot take the BN into its weights."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"],
                              name="bn"),
             helper.make_node("Add", ["n", "c"], ["y"], name="add")]
    c = 4
    stats = [tensor(k, rng.uniform(0.5, 1.0, c).astype(np.float32)) for k in "gbmv"]
    model = make(nodes, [("x", ["N", 3, 5, 5])], ["y"],
                 [tensor("w", rng.standard_normal((c, 3, 3, 3)).astype(np.float32))] + stats)
    m = nn.from_onnx(model)
    assert isinstance(m.get_layer("bn"), nn.BatchNorm2d)
    assert not any("bn" in f for f in m.fusions)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert_close(m(x), run_ort(model, {"x": x}))


def test_several_inputs_and_outputs_by_list_and_dict():
    nodes = [helper.make_node("Mul", ["a", "b"], ["p"], name="mul"),
             helper.make_node("Relu", ["p"], ["r"], name="relu"),
             helper.make_node("Sub", ["a", "b"], ["d"], name="sub")]
    model = make(nodes, [("a", ["N", 3, 4, 4]), ("b", ["N", 3, 4, 4])], ["r", "d"])
    m = nn.from_onnx(model)
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(2))
    ref = run_ort(model, {"a": a, "b": b})
    assert m.output_names == ["r", "d"]
    assert_close(m([a, b]), ref)
    assert_close(m({"b": b, "a": a}), ref)


# -- networks exported by torch -----------------------------------------------------------

torch = None


def torch_nets():
    global torch
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class Residual(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Sequential(tnn.Conv2d(3, 8, 3, 2, 1, bias=False), tnn.BatchNorm2d(8),
                                       tnn.ReLU(), tnn.MaxPool2d(3, 2, 1))
            self.c1, self.b1 = tnn.Conv2d(8, 8, 3, 1, 1, bias=False), tnn.BatchNorm2d(8)
            self.c2, self.b2 = tnn.Conv2d(8, 8, 3, 1, 1, bias=False), tnn.BatchNorm2d(8)
            self.fc = tnn.Linear(8, 5)

        def forward(self, x):
            x = self.stem(x)
            y = torch.relu(self.b1(self.c1(x)))
            x = torch.relu(self.b2(self.c2(y)) + x)
            return self.fc(torch.flatten(tnn.functional.adaptive_avg_pool2d(x, 1), 1))

    class MobileBlock(tnn.Module):
        def __init__(self):
            super().__init__()
            self.expand = tnn.Sequential(tnn.Conv2d(8, 24, 1, bias=False), tnn.BatchNorm2d(24),
                                         tnn.ReLU6())
            self.dw = tnn.Sequential(tnn.Conv2d(24, 24, 3, 1, 1, groups=24, bias=False),
                                     tnn.BatchNorm2d(24), tnn.Hardswish())
            self.project = tnn.Sequential(tnn.Conv2d(24, 8, 1, bias=False), tnn.BatchNorm2d(8))

        def forward(self, x):
            return x + self.project(self.dw(self.expand(x)))

    class UNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.enc = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.ReLU())
            self.down = tnn.Sequential(tnn.MaxPool2d(2), tnn.Conv2d(8, 16, 3, padding=1),
                                       tnn.ReLU())
            self.up = tnn.ConvTranspose2d(16, 8, 2, stride=2)
            # (a slope exact in float32, in which ONNX keeps attributes)
            self.dec = tnn.Sequential(tnn.Conv2d(16, 8, 3, padding=1), tnn.LeakyReLU(0.125))
            self.head = tnn.Conv2d(8, 2, 1)

        def forward(self, x):
            e = self.enc(x)
            d = self.up(self.down(e))
            y = self.head(self.dec(torch.cat([d, e], 1)))
            return tnn.functional.interpolate(y, scale_factor=2, mode="bilinear",
                                              align_corners=False)

    class Classifier(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(tnn.Conv2d(3, 6, 3), tnn.ReLU(), tnn.AvgPool2d(2))
            self.fc = tnn.Sequential(tnn.Linear(6 * 3 * 3, 16), tnn.ReLU(), tnn.Dropout(),
                                     tnn.Linear(16, 4))

        def forward(self, x):
            x = self.features(x)
            return torch.softmax(self.fc(x.view(x.size(0), -1)), dim=1)

    return {"residual": (Residual, (3, 32, 32)), "mobile": (MobileBlock, (8, 10, 10)),
            "unet": (UNet, (3, 12, 16)), "classifier": (Classifier, (3, 8, 8))}


def export(module, x, dynamo):
    f = io.BytesIO()
    if dynamo:
        torch.onnx.export(module, (x,), f, dynamo=True, input_names=["x"])
    else:
        torch.onnx.export(module, (x,), f, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
    return f.getvalue()


def randomize_batchnorm(module):
    for mod in module.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("net", ["residual", "mobile", "unet", "classifier"])
def test_torch_exported_networks(net, dynamo):
    nets = torch_nets()
    cls, shape = nets[net]
    torch.manual_seed(0)
    module = cls().eval()
    randomize_batchnorm(module)
    x = torch.randn((2,) + shape)
    data = export(module, x, dynamo)
    m = nn.from_onnx(data)
    with torch.no_grad():
        expected = module(x).numpy()
    ref = run_ort(data, {"x": x.numpy()})
    assert_close(m(x.numpy()), ref)
    assert_close(m(x.numpy()), [expected])
    assert m.fusions  # the convolutions took their activations
    # The maps stay NHWC: a transpose in at most once per input and out per map output.
    assert kinds(m).count("Transpose") <= 2
    # A batch other than the exported one (the TorchScript export's is dynamic;
    # the dynamo export's static batch 2 is taken as the batch axis).
    x3 = torch.randn((3,) + shape)
    with torch.no_grad():
        assert_close(m(x3.numpy()), [module(x3).numpy()])


def test_dynamic_batch_view_and_several_batch_sizes():
    """torch's x.view(x.size(0), -1) with a dynamic batch: Shape -> Gather ->
    Unsqueeze -> Concat -> Reshape folds to a Reshape keeping the batch."""
    torch_nets()
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(),
                                 torch.nn.Linear(3 * 3 * 3, 4)).eval()

    class View(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = module[0], module[2]

        def forward(self, x):
            y = self.conv(x)
            return self.fc(y.view(y.size(0), -1))

    data = export(View().eval(), torch.randn(2, 2, 5, 5), dynamo=False)
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert {"Shape", "Gather", "Reshape"} <= ops
    m = nn.from_onnx(data)
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 2, 5, 5)).astype(np.float32)
        assert_close(m(x), run_ort(data, {"x": x}))


# -- refusals -----------------------------------------------------------------------------

def test_unsupported_op_names_the_node_its_op_and_what_is_supported():
    model = make([helper.make_node("Relu", ["x"], ["r"], name="fine"),
                  helper.make_node("Erf", ["r"], ["y"], name="my_erf")],
                 [("x", ["N", 3])], ["y"])
    with pytest.raises(ValueError, match=r"'my_erf'.*'Erf'.*supported: .*Conv"):
        nn.from_onnx(model)
    unnamed = make([helper.make_node("Erf", ["x"], ["y"])], [("x", ["N", 3])], ["y"])
    with pytest.raises(ValueError, match=r"#0 \(unnamed\).*'Erf'"):
        nn.from_onnx(unnamed)


def test_unsupported_attribute_value_is_named():
    model = make([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic", name="rs")],
                 [("x", ["N", 1, 4, 4])], ["y"],
                 [tensor("s", np.array([1, 1, 2, 2], np.float32))])
    with pytest.raises(ValueError, match=r"'rs'.*attribute 'mode' = 'cubic'.*nearest, linear"):
        nn.from_onnx(model)
    pad = make([helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap", name="pd")],
               [("x", ["N", 1, 4, 4])], ["y"], [tensor("p", np.zeros(8, np.int64))])
    with pytest.raises(ValueError, match=r"'pd'.*'mode' = 'wrap'.*constant, reflect, edge"):
        nn.from_onnx(pad)


@pytest.mark.parametrize("node, what", [
    (helper.make_node("Concat", ["x", "x"], ["y"], axis=0, name="n"), "batch axis"),
    (helper.make_node("Softmax", ["x"], ["y"], axis=0, name="n"), "batch axis"),
    (helper.make_node("Flatten", ["x"], ["y"], axis=0, name="n"), "batch axis"),
])
def test_ops_on_the_batch_axis_are_refused(node, what):
    model = make([node], [("x", ["N", 2, 3, 3])], ["y"], opset=13)
    with pytest.raises(ValueError, match=f"'n'.*{what}"):
        nn.from_onnx(model)


def test_a_reshape_that_changes_the_batch_is_refused():
    model = make([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                 [("x", ["N", 2, 3, 3])], ["y"], [tensor("s", np.array([-1, 9], np.int64))])
    with pytest.raises(ValueError, match="'rs'.*changes the batch axis"):
        nn.from_onnx(model)


@pytest.mark.parametrize("opset", [6, 22])
def test_opsets_outside_7_to_21_are_refused(opset):
    model = make([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 3])], ["y"],
                 opset=opset)
    with pytest.raises(ValueError, match=f"opset {opset}.*7 to 21"):
        nn.from_onnx(model)


def test_without_onnx_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="pip install onnx"):
        nn.from_onnx(b"anything")


# -- malformed files ----------------------------------------------------------------------

def small_model():
    w = np.arange(2 * 3 * 1 * 1, dtype=np.float32).reshape(2, 3, 1, 1)
    return make([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                [("x", ["N", 3, 4, 4])], ["y"], [tensor("w", w)])


def test_bytes_that_are_not_onnx():
    for data in (b"this is not an onnx model", b"\xff" * 64, b""):
        with pytest.raises(ValueError, match="not an ONNX model"):
            nn.from_onnx(data)


def test_truncated_file(tmp_path):
    data = small_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    for cut in (len(data) // 2, len(data) - 3, 5):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            nn.from_onnx(str(path))
    with pytest.raises(ValueError, match="cannot read"):
        nn.from_onnx(str(tmp_path / "missing.onnx"))


def test_raw_data_size_must_match_the_dims():
    model = small_model()
    t = model.graph.initializer[0]
    t.raw_data = t.raw_data[:-4]
    with pytest.raises(ValueError, match="raw_data.*make 24"):
        nn.from_onnx(model)
    model = small_model()
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend([2, 3, 1 << 40, 1 << 40])
    with pytest.raises(ValueError, match="raw_data"):
        nn.from_onnx(model)


def test_negative_dims():
    model = small_model()
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend([-2, -3, 1, 1])
    with pytest.raises(ValueError, match="negative dims"):
        nn.from_onnx(model)


def test_undefined_tensor_and_cycle():
    model = make([helper.make_node("Relu", ["nowhere"], ["y"], name="r")],
                 [("x", ["N", 3])], ["y"])
    with pytest.raises(ValueError, match="'r'.*'nowhere'.*no node, input or initializer"):
        nn.from_onnx(model)
    cycle = make([helper.make_node("Add", ["x", "b"], ["a"], name="p"),
                  helper.make_node("Relu", ["a"], ["b"], name="q")],
                 [("x", ["N", 3])], ["b"])
    with pytest.raises(ValueError, match="cycle"):
        nn.from_onnx(cycle)


def external_model(tmp_path, location, offset=0, length=24, file_bytes=24):
    model = small_model()
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "weights.bin").write_bytes(np.arange(file_bytes // 4, dtype=np.float32)
                                           .tobytes())
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return model, str(path)


def test_external_data(tmp_path):
    model, path = external_model(tmp_path, "weights.bin")
    m = nn.from_onnx(path)
    x = np.ones((1, 3, 4, 4), np.float32)
    assert_close(m(x), run_ort(path_bytes_with_data(path), {"x": x}))
    with pytest.raises(ValueError, match="give the model as a path"):
        nn.from_onnx(model)


def path_bytes_with_data(path):
    return onnx.load(path).SerializeToString()


@pytest.mark.parametrize("location, offset, length, message", [
    ("../weights.bin", 0, 24, "outside the model's directory"),
    ("/etc/passwd", 0, 24, "relative"),
    ("weights.bin", 16, 24, "which has 24"),
    ("weights.bin", 0, 20, "make 24 bytes"),
    ("weights.bin", -4, 24, "offset -4"),
])
def test_external_data_is_checked(tmp_path, location, offset, length, message):
    _, path = external_model(tmp_path, location, offset, length)
    with pytest.raises(ValueError, match=message):
        nn.from_onnx(path)


def test_folded_constants_are_bounded():
    model = make([helper.make_node("ConstantOfShape", ["s"], ["big"]),
                  helper.make_node("Add", ["x", "big"], ["y"], name="add")],
                 [("x", ["N", 3])], ["y"], [tensor("s", np.array([1 << 30, 1 << 30]))])
    with pytest.raises(ValueError, match="more than"):
        nn.from_onnx(model)


# -- save and load ------------------------------------------------------------------------

def test_save_and_load_an_imported_model(tmp_path):
    rng = np.random.default_rng(5)
    model = residual_block(rng)
    nodes = list(model.graph.node) + [
        helper.make_node("MaxPool", ["y"], ["p"], kernel_shape=[2, 2], pads=[0, 0, 1, 1],
                         strides=[2, 2], name="pool"),
        helper.make_node("Resize", ["p", "", "sc"], ["u"], mode="linear", name="up"),
        helper.make_node("Pad", ["u", "pads"], ["pd"], mode="reflect", name="pad"),
        helper.make_node("Slice", ["pd", "st", "en", "ax"], ["sl"], name="slice"),
        helper.make_node("Mul", ["sl", "k"], ["z"], name="scale"),
        helper.make_node("ReduceMean", ["z", "rax"], ["mean"], keepdims=0, name="mean")]
    inits = list(model.graph.initializer) + [
        tensor("sc", np.array([1, 1, 2, 2], np.float32)),
        tensor("pads", np.array([0, 0, 1, 1, 0, 0, 1, 2], np.int64)),
        tensor("st", np.array([1], np.int64)), tensor("en", np.array([-1], np.int64)),
        tensor("ax", np.array([3], np.int64)),
        tensor("k", rng.standard_normal((8, 1, 1)).astype(np.float32)),
        tensor("rax", np.array([2], np.int64))]
    model = make(nodes, [("x", ["N", 8, 6, 7])], ["mean", "z"], inits, opset=18)
    m = nn.from_onnx(model)
    x = rng.standard_normal((2, 8, 6, 7)).astype(np.float32)
    ref = run_ort(model, {"x": x})
    assert_close(m(x), ref)
    assert isinstance(m.get_layer("pool"), tensor_ops.Pool2d)  # (asymmetric padding)
    path = tmp_path / "imported.npz"
    m.save(path)
    loaded = nn.load(path)
    assert loaded.input_names == m.input_names and loaded.output_names == m.output_names
    assert loaded.fusions == m.fusions
    for a, b in zip(loaded(x), m(x)):
        np.testing.assert_array_equal(a, b)


def test_tensor_ops_shapes_are_symbolic():
    """Each generic layer reports its shape without running, as a graph
    built from nn.Input needs."""
    x = nn.Input((4, 6, 8), dtype=np.float32)
    y = tensor_ops.Transpose((0, 2, 3, 1))(x)
    assert y.shape == (6, 8, 4)
    y = tensor_ops.Slice([[1, None, 2]])(y)
    assert y.shape == (3, 8, 4)
    y = tensor_ops.Pad([(1, 1), (0, -2), (0, 0)])(y)
    assert y.shape == (5, 6, 4)
    y = tensor_ops.Reduce("mean", [1, 2], keepdims=False)(y)
    assert y.shape == (4,)
    y = tensor_ops.Reshape((2, 2))(y)
    assert y.shape == (2, 2)
    assert os.path.basename(tensor_ops.__file__) == "tensor_ops.py"


def test_import_allocates_nothing_for_the_declared_activation_sizes():
    """A graph declaring a 2**20 x 2**20 map imports at once (the pools'
    divisors and the flattened features' permutation are not made for it)."""
    side = 1 << 20
    nodes = [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2],
                              pads=[0, 0, 1, 1], name="pool"),
             helper.make_node("Flatten", ["p"], ["y"], name="flat")]
    m = nn.from_onnx(make(nodes, [("x", ["N", 2, side, side])], ["y"]))
    assert m.output_shape((2, side, side)) == (2 * side * side,)


def test_folding_refuses_a_huge_broadcast():
    model = make([helper.make_node("Add", ["a", "b"], ["s"], name="big_add"),
                  helper.make_node("Reshape", ["x", "s"], ["y"])],
                 [("x", ["N", 3])], ["y"],
                 [tensor("a", np.zeros((1 << 14, 1), np.int64)),
                  tensor("b", np.zeros((1, 1 << 14), np.int64))])
    with pytest.raises(ValueError, match="'big_add'.*more than"):
        nn.from_onnx(model)


def test_layer_norm_as_exported_from_reduce_mean_pow_sqrt():
    """LayerNorm over the last axis as exporters decompose it (ReduceMean,
    Sub, Pow, Add, Sqrt, Div, Mul, Add) after a MatMul by a constant."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("ReduceMean", ["h"], ["mu"], axes=[-1], name="mean"),
             helper.make_node("Sub", ["h", "mu"], ["d"], name="center"),
             helper.make_node("Pow", ["d", "two"], ["d2"], name="square"),
             helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1], name="var"),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="eps_add"),
             helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
             helper.make_node("Div", ["d", "sd"], ["n"], name="norm"),
             helper.make_node("Mul", ["n", "g"], ["ng"], name="gamma"),
             helper.make_node("Add", ["ng", "b"], ["y"], name="beta")]
    model = make(nodes, [("x", ["N", 5, 6])], ["y"], [
        tensor("w", rng.standard_normal((6, 8)).astype(np.float32)),
        tensor("two", np.array(2, np.float32)), tensor("eps", np.array(1e-5, np.float32)),
        tensor("g", rng.uniform(0.5, 1.5, 8).astype(np.float32)),
        tensor("b", rng.uniform(-0.5, 0.5, 8).astype(np.float32))], opset=13)
    m = nn.from_onnx(model)
    assert isinstance(m.get_layer("sqrt"), tensor_ops.Unary)
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    assert_close(m(x), run_ort(model, {"x": x}))


def test_input_shapes_fix_dynamic_dims():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2],
                              name="conv")]
    w = np.random.default_rng(7).standard_normal((2, 1, 3, 3)).astype(np.float32)
    model = make(nodes, [("x", ["N", 1, "H", "W"])], ["y"], [tensor("w", w)])
    with pytest.raises(ValueError, match="input_shapes"):
        nn.from_onnx(model)
    m = nn.from_onnx(model, input_shapes={"x": (None, 1, 7, 9)})
    x = np.random.default_rng(8).standard_normal((2, 1, 7, 9)).astype(np.float32)
    assert_close(m(x), run_ort(model, {"x": x}))


def test_save_and_load_the_other_tensor_layers(tmp_path):
    rng = np.random.default_rng(9)
    nodes = [helper.make_node("Concat", ["x", "k"], ["c"], axis=1, name="cat"),
             helper.make_node("Exp", ["c"], ["e"], name="exp"),
             helper.make_node("MatMul", ["e", "w"], ["mm"], name="mm"),
             helper.make_node("Gather", ["mm", "i"], ["g"], axis=2, name="pick"),
             helper.make_node("Softmax", ["g"], ["s"], axis=1, name="soft", ),
             helper.make_node("MatMul", ["s", "w3"], ["y"], name="mm3"),
             helper.make_node("Identity", ["x"], ["x_again"], name="again")]
    model = make(nodes, [("x", [2, 2, 4, 5])], ["y", "x_again"], [
        tensor("k", rng.standard_normal((2, 1, 4, 5)).astype(np.float32)),
        tensor("w", rng.standard_normal((5, 3)).astype(np.float32)),
        tensor("i", np.array([2, 0], np.int64)),
        tensor("w3", rng.standard_normal((1, 3, 3, 2)).astype(np.float32))], opset=13)
    m = nn.from_onnx(model)
    assert {"ConcatConstant", "Unary", "MatMul", "Gather", "SoftmaxAxes", "Binary",
            "Copy"} <= set(kinds(m))
    x = rng.standard_normal((2, 2, 4, 5)).astype(np.float32)
    assert_close(m(x), run_ort(model, {"x": x}))
    out = m(x)
    assert out[1] is not x  # (the input given back is a copy, as onnxruntime's)
    # A graph input that is itself a graph output (no node between) keeps its
    # name, so no layer can stand for it: the model returns the caller's array.
    passthrough = nn.from_onnx(make([], [("x", ["N", 3])], ["x"]))
    assert passthrough.output_names == ["x"]
    v = rng.standard_normal((2, 3)).astype(np.float32)
    assert passthrough(v) is v
    path = tmp_path / "more.npz"
    m.save(path)
    for a, b in zip(nn.load(path)(x), m(x)):
        np.testing.assert_array_equal(a, b)


def test_attention_moves_the_batch_axis_and_gathers_it_back():
    """SVTR-style attention: (N, L, 3, H, d) transposed to (3, N, H, L, d)
    (the batch axis moved: a change of order, no layer), q, k and v gathered
    off axis 0 (the batch first again), q @ k^T, softmax, @ v."""
    rng = np.random.default_rng(10)
    L, H, d = 5, 2, 3
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv"], name="qkv"),
             helper.make_node("Reshape", ["qkv", "s5"], ["r"], name="split_heads"),
             helper.make_node("Transpose", ["r"], ["t"], perm=[2, 0, 3, 1, 4], name="t"),
             helper.make_node("Gather", ["t", "i0"], ["q"], axis=0, name="q"),
             helper.make_node("Gather", ["t", "i1"], ["k"], axis=0, name="k"),
             helper.make_node("Slice", ["t", "two", "three", "zero"], ["v5"], name="v5"),
             helper.make_node("Squeeze", ["v5", "zero"], ["v"], name="v"),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2], name="kt"),
             helper.make_node("MatMul", ["q", "kt"], ["a"], name="scores"),
             helper.make_node("Softmax", ["a"], ["p"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["p", "v"], ["o"], name="mix"),
             helper.make_node("Transpose", ["o"], ["y"], perm=[0, 2, 1, 3], name="merge")]
    model = make(nodes, [("x", ["N", L, 4])], ["y"], [
        tensor("w", rng.standard_normal((4, 3 * H * d)).astype(np.float32)),
        tensor("s5", np.array([0, L, 3, H, d], np.int64)),
        tensor("i0", np.array(0, np.int64)), tensor("i1", np.array(1, np.int64)),
        tensor("two", np.array([2], np.int64)), tensor("three", np.array([3], np.int64)),
        tensor("zero", np.array([0], np.int64))], opset=13)
    m = nn.from_onnx(model)
    x = rng.standard_normal((2, L, 4)).astype(np.float32)
    assert_close(m(x), run_ort(model, {"x": x}))
    bad = make([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2], name="t"),
                helper.make_node("Relu", ["t"], ["y"], name="relu")],
               [("x", ["N", L, 4])], ["y"])
    with pytest.raises(ValueError, match="'relu'.*batch axis a Transpose moved"):
        nn.from_onnx(bad)
    moved_out = make([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2])],
                     [("x", ["N", L, 4])], ["y"])
    with pytest.raises(ValueError, match="output 'y' has its batch axis at position 1"):
        nn.from_onnx(moved_out)


def test_dynamic_height_and_width_run_any_size():
    """A fully convolutional graph whose H and W are dynamic in the file
    (PP-OCR's detector): one import runs several sizes; an op that needs
    static sizes says so."""
    rng = np.random.default_rng(11)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2],
                              name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r1"], ["gap"], name="gap"),
             helper.make_node("Conv", ["gap", "w2"], ["c2"], name="se_conv"),
             helper.make_node("HardSigmoid", ["c2"], ["gate"], name="gate"),
             helper.make_node("Mul", ["r1", "gate"], ["se"], name="se"),
             helper.make_node("Resize", ["se", "", "sc"], ["up"], mode="nearest",
                              coordinate_transformation_mode="asymmetric",
                              nearest_mode="floor", name="up"),
             helper.make_node("ConvTranspose", ["se", "wt"], ["ct"], strides=[2, 2],
                              name="deconv"),
             helper.make_node("Concat", ["up", "ct", "x"], ["y"], axis=1, name="cat")]
    model = make(nodes, [("x", ["N", 3, "H", "W"])], ["y"], [
        tensor("w1", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        tensor("w2", rng.standard_normal((4, 4, 1, 1)).astype(np.float32)),
        tensor("wt", rng.standard_normal((4, 2, 2, 2)).astype(np.float32)),
        tensor("sc", np.array([1, 1, 2, 2], np.float32))], opset=13)
    m = nn.from_onnx(model)
    assert ("conv1", "relu1") in m.fusions
    for shape in ((1, 3, 8, 12), (2, 3, 16, 6)):
        x = rng.standard_normal(shape).astype(np.float32)
        assert_close(m(x), run_ort(model, {"x": x}))
    flat = make([helper.make_node("Flatten", ["x"], ["y"], name="flat")],
                [("x", ["N", 3, "H", "W"])], ["y"])
    with pytest.raises(ValueError, match="'flat'.*static sizes.*input_shapes"):
        nn.from_onnx(flat)


@pytest.mark.parametrize("net", ["residual", "unet"])
def test_float64_networks_against_torch(net):
    """A float64 graph runs in float64 (onnxruntime has no double Conv:
    torch in float64 is the reference, to float64 rounding)."""
    cls, shape = torch_nets()[net]
    torch.manual_seed(1)
    module = cls().double().eval()
    randomize_batchnorm(module)
    x = torch.randn((2,) + shape, dtype=torch.float64)
    m = nn.from_onnx(export(module, x, dynamo=False))
    with torch.no_grad():
        expected = module(x).numpy()
    got = m(x.numpy())
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0,
                               atol=1e-12 * max(1.0, float(np.abs(expected).max())))
