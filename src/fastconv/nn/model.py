"""Models: graphs of layers built from symbolic tensors (Model, Keras's
functional style), Sequential (a Model whose layers run in turn), and the
conversion of a classifier into a fully convolutional network."""
from __future__ import annotations

import difflib
import io
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from fastconv._fc import fc_to_conv
from fastconv._validate import _is_int, float_arrays, layout_name
from fastconv.nn.activations import Activation
from fastconv.nn.layers import (AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer,
                                Linear, ReLU, Softmax, _spatial, list_input)
from fastconv.nn.structural import Add, Identity
from fastconv.nn.symbolic import (Input, SymbolicShape, SymbolicTensor, infer_shape, input_label,
                                  layer_label, unknown_input)

__all__ = ["Model", "Node", "Sequential", "to_fully_convolutional"]


class Node(NamedTuple):
    """One layer application in a Model: `layer` reads the tensors whose ids
    are `inputs` and writes the tensor `output`. The model's inputs are ids
    0 to n-1 (in order); node k of ``model.nodes`` writes id n + k, and
    reads only ids below it (the nodes are in topological order). A layer
    applied twice (shared weights) is the layer of two nodes."""
    layer: Layer
    inputs: Tuple[int, ...]
    output: int


def _automatic_name(kind: str) -> str:
    """Keras's style: "Conv2d" -> "conv2d", "MaxPool2d" -> "max_pool2d",
    "ReLU" -> "relu" (a run of capitals is one word)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", "_", kind).lower()


def _what(obj: Any) -> str:
    if isinstance(obj, SymbolicTensor):
        return "an Input"
    kind = type(obj).__name__
    return f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind} layer"


def _tensors(fn: str, what: str, value: Any) -> List[SymbolicTensor]:
    """A tensor, or a non-empty list or tuple of them, as a list."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(t, SymbolicTensor) for t in items):
        raise TypeError(f"{fn}: {what} must be a symbolic tensor (nn.Input or a layer's "
                        f"output) or a non-empty list of them; got {value!r}")
    return items


def _topological(fn: str, inputs: List[SymbolicTensor], outputs: List[SymbolicTensor]
                 ) -> List[SymbolicTensor]:
    """The layer outputs the outputs depend on, each after those it reads
    (a depth-first walk from the outputs, without recursion: a chain of
    thousands of layers is fine). Every Input reached must be among
    `inputs`; a cycle (which only a hand-made tensor can hold) is refused."""
    given = {id(t) for t in inputs}
    visiting, done = 1, 2
    state: Dict[int, int] = {}
    order: List[SymbolicTensor] = []

    def reached_input(t: SymbolicTensor, reader: str) -> None:
        if id(t) not in given:
            names = ", ".join(input_label(i) for i in inputs)
            raise ValueError(f"{fn}: {reader} {input_label(t)}, which is not among the model's "
                             f"inputs ({names}): the outputs are not reachable from the given "
                             f"inputs alone")
        state[id(t)] = done

    for out in outputs:
        if state.get(id(out)) == done:
            continue
        if out.is_input:
            reached_input(out, "an output is")
            continue
        state[id(out)] = visiting
        stack = [(out, iter(out.inputs))]
        while stack:
            t, parents = stack[-1]
            p = next(parents, None)
            if p is None:
                stack.pop()
                state[id(t)] = done
                order.append(t)
                continue
            seen = state.get(id(p))
            if seen == done:
                continue
            if seen == visiting:
                raise ValueError(f"{fn}: the graph has a cycle through layer "
                                 f"{layer_label(p.layer)}")
            if p.is_input:
                reached_input(p, f"layer {layer_label(t.layer)} reads")
                continue
            state[id(p)] = visiting
            stack.append((p, iter(p.inputs)))
    return order


def _shape_text(shape: Optional[SymbolicShape]) -> str:
    return "?" if shape is None else str(tuple(shape))


class _Fused(Layer):
    """A Model's step that runs several of its layers as one (see
    _fused_steps): a layer with weights with the activation layer after it
    in its store, and, with `residual`, the other input of the Add after it
    added there too (the step's last input)."""

    def __init__(self, layer: Layer, activation: Any, residual: bool) -> None:
        super().__init__()
        self.layer, self.activation, self.residual = layer, activation, residual
        self.takes_list = True if residual else layer.takes_list

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> Any:
        if not self.residual:
            return self.layer._forward_activation(x, self.activation, num_threads)
        *args, residual = x
        return self.layer._forward_activation(args if len(args) > 1 else args[0],
                                              self.activation, num_threads, residual=residual)


def _activation_of(layer: Layer) -> Any:
    """The activation an elementwise layer applies (as activation= takes it), or None."""
    if isinstance(layer, ReLU):
        return "relu"
    if isinstance(layer, Activation):
        return layer.activation if not isinstance(layer.activation, list) else \
            tuple(layer.activation)
    return None


def _fused_steps(nodes: List[Node], output_ids: Tuple[int, ...]
                 ) -> Tuple[List[Node], List[Tuple[Layer, ...]], List[Tuple[Layer, ...]]]:
    """The steps a model runs, the layers fused in them, and each step's
    layers (the fused ones, or its one layer). From a Conv2d
    (or ConvTranspose2d, or Linear) with no activation of its own, each
    layer that alone reads the one before it joins it: a BatchNorm2d right
    after a Conv2d is folded into its weights (fold_batchnorm); a two-input
    Add after a Conv2d or ConvTranspose2d adds its other input in the store
    (a residual connection); an activation layer runs in the store. The
    tensors in between are never made; the step runs where the last layer
    it replaces would. A tensor that is a model output, or read twice, is
    not fused away. The fused activation and residual are bitwise the
    layers' (the kernels' own code, the same additions); the fold changes
    results by rounding (and keeps a folded copy of the convolution's
    packed weights beside the original)."""
    from fastconv.nn.conv_transpose import ConvTranspose2d
    from fastconv.nn.normalization import BatchNorm2d, fold_batchnorm

    readers: Dict[int, List[int]] = {}
    for k, node in enumerate(nodes):
        for i in node.inputs:
            readers.setdefault(i, []).append(k)

    def sole_reader(tensor: int, arity: int = 1) -> Optional[int]:
        """The node that alone reads `tensor`, once, among `arity` inputs (and
        that no earlier step took: an Add of two convolutions goes to the
        first)."""
        ks = readers.get(tensor, [])
        if tensor in output_ids or len(ks) != 1 or len(nodes[ks[0]].inputs) != arity \
                or nodes[ks[0]].inputs.count(tensor) != 1 or ks[0] in consumed:
            return None
        return ks[0]

    pending: Dict[int, Tuple[Node, Tuple[Layer, ...]]] = {}  # last node -> fused step
    consumed = set()
    for k, node in enumerate(nodes):
        run = node.layer
        if k in consumed or not isinstance(run, (Conv2d, ConvTranspose2d, Linear)) \
                or run.activation is not None:
            continue
        out, group, chain, inputs = node.output, [run], [k], tuple(node.inputs)
        j = sole_reader(out)
        if j is not None and isinstance(run, Conv2d) and isinstance(nodes[j].layer, BatchNorm2d):
            try:
                run = fold_batchnorm(run, nodes[j].layer)
            except (TypeError, ValueError):  # (a mismatch the graph let through)
                j = None
            if j is not None:
                out = nodes[j].output
                chain.append(j)
                group.append(nodes[j].layer)
        residual = False
        j = sole_reader(out, 2)
        if j is not None and isinstance(run, (Conv2d, ConvTranspose2d)) \
                and type(nodes[j].layer) is Add:
            other = [i for i in nodes[j].inputs if i != out][0]
            inputs, residual = inputs + (other,), True
            out = nodes[j].output
            chain.append(j)
            group.append(nodes[j].layer)
        activation = None
        j = sole_reader(out)
        if j is not None and _activation_of(nodes[j].layer) is not None:
            activation = _activation_of(nodes[j].layer)
            out = nodes[j].output
            chain.append(j)
            group.append(nodes[j].layer)
        if len(group) == 1:
            continue
        consumed.update(chain)
        step_layer = run if activation is None and not residual else \
            _Fused(run, activation, residual)
        pending[chain[-1]] = (Node(step_layer, inputs, out), tuple(group))
    steps: List[Node] = []
    fusions: List[Tuple[Layer, ...]] = []
    groups: List[Tuple[Layer, ...]] = []
    for k, node in enumerate(nodes):
        if k in pending:
            steps.append(pending[k][0])
            fusions.append(pending[k][1])
            groups.append(pending[k][1])
        elif k not in consumed:
            steps.append(node)
            groups.append((node.layer,))
    return steps, fusions, groups


class Model(Layer):
    """A graph of layers, from its inputs to its outputs (Keras's
    functional API).

    Parameters
    ----------
    inputs : nn.Input tensor, or a list of them
    outputs : symbolic tensor, or a list of them
        What layers applied to the inputs returned. Every output must be
        computed from the given inputs alone, and every input used.
    layout : "NHWC" or "NCHW"
        The layout of the model's maps; every layer that has one must agree.
    name : str, optional

    Calling it runs the nodes in topological order, freeing each
    intermediate result as soon as its last reader has run, with a
    convolution (or Linear) and the BatchNorm2d and activation layer that
    alone read it run as one (``fusions`` lists them; see _fused_steps):
    ``model(x)`` for one input, ``model([x1, x2])`` or ``model({"a": x1,
    "b": x2})`` (keyed by input name) for several, each with its batch axis
    (N, ...), or without it where every layer takes that (as in Sequential:
    Conv2d takes a 3-D map, the pools do not). It returns an array for one
    output, a list for several; ``num_threads=`` reaches every layer. An
    input is checked against its nn.Input's shape (None axes: any size) and
    dtype; shapes inside the graph were checked when it was built.

    A Model is a layer: applied to a symbolic tensor (or a list, for several
    inputs) it becomes one node of another model (a model with several
    outputs cannot be).

    Names: every layer and Input in a model has a unique name there, which
    get_layer, summary, the input dict and save use. A given name is that
    name (two objects given one name are refused); one without is named by
    the first model built with it ("conv2d", "conv2d_1", ..., "input", ...)
    and keeps that name, except in a model where it is taken (layers of
    two separately built models, both "conv2d"): that model names it anew.
    A layer applied twice (shared weights) is one layer with one name; its
    applications are told apart as "name[0]", "name[1]", ... where
    summary() lists what each node reads.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> x = nn.Input((8, 8, 4))
    >>> y = nn.Conv2d(np.zeros((3, 3, 4, 4), np.float32), padding=1)(x)
    >>> model = nn.Model(x, nn.ReLU()(nn.Add()([y, x])))
    >>> model(np.ones((2, 8, 8, 4), np.float32)).shape
    (2, 8, 8, 4)
    """

    def __init__(self, inputs: Any, outputs: Any, layout: str = "NHWC",
                 name: Optional[str] = None) -> None:
        super().__init__(name)
        self.layout = layout_name("Model", layout)
        self._build(inputs, outputs)

    # -- the graph ---------------------------------------------------------
    def _label(self) -> str:
        kind = type(self).__name__
        return kind if self.name is None else f"{kind} {self.name!r}"

    def _build(self, inputs: Any, outputs: Any) -> None:
        """Check the graph from `inputs` to `outputs` and make its nodes."""
        fn = self._label()
        ins, outs = _tensors(fn, "inputs", inputs), _tensors(fn, "outputs", outputs)
        ids: Dict[int, int] = {}  # tensor -> its id
        for i, t in enumerate(ins):
            if not t.is_input:
                raise ValueError(f"{fn}: inputs must be nn.Input tensors; input {i} is the "
                                 f"output of layer {layer_label(t.layer)}")
            if ids.setdefault(id(t), i) != i:
                raise ValueError(f"{fn}: {input_label(t)} is given twice among the inputs")
        nodes = []
        for t in _topological(fn, ins, outs):
            ids[id(t)] = len(ids)
            nodes.append(Node(t.layer, tuple(ids[id(u)] for u in t.inputs), ids[id(t)]))
        output_ids = tuple(ids[id(t)] for t in outs)
        read = {i for node in nodes for i in node.inputs} | set(output_ids)
        for i, t in enumerate(ins):
            if i not in read:
                # (refused rather than warned about: an input that changes
                # nothing is most likely a wiring mistake)
                raise ValueError(f"{fn}: {input_label(t)} is used by no output; every input "
                                 f"of a model must be")
        layers = list({id(node.layer): node.layer for node in nodes}.values())
        for layer in layers:
            if layer.layout is not None and layer.layout != self.layout:
                raise ValueError(f"{fn}: layer {layer_label(layer)} is {layer.layout} but the "
                                 f"model is {self.layout}")
        names = self._name_all(fn, ins, layers)
        steps, fusions, groups = _fused_steps(nodes, output_ids)
        # The ids each step is the last to read, which are freed once it ran.
        last_reader = {i: k for k, step in enumerate(steps) for i in step.inputs}
        free_after: List[List[int]] = [[] for _ in steps]
        for i, k in last_reader.items():
            if i not in output_ids:
                free_after[k].append(i)
        self._inputs, self._outputs, self._nodes = ins, outs, nodes
        self._graph_layers, self._output_ids, self._free_after = layers, output_ids, free_after
        self._steps, self._fusions, self._step_groups = steps, fusions, groups
        self._names = names

    @staticmethod
    def _name_all(fn: str, inputs: List[SymbolicTensor], layers: List[Layer]) -> Dict[int, str]:
        """The name of each input and layer in this model (by id): a given
        name (unique, or a ValueError); else the automatic name an earlier
        model gave it, where no given name nor an earlier one takes it; else
        a new one ("conv2d", "conv2d_1", ...), which a still unnamed object
        keeps. So layers of separately built models combine without a
        clash, and no given name ever changes."""
        objects = (*inputs, *layers)
        names: Dict[int, str] = {}
        owners: Dict[str, Any] = {}
        for obj in objects:
            if obj._name_given:
                if owners.setdefault(obj.name, obj) is not obj:
                    raise ValueError(
                        f"{fn}: {_what(owners[obj.name])} and {_what(obj)} are both named "
                        f"{obj.name!r}; the names given to the layers and inputs of a model "
                        f"must be unique")
                names[id(obj)] = obj.name
        for obj in objects:
            if not obj._name_given and obj.name is not None and obj.name not in owners:
                owners[obj.name] = obj
                names[id(obj)] = obj.name
        suffix: Dict[str, int] = {}  # (per base: where the search goes on, not from 1)
        for obj in objects:
            if id(obj) not in names:
                base = "input" if isinstance(obj, SymbolicTensor) else \
                    _automatic_name(type(obj).__name__)
                k = suffix.get(base, 0)
                name = base if k == 0 else f"{base}_{k}"
                while name in owners:
                    k += 1
                    name = f"{base}_{k}"
                suffix[base] = k + 1
                owners[name] = obj
                names[id(obj)] = name
                if obj.name is None:
                    obj._name = name
        return names

    def _current(self) -> None:
        """Bring the graph up to date (a Sequential's list of layers may
        have changed)."""

    def _tensor_names(self) -> List[str]:
        """The name of each tensor id: an input's, or its layer's (with the
        application's index, [0], [1], ..., for a layer applied twice)."""
        names = [self._names[id(t)] for t in self._inputs]
        uses: Dict[int, int] = {}
        for node in self._nodes:
            uses[id(node.layer)] = uses.get(id(node.layer), 0) + 1
        seen: Dict[int, int] = {}
        for node in self._nodes:
            name = self._names[id(node.layer)]
            k = seen[id(node.layer)] = seen.get(id(node.layer), -1) + 1
            names.append(name if uses[id(node.layer)] == 1 else f"{name}[{k}]")
        return names

    def _name_of(self, obj: Any) -> str:
        """The name of one of its layers or inputs in this model (the graph
        being current)."""
        return self._names[id(obj)]

    # -- what it is ----------------------------------------------------------
    @property
    def inputs(self) -> List[SymbolicTensor]:
        self._current()
        return list(self._inputs)

    @property
    def outputs(self) -> List[SymbolicTensor]:
        self._current()
        return list(self._outputs)

    @property
    def input_names(self) -> List[str]:
        self._current()
        return [self._names[id(t)] for t in self._inputs]

    @property
    def output_names(self) -> List[str]:
        self._current()
        names = self._tensor_names()
        return [names[i] for i in self._output_ids]

    @property
    def layers(self) -> List[Layer]:
        """The layers, each once, in topological order (a nested model is
        one layer)."""
        self._current()
        return list(self._graph_layers)

    @property
    def nodes(self) -> List[Node]:
        """The layer applications in topological order (see Node): applying
        their layers in turn to new nn.Inputs rebuilds the model."""
        self._current()
        return list(self._nodes)

    @property
    def fusions(self) -> List[Tuple[str, ...]]:
        """The layers the model runs as one (see _fused_steps): each a tuple
        of names, e.g. ("conv1", "bn1", "relu1") for a convolution with the
        batch normalization folded into its weights and the ReLU in its
        store. model.layers, summary() and save() show the layers as given."""
        self._current()
        return [tuple(self._names[id(layer)] for layer in group) for group in self._fusions]

    @property
    def takes_list(self) -> bool:  # type: ignore[override]
        self._current()
        return len(self._inputs) > 1

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    def get_layer(self, name: str) -> Layer:
        """The layer called `name` (a ValueError naming the closest names
        if there is none)."""
        self._current()
        for layer in self._graph_layers:
            if self._names[id(layer)] == name:
                return layer
        fn = self._label()
        if name in self.input_names:
            raise ValueError(f"{fn}: {name!r} is an Input, not a layer")
        names = [self._names[id(layer)] for layer in self._graph_layers]
        close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
        hint = (f"close names: {', '.join(map(repr, close))}" if close else
                f"its layers are {', '.join(map(repr, names[:20]))}"
                + (f" and {len(names) - 20} more" if len(names) > 20 else ""))
        raise ValueError(f"{fn}: no layer named {name!r}; {hint}")

    # -- shapes ----------------------------------------------------------------
    def _matches(self, t: SymbolicTensor, shape: Tuple[int, ...]) -> bool:
        return t.shape is None or (len(shape) == len(t.shape) and all(
            d is None or d == g for d, g in zip(t.shape, shape)))

    def _given_shapes(self, shape: Any) -> List[Tuple[int, ...]]:
        """One shape per input, from output_shape's or summary's argument:
        a shape for one input, a list of them for several."""
        fn = self._label()
        n = len(self._inputs)
        shapes = [shape] if n == 1 else shape
        if n > 1 and (not isinstance(shape, (list, tuple)) or len(shape) != n):
            raise ValueError(f"{fn}: takes {n} inputs ({', '.join(self.input_names)}): give a "
                             f"list of {n} shapes; got {shape!r}")
        result = []
        for t, name, s in zip(self._inputs, self.input_names, shapes):
            if not isinstance(s, (list, tuple)) or not all(_is_int(d) and d >= 0 for d in s):
                raise TypeError(f"{fn}: the shape of input {name!r} must be a tuple of ints "
                                f">= 0 (without the batch axis); got {s!r}")
            s = tuple(int(d) for d in s)
            if not self._matches(t, s):
                raise ValueError(f"{fn}: input {name!r} has shape {t.shape}; got {s}")
            result.append(s)
        return result

    def _propagate(self, shapes: Sequence[Optional[SymbolicShape]]
                   ) -> List[Optional[SymbolicShape]]:
        """The shape of every tensor id for these input shapes (None where
        not known), each layer's refusal a ValueError naming it."""
        known: List[Optional[SymbolicShape]] = list(shapes)
        for node in self._nodes:
            try:
                known.append(infer_shape(node.layer, [known[i] for i in node.inputs],
                                         list_input(node.layer, len(node.inputs))))
            except ValueError as exc:
                raise ValueError(f"{self._label()}: {exc}") from None
        return known

    def output_shape(self, shape: Any) -> Any:
        """The output shape for an input of `shape` (no batch axis; a list of
        shapes for several inputs): a shape for one output, a list for
        several."""
        self._current()
        known = self._propagate(self._given_shapes(shape))
        out = [tuple(known[i]) for i in self._output_ids]
        return out[0] if len(out) == 1 else out

    def _fixed_input_shape(self, shape: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
        """For a classifier whose Linear after a Flatten refuses the map an
        input of `shape` (no batch axis) makes: the input shape, with the
        same channels, at which the whole model fits (None when there is
        none, or the model is not of that kind). An error's hint only."""
        if len(self._inputs) != 1 or len(shape) != 3:
            return None

        def shapes_at(s: Tuple[int, ...]) -> List[Optional[SymbolicShape]]:
            known: List[Optional[SymbolicShape]] = [s]
            for node in self._nodes:  # (up to the first refusal)
                try:
                    known.append(infer_shape(node.layer, [known[i] for i in node.inputs],
                                             list_input(node.layer, len(node.inputs))))
                except ValueError:
                    break
            return known

        known = shapes_at(shape)
        if len(known) > len(self._nodes):
            return None  # (it fits)
        node = self._nodes[len(known) - 1]
        producer = {n.output: n for n in self._nodes}
        src = producer.get(node.inputs[0]) if isinstance(node.layer, Linear) else None
        while src is not None and isinstance(src.layer, (ReLU, Dropout, Activation, Identity)):
            src = producer.get(src.inputs[0])
        flat_in = known[src.inputs[0]] if src is not None and isinstance(src.layer, Flatten) \
            else None
        if flat_in is None or len(flat_in) != 3 or None in flat_in:
            return None
        mh, mw, mc = _spatial(self.layout, tuple(flat_in))
        positions, rest = divmod(node.layer.in_features, mc)
        if rest or not positions:
            return None
        # The map's (a, b) = a factor pair of `positions`, the one closest to
        # the given map's aspect; each spatial size grows monotonically with
        # the input's along its own axis, so a binary search finds it.
        a, b = min(((d, positions // d) for d in range(1, positions + 1) if positions % d == 0),
                   key=lambda p: abs(np.log(p[0] * mw) - np.log(p[1] * mh)))
        axes = (0, 1) if self.layout == "NHWC" else (1, 2)

        def map_size(axis: int, size: int) -> int:
            s = list(shape)
            s[axes[axis]] = size
            m = shapes_at(tuple(s))
            if src.inputs[0] >= len(m) or m[src.inputs[0]] is None:
                return 0
            return _spatial(self.layout, tuple(m[src.inputs[0]]))[axis]

        found = list(shape)
        for axis, target in ((0, a), (1, b)):
            lo, hi = 1, 1 << 16
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (mid + 1, hi) if map_size(axis, mid) < target else (lo, mid)
            found[axes[axis]] = lo
        found_shape = tuple(found)
        return found_shape if len(shapes_at(found_shape)) > len(self._nodes) else None

    def _fixed_input_hint(self, shape: Tuple[int, ...]) -> str:
        """A sentence for the errors of a classifier given the wrong image
        size ('' when it is not that)."""
        fixed = self._fixed_input_shape(shape)
        if fixed is None:
            return ""
        return (f". The Linear after the Flatten fixes the input's size: {fixed} fits it "
                f"(is that the size the model was trained on?); to run it over larger "
                f"images, convert it with nn.to_fully_convolutional(model, <that size>)")

    def summary(self, input_shape: Any = None) -> str:
        """A table of the model's nodes: name, type, output shape, parameter
        count and the tensors each reads, for `input_shape` (no batch axis;
        a list for several inputs), by default the nn.Input shapes ("?":
        known only when the model runs)."""
        self._current()
        shapes = ([t.shape for t in self._inputs] if input_shape is None
                  else self._given_shapes(input_shape))
        known = self._propagate(shapes)
        names = self._tensor_names()
        rows = [("name", "type", "output shape", "params", "reads")]
        rows += [(names[i], "Input", _shape_text(known[i]), "0", "")
                 for i in range(len(self._inputs))]
        counted = set()
        for node in self._nodes:
            layer = node.layer
            params = "shared" if id(layer) in counted else f"{layer.num_params:,}"
            counted.add(id(layer))
            rows.append((names[node.output], type(layer).__name__,
                         _shape_text(known[node.output]), params,
                         ", ".join(names[i] for i in node.inputs)))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        lines = [f"{self._label()} ({self.layout})"]
        for row in rows:
            lines.append(f"  {row[0]:{widths[0]}}  {row[1]:{widths[1]}}  {row[2]:{widths[2]}}  "
                         f"{row[3]:>{widths[3]}}  {row[4]}".rstrip())
        lines.append(f"outputs: {', '.join(names[i] for i in self._output_ids)}")
        lines.append(f"total params: {self.num_params:,}")
        return "\n".join(lines)

    # -- running -------------------------------------------------------------
    def _input_arrays(self, x: Any) -> List[Any]:
        """One value per input from model(x)'s argument, each checked
        against its nn.Input."""
        fn = self._label()
        names = self.input_names
        n = len(names)
        if isinstance(x, dict):
            missing = [k for k in names if k not in x]
            given = set(names)
            unknown = [k for k in x if k not in given]
            if missing or unknown:
                raise ValueError(f"{fn}: the inputs are keyed by name ({', '.join(names)}); "
                                 f"missing {missing}, unknown {unknown}")
            values = [x[k] for k in names]
        elif n == 1:
            values = [x]
        elif not isinstance(x, (list, tuple)):
            raise TypeError(f"{fn}: takes {n} inputs ({', '.join(names)}): a list or tuple of "
                            f"{n} arrays, or a dict keyed by name; got {type(x).__name__}")
        elif len(x) != n:
            raise ValueError(f"{fn}: takes {n} inputs ({', '.join(names)}); got {len(x)}")
        else:
            values = list(x)
        return [self._input_array(fn, t, name, v)
                for t, name, v in zip(self._inputs, names, values)]

    def _dtype(self) -> np.dtype:
        """The dtype of the model's weights (float32 without any)."""
        for layer in self.layers:
            found = layer._dtype() if isinstance(layer, Model) else getattr(layer, "dtype", None)
            if found is not None:
                return np.dtype(found)
        return np.dtype(np.float32)

    def _converted(self, t: SymbolicTensor, value: Any) -> Any:
        """An input as the model takes it: integer, bool and float16 images
        (uint8 pixels, say) and lists or tuples of numbers converted to the
        model's dtype (its Input's, else its weights'); float32 and float64
        arrays as given (a float64 array for float32 weights is refused by
        the layers, not rounded behind the caller's back)."""
        if isinstance(value, (list, tuple)):
            try:
                return np.asarray(value, t.dtype or self._dtype())
            except (TypeError, ValueError):
                return value  # (the layer's check says what is wrong with it)
        if not isinstance(value, np.ndarray) and hasattr(value, "__array__"):
            value = np.asarray(value)
        if isinstance(value, np.ndarray) and (value.dtype.kind in "biu"
                                              or value.dtype == np.float16):
            return value.astype(t.dtype or self._dtype())
        return value

    def _input_array(self, fn: str, t: SymbolicTensor, name: str, value: Any) -> Any:
        value = self._converted(t, value)
        if t.shape is None and t.dtype is None:
            return value  # (a Sequential's input: its first layer checks it, as it always did)
        key = f"input {name!r}"
        _, converted = float_arrays(fn, **{key: value})
        a = converted[key]
        if t.dtype is not None and a.dtype != t.dtype:
            raise TypeError(f"{fn}: input {name!r} must have dtype {t.dtype}; got {a.dtype}")
        if t.shape is not None and not (self._matches(t, a.shape[1:])
                                        or self._matches(t, a.shape)):
            dims = ", ".join(map(str, t.shape))
            raise ValueError(f"{fn}: input {name!r} must have shape (N, {dims}), or "
                             f"{t.shape} without the batch axis; got {a.shape}")
        return a

    def _unbatched(self, arrays: List[Any]) -> bool:
        """Whether the inputs come without their batch axis: each of its
        nn.Input's shape, or for a Sequential whose first layer takes maps,
        one 3-D map. The model then runs them as a batch of one, so that
        every layer (the pools too) takes them."""
        if not all(isinstance(a, np.ndarray) for a in arrays):
            return False
        if all(t.shape is not None for t in self._inputs):
            return all(len(a.shape) == len(t.shape) and self._matches(t, a.shape)
                       for t, a in zip(self._inputs, arrays))
        first = self._step_groups[0][0] if self._step_groups else None
        return (len(arrays) == 1 and arrays[0].ndim == 3 and first is not None
                and getattr(first, "layout", None) is not None)

    def _step_label(self, k: int) -> str:
        """Step k as an error names it: the index and name of its (first)
        layer, and the layers run with it."""
        group = self._step_groups[k]
        index = next(i for i, layer in enumerate(self.layers) if layer is group[0])
        label = f"layer {index} {layer_label(group[0])}"
        if len(group) > 1:
            label += f" (run with {', '.join(repr(self._names[id(g)]) for g in group[1:])})"
        return label

    def forward(self, x: Any, *, num_threads: Optional[int] = None) -> Any:
        """Run the model: see the class's docstring."""
        self._current()
        arrays = self._input_arrays(x)
        unbatched = self._unbatched(arrays)
        if unbatched:
            arrays = [a[None] for a in arrays]
        values = dict(enumerate(arrays))
        for k, (step, free) in enumerate(zip(self._steps, self._free_after)):
            args = [values[i] for i in step.inputs]
            try:
                values[step.output] = step.layer.forward(
                    args if list_input(step.layer, len(args)) else args[0],
                    num_threads=num_threads)
            except (TypeError, ValueError) as exc:
                given = ", ".join(str(tuple(np.shape(a))) for a in arrays)
                hint = (self._fixed_input_hint(tuple(np.shape(arrays[0]))[1:])
                        if isinstance(self._step_groups[k][0], Linear) else "")
                raise type(exc)(f"{self._label()}: at {self._step_label(k)}, for the model's "
                                f"input of shape {given}: {exc}{hint}") from exc
            del args
            for i in free:  # (its last reader has run)
                del values[i]
        out = [values[i] for i in self._output_ids]
        if unbatched:
            out = [o[0] for o in out]
        return out[0] if len(out) == 1 else out

    def _apply(self, x: Any) -> SymbolicTensor:
        self._current()
        if len(self._outputs) > 1:
            raise ValueError(f"{self._label()}: a model with {len(self._outputs)} outputs "
                             f"cannot be applied as a layer; only one with one output can")
        return super()._apply(x)

    def save(self, path: Any) -> None:
        """Write the model to `path` as a plain .npz: one array per weight and
        a JSON description of the graph (no pickle; nn.load reads it)."""
        # (imported here: serialize builds models, so it imports this module)
        from fastconv.nn import serialize
        serialize.save(self, path)

    def __reduce__(self) -> Tuple[Any, Tuple[bytes]]:
        """Pickled as what save writes (the layers hold their weights packed
        in C objects, which do not pickle), so that a model reaches other
        processes (dask.distributed's workers, multiprocessing): unpickling
        runs nn.load on those bytes, whose layers compute bitwise what the
        original's do."""
        buffer = io.BytesIO()
        self.save(buffer)
        return _loads, (buffer.getvalue(),)

    def __repr__(self) -> str:
        self._current()
        names = self._tensor_names()
        lines = [f"Model(name={self.name!r}, layout={self.layout!r})"]
        lines += [f"  {name}: Input(shape={t.shape}, dtype={t.dtype})"
                  for t, name in zip(self._inputs, names)]
        lines += [f"  {names[node.output]}: {node.layer!r} <- "
                  f"{', '.join(names[i] for i in node.inputs)}" for node in self._nodes]
        lines.append(f"  -> {', '.join(names[i] for i in self._output_ids)}")
        return "\n".join(lines)


def _loads(data: bytes) -> Model:
    """A model from the bytes Model.__reduce__ saved."""
    from fastconv.nn import serialize
    return serialize.load(io.BytesIO(data))


class Sequential(Model):
    """Layers applied in turn: a Model with one input (of any shape its
    first layer takes) whose layers are a list.

    Parameters
    ----------
    *layers : Layer
        The same layer may appear twice (shared weights).
    layout : "NHWC" or "NCHW"
        The layout of the model's maps; every layer that has one must agree.
    name : str, optional

    ``model.layers`` is the list itself: changing it changes the model.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> w = np.ones((3, 3, 1, 4), np.float32)
    >>> model = nn.Sequential(nn.Conv2d(w, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    >>> model(np.ones((1, 8, 8, 1), np.float32)).shape
    (1, 4, 4, 4)
    """

    def __init__(self, *layers: Layer, layout: str = "NHWC", name: Optional[str] = None) -> None:
        Layer.__init__(self, name)
        self.layout = layout_name("Sequential", layout)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} must be a fastconv.nn layer; "
                                f"got {type(layer).__name__}")
            if layer.layout is not None and layer.layout != self.layout:
                raise ValueError(f"Sequential: layer {i} ({layer!r}) is {layer.layout} but "
                                 f"the model is {self.layout}")
            if layer.takes_list:
                raise ValueError(f"Sequential: layer {i} ({layer!r}) takes several inputs; "
                                 f"each layer of a Sequential reads the one before it")
        self._sequence: List[Layer] = list(layers)
        self._built_from: Optional[List[int]] = None
        self._current()

    def _current(self) -> None:
        """The graph of the list as it is now: rebuilt when it changed (the
        graph holds the layers it was built from, so their ids stay theirs)."""
        key = [id(layer) for layer in self._sequence]
        if key == self._built_from:
            return
        x = first = unknown_input()
        for layer in self._sequence:
            x = layer._apply(x)
        self._build([first], [x])
        self._built_from = key

    @property
    def layers(self) -> List[Layer]:  # type: ignore[override]
        """The list of layers, in order: changing it changes the model."""
        return self._sequence

    def __len__(self) -> int:
        return len(self._sequence)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._sequence)

    def __getitem__(self, index: Union[int, slice]) -> Union[Layer, "Sequential"]:
        if isinstance(index, slice):
            return Sequential(*self._sequence[index], layout=self.layout)
        return self._sequence[index]

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self._sequence))
        return f"Sequential(layout={self.layout!r}){inner}"


def to_fully_convolutional(model: Model, input_shape: Sequence[int]) -> Model:
    """The classifier `model` (a Sequential or a one-input Model) as a fully
    convolutional network.

    Flatten and the first Linear after it become one Conv2d whose kernel
    covers the map that reaches the Flatten at `input_shape` (through
    fastconv.fc_to_conv, honouring the Flatten's order); a GlobalAvgPool2d
    (ResNet's, MobileNet's head) becomes an AvgPool2d over that map's size
    at stride 1, so the Linear after it becomes a 1x1 Conv2d; every later
    Linear becomes a 1x1 Conv2d, and a Softmax acts on the channel axis.
    Elementwise layers (ReLU, Dropout, the activations) between them are
    kept. On an input of exactly `input_shape` the result equals the
    original model's, as an (N, 1, 1, classes) map (NHWC); on a larger
    input it is a score map whose entry (i, j) is the original model
    applied to the window at (i * S, j * S), S being the product of the
    strides before the Flatten (or the pool).

    Parameters
    ----------
    model : Sequential or Model (one input, one output)
    input_shape : the input the classifier was built for, without batch axis

    Returns
    -------
    Sequential for a Sequential, else a Model.

    Raises
    ------
    ValueError
        A layer that cannot be converted (after the Flatten or the global
        pool, anything but Linear, elementwise layers or Softmax; a Linear
        before any; no Flatten or global pool followed by a Linear), named.
    """
    fn = "to_fully_convolutional"
    if not isinstance(model, Model):
        raise TypeError(f"{fn}: model must be a fastconv.nn.Model or Sequential; "
                        f"got {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"{fn}: the model must have one input and one output; it has "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    layout = model.layout
    shape = tuple(input_shape)
    try:
        shapes = model._propagate([shape])
    except ValueError as exc:
        fixed = model._fixed_input_shape(shape) if len(shape) == 3 else None
        if fixed is None:
            raise ValueError(f"{fn}: the model cannot take input_shape {shape}: {exc}") from None
        raise ValueError(f"{fn}: input_shape must be the input the classifier was built for "
                         f"(an input of {fixed} fits it), not the larger image: the Linear "
                         f"after its Flatten refuses the map an input of {shape} makes ({exc}). "
                         f"The converted model then runs over any larger image") from None
    h, w, c = _spatial(layout, shape) if len(shape) == 3 else (None, None, None)
    x = Input((None, None, c) if layout == "NHWC" else (c, None, None), dtype=model.inputs[0].dtype)
    tensors: Dict[int, Any] = {0: x}
    # Tensor id -> (map (H, W, C) a Linear reading it covers, flatten order):
    # the ids past a Flatten or a global pool.
    flat: Dict[int, Tuple[Tuple[int, int, int], str]] = {}
    layers: List[Layer] = []
    converted = 0
    elementwise = (ReLU, Dropout, Activation, Identity)

    def label(k: int, layer: Layer) -> str:
        return f"layer {k} ({layer!r})"

    for k, node in enumerate(model.nodes):
        layer, src = node.layer, node.inputs
        args = [tensors[i] for i in src]
        past = [i for i in src if i in flat]
        if past and len(src) > 1:
            raise ValueError(f"{fn}: {label(k, layer)} combines features past the Flatten")
        if isinstance(layer, Flatten) and not past:
            in_shape = shapes[src[0]]
            if in_shape is None or len(in_shape) != 3:
                raise ValueError(f"{fn}: {label(k, layer)} (Flatten) receives shape {in_shape}, "
                                 f"not a 3-D map")
            flat[node.output] = (_spatial(layout, in_shape), layer.order)
            tensors[node.output] = args[0]  # (no layer: the Linear covers the map)
            continue
        if isinstance(layer, GlobalAvgPool2d) and not past:
            in_shape = shapes[src[0]]
            ph, pw, pc = _spatial(layout, in_shape)
            new = AvgPool2d((ph, pw), stride=1, layout=layout)
            flat[node.output] = ((1, 1, pc), "HWC")
        elif isinstance(layer, Linear):
            if not past:
                raise ValueError(f"{fn}: {label(k, layer)} mixes every spatial position before "
                                 f"any Flatten or global pool; nothing to convert")
            (mh, mw, mc), order = flat[src[0]]
            kernel, bias = fc_to_conv(layer.weight, (mh, mw, mc), layer.bias,
                                      weight_layout=layer.weight_layout, flatten_order=order,
                                      layout=layout)
            new = Conv2d(kernel, bias, activation=layer.activation, layout=layout)
            flat[node.output] = ((1, 1, layer.out_features), "HWC")
            converted += 1
        elif past and isinstance(layer, elementwise):
            new = layer
            flat[node.output] = flat[src[0]]
        elif past and isinstance(layer, Softmax):
            if layer.axis not in (1, -1):
                raise ValueError(f"{fn}: {label(k, layer)} after the Flatten acts on axis "
                                 f"{layer.axis}, not the features")
            new = Softmax(axis=-1 if layout == "NHWC" else 1)
            flat[node.output] = flat[src[0]]
        elif past:
            raise ValueError(f"{fn}: {label(k, layer)} after the Flatten cannot be written as a "
                             f"convolution")
        else:
            new = layer
        layers.append(new)
        tensors[node.output] = new(args if list_input(new, len(args)) else args[0])
    if not converted:
        raise ValueError(f"{fn}: the model has no Flatten or global pool followed by a Linear")
    if isinstance(model, Sequential):
        return Sequential(*layers, layout=layout)
    return Model(x, tensors[model._output_ids[0]], layout=layout)
