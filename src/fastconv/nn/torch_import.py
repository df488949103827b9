"""The import of a torch module that torch.fx can trace (torch itself is
imported only when from_torch is called: the caller has a torch module, so
torch is installed).

torch.fx.symbolic_trace turns the module's forward into a graph of calls:
of leaf modules (torch.nn's own: Conv2d, BatchNorm2d, ...), of functions
(F.relu, torch.cat, operator.add, ...) and of tensor methods (x.relu(),
x.view(...)). Each becomes a fastconv.nn layer applied to symbolic tensors,
and the result an nn.Model, whose fusion then runs Conv2d -> BatchNorm2d ->
residual Add -> activation as one convolution. Every map stays in the
model's layout from its input to its outputs: torch's NCHW axes are
translated at import, never transposed at run time.

Sizes: ``x.size(0)`` (and ``x.shape[0]``) is the batch, which only view and
reshape may take; the other sizes are ints known at import when the input's
shape is given (``input_shape``), and then Python arithmetic on them (a
U-Net's crop or pad amounts) is computed at import."""
from __future__ import annotations

import inspect
import math
import operator
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastconv._validate import layout_name
from fastconv.nn.activations import (Clip, HardSigmoid, HardSwish, LeakyReLU, ReLU6, Sigmoid,
                                     SiLU, Tanh)
from fastconv.nn.conv_transpose import ConvTranspose2d
from fastconv.nn.layers import (AvgPool2d, Conv2d, Flatten, GlobalAvgPool2d, Layer, Linear,
                                MaxPool2d, ReLU, Softmax)
from fastconv.nn.model import Model, Sequential
from fastconv.nn.normalization import BatchNorm2d, PReLU
from fastconv.nn.resize import Upsample
from fastconv.nn.structural import Add, Concatenate, Cropping2d, Multiply, ZeroPad2d
from fastconv.nn.symbolic import Input, SymbolicTensor

__all__ = ["from_torch"]

FN = "from_torch"

# What a tensor of the traced graph is in torch: a 4-D map (N, C, H, W); the
# (N, C, 1, 1) of a global average pool, which fastconv holds as (N, C) and
# which only a flatten may read; or (N, F) features.
MAP, POOLED, FLAT = "map", "pooled", "features"


class _Batch:
    """The batch size, x.size(0): known only when the model runs."""

    def __repr__(self) -> str:
        return "<batch size>"


BATCH = _Batch()


class _Tensor:
    """A tensor of the traced graph: its symbolic tensor and its kind."""

    __slots__ = ("tensor", "kind")

    def __init__(self, tensor: SymbolicTensor, kind: str) -> None:
        self.tensor, self.kind = tensor, kind


SUPPORTED_MODULES = (
    "Conv2d (zero padding), ConvTranspose2d, Linear, BatchNorm2d, ReLU, ReLU6, Hardtanh, "
    "LeakyReLU, PReLU, Sigmoid, Tanh, SiLU, Hardswish, Hardsigmoid, MaxPool2d, AvgPool2d, "
    "AdaptiveAvgPool2d (to 1, or dividing the size), Flatten, Softmax, Upsample, "
    "UpsamplingNearest2d, UpsamplingBilinear2d, ZeroPad2d, Identity, Dropout, Dropout2d")
SUPPORTED_FUNCTIONS = (
    "relu, relu6, hardtanh, clamp, leaky_relu, sigmoid, tanh, silu, hardswish, hardsigmoid, "
    "softmax, add/+/+=, mul/*, cat, flatten, view/reshape to (batch, -1), mean over (2, 3), "
    "adaptive_avg_pool2d, max_pool2d, avg_pool2d, interpolate, pad (constant 0), "
    "dropout, contiguous, size/shape, slicing x[:, :, a:b, c:d]")


def _torch_axis(layout: str, dim: int) -> int:
    """The axis of a map in `layout` (with the batch axis) that torch's NCHW
    `dim` is."""
    if not -4 <= dim < 4:
        raise IndexError(dim)
    dim %= 4
    return dim if layout == "NCHW" else (0, 3, 1, 2)[dim]


def _user_line(node: Any, torch_dir: str) -> str:
    """' (at file:line: code)' for the last frame of the node's stack trace
    outside torch (the user's forward), or ''."""
    trace = getattr(node, "stack_trace", None) or ""
    lines = trace.splitlines()
    found = ""
    for i, line in enumerate(lines):
        m = re.match(r'\s*File "(.+)", line (\d+)', line)
        if m and not os.path.abspath(m.group(1)).startswith(torch_dir):
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            found = f" (at {m.group(1)}:{m.group(2)}{': ' + code if code else ''})"
    return found


def from_torch(module: Any, layout: str = "NHWC", *, input_shape: Any = None) -> Model:
    """A fastconv.nn.Model computing what a torch module computes at inference.

    Any module torch.fx.symbolic_trace can trace: Sequential, residual
    networks, MobileNets, U-Nets, FCNs. The weights are read once (as in
    eval mode: BatchNorm2d uses its running statistics, Dropout is the
    identity) and packed in `layout`; Model's fusion then folds each
    BatchNorm2d into the Conv2d before it and runs a residual Add and the
    activation in the convolution's store (``model.fusions``).

    Supported modules: Conv2d (zero padding), ConvTranspose2d, Linear,
    BatchNorm2d, ReLU, ReLU6, Hardtanh, LeakyReLU, PReLU, Sigmoid, Tanh,
    SiLU, Hardswish, Hardsigmoid, MaxPool2d (dilation 1), AvgPool2d,
    AdaptiveAvgPool2d (to 1x1, or to a size dividing the input's, known
    from input_shape: VGG's 7x7), Flatten, Softmax, Upsample, ZeroPad2d, Identity,
    Dropout, Dropout2d; their functional and method forms, torch.cat,
    + and * of two tensors of one shape, flatten and view/reshape to
    (batch, -1), mean over (2, 3), F.interpolate, F.pad, slicing of the
    height and width. torch's flatten of an NCHW map becomes
    Flatten(order="CHW"), so the Linear after it keeps its meaning in
    either layout.

    Parameters
    ----------
    module : torch.nn.Module
    layout : "NHWC" or "NCHW"
        The layout of the returned model's maps (inputs and outputs).
    input_shape : tuple, or a list of tuples for several inputs, optional
        torch's shape of each input without the batch axis, (C, H, W) or
        (F,). The model's Inputs then have it, and sizes the forward reads
        (x.size(2), x.shape[3]) are known at import. Without it the inputs
        take any size (C, H, W) and only x.size(0) may be read; a torch
        Sequential that is a chain of layers then gives an nn.Sequential.

    Returns
    -------
    Model (or Sequential, see input_shape), named layers: a module's
    layer is named by its path in the module ("layer1.0.conv1"), a
    function's by its fx node ("add_1").

    Raises
    ------
    TypeError
        module is not a torch.nn.Module.
    ValueError
        fx cannot trace the module; a module, function or method (named with
        its path or fx node, and the line of the forward that calls it where
        fx records it) without a fastconv.nn equivalent.
    """
    import torch  # the caller has a torch module, so torch is installed
    import torch.fx

    layout = layout_name(FN, layout)
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{FN}: module must be a torch.nn.Module; got {type(module).__name__}")
    tracer = torch.fx.Tracer()
    tracer.record_stack_traces = True
    # Optional arguments of forward (mask=None, flag=False) keep their
    # defaults: traced as constants, so that `if mask is not None` takes the
    # branch the default takes (fx adds a check of each, skipped below).
    defaults = _constant_defaults(module)
    try:
        graph = tracer.trace(module, concrete_args=defaults or None)
    except Exception as exc:  # (fx raises many kinds: TraceError, TypeError, ...)
        raise ValueError(f"{FN}: torch.fx could not trace {type(module).__name__} (from_torch "
                         f"imports what torch.fx.symbolic_trace can trace: a forward without "
                         f"control flow on tensor values): {type(exc).__name__}: {exc}"
                         ) from exc
    builder = _Builder(torch, module, layout)
    builder.order = {node: i for i, node in enumerate(graph.nodes)}
    placeholders = []
    # (fx makes one placeholder per parameter of forward, in order)
    all_placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    names = _parameters(module)
    if len(names) != len(all_placeholders):
        raise ValueError(f"{FN}: {type(module).__name__}.forward takes *args or **kwargs; "
                         f"from_torch imports a forward with named parameters only")
    for node, name in zip(all_placeholders, names):
        if name in defaults:
            builder.env[node.name] = defaults[name]
        else:
            placeholders.append(node)
    shapes = _input_shapes(input_shape, len(placeholders))
    inputs = []
    for node, shape in zip(placeholders, shapes):
        if shape is None:
            # A placeholder read only by Linear layers holds features.
            users = [u for u in node.users if u.op == "call_module"]
            flat = bool(users) and len(users) == len(node.users) and all(
                type(builder.submodule(u.target)) is torch.nn.Linear for u in users)
            # (shape None: any the first layers take, as a Sequential's input)
            t = SymbolicTensor(None, None, None, (), name=node.name)
            kind = FLAT if flat else MAP
        else:
            kind = MAP if len(shape) == 3 else FLAT
            fc_shape = shape if kind == FLAT or layout == "NCHW" else \
                (shape[1], shape[2], shape[0])
            t = Input(fc_shape, name=node.name)
        inputs.append(t)
        builder.env[node.name] = _Tensor(t, kind)
    outputs = None
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        if node.target in (torch.fx._symbolic_trace._assert_is_none, torch._assert):
            continue  # (fx's check of a constant argument: it holds, it is the default)
        if node.op == "output":
            outputs = builder.outputs(node)
            break
        builder.env[node.name] = builder.convert(node)
    assert outputs is not None  # (an fx graph ends in its output node)
    chain = builder.chain(inputs, outputs)
    if chain is not None and input_shape is None and isinstance(module, torch.nn.Sequential):
        return Sequential(*chain, layout=layout)
    return Model(inputs, outputs if len(outputs) > 1 else outputs[0], layout=layout)


def _parameters(module: Any) -> List[str]:
    """The names of the parameters of module.forward."""
    return [p.name for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _constant_defaults(module: Any) -> Dict[str, Any]:
    """The parameters of module.forward with a default of None, a bool, an
    int, a float or a str (the inputs are those without one)."""
    out = {}
    for p in inspect.signature(module.forward).parameters.values():
        if p.default is not p.empty and (p.default is None or isinstance(
                p.default, (bool, int, float, str))):
            out[p.name] = p.default
    return out


def _input_shapes(input_shape: Any, n: int) -> List[Optional[Tuple[int, ...]]]:
    """input_shape as one shape (or None) per input."""
    if input_shape is None:
        return [None] * n
    many = isinstance(input_shape, list) and all(isinstance(s, (tuple, list))
                                                 for s in input_shape)
    shapes = list(input_shape) if many else [input_shape]
    if len(shapes) != n:
        raise ValueError(f"{FN}: input_shape must give one shape per input of the module's "
                         f"forward ({n}); got {len(shapes)}")
    out = []
    for s in shapes:
        if not isinstance(s, (tuple, list)) or len(s) not in (1, 3) or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                for d in s):
            raise ValueError(f"{FN}: input_shape must be torch's shape of an input without "
                             f"the batch axis, (C, H, W) or (F,) of positive ints (a list of "
                             f"them for several inputs); got {input_shape!r}")
        out.append(tuple(int(d) for d in s))
    return out


class _Builder:
    """The conversion of fx nodes, one at a time, into layers applied to
    symbolic tensors (env: the value of each node so far, by name)."""

    def __init__(self, torch: Any, module: Any, layout: str) -> None:
        self.torch, self.module, self.layout = torch, module, layout
        self.env: Dict[str, Any] = {}
        self.layers: Dict[str, Layer] = {}  # by module path or node name: made once
        self.applied: List[Tuple[Layer, Tuple[SymbolicTensor, ...], SymbolicTensor]] = []
        self.torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
        self.node: Any = None
        self.order: Dict[Any, int] = {}  # node -> its place in the graph
        # Names a function's layer must not take: the module paths (their
        # layers' names), then those given to other functions' layers.
        self.taken = {path for path, _ in module.named_modules(remove_duplicate=False)}
        self.taken.discard("")

    def unique(self, base: str) -> str:
        """base, or base_1, base_2, ..., whichever no module path nor other
        layer has (an fx node "softmax" beside a module at path "softmax")."""
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    # -- helpers -------------------------------------------------------------
    def submodule(self, path: str) -> Any:
        return self.module.get_submodule(path)

    def where(self) -> str:
        """The node being converted, for a message."""
        node = self.node
        if node.op == "call_module":
            m = self.submodule(node.target)
            return f"layer {node.target} ({type(m).__name__})"
        what = node.target if isinstance(node.target, str) else \
            getattr(node.target, "__name__", repr(node.target))
        kind = "method" if node.op == "call_method" else "function"
        return f"node {node.name} ({kind} {what}){_user_line(node, self.torch_dir)}"

    def refuse(self, why: str) -> None:
        raise ValueError(f"{FN}: {self.where()} {why}")

    def value(self, a: Any) -> Any:
        """An fx argument with its nodes replaced by their values."""
        fx_node = self.torch.fx.Node
        if isinstance(a, fx_node):
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.value(v) for v in a)
        if isinstance(a, slice):
            return slice(self.value(a.start), self.value(a.stop), self.value(a.step))
        if isinstance(a, dict):
            return {k: self.value(v) for k, v in a.items()}
        return a

    def array(self, t: Any) -> Optional[np.ndarray]:
        return None if t is None else t.detach().cpu().numpy().copy()

    def tensor(self, v: Any, what: str = "its input") -> _Tensor:
        if not isinstance(v, _Tensor):
            self.refuse(f"takes {v!r} as {what}, where fastconv needs a tensor computed from "
                        f"the model's inputs")
        return v

    def map_of(self, v: Any) -> _Tensor:
        t = self.tensor(v)
        if t.kind != MAP:
            self.refuse(f"needs a 4-D map (N, C, H, W); its input is {self.kind_text(t)}")
        return t

    @staticmethod
    def kind_text(t: _Tensor) -> str:
        return {MAP: "a map (N, C, H, W)", FLAT: "features (N, F)",
                POOLED: "a global pool's (N, C, 1, 1)"}[t.kind]

    def apply(self, make: Any, inputs: Sequence[_Tensor], kind: str, key: str) -> _Tensor:
        """The layer that `make()` builds (once per `key`: a module called
        twice is one layer with shared weights) applied to `inputs`."""
        layer = self.layers.get(key)
        if layer is None:
            layer = make()
            if not layer._name_given:
                layer._name = key
                layer._name_given = True
            self.layers[key] = layer
        arg = [t.tensor for t in inputs]
        try:
            out = layer(arg if len(arg) > 1 or layer.takes_list else arg[0])
        except ValueError as exc:
            self.refuse(f"cannot be applied to its input: {exc}")
        self.applied.append((layer, tuple(arg), out))
        return _Tensor(out, kind)

    def torch_dims(self, t: _Tensor) -> Tuple[Any, ...]:
        """torch's shape of t: BATCH, then its sizes (None where unknown)."""
        shape = t.tensor.shape
        if t.kind == POOLED:
            c = None if shape is None else shape[0]
            return (BATCH, c, 1, 1)
        if t.kind == FLAT:
            return (BATCH, None if shape is None else shape[0])
        if shape is None:
            return (BATCH, None, None, None)
        return (BATCH,) + (tuple(shape) if self.layout == "NCHW"
                           else (shape[2], shape[0], shape[1]))

    def known_int(self, v: Any, what: str) -> int:
        if v is None:
            self.refuse(f"needs {what}, a size known only when the model runs: give from_torch "
                        f"input_shape= so that the sizes are known at import")
        if isinstance(v, (bool, _Batch)) or not isinstance(v, (int, np.integer)):
            self.refuse(f"needs {what} as an int known at import; got {v!r}")
        return int(v)

    # -- the graph -------------------------------------------------------------
    def outputs(self, node: Any) -> List[SymbolicTensor]:
        self.node = node
        result = self.value(node.args[0])
        items = list(result) if isinstance(result, (list, tuple)) else [result]
        tensors = []
        for i, v in enumerate(items):
            if not isinstance(v, _Tensor):
                raise ValueError(f"{FN}: the module's output {i} is {v!r}; fastconv models "
                                 f"return tensors (one, or a tuple or list of them)")
            if v.kind == POOLED:
                raise ValueError(f"{FN}: the module's output {i} is a global pool's (N, C, 1, "
                                 f"1), which fastconv holds as (N, C): flatten it in the "
                                 f"module")
            tensors.append(v.tensor)
        return tensors

    def chain(self, inputs: List[SymbolicTensor], outputs: List[SymbolicTensor]
              ) -> Optional[List[Layer]]:
        """The layers applied, if each read only the one before it (the
        first, the input) and the last is the only output: a Sequential."""
        prev = inputs[0]
        seen = set()
        for layer, args, out in self.applied:
            if len(args) != 1 or args[0] is not prev or id(layer) in seen:
                return None
            seen.add(id(layer))
            prev = out
        if len(inputs) != 1 or len(outputs) != 1 or outputs[0] is not prev or not self.applied:
            return None
        return [layer for layer, _, _ in self.applied]

    def convert(self, node: Any) -> Any:
        self.node = node
        self.check_in_place(node)
        if node.op == "call_module":
            return self.module_call(node, self.submodule(node.target))
        if node.op == "get_attr":
            self.refuse("reads a parameter or buffer of the module outside a layer, which "
                        "fastconv cannot compute with (only the layers' own weights are "
                        "imported)")
        args, kwargs = self.value(tuple(node.args)), self.value(dict(node.kwargs))
        if node.op == "call_method":
            return self.method_call(node.target, args, kwargs)
        return self.function_call(node.target, args, kwargs)

    def check_in_place(self, node: Any) -> None:
        """An in-place op (x += y, relu_(x), ReLU(inplace=True)) changes its
        input in torch; the imported graph computes a new tensor instead,
        which is the same unless the input is read again after it: that is
        refused rather than computed differently."""
        if node.op == "call_module":
            in_place = bool(getattr(self.submodule(node.target), "inplace", False))
        elif node.op == "call_method":
            in_place = node.target.endswith("_") and not node.target.startswith("__")
        else:
            in_place = node.target in (operator.iadd, operator.imul) or bool(
                node.kwargs.get("inplace")) or getattr(node.target, "__name__", "").endswith(
                "_") or (node.target in (self.torch.nn.functional.relu,
                                         self.torch.nn.functional.hardtanh,
                                         self.torch.nn.functional.leaky_relu)
                         and len(node.args) > 1 and node.args[-1] is True)
        if not in_place or not node.args or not isinstance(node.args[0], self.torch.fx.Node):
            return
        changed = node.args[0]
        later = [u.name for u in changed.users
                 if u is not node and self.order[u] > self.order[node]]
        if later:
            self.refuse(f"changes {changed.name} in place, which {', '.join(later)} read after "
                        f"it; fastconv computes a new tensor: make the op out of place")

    # -- modules ---------------------------------------------------------------
    def module_call(self, node: Any, m: Any) -> Any:
        tnn = self.torch.nn
        layout, path = self.layout, node.target
        known = {tnn.Identity, tnn.Dropout, tnn.Dropout2d, tnn.Linear, tnn.Flatten, tnn.Softmax,
                 tnn.Conv2d, tnn.ConvTranspose2d, tnn.BatchNorm2d, tnn.MaxPool2d, tnn.AvgPool2d,
                 tnn.AdaptiveAvgPool2d, tnn.Upsample, tnn.UpsamplingNearest2d,
                 tnn.UpsamplingBilinear2d, tnn.ZeroPad2d}
        if type(m) not in known and self.activation_module(m) is None:
            self.refuse(f"has no fastconv.nn equivalent; supported modules: "
                        f"{SUPPORTED_MODULES}")
        if node.kwargs or len(node.args) != 1:
            self.refuse("is called with other arguments than one tensor")
        x = self.tensor(self.value(node.args[0]))
        kind = type(m)
        if kind in (tnn.Identity, tnn.Dropout, tnn.Dropout2d):
            return x  # (the identity at inference: no layer, nothing to run)
        if kind is tnn.Linear:
            if x.kind == MAP:
                self.refuse("reads a map (N, C, H, W): fastconv's Linear takes features "
                            "(N, F); flatten the map first")
            return self.apply(lambda: Linear(self.array(m.weight), self.array(m.bias),
                                             weight_layout="OI"), [x], FLAT, path)
        if kind is tnn.Flatten:
            if (m.start_dim, m.end_dim) not in ((1, -1), (1, 3)):
                self.refuse(f"flattens axes {m.start_dim} to {m.end_dim}; fastconv flattens "
                            f"all but the batch axis only")
            return self.flatten(x, path)
        if kind is tnn.Softmax:
            return self.softmax(x, m.dim, path)
        activation = self.activation_module(m)
        if activation is not None:
            return self.apply(activation, [x], x.kind, path)
        x = self.map_of(x)
        if kind is tnn.Conv2d:
            if m.padding_mode != "zeros":
                self.refuse(f"pads with {m.padding_mode!r}; only zero padding is supported")
            w = self.array(m.weight)
            return self.apply(lambda: Conv2d(
                w if layout == "NCHW" else w.transpose(2, 3, 1, 0), self.array(m.bias),
                stride=tuple(m.stride), padding=m.padding if isinstance(m.padding, str)
                else tuple(m.padding), dilation=tuple(m.dilation), groups=m.groups,
                layout=layout), [x], MAP, path)
        if kind is tnn.ConvTranspose2d:
            if m.padding_mode != "zeros":
                self.refuse(f"pads with {m.padding_mode!r}; only zero padding is supported")
            w = self.array(m.weight)  # (C, K/groups, kh, kw)
            return self.apply(lambda: ConvTranspose2d(
                w if layout == "NCHW" else w.transpose(2, 3, 1, 0), self.array(m.bias),
                stride=tuple(m.stride), padding=tuple(m.padding),
                output_padding=tuple(m.output_padding), dilation=tuple(m.dilation),
                groups=m.groups, layout=layout), [x], MAP, path)
        if kind is tnn.BatchNorm2d:
            if m.running_mean is None or m.running_var is None:
                self.refuse("keeps no running statistics (track_running_stats=False), so it "
                            "normalizes with each batch's own: not an inference layer")
            c = m.num_features
            gamma = self.array(m.weight) if m.affine else np.ones(c, self.array(
                m.running_mean).dtype)
            beta = self.array(m.bias) if m.affine else np.zeros_like(gamma)
            return self.apply(lambda: BatchNorm2d(gamma, beta, self.array(m.running_mean),
                                                  self.array(m.running_var), eps=m.eps,
                                                  layout=layout), [x], MAP, path)
        if kind in (tnn.MaxPool2d, tnn.AvgPool2d):
            return self.pool(kind is tnn.MaxPool2d, x, path, m.kernel_size, m.stride,
                             m.padding, m.ceil_mode, getattr(m, "dilation", 1),
                             getattr(m, "return_indices", False),
                             getattr(m, "count_include_pad", True),
                             getattr(m, "divisor_override", None))
        if kind is tnn.AdaptiveAvgPool2d:
            return self.global_pool(x, m.output_size, path)
        if kind in (tnn.Upsample, tnn.UpsamplingNearest2d, tnn.UpsamplingBilinear2d):
            return self.upsample(x, path, m.size, m.scale_factor, m.mode, m.align_corners,
                                 getattr(m, "recompute_scale_factor", None))
        if kind is tnn.ZeroPad2d:
            return self.pad(x, path, list(m.padding), "constant", m.value)
        raise AssertionError(kind)  # (every type in `known` is handled above)

    def activation_module(self, m: Any) -> Any:
        """A maker of the activation layer of module m, or None."""
        tnn = self.torch.nn
        kind = type(m)
        if kind is tnn.ReLU:
            return ReLU
        if kind is tnn.ReLU6:
            return ReLU6
        if kind is tnn.Hardtanh:
            return self.clip_maker(m.min_val, m.max_val)
        if kind is tnn.LeakyReLU:
            return lambda: LeakyReLU(m.negative_slope)
        if kind is tnn.PReLU:
            return lambda: PReLU(self.array(m.weight), layout=self.layout)
        simple = {tnn.Sigmoid: Sigmoid, tnn.Tanh: Tanh, tnn.SiLU: SiLU,
                  tnn.Hardswish: HardSwish, tnn.Hardsigmoid: HardSigmoid}
        return simple.get(kind)

    @staticmethod
    def clip_maker(low: float, high: float) -> Any:
        if (low, high) == (0, 6):
            return ReLU6
        return lambda: Clip(low, high)

    # -- shared forms ------------------------------------------------------------
    def flatten(self, x: _Tensor, key: str) -> _Tensor:
        if x.kind == MAP:
            return self.apply(lambda: Flatten("CHW", layout=self.layout), [x], FLAT, key)
        return _Tensor(x.tensor, FLAT)  # (already flat: a global pool gives (N, C))

    def softmax(self, x: _Tensor, dim: Any, key: str) -> _Tensor:
        x = self.tensor(x)
        if dim is None:
            self.refuse("sets no dim (torch's implicit choice is deprecated); give dim")
        if x.kind == POOLED:
            self.refuse("reads a global pool's (N, C, 1, 1): flatten it first")
        ndim = 4 if x.kind == MAP else 2
        if not -ndim <= dim < ndim or dim % ndim == 0:
            self.refuse(f"acts on axis {dim} of a {ndim}-D tensor; fastconv's Softmax acts on "
                        f"an axis other than the batch")
        axis = _torch_axis(self.layout, dim) if x.kind == MAP else dim % ndim
        return self.apply(lambda: Softmax(axis), [x], x.kind, key)

    def pool(self, is_max: bool, x: _Tensor, key: str, kernel_size: Any, stride: Any,
             padding: Any, ceil_mode: bool, dilation: Any, return_indices: bool,
             count_include_pad: bool, divisor_override: Any) -> _Tensor:
        if dilation not in (1, (1, 1), [1, 1]) or return_indices:
            self.refuse("uses dilation or return_indices, which MaxPool2d does not support")
        if divisor_override is not None:
            self.refuse("sets divisor_override, which AvgPool2d does not support")
        if stride is None or stride == [] or stride == ():
            stride = kernel_size
        if is_max:
            return self.apply(lambda: MaxPool2d(kernel_size, stride, padding, ceil_mode,
                                                self.layout), [x], MAP, key)
        return self.apply(lambda: AvgPool2d(kernel_size, stride, padding, ceil_mode,
                                            count_include_pad, self.layout), [x], MAP, key)

    def global_pool(self, x: _Tensor, output_size: Any, key: str) -> _Tensor:
        """adaptive_avg_pool2d: to 1x1, the global pool; to a size that divides
        the input's (known at import), an AvgPool2d of uniform windows
        (VGG's 7x7 pool), or nothing when the sizes are equal."""
        if output_size in (1, (1, 1), [1, 1]):
            return self.apply(lambda: GlobalAvgPool2d(self.layout), [x], POOLED, key)
        sizes = list(output_size) if isinstance(output_size, (tuple, list)) else [output_size] * 2
        _, _, h, w = self.torch_dims(x)
        if h is None or w is None:
            self.refuse(f"pools to {output_size!r}, whose windows depend on the input's size: "
                        f"give from_torch input_shape= (or pool to 1)")
        oh, ow = (n if o is None else o for o, n in zip(sizes, (h, w)))
        if h % oh or w % ow:
            self.refuse(f"pools a {h}x{w} map to {oh}x{ow}; fastconv pools adaptively to a "
                        f"size that divides the input's only (uniform windows)")
        kernel = (h // oh, w // ow)
        if kernel == (1, 1):
            return x  # (the sizes are equal: the identity)
        return self.apply(lambda: AvgPool2d(kernel, kernel, 0, False, True, self.layout), [x],
                          MAP, key)

    def upsample(self, x: _Tensor, key: str, size: Any, scale_factor: Any, mode: str,
                 align_corners: Any, recompute_scale_factor: Any) -> _Tensor:
        if mode not in ("nearest", "bilinear"):
            self.refuse(f"resizes with mode {mode!r}; fastconv's Upsample has 'nearest' and "
                        f"'bilinear'")
        if recompute_scale_factor and scale_factor is not None:
            self.refuse("sets recompute_scale_factor, which Upsample does not support")
        if size is not None:
            size = tuple(self.known_int(s, "the output size") for s in (
                size if isinstance(size, (tuple, list)) else (size, size)))
        if isinstance(scale_factor, (tuple, list)):
            scale_factor = tuple(float(s) for s in scale_factor)
        elif scale_factor is not None:
            scale_factor = float(scale_factor)
        return self.apply(lambda: Upsample(size, scale_factor, mode,
                                           align_corners if mode == "bilinear" else None,
                                           layout=self.layout), [x], MAP, key)

    def pad(self, x: _Tensor, key: str, pad: Any, mode: str, value: Any) -> _Tensor:
        """F.pad's (left, right[, top, bottom]) amounts: zeros where they are
        positive, a crop where negative."""
        if mode != "constant" or (value or 0) != 0:
            self.refuse(f"pads with mode {mode!r} and value {value!r}; fastconv pads with zeros "
                        f"only")
        if not isinstance(pad, (list, tuple)) or len(pad) not in (2, 4):
            self.refuse(f"pads {pad!r}; fastconv pads the width and height only, "
                        f"(left, right) or (left, right, top, bottom)")
        amounts = [self.known_int(p, "the padding") for p in pad] + [0, 0]
        left, right, top, bottom = amounts[:4]
        crop = tuple(max(-a, 0) for a in (top, bottom, left, right))
        grow = tuple(max(a, 0) for a in (top, bottom, left, right))
        if any(crop):
            (t, b, le, r) = crop
            x = self.apply(lambda: Cropping2d(((t, b), (le, r)), layout=self.layout), [x], MAP,
                           self.unique(key + "_crop") if any(grow) else key)
        if any(grow) or not any(crop):
            (t, b, le, r) = grow
            x = self.apply(lambda: ZeroPad2d(((t, b), (le, r)), layout=self.layout), [x], MAP,
                           key)
        return x

    def crop(self, x: _Tensor, index: Any, key: str) -> _Tensor:
        """x[:, :, a:b, c:d] as a Cropping2d."""
        items = list(index) if isinstance(index, tuple) else [index]
        if Ellipsis in items:
            at = items.index(Ellipsis)
            items = items[:at] + [slice(None)] * (4 - len(items) + 1) + items[at + 1:]
        items += [slice(None)] * (4 - len(items))
        if len(items) != 4 or not all(isinstance(s, slice) for s in items) or any(
                s != slice(None) for s in items[:2]):
            self.refuse(f"indexes a map with {index!r}; fastconv takes slices of the height and "
                        f"width only, x[:, :, a:b, c:d]")
        dims = self.torch_dims(x)
        amounts = []
        for s, n, side in ((items[2], dims[2], "height"), (items[3], dims[3], "width")):
            if s.step not in (None, 1):
                self.refuse(f"slices the {side} with step {s.step!r}; only step 1 is supported")
            start, stop = s.start, s.stop
            for v in (start, stop):
                if v is not None and not isinstance(v, (int, np.integer)):
                    self.known_int(v, f"the {side}'s slice bounds")
            if n is None:
                # Without the size, bounds that count from the start (start
                # >= 0) and from the end (stop < 0) still say what is cut.
                if (start or 0) < 0 or (stop is not None and stop >= 0):
                    self.known_int(None, f"the {side} of its input")
                amounts.append((start or 0, -stop if stop is not None else 0))
            else:
                a, b, _ = slice(start, stop).indices(n)
                if b <= a:
                    self.refuse(f"slices an empty {side} ({s!r} of {n})")
                amounts.append((a, n - b))
        (t, b), (le, r) = amounts
        if not (t or b or le or r):
            return x
        return self.apply(lambda: Cropping2d(((t, b), (le, r)), layout=self.layout), [x], MAP,
                          key)

    def elementwise(self, kind: Any, a: Any, b: Any, key: str) -> Any:
        """a + b or a * b: of two tensors of one shape, a layer; of two sizes,
        their value at import."""
        if not isinstance(a, _Tensor) and not isinstance(b, _Tensor):
            return self.arithmetic(operator.add if kind is Add else operator.mul, a, b)
        if not isinstance(a, _Tensor) or not isinstance(b, _Tensor):
            self.refuse(f"combines a tensor with {b if isinstance(a, _Tensor) else a!r}; "
                        f"fastconv adds and multiplies two tensors of one shape only")
        if a.kind != b.kind:
            self.refuse(f"combines {self.kind_text(a)} with {self.kind_text(b)}; fastconv adds "
                        f"and multiplies two tensors of one shape only (no broadcasting)")
        return self.apply(kind, [a, b], a.kind, key)

    def arithmetic(self, op: Any, *args: Any) -> Any:
        """Python arithmetic on sizes known at import (a U-Net's crop)."""
        for v in args:
            if isinstance(v, _Batch) or v is None:
                self.refuse("computes with the batch size or a size known only when the "
                            "model runs; give from_torch input_shape= for the other sizes")
            if isinstance(v, _Tensor):
                self.refuse("combines a tensor with a number; fastconv has no such layer")
        return op(*args)

    # -- functions and methods ------------------------------------------------------
    def function_call(self, target: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return self.function_layer(target, args, kwargs)
        except (KeyError, IndexError) as exc:  # (an argument not where torch's signature says)
            self.refuse(f"is called with arguments fastconv could not read ({exc!r} missing)")

    def function_layer(self, target: Any, args: tuple, kwargs: dict) -> Any:
        torch, F = self.torch, self.torch.nn.functional
        key = self.unique(self.node.name)
        arith = {operator.sub: operator.sub, operator.floordiv: operator.floordiv,
                 operator.truediv: operator.truediv, operator.neg: operator.neg,
                 operator.mod: operator.mod, operator.eq: operator.eq,
                 operator.ne: operator.ne}
        if target in (operator.add, operator.iadd, torch.add):
            if kwargs.get("alpha", 1) != 1:
                self.refuse("adds with alpha != 1, which fastconv's Add does not support")
            return self.elementwise(Add, args[0], args[1] if len(args) > 1 else kwargs["other"],
                                    key)
        if target in (operator.mul, operator.imul, torch.mul):
            return self.elementwise(Multiply, args[0],
                                    args[1] if len(args) > 1 else kwargs["other"], key)
        if target in arith:
            return self.arithmetic(arith[target], *args)
        if target is getattr:
            obj, attr = args
            if isinstance(obj, _Tensor) and attr == "shape":
                return self.torch_dims(obj)
            self.refuse(f"reads attribute {attr!r}; fastconv reads a tensor's shape only")
        if target is operator.getitem:
            obj, index = args
            if isinstance(obj, _Tensor):
                if obj.kind != MAP:
                    self.refuse(f"indexes {self.kind_text(obj)}; fastconv slices maps only")
                return self.crop(obj, index, key)
            return obj[index]  # (a size of a shape, or an output of a tuple)
        bound = self.bind(target, args, kwargs)
        if target in (F.relu, torch.relu, torch.relu_, F.relu_):
            x = self.tensor(bound["input"])
            return self.apply(ReLU, [x], x.kind, key)
        if target in (F.relu6,):
            x = self.tensor(bound["input"])
            return self.apply(ReLU6, [x], x.kind, key)
        if target in (F.hardtanh, F.hardtanh_):
            x = self.tensor(bound["input"])
            return self.apply(self.clip_maker(bound.get("min_val", -1.0),
                                              bound.get("max_val", 1.0)), [x], x.kind, key)
        if target in (torch.clamp, torch.clip):
            x = self.tensor(bound["input"])
            low, high = bound.get("min"), bound.get("max")
            if low is None or high is None or isinstance(low, _Tensor) or isinstance(
                    high, _Tensor):
                self.refuse("clamps without both a min and a max number; fastconv's Clip "
                            "takes both")
            return self.apply(self.clip_maker(low, high), [x], x.kind, key)
        if target is F.leaky_relu:
            x = self.tensor(bound["input"])
            slope = bound.get("negative_slope", 0.01)
            return self.apply(lambda: LeakyReLU(slope), [x], x.kind, key)
        simple = {torch.sigmoid: Sigmoid, F.sigmoid: Sigmoid, torch.tanh: Tanh, F.tanh: Tanh,
                  F.silu: SiLU, F.hardswish: HardSwish, F.hardsigmoid: HardSigmoid}
        if target in simple:
            x = self.tensor(bound["input"])
            return self.apply(simple[target], [x], x.kind, key)
        if target in (F.softmax, torch.softmax):
            return self.softmax(bound["input"], bound.get("dim"), key)
        if target is torch.cat:
            return self.cat(bound["tensors"], bound.get("dim", 0), key)
        if target is torch.flatten:
            return self.flatten_call(bound["input"], bound.get("start_dim", 0),
                                     bound.get("end_dim", -1), key)
        if target is torch.reshape:
            return self.reshape(bound["input"], bound["shape"], key)
        if target is torch.mean:
            return self.mean(bound["input"], bound.get("dim"), bound.get("keepdim", False), key)
        if target is F.adaptive_avg_pool2d:
            return self.global_pool(self.map_of(bound["input"]), bound["output_size"], key)
        if target in (F.max_pool2d, F.avg_pool2d):
            return self.pool(target is F.max_pool2d, self.map_of(bound["input"]), key,
                             bound["kernel_size"], bound.get("stride"), bound.get("padding", 0),
                             bound.get("ceil_mode", False), bound.get("dilation", 1),
                             bound.get("return_indices", False),
                             bound.get("count_include_pad", True),
                             bound.get("divisor_override"))
        if target is F.interpolate:
            if bound.get("antialias"):
                self.refuse("resizes with antialias, which Upsample does not support")
            return self.upsample(self.map_of(bound["input"]), key, bound.get("size"),
                                 bound.get("scale_factor"), bound.get("mode", "nearest"),
                                 bound.get("align_corners"),
                                 bound.get("recompute_scale_factor"))
        if target is F.pad:
            return self.pad(self.map_of(bound["input"]), key, bound["pad"],
                            bound.get("mode", "constant"), bound.get("value"))
        if target in (F.dropout, F.dropout2d, torch.dropout):
            return self.tensor(bound["input"])  # (the identity at inference)
        self.refuse(f"has no fastconv.nn equivalent; supported: {SUPPORTED_FUNCTIONS}")

    def bind(self, target: Any, args: tuple, kwargs: dict) -> Dict[str, Any]:
        """The arguments by name (torch.fx's normalization of a function's
        signature), or {} for a function it does not know."""
        from torch.fx.operator_schemas import normalize_function
        try:
            pair = normalize_function(target, args, kwargs, normalize_to_only_use_kwargs=True)
        except Exception:  # (an unknown signature: refused below by the caller)
            pair = None
        if pair is None:
            if args and not kwargs:
                return {"input": args[0]}
            return dict(kwargs)
        return dict(pair.kwargs)

    def method_call(self, name: str, args: tuple, kwargs: dict) -> Any:
        key = self.unique(self.node.name)
        x, rest = args[0], args[1:]
        if name == "size":
            dims = self.torch_dims(self.tensor(x))
            dim = rest[0] if rest else kwargs.get("dim")
            return dims if dim is None else dims[dim]
        if name in ("dim", "ndimension"):
            return len(self.torch_dims(self.tensor(x)))
        x = self.tensor(x, "the tensor it is called on")
        if name in ("contiguous", "clone", "detach"):
            return x
        if name in ("relu", "relu_"):
            return self.apply(ReLU, [x], x.kind, key)
        if name in ("sigmoid", "sigmoid_", "tanh", "tanh_"):
            return self.apply(Sigmoid if name.startswith("sigmoid") else Tanh, [x], x.kind,
                              key)
        if name in ("clamp", "clamp_", "clip", "clip_"):
            low = rest[0] if rest else kwargs.get("min")
            high = rest[1] if len(rest) > 1 else kwargs.get("max")
            if low is None or high is None:
                self.refuse("clamps without both a min and a max; fastconv's Clip takes both")
            return self.apply(self.clip_maker(low, high), [x], x.kind, key)
        if name in ("add", "add_", "mul", "mul_"):
            if kwargs.get("alpha", 1) != 1:
                self.refuse("adds with alpha != 1, which fastconv's Add does not support")
            other = rest[0] if rest else kwargs.get("other")
            return self.elementwise(Add if name.startswith("add") else Multiply, x, other, key)
        if name == "flatten":
            start = rest[0] if rest else kwargs.get("start_dim", 0)
            end = rest[1] if len(rest) > 1 else kwargs.get("end_dim", -1)
            return self.flatten_call(x, start, end, key)
        if name in ("view", "reshape"):
            shape = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
            return self.reshape(x, shape if rest else kwargs.get("shape"), key)
        if name == "mean":
            dim = rest[0] if rest else kwargs.get("dim")
            keepdim = rest[1] if len(rest) > 1 else kwargs.get("keepdim", False)
            return self.mean(x, dim, keepdim, key)
        if name == "softmax":
            return self.softmax(x, rest[0] if rest else kwargs.get("dim"), key)
        self.refuse(f"has no fastconv.nn equivalent; supported: {SUPPORTED_FUNCTIONS}")

    def cat(self, tensors: Any, dim: int, key: str) -> _Tensor:
        if not isinstance(tensors, (list, tuple)) or len(tensors) < 2:
            self.refuse("joins fewer than two tensors")
        ts = [self.tensor(t) for t in tensors]
        kinds = {t.kind for t in ts}
        if len(kinds) != 1 or POOLED in kinds:
            self.refuse(f"joins {', '.join(sorted(self.kind_text(t) for t in ts))}; fastconv "
                        f"joins maps, or features, of one kind")
        kind = ts[0].kind
        ndim = 4 if kind == MAP else 2
        if not -ndim <= dim < ndim or dim % ndim == 0:
            self.refuse(f"joins along axis {dim} of a {ndim}-D tensor; not the batch axis")
        if kind == MAP and dim % 4 == 1:
            return self.apply(lambda: Concatenate(layout=self.layout), ts, MAP, key)
        axis = _torch_axis(self.layout, dim) if kind == MAP else -1
        return self.apply(lambda: Concatenate(axis), ts, kind, key)

    def flatten_call(self, x: _Tensor, start: int, end: int, key: str) -> _Tensor:
        x = self.tensor(x)
        ndim = {MAP: 4, POOLED: 4, FLAT: 2}[x.kind]
        if start != 1 or end % ndim != ndim - 1:
            self.refuse(f"flattens axes {start} to {end}; fastconv flattens all but the batch "
                        f"axis only (start_dim=1)")
        return self.flatten(x, key)

    def reshape(self, x: _Tensor, shape: Any, key: str) -> _Tensor:
        """view/reshape to (batch, -1) (or (batch, F), (-1, F)): a flatten."""
        x = self.tensor(x)
        shape = list(shape) if isinstance(shape, (list, tuple)) else [shape]
        dims = self.torch_dims(x)
        features = None if any(d is None for d in dims[1:]) else math.prod(dims[1:])
        ok = len(shape) == 2 and (
            (shape[0] is BATCH and (shape[1] == -1 or shape[1] == features))
            or (shape[0] == -1 and shape[1] == features))
        if not ok:
            known = "" if features is not None else (
                " (a shape (-1, F) is that only if C * H * W = F: give from_torch input_shape= "
                "so that the sizes are known)")
            self.refuse(f"reshapes to {tuple(shape)}; fastconv reshapes to (batch, -1), "
                        f"flattening all but the batch axis, only{known}")
        return self.flatten(x, key)

    def mean(self, x: _Tensor, dim: Any, keepdim: bool, key: str) -> _Tensor:
        x = self.tensor(x)
        dims = dim if isinstance(dim, (list, tuple)) else [dim]
        if x.kind != MAP or dim is None or sorted(
                d % 4 if isinstance(d, int) else -1 for d in dims) != [2, 3]:
            self.refuse(f"averages over {dim!r}; fastconv averages a map over its height and "
                        f"width (dim (2, 3)) only")
        return self.apply(lambda: GlobalAvgPool2d(self.layout), [x],
                          POOLED if keepdim else FLAT, key)
