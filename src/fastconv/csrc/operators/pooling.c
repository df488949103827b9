/* Pooling has one algorithm and no weights: the operator is one call. */
#include "kernels/kernels.h"

int fc_pool_run(int isa, int dtype, const fc_pool_desc *d, const void *x, void *y,
                int nthreads, fc_interrupt *interrupt)
{
    const fc_kernel_set *ks = fc_kernels(isa, dtype);
    if (!ks || d->N < 0 || d->H < 0 || d->W < 0 || d->C < 0 || d->kh < 1 || d->kw < 1 ||
        d->sh < 1 || d->sw < 1 || d->ph < 0 || d->pw < 0 || d->Ho < 0 || d->Wo < 0)
        return FC_EINVAL;
    return ks->pool(d, x, y, nthreads, interrupt);
}
