"""Independent plain-NumPy float64 reference implementations used by the tests.

Nothing here imports fastconv: these functions are written straight from the
definition of a (grouped, strided, dilated, zero-padded) cross-correlation so
that the library is checked against an implementation that shares no code
with it.

Conventions: NHWC input (N, H, W, C), HWIO weight (kh, kw, C/groups, K),
NHWC result (N, Ho, Wo, K). Padding is always explicit here:
((top, bottom), (left, right)).
"""

import numpy as np

__all__ = [
    "conv2d_ref",
    "conv2d_ref_nchw",
    "conv2d_magnitude",
    "conv2d_magnitude_nchw",
    "matmul_ref",
    "matmul_magnitude",
    "normalize_padding",
    "same_padding",
    "output_size",
    "nchw_to_nhwc",
    "nhwc_to_nchw",
    "oihw_to_hwio",
    "hwio_to_oihw",
]


def _pair(value):
    if isinstance(value, (tuple, list)):
        first, second = value
        return int(first), int(second)
    return int(value), int(value)


def output_size(size, kernel, stride, dilation, pad_before, pad_after):
    """Output length along one axis of a cross-correlation."""
    effective_kernel = dilation * (kernel - 1) + 1
    return (size + pad_before + pad_after - effective_kernel) // stride + 1


def same_padding(in_hw, kernel_hw, stride=1, dilation=1):
    """Explicit ((top, bottom), (left, right)) padding for "same".

    TensorFlow / ONNX SAME_UPPER rule: the output length is ceil(in / stride);
    the total padding needed for that is split in two, and when it is odd the
    extra row/column goes at the bottom/right.
    """
    strides = _pair(stride)
    dilations = _pair(dilation)
    pads = []
    for size, kernel, s, d in zip(in_hw, kernel_hw, strides, dilations):
        out = -(-size // s)  # ceil(size / s)
        effective_kernel = d * (kernel - 1) + 1
        total = max((out - 1) * s + effective_kernel - size, 0)
        before = total // 2
        pads.append((before, total - before))
    return tuple(pads)


def normalize_padding(padding, in_hw, kernel_hw, stride=1, dilation=1):
    """Turn any public padding form into ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            return same_padding(in_hw, kernel_hw, stride, dilation)
        raise ValueError(padding)
    if isinstance(padding, (tuple, list)):
        first, second = padding
        if isinstance(first, (tuple, list)):
            return (tuple(int(p) for p in first), tuple(int(p) for p in second))
        return ((int(first), int(first)), (int(second), int(second)))
    p = int(padding)
    return ((p, p), (p, p))


def conv2d_ref(x, w, bias=None, stride=1, padding=((0, 0), (0, 0)),
               dilation=1, groups=1, relu=False):
    """Float64 NHWC/HWIO cross-correlation, written from the definition.

    ``x``: (N, H, W, C) or (H, W, C); ``w``: (kh, kw, C/groups, K);
    ``padding``: ((top, bottom), (left, right)).

    A tap in the padding contributes nothing (no term at all, not 0 * w), so
    an Inf or NaN weight reaches only the outputs that see it at a tap
    inside the image: padding never turns an Inf weight into NaN.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[np.newaxis]
    n, h, wd, c = x.shape
    kh, kw, c_per_group, k = w.shape
    assert c == c_per_group * groups, (c, c_per_group, groups)
    assert k % groups == 0, (k, groups)
    k_per_group = k // groups
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    (top, bottom), (left, right) = padding

    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    inside = np.pad(np.ones((h, wd), bool), ((top, bottom), (left, right)))
    ho = output_size(h, kh, sh, dh, top, bottom)
    wo = output_size(wd, kw, sw, dw, left, right)
    assert ho > 0 and wo > 0, (ho, wo)

    out = np.zeros((n, ho, wo, k), dtype=np.float64)
    for g in range(groups):
        x_g = xp[..., g * c_per_group:(g + 1) * c_per_group]
        w_g = w[..., g * k_per_group:(g + 1) * k_per_group]
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
                patch = x_g[:, rows, cols, :]  # (n, ho, wo, C/groups)
                term = np.einsum("nhwc,ck->nhwk", patch, w_g[i, j])
                out[..., g * k_per_group:(g + 1) * k_per_group] += np.where(
                    inside[rows, cols][:, :, None], term, 0.0)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)
    if relu:
        # np.maximum propagates NaN, matching "ReLU(NaN) is NaN".
        out = np.maximum(out, 0.0)
    return out[0] if unbatched else out


def conv2d_magnitude(x, w, bias=None, **kwargs):
    """Elementwise sum of |x| |w| (+ |bias|) over each output's reduction.

    This is the quantity a floating-point forward error bound is proportional
    to (see tests/conftest.py).
    """
    kwargs.pop("relu", None)
    absbias = None if bias is None else np.abs(np.asarray(bias, np.float64))
    return conv2d_ref(np.abs(np.asarray(x, np.float64)),
                      np.abs(np.asarray(w, np.float64)), absbias, **kwargs)


def nchw_to_nhwc(x):
    x = np.asarray(x)
    return np.moveaxis(x, -3, -1)


def nhwc_to_nchw(x):
    x = np.asarray(x)
    return np.moveaxis(x, -1, -3)


def oihw_to_hwio(w):
    return np.asarray(w).transpose(2, 3, 1, 0)


def hwio_to_oihw(w):
    return np.asarray(w).transpose(3, 2, 0, 1)


def conv2d_ref_nchw(x, w, bias=None, **kwargs):
    """NCHW/OIHW wrapper: transpose in, call the NHWC reference, transpose out."""
    return nhwc_to_nchw(conv2d_ref(nchw_to_nhwc(x), oihw_to_hwio(w), bias, **kwargs))


def conv2d_magnitude_nchw(x, w, bias=None, **kwargs):
    return nhwc_to_nchw(
        conv2d_magnitude(nchw_to_nhwc(x), oihw_to_hwio(w), bias, **kwargs))


def matmul_ref(a, b, bias=None, relu=False):
    out = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    if relu:
        out = np.maximum(out, 0.0)
    return out


def matmul_magnitude(a, b, bias=None):
    return matmul_ref(np.abs(np.asarray(a, np.float64)),
                      np.abs(np.asarray(b, np.float64)),
                      None if bias is None else np.abs(np.asarray(bias, np.float64)))

