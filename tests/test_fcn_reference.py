"""Tests of the references themselves: tests/tf_reference.py (TensorFlow's
conv2d / max_pool / conv2d_transpose in NumPy) and tests/fcn_reference.py
(the FCN-32s/16s/8s forward pass of MarvinTeichmann/tensorflow-fcn in torch).

They are what makes the references trustworthy before fastconv is checked
against them: each op is compared with torch where torch expresses the same
computation (with TF's padding made explicit), with the adjoint identity that
defines a transposed convolution, with hand derivations, and with golden
values computed by real TensorFlow (tests/data/tf_reference_golden.npz, made
by tests/data/make_tf_fixture.py; TensorFlow is not needed here).
No fastconv import.
"""

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the comparisons and fcn_reference need it
F = torch.nn.functional

from fcn_reference import (  # noqa: E402
    CONV_LAYERS,
    VGG_MEAN,
    bias_reshape,
    bilinear_kernel,
    fcn_forward,
    preprocess_rgb,
    random_vgg_params,
    summary_reshape,
)
from tf_reference import (  # noqa: E402
    conv2d_transpose_output_ok,
    tf_conv2d,
    tf_conv2d_transpose,
    tf_max_pool,
    tf_padding,
)

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "tf_reference_golden.npz")


def _same_pads(n, k, s):
    """TF SAME for one axis, written out again for the torch comparisons:
    (pad_before, pad_after), the odd one at the end."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, (total + 1) // 2


def _nchw(x):
    return torch.as_tensor(np.ascontiguousarray(np.moveaxis(x, 3, 1)))


def _nhwc(t):
    return np.moveaxis(t.numpy(), 1, 3)


def _close(actual, expected, rel=1e-12):
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-300) if expected.size else 1.0
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert err <= rel * scale, f"max error {err:.3g} > {rel:.1g} * {scale:.3g}"


# ==========================================================================
# tf_reference: the padding rule, conv2d, max_pool
# ==========================================================================
@pytest.mark.parametrize("size, k, s, padding, expected", [
    (5, 4, 2, "SAME", (3, 1, 2)),     # odd total: the extra one at the end
    (6, 4, 2, "SAME", (3, 1, 1)),
    (7, 1, 4, "SAME", (2, 0, 0)),     # (2-1)*4 + 1 - 7 < 0: clamped to 0
    (37, 2, 2, "SAME", (19, 0, 1)),   # FCN's 2x2/2 pool of an odd map
    (224, 7, 1, "SAME", (224, 3, 3)),  # fc6 as a 7x7 SAME conv
    (7, 2, 1, "SAME", (7, 0, 1)),     # an even SAME kernel pads bottom/right
    (7, 3, 2, "VALID", (3, 0, 0)),
    (4, 4, 3, "VALID", (1, 0, 0)),
])
def test_tf_padding_table(size, k, s, padding, expected):
    assert tf_padding(size, k, s, padding) == expected


def test_tf_padding_valid_too_small_raises():
    with pytest.raises(ValueError):
        tf_padding(3, 4, 1, "VALID")
    with pytest.raises(ValueError):
        tf_padding(3, 3, 1, "FULL")


def test_tf_conv2d_vs_torch(rng):
    """tf_conv2d == torch conv2d of the input padded by TF's uneven rule."""
    cases = 0
    for padding in ("SAME", "VALID"):
        for s in (1, 2, 3):
            for kh, kw in ((1, 1), (2, 2), (3, 3), (4, 4), (2, 3), (5, 1)):
                for h, w in ((1, 2), (4, 3), (5, 7), (8, 6)):
                    if padding == "VALID" and (h < kh or w < kw):
                        continue
                    x = rng.normal(size=(2, h, w, 3))
                    wt = rng.normal(size=(kh, kw, 3, 2))
                    if padding == "SAME":
                        (t, b), (l, r) = _same_pads(h, kh, s), _same_pads(w, kw, s)
                    else:
                        t = b = l = r = 0
                    xt = F.pad(_nchw(x), (l, r, t, b))
                    expected = _nhwc(F.conv2d(xt, torch.as_tensor(wt).permute(3, 2, 0, 1), stride=s))
                    _close(tf_conv2d(x, wt, s, padding), expected)
                    cases += 1
    assert cases > 100


def test_tf_max_pool_vs_torch(rng):
    """SAME pads with -inf: with all-negative inputs a zero pad would win."""
    for padding in ("SAME", "VALID"):
        for s in (1, 2, 3):
            for k in (1, 2, 3):
                for h, w in ((1, 1), (3, 2), (5, 7), (6, 4)):
                    if padding == "VALID" and (h < k or w < k):
                        continue
                    x = -np.abs(rng.normal(size=(1, h, w, 2))) - 1.0
                    if padding == "SAME":
                        (t, b), (l, r) = _same_pads(h, k, s), _same_pads(w, k, s)
                    else:
                        t = b = l = r = 0
                    xt = F.pad(_nchw(x), (l, r, t, b), value=-math.inf)
                    expected = _nhwc(F.max_pool2d(xt, k, s))
                    ours = tf_max_pool(x, k, s, padding)
                    assert np.array_equal(ours, expected), (padding, s, k, h, w)
                    assert np.all(ours <= -1.0)


def test_tf_max_pool_fcn_odd_size():
    """FCN's 2x2/2 SAME pool of a 5x3 map: the last row/column pools alone."""
    x = np.arange(15, dtype=np.float64).reshape(1, 5, 3, 1) - 100.0
    out = tf_max_pool(x, [1, 2, 2, 1], [1, 2, 2, 1], "SAME")[0, :, :, 0]
    expected = np.array([[4, 5], [10, 11], [13, 14]], np.float64) - 100.0
    assert np.array_equal(out, expected)


# ==========================================================================
# tf_reference: conv2d_transpose
# ==========================================================================
def _torch_transpose(x, w, out_hw, s, pads):
    """torch conv_transpose2d with TF's uneven padding: torch pads (crops)
    symmetrically by pad_before; the remaining pad_after - pad_before rows are
    cropped off the end, or, when the scatter is shorter than the output
    (the clamped case), output_padding appends the zero rows."""
    (t, _), (l, _) = pads
    xt, wt = _nchw(x), torch.as_tensor(w).permute(3, 2, 0, 1)
    y = F.conv_transpose2d(xt, wt, stride=s, padding=(t, l))
    extra = (max(out_hw[0] - y.shape[2], 0), max(out_hw[1] - y.shape[3], 0))
    if any(extra):
        y = F.conv_transpose2d(xt, wt, stride=s, padding=(t, l), output_padding=extra)
    return _nhwc(y[:, :, :out_hw[0], :out_hw[1]])


def _transpose_cases():
    """(in_hw, out_hw, (kh, kw), s, padding): every consistent pair of a grid."""
    cases = []
    for padding in ("SAME", "VALID"):
        for s in (1, 2, 3, 4):
            for kh, kw in ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (3, 2)):
                for ho, wo in ((1, 3), (4, 5), (7, 6), (9, 8)):
                    ins = []
                    for size, k in ((ho, kh), (wo, kw)):
                        ok = [i for i in range(1, 10)
                              if conv2d_transpose_output_ok(i, size, k, s, padding)]
                        ins.append(ok[0] if ok else None)
                    if None not in ins:
                        cases.append((tuple(ins), (ho, wo), (kh, kw), s, padding))
    return cases


def test_conv2d_transpose_vs_torch_symmetric(rng):
    """Where TF's padding is symmetric (even total, not clamped), TF's
    conv2d_transpose is torch's conv_transpose2d(padding=total/2) as is."""
    count = 0
    for (hi, wi), (ho, wo), (kh, kw), s, padding in _transpose_cases():
        if padding != "SAME":
            continue
        th = (hi - 1) * s + kh - ho
        tw = (wi - 1) * s + kw - wo
        if th < 0 or tw < 0 or th % 2 or tw % 2:
            continue
        x = rng.normal(size=(2, hi, wi, 3))
        w = rng.normal(size=(kh, kw, 2, 3))
        y = F.conv_transpose2d(_nchw(x), torch.as_tensor(w).permute(3, 2, 0, 1),
                               stride=s, padding=(th // 2, tw // 2))
        assert y.shape[2:] == (ho, wo)
        _close(tf_conv2d_transpose(x, w, (2, ho, wo, 2), s, "SAME"), _nhwc(y))
        count += 1
    assert count >= 15, count


def test_conv2d_transpose_vs_torch_uneven(rng):
    """Every case, including odd totals and clamped ones, via
    _torch_transpose (torch with the TF padding made explicit)."""
    for (hi, wi), (ho, wo), (kh, kw), s, padding in _transpose_cases():
        x = rng.normal(size=(1, hi, wi, 2))
        w = rng.normal(size=(kh, kw, 3, 2))
        if padding == "SAME":
            pads = (_same_pads(ho, kh, s), _same_pads(wo, kw, s))
        else:
            pads = ((0, 0), (0, 0))
        _close(tf_conv2d_transpose(x, w, (1, ho, wo, 3), s, padding),
               _torch_transpose(x, w, (ho, wo), s, pads))


def test_conv2d_transpose_is_adjoint_of_conv2d(rng):
    """<conv2d(y, w), x> == <y, conv2d_transpose(x, w, y.shape)>: the
    definition of TF's conv2d_transpose (the gradient of conv2d with respect to
    its input), with the same filter array, for SAME and VALID."""
    for (hi, wi), (ho, wo), (kh, kw), s, padding in _transpose_cases():
        y = rng.normal(size=(2, ho, wo, 3))
        x = rng.normal(size=(2, hi, wi, 2))
        w = rng.normal(size=(kh, kw, 3, 2))
        forward = tf_conv2d(y, w, s, padding)
        assert forward.shape == x.shape
        lhs = float(np.sum(forward * x))
        rhs = float(np.sum(y * tf_conv2d_transpose(x, w, y.shape, s, padding)))
        assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + np.sum(np.abs(forward * x))), \
            ((hi, wi), (ho, wo), (kh, kw), s, padding, lhs, rhs)


def _column(values):
    """An (1, H, 1, 1) input along H."""
    return np.asarray(values, np.float64).reshape(1, -1, 1, 1)


def _filter_h(values):
    """A (kh, 1, 1, 1) filter along H."""
    return np.asarray(values, np.float64).reshape(-1, 1, 1, 1)


def test_conv2d_transpose_hand_derived():
    """Odd SAME sizes by hand, along H (W trivial) and along W.

    Input (a, b, c), kernel (w0, w1, w2, w3), stride 2: the scatter is
    full[2i + t] += x[i] * w[t], 8 long. The output is full[pad_top:pad_top+out].
      out 5: ceil(5/2) = 3, total = 2*2 + 4 - 5 = 3, pad_top = 1
      out 6: total = 2, pad_top = 1
    """
    a, b, c = 2.0, 3.0, 5.0
    w0, w1, w2, w3 = 7.0, 11.0, 13.0, 17.0
    x = _column([a, b, c])
    w = _filter_h([w0, w1, w2, w3])
    out5 = tf_conv2d_transpose(x, w, (1, 5, 1, 1), (2, 1), "SAME").ravel()
    assert np.array_equal(out5, [a * w1, a * w2 + b * w0, a * w3 + b * w1,
                                 b * w2 + c * w0, b * w3 + c * w1])
    out6 = tf_conv2d_transpose(x, w, (1, 6, 1, 1), (2, 1), "SAME").ravel()
    assert np.array_equal(out6, [a * w1, a * w2 + b * w0, a * w3 + b * w1,
                                 b * w2 + c * w0, b * w3 + c * w1, c * w2])
    # the same along W
    out5w = tf_conv2d_transpose(x.reshape(1, 1, 3, 1), w.reshape(1, 4, 1, 1),
                                (1, 1, 5, 1), (1, 2), "SAME").ravel()
    assert np.array_equal(out5w, out5)
    # kernel 1 < stride 4, out 7 from 2: total clamped to 0, the gaps stay 0
    out7 = tf_conv2d_transpose(_column([a, b]), _filter_h([w1]), (1, 7, 1, 1), 4, "SAME").ravel()
    assert np.array_equal(out7, [a * w1, 0, 0, 0, b * w1, 0, 0])
    # VALID, out 9 from (a, b, c), kernel 4 stride 2: (9-4)//2 + 1 = 3; the
    # scatter is 8 long, the 9th output is 0
    out9 = tf_conv2d_transpose(x, w, (1, 9, 1, 1), (2, 1), "VALID").ravel()
    assert np.array_equal(out9, [a * w0, a * w1, a * w2 + b * w0, a * w3 + b * w1,
                                 b * w2 + c * w0, b * w3 + c * w1, c * w2, c * w3, 0])


def test_conv2d_transpose_channels(rng):
    """Filter layout (kh, kw, out, in): out[o] = sum_c x[c] * w[..., o, c]."""
    x = rng.normal(size=(1, 1, 1, 2))
    w = rng.normal(size=(1, 1, 3, 2))
    out = tf_conv2d_transpose(x, w, (1, 1, 1, 3), 1, "SAME")
    assert np.allclose(out[0, 0, 0], w[0, 0] @ x[0, 0, 0], rtol=1e-15, atol=0)


def test_conv2d_transpose_rejects_inconsistent_shapes():
    x = np.ones((1, 3, 3, 1))
    w = np.ones((4, 4, 1, 1))
    for out in (5, 6):  # ceil(out / 2) == 3
        assert tf_conv2d_transpose(x, w, (1, out, out, 1), 2, "SAME").shape == (1, out, out, 1)
    for out in (4, 7, 12):
        with pytest.raises(ValueError):
            tf_conv2d_transpose(x, w, (1, out, 5, 1), 2, "SAME")
        with pytest.raises(ValueError):
            tf_conv2d_transpose(x, w, (1, 5, out, 1), 2, "SAME")
    # VALID: (out - 4) // 2 + 1 == 3 only for out 8, 9
    for out in (8, 9):
        tf_conv2d_transpose(x, w, (1, out, out, 1), 2, "VALID")
    for out in (3, 7, 10):
        with pytest.raises(ValueError):
            tf_conv2d_transpose(x, w, (1, out, 8, 1), 2, "VALID")
    bad = [
        ((1, 5, 5, 2), w),                   # output channels != filter's
        ((2, 5, 5, 1), w),                   # batch mismatch
        ((1, 5, 5, 1), np.ones((4, 4, 1, 2))),  # filter in_channels != x's
        ((5, 5, 1), w),                      # not 4 entries
    ]
    for shape, filt in bad:
        with pytest.raises(ValueError):
            tf_conv2d_transpose(x, filt, shape, 2, "SAME")
    with pytest.raises(ValueError):
        tf_conv2d_transpose(x, w, (1, 5, 5, 1), 2, "FULL")


def test_conv2d_transpose_output_ok_matches_ceil_rule():
    """SAME: an input of n pixels accepts exactly the outputs (n-1)*s+1 .. n*s."""
    for s in (1, 2, 8, 16, 32):
        for k in (1, 4, 2 * s):
            for n in (1, 2, 3):
                ok = [o for o in range(1, 4 * s + 2) if conv2d_transpose_output_ok(n, o, k, s, "SAME")]
                assert ok == list(range((n - 1) * s + 1, n * s + 1))


# ==========================================================================
# Golden values from real TensorFlow
# ==========================================================================
@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        return {key: data[key] for key in data.files}


def test_golden_conv2d_transpose(golden):
    """tests/data/tf_reference_golden.npz: tf.nn.conv2d_transpose(SAME) of
    TensorFlow 2.21 in float64, the FCN kernel/stride pairs at odd sizes."""
    keys = sorted(k[:-4] for k in golden if k.startswith("up_") and k.endswith("/out"))
    assert len(keys) >= 7
    for key in keys:
        out = golden[key + "/out"]
        ours = tf_conv2d_transpose(golden[key + "/x"], golden[key + "/w"], out.shape,
                                   int(golden[key + "/stride"]), "SAME")
        _close(ours, out, rel=1e-13)


def _golden_params(golden, name):
    prefix = f"params_{name}/"
    layers = {key[len(prefix):].rsplit("/", 1)[0] for key in golden if key.startswith(prefix)}
    layers.discard("num_classes")
    params = {layer: (golden[f"{prefix}{layer}/w"], golden[f"{prefix}{layer}/b"]) for layer in layers}
    return params, int(golden[prefix + "num_classes"])


@pytest.mark.parametrize("case", ["fcn8s_21x29", "fcn16s_21x29", "fcn32s_21x29", "fcn8s_19x23_k3"])
def test_golden_fcn(golden, case):
    """fcn_forward == FCN-{8,16,32}s built with TensorFlow ops (float64) as in
    fcn*_vgg.py's build(), on scaled-down VGG parameters at odd sizes."""
    params, num_classes = _golden_params(golden, str(golden[case + "/params"]))
    upscore, pred_up = fcn_forward(params, golden[case + "/x"], str(golden[case + "/variant"]),
                                   num_classes)
    expected = golden[case + "/upscore"]
    _close(upscore, expected, rel=1e-12)
    assert np.array_equal(pred_up, np.argmax(expected, axis=3))


# ==========================================================================
# The repo's weight helpers
# ==========================================================================
def test_bilinear_kernel_ksize4():
    k = bilinear_kernel(4, 3)
    assert k.shape == (4, 4, 3, 3)
    profile = np.array([0.25, 0.75, 0.75, 0.25])
    for i in range(3):
        for j in range(3):
            expected = np.outer(profile, profile) if i == j else np.zeros((4, 4))
            assert np.array_equal(k[:, :, i, j], expected)


@pytest.mark.parametrize("ksize", [4, 16, 32, 64])
def test_bilinear_kernel_fcn_sizes(ksize):
    """The sizes the repo uses: profile[x] = (2 min(x, k-1-x) + 1) / k,
    symmetric, and its values at stride k/2 apart sum to 1."""
    x = np.arange(ksize)
    profile = (2 * np.minimum(x, ksize - 1 - x) + 1) / ksize
    k = bilinear_kernel(ksize, 2)
    assert np.array_equal(k[:, :, 0, 0], np.outer(profile, profile))
    assert np.array_equal(k[:, :, 1, 1], k[:, :, 0, 0])
    assert not k[:, :, 0, 1].any() and not k[:, :, 1, 0].any()
    s = ksize // 2
    assert np.array_equal(profile[:s] + profile[s:], np.ones(s))
    assert np.array_equal(k.astype(np.float32).astype(np.float64), k)  # exact in float32


@pytest.mark.parametrize("ksize, profile", [
    (1, [1.0]),
    (2, [1.0, 0.0]),                             # f = 1 odd: centre 0, not 0.5
    (3, [0.25, 0.75, 0.75]),                     # f = 2 even: centre 1.5, not 1
    (5, [1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3]),
    (6, [1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3, 0.0]),  # f = 3 odd: centre 2, not 2.5
])
def test_bilinear_kernel_repo_formula_quirks(ksize, profile):
    """get_deconv_filter's c = (2f - 1 - f % 2) / (2f) uses the parity of
    f = ceil(ksize / 2): for ksize % 4 in (2, 3) the kernel is off-centre.
    Reproduced as is (derived by hand from the formula)."""
    got = bilinear_kernel(ksize, 1)[:, :, 0, 0]
    np.testing.assert_allclose(got, np.outer(profile, profile), rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("ksize, stride, n", [(4, 2, 5), (16, 8, 3), (32, 16, 3), (64, 32, 2)])
def test_bilinear_upsampling_of_a_constant(ksize, stride, n):
    """Upsampling a constant map with the bilinear kernel (TF SAME, output
    n * stride - 1, i.e. odd) gives the constant wherever two input pixels
    overlap: full-scatter positions p in [stride, n * stride - 1]."""
    c = 3.5
    out_size = n * stride - 1
    x = np.full((1, n, n, 2), c)
    y = tf_conv2d_transpose(x, bilinear_kernel(ksize, 2), (1, out_size, out_size, 2), stride, "SAME")
    top = _same_pads(out_size, ksize, stride)[0]
    rows = [r for r in range(out_size) if stride <= r + top <= n * stride - 1]
    assert len(rows) >= stride - 1
    interior = y[0][np.ix_(rows, rows)]
    assert np.allclose(interior, c, rtol=1e-15, atol=0)
    assert np.all(y <= c + 1e-12) and np.all(y > 0)


def _summary_loop(w, num_new):
    """_summary_reshape transcribed as loops (the repo's formulation)."""
    num_orig = w.shape[-1]
    n = num_orig // num_new
    out = np.zeros(w.shape[:-1] + (num_new,))
    for i in range(0, num_orig, n):
        if i // n == num_new:
            break
        out[..., i // n] = np.mean(w[..., i:i + n], axis=-1)
    return out


def test_summary_reshape_hand_example():
    """7 classes -> 3: n = 7 // 3 = 2, groups (0,1), (2,3), (4,5); class 6
    is dropped."""
    w = np.array([[0, 1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60, 70]], np.float64)
    expected = np.array([[0.5, 2.5, 4.5], [15, 35, 55]])
    assert np.array_equal(summary_reshape(w, 3), expected)
    assert np.array_equal(summary_reshape(w.reshape(1, 1, 2, 7), 3), expected.reshape(1, 1, 2, 3))
    assert np.array_equal(bias_reshape(np.array([1, 2, 3, 4, 5, 6, 100.0]), 3), [1.5, 3.5, 5.5])
    # one class: the mean of all
    assert np.array_equal(summary_reshape(w, 1), w.mean(axis=1, keepdims=True))


@pytest.mark.parametrize("num_new", [1, 2, 3, 20, 21, 333, 499, 500, 501, 999])
def test_summary_reshape_1000_classes(rng, num_new):
    w = rng.normal(size=(1, 1, 5, 1000))
    b = rng.normal(size=1000)
    got = summary_reshape(w, num_new)
    np.testing.assert_allclose(got, _summary_loop(w, num_new), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(bias_reshape(b, num_new), _summary_loop(b, num_new), rtol=1e-14, atol=1e-15)
    n = 1000 // num_new
    # the remainder classes n*num_new .. 999 are not used
    w2, b2 = w.copy(), b.copy()
    w2[..., n * num_new:] = 1e6
    b2[n * num_new:] = 1e6
    assert np.array_equal(summary_reshape(w2, num_new), got)
    assert np.array_equal(bias_reshape(b2, num_new), bias_reshape(b, num_new))


def test_summary_reshape_needs_fewer_classes():
    w = np.ones((4, 10))
    with pytest.raises(AssertionError):  # the repo: assert(num_new < num_orig)
        summary_reshape(w, 10)
    assert np.array_equal(bias_reshape(np.arange(10.0), 10), np.arange(10.0))  # no assert there
    with pytest.raises(ValueError):
        bias_reshape(np.arange(10.0), 11)


def test_preprocess_rgb():
    rgb = np.array([10.0, 20.0, 30.0]).reshape(1, 1, 1, 3)
    bgr = preprocess_rgb(rgb).ravel()
    assert np.array_equal(bgr, [30 - VGG_MEAN[0], 20 - VGG_MEAN[1], 10 - VGG_MEAN[2]])


# ==========================================================================
# The FCN forward pass
# ==========================================================================
def _params(rng, num_classes=3, window=2, channels=(4, 8, 8, 16, 16), skips=True):
    return random_vgg_params(rng, channels=channels, fc=(32, 32), fc6_window=window,
                             num_fc8=10, num_classes=num_classes, skips=skips)


def test_fcn8s_odd_size(rng):
    """37 x 53: pools round up (SAME): 19x27, 10x14, 5x7, 3x4, 2x2; each
    upscore gets its target's size; the result is (N, 37, 53, num_classes)."""
    params = _params(rng)
    x = rng.normal(size=(2, 37, 53, 3))
    out = fcn_forward(params, x, "8s", 3, return_all=True)
    sizes = {"pool1": (19, 27), "pool2": (10, 14), "pool3": (5, 7), "pool4": (3, 4),
             "pool5": (2, 2), "fc6": (2, 2), "fc7": (2, 2), "score_fr": (2, 2),
             "upscore2": (3, 4), "score_pool4": (3, 4), "fuse_pool4": (3, 4),
             "upscore4": (5, 7), "score_pool3": (5, 7), "fuse_pool3": (5, 7),
             "upscore32": (37, 53)}
    for name, hw in sizes.items():
        assert out[name].shape[1:3] == hw, (name, out[name].shape)
    assert out["upscore32"].shape == (2, 37, 53, 3)
    assert out["score_fr"].shape[3] == 3 and out["fc7"].shape[3] == 32
    assert np.array_equal(out["upscore"], out["upscore32"])
    assert out["pred_up"].shape == (2, 37, 53)
    assert np.array_equal(out["pred_up"], np.argmax(out["upscore32"], axis=3))
    assert np.array_equal(out["pred"], np.argmax(out["score_fr"], axis=3))
    assert np.all(np.isfinite(out["upscore32"])) and np.std(out["upscore32"]) > 1e-3
    upscore, pred_up = fcn_forward(params, x, "8s", 3)
    assert np.array_equal(upscore, out["upscore32"]) and np.array_equal(pred_up, out["pred_up"])


def test_fcn8s_zero_skips_add_exactly_zero(rng):
    """With score_pool4/3 weights and biases zero (explicit, or absent), the
    fuse layers equal the upscore layers bit for bit, and FCN-8s is just
    score_fr upsampled x2, x2, x8."""
    params = _params(rng, skips=False)
    assert "score_pool4" not in params
    x = rng.normal(size=(1, 21, 27, 3))
    absent = fcn_forward(params, x, "8s", 3, return_all=True)
    zero = dict(params, score_pool4=(np.zeros((16, 3)), np.zeros(3)),
                score_pool3=(np.zeros((8, 3)), np.zeros(3)))
    explicit = fcn_forward(zero, x, "8s", 3, return_all=True)
    for out in (absent, explicit):
        assert not out["score_pool4"].any() and not out["score_pool3"].any()
        assert np.array_equal(out["fuse_pool4"], out["upscore2"])
        assert np.array_equal(out["fuse_pool3"], out["upscore4"])
    assert np.array_equal(absent["upscore32"], explicit["upscore32"])
    # the chain, with the NumPy scatter reference
    h = absent["score_fr"]
    for ksize, stride, target in ((4, 2, absent["pool4"]), (4, 2, absent["pool3"]), (16, 8, x)):
        h = tf_conv2d_transpose(h, bilinear_kernel(ksize, 3), target.shape[:3] + (3,), stride, "SAME")
    _close(absent["upscore32"], h)
    # and nonzero skips do change the result
    with_skips = fcn_forward(dict(params, **_params(rng)), x, "8s", 3)[0]
    assert not np.allclose(with_skips, absent["upscore32"])


def _hand_fcn(params, x, variant, num_classes):
    """fcn*_vgg.py's build(), composed from tf_reference's NumPy ops and the
    repo's weight helpers, layer by layer."""
    def conv(h, w, b, relu):
        y = tf_conv2d(h, w, 1, "SAME") + b
        return np.maximum(y, 0.0) if relu else y

    h, pools = x, {}
    for block, names in enumerate(CONV_LAYERS, start=1):
        for name in names:
            h = conv(h, *params[name], relu=True)
        h = tf_max_pool(h, 2, 2, "SAME")
        pools[block] = h
    w6, b6 = params["fc6"]
    c5 = h.shape[3]
    k = int(round(math.sqrt(w6.shape[0] / c5)))
    h = conv(h, w6.reshape(k, k, c5, -1), b6, relu=True)
    w7, b7 = params["fc7"]
    h = conv(h, w7[None, None], b7, relu=True)
    w8, b8 = params["fc8"]
    h = conv(h, summary_reshape(w8[None, None], num_classes), bias_reshape(b8, num_classes), relu=False)

    def up(h, ksize, stride, target):
        shape = (target.shape[0], target.shape[1], target.shape[2], num_classes)
        return tf_conv2d_transpose(h, bilinear_kernel(ksize, num_classes), shape, stride, "SAME")

    def skip(block):
        w, b = params[f"score_pool{block}"]
        return conv(pools[block], w[None, None], b, relu=False)

    if variant == "32s":
        return up(h, 64, 32, x)
    h = up(h, 4, 2, pools[4]) + skip(4)
    if variant == "16s":
        return up(h, 32, 16, x)
    h = up(h, 4, 2, pools[3]) + skip(3)
    return up(h, 16, 8, x)


@pytest.mark.parametrize("variant, hw", [("32s", (37, 53)), ("16s", (33, 18)), ("8s", (23, 40))])
def test_fcn_vs_hand_composition(rng, variant, hw):
    """fcn_forward (torch) == the same network composed from the NumPy
    references (a separate implementation of every layer), at odd sizes."""
    params = _params(rng)
    x = rng.normal(size=(1,) + hw + (3,))
    upscore, pred_up = fcn_forward(params, x, variant, 3)
    expected = _hand_fcn(params, x, variant, 3)
    _close(upscore, expected, rel=1e-12)
    assert np.array_equal(pred_up, np.argmax(expected, axis=3))


def test_fcn_preprocess(rng):
    params = _params(rng, window=2)
    rgb = rng.uniform(0, 255, size=(1, 19, 22, 3))
    bgr = np.stack([rgb[..., 2] - 103.939, rgb[..., 1] - 116.779, rgb[..., 0] - 123.68], axis=-1)
    a = fcn_forward(params, rgb, "32s", 3, preprocess=True)[0]
    b = fcn_forward(params, bgr, "32s", 3)[0]
    assert np.array_equal(a, b)


@pytest.mark.parametrize("window, size, centre", [(2, 64, 0), (3, 96, 1), (7, 224, 3)])
def test_fc_layers_are_the_dense_classifier(rng, window, size, centre):
    """At the training size (pool5 is window x window) the score_fr pixel whose
    SAME window covers pool5 exactly equals VGG's dense classifier on pool5
    flattened in HWC order: the fc6 reshape (get_fc_weight_reshape) is right.
    (window 7 at 224 is real VGG16's geometry, with small channel counts.)"""
    channels = (4, 8, 8, 16, 16) if window < 7 else (2, 2, 4, 4, 4)
    params = _params(rng, window=window, channels=channels)
    x = rng.normal(size=(2, size, size, 3))
    out = fcn_forward(params, x, "32s", 3, return_all=True)
    pool5 = out["pool5"]
    assert pool5.shape[1:3] == (window, window)
    flat = pool5.reshape(2, -1)
    h = np.maximum(flat @ params["fc6"][0] + params["fc6"][1], 0)
    h = np.maximum(h @ params["fc7"][0] + params["fc7"][1], 0)
    scores = h @ summary_reshape(params["fc8"][0], 3) + bias_reshape(params["fc8"][1], 3)
    _close(out["score_fr"][:, centre, centre, :], scores, rel=1e-12)


def test_fcn_optional_entries(rng):
    """score_fr given explicitly (the random_init_fc8 path) and upscore filters
    given explicitly; num_classes inferred from score_fr."""
    params = _params(rng)
    x = rng.normal(size=(1, 17, 20, 3))
    base = fcn_forward(params, x, "16s", 3)[0]
    w8, b8 = params["fc8"]
    explicit = dict(params, score_fr=(summary_reshape(w8, 3), bias_reshape(b8, 3)),
                    upscore2=bilinear_kernel(4, 3), upscore32=bilinear_kernel(32, 3))
    assert np.array_equal(fcn_forward(explicit, x, "16s")[0], base)
    other = dict(params, up=rng.normal(size=(64, 64, 3, 3)))
    h = fcn_forward(params, x, "32s", 3, return_all=True)["score_fr"]
    expected = tf_conv2d_transpose(h, other["up"], (1, 17, 20, 3), 32, "SAME")
    _close(fcn_forward(other, x, "32s", 3)[0], expected)


def test_fcn_rejects_bad_parameters(rng):
    params = _params(rng)
    x = rng.normal(size=(1, 16, 16, 3))
    with pytest.raises(ValueError):
        fcn_forward(params, x, "4s", 3)
    with pytest.raises(ValueError):
        fcn_forward(dict(params, fc6=(np.ones((16 * 3, 32)), np.ones(32))), x, "32s", 3)
    with pytest.raises(ValueError):
        fcn_forward(dict(params, up=np.ones((32, 32, 3, 3))), x, "32s", 3)
    with pytest.raises(AssertionError):  # fc8 has 10 classes: 10 is not fewer
        fcn_forward(params, x, "32s", 10)
    with pytest.raises(ValueError):
        fcn_forward(params, x[..., :2], "32s", 3)
