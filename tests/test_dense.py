"""The dense kernel: batch-1 fully-connected layers with their weights read in
place, through matmul (few rows) and through conv2d (a kernel that covers
its whole, possibly padded, input: a one-pixel result)."""

import numpy as np
import pytest

import fastconv
from checks import (DTYPE_IDS, FLOAT_DTYPES, assert_close_to_reference, check_conv,
                    random_array)
from fastconv import _conv
from reference import matmul_magnitude, matmul_ref

dtypes = pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS.get)
# (the same on every ISA and dtype: tests/test_config.py)
DENSE_ROWS = fastconv.config()["isa_config"]["float32"]["dense_rows"]


def matmul_algorithm(a, b):
    """What matmul runs on these operands."""
    return _conv.GemmWeights("matmul", b, None, 1, one_call=True).plan(a.shape[0], None)[1]


# (M, K, N): rows up to the dense limit; reductions not a multiple of the
# rows of W per pass nor of two vectors, or over several chunks of rows
# (the kernel's partial sums: 1024 rows each); outputs not a whole vector.
MATMUL_SHAPES = [(1, 1, 1), (1, 37, 29), (1, 1000, 1000), (3, 130, 17), (5, 4, 70),
                 (DENSE_ROWS, 515, 33), (DENSE_ROWS, 2, 1), (5, 2100, 70)]


@pytest.mark.parametrize("m, k, n", MATMUL_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("order", ["C", "F"], ids=["b(K,N)", "b=W.T(N,K)"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@dtypes
def test_matmul_few_rows(isa, rng, m, k, n, order, bias, dtype):
    a = random_array(rng, (m, k), dtype)
    b = np.asarray(random_array(rng, (k, n), dtype), order=order)
    bias_vals = random_array(rng, (n,), dtype) if bias else None
    assert matmul_algorithm(a, b) == "dense"
    for relu in (False, True):
        expected = matmul_ref(a, b, bias_vals, relu=relu)
        result = fastconv.matmul(a, b, bias_vals, activation="relu" if relu else None)
        assert_close_to_reference(result, expected, matmul_magnitude(a, b, bias_vals), k, dtype)


@pytest.mark.parametrize("order", ["C", "F"])
def test_matmul_few_rows_bitwise_for_any_thread_count(rng, order):
    a = random_array(rng, (3, 3000), np.float32)
    b = np.asarray(random_array(rng, (3000, 700), np.float32), order=order)
    one = fastconv.matmul(a, b, num_threads=1)
    for nt in (2, 3, 8):
        assert np.array_equal(fastconv.matmul(a, b, num_threads=nt), one)


def test_matmul_few_rows_out(rng):
    a, b = random_array(rng, (2, 50), np.float32), random_array(rng, (50, 20), np.float32)
    out = np.full((2, 20), np.nan, np.float32)
    assert fastconv.matmul(a, b, out=out) is out
    assert_close_to_reference(out, matmul_ref(a, b), matmul_magnitude(a, b), 50, np.float32)


# (id, n, h, w, c, k, kh, kw, stride, padding): one output pixel per image
WINDOWS = [
    ("fc6-like", 1, 7, 7, 16, 40, 7, 7, 1, 0),
    ("batch-limit", DENSE_ROWS, 3, 4, 5, 17, 3, 4, 1, 0),
    ("past-limit-packed", DENSE_ROWS + 1, 3, 3, 5, 17, 3, 3, 1, 0),
    ("1x1-map", 2, 1, 1, 300, 33, 1, 1, 1, 0),             # fc7-like
    ("covers-after-padding", 2, 5, 4, 6, 9, 7, 6, 1, 1),
    ("asymmetric-padding", 1, 4, 5, 3, 8, 6, 6, 1, ((2, 0), (0, 1))),
    ("stride-leaves-rows", 3, 9, 8, 4, 10, 7, 6, 3, 0),     # rows 7.. never read
    ("same-padding", 1, 5, 5, 7, 11, 5, 5, 5, "same"),
]


@pytest.mark.parametrize("n, h, w, c, k, kh, kw, stride, padding",
                         [case[1:] for case in WINDOWS], ids=[case[0] for case in WINDOWS])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@dtypes
def test_conv2d_one_pixel_result(isa, rng, n, h, w, c, k, kh, kw, stride, padding, layout,
                                 bias, dtype):
    for relu in (False, True):
        result = check_conv(rng, n=n, h=h, w=w, c=c, k=k, kh=kh, kw=kw, stride=stride,
                            padding=padding, bias=bias, relu=relu, layout=layout,
                            dtype=dtype, use_out=relu)
        spatial = result.shape[1:3] if layout == "NHWC" else result.shape[2:4]
        assert spatial == (1, 1)
    x = np.zeros((n, h, w, c) if layout == "NHWC" else (n, c, h, w), dtype)
    weight = np.zeros((kh, kw, c, k) if layout == "NHWC" else (k, c, kh, kw), dtype)
    _, ran = _conv.conv2d_algorithm(x, weight, stride=stride, padding=padding, layout=layout)
    assert ran == ("dense" if n <= DENSE_ROWS else "igemm" if kh * kw > 1 else "gemm")


def test_conv2d_one_pixel_unbatched(rng):
    x = random_array(rng, (7, 7, 8), np.float32)
    w = random_array(rng, (7, 7, 8, 5), np.float32)
    y = fastconv.conv2d(x, w)
    assert y.shape == (1, 1, 5)
    assert np.array_equal(y, fastconv.conv2d(x[None], w)[0])


def test_conv2d_one_pixel_reads_weights_in_place(rng):
    """The dense kernel, which streams the caller's weights in place, runs
    for HWIO and OIHW weights, and forcing it gives the same result."""
    x = random_array(rng, (1, 7, 7, 8), np.float32)
    w = random_array(rng, (7, 7, 8, 5), np.float32)
    y, ran = _conv.conv2d_algorithm(x, w)
    assert ran == "dense"
    assert np.array_equal(_conv.conv2d_algorithm(x, w, algorithm="dense")[0], y)
    y_nchw, ran = _conv.conv2d_algorithm(x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1).copy(),
                                         layout="NCHW")
    assert ran == "dense"
    assert_close_to_reference(y_nchw[:, :, 0, 0], y[:, 0, 0], matmul_magnitude(
        x.reshape(1, -1), w.reshape(-1, 5)), 7 * 7 * 8, np.float32)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv2d_one_pixel_bitwise_for_any_thread_count(rng, layout):
    x = random_array(rng, (2, 7, 7, 64), np.float32)
    w = random_array(rng, (7, 7, 64, 300), np.float32)
    if layout == "NCHW":
        x, w = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(
            w.transpose(3, 2, 0, 1))
    one = fastconv.conv2d(x, w, layout=layout, num_threads=1)
    for nt in (2, 5):
        assert np.array_equal(fastconv.conv2d(x, w, layout=layout, num_threads=nt), one)


@pytest.mark.parametrize("pixels", ["one", "few", "limit", "over"])
@pytest.mark.parametrize("k", [64, 48, 33], ids=lambda k: f"K{k}")
@dtypes
def test_conv2d_small_1x1_reads_weights_in_place(isa, rng, monkeypatch, pixels, k, dtype):
    """A 1x1 convolution over fewer pixels than the ISA's direct_gemm_max_rows
    (ResNet's last layers at 7x7 on AVX-512) is not packed when its HWIO
    weights can be read as they are (K a whole number of vectors); it
    matches the reference either way, with bias and ReLU: one pixel, a few
    more than dense_rows, one under the limit, the limit."""
    limit = fastconv.config()["isa_config"][np.dtype(dtype).name]["direct_gemm_max_rows"]
    h, w = {"one": (1, 1), "few": (3, 4), "limit": (1, limit - 1), "over": (1, limit)}[pixels]
    check_conv(rng, n=1, h=h, w=w, c=40, k=k, kh=1, kw=1, relu=True, dtype=dtype)
    x, weight = np.zeros((1, h, w, 40), dtype), np.zeros((1, 1, 40, k), dtype)
    _, ran = _conv.conv2d_algorithm(x, weight)
    # 64 and 48 are whole vectors on every ISA and dtype, 33 on none; one
    # pixel goes through the dense kernel
    assert ran == ("dense" if h * w <= DENSE_ROWS else
                   "gemm-in-place" if k != 33 and h * w < limit else "gemm")
