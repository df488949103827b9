"""fastconv.nn: layers, Sequential, pooling, and to_fully_convolutional."""

import json
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastconv
from fastconv import _bench, nn
from checks import random_array


# --------------------------------------------------------------------------
# Pooling against a plain NumPy reference (PyTorch's rules)
# --------------------------------------------------------------------------
def pool_ref(x, k, s, p, ceil_mode, is_max, count_include_pad=True):
    """Max/avg pooling of NHWC x, written out window by window."""
    n, h, w, c = x.shape

    def out_size(size):
        span = size + 2 * p - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        return out

    ho, wo = out_size(h), out_size(w)
    y = np.zeros((n, ho, wo, c), np.float64)
    for i in range(ho):
        for j in range(wo):
            y0, x0 = i * s - p, j * s - p
            y1, x1 = min(y0 + k, h + p), min(x0 + k, w + p)
            win = x[:, max(y0, 0):min(y1, h), max(x0, 0):min(x1, w), :].astype(np.float64)
            if is_max:
                y[:, i, j] = win.max(axis=(1, 2))
            else:
                count = (y1 - y0) * (x1 - x0) if count_include_pad else win.shape[1] * win.shape[2]
                y[:, i, j] = win.sum(axis=(1, 2)) / count
    return y


@pytest.mark.parametrize("h,w,c,k,s,p,ceil", [
    (7, 8, 5, 3, 2, 1, False), (7, 8, 5, 3, 2, 1, True), (8, 8, 17, 2, 2, 0, False),
    (9, 9, 16, 3, 2, 0, True), (6, 5, 3, 3, 1, 1, False), (224 // 8, 224 // 8, 64, 2, 2, 0, False),
])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_pooling_matches_reference(isa, rng, h, w, c, k, s, p, ceil, count_include_pad, dtype):
    x = random_array(rng, (2, h, w, c), dtype)
    got_max = nn.MaxPool2d(k, s, p, ceil_mode=ceil)(x)
    assert np.array_equal(got_max, pool_ref(x, k, s, p, ceil, True).astype(dtype))
    got_avg = nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=count_include_pad)(x)
    expected = pool_ref(x, k, s, p, ceil, False, count_include_pad)
    assert got_avg.shape == expected.shape
    # A sum of k*k values and one scaling, each rounding once: the error is at
    # most (k*k + 1) * eps times the mean of |x| over the window.
    magnitude = pool_ref(np.abs(x), k, s, p, ceil, False, count_include_pad)
    bound = (k * k + 1) * np.finfo(dtype).eps * magnitude
    assert np.all(np.abs(got_avg - expected) <= bound)


def test_pooling_nchw_and_nan():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    x[0, 1, 0, 0] = np.nan
    y = nn.MaxPool2d(2, layout="NCHW")(x)
    expected = pool_ref(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), 2, 2, 0, False,
                        True).transpose(0, 3, 1, 2)
    assert np.isnan(y[0, 1, 0, 0]), "NaN must propagate through max pooling"
    assert np.array_equal(y, expected.astype(np.float32), equal_nan=True)


def test_pooling_rejects_bad_options():
    with pytest.raises(ValueError, match=r"MaxPool2d: padding must be at most half"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match=r"AvgPool2d: stride must be >= 1; got 0"):
        nn.AvgPool2d(2, stride=0)
    with pytest.raises(ValueError, match=r"MaxPool2d: the window \(5\) is larger"):
        nn.MaxPool2d(5)(np.zeros((1, 3, 3, 1), np.float32))


# --------------------------------------------------------------------------
# Sequential
# --------------------------------------------------------------------------
def small_classifier(rng, layout="NHWC", order="HWC", dtype=np.float32, padding=0,
                     weight_layout="IO"):
    """conv 3x3 (2 -> 6) + relu, maxpool 2, flatten, fc 54 -> 10 + relu, dropout,
    fc 10 -> 4, softmax: built for (8, 8, 2) inputs."""
    w1 = random_array(rng, (3, 3, 2, 6), dtype)
    if layout == "NCHW":
        w1 = np.ascontiguousarray(w1.transpose(3, 2, 0, 1))
    fc1 = random_array(rng, (3 * 3 * 6, 10), dtype)
    fc2 = random_array(rng, (10, 4), dtype)
    if weight_layout == "OI":
        fc1, fc2 = np.ascontiguousarray(fc1.T), np.ascontiguousarray(fc2.T)
    return nn.Sequential(
        nn.Conv2d(w1, random_array(rng, (6,), dtype), padding=padding, activation="relu",
                  layout=layout),
        nn.MaxPool2d(2, layout=layout),
        nn.Flatten(order, layout=layout),
        nn.Linear(fc1, random_array(rng, (10,), dtype), activation="relu",
                  weight_layout=weight_layout),
        nn.Dropout(0.5),
        nn.Linear(fc2, random_array(rng, (4,), dtype), weight_layout=weight_layout),
        nn.Softmax(),
        layout=layout)


def test_sequential_basics(rng):
    model = small_classifier(rng)
    assert len(model) == 7
    assert isinstance(model[2], nn.Flatten)
    assert isinstance(model[:2], nn.Sequential) and len(model[:2]) == 2
    x = random_array(rng, (3, 8, 8, 2), np.float32)
    y = model(x)
    assert y.shape == (3, 4)
    assert np.allclose(y.sum(axis=1), 1, atol=1e-6)
    manual = x
    for layer in model:
        manual = layer(manual)
    assert np.array_equal(y, manual)
    summary = model.summary((8, 8, 2))
    for shape in ["(6, 6, 6)", "(3, 3, 6)", "(54,)", "(10,)", "(4,)"]:
        assert shape in summary
    assert "MaxPool2d" in repr(model)


def test_sequential_rejects_mixed_layouts_and_non_layers():
    w = np.zeros((3, 3, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"Sequential: layer 0 .* is NHWC but the model is NCHW"):
        nn.Sequential(nn.Conv2d(w), layout="NCHW")
    with pytest.raises(TypeError, match=r"Sequential: layer 1 must be a fastconv.nn layer"):
        nn.Sequential(nn.ReLU(), lambda x: x)


# --------------------------------------------------------------------------
# to_fully_convolutional
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("order", ["HWC", "CHW", "WHC"])
@pytest.mark.parametrize("weight_layout", ["IO", "OI"])
def test_fully_convolutional_equals_the_classifier(rng, layout, order, weight_layout):
    model = small_classifier(rng, layout=layout, order=order, weight_layout=weight_layout)
    in_shape = (8, 8, 2) if layout == "NHWC" else (2, 8, 8)
    fcn = nn.to_fully_convolutional(model, in_shape)

    # Exactly the input it was built for: the same output, as a 1x1 map.
    x = random_array(rng, (3,) + in_shape, np.float32)
    y = fcn(x)
    assert y.shape == ((3, 1, 1, 4) if layout == "NHWC" else (3, 4, 1, 1))
    assert np.allclose(y.reshape(3, 4), model(x), rtol=0, atol=2e-6)

    # A larger input: entry (i, j) is the classifier on the window at
    # (i * S, j * S), S = 2 (the max pool's stride).
    big = random_array(rng, (2, 14, 17, 2), np.float32)
    if layout == "NCHW":
        big = np.ascontiguousarray(big.transpose(0, 3, 1, 2))
    scores = fcn(big)
    ho, wo = (scores.shape[1], scores.shape[2]) if layout == "NHWC" else scores.shape[2:]
    assert (ho, wo) == (4, 5)
    for i in range(ho):
        for j in range(wo):
            if layout == "NHWC":
                window, got = big[:, 2 * i:2 * i + 8, 2 * j:2 * j + 8], scores[:, i, j]
            else:
                window, got = big[:, :, 2 * i:2 * i + 8, 2 * j:2 * j + 8], scores[:, :, i, j]
            assert np.allclose(got, model(window), rtol=0, atol=2e-6), (i, j)


def test_fully_convolutional_refuses_what_it_cannot_convert(rng):
    w = random_array(rng, (3, 3, 2, 4), np.float32)
    fc = random_array(rng, (16, 3), np.float32)
    # (a GlobalAvgPool2d head converts: tests/test_fcn.py)
    with pytest.raises(ValueError, match=r"layer 0 .*Linear.* mixes every spatial"):
        nn.to_fully_convolutional(nn.Sequential(nn.Linear(fc), nn.ReLU()), (16,))
    # (the classifier itself cannot run it: its own shape error names the layer)
    with pytest.raises(ValueError, match=r"layer 'max_pool2d' \(MaxPool2d\) cannot take input"):
        nn.to_fully_convolutional(
            nn.Sequential(nn.Conv2d(w), nn.Flatten(), nn.Linear(fc), nn.MaxPool2d(2)),
            (4, 4, 2))
    with pytest.raises(ValueError, match=r"no Flatten or global pool followed by a Linear"):
        nn.to_fully_convolutional(nn.Sequential(nn.Conv2d(w), nn.ReLU()), (6, 6, 2))


# --------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_save_load_round_trip(rng, tmp_path, layout):
    model = small_classifier(rng, layout=layout, order="CHW", padding=((1, 0), (0, 1)))
    model.layers.insert(2, nn.AvgPool2d(3, 1, 1, count_include_pad=False, layout=layout))
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = nn.load(path)
    assert repr(loaded) == repr(model)
    x = random_array(rng, (2,) + ((8, 8, 2) if layout == "NHWC" else (2, 8, 8)), np.float32)
    assert np.array_equal(loaded(x), model(x))


def test_load_refuses_corrupt_and_foreign_files(rng, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"nn.load: .*bad.npz is not a readable .npz"):
        nn.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"no valid fastconv.nn model description"):
        nn.load(other)
    model = small_classifier(rng)
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    desc = json.loads(arrays["__model__"].tobytes())
    desc["version"] = 99
    arrays["__model__"] = np.frombuffer(json.dumps(desc).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"format version 99 .* reads versions 1 and 2$"):
        nn.load(path)
    desc["version"] = 1
    desc["layers"][0]["type"] = "Conv3d"
    arrays["__model__"] = np.frombuffer(json.dumps(desc).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"layer 0 has unknown type 'Conv3d'"):
        nn.load(path)


def test_load_never_unpickles(tmp_path):
    """An object array (which only pickle can store) is refused, not loaded."""
    path = tmp_path / "pickled.npz"
    np.savez(path, __model__=np.array([{"format": "fastconv.nn"}], dtype=object))
    with pytest.raises(ValueError, match=r"nn.load: .*not a readable .npz model file"):
        nn.load(path)


def test_layers_keep_their_own_weights(rng):
    """Changing the caller's arrays after building a model changes neither
    what runs nor what is converted or saved."""
    w_conv = random_array(rng, (3, 3, 2, 6), np.float32)
    w_fc = random_array(rng, (3 * 3 * 6, 4), np.float32)
    model = nn.Sequential(nn.Conv2d(w_conv), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(w_fc))
    x = random_array(rng, (2, 8, 8, 2), np.float32)
    before = model(x)
    w_conv += 1
    w_fc += 1
    for layer in (model[0], model[3]):
        assert not layer.weight.flags.writeable
    assert np.array_equal(model(x), before)
    fcn = nn.to_fully_convolutional(model, (8, 8, 2))
    # Same products summed in another order: float32 rounding only (the +1
    # above would move the logits by tens).
    assert np.allclose(fcn(x).reshape(2, 4), before, rtol=0,
                       atol=1e-5 * np.abs(before).max())


# --------------------------------------------------------------------------
# One Conv2d and one Linear: fastconv's are fastconv.nn's
# --------------------------------------------------------------------------
def test_fastconv_layers_are_the_nn_layers():
    assert fastconv.Conv2d is nn.Conv2d and fastconv.Linear is nn.Linear
    assert issubclass(nn.Conv2d, nn.Layer) and issubclass(nn.Linear, nn.Layer)


@pytest.mark.parametrize("module", ["fastconv.nn", "fastconv.nn.layers", "fastconv.nn.model",
                                    "fastconv.nn.serialize", "fastconv.nn.torch_import",
                                    "fastconv.nn.keras_import"])
def test_any_nn_module_may_be_imported_first(module):
    """No circular import: a fresh interpreter imports any module of the
    package before fastconv itself (outside the checkout, so that its
    fastconv/ cannot shadow the installed one)."""
    code = f"import {module}, fastconv; assert fastconv.Conv2d is fastconv.nn.Conv2d"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr


def test_conv2d_and_linear_take_out_and_num_threads(rng):
    """layer(x, out=None, num_threads=None) in a model as alone; the other
    layers, and Sequential, take num_threads by keyword only."""
    model = small_classifier(rng)
    conv, linear = model[0], model[3]
    x = random_array(rng, (2, 8, 8, 2), np.float32)
    y = conv(x, num_threads=2)
    out = np.empty_like(y)
    assert conv(x, out, 1) is out and np.array_equal(out, y)
    flat = model[:3](x)
    out = np.empty((2, 10), np.float32)
    assert linear(flat, out, num_threads=1) is out
    assert np.array_equal(out, linear(flat))
    # one vector, without the batch axis
    assert np.array_equal(linear(flat[0]), linear(flat[:1])[0])
    for layer in (model[1], model):
        with pytest.raises(TypeError):
            layer(x, 1)
        layer(x, num_threads=1)


def test_layer_weights_are_read_only_copies(rng):
    layers = [nn.Conv2d(random_array(rng, (3, 3, 2, 4), np.float32),
                        random_array(rng, (4,), np.float32)),
              nn.Linear(random_array(rng, (5, 3), np.float64), random_array(rng, (5,), np.float64),
                        weight_layout="OI")]
    for layer in layers:
        for name in ("weight", "bias"):
            a = getattr(layer, name)
            assert not a.flags.writeable and a is not getattr(layer, name)
            b = a.copy()
            b[...] = 0  # the caller's copy
            assert not np.array_equal(getattr(layer, name), b)


def test_conv2d_and_linear_reprs_show_every_option():
    conv = nn.Conv2d(np.zeros((1, 3, 2, 4), np.float32), padding=(0, 1), dilation=2)
    assert repr(conv) == ("Conv2d(2, 4, kernel=1x3, stride=1, padding=(0, 1), "
                          "dilation=2, groups=1, bias=False, activation=None, "
                          "layout='NHWC', dtype=float32)")
    linear = nn.Linear(np.zeros((3, 2)), np.zeros(2), activation="relu")
    assert repr(linear) == "Linear(3, 2, bias=True, activation='relu', dtype=float64)"


def test_fully_convolutional_refuses_softmax_over_another_axis(rng):
    model = small_classifier(rng)
    model.layers[-1] = nn.Softmax(axis=0)
    with pytest.raises(ValueError, match=r"layer 6 \(Softmax\(axis=0\)\) .* acts on axis 0"):
        nn.to_fully_convolutional(model, (8, 8, 2))


# --------------------------------------------------------------------------
# The seed's case at full size: VGG16 with its fc6/fc7/fc8 head
# --------------------------------------------------------------------------
@pytest.mark.slow
def test_vgg16_fully_convolutional(rng):
    model = nn.Sequential(*_bench.vgg16(np.float32, rng), nn.Softmax())
    assert model.output_shape((224, 224, 3)) == (1000,)
    fcn = nn.to_fully_convolutional(model, (224, 224, 3))
    # fc6 is a 7x7 convolution over the 7x7x512 map, fc7 and fc8 are 1x1.
    convs = [layer for layer in fcn if isinstance(layer, nn.Conv2d)]
    assert [c.kernel_size for c in convs[-3:]] == [(7, 7), (1, 1), (1, 1)]

    x = rng.random((1, 224, 224, 3), dtype=np.float32)
    logits_model = model[:-1](x)
    logits_fcn = fcn[:-1](x).reshape(1, 1000)
    # The same products summed in another order, float32: compare at the
    # scale of the logits (each a sum of 4096 terms of order one).
    assert np.allclose(logits_fcn, logits_model, rtol=0,
                       atol=1e-4 * np.abs(logits_model).max())
    assert np.allclose(fcn(x).reshape(1, 1000), model(x), rtol=0, atol=1e-6)

    # 384x384: pool5 is 12x12, so fc6's 7x7 kernel fits at 6x6 places.
    big = rng.random((1, 384, 384, 3), dtype=np.float32)
    scores = fcn(big)
    assert scores.shape == (1, 6, 6, 1000)
    assert np.allclose(scores.sum(axis=-1), 1, atol=1e-5)


# --------------------------------------------------------------------------
# to_fully_convolutional on random networks
# --------------------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

from strategies import examples  # noqa: E402


@st.composite
def random_classifier(draw):
    """(model, input_shape, S, layout): an unpadded trunk of convolutions and
    pools (strides 1-2, kernels 1-3, dilation 1-2), a Flatten in a random
    order and 1-2 Linears, for an input that the trunk reduces to >= 1x1."""
    layout = draw(st.sampled_from(["NHWC", "NCHW"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    c = draw(st.integers(1, 4))
    trunk, stride_product, shrink = [], 1, 0
    channels = c
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "max", "avg", "relu"]))
        k, s = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        if kind == "conv":
            d = draw(st.integers(1, 2)) if k > 1 else 1
            k_out = draw(st.integers(1, 5))
            w = random_array(rng, (k, k, channels, k_out), np.float32)
            if layout == "NCHW":
                w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
            trunk.append(nn.Conv2d(w, random_array(rng, (k_out,), np.float32), stride=s,
                                   dilation=d, layout=layout))
            channels, span = k_out, d * (k - 1) + 1
        elif kind == "relu":
            trunk.append(nn.ReLU())
            continue
        else:
            pool = nn.MaxPool2d if kind == "max" else nn.AvgPool2d
            trunk.append(pool(k, s, layout=layout))
            span = k
        shrink += (span - 1) * stride_product
        stride_product *= s
    h = shrink + stride_product * draw(st.integers(1, 3))
    w_ = shrink + stride_product * draw(st.integers(1, 3))
    in_shape = (h, w_, c) if layout == "NHWC" else (c, h, w_)
    features = int(np.prod(nn.Sequential(*trunk, layout=layout).output_shape(in_shape)))
    head = [nn.Flatten(draw(st.sampled_from(["HWC", "CHW", "WHC", "HCW", "CWH", "WCH"])),
                       layout=layout)]
    for i in range(draw(st.integers(1, 2))):
        out = draw(st.integers(1, 6))
        head.append(nn.Linear(random_array(rng, (features, out), np.float32),
                              random_array(rng, (out,), np.float32),
                              activation="relu" if i == 0 else None))
        features = out
    model = nn.Sequential(*trunk, *head, layout=layout)
    return model, in_shape, stride_product, layout


# 0.4 times the profile's examples (conftest.py): each builds and slides a network.
@settings(max_examples=examples(0.4))
@given(random_classifier(), st.integers(0, 2), st.integers(0, 2))
def test_fully_convolutional_random_networks(case, extra_rows, extra_cols):
    model, in_shape, S, layout = case
    fcn = nn.to_fully_convolutional(model, in_shape)
    rng = np.random.default_rng(7)
    if layout == "NHWC":
        h, w, c = in_shape
        big = random_array(rng, (1, h + S * extra_rows, w + S * extra_cols, c), np.float32)
    else:
        c, h, w = in_shape
        big = random_array(rng, (1, c, h + S * extra_rows, w + S * extra_cols), np.float32)
    scores = fcn(big)
    rows, cols = (scores.shape[1:3] if layout == "NHWC" else scores.shape[2:4])
    assert (rows, cols) == (extra_rows + 1, extra_cols + 1)
    for i in range(rows):
        for j in range(cols):
            if layout == "NHWC":
                window, got = big[:, i * S:i * S + h, j * S:j * S + w], scores[0, i, j]
            else:
                window, got = big[:, :, i * S:i * S + h, j * S:j * S + w], scores[0, :, i, j]
            expected = model(window)[0]
            # Same products summed in another order: float32 rounding at the
            # scale of the values.
            assert np.allclose(got, expected, rtol=0, atol=1e-5 * (1 + np.abs(expected).max()))


def test_every_kernel_layer_names_its_algorithm():
    """Each layer that runs a kernel says which: the convolutions and dense
    layers what their operator prepared, the pools "pool"."""
    w = np.ones((3, 3, 8, 8), np.float32)
    assert nn.Conv2d(w).algorithm == "igemm"
    assert nn.Conv2d(w[:1, :1]).algorithm == "gemm"
    assert nn.Conv2d(np.ones((3, 3, 1, 8), np.float32), groups=8).algorithm == "depthwise"
    assert nn.Conv2d(np.ones((3, 3, 64, 64), np.float32)).algorithm == "winograd-f2x2-3x3"
    assert nn.Linear(np.ones((8, 4), np.float32)).algorithm == "gemm"
    assert nn.MaxPool2d(2).algorithm == nn.AvgPool2d(2).algorithm == "pool"
