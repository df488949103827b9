"""fastconv.nn graph models (nn.Input, nn.Model) and the structural layers:
wiring against the same layers composed by hand (bitwise) and against torch
(float64), shared and nested models, names, summary, every bad graph's
error, memory freed as the graph runs, save/load round trips."""

import gc
import io
import json
import weakref

import numpy as np
import pytest

from fastconv import nn
from checks import random_array


def hwio(rng, kh, kw, c, k, dtype=np.float32):
    return random_array(rng, (kh, kw, c, k), dtype)


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def torch_conv(x_nhwc, w_hwio, b=None, padding=0):
    """torch's float64 conv2d of an NHWC input and HWIO weight, as NHWC."""
    torch = pytest.importorskip("torch")
    y = torch.nn.functional.conv2d(
        torch.from_numpy(to_nchw(x_nhwc.astype(np.float64))),
        torch.from_numpy(np.ascontiguousarray(w_hwio.astype(np.float64).transpose(3, 2, 0, 1))),
        None if b is None else torch.from_numpy(b.astype(np.float64)), padding=padding)
    return np.ascontiguousarray(y.numpy().transpose(0, 2, 3, 1))


def residual_block(rng, c=4, dtype=np.float32, name=None):
    """x -> conv 3x3 + relu -> conv 3x3 -> + x -> relu, on (8, 8, c) maps:
    (model, conv1, conv2)."""
    x = nn.Input((8, 8, c), name="x")
    conv1 = nn.Conv2d(hwio(rng, 3, 3, c, c, dtype), random_array(rng, (c,), dtype), padding=1,
                      activation="relu")
    conv2 = nn.Conv2d(hwio(rng, 3, 3, c, c, dtype), random_array(rng, (c,), dtype), padding=1)
    y = nn.ReLU()(nn.Add()([conv2(conv1(x)), x]))
    return nn.Model(x, y, name=name), conv1, conv2


# --------------------------------------------------------------------------
# Graphs against the same computation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_residual_block(rng, dtype):
    model, conv1, conv2 = residual_block(rng, dtype=dtype)
    x = random_array(rng, (2, 8, 8, 4), dtype)
    y = model(x)
    assert y.dtype == dtype and y.shape == (2, 8, 8, 4)
    # the same layers composed by hand: exactly the same arrays
    by_hand = nn.ReLU()(conv2(conv1(x)) + x)
    assert np.array_equal(y, by_hand)
    if dtype == np.float64:
        h = np.maximum(torch_conv(x, conv1.weight, conv1.bias, 1), 0)
        expected = np.maximum(torch_conv(h, conv2.weight, conv2.bias, 1) + x, 0)
        assert np.allclose(y, expected, rtol=0, atol=1e-12)


def two_in_two_out(rng, dtype=np.float64):
    """a (8, 8, 3), b (8, 8, 5):
    p = relu(conv3x3(a));  out1 = conv1x1(concat(p, b));
    out2 = linear(global_pool(p * conv1x1(b)))."""
    a, b = nn.Input((8, 8, 3), name="a"), nn.Input((8, 8, 5), name="b")
    layers = dict(
        conv_a=nn.Conv2d(hwio(rng, 3, 3, 3, 6, dtype), padding=1, name="conv_a"),
        mix=nn.Conv2d(hwio(rng, 1, 1, 11, 2, dtype), random_array(rng, (2,), dtype), name="mix"),
        gate=nn.Conv2d(hwio(rng, 1, 1, 5, 6, dtype), name="gate"),
        head=nn.Linear(random_array(rng, (6, 3), dtype), random_array(rng, (3,), dtype),
                       name="head"))
    p = nn.ReLU()(layers["conv_a"](a))
    out1 = layers["mix"](nn.Concatenate()([p, b]))
    out2 = layers["head"](nn.GlobalAvgPool2d()(nn.Multiply()([p, layers["gate"](b)])))
    return nn.Model([a, b], [out1, out2], name="dag"), layers


def test_two_inputs_two_outputs(rng):
    model, L = two_in_two_out(rng)
    assert model.input_names == ["a", "b"]
    assert model.output_shape([(8, 8, 3), (8, 8, 5)]) == [(8, 8, 2), (3,)]
    xa, xb = random_array(rng, (2, 8, 8, 3), np.float64), random_array(rng, (2, 8, 8, 5),
                                                                       np.float64)
    out1, out2 = model([xa, xb])
    # by hand, with the same layers: bitwise
    p = nn.ReLU()(L["conv_a"](xa))
    assert np.array_equal(out1, L["mix"](np.concatenate([p, xb], axis=-1)))
    assert np.array_equal(out2, L["head"]((p * L["gate"](xb)).mean(axis=(1, 2))))
    # a dict keyed by input name, in any order, is the same call
    d1, d2 = model({"b": xb, "a": xa})
    assert np.array_equal(d1, out1) and np.array_equal(d2, out2)
    # torch, float64
    pt = np.maximum(torch_conv(xa, L["conv_a"].weight, None, 1), 0)
    e1 = torch_conv(np.concatenate([pt, xb], axis=-1), L["mix"].weight, L["mix"].bias)
    e2 = (pt * torch_conv(xb, L["gate"].weight)).mean(axis=(1, 2)) @ L["head"].weight \
        + L["head"].bias
    assert np.allclose(out1, e1, rtol=0, atol=1e-12)
    assert np.allclose(out2, e2, rtol=0, atol=1e-12)


def test_nchw_graph_matches_nhwc(rng):
    """The residual block built NCHW computes the NHWC one's result, bitwise
    (the convolutions run NCHW maps through the NHWC kernels)."""
    nhwc, conv1, conv2 = residual_block(rng)
    x = nn.Input((4, 8, 8))
    c1 = nn.Conv2d(np.ascontiguousarray(conv1.weight.transpose(3, 2, 0, 1)), conv1.bias,
                   padding=1, activation="relu", layout="NCHW")
    c2 = nn.Conv2d(np.ascontiguousarray(conv2.weight.transpose(3, 2, 0, 1)), conv2.bias,
                   padding=1, layout="NCHW")
    nchw = nn.Model(x, nn.ReLU()(nn.Add()([c2(c1(x)), x])), layout="NCHW")
    data = random_array(rng, (2, 8, 8, 4), np.float32)
    assert np.array_equal(to_nchw(nhwc(data)), nchw(to_nchw(data)))


def test_an_input_without_the_batch_axis(rng):
    """As in Sequential: a 3-D map goes to the layers as it is (Conv2d,
    Add and the pads take it) and comes back 3-D."""
    model, _, _ = residual_block(rng)
    x = random_array(rng, (3, 8, 8, 4), np.float32)
    assert np.array_equal(model(x[1]), model(x)[1])
    padded = nn.Model(model.inputs, nn.ZeroPad2d(1)(model.outputs[0]))
    assert padded(x[1]).shape == (10, 10, 4)


def test_inputs_of_any_size(rng):
    """An Input with None axes: a fully convolutional graph runs on any
    image size; shapes are known when it runs (or when asked for)."""
    x = nn.Input((None, None, 4))
    conv = nn.Conv2d(hwio(rng, 3, 3, 4, 4), padding=1)
    model = nn.Model(x, nn.Add()([conv(x), x]))
    assert model.outputs[0].shape is None
    assert model.output_shape((10, 13, 4)) == (10, 13, 4)
    for h, w in [(5, 7), (16, 9)]:
        data = random_array(rng, (1, h, w, 4), np.float32)
        assert np.array_equal(model(data), conv(data) + data)
    assert "(None, None, 4)" in model.summary() and "?" in model.summary()
    assert "(10, 13, 4)" in model.summary((10, 13, 4))
    with pytest.raises(ValueError, match=r"input 'input' must have shape \(N, None, None, 4\)"):
        model(np.zeros((1, 5, 5, 3), np.float32))


def test_num_threads_reaches_every_layer(rng):
    seen = []

    class Probe(nn.Layer):
        def forward(self, x, *, num_threads=None):
            seen.append(num_threads)
            return x

        def output_shape(self, shape):
            return shape

    x = nn.Input((4, 4, 1))
    model = nn.Model(x, Probe()(nn.Conv2d(hwio(rng, 1, 1, 1, 1))(Probe()(x))))
    model(np.ones((1, 4, 4, 1), np.float32), num_threads=1)
    assert seen == [1, 1]
    with pytest.raises(TypeError):
        model(np.ones((1, 4, 4, 1), np.float32), 1)  # num_threads by keyword only


def test_intermediates_are_freed_after_their_last_reader():
    """Each result is dropped as soon as no later node reads it: when a node
    runs, only the results it or a later node still reads are alive."""
    alive = {}

    class Probe(nn.Layer):
        def __init__(self, name):
            super().__init__(name)

        def forward(self, x, *, num_threads=None):
            gc.collect()
            alive[self.name] = sorted(k for k, ref in made.items() if ref() is not None)
            y = np.asarray(x) + 1.0
            made[self.name] = weakref.ref(y)
            return y

        def output_shape(self, shape):
            return shape

    class Sum(nn.Add):
        def forward(self, xs, *, num_threads=None):
            gc.collect()
            alive[self.name] = sorted(k for k, ref in made.items() if ref() is not None)
            return super().forward(xs)

    made = {}
    x = nn.Input((3,))
    a = Probe("a")(x)
    b = Probe("b")(a)
    c = Probe("c")(b)
    d = Probe("d")(c)
    out = Sum(name="sum")([d, a])  # a is read again at the end
    model = nn.Model(x, out)
    model(np.zeros((1, 3)))
    assert alive["b"] == ["a"]
    assert alive["c"] == ["a", "b"]        # b is c's input
    assert alive["d"] == ["a", "c"]        # b was freed after c ran
    assert alive["sum"] == ["a", "d"]      # c freed; a kept for the sum


# --------------------------------------------------------------------------
# Shared layers, nested models, Sequential as a Model
# --------------------------------------------------------------------------
def test_a_shared_layer_is_one_layer_with_one_name(rng):
    conv = nn.Conv2d(hwio(rng, 3, 3, 2, 2), padding=1)
    left, right = nn.Input((6, 6, 2), name="left"), nn.Input((6, 6, 2), name="right")
    model = nn.Model([left, right], nn.Add()([conv(left), conv(right)]))
    assert model.layers.count(conv) == 1 and len(model.nodes) == 3
    assert conv.name == "conv2d" and model.get_layer("conv2d") is conv
    summary = model.summary()
    assert "conv2d[0]" in summary and "conv2d[1]" in summary and "shared" in summary
    assert "add" in summary.splitlines()[-3] and "conv2d[0], conv2d[1]" in summary
    xl, xr = (random_array(rng, (1, 6, 6, 2), np.float32) for _ in range(2))
    assert np.array_equal(model([xl, xr]), conv(xl) + conv(xr))
    # applied twice in a chain, too
    seq = nn.Sequential(conv, conv)
    assert np.array_equal(seq(xl), conv(conv(xl)))


def test_nested_models(rng):
    block, _, _ = residual_block(rng)
    x = nn.Input((8, 8, 4), name="image")
    trunk = nn.Sequential(nn.Conv2d(hwio(rng, 1, 1, 4, 4)), nn.ReLU(), name="trunk")
    y = block(block(trunk(x)))  # one block, applied twice (shared weights)
    head = nn.Sequential(nn.GlobalAvgPool2d(), nn.Linear(random_array(rng, (4, 3), np.float32)))
    model = nn.Model(x, head(y), name="net")
    assert [type(layer).__name__ for layer in model.layers] == ["Sequential", "Model",
                                                                "Sequential"]
    assert model.get_layer("trunk") is trunk and model.get_layer("model") is block
    assert model.output_shape((8, 8, 4)) == (3,)
    assert model.num_params == trunk.num_params + block.num_params + head.num_params
    data = random_array(rng, (2, 8, 8, 4), np.float32)
    assert np.array_equal(model(data), head(block(block(trunk(data)))))
    # A model with two inputs nests too (applied to a list).
    pair, _ = two_in_two_out(rng, np.float32)
    one = nn.Model(pair.inputs, pair.outputs[0], name="first_output")
    a, b = nn.Input((8, 8, 3)), nn.Input((8, 8, 5))
    outer = nn.Model([a, b], nn.ReLU()(one([a, b])))
    xa, xb = random_array(rng, (1, 8, 8, 3), np.float32), random_array(rng, (1, 8, 8, 5),
                                                                       np.float32)
    assert np.array_equal(outer([xa, xb]), nn.ReLU()(pair([xa, xb])[0]))


def test_a_model_with_two_outputs_is_not_a_layer(rng):
    pair, _ = two_in_two_out(rng)
    with pytest.raises(ValueError, match=r"Model 'dag': a model with 2 outputs cannot be "
                                         r"applied as a layer"):
        pair([nn.Input((8, 8, 3)), nn.Input((8, 8, 5))])


def test_sequential_is_a_model(rng):
    seq = nn.Sequential(nn.Conv2d(hwio(rng, 3, 3, 2, 4)), nn.ReLU(name="act"), nn.Flatten())
    assert isinstance(seq, nn.Model) and isinstance(seq, nn.Layer)
    assert seq.input_names == ["input"] and seq.output_names == ["flatten"]
    assert seq.get_layer("act") is seq[1] and seq.inputs[0].shape is None
    assert seq.output_shape((8, 8, 2)) == (144,)
    # its list of layers is the model: a change is seen at the next call
    seq.layers.append(nn.Softmax())
    x = random_array(rng, (2, 8, 8, 2), np.float32)
    assert np.allclose(seq(x).sum(axis=1), 1, atol=1e-6)
    assert seq.output_names == ["softmax"] and "softmax" in seq.summary((8, 8, 2))
    # inside a graph
    inp = nn.Input((8, 8, 2))
    assert np.array_equal(nn.Model(inp, seq(inp))(x), seq(x))


def test_sequential_refuses_a_layer_that_takes_a_list():
    with pytest.raises(ValueError, match=r"Sequential: layer 1 \(Add\(\)\) takes several inputs"):
        nn.Sequential(nn.ReLU(), nn.Add())


# --------------------------------------------------------------------------
# Names, summary, get_layer
# --------------------------------------------------------------------------
def test_automatic_names_and_given_names(rng):
    x = nn.Input((4, 4, 1))
    c1, c2 = nn.Conv2d(hwio(rng, 1, 1, 1, 1)), nn.Conv2d(hwio(rng, 1, 1, 1, 1), name="mine")
    c3 = nn.Conv2d(hwio(rng, 1, 1, 1, 1))
    pool = nn.MaxPool2d(2)
    model = nn.Model(x, pool(c3(c2(c1(x)))))
    assert [layer.name for layer in model.layers] == ["conv2d", "mine", "conv2d_1", "max_pool2d"]
    assert x.name == "input" and model.input_names == ["input"]
    # a layer keeps the name its first model gave it; a new one avoids it
    c4 = nn.Conv2d(hwio(rng, 1, 1, 1, 1))
    again = nn.Model(x, c4(c1(x)))
    assert [layer.name for layer in again.layers] == ["conv2d", "conv2d_1"]
    assert [nn.ReLU(name="r").name, nn.GlobalAvgPool2d().name] == ["r", None]


def test_layers_of_separately_built_models_combine(rng):
    """Two Sequentials each name their conv "conv2d": a model of both
    names the second anew, for itself; the layers keep their names."""
    first = nn.Sequential(nn.Conv2d(hwio(rng, 1, 1, 1, 1)), nn.ReLU())
    second = nn.Sequential(nn.Conv2d(hwio(rng, 1, 1, 1, 1)), nn.ReLU())
    both = nn.Sequential(*first, *second)
    assert [layer.name for layer in both] == ["conv2d", "relu", "conv2d", "relu"]
    assert both.get_layer("conv2d") is first[0] and both.get_layer("conv2d_1") is second[0]
    assert both.get_layer("relu_1") is second[1]
    assert "conv2d_1  Conv2d" in both.summary((3, 3, 1))
    loaded = nn.load(_saved(both))
    assert [layer.name for layer in loaded] == ["conv2d", "relu", "conv2d_1", "relu_1"]
    # A given name is never changed: an automatic one makes way for it.
    mine = nn.ReLU(name="relu")
    model = nn.Sequential(second[1], mine)
    assert model.get_layer("relu") is mine and model.get_layer("relu_1") is second[1]
    # Two given names clash.
    with pytest.raises(ValueError, match=r"a ReLU layer and a ReLU layer are both named 'relu'; "
                                         r"the names given to the layers and inputs of a model "
                                         r"must be unique"):
        nn.Sequential(mine, nn.ReLU(name="relu"))


@pytest.mark.parametrize("make", [
    lambda name: nn.ReLU(name=name), lambda name: nn.Conv2d(np.ones((1, 1, 1, 1)), name=name),
    lambda name: nn.Linear(np.ones((2, 2)), name=name), lambda name: nn.MaxPool2d(2, name=name),
    lambda name: nn.AvgPool2d(2, name=name), lambda name: nn.Dropout(name=name),
    lambda name: nn.Flatten(name=name), lambda name: nn.Softmax(name=name),
    lambda name: nn.GlobalAvgPool2d(name=name), lambda name: nn.Add(name=name),
    lambda name: nn.Multiply(name=name), lambda name: nn.Concatenate(name=name),
    lambda name: nn.Identity(name=name), lambda name: nn.ZeroPad2d(1, name=name),
    lambda name: nn.Cropping2d(1, name=name), lambda name: nn.Input((2,), name=name),
    lambda name: nn.Sequential(name=name),
    lambda name: (lambda t: nn.Model(t, t, name=name))(nn.Input((1,)))])
def test_every_constructor_checks_its_name(make):
    assert make("n").name == "n"
    with pytest.raises(TypeError, match=r"name must be None or a non-empty str; got 3 of "
                                        r"type int"):
        make(3)
    with pytest.raises(ValueError, match=r"name must be None or a non-empty str; got ''"):
        make("")


def test_summary_lists_every_node(rng):
    model, conv1, _ = residual_block(rng, name="block")
    lines = model.summary().splitlines()
    assert lines[0] == "Model 'block' (NHWC)"
    assert lines[1].split() == ["name", "type", "output", "shape", "params", "reads"]
    rows = [" ".join(line.split()) for line in lines[2:-2]]
    assert rows == ["x Input (8, 8, 4) 0", "conv2d Conv2d (8, 8, 4) 148 x",
                    "conv2d_1 Conv2d (8, 8, 4) 148 conv2d", "add Add (8, 8, 4) 0 conv2d_1, x",
                    "relu ReLU (8, 8, 4) 0 add"]
    assert lines[-2] == "outputs: relu" and lines[-1] == "total params: 296"
    assert conv1.num_params == 3 * 3 * 4 * 4 + 4


def test_get_layer(rng):
    model, conv1, _ = residual_block(rng)
    assert model.get_layer("conv2d") is conv1
    with pytest.raises(ValueError, match=r"no layer named 'conv2'; close names: 'conv2d', "
                                         r"'conv2d_1'$"):
        model.get_layer("conv2")
    with pytest.raises(ValueError, match=r"no layer named 'zzz'; its layers are 'conv2d', "
                                         r"'conv2d_1', 'add', 'relu'$"):
        model.get_layer("zzz")
    with pytest.raises(ValueError, match=r"'x' is an Input, not a layer"):
        model.get_layer("x")


# --------------------------------------------------------------------------
# Bad graphs and bad calls: ValueErrors that name the layer
# --------------------------------------------------------------------------
def test_an_output_not_reachable_from_the_inputs():
    a, b = nn.Input((3,), name="a"), nn.Input((3,), name="b")
    with pytest.raises(ValueError, match=r"layer 'sum' \(Add\) reads Input 'b', which is not "
                                         r"among the model's inputs \(Input 'a'\)"):
        nn.Model(a, nn.Add(name="sum")([a, b]))
    with pytest.raises(ValueError, match=r"an output is Input 'b', which is not among"):
        nn.Model(a, [nn.ReLU()(a), b])


def test_an_unused_input_is_refused():
    a, b = nn.Input((3,), name="a"), nn.Input((3,), name="spare")
    with pytest.raises(ValueError, match=r"Input 'spare' is used by no output"):
        nn.Model([a, b], nn.ReLU()(a))


def test_a_hand_made_cycle_is_refused_not_followed():
    x = nn.Input((3,))
    r1 = nn.ReLU(name="first")
    t1 = r1(x)
    t2 = nn.ReLU(name="second")(t1)
    t1._inputs = (t2,)  # (impossible through the API)
    with pytest.raises(ValueError, match=r"the graph has a cycle through layer '(first|second)'"):
        nn.Model(x, t2)


def test_a_layer_of_another_layout():
    x = nn.Input((4, 4, 2))
    with pytest.raises(ValueError, match=r"Model: layer 'p' \(MaxPool2d\) is NCHW but the model "
                                         r"is NHWC"):
        nn.Model(x, nn.MaxPool2d(2, layout="NCHW", name="p")(x))


def test_incompatible_shapes_fail_as_the_graph_is_built(rng):
    x = nn.Input((8, 8, 3))
    conv = nn.Conv2d(hwio(rng, 3, 3, 4, 2), name="wrong_channels")
    with pytest.raises(ValueError, match=r"layer 'wrong_channels' \(Conv2d\) cannot take input "
                                         r"shape \(8, 8, 3\): Conv2d: x has C=3 channels, but the "
                                         r"weight has 4 input channels"):
        conv(x)
    small = nn.MaxPool2d(2, name="half")(x)
    with pytest.raises(ValueError, match=r"layer 'join' \(Add\) cannot take input shapes "
                                         r"\(8, 8, 3\), \(4, 4, 3\): Add: the inputs must have "
                                         r"one shape \(no broadcasting\)"):
        nn.Add(name="join")([x, small])
    with pytest.raises(ValueError, match=r"layer 'cat' \(Concatenate\) cannot take input shapes "
                                         r"\(8, 8, 3\), \(4, 4, 3\): Concatenate: the inputs "
                                         r"must agree on every axis but axis -1"):
        nn.Concatenate(name="cat")([x, small])
    with pytest.raises(TypeError, match=r"layer 'l' \(Linear\): its inputs and weights must "
                                        r"share one dtype; got its input float64, its weights "
                                        r"float32"):
        nn.Linear(np.ones((3, 2), np.float32), name="l")(nn.Input((3,), dtype="float64"))


def test_duplicate_names_are_refused():
    x = nn.Input((3,), name="x")
    with pytest.raises(ValueError, match=r"a ReLU layer and a Softmax layer are both named "
                                         r"'same'"):
        nn.Model(x, nn.Softmax(name="same")(nn.ReLU(name="same")(x)))
    with pytest.raises(ValueError, match=r"an Input and a ReLU layer are both named 'x'"):
        nn.Model(x, nn.ReLU(name="x")(x))


def test_bad_arguments_when_building():
    x = nn.Input((3,))
    with pytest.raises(TypeError, match=r"Add: takes a list of tensors; got one tensor"):
        nn.Add()(x)
    with pytest.raises(TypeError, match=r"ReLU: takes one tensor; got a list of 2"):
        nn.ReLU()([x, x])
    with pytest.raises(TypeError, match=r"Add: a layer applied to symbolic tensors takes "
                                        r"symbolic tensors only .* got ndarray at position 1"):
        nn.Add()([x, np.zeros(3)])
    with pytest.raises(TypeError, match=r"ReLU: a layer applied to symbolic tensors takes no "
                                        r"other arguments"):
        nn.ReLU()(x, num_threads=2)
    with pytest.raises(ValueError, match=r"Model: inputs must be nn.Input tensors; input 0 is "
                                         r"the output of layer 'r' \(ReLU\)"):
        y = nn.ReLU(name="r")(x)
        nn.Model(y, nn.ReLU()(y))
    with pytest.raises(TypeError, match=r"Model: outputs must be a symbolic tensor"):
        nn.Model(x, [])
    with pytest.raises(TypeError, match=r"Input: shape must be a tuple of ints >= 0 or None"):
        nn.Input((3, 2.5))
    with pytest.raises(ValueError, match=r"Input: shape must have 1 to 32 axes"):
        nn.Input(())
    for dtype in ("int32", "no such type", [("a", "<f4")]):
        with pytest.raises(TypeError, match=r"Input: dtype must be None, float32 or float64; "
                                            r"got "):
            nn.Input((3,), dtype=dtype)
    assert nn.Input((3,), dtype=np.float64).dtype == nn.Input((3,), dtype="float64").dtype


def test_bad_calls(rng):
    model, _ = two_in_two_out(rng)
    xa, xb = np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 5))
    with pytest.raises(ValueError, match=r"Model 'dag': takes 2 inputs \(a, b\); got 3"):
        model([xa, xb, xb])
    with pytest.raises(TypeError, match=r"Model 'dag': takes 2 inputs \(a, b\): a list or tuple"):
        model(xa)
    with pytest.raises(ValueError, match=r"Model 'dag': the inputs are keyed by name \(a, b\); "
                                         r"missing \['b'\], unknown \['c'\]"):
        model({"a": xa, "c": xb})
    with pytest.raises(ValueError, match=r"Model 'dag': input 'b' must have shape \(N, 8, 8, 5\), "
                                         r"or \(8, 8, 5\) without the batch axis; got "
                                         r"\(1, 8, 8, 4\)"):
        model([xa, np.zeros((1, 8, 8, 4))])
    with pytest.raises(TypeError, match=r"Model 'dag': input 'a' must have dtype float32 or "
                                        r"float64; got complex128"):
        model([np.zeros((1, 8, 8, 3), np.complex128), xb])
    typed = nn.Input((2,), dtype=np.float32)
    with pytest.raises(TypeError, match=r"input 'input' must have dtype float32; got float64"):
        nn.Model(typed, nn.ReLU()(typed))(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"Model 'dag': input 'b' has shape \(8, 8, 5\); got "
                                         r"\(8, 8, 4\)"):
        model.output_shape([(8, 8, 3), (8, 8, 4)])


def test_a_layer_defines_forward_not_call():
    with pytest.raises(TypeError, match=r"Old: a fastconv.nn layer defines forward\(x, \.\.\.\), "
                                        r"not __call__"):
        class Old(nn.Layer):
            def __call__(self, x):
                return x


# --------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------
def _saved(model):
    f = io.BytesIO()
    model.save(f)
    f.seek(0)
    return f


def round_trip(model):
    return nn.load(_saved(model))


def test_save_load_graph_models(rng):
    model, _ = two_in_two_out(rng)
    loaded = round_trip(model)
    assert type(loaded) is nn.Model and repr(loaded) == repr(model)
    assert loaded.input_names == ["a", "b"] and loaded.name == "dag"
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    xs = [random_array(rng, (2, 8, 8, 3), np.float64), random_array(rng, (2, 8, 8, 5),
                                                                     np.float64)]
    for got, want in zip(loaded(xs), model(xs)):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_save_load_nested_and_shared(rng, layout):
    c = 3
    shape = (8, 8, c) if layout == "NHWC" else (c, 8, 8)
    w = hwio(rng, 3, 3, c, c)
    if layout == "NCHW":
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    x = nn.Input(shape, dtype="float32")
    conv = nn.Conv2d(w, random_array(rng, (c,), np.float32), padding=1, layout=layout)
    inner = nn.Model(x, nn.ReLU()(nn.Add()([conv(x), x])), layout=layout, name="inner")
    seq = nn.Sequential(nn.ZeroPad2d(((1, 0), (2, 1)), layout=layout),
                        nn.Cropping2d(((1, 0), (2, 1)), layout=layout), layout=layout)
    y = nn.Input(shape)
    z = inner(seq(inner(y)))
    model = nn.Model(y, nn.Concatenate(layout=layout)([z, conv(y)]), layout=layout)
    loaded = round_trip(model)
    assert repr(loaded) == repr(model)
    assert loaded.layers[0].inputs[0].dtype == np.float32
    data = random_array(rng, (2,) + shape, np.float32)
    assert np.array_equal(loaded(data), model(data))
    # the loaded model shares its layers as the saved one did
    assert len(loaded.layers) == len(model.layers) == 4


def test_save_load_sequential_with_a_repeated_layer(rng):
    conv = nn.Conv2d(hwio(rng, 3, 3, 2, 2), padding=1, name="twice")
    seq = nn.Sequential(conv, nn.ReLU(), conv, name="seq")
    loaded = round_trip(seq)
    assert type(loaded) is nn.Sequential and repr(loaded) == repr(seq)
    assert loaded[0] is loaded[2] and loaded.name == "seq"
    x = random_array(rng, (1, 5, 5, 2), np.float32)
    assert np.array_equal(loaded(x), seq(x))


def test_save_refuses_a_layer_type_load_does_not_know():
    class Custom(nn.ReLU):
        pass

    with pytest.raises(ValueError, match=r"save: layer 'c' is a Custom, which nn.load does not "
                                         r"know"):
        round_trip(nn.Sequential(Custom(name="c")))


def test_version_1_files_load(rng, tmp_path):
    """A file as fastconv wrote it before graph models: format version 1,
    the layers of a Sequential, no names."""
    w, b = hwio(rng, 3, 3, 2, 4), random_array(rng, (4,), np.float32)
    fc = random_array(rng, (4 * 3 * 3, 3), np.float32)
    description = {"format": "fastconv.nn", "version": 1, "fastconv": "0.1.0",
                   "layout": "NHWC", "layers": [
                       {"type": "Conv2d", "params": {"stride": [1, 1], "padding": 0,
                                                     "dilation": [1, 1], "groups": 1,
                                                     "activation": "relu", "layout": "NHWC"},
                        "arrays": ["weight", "bias"]},
                       {"type": "MaxPool2d", "params": {"kernel_size": [2, 2], "stride": [2, 2],
                                                        "padding": [0, 0], "ceil_mode": False,
                                                        "layout": "NHWC"}, "arrays": []},
                       {"type": "Flatten", "params": {"order": "HWC", "layout": "NHWC"},
                        "arrays": []},
                       {"type": "Linear", "params": {"activation": None, "weight_layout": "IO"},
                        "arrays": ["weight"]},
                       {"type": "Softmax", "params": {"axis": -1}, "arrays": []}]}
    np.savez(tmp_path / "v1.npz", __model__=np.frombuffer(json.dumps(description).encode(),
                                                           np.uint8),
             **{"layer0.weight": w, "layer0.bias": b, "layer3.weight": fc})
    loaded = nn.load(tmp_path / "v1.npz")
    expected = nn.Sequential(nn.Conv2d(w, b, activation="relu"), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(fc), nn.Softmax())
    assert type(loaded) is nn.Sequential and repr(loaded) == repr(expected)
    assert [layer.name for layer in loaded] == ["conv2d", "max_pool2d", "flatten", "linear",
                                                "softmax"]
    x = random_array(rng, (2, 8, 8, 2), np.float32)
    assert np.array_equal(loaded(x), expected(x))


# --------------------------------------------------------------------------
# The structural layers against torch and NumPy
# --------------------------------------------------------------------------
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
LAYOUTS = pytest.mark.parametrize("layout", ["NHWC", "NCHW"])


@DTYPES
@LAYOUTS
@pytest.mark.parametrize("padding,torch_pad", [
    (2, (2, 2, 2, 2)), ((1, 3), (3, 3, 1, 1)), (((0, 2), (3, 1)), (3, 1, 0, 2)),
    (0, (0, 0, 0, 0))])
def test_zero_pad2d_matches_torch(rng, dtype, layout, padding, torch_pad):
    torch = pytest.importorskip("torch")
    x = random_array(rng, (2, 5, 4, 3), dtype)
    x[0, 0, 0, 0] = -0.0
    xl = x if layout == "NHWC" else to_nchw(x)
    layer = nn.ZeroPad2d(padding, layout=layout)
    y = layer(xl)
    expected = torch.nn.functional.pad(torch.from_numpy(to_nchw(x)), torch_pad).numpy()
    if layout == "NHWC":
        expected = expected.transpose(0, 2, 3, 1)
    assert y.dtype == dtype and np.array_equal(y, expected)
    assert np.signbit(y[(0,) + ((torch_pad[2], torch_pad[0], 0) if layout == "NHWC"
                                 else (0, torch_pad[2], torch_pad[0]))])
    assert layer.output_shape(xl.shape[1:]) == y.shape[1:]
    assert np.array_equal(layer(xl[1]), y[1])  # without the batch axis


@DTYPES
@LAYOUTS
@pytest.mark.parametrize("cropping,rows,cols", [
    (1, slice(1, -1), slice(1, -1)), ((2, 0), slice(2, -2), slice(0, None)),
    (((0, 3), (1, 2)), slice(0, -3), slice(1, -2)), (0, slice(None), slice(None))])
def test_cropping2d_matches_slicing(rng, dtype, layout, cropping, rows, cols):
    x = random_array(rng, (2, 7, 6, 3), dtype)
    xl = x if layout == "NHWC" else to_nchw(x)
    layer = nn.Cropping2d(cropping, layout=layout)
    y = layer(xl)
    expected = x[:, rows, cols, :]
    if layout == "NCHW":
        expected = to_nchw(expected)
    assert y.dtype == dtype and np.array_equal(y, expected) and y.flags.c_contiguous
    if cropping != 0:  # a copy, not a view: the input may be freed
        assert not np.shares_memory(y, xl)
    assert layer.output_shape(xl.shape[1:]) == y.shape[1:]


@DTYPES
@LAYOUTS
def test_concatenate_matches_torch_cat(rng, dtype, layout):
    torch = pytest.importorskip("torch")
    parts = [random_array(rng, (2, 4, 5, c), dtype) for c in (1, 3, 2)]
    if layout == "NCHW":
        parts = [to_nchw(p) for p in parts]
    y = nn.Concatenate(layout=layout)(parts)
    dim = 3 if layout == "NHWC" else 1
    assert y.dtype == dtype
    assert np.array_equal(y, torch.cat([torch.from_numpy(p) for p in parts], dim=dim).numpy())
    assert np.array_equal(nn.Concatenate(axis=dim)(parts), y)
    assert np.array_equal(nn.Concatenate(layout=layout)([p[0] for p in parts]), y[0])
    assert nn.Concatenate(layout=layout).output_shape([p.shape[1:] for p in parts]) == y.shape[1:]
    # features after a global pool: their one axis, in either layout
    feats = [random_array(rng, (2, k), dtype) for k in (3, 4)]
    assert np.array_equal(nn.Concatenate(layout=layout)(feats), np.concatenate(feats, axis=1))
    # another axis (the height), counted with the batch axis or from the end
    h_axis = 1 if layout == "NHWC" else 2
    assert np.array_equal(nn.Concatenate(axis=h_axis)([parts[0], parts[0]]),
                          np.concatenate([parts[0], parts[0]], axis=h_axis))
    assert np.array_equal(nn.Concatenate(axis=h_axis - 4)([parts[0], parts[0]]),
                          np.concatenate([parts[0], parts[0]], axis=h_axis))


@DTYPES
def test_add_multiply_identity(rng, dtype):
    xs = [random_array(rng, (2, 3, 4, 5), dtype) for _ in range(3)]
    assert np.array_equal(nn.Add()(xs), (xs[0] + xs[1]) + xs[2])
    assert np.array_equal(nn.Multiply()(xs[:2]), xs[0] * xs[1])
    assert np.array_equal(nn.Multiply()(tuple(xs)), (xs[0] * xs[1]) * xs[2])
    assert nn.Add()(xs).dtype == dtype
    assert np.array_equal(nn.Identity()(xs[0]), xs[0])
    assert nn.Add().output_shape([(3, 4, 5)] * 3) == (3, 4, 5)
    before = [x.copy() for x in xs]
    nn.Add()(xs)
    assert all(np.array_equal(a, b) for a, b in zip(xs, before))  # inputs untouched


@pytest.mark.parametrize("make,error,message", [
    (lambda: nn.ZeroPad2d(-1), ValueError, r"ZeroPad2d: padding must be >= 0; got -1"),
    (lambda: nn.ZeroPad2d("same"), TypeError, r"ZeroPad2d: padding must be an int, a pair "
                                               r"\(h, w\) or \(\(top, bottom\), \(left, right\)\)"
                                               r".*; got 'same'"),
    (lambda: nn.ZeroPad2d((1, 2, 3, 4)), TypeError, r"torch's \(left, right, top, bottom\) is "
                                                     r"\(\(top, bottom\), \(left, right\)\)"),
    (lambda: nn.ZeroPad2d(((1, 2), (3, -1))), ValueError, r"padding must be >= 0; got -1"),
    (lambda: nn.ZeroPad2d(1.5), TypeError, r"got 1\.5"),
    (lambda: nn.ZeroPad2d(1, layout="NCWH"), ValueError, r"ZeroPad2d: layout must be 'NHWC' or "
                                                          r"'NCHW'; got 'NCWH'"),
    (lambda: nn.Cropping2d((1, True)), TypeError, r"Cropping2d: cropping must be an int"),
    (lambda: nn.Cropping2d((3, 1)).output_shape((6, 6, 1)), ValueError,
     r"Cropping2d: cropping \(3, 3\) removes the whole height of an input of height 6"),
    (lambda: nn.Cropping2d(((0, 0), (0, 4))).output_shape((6, 4, 1)), ValueError,
     r"removes the whole width of an input of width 4"),
    (lambda: nn.Cropping2d(1)(np.zeros((4, 4))), ValueError,
     r"Cropping2d: x must be 4-D \(N, H, W, C\) or 3-D without the batch axis; got shape "
     r"\(4, 4\)"),
    (lambda: nn.ZeroPad2d(1).output_shape((4, 4)), ValueError,
     r"ZeroPad2d: input must be a 3-D map \(no batch axis\); got \(4, 4\)"),
    (lambda: nn.Concatenate(axis=0), ValueError, r"Concatenate: axis must not be 0, the batch "
                                                  r"axis"),
    (lambda: nn.Concatenate(axis="1"), TypeError, r"Concatenate: axis must be None or an int; "
                                                   r"got '1'"),
    (lambda: nn.Concatenate(layout="HWC"), ValueError, r"Concatenate: layout must be 'NHWC'"),
    (lambda: nn.Concatenate(axis=5)([np.zeros((1, 2))] * 2), ValueError,
     r"Concatenate: the inputs must have one number of axes, including axis 5; got shapes "
     r"\(1, 2\), \(1, 2\)"),
    (lambda: nn.Concatenate()([np.zeros((1, 2)), np.zeros((1, 2, 1))]), ValueError,
     r"the inputs must have one number of axes"),
    (lambda: nn.Add()([np.zeros(3)]), ValueError, r"Add: takes 2 or more inputs; got 1"),
    (lambda: nn.Add()(np.zeros((2, 3))), TypeError, r"Add: takes a list or tuple of 2 or more "
                                                     r"arrays; got ndarray"),
    (lambda: nn.Multiply()([np.zeros(3), np.zeros(4)]), ValueError,
     r"Multiply: the inputs must have one shape \(no broadcasting\); got shapes \(3,\), \(4,\)"),
    (lambda: nn.Multiply()([np.zeros((2, 3)), np.zeros(3)]), ValueError,
     r"got shapes \(2, 3\), \(3,\)"),
    (lambda: nn.Add()([np.zeros(3, np.float32), np.zeros(3)]), TypeError,
     r"Add: inputs\[0\], inputs\[1\] must share one dtype; got inputs\[0\] float32, "
     r"inputs\[1\] float64"),
    (lambda: nn.Add()([np.zeros(3, int), np.zeros(3, int)]), TypeError,
     r"Add: inputs\[0\] must have dtype float32 or float64; got int64"),
    (lambda: nn.Add().output_shape((3,)), TypeError, r"Add: output_shape takes a list of 2 or "
                                                      r"more shapes; got \(3,\)"),
])
def test_structural_layers_check_their_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()
