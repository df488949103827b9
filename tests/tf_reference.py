"""Plain-NumPy float64 references for three TensorFlow ops, with TF's semantics.

Nothing here imports fastconv (or TensorFlow): each function is written from
TensorFlow's documented definition, so that fastconv's ``conv_transpose2d``
and the FCN networks built on it (tests/fcn_reference.py) are checked against
code that shares nothing with them.

    tf_conv2d(x, w, strides, padding)                    tf.nn.conv2d
    tf_max_pool(x, ksize, strides, padding)              tf.nn.max_pool
    tf_conv2d_transpose(x, w, output_shape, strides,     tf.nn.conv2d_transpose
                        padding)

Layouts are TensorFlow's: NHWC activations; conv2d filters HWIO
(kh, kw, in_channels, out_channels); conv2d_transpose filters
(kh, kw, out_channels, in_channels) -- the SAME array as the filter of the
conv2d it is the transpose of. ``strides`` / ``ksize`` may be an int, a pair
(sh, sw) or TF's 4-list [1, sh, sw, 1]. ``padding`` is "SAME" or "VALID"
(case-insensitive). Results are float64 (N, Ho, Wo, C).

TensorFlow's padding rule (tensorflow/core/framework/kernel_shape_util.cc,
GetWindowedOutputSizeVerbose), per spatial axis of length ``n``:

    VALID  out = ceil((n - k + 1) / s) = (n - k) // s + 1     (needs n >= k)
           no padding
    SAME   out = ceil(n / s)
           pad_total = max((out - 1) * s + k - n, 0)
           pad_before = pad_total // 2, pad_after = pad_total - pad_before
           (an odd total puts the extra row/column at the bottom/right)

conv2d_transpose(x, w, output_shape) is the gradient of
conv2d(y, w, strides, padding) with respect to y, where y has shape
output_shape (conv_grad_input_ops: ConvBackpropExtractAndVerifyDimension).
So it is only defined when the forward conv2d maps output_shape's spatial
size back to x's: for SAME, ceil(out / s) == in. TensorFlow raises
InvalidArgumentError ("Size of out_backprop doesn't match computed") when
this fails; this reference raises ValueError.

Validation of these functions: tests/test_fcn_reference.py (against torch
where torch expresses the same op, against the adjoint identity and against
hand derivations), and against real TensorFlow 2.21.0 (tensorflow-cpu, in a
separate venv, never needed by the tests) with tests/data/make_tf_fixture.py,
everything in float64. The record of that run:

  tf_conv2d_transpose, SAME and VALID: output heights 1..13 (width
  (7 h) % 13 + 1, so odd/even and H != W), strides 1..4 (the W stride
  differs from the H one when kh != kw), kernels (kh, kw) in 1..5 x 1..5,
  N = 2, 2 -> 3 channels, the one consistent input size for each output:
      2,244 cases, max |numpy - TF| = 1.1e-14 (relative to max|TF|: 5.8e-16)
  tf_conv2d_transpose, SAME, the FCN upsamplings (kernel, stride) = (4, 2),
  (16, 8), (32, 16), (64, 32), every output size 1 .. 4 s (inputs 1..4
  pixels; H and W paired in opposite orders), 2 classes, the bilinear
  filter and a random one:
      464 cases, max error 3.6e-15 (relative 3.5e-16)
  tf_conv2d, SAME and VALID: heights 1..11 (width (5 h) % 11 + 1), strides
  1..4, kernels 1..5 x 1..5:
      1,800 cases, max error 1.1e-14 (relative 6.1e-16)
  tf_max_pool, SAME and VALID: the same sizes and strides, windows 1..4 x 1..4,
  all-negative inputs (so a zero pad would win):
      1,216 cases, bitwise equal, no -inf. (float32 inputs: TF 2.21's
      float64 MaxPool was seen returning float32-rounded values.)
  The ValueError check: input and output sizes 1..13 along one axis, strides
  1..4, kernels 1..5, SAME and VALID: 6,760 cases, our check raises exactly
  where TF raises InvalidArgumentError (0 disagreements).
  tests/fcn_reference.py's fcn_forward vs FCN-8s/16s/32s built from TF ops as
  in build(): scaled-down VGG parameters (channels 2, 4, 4, 8, 8, fc 16, 16),
  fc6 windows 2 and 3, inputs 21x29 and 2 x 19x23: max relative error 7.5e-16.
A subset of these golden values (the FCN networks and 7 upsamplings) is kept
in tests/data/tf_reference_golden.npz (175 KB) and checked by the tests.
"""

import numpy as np

__all__ = [
    "tf_padding",
    "tf_conv2d",
    "tf_max_pool",
    "tf_conv2d_transpose",
    "conv2d_transpose_output_ok",
]


def _pair(value, what):
    """int, (h, w) or TF's [1, h, w, 1] -> (h, w)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = [int(v) for v in value]
    if len(value) == 2:
        return value[0], value[1]
    if len(value) == 4:
        if value[0] != 1 or value[3] != 1:
            raise ValueError(f"{what}: batch and channel entries must be 1, got {value}")
        return value[1], value[2]
    raise ValueError(f"{what}: expected an int, a pair or a 4-list, got {value}")


def _check_padding(padding):
    if not isinstance(padding, str) or padding.upper() not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    return padding.upper()


def tf_padding(size, kernel, stride, padding):
    """TensorFlow's windowed output size along one axis.

    Returns (out, pad_before, pad_after) for an input of length ``size``
    (GetWindowedOutputSizeVerbose, dilation 1). Raises ValueError when VALID
    leaves no output (size < kernel).
    """
    padding = _check_padding(padding)
    if size < 1 or kernel < 1 or stride < 1:
        raise ValueError(f"size, kernel and stride must be >= 1: {size}, {kernel}, {stride}")
    if padding == "VALID":
        if size < kernel:
            raise ValueError(f"VALID: input {size} is smaller than the kernel {kernel}")
        return (size - kernel) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def tf_conv2d(x_nhwc, w_hwio, strides=1, padding="VALID"):
    """tf.nn.conv2d (NHWC, HWIO, dilation 1): a zero-padded cross-correlation.

    out[n, i, j, o] = sum_{a, b, c} xpad[n, i*sh + a, j*sw + b, c] * w[a, b, c, o]
    with xpad the input padded by TF's rule (see tf_padding).
    """
    x = np.asarray(x_nhwc, np.float64)
    w = np.asarray(w_hwio, np.float64)
    n, h, wd, c = x.shape
    kh, kw, wc, k = w.shape
    if wc != c:
        raise ValueError(f"input has {c} channels, filter expects {wc}")
    sh, sw = _pair(strides, "strides")
    ho, top, bottom = tf_padding(h, kh, sh, padding)
    wo, left, right = tf_padding(wd, kw, sw, padding)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out = np.zeros((n, ho, wo, k), np.float64)
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw, :]
            out += np.einsum("nhwc,ck->nhwk", patch, w[a, b])
    return out


def tf_max_pool(x, ksize=2, strides=2, padding="VALID"):
    """tf.nn.max_pool (NHWC): the maximum over each window.

    SAME pads with -inf, so a padded position never wins (every SAME window
    holds at least one real pixel, so no output is -inf unless the input is).
    """
    x = np.asarray(x, np.float64)
    n, h, wd, c = x.shape
    kh, kw = _pair(ksize, "ksize")
    sh, sw = _pair(strides, "strides")
    ho, top, bottom = tf_padding(h, kh, sh, padding)
    wo, left, right = tf_padding(wd, kw, sw, padding)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                constant_values=-np.inf)
    out = np.full((n, ho, wo, c), -np.inf)
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw, :]
            out = np.maximum(out, patch)
    return out


def conv2d_transpose_output_ok(in_size, out_size, kernel, stride, padding):
    """Whether TF accepts ``out_size`` as the output length for an input of
    length ``in_size``: the forward conv2d of out_size must give in_size."""
    try:
        forward, _, _ = tf_padding(out_size, kernel, stride, padding)
    except ValueError:
        return False
    return forward == in_size


def tf_conv2d_transpose(x_nhwc, w, output_shape, strides=1, padding="SAME"):
    """tf.nn.conv2d_transpose (NHWC), computed directly as a scatter.

    ``x_nhwc``: (N, Hi, Wi, Ci); ``w``: (kh, kw, Co, Ci) (TF's layout);
    ``output_shape``: (N, Ho, Wo, Co) (TF requires all four entries).

    Each input pixel x[n, i, j, :] is multiplied by the kernel and added into
    a "full" buffer at rows i*sh .. i*sh + kh - 1, columns j*sw .. j*sw + kw - 1:

        full[n, i*sh + a, j*sw + b, o] += sum_c x[n, i, j, c] * w[a, b, o, c]

    Then the forward conv2d's padding is cropped away: output row r is full row
    r + pad_top, where pad_top is the conv2d padding of an Ho-long input
    (tf_padding(Ho, kh, sh, padding)); rows of the output the scatter never
    reached (possible when kh < sh, or with VALID) stay 0.

    Raises ValueError where TensorFlow raises InvalidArgumentError/ValueError:
    output_shape inconsistent with the input size (the forward conv2d of
    output_shape does not give Hi x Wi), batch or channel mismatch.
    """
    x = np.asarray(x_nhwc, np.float64)
    w = np.asarray(w, np.float64)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError("x must be NHWC and w (kh, kw, out_channels, in_channels)")
    output_shape = [int(v) for v in output_shape]
    if len(output_shape) != 4:
        raise ValueError(f"output_shape must have 4 entries (N, H, W, C), got {output_shape}")
    n, hi, wi, ci = x.shape
    kh, kw, co, wci = w.shape
    on, ho, wo, oc = output_shape
    if wci != ci:
        raise ValueError(f"input has {ci} channels, filter's in_channels is {wci}")
    if oc != co:
        raise ValueError(f"output_shape has {oc} channels, filter's out_channels is {co}")
    if on != n:
        raise ValueError(f"output_shape batch {on} != input batch {n}")
    sh, sw = _pair(strides, "strides")
    padding = _check_padding(padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"output_shape must be positive, got {output_shape}")
    pads = []
    for axis, (size_in, size_out, k, s) in enumerate(((hi, ho, kh, sh), (wi, wo, kw, sw))):
        if not conv2d_transpose_output_ok(size_in, size_out, k, s, padding):
            raise ValueError(
                f"output_shape {output_shape}: a {padding} conv2d (kernel {k}, stride {s}) "
                f"of size {size_out} does not give the input's size {size_in} "
                f"(spatial axis {axis})")
        pads.append(tf_padding(size_out, k, s, padding)[1])
    top, left = pads

    full_h = max((hi - 1) * sh + kh, top + ho)
    full_w = max((wi - 1) * sw + kw, left + wo)
    full = np.zeros((n, full_h, full_w, co), np.float64)
    for a in range(kh):
        for b in range(kw):
            full[:, a:a + sh * (hi - 1) + 1:sh, b:b + sw * (wi - 1) + 1:sw, :] += \
                np.einsum("nhwc,oc->nhwo", x, w[a, b])
    return full[:, top:top + ho, left:left + wo, :].copy()
