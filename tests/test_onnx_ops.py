"""fastconv.nn.from_onnx against onnxruntime, op by op, on graphs built with
onnx.helper (tests/onnx_graphs.py builds, runs and compares them; its module
doc states the tolerances), then graph-level behaviour, malformed files, and
the trained PP-OCRv4 models rapidocr-onnxruntime ships.

The inputs hold the batch on axis 0 as a dynamic dimension "N" (batch 2
unless a test says otherwise). Both float dtypes run; where onnxruntime's CPU
provider has no double kernel for an op the float64 case is skipped with the
provider's message (onnx_graphs.ort_run)."""

import math
import os
import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from onnx_graphs import (  # noqa: E402
    ULPS,
    assert_bound,
    behind_conv,
    check,
    check_or_refuse,
    compare,
    fc_import,
    fc_run,
    gamma,
    ints,
    make_model,
    ort_run,
    single,
    tensor,
)

DTYPES = [np.float32, np.float64]
DT = pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
# f32-nhwc: the op reads a convolution's output (kept channels-last by the
# importer) instead of a graph input; see onnx_graphs.behind_conv
DT_LAYOUT = pytest.mark.parametrize("dtype,after_conv", [(np.float32, False),
                                                         (np.float64, False),
                                                         (np.float32, True)],
                                    ids=["f32", "f64", "f32-nhwc"])


def rand(rng, shape, dtype, low=-1.0, high=1.0):
    return rng.uniform(low, high, size=shape).astype(dtype)


def away_from_zero(rng, shape, dtype):
    """Values in +-[0.5, 1.5]: divisors, and inputs whose sign a test needs."""
    return (rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1, 1], size=shape)).astype(dtype)


def sum_magnitude(n, *operands, bias=None):
    """M of the module doc: n * prod(max|operand|) + max|bias|."""
    m = float(n)
    for op in operands:
        m *= float(np.max(np.abs(op)))
    return m + (float(np.max(np.abs(bias))) if bias is not None else 0.0)


# ==========================================================================
# Conv
# ==========================================================================
CONV_CASES = {
    # name: (spatial input, kernel, attrs, C, M, groups)
    "2d": ((7, 8), (3, 3), {}, 4, 6, 1),
    "2d_pads": ((7, 8), (3, 3), dict(pads=[1, 1, 1, 1]), 4, 6, 1),
    "2d_asym_pads": ((7, 8), (3, 2), dict(pads=[0, 1, 2, 0]), 4, 6, 1),
    "2d_stride2": ((9, 8), (3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1]), 3, 5, 1),
    "2d_stride_hw": ((9, 8), (3, 3), dict(strides=[2, 1]), 3, 5, 1),
    "2d_dilated": ((9, 10), (3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2]), 4, 4, 1),
    "2d_dilated_hw": ((9, 10), (3, 3), dict(dilations=[1, 3]), 4, 4, 1),
    "2d_1x1": ((5, 6), (1, 1), {}, 8, 6, 1),
    "2d_groups2": ((6, 7), (3, 3), dict(group=2, pads=[1, 1, 1, 1]), 4, 6, 2),
    "2d_depthwise": ((6, 7), (3, 3), dict(group=6, pads=[1, 1, 1, 1]), 6, 6, 6),
    "2d_depthwise_mult2": ((6, 7), (3, 3), dict(group=3, strides=[2, 2]), 3, 6, 3),
    "2d_depthwise_s2_asym": ((8, 8), (3, 3), dict(group=4, strides=[2, 2],
                                                  pads=[0, 0, 1, 1]), 4, 4, 4),
    "2d_same_upper": ((7, 8), (3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2]), 3, 4, 1),
    "2d_same_lower": ((7, 8), (4, 4), dict(auto_pad="SAME_LOWER", strides=[2, 2]), 3, 4, 1),
    "2d_same_upper_even": ((6, 6), (2, 2), dict(auto_pad="SAME_UPPER"), 3, 4, 1),
    "2d_valid": ((7, 8), (3, 3), dict(auto_pad="VALID"), 3, 4, 1),
    "2d_notset": ((7, 8), (3, 3), dict(auto_pad="NOTSET", pads=[1, 0, 0, 1]), 3, 4, 1),
    "2d_kernel_shape_attr": ((7, 8), (3, 3), dict(kernel_shape=[3, 3]), 3, 4, 1),
    "1d": ((11,), (3,), {}, 4, 5, 1),
    "1d_pads_stride": ((11,), (5,), dict(pads=[2, 1], strides=[2]), 4, 5, 1),
    "1d_dilated_groups": ((12,), (3,), dict(dilations=[2], group=2), 4, 6, 2),
    "1d_depthwise_same": ((10,), (3,), dict(group=4, auto_pad="SAME_UPPER"), 4, 4, 4),
}


def conv_model(rng, case, dtype, bias=True, opset=17, batch="N"):
    spatial, kernel, attrs, c, m, groups = CONV_CASES[case]
    w = rand(rng, (m, c // groups) + kernel, dtype)
    b = rand(rng, (m,), dtype) if bias else None
    inits = [tensor("W", w)] + ([tensor("B", b)] if bias else [])
    model = single("Conv", ["X", "W"] + (["B"] if bias else []), attrs, initializers=inits,
                   graph_inputs=[("X", [batch, c] + list(spatial))], opset=opset, dtype=dtype)
    x = rand(rng, (2, c) + spatial, dtype)
    n = (c // groups) * math.prod(kernel)
    return model, x, n, sum_magnitude(n, x, w, bias=b)


@DT
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv(rng, case, dtype):
    model, x, n, mag = conv_model(rng, case, dtype)
    check(model, x, "sum", n, mag)


@pytest.mark.parametrize("case", ["2d", "2d_depthwise", "1d"])
def test_conv_without_bias(rng, case):
    model, x, n, mag = conv_model(rng, case, np.float32, bias=False)
    check(model, x, "sum", n, mag)


# ==========================================================================
# ConvTranspose
# ==========================================================================
CONVT_CASES = {
    # name: (spatial input, kernel, attrs, C, M(total), groups)
    "basic": ((4, 5), (3, 3), {}, 4, 3, 1),
    "stride2": ((4, 5), (3, 3), dict(strides=[2, 2]), 4, 3, 1),
    "stride2_k4_pads": ((4, 5), (4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1]), 4, 3, 1),
    "stride2_k2": ((4, 5), (2, 2), dict(strides=[2, 2]), 4, 6, 1),
    "output_padding": ((4, 5), (3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1],
                                            output_padding=[1, 1]), 4, 3, 1),
    "output_padding_h": ((4, 5), (3, 3), dict(strides=[3, 2], output_padding=[2, 0]), 4, 3, 1),
    "asym_pads": ((4, 5), (3, 3), dict(strides=[2, 2], pads=[0, 1, 2, 0]), 4, 3, 1),
    "output_shape": ((4, 5), (3, 3), dict(strides=[2, 2], output_shape=[8, 10]), 4, 3, 1),
    "output_shape_odd": ((4, 5), (3, 3), dict(strides=[2, 2], output_shape=[9, 11]), 4, 3, 1),
    "groups2": ((4, 5), (3, 3), dict(strides=[2, 2], group=2), 4, 6, 2),
    "depthwise": ((4, 5), (4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1], group=4), 4, 4, 4),
    "dilated": ((4, 5), (3, 3), dict(dilations=[2, 2]), 4, 3, 1),
    "same_upper": ((4, 5), (3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER"), 4, 3, 1),
    "same_lower": ((4, 5), (4, 4), dict(strides=[2, 2], auto_pad="SAME_LOWER"), 4, 3, 1),
    "1d": ((6,), (4,), dict(strides=[2], pads=[1, 1]), 4, 3, 1),
}


@DT
@pytest.mark.parametrize("case", list(CONVT_CASES))
def test_conv_transpose(rng, case, dtype):
    spatial, kernel, attrs, c, m, groups = CONVT_CASES[case]
    w = rand(rng, (c, m // groups) + kernel, dtype)
    b = rand(rng, (m,), dtype)
    model = single("ConvTranspose", ["X", "W", "B"], attrs,
                   initializers=[tensor("W", w), tensor("B", b)],
                   graph_inputs=[("X", ["N", c] + list(spatial))], dtype=dtype)
    x = rand(rng, (2, c) + spatial, dtype)
    # each output sums at most (C/groups) * prod(kernel) products
    n = (c // groups) * math.prod(kernel)
    check(model, x, "sum", n, sum_magnitude(n, x, w, bias=b))


def test_conv_transpose_without_bias(rng):
    w = rand(rng, (4, 3, 3, 3), np.float32)
    model = single("ConvTranspose", ["X", "W"], dict(strides=[2, 2]),
                   initializers=[tensor("W", w)], graph_inputs=[("X", ["N", 4, 3, 4])])
    x = rand(rng, (2, 4, 3, 4), np.float32)
    check(model, x, "sum", 36, sum_magnitude(36, x, w))


# ==========================================================================
# Gemm, MatMul
# ==========================================================================
GEMM_CASES = {
    # name: (attrs, C shape or None)
    "plain": ({}, None),
    "bias_n": ({}, (5,)),
    "bias_1n": ({}, (1, 5)),
    "bias_scalar": ({}, ()),
    "transB": (dict(transB=1), (5,)),
    "alpha_beta": (dict(alpha=0.5, beta=2.0), (5,)),
    "alpha_transB": (dict(alpha=-1.5, transB=1), None),
    "beta0": (dict(beta=0.0), (5,)),
}


@DT
@pytest.mark.parametrize("case", list(GEMM_CASES))
def test_gemm(rng, case, dtype):
    attrs, c_shape = GEMM_CASES[case]
    k, m = 6, 5
    w = rand(rng, (m, k) if attrs.get("transB") else (k, m), dtype)
    inits = [tensor("B", w)]
    inputs = ["A", "B"]
    c = None
    if c_shape is not None:
        c = rand(rng, c_shape, dtype)
        inits.append(tensor("C", c))
        inputs.append("C")
    model = single("Gemm", inputs, attrs, initializers=inits, graph_inputs=[("A", [2, k])],
                   dtype=dtype)
    x = rand(rng, (2, k), dtype)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    # alpha * (sum) + beta * c: two more products
    mag = abs(alpha) * sum_magnitude(k, x, w) + (abs(beta) * np.max(np.abs(c)) if c is not None
                                                 else 0.0)
    check(model, x, "sum", k + 2, mag)


@DT
@pytest.mark.parametrize("c_shape", [(2, 5), (2, 1)], ids=["mn", "m1"])
def test_gemm_bias_over_the_batch(rng, c_shape, dtype):
    """C of shape (M, N) or (M, 1) with a static batch M = 2: it varies over
    the batch axis, so the import matches or refuses naming C."""
    w, c = rand(rng, (6, 5), dtype), rand(rng, c_shape, dtype)
    model = single("Gemm", ["A", "B", "C"], initializers=[tensor("B", w), tensor("C", c)],
                   graph_inputs=[("A", [2, 6])], dtype=dtype)
    x = rand(rng, (2, 6), dtype)
    check_or_refuse(model, x, ["C"], "sum", 8, sum_magnitude(6, x, w) + 1)


@DT
def test_gemm_trans_a(rng, dtype):
    """transA on the graph input transposes the batch axis: the import either
    matches onnxruntime or refuses with a ValueError that names transA."""
    w = rand(rng, (4, 5), dtype)
    model = single("Gemm", ["A", "B"], dict(transA=1), initializers=[tensor("B", w)],
                   graph_inputs=[("A", [4, 3])], dtype=dtype)
    x = rand(rng, (4, 3), dtype)
    check_or_refuse(model, x, ["transA", "axis 0", "batch"], "sum", 4, sum_magnitude(4, x, w))


@DT
def test_gemm_with_input_c(rng, dtype):
    """C a graph input (tensor-tensor): the bias added per call, or refused
    naming C (the contract asks for a constant C)."""
    w = rand(rng, (6, 5), dtype)
    model = single("Gemm", ["A", "B", "C"], dict(beta=0.5), initializers=[tensor("B", w)],
                   graph_inputs=[("A", ["N", 6]), ("C", ["N", 5])], dtype=dtype)
    x, c = rand(rng, (2, 6), dtype), rand(rng, (2, 5), dtype)
    check_or_refuse(model, [x, c], ["C"], "sum", 8, sum_magnitude(6, x, w) + 0.5)


MATMUL_CASES = {
    # name: (input shape, constant shape, constant on the left)
    "2d": ((2, 6), (6, 5), False),
    "3d": ((2, 3, 6), (6, 5), False),
    "4d_map_last_axis": ((2, 3, 4, 6), (6, 5), False),
    # beyond "a run-time A times a constant B": matched or refused
    "const_left_3d": ((2, 6, 4), (5, 6), True),
    "batched_const": ((2, 3, 5, 6), (3, 6, 4), False),
}
MATMUL_OPTIONAL = {"const_left_3d", "batched_const"}


@DT
@pytest.mark.parametrize("case", list(MATMUL_CASES))
def test_matmul_with_constant(rng, case, dtype):
    x_shape, w_shape, left = MATMUL_CASES[case]
    w = rand(rng, w_shape, dtype)
    model = single("MatMul", ["W", "X"] if left else ["X", "W"], initializers=[tensor("W", w)],
                   graph_inputs=[("X", ["N"] + list(x_shape[1:]))], dtype=dtype)
    x = rand(rng, x_shape, dtype)
    n = 6
    if case in MATMUL_OPTIONAL:
        check_or_refuse(model, x, ["matmul_node"], "sum", n, sum_magnitude(n, x, w))
    else:
        check(model, x, "sum", n, sum_magnitude(n, x, w))


# ==========================================================================
# BatchNormalization
# ==========================================================================
def bn_params(rng, c, dtype):
    scale = rand(rng, (c,), dtype, 0.5, 1.5)
    bias = rand(rng, (c,), dtype)
    mean = rand(rng, (c,), dtype)
    var = rand(rng, (c,), dtype, 0.25, 2.0)
    return [tensor("bn_s", scale), tensor("bn_b", bias), tensor("bn_m", mean),
            tensor("bn_v", var)], scale, var


def bn_node(x, y, opset, **attrs):
    if opset < 9:
        attrs.setdefault("spatial", 1)
    return helper.make_node("BatchNormalization", [x, "bn_s", "bn_b", "bn_m", "bn_v"], [y],
                            name="bn", epsilon=1e-3, **attrs)


@DT_LAYOUT
@pytest.mark.parametrize("opset", [7, 9, 14, 15])
@pytest.mark.parametrize("shape", [(2, 4, 5, 6), (2, 4), (2, 4, 7)], ids=["4d", "2d", "3d"])
def test_batchnorm_alone(rng, shape, opset, dtype, after_conv):
    c = shape[1]
    inits, scale, var = bn_params(rng, c, dtype)
    model = make_model([bn_node("X", "Y", opset)], [("X", ["N"] + list(shape[1:]))], ["Y"],
                       inits, opset, dtype)
    x = rand(rng, shape, dtype)
    # y = (x - mean) * (scale / sqrt(var + eps)) + bias: a few roundings of
    # terms bounded by (|x| + |mean|) * max multiplier + |bias|
    mult = float(np.max(np.abs(scale) / np.sqrt(var + 1e-3)))
    check(behind_conv(model, after_conv), x, "sum", 6, 2 * mult + 1)


@DT
@pytest.mark.parametrize("shared", [False, True], ids=["folded", "conv_also_output"])
def test_batchnorm_after_conv(rng, dtype, shared):
    """Conv -> BN (foldable), and Conv read by BN and as a graph output (the
    BN cannot fold into the conv the output needs)."""
    w, b = rand(rng, (5, 3, 3, 3), dtype), rand(rng, (5,), dtype)
    inits, scale, var = bn_params(rng, 5, dtype)
    nodes = [helper.make_node("Conv", ["X", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             bn_node("c", "Y", 15),
             helper.make_node("Relu", ["Y"], ["R"], name="relu")]
    outputs = ["R", "c"] if shared else ["R"]
    model = make_model(nodes, [("X", ["N", 3, 6, 7])], outputs,
                       inits + [tensor("W", w), tensor("B", b)], 15, dtype)
    x = rand(rng, (2, 3, 6, 7), dtype)
    mult = float(np.max(np.abs(scale) / np.sqrt(var + 1e-3)))
    conv_mag = sum_magnitude(27, x, w, bias=b)
    theirs, _ = ort_run(model, x)
    ours, m = fc_run(model, x)
    compare(ours[:1], theirs[:1], "sum", 27 + 6, mult * (conv_mag + 1) + 1)
    if shared:
        compare(ours[1:], theirs[1:], "sum", 27, conv_mag)


# ==========================================================================
# Activations
# ==========================================================================
ACTIVATIONS = {
    # name: (op_type, attrs, opset, tolerance)
    "relu": ("Relu", {}, 14, "exact"),
    "leaky_relu": ("LeakyRelu", dict(alpha=0.1), 16, "exact_or_1"),
    "leaky_relu_default": ("LeakyRelu", {}, 9, "exact_or_1"),
    "sigmoid": ("Sigmoid", {}, 13, "ulp"),
    "tanh": ("Tanh", {}, 13, "ulp"),
    "hard_sigmoid": ("HardSigmoid", {}, 7, "ulp"),
    "hard_sigmoid_ab": ("HardSigmoid", dict(alpha=0.25, beta=0.4), 10, "ulp"),
    "hard_swish": ("HardSwish", {}, 14, "ulp"),
    "clip_attrs_7": ("Clip", dict(min=-0.5, max=0.25), 7, "exact"),
    "clip_attrs_default_max": ("Clip", dict(min=0.0), 9, "exact"),
    "clip_attrs_max_only": ("Clip", dict(max=0.3), 10, "exact"),
}


@DT_LAYOUT
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 7)], ids=["4d", "2d"])
@pytest.mark.parametrize("case", list(ACTIVATIONS))
def test_activation(rng, case, shape, dtype, after_conv):
    op, attrs, opset, tol = ACTIVATIONS[case]
    model = single(op, ["X"], attrs, graph_inputs=[("X", ["N"] + list(shape[1:]))],
                   opset=opset, dtype=dtype)
    x = rand(rng, shape, dtype, -4, 4)
    # alpha and beta (and their defaults) are float32 attributes: a float64
    # graph computes with their float32 values, as onnxruntime and
    # onnx.reference do
    if tol == "exact_or_1":
        # alpha * x: one rounding, in either implementation
        check(behind_conv(model, after_conv), x, "sum", 1, np.abs(x))
    else:
        check(behind_conv(model, after_conv), x, tol)


CLIP_INPUT_FORMS = {"both": (-0.5, 0.25), "min_only": (-0.5, None), "max_only": (None, 0.25),
                    "none": (None, None), "relu6": (0.0, 6.0)}


@DT
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("form", list(CLIP_INPUT_FORMS))
def test_clip_input_form(rng, form, opset, dtype):
    lo, hi = CLIP_INPUT_FORMS[form]
    inits, inputs = [], ["X"]
    for name, v in (("lo", lo), ("hi", hi)):
        if v is None:
            inputs.append("")
        else:
            inits.append(tensor(name, np.array(v, dtype)))
            inputs.append(name)
    while inputs[-1] == "":
        inputs.pop()
    model = single("Clip", inputs, initializers=inits, graph_inputs=[("X", ["N", 3, 4, 5])],
                   opset=opset, dtype=dtype)
    check(model, rand(rng, (2, 3, 4, 5), dtype, -8, 8), "exact")


@DT
def test_clip_min_from_constant_node(rng, dtype):
    """Clip's bounds from Constant nodes (as torch.onnx writes them)."""
    nodes = [helper.make_node("Constant", [], ["lo"], value=tensor("v", np.array(0, dtype))),
             helper.make_node("Constant", [], ["hi"], value=tensor("v", np.array(6, dtype))),
             helper.make_node("Clip", ["X", "lo", "hi"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y"], opset=13, dtype=dtype)
    check(model, rand(rng, (2, 3, 4, 5), dtype, -8, 8), "exact")


PRELU_SLOPES = {"per_channel": (3, 1, 1), "scalar": (1,), "full": (3, 4, 5), "0d": ()}


@DT_LAYOUT
@pytest.mark.parametrize("slope", list(PRELU_SLOPES))
def test_prelu(rng, slope, dtype, after_conv):
    s = rand(rng, PRELU_SLOPES[slope], dtype)
    model = single("PRelu", ["X", "S"], initializers=[tensor("S", s)],
                   graph_inputs=[("X", ["N", 3, 4, 5])], opset=16, dtype=dtype)
    x = rand(rng, (2, 3, 4, 5), dtype)
    check(behind_conv(model, after_conv), x, "sum", 1, np.abs(x))


# ==========================================================================
# Softmax
# ==========================================================================
SOFTMAX_CASES = {
    # name: (shape, axis or None for the default, opset)
    "2d_default_11": ((2, 10), None, 11),
    "2d_default_13": ((2, 10), None, 13),
    "4d_axis1_11_flattens": ((2, 3, 4, 5), 1, 11),
    "4d_axis2_11_flattens": ((2, 3, 4, 5), 2, 11),
    "4d_axis1_13": ((2, 3, 4, 5), 1, 13),
    "4d_axis_last_13": ((2, 3, 4, 5), -1, 13),
    "4d_default_13": ((2, 3, 4, 5), None, 13),
    "3d_axis_last_11": ((2, 4, 6), -1, 11),
    "3d_axis1_13": ((2, 4, 6), 1, 13),
}


@DT_LAYOUT
@pytest.mark.parametrize("case", list(SOFTMAX_CASES))
def test_softmax(rng, case, dtype, after_conv):
    shape, axis, opset = SOFTMAX_CASES[case]
    attrs = {} if axis is None else dict(axis=axis)
    model = single("Softmax", ["X"], attrs, graph_inputs=[("X", ["N"] + list(shape[1:]))],
                   opset=opset, dtype=dtype)
    x = rand(rng, shape, dtype, -3, 3)
    if opset < 13:
        # coerced to 2-D at axis: the softmax runs over all axes from `axis` on
        length = math.prod(shape[(1 if axis is None else axis % len(shape)):])
    else:
        length = shape[-1 if axis is None else axis]
    # Relative error of each implementation: x - max rounds by u * |x - max|
    # <= 6u (inputs in [-3, 3]) before exp, which is within ULPS / 2 ulp; the
    # sum of `length` exps and the division within gamma_{length + 2}.
    eps = np.finfo(dtype).eps
    rel = 2 * (gamma(length + 2, dtype) + (ULPS / 2 + 6) * eps)
    check(behind_conv(model, after_conv), x, "rel", rel)


# ==========================================================================
# Add / Sub / Mul / Div
# ==========================================================================
X4 = (2, 3, 4, 5)
BINARY_CASES = {
    # name: (shape of X, shape of the other operand, other is constant, const on the left)
    "tensor_tensor": (X4, X4, False, False),
    "tensor_tensor_bcast_n111": (X4, (2, 1, 1, 1), False, False),
    "tensor_tensor_bcast_nc11": (X4, (2, 3, 1, 1), False, False),
    "tensor_tensor_bcast_other_bigger": ((2, 3, 1, 1), X4, False, False),
    "const_c11": (X4, (3, 1, 1), True, False),
    "const_1c11": (X4, (1, 3, 1, 1), True, False),
    "const_scalar": (X4, (), True, False),
    "const_1": (X4, (1,), True, False),
    "const_last_axis": (X4, (5,), True, False),
    "const_hw": (X4, (4, 5), True, False),
    "const_full": (X4, (1, 3, 4, 5), True, False),
    "const_left_c11": (X4, (3, 1, 1), True, True),
    "const_left_scalar": (X4, (), True, True),
    "2d_const_row": ((2, 6), (6,), True, False),
    "2d_const_left": ((2, 6), (1, 6), True, True),
    "2d_tensor_tensor": ((2, 6), (2, 6), False, False),
    "3d_const": ((2, 4, 6), (4, 1), True, False),
}


@DT_LAYOUT
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("case", list(BINARY_CASES))
def test_binary(rng, case, op, dtype, after_conv):
    x_shape, o_shape, const, left = BINARY_CASES[case]
    x = rand(rng, x_shape, dtype)
    other = away_from_zero(rng, o_shape, dtype)
    if const:
        inputs = ["K", "X"] if left else ["X", "K"]
        model = single(op, inputs, initializers=[tensor("K", other)],
                       graph_inputs=[("X", ["N"] + list(x_shape[1:]))], opset=14, dtype=dtype)
        feeds = x
    else:
        graph_inputs = [("X", ["N"] + list(x_shape[1:])),
                        ("Z", (["N"] + list(o_shape[1:])) if len(o_shape) == len(x_shape)
                         else list(o_shape))]
        model = single(op, ["X", "Z"], graph_inputs=graph_inputs, opset=14, dtype=dtype)
        feeds = [x, other]
    # one correctly rounded operation; a division by a constant may be
    # computed as a product with its reciprocal (two roundings)
    if op == "Div":
        check(behind_conv(model, after_conv), feeds, "rel", 2 * gamma(2, dtype))
    else:
        check(behind_conv(model, after_conv), feeds, "exact")


@pytest.mark.parametrize("opset", [7, 13])
def test_binary_older_opsets(rng, opset):
    """Multidirectional broadcasting since opset 7."""
    k = away_from_zero(rng, (3, 1, 1), np.float32)
    nodes = [helper.make_node("Mul", ["X", "K"], ["m"]), helper.make_node("Add", ["m", "X"],
                                                                         ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y"], [tensor("K", k)], opset)
    x = rand(rng, (2, 3, 4, 5), np.float32)
    check(model, x, "sum", 2, 2 * np.abs(x) * 1.5)


# ==========================================================================
# Concat, Split, Slice
# ==========================================================================
@DT_LAYOUT
@pytest.mark.parametrize("axis", [1, -1, 2, 3, -3])
def test_concat(rng, axis, dtype, after_conv):
    shapes = [[2, 3, 4, 5], [2, 3, 4, 5], [2, 3, 4, 5]]
    for i, s in enumerate(shapes):
        s[axis] += i
    nodes = [helper.make_node("Concat", ["A", "B", "C"], ["Y"], axis=axis)]
    model = make_model(nodes, [(n, ["N"] + s[1:]) for n, s in zip("ABC", shapes)], ["Y"],
                       opset=13, dtype=dtype)
    check(behind_conv(model, after_conv), [rand(rng, s, dtype) for s in shapes])


@DT
@pytest.mark.parametrize("axis", [1, -1])
def test_concat_2d(rng, axis, dtype):
    nodes = [helper.make_node("Concat", ["A", "B"], ["Y"], axis=axis)]
    model = make_model(nodes, [("A", ["N", 4]), ("B", ["N", 3])], ["Y"], opset=11, dtype=dtype)
    check(model, [rand(rng, (2, 4), dtype), rand(rng, (2, 3), dtype)])


SPLIT_CASES = {
    # name: (opset, axis, split (attribute < 13, input >= 13) or None, num_outputs, outputs)
    "equal_11": (11, 1, None, None, 2),
    "attr_11": (11, 1, [2, 4], None, 2),
    "attr_axis_last_11": (11, -1, [1, 3, 1], None, 3),
    "attr_axis2_7": (7, 2, [1, 3], None, 2),
    "input_13": (13, 1, [2, 4], None, 2),
    "input_axis3_13": (13, 3, [3, 2], None, 2),
    "equal_13": (13, 1, None, None, 3),
    "num_outputs_18": (18, 1, None, 2, 2),
    "num_outputs_uneven_18": (18, -1, None, 2, 2),
    "num_outputs3_18": (18, 1, None, 3, 3),
    "input_18": (18, 2, [3, 1], None, 2),
}


@DT_LAYOUT
@pytest.mark.parametrize("case", list(SPLIT_CASES))
def test_split(rng, case, dtype, after_conv):
    opset, axis, split, num_outputs, n_out = SPLIT_CASES[case]
    shape = (2, 6, 4, 5)
    attrs, inputs, inits = dict(axis=axis), ["X"], []
    if split is not None and opset < 13:
        attrs["split"] = split
    elif split is not None:
        inputs.append("split")
        inits.append(ints("split", split))
    if num_outputs is not None:
        attrs["num_outputs"] = num_outputs
    model = single("Split", inputs, attrs, initializers=inits,
                   graph_inputs=[("X", ["N", 6, 4, 5])], opset=opset, dtype=dtype,
                   n_outputs=n_out)
    check(behind_conv(model, after_conv), rand(rng, shape, dtype))


INT64_MAX = 2**63 - 1
SLICE_CASES = {
    # name: (starts, ends, axes or None, steps or None)
    "hw": ([1, 0], [3, 4], [2, 3], None),
    "channels": ([1], [3], [1], None),
    "negative": ([-3, -4], [-1, -1], [2, 3], None),
    "steps2": ([0, 1], [4, 5], [2, 3], [2, 2]),
    "negative_step": ([-1], [-INT64_MAX], [3], [-1]),
    "negative_step2": ([3, 4], [0, 0], [2, 3], [-2, -1]),
    "clamped_end": ([1], [INT64_MAX], [3], None),
    "clamped_big": ([0, 2], [100, 1000], [1, 2], None),
    "axes_negative": ([1], [-1], [-1], None),
    "no_axes": ([0, 1, 1], [2**62, 3, 3], None, None),
    "channel_step": ([0], [6], [1], [2]),
    "empty_start_past_end": ([0, 2], [2, 2**40], [1, 3], [1, 1]),
}


@DT_LAYOUT
@pytest.mark.parametrize("case", list(SLICE_CASES))
def test_slice(rng, case, dtype, after_conv):
    starts, ends, axes, steps = SLICE_CASES[case]
    if axes is None:
        # slicing from axis 0 on: the batch axis taken whole
        starts, ends = [0] + starts[1:], [INT64_MAX] + ends[1:]
    inputs, inits = ["X", "starts", "ends"], [ints("starts", starts), ints("ends", ends)]
    if axes is not None or steps is not None:
        inputs.append("axes")
        inits.append(ints("axes", axes if axes is not None else list(range(len(starts)))))
    if steps is not None:
        inputs.append("steps")
        inits.append(ints("steps", steps))
    model = single("Slice", inputs, initializers=inits, graph_inputs=[("X", ["N", 6, 4, 5])],
                   opset=13, dtype=dtype)
    check(behind_conv(model, after_conv), rand(rng, (2, 6, 4, 5), dtype))


@pytest.mark.parametrize("axes", [[2, 3], None], ids=["axes", "no_axes"])
def test_slice_attribute_form_opset9(rng, axes):
    attrs = dict(starts=[0, 1], ends=[3, -1])
    if axes is not None:
        attrs["axes"] = axes
    else:
        attrs = dict(starts=[0, 1, 1], ends=[INT64_MAX, 5, -1])
    model = single("Slice", ["X"], attrs, graph_inputs=[("X", ["N", 6, 4, 5])], opset=9)
    check(model, rand(rng, (2, 6, 4, 5), np.float32))


# ==========================================================================
# Reshape, Flatten, Transpose, Squeeze, Unsqueeze
# ==========================================================================
RESHAPE_CASES = {
    "flatten": [0, -1],
    "c_hw": [0, 6, -1],
    "hw_last": [0, -1, 5],
    "split_channels": [0, 2, 3, 4, 5],
    "to_4d": [0, 3, 2, 20],
    "keep_all": [0, 0, 0, 0],
    "minus_one_mid": [0, 0, -1, 10],
}


@DT_LAYOUT
@pytest.mark.parametrize("case", list(RESHAPE_CASES))
def test_reshape(rng, case, dtype, after_conv):
    model = single("Reshape", ["X", "shape"], initializers=[ints("shape", RESHAPE_CASES[case])],
                   graph_inputs=[("X", ["N", 6, 4, 5])], opset=14, dtype=dtype)
    check(behind_conv(model, after_conv), rand(rng, (2, 6, 4, 5), dtype))


def test_reshape_then_gemm(rng):
    """Reshape of a map feeding a Gemm: the row order must be NCHW's."""
    w = rand(rng, (24, 5), np.float32)
    nodes = [helper.make_node("Reshape", ["X", "shape"], ["r"]),
             helper.make_node("Gemm", ["r", "W"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 2, 3, 4])], ["Y"],
                       [ints("shape", [0, 24]),
                        tensor("W", w)], 13)
    x = rand(rng, (2, 2, 3, 4), np.float32)
    check(model, x, "sum", 24, sum_magnitude(24, x, w))


@DT_LAYOUT
@pytest.mark.parametrize("axis", [1, 2, 3])
def test_flatten(rng, axis, dtype, after_conv):
    """axis 1 keeps the batch alone; axis 2 and 3 merge it with channels (an
    op on the batch axis: matched or refused naming the batch)."""
    model = single("Flatten", ["X"], dict(axis=axis), graph_inputs=[("X", ["N", 3, 4, 5])],
                   opset=13, dtype=dtype)
    x = rand(rng, (2, 3, 4, 5), dtype)
    if axis == 1:
        check(behind_conv(model, after_conv), x)
    else:
        check_or_refuse(behind_conv(model, after_conv), x, ["batch"])


@pytest.mark.parametrize("opset", [9, 13])
def test_flatten_then_gemm(rng, opset):
    """Flatten -> Gemm (a classifier head): the weights' rows follow NCHW."""
    w, b = rand(rng, (5, 60), np.float32), rand(rng, (5,), np.float32)
    nodes = [helper.make_node("Flatten", ["X"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "W", "B"], ["Y"], transB=1)]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y"], [tensor("W", w), tensor("B", b)],
                       opset)
    x = rand(rng, (2, 3, 4, 5), np.float32)
    check(model, x, "sum", 60, sum_magnitude(60, x, w, bias=b))


TRANSPOSE_CASES = {
    "nhwc": [0, 2, 3, 1],
    "swap_hw": [0, 1, 3, 2],
    "cycle": [0, 3, 1, 2],
    "identity": [0, 1, 2, 3],
}


@DT_LAYOUT
@pytest.mark.parametrize("case", list(TRANSPOSE_CASES))
def test_transpose(rng, case, dtype, after_conv):
    model = single("Transpose", ["X"], dict(perm=TRANSPOSE_CASES[case]),
                   graph_inputs=[("X", ["N", 3, 4, 5])], opset=13, dtype=dtype)
    check(behind_conv(model, after_conv), rand(rng, (2, 3, 4, 5), dtype))


def test_transpose_3d_and_back(rng):
    """A (N, C, L) -> (N, L, C) -> MatMul -> back, as sequence models do."""
    w = rand(rng, (3, 4), np.float32)
    nodes = [helper.make_node("Transpose", ["X"], ["t"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t", "W"], ["m"]),
             helper.make_node("Transpose", ["m"], ["Y"], perm=[0, 2, 1])]
    model = make_model(nodes, [("X", ["N", 3, 7])], ["Y"], [tensor("W", w)], 13)
    x = rand(rng, (2, 3, 7), np.float32)
    check(model, x, "sum", 3, sum_magnitude(3, x, w))


@DT_LAYOUT
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[2, 3], [-1, -2], None], ids=["axes", "negative", "all"])
def test_squeeze(rng, axes, opset, dtype, after_conv):
    inputs, inits, attrs = ["X"], [], {}
    if axes is not None and opset < 13:
        attrs["axes"] = axes
    elif axes is not None:
        inputs.append("axes")
        inits.append(ints("axes", axes))
    model = single("Squeeze", inputs, attrs, initializers=inits,
                   graph_inputs=[("X", [2, 6, 1, 1] if axes is None else ["N", 6, 1, 1])],
                   opset=opset, dtype=dtype)
    check(behind_conv(model, after_conv), rand(rng, (2, 6, 1, 1), dtype))


@DT
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[2, 3], [-1], [1]], ids=["hw", "last", "one"])
def test_unsqueeze(rng, axes, opset, dtype):
    inputs, inits, attrs = ["X"], [], {}
    if opset < 13:
        attrs["axes"] = axes
    else:
        inputs.append("axes")
        inits.append(ints("axes", axes))
    model = single("Unsqueeze", inputs, attrs, initializers=inits,
                   graph_inputs=[("X", ["N", 6])], opset=opset, dtype=dtype)
    check(model, rand(rng, (2, 6), dtype))


@DT_LAYOUT
@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle(rng, groups, dtype, after_conv):
    """ShuffleNet's channel shuffle: Reshape to (N, g, C/g, H, W), Transpose
    (0, 2, 1, 3, 4), Reshape back to (N, C, H, W); then a Conv, so the
    shuffled order reaches the weights."""
    c = 6
    w = rand(rng, (4, c, 1, 1), dtype)
    nodes = [helper.make_node("Reshape", ["X", "s5"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s4"], ["sh"]),
             helper.make_node("Conv", ["sh", "W"], ["Y"])]
    model = make_model(nodes, [("X", ["N", c, 4, 5])], [("Y", ["N", 4, 4, 5])],
                       [ints("s5", [0, groups, c // groups, 4, 5]), ints("s4", [0, c, 4, 5]),
                        tensor("W", w)], 13, dtype)
    x = rand(rng, (2, c, 4, 5), dtype)
    check(behind_conv(model, after_conv), x, "sum", c, sum_magnitude(c, x, w))


def test_squeeze_then_unsqueeze_around_gemm(rng):
    """GlobalAveragePool -> Squeeze -> Gemm -> Unsqueeze(2, 3) -> Mul with the map
    (a squeeze-excitation block)."""
    w = rand(rng, (4, 4), np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["X"], ["g"]),
             helper.make_node("Squeeze", ["g", "axes"], ["s"]),
             helper.make_node("Gemm", ["s", "W"], ["e"]),
             helper.make_node("Sigmoid", ["e"], ["sig"]),
             helper.make_node("Unsqueeze", ["sig", "axes"], ["u"]),
             helper.make_node("Mul", ["X", "u"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 4, 5, 6])], ["Y"],
                       [ints("axes", [2, 3]), tensor("W", w)], 13)
    x = rand(rng, (2, 4, 5, 6), np.float32)
    # the mean (30 terms, |mean| <= 1), the gemm (4 products <= 1: |e| <= 4,
    # M = 4 + 1 with the mean's error carried), the sigmoid (Lipschitz 1/4,
    # ULPS ulp of a value < 1, counted as ULPS more roundings) and the product
    # with |x| <= 1 (one rounding): n = 30 + 4 + ULPS + 1, M = 5.
    check(model, x, "sum", 35 + ULPS, 5.0)


# ==========================================================================
# Pools
# ==========================================================================
POOL_CASES = {
    # name: (attrs, spatial)
    "k2s2": (dict(kernel_shape=[2, 2], strides=[2, 2]), (6, 8)),
    "k3s2": (dict(kernel_shape=[3, 3], strides=[2, 2]), (7, 8)),
    "k3s1_pads": (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), (5, 6)),
    "k3s2_ceil": (dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), (8, 9)),
    "k2s2_ceil_odd": (dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), (7, 9)),
    "k3s2_ceil_pads": (dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1,
                            pads=[1, 1, 1, 1]), (8, 7)),
    "asym_pads": (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]), (8, 8)),
    "asym_pads_other": (dict(kernel_shape=[2, 3], strides=[1, 2], pads=[1, 0, 0, 2]), (6, 7)),
    "same_upper": (dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"), (7, 8)),
    "same_lower": (dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_LOWER"), (7, 8)),
    "same_upper_s1": (dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER"), (5, 6)),
    "valid": (dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"), (7, 8)),
    "rect": (dict(kernel_shape=[1, 3], strides=[1, 2], pads=[0, 1, 0, 1]), (4, 9)),
    "1d": (dict(kernel_shape=[3], strides=[2], pads=[1, 1]), (9,)),
}


@DT_LAYOUT
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_maxpool(rng, case, dtype, after_conv):
    attrs, spatial = POOL_CASES[case]
    model = single("MaxPool", ["X"], attrs, graph_inputs=[("X", ["N", 3] + list(spatial))],
                   opset=12, dtype=dtype)
    check(behind_conv(model, after_conv), rand(rng, (2, 3) + spatial, dtype))


@DT
@pytest.mark.parametrize("dilations", [[2, 2], [1, 2]])
def test_maxpool_dilations(rng, dilations, dtype):
    model = single("MaxPool", ["X"], dict(kernel_shape=[2, 2], dilations=dilations,
                                          pads=[1, 1, 0, 0]),
                   graph_inputs=[("X", ["N", 3, 7, 8])], opset=12, dtype=dtype)
    # the contract asks for MaxPool dilations "if you can"
    check_or_refuse(model, rand(rng, (2, 3, 7, 8), dtype), ["dilations"])


@pytest.mark.parametrize("opset", [7, 10])
def test_maxpool_older_opsets(rng, opset):
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    if opset >= 10:
        attrs["ceil_mode"] = 1
    model = single("MaxPool", ["X"], attrs, graph_inputs=[("X", ["N", 3, 8, 8])], opset=opset)
    check(model, rand(rng, (2, 3, 8, 8), np.float32))


@DT_LAYOUT
@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", list(POOL_CASES))
def test_average_pool(rng, case, count_include_pad, dtype, after_conv):
    attrs, spatial = POOL_CASES[case]
    attrs = dict(attrs, count_include_pad=count_include_pad)
    model = single("AveragePool", ["X"], attrs, graph_inputs=[("X", ["N", 3] + list(spatial))],
                   opset=19, dtype=dtype)
    x = rand(rng, (2, 3) + spatial, dtype)
    # a sum of at most k terms times 1/count (or divided by it): n = k + 1
    # products of magnitude <= max|x| each, over the mean's k terms
    k = math.prod(attrs["kernel_shape"])
    check(behind_conv(model, after_conv), x, "sum", k + 1, float(np.max(np.abs(x))))


@DT_LAYOUT
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("spatial", [(5, 6), (1, 1), (7,)], ids=["5x6", "1x1", "1d"])
def test_global_pool(rng, op, spatial, dtype, after_conv):
    model = single(op, ["X"], graph_inputs=[("X", ["N", 4] + list(spatial))], opset=13,
                   dtype=dtype)
    x = rand(rng, (2, 4) + spatial, dtype)
    if op == "GlobalMaxPool":
        check(behind_conv(model, after_conv), x)
    else:
        k = math.prod(spatial)
        check(behind_conv(model, after_conv), x, "sum", k + 1, float(np.max(np.abs(x))))


@DT_LAYOUT
@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [[2, 3], [-2, -1], [3]], ids=["hw", "negative", "w"])
def test_reduce_mean(rng, axes, keepdims, opset, dtype, after_conv):
    attrs, inputs, inits = dict(keepdims=keepdims), ["X"], []
    if opset < 18:
        attrs["axes"] = axes
    else:
        inputs.append("axes")
        inits.append(ints("axes", axes))
    model = single("ReduceMean", inputs, attrs, initializers=inits,
                   graph_inputs=[("X", ["N", 4, 5, 6])], opset=opset, dtype=dtype)
    x = rand(rng, (2, 4, 5, 6), dtype)
    k = 30 if len(axes) == 2 else 6
    check(behind_conv(model, after_conv), x, "sum", k + 1, float(np.max(np.abs(x))))


# ==========================================================================
# Resize, Upsample
# ==========================================================================
RESIZE_CASES = {
    # name: (attrs, scales or None, sizes or None)
    "nearest_asym_floor_x2": (dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                   nearest_mode="floor"), [1, 1, 2, 2], None),
    "nearest_asym_floor_x3x2": (dict(mode="nearest",
                                     coordinate_transformation_mode="asymmetric",
                                     nearest_mode="floor"), [1, 1, 3, 2], None),
    "nearest_default_x2": (dict(mode="nearest"), [1, 1, 2, 2], None),
    "nearest_asym_floor_sizes": (dict(mode="nearest",
                                      coordinate_transformation_mode="asymmetric",
                                      nearest_mode="floor"), None, [2, 3, 8, 15]),
    "nearest_half_pixel_x2": (dict(mode="nearest", coordinate_transformation_mode="half_pixel"),
                              [1, 1, 2, 2], None),
    "nearest_half_pixel_sizes": (dict(mode="nearest",
                                      coordinate_transformation_mode="half_pixel"),
                                 None, [2, 3, 9, 13]),
    "nearest_half_pixel_down": (dict(mode="nearest",
                                     coordinate_transformation_mode="half_pixel"),
                                [1, 1, 0.5, 0.5], None),
    "linear_half_pixel_x2": (dict(mode="linear", coordinate_transformation_mode="half_pixel"),
                             [1, 1, 2, 2], None),
    "linear_half_pixel_sizes": (dict(mode="linear", coordinate_transformation_mode="half_pixel"),
                                None, [2, 3, 9, 13]),
    "linear_align_corners_x2": (dict(mode="linear",
                                     coordinate_transformation_mode="align_corners"),
                                [1, 1, 2, 2], None),
    "linear_align_corners_sizes": (dict(mode="linear",
                                        coordinate_transformation_mode="align_corners"),
                                   None, [2, 3, 7, 11]),
    "linear_pytorch_half_pixel_x2": (dict(mode="linear",
                                          coordinate_transformation_mode="pytorch_half_pixel"),
                                     [1, 1, 2, 2], None),
    "linear_asymmetric_x2": (dict(mode="linear", coordinate_transformation_mode="asymmetric"),
                             [1, 1, 2, 2], None),
    "linear_half_pixel_down": (dict(mode="linear", coordinate_transformation_mode="half_pixel"),
                               [1, 1, 0.5, 0.5], None),
}


def resize_tolerance(case, dtype, x, out_hw):
    """Nearest selects (exact). Linear: per output a convex combination of 4
    inputs (n = 4 products + the weights' 2 roundings) plus the coordinate
    transform computed in float: its error, about 3 roundings of a value <=
    the output size, moves the weights by that much and so the result by at
    most that times the largest input difference (2 max|x|) per axis."""
    if case.startswith("nearest"):
        return dict(tol="exact")
    size = max(out_hw)
    big = float(np.max(np.abs(x)))
    return dict(tol="sum", n=6 + 2 * 3 * size, magnitude=2 * big)


@DT_LAYOUT
@pytest.mark.parametrize("opset", [11, 13, 19])
@pytest.mark.parametrize("case", list(RESIZE_CASES))
def test_resize(rng, case, opset, dtype, after_conv):
    attrs, scales, sizes = RESIZE_CASES[case]
    inits = []
    if opset < 13:
        inits.append(tensor("roi", np.zeros(0, np.float32)))
        inputs = ["X", "roi"]
    else:
        inputs = ["X", ""]
    if scales is not None:
        inits.append(tensor("scales", np.array(scales, np.float32)))
        inputs.append("scales")
    else:
        inits.append(tensor("scales", np.zeros(0, np.float32)))
        inputs += ["scales", "sizes"]
        inits.append(ints("sizes", sizes))
    # sizes name the batch (2): a static batch then
    batch = "N" if sizes is None else 2
    model = single("Resize", inputs, attrs, initializers=inits,
                   graph_inputs=[("X", [batch, 3, 5, 6])], opset=opset, dtype=dtype)
    x = rand(rng, (2, 3, 5, 6), dtype)
    out_hw = sizes[2:] if sizes else [int(5 * scales[2]), int(6 * scales[3])]
    check(behind_conv(model, after_conv), x, **resize_tolerance(case, dtype, x, out_hw))


@DT
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_opset10(rng, mode, dtype):
    """Opset 10: scales only, the asymmetric transform (nearest: floor)."""
    model = single("Resize", ["X", "scales"], dict(mode=mode),
                   initializers=[tensor("scales", np.array([1, 1, 2, 2], np.float32))],
                   graph_inputs=[("X", ["N", 3, 4, 5])], opset=10, dtype=dtype)
    x = rand(rng, (2, 3, 4, 5), dtype)
    check(model, x, **resize_tolerance(mode, dtype, x, [8, 10]))


@DT_LAYOUT
@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample(rng, mode, opset, dtype, after_conv):
    scales = [1.0, 1.0, 2.0, 3.0]
    if opset == 7:
        model = single("Upsample", ["X"], dict(mode=mode, scales=scales),
                       graph_inputs=[("X", ["N", 3, 4, 5])], opset=7, dtype=dtype)
    else:
        model = single("Upsample", ["X", "scales"], dict(mode=mode),
                       initializers=[tensor("scales", np.array(scales, np.float32))],
                       graph_inputs=[("X", ["N", 3, 4, 5])], opset=9, dtype=dtype)
    x = rand(rng, (2, 3, 4, 5), dtype)
    check(behind_conv(model, after_conv), x, **resize_tolerance(mode, dtype, x, [8, 15]))


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_sizes_from_shape(rng, mode):
    """sizes = Concat(Shape(X)[0:2], [9, 13]) with a dynamic batch, as
    torch.onnx writes F.interpolate(x, size=(9, 13))."""
    attrs = dict(mode=mode, coordinate_transformation_mode="half_pixel" if mode == "linear"
                 else "asymmetric", nearest_mode="floor")
    nodes = [helper.make_node("Shape", ["X"], ["shape"]),
             helper.make_node("Slice", ["shape", "s", "e"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["X", "", "", "sizes"], ["Y"], **attrs)]
    model = make_model(nodes, [("X", ["N", 3, 5, 6])], [("Y", ["N", 3, 9, 13])],
                       [ints("s", [0]), ints("e", [2]), ints("hw", [9, 13])], opset=13)
    x = rand(rng, (2, 3, 5, 6), np.float32)
    check(model, x, **resize_tolerance(mode, np.float32, x, [9, 13]))


def test_resize_scales_from_constant_node(rng):
    """Scales from a Constant node (torch.onnx writes them so)."""
    nodes = [helper.make_node("Constant", [], ["scales"],
                              value=tensor("v", np.array([1, 1, 2, 2], np.float32))),
             helper.make_node("Resize", ["X", "", "scales"], ["Y"], mode="nearest")]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y"], opset=13)
    check(model, rand(rng, (2, 3, 4, 5), np.float32))


# ==========================================================================
# Pad
# ==========================================================================
PAD_CASES = {
    # name: (pads over (N, C, H, W) begins then ends, value)
    "hw": ([0, 0, 1, 2, 0, 0, 1, 2], 0.0),
    "asym_value": ([0, 0, 0, 1, 0, 0, 2, 0], 1.5),
    "channels": ([0, 1, 0, 0, 0, 2, 0, 0], -0.5),
    "negative_crop": ([0, 0, -1, 1, 0, 0, 1, -2], 0.0),
}


@DT_LAYOUT
@pytest.mark.parametrize("opset", [7, 11, 13, 18])
@pytest.mark.parametrize("case", list(PAD_CASES))
def test_pad_constant(rng, case, opset, dtype, after_conv):
    pads, value = PAD_CASES[case]
    if opset < 11:
        model = single("Pad", ["X"], dict(mode="constant", pads=pads, value=value),
                       graph_inputs=[("X", ["N", 3, 4, 5])], opset=opset, dtype=dtype)
    else:
        inits = [ints("pads", pads), tensor("value", np.array(value, dtype))]
        model = single("Pad", ["X", "pads", "value"], dict(mode="constant"),
                       initializers=inits, graph_inputs=[("X", ["N", 3, 4, 5])], opset=opset,
                       dtype=dtype)
    check(behind_conv(model, after_conv), rand(rng, (2, 3, 4, 5), dtype))


def test_pad_axes_input_opset18(rng):
    inits = [ints("pads", [1, 2, 0, 1]), tensor("value", np.array(0.25, np.float32)),
             ints("axes", [2, 3])]
    model = single("Pad", ["X", "pads", "value", "axes"], initializers=inits,
                   graph_inputs=[("X", ["N", 3, 4, 5])], opset=18)
    check(model, rand(rng, (2, 3, 4, 5), np.float32))


def test_pad_without_value(rng):
    model = single("Pad", ["X", "pads"], initializers=[ints("pads", [0, 0, 1, 1, 0, 0, 1, 1])],
                   graph_inputs=[("X", ["N", 3, 4, 5])], opset=13)
    check(model, rand(rng, (2, 3, 4, 5), np.float32))


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_pad_other_modes(rng, mode):
    """Reflect and edge padding: matched, or refused naming the mode."""
    model = single("Pad", ["X", "pads"], dict(mode=mode),
                   initializers=[ints("pads", [0, 0, 1, 2, 0, 0, 2, 1])],
                   graph_inputs=[("X", ["N", 3, 4, 5])], opset=13)
    x = rand(rng, (2, 3, 4, 5), np.float32)
    theirs, _ = ort_run(model, x)
    try:
        ours, _ = fc_run(model, x)
    except ValueError as exc:
        assert mode in str(exc) and "pad_node" in str(exc), str(exc)
        return
    compare(ours, theirs)


# ==========================================================================
# Identity, Dropout, Constant, shape arithmetic, Cast, ConstantOfShape
# ==========================================================================
@DT
def test_identity(rng, dtype):
    nodes = [helper.make_node("Identity", ["X"], ["i"]), helper.make_node("Relu", ["i"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y"], opset=14, dtype=dtype)
    check(model, rand(rng, (2, 3, 4, 5), dtype))


@DT
@pytest.mark.parametrize("opset", [7, 12, 13])
def test_dropout_is_identity(rng, opset, dtype):
    if opset < 12:
        node = helper.make_node("Dropout", ["X"], ["d"], ratio=0.5)
        inits = []
    else:
        node = helper.make_node("Dropout", ["X", "ratio"], ["d"])
        inits = [tensor("ratio", np.array(0.5, dtype))]
    nodes = [node, helper.make_node("Relu", ["d"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y"], inits, opset, dtype)
    check(model, rand(rng, (2, 3, 4, 5), dtype))


@DT
def test_dropout_mask_output_unused(rng, dtype):
    """Dropout with its mask output declared (as older exporters write it)."""
    nodes = [helper.make_node("Dropout", ["X"], ["d", "mask"], ratio=0.2),
             helper.make_node("Sigmoid", ["d"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 6])], ["Y"], opset=10, dtype=dtype)
    check(model, rand(rng, (2, 6), dtype), "ulp")


CONSTANT_FORMS = {
    # name: (attributes, opset, dtypes: value_float(s) are float32 by definition)
    "value_tensor": (dict(value="tensor"), 9, DTYPES),
    "value_float": (dict(value_float=0.75), 12, [np.float32]),
    "value_floats": (dict(value_floats=[0.5, -1.0, 2.0]), 12, [np.float32]),
}


@pytest.mark.parametrize("form,dtype", [(f, d) for f, v in CONSTANT_FORMS.items() for d in v[2]])
def test_constant(rng, form, dtype):
    attrs, opset, _ = CONSTANT_FORMS[form]
    k = away_from_zero(rng, (3, 1, 1), dtype)
    if attrs.get("value") == "tensor":
        attrs = dict(value=tensor("v", k))
    nodes = [helper.make_node("Constant", [], ["k"], **attrs)]
    nodes.append(helper.make_node("Mul", ["X", "k"], ["Y"]))
    x_shape = (2, 3, 4, 3) if "value_floats" in attrs else (2, 3, 4, 5)
    shape = ["N"] + list(x_shape[1:])
    model = make_model(nodes, [("X", shape)], ["Y"], opset=opset, dtype=dtype)
    check(model, rand(rng, x_shape, dtype))


def flatten_by_shape_nodes(batch_from_shape=True):
    """torch's x.view(x.size(0), -1): Shape -> Gather(0) -> Unsqueeze ->
    Concat with [-1] -> Reshape (as torch.onnx's TorchScript exporter writes it)."""
    return [
        helper.make_node("Shape", ["X"], ["shape"]),
        helper.make_node("Constant", [], ["zero"], value=ints("z", 0)),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["X", "target"], ["flat"]),
    ]


@DT
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_view_batch_minus_one(rng, batch, dtype):
    w, b = rand(rng, (60, 4), dtype), rand(rng, (4,), dtype)
    nodes = flatten_by_shape_nodes() + [helper.make_node("Gemm", ["flat", "W", "B"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], [("Y", ["N", 4])],
                       [ints("axes0", [0]), ints("minus1", [-1]), tensor("W", w),
                        tensor("B", b)], opset=13, dtype=dtype)
    x = rand(rng, (batch, 3, 4, 5), dtype)
    check(model, x, "sum", 60, sum_magnitude(60, x, w, bias=b))


@DT
def test_shape_of_spatial_dims_feeding_reshape(rng, dtype):
    """Shape -> Slice/Gather -> Mul -> Concat: a Reshape to (N, C, H*W) from
    static dims read off the graph."""
    nodes = [helper.make_node("Shape", ["X"], ["shape"]),
             helper.make_node("Slice", ["shape", "s", "e"], ["hw"]),
             helper.make_node("Gather", ["shape", "one"], ["c"], axis=0),
             helper.make_node("Gather", ["hw", "zero"], ["h"], axis=0),
             helper.make_node("Gather", ["hw", "one"], ["w"], axis=0),
             helper.make_node("Mul", ["h", "w"], ["hw_prod"]),
             helper.make_node("Concat", ["zero", "c", "hw_prod"], ["target"], axis=0),
             helper.make_node("Reshape", ["X", "target"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], [("Y", ["N", 3, 20])],
                       [ints("s", [2]), ints("e", [4]), ints("zero", [0]), ints("one", [1])],
                       opset=13, dtype=dtype)
    check(model, rand(rng, (2, 3, 4, 5), dtype))


@DT
def test_cast_of_a_shape_to_float(rng, dtype):
    """Shape -> Cast(float) -> divide: a scale computed from the static dims."""
    to = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes = [helper.make_node("Shape", ["X"], ["shape"]),
             helper.make_node("Gather", ["shape", "idx"], ["hw"], axis=0),
             helper.make_node("Cast", ["hw"], ["hwf"], to=to),
             helper.make_node("Div", ["X", "hwf"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 4])], ["Y"], [ints("idx", [3])], opset=13,
                       dtype=dtype)
    check(model, rand(rng, (2, 3, 4, 4), dtype), "rel", 2 * gamma(2, dtype))


@DT
def test_cast_to_same_float(rng, dtype):
    to = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes = [helper.make_node("Cast", ["X"], ["c"], to=to),
             helper.make_node("Relu", ["c"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 6])], ["Y"], opset=13, dtype=dtype)
    check(model, rand(rng, (2, 6), dtype))


@pytest.mark.parametrize("value,dtype", [(None, np.float32), (0.5, np.float32),
                                         (0.5, np.float64)])
def test_constant_of_shape(rng, value, dtype):
    """ConstantOfShape of a constant shape, added to the input (its default
    value is a float32 zero: float32 graphs only)."""
    attrs = {} if value is None else dict(value=tensor("v", np.array([value], dtype)))
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["k"], **attrs),
             helper.make_node("Add", ["X", "k"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y"], [ints("shape", [1, 3, 1, 1])],
                       opset=13, dtype=dtype)
    check(model, rand(rng, (2, 3, 4, 5), dtype))


def test_range_and_expand_fold(rng):
    """Range -> Reshape -> Add: a constant built at import from constants."""
    nodes = [helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["k"]),
             helper.make_node("Add", ["X", "k"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y"],
                       [tensor("start", np.array(0, np.float32)),
                        tensor("limit", np.array(3, np.float32)),
                        tensor("delta", np.array(1, np.float32)), ints("shape", [3, 1, 1])],
                       opset=13)
    check(model, rand(rng, (2, 3, 4, 5), np.float32))


# ==========================================================================
# A small network at every opset the importer claims
# ==========================================================================
def small_network(rng, opset, dtype):
    """Conv -> BN -> Relu -> MaxPool -> Conv(depthwise) -> Add(residual) ->
    Clip -> GlobalAveragePool -> Flatten -> Gemm -> Softmax."""
    w1, b1 = rand(rng, (4, 3, 3, 3), dtype), rand(rng, (4,), dtype)
    w2, b2 = rand(rng, (4, 1, 3, 3), dtype), rand(rng, (4,), dtype)
    wf, bf = rand(rng, (3, 4), dtype), rand(rng, (3,), dtype)
    bn_inits, scale, var = bn_params(rng, 4, dtype)
    inits = bn_inits + [tensor("w1", w1), tensor("b1", b1), tensor("w2", w2), tensor("b2", b2),
                        tensor("wf", wf), tensor("bf", bf)]
    pool = dict(kernel_shape=[2, 2], strides=[2, 2])
    if opset < 11:
        clip = helper.make_node("Clip", ["a"], ["c"], min=0.0, max=6.0)
    else:
        clip = helper.make_node("Clip", ["a", "lo", "hi"], ["c"])
        inits += [tensor("lo", np.array(0, dtype)), tensor("hi", np.array(6, dtype))]
    nodes = [
        helper.make_node("Conv", ["X", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        bn_node("c1", "bn", opset),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], **pool),
        helper.make_node("Conv", ["p", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("Add", ["c2", "p"], ["a"]),
        clip,
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["Y"], axis=1),
    ]
    model = make_model(nodes, [("X", ["N", 3, 8, 8])], ["Y", "logits"], inits, opset, dtype)
    mult = float(np.max(np.abs(scale) / np.sqrt(var + 1e-3)))
    # the magnitude bound carried along the chain: conv1 (27 products), BN,
    # conv2 over (9 products of that), + residual, mean, gemm (4 products)
    m1 = mult * (sum_magnitude(27, np.ones(1), w1, bias=b1) + 1) + 1
    m2 = sum_magnitude(9, np.full(1, m1), w2, bias=b2) + m1
    m3 = sum_magnitude(4, np.full(1, m2), wf, bias=bf)
    return model, m3, 27 + 6 + 9 + 1 + 16 + 4


@DT
@pytest.mark.parametrize("opset", [7, 9, 11, 13, 17, 21])
def test_small_network_at_opset(rng, opset, dtype):
    model, magnitude, n = small_network(rng, opset, dtype)
    x = rand(rng, (2, 3, 8, 8), dtype)
    theirs, _ = ort_run(model, x)
    ours, m = fc_run(model, x)
    assert m.output_names == ["Y", "logits"]
    compare(ours[1:], theirs[1:], "sum", n, magnitude)
    # softmax of logits that already differ by the bound above: softmax is
    # 1-Lipschitz in the max norm per entry times 2, plus its own rounding
    eps = np.finfo(dtype).eps
    bound = (2 * 2 * gamma(n + 2, dtype) * magnitude + 2 * (gamma(5, dtype) + (ULPS / 2 + 6)
                                                             * eps))
    assert_bound(ours[0], theirs[0], bound, "softmax output")


# ==========================================================================
# Graph-level behaviour
# ==========================================================================
def two_in_two_out(dtype=np.float32):
    """inputs (b, a) in that order (not sorted), outputs (second, first,
    shared); 'shared' is also read by another node."""
    w = np.linspace(-1, 1, 4 * 3 * 9).reshape(4, 3, 3, 3).astype(dtype)
    nodes = [helper.make_node("Conv", ["b", "W"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["conv"], ["shared"], name="relu"),
             helper.make_node("Mul", ["shared", "a"], ["second"], name="mul"),
             helper.make_node("Sigmoid", ["shared"], ["first"], name="sigmoid")]
    return make_model(nodes, [("b", ["N", 3, 5, 6]), ("a", ["N", 4, 5, 6])],
                      ["second", "first", "shared"], [tensor("W", w)], 13, dtype)


def test_input_and_output_names_and_order(rng):
    model = two_in_two_out()
    _, session = ort_run(model, [rand(rng, (1, 3, 5, 6), np.float32),
                                 rand(rng, (1, 4, 5, 6), np.float32)])
    m = fc_import(model)
    assert list(m.input_names) == [i.name for i in session.get_inputs()] == ["b", "a"]
    assert list(m.output_names) == [o.name for o in session.get_outputs()] == [
        "second", "first", "shared"]


@pytest.mark.parametrize("form", ["list", "dict", "dict_reordered"])
def test_several_inputs_and_outputs(rng, form):
    model = two_in_two_out()
    b, a = rand(rng, (2, 3, 5, 6), np.float32), rand(rng, (2, 4, 5, 6), np.float32)
    feeds = {"list": [b, a], "dict": {"b": b, "a": a}, "dict_reordered": {"a": a, "b": b}}[form]
    theirs, _ = ort_run(model, {"b": b, "a": a})
    m = fc_import(model)
    ours = m(feeds)
    assert isinstance(ours, (list, tuple)) and len(ours) == 3
    # conv of 27 products (|w| <= 1, |x| <= 1), then a product with |a| <= 1,
    # a sigmoid (ULPS ulp of 1 at most, counted as ULPS more roundings)
    compare([ours[0]], [theirs[0]], "sum", 28, 27.0)
    compare([ours[1]], [theirs[1]], "sum", 27 + ULPS, 27.0)
    compare([ours[2]], [theirs[2]], "sum", 27, 27.0)


def test_single_input_as_array_and_dict(rng):
    model, x, n, mag = conv_model(rng, "2d", np.float32)
    theirs, _ = ort_run(model, x)
    m = fc_import(model)
    for feeds in (x, {"X": x}):
        out = m(feeds)
        assert isinstance(out, np.ndarray), type(out)
        compare([out], theirs, "sum", n, mag)


@DT
@pytest.mark.parametrize("batch", [1, 2])
def test_dynamic_batch(rng, batch, dtype):
    """One imported model run at batch 1 and 2 (the batch is "N")."""
    model, _, n, _ = conv_model(rng, "2d_stride2", dtype)
    m = fc_import(model)
    for b in (batch, 3 - batch):
        x = rand(rng, (b, 3, 9, 8), dtype)
        theirs, _ = ort_run(model, x)
        w = onnx.numpy_helper.to_array(model.graph.initializer[0])
        bias = onnx.numpy_helper.to_array(model.graph.initializer[1])
        compare([m(x)], theirs, "sum", n, sum_magnitude(n, x, w, bias=bias))


def test_static_batch_1(rng):
    model, x, n, mag = conv_model(rng, "2d_depthwise", np.float32, batch=1)
    check(model, x[:1], "sum", n, mag)


def test_graph_input_that_is_also_an_output(rng):
    nodes = [helper.make_node("Relu", ["X"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["Y", ("X", ["N", 3, 4, 5])], opset=13)
    check(model, rand(rng, (2, 3, 4, 5), np.float32))


def test_initializer_listed_as_graph_input(rng):
    """IR < 4 style: initializers also listed as graph inputs (torch.onnx's
    keep_initializers_as_inputs=True writes them). An importer that packs
    weights once treats them as constants; onnxruntime too lists only X."""
    w = rand(rng, (4, 3, 3, 3), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3, 5, 5]),
         helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3, 3, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4, 3, 3])],
        [tensor("W", w)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    x = rand(rng, (2, 3, 5, 5), np.float32)
    theirs, session = ort_run(model, {"X": x})
    m = fc_import(model)
    assert [i.name for i in session.get_inputs()] == ["X"]
    assert list(m.input_names) == ["X"]
    compare([m(x)], theirs, "sum", 27, sum_magnitude(27, x, w))


def test_model_from_path_and_bytes(rng, tmp_path):
    model, x, n, mag = conv_model(rng, "2d_pads", np.float32)
    theirs, _ = ort_run(model, x)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    from fastconv.nn import from_onnx
    for source in (path, str(path), path.read_bytes()):
        compare([from_onnx(source)(x)], theirs, "sum", n, mag)


def test_outputs_are_not_views_of_each_other(rng):
    """Two graph outputs computed from the same tensor are separate arrays:
    writing into one leaves the other (and the next call) unchanged."""
    nodes = [helper.make_node("Relu", ["X"], ["A"]), helper.make_node("Identity", ["A"], ["B"])]
    model = make_model(nodes, [("X", ["N", 3, 4, 5])], ["A", "B"], opset=13)
    x = rand(rng, (2, 3, 4, 5), np.float32)
    m = fc_import(model)
    a, b = m(x)
    expected = np.maximum(x, 0)
    a[...] = 7
    np.testing.assert_array_equal(b, expected)
    np.testing.assert_array_equal(m(x)[0], expected)


# ==========================================================================
# Errors: unsupported ops and attributes, malformed files
# ==========================================================================
def from_onnx_error(source, *fragments):
    """from_onnx(source) raises ValueError whose message holds every fragment
    (case-insensitive); returns the message."""
    from fastconv.nn import from_onnx
    with pytest.raises(ValueError) as info:
        from_onnx(source)
    message = str(info.value)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    return message


def lstm_model(name):
    w = np.zeros((1, 8, 3), np.float32)
    r = np.zeros((1, 8, 2), np.float32)
    nodes = [helper.make_node("Relu", ["X"], ["r"], name="first"),
             helper.make_node("LSTM", ["r", "W", "R"], ["Y"], hidden_size=2, name=name)]
    return make_model(nodes, [("X", [5, 2, 3])], [("Y", [5, 1, 2, 2])],
                      [tensor("W", w), tensor("R", r)], 13)


def test_unsupported_op_names_node_op_and_supported():
    message = from_onnx_error(lstm_model("my_lstm"), "my_lstm", "LSTM")
    # the message lists what is supported
    assert "Conv" in message and "Relu" in message, message


def test_unsupported_unnamed_node_named_by_index():
    model = lstm_model("")
    message = from_onnx_error(model, "LSTM")
    # the unnamed node is the graph's second (index 1)
    assert re.search(r"(#|index |node )1\b", message), message


@pytest.mark.parametrize("case", ["resize_cubic", "conv_auto_pad", "pad_wrap",
                                  "resize_nearest_mode"])
def test_unsupported_attribute_value(case):
    if case == "resize_cubic":
        node = helper.make_node("Resize", ["X", "", "scales"], ["Y"], mode="cubic", name="rs")
        inits = [tensor("scales", np.array([1, 1, 2, 2], np.float32))]
        fragments = ("rs", "mode", "cubic")
    elif case == "resize_nearest_mode":
        node = helper.make_node("Resize", ["X", "", "scales"], ["Y"], mode="nearest",
                                nearest_mode="sideways", name="rs")
        inits = [tensor("scales", np.array([1, 1, 2, 2], np.float32))]
        fragments = ("rs", "nearest_mode", "sideways")
    elif case == "conv_auto_pad":
        node = helper.make_node("Conv", ["X", "W"], ["Y"], auto_pad="SIDEWAYS", name="cv")
        inits = [tensor("W", np.ones((2, 3, 3, 3), np.float32))]
        fragments = ("cv", "auto_pad", "SIDEWAYS")
    else:
        node = helper.make_node("Pad", ["X", "pads"], ["Y"], mode="wrap", name="pd")
        inits = [ints("pads", [0, 0, 1, 1, 0, 0, 1, 1])]
        fragments = ("pd", "mode", "wrap")
    model = make_model([node], [("X", ["N", 3, 4, 5])], [("Y", None)], inits, 19, check=False)
    from_onnx_error(model, *fragments)


def valid_model_bytes():
    w = np.arange(4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3) / 100
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["Y"])]
    return make_model(nodes, [("X", ["N", 3, 6, 6])], ["Y"], [tensor("W", w)], 13)


def test_random_bytes():
    rng = np.random.default_rng(14)
    for size in (0, 1, 16, 1000):
        from_onnx_error(rng.integers(0, 256, size, dtype=np.uint8).tobytes())


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_text("this is not a model\n")
    from_onnx_error(path)
    from_onnx_error(tmp_path / "missing.onnx", "missing.onnx")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_model(fraction):
    data = valid_model_bytes().SerializeToString()
    from_onnx_error(data[:int(len(data) * fraction)])


def model_with_initializer(dims, raw, name="W", data_type=TensorProto.FLOAT):
    """A Conv reading initializer `name` with the given dims and raw bytes,
    built without onnx's checks."""
    init = TensorProto(name=name, data_type=data_type, dims=dims, raw_data=raw)
    nodes = [helper.make_node("Conv", ["X", name], ["Y"])]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, ["N", 3, 6, 6])], [helper.make_tensor_value_info(
            "Y", TensorProto.FLOAT, None)], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("case", ["short", "long", "empty"])
def test_raw_data_size_disagrees_with_dims(case):
    need = 4 * 3 * 3 * 3 * 4
    size = {"short": need - 4, "long": need + 4, "empty": 0}[case]
    model = model_with_initializer([4, 3, 3, 3], b"\0" * size)
    from_onnx_error(model, "W")
    from_onnx_error(model.SerializeToString(), "W")


@pytest.mark.parametrize("dims", [[2**40, 3, 3, 3], [2**20, 2**20, 2**20, 2**20],
                                  [4, 3, 3, -3], [-1, 3, 3, 3], [2**62, 4, 1, 1]],
                         ids=["2^40", "product_2^80", "negative", "minus_one", "overflow"])
def test_huge_or_negative_dims(dims):
    """Declared sizes the data cannot hold: a ValueError before any allocation
    (no MemoryError)."""
    model = model_with_initializer(dims, b"\0" * 432)
    from_onnx_error(model, "W")


def test_huge_dims_in_float_data():
    """dims of 2**40 with the values in float_data (not raw_data)."""
    init = helper.make_tensor("W", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108).tolist())
    init.dims[0] = 2**40
    model = model_with_initializer([4, 3, 3, 3], b"")
    model.graph.initializer[0].CopyFrom(init)
    from_onnx_error(model, "W")


def test_node_reading_an_undefined_tensor():
    nodes = [helper.make_node("Relu", ["X"], ["r"]),
             helper.make_node("Add", ["r", "ghost"], ["Y"], name="adder")]
    model = make_model(nodes, [("X", ["N", 3])], [("Y", None)], opset=13, check=False)
    from_onnx_error(model, "ghost")


def test_output_never_computed():
    nodes = [helper.make_node("Relu", ["X"], ["r"])]
    model = make_model(nodes, [("X", ["N", 3])], [("nowhere", None)], opset=13, check=False)
    from_onnx_error(model, "nowhere")


def test_cycle():
    nodes = [helper.make_node("Add", ["X", "b"], ["a"], name="n1"),
             helper.make_node("Relu", ["a"], ["b"], name="n2")]
    model = make_model(nodes, [("X", ["N", 3])], [("b", None)], opset=13, check=False)
    from_onnx_error(model)


def external_model(tmp_path, location, offset=0, length=None, file_bytes=432):
    """A model in tmp_path/model/ whose initializer W lives in external data."""
    directory = tmp_path / "model"
    directory.mkdir(exist_ok=True)
    (directory / "weights.bin").write_bytes(b"\0" * file_bytes)
    init = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 3, 3, 3])
    init.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    model = model_with_initializer([4, 3, 3, 3], b"")
    model.graph.initializer[0].CopyFrom(init)
    path = directory / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_that_loads(tmp_path, rng):
    """The control case: valid external data loads and matches onnxruntime."""
    w = rand(rng, (4, 3, 3, 3), np.float32)
    path = external_model(tmp_path, "weights.bin", length=432)
    (path.parent / "weights.bin").write_bytes(w.tobytes())
    x = rand(rng, (2, 3, 6, 6), np.float32)
    session = onnx_session_from_path(path)
    from fastconv.nn import from_onnx
    compare([from_onnx(path)(x)], session.run(None, {"X": x}), "sum", 27,
            sum_magnitude(27, x, w))


def onnx_session_from_path(path):
    import onnxruntime
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "../weights.bin",
                                      "sub/../../weights.bin"])
def test_external_data_escaping_the_model_directory(tmp_path, location):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 432)
    path = external_model(tmp_path, location, length=432)
    from_onnx_error(path, "W")


@pytest.mark.parametrize("offset,length", [(400, 432), (0, 10**12), (10**15, 432), (0, 431),
                                           (-8, 432)],
                         ids=["past_end", "huge_length", "huge_offset", "short_length",
                              "negative_offset"])
def test_external_data_beyond_the_file(tmp_path, offset, length):
    path = external_model(tmp_path, "weights.bin", offset=offset, length=length)
    from_onnx_error(path, "W")


def test_external_data_missing_file(tmp_path):
    path = external_model(tmp_path, "nothere.bin", length=432)
    from_onnx_error(path, "nothere.bin")


def test_external_data_without_a_directory():
    """External data in a model given as bytes: no directory to read from."""
    init = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 3, 3, 3])
    init.data_location = TensorProto.EXTERNAL
    entry = init.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    model = model_with_initializer([4, 3, 3, 3], b"")
    model.graph.initializer[0].CopyFrom(init)
    from_onnx_error(model.SerializeToString(), "W")


@pytest.mark.parametrize("version", [5, 6, 22, 99])
def test_unsupported_opset(version):
    nodes = [helper.make_node("Relu", ["X"], ["Y"])]
    model = make_model(nodes, [("X", ["N", 3])], [("Y", ["N", 3])], opset=version, check=False)
    from_onnx_error(model, "opset", str(version))


def test_other_domain():
    nodes = [helper.make_node("FusedConv", ["X"], ["Y"], domain="com.microsoft", name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, ["N", 3])], [helper.make_tensor_value_info(
            "Y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    from_onnx_error(model, "FusedConv")


def test_wrong_argument_type():
    from fastconv.nn import from_onnx
    with pytest.raises(TypeError, match="model"):
        from_onnx(12345)


def test_feeds_checked(rng):
    """Wrong feeds: an error naming the input, what was expected and what was
    given."""
    m = fc_import(two_in_two_out())
    b, a = rand(rng, (2, 3, 5, 6), np.float32), rand(rng, (2, 4, 5, 6), np.float32)
    with pytest.raises(ValueError, match="'a'"):
        m({"b": b})
    with pytest.raises(ValueError, match="zz"):
        m({"b": b, "a": a, "zz": a})
    with pytest.raises(ValueError, match="2 inputs"):
        m([b])
    with pytest.raises(ValueError, match=r"'b'.*\(2, 3, 4, 6\)"):
        m([b[:, :, :4], a])
    with pytest.raises(TypeError, match="'a'.*float32.*float64"):
        m([b, a.astype(np.float64)])


def test_import_error_without_onnx(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)
    from fastconv.nn import from_onnx
    with pytest.raises(ImportError, match="pip install onnx"):
        from_onnx(b"\x08\x07")


# ==========================================================================
# Trained models a pip package ships: PP-OCRv4 (rapidocr-onnxruntime 1.4.4)
# ==========================================================================
def rapidocr_model(filename):
    import importlib.util
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        pytest.skip("rapidocr-onnxruntime is not installed "
                    "(pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    path = os.path.join(os.path.dirname(spec.origin), "models", filename)
    if not os.path.exists(path):
        pytest.skip(f"{filename} is not in this rapidocr-onnxruntime")
    return path


def float_constants(model):
    """The model's float tensors by name: initializers and Constant nodes'
    values (paddle2onnx stores the weights as Constant nodes)."""
    found = {t.name: t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    found[node.output[0]] = a.t
    return found


def longest_reduction(model):
    """The most products any Conv/ConvTranspose/Gemm/MatMul output sums."""
    consts = float_constants(model)
    longest = 1
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        if node.input[1] in consts:
            dims = list(consts[node.input[1]].dims)
        elif node.input[0] in consts:  # MatMul with the constant on the left
            dims = list(consts[node.input[0]].dims)[::-1]
        else:  # a MatMul of two tensors: its length is not a weight's
            continue
        if node.op_type == "Conv":
            n = math.prod(dims[1:])
        elif node.op_type == "ConvTranspose":
            n = dims[0] * math.prod(dims[2:])
        elif node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            n = dims[1] if trans_b else dims[0]
        else:
            n = dims[-2]
        longest = max(longest, n)
    return longest


WEIGHT_READERS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization")


def rounding_sensitivity(model, feeds, session):
    """How far onnxruntime's outputs move when every weight (the constant
    operands of Conv, ConvTranspose, Gemm, MatMul, BatchNormalization; not
    the structural constants such as Resize's scales) is perturbed by one
    unit roundoff (w * (1 + u s), s random signs): the model's response to
    one rounding per weight."""
    import onnxruntime
    perturbed = onnx.ModelProto()
    perturbed.CopyFrom(model)
    rng = np.random.default_rng(0)
    u = np.finfo(np.float32).eps / 2
    consts = float_constants(perturbed)
    weights = {name for node in perturbed.graph.node if node.op_type in WEIGHT_READERS
               for name in node.input if name in consts}
    for name in sorted(weights):
        t = consts[name]
        w = onnx.numpy_helper.to_array(t).astype(np.float64)
        w = (w * (1 + u * rng.choice([-1.0, 1.0], w.shape))).astype(np.float32)
        t.CopyFrom(onnx.numpy_helper.from_array(w, t.name))
    other = onnxruntime.InferenceSession(perturbed.SerializeToString(),
                                         providers=["CPUExecutionProvider"])
    base = session.run(None, feeds)
    return [np.abs(a.astype(np.float64) - b).max() for a, b in zip(other.run(None, feeds), base)]


def text_image(rng, shape):
    """A page-like input normalised as rapidocr does ((x - 0.5) / 0.5): white
    (+1) with lines of dark glyph-sized blobs, and a little noise."""
    n, c, h, w = shape
    img = np.ones((n, h, w))
    for b in range(n):
        for top in range(4, h - 12, 24):
            left = int(rng.integers(2, 12))
            while left < w - 12:
                gw = int(rng.integers(5, 10))
                glyph = rng.random((12, gw)) < 0.45
                img[b, top:top + 12, left:left + gw][glyph] = -1.0
                left += gw + int(rng.integers(1, 4))
    img = np.repeat(img[:, None], c, axis=1) + rng.normal(0, 0.05, (n, c, h, w))
    return np.clip(img, -1, 1).astype(np.float32)


def check_trained(path, shapes, rng, input_shapes=None):
    """from_onnx on a trained model against onnxruntime, for each input shape
    in `shapes` (one import: the dynamic dims vary unless input_shapes fixes
    them).

    Tolerance: a float32 evaluation whose reductions sum at most n products
    has a backward error of at most gamma_n per weight; the outputs' response
    to one roundoff per weight (rounding_sensitivity, measured, D) scaled by
    n + 2 bounds each implementation's deviation, so the two differ by at
    most 2 (n + 2) D (plus 8 ulp of the output's largest value for the
    final activation's own rounding). A worst-case bound: for these models
    and inputs it is about 0.01-0.03 on det's probabilities and rec's, and
    1e-4-8e-4 on cls's, where onnxruntime with and without its graph
    optimisations differ by 1.5e-5, 1.7e-6 and 5.7e-7 (and from_onnx, when
    these tests were written, by 1.9e-5, 2.0e-6 and 8.9e-7)."""
    import onnxruntime
    model = onnx.load(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    from fastconv.nn import from_onnx
    m = from_onnx(path) if input_shapes is None else from_onnx(path, input_shapes=input_shapes)
    assert list(m.input_names) == [name]
    assert list(m.output_names) == [o.name for o in session.get_outputs()]
    n = longest_reduction(model)
    for shape in shapes:
        x = text_image(rng, shape)
        theirs = session.run(None, {name: x})
        sensitivity = rounding_sensitivity(model, {name: x}, session)
        ours = m(x)
        ours = list(ours) if isinstance(ours, (list, tuple)) else [ours]
        assert len(ours) == len(theirs)
        for i, (a, b, d) in enumerate(zip(ours, theirs, sensitivity)):
            assert np.asarray(a).shape == b.shape, (shape, np.asarray(a).shape, b.shape)
            assert np.asarray(a).dtype == b.dtype
            bound = 2 * (n + 2) * d + ULPS * np.spacing(np.float32(np.abs(b).max()))
            assert_bound(a, b, bound, f"{os.path.basename(path)} output {i} at input {shape}")
    return m


DET = "ch_PP-OCRv4_det_infer.onnx"
REC = "ch_PP-OCRv4_rec_infer.onnx"
CLS = "ch_ppocr_mobile_v2.0_cls_infer.onnx"


def test_ppocr_v4_det(rng):
    """Text detection (DBNet: PPLCNetV3-style backbone, FPN with Resize and
    ConvTranspose, HardSigmoid SE blocks) at 1x3x96x128, its H and W fixed
    at import."""
    path = rapidocr_model(DET)
    check_trained(path, [(1, 3, 96, 128)], rng, input_shapes={"x": (None, 3, 96, 128)})


def test_ppocr_v4_det_dynamic_hw(rng):
    """The detector's H and W are dynamic in the file: one import without
    input_shapes runs two page sizes (multiples of 32)."""
    path = rapidocr_model(DET)
    check_trained(path, [(1, 3, 96, 128), (1, 3, 64, 160)], rng)


def test_ppocr_v4_rec(rng):
    """Text recognition (PPLCNetV3 + SVTR neck: LayerNorm from ReduceMean/Pow/
    Sqrt, attention MatMuls of two run-time tensors, Softmax over 6625
    classes) at 1x3x48x160."""
    path = rapidocr_model(REC)
    check_trained(path, [(1, 3, 48, 160)], rng, input_shapes={"x": (None, 3, 48, 160)})


def test_ppocr_mobile_cls(rng):
    """Text direction classifier (MobileNetV3 small) at batch 1 and 2 (its
    batch is dynamic, declared -1)."""
    path = rapidocr_model(CLS)
    check_trained(path, [(1, 3, 48, 192), (2, 3, 48, 192)], rng,
                  input_shapes={"x": (None, 3, 48, 192)})
