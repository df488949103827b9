/*
 * Packing: a convolution's weights (read through strides: HWIO, OIHW or any
 * other layout) and bias into the micro-panel layout of packing.h, and
 * back.
 */
#include "packing.h"

INTERNAL int64_t NAME(packed_size)(const fc_conv_desc *d) { return packed_size(d); }

/* Packing moves the weights once through memory, in jobs of PACK_ROWS input
 * channels (all taps): with output channels contiguous (HWIO, a GEMM's b)
 * each source row is read in order and spread over the panels; otherwise
 * (OIHW, a transposed b) each panel gathers its columns from a source block
 * that the job has in cache. Reading a 400 MB kernel panel by panel instead,
 * 256 bytes per row, took 1.1 s for VGG's fc6. */
#define PACK_ROWS 16

INTERNAL void NAME(pack)(const fc_conv_desc *d, const void *wv, fc_weight_strides s,
                       const void *biasv, void *packedv, int nthreads)
{
    const real *w = wv, *bias = biasv;
    real *packed = packedv;
    const int64_t G = d->groups, Cg = d->C / G, Kg = d->K / G;
    const int64_t nb = n_blocks(Kg), ntaps = d->kh * d->kw;
    const int64_t chunks = (Cg + PACK_ROWS - 1) / PACK_ROWS;
#pragma omp parallel for num_threads(clamp_threads(nthreads, G * chunks, (double)G * Kg * ntaps * Cg)) \
    schedule(static)
    for (int64_t job = 0; job < G * chunks; job++) {
        const int64_t g = job / chunks, c_lo = job % chunks * PACK_ROWS;
        const int64_t c_hi = MIN(c_lo + PACK_ROWS, Cg);
        if (s.k == 1) { /* output channels contiguous: rows in order */
            for (int64_t t = 0; t < ntaps; t++)
                for (int64_t c = c_lo; c < c_hi; c++) {
                    const real *row = w + tap_offset(d, s, g, t) + c * s.c;
                    for (int64_t b = 0; b < nb; b++) {
                        const int64_t nr = MIN(NR, Kg - b * NR), width = panel_width(Kg, b);
                        real *dst = packed + packed_row(d, g, b, t, c);
                        memcpy(dst, row + b * NR, sizeof(real) * (size_t)nr);
                        memset(dst + nr, 0, sizeof(real) * (size_t)(width - nr));
                    }
                }
            continue;
        }
        for (int64_t b = 0; b < nb; b++) { /* each panel gathers its columns */
            const int64_t nr = MIN(NR, Kg - b * NR), width = panel_width(Kg, b);
            for (int64_t t = 0; t < ntaps; t++) {
                const real *src = w + tap_offset(d, s, g, t) + b * NR * s.k;
                for (int64_t c = c_lo; c < c_hi; c++) {
                    real *dst = packed + packed_row(d, g, b, t, c);
                    for (int64_t j = 0; j < nr; j++)
                        dst[j] = src[c * s.c + j * s.k];
                    for (int64_t j = nr; j < width; j++)
                        dst[j] = 0;
                }
            }
        }
    }
    real *pb = packed + bias_offset(d);
    for (int64_t g = 0; g < G; g++)
        for (int64_t k = 0; k < padded(Kg); k++)
            *pb++ = (bias && k < Kg) ? bias[g * Kg + k] : 0;
}

/* The inverse of pack: the weights back from their panels, written through
 * strides as pack read them (the bias is not touched). For layers that keep
 * only their packed weights and are asked for the weights (to save or
 * convert a model). */
INTERNAL void NAME(unpack)(const fc_conv_desc *d, const void *packedv, fc_weight_strides s,
                         void *wv)
{
    const real *packed = packedv;
    real *w = wv;
    const int64_t G = d->groups, Cg = d->C / G, Kg = d->K / G;
    const int64_t nb = n_blocks(Kg), ntaps = d->kh * d->kw;
    for (int64_t g = 0; g < G; g++)
        for (int64_t t = 0; t < ntaps; t++) {
            real *tap = w + tap_offset(d, s, g, t);
            for (int64_t c = 0; c < Cg; c++)
                for (int64_t b = 0; b < nb; b++) {
                    const real *row = packed + packed_row(d, g, b, t, c);
                    const int64_t nr = MIN(NR, Kg - b * NR);
                    for (int64_t j = 0; j < nr; j++)
                        tap[c * s.c + (b * NR + j) * s.k] = row[j];
                }
        }
}

