/* Dense layers with few rows (batch-1 fully-connected layers), weights streamed in place. */
#include "activation.h"

/*
 * Dense layer with few rows: y (M, K) = x (M, R) @ W (+ bias, ReLU) reading W
 * in place, for batch-1 fully-connected layers (and the convolutions whose
 * kernel covers the whole input), which are bound by the memory bandwidth:
 * W is streamed once per DENSE_ROWS rows of x, with no packing pass, as long
 * contiguous runs (the hardware prefetchers' best case).
 *   (R, K) layout: the rows of W fall in chunks of DENSE_CHUNK; a task sums
 *     one chunk's rows for a range of columns into that chunk's partial
 *     sums, running down the rows DENSE_PASS at a time (8 streams: measured
 *     25 GB/s on fc6 against 23 with 4 and 19 with 16). Threads take whole
 *     chunks when there are enough, so that each streams one contiguous part
 *     of W (splitting the columns instead left fc8's rows, 4000 bytes, in
 *     half-page pieces: 85-100 GB/s from L3 on two threads, against ~130 for
 *     contiguous parts); the partial sums are then added in chunk order.
 *     Each pass also prefetches the rows DENSE_PREFETCH further on into L2
 *     (fc8 from L3 and fc7 from memory took 15-23% less time on one thread:
 *     the prefetchers do not run ahead across the jumps between rows).
 *   (K, R) layout: tasks of DENSE_OUTS output columns; each is a dot product
 *     of a row of W with each row of x, two vectors of lanes wide, for
 *     DENSE_DOT_OUTS rows of W at once (four streams: 30 GB/s on fc6
 *     against 16 with one).
 * Every output's sum runs in an order fixed by the shapes alone (rows of W
 * in order within a chunk, then the chunks in order; lanes, then lane sums,
 * in a fixed order), so the result does not depend on the thread count.
 */
#define DENSE_DOT_OUTS 4
#define DENSE_OUTS 16
#define DENSE_PASS 8
#define DENSE_CHUNK 1024
#define DENSE_PREFETCH 16

/* Output (m, k): the sum v, its bias, its residual (the desc's, at m * K +
 * k), the activation. */
static inline real finish(const fc_dense_desc *d, real v, const real *bias, int64_t m, int64_t k,
                          const act_vec *act)
{
    if (bias)
        v += bias[k];
    if (d->residual)
        v += ((const real *)d->residual)[m * d->K + k];
    return activate1(v, act);
}

/* Partial sums of rows [r0, r1) of W for columns [k0, k1), (R, K) layout:
 * part (M, K) gets x[:, r0:r1] @ W[r0:r1, k0:k1] in those columns. */
static void dense_in_out(const fc_dense_desc *d, const real *x, const real *w,
                         int64_t r0, int64_t r1, int64_t k0, int64_t k1, real *part)
{
    const int64_t R = d->R, K = d->K, cw = k1 - k0, nvec = cw / VLEN;
    for (int64_t m = 0; m < d->M; m++)
        memset(part + m * K + k0, 0, sizeof(real) * (size_t)cw);
    for (int64_t m0 = 0; m0 < d->M; m0 += DENSE_ROWS) {
        const int64_t mr = MIN(DENSE_ROWS, d->M - m0);
        int64_t r = r0;
        for (; r + DENSE_PASS <= r1; r += DENSE_PASS) {
            const real *w0 = w + r * K + k0;
            /* The same columns DENSE_PREFETCH rows on, into L2 (see above);
             * near the end of W, rows already read. */
            const real *ahead = r + DENSE_PREFETCH + DENSE_PASS <= R ? w0 + DENSE_PREFETCH * K : w0;
            for (int64_t m = 0; m < mr; m++) {
                const real *xr = x + (m0 + m) * R + r;
                real *s = part + (m0 + m) * K + k0;
                for (int64_t v = 0; v < nvec; v++) {
                    const int64_t j = v * VLEN;
                    vec acc = load(s + j);
#pragma GCC unroll 8
                    for (int q = 0; q < DENSE_PASS; q++) {
                        if (m == 0)
                            __builtin_prefetch(ahead + q * K + j, 0, 2);
                        acc += load(w0 + q * K + j) * xr[q];
                    }
                    store(s + j, acc);
                }
                for (int64_t j = nvec * VLEN; j < cw; j++) {
                    real acc = s[j];
                    for (int q = 0; q < DENSE_PASS; q++)
                        acc += w0[q * K + j] * xr[q];
                    s[j] = acc;
                }
            }
        }
        for (; r < r1; r++) { /* the last (r1 - r0) % DENSE_PASS rows */
            const real *wr = w + r * K + k0;
            for (int64_t m = 0; m < mr; m++) {
                const real xq = x[(m0 + m) * R + r];
                real *s = part + (m0 + m) * K + k0;
                for (int64_t v = 0; v < nvec; v++)
                    store(s + v * VLEN, load(s + v * VLEN) + load(wr + v * VLEN) * xq);
                for (int64_t j = nvec * VLEN; j < cw; j++)
                    s[j] += wr[j] * xq;
            }
        }
    }
}

/* Lanes of v summed in a fixed order. */
static inline real lane_sum(vec v)
{
    real s = 0;
    for (int l = 0; l < VLEN; l++)
        s += v[l];
    return s;
}

/* Columns [k0, k1) of y for the (K, R) layout. */
static void dense_out_in(const fc_dense_desc *d, const real *x, const real *w,
                         const real *bias, real *y, int64_t k0, int64_t k1)
{
    const int64_t R = d->R, K = d->K, R2 = R / (2 * VLEN) * (2 * VLEN);
    const act_vec act = act_prepare(d->act);
    for (int64_t k = k0; k < k1; k += DENSE_DOT_OUTS) {
        const int64_t nk = MIN(DENSE_DOT_OUTS, k1 - k);
        for (int64_t m = 0; m < d->M; m++) {
            const real *xm = x + m * R;
            vec acc[DENSE_DOT_OUTS][2];
            for (int q = 0; q < DENSE_DOT_OUTS; q++)
                acc[q][0] = acc[q][1] = (vec){0};
            for (int64_t r = 0; r < R2; r += 2 * VLEN) {
                const vec x0 = load(xm + r), x1 = load(xm + r + VLEN);
#pragma GCC unroll 4
                for (int q = 0; q < DENSE_DOT_OUTS; q++) {
                    if (q < nk) {
                        const real *wq = w + (k + q) * R + r;
                        acc[q][0] += load(wq) * x0;
                        acc[q][1] += load(wq + VLEN) * x1;
                    }
                }
            }
            for (int q = 0; q < nk; q++) {
                const real *wq = w + (k + q) * R;
                real tail = 0;
                for (int64_t r = R2; r < R; r++)
                    tail += xm[r] * wq[r];
                y[m * K + k + q] =
                    finish(d, lane_sum(acc[q][0] + acc[q][1]) + tail, bias, m, k + q, &act);
            }
        }
    }
}

INTERNAL int NAME(dense)(const fc_dense_desc *d, const void *xv, const void *wv,
                       const void *biasv, void *yv, int nthreads)
{
    const real *x = xv, *w = wv, *bias = biasv;
    real *y = yv;
    const int64_t M = d->M, K = d->K;
    if (M == 0 || K == 0)
        return FC_OK;
    const double work = (double)M * d->R * K;
    if (d->w_out_in) { /* (K, R): tasks of DENSE_OUTS columns */
        const int64_t ntasks = (K + DENSE_OUTS - 1) / DENSE_OUTS;
        const int nt = clamp_threads(nthreads, ntasks, work);
#pragma omp parallel num_threads(nt)
        {
            const fp_mode fp = fp_enter(d->flush_denormals);
#pragma omp for schedule(static)
            for (int64_t t = 0; t < ntasks; t++)
                if (!interrupted(d->interrupt))
                    dense_out_in(d, x, w, bias, y, t * DENSE_OUTS, MIN((t + 1) * DENSE_OUTS, K));
            fp_leave(fp);
        }
        return run_status(d->interrupt);
    }
    /* (R, K): tasks of (chunk of rows, range of whole vectors of columns),
     * chunk-major, so that consecutive tasks read consecutive parts of W;
     * the columns are split only as far as needed to give every thread a
     * task. part holds each chunk's partial sums, (nchunks, M, K). */
    const int64_t nchunks = d->R > 0 ? (d->R + DENSE_CHUNK - 1) / DENSE_CHUNK : 1;
    const int64_t nvec = (K + VLEN - 1) / VLEN;
    int nt = clamp_threads(nthreads, nchunks * nvec, work);
    const int64_t ncols = MIN(nvec, (nt + nchunks - 1) / nchunks), ntasks = nchunks * ncols;
    real *part = fc_scratch_get(FC_SCRATCH_WORK, sizeof(real) * (size_t)(nchunks * M * K));
    if (!part)
        return FC_ENOMEM;
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(d->flush_denormals);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < ntasks; t++) {
            if (interrupted(d->interrupt))
                continue;
            const int64_t c = t / ncols, b = t % ncols;
            dense_in_out(d, x, w, c * DENSE_CHUNK, MIN((c + 1) * DENSE_CHUNK, d->R),
                         nvec * b / ncols * VLEN, MIN(nvec * (b + 1) / ncols * VLEN, K),
                         part + c * M * K);
        }
        /* (the loop's implied barrier: every partial sum is complete, unless
         * the run was interrupted, which every thread now sees alike: then
         * none is read) */
        const int skip = run_status(d->interrupt);
        const act_vec act = act_prepare(d->act);
#pragma omp for schedule(static)
        for (int64_t k = 0; k < K; k++)
            for (int64_t m = 0; m < M && !skip; m++) {
                real v = part[m * K + k];
                for (int64_t c = 1; c < nchunks; c++)
                    v += part[(c * M + m) * K + k];
                y[m * K + k] = finish(d, v, bias, m, k, &act);
            }
        fp_leave(fp);
    }
    fc_scratch_put(FC_SCRATCH_WORK);
    return run_status(d->interrupt);
}

