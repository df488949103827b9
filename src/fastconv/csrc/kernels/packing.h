/*
 * The packed weight layout, shared by pack.c (which writes it) and igemm.c
 * and winograd.c (which read it). Per group, panels of NR output channels
 * (the last one padded(remaining) wide), each [KC block][tap][channel]
 * [width]; then the bias, per group padded(Kg) values.
 */
#ifndef FASTCONV_KERNELS_PACKING_H
#define FASTCONV_KERNELS_PACKING_H

#include "common.h"

static inline int64_t n_blocks(int64_t n) { return (n + NR - 1) / NR; }
/* Output channels of a group rounded up to whole vectors: the packed width. */
static inline int64_t padded(int64_t n) { return (n + VLEN - 1) / VLEN * VLEN; }
/* Width of panel b of a group with Kg output channels: NR, except the last. */
static inline int64_t panel_width(int64_t Kg, int64_t b) { return MIN(NR, padded(Kg - b * NR)); }
/* Reduction block of a convolution (packing and kernels agree on it). */
static inline int64_t kc_block(const fc_conv_desc *d) { return d->kh * d->kw == 1 ? KC_GEMM : KC; }

static inline int64_t packed_size(const fc_conv_desc *d)
{
    const int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    return d->groups * padded(Kg) * (d->kh * d->kw * Cg + 1);
}

static inline int64_t bias_offset(const fc_conv_desc *d)
{
    const int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    return d->groups * padded(Kg) * d->kh * d->kw * Cg;
}

/* Offset of panel b of group g. */
static inline int64_t panel_offset(const fc_conv_desc *d, int64_t g, int64_t b)
{
    const int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    return (g * padded(Kg) + b * NR) * d->kh * d->kw * Cg;
}

/* Offset of row (tap t, channel c) of panel b of group g: its NR-wide slot. */
static inline int64_t packed_row(const fc_conv_desc *d, int64_t g, int64_t b, int64_t t,
                                 int64_t c)
{
    const int64_t Cg = d->C / d->groups, kcb = kc_block(d), ntaps = d->kh * d->kw;
    const int64_t c0 = c / kcb * kcb, kc = MIN(kcb, Cg - c0);
    const int64_t width = panel_width(d->K / d->groups, b);
    return panel_offset(d, g, b) + (c0 * ntaps + t * kc + (c - c0)) * width;
}

/* Offset of tap t of group g (its channel 0, the group's output channel 0)
 * in weights addressed through strides s. */
static inline int64_t tap_offset(const fc_conv_desc *d, fc_weight_strides s, int64_t g,
                                 int64_t t)
{
    return (t / d->kw) * s.ty + (t % d->kw) * s.tx + g * (d->K / d->groups) * s.k;
}

/* igemm.c's GEMM for winograd.c: c (M, K) = a (M, C) @ the packed weights
 * of a 1x1 convolution C -> K (no bias, no ReLU), rows C and K values
 * apart, on the calling thread alone, with a workspace of
 * gemm_serial_workspace() bytes, 64-byte aligned. */
INTERNAL size_t NAME(gemm_serial_workspace)(void);
INTERNAL void NAME(gemm_serial)(int64_t M, int64_t C, int64_t K, const real *a,
                                const real *packed, real *c, void *work);

#endif
