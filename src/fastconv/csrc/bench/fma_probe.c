/*
 * The benchmark's peak-throughput probe, compiled per ISA and dtype like the
 * kernels but not one of them: fc_fma_probe (dispatch.c) reaches it.
 */
#include "kernels/common.h"

/* Peak-throughput probe: iters rounds of FMA_CHAINS independent vector FMAs
 * per thread, registers only. Returns the floating-point operations done.
 * 12 chains cover two FMA pipes of latency up to 6, and with the two
 * constants fit AVX2's 16 vector registers: 16 chains did not, and the
 * spilled ones, chained through memory, held the probe to about 52 GFLOP/s
 * on a Zen 3 core where fastconv.matmul reaches 65. */
#define FMA_CHAINS 12
INTERNAL double CAT3(fma_probe, DT, ISA)(int64_t iters, int nthreads)
{
    const int nt = clamp_threads(nthreads, nthreads, HUGE_VAL);
    double total = 0;
#pragma omp parallel num_threads(nt) reduction(+ : total)
    {
        vec acc[FMA_CHAINS];
        const vec m = (vec){0} + (real)0.999999, a = (vec){0} + (real)1e-7;
        for (int j = 0; j < FMA_CHAINS; j++)
            acc[j] = (vec){0} + (real)(j + 1);
        for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
            for (int j = 0; j < FMA_CHAINS; j++)
                acc[j] = acc[j] * m + a;
        }
        real sum = 0;
        for (int j = 0; j < FMA_CHAINS; j++)
            for (int l = 0; l < VLEN; l++)
                sum += acc[j][l];
        /* The sum is positive and finite: this only keeps the loop alive. */
        total += sum > 0 ? 2.0 * FMA_CHAINS * VLEN * (double)iters : 0.0;
    }
    return total;
}
