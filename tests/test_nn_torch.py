"""fastconv.nn.from_torch against the torch modules it imports."""

import numpy as np
import pytest

from fastconv import nn

torch = pytest.importorskip("torch")
tnn = torch.nn


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


def test_from_torch_refuses_unsupported_layers():
    module = tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.BatchNorm2d(4))
    with pytest.raises(ValueError, match=r"from_torch: layer 1 \(BatchNorm2d.*no fastconv.nn"):
        nn.from_torch(module)
    with pytest.raises(ValueError, match=r"layer 0 .* pads with 'reflect'"):
        nn.from_torch(tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")))
