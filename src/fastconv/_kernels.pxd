# Declarations of the C operator API (csrc/fastconv.h).
from libc.stdint cimport int64_t

cdef extern from "fastconv.h" nogil:
    enum:
        FC_OK
        FC_ENOMEM
        FC_EINVAL
        FC_EINTR
        FC_ISA_GENERIC
        FC_ISA_AVX2
        FC_ISA_AVX512
        FC_ISA_COUNT
        FC_F32
        FC_F64
        FC_ALGO_AUTO
        FC_ALGO_COUNT
        FC_CONV_ONE_CALL
        FC_CONV_NO_WINOGRAD
        FC_CONV_WINOGRAD_NOW
        FC_CONV_TRANSPOSED
        FC_ACT_COUNT

    ctypedef struct fc_activation:
        int kind
        double a, b

    int fc_activate(int isa, int dtype, fc_activation act, const void *x, void *y, int64_t n,
                    int flush_denormals, int nthreads)

    const char *fc_algorithm_name(int algorithm)

    ctypedef struct fc_weight_strides:
        int64_t ty, tx, c, k

    ctypedef struct fc_conv_params:
        int64_t C, K, groups, kh, kw, sh, sw, dh, dw

    ctypedef struct fc_conv_op:
        pass

    int fc_conv_create(int isa, int dtype, const fc_conv_params *p, const void *w,
                       fc_weight_strides ws, const void *bias, int flags, int nthreads,
                       fc_conv_op **op)
    void fc_conv_destroy(fc_conv_op *op)

    ctypedef struct fc_conv_call:
        int64_t N, H, W, pad_top, pad_left, Ho, Wo
        fc_activation act
        int flush_denormals
        int allow_winograd
        int algorithm

    ctypedef struct fc_conv_plan:
        int algorithm
        double macs, direct_macs

    int fc_conv_plan_call(fc_conv_op *op, const fc_conv_call *call, fc_conv_plan *plan)
    ctypedef struct fc_interrupt:
        int (*poll)(void *ctx) noexcept
        void *ctx
        int stop
        unsigned checks
        double next

    int fc_conv_run(fc_conv_op *op, const fc_conv_call *call, const void *x,
                    const void *residual, void *y, int nthreads, fc_interrupt *interrupt,
                    int *ran)
    int fc_conv_algorithm(const fc_conv_op *op)
    int fc_conv_unpack(fc_conv_op *op, void *w, fc_weight_strides ws)
    const char *fc_conv_isa(const fc_conv_op *op)

    ctypedef struct fc_pool_desc:
        int64_t N, H, W, C, kh, kw, sh, sw, ph, pw, Ho, Wo
        int64_t Hm, Wm, y_origin, x_origin, oy_origin, ox_origin
        int max
        int count_include_pad

    int fc_pool_run(int isa, int dtype, const fc_pool_desc *d, const void *x, void *y,
                    int nthreads, fc_interrupt *interrupt)

    ctypedef struct fc_isa_config:
        int64_t mr, nr, vlen, kc, kc_gemm, mct, dense_rows, direct_gemm_max_rows
        int64_t winograd_min_channels, winograd_min_tiles, winograd_min_macs
        int64_t winograd_one_call_min_tiles
        int64_t winograd_f4_min_tiles, winograd_f4_one_call_min_tiles
        int64_t winograd_block_bytes

    ctypedef struct fc_cpu_features:
        int sse2, avx, fma, avx2, avx512f, avx512dq, avx512bw, avx512vl

    fc_cpu_features fc_cpu_detect()
    int fc_isa_supported(int isa)
    const char *fc_isa_name(int isa)
    int fc_isa_get_config(int isa, int dtype, fc_isa_config *config)
    int fc_flush_denormals_supported()
    const char *fc_compiler()
    int fc_openmp_version()
    int fc_max_threads()
    int fc_single_threaded_after_fork()
    double fc_fma_probe(int isa, int dtype, int64_t iters, int nthreads)
