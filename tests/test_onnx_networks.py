"""nn.from_onnx on the reference networks (fastconv._torch_networks, reduced
widths: ResNet-18/50, MobileNetV2, VGG16, a U-Net and FCN-8s) as torch.onnx
exports them, against torch: the imported float32 model must be as close to
torch's float64 result as torch's own float32 is (within 4x its error, plus
1e-6 of the output's magnitude: the randomised BatchNorm statistics amplify
rounding through the depth). Both exporters: the TorchScript one (dynamo=False,
which folds BatchNorm into the convolutions) on every network, the dynamo one
(BatchNormalization nodes, ReduceMean for the global pool) on two."""
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from fastconv import _torch_networks as tn  # noqa: E402
from fastconv import nn  # noqa: E402


def exported(module, shape, dynamo):
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.zeros((1,) + shape),), buf, dynamo=dynamo,
                      opset_version=17 if not dynamo else 18)
    return buf.getvalue()


def torch_output(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name,dynamo", [(name, False) for name in sorted(tn.SMALL)]
                         + [("resnet18", True), ("mobilenet_v2", True)])
def test_from_onnx_matches_torch(name, dynamo):
    make, shape = tn.SMALL[name]
    module = make()
    model = nn.from_onnx(exported(module, shape, dynamo))
    x = np.random.default_rng(3).standard_normal((2,) + shape).astype(np.float32)
    got = model(x)
    expected64 = torch_output(make().double(), x.astype(np.float64))
    torch_error = np.abs(torch_output(module, x) - expected64).max()
    assert got.shape == expected64.shape
    assert np.abs(got - expected64).max() <= 4 * torch_error + 1e-6 * max(
        1, np.abs(expected64).max())
    if name.startswith("resnet"):
        # every residual Add and the ReLU after it run in a convolution's store
        # (the exporters name the Add nodes "/layer1/layer1.0/Add", "node_add")
        adds = [f for f in model.fusions if any("add" in n.lower() for n in f)]
        assert len(adds) == (8 if name == "resnet18" else 16), model.fusions
