"""Run-time configuration: instruction-set dispatch, thread count, build facts."""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Dict, List

import numpy as np

from fastconv import _core
from fastconv._validate import positive_int
from fastconv._prepared import get_weight_cache

__all__ = ["config", "show_config", "get_num_threads", "set_num_threads",
           "get_flush_denormals", "set_flush_denormals", "get_winograd", "set_winograd"]

def available_isas() -> List[str]:
    """Instruction sets this build has and this CPU can run, best first."""
    return _core.supported_isas()


def set_isa(name: str) -> str:
    """Make instruction set `name` the one of the operators made from now on
    (for tests and benchmarks; a layer keeps the one it was built with);
    returns the previous one."""
    if name not in _core.isa_names():
        raise ValueError(f"isa must be one of {_core.isa_names()}; got {name!r}")
    if name not in available_isas():
        raise ValueError(f"isa {name!r} is not supported on this CPU/build; "
                         f"available: {available_isas()}")
    return _core.set_isa(name)


def _select_initial_isa() -> None:
    """Best supported ISA, or the one FASTCONV_ISA asks for."""
    best = available_isas()[0]
    forced = os.environ.get("FASTCONV_ISA", "").strip().lower()
    if forced and forced != best:
        if forced in available_isas():
            best = forced
        else:
            warnings.warn(
                f"FASTCONV_ISA={forced!r} is not available here (available: "
                f"{available_isas()}); using {best!r}", RuntimeWarning, stacklevel=3)
    _core.set_isa(best)


def _default_num_threads() -> int:
    """OMP_NUM_THREADS if set, else the CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_num_threads = _default_num_threads()
# OpenMP's thread limit (omp_get_max_threads) as this process started; a
# lower one later means that threadpoolctl (or omp_set_num_threads) limited
# it, and the default thread count follows (see resolve_threads).
_openmp_initial_limit = _core.max_threads()


def get_num_threads() -> int:
    """Number of threads fastconv's kernels use when num_threads is None.

    Returns
    -------
    int
        The package default: set_num_threads()'s last value, else
        OMP_NUM_THREADS, else the number of CPUs this process may use.
        A build without OpenMP always runs one thread (see config()).
        Inside threadpoolctl's ``threadpool_limits(n)`` (which lowers
        OpenMP's limit), calls that pass no num_threads run at most n
        threads; an explicit num_threads is honoured as given.
    """
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set the number of threads used when a call passes num_threads=None.

    Parameters
    ----------
    n : int
        At least 1. Safe to call while other threads are computing: calls
        already running keep the count they started with.
    """
    global _num_threads
    n = positive_int("set_num_threads", "n", n)
    _num_threads = n  # (one assignment: atomic, and no lock for a fork to leave held)


# More threads than this never run: a request beyond it is served by this many
# (results do not depend on the thread count, only the speed would).
MAX_THREADS = 1024


def _switch(fn: str, enabled: Any) -> bool:
    """enabled, checked to be a bool (TypeError otherwise), for a setter."""
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"{fn}: enabled must be a bool; got {enabled!r}")
    return bool(enabled)


_flush_denormals = os.environ.get("FASTCONV_FLUSH_DENORMALS", "1").strip() not in ("0", "")


def get_flush_denormals() -> bool:
    """Whether the kernels run with subnormal numbers flushed to zero.

    Returns
    -------
    bool
        True by default (FASTCONV_FLUSH_DENORMALS=0 at import turns it off).
        While a kernel runs, each of its threads sets the CPU's
        flush-to-zero and denormals-are-zero modes (x86 MXCSR FTZ/DAZ,
        AArch64 FPCR FZ; on other targets nothing is set and config() reports
        flush_denormals False) and restores its previous mode afterwards, so the caller's own
        floating-point state is never changed. Subnormal inputs, weights and
        results are then treated as zero (sign kept), which avoids the
        10-100x slowdown subnormal arithmetic costs on most CPUs. This is
        for the convolution and matrix kernels; pooling keeps subnormals.
    """
    return _flush_denormals


def set_flush_denormals(enabled: bool) -> None:
    """Choose whether kernels flush subnormal numbers to zero (see
    get_flush_denormals). With False, subnormals follow IEEE 754 exactly.

    Parameters
    ----------
    enabled : bool
    """
    global _flush_denormals
    _flush_denormals = _switch("set_flush_denormals", enabled)


_winograd = os.environ.get("FASTCONV_WINOGRAD", "1").strip() not in ("0", "")


def get_winograd() -> bool:
    """Whether 3x3 convolutions may run as Winograd F(2x2, 3x3) or F(4x4, 3x3).

    Returns
    -------
    bool
        True by default (FASTCONV_WINOGRAD=0 at import turns it off). A 3x3,
        stride 1, undilated, one-group convolution with enough input and
        output channels and enough tiles of 2x2 outputs per image for the
        transforms to pay (more for conv2d, whose choice assumes the call
        pays the transforms: it is the same at every call, also once the
        weights are kept; the thresholds are the ISA's,
        config()["isa_config"]) then does 16
        multiply-adds per tile and channel pair instead of 36: 1.1-1.8x
        faster on VGG16's and ResNet-50's 3x3 layers. Over enough 4x4 tiles
        per image (winograd_f4_min_tiles; winograd_f4_one_call_min_tiles for
        conv2d) F(4x4, 3x3) runs instead: 36 multiply-adds per 16 outputs,
        with an error about 15 times F(2x2)'s (a few 1e-6 of the largest
        output in float32 at 64 channels, about 2e-5 at 512).
        Its rounding differs from the direct convolution's (F(2x2)'s error
        against an exact result is of the same order, F(4x4)'s some 6 times
        larger), and it still gives
        bitwise the same result for every thread count and batch size. An
        input or weights holding Inf or NaN, and a call whose transformed
        values or outputs overflow, run the direct convolution, whose IEEE
        semantics the transforms would not keep.
    """
    return _winograd


def set_winograd(enabled: bool) -> None:
    """Allow or forbid the Winograd path for 3x3 convolutions (see
    get_winograd). With False every convolution runs the direct kernels.

    Parameters
    ----------
    enabled : bool
    """
    global _winograd
    _winograd = _switch("set_winograd", enabled)


def resolve_threads(fn: str, num_threads: Any) -> int:
    """The thread count for one call: num_threads, or the package default,
    lowered to OpenMP's limit for the calling thread where that limit was
    lowered after import (threadpoolctl.threadpool_limits does so)."""
    if num_threads is not None:
        return min(positive_int(fn, "num_threads", num_threads), MAX_THREADS)
    limit = _core.max_threads()
    n = _num_threads if limit >= _openmp_initial_limit else min(_num_threads, limit)
    return min(n, MAX_THREADS)


def config() -> Dict[str, Any]:
    """Facts about this fastconv build and the machine it runs on.

    Returns
    -------
    dict
        ``version``, ``python``, ``numpy``, ``compiler``, ``openmp`` (bool),
        ``openmp_version`` (yyyymm or None), ``num_threads``,
        ``single_threaded_after_fork`` (True in a child forked after the
        parent ran kernels on several threads: OpenMP's threads do not
        survive fork(), so the child runs one; ``num_threads`` is then 1),
        ``flush_denormals`` (whether the kernels flush subnormals: the
        setting, on a target that can), ``winograd``, ``cpu_features``
        (name -> bool), ``isa_available`` (best first), ``isa_forced`` (the
        FASTCONV_ISA value or None), ``isa`` (the instruction set every
        kernel family runs) and ``isa_config`` (dtype -> that ISA's
        configuration: register tile ``mr`` x ``nr`` values, ``vlen``,
        reduction blocks ``kc`` / ``kc_gemm``, ``mct`` and the algorithm
        thresholds, from csrc/configs/<isa>.h), ``weight_cache`` (what the
        functions keep of weights they see again: get_weight_cache()).
    """
    from fastconv import __version__
    import numpy

    omp = _core.openmp_version()
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "compiler": _core.compiler(),
        "openmp": bool(omp),
        "openmp_version": omp or None,
        "num_threads": _num_threads if omp and not _core.single_threaded_after_fork() else 1,
        "single_threaded_after_fork": _core.single_threaded_after_fork(),
        "flush_denormals": _flush_denormals and _core.flush_denormals_supported(),
        "winograd": _winograd,
        "weight_cache": get_weight_cache(),
        "cpu_features": _core.cpu_features(),
        "isa_available": available_isas(),
        "isa_forced": os.environ.get("FASTCONV_ISA") or None,
        "isa": _core.active_isa(),
        "isa_config": {dtype: _core.isa_config(dtype) for dtype in ("float32", "float64")},
    }


def format_config() -> str:
    def lines(items: Dict[str, Any], indent: str) -> List[str]:
        out = []
        for key, value in items.items():
            if isinstance(value, dict):
                out += [f"{indent}{key}:"] + lines(value, indent + "  ")
            else:
                out.append(f"{indent}{key}: {value}")
        return out
    return "\n".join(lines(config(), ""))


def show_config() -> None:
    """Print config(): version, compiler, OpenMP, CPU features, the
    instruction set the kernels run and its configuration."""
    print(format_config())
