/*
 * fastconv's C operator API.
 *
 * Layering (each knows only the one below):
 *   Python API (src/fastconv, .py)   validates, converts layouts, allocates
 *                                    results;
 *   bindings (_core.pyx)             check every buffer against the shapes
 *                                    they are used with, release the GIL;
 *   operators (operators/)           create an operator from a descriptor
 *                                    and weights, choose the algorithm, pack
 *                                    or transform the weights, run it;
 *   kernels (kernels/)               one family per file, compiled once per
 *                                    instruction set and dtype with the
 *                                    configuration of configs/<isa>.h;
 *   dispatch.c                       which kernel sets this CPU runs.
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

enum { FC_OK = 0, FC_ENOMEM = 1, FC_EINVAL = 2, FC_EINTR = 3 };

/* Lets the caller of a long run abandon it (Ctrl-C). The calling thread
 * calls poll(ctx) between blocks of work, at most every FC_POLL_SECONDS and
 * never in a run shorter than that; once it returns nonzero, every thread
 * skips its remaining blocks and the run returns FC_EINTR, its output partly
 * written. Zero `stop`, `checks` and `next` before each run; the run owns them. */
#define FC_POLL_SECONDS 0.05
typedef struct fc_interrupt {
    int (*poll)(void *ctx);
    void *ctx;
    int stop;                /* set when poll said stop */
    unsigned checks;         /* the calling thread's checks (it reads the clock every 8th) */
    double next;             /* when the calling thread polls next */
} fc_interrupt;
enum { FC_ISA_GENERIC = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2, FC_ISA_COUNT = 3 };
enum { FC_F32 = 0, FC_F64 = 1 };

/* An activation, applied in the kernels' store (or alone: fc_activate).
 * NaN stays NaN; see kernels/activation.h for how each is computed. */
enum {
    FC_ACT_NONE = 0,
    FC_ACT_RELU,         /* max(v, 0); -0.0 stays */
    FC_ACT_CLIP,         /* min(max(v, a), b) (ReLU6: a = 0, b = 6) */
    FC_ACT_LEAKY_RELU,   /* v < 0 ? a * v : v */
    FC_ACT_SIGMOID,      /* 1 / (1 + exp(-v)) */
    FC_ACT_HARD_SIGMOID, /* min(max(a * v + b, 0), 1), a > 0 */
    FC_ACT_HARD_SWISH,   /* v * min(max(v + 3, 0), 6) / 6 */
    FC_ACT_SILU,         /* v * sigmoid(v) */
    FC_ACT_TANH,
    FC_ACT_COUNT
};
typedef struct fc_activation {
    int kind;
    double a, b;             /* its parameters, rounded to the dtype */
} fc_activation;

/* The algorithms a convolution operator runs (fc_algorithm_name gives
 * their names). */
typedef enum fc_algorithm {
    FC_ALGO_AUTO = 0,          /* (a request: let the operator choose) */
    FC_ALGO_IGEMM,             /* indirect GEMM over packed weights */
    FC_ALGO_GEMM,              /* 1x1, stride 1, unpadded: GEMM over the pixels */
    FC_ALGO_GEMM_IN_PLACE,     /* the same, the (C, K) weights read in place */
    FC_ALGO_DENSE,             /* one output pixel: a dense layer on its window,
                                  weights streamed in place */
    FC_ALGO_WINOGRAD_F2X2_3X3, /* Winograd F(2x2, 3x3) */
    FC_ALGO_DEPTHWISE,         /* groups == C == K: channels in SIMD lanes */
    FC_ALGO_WINOGRAD_F4X4_3X3, /* Winograd F(4x4, 3x3) */
    FC_ALGO_COUNT
} fc_algorithm;

const char *fc_algorithm_name(int algorithm);

/* Strides, in elements, of a weight tensor indexed (tap row, tap column,
 * input channel within the group, output channel): HWIO, OIHW or any other
 * layout is read through these. */
typedef struct fc_weight_strides {
    int64_t ty, tx, c, k;
} fc_weight_strides;

/* What a convolution operator is made for: everything but the input's size
 * and padding. */
typedef struct fc_conv_params {
    int64_t C, K;            /* input and output channels (all groups) */
    int64_t groups;          /* divides C and K */
    int64_t kh, kw;          /* kernel taps */
    int64_t sh, sw;          /* strides */
    int64_t dh, dw;          /* dilations */
} fc_conv_params;

/* Operator flags. */
enum {
    /* The weights serve one call (the conv2d function): they are read in
     * place where an algorithm can (dense, GEMM in place), packed only when
     * the call needs it, and must stay valid and unchanged until the
     * operator is destroyed. Without it the operator packs (and for
     * Winograd transforms) the weights when it is created, keeps its own
     * copies, and may be run by several threads at once. */
    FC_CONV_ONE_CALL = 1,
    /* Never run Winograd (the weights' stand-ins of the non-finite path,
     * whose results must equal the direct convolution's). */
    FC_CONV_NO_WINOGRAD = 2,
    /* Transform the weights for Winograd when the operator is created (a
     * layer, where Winograd is allowed), not at the first call that runs it. */
    FC_CONV_WINOGRAD_NOW = 4,
    /* A transposed convolution (PyTorch's conv_transpose2d, TensorFlow's
     * conv2d_transpose): C inputs, K outputs, groups, kernel, stride and
     * dilation as the transposed convolution has them, and w its
     * equivalent direct kernel, per group: w[ty][tx][c][k] =
     * w_t[c][k][kh - 1 - ty][kw - 1 - tx] of PyTorch's (C, K / groups, kh, kw)
     * weight. A call's pad_top and pad_left are the transposed convolution's
     * padding (rows and columns cropped from the top and left of its full
     * output), Ho and Wo its output's size (output_padding included).
     * With stride 1 it runs as that direct convolution (every algorithm);
     * otherwise as stride_h * stride_w direct convolutions with sub-kernels,
     * one per phase of the output (output rows oy = q * sh + ry), each
     * storing into its phase of y: the indirect GEMM, no zero-stuffed input
     * and no scatter. Packs its weights at creation, whatever ONE_CALL says. */
    FC_CONV_TRANSPOSED = 8,
};

typedef struct fc_conv_op fc_conv_op;

/* An operator for `p` on the kernels of `isa` and `dtype`, from weights
 * addressed through `ws` (kh x kw x C/groups x K values) and a bias of K
 * values or NULL. FC_EINVAL for inconsistent parameters or an ISA this CPU
 * lacks, FC_ENOMEM. */
int fc_conv_create(int isa, int dtype, const fc_conv_params *p, const void *w,
                   fc_weight_strides ws, const void *bias, int flags, int nthreads,
                   fc_conv_op **op);
void fc_conv_destroy(fc_conv_op *op);

/* One call of an operator: the input's size, its padding before the first
 * row and column, the output's size (computed by the caller), and the
 * options of this call. */
typedef struct fc_conv_call {
    int64_t N, H, W;         /* input batch, height, width (NHWC) */
    int64_t pad_top, pad_left;
    int64_t Ho, Wo;
    fc_activation act;       /* applied in the store, after the bias */
    int flush_denormals;     /* run with FTZ/DAZ set (restored afterwards) */
    int allow_winograd;      /* the package's Winograd switch */
    int algorithm;           /* FC_ALGO_AUTO, or the algorithm to run: then
                                FC_EINVAL where it cannot run this call */
} fc_conv_call;

/* What a call runs: the algorithm and the multiply-adds it executes (for
 * Winograd its 16 products, not the transforms), beside those of the
 * direct convolution. */
typedef struct fc_conv_plan {
    int algorithm;
    double macs, direct_macs;
} fc_conv_plan;

int fc_conv_plan_call(fc_conv_op *op, const fc_conv_call *call, fc_conv_plan *plan);
/* y (N, Ho, Wo, K) = the convolution of x (N, H, W, C), both contiguous
 * NHWC, plus the bias, plus residual (NULL, or contiguous (N, Ho, Wo, K):
 * a residual connection, added in the store before the activation; not y
 * itself). *ran (if not NULL) gets the algorithm that produced y: Winograd
 * falls back to the direct convolution when an input, a transformed value
 * or an output is Inf or NaN. `interrupt` may be NULL (see fc_interrupt). */
int fc_conv_run(fc_conv_op *op, const fc_conv_call *call, const void *x, const void *residual,
                void *y, int nthreads, fc_interrupt *interrupt, int *ran);
/* The algorithm the operator prepared its weights for at creation. */
int fc_conv_algorithm(const fc_conv_op *op);
/* The weights back, exactly, written through ws (the bias is not). */
int fc_conv_unpack(fc_conv_op *op, void *w, fc_weight_strides ws);
/* The name of the ISA whose kernels the operator runs. */
const char *fc_conv_isa(const fc_conv_op *op);

/* A 2-D max or average pooling over NHWC input (PyTorch's semantics:
 * symmetric zero padding of at most half the window, windows that may run
 * past the padding in ceil mode, NaN propagating through max). */
typedef struct fc_pool_desc {
    int64_t N, H, W, C;      /* x's extents */
    int64_t kh, kw, sh, sw;
    int64_t ph, pw;          /* padding on each side of the whole map */
    int64_t Ho, Wo;          /* y's extents */
    /* A region of a larger map (fastconv.nn's tiled inference): the whole
     * map is Hm x Wm, x holds its rows from y_origin and columns from
     * x_origin, and y its output rows from oy_origin and columns from
     * ox_origin. Windows are clipped and counted against the whole map, so
     * a region's outputs are bitwise the whole map's. A plain call: the
     * origins 0 and Hm, Wm = H, W. */
    int64_t Hm, Wm, y_origin, x_origin, oy_origin, ox_origin;
    int max;                 /* 1: max pooling, 0: average */
    int count_include_pad;   /* average: divide by the window including padding */
} fc_pool_desc;

int fc_pool_run(int isa, int dtype, const fc_pool_desc *d, const void *x, void *y,
                int nthreads, fc_interrupt *interrupt);

/* y[i] = act(x[i]) for n contiguous values (x == y allowed), in the kernels'
 * floating-point mode: the same code as the kernels' store. */
int fc_activate(int isa, int dtype, fc_activation act, const void *x, void *y, int64_t n,
                int flush_denormals, int nthreads);

/* One ISA's configuration for one dtype (configs/<isa>.h). */
typedef struct fc_isa_config {
    int64_t mr, nr, vlen;    /* register tile: output pixels x channels; values per vector */
    int64_t kc, kc_gemm;     /* reduction blocks: several taps, one tap */
    int64_t mct;             /* register tiles per task */
    int64_t dense_rows;      /* rows per pass of the dense kernel */
    int64_t direct_gemm_max_rows;
    int64_t winograd_min_channels, winograd_min_tiles, winograd_min_macs;
    int64_t winograd_one_call_min_tiles;
    int64_t winograd_f4_min_tiles, winograd_f4_one_call_min_tiles;
    int64_t winograd_block_bytes;
} fc_isa_config;

/* CPU features as detected at run time (cpuid plus the OS's xgetbv state). */
typedef struct fc_cpu_features {
    int sse2, avx, fma, avx2, avx512f, avx512dq, avx512bw, avx512vl;
} fc_cpu_features;

fc_cpu_features fc_cpu_detect(void);
/* Whether this build has kernels for `isa` and this CPU can run them. */
int fc_isa_supported(int isa);
const char *fc_isa_name(int isa);
/* The configuration of `isa` for `dtype`; 0 if the ISA is not supported. */
int fc_isa_get_config(int isa, int dtype, fc_isa_config *config);
/* Whether the kernels can set flush-to-zero / denormals-are-zero on this
 * target (x86 MXCSR, AArch64 FPCR); elsewhere the request is ignored. */
int fc_flush_denormals_supported(void);
const char *fc_compiler(void);
int fc_openmp_version(void); /* _OPENMP (yyyymm), or 0 when built without OpenMP */
/* The most threads an OpenMP region of the calling thread may use
 * (omp_get_max_threads(): what threadpoolctl limits), 1 without OpenMP. */
int fc_max_threads(void);
/* 1 in a child process forked after this process ran a kernel on several
 * threads: OpenMP's worker threads do not survive fork(), so such a child
 * runs every kernel on its calling thread (as OpenBLAS and PyTorch do). */
int fc_single_threaded_after_fork(void);

/* The benchmark's register-only FMA loop on `isa`'s vectors: returns the
 * floating-point operations done by nthreads threads in iters rounds. */
double fc_fma_probe(int isa, int dtype, int64_t iters, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
