"""fastconv.nn.BatchNorm2d, fold_batchnorm and PReLU against float64
references and torch, and their argument checks.

Tolerances (u the unit roundoff of the dtype, gamma_m = m u / (1 - m u) as
in tests/checks.py; float64 steps count as roundings too, u_64 <= u):

BatchNorm2d: y = x * scale + shift with scale = gamma / sqrt(var + eps)
    (3 roundings in float64, 1 to the dtype) and shift = beta - mean *
    scale; then a product and a sum. A term of x * s goes through 6
    roundings, one of mean * s through 7, beta through 3: with
    M = |x s| + |mean s| + |beta| (s exact), |y - exact| <= gamma_7 M.
    torch computes alpha = w / sqrt(var + eps) and beta - mean * alpha in
    the dtype (eps itself rounded to it): at most 8 roundings a term.
    The float64 reference, (x - mean) / sqrt(var + eps) * gamma + beta,
    rounds each term at most 6 times.
fold_batchnorm: the folded weights w * s take 5 roundings, the folded bias
    (b - mean) * s + beta 7; the convolution adds gamma_{n+2} (checks.py)
    with n = kh * kw * C / groups: gamma_{n+9} M with
    M = sum |x| |w| |s| + |b s| + |mean s| + |beta|. conv then bn:
    gamma_{n+2} for the convolution, 6 more for a term of its result:
    gamma_{n+8} M. The float64 reference (conv in float64, then
    c * s + beta - mean * s): gamma_{n+6}(u_64) M.
PReLU: one product or none: bitwise torch's.
"""

import numpy as np
import pytest

import fastconv
from checks import (MEMORY_KINDS, assert_within_bound, gamma, in_memory, random_array,
                    to_layout)
from fastconv import nn
from reference import conv2d_magnitude, conv2d_ref, nhwc_to_nchw, normalize_padding

try:
    import torch
except ImportError:  # the comparisons with torch are skipped, the rest runs
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]


def nchw_to(x_nchw, layout):
    return x_nchw if layout == "NCHW" else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))


def to_nchw(y, layout):
    return y if layout == "NCHW" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def bn_params(rng, c, dtype):
    gamma_ = random_array(rng, (c,), dtype, -2, 2)
    beta = random_array(rng, (c,), dtype)
    mean = random_array(rng, (c,), dtype)
    var = random_array(rng, (c,), dtype, 0, 3)
    var[0] = 0  # a channel of zero variance: eps alone
    gamma_[-1] = 0  # and one that the layer zeroes
    return gamma_, beta, mean, var


def bn_exact(params, eps):
    """(s, shift, |s|) exactly enough: float64 from the rounded parameters."""
    g, b, m, v = (np.asarray(p, np.float64) for p in params)
    s = g / np.sqrt(v + eps)
    return s, b, m


def torch_bn(params, eps, dtype):
    g, b, m, v = params
    dt = torch.float32 if dtype == np.float32 else torch.float64
    module = torch.nn.BatchNorm2d(len(g), eps=eps).to(dt).eval()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(g))
        module.bias.copy_(torch.from_numpy(b))
        module.running_mean.copy_(torch.from_numpy(m))
        module.running_var.copy_(torch.from_numpy(v))
    return module


def run_torch(module, x_nchw, channels_last=False):
    t = torch.from_numpy(np.ascontiguousarray(x_nchw))
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return np.ascontiguousarray(module(t).numpy())


# --------------------------------------------------------------------------
# BatchNorm2d
# --------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 1, 1, 1), (3, 16, 1, 9), (2, 3, 4, 1)],
                         ids=str)
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_batchnorm_matches_reference_and_torch(rng, shape, dtype, layout, eps):
    n, c, h, w = shape
    params = bn_params(rng, c, dtype) if c > 1 else tuple(
        random_array(rng, (1,), dtype, 0.5, 1) for _ in range(4))
    x = random_array(rng, shape, dtype, -3, 3)
    x.flat[::5] = np.resize(np.array([np.inf, -np.inf, np.nan, -0.0], dtype),
                            x.flat[::5].size)
    layer = nn.BatchNorm2d(*params, eps=eps, layout=layout)
    y = to_nchw(layer(nchw_to(x, layout)), layout)
    assert y.dtype == dtype and y.shape == x.shape
    s, beta, mean = (v.reshape(-1, 1, 1) for v in bn_exact(params, eps))
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        exact = (x64 - mean) / np.sqrt(params[3].astype(np.float64).reshape(-1, 1, 1) + eps) \
            * params[0].astype(np.float64).reshape(-1, 1, 1) + beta
        magnitude = np.abs(x64 * s) + np.abs(mean * s) + np.abs(beta)
    ours = gamma(7, dtype) * magnitude
    assert_within_bound(y, exact, ours + gamma(6, np.float64) * magnitude)
    module = torch_bn(params, eps, dtype)
    for channels_last in (False, True):
        assert_within_bound(y, run_torch(module, x, channels_last),
                            ours + gamma(8, dtype) * magnitude, what="result vs torch")


def test_batchnorm_parameters_and_description(rng):
    params = bn_params(rng, 6, np.float32)
    layer = nn.BatchNorm2d(*params, eps=1e-3, layout="NCHW", name="bn1")
    for key, value in zip(("gamma", "beta", "mean", "var"), params):
        got = getattr(layer, key)
        assert got.dtype == np.float32 and np.array_equal(got, value)
        with pytest.raises(ValueError, match="read-only"):
            got[0] = 1
    params[0][0] = 99  # the layer keeps copies
    assert layer.gamma[0] != 99
    assert (layer.num_features, layer.dtype, layer.eps, layer.layout, layer.name) == (
        6, np.float32, 1e-3, "NCHW", "bn1")
    s64 = layer.gamma.astype(np.float64) / np.sqrt(layer.var.astype(np.float64) + 1e-3)
    assert np.array_equal(layer.scale, s64.astype(np.float32))
    assert np.array_equal(layer.shift, (layer.beta - layer.mean.astype(np.float64) * s64
                                        ).astype(np.float32))
    kwargs, arrays = layer._describe()
    assert kwargs == dict(eps=1e-3, layout="NCHW")  # (save keeps the name apart)
    assert sorted(arrays) == ["beta", "gamma", "mean", "var"]
    again = nn.BatchNorm2d(**arrays, **kwargs)
    x = random_array(rng, (2, 6, 3, 5), np.float32)
    assert np.array_equal(again(x), layer(x))
    assert repr(layer) == "BatchNorm2d(6, eps=0.001, layout='NCHW', dtype=float32, name='bn1')"
    assert layer.output_shape((6, 3, 5)) == (6, 3, 5)
    model = nn.Sequential(nn.Conv2d(np.ones((6, 6, 1, 1), np.float32), layout="NCHW"),
                          layer, nn.PReLU(np.float32(0.1), layout="NCHW"),
                          nn.Upsample(scale_factor=2, layout="NCHW"), layout="NCHW")
    assert model.output_shape((6, 3, 5)) == (6, 6, 10)
    assert model(x).shape == (2, 6, 6, 10)


@pytest.mark.parametrize("kind", MEMORY_KINDS)
def test_batchnorm_any_memory_layout(rng, kind):
    layer = nn.BatchNorm2d(*bn_params(rng, 4, np.float64))
    x = random_array(rng, (2, 3, 5, 4), np.float64)
    assert np.array_equal(layer(in_memory(x, kind)), layer(x))


def _bn_args(**changes):
    c = np.ones(3, np.float32)
    args = dict(gamma=c, beta=c * 0, mean=c * 0, var=c)
    args.update(changes)
    return args


@pytest.mark.parametrize("changes,exc,words", [
    (dict(gamma=np.ones(4, np.float32)), ValueError, ["gamma (4,)", "beta (3,)"]),
    (dict(var=np.ones((3, 1), np.float32)), ValueError, ["var", "1-D"]),
    (dict(mean=np.zeros(3)), TypeError, ["mean float64", "gamma float32"]),
    (dict(beta=np.zeros(3, np.int32)), TypeError, ["beta", "int32"]),
    (dict(gamma=np.ones(0, np.float32), beta=np.ones(0, np.float32),
          mean=np.ones(0, np.float32), var=np.ones(0, np.float32)), ValueError,
     ["at least one channel"]),
    (dict(var=np.array([1, -1, 1], np.float32)), ValueError, ["var must be >= 0",
                                                              "channel 1"]),
    (dict(var=np.array([1, 0, 1], np.float32), eps=0), ValueError, ["var + eps", "channel 1"]),
    (dict(eps=-1e-5), ValueError, ["eps", "-1e-05"]),
    (dict(eps=float("nan")), ValueError, ["eps", "nan"]),
    (dict(eps="1e-5"), TypeError, ["eps", "'1e-5'"]),
    (dict(layout="CHW"), ValueError, ["layout", "CHW"]),
    (dict(name=""), ValueError, ["name", "''"]),
    (dict(name=b"bn"), TypeError, ["name", "b'bn'"]),
])
def test_batchnorm_rejects_bad_arguments(changes, exc, words):
    with pytest.raises(exc) as info:
        nn.BatchNorm2d(**_bn_args(**changes))
    message = str(info.value)
    assert message.startswith("BatchNorm2d: ")
    for word in words:
        assert word in message


def test_batchnorm_rejects_bad_input():
    layer = nn.BatchNorm2d(**_bn_args())
    with pytest.raises(TypeError, match=r"BatchNorm2d: x and the parameters must share one "
                                        r"dtype; got x float64, the parameters float32"):
        layer(np.zeros((1, 2, 2, 3)))
    with pytest.raises(ValueError, match=r"BatchNorm2d: x has 4 channels \(NHWC: shape "
                                         r"\(1, 2, 2, 4\)\); the layer has 3"):
        layer(np.zeros((1, 2, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d: x must be 4-D"):
        layer(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d: num_threads must be >= 1"):
        layer(np.zeros((1, 2, 2, 3), np.float32), num_threads=0)
    with pytest.raises(ValueError, match=r"BatchNorm2d: input shape \(3, 2, 2\) \(NHWC\) has "
                                         r"2 channels; the layer has 3"):
        layer.output_shape((3, 2, 2))


# --------------------------------------------------------------------------
# fold_batchnorm
# --------------------------------------------------------------------------
FOLD_CASES = [
    # (h, w, c, k, kh, kw, stride, padding, dilation, groups)
    (7, 6, 3, 8, 3, 3, 1, 1, 1, 1),
    (9, 8, 8, 12, 3, 3, 2, "same", 1, 4),      # grouped
    (8, 7, 6, 6, 3, 3, 1, 1, 2, 6),            # depthwise, dilated
    (5, 5, 4, 6, 1, 1, 1, 0, 1, 2),            # 1x1 grouped
    (6, 6, 5, 7, 5, 5, (1, 2), ((2, 1), (0, 2)), 1, 1),
    (1, 1, 4, 3, 1, 1, 1, 0, 1, 1),            # one pixel
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", FOLD_CASES, ids=[str(i) for i in range(len(FOLD_CASES))])
def test_fold_batchnorm_equals_conv_then_bn(rng, case, dtype, layout, bias):
    h, w, c, k, kh, kw, stride, padding, dilation, groups = case
    x_nhwc = random_array(rng, (2, h, w, c), dtype)
    w_hwio = random_array(rng, (kh, kw, c // groups, k), dtype)
    b = random_array(rng, (k,), dtype) if bias else None
    params = bn_params(rng, k, dtype)
    x, weight = to_layout(x_nhwc, w_hwio, layout)
    conv = nn.Conv2d(weight, b, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, layout=layout)
    bn = nn.BatchNorm2d(*params, eps=1e-4, layout=layout)
    folded = nn.fold_batchnorm(conv, bn)
    assert isinstance(folded, nn.Conv2d) and folded is not conv
    assert (folded.stride, folded.padding, folded.dilation, folded.groups, folded.layout,
            folded.dtype, folded.activation, folded.kernel_size) == (
        conv.stride, conv.padding, conv.dilation, conv.groups, conv.layout, conv.dtype, None,
        conv.kernel_size)
    assert folded.bias is not None and folded.weight.shape == conv.weight.shape

    pads = normalize_padding(padding, (h, w), (kh, kw), stride, dilation)
    options = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
    s, beta, mean = bn_exact(params, 1e-4)
    exact = conv2d_ref(x_nhwc, w_hwio, b, **options) * s + (beta - mean * s)
    magnitude = (conv2d_magnitude(x_nhwc, w_hwio, b, **options) * np.abs(s)
                 + np.abs(mean * s) + np.abs(beta))
    if layout == "NCHW":
        exact, magnitude = nhwc_to_nchw(exact), nhwc_to_nchw(magnitude)
    n = kh * kw * (c // groups)
    reference = gamma(n + 6, np.float64) * magnitude
    y_folded, y_seq = folded(x), bn(conv(x))
    assert y_folded.dtype == dtype
    assert_within_bound(y_folded, exact, gamma(n + 9, dtype) * magnitude + reference,
                        what="folded")
    assert_within_bound(y_seq, exact, gamma(n + 8, dtype) * magnitude + reference,
                        what="conv then bn")
    assert_within_bound(y_folded, y_seq, (gamma(n + 9, dtype) + gamma(n + 8, dtype))
                        * magnitude, what="folded vs conv then bn")


def test_fold_batchnorm_of_a_float64_bn_into_a_float32_conv(rng):
    """The folding runs in float64 from both layers' parameters and rounds
    once to the conv's dtype."""
    x, w, b = (random_array(rng, shape, np.float32) for shape in [(1, 6, 6, 4),
                                                                   (3, 3, 4, 5), (5,)])
    params = bn_params(rng, 5, np.float64)
    conv = nn.Conv2d(w, b, padding=1)
    folded = nn.fold_batchnorm(conv, nn.BatchNorm2d(*params))
    s, beta, mean = bn_exact(params, 1e-5)
    assert folded.dtype == np.float32
    assert np.array_equal(folded.weight, (w.astype(np.float64) * s).astype(np.float32))
    assert np.array_equal(folded.bias, ((b - mean) * s + beta).astype(np.float32))
    assert folded(x).dtype == np.float32


@requires_torch
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_fold_batchnorm_matches_torch(rng, layout):
    """torch's Conv2d then BatchNorm2d (eval), imported by hand and folded."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(6, 8, 3, padding=1, groups=2),
                                 torch.nn.BatchNorm2d(8))
    module.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics that are not 0 and 1
            module(torch.randn(4, 6, 9, 7) * 2 + 0.5)
    module.eval()
    conv_t, bn_t = module
    weight = conv_t.weight.detach().numpy()  # OIHW
    weight = weight if layout == "NCHW" else np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    conv = nn.Conv2d(weight, conv_t.bias.detach().numpy(), padding=1, groups=2, layout=layout)
    params = tuple(t.detach().numpy() for t in (bn_t.weight, bn_t.bias, bn_t.running_mean,
                                                bn_t.running_var))
    folded = nn.fold_batchnorm(conv, nn.BatchNorm2d(*params, eps=bn_t.eps, layout=layout))
    x = random_array(rng, (2, 6, 9, 7), np.float32)
    y = to_nchw(folded(nchw_to(x, layout)), layout)
    expected = run_torch(module, x)
    s, beta, mean = bn_exact(params, bn_t.eps)
    w_hwio = conv_t.weight.detach().numpy().transpose(2, 3, 1, 0)
    magnitude = nhwc_to_nchw(
        conv2d_magnitude(x.transpose(0, 2, 3, 1), w_hwio, conv_t.bias.detach().numpy(),
                         padding=((1, 1), (1, 1)), groups=2) * np.abs(s)
        + np.abs(mean * s) + np.abs(beta))
    n = 3 * 3 * 3
    # torch: the convolution's gamma_{n+2}, then its BatchNorm's 7 roundings
    assert_within_bound(y, expected, (gamma(n + 9, np.float32) + gamma(n + 9, np.float32))
                        * magnitude)


def test_fold_batchnorm_refuses():
    w = np.ones((3, 3, 2, 4), np.float32)
    bn = nn.BatchNorm2d(*(np.ones(4, np.float32) for _ in range(4)))
    with pytest.raises(TypeError, match=r"fold_batchnorm: conv must be a fastconv.nn.Conv2d; "
                                        r"got Linear"):
        nn.fold_batchnorm(nn.Linear(np.ones((2, 4), np.float32)), bn)
    with pytest.raises(TypeError, match=r"fold_batchnorm: bn must be a fastconv.nn.BatchNorm2d; "
                                        r"got PReLU"):
        nn.fold_batchnorm(nn.Conv2d(w), nn.PReLU(np.float32(0.1)))
    cases = [
        (nn.Conv2d(w, activation="relu"), bn, "applies activation 'relu' before bn"),
        (nn.Conv2d(np.ones((3, 3, 2, 5), np.float32)), bn,
         "conv has 5 output channels but bn has 4"),
        (nn.Conv2d(np.ones((4, 2, 3, 3), np.float32), layout="NCHW"), bn,
         "conv is NCHW but bn is NHWC"),
    ]
    for conv, norm, words in cases:
        with pytest.raises(ValueError) as info:
            nn.fold_batchnorm(conv, norm)
        message = str(info.value)
        assert message.startswith("fold_batchnorm: ") and words in message
        assert f"conv {conv!r}" in message and f"bn {norm!r}" in message


# --------------------------------------------------------------------------
# PReLU
# --------------------------------------------------------------------------
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, -1e-310, 5e-324, -3.0]


def _bits_equal(a, b):
    """Bitwise equal, but any NaN equals any NaN (a NaN's payload is the
    processor's affair)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan = np.isnan(a)
    uint = np.uint32 if a.dtype == np.float32 else np.uint64
    return bool(np.array_equal(nan, np.isnan(b))
                and np.array_equal(a[~nan].view(uint), b[~nan].view(uint)))


@requires_torch
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("slopes", ["per-channel", "one", "scalar"])
def test_prelu_matches_torch_bitwise(rng, slopes, dtype, layout):
    c = 5
    x = random_array(rng, (3, c, 4, 7), dtype, -2, 2)
    x.flat[::3] = np.resize(np.array(SPECIALS, dtype), x.flat[::3].size)
    if slopes == "per-channel":
        weight = np.array([0.25, -0.5, 0.0, 1.5, -0.0], dtype)
    elif slopes == "one":
        weight = np.array([-0.3], dtype)
    else:
        weight = dtype(0.2)
    layer = nn.PReLU(weight, layout=layout)
    y = to_nchw(layer(nchw_to(x, layout)), layout)
    with torch.no_grad():
        expected = torch.nn.functional.prelu(torch.from_numpy(x),
                                             torch.from_numpy(np.atleast_1d(weight))).numpy()
    assert _bits_equal(y, expected)


@requires_torch
@pytest.mark.parametrize("slope", [np.nan, np.inf, -np.inf, 0.0, -0.0])
def test_prelu_special_slopes_match_torch(slope):
    x = np.array(SPECIALS + [2.0, -2.0], np.float64).reshape(1, 1, 1, -1)
    y = nn.PReLU(np.array([slope]))(x)
    with torch.no_grad():
        expected = torch.nn.functional.prelu(torch.from_numpy(x),
                                             torch.tensor([slope], dtype=torch.float64)).numpy()
    assert _bits_equal(y, expected)


def test_prelu_signed_zeros():
    """torch keeps x only where x > 0: both zeros become slope * x."""
    x = np.array([-0.0, 0.0], np.float32).reshape(1, 1, 1, 2)
    assert np.array_equal(np.signbit(nn.PReLU(np.float32(0.25))(x)), [[[[True, False]]]])
    assert np.array_equal(np.signbit(nn.PReLU(np.float32(-0.25))(x)), [[[[False, True]]]])


def test_prelu_parameters_and_description(rng):
    weight = random_array(rng, (4,), np.float64)
    layer = nn.PReLU(weight, layout="NCHW", name="act")
    assert np.array_equal(layer.weight, weight) and layer.weight is not layer.weight
    with pytest.raises(ValueError, match="read-only"):
        layer.weight[0] = 1
    assert (layer.num_parameters, layer.dtype, layer.layout, layer.name) == (
        4, np.float64, "NCHW", "act")
    kwargs, arrays = layer._describe()
    assert kwargs == dict(layout="NCHW") and list(arrays) == ["weight"]
    x = random_array(rng, (2, 4, 3, 3), np.float64)
    assert np.array_equal(nn.PReLU(**arrays, **kwargs)(x), layer(x))
    assert repr(layer) == "PReLU(num_parameters=4, layout='NCHW', dtype=float64, name='act')"
    assert nn.PReLU(0.5).num_parameters == 1 and nn.PReLU(0.5).dtype == np.float64
    assert layer.output_shape((4, 3, 3)) == (4, 3, 3)
    assert nn.PReLU(np.float32(0.5)).output_shape((9, 9, 7)) == (9, 9, 7)
    assert np.array_equal(layer(in_memory(x, "byteswapped")), layer(x))


def test_prelu_rejects_bad_arguments_and_input():
    for weight, exc, pattern in [
        (np.ones((2, 2), np.float32), ValueError, r"PReLU: weight must be a scalar or 1-D"),
        (np.ones(0, np.float32), ValueError, r"PReLU: weight must hold at least one slope"),
        (np.ones(3, np.int64), TypeError, r"PReLU: weight must have dtype float32 or float64"),
        ("0.25", TypeError, r"PReLU: weight must have dtype float32 or float64; got <U4"),
    ]:
        with pytest.raises(exc, match=pattern):
            nn.PReLU(weight)
    with pytest.raises(ValueError, match=r"PReLU: layout must be 'NHWC' or 'NCHW'; got 'NC'"):
        nn.PReLU(0.1, layout="NC")
    with pytest.raises(TypeError, match=r"PReLU: name must be None or a non-empty str; got 1"):
        nn.PReLU(0.1, name=1)
    layer = nn.PReLU(np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"PReLU: x and weight must share one dtype; got x "
                                        r"float64, weight float32"):
        layer(np.zeros((1, 2, 2, 3)))
    with pytest.raises(ValueError, match=r"PReLU: x has 2 channels \(NHWC: shape "
                                         r"\(1, 2, 2, 2\)\); the layer has 3"):
        layer(np.zeros((1, 2, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"PReLU: x must be 4-D \(N, H, W, C\)"):
        layer(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"PReLU: input shape \(2, 2, 4\) \(NHWC\) has 4 "
                                         r"channels; the layer has 3"):
        layer.output_shape((2, 2, 4))


def test_exported():
    for name in ("Upsample", "BatchNorm2d", "PReLU", "fold_batchnorm"):
        assert name in nn.__all__ and hasattr(fastconv.nn, name)
