"""fastconv.conv_transpose2d and nn.ConvTranspose2d against an independent
float64 scatter reference (every term x[iy] * w[ky] added where it lands),
PyTorch's conv_transpose2d, and TensorFlow's conv2d_transpose rules
(tests/tf_reference.py, itself checked against TensorFlow).

The operator runs a stride-1 transposed convolution as the direct
convolution of the flipped kernel and a strided one as one sub-kernel
convolution per phase of the output ("igemm"); the cases below cover both,
including phases no tap reaches (stride above the kernel), dilations
sharing a factor with the stride, and paddings past the kernel's reach.
"""

import numpy as np
import pytest

import fastconv
from fastconv import nn
from checks import assert_close_to_other_impl, assert_close_to_reference, assert_within_bound
from test_winograd_f4 import f4_bound
from tf_reference import tf_conv2d_transpose


def scatter_reference(x, w, bias, stride, pads, out_hw, dilation, groups):
    """x (N, C, H, W), w (C, K/groups, kh, kw) (PyTorch's), pads ((top,
    bottom), (left, right)) cropped from the full output, out_hw the result's
    size (rows past the full output get only the bias): float64 NCHW."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W = x.shape
    _, kg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    (pt, _), (pl, _) = pads
    Ho, Wo = out_hw
    cg = C // groups
    full_h = max((H - 1) * sh + dh * (kh - 1) + 1, pt + Ho)
    full_w = max((W - 1) * sw + dw * (kw - 1) + 1, pl + Wo)
    full = np.zeros((N, kg * groups, full_h, full_w))
    for g in range(groups):
        xg = x[:, g * cg:(g + 1) * cg]
        for ky in range(kh):
            for kx in range(kw):
                contrib = np.einsum("nchw,ck->nkhw", xg, w[g * cg:(g + 1) * cg, :, ky, kx])
                full[:, g * kg:(g + 1) * kg, ky * dh:ky * dh + (H - 1) * sh + 1:sh,
                     kx * dw:kx * dw + (W - 1) * sw + 1:sw] += contrib
    y = full[:, :, pt:pt + Ho, pl:pl + Wo]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)[None, :, None, None]
    return y


def to_nhwc(x_nchw, w_torch):
    return x_nchw.transpose(0, 2, 3, 1), w_torch.transpose(2, 3, 1, 0)


def random_case(rng):
    """A random transposed convolution: its arrays and options."""
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, kg = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    sh, sw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    dh, dw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    H, W = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    pads = tuple(tuple(int(rng.integers(0, (k - 1) * d + 2)) for _ in range(2))
                 for k, d in ((kh, dh), (kw, dw)))
    op = (int(rng.integers(0, max(sh, dh))), int(rng.integers(0, max(sw, dw))))
    return dict(groups=groups, cg=cg, kg=kg, k=(kh, kw), stride=(sh, sw), dilation=(dh, dw),
                hw=(H, W), pads=pads, output_padding=op, n=int(rng.integers(1, 3)))


def out_size(case):
    (H, W), (kh, kw) = case["hw"], case["k"]
    (sh, sw), (dh, dw) = case["stride"], case["dilation"]
    (pt, pb), (pl, pr) = case["pads"]
    oph, opw = case["output_padding"]
    return ((H - 1) * sh + dh * (kh - 1) + 1 - pt - pb + oph,
            (W - 1) * sw + dw * (kw - 1) + 1 - pl - pr + opw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(40))
def test_random_cases_match_the_scatter_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    case = random_case(rng)
    while min(out_size(case)) < 1:
        case = random_case(rng)
    C, K = case["cg"] * case["groups"], case["kg"] * case["groups"]
    x = rng.standard_normal((case["n"], C) + case["hw"]).astype(dtype)
    w = rng.standard_normal((C, case["kg"]) + case["k"]).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    opts = dict(stride=case["stride"], padding=case["pads"], dilation=case["dilation"],
                groups=case["groups"], output_padding=case["output_padding"])
    expected = scatter_reference(x, w, b, case["stride"], case["pads"], out_size(case),
                                 case["dilation"], case["groups"])
    magnitude = scatter_reference(np.abs(x), np.abs(w), np.abs(b), case["stride"],
                                  case["pads"], out_size(case), case["dilation"],
                                  case["groups"])
    terms = case["cg"] * case["k"][0] * case["k"][1]
    y = fastconv.conv_transpose2d(x, w, b, layout="NCHW", **opts)
    assert_close_to_reference(y, expected, magnitude, terms, dtype)
    xn, wn = to_nhwc(x, w)
    ys = [fastconv.conv_transpose2d(xn, wn, b, num_threads=t, **opts) for t in (1, 2)]
    assert np.array_equal(ys[0], ys[1])  # bitwise, whatever the thread count
    assert np.array_equal(ys[0], y.transpose(0, 2, 3, 1))  # one computation, two layouts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(12))
def test_random_cases_match_torch(seed, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(100 + seed)
    case = random_case(rng)
    # PyTorch pads symmetrically
    case["pads"] = tuple((p[0], p[0]) for p in case["pads"])
    while min(out_size(case)) < 1:
        case = random_case(rng)
        case["pads"] = tuple((p[0], p[0]) for p in case["pads"])
    C, K = case["cg"] * case["groups"], case["kg"] * case["groups"]
    x = rng.standard_normal((case["n"], C) + case["hw"]).astype(dtype)
    w = rng.standard_normal((C, case["kg"]) + case["k"]).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    padding = (case["pads"][0][0], case["pads"][1][0])
    theirs = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=case["stride"],
        padding=padding, output_padding=case["output_padding"], groups=case["groups"],
        dilation=case["dilation"]).numpy()
    ours = fastconv.conv_transpose2d(x, w, b, stride=case["stride"], padding=padding,
                                     output_padding=case["output_padding"],
                                     groups=case["groups"], dilation=case["dilation"],
                                     layout="NCHW")
    magnitude = scatter_reference(np.abs(x), np.abs(w), np.abs(b), case["stride"],
                                  case["pads"], out_size(case), case["dilation"],
                                  case["groups"])
    assert_close_to_other_impl(ours, theirs, magnitude,
                               case["cg"] * case["k"][0] * case["k"][1], dtype)


@pytest.mark.parametrize("k,s", [(4, 2), (16, 8), (32, 16), (64, 32), (3, 2), (2, 3), (5, 1)])
def test_same_and_output_shape_follow_tensorflow(k, s):
    """TF's conv2d_transpose(..., output_shape, padding="SAME"/"VALID") for every
    output size the input allows, odd sizes and uneven padding included."""
    rng = np.random.default_rng(k * 100 + s)
    for n in (1, 2, 3):
        for padding in ("SAME", "VALID"):
            span = k
            lo, hi = ((n - 1) * s + 1, n * s) if padding == "SAME" else \
                ((n - 1) * s + span, n * s + span - 1)
            for size in sorted({lo, hi, (lo + hi) // 2}):
                x = rng.standard_normal((1, n, n + 1, 2))
                w = rng.standard_normal((k, k, 3, 2))  # (kh, kw, K, C)
                n2 = n + 1
                lo2, hi2 = ((n2 - 1) * s + 1, n2 * s) if padding == "SAME" else \
                    ((n2 - 1) * s + span, n2 * s + span - 1)
                size2 = hi2 if size == hi else lo2
                expected = tf_conv2d_transpose(x, w, (1, size, size2, 3), s, padding)
                got = fastconv.conv_transpose2d(x, w, stride=s, padding=padding.lower(),
                                                output_size=(size, size2))
                np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_same_default_size_is_input_times_stride():
    x = np.ones((1, 5, 7, 2), np.float32)
    w = nn.bilinear_kernel(2, 4)
    assert fastconv.conv_transpose2d(x, w, stride=2, padding="same").shape == (1, 10, 14, 2)
    # VALID: (H - 1) * s + k, as Keras gives it
    assert fastconv.conv_transpose2d(x, w, stride=2, padding="valid").shape == (1, 12, 16, 2)


def test_output_size_picks_output_padding_as_torch_does():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 5, 6))
    w = rng.standard_normal((3, 4, 3, 3))
    module = torch.nn.ConvTranspose2d(3, 4, 3, stride=3, padding=1, bias=False).double()
    module.weight.data = torch.from_numpy(w)
    for size in [(13, 16), (14, 17), (15, 18), (13, 18)]:
        theirs = module(torch.from_numpy(x), output_size=size).detach().numpy()
        ours = fastconv.conv_transpose2d(x, w, stride=3, padding=1, output_size=size,
                                         layout="NCHW")
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    for size in [(12, 16), (16, 16)]:  # torch refuses these too
        with pytest.raises(ValueError, match="output_size"):
            fastconv.conv_transpose2d(x, w, stride=3, padding=1, output_size=size,
                                      layout="NCHW")


def test_non_finite_weights_reach_only_the_outputs_they_touch_as_in_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 5))
    x[0, 0, 1, 2] = 0.0
    w = rng.standard_normal((2, 3, 3, 3))
    w[0, 1, 0, 2] = np.inf
    w[1, 2, 1, 1] = np.nan
    for stride in (1, 2, 3):
        theirs = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w),
                                                      stride=stride, padding=1).numpy()
        ours = fastconv.conv_transpose2d(x, w, stride=stride, padding=1, layout="NCHW")
        assert np.array_equal(np.isnan(ours), np.isnan(theirs))
        assert np.array_equal(np.isinf(ours), np.isinf(theirs))
        fin = np.isfinite(theirs)
        np.testing.assert_allclose(ours[fin], theirs[fin], rtol=1e-12, atol=1e-12)


ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh", "silu", "hard_sigmoid", "hard_swish",
               ("leaky_relu", 0.2), ("clip", -0.5, 0.25)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("stride", [1, 2])
def test_fused_activation_equals_the_layer_applied_after(activation, stride):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 5, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    fused = fastconv.conv_transpose2d(x, w, b, stride=stride, padding=1,
                                      activation=activation)
    plain = fastconv.conv_transpose2d(x, w, b, stride=stride, padding=1)
    after = nn.Activation(activation)(plain)
    assert np.array_equal(fused, after)


def test_layer_packs_once_and_matches_the_function():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 4, 3, 6)).astype(np.float32)  # (kh, kw, K, C)
    b = rng.standard_normal(3).astype(np.float32)
    layer = nn.ConvTranspose2d(w, b, stride=2, padding="same", activation="relu")
    assert np.array_equal(layer.weight, w) and np.array_equal(layer.bias, b)
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (6, 3, (4, 4))
    assert layer.algorithm == "igemm"
    x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32)
    like = np.zeros((2, 9, 13, 1), np.float32)
    y = layer([x, like])
    assert y.shape == (2, 9, 13, 3)
    assert np.array_equal(y, fastconv.conv_transpose2d(x, w, b, stride=2, padding="same",
                                                       activation="relu",
                                                       output_size=(9, 13)))
    assert layer.output_shape([(5, 7, 6), (9, 13, 1)]) == (9, 13, 3)
    assert layer.output_shape((5, 7, 6)) == (10, 14, 3)
    assert np.array_equal(layer(x, output_size=(9, 13)), y)
    nchw = nn.ConvTranspose2d(w.transpose(3, 2, 0, 1), b, stride=2, padding="same",
                              activation="relu", layout="NCHW")
    assert np.array_equal(nchw.weight, w.transpose(3, 2, 0, 1))
    assert np.array_equal(nchw(x.transpose(0, 3, 1, 2)), layer(x).transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="input channels"):
        layer.output_shape((5, 7, 4))


def test_stride_one_runs_the_direct_algorithms():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    layer = nn.ConvTranspose2d(w, padding=1)
    # The stride-1 transposed convolution is the direct one of the flipped
    # kernel (in and out channels swapped), padded by k - 1 - p: the same
    # algorithm, the same result bit for bit, within that algorithm's bound.
    flipped = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))
    direct = fastconv.Conv2d(flipped, padding=1)
    for size, algorithm in ((14, "winograd-f2x2-3x3"), (20, "winograd-f4x4-3x3")):
        x = rng.standard_normal((1, size, size, 64)).astype(np.float32)
        y = layer(x)
        assert layer.plan(x.shape)["algorithm"] == algorithm
        np.testing.assert_array_equal(y, direct(x))
        expected = scatter_reference(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1), None,
                                     (1, 1), ((1, 1), (1, 1)), (size, size), (1, 1), 1)
        if algorithm == "winograd-f2x2-3x3":
            np.testing.assert_allclose(y.transpose(0, 3, 1, 2), expected, rtol=2e-4, atol=2e-4)
        else:
            bound = f4_bound(x, flipped, None, ((1, 1), (1, 1)), np.float32)
            assert_within_bound(y, expected.transpose(0, 2, 3, 1), bound)
    depthwise = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    y = fastconv.conv_transpose2d(x[..., :8], depthwise.transpose(2, 3, 1, 0), groups=8,
                                  padding=1)
    expected = scatter_reference(x[..., :8].transpose(0, 3, 1, 2), depthwise, None, (1, 1),
                                 ((1, 1), (1, 1)), (20, 20), (1, 1), 8)
    np.testing.assert_allclose(y.transpose(0, 3, 1, 2), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(output_padding=2, stride=2), "output_padding must be smaller"),
    (dict(output_padding=1, stride=2, output_size=(9, 9)), "not both"),
    (dict(padding="same", output_padding=1, stride=2), "output_padding goes with"),
    (dict(padding="same", stride=2, output_size=(12, 8)), "output_size"),
    (dict(padding="full"), "padding must be"),
    (dict(padding=(1, 2, 3)), "padding must be"),
    (dict(groups=4), "groups=4 must divide the input channels C=6"),
    (dict(stride=0), "stride"),
    (dict(activation="gelu"), "activation must be"),
    (dict(activation=("clip", 1.0, 0.0)), "low <= high"),
    (dict(activation=("leaky_relu",)), None),
    (dict(padding=9), "the result would be empty"),
])
def test_bad_arguments_are_named(kwargs, match):
    x = np.ones((1, 4, 4, 6), np.float32)
    w = np.ones((3, 3, 2, 6), np.float32)
    if match is None:  # accepted (the default slope)
        fastconv.conv_transpose2d(x, w, **kwargs)
        return
    with pytest.raises((ValueError, TypeError), match=match):
        fastconv.conv_transpose2d(x, w, **kwargs)


def test_wrong_channels_and_bias():
    x = np.ones((1, 4, 4, 5), np.float32)
    w = np.ones((3, 3, 2, 6), np.float32)
    with pytest.raises(ValueError, match="channels"):
        fastconv.conv_transpose2d(x, w)
    with pytest.raises(ValueError, match="bias"):
        fastconv.conv_transpose2d(np.ones((1, 4, 4, 6), np.float32), w,
                                  np.ones(3, np.float32))
    with pytest.raises(ValueError, match="weight"):
        fastconv.conv_transpose2d(x, np.ones((3, 3, 2), np.float32))


def test_huge_stride_with_a_small_output_is_quick():
    """A stride far beyond the output: only the phases with outputs run."""
    x = np.ones((1, 1, 1, 2), np.float32)
    w = np.ones((3, 3, 1, 2), np.float32)
    y = fastconv.conv_transpose2d(x, w, stride=2**40)
    assert y.shape == (1, 3, 3, 1) and np.all(y == 2)


def test_a_padding_near_int64_max_with_a_stride_to_match():
    """The phases' offsets are computed past INT64_MAX (a review's finding):
    an input of 3 rows, stride 2**62, padding 2**63 - 1 at the top leaves
    rows 2**63 - 1 and 2**63 of the full output, the first reached by no
    input, the second by input row 2."""
    x = np.arange(1, 4, dtype=np.float64).reshape(1, 3, 1, 1)
    w = np.full((1, 1, 1, 1), 10.0)
    y = fastconv.conv_transpose2d(x, w, stride=(2**62, 1), padding=((2**63 - 1, 0), (0, 0)))
    assert y.shape == (1, 2, 1, 1)
    # full row 2**63 - 1 = 1 * 2**62 + (2**62 - 1): no input lands there;
    # full row 2**63 = 2 * 2**62: input row 2
    assert y[0, :, 0, 0].tolist() == [0.0, 30.0]


def test_a_stride_near_int64_max():
    """Phase sizes do not overflow with a stride near INT64_MAX (review
    finding: rows left unwritten)."""
    x = np.full((1, 1, 1, 1), 2.0, np.float32)
    w = np.ones((2, 1, 1, 1), np.float32)
    y = fastconv.conv_transpose2d(x, w, stride=(2**63 - 1, 1))
    assert y.shape == (1, 2, 1, 1) and np.all(y == 2)
    layer = nn.ConvTranspose2d(w, stride=(2**63 - 1, 1))
    assert layer.plan((1, 1, 1, 1))["macs"] == 2


def test_a_list_batch_of_two_is_a_batch_not_x_and_like():
    w = np.ones((4, 4, 1, 1))
    up = nn.ConvTranspose2d(w, stride=2, padding="same")
    batch = np.ones((2, 3, 3, 1))
    assert up(batch.tolist()).shape == (2, 6, 6, 1)
    assert up([batch[0], batch[1]]).shape == (2, 6, 6, 1)  # same shapes: a batch
    assert up([batch, np.zeros((2, 5, 5, 7))]).shape == (2, 5, 5, 1)  # [x, like]
