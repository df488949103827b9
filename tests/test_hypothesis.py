"""Property-based tests (hypothesis) of matmul, fastconv.Linear,
fastconv.Conv2d and fc_to_conv against the float64 reference.

conv2d's own sweep over every option is test_conv2d.py's
test_random_configurations. The number of examples comes from the
hypothesis profile (conftest.py): "ci" by default, "long" with
``pytest --hypothesis-profile=long``; the end of the report lists the
examples each test tried.
"""

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from checks import assert_close_to_reference, check_conv, in_memory, random_array
from reference import matmul_magnitude, matmul_ref
from strategies import conv_configs, dtypes, examples, memory_kinds, seeds

FLATTEN_ORDERS = ["".join(p) for p in itertools.permutations("HWC")]


def _rows():
    # matmul computes up to 8 rows with the dense kernel, fewer than 512
    # reading b in place, and more through packed weights.
    return st.one_of(st.integers(0, 12), st.integers(13, 70), st.integers(510, 514))


def _reduction():
    # GEMMs reduce over blocks of 512 values: cross one now and then.
    return st.one_of(st.integers(0, 70), st.integers(505, 520))


@given(m=_rows(), k=_reduction(), n=st.integers(1, 70), dtype=dtypes(),
       bias=st.booleans(), relu=st.booleans(), use_out=st.booleans(),
       a_kind=memory_kinds(), b_kind=memory_kinds(), seed=seeds())
def test_matmul_matches_reference(isa, m, k, n, dtype, bias, relu, use_out, a_kind,
                                  b_kind, seed):
    rng = np.random.default_rng(seed)
    a = random_array(rng, (m, k), dtype)
    b = random_array(rng, (k, n), dtype)
    bias_vals = random_array(rng, (n,), dtype) if bias else None
    out = np.full((m, n), np.nan, dtype) if use_out else None
    result = fastconv.matmul(in_memory(a, a_kind), in_memory(b, b_kind), bias_vals,
                             activation="relu" if relu else None, out=out)
    if use_out:
        assert result is out
    assert result.shape == (m, n)
    assert_close_to_reference(result, matmul_ref(a, b, bias_vals, relu=relu),
                              matmul_magnitude(a, b, bias_vals), k, dtype)


@given(n=st.one_of(st.none(), st.integers(0, 12), st.integers(13, 40)),
       fin=st.one_of(st.integers(1, 70), st.integers(505, 520)), fout=st.integers(1, 70),
       weight_layout=st.sampled_from(["IO", "OI"]), dtype=dtypes(), bias=st.booleans(),
       relu=st.booleans(), use_out=st.booleans(), x_kind=memory_kinds(),
       w_kind=memory_kinds(), seed=seeds())
def test_linear_layer_matches_reference(isa, n, fin, fout, weight_layout, dtype, bias, relu,
                                        use_out, x_kind, w_kind, seed):
    """n None is a 1-D input (in_features,)."""
    rng = np.random.default_rng(seed)
    x = random_array(rng, (fin,) if n is None else (n, fin), dtype)
    w_io = random_array(rng, (fin, fout), dtype)
    b = random_array(rng, (fout,), dtype) if bias else None
    weight = w_io if weight_layout == "IO" else w_io.T
    layer = fastconv.Linear(in_memory(weight, w_kind), b, activation="relu" if relu else None,
                            weight_layout=weight_layout)
    shape = x.shape[:-1] + (fout,)
    out = np.full(shape, np.nan, dtype) if use_out else None
    result = layer(in_memory(x, x_kind), out=out)
    if use_out:
        assert result is out
    assert result.shape == shape
    assert_close_to_reference(result, matmul_ref(x, w_io, b, relu=relu),
                              matmul_magnitude(x, w_io, b), fin, dtype)


@settings(max_examples=examples(2))
@given(config=conv_configs())
def test_conv2d_layer_matches_reference(isa, config):
    """Every option of test_conv2d.py's sweep, through a fastconv.Conv2d."""
    config = dict(config)
    rng = np.random.default_rng(config.pop("seed"))
    check_conv(rng, call="layer", **config)


@given(h=st.integers(1, 5), w=st.integers(1, 5), c=st.integers(1, 6), k=st.integers(1, 9),
       weight_layout=st.sampled_from(["IO", "OI"]), order=st.sampled_from(FLATTEN_ORDERS),
       layout=st.sampled_from(["NHWC", "NCHW"]), dtype=dtypes(), bias=st.booleans(),
       extra_rows=st.integers(0, 2), extra_cols=st.integers(0, 2), seed=seeds())
def test_fc_to_conv_gives_the_dense_layer_at_every_window(h, w, c, k, weight_layout, order,
                                                         layout, dtype, bias, extra_rows,
                                                         extra_cols, seed):
    """The kernel from fc_to_conv, slid over a larger map, gives at each
    stride-1 window the dense layer applied to that window flattened in
    `order`."""
    rng = np.random.default_rng(seed)
    features = h * w * c
    w_io = random_array(rng, (features, k), dtype)
    b = random_array(rng, (k,), dtype) if bias else None
    weight = w_io if weight_layout == "IO" else np.ascontiguousarray(w_io.T)
    kernel, kernel_bias = fastconv.fc_to_conv(weight, (h, w, c), b, weight_layout=weight_layout,
                                              flatten_order=order, layout=layout)
    assert kernel.dtype == dtype and kernel.flags.c_contiguous
    assert kernel.shape == ((h, w, c, k) if layout == "NHWC" else (k, c, h, w))
    fmap = random_array(rng, (h + extra_rows, w + extra_cols, c), dtype)
    x = fmap if layout == "NHWC" else np.ascontiguousarray(fmap.transpose(2, 0, 1))
    y = fastconv.conv2d(x[np.newaxis], kernel, kernel_bias, layout=layout)[0]
    if layout == "NCHW":
        y = y.transpose(1, 2, 0)
    assert y.shape == (extra_rows + 1, extra_cols + 1, k)
    for i in range(extra_rows + 1):
        for j in range(extra_cols + 1):
            window = fmap[i:i + h, j:j + w]
            flat = window.transpose(["HWC".index(axis) for axis in order]).ravel()
            assert_close_to_reference(y[i, j], matmul_ref(flat[np.newaxis], w_io, b)[0],
                                      matmul_magnitude(flat[np.newaxis], w_io, b)[0],
                                      features, dtype)
