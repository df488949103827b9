# Declarations of the C kernel interface (fastconv/csrc/fastconv.h).
from libc.stdint cimport int64_t

cdef extern from "fastconv.h" nogil:
    ctypedef struct fc_conv_desc:
        int64_t N, H, W, C, K, groups, kh, kw, sh, sw, dh, dw
        int64_t pad_top, pad_left, Ho, Wo
        int relu
        int has_bias
        int flush_denormals

    ctypedef struct fc_pool_desc:
        int64_t N, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo
        int max
        int count_include_pad

    ctypedef struct fc_dense_desc:
        int64_t M, R, K
        int w_out_in
        int relu
        int flush_denormals

    ctypedef struct fc_weight_strides:
        int64_t ty, tx, c, k

    ctypedef struct fc_kernel_set:
        const char *isa
        int64_t mr, nr, vlen
        int64_t (*packed_size)(const fc_conv_desc *d) noexcept nogil
        void (*pack)(const fc_conv_desc *d, const void *w, fc_weight_strides ws,
                     const void *bias, void *packed, int nthreads) noexcept nogil
        void (*unpack)(const fc_conv_desc *d, const void *packed, fc_weight_strides ws,
                       void *w) noexcept nogil
        int (*conv)(const fc_conv_desc *d, const void *x, const void *packed,
                    void *y, int nthreads) noexcept nogil
        int (*gemm_direct)(const fc_conv_desc *d, const void *x, const void *w,
                           const void *bias, void *y, int nthreads) noexcept nogil
        int (*dense)(const fc_dense_desc *d, const void *x, const void *w,
                     const void *bias, void *y, int nthreads) noexcept nogil
        int (*wino_input)(const fc_conv_desc *d, const void *x, int64_t t0, int64_t t1,
                          void *v, int nthreads) noexcept nogil
        void (*wino_weights)(const fc_conv_desc *d, const void *w, fc_weight_strides ws,
                             void *u, int nthreads) noexcept nogil
        int (*wino_output)(const fc_conv_desc *d, const void *m, int64_t t0, int64_t t1,
                           const void *bias, void *y, int nthreads) noexcept nogil
        int (*dwconv)(const fc_conv_desc *d, const void *x, const void *w,
                      const void *bias, void *y, int nthreads) noexcept nogil
        int (*pool)(const fc_pool_desc *d, const void *x, void *y, int nthreads) noexcept nogil
        double (*fma_probe)(int64_t iters, int nthreads) noexcept nogil

    ctypedef struct fc_cpu_features:
        int sse2, avx, fma, avx2, avx512f, avx512dq, avx512bw, avx512vl

    enum:
        FC_OK
        FC_ENOMEM
        FC_EINVAL
        FC_ISA_GENERIC
        FC_ISA_AVX2
        FC_ISA_AVX512
        FC_ISA_COUNT
        FC_F32
        FC_F64

    fc_cpu_features fc_cpu_detect()
    int fc_isa_supported(int isa)
    const fc_kernel_set *fc_kernels(int isa, int dtype)
    const char *fc_isa_name(int isa)
    const char *fc_compiler()
    int fc_openmp_version()
