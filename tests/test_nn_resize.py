"""fastconv.nn.Upsample against torch.nn.functional.interpolate and ONNX
Resize (onnxruntime), and its argument checks.

Tolerances. "nearest" copies pixels: it must equal torch bitwise. For
"bilinear" the source indices and weights of each axis must be bitwise
torch's (test_bilinear_weights_are_torchs); the interpolation
    t = x[i0] * w0 + x[i1] * w1   along the width, then the height,
rounds each product and sum, so with the magnitude
    M = sum_ij |x_ij| * wh_i * ww_j
a result is within gamma_4 * M of the exact value computed from the same
weights (each term goes through at most 4 roundings: two products, two
sums). torch's generic kernel evaluates the same expression with fused
multiply-adds (fewer roundings), its channels-last kernel as one 4-term sum
with weights wh_i * ww_j rounded (at most 5 roundings a term): two
implementations differ by at most the sum of their bounds.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from checks import MEMORY_KINDS, assert_within_bound, gamma, in_memory, random_array
from fastconv import nn
from fastconv.nn import resize

try:
    import torch
except ImportError:  # the comparisons with torch are skipped, the rest runs
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]

# (H, W, resize arguments): odd sizes, one-pixel inputs and outputs,
# integer and non-integer factors, per-axis pairs, up and down.
CASES = [
    (5, 7, dict(scale_factor=2)),
    (5, 7, dict(scale_factor=3)),
    (6, 9, dict(scale_factor=0.5)),
    (7, 5, dict(scale_factor=(1.7, 0.6))),
    (9, 4, dict(scale_factor=2.5)),
    (9, 7, dict(scale_factor=1 / 3)),
    (5, 5, dict(scale_factor=1.1)),          # output size unchanged, factor not 1
    (5, 6, dict(scale_factor=(2.1, 1.05))),  # height doubled by a factor not 2
    (2, 3, dict(scale_factor=(0.5, 1 / 3))),  # down to one pixel
    (1, 1, dict(scale_factor=3)),            # one input pixel
    (1, 6, dict(size=(4, 1))),
    (8, 3, dict(size=(3, 8))),
    (13, 17, dict(size=(29, 5))),
    (4, 4, dict(size=4)),                    # identity
    (3, 10, dict(size=(7, 23))),
]
CASE_IDS = [f"{h}x{w}-{next(iter(kw.values()))}" for h, w, kw in CASES]
MODES = [("nearest", None), ("bilinear", False), ("bilinear", True)]
MODE_IDS = ["nearest", "bilinear", "bilinear-corners"]


def to_layout(x_nchw, layout):
    return x_nchw if layout == "NCHW" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))


def to_nchw(y, layout):
    return y if layout == "NCHW" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def torch_resize(x_nchw, mode, align_corners, kwargs, channels_last=False):
    t = torch.from_numpy(np.ascontiguousarray(x_nchw))
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = torch.nn.functional.interpolate(t, mode=mode, align_corners=align_corners, **kwargs)
    return np.ascontiguousarray(y.numpy())


def upsample(x_nchw, mode, align_corners, kwargs, layout):
    layer = nn.Upsample(mode=mode, align_corners=align_corners, layout=layout, **kwargs)
    y = layer(to_layout(x_nchw, layout))
    assert y.dtype == x_nchw.dtype
    assert y.shape[1:] == layer.output_shape(to_layout(x_nchw, layout).shape[1:])
    return to_nchw(y, layout)


def out_size(h, w, kwargs):
    if "size" in kwargs:
        s = kwargs["size"]
        return (s, s) if isinstance(s, int) else tuple(s)
    sf = kwargs["scale_factor"]
    sh, sw = (sf, sf) if not isinstance(sf, tuple) else sf
    return math.floor(h * sh), math.floor(w * sw)


def axis_plans(h, w, kwargs, align_corners, dtype):
    """The layer's (i0, i1, w0, w1) for each axis (bitwise torch's: see
    test_bilinear_weights_are_torchs)."""
    ho, wo = out_size(h, w, kwargs)
    sf = kwargs.get("scale_factor")
    sh, sw = (None, None) if sf is None else ((sf, sf) if not isinstance(sf, tuple) else sf)
    name = np.dtype(dtype).name
    return (resize._axis_plan("bilinear", h, ho, None if sh is None else float(sh),
                              align_corners, name),
            resize._axis_plan("bilinear", w, wo, None if sw is None else float(sw),
                              align_corners, name))


def separable(x_nchw, hplan, wplan):
    """sum of the four weighted taps, with the arithmetic of x's dtype (an
    object array of Fractions computes it exactly)."""
    hi0, hi1, hw0, hw1 = hplan
    wi0, wi1, ww0, ww1 = wplan
    t = x_nchw[..., wi0] * ww0 + x_nchw[..., wi1] * ww1
    return t[:, :, hi0, :] * hw0[:, None] + t[:, :, hi1, :] * hw1[:, None]


def exact_and_magnitude(x_nchw, hplan, wplan):
    """The exact value of the weighted sum (rounded once to float64) and M."""
    frac = np.frompyfunc(Fraction, 1, 1)
    plans = [tuple(frac(a.astype(np.float64)) if a.dtype.kind == "f" else a for a in p)
             for p in (hplan, wplan)]
    exact = separable(frac(x_nchw.astype(np.float64)), *plans).astype(np.float64)
    magnitude = separable(np.abs(x_nchw).astype(np.float64),
                          *[tuple(a.astype(np.float64) if a.dtype.kind == "f" else a for a in p)
                            for p in (hplan, wplan)])
    return exact, magnitude


def bilinear_bound(magnitude, dtype, roundings=4):
    return gamma(roundings, dtype) * magnitude


# --------------------------------------------------------------------------
# nearest: bitwise
# --------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_nearest_matches_torch_bitwise(rng, case, dtype, layout):
    h, w, kwargs = case
    x = random_array(rng, (2, 5, h, w), dtype)
    y = upsample(x, "nearest", None, kwargs, layout)
    # torch's channels-last kernel computes the source index in float32 for
    # both dtypes, as the layer does; its contiguous kernel does too for
    # float32 (for float64 see test_nearest_float64_selects_float32s_pixels).
    assert np.array_equal(y, torch_resize(x, "nearest", None, kwargs, channels_last=True))
    if dtype == np.float32:
        assert np.array_equal(y, torch_resize(x, "nearest", None, kwargs))


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nearest_matches_torch_on_random_sizes(rng, dtype):
    """Index arithmetic over many sizes and factors (an input holding each
    pixel's position shows which pixel every output took)."""
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        if rng.random() < 0.5:
            kwargs = dict(size=tuple(int(v) for v in rng.integers(1, 90, 2)))
        else:
            kwargs = dict(scale_factor=tuple(float(rng.choice(
                [rng.uniform(0.2, 5), rng.integers(1, 6), 1 / rng.integers(1, 6),
                 rng.integers(1, 9) / rng.integers(1, 9)])) for _ in range(2)))
            if min(out_size(h, w, kwargs)) < 1:
                continue
        x = np.arange(4 * h * w, dtype=dtype).reshape(1, 4, h, w)
        y = upsample(x, "nearest", None, kwargs, "NCHW")
        expected = torch_resize(x, "nearest", None, kwargs, channels_last=True)
        assert np.array_equal(y, expected), (h, w, kwargs)


@requires_torch
def test_nearest_float64_selects_float32s_pixels():
    """The source index is computed in float32 for both dtypes, as torch's
    nearest_idx does: 30 -> 194 at output 97 is 97 * 30 / 194 = 15 exactly,
    which float32 rounds to 14.999999: pixel 14, as torch takes for float32
    (torch's contiguous float64 kernel takes 15 there)."""
    x32 = np.arange(30, dtype=np.float32).reshape(1, 1, 1, 30)
    t32 = torch_resize(x32, "nearest", None, dict(size=(1, 194)))[0, 0, 0]
    assert t32[97] == 14
    for dtype in DTYPES:
        y = upsample(x32.astype(dtype), "nearest", None, dict(size=(1, 194)), "NCHW")[0, 0, 0]
        assert np.array_equal(y, t32)


# --------------------------------------------------------------------------
# bilinear: the weights bitwise, the interpolation within its bound
# --------------------------------------------------------------------------
def _fused_multiply_add_build():
    return torch.backends.cpu.get_cpu_capability() != "DEFAULT"


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_weights_are_torchs(rng, dtype, align_corners):
    """Input channel k holds a one at column k (and one row): output channel
    k, column j, is then exactly the weight of input column k in output j,
    in torch (x * w + 0 * w' is exact) as in the layer."""
    if not align_corners and not _fused_multiply_add_build():
        pytest.skip("torch's DEFAULT-capability build rounds scale * (dst + 0.5) before "
                    "subtracting 0.5; the layer follows its AVX2/AVX-512 builds' fused "
                    "multiply-add")
    for _ in range(120):
        n_in = int(rng.integers(1, 40))
        if rng.random() < 0.5:
            kwargs = dict(size=(1, int(rng.integers(1, 90))))
        else:
            kwargs = dict(scale_factor=(1.0, float(rng.choice(
                [rng.uniform(0.2, 5), rng.integers(1, 6), 1 / rng.integers(1, 6),
                 rng.integers(1, 9) / rng.integers(1, 9)]))))
            if out_size(1, n_in, kwargs)[1] < 1:
                continue
        x = np.eye(n_in, dtype=dtype).reshape(1, n_in, 1, n_in)
        for layout in ("NCHW", "NHWC"):
            y = upsample(x, "bilinear", align_corners, kwargs, layout)
            expected = torch_resize(x, "bilinear", align_corners, kwargs)
            assert np.array_equal(y, expected), (n_in, kwargs, layout)


@requires_torch
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bilinear_within_bound_of_exact_and_torch(rng, case, align_corners, dtype, layout):
    h, w, kwargs = case
    x = random_array(rng, (2, 3, h, w), dtype)
    y = upsample(x, "bilinear", align_corners, kwargs, layout)
    hplan, wplan = axis_plans(h, w, kwargs, align_corners, dtype)
    exact, magnitude = exact_and_magnitude(x, hplan, wplan)
    ours = bilinear_bound(magnitude, dtype)
    # (+ the rounding of the exact value to float64)
    assert_within_bound(y, exact, ours + np.finfo(np.float64).eps / 2 * np.abs(exact))
    if align_corners or _fused_multiply_add_build():
        assert_within_bound(y, torch_resize(x, "bilinear", align_corners, kwargs),
                            2 * ours, what="result vs torch")
        x4 = random_array(rng, (1, 5, h, w), dtype)  # channels-last kernel: C > 3
        hplan, wplan = axis_plans(h, w, kwargs, align_corners, dtype)
        magnitude4 = exact_and_magnitude(x4, hplan, wplan)[1]
        assert_within_bound(upsample(x4, "bilinear", align_corners, kwargs, layout),
                            torch_resize(x4, "bilinear", align_corners, kwargs,
                                         channels_last=True),
                            bilinear_bound(magnitude4, dtype)
                            + bilinear_bound(magnitude4, dtype, roundings=5),
                            what="result vs torch channels-last")


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bilinear_matches_torch_on_random_sizes(rng, dtype):
    if not _fused_multiply_add_build():
        pytest.skip("torch's DEFAULT-capability build computes other weights (see above)")
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        align_corners = bool(rng.integers(0, 2))
        if rng.random() < 0.5:
            kwargs = dict(size=tuple(int(v) for v in rng.integers(1, 60, 2)))
        else:
            kwargs = dict(scale_factor=tuple(float(rng.uniform(0.2, 4)) for _ in range(2)))
            if min(out_size(h, w, kwargs)) < 1:
                continue
        x = random_array(rng, (1, 2, h, w), dtype)
        hplan, wplan = axis_plans(h, w, kwargs, align_corners, dtype)
        magnitude = separable(np.abs(x).astype(np.float64), hplan, wplan)
        for layout in ("NHWC", "NCHW"):
            assert_within_bound(upsample(x, "bilinear", align_corners, kwargs, layout),
                                torch_resize(x, "bilinear", align_corners, kwargs),
                                2 * bilinear_bound(magnitude, dtype), what=f"{h}x{w} {kwargs}")


@requires_torch
@pytest.mark.parametrize("mode,align_corners", MODES, ids=MODE_IDS)
def test_nan_and_inf_propagate_as_in_torch(mode, align_corners):
    """An infinity times a zero weight is NaN, also along an axis whose size
    is unchanged (torch still computes x * 1 + x * 0 there)."""
    x = np.zeros((1, 2, 4, 5), np.float32)
    x[0, 0, 1, 1], x[0, 0, 2, 3], x[0, 1, 3, 0] = np.inf, np.nan, -np.inf
    for kwargs in (dict(size=(4, 9)), dict(size=(7, 5)), dict(size=(4, 5)),
                   dict(scale_factor=(0.5, 1.5))):
        expected = torch_resize(x, mode, align_corners, kwargs)
        for layout in ("NHWC", "NCHW"):
            y = upsample(x, mode, align_corners, kwargs, layout)
            assert np.array_equal(np.isnan(y), np.isnan(expected)), kwargs
            finite = ~np.isnan(expected)
            assert np.array_equal(y[finite], expected[finite]), kwargs


@pytest.mark.parametrize("kind", MEMORY_KINDS)
@pytest.mark.parametrize("mode,align_corners", MODES, ids=MODE_IDS)
def test_any_memory_layout_gives_the_same_result(rng, kind, mode, align_corners):
    x = random_array(rng, (2, 6, 5, 3), np.float32)
    layer = nn.Upsample(scale_factor=(1.5, 2.5), mode=mode, align_corners=align_corners)
    assert np.array_equal(layer(in_memory(x, kind)), layer(x))


# --------------------------------------------------------------------------
# ONNX Resize
# --------------------------------------------------------------------------
def _resize_session(mode, transform, use_sizes):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    attrs = dict(mode=mode, coordinate_transformation_mode=transform)
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    inputs = ["X", "", "", "sizes"] if use_sizes else ["X", "", "scales"]
    extra = (helper.make_tensor_value_info("sizes", TensorProto.INT64, [4]) if use_sizes
             else helper.make_tensor_value_info("scales", TensorProto.FLOAT, [4]))
    graph = helper.make_graph(
        [helper.make_node("Resize", inputs, ["Y"], **attrs)], "resize",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "C", "H", "W"]), extra],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", "C", "Ho", "Wo"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_nearest_matches_onnx_asymmetric_floor_for_sizes(rng):
    """ONNX Runtime computes dst / (out / in), the layer (as torch)
    dst * (in / out): they take the same pixel except where the exact
    coordinate dst * in / out is an integer k, which either may round below
    (k - 1). An input holding each pixel's position shows which one each
    output took."""
    session = _resize_session("nearest", "asymmetric", use_sizes=True)
    differing = 0
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        ho, wo = (int(v) for v in rng.integers(1, 90, 2))
        x = np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w)
        y = nn.Upsample(size=(ho, wo), layout="NCHW")(x)[0, 0].astype(np.int64)
        ref = session.run(None, {"X": x, "sizes": np.array([1, 1, ho, wo], np.int64)}
                          )[0][0, 0].astype(np.int64)
        assert ref.shape == y.shape
        for got, expected, n, m, axis in ((y // w, ref // w, h, ho, 0),
                                          (y % w, ref % w, w, wo, 1)):
            dst = np.indices(got.shape)[axis]
            integer = (dst * n) % m == 0  # the exact coordinate is an integer
            k = dst * n // m
            same = got == expected
            differing += int((~same).sum())
            assert np.all(same | (integer & (np.minimum(got, expected) == k - 1)
                                  & (np.maximum(got, expected) == k))), (h, w, ho, wo)
    assert differing < 0.01 * 200 * 90 * 90


def test_nearest_matches_onnx_for_exact_scales(rng):
    """Integer and power-of-two factors: the product in * s is exact and both
    coordinate formulas agree: bitwise the same."""
    session = _resize_session("nearest", "asymmetric", use_sizes=False)
    for sh, sw in [(2, 3), (4, 0.5), (0.25, 2), (3, 3), (0.5, 0.5)]:
        for h, w in [(8, 8), (5, 12), (12, 4)]:
            x = random_array(rng, (1, 2, h, w), np.float32)
            ref = session.run(None, {"X": x, "scales": np.array([1, 1, sh, sw], np.float32)})[0]
            y = nn.Upsample(scale_factor=(sh, sw), layout="NCHW")(x)
            assert np.array_equal(y, ref), (sh, sw, h, w)


@pytest.mark.parametrize("transform,align_corners", [
    ("half_pixel", False), ("pytorch_half_pixel", False), ("align_corners", True)])
@pytest.mark.parametrize("use_sizes", [True, False], ids=["sizes", "scales"])
def test_bilinear_matches_onnx_linear(rng, transform, align_corners, use_sizes):
    """ONNX Runtime's source coordinate (dst + 0.5) / (out / in) - 0.5 (or
    dst * (in - 1) / (out - 1)) is rounded differently from the layer's
    (torch's), by at most 3u and 2u times the coordinate (u = 2**-24), and
    a bilinear map changes by at most max|x| * 2 per unit of a coordinate
    (the two taps differ by at most 2 max|x|, for either axis). On top,
    each result is within its arithmetic bound of the exact value: gamma_4
    (the layer) and gamma_7 (ONNX Runtime: its weights are products of the
    axes' weights, rounded, in a 4-term sum, and 1 - w is rounded too)."""
    session = _resize_session("linear", transform, use_sizes)
    u = np.finfo(np.float32).eps / 2
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        if use_sizes:
            ho, wo = (int(v) for v in rng.integers(1, 60, 2))
            kwargs = dict(size=(ho, wo))
            feed = dict(sizes=np.array([1, 2, ho, wo], np.int64))
        else:
            # factors whose products with the sizes are exact, so that both
            # compute the same output size (ONNX Runtime rounds h * s in
            # float32, torch in float64) and the same identity axes
            sh, sw = (float(rng.choice([0.25, 0.5, 2, 3, 4, 1.5])) for _ in range(2))
            kwargs = dict(scale_factor=(sh, sw))
            feed = dict(scales=np.array([1, 1, sh, sw], np.float32))
            ho, wo = out_size(h, w, kwargs)
            if min(ho, wo) < 1:
                continue
        if transform == "pytorch_half_pixel" and min(ho, wo) == 1:
            continue  # pytorch_half_pixel takes pixel 0 for a one-pixel output
        x = random_array(rng, (1, 2, h, w), np.float32)
        ref = session.run(None, dict(X=x, **feed))[0]
        y = nn.Upsample(mode="bilinear", align_corners=align_corners, layout="NCHW",
                        **kwargs)(x)
        assert y.shape == ref.shape
        xmax = float(np.abs(x).max())
        coordinates = (5 * u * h + 5 * u * w) * 2 * xmax
        assert_within_bound(y, ref, coordinates + (gamma(4, np.float32) + gamma(7, np.float32))
                            * xmax, what=f"{h}x{w} {kwargs}")


@requires_torch
def test_pytorch_half_pixel_differs_only_for_one_pixel_outputs():
    """torch (and the layer) put a one-pixel output's source at in / 2 - 0.5,
    ONNX's half_pixel too; pytorch_half_pixel takes pixel 0."""
    session = _resize_session("linear", "pytorch_half_pixel", use_sizes=True)
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
    ref = session.run(None, dict(X=x, sizes=np.array([1, 1, 1, 1], np.int64)))[0]
    y = nn.Upsample(size=1, mode="bilinear", layout="NCHW")(x)
    assert ref.ravel()[0] == 0 and y.ravel()[0] == 1.5
    assert y.ravel()[0] == torch_resize(x, "bilinear", False, dict(size=1)).ravel()[0]


# --------------------------------------------------------------------------
# The layer: shapes, description, arguments
# --------------------------------------------------------------------------
def test_output_shape_describe_and_repr():
    up = nn.Upsample(scale_factor=(1.5, 2), mode="bilinear", layout="NCHW", name="up1")
    assert up.output_shape((3, 5, 7)) == (3, 7, 14)
    assert nn.Upsample(size=(4, 6)).output_shape((9, 9, 2)) == (4, 6, 2)
    params, arrays = up._describe()
    assert params == dict(size=None, scale_factor=(1.5, 2.0), mode="bilinear",
                          align_corners=False, layout="NCHW")  # (save keeps the name apart)
    assert arrays == {}
    again = nn.Upsample(**params)
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 7))
    assert np.array_equal(again(x), up(x))
    assert repr(up) == ("Upsample(scale_factor=(1.5, 2.0), mode='bilinear', "
                        "align_corners=False, layout='NCHW', name='up1')")
    assert repr(nn.Upsample(size=3)) == "Upsample(size=(3, 3), mode='nearest', layout='NHWC')"
    assert nn.Upsample(size=3).name is None
    model = nn.Sequential(nn.Upsample(scale_factor=2), nn.ReLU())
    assert model.output_shape((3, 4, 2)) == (6, 8, 2)
    assert model(np.ones((1, 3, 4, 2), np.float32)).shape == (1, 6, 8, 2)


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(), ValueError, ["exactly one of size and scale_factor"]),
    (dict(size=2, scale_factor=2), ValueError, ["exactly one of size and scale_factor"]),
    (dict(size=0), ValueError, ["size", "0"]),
    (dict(size=(2, -1)), ValueError, ["size", "-1"]),
    (dict(size=2.5), TypeError, ["size", "2.5"]),
    (dict(scale_factor=0), ValueError, ["scale_factor", "0"]),
    (dict(scale_factor=-2.0), ValueError, ["scale_factor", "-2.0"]),
    (dict(scale_factor=float("inf")), ValueError, ["scale_factor", "inf"]),
    (dict(scale_factor=(2, 3, 4)), TypeError, ["scale_factor", "(2, 3, 4)"]),
    (dict(scale_factor="2"), TypeError, ["scale_factor", "'2'"]),
    (dict(scale_factor=True), TypeError, ["scale_factor", "True"]),
    (dict(scale_factor=2, mode="bicubic"), ValueError, ["mode", "'bicubic'"]),
    (dict(scale_factor=2, mode="Nearest"), ValueError, ["mode", "'Nearest'"]),
    (dict(scale_factor=2, align_corners=False), ValueError,
     ["align_corners", "mode 'nearest'"]),
    (dict(scale_factor=2, mode="bilinear", align_corners=1), TypeError,
     ["align_corners", "1"]),
    (dict(scale_factor=2, layout="HWC"), ValueError, ["layout", "HWC"]),
    (dict(scale_factor=2, name=""), ValueError, ["name", "''"]),
    (dict(scale_factor=2, name=3), TypeError, ["name", "3"]),
])
def test_rejects_bad_arguments(kwargs, exc, words):
    with pytest.raises(exc) as info:
        nn.Upsample(**kwargs)
    message = str(info.value)
    assert message.startswith("Upsample: ")
    for word in words:
        assert word in message


def test_rejects_bad_input():
    up = nn.Upsample(scale_factor=0.5)
    with pytest.raises(ValueError, match=r"Upsample: x must be 4-D \(N, H, W, C\); "
                                         r"got shape \(4, 4, 3\)"):
        up(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(TypeError, match=r"Upsample: x must have dtype float32 or float64; "
                                        r"got int64"):
        up(np.zeros((1, 4, 4, 3), np.int64))
    with pytest.raises(ValueError, match=r"Upsample: scale_factor \(0.5, 0.5\) makes an "
                                         r"input of 1x4 an empty output \(0x2\)"):
        up(np.zeros((1, 1, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"Upsample: x has an empty spatial side \(0x4\)"):
        nn.Upsample(size=2)(np.zeros((1, 0, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"Upsample: num_threads must be >= 1; got 0"):
        up(np.zeros((1, 4, 4, 3), np.float32), num_threads=0)
    with pytest.raises(ValueError, match=r"Upsample: input must be a 3-D map"):
        up.output_shape((4, 4))
    with pytest.raises(ValueError, match=r"Upsample: the result would have shape "
                                         r"\(1, 4611686018427387904, 2, 1\)"):
        nn.Upsample(size=(2**62, 2))(np.zeros((1, 1, 1, 1), np.float32))


# --------------------------------------------------------------------------
# The two fused multiply-adds the coordinates need, against exact arithmetic
# --------------------------------------------------------------------------
def _round_to_float32(q):
    """The float32 nearest to the Fraction q (ties to even)."""
    f = np.float32(float(q))  # within one float32 step of the answer
    best = None
    for c in (np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))):
        d = abs(Fraction(float(c)) - q)
        even = (np.array(c).view(np.uint32) & 1) == 0
        if best is None or d < best[0] or (d == best[0] and even):
            best = (d, c)
    return best[1]


def test_fma32_is_rounded_once(rng):
    a = (rng.uniform(0.5, 1, 3000) * 2.0 ** rng.integers(-20, 20, 3000)).astype(np.float32)
    b = rng.uniform(-64, 64, 3000).astype(np.float32)
    c = rng.uniform(-4, 4, 3000).astype(np.float32)
    c[::3] = -(a[::3] * b[::3])  # a * b - round(a * b): the product's rounding error
    c[1::3] = -(a[1::3] * b[1::3]) * np.float32(1 + 2**-23)
    # Exact values just off a float32 midpoint by less than float64 resolves:
    # a * b = 2**-24 - 2**-54 and c = 1 + 2**-23 give the midpoint
    # 1 + 2**-23 + 2**-24 less 2**-54, which float64 rounds onto the
    # midpoint (and float32 then to even, up): rounded once, it goes down.
    hard_a, hard_b, hard_c = [], [], []
    for k in range(-6, 7, 3):
        for sign in (1, -1):
            hard_a.append(sign * 2.0 ** (k - 24) * (1 + 2**-15))
            hard_b.append(1 - 2**-15)
            hard_c.append(sign * 2.0 ** k * (1 + 2**-23))
            hard_a.append(sign * 2.0 ** (k - 24) * (1 + 2**-15))
            hard_b.append(-(1 - 2**-15))
            hard_c.append(sign * 2.0 ** k * (1 + 2**-22 + 2**-23))
    a, b, c = (np.concatenate([v, np.array(h, np.float32)])
               for v, h in ((a, hard_a), (b, hard_b), (c, hard_c)))
    got = resize._fma32(a, b, c)
    assert got.dtype == np.float32
    naive = (a.astype(np.float64) * b + c).astype(np.float32)
    assert not np.array_equal(naive[-len(hard_a):], got[-len(hard_a):])  # they are hard
    for ai, bi, ci, g in zip(a, b, c, got):
        exact = Fraction(float(ai)) * Fraction(float(bi)) + Fraction(float(ci))
        assert g == _round_to_float32(exact), (ai, bi, ci)


def test_half_pixel_coordinate_in_float64_is_rounded_once(rng):
    for scale in [1 / 3, 0.7, 2.5, 30 / 194, float(rng.uniform(0.01, 10)), 1e-7]:
        got = resize._half_pixel64(scale, 500)
        exact = [float(Fraction(scale) * (Fraction(2 * k + 1, 2)) - Fraction(1, 2))
                 for k in range(500)]
        assert got.dtype == np.float64
        assert np.array_equal(got, np.array(exact)), scale
