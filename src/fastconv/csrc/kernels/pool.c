#include "common.h"

/*
 * Pooling, NHWC, one vector of channels at a time over each output pixel's
 * window (the window is clipped to the image; padding never wins a max and,
 * with count_include_pad, counts in an average's divisor as in PyTorch).
 */
static inline vec pool_max(vec m, vec v)
{
    /* v where v > m or v is NaN: NaN propagates, as in PyTorch. */
    const vbits take = (vbits)(v > m) | (vbits)(v != v);
    return (vec)(((vbits)m & ~take) | ((vbits)v & take));
}

INTERNAL int NAME(pool)(const fc_pool_desc *d, const void *xv, void *yv, int nthreads,
                        fc_interrupt *interrupt)
{
    const real *x = xv;
    real *y = yv;
    const int64_t C = d->C, rows = d->N * d->Ho, cvec = C / VLEN * VLEN;
    const int nt = clamp_threads(nthreads, rows, (double)rows * d->Wo * C * d->kh * d->kw);
#pragma omp parallel num_threads(nt)
    {
        /* Pooling only compares and averages: it keeps subnormals whatever
         * the flush setting, in fastconv's rounding (common.h: fp_enter). */
        const fp_mode fp = fp_enter(0);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; row++) {
            if (interrupted(interrupt))
                continue;
            const int64_t n = row / d->Ho, oy = row % d->Ho;
            const real *img = x + n * d->H * d->W * C;
            const int64_t y0 = (oy + d->oy_origin) * d->sh - d->ph;
            const int64_t y1 = MIN(y0 + d->kh, d->Hm + d->ph);
            const int64_t ya = y0 < 0 ? 0 : y0, yb = MIN(y1, d->Hm);
            for (int64_t ox = 0; ox < d->Wo; ox++) {
                const int64_t x0 = (ox + d->ox_origin) * d->sw - d->pw;
                const int64_t x1 = MIN(x0 + d->kw, d->Wm + d->pw);
                const int64_t xa = x0 < 0 ? 0 : x0, xb = MIN(x1, d->Wm);
                /* The divisor in double: a window's area may exceed int64_t
                 * (two sides near 2**32) and float's 24-bit significand. */
                const double count = d->count_include_pad ? (double)(y1 - y0) * (double)(x1 - x0)
                                                          : (double)(yb - ya) * (double)(xb - xa);
                const real scale = count > 0 ? (real)(1.0 / count) : 0;
                real *out = y + (row * d->Wo + ox) * C;
                for (int64_t c = 0; c < cvec; c += VLEN) {
                    vec acc = d->max ? (vec){0} - (real)__builtin_inf() : (vec){0};
                    for (int64_t iy = ya; iy < yb; iy++)
                        for (int64_t ix = xa; ix < xb; ix++) {
                            const vec v = load(img + ((iy - d->y_origin) * d->W + ix - d->x_origin) * C + c);
                            acc = d->max ? pool_max(acc, v) : acc + v;
                        }
                    store(out + c, d->max ? acc : acc * scale);
                }
                for (int64_t c = cvec; c < C; c++) {
                    real acc = d->max ? -(real)__builtin_inf() : 0;
                    for (int64_t iy = ya; iy < yb; iy++)
                        for (int64_t ix = xa; ix < xb; ix++) {
                            const real v = img[((iy - d->y_origin) * d->W + ix - d->x_origin) * C + c];
                            acc = d->max ? (v > acc || v != v ? v : acc) : acc + v;
                        }
                    out[c] = d->max ? acc : acc * scale;
                }
            }
        }
        fp_leave(fp);
    }
    return run_status(interrupt);
}

