# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bindings to the C kernels.

The Python API validates every argument before it gets here; this layer only
turns arrays into pointers, checks that each buffer is large enough for the
geometry it is used with (so that a bug above can never make the kernels
read or write out of bounds), releases the GIL and calls the dispatch table.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t

from fastconv._kernels cimport *

cnp.import_array()

# The active kernels per dtype (index FC_F32 / FC_F64), chosen at import by
# fastconv._config and switched by set_isa().
cdef const fc_kernel_set *_active[2]
cdef int _active_isa = -1


def isa_names():
    """Names of every instruction set, indexed by the C enum."""
    return [fc_isa_name(i).decode() for i in range(FC_ISA_COUNT)]


def supported_isas():
    """Instruction sets this build has and this CPU runs, best first."""
    return [fc_isa_name(i).decode() for i in reversed(range(FC_ISA_COUNT))
            if fc_isa_supported(i)]


def set_isa(str name):
    """Switch every kernel family to `name`; returns the previous ISA name."""
    global _active_isa
    names = isa_names()
    cdef int isa = names.index(name)
    if not fc_isa_supported(isa):
        raise ValueError(f"instruction set {name!r} is not supported here")
    previous = names[_active_isa] if _active_isa >= 0 else None
    _active[FC_F32] = fc_kernels(isa, FC_F32)
    _active[FC_F64] = fc_kernels(isa, FC_F64)
    _active_isa = isa
    return previous


def active_isa():
    return fc_isa_name(_active_isa).decode()


def register_tile(str dtype):
    """(MR, NR) of the active kernels for `dtype`: output pixels x channels."""
    cdef const fc_kernel_set *ks = _active[FC_F64 if dtype == "float64" else FC_F32]
    return (ks.mr, ks.nr)


def fma_probe(str dtype, int64_t iters, int nthreads):
    """Run the active ISA's register-only FMA loop; returns the flops done."""
    cdef const fc_kernel_set *ks = _active[FC_F64 if dtype == "float64" else FC_F32]
    cdef double flops
    with nogil:
        flops = ks.fma_probe(iters, nthreads)
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


cdef inline int _dtype_index(cnp.ndarray a) except -1:
    cdef int num = cnp.PyArray_TYPE(a)
    if num == cnp.NPY_FLOAT32:
        return FC_F32
    if num == cnp.NPY_FLOAT64:
        return FC_F64
    raise TypeError(f"internal: unsupported dtype {a.dtype}")


cdef inline void *_buffer(cnp.ndarray a, int64_t need, int dtype, str what) except NULL:
    """Pointer to a C-contiguous array of `dtype` holding at least `need` elements."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"internal: {what} is not C-contiguous")
    if _dtype_index(a) != dtype:
        raise TypeError(f"internal: {what} has dtype {a.dtype}")
    if cnp.PyArray_SIZE(a) < need:
        raise ValueError(f"internal: {what} holds {a.size} elements, needs {need}")
    return cnp.PyArray_DATA(a)  # numpy allocates at least one byte, never NULL


cdef inline _check_status(int status):
    if status == FC_ENOMEM:
        raise MemoryError("fastconv: out of memory for the convolution workspace")


cdef class Geometry:
    """One convolution's shape, bound to the kernels of one ISA and dtype.

    The kernel set is captured at construction, so weights packed by a
    Geometry are always read back with the same register tile even if
    set_isa() is called meanwhile.
    """
    cdef fc_conv_desc d
    cdef const fc_kernel_set *ks
    cdef int dtype

    def __cinit__(self, str dtype, int64_t N, int64_t H, int64_t W, int64_t C,
                  int64_t K, int64_t groups, int64_t kh, int64_t kw,
                  int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                  int64_t pad_top, int64_t pad_left, int64_t Ho, int64_t Wo,
                  bint relu, bint has_bias):
        if dtype == "float32":
            self.dtype = FC_F32
        elif dtype == "float64":
            self.dtype = FC_F64
        else:
            raise TypeError(f"internal: unsupported dtype {dtype}")
        self.ks = _active[self.dtype]
        if self.ks == NULL:
            raise RuntimeError("fastconv: no kernels selected")
        self.d.N, self.d.H, self.d.W, self.d.C, self.d.K = N, H, W, C, K
        self.d.groups, self.d.kh, self.d.kw = groups, kh, kw
        self.d.sh, self.d.sw, self.d.dh, self.d.dw = sh, sw, dh, dw
        self.d.pad_top, self.d.pad_left, self.d.Ho, self.d.Wo = pad_top, pad_left, Ho, Wo
        self.d.relu, self.d.has_bias = relu, has_bias

    @property
    def isa(self):
        return self.ks.isa.decode()

    @property
    def packed_size(self):
        return self.ks.packed_size(&self.d)

    def pack(self, cnp.ndarray w, tuple strides, bias, cnp.ndarray packed):
        """Pack w (any strides, in elements: tap row, tap column, channel, output)."""
        cdef fc_weight_strides ws
        ws.ty, ws.tx, ws.c, ws.k = strides
        cdef const void *wp = cnp.PyArray_DATA(w)
        cdef const void *bp = NULL
        if _dtype_index(w) != self.dtype:
            raise TypeError("internal: weight dtype")
        if w.size < self.d.kh * self.d.kw * (self.d.C // self.d.groups) * self.d.K:
            raise ValueError("internal: weight too small")
        if bias is not None:
            bp = _buffer(bias, self.d.K, self.dtype, "bias")
        cdef void *pp = _buffer(packed, self.ks.packed_size(&self.d), self.dtype, "packed")
        with nogil:
            self.ks.pack(&self.d, wp, ws, bp, pp)

    def conv(self, cnp.ndarray x, cnp.ndarray packed, cnp.ndarray y, int nthreads):
        cdef const void *xp = _buffer(x, self.d.N * self.d.H * self.d.W * self.d.C,
                                      self.dtype, "x")
        cdef const void *pp = _buffer(packed, self.ks.packed_size(&self.d), self.dtype, "packed")
        cdef void *yp = _buffer(y, self.d.N * self.d.Ho * self.d.Wo * self.d.K,
                                self.dtype, "out")
        cdef int status
        with nogil:
            status = self.ks.conv(&self.d, xp, pp, yp, nthreads)
        _check_status(status)

    def dwconv(self, cnp.ndarray x, cnp.ndarray w, bias, cnp.ndarray y, int nthreads):
        if not (self.d.groups == self.d.C == self.d.K):
            raise ValueError("internal: dwconv needs groups == C == K")
        cdef const void *xp = _buffer(x, self.d.N * self.d.H * self.d.W * self.d.C,
                                      self.dtype, "x")
        cdef const void *wp = _buffer(w, self.d.kh * self.d.kw * self.d.C, self.dtype, "weight")
        cdef const void *bp = NULL
        if bias is not None:
            bp = _buffer(bias, self.d.C, self.dtype, "bias")
        cdef void *yp = _buffer(y, self.d.N * self.d.Ho * self.d.Wo * self.d.K,
                                self.dtype, "out")
        cdef int status
        with nogil:
            status = self.ks.dwconv(&self.d, xp, wp, bp, yp, nthreads)
        _check_status(status)
