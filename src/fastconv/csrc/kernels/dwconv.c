/* Depthwise convolution (groups == C == K), channels in SIMD lanes. */
#include "activation.h"

/* Output pixels per depthwise register tile (one vector of channels each). */
#define DW_OX 8

/*
 * Depthwise convolution, channels in SIMD lanes: for one output row and one
 * vector of channels, DW_OX output pixels at a time accumulate over the taps
 * in registers, each input vector read straight from the NHWC row. Tiles
 * whose taps all fall inside the image skip every bounds check; the others
 * (the image border) check each tap. The sum over taps is in the same order
 * everywhere, so the result does not depend on the thread count.
 */
static inline __attribute__((always_inline)) void dw_tile(
    const fc_conv_desc *d, const real *img, const real *w, const real *bias, int64_t oy,
    int64_t ox0, int64_t c0, const int nox, const int checked, const int k3_stride,
    real *out_row, const real *res_row, const act_vec *act)
{
    const int64_t C = d->C;
    vec acc[DW_OX];
#pragma GCC unroll 16
    for (int i = 0; i < DW_OX; i++)
        acc[i] = (vec){0};
    for (int64_t ty = 0; ty < d->kh; ty++) {
        const int64_t iy = oy * d->sh - d->pad_top + ty * d->dh;
        if (iy < 0 || iy >= d->H)
            continue;
        const real *xrow = img + iy * d->W * C + c0;
        if (k3_stride) {
            /* 3 taps, dilation 1, stride k3_stride (1 or 2): each input
             * vector of the row is loaded once and feeds every output it
             * touches; columns outside the image read as zeros. */
            const int S = k3_stride;
            const int64_t ix0 = ox0 * S - d->pad_left;
            const vec w0 = load(w + ty * 3 * C + c0), w1 = load(w + (ty * 3 + 1) * C + c0),
                      w2 = load(w + (ty * 3 + 2) * C + c0);
            vec xv[(DW_OX - 1) * 2 + 3];
#pragma GCC unroll 32
            for (int j = 0; j < (DW_OX - 1) * S + 3; j++) {
                const int64_t ix = ix0 + j;
                xv[j] = !checked || (ix >= 0 && ix < d->W) ? load(xrow + ix * C) : (vec){0};
            }
#pragma GCC unroll 16
            for (int i = 0; i < nox; i++) {
                acc[i] += xv[i * S] * w0;
                acc[i] += xv[i * S + 1] * w1;
                acc[i] += xv[i * S + 2] * w2;
            }
            continue;
        }
        for (int64_t tx = 0; tx < d->kw; tx++) {
            const vec wv = load(w + (ty * d->kw + tx) * C + c0);
            const int64_t ix0 = ox0 * d->sw - d->pad_left + tx * d->dw;
#pragma GCC unroll 16
            for (int i = 0; i < nox; i++) {
                const int64_t ix = ix0 + i * d->sw;
                if (!checked || (ix >= 0 && ix < d->W))
                    acc[i] += load(xrow + ix * C) * wv;
            }
        }
    }
    const vec b = bias ? load(bias + c0) : (vec){0};
#pragma GCC unroll 16
    for (int i = 0; i < nox; i++) {
        vec v = bias ? acc[i] + b : acc[i];
        if (res_row)
            v += load(res_row + (ox0 + i) * C + c0);
        if (act->kind != FC_ACT_NONE)
            v = activate(v, act);
        store(out_row + (ox0 + i) * C + c0, v);
    }
}

/* One output value the plain way: the channel tail (C not a multiple of
 * VLEN). */
static inline void dw_scalar(const fc_conv_desc *d, const real *img, const real *w,
                             const real *bias, int64_t oy, int64_t ox, int64_t c, real *out_row,
                             const real *res_row, const act_vec *act)
{
    const int64_t C = d->C;
    real acc = 0;
    for (int64_t ty = 0; ty < d->kh; ty++) {
        const int64_t iy = oy * d->sh - d->pad_top + ty * d->dh;
        if (iy < 0 || iy >= d->H)
            continue;
        for (int64_t tx = 0; tx < d->kw; tx++) {
            const int64_t ix = ox * d->sw - d->pad_left + tx * d->dw;
            if (ix >= 0 && ix < d->W)
                acc += img[(iy * d->W + ix) * C + c] * w[(ty * d->kw + tx) * C + c];
        }
    }
    if (bias)
        acc += bias[c];
    if (res_row)
        acc += res_row[ox * C + c];
    out_row[ox * C + c] = activate1(acc, act);
}

INTERNAL int NAME(dwconv)(const fc_conv_desc *d, const void *xv, const void *wv,
                        const void *biasv, void *yv, int nthreads)
{
    const real *x = xv, *w = wv, *bias = biasv;
    real *y = yv;
    const int64_t rows = d->N * d->Ho, C = d->C, cvec = C / VLEN * VLEN;
    /* Output columns [ox_lo, ox_hi) read only columns inside the image. */
    const int64_t ox_lo = MIN(d->Wo, (d->pad_left + d->sw - 1) / d->sw);
    const int64_t last = d->W - 1 + d->pad_left - (d->kw - 1) * d->dw; /* max ox*sw */
    const int64_t ox_hi = last < 0 ? 0 : MIN(d->Wo, last / d->sw + 1);
    /* 3-tap rows at stride 1 or 2 (MobileNet's) load each input once. */
    const int k3 = d->kw == 3 && d->dw == 1 && (d->sw == 1 || d->sw == 2) ? (int)d->sw : 0;
    const int nt = clamp_threads(nthreads, rows, (double)rows * d->Wo * C * d->kh * d->kw);
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(d->flush_denormals);
        const act_vec act = act_prepare(d->act);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; row++) {
            if (interrupted(d->interrupt))
                continue;
            const int64_t n = row / d->Ho, oy = row % d->Ho;
            const real *img = x + n * d->H * d->W * C;
            real *out_row = y + row * d->Wo * C;
            const real *res_row =
                d->residual ? (const real *)d->residual + row * d->Wo * C : NULL;
            /* Pixels outer, channels inner: a tile's input window (kh rows
             * of DW_OX * sw + kw pixels, all channels) stays in L1. */
            for (int64_t ox = 0; ox < d->Wo; ox += DW_OX) {
                const int nox = (int)MIN(DW_OX, d->Wo - ox);
                const int inside = nox == DW_OX && ox >= ox_lo && ox + DW_OX <= ox_hi;
                for (int64_t c0 = 0; c0 < cvec; c0 += VLEN) {
                    if (k3 == 1 && inside)
                        dw_tile(d, img, w, bias, oy, ox, c0, DW_OX, 0, 1, out_row, res_row,
                                &act);
                    else if (k3 == 1)
                        dw_tile(d, img, w, bias, oy, ox, c0, nox, 1, 1, out_row, res_row,
                                &act);
                    else if (k3 == 2 && inside)
                        dw_tile(d, img, w, bias, oy, ox, c0, DW_OX, 0, 2, out_row, res_row,
                                &act);
                    else if (k3 == 2)
                        dw_tile(d, img, w, bias, oy, ox, c0, nox, 1, 2, out_row, res_row,
                                &act);
                    else if (inside)
                        dw_tile(d, img, w, bias, oy, ox, c0, DW_OX, 0, 0, out_row, res_row,
                                &act);
                    else
                        dw_tile(d, img, w, bias, oy, ox, c0, nox, 1, 0, out_row, res_row,
                                &act);
                }
                for (int64_t o = ox; o < ox + nox; o++)
                    for (int64_t c = cvec; c < C; c++)
                        dw_scalar(d, img, w, bias, oy, o, c, out_row, res_row, &act);
            }
        }
        fp_leave(fp);
    }
    return run_status(d->interrupt);
}

