"""`python -m fastconv bench`: fastconv against NumPy and PyTorch, layer by layer.

The layers are those of fastconv._shapes (VGG16, ResNet-50, MobileNetV2's
depthwise layers, VGG's classifier as convolutions, and ResNet-50's 1x1 GEMMs).
The "fcn" suite times a whole network instead: VGG16 converted with
fastconv.nn.to_fully_convolutional, on 224x224 and 384x384 inputs, against
the same network in torch (full runs and --suite fcn; not in --quick).
The "networks" suite (full runs and --suite networks; not in --quick) times
ResNet-50, MobileNetV2, VGG16 and a U-Net, built in torch with random weights
(fastconv._torch_networks), at batch 1 in float32: torch eager in both
layouts, the model after fastconv.torch.optimize, fastconv through
nn.from_torch and through nn.from_onnx of its ONNX export, onnxruntime and
OpenVINO (each "-" with the reason where unavailable); see bench_networks().
For every layer and thread count, the contenders are timed interleaved
(fastconv, numpy, torch, torch_cl, fastconv, ...) after a warm-up, and the
medians are compared, so that the noise of a shared machine hits all alike:

- fastconv: fastconv.matmul (its b kept, packed, from the second call on:
  see fastconv.set_weight_cache), or a fastconv.Conv2d layer (weights
  packed once) in NHWC with HWIO weights; with --function, fastconv.conv2d
  and conv_transpose2d, the functions most NumPy users call, on the same
  arrays (the warm-up's second call keeps their weights: the timed calls
  are a loop's steady state, not first calls);
- numpy: numpy.matmul for GEMMs and 1x1 stride-1 layers ("matmul"),
  im2col + numpy.matmul for the other convolutions ("im2col"), and a sum of
  k*k shifted slices times the weights for depthwise layers ("taps"); its BLAS
  is limited to the same thread count with threadpoolctl;
- torch / torch_cl: torch.matmul, or torch.nn.functional.conv2d on contiguous
  NCHW tensors (torch) and on channels_last ones (torch_cl), under
  torch.no_grad() with torch.set_num_threads(threads); "-" where torch is not
  installed.

GFLOP/s = 2 * N*Ho*Wo * K * kh*kw * C/groups / time: the direct
convolution's operations, whatever algorithm ran, so that every contender is
measured by the same work. fastconv's rows also name the algorithm its
operator ran ("alg": igemm, gemm, gemm-in-place, dense, winograd-f2x2-3x3, winograd-f4x4-3x3,
depthwise) and the rate of the operations it executed ("exec": Winograd
executes 16 multiply-adds per 2x2 tile and channel pair where the direct
convolution does 36, so its GFLOP/s can exceed the machine's peak while its
exec rate cannot). "% of peak" compares that executed rate with the peak of
a register-only FMA loop on the active ISA (fastconv._core.fma_probe) at the
same thread count. Weight GB/s = the bytes
of the weights / time, the figure that matters for the FC layers at batch 1;
it is compared with the memory read bandwidth measured by numpy.dot(v, v) over
a vector much larger than the caches.

Every row also shows fastconv's accuracy, "err" = max |y - ref| / max |ref|
of its output against REFERENCE, the layer computed by NumPy in float64 on
the same operands (what Winograd trades shows there), and "flt", the minor
page faults of the process per fastconv call in steady state (getrusage,
over FAULT_CALLS calls after the timing, outside it).

--peers adds onnxruntime and OpenVINO (PEER_LABELS) to the per-layer suites
(float32 only): each layer alone as a one-node ONNX graph (layer_onnx: Conv /
ConvTranspose in NCHW, MatMul for a GEMM, the weights as an initializer), on
the same input, writing into a preallocated output, timed interleaved with
the other contenders with a settle() before every sample (onnxruntime's
workers spin after a call as shipped: that pause keeps them off the next
contender's core). A peer that fails or whose output differs from the
reference by more than PEER_TOLERANCE is not timed; a peer not installed has
no column, and the header says so. LiteRT is not a peer (see PEERS).

--json FILE writes one object with the keys:
  machine        {cpu, cpus, platform, busy_pct (the CPUs' use by other
                 processes just before the run, or null)}
  isa            the instruction set fastconv's kernels run
  versions       {fastconv, python, numpy, torch, torch_cpu_capability, blas}
  config         fastconv.config()
  blas           numpy's BLAS libraries as threadpoolctl reports them
  openblas_env   OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE where set
  settings       {suite, suites, threads, dtype, quick, reps, min_time, peers (--peers),
                 function (--function), reference (what max_rel_err compares with), fault_calls}
  peers          with --peers: {peer: {version (null: not installed), settings}}
  peak_gflops    {threads: GFLOP/s of the FMA probe}
  memory_bandwidth {method, gbps: {threads: GB/s}}
  results        one object per layer and thread count: suite, layer, shape,
                 count, threads, dtype, flops (the direct convolution's),
                 algorithm (fastconv's), executed_flops (fastconv's),
                 weight_bytes, numpy_method, seconds / gflops / weight_gbps
                 {contender: value or null}, gflops_executed (fastconv's),
                 pct_peak (of gflops_executed), pct_bandwidth,
                 others_busy_pct (the CPUs' use by
                 other processes while the row was timed, or null),
                 speedup {numpy, torch, torch_cl, [onnxruntime, openvino,]
                 torch_best, peer_best} (= their time / fastconv's), peer_best
                 (the fastest peer timed, or null), max_rel_err {contender}
                 (against the reference), minor_faults_per_call (fastconv's),
                 unavailable {peer: why it was not timed}
  fcn            (the "fcn" suite, in full runs) one object per input size and
                 thread count: layer, shape, threads, dtype, seconds {fastconv,
                 torch, torch_cl}, speedup_torch_best, max_rel_diff_vs_torch
                 (fastconv's scores against torch's, relative to the largest)
  networks       (the "networks" suite, in full runs; float32 whatever --dtype)
                 one object per network and thread count: suite, network,
                 input, output (shapes), threads, dtype, macs (of the
                 convolutions and dense layers), reps, onnx_exporter,
                 seconds {contender: median or null} for the contenders
                 torch, torch_cl, optimize, from_torch, from_onnx,
                 onnxruntime, openvino; torch_best (the faster torch
                 layout's), gflops {contender}, speedup {from_torch,
                 from_onnx, optimize: {onnxruntime, torch_best}} (= their time
                 / the variant's), max_rel_diff_vs_torch64 {contender}
                 (max |output - torch float64's| / max |torch float64's|),
                 unavailable {contender: why} for the null ones,
                 others_busy_pct
  summary        one object per suite and thread count: suite, threads,
                 layers, layers_in_suite (both with multiplicity), flops,
                 executed_flops, seconds {contender: total or null}, gflops,
                 gflops_executed, pct_peak (of gflops_executed),
                 speedup {contender, peer_best}, peer_best (the peer of the
                 smallest total)
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import ExitStack, contextmanager
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

import fastconv
from fastconv import _conv, _core, _shapes, nn
from fastconv._shapes import Conv, Deconv, Gemm, Layer

CONTENDERS = ("fastconv", "numpy", "torch", "torch_cl")
LABELS = {"fastconv": "fastconv", "numpy": "numpy", "torch": "torch NCHW",
          "torch_cl": "torch channels_last"}
# After each sample at more than one thread, wait until this process's other
# threads have used under SETTLE_BUSY of a core over SETTLE_STEP seconds, for
# at most SETTLE_LIMIT seconds (see settle()).
SETTLE_STEP, SETTLE_BUSY, SETTLE_LIMIT = 0.01, 0.05, 1.0
# (repetitions, minimum seconds per timed sample) for --quick and for full runs.
TIMING = {True: (5, 0.02), False: (9, 0.05)}
PROBE_SECONDS = 0.2        # length of one FMA-probe call
BANDWIDTH_BYTES = 1 << 28  # the vector read by the bandwidth measurement
BUSY_LIMIT = 10           # % of the CPUs used by others that makes a figure suspect
OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _thread_list(text: str) -> List[int]:
    """argparse type: "1,2" -> [1, 2]."""
    try:
        threads = [int(t) for t in text.split(",")]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise argparse.ArgumentTypeError(f"expected thread counts >= 1 like 1,2; got {text!r}")
    return threads


SUITE_NAMES = (*_shapes.SUITES, "fcn", "networks", "all")


def _suite_list(text: str) -> List[str]:
    """argparse type: "vgg16,resnet50" -> ["vgg16", "resnet50"]."""
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [n for n in names if n not in SUITE_NAMES]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"expected suites among {', '.join(SUITE_NAMES)}, comma-separated like "
            f"vgg16,resnet50; got {text!r}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m fastconv bench`."""
    parser.add_argument("--suite", type=_suite_list, default=["all"],
                        help=f"comma-separated suites to run, among {', '.join(SUITE_NAMES)} "
                             f"(default: all; with --quick, all but fcn and networks)")
    parser.add_argument("--threads", type=_thread_list, default=None,
                        help="comma-separated thread counts, e.g. 1,2 "
                             "(default: fastconv.get_num_threads())")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="the arrays' dtype (default float32; float64 runs the double "
                             "kernels)")
    parser.add_argument("--quick", action="store_true",
                        help="a representative subset of the layers, fewer repetitions")
    parser.add_argument("--peers", action="store_true",
                        help="also time each layer alone through onnxruntime and OpenVINO "
                             "(pip install 'fastconv[peers]'); float32, per-layer suites")
    parser.add_argument("--function", action="store_true",
                        help="time fastconv.conv2d / conv_transpose2d, the functions (their "
                             "weights kept from the second call on), in place of layers")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw a per-layer bar chart (needs matplotlib)")


@functools.lru_cache(maxsize=None)
def _torch():
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# --------------------------------------------------------------------------
# Layer geometry
# --------------------------------------------------------------------------
def out_size(layer: Conv) -> int:
    """Output height (= width) of a convolution layer."""
    return (layer.hw + 2 * layer.pad - layer.k) // layer.stride + 1


def flops(layer: Layer) -> float:
    """Floating-point operations of one call (a multiply-add counts 2; a
    transposed convolution's: every input pixel times the whole kernel)."""
    if isinstance(layer, Gemm):
        return 2.0 * layer.M * layer.K * layer.N
    if isinstance(layer, Deconv):
        return 2.0 * layer.hw ** 2 * layer.C * layer.K * layer.k ** 2
    return 2.0 * out_size(layer) ** 2 * layer.K * layer.k ** 2 * layer.C / layer.groups


def weight_bytes(layer: Layer, dtype: np.dtype) -> int:
    """Size of the weights (B of a GEMM)."""
    if isinstance(layer, Gemm):
        return layer.K * layer.N * dtype.itemsize
    groups = layer.groups if isinstance(layer, Conv) else 1
    return layer.k ** 2 * layer.C // groups * layer.K * dtype.itemsize


def shape_text(layer: Layer) -> str:
    """Short description, e.g. "3136x64x256" or "56x56x128->128 3x3/2"."""
    if isinstance(layer, Gemm):
        return f"{layer.M}x{layer.K}x{layer.N}"
    if isinstance(layer, Deconv):
        return (f"{layer.hw}x{layer.hw}x{layer.C}->{layer.out}x{layer.out}x{layer.K} "
                f"{layer.k}x{layer.k}/{layer.stride} up")
    out = f"->{layer.K}" if layer.groups == 1 else " dw"
    stride = f"/{layer.stride}" if layer.stride > 1 else ""
    return f"{layer.hw}x{layer.hw}x{layer.C}{out} {layer.k}x{layer.k}{stride}"


# --------------------------------------------------------------------------
# NumPy baselines
# --------------------------------------------------------------------------
def _padded(x: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x


def im2col_matmul(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """The NumPy baseline for a dense n x n convolution: im2col, then numpy.matmul.
    x is NHWC, w HWIO; returns NHWC."""
    N, H, W, C = x.shape
    kh, kw, _, K = w.shape
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    cols = np.lib.stride_tricks.sliding_window_view(_padded(x, pad), (kh, kw), axis=(1, 2))
    cols = cols[:, ::stride, ::stride][:, :Ho, :Wo]  # (N, Ho, Wo, C, kh, kw)
    cols = cols.transpose(0, 1, 2, 4, 5, 3).reshape(N * Ho * Wo, kh * kw * C)
    return np.matmul(cols, w.reshape(kh * kw * C, K)).reshape(N, Ho, Wo, K)


def depthwise_taps(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """The NumPy baseline for a depthwise convolution (channel multiplier 1):
    the sum over the kernel taps of a shifted input slice times that tap's
    weights. x is NHWC, w (kh, kw, 1, C); returns NHWC."""
    N, H, W, C = x.shape
    kh, kw = w.shape[:2]
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    xp = _padded(x, pad)
    y = np.zeros((N, Ho, Wo, C), x.dtype)
    for i in range(kh):
        for j in range(kw):
            y += xp[:, i:i + stride * (Ho - 1) + 1:stride,
                    j:j + stride * (Wo - 1) + 1:stride] * w[i, j, 0]
    return y


def col2im_matmul(x: np.ndarray, w: np.ndarray, stride: int, out: int) -> np.ndarray:
    """The NumPy baseline for a transposed convolution (TensorFlow's SAME
    rule, output out x out): numpy.matmul of the pixels by every tap, then
    each tap's products added into the output at stride steps (col2im), and
    the padding cropped. x is NHWC, w (k, k, K, C); returns NHWC."""
    N, H, W, C = x.shape
    k, _, K, _ = w.shape
    cols = np.matmul(x.reshape(-1, C), w.reshape(k * k * K, C).T).reshape(N, H, W, k, k, K)
    full = np.zeros((N, (H - 1) * stride + k, (W - 1) * stride + k, K), x.dtype)
    for i in range(k):
        for j in range(k):
            full[:, i:i + (H - 1) * stride + 1:stride, j:j + (W - 1) * stride + 1:stride] += \
                cols[:, :, :, i, j]
    top = max((H - 1) * stride + k - out, 0) // 2
    return full[:, top:top + out, top:top + out]


def numpy_method(layer: Layer) -> str:
    """Which NumPy baseline a layer gets: "matmul", "im2col", "taps" or
    "col2im"."""
    if isinstance(layer, Deconv):
        return "col2im"
    if isinstance(layer, Gemm) or (layer.k == 1 and layer.stride == 1):
        return "matmul"
    return "taps" if layer.groups > 1 else "im2col"


# --------------------------------------------------------------------------
# The contenders of one layer
# --------------------------------------------------------------------------
Call = Callable[[int], object]  # called with the thread count


class Plan(NamedTuple):
    """What fastconv's operator runs for a layer: the algorithm's name and
    the multiply-adds it executes."""
    algorithm: str
    macs: float


def fastconv_call(layer: Conv, x: np.ndarray, w: np.ndarray,
                  function: bool = False) -> Tuple[Call, Plan]:
    """fastconv's side of a convolution layer (NHWC input, HWIO weights): a
    fastconv.Conv2d, whose weights are packed once at construction as in a
    network, or with `function` fastconv.conv2d (which keeps them from its
    second call on: fastconv.set_weight_cache), and its plan."""
    s, p, g = layer.stride, layer.pad, layer.groups
    if function:
        plan = _conv.ConvWeights("conv2d", w, None, g, "NHWC", 1, pack_now=False,
                                 stride=(s, s)).plan(x.shape, p, None)
        return ((lambda nt: fastconv.conv2d(x, w, stride=s, padding=p, groups=g, num_threads=nt)),
                Plan(plan.algorithm, plan.macs))
    conv = fastconv.Conv2d(w, stride=s, padding=p, groups=g)
    plan = conv.plan(x.shape)
    return (lambda nt: conv(x, num_threads=nt)), Plan(plan["algorithm"], plan["macs"])


def layer_inputs(layer: Layer, dtype: np.dtype, rng: np.random.Generator
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Random operands of `layer`: (A, B) of a GEMM; the NHWC input and the
    weights of a convolution (HWIO; (k, k, K, C) for a transposed one)."""
    if isinstance(layer, Gemm):
        return (rng.standard_normal((layer.M, layer.K), dtype=dtype),
                rng.standard_normal((layer.K, layer.N), dtype=dtype))
    x = rng.standard_normal((1, layer.hw, layer.hw, layer.C), dtype=dtype)
    if isinstance(layer, Deconv):
        return x, rng.standard_normal((layer.k, layer.k, layer.K, layer.C), dtype=dtype)
    return x, rng.standard_normal((layer.k, layer.k, layer.C // layer.groups, layer.K),
                                  dtype=dtype)


def numpy_baseline(layer: Layer, x: np.ndarray, w: np.ndarray) -> Callable[[], np.ndarray]:
    """The NumPy computation of `layer` (numpy_method()) on operands x, w from
    layer_inputs(), in their dtype: the "numpy" contender, and in float64 the
    reference every contender's output is checked against."""
    method = numpy_method(layer)
    if method == "col2im":
        return lambda: col2im_matmul(x, w, layer.stride, layer.out)
    if isinstance(layer, Gemm):
        return lambda: np.matmul(x, w)
    if method == "matmul":
        x2, w2 = x.reshape(-1, layer.C), w.reshape(layer.C, layer.K)
        return lambda: np.matmul(x2, w2).reshape(1, layer.hw, layer.hw, layer.K)
    if method == "taps":
        return lambda: depthwise_taps(x, w, layer.stride, layer.pad)
    return lambda: im2col_matmul(x, w, layer.stride, layer.pad)


def contenders(layer: Layer, x: np.ndarray, w: np.ndarray,
               function: bool = False) -> Tuple[Dict[str, Call], Plan]:
    """A callable per contender of `layer` on the operands x, w from
    layer_inputs() (in CONTENDERS order; the torch ones only where torch is
    installed, torch_cl only for convolutions) and fastconv's plan (with
    `function`, fastconv's functions in place of its layers). Each
    callable takes the thread count; only fastconv uses it, the others are
    limited by thread_limits()."""
    torch = _torch()
    numpy_call = numpy_baseline(layer, x, w)
    if isinstance(layer, Gemm):
        calls = {"fastconv": lambda nt: fastconv.matmul(x, w, num_threads=nt),
                 "numpy": lambda nt: numpy_call()}
        if torch is not None:
            ta, tb = torch.from_numpy(x), torch.from_numpy(w)
            calls["torch"] = lambda nt: torch.matmul(ta, tb)
        algorithm = _conv.GemmWeights("matmul", w, None, 1, one_call=True).plan(layer.M, None)[1]
        return calls, Plan(algorithm, float(layer.M) * layer.K * layer.N)

    if isinstance(layer, Deconv):
        return deconv_contenders(layer, x, w, function)
    s, p, g = layer.stride, layer.pad, layer.groups
    fastconv_side, plan = fastconv_call(layer, x, w, function)
    calls = {"fastconv": fastconv_side, "numpy": lambda nt: numpy_call()}
    if torch is not None:
        conv = torch.nn.functional.conv2d
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()  # OIHW
        xcl, wcl = (t.to(memory_format=torch.channels_last) for t in (xt, wt))
        calls["torch"] = lambda nt: conv(xt, wt, stride=s, padding=p, groups=g)
        calls["torch_cl"] = lambda nt: conv(xcl, wcl, stride=s, padding=p, groups=g)
    return calls, plan


def deconv_top_pad(layer: Deconv) -> int:
    """The rows (and columns) TensorFlow's SAME rule crops from the top (left)
    of a transposed convolution's full (hw - 1) * stride + k output; it crops
    the rest of the excess from the bottom (right)."""
    return max((layer.hw - 1) * layer.stride + layer.k - layer.out, 0) // 2


def deconv_contenders(layer: Deconv, x: np.ndarray, w: np.ndarray, function: bool = False
                      ) -> Tuple[Dict[str, Call], Plan]:
    """contenders() of a transposed convolution: fastconv's ConvTranspose2d
    (weights packed once; with `function`, fastconv.conv_transpose2d) with
    output_size, NumPy's col2im, and torch's
    conv_transpose2d in both layouts, padded by the top of TensorFlow's SAME
    padding and cut to the output's size (a view) where its total is odd."""
    torch = _torch()
    s, out = layer.stride, layer.out
    up = nn.ConvTranspose2d(w, stride=s, padding="same")
    plan = up.plan(x.shape, output_size=(out, out))
    numpy_call = numpy_baseline(layer, x, w)
    calls = {"fastconv": (lambda nt: fastconv.conv_transpose2d(
                 x, w, stride=s, padding="same", output_size=(out, out), num_threads=nt))
             if function else (lambda nt: up(x, num_threads=nt, output_size=(out, out))),
             "numpy": lambda nt: numpy_call()}
    if torch is not None:
        pad = deconv_top_pad(layer)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        wt = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()  # (C, K, k, k)
        xcl, wcl = (t.to(memory_format=torch.channels_last) for t in (xt, wt))
        deconv = torch.nn.functional.conv_transpose2d
        calls["torch"] = lambda nt: deconv(xt, wt, stride=s, padding=pad)[:, :, :out, :out]
        calls["torch_cl"] = lambda nt: deconv(xcl, wcl, stride=s, padding=pad)[:, :, :out, :out]
    return calls, Plan(plan["algorithm"], plan["macs"])


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
@contextmanager
def thread_limits(nt: int) -> Iterator[None]:
    """Run the baselines on nt threads: numpy's BLAS through threadpoolctl
    (when installed), torch through torch.set_num_threads (restored on exit),
    under torch.no_grad(). fastconv is given nt in each call."""
    with ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
            stack.enter_context(threadpool_limits(limits=nt, user_api="blas"))
        except ImportError:
            pass
        torch = _torch()
        if torch is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(nt)
            stack.enter_context(torch.no_grad())
        yield


def settle() -> None:
    """Return once the process's worker threads stop using the CPU.

    A multi-threaded library's workers keep spinning on the cores after a
    call returns (numpy's OpenBLAS for about 0.1 s here, measured from its
    thread's CPU time; OpenMP's for well under 10 ms) and would take a core
    from whichever contender runs next. The process's CPU time (every
    thread's; the caller sleeps meanwhile) shows when they have stopped."""
    deadline = time.perf_counter() + SETTLE_LIMIT
    while time.perf_counter() < deadline:
        cpu = time.process_time()
        time.sleep(SETTLE_STEP)
        if time.process_time() - cpu < SETTLE_BUSY * SETTLE_STEP:
            return


def time_interleaved(calls: Sequence[Callable[[], object]], reps: int,
                     min_time: float, settled: bool = False) -> List[float]:
    """Median seconds per call of each callable.

    Each is called once to warm up and once more to time it; a sample then
    repeats it enough times to last min_time. The samples are taken in
    rounds, one of each callable per round, so that a disturbance of the
    machine hits them all alike. With `settled` (for more than one thread),
    each sample waits until the previous one's worker threads are idle
    (see settle())."""
    for call in calls:
        call()
    counts = []
    for call in calls:
        t0 = time.perf_counter()
        call()
        once = max(time.perf_counter() - t0, 1e-9)
        counts.append(min(max(1, math.ceil(min_time / once)), 1 << 16))
    samples: List[List[float]] = [[] for _ in calls]
    for _ in range(reps):
        for call, n, acc in zip(calls, counts, samples):
            if settled:
                settle()
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            acc.append((time.perf_counter() - t0) / n)
    return [statistics.median(acc) for acc in samples]


def measure_peak(dtype: str, nt: int) -> float:
    """Peak GFLOP/s of fastconv's FMA probe (a register-only FMA loop on the
    active ISA) on nt threads, with calls of about PROBE_SECONDS."""
    base = 1 << 20
    t0 = time.perf_counter()
    flops_per_iter = _core.fma_probe(dtype, base, nt) / base
    iters = max(base, int(base * PROBE_SECONDS / (time.perf_counter() - t0)))
    (t,) = time_interleaved([lambda: _core.fma_probe(dtype, iters, nt)], reps=3, min_time=0)
    return flops_per_iter * iters / t / 1e9


def measure_bandwidth(threads: Sequence[int]) -> Tuple[Dict[int, float], str]:
    """Memory read bandwidth in GB/s per thread count, and how it was measured."""
    v = np.ones(BANDWIDTH_BYTES // 4, np.float32)
    gbps = {}
    for nt in threads:
        with thread_limits(nt):
            (t,) = time_interleaved([lambda: np.dot(v, v)], reps=3, min_time=0)
        gbps[nt] = v.nbytes / t / 1e9
    method = (f"numpy.dot(v, v) over a {v.nbytes >> 20} MiB float32 vector (each call "
              "reads v once from memory), BLAS threads = thread count, median of 3")
    return gbps, method


# --------------------------------------------------------------------------
# Facts about the machine and the libraries
# --------------------------------------------------------------------------
def blas_info() -> List[Dict[str, object]]:
    """Which BLAS numpy runs, and which kernel (threadpoolctl), if known."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed: numpy's BLAS not identified "
                         "and not limited to the thread count"}]
    return [{k: v for k, v in info.items() if k in
             ("internal_api", "version", "architecture", "threading_layer", "filepath")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


Snapshot = Optional[Tuple[float, float, float]]


def cpu_snapshot() -> Snapshot:
    """(CPU-seconds busy, CPU-seconds elapsed, both summed over all CPUs, and
    this process's CPU-seconds) now, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, sum(ticks) / hz, time.process_time()


def others_busy(before: Snapshot, after: Snapshot) -> Optional[float]:
    """% of the CPUs' time between two snapshots used by other processes."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    others = (after[0] - before[0]) - (after[2] - before[2])
    return max(0.0, 100 * others / (after[1] - before[1]))


def versions() -> Dict[str, Optional[str]]:
    """Versions of everything the figures depend on."""
    torch = _torch()
    blas = [f"{b['internal_api']} {b['version']}" for b in blas_info() if "version" in b]
    return {"fastconv": fastconv.__version__, "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None,
            "torch_cpu_capability": (torch.backends.cpu.get_cpu_capability()
                                     if torch is not None else None),
            "blas": ", ".join(blas) or None}


# --------------------------------------------------------------------------
# Results and tables
# --------------------------------------------------------------------------
def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    return None if num is None or den is None else num / den


def ran_peers(rows: List[dict]) -> List[str]:
    """The peers with a time in some row."""
    return [p for p in PEERS if any(r["seconds"].get(p) is not None for r in rows)]


def _best_peer(seconds: Dict[str, Optional[float]]) -> Optional[str]:
    """The fastest peer timed, or None."""
    timed = [p for p in PEERS if seconds.get(p) is not None]
    return min(timed, key=lambda p: seconds[p]) if timed else None


def _speedups(seconds: Dict[str, Optional[float]], peer_best: Optional[str]
              ) -> Dict[str, Optional[float]]:
    """Every other contender's time / fastconv's, and the best peer's."""
    tf = seconds["fastconv"]
    speedup = {c: _ratio(t, tf) for c, t in seconds.items() if c != "fastconv"}
    speedup["peer_best"] = _ratio(seconds[peer_best], tf) if peer_best else None
    return speedup


def result_row(suite: str, layer: Layer, nt: int, dtype: np.dtype, plan: Plan,
               seconds: Dict[str, Optional[float]], errors: Dict[str, Optional[float]],
               faults: Optional[int], unavailable: Dict[str, str], peak: float,
               bandwidth: float, others_busy_pct: Optional[float]) -> dict:
    """Every figure of one layer at one thread count (see the JSON keys above)."""
    fl, wb, executed = flops(layer), weight_bytes(layer, dtype), 2.0 * plan.macs
    torch_times = [t for t in (seconds["torch"], seconds["torch_cl"]) if t is not None]
    tf = seconds["fastconv"]
    gbps = {c: _ratio(wb / 1e9, t) for c, t in seconds.items()}
    peer_best = _best_peer(seconds)
    speedup = _speedups(seconds, peer_best)
    speedup["torch_best"] = _ratio(min(torch_times), tf) if torch_times else None
    return {"suite": suite, "layer": layer.name, "shape": shape_text(layer),
            "count": layer.count, "threads": nt, "dtype": dtype.name, "flops": fl,
            "algorithm": plan.algorithm, "executed_flops": executed,
            "weight_bytes": wb, "numpy_method": numpy_method(layer), "seconds": seconds,
            "gflops": {c: _ratio(fl / 1e9, t) for c, t in seconds.items()},
            "gflops_executed": executed / 1e9 / tf,
            "weight_gbps": gbps,
            "pct_peak": 100 * executed / 1e9 / tf / peak,
            "pct_bandwidth": 100 * gbps["fastconv"] / bandwidth,
            "others_busy_pct": others_busy_pct,
            "speedup": speedup, "peer_best": peer_best, "max_rel_err": errors,
            "minor_faults_per_call": faults, "unavailable": unavailable}


def summary_row(suite: str, nt: int, rows: List[dict], peak: float) -> dict:
    """Totals of one suite at one thread count, each layer weighed by its count
    (a contender's total is null unless it ran every layer)."""
    total = {}
    for c in rows[0]["seconds"]:
        times = [r["seconds"][c] for r in rows]
        total[c] = (None if None in times else
                    sum(r["count"] * t for r, t in zip(rows, times)))
    fl = sum(r["count"] * r["flops"] for r in rows)
    executed = sum(r["count"] * r["executed_flops"] for r in rows)
    gflops, gflops_executed = fl / 1e9 / total["fastconv"], executed / 1e9 / total["fastconv"]
    peer_best = _best_peer(total)
    return {"suite": suite, "threads": nt,
            "layers": sum(r["count"] for r in rows),
            "layers_in_suite": sum(layer.count for layer in _shapes.SUITES[suite]),
            "flops": fl, "executed_flops": executed, "seconds": total, "gflops": gflops,
            "gflops_executed": gflops_executed, "pct_peak": 100 * gflops_executed / peak,
            "speedup": _speedups(total, peer_best), "peer_best": peer_best}


def _fmt(value: Optional[float], spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def _ms(row: dict, contender: str, spec: str = ".2f") -> str:
    t = row["seconds"][contender]
    return _fmt(t and t * 1e3, spec)


def _torch_best(values: Dict[str, Optional[float]]) -> Optional[float]:
    """The larger of the torch and torch_cl figures (a rate), if any."""
    return max((values[c] for c in ("torch", "torch_cl") if values[c] is not None), default=None)


# Short names for the tables' "alg" column (the JSON has the full ones).
ALGORITHM_LABELS = {"winograd-f2x2-3x3": "winograd-2x2", "winograd-f4x4-3x3": "winograd-4x4"}


class Column(NamedTuple):
    """One column of a table: its header, width, and how a row's cell reads."""
    header: str
    width: int
    cell: Callable[[dict], str]
    left: bool = False


LAYER_COLUMNS = [
    Column("layer", 18, lambda r: r["layer"], left=True),
    Column("shape", 21, lambda r: r["shape"], left=True),
    Column("n", 2, lambda r: str(r["count"])),
    Column("MFLOP", 8, lambda r: _fmt(r["flops"] / 1e6, ".1f")),
    Column("alg", 13, lambda r: ALGORITHM_LABELS.get(r["algorithm"], r["algorithm"]), left=True),
    Column("fastconv", 8, lambda r: _fmt(r["gflops"]["fastconv"], ".1f")),
    Column("exec", 6, lambda r: _fmt(r["gflops_executed"], ".1f")),
    Column("%pk", 4, lambda r: _fmt(r["pct_peak"], ".0f")),
    Column("numpy", 7, lambda r: _fmt(r["gflops"]["numpy"], ".1f")),
    Column("via", 6, lambda r: r["numpy_method"], left=True),
    Column("torch", 7, lambda r: _fmt(r["gflops"]["torch"], ".1f")),
    Column("t_cl", 7, lambda r: _fmt(r["gflops"]["torch_cl"], ".1f")),
    Column("vs np", 6, lambda r: _fmt(r["speedup"]["numpy"], ".2f", "x")),
    Column("vs torch", 8, lambda r: _fmt(r["speedup"]["torch_best"], ".2f", "x")),
    Column("err", 7, lambda r: _fmt(r["max_rel_err"]["fastconv"], ".1e")),
    Column("flt", 5, lambda r: _fmt(r["minor_faults_per_call"], "d")),
    Column("oth%", 4, lambda r: _fmt(r["others_busy_pct"], ".0f")),
]
# The FC layers stream their weights once per call: show that rate too.
FC_COLUMNS = LAYER_COLUMNS + [
    Column("fastconv GB/s", 13, lambda r: _fmt(r["weight_gbps"]["fastconv"], ".1f")),
    Column("%BW", 4, lambda r: _fmt(r["pct_bandwidth"], ".0f")),
    Column("np GB/s", 7, lambda r: _fmt(r["weight_gbps"]["numpy"], ".1f")),
    Column("t GB/s", 6, lambda r: _fmt(_torch_best(r["weight_gbps"]), ".1f")),
]
SUMMARY_COLUMNS = [
    Column("suite", 12, lambda r: r["suite"], left=True),
    Column("thr", 3, lambda r: str(r["threads"])),
    Column("layers", 6, lambda r: f"{r['layers']}/{r['layers_in_suite']}"),
    Column("GFLOP", 7, lambda r: _fmt(r["flops"] / 1e9, ".2f")),
    Column("fastconv ms", 11, lambda r: _ms(r, "fastconv")),
    Column("GF/s", 6, lambda r: _fmt(r["gflops"], ".1f")),
    Column("exec", 6, lambda r: _fmt(r["gflops_executed"], ".1f")),
    Column("%pk", 4, lambda r: _fmt(r["pct_peak"], ".0f")),
    Column("np ms", 8, lambda r: _ms(r, "numpy")),
    Column("torch ms", 8, lambda r: _ms(r, "torch")),
    Column("t_cl ms", 8, lambda r: _ms(r, "torch_cl")),
    Column("vs np", 6, lambda r: _fmt(r["speedup"]["numpy"], ".2f", "x")),
    Column("vs torch", 8, lambda r: _fmt(r["speedup"]["torch"], ".2f", "x")),
    Column("vs t_cl", 7, lambda r: _fmt(r["speedup"]["torch_cl"], ".2f", "x")),
]


def peer_columns(peers: Sequence[str]) -> List[Column]:
    """The --peers table's columns for the peers that ran: times, each one's
    time / fastconv's, the best peer's, and every output's error."""
    columns = [Column("layer", 18, lambda r: r["layer"], left=True),
               Column("fastconv ms", 11, lambda r: _ms(r, "fastconv", ".3f"))]
    for p in peers:
        columns += [Column(f"{PEER_SHORT[p]} ms", 9, lambda r, p=p: _ms(r, p, ".3f")),
                    Column("x", 6, lambda r, p=p: _fmt(r["speedup"][p], ".2f", "x"))]
    columns += [Column("best", 11, lambda r: r["peer_best"] or "-", left=True),
                Column("vs best", 7, lambda r: _fmt(r["speedup"]["peer_best"], ".2f", "x")),
                *[Column(f"err {PEER_SHORT.get(c, c)}", 8,
                         lambda r, c=c: _fmt(r["max_rel_err"][c], ".1e"))
                  for c in ("fastconv", *peers)]]
    return columns


def summary_columns(peers: Sequence[str]) -> List[Column]:
    """SUMMARY_COLUMNS and, for the peers that ran, their totals and the best one's
    total / fastconv's."""
    if not peers:
        return SUMMARY_COLUMNS
    return SUMMARY_COLUMNS + [
        *[Column(f"{PEER_SHORT[p]} ms", 8, lambda r, p=p: _ms(r, p)) for p in peers],
        Column("vs peer", 7, lambda r: _fmt(r["speedup"]["peer_best"], ".2f", "x"))]


def print_table(title: str, rows: List[dict], columns: List[Column]) -> None:
    """Print rows under a title and a header, one column per Column."""
    def line(cells):
        return " ".join(cell.ljust(c.width) if c.left else cell.rjust(c.width)
                        for c, cell in zip(columns, cells)).rstrip()
    header = line([c.header for c in columns])
    print(f"\n{title}\n{header}\n{'-' * len(header)}")
    for r in rows:
        print(line([c.cell(r) for c in columns]))


def _pyplot():
    """matplotlib.pyplot on a file-only backend, or None when not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot(plt, path: str, rows: List[dict]) -> None:
    """A bar chart per suite and thread count: each contender's GFLOP/s per layer."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["suite"], r["threads"]), []).append(r)
    longest = max(len(g) for g in groups.values())
    fig, axes = plt.subplots(len(groups), 1, squeeze=False,
                             figsize=(max(8.0, 0.7 * longest + 2), 3.6 * len(groups)))
    width = 0.8 / len(CONTENDERS)
    for ax, ((suite, nt), group) in zip(axes[:, 0], groups.items()):
        xs = np.arange(len(group))
        for i, c in enumerate(CONTENDERS):
            values = [r["gflops"][c] for r in group]
            if any(v is not None for v in values):
                ax.bar(xs + (i - (len(CONTENDERS) - 1) / 2) * width,
                       [v or 0.0 for v in values], width, label=LABELS[c])
        ax.set_xticks(xs, [r["layer"] for r in group], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{suite}, {nt} thread{'s' if nt > 1 else ''}, {group[0]['dtype']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------
def _progress(text: str) -> None:
    """Show what runs now on stderr: one line overwritten in a terminal ("" clears
    it), else a line per step."""
    if sys.stderr.isatty():
        print(f"\r{text[:100]:100s}\r", end="", file=sys.stderr, flush=True)
    elif text:
        print(text, file=sys.stderr, flush=True)


def _print_header(cfg: dict, vers: dict, busy: Optional[float],
                  openblas_env: Dict[str, str]) -> None:
    """What runs where: fastconv's build and ISA, the CPU, numpy's BLAS, warnings."""
    print(f"fastconv {vers['fastconv']}: ISA {_core.active_isa()}, {cfg['compiler']}, "
          f"OpenMP {'yes' if cfg['openmp'] else 'no'}; numpy {vers['numpy']}; "
          f"torch {vers['torch'] or '- (not installed)'}"
          + (f" ({vers['torch_cpu_capability']})" if vers["torch"] else ""))
    print(f"CPU: {cpu_name()} ({os.cpu_count()} CPUs), {_fmt(busy, '.0f', '%')} busy "
          "with other processes before the run")
    if busy is not None and busy > 3 * BUSY_LIMIT:
        print(f"WARNING: other processes kept the CPUs {busy:.0f}% busy: the figures below "
              "are NOT meaningful (fastconv, numpy and torch get what the other processes "
              "leave, unevenly); rerun when the machine is idle")
    elif busy is not None and busy > BUSY_LIMIT:
        print(f"WARNING: other processes kept the CPUs {busy:.0f}% busy: the figures, "
              "the multi-threaded ones most, will be noisy")
    for info in blas_info():
        print("numpy BLAS:", ", ".join(f"{k}={v}" for k, v in info.items()))
    for k, v in openblas_env.items():
        print(f"WARNING: {k}={v} is set: it can make numpy's OpenBLAS run a slower kernel "
              "than this CPU supports, which flatters fastconv; unset it for a fair comparison")


def bench_suite(suite: str, layers: List[Layer], threads: Sequence[int], dtype: np.dtype,
                rng: np.random.Generator, reps: int, min_time: float,
                peak: Dict[int, float], bandwidth: Dict[int, float],
                peers: bool = False, function: bool = False) -> Dict[int, List[dict]]:
    """Time every contender (and with `peers` onnxruntime and OpenVINO) on
    every layer at every thread count (with `function`, fastconv's
    functions in place of its layers); the result rows per thread count.
    Every contender's first output is compared with the float64 reference
    (REFERENCE); a peer that fails or disagrees is not timed."""
    rows: Dict[int, List[dict]] = {nt: [] for nt in threads}
    names = CONTENDERS + PEERS if peers else CONTENDERS
    for i, layer in enumerate(layers):
        x, w = layer_inputs(layer, dtype, rng)
        calls, plan = contenders(layer, x, w, function)
        reference = numpy_baseline(layer, x.astype(np.float64), w.astype(np.float64))()
        if reference.ndim == 4:  # NHWC -> torch's and the peers' NCHW
            reference = reference.transpose(0, 3, 1, 2)
        scale = max(float(np.abs(reference).max()), 1e-30)
        if peers:
            peer_x = x if isinstance(layer, Gemm) else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            model = layer_onnx(layer, peer_x, w)
            ov_model, ov_error = openvino_model(model)
        for nt in threads:
            _progress(f"[{suite} {i + 1}/{len(layers)}, {nt} thr] {layer.name} "
                      f"{shape_text(layer)} ...")
            own, unavailable = (peer_calls(model, ov_model, ov_error, peer_x, reference.shape, nt)
                                if peers else ({}, {}))
            every = {**calls, **own}
            errors: Dict[str, Optional[float]] = {c: None for c in names}
            settled = nt > 1 or peers  # the peers' worker threads outlive a call
            before = cpu_snapshot()
            with thread_limits(nt):
                for c in list(every):
                    if settled:
                        settle()
                    try:
                        out = _as_nchw(every[c](nt), reference.shape, c in ("fastconv", "numpy"))
                    except Exception as exc:  # noqa: BLE001 (only a peer may fail)
                        if c not in own:
                            raise
                        unavailable[c] = _failure(exc)
                        del every[c]
                        continue
                    errors[c] = max_rel_err(out, reference, scale)
                    if c in own and errors[c] > PEER_TOLERANCE:
                        unavailable[c] = (f"wrong result: max relative error {errors[c]:.1e} "
                                          f"> {PEER_TOLERANCE:g}")
                        del every[c]
                times = time_interleaved([functools.partial(f, nt) for f in every.values()],
                                         reps, min_time, settled=settled)
                faults = minor_faults_per_call(functools.partial(calls["fastconv"], nt))
            seconds: Dict[str, Optional[float]] = {c: None for c in names}
            seconds.update(zip(every, times))
            rows[nt].append(result_row(suite, layer, nt, dtype, plan, seconds, errors, faults,
                                       unavailable, peak[nt], bandwidth[nt],
                                       others_busy(before, cpu_snapshot())))
            del own, every  # this thread count's sessions, before the next one's are made
        del calls  # free this layer's arrays before the next layer's are made
    _progress("")
    return rows


def run(args: argparse.Namespace) -> int:
    """`python -m fastconv bench`: measure, print the tables, write --json/--plot."""
    start = time.perf_counter()
    plt = _pyplot() if args.plot else None
    if args.plot and plt is None:
        print("error: --plot needs matplotlib: pip install matplotlib "
              "(or pip install 'fastconv[bench]')", file=sys.stderr)
        return 2
    chosen = args.suite
    everything = "all" in chosen
    suites = list(_shapes.SUITES) if everything else [s for s in chosen if s in _shapes.SUITES]
    # The whole-network suites are long (VGG16 at 224 and 384; four networks
    # through up to seven engines): not in --quick.
    run_fcn = "fcn" in chosen or (everything and not args.quick)
    run_networks = "networks" in chosen or (everything and not args.quick)
    named = ",".join(chosen)
    if args.peers and not suites:
        print(f"error: --peers times the per-layer suites, not {named!r} (the networks "
              "suite runs onnxruntime and OpenVINO already)", file=sys.stderr)
        return 2
    if args.plot and not suites:
        # (checked before measuring: the plot draws the per-layer rows alone)
        print(f"error: --plot draws the per-layer suites ({', '.join(_shapes.SUITES)}), and "
              f"--suite {named} has none", file=sys.stderr)
        return 2
    if args.peers and args.dtype != "float32":
        print("error: --peers needs --dtype float32 (the peers' one-node graphs are float32)",
              file=sys.stderr)
        return 2
    threads = args.threads or [fastconv.get_num_threads()]
    reps, min_time = TIMING[args.quick]
    dtype = np.dtype(args.dtype)
    cfg, vers = fastconv.config(), versions()
    before = cpu_snapshot()
    time.sleep(0.25)
    busy = others_busy(before, cpu_snapshot())
    openblas_env = {k: os.environ[k] for k in OPENBLAS_ENV if k in os.environ}
    _print_header(cfg, vers, busy, openblas_env)
    peer_vers = peer_versions() if args.peers else {}
    for p, v in peer_vers.items():
        print(f"peer {p}: {v or '- not installed (pip install fastconv[peers]): no column'}")

    _progress("measuring the FMA peak and the memory bandwidth ...")
    peak = {nt: measure_peak(dtype.name, nt) for nt in threads}
    bandwidth, bandwidth_method = measure_bandwidth(threads)
    _progress("")
    for nt in threads:
        print(f"{nt} thread{'s' if nt > 1 else ''}: FMA-probe peak {peak[nt]:.1f} GFLOP/s "
              f"({dtype.name}), memory read bandwidth {bandwidth[nt]:.1f} GB/s")
    print(f"(bandwidth: {bandwidth_method})")
    print(f"\nGFLOP/s of fastconv, numpy (via matmul / im2col+matmul / taps / col2im), torch "
          f"(NCHW) and t_cl (torch channels_last), all counting the direct convolution's "
          f"operations; "
          f"alg = the algorithm fastconv ran; exec = fastconv's GFLOP/s of the operations it "
          f"executed (Winograd executes 16/36 of the direct ones: its GFLOP/s may exceed the "
          f"peak, its exec cannot); %pk = exec / FMA-probe peak; vs = the other's "
          f"time / fastconv's (>1: fastconv faster), vs torch = the faster torch layout; "
          f"n = times the network runs the layer; oth% = the CPUs' use by other processes "
          f"meanwhile; median of {reps} interleaved samples"
          + ("; --function: fastconv = fastconv.conv2d / conv_transpose2d, the functions"
             if args.function else "")
          + ("; --quick: a representative subset of the layers" if args.quick else ""))

    rng = np.random.default_rng(0)
    results, summary = [], []
    for suite in suites:
        layers = [la for la in _shapes.SUITES[suite] if la.quick or not args.quick]
        rows = bench_suite(suite, layers, threads, dtype, rng, reps, min_time, peak, bandwidth,
                           args.peers, args.function)
        for nt in threads:
            print_table(f"{suite}, {nt} thread{'s' if nt > 1 else ''}, {dtype.name}",
                        rows[nt], FC_COLUMNS if suite == "fc" else LAYER_COLUMNS)
            if args.peers:
                print_table(f"{suite}, {nt} thread{'s' if nt > 1 else ''}: fastconv vs each "
                            "layer alone in the peers (NCHW one-node ONNX graphs), ms per call; "
                            "x = the peer's time / fastconv's (>1: fastconv faster); "
                            "err = max rel error vs float64", rows[nt],
                            peer_columns([p for p in PEERS if p in ran_peers(rows[nt])]))
                for r in rows[nt]:
                    for c, why in r["unavailable"].items():
                        print(f"  {r['layer']} {c}: {why}")
            results += rows[nt]
            summary.append(summary_row(suite, nt, rows[nt], peak[nt]))
    fcn_rows = bench_fcn(threads, dtype, rng, reps, min_time) if run_fcn else []
    if fcn_rows:
        print_table("fcn: VGG16 fully convolutional (13 convs, 5 max pools, fc6 as a 7x7 "
                    "conv, fc7/fc8 1x1), batch 1, whole network; fastconv NHWC vs torch "
                    "NCHW / channels_last; max rel diff = fastconv vs torch output at 224/384",
                    fcn_rows, FCN_COLUMNS)
    network_rows = bench_networks(threads) if run_networks else []
    if network_rows:
        print_networks(network_rows)
    elif run_networks:
        print("\nnetworks: skipped, torch is not installed")
    if summary:
        print_table("summary: totals over each suite's layers, each counted n times (layers = "
                    "run / in the network); vs = the other's total / fastconv's, torch = NCHW"
                    + ("; vs peer = the fastest peer's" if args.peers else ""),
                    summary, summary_columns([p for p in PEERS if p in ran_peers(summary)]))
    timed = results + network_rows
    disturbed = [r for r in timed if (r["others_busy_pct"] or 0) > BUSY_LIMIT]
    if disturbed:
        print(f"\nWARNING: other processes used more than {BUSY_LIMIT}% of the CPUs while "
              f"{len(disturbed)} of the {len(timed)} rows were timed (oth%): rerun those "
              "on an idle machine")
    print(f"\n({time.perf_counter() - start:.1f} s)")

    if args.json:
        report = {
            "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "platform": platform.platform(),
                        "busy_pct": busy},
            "isa": _core.active_isa(), "versions": vers, "config": cfg, "blas": blas_info(),
            "openblas_env": openblas_env,
            "settings": {"suite": named, "suites": suites, "threads": threads,
                         "dtype": dtype.name, "quick": args.quick, "reps": reps,
                         "min_time": min_time, "peers": args.peers,
                         "function": args.function,
                         "reference": REFERENCE, "fault_calls": FAULT_CALLS},
            "peers": {p: {"version": v, "settings": PEER_LABELS[p]}
                      for p, v in peer_vers.items()},
            "peak_gflops": {str(nt): g for nt, g in peak.items()},
            "memory_bandwidth": {"method": bandwidth_method,
                                 "gbps": {str(nt): g for nt, g in bandwidth.items()}},
            "results": results, "summary": summary, "fcn": fcn_rows,
            "networks": network_rows,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    if plt is not None and results:
        plot(plt, args.plot, results)
        print(f"wrote {args.plot}")
    return 0


# --------------------------------------------------------------------------
# The "fcn" suite: VGG16 written fully convolutionally, as a whole network
# --------------------------------------------------------------------------
FCN_SIZES = (224, 384)  # 384x384 gives a 6x6 score map
VGG16_CONVS = [(3, 64), (64, 64), "pool", (64, 128), (128, 128), "pool", (128, 256),
               (256, 256), (256, 256), "pool", (256, 512), (512, 512), (512, 512), "pool",
               (512, 512), (512, 512), (512, 512), "pool"]


def vgg16(dtype: np.dtype, rng: np.random.Generator, width: float = 1.0):
    """VGG16 for 224x224 RGB NHWC input as a fastconv.nn.Sequential: 13 convs,
    5 max pools, fc6-fc8 with dropout, no softmax; random He-scaled weights,
    so that activations stay of order one through the 16 layers. `width`
    scales every channel count but the input's (1 is VGG16)."""

    def ch(n: int) -> int:
        return n if n == 3 else max(1, int(n * width))

    layers, c_last = [], 3
    for item in VGG16_CONVS:
        if item == "pool":
            layers.append(nn.MaxPool2d(2))
            continue
        c, k = ch(item[0]), ch(item[1])
        w = (rng.standard_normal((3, 3, c, k)) * np.sqrt(2 / (9 * c))).astype(dtype)
        layers.append(nn.Conv2d(w, np.zeros(k, dtype), padding=1, activation="relu"))
        c_last = k
    layers.append(nn.Flatten("HWC"))
    fc = [(7 * 7 * c_last, ch(4096)), (ch(4096), ch(4096)), (ch(4096), 1000)]
    for i, (fin, fout) in enumerate(fc):
        w = (rng.standard_normal((fin, fout)) * np.sqrt(2 / fin)).astype(dtype)
        layers.append(nn.Linear(w, np.zeros(fout, dtype), activation="relu" if i < 2 else None))
        if i < 2:
            layers.append(nn.Dropout(0.5))
    return nn.Sequential(*layers)


def vgg16_fcn(dtype: np.dtype, rng: np.random.Generator, width: float = 1.0):
    """vgg16() converted with fastconv.nn.to_fully_convolutional, and the same
    network in torch (fc6 as a 7x7 convolution, fc7/fc8 as 1x1, same
    weights), or None without torch."""

    model = vgg16(dtype, rng, width)
    fcn = nn.to_fully_convolutional(model, (224, 224, 3))
    torch = _torch()
    if torch is None:
        return fcn, None
    modules = []
    for layer in fcn:
        if isinstance(layer, nn.MaxPool2d):
            modules.append(torch.nn.MaxPool2d(2))
        elif isinstance(layer, nn.Conv2d):
            w = layer.weight  # HWIO
            conv = torch.nn.Conv2d(w.shape[2], w.shape[3], w.shape[:2],
                                   padding=layer.padding)
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
            conv.bias.data = torch.from_numpy(layer.bias.copy())
            modules.append(conv)
            if layer.activation == "relu":
                modules.append(torch.nn.ReLU())
    return fcn, torch.nn.Sequential(*modules).to(getattr(torch, dtype.name)).eval()


def bench_fcn(threads: Sequence[int], dtype: np.dtype, rng: np.random.Generator, reps: int,
              min_time: float, width: float = 1.0) -> List[dict]:
    """Time the fully convolutional VGG16 at batch 1 on each FCN size:
    fastconv NHWC against torch NCHW and channels_last, interleaved."""
    body, tmodel = vgg16_fcn(dtype, rng, width)
    torch = _torch()
    rows = []
    for size in FCN_SIZES:
        x = rng.random((1, size, size, 3)).astype(dtype)
        calls = {"fastconv": lambda nt, x=x: body(x, num_threads=nt)}
        diff = None
        if tmodel is not None:
            xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            # (Module.to converts in place: a copy keeps tmodel's NCHW weights)
            tcl = copy.deepcopy(tmodel).to(memory_format=torch.channels_last)
            xcl = xt.to(memory_format=torch.channels_last)
            calls["torch"] = lambda nt, xt=xt: tmodel(xt)
            calls["torch_cl"] = lambda nt, xcl=xcl: tcl(xcl)
            with torch.no_grad():
                ref = tmodel(xt).numpy().transpose(0, 2, 3, 1)
            got = body(x)
            diff = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))
        out = (size // 32) - 6
        for nt in threads:
            _progress(f"[fcn, {nt} thr] vgg16 on {size}x{size} ...")
            with thread_limits(nt):
                times = time_interleaved([functools.partial(f, nt) for f in calls.values()],
                                         reps, min_time, settled=nt > 1)
            seconds = dict(zip(calls, times))
            best_torch = min((seconds[k] for k in ("torch", "torch_cl") if k in seconds),
                             default=None)
            rows.append({"suite": "fcn", "layer": f"vgg16 fcn {size}x{size}",
                         "shape": f"{size}x{size}x3 -> {out}x{out}x1000", "threads": nt,
                         "dtype": dtype.name, "seconds": {k: seconds.get(k) for k in
                                                          ("fastconv", "torch", "torch_cl")},
                         "speedup_torch_best": None if best_torch is None
                         else best_torch / seconds["fastconv"],
                         "max_rel_diff_vs_torch": diff})
    _progress("")
    return rows


FCN_COLUMNS = [
    Column("network", 22, lambda r: r["layer"], left=True),
    Column("input -> scores", 26, lambda r: r["shape"], left=True),
    Column("thr", 3, lambda r: str(r["threads"])),
    Column("fastconv ms", 11, lambda r: _ms(r, "fastconv", ".1f")),
    Column("torch ms", 9, lambda r: _ms(r, "torch", ".1f")),
    Column("t_cl ms", 9, lambda r: _ms(r, "torch_cl", ".1f")),
    Column("vs torch", 8, lambda r: _fmt(r["speedup_torch_best"], ".2f", "x")),
    Column("max rel diff", 12, lambda r: _fmt(r["max_rel_diff_vs_torch"], ".1e")),
]


# --------------------------------------------------------------------------
# The "networks" suite: whole torch networks through every engine
# --------------------------------------------------------------------------
class NetworkSpec(NamedTuple):
    """A network of the suite: its label, its constructor in
    fastconv._torch_networks with the arguments, and the input's (C, H, W)."""
    label: str
    make: str
    kwargs: dict
    input_shape: Tuple[int, int, int]


NETWORK_SUITE = [
    NetworkSpec("resnet50", "resnet50", {}, (3, 224, 224)),
    NetworkSpec("mobilenet_v2", "mobilenet_v2", {}, (3, 224, 224)),
    NetworkSpec("vgg16", "vgg16", {}, (3, 224, 224)),
    # 32 base channels (half the original's 64): 9.2 G multiply-adds at
    # 224x224 instead of 37, so that the suite stays within its time budget.
    NetworkSpec("unet", "unet", {"base": 32}, (3, 224, 224)),
]
NETWORK_CONTENDERS = ("torch", "torch_cl", "optimize", "from_torch", "from_onnx",
                      "onnxruntime", "openvino")
NETWORK_LABELS = {
    "torch": "torch eager, NCHW tensors",
    "torch_cl": "torch eager, channels_last model and input",
    "optimize": "torch after fastconv.torch.optimize(model), NCHW input",
    "from_torch": "fastconv.nn.from_torch(model), NHWC input",
    "from_onnx": "fastconv.nn.from_onnx(the ONNX export), NCHW input",
    "onnxruntime": "onnxruntime CPUExecutionProvider (intra-op threads = thread count, "
                   "inter-op 1, sequential, all graph optimizations)",
    "openvino": "OpenVINO CPU (INFERENCE_NUM_THREADS = thread count, f32, LATENCY)",
}
# The fastconv variants, and the ratios each row reports for them.
FASTCONV_VARIANTS = ("from_torch", "from_onnx", "optimize")
NETWORK_BUDGET = 20.0      # seconds of timed samples per network and thread count
NETWORK_REPS = (3, 15)     # the fewest and the most samples per contender
ONNX_OPSET = 17
ONNX_EXPORTER = "torch.onnx.export(dynamo=False), the TorchScript exporter"


def _failure(exc: BaseException) -> str:
    """Why a contender is unavailable: the exception's type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def export_onnx(model, x) -> bytes:
    """`model` exported to ONNX (opset ONNX_OPSET) with input x, in memory.

    The TorchScript exporter (dynamo=False) exports these networks in
    seconds and quietly; the dynamo one works too but takes several times as
    long here. Its deprecation warnings are silenced."""
    import io
    import warnings

    torch = _torch()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["output"])
    return buf.getvalue()


def count_macs(model, x) -> int:
    """Multiply-adds of the convolutions and dense layers of one call
    (forward hooks on Conv2d, ConvTranspose2d and Linear)."""
    torch = _torch()
    tnn = torch.nn
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, tnn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * k * module.in_channels // module.groups
        elif isinstance(module, tnn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total[0] += inputs[0].numel() * k * module.out_channels // module.groups
        else:
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d, tnn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def network_engines(model, x, onnx_bytes: Optional[bytes]
                    ) -> Tuple[Dict[str, Callable[[int], object]], Dict[str, str]]:
    """The contenders that do not depend on the thread count, built once:
    {name: call(nt) -> output} and {name: why unavailable}. x is the NCHW
    float32 input tensor. Each optional engine is guarded: any exception
    while building it marks it unavailable with its message, so that one
    engine's failure (an unsupported module, an API not merged yet) leaves
    the others' figures."""
    torch = _torch()
    calls: Dict[str, Callable[[int], object]] = {}
    missing: Dict[str, str] = {}
    xn = x.numpy()
    calls["torch"] = lambda nt: model(x)
    # (Module.to converts in place: a copy keeps `model` NCHW)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    calls["torch_cl"] = lambda nt: model_cl(x_cl)
    try:
        import fastconv.torch as fastconv_torch
        optimized = fastconv_torch.optimize(model)
        calls["optimize"] = lambda nt: optimized(x)
    except Exception as exc:  # noqa: BLE001 (see the docstring)
        missing["optimize"] = _failure(exc)
    try:
        from_torch = nn.from_torch(model, input_shape=tuple(x.shape[1:]))
        x_nhwc = np.ascontiguousarray(xn.transpose(0, 2, 3, 1))
        calls["from_torch"] = lambda nt: from_torch(x_nhwc, num_threads=nt)
    except Exception as exc:  # noqa: BLE001
        missing["from_torch"] = _failure(exc)
    if onnx_bytes is None:
        missing["from_onnx"] = "the ONNX export failed"
    else:
        try:
            from_onnx = nn.from_onnx(onnx_bytes)
            calls["from_onnx"] = lambda nt: from_onnx(xn, num_threads=nt)
        except Exception as exc:  # noqa: BLE001
            missing["from_onnx"] = _failure(exc)
    return calls, missing


def openvino_model(onnx_bytes: bytes) -> Tuple[object, Optional[str]]:
    """The ONNX export read by OpenVINO (once per network: reading VGG16 takes
    seconds, compiling it for a thread count far less), or None and why not."""
    try:
        import io

        import openvino as ov
        return ov.convert_model(io.BytesIO(onnx_bytes)), None
    except ImportError:
        return None, "openvino is not installed"
    except Exception as exc:  # noqa: BLE001 (see network_engines)
        return None, _failure(exc)


def ort_session(onnx_bytes: bytes, nt: int):
    """An onnxruntime CPU session of the model: intra-op threads = nt, inter-op
    1, sequential, every graph optimization; its worker threads spin after a
    call as the engine ships (allow_spinning left on: settle() waits them out)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = nt
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def ov_request(ov_model: object, nt: int):
    """An infer request of the OpenVINO model (from openvino_model()) compiled
    for the CPU: nt threads, float32 forced, LATENCY."""
    import openvino as ov
    compiled = ov.Core().compile_model(
        ov_model, "CPU", {"INFERENCE_NUM_THREADS": nt, "INFERENCE_PRECISION_HINT": "f32",
                          "PERFORMANCE_HINT": "LATENCY"})
    return compiled.create_infer_request()


def threaded_engines(onnx_bytes: Optional[bytes], ov_model: object, ov_error: Optional[str],
                     xn: np.ndarray, nt: int
                     ) -> Tuple[Dict[str, Callable[[int], object]], Dict[str, str]]:
    """onnxruntime and OpenVINO (from openvino_model()), whose thread counts
    are fixed when a session or compiled model is made: built for nt threads,
    like network_engines()."""
    calls: Dict[str, Callable[[int], object]] = {}
    missing: Dict[str, str] = {}
    if onnx_bytes is None:
        return calls, {"onnxruntime": "the ONNX export failed",
                       "openvino": "the ONNX export failed"}
    try:
        session = ort_session(onnx_bytes, nt)
        feed = {session.get_inputs()[0].name: xn}
        calls["onnxruntime"] = lambda _: session.run(None, feed)[0]
    except ImportError:
        missing["onnxruntime"] = "onnxruntime is not installed"
    except Exception as exc:  # noqa: BLE001
        missing["onnxruntime"] = _failure(exc)
    if ov_model is None:
        missing["openvino"] = ov_error or "openvino is not installed"
        return calls, missing
    try:
        request = ov_request(ov_model, nt)
        calls["openvino"] = lambda _: request.infer({0: xn})[0]
    except Exception as exc:  # noqa: BLE001
        missing["openvino"] = _failure(exc)
    return calls, missing


def _as_nchw(out: object, like: Tuple[int, ...], nhwc: bool) -> np.ndarray:
    """A contender's output (a tensor, an array or a list of outputs) as a
    NumPy array in torch's layout, checked to have torch's shape `like`;
    `nhwc`: the contender's maps are NHWC (fastconv's from_torch)."""
    if isinstance(out, (list, tuple)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    out = np.asarray(out)
    if nhwc and out.ndim == 4:
        out = out.transpose(0, 3, 1, 2)
    if out.shape != like:
        raise ValueError(f"output of shape {out.shape}, expected torch's {like}")
    return out


def bench_networks(threads: Sequence[int],
                   specs: Optional[Sequence[NetworkSpec]] = None) -> List[dict]:
    """Time every contender on every network of `specs` (NETWORK_SUITE) at
    batch 1, float32, at each thread count; one row per network and thread
    count (the JSON's "networks"). [] without torch."""
    torch = _torch()
    if torch is None:
        return []
    from fastconv import _torch_networks

    rows = []
    for spec in NETWORK_SUITE if specs is None else specs:
        _progress(f"[networks] building {spec.label} ...")
        model = getattr(_torch_networks, spec.make)(**spec.kwargs)
        x = torch.randn(1, *spec.input_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            reference = copy.deepcopy(model).double()(x.double()).numpy()
        scale = max(float(np.abs(reference).max()), 1e-30)
        macs = count_macs(model, x)
        try:
            _progress(f"[networks] exporting {spec.label} to ONNX ...")
            onnx_bytes, export_error = export_onnx(model, x), None
        except Exception as exc:  # noqa: BLE001 (the ONNX contenders then show why)
            onnx_bytes, export_error = None, _failure(exc)
        with torch.no_grad():
            common, common_missing = network_engines(model, x, onnx_bytes)
        ov_model, ov_error = openvino_model(onnx_bytes) if onnx_bytes else (None, None)
        for nt in threads:
            _progress(f"[networks, {nt} thr] {spec.label}: building the engines ...")
            own, missing = threaded_engines(onnx_bytes, ov_model, ov_error, x.numpy(), nt)
            missing.update(common_missing)
            if export_error is not None:
                missing.update({c: f"the ONNX export failed: {export_error}"
                                for c in ("from_onnx", "onnxruntime", "openvino")})
            calls = {**common, **own}
            diffs: Dict[str, Optional[float]] = {c: None for c in NETWORK_CONTENDERS}
            before = cpu_snapshot()
            with thread_limits(nt):
                first = 0.0  # seconds of a first call of every contender
                for c in list(calls):  # the first call: its output, or why it fails
                    settle()
                    t0 = time.perf_counter()
                    try:
                        out = _as_nchw(calls[c](nt), reference.shape, c == "from_torch")
                        diffs[c] = float(np.abs(out - reference).max() / scale)
                    except Exception as exc:  # noqa: BLE001
                        missing[c] = _failure(exc)
                        del calls[c]
                    first += time.perf_counter() - t0
                # As many samples as fit NETWORK_BUDGET (a first call is slower
                # than the next: this errs towards fewer)
                lo, hi = NETWORK_REPS
                reps = max(lo, min(hi, int(NETWORK_BUDGET / max(first, 1e-9))))
                _progress(f"[networks, {nt} thr] {spec.label}: {reps} samples of "
                          f"{', '.join(calls)} ...")
                # Every sample waits for the previous engine's spinning threads
                # to stop (settle()), at one thread too: ORT, OpenVINO and the
                # OpenMP runtimes keep helper threads of their own.
                times = time_interleaved([functools.partial(f, nt) for f in calls.values()],
                                         reps, 0.0, settled=True)
            seconds: Dict[str, Optional[float]] = {c: None for c in NETWORK_CONTENDERS}
            seconds.update(zip(calls, times))
            rows.append(network_row(spec, nt, tuple(reference.shape), macs, reps, seconds,
                                    {c: missing[c] for c in NETWORK_CONTENDERS if c in missing},
                                    diffs, others_busy(before, cpu_snapshot())))
            del own, calls  # this thread count's sessions, before the next one's are made
        del common, ov_model  # this network's engines, before the next network is built
    _progress("")
    return rows


def network_row(spec: NetworkSpec, nt: int, out_shape: Tuple[int, ...], macs: int, reps: int,
                seconds: Dict[str, Optional[float]], unavailable: Dict[str, str],
                diffs: Dict[str, Optional[float]], others_busy_pct: Optional[float]) -> dict:
    """Every figure of one network at one thread count (the JSON's "networks")."""
    torch_best = min((seconds[c] for c in ("torch", "torch_cl") if seconds[c] is not None),
                     default=None)
    speedup = {v: {"onnxruntime": _ratio(seconds["onnxruntime"], seconds[v]),
                   "torch_best": _ratio(torch_best, seconds[v])} for v in FASTCONV_VARIANTS}
    return {"suite": "networks", "network": spec.label,
            "input": "x".join(str(n) for n in (1, *spec.input_shape)),
            "output": "x".join(str(n) for n in out_shape), "threads": nt, "dtype": "float32",
            "macs": macs, "reps": reps, "onnx_exporter": ONNX_EXPORTER,
            "seconds": seconds, "torch_best": torch_best,
            "gflops": {c: _ratio(2 * macs / 1e9, t) for c, t in seconds.items()},
            "speedup": speedup, "max_rel_diff_vs_torch64": diffs,
            "unavailable": unavailable, "others_busy_pct": others_busy_pct}


def _speedup(variant: str, base: str) -> Callable[[dict], str]:
    return lambda r: _fmt(r["speedup"][variant][base], ".2f", "x")


NETWORK_COLUMNS = [
    Column("network", 12, lambda r: r["network"], left=True),
    Column("thr", 3, lambda r: str(r["threads"])),
    Column("GMAC", 5, lambda r: _fmt(r["macs"] / 1e9, ".2f")),
    Column("torch", 7, lambda r: _ms(r, "torch", ".1f")),
    Column("t_cl", 7, lambda r: _ms(r, "torch_cl", ".1f")),
    Column("optim", 7, lambda r: _ms(r, "optimize", ".1f")),
    Column("fc_torch", 8, lambda r: _ms(r, "from_torch", ".1f")),
    Column("fc_onnx", 7, lambda r: _ms(r, "from_onnx", ".1f")),
    Column("ort", 7, lambda r: _ms(r, "onnxruntime", ".1f")),
    Column("ov", 7, lambda r: _ms(r, "openvino", ".1f")),
    Column("fc_t/ort", 8, _speedup("from_torch", "onnxruntime")),
    Column("fc_t/tor", 8, _speedup("from_torch", "torch_best")),
    Column("fc_o/ort", 8, _speedup("from_onnx", "onnxruntime")),
    Column("fc_o/tor", 8, _speedup("from_onnx", "torch_best")),
    Column("opt/tor", 7, _speedup("optimize", "torch_best")),
    Column("oth%", 4, lambda r: _fmt(r["others_busy_pct"], ".0f")),
]
NETWORK_DIFF_COLUMNS = [
    Column("network", 12, lambda r: r["network"], left=True),
    Column("thr", 3, lambda r: str(r["threads"])),
    *[Column(c if len(c) <= 9 else c[:9], 9,
             lambda r, c=c: _fmt(r["max_rel_diff_vs_torch64"][c], ".1e"))
      for c in NETWORK_CONTENDERS],
]


def print_networks(rows: List[dict]) -> None:
    """The networks' tables: times and ratios, the outputs' differences, and
    why contenders were unavailable."""
    print_table("networks: whole networks at batch 1, float32, ms per inference (median of "
                "interleaved samples); fc_torch / fc_onnx / optim = fastconv through "
                "nn.from_torch / nn.from_onnx / fastconv.torch.optimize; x/ort, x/tor = "
                "onnxruntime's / the faster torch layout's time over x's (>1: x faster); "
                "oth% = the CPUs' use by other processes meanwhile", rows, NETWORK_COLUMNS)
    print_table("networks: max |output - torch float64's| / max |torch float64's|, per "
                "contender", rows, NETWORK_DIFF_COLUMNS)
    reasons = {}
    for r in rows:
        for c, why in r["unavailable"].items():
            reasons.setdefault((r["network"], c), why)
    if reasons:
        print("\nunavailable ('-'):")
        for (network, c), why in reasons.items():
            print(f"  {network} {c}: {why}")
    print("\ncontenders: " + "; ".join(f"{c} = {NETWORK_LABELS[c]}" for c in NETWORK_CONTENDERS)
          + f"; ONNX exported by {ONNX_EXPORTER}, opset {ONNX_OPSET}")


# --------------------------------------------------------------------------
# --peers: each layer alone through onnxruntime and OpenVINO
# --------------------------------------------------------------------------
# LiteRT (ai-edge-litert, XNNPACK) is not a peer: it runs .tflite flatbuffers
# only, and writing one needs tensorflow (about 600 MB), which the bench does
# not depend on; ai-edge-litert is not installed where this was written either.
PEERS = ("onnxruntime", "openvino")
PEER_LABELS = {
    "onnxruntime": "onnxruntime CPUExecutionProvider (MLAS; intra-op threads = thread "
                   "count, inter-op 1, sequential, all graph optimizations, spinning "
                   "workers as shipped), output bound to a preallocated array (io_binding)",
    "openvino": "OpenVINO CPU (INFERENCE_NUM_THREADS = thread count, "
                "INFERENCE_PRECISION_HINT f32, LATENCY), input and output tensors on "
                "preallocated arrays",
}
PEER_SHORT = {"onnxruntime": "ort", "openvino": "ov"}
# A peer whose output differs from the float64 reference by more than this
# (relative to the largest output) computes another layer: it is not timed.
PEER_TOLERANCE = 1e-3
FAULT_CALLS = 10  # fastconv calls over which the minor page faults are counted
REFERENCE = ("numpy's baseline of the layer (numpy_method: matmul, im2col + matmul, taps, "
             "col2im) in float64 on the same operands")


def peer_versions() -> Dict[str, Optional[str]]:
    """The version of each peer engine, or None where it is not installed
    (onnxruntime and OpenVINO both read the layer through onnx)."""
    found: Dict[str, Optional[str]] = {}
    for peer in PEERS:
        try:
            import onnx  # noqa: F401
            found[peer] = __import__(peer).__version__
        except ImportError:
            found[peer] = None
    return found


def layer_onnx(layer: Layer, x: np.ndarray, w: np.ndarray) -> bytes:
    """`layer` as a one-node float32 ONNX model (opset ONNX_OPSET) with the
    weights w as an initializer: MatMul for a GEMM, Conv or ConvTranspose (its
    pads TensorFlow's SAME crop) in NCHW for the others. Its input is "x", of
    x's shape (NCHW for a convolution). The suites' layers have neither bias
    nor activation, nor have these graphs."""
    from onnx import TensorProto, helper, numpy_helper

    if isinstance(layer, Gemm):
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        weights, x_shape = w, x.shape
    else:
        weights, x_shape = w.transpose(3, 2, 0, 1), (1, layer.C, layer.hw, layer.hw)
        if isinstance(layer, Deconv):  # (k, k, K, C) -> (C, K, k, k)
            top = deconv_top_pad(layer)
            bottom = (layer.hw - 1) * layer.stride + layer.k - layer.out - top
            node = helper.make_node("ConvTranspose", ["x", "w"], ["y"],
                                    strides=[layer.stride] * 2, pads=[top, top, bottom, bottom])
        else:  # HWIO -> OIHW
            node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[layer.stride] * 2,
                                    pads=[layer.pad] * 4, group=layer.groups)
    graph = helper.make_graph(
        [node], layer.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ascontiguousarray(weights, np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]
                             ).SerializeToString()


def peer_calls(model: bytes, ov_model: object, ov_error: Optional[str], x: np.ndarray,
               out_shape: Tuple[int, ...], nt: int
               ) -> Tuple[Dict[str, Call], Dict[str, str]]:
    """The peers of one layer at nt threads, on the model from layer_onnx()
    (and OpenVINO's reading of it, openvino_model()) and its input x (NCHW
    for a convolution), each writing into an output array of out_shape made
    here: {peer: call(nt) -> that array} and {peer: why unavailable}."""
    calls: Dict[str, Call] = {}
    missing: Dict[str, str] = {}
    try:
        session = ort_session(model, nt)
        ort_out = np.empty(out_shape, np.float32)
        binding = session.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_output("y", "cpu", 0, np.float32, out_shape, ort_out.ctypes.data)
        calls["onnxruntime"] = lambda nt: (session.run_with_iobinding(binding), ort_out)[1]
    except ImportError:
        missing["onnxruntime"] = "onnxruntime is not installed"
    except Exception as exc:  # noqa: BLE001 (one engine's failure leaves the others)
        missing["onnxruntime"] = _failure(exc)
    if ov_model is None:
        missing["openvino"] = ov_error or "openvino is not installed"
        return calls, missing
    try:
        import openvino as ov
        request = ov_request(ov_model, nt)
        ov_out = np.empty(out_shape, np.float32)
        request.set_input_tensor(ov.Tensor(x, shared_memory=True))
        request.set_output_tensor(ov.Tensor(ov_out, shared_memory=True))
        calls["openvino"] = lambda nt: (request.infer(share_outputs=True), ov_out)[1]
    except Exception as exc:  # noqa: BLE001
        missing["openvino"] = _failure(exc)
    return calls, missing


def max_rel_err(out: np.ndarray, reference: np.ndarray, scale: float) -> float:
    """max |out - reference| / scale (scale = max |reference|)."""
    return float(np.abs(out.astype(np.float64) - reference).max() / scale)


def minor_faults_per_call(call: Callable[[], object]) -> Optional[int]:
    """Minor page faults of the whole process per call of `call`, in steady
    state (after the timing's calls), rounded: counted over FAULT_CALLS calls
    by getrusage; None where there is no resource module."""
    try:
        import resource
    except ImportError:
        return None
    settle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(FAULT_CALLS):
        call()
    return round((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / FAULT_CALLS)
