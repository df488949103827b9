"""fastconv.matmul against the float64 reference a @ b (+ bias) (+ ReLU)."""

import numpy as np
import pytest

import fastconv
from checks import (
    DTYPE_IDS,
    FLOAT_DTYPES,
    assert_close_to_reference,
    in_memory,
    random_array,
)
from reference import matmul_magnitude, matmul_ref

dtypes = pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)

SIZES = (1, 2, 7, 13, 64, 65, 100)
# Every (M, N) pair, with K cycling through SIZES so each K is also covered.
MNK = [(m, n, SIZES[(i + j) % len(SIZES)])
       for i, m in enumerate(SIZES) for j, n in enumerate(SIZES)]


def check_matmul(rng, m, k, n, dtype, *, bias=True, relu=False, use_out=False):
    a_vals = random_array(rng, (m, k), dtype)
    b_vals = random_array(rng, (k, n), dtype)
    bias_vals = random_array(rng, (n,), dtype) if bias else None
    expected = matmul_ref(a_vals, b_vals, bias_vals, relu=relu)
    magnitude = matmul_magnitude(a_vals, b_vals, bias_vals)
    out = np.full((m, n), np.nan, dtype) if use_out else None
    result = fastconv.matmul(a_vals, b_vals, bias_vals,
                             activation="relu" if relu else None, out=out)
    if use_out:
        assert result is out
    assert result.shape == (m, n)
    assert_close_to_reference(result, expected, magnitude, k, dtype)
    return result


@pytest.mark.parametrize("m, n, k", MNK, ids=[f"M{m}-N{n}-K{k}" for m, n, k in MNK])
@dtypes
def test_matmul_sizes(isa, rng, m, n, k, dtype):
    check_matmul(rng, m, k, n, dtype)


@pytest.mark.parametrize("m, k, n", [(13, 1000, 65), (1, 1000, 7), (64, 1024, 33),
                                     (7, 2049, 100)],
                         ids=lambda v: str(v))
@dtypes
def test_matmul_large_k(isa, rng, m, k, n, dtype):
    check_matmul(rng, m, k, n, dtype, relu=True)


@pytest.mark.parametrize("m, k, n", [(145, 257, 129), (300, 520, 70), (13, 300, 600)],
                         ids=lambda v: str(v))
@dtypes
def test_matmul_cache_blocking_boundaries(isa, rng, m, k, n, dtype):
    check_matmul(rng, m, k, n, dtype)


def test_matmul_broadcast_and_read_only_inputs(rng):
    a = np.broadcast_to(random_array(rng, (1, 6), np.float32), (5, 6))
    b = random_array(rng, (6, 4), np.float32)
    b.setflags(write=False)
    assert 0 in a.strides
    expected = fastconv.matmul(np.ascontiguousarray(a), b.copy())
    assert np.array_equal(fastconv.matmul(a, b), expected)


@pytest.mark.parametrize("bias", (False, True), ids=("nobias", "bias"))
@pytest.mark.parametrize("relu", (False, True), ids=("linear", "relu"))
@pytest.mark.parametrize("use_out", (False, True), ids=("alloc", "out"))
@dtypes
def test_matmul_bias_relu_out(isa, rng, bias, relu, use_out, dtype):
    check_matmul(rng, 23, 37, 41, dtype, bias=bias, relu=relu, use_out=use_out)


def test_matmul_relu_propagates_nan():
    a = np.array([[np.nan, 1.0], [1.0, 2.0]], np.float32)
    b = np.array([[1.0, -1.0], [1.0, -3.0]], np.float32)
    result = fastconv.matmul(a, b, activation="relu")
    expected = matmul_ref(a, b, relu=True)
    assert np.isnan(result[0]).all()
    np.testing.assert_array_equal(result[1], expected[1])


@pytest.mark.parametrize("m, k, n", [(150, 300, 170), (1, 3000, 7), (500, 2000, 3)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("threads", (2, 3), ids=lambda v: f"1vs{v}threads")
@dtypes
def test_matmul_thread_count_gives_bitwise_equal_results(isa, rng, m, k, n, threads,
                                                         dtype):
    a = random_array(rng, (m, k), dtype)
    b = random_array(rng, (k, n), dtype)
    bias = random_array(rng, (n,), dtype)
    single = fastconv.matmul(a, b, bias, activation="relu", num_threads=1)
    multi = fastconv.matmul(a, b, bias, activation="relu", num_threads=threads)
    assert np.array_equal(single, multi)


def test_matmul_empty_m_gives_empty_result():
    result = fastconv.matmul(np.zeros((0, 4), np.float32), np.zeros((4, 3), np.float32))
    assert result.shape == (0, 3) and result.dtype == np.float32


def test_matmul_empty_k_gives_bias():
    """An empty sum is 0, so a (M, 0) @ (0, N) + bias is bias on every row."""
    bias = np.array([1.5, -2.0, 0.25])
    result = fastconv.matmul(np.zeros((2, 0)), np.zeros((0, 3)), bias)
    np.testing.assert_array_equal(result, np.broadcast_to(bias, (2, 3)))


def _non_contiguous(base, kind):
    if kind == "transposed":
        view = np.zeros(base.shape[::-1], base.dtype).T
    elif kind == "fortran":
        view = np.asfortranarray(np.zeros_like(base))
    elif kind == "step-slice":
        view = np.zeros((base.shape[0] * 2, base.shape[1] * 3), base.dtype)[::2, ::3]
    elif kind == "reversed":
        view = np.zeros_like(base)[::-1, ::-1]
    else:
        raise AssertionError(kind)
    view[...] = base
    assert not view.flags.c_contiguous
    return view


VIEW_KINDS = ("transposed", "fortran", "step-slice", "reversed")
VIEW_PAIRS = ([(kind, None) for kind in VIEW_KINDS]
              + [(None, kind) for kind in VIEW_KINDS]
              + [(kind, kind) for kind in VIEW_KINDS])


@pytest.mark.parametrize("a_view, b_view", VIEW_PAIRS,
                         ids=[f"a={av}-b={bv}" for av, bv in VIEW_PAIRS])
@dtypes
def test_matmul_non_contiguous_inputs(isa, rng, a_view, b_view, dtype):
    a = random_array(rng, (13, 17), dtype)
    b = random_array(rng, (17, 9), dtype)
    bias = random_array(rng, (9,), dtype)
    contiguous = fastconv.matmul(a, b, bias)
    a_arg = a if a_view is None else _non_contiguous(a, a_view)
    b_arg = b if b_view is None else _non_contiguous(b, b_view)
    result = fastconv.matmul(a_arg, b_arg, bias)
    assert_close_to_reference(result, matmul_ref(a, b, bias),
                              matmul_magnitude(a, b, bias), 17, dtype)
    assert np.array_equal(result, contiguous), \
        "a strided view must give the same result as its contiguous copy"


def test_matmul_out_is_returned_and_filled(rng):
    a = random_array(rng, (5, 6), np.float64)
    b = random_array(rng, (6, 7), np.float64)
    expected = fastconv.matmul(a, b)
    out = np.full((5, 7), np.nan)
    assert fastconv.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("m", (3, 40), ids=lambda m: f"M{m}")
@dtypes
def test_matmul_unaligned_inputs(isa, rng, m, dtype):
    """Inputs at an odd byte offset are copied, never read in place (reading
    them through a float pointer is undefined behaviour, which UBSan reports
    in scripts/sanitize.sh)."""
    a = random_array(rng, (m, 16), dtype)
    b = random_array(rng, (16, 32), dtype)
    bias = random_array(rng, (32,), dtype)
    expected = fastconv.matmul(a, b, bias)
    result = fastconv.matmul(*(in_memory(v, "unaligned") for v in (a, b, bias)))
    assert np.array_equal(result, expected)
