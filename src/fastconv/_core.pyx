# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bindings to the C kernels.

The Python API validates every argument before it gets here; this layer only
turns arrays into pointers, checks that each buffer is large enough for the
geometry it is used with (so that a bug above can never make the kernels
read or write out of bounds), releases the GIL and calls the dispatch table.
"""
from math import prod

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


cdef inline int _dtype_code(str dtype) except -1:
    """FC_F32 / FC_F64 for a dtype name."""
    if dtype == "float32":
        return FC_F32
    if dtype == "float64":
        return FC_F64
    raise TypeError(f"internal: unsupported dtype {dtype}")


def register_tile(str dtype):
    """(MR, NR) of the active kernels for `dtype`: output pixels x channels."""
    cdef const fc_kernel_set *ks = _active[_dtype_code(dtype)]
    return (ks.mr, ks.nr)


def fma_probe(str dtype, int64_t iters, int nthreads):
    """Run the active ISA's register-only FMA loop; returns the flops done."""
    cdef const fc_kernel_set *ks = _active[_dtype_code(dtype)]
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
    """FC_F32 / FC_F64 for a float32 / float64 array."""
    cdef int num = cnp.PyArray_TYPE(a)
    if num == cnp.NPY_FLOAT32:
        return FC_F32
    if num == cnp.NPY_FLOAT64:
        return FC_F64
    raise TypeError(f"internal: unsupported dtype {a.dtype}")


# Every size the kernels compute is an int64_t: a product of sizes is checked
# here in Python integers (which cannot overflow) before C computes it.
cdef object INT64_MAX = 2**63 - 1


def _count(*sizes):
    """The product of `sizes` as a Python int (exact, never wraps)."""
    return prod(sizes)


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


cdef inline _check_status(int status):
    if status == FC_ENOMEM:
        raise MemoryError("fastconv: out of memory for the convolution workspace")
    if status == FC_EINVAL:
        raise ValueError("internal: a kernel refused its arguments")


cdef class Packed:
    """A convolution's weights (and bias) ready for one ISA's kernels.

    For the GEMM/indirect path: the micro-panel layout of that ISA's register
    tile, or (direct) a GEMM's C-contiguous (C, K) matrix itself, read in
    place. For the depthwise kernel: the taps as a contiguous (kh, kw, C)
    array. The kernel set is captured here, so packed weights are always
    read back by the kernels that packed them, even if set_isa() is called
    meanwhile.
    """
    cdef const fc_kernel_set *ks
    cdef fc_conv_desc d
    cdef int dtype
    cdef readonly object buffer
    cdef readonly object bias
    cdef readonly bint depthwise
    cdef readonly bint direct

    @property
    def isa(self):
        return self.ks.isa.decode()

    def unpack(self, cnp.ndarray w, tuple strides):
        """Write the weights back into w (C-contiguous, of the packed dtype,
        addressed through `strides` as pack() read them). For the micro-panel
        layout only: depthwise and direct weights are arrays already."""
        if self.depthwise or self.direct:
            raise ValueError("internal: these weights are not in panels")
        cdef fc_weight_strides ws
        ws.ty, ws.tx, ws.c, ws.k = strides
        cdef void *wp = _buffer(w, self.d.kh * self.d.kw * self.d.C * (self.d.K // self.d.groups),
                                self.dtype, "weight")
        cdef const void *pp = cnp.PyArray_DATA(self.buffer)
        with nogil:
            self.ks.unpack(&self.d, pp, ws, wp)


def pack(str dtype, int64_t C, int64_t K, int64_t groups, int64_t kh, int64_t kw,
         cnp.ndarray w, tuple strides, bias, bint depthwise, int nthreads,
         bint allow_direct=False):
    """Packed weights for a convolution with these channels and kernel.

    w is addressed through `strides` (in elements: tap row, tap column,
    channel within the group, output channel); for depthwise it must be the
    contiguous (kh, kw, C) taps. With allow_direct, a GEMM whose w is a
    C-contiguous (C, K) matrix with K a multiple of the vector length keeps
    w itself (and reads it in place) instead of a packed copy.
    """
    cdef Packed p = Packed.__new__(Packed)
    p.dtype = _dtype_code(dtype)
    p.ks = _active[p.dtype]
    p.d.C, p.d.K, p.d.groups, p.d.kh, p.d.kw = C, K, groups, kh, kw
    p.d.has_bias = bias is not None
    p.depthwise = depthwise
    cdef fc_weight_strides ws
    cdef const void *bp = NULL
    cdef void *pp
    if depthwise:
        if not (groups == C == K):
            raise ValueError("internal: depthwise packing needs groups == C == K")
        return _keep_in_place(p, w, _count(kh, kw, C), bias)
    ws.ty, ws.tx, ws.c, ws.k = strides
    if _dtype_index(w) != p.dtype:
        raise TypeError("internal: weight dtype")
    if not cnp.PyArray_ISALIGNED(w):
        raise ValueError("internal: weight is not aligned")
    if (allow_direct and kh == 1 and kw == 1 and groups == 1 and ws.c == K and ws.k == 1
            and K % p.ks.vlen == 0 and cnp.PyArray_IS_C_CONTIGUOUS(w)):
        p.direct = True
        return _keep_in_place(p, w, _count(C, K), bias)
    if bias is not None:
        bp = _buffer(bias, K, p.dtype, "bias")
    # packed_size() computes groups * (K/groups rounded up to vlen) *
    # (kh * kw * C/groups + 1) in int64_t: bound it first.
    if _count(groups, K // groups + p.ks.vlen, _count(kh, kw, C // groups) + 1,
              cnp.PyArray_ITEMSIZE(w)) > INT64_MAX:
        raise ValueError("internal: the packed weights would not fit in 64-bit sizes")
    p.buffer = cnp.PyArray_EMPTY(1, [p.ks.packed_size(&p.d)], cnp.PyArray_TYPE(w), 0)
    pp = cnp.PyArray_DATA(p.buffer)
    cdef const void *wp = cnp.PyArray_DATA(w)
    with nogil:
        p.ks.pack(&p.d, wp, ws, bp, pp, nthreads)
    return p


cdef Packed _keep_in_place(Packed p, cnp.ndarray w, object size, bias):
    """p reading w (contiguous, `size` values) and bias (K values) as they are."""
    _buffer(w, size, p.dtype, "weight")
    if bias is not None:
        _buffer(bias, p.d.K, p.dtype, "bias")
    p.buffer, p.bias = w, bias
    return p


def wino_weights(str dtype, int64_t C, int64_t K, cnp.ndarray w, tuple strides,
                 cnp.ndarray u, int nthreads):
    """u (16, C, K) = G g G^T of each 3x3 kernel of w (addressed through
    `strides`, as for pack, one group). The weights must be finite and at
    most the dtype's largest value / 2.25 in magnitude."""
    cdef int code = _dtype_code(dtype)
    cdef const fc_kernel_set *ks = _active[code]
    cdef fc_conv_desc d
    cdef fc_weight_strides ws
    ws.ty, ws.tx, ws.c, ws.k = strides
    if _dtype_index(w) != code:
        raise TypeError("internal: weight dtype")
    if not cnp.PyArray_ISALIGNED(w):
        raise ValueError("internal: weight is not aligned")
    d.C, d.K, d.groups, d.kh, d.kw = C, K, 1, 3, 3
    cdef const void *wp = cnp.PyArray_DATA(w)
    cdef void *up = _buffer(u, _count(16, C, K), code, "u")
    with nogil:
        ks.wino_weights(&d, wp, ws, up, nthreads)


cdef class Geometry:
    """One convolution's shape and options (everything but the weights'
    values); immutable, so one Geometry may run on several threads at once."""
    cdef fc_conv_desc d
    cdef int dtype

    def __cinit__(self, str dtype, int64_t N, int64_t H, int64_t W, int64_t C,
                  int64_t K, int64_t groups, int64_t kh, int64_t kw,
                  int64_t sh, int64_t sw, int64_t dh, int64_t dw,
                  int64_t pad_top, int64_t pad_left, int64_t Ho, int64_t Wo,
                  bint relu, bint has_bias, bint flush_denormals):
        self.dtype = _dtype_code(dtype)
        self.d.N, self.d.H, self.d.W, self.d.C, self.d.K = N, H, W, C, K
        self.d.groups, self.d.kh, self.d.kw = groups, kh, kw
        self.d.sh, self.d.sw, self.d.dh, self.d.dw = sh, sw, dh, dw
        self.d.pad_top, self.d.pad_left, self.d.Ho, self.d.Wo = pad_top, pad_left, Ho, Wo
        self.d.relu = relu
        self.d.has_bias = has_bias
        self.d.flush_denormals = flush_denormals
        # The kernels address the hp x wp zero-padded window of each image
        # that the output reads (and may copy it whole): its size in bytes,
        # like the input's and the result's, must fit in int64_t.
        hp = _count(Ho - 1, sh) + _count(kh - 1, dh) + 1
        wp = _count(Wo - 1, sw) + _count(kw - 1, dw) + 1
        itemsize = 8 if self.dtype == FC_F64 else 4
        if (min(N, H, W, C, K, groups, kh, kw, sh, sw, dh, dw, pad_top, pad_left, Ho, Wo) < 0
                or _count(N, max(H, hp), max(W, wp), C, itemsize) > INT64_MAX
                or _count(N, Ho, Wo, K, itemsize) > INT64_MAX):
            raise ValueError("internal: the convolution's sizes do not fit in 64-bit sizes")

    def run(self, cnp.ndarray x, Packed p, cnp.ndarray y, int nthreads):
        """y = conv(x) with the packed weights p (x, y contiguous NHWC)."""
        if (p.dtype != self.dtype or p.d.C != self.d.C or p.d.K != self.d.K or
                p.d.groups != self.d.groups or p.d.kh != self.d.kh or p.d.kw != self.d.kw or
                p.d.has_bias != self.d.has_bias):
            raise ValueError("internal: packed weights do not match the geometry")
        cdef const void *xp = _buffer(x, _count(self.d.N, self.d.H, self.d.W, self.d.C),
                                      self.dtype, "x")
        cdef void *yp = _buffer(y, _count(self.d.N, self.d.Ho, self.d.Wo, self.d.K),
                                self.dtype, "out")
        cdef const void *wp = cnp.PyArray_DATA(p.buffer)
        cdef const void *bp = NULL
        cdef int status
        if p.bias is not None:
            bp = cnp.PyArray_DATA(p.bias)
        if p.depthwise:
            with nogil:
                status = p.ks.dwconv(&self.d, xp, wp, bp, yp, nthreads)
        elif p.direct:
            with nogil:
                status = p.ks.gemm_direct(&self.d, xp, wp, bp, yp, nthreads)
        else:
            with nogil:
                status = p.ks.conv(&self.d, xp, wp, yp, nthreads)
        _check_status(status)

    def tiles(self):
        """Winograd F(2x2, 3x3) tiles: N * ceil(Ho / 2) * ceil(Wo / 2)."""
        return _count(self.d.N, (self.d.Ho + 1) // 2, (self.d.Wo + 1) // 2)

    def wino_input(self, cnp.ndarray x, int64_t t0, int64_t t1, cnp.ndarray v, int nthreads):
        """v (16, t1 - t0, C) = the transformed input patches of tiles
        [t0, t1) of x (contiguous NHWC); False (v then incomplete) if they
        hold an Inf or NaN."""
        if self.d.kh != 3 or self.d.kw != 3 or self.d.groups != 1 or max(
                self.d.sh, self.d.sw, self.d.dh, self.d.dw) != 1:
            raise ValueError("internal: Winograd needs a 3x3, stride 1, undilated, 1-group conv")
        if not 0 <= t0 <= t1 <= self.tiles():
            raise ValueError("internal: tiles out of range")
        cdef const fc_kernel_set *ks = _active[self.dtype]
        cdef const void *xp = _buffer(x, _count(self.d.N, self.d.H, self.d.W, self.d.C),
                                      self.dtype, "x")
        cdef void *vp = _buffer(v, _count(16, t1 - t0, self.d.C), self.dtype, "v")
        cdef int nonfinite
        with nogil:
            nonfinite = ks.wino_input(&self.d, xp, t0, t1, vp, nthreads)
        return not nonfinite

    def wino_output(self, cnp.ndarray m, int64_t t0, int64_t t1, bias, cnp.ndarray y,
                    int nthreads):
        """Tiles [t0, t1) of y (contiguous NHWC) from their 16 products m
        (16, t1 - t0, K), with bias (contiguous, K values, or None) and the
        geometry's ReLU; False if an output is Inf or NaN."""
        if not 0 <= t0 <= t1 <= self.tiles():
            raise ValueError("internal: tiles out of range")
        cdef const fc_kernel_set *ks = _active[self.dtype]
        cdef const void *mp = _buffer(m, _count(16, t1 - t0, self.d.K), self.dtype, "m")
        cdef void *yp = _buffer(y, _count(self.d.N, self.d.Ho, self.d.Wo, self.d.K),
                                self.dtype, "out")
        cdef const void *bp = NULL
        if bias is not None:
            bp = _buffer(bias, self.d.K, self.dtype, "bias")
        cdef int nonfinite
        with nogil:
            nonfinite = ks.wino_output(&self.d, mp, t0, t1, bp, yp, nthreads)
        return not nonfinite

def dense(cnp.ndarray x, cnp.ndarray w, bint w_out_in, bias, cnp.ndarray y, bint relu,
          bint flush_denormals, int nthreads):
    """y (M, K) = x (M, R) @ W (+ bias, ReLU) with W read in place: a
    C-contiguous (R, K) matrix, or with w_out_in a C-contiguous (K, R) one
    (any shape of those sizes). x and y are C-contiguous 2-D."""
    cdef fc_dense_desc d
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError("internal: dense needs 2-D x (M, R) and y (M, K)")
    d.M, d.R, d.K = x.shape[0], x.shape[1], y.shape[1]
    d.w_out_in, d.relu, d.flush_denormals = w_out_in, relu, flush_denormals
    cdef int dt = _dtype_index(x)
    cdef const void *xp = _buffer(x, _count(d.M, d.R), dt, "x")
    cdef const void *wp = _buffer(w, _count(d.R, d.K), dt, "weight")
    cdef void *yp = _buffer(y, _count(d.M, d.K), dt, "out")
    cdef const void *bp = NULL
    if bias is not None:
        bp = _buffer(bias, d.K, dt, "bias")
    cdef const fc_kernel_set *ks = _active[dt]
    cdef int status
    with nogil:
        status = ks.dense(&d, xp, wp, bp, yp, nthreads)
    _check_status(status)


def pool(cnp.ndarray x, cnp.ndarray y, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
         int64_t ph, int64_t pw, bint is_max, bint count_include_pad, int nthreads):
    """Max or average pooling of contiguous NHWC x into contiguous NHWC y."""
    cdef fc_pool_desc d
    if x.ndim != 4 or y.ndim != 4:
        raise ValueError("internal: pooling needs 4-D NHWC arrays")
    d.N, d.H, d.W, d.C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    d.Ho, d.Wo = y.shape[1], y.shape[2]
    if y.shape[0] != d.N or y.shape[3] != d.C:
        raise ValueError("internal: pooling output shape")
    d.kh, d.kw, d.sh, d.sw, d.ph, d.pw = kh, kw, sh, sw, ph, pw
    d.max, d.count_include_pad = is_max, count_include_pad
    cdef int dt = _dtype_index(x)
    cdef const fc_kernel_set *ks = _active[dt]
    cdef const void *xp = _buffer(x, _count(d.N, d.H, d.W, d.C), dt, "x")
    cdef void *yp = _buffer(y, _count(d.N, d.Ho, d.Wo, d.C), dt, "out")
    cdef int status
    with nogil:
        status = ks.pool(&d, xp, yp, nthreads)
    _check_status(status)
