/* An activation over an array (fc_activate): the code of the kernels' store
 * (activation.h), so that a fused activation and a separate one agree
 * bitwise. */
#include "activation.h"

/* Values per task: enough to amortise a thread's wake-up. */
#define ACT_BLOCK 16384

INTERNAL void NAME(activate)(fc_activation act, const void *xv, void *yv, int64_t n, int flush,
                             int nthreads)
{
    const real *x = xv;
    real *y = yv;
    const act_vec a = act_prepare(act);
    const int64_t ntasks = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#pragma omp parallel num_threads(clamp_threads(nthreads, ntasks, (double)n * 16))
    {
        const fp_mode fp = fp_enter(flush);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < ntasks; t++) {
            const int64_t end = MIN(n, (t + 1) * ACT_BLOCK);
            int64_t i = t * ACT_BLOCK;
            for (; i + VLEN <= end; i += VLEN)
                store(y + i, activate(load(x + i), &a));
            if (i < end)
                store_lanes(y + i, activate(load_lanes(x + i, end - i), &a), end - i);
        }
        fp_leave(fp);
    }
}
