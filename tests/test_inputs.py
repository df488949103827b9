"""Inputs however they are held: every memory layout numpy has, and arrays
of other libraries (PyTorch tensors, memoryviews, array.array, objects with
__array__, lists). Each gives the result of a plain C-contiguous array, bit
for bit, or an error that names the argument.

The PyTorch tests have "torch" in their names (-k "not torch" deselects
them) and are skipped when torch is not installed.
"""

import array

import numpy as np
import pytest

import fastconv
from checks import MEMORY_KINDS, in_memory, random_array
from test_errors import raises_naming

KINDS = [kind for kind in MEMORY_KINDS if kind != "contiguous"]


def _api_case(api, rng):
    """(x, weight, bias, run(x, weight, bias) -> result) for one entry point.
    The shapes avoid the one-pixel and few-row paths, whose dense kernel
    reads C- and F-ordered weights in different orders."""
    if api.startswith(("conv2d", "Conv2d")):
        layout = api[-4:]
        groups = 6 if "depthwise" in api else 1
        x = random_array(rng, (2, 7, 6, 6), np.float32)
        weight = random_array(rng, (3, 3, 6 // groups, 6), np.float32)
        if layout == "NCHW":
            x, weight = x.transpose(0, 3, 1, 2).copy(), weight.transpose(3, 2, 0, 1).copy()
        kwargs = dict(stride=(2, 1), padding=1, groups=groups, layout=layout,
                      activation="relu")
        if api.startswith("conv2d"):
            return x, weight, random_array(rng, (6,), np.float32), \
                lambda x, weight, bias: fastconv.conv2d(x, weight, bias, **kwargs)
        return x, weight, random_array(rng, (6,), np.float32), \
            lambda x, weight, bias: fastconv.Conv2d(weight, bias, **kwargs)(x)
    x = random_array(rng, (13, 17), np.float64)
    weight = random_array(rng, (17, 9), np.float64)
    bias = random_array(rng, (9,), np.float64)
    if api == "matmul":
        return x, weight, bias, lambda x, weight, bias: fastconv.matmul(x, weight, bias)
    if api == "Linear-OI":
        weight = weight.T.copy()
    layout = api[-2:]
    return x, weight, bias, lambda x, weight, bias: fastconv.Linear(
        weight, bias, weight_layout=layout)(x)


APIS = ["conv2d-NHWC", "conv2d-NCHW", "conv2d-depthwise-NHWC", "Conv2d-NHWC", "Conv2d-NCHW",
        "Conv2d-depthwise-NCHW", "matmul", "Linear-IO", "Linear-OI"]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("argument", ["x", "weight", "bias"])
@pytest.mark.parametrize("kind", KINDS)
def test_any_memory_layout_gives_the_contiguous_result(rng, api, argument, kind):
    """Read-only, strided, negatively strided, Fortran-ordered, byte-swapped
    and unaligned arrays are read correctly, and never written to."""
    x, weight, bias, run = _api_case(api, rng)
    expected = run(x, weight, bias)
    arrays = {"x": x, "weight": weight, "bias": bias}
    arrays[argument] = in_memory(arrays[argument], kind)
    before = arrays[argument].copy()
    result = run(**arrays)
    assert result.dtype == x.dtype and result.flags.c_contiguous
    assert np.array_equal(result, expected)
    assert np.array_equal(arrays[argument], before)


# --------------------------------------------------------------------------
# out= that cannot be written as the result (the gaps of test_errors.py:
# the layers, and byte-swapped out everywhere)
# --------------------------------------------------------------------------
def _layer_out_case(api, rng):
    """(x, call(x, out)) and the shape of the result."""
    if api == "Conv2d":
        x = random_array(rng, (1, 6, 6, 4), np.float32)
        layer = fastconv.Conv2d(random_array(rng, (3, 3, 4, 4), np.float32), padding=1)
        return x, lambda x, out: layer(x, out=out), (1, 6, 6, 4)
    if api == "Linear":
        x = random_array(rng, (6, 4), np.float32)
        layer = fastconv.Linear(random_array(rng, (4, 4), np.float32))
        return x, lambda x, out: layer(x, out=out), (6, 4)
    if api == "conv2d":
        x = random_array(rng, (1, 6, 6, 4), np.float32)
        w = random_array(rng, (1, 1, 4, 4), np.float32)
        return x, lambda x, out: fastconv.conv2d(x, w, out=out), (1, 6, 6, 4)
    w = random_array(rng, (4, 4), np.float32)
    return random_array(rng, (6, 4), np.float32), \
        lambda x, out: fastconv.matmul(x, w, out=out), (6, 4)


def _bad_out(problem, shape, x):
    """(out, x): an out of the right shape with one problem."""
    if problem == "read-only":
        out = np.zeros(shape, np.float32)
        out.setflags(write=False)
    elif problem == "fortran":
        out = np.zeros(shape, np.float32, order="F")
    elif problem == "strided":
        out = np.zeros(shape[:-1] + (2 * shape[-1],), np.float32)[..., ::2]
    elif problem == "reversed":
        out = np.zeros(shape, np.float32)[..., ::-1]
    elif problem == "byteswapped":
        out = np.zeros(shape, np.dtype(np.float32).newbyteorder())
    elif problem == "unaligned":
        out = in_memory(np.zeros(shape, np.float32), "unaligned")
    elif problem == "is-x":
        out = x = x.copy()
    else:  # "overlaps-x": out starts in the middle of x
        buffer = np.zeros(x.size + int(np.prod(shape)), np.float32)
        buffer[:x.size] = x.ravel()
        x = buffer[:x.size].reshape(x.shape)
        out = buffer[x.size // 2:x.size // 2 + int(np.prod(shape))].reshape(shape)
    return out, x


OUT_PROBLEMS = ["read-only", "fortran", "strided", "reversed", "byteswapped", "unaligned",
                "is-x", "overlaps-x"]


@pytest.mark.parametrize("api", ["Conv2d", "Linear"])
@pytest.mark.parametrize("problem", OUT_PROBLEMS)
def test_layer_bad_out(rng, api, problem):
    x, call, shape = _layer_out_case(api, rng)
    out, x = _bad_out(problem, shape, x)
    before = np.array(out)
    with raises_naming(ValueError, "out"):
        call(x, out)
    assert np.array_equal(out, before, equal_nan=True), "out was written"


@pytest.mark.parametrize("api", ["conv2d", "matmul"])
def test_byteswapped_out(rng, api):
    x, call, shape = _layer_out_case(api, rng)
    out, x = _bad_out("byteswapped", shape, x)
    with raises_naming(ValueError, "out", ">f4"):
        call(x, out)


def test_layers_keep_their_own_copy_of_the_weights(rng):
    """Writing to the caller's arrays after building a layer changes nothing
    (the depthwise kernel used to read the caller's weight and bias in
    place)."""
    x = random_array(rng, (1, 6, 7, 8), np.float32)
    for weight_shape, groups in (((3, 3, 1, 8), 8), ((3, 3, 8, 8), 1), ((1, 1, 8, 8), 1)):
        weight = random_array(rng, weight_shape, np.float32)
        bias = random_array(rng, (8,), np.float32)
        layer = fastconv.Conv2d(weight, bias, padding=1, groups=groups)
        before = layer(x)
        weight[...] = 7
        bias[...] = 100
        assert np.array_equal(layer(x), before), weight_shape
    weight = random_array(rng, (8, 5), np.float32)
    bias = random_array(rng, (5,), np.float32)
    linear = fastconv.Linear(weight, bias)
    before = linear(x[0, 0])
    weight[...] = 7
    bias[...] = 100
    assert np.array_equal(linear(x[0, 0]), before)


# --------------------------------------------------------------------------
# Arrays of other libraries
# --------------------------------------------------------------------------
class OnlyArray:
    """An object numpy converts through __array__ alone."""

    def __init__(self, values):
        self._values = values

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._values, dtype=dtype)


class BrokenArray:
    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("cannot export these values")


def _conv_case(rng, dtype=np.float32):
    x = random_array(rng, (2, 6, 5, 3), dtype)
    w = random_array(rng, (3, 3, 3, 4), dtype)
    b = random_array(rng, (4,), dtype)
    return x, w, b, fastconv.conv2d(x, w, b, padding=1)


@pytest.mark.parametrize("wrap", ["memoryview", "__array__"])
def test_buffer_protocol_and_array_interface_inputs(rng, wrap):
    convert = memoryview if wrap == "memoryview" else OnlyArray
    x, w, b, expected = _conv_case(rng)
    assert np.array_equal(fastconv.conv2d(convert(x), convert(w), convert(b), padding=1),
                          expected)
    assert np.array_equal(fastconv.Conv2d(convert(w), convert(b), padding=1)(convert(x)),
                          expected)
    a, m = x.reshape(-1, 3), w[1, 1]
    assert np.array_equal(fastconv.matmul(convert(a), convert(m)), fastconv.matmul(a, m))
    assert np.array_equal(fastconv.Linear(convert(m))(convert(a)), fastconv.Linear(m)(a))


def test_array_module_arrays(rng):
    """array.array is 1-D: a bias, or a Linear layer's single input."""
    x, w, b, expected = _conv_case(rng)
    assert np.array_equal(fastconv.conv2d(x, w, array.array("f", b), padding=1), expected)
    weight = random_array(rng, (4, 3), np.float64)
    features = array.array("d", [0.5, -1.0, 2.0, 0.25])
    assert np.array_equal(fastconv.Linear(weight)(features),
                          fastconv.Linear(weight)(np.array(features)))
    with raises_naming(TypeError, "x", "float64", "float32"):
        fastconv.conv2d(array.array("d", x.ravel()), w)


def test_lists(rng):
    """Lists of floats are float64 arrays; anything else is a clear error."""
    x, w, b, _ = _conv_case(rng, np.float64)
    assert np.array_equal(fastconv.conv2d(x.tolist(), w.tolist(), b.tolist(), padding=1),
                          fastconv.conv2d(x, w, b, padding=1))
    assert np.array_equal(fastconv.matmul([[1.0, 2.0]], [[3.0], [4.0]]), [[11.0]])
    with raises_naming(TypeError, "x", "float64", "float32"):
        fastconv.conv2d(x.tolist(), w.astype(np.float32))
    with raises_naming(TypeError, "a", "int64"):
        fastconv.matmul([[1, 2]], [[3], [4]])
    with raises_naming(TypeError, "x", "list"):
        fastconv.conv2d([[[[1.0]]], [[[1.0, 2.0]]]], w)   # ragged


def test_unconvertible_objects_name_the_argument(rng):
    x, w, b, _ = _conv_case(rng)
    with raises_naming(TypeError, "weight", "BrokenArray", "cannot export"):
        fastconv.conv2d(x, BrokenArray(), b)
    with raises_naming(TypeError, "bias", "BrokenArray"):
        fastconv.Conv2d(w, BrokenArray())
    with raises_naming(TypeError, "x"):
        fastconv.conv2d(b"\x00" * 16, w)
    # None where an array is required (it used to escape as StopIteration)
    with raises_naming(TypeError, "x", "object"):
        fastconv.conv2d(None, w)
    with raises_naming(TypeError, "weight", "object"):
        fastconv.conv2d(x, None)
    with raises_naming(TypeError, "b", "object"):
        fastconv.matmul(x[0, 0], None)
    with raises_naming(TypeError, "x", "object"):
        fastconv.Linear(w[0, 0])(None)


def test_out_overlapping_an_input_seen_through_a_memoryview(rng):
    """The overlap check looks at the memory the input is read from, not
    only at numpy arrays passed as such."""
    out = np.zeros((2, 6, 5, 3), np.float32)
    out[...] = random_array(rng, out.shape, np.float32)
    w = random_array(rng, (1, 1, 3, 3), np.float32)
    with raises_naming(ValueError, "out", "overlap"):
        fastconv.conv2d(memoryview(out), w, out=out)
    with raises_naming(ValueError, "out", "overlap"):
        fastconv.Conv2d(w)(OnlyArray(out), out=out)
    with raises_naming(ValueError, "out", "overlap"):
        fastconv.Linear(w[0, 0])(memoryview(out.reshape(-1, 3)), out=out.reshape(-1, 3))
    with raises_naming(ValueError, "out", "overlap"):
        fastconv.matmul(memoryview(out.reshape(-1, 3)), w[0, 0], out=out.reshape(-1, 3))


# --------------------------------------------------------------------------
# PyTorch tensors
# --------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def test_torch_tensors_as_inputs(rng):
    torch = _torch()
    for dtype in (np.float32, np.float64):
        x, w, b, expected = _conv_case(rng, dtype)
        xt, wt, bt = (torch.from_numpy(a.copy()) for a in (x, w, b))
        assert np.array_equal(fastconv.conv2d(xt, wt, bt, padding=1), expected)
        assert np.array_equal(fastconv.Conv2d(wt, bt, padding=1)(xt), expected)
        # NCHW tensors, and a channels_last one (NHWC memory, NCHW shape)
        x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        w_oihw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
        nchw = fastconv.conv2d(x_nchw, w_oihw, bt, padding=1, layout="NCHW")
        assert np.array_equal(nchw, expected.transpose(0, 3, 1, 2))
        channels_last = x_nchw.contiguous(memory_format=torch.channels_last)
        assert np.array_equal(fastconv.conv2d(channels_last, w_oihw, bt, padding=1,
                                              layout="NCHW"), nchw)
        # PyTorch's Linear weight (out, in), transposed view and all
        a = random_array(rng, (12, 3), dtype)
        weight = torch.from_numpy(random_array(rng, (5, 3), dtype))
        assert np.array_equal(fastconv.Linear(weight, weight_layout="OI")(torch.from_numpy(a)),
                              fastconv.Linear(weight.numpy(), weight_layout="OI")(a))
        assert np.array_equal(fastconv.matmul(torch.from_numpy(a), weight.T),
                              fastconv.matmul(a, weight.numpy().T))


def test_torch_tensor_that_requires_grad_is_a_clear_error(rng):
    torch = _torch()
    x, w, _, _ = _conv_case(rng)
    xt = torch.from_numpy(x).requires_grad_()
    with raises_naming(TypeError, "x", "Tensor", "detach"):
        fastconv.conv2d(xt, w)
    with raises_naming(TypeError, "weight", "Tensor"):
        fastconv.Linear(torch.ones(3, 2, requires_grad=True))


def test_torch_half_precision_is_refused(rng):
    torch = _torch()
    x, w, _, _ = _conv_case(rng)
    with raises_naming(TypeError, "x", "float16"):
        fastconv.conv2d(torch.from_numpy(x).half(), w)
    with raises_naming(TypeError, "x", "BFloat16"):
        fastconv.conv2d(torch.from_numpy(x).bfloat16(), w)


def test_torch_out_sharing_memory_with_the_input_is_refused(rng):
    """out = t.numpy() and x = t are one buffer: refused, not computed in
    place (the kernels would read what they had just written)."""
    torch = _torch()
    t = torch.from_numpy(random_array(rng, (1, 5, 5, 4), np.float32))
    before = t.clone()
    with raises_naming(ValueError, "out", "overlap"):
        fastconv.conv2d(t, np.ones((1, 1, 4, 4), np.float32), out=t.numpy())
    assert torch.equal(t, before)
