"""The weights the functions keep (fastconv._prepared): conv2d,
conv_transpose2d and matmul called again with the same weight array keep a
copy of its values and the operator made over it. Whatever the algorithm,
a kept call is bitwise the first call's, and a change to the weights or the
bias, made in any way, is seen at the next call (never a stale result)."""
import gc
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _config
from fastconv._conv import conv2d_algorithm

from checks import random_array


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Every test starts with nothing kept and the default limit, and leaves
    them so."""
    limit = fastconv.get_weight_cache()["max_bytes"]
    fastconv.clear_weight_cache()
    yield
    fastconv.set_weight_cache(limit)
    fastconv.clear_weight_cache()


def kept() -> int:
    return fastconv.get_weight_cache()["weights"]


# (x NHWC, weight HWIO, options, the algorithm conv2d runs): one case per
# algorithm, the one-call thresholds of config()["isa_config"] in mind
# (Winograd F(2x2) from 196 2x2 tiles per image and 64 channels, F(4x4)
# from 196 4x4 tiles).
CASES = {
    "igemm": ((1, 9, 9, 8), (3, 3, 8, 16), dict(padding=1, stride=2), "igemm"),
    "gemm": ((1, 30, 30, 32), (1, 1, 32, 48), {}, "gemm"),
    "gemm-in-place": ((1, 4, 4, 16), (1, 1, 16, 32), {}, "gemm-in-place"),
    "dense": ((2, 5, 5, 8), (5, 5, 8, 24), {}, "dense"),
    "depthwise": ((1, 12, 12, 16), (3, 3, 1, 16), dict(padding=1, groups=16), "depthwise"),
    "winograd-f2x2": ((1, 40, 40, 64), (3, 3, 64, 64), dict(padding=1), "winograd-f2x2-3x3"),
    "winograd-f4x4": ((1, 56, 56, 64), (3, 3, 64, 64), dict(padding=1), "winograd-f4x4-3x3"),
}


@pytest.mark.parametrize("case", CASES)
def test_kept_calls_are_bitwise_the_first_call(rng, isa, case):
    xs, ws, options, algorithm = CASES[case]
    x = random_array(rng, xs, np.float32)
    w = random_array(rng, ws, np.float32)
    b = random_array(rng, (ws[3],), np.float32)
    first, ran = conv2d_algorithm(x, w, b, **options)
    assert ran == algorithm
    assert kept() == 0  # seen once: nothing kept yet
    for call in range(3):
        y, ran = conv2d_algorithm(x, w, b, **options)
        assert ran == algorithm
        assert kept() == 1
        np.testing.assert_array_equal(y, first)
    # and what a fresh array of the same values computes with nothing kept
    fastconv.set_weight_cache(0)
    np.testing.assert_array_equal(fastconv.conv2d(x, w.copy(), b.copy(), **options), first)


@pytest.mark.parametrize("case", CASES)
def test_a_change_in_place_is_seen_at_the_next_call(rng, case):
    xs, ws, options, _ = CASES[case]
    x = random_array(rng, xs, np.float32)
    w = random_array(rng, ws, np.float32)
    b = random_array(rng, (ws[3],), np.float32)
    for _ in range(2):
        fastconv.conv2d(x, w, b, **options)
    assert kept() == 1
    w[0, 0, 0, 0] += 1.0  # one value, in place: the same object, the same pointer
    fresh = fastconv.conv2d(x, w.copy(), b, **options)
    np.testing.assert_array_equal(fastconv.conv2d(x, w, b, **options), fresh)
    b[-1] = -5.0  # the bias, in place
    fresh = fastconv.conv2d(x, w.copy(), b.copy(), **options)
    for _ in range(2):  # kept again, with the new values
        np.testing.assert_array_equal(fastconv.conv2d(x, w, b, **options), fresh)
    # a change through another view of the same memory
    w.reshape(-1)[-1] = 7.0
    fresh = fastconv.conv2d(x, w.copy(), b.copy(), **options)
    np.testing.assert_array_equal(fastconv.conv2d(x, w, b, **options), fresh)
    # without the bias, then with it again
    np.testing.assert_array_equal(fastconv.conv2d(x, w, **options),
                                  fastconv.conv2d(x, w.copy(), **options))
    np.testing.assert_array_equal(fastconv.conv2d(x, w, b, **options), fresh)


def test_a_change_of_shape_in_place_is_seen(rng):
    x = random_array(rng, (1, 6, 6, 4), np.float32)
    w = random_array(rng, (1, 1, 4, 8), np.float32)
    for _ in range(2):
        fastconv.conv2d(x, w)
    # the same object and memory, another kernel: 1x1 8 -> 4
    w.shape = (1, 1, 8, 4)
    x8 = random_array(rng, (1, 6, 6, 8), np.float32)
    np.testing.assert_array_equal(fastconv.conv2d(x8, w), fastconv.conv2d(x8, w.copy()))


def test_nonfinite_weights_are_kept_with_their_ieee_results(rng):
    x = random_array(rng, (1, 7, 7, 3), np.float32)
    w = random_array(rng, (3, 3, 3, 5), np.float32)
    w[1, 1, 0, 2], w[0, 2, 1, 4] = np.inf, np.nan
    first = fastconv.conv2d(x, w, padding=1)
    for _ in range(2):
        np.testing.assert_array_equal(fastconv.conv2d(x, w, padding=1), first)
    assert kept() == 1
    assert np.isnan(first).any() and np.isinf(first).any()


def test_options_and_isa_are_part_of_what_is_kept(rng):
    x = random_array(rng, (1, 10, 10, 8), np.float32)
    w = random_array(rng, (3, 3, 8, 8), np.float32)
    for stride in (1, 2, 1, 2):
        np.testing.assert_array_equal(fastconv.conv2d(x, w, stride=stride),
                                      fastconv.conv2d(x, w.copy(), stride=stride))
    assert kept() == 2
    isas = _config.available_isas()
    for name in isas:
        previous = _config.set_isa(name)
        try:
            for _ in range(2):
                y = fastconv.conv2d(x, w)
            fastconv.set_weight_cache(0)
            np.testing.assert_array_equal(y, fastconv.conv2d(x, w))
            fastconv.set_weight_cache(2**29)
        finally:
            _config.set_isa(previous)


def test_only_ndarrays_of_the_calls_dtype_in_c_order_are_kept(rng):
    x = random_array(rng, (1, 6, 6, 4), np.float64)
    w = random_array(rng, (3, 3, 4, 4), np.float64)
    listed = w.tolist()
    strided = np.asfortranarray(w)
    for _ in range(3):
        fastconv.conv2d(x, listed)
        fastconv.conv2d(x, strided)
    assert kept() == 0
    for _ in range(2):
        fastconv.conv2d(x, w)
    assert kept() == 1


def test_an_array_that_dies_takes_its_copy_with_it(rng):
    x = random_array(rng, (1, 6, 6, 4), np.float32)
    w = random_array(rng, (3, 3, 4, 4), np.float32)
    for _ in range(2):
        fastconv.conv2d(x, w)
    assert kept() == 1 and fastconv.get_weight_cache()["bytes"] > w.nbytes
    del w
    gc.collect()
    assert fastconv.get_weight_cache() == {"max_bytes": fastconv.get_weight_cache()["max_bytes"],
                                           "bytes": 0, "weights": 0, "seen": 0}


def test_the_limit_bounds_what_is_kept(rng):
    x = random_array(rng, (1, 6, 6, 16), np.float32)
    ws = [random_array(rng, (1, 1, 16, 64), np.float32) for _ in range(6)]  # 4 KiB each
    fastconv.set_weight_cache(4 * 4096 * 3)  # room for a few, counted with their panels
    for w in ws:
        for _ in range(2):
            fastconv.conv2d(x, w)
    state = fastconv.get_weight_cache()
    assert 1 <= state["weights"] < len(ws)
    assert state["bytes"] <= state["max_bytes"]
    # the most recent ones stay: they compute what fresh arrays do
    np.testing.assert_array_equal(fastconv.conv2d(x, ws[-1]), fastconv.conv2d(x, ws[-1].copy()))
    fastconv.set_weight_cache(4096)  # less than one: what is kept goes
    assert fastconv.get_weight_cache()["weights"] == 0
    for _ in range(3):
        fastconv.conv2d(x, ws[0])
    assert kept() == 0  # alone more than half the limit: never kept
    fastconv.set_weight_cache(0)
    assert fastconv.get_weight_cache()["seen"] == 0


def test_set_weight_cache_checks_its_argument():
    with pytest.raises(TypeError, match="set_weight_cache: max_bytes must be an int >= 0"):
        fastconv.set_weight_cache(1.5)
    with pytest.raises(ValueError, match="set_weight_cache: max_bytes must be >= 0; got -1"):
        fastconv.set_weight_cache(-1)


def test_bad_weights_give_the_same_error_at_every_call(rng):
    x = random_array(rng, (1, 6, 6, 4), np.float32)
    w = random_array(rng, (3, 3, 5, 4), np.float32)  # 5 input channels; x has 4
    for _ in range(3):
        with pytest.raises(ValueError, match="weight has 5 input channels per group"):
            fastconv.conv2d(x, w)
    w3 = random_array(rng, (3, 3, 4), np.float32)
    for _ in range(3):
        with pytest.raises(ValueError, match="weight must be 4-D"):
            fastconv.conv2d(x, w3)


def test_threads_share_kept_weights(rng):
    """Calls from several threads, with the weights kept by one of them and
    prepared lazily (Winograd's) by whichever comes first, all compute the
    first call's result."""
    xs, ws, options, _ = CASES["winograd-f2x2"]
    x = random_array(rng, xs, np.float32)
    w = random_array(rng, ws, np.float32)
    first = fastconv.conv2d(x, w, **options, num_threads=1)
    results, errors = [], []
    start = threading.Barrier(4)

    def work():
        try:
            start.wait()
            for _ in range(3):
                results.append(fastconv.conv2d(x, w, **options, num_threads=1))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12
    for y in results:
        np.testing.assert_array_equal(y, first)


def test_conv_transpose2d_and_matmul_keep_their_weights(rng):
    x = random_array(rng, (1, 5, 5, 4), np.float32)
    w = random_array(rng, (4, 4, 6, 4), np.float32)  # (kh, kw, K, C)
    first = fastconv.conv_transpose2d(x, w, stride=2)
    for _ in range(2):
        np.testing.assert_array_equal(fastconv.conv_transpose2d(x, w, stride=2), first)
    assert kept() == 1
    w[1, 2, 3, 0] = 4.0
    np.testing.assert_array_equal(fastconv.conv_transpose2d(x, w, stride=2),
                                  fastconv.conv_transpose2d(x, w.copy(), stride=2))

    a = random_array(rng, (600, 64), np.float32)  # rows enough for the packed GEMM
    b = random_array(rng, (64, 40), np.float32)
    first = fastconv.matmul(a, b)
    for _ in range(2):
        np.testing.assert_array_equal(fastconv.matmul(a, b), first)
    assert kept() == 2
    b[0, 0] = 9.0
    np.testing.assert_array_equal(fastconv.matmul(a, b), fastconv.matmul(a, b.copy()))


def test_config_reports_the_cache(rng):
    x = random_array(rng, (1, 6, 6, 4), np.float32)
    w = random_array(rng, (3, 3, 4, 4), np.float32)
    fastconv.conv2d(x, w)
    assert fastconv.config()["weight_cache"]["seen"] == 1
    fastconv.conv2d(x, w)
    assert fastconv.config()["weight_cache"]["weights"] == 1
