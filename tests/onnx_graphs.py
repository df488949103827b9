"""Small ONNX graphs built with onnx.helper, run by onnxruntime (the reference)
and by fastconv.nn.from_onnx, and the tolerances the comparisons use.

Tolerances (every comparison states which one it uses):
- exact: data movement and selection (Concat, Slice, Reshape, Transpose, Pad,
  MaxPool, Resize nearest, Relu, Clip, ...) must agree bitwise.
- sum of n products: each implementation is within gamma_{n+2}(u) * M of the
  exact value (Higham, Thm 3.1; checks.py), so the two differ by at most
  2 * gamma_{n+2}(u) * M, where M bounds sum |x_i w_i| + |b| elementwise. The
  tests' data lie in [-1, 1] (weights, inputs) so M is computed from the
  operands' largest magnitudes: M = n * max|x| * max|w| + max|b|.
- transcendental elementwise ops (Sigmoid, Tanh, HardSigmoid, HardSwish):
  fastconv's are within a few ulp (tests/test_activations.py); onnxruntime's
  (MLAS's rational approximations) keep an ABSOLUTE error: measured over
  [-12, 12] in float32, 1.24 eps for Sigmoid and 2.26 eps for Tanh (so
  ~260000 ulp at sigmoid(-12)). The bound is ULPS ulp of max(|result|, 1).
- Softmax: a relative bound derived in test_softmax.
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ONNX_DTYPE = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}
ULPS = 8


def gamma(m, dtype):
    u = np.finfo(dtype).eps / 2.0
    return m * u / (1.0 - m * u)


# --------------------------------------------------------------------------
# Building graphs
# --------------------------------------------------------------------------
def tensor(name, array):
    """An initializer (or Constant value) holding ``array`` as raw data."""
    return numpy_helper.from_array(np.asarray(array), name)


def ints(name, values):
    return tensor(name, np.asarray(values, np.int64))


def value_info(name, dtype, shape):
    elem = ONNX_DTYPE[dtype] if dtype in ONNX_DTYPE else dtype
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(nodes, inputs, outputs, initializers=(), opset=17, dtype=np.float32,
               check=True):
    """A model of ``nodes``. ``inputs``: [(name, shape)] of ``dtype`` (a shape
    entry may be a dim_param string: the batch is "N" in most tests);
    ``outputs``: names, or (name, shape) pairs (shape None: unknown rank)."""
    ins = [value_info(name, dtype, shape) for name, shape in inputs]
    outs = []
    for out in outputs:
        name, shape = (out, None) if isinstance(out, str) else out
        outs.append(value_info(name, dtype, shape))
    graph = helper.make_graph(list(nodes), "test", ins, outs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # IR 8 covers opsets up to 18 and is read by every onnxruntime since 1.14;
    # opsets 19-21 need IR 9/10.
    model.ir_version = 8 if opset <= 18 else 10
    if check:
        # outputs declared without a shape get the inferred one (the checker
        # wants a shape on every graph output)
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    return model


def single(op_type, inputs, attrs=None, *, initializers=(), graph_inputs, opset=17,
           dtype=np.float32, n_outputs=1):
    """A model of one node; outputs Y (or Y0, Y1, ...)."""
    outs = ["Y"] if n_outputs == 1 else [f"Y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, inputs, outs, name=f"{op_type.lower()}_node",
                            **(attrs or {}))
    return make_model([node], graph_inputs, outs, initializers, opset, dtype)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------
# Ops whose onnx.reference implementation agrees with onnxruntime on every
# float32 graph of test_onnx_ops.py (check() verifies that on each float32
# run). It is wrong elsewhere (onnx 1.23): BatchNormalization before opset 14,
# Softmax's opset < 13 flattening, grouped ConvTranspose and its
# output_shape, MaxPool SAME_LOWER, GlobalMaxPool but on 4-D graph inputs,
# Upsample, Resize opset 10.
REFERENCE_TRUSTED = {"Conv", "AveragePool", "GlobalAveragePool", "Clip", "HardSigmoid",
                     "LeakyRelu", "Resize", "Relu", "Add", "Sub", "Mul", "Div", "Identity",
                     "Constant", "BatchNormalization", "MaxPool", "Softmax", "Flatten", "Gemm",
                     "MatMul", "Sigmoid", "Tanh", "Reshape", "Transpose", "Concat",
                     "ConvTranspose", "HardSwish", "GlobalMaxPool"}


def reference_trusted(model):
    opset = opset_of(model)
    ranks = {len(i.type.tensor_type.shape.dim) for i in model.graph.input}
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op not in REFERENCE_TRUSTED:
            return False
        if (op == "Resize" and opset < 11 or op == "BatchNormalization" and opset < 14
                or op == "Softmax" and opset < 13
                or op == "MaxPool" and attrs.get("auto_pad") == b"SAME_LOWER"
                or op == "GlobalMaxPool" and ranks != {4}
                or op == "ConvTranspose" and (attrs.get("group", 1) != 1
                                              or "output_shape" in attrs)):
            return False
    return True


def opset_of(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def ort_run(model, feeds):
    """onnxruntime's outputs and session. Where its CPU provider has no kernel
    for an op in this dtype (it has no double Conv, ConvTranspose, pools,
    Resize, Clip, LeakyRelu, HardSigmoid...), the outputs of onnx's own
    reference implementation (onnx.reference, numpy in the graph's dtype)
    when every op of the graph is one it gets right (REFERENCE_TRUSTED),
    else a skip; session is then None."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own NotImplemented class
        if "Could not find an implementation" not in str(exc):
            raise
        if not reference_trusted(model):
            pytest.skip("onnxruntime's CPU provider lacks the kernel and onnx.reference "
                        f"is not trusted for this graph: {str(exc)[:160]}")
        return reference_run(model, feeds), None
    names = [i.name for i in session.get_inputs()]
    return session.run(None, as_dict(names, feeds)), session


def as_dict(names, feeds):
    if isinstance(feeds, dict):
        return feeds
    return dict(zip(names, feeds if isinstance(feeds, (list, tuple)) else [feeds]))


def reference_run(model, feeds):
    from onnx.reference import ReferenceEvaluator
    evaluator = ReferenceEvaluator(model)
    outs = evaluator.run(None, as_dict(evaluator.input_names, feeds))
    return [np.asarray(o) for o in outs]


def fc_import(model):
    from fastconv.nn import from_onnx
    return from_onnx(model)


def fc_run(model, feeds):
    """from_onnx's outputs as a list (feeds: an array, a list or a dict)."""
    m = fc_import(model)
    if isinstance(feeds, dict) and len(feeds) == 1:
        out = m(next(iter(feeds.values())))
    elif isinstance(feeds, (list, tuple)) and len(feeds) == 1:
        out = m(feeds[0])
    else:
        out = m(feeds)
    return (list(out) if isinstance(out, (list, tuple)) else [out]), m


# --------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------
def _check_shapes(ours, theirs):
    assert len(ours) == len(theirs), f"{len(ours)} outputs, onnxruntime has {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        a = np.asarray(a)
        assert a.shape == b.shape, f"output {i}: shape {a.shape}, onnxruntime {b.shape}"
        assert a.dtype == b.dtype, f"output {i}: dtype {a.dtype}, onnxruntime {b.dtype}"


def assert_bound(actual, expected, bound, what):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what}: NaN pattern"
    err = np.abs(actual - expected)
    bound = np.broadcast_to(np.asarray(bound, np.float64), expected.shape)
    bad = err > bound
    if bad.any():
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} elements outside the bound; worst at "
            f"{worst}: got {actual[worst]!r}, onnxruntime {expected[worst]!r}, "
            f"|err|={err[worst]:.3e} > {bound[worst]:.3e}")


def compare(ours, theirs, tol="exact", n=None, magnitude=None):
    """ours/theirs: lists of outputs. tol: "exact", "sum" (n products of
    magnitude M, see the module doc), "rel" (n is the relative bound) or
    "ulp"."""
    _check_shapes(ours, theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        what = f"output {i}"
        if tol == "exact":
            np.testing.assert_array_equal(np.asarray(a), b, err_msg=what)
        elif tol == "sum":
            assert_bound(a, b, 2 * gamma(n + 2, b.dtype) * magnitude, what)
        elif tol == "rel":
            bound = n * np.abs(b.astype(np.float64)) + np.finfo(b.dtype).tiny
            assert_bound(a, b, bound, what)
        elif tol == "ulp":
            scale = np.maximum(np.abs(b), 1).astype(b.dtype)
            assert_bound(a, b, ULPS * np.spacing(scale).astype(np.float64), what)
        else:
            raise AssertionError(tol)


def check(model, feeds, tol="exact", n=None, magnitude=None):
    """Run both and compare; returns the fastconv model. A float32 graph of
    REFERENCE_TRUSTED ops also checks onnx.reference against onnxruntime: the
    float64 twins of these graphs use that reference."""
    theirs, session = ort_run(model, feeds)
    if session is not None and reference_trusted(model) and all(
            t.dtype == np.float32 for t in theirs):
        compare(reference_run(model, feeds), theirs, tol, n, magnitude)
    ours, m = fc_run(model, feeds)
    compare(ours, theirs, tol, n, magnitude)
    return m


def check_or_refuse(model, feeds, fragments, tol="exact", n=None, magnitude=None):
    """For what the contract leaves to the importer (an op on the batch axis,
    a run-time operand where a constant is usual): from_onnx either matches
    onnxruntime or raises a ValueError whose message holds every fragment
    (case-insensitive). Returns the message, or None when it matched."""
    theirs, _ = ort_run(model, feeds)
    try:
        ours, _ = fc_run(model, feeds)
    except ValueError as exc:
        message = str(exc)
        assert any(f.lower() in message.lower() for f in fragments), (fragments, message)
        return message
    compare(ours, theirs, tol, n, magnitude)
    return None


def behind_conv(model, after_conv=True):
    """``model`` with every 3-D/4-D graph input X first passed through a 1x1
    Conv that reverses its channels (weights 0 and 1: exact), so that the ops
    under test read a convolution's output, which the importer keeps
    channels-last, rather than a graph input: their axis remapping and
    permuted constants are exercised. Outputs and tolerances are unchanged."""
    if not after_conv:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    dtype = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64}
    convs = []
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) not in (3, 4) or not dims[1].HasField("dim_value"):
            continue
        c = dims[1].dim_value
        w = np.eye(c)[::-1].reshape((c, c) + (1,) * (len(dims) - 2))
        w = w.astype(dtype[inp.type.tensor_type.elem_type])
        name = inp.name + "__reversed"
        for node in graph.node:
            node.input[:] = [name if i == inp.name else i for i in node.input]
        for o in graph.output:
            assert o.name != inp.name, "a graph output that is an input"
        graph.initializer.append(numpy_helper.from_array(w, inp.name + "__w"))
        convs.append(helper.make_node("Conv", [inp.name, inp.name + "__w"], [name],
                                      name=inp.name + "__conv"))
    if not convs:
        pytest.skip("no 3-D/4-D map input to put behind a convolution")
    nodes = convs + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out
