/*
 * The kernel families, as the operators see them: one table per
 * instruction set and dtype (table.c), filled from that ISA's configuration
 * (configs/<isa>.h). Internal to the C library.
 */
#ifndef FASTCONV_KERNELS_H
#define FASTCONV_KERNELS_H

#include "fastconv.h"

/* One convolution in NHWC (input), packed weights, NHWC (output). A GEMM
 * (M x K) @ (K x N) is the 1x1 convolution of M images of one pixel. */
typedef struct fc_conv_desc {
    int64_t N, H, W, C;      /* input: batch, height, width, channels */
    int64_t K;               /* output channels (all groups) */
    int64_t groups;          /* C and K are multiples of groups */
    int64_t kh, kw;          /* kernel taps */
    int64_t sh, sw;          /* strides */
    int64_t dh, dw;          /* dilations */
    int64_t pad_top, pad_left; /* zero padding before the first row/column */
    int64_t Ho, Wo;          /* output height and width */
    /* Where output pixel (n, oy, ox) goes: y_off + n * y_img + oy * y_row +
     * ox * y_col elements into y (igemm only: a phase of a transposed
     * convolution); y_col == 0: y is contiguous (N, Ho, Wo, K). */
    int64_t y_off, y_img, y_row, y_col;
    /* NULL, or values added to each output before the activation (a
     * residual connection), addressed exactly as y is; never y itself. */
    const void *residual;
    fc_activation act;       /* applied before storing (kernels/activation.h) */
    int has_bias;            /* the packed weights carry a bias to add */
    int flush_denormals;     /* run with FTZ/DAZ set (restored afterwards) */
    fc_interrupt *interrupt; /* polled between blocks (common.h: interrupted); or NULL */
} fc_conv_desc;

/* A dense layer y (M, K) = x (M, R) @ W (+ bias, ReLU), W read in place in
 * one of two layouts. x and y are C-contiguous. */
typedef struct fc_dense_desc {
    int64_t M, R, K;
    int w_out_in;            /* 0: W is (R, K) (HWIO flattened, numpy's b);
                                1: W is (K, R) (OIHW flattened, PyTorch's Linear) */
    const void *residual;    /* NULL, or (M, K) values added before the activation */
    fc_activation act;
    int flush_denormals;
    fc_interrupt *interrupt;
} fc_dense_desc;

/* Thread safety across fork (dispatch.c). fc_threads_started: a parallel
 * region has run with more than one thread (GNU OpenMP then keeps a pool of
 * worker threads). fc_threads_lost_in_fork: this process is a child forked
 * after that; the workers did not survive the fork, and a region that wakes
 * them would wait forever, so every kernel runs on its calling thread. */
extern int fc_threads_started, fc_threads_lost_in_fork;

typedef struct fc_kernel_set {
    const char *isa;         /* "avx512", "avx2" or "generic" */
    fc_isa_config config;
    /* packing (pack.c): the micro-panel layout the GEMM kernels read,
     * [group][NR panel][KC block][tap][channel][panel width], then the
     * bias; packed_size counts its elements. unpack is the inverse
     * (weights only). */
    int64_t (*packed_size)(const fc_conv_desc *d);
    void (*pack)(const fc_conv_desc *d, const void *w, fc_weight_strides ws,
                 const void *bias, void *packed, int nthreads);
    void (*unpack)(const fc_conv_desc *d, const void *packed, fc_weight_strides ws, void *w);
    /* indirect GEMM (igemm.c) over packed weights; a 1x1, stride 1,
     * unpadded convolution takes its GEMM path. */
    int (*igemm)(const fc_conv_desc *d, const void *x, const void *packed, void *y,
                 int nthreads);
    /* igemm of several descs (disjoint parts of y through their y_*, each
     * with its packed weights) over one input, in one parallel region. */
    int (*igemm_phases)(const fc_conv_desc *descs, const void *const *packed, int64_t nphases,
                        const void *x, void *y, int nthreads);
    /* The GEMM path reading a C-contiguous (C, K) weight matrix in place
     * (1x1, one group, K a multiple of vlen; else FC_EINVAL), bias K values
     * or NULL. */
    int (*gemm_in_place)(const fc_conv_desc *d, const void *x, const void *w,
                         const void *bias, void *y, int nthreads);
    /* dense.c: a dense layer with few rows, W streamed in place. */
    int (*dense)(const fc_dense_desc *d, const void *x, const void *w, const void *bias,
                 void *y, int nthreads);
    /* winograd.c, F(m x m, 3x3), m = 2 or 4, for a 3x3, stride 1,
     * undilated, one-group convolution. winograd_pack: U = G g G^T of the
     * weights (through ws; the caller checks they are finite and at most the
     * dtype's largest value / 2.25 for m = 2, / 1 for m = 4, so that U cannot
     * overflow), computed in double, rounded once, and packed as (m + 2)^2
     * (C, K) GEMM panels of winograd_packed_size elements in all. winograd:
     * the convolution in one parallel region; returns 1 (y then incomplete)
     * where an input, a transformed value or an output is Inf or NaN, else
     * 0, or -FC_ENOMEM. */
    int64_t (*winograd_packed_size)(const fc_conv_desc *d, int m);
    int (*winograd_pack)(const fc_conv_desc *d, int m, const void *w, fc_weight_strides ws,
                         void *packed, int nthreads);
    int (*winograd)(const fc_conv_desc *d, int m, const void *x, const void *packed,
                    const void *bias, void *y, int nthreads);
    /* dwconv.c: groups == C == K, w contiguous (kh, kw, C), bias C or NULL. */
    int (*dwconv)(const fc_conv_desc *d, const void *x, const void *w, const void *bias,
                  void *y, int nthreads);
    /* activation.c: fc_activate */
    void (*activate)(fc_activation act, const void *x, void *y, int64_t n, int flush,
                     int nthreads);
    /* pool.c */
    int (*pool)(const fc_pool_desc *d, const void *x, void *y, int nthreads,
                fc_interrupt *interrupt);
} fc_kernel_set;

/* Per-thread scratch memory (scratch.c), kept from call to call: a buffer
 * of at least n bytes, 64-byte aligned, owned by the calling thread (the
 * threads of its parallel regions may share it) until it asks for the same
 * slot again; NULL if there is no memory. fc_scratch_put: the caller is done
 * with it for this call (a very large buffer is then freed). One slot per
 * buffer a call holds at the same time: */
enum {
    FC_SCRATCH_CROPPED,  /* the operator's cropped copy of a transposed call's input */
    FC_SCRATCH_WINDOW,   /* the operator's window of a one-pixel (dense) call, which
                            may be that cropped copy's */
    FC_SCRATCH_PADDED,   /* a kernel's padded copy of the input */
    FC_SCRATCH_WORK,     /* a kernel's per-thread workspaces */
    FC_SCRATCH_SLOTS
};
void *fc_scratch_get(int slot, size_t n);
void fc_scratch_put(int slot);

/* The kernels of `isa` for `dtype` (FC_F32/FC_F64); NULL if not supported. */
const fc_kernel_set *fc_kernels(int isa, int dtype);

#endif
