"""The activations of the kernels' store (csrc/kernels/activation.h): their
accuracy against float64 formulas, their agreement with PyTorch, and
fusion: an activation fused into every algorithm's store equals, bitwise,
the nn activation layer applied to the unfused result (one implementation
runs both)."""

import numpy as np
import pytest

import fastconv
from fastconv import _conv, nn

ALL = ["relu", "relu6", "sigmoid", "tanh", "silu", "hard_sigmoid", "hard_swish",
       ("leaky_relu", 0.1), ("clip", -1.5, 2.0), ("hard_sigmoid", 0.2, 0.5)]


def exact(activation, x, dtype=np.float64):
    """The activation in float64 (numpy's exp and tanh) of x of `dtype`."""
    name, p = (activation, ()) if isinstance(activation, str) else (activation[0],
                                                                      activation[1:])
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "relu":
            return np.where(x < 0, 0.0, x)
        if name == "relu6":
            return np.clip(x, 0, 6)
        if name == "sigmoid":
            return 1 / (1 + np.exp(-x))
        if name == "tanh":
            return np.tanh(x)
        if name == "silu":
            return x / (1 + np.exp(-x))
        if name == "hard_sigmoid":
            # as defined: clip((x + b / a) * a, 0, 1), a and b / a rounded to
            # the dtype (a * x + b would cancel near -b / a)
            a, b = p or (1 / 6, 0.5)
            a, c = np.longdouble(dtype(a)), np.longdouble(dtype(b / a))
            return np.clip((x.astype(np.longdouble) + c) * a, 0, 1).astype(np.float64)
        if name == "hard_swish":
            return x * np.clip(x + 3, 0, 6) / 6
        if name == "leaky_relu":
            return np.where(x < 0, p[0] * x, x)
        if name == "clip":
            return np.clip(x, p[0], p[1])
    raise AssertionError(name)


def grid(dtype):
    """Values across the whole range: dense near zero, out to overflow,
    subnormals, and the special values."""
    fine = np.linspace(-12, 12, 48001)
    wide = np.concatenate([np.linspace(-800, 800, 16001), np.geomspace(1e-300, 1, 500)])
    x = np.concatenate([fine, wide, -wide, [0.0, -0.0, np.inf, -np.inf]]).astype(dtype)
    tiny = np.finfo(dtype).tiny
    return np.concatenate([x, np.array([tiny / 4, -tiny / 4], dtype)])


@pytest.mark.parametrize("flush", [False, True], ids=["subnormals", "flushed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ALL, ids=str)
def test_within_a_few_ulp_of_the_exact_value(isa, activation, dtype, flush):
    fastconv.set_flush_denormals(flush)
    x = grid(dtype)
    y = nn.Activation(activation)(x)
    ref = exact(activation, x.astype(np.float64), dtype)
    assert y.dtype == dtype
    special = ~np.isfinite(ref)
    assert np.array_equal(np.isnan(y), np.isnan(ref))
    assert np.array_equal(y[special & ~np.isnan(ref)], ref[special & ~np.isnan(ref)])
    # Where the result, or the exp(-|x|) of the sigmoid family, is below
    # the smallest normal number (and so has fewer digits, or none when
    # flushed), the error is at most a thousand times that number; elsewhere
    # a few ulp.
    tiny = np.finfo(dtype).tiny
    with np.errstate(over="ignore"):
        inner = np.exp(-np.abs(x.astype(np.float64)))
    sigmoid_family = activation in ("sigmoid", "silu")
    small = np.isfinite(ref) & ((np.abs(ref) < tiny) | (sigmoid_family & (inner < tiny)))
    normal = np.isfinite(ref) & ~small
    ulp = np.spacing(np.abs(ref[normal]).astype(dtype)).astype(np.float64)
    err = np.abs(y[normal] - ref[normal]) / ulp
    assert err.max() <= 4, (activation, err.max(), x[normal][np.argmax(err)])
    assert np.all(np.abs(y[small] - ref[small]) <= 1000 * tiny)


def test_nan_stays_nan_and_relu_keeps_negative_zero():
    x = np.array([np.nan, -0.0, 0.0, -3.0], np.float32)
    for activation in ALL:
        y = nn.Activation(activation)(x)
        assert np.isnan(y[0]), activation
    assert np.signbit(nn.Activation("relu")(x)[1])


TORCH = {
    "relu": lambda F, t: F.relu(t), "relu6": lambda F, t: F.relu6(t),
    "sigmoid": lambda F, t: F.sigmoid(t), "tanh": lambda F, t: F.tanh(t),
    "silu": lambda F, t: F.silu(t), "hard_sigmoid": lambda F, t: F.hardsigmoid(t),
    "hard_swish": lambda F, t: F.hardswish(t),
    ("leaky_relu", 0.1): lambda F, t: F.leaky_relu(t, 0.1),
    ("clip", -1.5, 2.0): lambda F, t: t.clamp(-1.5, 2.0),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", list(TORCH), ids=str)
def test_agrees_with_torch(activation, dtype):
    torch = pytest.importorskip("torch")
    fastconv.set_flush_denormals(False)  # (as torch computes by default)
    x = grid(dtype)
    theirs = TORCH[activation](torch.nn.functional, torch.from_numpy(x)).numpy()
    ours = nn.Activation(activation)(x)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    fin = np.isfinite(theirs)
    assert np.array_equal(ours[~fin & ~np.isnan(theirs)], theirs[~fin & ~np.isnan(theirs)])
    normal = fin & (np.abs(theirs) >= np.finfo(dtype).tiny)
    ulp = np.spacing(np.abs(theirs[normal])).astype(np.float64)
    assert (np.abs(ours[normal] - theirs[normal]) / ulp).max() <= 8


def _conv_cases(rng, dtype):
    """(name, x, w, bias, options, algorithm) for every convolution algorithm."""
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    return [
        ("igemm", r(2, 7, 6, 5), r(3, 3, 5, 9), r(9), dict(padding=1, stride=2), "igemm"),
        ("gemm", r(2, 7, 6, 20), r(1, 1, 20, 24), r(24), {}, "gemm"),
        ("gemm-in-place", r(1, 3, 3, 16), r(1, 1, 16, 32), r(32), {}, "gemm-in-place"),
        ("dense", r(2, 4, 4, 8), r(4, 4, 8, 12), r(12), {}, "dense"),
        ("winograd", r(1, 12, 12, 16), r(3, 3, 16, 16), r(16), dict(padding=1),
         "winograd-f2x2-3x3"),
        ("depthwise", r(2, 9, 8, 24), r(3, 3, 1, 24), r(24), dict(padding=1, groups=24),
         "depthwise"),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ALL, ids=str)
def test_fused_into_every_algorithm_equals_the_layer_after(isa, activation, dtype):
    rng = np.random.default_rng(1)
    layer = nn.Activation(activation)
    for name, x, w, b, options, algorithm in _conv_cases(rng, dtype):
        fused, ran = _conv.conv2d_algorithm(x, w, b, activation=activation,
                                            algorithm=algorithm, **options)
        plain, ran2 = _conv.conv2d_algorithm(x, w, b, algorithm=algorithm, **options)
        assert ran == ran2 == algorithm
        assert np.array_equal(fused, layer(plain)), name
    a, bm, bias = rng.standard_normal((5, 7)), rng.standard_normal((7, 3)), np.ones(3)
    a, bm, bias = a.astype(dtype), bm.astype(dtype), bias.astype(dtype)
    assert np.array_equal(fastconv.matmul(a, bm, bias, activation=activation),
                          layer(fastconv.matmul(a, bm, bias)))
    lin = nn.Linear(bm, bias, activation=activation)
    assert np.array_equal(lin(a), layer(nn.Linear(bm, bias)(a)))
    conv = nn.Conv2d(np.ones((3, 3, 2, 4), dtype), padding=1, activation=activation)
    xs = rng.standard_normal((1, 5, 5, 2)).astype(dtype)
    assert np.array_equal(conv(xs), layer(nn.Conv2d(np.ones((3, 3, 2, 4), dtype),
                                                    padding=1)(xs)))


def test_named_layers():
    x = np.linspace(-9, 9, 37)
    assert np.array_equal(nn.ReLU6()(x), nn.Activation("relu6")(x))
    assert np.array_equal(nn.Sigmoid()(x), nn.Activation("sigmoid")(x))
    assert np.array_equal(nn.Tanh()(x), nn.Activation("tanh")(x))
    assert np.array_equal(nn.SiLU()(x), nn.Activation("silu")(x))
    assert np.array_equal(nn.HardSwish()(x), nn.Activation("hard_swish")(x))
    assert np.array_equal(nn.HardSigmoid()(x), nn.Activation("hard_sigmoid")(x))
    np.testing.assert_allclose(nn.HardSigmoid(0.2, 0.5)(x), exact(("hard_sigmoid", 0.2, 0.5), x),
                               rtol=1e-15, atol=0)
    assert np.array_equal(nn.LeakyReLU(0.3)(x), np.where(x < 0, 0.3 * x, x))
    assert np.array_equal(nn.Clip(-1, 2)(x), np.clip(x, -1, 2))
    assert repr(nn.LeakyReLU(0.3)) == "LeakyReLU(negative_slope=0.3)"
    assert nn.Tanh().output_shape((3, 4, 5)) == (3, 4, 5)


@pytest.mark.parametrize("activation,exc,words", [
    ("gelu", ValueError, ["activation", "gelu"]),
    (("clip", 2, 1), ValueError, ["low <= high"]),
    (("hard_sigmoid", -0.2, 0.5), ValueError, ["alpha > 0"]),
    (("clip",), ValueError, ["needs its parameters"]),
    (("leaky_relu", 0.1, 0.2), ValueError, ["takes 1 parameters"]),
    (("leaky_relu", float("nan")), ValueError, ["finite"]),
    (("leaky_relu", "x"), ValueError, ["finite"]),
    (3, TypeError, ["activation"]),
    (None, ValueError, ["None"]),
])
def test_bad_activations_are_named(activation, exc, words):
    with pytest.raises(exc) as info:
        nn.Activation(activation)
    for word in words:
        assert word in str(info.value)
    if activation is not None:
        with pytest.raises(exc):
            fastconv.conv2d(np.ones((1, 3, 3, 1), np.float32), np.ones((1, 1, 1, 1), np.float32),
                            activation=activation)


def test_list_activations_and_signed_zero_of_tanh():
    """Review findings: an activation given as a list works in a layer's
    plan cache; tanh(-0.0) is -0.0 (as torch's); a hard_sigmoid alpha that
    float32 cannot hold is refused."""
    x = np.linspace(-9, 9, 19).reshape(1, 19, 1, 1).astype(np.float32)
    conv = nn.Conv2d(np.ones((1, 1, 1, 1), np.float32), activation=["clip", 0, 6])
    assert np.array_equal(conv(x), np.clip(x, 0, 6))
    zeros = np.array([-0.0, 0.0], np.float32)
    assert np.signbit(nn.Tanh()(zeros)).tolist() == [True, False]
    assert np.signbit(nn.Tanh()(zeros.astype(np.float64))).tolist() == [True, False]
    for alpha in (1e-39, 1e-46):
        with pytest.raises(ValueError, match="alpha"):
            nn.Activation(("hard_sigmoid", alpha, 0.5))
