/* An activation over an array, for the activation layers of fastconv.nn:
 * the kernels' own store code (kernels/activation.h), so that a layer's
 * result equals the same activation fused into a convolution, bitwise. */
#include "kernels/kernels.h"

int fc_activate(int isa, int dtype, fc_activation act, const void *x, void *y, int64_t n,
                int flush_denormals, int nthreads)
{
    const fc_kernel_set *ks = fc_kernels(isa, dtype);
    if (!ks || n < 0 || act.kind < 0 || act.kind >= FC_ACT_COUNT)
        return FC_EINVAL;
    ks->activate(act, x, y, n, flush_denormals, nthreads);
    return FC_OK;
}
