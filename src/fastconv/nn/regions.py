"""Exact inference over a region of a model's output: what tiled inference
(nn.predict_tiled) runs in each tile.

An output pixel of a fully convolutional model depends on a window of its
input (its receptive field); a rectangle of the output, on a rectangle of
the input. RegionPlan walks the model's steps backwards from an output
rectangle to the rectangle of every tensor it needs, clipped to that
tensor's extent in the whole-image pass, then runs the steps forwards over
those rectangles alone. Each step is told where its rectangle lies in the
whole map, and zero padding (or a pool's clipping, or a resize's source
indices) appears only at the whole map's true border, so a region of the
output is computed from the same values, by the same operations, as in the
whole-image pass:

- a convolution runs on its input rectangle with the padding of the sides
  where that rectangle meets the map's border (none elsewhere), by the
  algorithm the whole-image pass runs (Winograd's output tiles aligned to
  the whole map's: a Winograd layer computes whole tiles of its map);
- a transposed convolution, from the input rows that reach the rectangle,
  cropped by padding to exactly it;
- a pool, with the whole map's geometry (its padding, ceil_mode and
  average divisors counted against the whole map, _core.pool's region);
- Upsample, with the whole map's source indices and weights;
- ZeroPad2d and Cropping2d shift the rectangle (zeros where it leaves the
  input); element-wise layers (activations, BatchNorm2d, PReLU, Add,
  Multiply, Concatenate and Softmax along the channels) keep it.

The result is bitwise the whole-image pass's wherever each kernel computes
an output the same way wherever it lies (tests/test_regions.py). A layer
whose output depends on the whole map (a global pool, a Linear over
flattened maps, a Softmax over space, the generic tensor layers of an
imported ONNX graph) cannot be run by region: RegionPlan refuses it,
naming it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fastconv._config import resolve_threads
from fastconv._transpose import transposed_geometry
from fastconv._validate import padding_amounts
from fastconv.nn.activations import Activation
from fastconv.nn.conv_transpose import ConvTranspose2d
from fastconv.nn.layers import (Conv2d, Dropout, Layer, ReLU, Softmax, _Pool2d, _spatial,
                                list_input)
from fastconv.nn.model import Model, _Fused
from fastconv.nn.normalization import BatchNorm2d, PReLU
from fastconv.nn.resize import Upsample
from fastconv.nn.structural import Add, Concatenate, Cropping2d, Identity, Multiply, ZeroPad2d
from fastconv.nn.symbolic import layer_label

__all__ = ["RegionPlan", "Region", "Span"]

Span = Tuple[int, int]        # [start, stop) along one axis of a tensor, in its own pixels
Region = Tuple[Span, Span]    # (rows, columns)

# The output tile of each Winograd algorithm: a Winograd layer computes whole
# tiles of its map, aligned as in the whole-image pass, so that each output is
# computed from the same tile of inputs.
_WINOGRAD_TILE = {"winograd-f2x2-3x3": 2, "winograd-f4x4-3x3": 4}


def _clip(span: Span, n: int) -> Span:
    return max(span[0], 0), min(span[1], n)


def _empty(region: Region) -> bool:
    return any(b <= a for a, b in region)


class _Rule:
    """How one step maps regions: `needs` gives, for an output region (in
    the step's output map), the region each input must cover (None: not
    read), before clipping to the input's extent; `expand` the region the
    step computes to give that one; `run` computes the output region from
    the inputs over the regions they cover (`have`, clipped)."""

    def __init__(self, layer: Layer, in_shapes: List[tuple], out_shape: tuple,
                 layout: str) -> None:
        self.layer, self.layout = layer, layout
        self.in_hw = [_spatial(layout, s)[:2] for s in in_shapes]
        self.out_hw = _spatial(layout, out_shape)[:2]

    def expand(self, out: Region) -> Region:
        return out

    def needs(self, out: Region) -> List[Optional[Region]]:
        return [out] * len(self.in_hw)

    def run(self, args: List[np.ndarray], have: List[Region], out: Region,
            nthreads: int) -> np.ndarray:
        layer = self.layer
        return layer.forward(args if list_input(layer, len(args)) else args[0],
                             num_threads=nthreads)


class _ConvRule(_Rule):
    """Conv2d and ConvTranspose2d, alone or with what a Model fused into
    them (_Fused: activation, residual)."""

    def __init__(self, layer: Layer, in_shapes: List[tuple], out_shape: tuple,
                 layout: str) -> None:
        super().__init__(layer, in_shapes, out_shape, layout)
        fused = isinstance(layer, _Fused)
        conv = layer.layer if fused else layer
        self.conv, self.weights = conv, conv._weights
        self.activation = (layer.activation if fused and layer.activation is not None
                           else conv.activation)
        self.residual = fused and layer.residual
        self.transposed = isinstance(conv, ConvTranspose2d)
        # inputs: x, then like (a ConvTranspose2d taking its size from a map), then residual
        self.reads_like = len(in_shapes) - int(self.residual) == 2
        fn = type(conv).__name__
        (h, w), (ho, wo) = self.in_hw[0], self.out_hw
        k, s, d = conv.kernel_size, conv.stride, conv.dilation
        shape = (1,) + tuple(in_shapes[0])
        if self.transposed:
            (pt, pl), _ = transposed_geometry(fn, (h, w), k, s, d, conv.padding, 0, (ho, wo))
            plan = self.weights.plan(shape, conv.padding, self.activation, output_size=(ho, wo))
        else:
            (pt, _), (pl, _) = padding_amounts(fn, conv.padding, (h, w), k, s, d)
            plan = self.weights.plan(shape, conv.padding, self.activation)
        # (kernel, stride, dilation, the whole map's top/left padding, input and output extents)
        self.axes = [(k[0], s[0], d[0], pt, h, ho), (k[1], s[1], d[1], pl, w, wo)]
        self.algorithm = plan.algorithm  # the whole-image pass's, which every region runs

    def expand(self, out: Region) -> Region:
        t = _WINOGRAD_TILE.get(self.algorithm)
        if t is None:
            return out
        return tuple((a // t * t, min(-(-b // t) * t, n))  # type: ignore[return-value]
                     for (a, b), n in zip(out, self.out_hw))

    def _input_span(self, span: Span, axis: int) -> Span:
        k, s, d, p, n, _ = self.axes[axis]
        o0, o1 = span
        if not self.transposed:
            return o0 * s - p, (o1 - 1) * s - p + (k - 1) * d + 1
        # the input rows whose kernel reaches rows o0 .. o1 - 1 (i * s + j * d - p = o),
        # from one at or above o0 (so that padding crops the local output to o0)
        i0 = max(0, min((o0 + p) // s, -(-(o0 + p - (k - 1) * d) // s)))
        i1 = min(n, (o1 - 1 + p) // s + 1)
        return i0, max(i1, i0 + 1)

    def needs(self, out: Region) -> List[Optional[Region]]:
        x = (self._input_span(out[0], 0), self._input_span(out[1], 1))
        result: List[Optional[Region]] = [x]
        if self.reads_like:
            result.append(None)  # (only its size was read, in the whole map's geometry)
        if self.residual:
            result.append(out)
        return result

    def run(self, args: List[np.ndarray], have: List[Region], out: Region,
            nthreads: int) -> np.ndarray:
        x = args[0]
        residual = args[-1] if self.residual else None
        if not self.transposed:
            # padding where the needed input lies beyond the map, none elsewhere
            pads = tuple((a - u0, u1 - b) for (a, b), (u0, u1) in zip(have[0], self.needs(out)[0]))
            plan = self.weights.plan(x.shape, pads, self.activation, algorithm=self.algorithm)
        else:
            pads, extra = [], []
            for axis, ((i0, i1), (o0, o1)) in enumerate(zip(have[0], out)):
                k, s, d, p, _, _ = self.axes[axis]
                top = o0 + p - i0 * s
                end = i0 * s - p + (i1 - i0 - 1) * s + (k - 1) * d + 1
                pads.append((top, max(0, end - o1)))
                extra.append(max(0, o1 - end))
            plan = self.weights.plan(x.shape, tuple(pads), self.activation,
                                     algorithm=self.algorithm, output_padding=tuple(extra))
        return self.weights.execute(plan, x, None, nthreads, residual)


class _PoolRule(_Rule):
    def needs(self, out: Region) -> List[Optional[Region]]:
        pool = self.layer
        return [tuple((o0 * s - p, (o1 - 1) * s - p + k)  # type: ignore[misc]
                      for (o0, o1), k, s, p in zip(out, pool.kernel_size, pool.stride,
                                                   pool.padding))]

    def run(self, args: List[np.ndarray], have: List[Region], out: Region,
            nthreads: int) -> np.ndarray:
        region = (self.in_hw[0], (have[0][0][0], have[0][1][0]), (out[0][0], out[1][0]),
                  (out[0][1] - out[0][0], out[1][1] - out[1][0]))
        return self.layer._forward_region(args[0], nthreads, region)


class _UpsampleRule(_Rule):
    def __init__(self, layer: Layer, in_shapes: List[tuple], out_shape: tuple,
                 layout: str, dtype: np.dtype) -> None:
        super().__init__(layer, in_shapes, out_shape, layout)
        self.plans = layer.axis_plans(*self.in_hw[0], dtype)

    def needs(self, out: Region) -> List[Optional[Region]]:
        spans = []
        for (o0, o1), plan in zip(out, self.plans):
            lo = min(int(p[o0:o1].min()) for p in plan[:2])
            hi = max(int(p[o0:o1].max()) for p in plan[:2]) + 1
            spans.append((lo, hi))
        return [tuple(spans)]  # type: ignore[list-item]

    def run(self, args: List[np.ndarray], have: List[Region], out: Region,
            nthreads: int) -> np.ndarray:
        plans = []
        for (o0, o1), (a, _), plan in zip(out, have[0], self.plans):
            index = tuple(p[o0:o1] - a for p in plan[:2])
            plans.append(index + tuple(p[o0:o1] for p in plan[2:]))
        (ha, hb), (wa, wb) = have[0]
        return self.layer._resize(args[0], tuple(plans), hb - ha, wb - wa)


class _ShiftRule(_Rule):
    """ZeroPad2d (zeros where the region leaves the input) and Cropping2d."""

    def needs(self, out: Region) -> List[Optional[Region]]:
        layer = self.layer
        sign = -1 if isinstance(layer, ZeroPad2d) else 1
        return [((out[0][0] + sign * layer.top, out[0][1] + sign * layer.top),
                 (out[1][0] + sign * layer.left, out[1][1] + sign * layer.left))]

    def run(self, args: List[np.ndarray], have: List[Region], out: Region,
            nthreads: int) -> np.ndarray:
        x = args[0]
        (u, v) = self.needs(out)[0]
        pads = [(0, 0)] * 4
        hax = 1 if self.layout == "NHWC" else 2
        pads[hax] = (have[0][0][0] - u[0], u[1] - have[0][0][1])
        pads[hax + 1] = (have[0][1][0] - v[0], v[1] - have[0][1][1])
        return np.pad(x, pads) if any(p != (0, 0) for p in pads) else x


_POINTWISE = (Activation, ReLU, BatchNorm2d, PReLU, Dropout, Identity, Add, Multiply)


def _rule(layer: Layer, in_shapes: List[tuple], out_shape: tuple, layout: str,
          dtype: np.dtype, label: str) -> _Rule:
    """The rule of a step, or a ValueError saying why its layer cannot run
    by region."""
    inner = layer.layer if isinstance(layer, _Fused) else layer
    if isinstance(inner, (Conv2d, ConvTranspose2d)):
        return _ConvRule(layer, in_shapes, out_shape, layout)
    if isinstance(inner, _Pool2d):
        return _PoolRule(layer, in_shapes, out_shape, layout)
    if isinstance(inner, Upsample):
        return _UpsampleRule(layer, in_shapes, out_shape, layout, dtype)
    if isinstance(inner, (ZeroPad2d, Cropping2d)):
        return _ShiftRule(layer, in_shapes, out_shape, layout)
    channel = 3 if layout == "NHWC" else 1
    if isinstance(inner, _POINTWISE) and not isinstance(layer, _Fused):
        return _Rule(layer, in_shapes, out_shape, layout)
    if isinstance(inner, Concatenate) and inner._axis(4) % 4 == channel:
        return _Rule(layer, in_shapes, out_shape, layout)
    if isinstance(inner, Softmax) and inner.axis % 4 == channel:
        return _Rule(layer, in_shapes, out_shape, layout)
    why = {"GlobalAvgPool2d": "averages the whole map",
           "Flatten": "flattens the whole map (convert the classifier with "
                      "nn.to_fully_convolutional first)",
           "Linear": "reads the whole map (convert the classifier with "
                     "nn.to_fully_convolutional first)",
           "Softmax": "normalises across the map's height or width",
           "Concatenate": "joins maps along a spatial axis"}.get(
        type(inner).__name__, "is not known to compute each output from a window of its input")
    raise ValueError(f"{label}: layer {layer_label(inner)} {why}, so "
                     f"the model cannot be run tile by tile exactly")


class _Step:
    __slots__ = ("rule", "inputs", "output")

    def __init__(self, rule: _Rule, inputs: Tuple[int, ...], output: int) -> None:
        self.rule, self.inputs, self.output = rule, inputs, output


class RegionPlan:
    """A model, one input map shape (no batch axis), and what computing a
    region of its output takes (see the module's docstring).

    Parameters
    ----------
    model : nn.Model or nn.Sequential, one input and one output
    input_shape : (H, W, C) or (C, H, W) by the model's layout
    label : str, the name errors begin with
    """

    def __init__(self, model: Model, input_shape: Sequence[int],
                 label: str = "RegionPlan") -> None:
        if not isinstance(model, Model):
            raise TypeError(f"{label}: model must be an nn.Model or nn.Sequential; got "
                            f"{type(model).__name__}")
        model._current()
        if len(model._inputs) != 1 or len(model._output_ids) != 1:
            raise ValueError(f"{label}: the model must have one input and one output; it has "
                             f"{len(model._inputs)} and {len(model._output_ids)}")
        self.label, self.layout = label, model.layout
        self.input_shape = tuple(int(d) for d in input_shape)
        try:
            model._given_shapes(self.input_shape)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{label}: the model cannot take an input of shape "
                             f"{self.input_shape}: {exc}") from None
        self.dtype = model._dtype()
        self.shapes: Dict[int, tuple] = {0: self.input_shape}
        self.steps: List[_Step] = []
        self._next = 1
        self.output = self._flatten(model, [0], [self.input_shape])
        self.output_shape = self.shapes[self.output]
        # the last step reading each tensor (freed after it)
        self._last = {i: k for k, step in enumerate(self.steps) for i in step.inputs}

    def _flatten(self, model: Model, inputs: List[int], shapes: List[tuple]) -> int:
        """Append model's steps (nested models' steps inlined) reading the
        tensors `inputs`; return the id of its output."""
        try:
            known = model._propagate(shapes)
        except ValueError as exc:
            raise ValueError(f"{self.label}: the model cannot take an input of shape "
                             f"{self.input_shape}: {exc}") from None
        ids = dict(enumerate(inputs))
        for step in model._steps:
            args = [ids[i] for i in step.inputs]
            arg_shapes = [self.shapes[i] for i in args]
            if isinstance(step.layer, Model):
                ids[step.output] = self._flatten(step.layer, args, arg_shapes)
                continue
            out_shape = tuple(known[step.output])
            rule = _rule(step.layer, arg_shapes, out_shape, self.layout, self.dtype, self.label)
            if len(out_shape) != 3 or any(len(s) != 3 for s in arg_shapes):
                raise ValueError(f"{self.label}: layer {layer_label(step.layer)} reads or "
                                 f"makes a tensor that is not a map, so the model cannot be "
                                 f"run tile by tile")
            ids[step.output] = self._next
            self.shapes[self._next] = out_shape
            self.steps.append(_Step(rule, tuple(args), self._next))
            self._next += 1
        return ids[model._output_ids[0]]

    def _hw(self, tensor: int) -> Tuple[int, int]:
        return _spatial(self.layout, self.shapes[tensor])[:2]

    def regions(self, out: Region) -> Dict[int, Region]:
        """The region of every tensor computing the output region `out`
        takes (clipped to each tensor's extent; the input's is id 0)."""
        need: Dict[int, Region] = {self.output: tuple(_clip(s, n) for s, n in  # type: ignore
                                                      zip(out, self._hw(self.output)))}
        for step in reversed(self.steps):
            region = need.get(step.output)
            if region is None:
                continue
            region = tuple(_clip(s, n) for s, n in  # type: ignore[assignment]
                           zip(step.rule.expand(region), self._hw(step.output)))
            need[step.output] = region
            for i, want in zip(step.inputs, step.rule.needs(region)):
                if want is None:
                    continue
                want = tuple(_clip(s, n) for s, n in zip(want, self._hw(i)))  # type: ignore
                if _empty(want):
                    continue  # (run gives zeros)
                old = need.get(i)
                need[i] = want if old is None else tuple(  # type: ignore[assignment]
                    (min(a[0], b[0]), max(a[1], b[1])) for a, b in zip(old, want))
        return need

    def input_region(self, out: Region) -> Region:
        """The input window the output region `out` reads (empty where it
        reads none: a padding layer's output beyond its input)."""
        return self.regions(out).get(0, ((0, 0), (0, 0)))

    def run(self, x: np.ndarray, out: Region, num_threads: Optional[int] = None,
            have: Optional[Region] = None) -> np.ndarray:
        """The output region `out` (a map in the model's layout, no batch
        axis) from x, the input over `have` (by default input_region(out);
        a larger window is cropped), in the model's dtype."""
        nthreads = resolve_threads(self.label, num_threads)
        need = self.regions(out)
        have = need.get(0, ((0, 0), (0, 0))) if have is None else have
        # (aligned: a window unpickled in another process need not be, and
        # the kernels read aligned arrays)
        xa = np.require(np.asarray(x, self.dtype), requirements=["A"])
        values: Dict[int, Tuple[np.ndarray, Region]] = {0: (xa[None], have)}
        for k, step in enumerate(self.steps):
            region = need.get(step.output)
            if region is None:
                continue
            args, got = [], []
            for i, want in zip(step.inputs, step.rule.needs(region)):
                if want is None:  # (a map whose size alone was read)
                    args.append(None)
                    got.append(None)
                    continue
                want = tuple(_clip(s, n) for s, n in zip(want, self._hw(i)))
                if _empty(want):
                    args.append(self._zeros(i, want))
                else:
                    a, where = values[i]
                    args.append(self._crop(a, where, want))
                got.append(want)
            y = step.rule.run(args, got, region, nthreads)
            values[step.output] = (y, region)
            for i in set(step.inputs):
                if self._last.get(i) == k and i != self.output:
                    values.pop(i, None)
        y, where = values[self.output]
        return self._crop(y, where, tuple(_clip(s, n) for s, n in  # type: ignore[arg-type]
                                          zip(out, self._hw(self.output))))[0]

    def _crop(self, a: np.ndarray, where: Region, want: Region) -> np.ndarray:
        """The part `want` of a (batched, in layout) covering `where`."""
        if want == where:
            return a
        (r0, r1), (c0, c1) = ((w[0] - h[0], w[1] - h[0]) for w, h in zip(want, where))
        hax = 1 if self.layout == "NHWC" else 2
        if r0 < 0 or c0 < 0 or r1 > a.shape[hax] or c1 > a.shape[hax + 1]:
            raise AssertionError(f"internal: region {want} outside the computed {where}")
        return a[:, r0:r1, c0:c1] if hax == 1 else a[:, :, r0:r1, c0:c1]

    def _zeros(self, tensor: int, region: Region) -> np.ndarray:
        """An input of the tensor over an empty region (a padding's whole
        output beyond its input)."""
        (r0, r1), (c0, c1) = region
        _, _, c = _spatial(self.layout, self.shapes[tensor])
        hw = (max(r1 - r0, 0), max(c1 - c0, 0))
        return np.zeros((1,) + (hw + (c,) if self.layout == "NHWC" else (c,) + hw), self.dtype)
