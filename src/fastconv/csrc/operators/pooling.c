/* Pooling has one algorithm and no weights: the operator is one call. */
#include "kernels/kernels.h"

/* Whether the outputs o0 .. o0 + n - 1 of a map of m rows read only rows
 * origin .. origin + rows - 1 (their windows clipped to the map). */
static int window_in(int64_t o0, int64_t n, int64_t s, int64_t k, int64_t p, int64_t m,
                     int64_t origin, int64_t rows)
{
    const int64_t first = o0 * s - p, last = (o0 + n - 1) * s - p;
    const int64_t lo = first < 0 ? 0 : first;
    int64_t hi = last + k;
    hi = hi < m + p ? hi : m + p;
    hi = hi < m ? hi : m;
    return lo >= origin && hi <= origin + rows;
}

int fc_pool_run(int isa, int dtype, const fc_pool_desc *d, const void *x, void *y,
                int nthreads, fc_interrupt *interrupt)
{
    const fc_kernel_set *ks = fc_kernels(isa, dtype);
    if (!ks || d->N < 0 || d->H < 0 || d->W < 0 || d->C < 0 || d->kh < 1 || d->kw < 1 ||
        d->sh < 1 || d->sw < 1 || d->ph < 0 || d->pw < 0 || d->Ho < 0 || d->Wo < 0 ||
        d->y_origin < 0 || d->x_origin < 0 || d->oy_origin < 0 || d->ox_origin < 0 ||
        d->y_origin + d->H > d->Hm || d->x_origin + d->W > d->Wm)
        return FC_EINVAL;
    /* Every window the region's outputs read lies in x (windows move
     * monotonically: the first and the last output bound them). */
    if (d->N > 0 && d->Ho > 0 && d->Wo > 0 && d->C > 0 &&
        (!window_in(d->oy_origin, d->Ho, d->sh, d->kh, d->ph, d->Hm, d->y_origin, d->H) ||
         !window_in(d->ox_origin, d->Wo, d->sw, d->kw, d->pw, d->Wm, d->x_origin, d->W)))
        return FC_EINVAL;
    return ks->pool(d, x, y, nthreads, interrupt);
}
