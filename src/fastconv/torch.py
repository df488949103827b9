"""fastconv.torch: fastconv as a CPU inference backend for torch models.

``optimize(model)`` (in the manner of ``ipex.optimize``) returns the model
with its ``nn.Conv2d``, ``nn.Linear`` and ``nn.ConvTranspose2d`` (exact
types) replaced by modules that run fastconv's kernels on the tensors'
memory; the rest of the model stays torch. This module is imported only as
``fastconv.torch`` (``import fastconv`` never imports torch).

Layout. A channels_last 4-D tensor is NHWC as it lies in memory: its
``permute(0, 2, 3, 1)`` is a C-contiguous NHWC view, which fastconv reads in
place, and the result is allocated by torch as channels_last and written by
fastconv through that same view (no copies). The optimized model converts
each 4-D input to channels_last once, in a forward pre-hook; every replaced
layer returns channels_last, and torch's own BatchNorm, ReLU, pools and
additions keep it, so no layer converts. The model's 4-D outputs are
returned channels_last (the same values, in channels_last memory:
``.contiguous()`` makes them NCHW-contiguous where that matters).

The kernels are also torch.library custom ops (``fastconv::conv2d``,
``fastconv::linear``, ``fastconv::conv_transpose2d``) with fake
implementations, so an optimized model runs under ``torch.compile`` and
``torch.export``. The ops take the weights as tensors; their packed form is
kept in a cache keyed by the tensors (their ids, while they live) and
checked against each one's data pointer, ``_version``, shape, strides and
dtype, so weights changed in place (``with torch.no_grad():
conv.weight.mul_(2)``, ``load_state_dict``) or given other memory
(``.data =``, ``.to()``) are packed again at the next call. A change made
in place through ``.data`` bypasses the version counter and is not seen (nor
one to a tensor made under ``torch.inference_mode``, which has none):
``clear_cache()`` then makes every weight be packed again.
"""
from __future__ import annotations

import copy
import weakref
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastconv._validate import activation_spec
from fastconv.nn.conv_transpose import ConvTranspose2d as _FcConvTranspose2d
from fastconv.nn.layers import Conv2d as _FcConv2d
from fastconv.nn.layers import Linear as _FcLinear

__all__ = ["optimize", "clear_cache", "Conv2d", "Linear", "ConvTranspose2d", "FoldedBatchNorm2d",
           "SkippingReLU", "SkippingReLU6"]

_FLOATS = (torch.float32, torch.float64)
# Activations a convolution can apply in its store, by the torch module
# that computes them.
_ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6"}
_NO_ACTIVATION = ""

# What the tests count: weight packings, and inputs a replaced layer had to
# convert to channels_last itself (the model's pre-hook converts its inputs
# once; a layer converting is a layout conversion per layer).
_counters = {"packs": 0, "layer_conversions": 0}


# ---------------------------------------------------------------------------
# Packed weights, cached by the tensors that hold them.

# key (the kind of layer, its options and the ids of its tensors) ->
# (weak references to the tensors, what each held when packed, the layer)
_cache: Dict[tuple, tuple] = {}


def _state(t: Tensor) -> tuple:
    """What identifies a tensor's values: its memory, version, shape, strides
    and dtype (an inference tensor has no version counter: -1)."""
    try:
        version = t._version
    except RuntimeError:
        version = -1
    return (t.data_ptr(), version, t.shape, t.stride(), t.dtype)


def _packed(kind: str, tensors: Tuple[Optional[Tensor], ...], options: tuple, make: Any) -> Any:
    """The fastconv layer made by make() from these tensors and options,
    made again when a tensor holds other values than when it was packed: it
    was changed in place (its version), or given other memory (.data =,
    .to(), load_state_dict into a new tensor...). An entry holds weak
    references only and goes when one of its tensors dies, so an id (the
    key) is never that of another tensor."""
    present = tuple(t for t in tensors if t is not None)
    key = (kind, options, tuple(None if t is None else id(t) for t in tensors))
    states = tuple(_state(t) for t in present)
    entry = _cache.get(key)
    if entry is not None and entry[1] == states and all(
            r() is t for r, t in zip(entry[0], present)):
        return entry[2]
    layer = make()
    _counters["packs"] += 1

    def forget(ref: Any, key: tuple = key) -> None:
        current = _cache.get(key)
        if current is not None and any(r is ref for r in current[0]):
            del _cache[key]

    _cache[key] = (tuple(weakref.ref(t, forget) for t in present), states, layer)
    return layer


def clear_cache() -> None:
    """Forget every packed weight, so that each is packed again at its next
    call: for weights changed in a way their version counter does not see
    (in place through ``.data``, or an inference tensor changed in place)."""
    _cache.clear()


def _array(t: Optional[Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().numpy()


def _conv_weights(weight: Tensor, bias: Optional[Tensor], bn: Tuple[Optional[Tensor], ...],
                  bn_eps: float) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The OIHW weight and bias, with a BatchNorm (gamma, beta, mean, var)
    after the convolution folded in (in float64, then the weight's dtype)."""
    w, b = _array(weight), _array(bias)
    gamma, beta, mean, var = bn
    if mean is None:
        return w, b
    scale = 1.0 / np.sqrt(_array(var).astype(np.float64) + bn_eps)
    if gamma is not None:
        scale = scale * _array(gamma)
    shift = -_array(mean).astype(np.float64) * scale
    if b is not None:
        shift = shift + b * scale
    if beta is not None:
        shift = shift + _array(beta)
    return ((w * scale[:, None, None, None]).astype(w.dtype), shift.astype(w.dtype))


def _threads(num_threads: int) -> int:
    # 0: follow torch's setting at each call. fastconv and torch load one
    # libgomp (the same soname: whichever comes first serves both), so
    # their parallel regions share one pool of threads.
    return num_threads if num_threads > 0 else torch.get_num_threads()


def _nhwc(x: Tensor) -> np.ndarray:
    """The NHWC numpy view of a channels_last 4-D tensor (converted first,
    and counted, if it is not channels_last)."""
    if not x.is_contiguous(memory_format=torch.channels_last):
        _counters["layer_conversions"] += 1
        x = x.contiguous(memory_format=torch.channels_last)
    return x.detach().permute(0, 2, 3, 1).numpy()


def _conv_out_hw(h: int, w: int, kernel: Tuple[int, int], stride: List[int],
                 padding: List[int], dilation: List[int]) -> Tuple[int, int]:
    pt, pb, pl, pr = padding
    return ((h + pt + pb - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1,
            (w + pl + pr - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1)


def _transpose_out_hw(h: int, w: int, kernel: Tuple[int, int], stride: List[int],
                      padding: List[int], output_padding: List[int],
                      dilation: List[int]) -> Tuple[int, int]:
    return tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, k, s, p, op, d in zip(
        (h, w), kernel, stride, padding, output_padding, dilation))


def _out(plan: Any, x: Tensor) -> Tensor:
    """The result of a plan as a new channels_last tensor (plan.result is
    its NHWC shape)."""
    n, ho, wo, k = plan.result
    return _channels_last_empty((n, k, ho, wo), x)


def _channels_last_empty(shape: Tuple[int, ...], like: Tensor) -> Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device,
                       memory_format=torch.channels_last)


# ---------------------------------------------------------------------------
# The kernels as functions of tensors (the custom ops' implementations, which
# the modules also call directly in eager mode: the dispatcher's cost per
# call is what a network of 50 convolutions would pay 50 times).

def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], bn_weight: Optional[Tensor],
           bn_bias: Optional[Tensor], bn_mean: Optional[Tensor], bn_var: Optional[Tensor],
           bn_eps: float, stride: List[int], padding: List[int], dilation: List[int],
           groups: int, activation: str, num_threads: int) -> Tensor:
    """A convolution of a 4-D CPU tensor x with torch's OIHW weight (and a
    BatchNorm's affine parameters and statistics after it, folded, where
    bn_mean is given), padding (top, bottom, left, right), activation "" /
    "relu" / "relu6" in the store; the result is channels_last."""
    bn = (bn_weight, bn_bias, bn_mean, bn_var)
    options = (bn_eps, tuple(stride), tuple(padding), tuple(dilation), groups)
    layer = _packed("conv2d", (weight, bias) + bn, options,
                    lambda: _conv_layer(weight, bias, bn, *options))
    xa = _nhwc(x)
    plan = layer._plan(xa.shape, activation or None)  # (checks the shapes)
    out = _out(plan, x)
    layer._weights.execute(plan, xa, out.permute(0, 2, 3, 1).numpy(), _threads(num_threads))
    return out


def _conv_layer(weight, bias, bn, bn_eps, stride, padding, dilation, groups) -> _FcConv2d:
    w, b = _conv_weights(weight, bias, bn, bn_eps)
    pt, pb, pl, pr = padding
    # HWIO, a view of the OIHW array (the packing reads it strided)
    return _FcConv2d(w.transpose(2, 3, 1, 0), b, stride=stride, padding=((pt, pb), (pl, pr)),
                     dilation=dilation, groups=groups)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], activation: str,
           num_threads: int) -> Tensor:
    """x (..., in) @ weight.T (+ bias), torch's (out, in) weight."""
    layer = _packed("linear", (weight, bias), (),
                    lambda: _FcLinear(_array(weight), _array(bias), weight_layout="OI"))
    x2 = x.detach().reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    out = torch.empty(tuple(x.shape[:-1]) + (weight.shape[0],), dtype=x.dtype)
    act = activation_spec("Linear", activation or None)
    layer._weights.run(x2.numpy(), act, out.view(-1, weight.shape[0]).numpy(),
                       _threads(num_threads))
    return out


def conv_transpose2d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                     padding: List[int], output_padding: List[int], dilation: List[int],
                     groups: int, activation: str, num_threads: int) -> Tensor:
    """torch's conv_transpose2d of a 4-D CPU tensor x ((C, K/groups, kh, kw)
    weight); the result is channels_last."""
    stride, padding = list(stride), list(padding)
    output_padding, dilation = list(output_padding), list(dilation)
    layer = _packed("conv_transpose2d", (weight, bias),
                    (tuple(stride), tuple(padding), tuple(output_padding), tuple(dilation),
                     groups),
                    lambda: _FcConvTranspose2d(_array(weight).transpose(2, 3, 1, 0),
                                               _array(bias), stride=tuple(stride),
                                               padding=tuple(padding),
                                               output_padding=tuple(output_padding),
                                               dilation=tuple(dilation), groups=groups))
    xa = _nhwc(x)
    plan = layer._plan(xa.shape, None, activation or None)  # (checks the shapes)
    out = _out(plan, x)
    layer._weights.execute(plan, xa, out.permute(0, 2, 3, 1).numpy(), _threads(num_threads))
    return out


# ---------------------------------------------------------------------------
# The same functions as torch.library custom ops, with fake implementations
# giving the results' shapes and strides, for torch.compile and torch.export.

_conv2d_op = torch.library.custom_op("fastconv::conv2d", conv2d, mutates_args=())
_linear_op = torch.library.custom_op("fastconv::linear", linear, mutates_args=())
_conv_transpose2d_op = torch.library.custom_op("fastconv::conv_transpose2d", conv_transpose2d,
                                               mutates_args=())


@_conv2d_op.register_fake
def _conv2d_fake(x, weight, bias, bn_weight, bn_bias, bn_mean, bn_var, bn_eps, stride, padding,
                 dilation, groups, activation, num_threads):
    ho, wo = _conv_out_hw(x.shape[2], x.shape[3], tuple(weight.shape[2:]), stride, padding,
                          dilation)
    return _channels_last_empty((x.shape[0], weight.shape[0], ho, wo), x)


@_linear_op.register_fake
def _linear_fake(x, weight, bias, activation, num_threads):
    return x.new_empty(tuple(x.shape[:-1]) + (weight.shape[0],))


@_conv_transpose2d_op.register_fake
def _conv_transpose2d_fake(x, weight, bias, stride, padding, output_padding, dilation, groups,
                           activation, num_threads):
    ho, wo = _transpose_out_hw(x.shape[2], x.shape[3], tuple(weight.shape[2:]), stride,
                               padding, output_padding, dilation)
    return _channels_last_empty((x.shape[0], weight.shape[1] * groups, ho, wo), x)


def _eager(x: Tensor) -> bool:
    """Whether a module may call the kernels' function itself rather than
    its op: a plain tensor, not under torch.compile, torch.export or a
    tracing mode (which must see the op to record it)."""
    return (type(x) is Tensor and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and torch._C._len_torch_dispatch_stack() == 0)


# ---------------------------------------------------------------------------
# The modules optimize() puts in the model.

class _InferenceOnly(nn.Module):
    """The checks every replacement makes before it runs."""

    _fastconv_path = ""

    def _check(self, x: Tensor) -> bool:
        """Whether fastconv runs x (else the torch computation does);
        RuntimeError in training mode or on an input that requires grad."""
        if self.training:
            raise RuntimeError(f"fastconv.torch: {self._label()} runs inference only; it is in "
                               f"training mode (call model.eval() on the optimized model, or "
                               f"train the original one)")
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"fastconv.torch: {self._label()} runs inference only; its input "
                               f"requires grad (run it under torch.no_grad() or "
                               f"torch.inference_mode(), or detach the input)")
        w = self.weight
        return (x.dtype in _FLOATS and x.dtype == w.dtype and x.is_cpu and w.is_cpu
                and x.numel() > 0)

    def _run(self, kernel: Any, args: tuple) -> Tensor:
        """kernel(*args), a ValueError of fastconv's (an input the module
        cannot take: a kernel larger than the padded input...) naming the
        module."""
        try:
            return kernel(*args)
        except ValueError as e:
            raise ValueError(f"fastconv.torch: {self._label()}: {e}") from None

    def _label(self) -> str:
        path = repr(self._fastconv_path) if self._fastconv_path else "(the model itself)"
        return f"{type(self).__name__} {path}"


class Conv2d(_InferenceOnly):
    """An nn.Conv2d (zero padding) run by fastconv, with the BatchNorm2d
    that followed it folded in (``folded_bn``, whose module stays in the
    model as a no-op owning its parameters and statistics, so state_dict
    keeps its keys) and an activation ("relu", "relu6") in the store.
    ``weight`` and ``bias`` are the original module's parameters (torch's
    OIHW layout); fastconv packs them (with the BatchNorm folded in) at the
    first call and again after either changes. Inputs that are not 4-D
    float32/float64 CPU tensors of the weight's dtype run torch's conv2d."""

    def __init__(self, conv: nn.Conv2d, folded_bn: Optional["FoldedBatchNorm2d"] = None,
                 activation: str = _NO_ACTIVATION, num_threads: Optional[int] = None) -> None:
        super().__init__()
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "padding_mode"):
            setattr(self, name, getattr(conv, name))
        self.weight, self.bias = conv.weight, conv.bias
        self.training = conv.training
        # (a list, so that the BatchNorm is not a submodule here too: its
        # state stays under its own keys only)
        self._bn = [folded_bn] if folded_bn is not None else []
        self.activation = activation
        self.num_threads = num_threads or 0
        # the ops' arguments, made once (the options are fixed, as in torch)
        self._pads = _resolve_padding(conv)
        self._stride, self._dilation = list(conv.stride), list(conv.dilation)

    def _bn_args(self) -> tuple:
        if not self._bn:
            return None, None, None, None, 0.0
        bn = self._bn[0]
        return bn.weight, bn.bias, bn.running_mean, bn.running_var, float(bn.eps)

    def forward(self, x: Tensor) -> Tensor:
        if not (self._check(x) and x.dim() == 4 and x.shape[1] == self.in_channels):
            return self._torch_forward(x)
        args = (x, self.weight, self.bias) + self._bn_args() + (
            self._stride, self._pads, self._dilation, self.groups, self.activation,
            self.num_threads)
        if not _eager(x):
            return _conv2d_op(*args)
        y = self._run(conv2d, args)
        # for a shared activation module after it (see _Skips); an inference
        # tensor has no version to guard the mark with
        if self.activation and not y.is_inference():
            y._fastconv_activated = (self.activation, y._version)
        return y

    def _torch_forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        if self._bn:
            gamma, beta, mean, var, eps = self._bn_args()
            y = F.batch_norm(y, mean, var, gamma, beta, False, 0.0, eps)
        return _torch_activation(y, self.activation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, "
                f"folded_bn={bool(self._bn)}, activation={self.activation!r}")


class FoldedBatchNorm2d(_InferenceOnly):
    """A BatchNorm2d folded into the convolution before it: a no-op that
    keeps the BatchNorm's parameters and statistics (the same tensors, under
    the same state_dict keys), which the convolution reads at each call."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.num_features, self.eps = bn.num_features, bn.eps
        self.momentum, self.affine = bn.momentum, bn.affine
        self.track_running_stats = bn.track_running_stats
        self.weight, self.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(bn, name))
        self.training = bn.training

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self._check(x)  # raises
        return x

    def _check(self, x: Tensor) -> bool:
        if self.training:
            raise RuntimeError(f"fastconv.torch: {self._label()} (folded into the convolution "
                               f"before it) runs inference only; it is in training mode (call "
                               f"model.eval() on the optimized model)")
        return True


class Linear(_InferenceOnly):
    """An nn.Linear run by fastconv on (..., in_features) inputs; its
    ``weight`` and ``bias`` are the original parameters (torch's (out, in)).
    Inputs that are not float32/float64 CPU tensors of the weight's dtype
    run torch's linear."""

    def __init__(self, linear: nn.Linear, activation: str = _NO_ACTIVATION,
                 num_threads: Optional[int] = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.training = linear.training
        self.activation = activation
        self.num_threads = num_threads or 0

    def forward(self, x: Tensor) -> Tensor:
        if not (self._check(x) and x.dim() >= 1 and x.shape[-1] == self.in_features):
            return _torch_activation(F.linear(x, self.weight, self.bias), self.activation)
        args = (x, self.weight, self.bias, self.activation, self.num_threads)
        return self._run(linear, args) if _eager(x) else _linear_op(*args)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, activation={self.activation!r}")


class ConvTranspose2d(_InferenceOnly):
    """An nn.ConvTranspose2d (zero padding) run by fastconv; ``weight``
    and ``bias`` are the original parameters (torch's (C, K/groups, kh,
    kw)). ``forward(x, output_size=None)`` as torch's. Inputs that are not
    4-D float32/float64 CPU tensors of the weight's dtype run torch's
    conv_transpose2d."""

    def __init__(self, conv: nn.ConvTranspose2d, activation: str = _NO_ACTIVATION,
                 num_threads: Optional[int] = None) -> None:
        super().__init__()
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "output_padding", "dilation", "groups", "padding_mode"):
            setattr(self, name, getattr(conv, name))
        self.weight, self.bias = conv.weight, conv.bias
        self.training = conv.training
        self.activation = activation
        self.num_threads = num_threads or 0

    def forward(self, x: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        output_padding = nn.ConvTranspose2d._output_padding(
            self, x, output_size, list(self.stride), list(self.padding),
            list(self.kernel_size), 2, list(self.dilation))
        if not (self._check(x) and x.dim() == 4 and x.shape[1] == self.in_channels):
            y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                   output_padding, self.groups, self.dilation)
            return _torch_activation(y, self.activation)
        args = (x, self.weight, self.bias, list(self.stride), list(self.padding),
                list(output_padding), list(self.dilation), self.groups, self.activation,
                self.num_threads)
        return (self._run(conv_transpose2d, args) if _eager(x)
                else _conv_transpose2d_op(*args))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}, "
                f"activation={self.activation!r}")


class _Skips:
    """An activation module called in several places, one of which at least
    reads a convolution that applied the activation in its store (and that
    nothing else reads): it passes a tensor so activated, unchanged since
    (its version), through as it is (applying the activation again would
    change nothing but cost a pass over the map), and computes the others.
    Only in eager mode: a compiled model's convolutions mark nothing."""

    _fastconv_activation = ""

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() or type(x) is not Tensor:
            return super().forward(x)
        mark = x.__dict__.get("_fastconv_activated")
        if mark is not None and mark == (self._fastconv_activation, x._version):
            return x
        return super().forward(x)


class SkippingReLU(_Skips, nn.ReLU):
    """nn.ReLU (see _Skips)."""
    _fastconv_activation = "relu"


class SkippingReLU6(_Skips, nn.ReLU6):
    """nn.ReLU6 (see _Skips)."""
    _fastconv_activation = "relu6"


_SKIPPING = {nn.ReLU: SkippingReLU, nn.ReLU6: SkippingReLU6}


def _torch_activation(y: Tensor, activation: str) -> Tensor:
    if activation == "relu":
        return F.relu(y)
    if activation == "relu6":
        return F.relu6(y)
    return y


def _resolve_padding(conv: nn.Conv2d) -> List[int]:
    """torch's padding as (top, bottom, left, right). "same" puts the odd
    pixel at the bottom/right, as torch does."""
    if conv.padding == "valid":
        return [0, 0, 0, 0]
    if conv.padding == "same":
        pads = []
        for d, k in zip(conv.dilation, conv.kernel_size):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads
    ph, pw = conv.padding
    return [ph, ph, pw, pw]


# ---------------------------------------------------------------------------
# optimize

def _to_channels_last(module: nn.Module, args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """The model's forward pre-hook: its 4-D float CPU inputs as
    channels_last, the one layout conversion of an NCHW input."""
    def convert(v: Any) -> Any:
        if (isinstance(v, Tensor) and v.dim() == 4 and v.dtype in _FLOATS
                and v.device.type == "cpu"
                and not v.is_contiguous(memory_format=torch.channels_last)):
            return v.contiguous(memory_format=torch.channels_last)
        return v

    return tuple(convert(a) for a in args), {k: convert(v) for k, v in kwargs.items()}


def _fusions(model: nn.Module) -> Tuple[Dict[str, str], Dict[str, str], set]:
    """What to fuse: {conv path: its BatchNorm's path}, {conv path: the
    activation in its store}, the paths of the activation modules that the
    fusion makes no-ops, and those of the activation modules called
    elsewhere too, which become Skipping ones (see _Skips).

    With torch.fx (when the model traces): a BatchNorm2d (with running
    statistics) folds into a Conv2d whose output only it reads, and a
    ReLU/ReLU6 that alone reads the result goes into the store; each module
    must be called once in the graph. An activation module called elsewhere
    too skips what the convolution activated; a functional relu stays
    (applying it again changes nothing).
    Otherwise, the same within each nn.Sequential, by the order of its
    children, for modules that appear once in the model."""
    counts: Dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    bns: Dict[str, str] = {}
    acts: Dict[str, str] = {}
    dropped: set = set()
    shared: set = set()

    def is_bn(m: Any, conv: nn.Conv2d) -> bool:
        return (type(m) is nn.BatchNorm2d and m.running_mean is not None
                and m.num_features == conv.out_channels)

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any model fx cannot trace takes the other way
        graph = None
    if graph is not None:
        modules = dict(model.named_modules())
        calls: Dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1

        def module(node: Any) -> Any:
            if node.op == "call_module" and calls[node.target] == 1:
                return modules[node.target]
            return None

        def only_user(node: Any) -> Any:
            users = list(node.users)
            return users[0] if len(users) == 1 else None

        for node in graph.nodes:
            conv = module(node)
            if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or len(node.args) != 1:
                continue
            last, user = node, only_user(node)
            if user is not None and is_bn(module(user), conv) and len(user.args) == 1:
                bns[node.target] = user.target
                last, user = user, only_user(user)
            if user is None or user.args[:1] != (last,) or len(user.args) != 1:
                continue
            if user.op == "call_module" and type(modules[user.target]) in _ACTIVATIONS:
                acts[node.target] = _ACTIVATIONS[type(modules[user.target])]
                (dropped if calls[user.target] == 1 else shared).add(user.target)
            elif ((user.op == "call_function" and user.target in (F.relu, torch.relu))
                  or (user.op == "call_method" and user.target == "relu")):
                acts[node.target] = "relu"
        return bns, acts, dropped, shared
    for path, seq in model.named_modules():
        if type(seq) is not nn.Sequential:
            continue
        children = list(seq.named_children())
        for i, (name, conv) in enumerate(children):
            if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or counts[id(conv)] != 1:
                continue
            conv_path = f"{path}.{name}" if path else name
            j = i + 1
            if (j < len(children) and is_bn(children[j][1], conv)
                    and counts[id(children[j][1])] == 1):
                bns[conv_path] = f"{path}.{children[j][0]}" if path else children[j][0]
                j += 1
            if j < len(children) and type(children[j][1]) in _ACTIVATIONS \
                    and counts[id(children[j][1])] == 1:
                acts[conv_path] = _ACTIVATIONS[type(children[j][1])]
                dropped.add(f"{path}.{children[j][0]}" if path else children[j][0])
    return bns, acts, dropped, shared



def optimize(model: nn.Module, inplace: bool = False, *,
             num_threads: Optional[int] = None) -> nn.Module:
    """The model with fastconv running its convolutions and dense layers, for
    CPU inference.

    Modules of the exact types nn.Conv2d (zero padding; other padding modes
    stay torch's), nn.Linear and nn.ConvTranspose2d (zero padding) become
    fastconv.torch.Conv2d, Linear and ConvTranspose2d, which hold the same
    parameters. A BatchNorm2d that only a convolution's output feeds is
    folded into it (it stays in the model as FoldedBatchNorm2d, a no-op that
    owns its parameters and statistics: state_dict() keeps every key, shape
    and layout) and a ReLU or ReLU6 that alone reads the result is applied in
    the convolution's store (see _fusions for when). The model's 4-D inputs
    are converted to channels_last once (a forward pre-hook) and its 4-D
    outputs come back channels_last; see the module docstring.

    Inference only: a replaced module called in training mode, or on an
    input that requires grad while grad is enabled, raises RuntimeError (put
    the model in eval mode and run it under torch.no_grad() or
    torch.inference_mode()). Inputs of another dtype than float32/float64,
    another dtype than the weights', or on another device than the CPU run
    the torch computation of the module replaced.

    Parameters
    ----------
    model : torch.nn.Module
    inplace : bool
        False (the default): optimize a deep copy, leaving `model` as it
        was; True: replace the modules in `model` itself (returned; a model
        that is itself a convolution or dense layer is replaced, so use the
        module returned).
    num_threads : int, optional
        fastconv's threads; by default torch.get_num_threads() at each call.
        fastconv and torch share one OpenMP runtime (see _threads), so the
        two never run more threads than that together.

    Returns
    -------
    torch.nn.Module
    """
    fn = "fastconv.torch.optimize"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"{fn}: inplace must be a bool; got {type(inplace).__name__}")
    if num_threads is not None and (isinstance(num_threads, bool)
                                    or not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"{fn}: num_threads must be None or an int >= 1; got {num_threads!r}")
    if not inplace:
        model = copy.deepcopy(model)
    bns, acts, dropped, shared = _fusions(model)
    modules = dict(model.named_modules(remove_duplicate=False))
    replaced: Dict[int, nn.Module] = {}  # a module shared between paths: one replacement
    folded: Dict[str, FoldedBatchNorm2d] = {}
    for path, bn_path in bns.items():
        folded[bn_path] = FoldedBatchNorm2d(modules[bn_path])
        folded[bn_path]._fastconv_path = bn_path

    def replacement(path: str, m: nn.Module) -> Optional[nn.Module]:
        if path in folded:
            return folded[path]
        if path in dropped:
            return nn.Identity()
        if path in shared:
            new = _SKIPPING[type(m)](inplace=m.inplace)
            new._fastconv_path = path
            return new
        if id(m) in replaced:
            return replaced[id(m)]
        new: Optional[nn.Module] = None
        if type(m) is nn.Conv2d and m.padding_mode == "zeros":
            bn = folded.get(bns[path]) if path in bns else None
            new = Conv2d(m, bn, acts.get(path, _NO_ACTIVATION), num_threads)
        elif type(m) is nn.Linear:
            new = Linear(m, num_threads=num_threads)
        elif type(m) is nn.ConvTranspose2d and m.padding_mode == "zeros":
            new = ConvTranspose2d(m, num_threads=num_threads)
        if new is not None:
            new._fastconv_path = path
            replaced[id(m)] = new
        return new

    for path, m in modules.items():
        if not path:
            continue
        new = replacement(path, m)
        if new is not None:
            parent, _, name = path.rpartition(".")
            setattr(modules[parent] if parent else model, name, new)
    root = replacement("", model)
    if root is not None:
        model = root
    if not getattr(model, "_fastconv_hooked", False):
        model.register_forward_pre_hook(_to_channels_last, with_kwargs=True)
        model._fastconv_hooked = True
    return model
