/*
 * fastconv C kernel interface.
 *
 * Layering: the Python API (fastconv/ .py files) validates every argument and
 * allocates every result; the Cython bindings (_core.pyx) release the GIL and
 * call through the dispatch table below; the kernels (kernels.c, compiled once
 * per instruction set and dtype) do the arithmetic and nothing else.
 *
 * All sizes and index arithmetic are 64-bit.
 */
#ifndef FASTCONV_H
#define FASTCONV_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Geometry of one 2-D convolution in NHWC (input), HWIO (weights), NHWC (output).
 * A GEMM (M x K) @ (K x N) is the convolution with N=1, H=M, W=1, C=K, K=N and
 * a 1x1 kernel. */
typedef struct fc_conv_desc {
    int64_t N, H, W, C;      /* input: batch, height, width, channels */
    int64_t K;               /* output channels (all groups) */
    int64_t groups;          /* C and K are multiples of groups */
    int64_t kh, kw;          /* kernel taps */
    int64_t sh, sw;          /* strides */
    int64_t dh, dw;          /* dilations */
    int64_t pad_top, pad_left; /* zero padding before the first row/column */
    int64_t Ho, Wo;          /* output height and width (computed by the caller) */
    int relu;                /* apply max(v, 0) (NaN-preserving) before storing */
    int has_bias;            /* the packed weights carry a bias to add */
    int flush_denormals;     /* run with FTZ/DAZ set (restored afterwards) */
} fc_conv_desc;

/* A 2-D max or average pooling over NHWC input (PyTorch's semantics:
 * symmetric zero padding of at most half the window, windows that may run
 * past the padding in ceil mode, NaN propagating through max). */
typedef struct fc_pool_desc {
    int64_t N, H, W, C;
    int64_t kh, kw, sh, sw;
    int64_t ph, pw;          /* padding on each side */
    int64_t Ho, Wo;
    int max;                 /* 1: max pooling, 0: average */
    int count_include_pad;   /* average: divide by the window including padding */
} fc_pool_desc;

/* Strides, in elements, of a weight tensor indexed (tap row, tap column,
 * input channel within the group, output channel). HWIO and OIHW weights are
 * both packed straight from the caller's array through these. */
typedef struct fc_weight_strides {
    int64_t ty, tx, c, k;
} fc_weight_strides;

/* A dense layer y (M, K) = x (M, R) @ W (+ bias, ReLU), W read in place in
 * one of two layouts. x and y are C-contiguous. */
typedef struct fc_dense_desc {
    int64_t M, R, K;
    int w_out_in;            /* 0: W is (R, K) (HWIO flattened, numpy's b);
                                1: W is (K, R) (OIHW flattened, PyTorch's Linear) */
    int relu;
    int flush_denormals;
} fc_dense_desc;

enum { FC_OK = 0, FC_ENOMEM = 1, FC_EINVAL = 2 };

/* One instruction set's kernels for one dtype. Pointers are void* so that a
 * single table type serves float32 and float64. */
typedef struct fc_kernel_set {
    const char *isa;  /* "avx512", "avx2" or "generic" */
    int64_t mr, nr;   /* register tile: output pixels x output channels */
    int64_t vlen;     /* values per vector register */
    /* Number of elements the packed weights (plus bias) of `d` occupy. */
    int64_t (*packed_size)(const fc_conv_desc *d);
    /* Pack weights (strided, see fc_weight_strides) and bias (contiguous, K
     * elements, or NULL) into the micro-panel layout the conv kernel reads. */
    void (*pack)(const fc_conv_desc *d, const void *w, fc_weight_strides ws,
                 const void *bias, void *packed, int nthreads);
    /* The inverse of pack (weights only), written through the strides. */
    void (*unpack)(const fc_conv_desc *d, const void *packed, fc_weight_strides ws, void *w);
    /* Convolution through the register-blocked micro-kernel; a 1x1, stride 1,
     * unpadded convolution (and so every GEMM) takes its GEMM path. x is
     * contiguous NHWC, y contiguous NHWC. */
    int (*conv)(const fc_conv_desc *d, const void *x, const void *packed,
                void *y, int nthreads);
    /* The GEMM path reading a C-contiguous (C, K) weight matrix in place
     * (1x1 kernel, one group, K a multiple of vlen; else FC_EINVAL) with a
     * contiguous bias of K values or NULL. */
    int (*gemm_direct)(const fc_conv_desc *d, const void *x, const void *w,
                       const void *bias, void *y, int nthreads);
    /* Dense layer with few rows (batch-1 fully-connected layers): W read
     * once per DENSE_ROWS rows of x, in place, threads over outputs; bias is
     * K elements or NULL. */
    int (*dense)(const fc_dense_desc *d, const void *x, const void *w, const void *bias,
                 void *y, int nthreads);
    /* Winograd F(2x2, 3x3) transforms for a 3x3, stride 1, undilated, one-
     * group convolution over tiles of 2x2 outputs (numbered row-major per
     * image, image after image: N * ceil(Ho/2) * ceil(Wo/2) of them), for
     * tiles [t0, t1). wino_input writes their transformed 4x4 input patches
     * as v (16, t1 - t0, C) and returns 1 if a transformed value is Inf or
     * NaN (from an input holding one, which the transforms would spread to
     * outputs that do not see it, or from an overflow: the caller then runs
     * the direct convolution), else 0. wino_output reads
     * the 16 products m (16, t1 - t0, K) and writes those tiles' outputs to
     * y (NHWC) with bias (K values or NULL) and ReLU, returning 1 if one is
     * Inf or NaN (an overflow in the products or their sums, where the
     * direct convolution may differ: the caller runs it), else 0. */
    int (*wino_input)(const fc_conv_desc *d, const void *x, int64_t t0, int64_t t1, void *v,
                      int nthreads);
    /* The transformed weights u (16, C, K) = G g G^T of each 3x3 kernel g
     * (read through the strides), computed in double and rounded once. The
     * weights must be finite and at most the dtype's largest value / 2.25
     * in magnitude (then no value of u overflows). */
    void (*wino_weights)(const fc_conv_desc *d, const void *w, fc_weight_strides ws, void *u,
                        int nthreads);
    int (*wino_output)(const fc_conv_desc *d, const void *m, int64_t t0, int64_t t1,
                       const void *bias, void *y, int nthreads);
    /* Depthwise convolution (groups == C == K), channels in SIMD lanes.
     * w is contiguous (kh, kw, C); bias is C elements or NULL. */
    int (*dwconv)(const fc_conv_desc *d, const void *x, const void *w,
                  const void *bias, void *y, int nthreads);
    /* Pooling, channels in SIMD lanes, OpenMP over output rows. */
    int (*pool)(const fc_pool_desc *d, const void *x, void *y, int nthreads);
    /* Register-only FMA loop on nthreads threads, for the peak-throughput
     * figure of the benchmark; returns the floating-point operations done. */
    double (*fma_probe)(int64_t iters, int nthreads);
} fc_kernel_set;

enum { FC_ISA_GENERIC = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2, FC_ISA_COUNT = 3 };
enum { FC_F32 = 0, FC_F64 = 1 };

/* CPU features as detected at run time (cpuid plus the OS's xgetbv state). */
typedef struct fc_cpu_features {
    int sse2, avx, fma, avx2, avx512f, avx512dq, avx512bw, avx512vl;
} fc_cpu_features;

fc_cpu_features fc_cpu_detect(void);
/* Whether this build has kernels for `isa` and this CPU can run them. */
int fc_isa_supported(int isa);
/* The kernels of `isa` for `dtype` (FC_F32/FC_F64); NULL if not supported. */
const fc_kernel_set *fc_kernels(int isa, int dtype);
const char *fc_isa_name(int isa);
const char *fc_compiler(void);
int fc_openmp_version(void); /* _OPENMP (yyyymm), or 0 when built without OpenMP */

#ifdef __cplusplus
}
#endif
#endif
