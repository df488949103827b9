"""The weights that the functions conv2d, conv_transpose2d and matmul see
again, prepared once and kept while they hold the same values.

A function call makes an operator that serves that one call: it reads the
weights in place where its algorithm can and packs or transforms them
inside the call where it cannot. Called again with the same weight array,
the function instead keeps a private copy of the weights and an operator
over that copy: the operator's packed panels and Winograd weights, made at
the copy's first call that needs them, then serve every later call.

Never stale: a kept operator serves a call only when the call's weight is the
same array object (looked up by identity, held by a weak reference, so the
cache never keeps the caller's array alive) and its bytes, and those of the
bias, equal the copy's (a memcmp per call); any change, by whatever means,
prepares the weights again. The kept operator is one-call too (the
thresholds of conv2d's algorithm choice) and reads a copy laid out as the
caller's array, so it computes bitwise what the first call computed.

Only C-contiguous weights given as an ndarray of the call's dtype are kept
(anything else would be a new array at every call). The memory is bounded
by set_weight_cache (the copies and an upper estimate of what their
operators make; least recently used first out); an array that dies takes
its entry with it.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Optional, Tuple

import numpy as np

from fastconv import _core
from fastconv._validate import positive_int

__all__ = ["get_weight_cache", "set_weight_cache", "clear_weight_cache"]

# What the kept operators may hold at most, in bytes (see set_weight_cache).
_max_bytes = 512 * 2**20
# Entries at most, prepared or only seen once (each is small).
MAX_ENTRIES = 512


class _Entry:
    """A weight array seen by a function: a weak reference to it, and once
    prepared, `kept` = (the copy of its weights, of its bias, the operator
    object over them), one tuple so that a reader never sees the parts of
    two preparations, and the bytes they are counted for."""
    __slots__ = ("ref", "kept", "nbytes")

    def __init__(self, ref: weakref.ref) -> None:
        self.ref = ref
        self.kept: Optional[Tuple[np.ndarray, Optional[np.ndarray], Any]] = None
        self.nbytes = 0


_entries: "OrderedDict[tuple, _Entry]" = OrderedDict()
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    """A child forked while another thread held the lock would wait for it
    forever: the child gets a lock of its own."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def _forget(key: tuple) -> Callable[[weakref.ref], None]:
    def dead(_ref: weakref.ref) -> None:
        # (one dict operation: atomic under the GIL, and no lock, which the
        # thread whose reference drop runs this might hold)
        _entries.pop(key, None)
    return dead


def _same_bias(b: Optional[np.ndarray], kept: Optional[np.ndarray]) -> bool:
    if b is None or kept is None:
        return b is None and kept is None
    return _core.same_bytes(np.ascontiguousarray(b), kept)


def prepared(options: tuple, weight: Any, w: np.ndarray, b: Optional[np.ndarray],
             make: Callable[[np.ndarray, Optional[np.ndarray]], Any],
             growth: Callable[[Any], float]) -> Any:
    """The kept operator object for the weights w (the caller's `weight`
    after conversion) and bias b under `options` (a tuple of what else the
    object depends on), or None: the caller then makes a one-call one as
    for a first call. make(w_copy, b_copy) makes the object over private
    copies (checking them: its errors are the first call's); growth(object)
    = the most memory its operators make, in multiples of the weights' bytes
    (the packed panels, Winograd's transformed weights)."""
    if not _max_bytes or w is not weight or not w.flags.c_contiguous:
        return None
    key = (id(weight), _core.active_isa()) + options
    entry = _entries.get(key)
    if entry is not None and entry.ref() is weight:
        # (a hit takes no lock: the dict's operations are atomic, and what
        # is kept is replaced as one tuple)
        kept = entry.kept
        if kept is not None and _core.same_bytes(w, kept[0]) and _same_bias(b, kept[1]):
            try:
                _entries.move_to_end(key)
            except KeyError:  # dropped meanwhile: it still serves this call
                pass
            return kept[2]
    with _lock:
        entry = _entries.get(key)
        if entry is None or entry.ref() is not weight:
            # (a dead entry's id reused: its callback has not run yet)
            entry = _Entry(weakref.ref(weight, _forget(key)))
            _entries[key] = entry
            while len(_entries) > MAX_ENTRIES:
                _entries.popitem(last=False)
            return None  # seen once: a one-call operator serves it
        _entries.move_to_end(key)
    if w.nbytes > _max_bytes // 2:
        return None
    copy, bias = w.copy(order="C"), None if b is None else b.copy(order="C")
    weights = make(copy, bias)
    nbytes = int(w.nbytes * (1 + growth(weights))) + (0 if b is None else b.nbytes)
    if nbytes > _max_bytes // 2:  # would leave little room for anything else: not kept
        return weights
    with _lock:
        entry.kept, entry.nbytes = (copy, bias, weights), nbytes
        total = sum(e.nbytes for e in _entries.values())
        while total > _max_bytes:
            oldest_key, oldest = next(iter(_entries.items()))
            if oldest is entry:
                break
            total -= oldest.nbytes
            del _entries[oldest_key]
    return weights


def get_weight_cache() -> dict:
    """What the functions keep of the weights they see again.

    Returns
    -------
    dict
        ``max_bytes`` (set_weight_cache's limit), ``bytes`` (what the kept
        weights are counted for now: their copies and an upper estimate of
        their packed and transformed weights), ``weights`` (how many are
        kept) and ``seen`` (weight arrays seen once, not yet kept).
    """
    with _lock:
        entries = list(_entries.values())
    kept = [e for e in entries if e.kept is not None]
    return {"max_bytes": _max_bytes, "bytes": sum(e.nbytes for e in kept),
            "weights": len(kept), "seen": len(entries) - len(kept)}


def set_weight_cache(max_bytes: int) -> None:
    """Limit the memory of the weights that conv2d, conv_transpose2d and
    matmul keep for the weight arrays they are called with more than once.

    A function's first call with a weight array prepares its weights for
    that call alone (reading them in place where the algorithm can). A
    second call with the same array object keeps a copy of the weights and
    the operator over it, so that later calls pack and transform nothing:
    a call then costs about what a fastconv.Conv2d layer's does, plus one
    comparison of the weights (and bias) with the kept copy, which makes any
    change to them, in place or not, prepare them again. Results are
    bitwise those of the first call. Only C-contiguous ndarray weights of
    the call's dtype are kept; the least recently used go first when the
    limit is reached, and an array that is garbage-collected takes its
    copy with it.

    Parameters
    ----------
    max_bytes : int
        The most the kept copies and their packed and transformed weights
        may take (default 512 MiB); weights that alone would take more than
        half of it are not kept. 0 turns keeping off and frees what is kept.
    """
    global _max_bytes
    _max_bytes = positive_int("set_weight_cache", "max_bytes", max_bytes, minimum=0)
    if not _max_bytes:
        clear_weight_cache()
    else:
        with _lock:
            total = sum(e.nbytes for e in _entries.values())
            while total > _max_bytes and _entries:
                total -= _entries.popitem(last=False)[1].nbytes


def clear_weight_cache() -> None:
    """Free every weight kept by conv2d, conv_transpose2d and matmul."""
    with _lock:
        _entries.clear()
