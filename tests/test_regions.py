"""nn.regions.RegionPlan: a region of a model's output, computed from the
input window it needs, is bitwise the whole-image pass's there.

Random networks (strides, dilations, every padding form, ceil_mode pools,
average pools both ways, transposed convolutions, resizes, padding and
cropping layers, skip connections) over images of sizes that are multiples
of nothing, cut into random tiles down to one output pixel. Two controls
show the equality can fail: a window one pixel short of the halo, and
Winograd's tiles not aligned to the whole map's.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastconv import nn
from fastconv.nn import regions
from fastconv.nn.regions import RegionPlan


def _weights(rng, *shape):
    fan_in = int(np.prod(shape[:-1])) or 1
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _spatial_layer(draw, rng, c):
    """A random spatial layer for a map of c channels, and its output channels."""
    kind = draw(st.sampled_from(["conv", "conv", "conv", "maxpool", "avgpool", "transposed",
                                 "upsample", "zeropad", "crop", "depthwise"]))
    if kind == "conv":
        k = draw(st.integers(1, 5))
        s = draw(st.integers(1, 3))
        d = draw(st.integers(1, 2))
        padding = draw(st.one_of(st.just("same"), st.just("valid"), st.integers(0, 3),
                                 st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                           st.tuples(st.integers(0, 3), st.integers(0, 3)))))
        k_out = draw(st.integers(1, 4))
        act = draw(st.sampled_from([None, "relu", "sigmoid"]))
        return nn.Conv2d(_weights(rng, k, k, c, k_out), _weights(rng, k_out), stride=s,
                         dilation=d, padding=padding, activation=act), k_out
    if kind == "depthwise":
        return nn.Conv2d(_weights(rng, 3, 3, 1, c), padding=1, groups=c,
                         stride=draw(st.integers(1, 2))), c
    if kind in ("maxpool", "avgpool"):
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, k // 2))
        ceil = draw(st.booleans())
        if kind == "maxpool":
            return nn.MaxPool2d(k, s, padding=p, ceil_mode=ceil), c
        return nn.AvgPool2d(k, s, padding=p, ceil_mode=ceil,
                            count_include_pad=draw(st.booleans())), c
    if kind == "transposed":
        k = draw(st.integers(1, 5))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, (k - 1) // 2))
        op = draw(st.integers(0, max(s, 1) - 1))
        k_out = draw(st.integers(1, 3))
        return nn.ConvTranspose2d(_weights(rng, k, k, k_out, c), _weights(rng, k_out), stride=s,
                                  padding=p, output_padding=op), k_out
    if kind == "upsample":
        mode = draw(st.sampled_from(["nearest", "bilinear"]))
        return nn.Upsample(scale_factor=draw(st.sampled_from([2, 3, 1.5])), mode=mode), c
    amounts = draw(st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                             st.tuples(st.integers(0, 3), st.integers(0, 3))))
    return (nn.ZeroPad2d(amounts) if kind == "zeropad" else nn.Cropping2d(amounts)), c


@st.composite
def networks(draw):
    """(model, image): a random chain of spatial layers with element-wise
    layers, a residual Add and a Concatenate here and there."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c = draw(st.integers(1, 3))
    x = nn.Input((None, None, c))
    t = x
    for _ in range(draw(st.integers(1, 5))):
        layer, c = _spatial_layer(draw, rng, c)
        t = layer(t)
        extra = draw(st.sampled_from(["none", "relu", "batchnorm", "residual", "concat"]))
        if extra == "relu":
            t = nn.ReLU()(t)
        elif extra == "batchnorm":
            t = nn.BatchNorm2d(*(rng.random(c).astype(np.float32) + 0.5 for _ in range(4)))(t)
        elif extra == "residual":
            branch = nn.Conv2d(_weights(rng, 3, 3, c, c), padding=1)(t)
            t = nn.Add()([t, branch])
        elif extra == "concat":
            branch = nn.MaxPool2d(3, 1, padding=1)(t)
            t = nn.Concatenate()([t, branch])
            c *= 2
    h = draw(st.integers(9, 70))
    w = draw(st.integers(9, 70))
    image = rng.standard_normal((h, w, x.shape[2])).astype(np.float32)
    return nn.Model(x, t), image


def _tiles(draw_sizes, n):
    """Cut [0, n) into spans of the given sizes (cycled)."""
    spans, a, k = [], 0, 0
    while a < n:
        b = min(n, a + draw_sizes[k % len(draw_sizes)])
        spans.append((a, b))
        a, k = b, k + 1
    return spans


def _assemble(plan, image, rows, cols, short=0):
    """The output put together tile by tile; with short=1 each window lacks
    its last row and column of halo where it is not at the image's border
    (zeros there instead), as a tiler one pixel short would."""
    H, W = image.shape[:2]
    out = np.empty(plan.output_shape, np.float32)
    for r in rows:
        for c in cols:
            (a0, a1), (b0, b1) = plan.input_region((r, c))
            window = image[a0:a1, b0:b1].copy()
            if short:
                if a0 > 0:
                    window[:short] = 0
                if a1 < H:
                    window[-short:] = 0
                if b0 > 0:
                    window[:, :short] = 0
                if b1 < W:
                    window[:, -short:] = 0
            out[r[0]:r[1], c[0]:c[1]] = plan.run(window, (r, c))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(), st.lists(st.integers(1, 40), min_size=1, max_size=4),
       st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_random_networks_tiled_equal_whole_image_bitwise(net, row_sizes, col_sizes):
    model, image = net
    try:
        full = model(image[None])[0]
    except ValueError:
        assume(False)  # (the layers drawn shrink this image to nothing)
    plan = RegionPlan(model, image.shape)
    assert plan.output_shape == full.shape
    rows = _tiles(row_sizes, full.shape[0])
    cols = _tiles(col_sizes, full.shape[1])
    np.testing.assert_array_equal(_assemble(plan, image, rows, cols), full)


def _deep_model(rng, layout="NHWC"):
    """Convolutions of every algorithm (igemm, Winograd F(4x4) and F(2x2),
    depthwise, the 1x1 GEMM with a folded BatchNorm), pools and FCN-style
    upsampling with a skip connection."""
    def cw(kh, kw, ci, co):
        a = _weights(rng, kh, kw, ci, co)
        return a if layout == "NHWC" else np.ascontiguousarray(a.transpose(3, 2, 0, 1))

    def tw(kh, kw, co, ci):
        a = _weights(rng, kh, kw, co, ci)  # (kh, kw, K, C) -> torch's (C, K, kh, kw)
        return a if layout == "NHWC" else np.ascontiguousarray(a.transpose(3, 2, 0, 1))
    C = 64
    L = dict(layout=layout)
    x = nn.Input((None, None, 3) if layout == "NHWC" else (3, None, None))
    a = nn.Conv2d(cw(3, 3, 3, C), padding=1, activation="relu", **L)(x)
    b = nn.Conv2d(cw(3, 3, C, C), padding=1, activation="relu", **L)(a)
    p1 = nn.MaxPool2d(2, **L)(b)
    c = nn.Conv2d(cw(3, 3, 1, C), padding=1, groups=C, **L)(p1)
    d = nn.Conv2d(cw(1, 1, C, C), **L)(c)
    e = nn.BatchNorm2d(*(rng.random(C).astype(np.float32) + 0.5 for _ in range(4)), **L)(d)
    f = nn.ReLU()(e)
    g = nn.Conv2d(cw(3, 3, C, C), padding=1, **L)(f)
    p2 = nn.MaxPool2d(2, ceil_mode=True, **L)(g)
    s = nn.Conv2d(cw(1, 1, C, 4), **L)(p2)
    up = nn.ConvTranspose2d(tw(4, 4, 4, 4), stride=2, padding=1, **L)(s)
    skip = nn.Conv2d(cw(1, 1, C, 4), **L)(g)
    return nn.Model(x, nn.Add()([up, skip]), layout=layout)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_every_algorithm_tiled_equal_whole_image_bitwise(layout):
    rng = np.random.default_rng(3)
    model = _deep_model(rng, layout)
    H, W = 148, 132  # (even after two pools: the skip and the upsampled map match)
    image = rng.standard_normal((H, W, 3)).astype(np.float32)
    x = image if layout == "NHWC" else np.ascontiguousarray(image.transpose(2, 0, 1))
    full = model(x[None])[0]
    plan = RegionPlan(model, x.shape)
    algorithms = {step.rule.algorithm for step in plan.steps if hasattr(step.rule, "algorithm")}
    assert {"igemm", "depthwise", "gemm"} <= algorithms
    assert algorithms & {"winograd-f4x4-3x3", "winograd-f2x2-3x3"}
    hax = 0 if layout == "NHWC" else 1
    for size in (1, 7, 30, 64):
        rows = _tiles([size], full.shape[hax])
        cols = _tiles([size + 3], full.shape[hax + 1])
        for r in rows[:3] + rows[-2:]:
            for c in cols[:3] + cols[-2:]:
                (a0, a1), (b0, b1) = plan.input_region((r, c))
                window = x[a0:a1, b0:b1] if layout == "NHWC" else x[:, a0:a1, b0:b1]
                got = plan.run(window, (r, c))
                want = (full[r[0]:r[1], c[0]:c[1]] if layout == "NHWC"
                        else full[:, r[0]:r[1], c[0]:c[1]])
                np.testing.assert_array_equal(got, want)


def test_a_halo_one_pixel_short_breaks_the_equality():
    # The control of the tests above: the same assembly with each window one
    # pixel short of its halo inside the image differs from the whole pass.
    rng = np.random.default_rng(5)
    model = _deep_model(rng)
    image = rng.standard_normal((68, 60, 3)).astype(np.float32)
    full = model(image[None])[0]
    plan = RegionPlan(model, image.shape)
    rows, cols = _tiles([20], full.shape[0]), _tiles([17], full.shape[1])
    np.testing.assert_array_equal(_assemble(plan, image, rows, cols), full)
    short = _assemble(plan, image, rows, cols, short=1)
    assert not np.array_equal(short, full)
    # (and only near the tiles' inner edges: the halo is what is missing)
    assert np.array_equal(short[:5, :5], full[:5, :5])


def test_winograd_tiles_must_align_with_the_whole_maps(monkeypatch):
    # Without the alignment of Winograd's output tiles, regions differ from the
    # whole pass by rounding (within Winograd's error), so it is what makes
    # the result bitwise.
    rng = np.random.default_rng(7)
    C = 64
    model = nn.Sequential(nn.Conv2d(_weights(rng, 3, 3, 3, C), padding=1, activation="relu"),
                          nn.Conv2d(_weights(rng, 3, 3, C, C), padding=1))
    image = rng.standard_normal((90, 90, 3)).astype(np.float32)
    full = model(image[None])[0]
    plan = RegionPlan(model, image.shape)
    assert plan.steps[1].rule.algorithm.startswith("winograd")
    rows = cols = _tiles([7], 90)
    np.testing.assert_array_equal(_assemble(plan, image, rows, cols), full)
    monkeypatch.setattr(regions, "_WINOGRAD_TILE", {})
    unaligned = _assemble(RegionPlan(model, image.shape), image, rows, cols)
    assert not np.array_equal(unaligned, full)
    np.testing.assert_allclose(unaligned, full, rtol=0, atol=1e-4 * np.abs(full).max())


def test_nested_models_and_fcn8s_run_by_region():
    rng = np.random.default_rng(9)
    inner = nn.Sequential(nn.Conv2d(_weights(rng, 3, 3, 2, 2), padding=1), nn.ReLU())
    x = nn.Input((None, None, 2))
    y = nn.MaxPool2d(2)(inner(x))
    model = nn.Model(x, inner(y))  # (the nested model applied twice)
    image = rng.standard_normal((33, 31, 2)).astype(np.float32)
    full = model(image[None])[0]
    plan = RegionPlan(model, image.shape)
    np.testing.assert_array_equal(
        _assemble(plan, image, _tiles([5], full.shape[0]), _tiles([3], full.shape[1])), full)


@pytest.mark.parametrize("layer, why", [
    (lambda rng: nn.GlobalAvgPool2d(), "averages the whole map"),
    (lambda rng: nn.Softmax(axis=1), "height or width"),
    (lambda rng: nn.Concatenate(axis=1), "spatial axis"),
])
def test_layers_that_read_the_whole_map_are_refused(layer, why):
    rng = np.random.default_rng(0)
    x = nn.Input((None, None, 2))
    t = nn.Conv2d(_weights(rng, 3, 3, 2, 2), padding=1)(x)
    made = layer(rng)
    t = made([t, t]) if isinstance(made, nn.Concatenate) else made(t)
    with pytest.raises(ValueError, match=why):
        RegionPlan(nn.Model(x, t), (16, 16, 2))


def test_a_classifier_head_is_refused_with_the_fix():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(_weights(rng, 3, 3, 1, 2)), nn.Flatten())
    with pytest.raises(ValueError, match="Flatten.*to_fully_convolutional"):
        RegionPlan(model, (4, 4, 1))
    x1, x2 = nn.Input((None, None, 1)), nn.Input((None, None, 1))
    with pytest.raises(ValueError, match="one input and one output"):
        RegionPlan(nn.Model([x1, x2], nn.Add()([x1, x2])), (4, 4, 1))
    x = nn.Input((8, 8, 1))
    with pytest.raises(ValueError, match="cannot take an input of shape"):
        RegionPlan(nn.Model(x, nn.ReLU()(x)), (9, 9, 1))


def test_an_unaligned_window_runs():
    # (a window unpickled in a dask worker may be unaligned)
    rng = np.random.default_rng(11)
    model = nn.Sequential(nn.Conv2d(_weights(rng, 3, 3, 2, 4), padding=1), nn.MaxPool2d(2))
    image = rng.standard_normal((20, 18, 2)).astype(np.float32)
    raw = np.empty(image.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(image.shape)
    unaligned[:] = image
    assert not unaligned.flags.aligned
    plan = RegionPlan(model, image.shape)
    full = model(image[None])[0]
    region = ((0, full.shape[0]), (0, full.shape[1]))
    np.testing.assert_array_equal(plan.run(unaligned, region), full)
