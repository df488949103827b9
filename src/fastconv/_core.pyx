# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bindings to the C operator API (csrc/fastconv.h).

The Python API validates every argument before it gets here; this layer
turns arrays into pointers, releases the GIL, and checks every buffer the C
code reads or writes against the shapes and strides it is used with: weights
are addressed only through their own array's shape and strides, inputs and
results must be C-contiguous, aligned, of the operator's dtype and hold at
least the elements the call's sizes imply, and every size product is checked
to fit in 64 bits. So no call into this module, whatever its arguments, can
make the C code read or write outside an array.
"""
import os
import threading
from math import prod

cimport numpy as cnp
from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport PyThread_get_thread_ident
from libc.stdint cimport int64_t
from libc.string cimport memcmp

from fastconv._kernels cimport *

cnp.import_array()

# The active instruction set, chosen at import by fastconv._config and
# switched by set_isa(); operators keep the one they were made with.
cdef int _active_isa = -1

# Every size the kernels compute is an int64_t: a product of sizes is checked
# here in Python integers (which cannot overflow) before C computes it.
cdef object INT64_MAX = 2**63 - 1


def isa_names():
    """Names of every instruction set, indexed by the C enum."""
    return [fc_isa_name(i).decode() for i in range(FC_ISA_COUNT)]


def supported_isas():
    """Instruction sets this build has and this CPU runs, best first."""
    return [fc_isa_name(i).decode() for i in reversed(range(FC_ISA_COUNT))
            if fc_isa_supported(i)]


def set_isa(str name):
    """Make `name` the ISA of the operators made from now on; returns the
    previous ISA name."""
    global _active_isa
    names = isa_names()
    cdef int isa = names.index(name)
    if not fc_isa_supported(isa):
        raise ValueError(f"instruction set {name!r} is not supported here")
    previous = names[_active_isa] if _active_isa >= 0 else None
    _active_isa = isa
    return previous


def active_isa():
    return fc_isa_name(_active_isa).decode()


# The activation kinds of fc_activation, indexed by the C enum (fastconv.h).
ACTIVATION_KINDS = ("none", "relu", "clip", "leaky_relu", "sigmoid", "hard_sigmoid",
                    "hard_swish", "silu", "tanh")
assert len(ACTIVATION_KINDS) == FC_ACT_COUNT


cdef fc_activation _activation(act) except *:
    """The fc_activation of a checked (kind, a, b) or None."""
    cdef fc_activation a
    a.kind, a.a, a.b = 0, 0.0, 0.0
    if act is not None:
        a.kind = ACTIVATION_KINDS.index(act[0])
        a.a, a.b = act[1], act[2]
    return a


def activate(cnp.ndarray x, cnp.ndarray y, act, bint flush, int nthreads):
    """y = act(x), both contiguous of one dtype and size (y may be x), by the
    kernels' store code; act a checked (kind, a, b)."""
    cdef int dt = _dtype_index(x)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef const void *xp = _buffer(x, n, dt, "x")
    cdef void *yp = _buffer(y, n, dt, "out")
    if cnp.PyArray_SIZE(y) != n:
        raise ValueError("internal: activate needs arrays of one size")
    cdef fc_activation a = _activation(act)
    cdef int status
    cdef int isa = _active_isa
    with nogil:
        status = fc_activate(isa, dt, a, xp, yp, n, flush, nthreads)
    _check_status(status)


def algorithm_names():
    """Names of the convolution algorithms, indexed by the C enum (0: auto)."""
    return [fc_algorithm_name(i).decode() for i in range(FC_ALGO_COUNT)]


cdef inline int _dtype_code(str dtype) except -1:
    """FC_F32 / FC_F64 for a dtype name."""
    if dtype == "float32":
        return FC_F32
    if dtype == "float64":
        return FC_F64
    raise TypeError(f"internal: unsupported dtype {dtype}")


def isa_config(str dtype):
    """The active ISA's configuration for `dtype` (configs/<isa>.h)."""
    cdef fc_isa_config c
    if not fc_isa_get_config(_active_isa, _dtype_code(dtype), &c):
        raise ValueError("internal: no configuration for the active ISA")
    return {"mr": c.mr, "nr": c.nr, "vlen": c.vlen, "kc": c.kc, "kc_gemm": c.kc_gemm,
            "mct": c.mct, "dense_rows": c.dense_rows,
            "direct_gemm_max_rows": c.direct_gemm_max_rows,
            "winograd_min_channels": c.winograd_min_channels,
            "winograd_min_tiles": c.winograd_min_tiles,
            "winograd_min_macs": c.winograd_min_macs,
            "winograd_one_call_min_tiles": c.winograd_one_call_min_tiles,
            "winograd_f4_min_tiles": c.winograd_f4_min_tiles,
            "winograd_f4_one_call_min_tiles": c.winograd_f4_one_call_min_tiles,
            "winograd_block_bytes": c.winograd_block_bytes}


def fma_probe(str dtype, int64_t iters, int nthreads):
    """Run the active ISA's register-only FMA loop; returns the flops done."""
    cdef int code = _dtype_code(dtype)
    cdef double flops
    with nogil:
        flops = fc_fma_probe(_active_isa, code, iters, nthreads)
    return flops


def cpu_features():
    cdef fc_cpu_features f = fc_cpu_detect()
    return {"sse2": bool(f.sse2), "avx": bool(f.avx), "fma": bool(f.fma),
            "avx2": bool(f.avx2), "avx512f": bool(f.avx512f),
            "avx512dq": bool(f.avx512dq), "avx512bw": bool(f.avx512bw),
            "avx512vl": bool(f.avx512vl)}


def compiler():
    return fc_compiler().decode()


def openmp_version():
    return fc_openmp_version()


def single_threaded_after_fork():
    """Whether this process is a child forked after multi-threaded kernels
    ran, and so runs every kernel on one thread (fastconv.h)."""
    return bool(fc_single_threaded_after_fork())


def max_threads():
    """omp_get_max_threads() of the calling thread (1 without OpenMP)."""
    return fc_max_threads()


def flush_denormals_supported():
    return bool(fc_flush_denormals_supported())


cdef inline int _dtype_index(cnp.ndarray a) except -1:
    """FC_F32 / FC_F64 for a float32 / float64 array."""
    cdef int num = cnp.PyArray_TYPE(a)
    if num == cnp.NPY_FLOAT32:
        return FC_F32
    if num == cnp.NPY_FLOAT64:
        return FC_F64
    raise TypeError(f"internal: unsupported dtype {a.dtype}")


def _count(*sizes):
    """The product of `sizes` as a Python int (exact, never wraps)."""
    return prod(sizes)


def _extent(*sizes):
    """The product of the non-zero `sizes`: what an empty dimension must not
    hide, since the kernels compute offsets and loop bounds from the others."""
    return prod(max(s, 1) for s in sizes)


cdef inline void *_buffer(cnp.ndarray a, object need, int dtype, str what) except NULL:
    """Pointer to an aligned, C-contiguous array of `dtype` holding at least
    `need` elements (a Python int)."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"internal: {what} is not C-contiguous")
    if not cnp.PyArray_ISALIGNED(a):  # the kernels read whole, aligned elements
        raise ValueError(f"internal: {what} is not aligned")
    if _dtype_index(a) != dtype:
        raise TypeError(f"internal: {what} has dtype {a.dtype}")
    if cnp.PyArray_SIZE(a) < need:
        raise ValueError(f"internal: {what} holds {a.size} elements, needs {need}")
    return cnp.PyArray_DATA(a)  # numpy allocates at least one byte, never NULL


# Ctrl-C during a long run. Python runs signal handlers in the main thread
# only, and only between bytecodes: while a kernel runs, the calling thread
# (if it is the main one) takes the GIL back every FC_POLL_SECONDS to run
# them, and the run stops (FC_EINTR) if a handler raised, KeyboardInterrupt
# on Ctrl-C. From any other thread a run is not interrupted, as in Python.
def same_bytes(cnp.ndarray a, cnp.ndarray b):
    """Whether a and b, both C-contiguous, have one dtype and shape and the
    same bytes (so NaNs compare by their bits): the check that the conv2d
    function's kept weights are still the caller's (fastconv._prepared)."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b)):
        raise ValueError("internal: same_bytes needs C-contiguous arrays")
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(b) or cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    cdef int i
    for i in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, i) != cnp.PyArray_DIM(b, i):
            return False
    cdef size_t n = <size_t>cnp.PyArray_NBYTES(a)
    cdef const void *pa = cnp.PyArray_DATA(a)
    cdef const void *pb = cnp.PyArray_DATA(b)
    cdef int differ
    with nogil:
        differ = memcmp(pa, pb, n)
    return differ == 0


cdef unsigned long _main_thread = threading.main_thread().ident


def _forked():
    """A forked child's only thread is its main thread (Python's too)."""
    global _main_thread
    _main_thread = PyThread_get_thread_ident()


os.register_at_fork(after_in_child=_forked)


cdef int _run_signal_handlers(void *ctx) noexcept nogil:
    """fc_interrupt's poll: 1 when a handler raised; its exception goes to
    the list ctx, for the binding to raise when the run has returned."""
    with gil:
        try:
            PyErr_CheckSignals()
        except BaseException as exc:
            (<list>ctx).append(exc)
            return 1
    return 0


cdef inline fc_interrupt *_interrupt(fc_interrupt *it, list raised):
    """it, ready for one run, in the main thread (a handler's exception will
    be appended to `raised`); NULL elsewhere."""
    if PyThread_get_thread_ident() != _main_thread:
        return NULL
    it.poll, it.ctx, it.stop, it.checks, it.next = _run_signal_handlers, <void *>raised, 0, 0, 0
    return it


cdef inline _check_status(int status, list raised=None):
    if status == FC_EINTR:
        raise raised[0]
    if status == FC_ENOMEM:
        raise MemoryError("fastconv: out of memory for the convolution's weights or workspace")
    if status == FC_EINVAL:
        raise ValueError("internal: the operator refused its arguments")


cdef fc_weight_strides _strides(cnp.ndarray w, tuple axes) except *:
    """The element strides of w's axes `axes` (tap row, tap column, input
    channel, output channel): w's own, so reads through them stay in w."""
    if cnp.PyArray_NDIM(w) != 4 or sorted(axes) != [0, 1, 2, 3]:
        raise ValueError("internal: weights must be 4-D with axes a permutation of 0..3")
    if not cnp.PyArray_ISALIGNED(w):
        raise ValueError("internal: weight is not aligned")
    size = cnp.PyArray_ITEMSIZE(w)
    steps = []
    for a in axes:
        if w.strides[a] % size:
            raise ValueError("internal: weight strides are not multiples of the item size")
        steps.append(w.strides[a] // size)
    cdef fc_weight_strides ws
    ws.ty, ws.tx, ws.c, ws.k = steps
    return ws


cdef class ConvOp:
    """A convolution operator (csrc/operators/convolution.c): the weights of
    w (4-D, its axes `axes` being tap row, tap column, input channel within
    the group and output channel) and bias (K values or None), for `groups`,
    stride and dilation, on the active ISA (transposed: a transposed
    convolution, w its direct kernel: fastconv.h, FC_CONV_TRANSPOSED; its
    packed sub-kernels per class of taps take about w's size, so the
    extent check below covers them). With one_call, w and bias are
    read in place (they are kept referenced here) and packed only if a call
    needs it; otherwise the operator keeps its own packed copies."""
    cdef fc_conv_op *op
    cdef int dtype
    cdef readonly int64_t C, K, groups, kh, kw
    cdef object _w, _bias  # what a one-call operator reads in place

    def __cinit__(self, cnp.ndarray w, tuple axes, int64_t groups, bias, tuple stride,
                  tuple dilation, bint one_call, bint no_winograd, bint winograd_now,
                  int nthreads, bint transposed=False):
        self.dtype = _dtype_index(w)
        cdef fc_weight_strides ws = _strides(w, axes)
        self.kh, self.kw = w.shape[axes[0]], w.shape[axes[1]]
        cg, self.K, self.groups = w.shape[axes[2]], w.shape[axes[3]], groups
        self.C = _count(cg, groups)
        cdef fc_conv_params p
        p.C, p.K, p.groups, p.kh, p.kw = self.C, self.K, groups, self.kh, self.kw
        p.sh, p.sw = stride
        p.dh, p.dw = dilation
        if groups < 1 or self.K % groups:
            raise ValueError("internal: groups must divide K")
        item = cnp.PyArray_ITEMSIZE(w)
        kg = self.K // groups
        # the packed panels (each group's K/groups outputs rounded up to a
        # vector, a row for the bias) and Winograd's 16 (C + 1, K) panels
        if (_extent(groups, kg + 64, _count(self.kh, self.kw, cg) + 1, item) > INT64_MAX
                or _extent(16, self.K + 64, self.C + 1, item) > INT64_MAX):
            raise OverflowError("the packed weights would take more than 2**63 - 1 bytes")
        cdef const void *bp = NULL
        if bias is not None:
            bp = _buffer(bias, self.K, self.dtype, "bias")
        flags = ((FC_CONV_ONE_CALL if one_call else 0) | (FC_CONV_NO_WINOGRAD if no_winograd else 0)
                 | (FC_CONV_WINOGRAD_NOW if winograd_now else 0)
                 | (FC_CONV_TRANSPOSED if transposed else 0))
        cdef const void *wp = cnp.PyArray_DATA(w)
        cdef int status
        cdef int isa = _active_isa, code = self.dtype, f = flags
        with nogil:
            status = fc_conv_create(isa, code, &p, wp, ws, bp, f, nthreads, &self.op)
        _check_status(status)
        if one_call:
            self._w, self._bias = w, bias

    def __dealloc__(self):
        fc_conv_destroy(self.op)

    @property
    def algorithm(self):
        """The algorithm the weights were prepared for ("auto": per call)."""
        return fc_algorithm_name(fc_conv_algorithm(self.op)).decode()

    @property
    def isa(self):
        return fc_conv_isa(self.op).decode()

    def plan(self, ConvCall call):
        """(algorithm name, multiply-adds executed, direct multiply-adds) of a
        call; ValueError if the call's forced algorithm cannot run it."""
        cdef fc_conv_plan plan
        _check_status(fc_conv_plan_call(self.op, &call.c, &plan))
        return fc_algorithm_name(plan.algorithm).decode(), plan.macs, plan.direct_macs

    def run(self, ConvCall call, cnp.ndarray x, cnp.ndarray y, int nthreads,
            cnp.ndarray residual=None):
        """y = conv(x) (+ residual) (all contiguous NHWC of the call's sizes;
        residual not y); returns the name of the algorithm that produced y."""
        cdef const void *xp = _buffer(x, _count(call.c.N, call.c.H, call.c.W, self.C),
                                      self.dtype, "x")
        cdef void *yp = _buffer(y, _count(call.c.N, call.c.Ho, call.c.Wo, self.K),
                                self.dtype, "out")
        cdef const void *rp = NULL
        if residual is not None:
            rp = _buffer(residual, _count(call.c.N, call.c.Ho, call.c.Wo, self.K), self.dtype,
                         "residual")
            if rp == yp:
                raise ValueError("internal: the residual is the output")
        cdef int status, ran = 0
        cdef fc_interrupt it
        raised = []
        cdef fc_interrupt *itp = _interrupt(&it, raised)
        with nogil:
            status = fc_conv_run(self.op, &call.c, xp, rp, yp, nthreads, itp, &ran)
        _check_status(status, raised)
        return fc_algorithm_name(ran).decode()

    def unpack(self, cnp.ndarray w, tuple axes):
        """Write the weights back, exactly, into w (of the operator's dtype and
        shape: axes as for the constructor); the bias is not written."""
        if _dtype_index(w) != self.dtype or tuple(w.shape[a] for a in axes) != (
                self.kh, self.kw, self.C // self.groups, self.K):
            raise ValueError("internal: unpack into an array of another shape or dtype")
        if not cnp.PyArray_ISWRITEABLE(w):
            raise ValueError("internal: unpack into a read-only array")
        cdef fc_weight_strides ws = _strides(w, axes)
        cdef void *wp = cnp.PyArray_DATA(w)
        cdef int status
        with nogil:
            status = fc_conv_unpack(self.op, wp, ws)
        _check_status(status)


cdef class ConvCall:
    """One call's sizes and options (fc_conv_call), checked once: an input
    (N, H, W) with padding before its first row and column, an output
    (Ho, Wo) of K channels; immutable, so it may serve several threads."""
    cdef fc_conv_call c

    def __cinit__(self, int64_t N, int64_t H, int64_t W, int64_t C, int64_t K,
                  int64_t pad_top, int64_t pad_left, int64_t Ho, int64_t Wo,
                  tuple kernel, tuple stride, tuple dilation, act, bint flush,
                  bint allow_winograd, str algorithm, int64_t itemsize,
                  bint transposed=False):
        names = algorithm_names()
        if algorithm not in names:
            raise ValueError(f"algorithm must be one of {names}; got {algorithm!r}")
        kh, kw = kernel
        sh, sw = stride
        dh, dw = dilation
        # The kernels address the hp x wp zero-padded window of each image
        # that the output reads (and may copy it whole): its size in bytes,
        # like the input's and the result's, must fit in int64_t.
        # (a transposed convolution's phases run at stride 1 over windows of
        # the input and output's sizes plus the kernel's span)
        hp = (_count(Ho - 1, 1 if transposed else sh) + _count(kh - 1, dh) + 1
              + (H if transposed else 0))
        wp = (_count(Wo - 1, 1 if transposed else sw) + _count(kw - 1, dw) + 1
              + (W if transposed else 0))
        if (min(N, H, W, C, K, pad_top, pad_left, Ho, Wo) < 0
                or _extent(N, max(H, hp), max(W, wp), C, itemsize) > INT64_MAX
                or _extent(N, Ho, Wo, K, itemsize) > INT64_MAX):
            raise ValueError("internal: the convolution's sizes do not fit in 64-bit sizes")
        self.c.N, self.c.H, self.c.W = N, H, W
        self.c.pad_top, self.c.pad_left, self.c.Ho, self.c.Wo = pad_top, pad_left, Ho, Wo
        self.c.act = _activation(act)
        self.c.flush_denormals, self.c.allow_winograd = flush, allow_winograd
        self.c.algorithm = names.index(algorithm)


def pool(cnp.ndarray x, cnp.ndarray y, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
         int64_t ph, int64_t pw, bint is_max, bint count_include_pad, int nthreads,
         region=None):
    """Max or average pooling of contiguous NHWC x into contiguous NHWC y;
    region=(Hm, Wm, y_origin, x_origin, oy_origin, ox_origin): x and y are
    a region of a map of Hm x Wm (see fc_pool_desc)."""
    cdef fc_pool_desc d
    if x.ndim != 4 or y.ndim != 4:
        raise ValueError("internal: pooling needs 4-D NHWC arrays")
    d.N, d.H, d.W, d.C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    d.Ho, d.Wo = y.shape[1], y.shape[2]
    if y.shape[0] != d.N or y.shape[3] != d.C:
        raise ValueError("internal: pooling output shape")
    d.kh, d.kw, d.sh, d.sw, d.ph, d.pw = kh, kw, sh, sw, ph, pw
    d.max, d.count_include_pad = is_max, count_include_pad
    if region is None:
        d.Hm, d.Wm, d.y_origin, d.x_origin, d.oy_origin, d.ox_origin = d.H, d.W, 0, 0, 0, 0
    else:
        d.Hm, d.Wm, d.y_origin, d.x_origin, d.oy_origin, d.ox_origin = region
    cdef int dt = _dtype_index(x)
    if (_extent(d.N, d.H, d.W, d.C, x.itemsize) > INT64_MAX
            or _extent(d.N, d.Ho, d.Wo, d.C, x.itemsize) > INT64_MAX):
        raise ValueError("internal: the pooling's sizes do not fit in 64-bit sizes")
    cdef const void *xp = _buffer(x, _count(d.N, d.H, d.W, d.C), dt, "x")
    cdef void *yp = _buffer(y, _count(d.N, d.Ho, d.Wo, d.C), dt, "out")
    cdef int status
    cdef int isa = _active_isa
    cdef fc_interrupt it
    raised = []
    cdef fc_interrupt *itp = _interrupt(&it, raised)
    with nogil:
        status = fc_pool_run(isa, dt, &d, xp, yp, nthreads, itp)
    _check_status(status, raised)
