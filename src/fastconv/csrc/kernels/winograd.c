/*
 * Winograd F(2x2, 3x3) and F(4x4, 3x3) (Lavin and Gray, 2016): each m x m
 * tile of outputs (m = 2 or 4) is A^T [(G g G^T) . (B^T d B)] A for its
 * a x a input patch d (a = m + 2), so the a^2 products of the transformed
 * patches and weights are a^2 GEMMs (tiles x C) @ (C x K): per channel pair,
 * 16 multiply-adds for 4 outputs (F(2x2)) or 36 for 16 (F(4x4)), where the
 * direct convolution does 9 per output. F(2x2)'s B^T and
 * A^T only add and subtract; F(4x4)'s (points 0, +-1, +-2, inf, as ncnn and
 * NNPACK use) also scale by 2, 4, 5 and 8, which makes its rounding error
 * about ten times larger (tests/test_winograd_f4.py derives the bound). G is
 * applied to the weights once, when they are packed.
 *
 * One driver for both tile sizes, one parallel region per call: each thread
 * takes blocks of tiles, and for each block transforms the input patches into
 * V (a^2, tiles, C), runs the a^2 GEMMs V[i] @ U[i] into M (a^2, tiles, K)
 * through igemm.c's micro-kernels and transforms M back into the output with
 * bias and activation, while V and M are in its cache. Each output row of a
 * GEMM is reduced in a fixed order whatever the block, so the result does not
 * depend on the thread count.
 */
#include "activation.h"
#include "packing.h"

/* The largest patch side (F(4x4, 3x3)'s). */
#define ALPHA_MAX 6

/* Tile t of m x m outputs (numbered row-major per image, image after
 * image): its image and the output coordinates of its top left value. */
static inline void tile_of(const fc_conv_desc *d, int m, int64_t t, int64_t *n, int64_t *oy,
                           int64_t *ox)
{
    const int64_t tw = (d->Wo + m - 1) / m, th = (d->Ho + m - 1) / m;
    *n = t / (th * tw);
    *oy = t / tw % th * m;
    *ox = t % tw * m;
}

/* Whether a sum of `v * 0` terms met an Inf or NaN (0 * it is NaN). */
static inline int met_nonfinite(vec check)
{
    int any = 0;
    for (int l = 0; l < VLEN; l++)
        any |= check[l] != 0;
    return any;
}

/* The 1x1 convolution C -> K whose packed panels hold one U[i]. */
static inline fc_conv_desc product_desc(const fc_conv_desc *d)
{
    return (fc_conv_desc){.N = 1, .C = d->C, .K = d->K, .groups = 1, .kh = 1, .kw = 1};
}

INTERNAL int64_t NAME(winograd_packed_size)(const fc_conv_desc *d, int m)
{
    const fc_conv_desc p = product_desc(d);
    return (m + 2) * (m + 2) * packed_size(&p);
}

/* o[i][l] (a rows) = (G g)[i] for the 3 rows g[j][l] of NR values each
 * (NR output channels at once, so that the compiler vectorises), in
 * double. F(4x4)'s scales each term before it adds (by 1/4, 1/6, 1/12 and
 * 1/24, as multiplications by their doubles), so that no partial sum exceeds
 * max |g| (G's rows have absolute sums at most 1): the caller's overflow
 * guard (below) holds for float64 too. */
static inline __attribute__((always_inline)) void weight_1d(int m, double g[3][NR],
                                                            double o[ALPHA_MAX][NR])
{
    const double q = 0.25, s = 1.0 / 6, t = 1.0 / 12, v = 1.0 / 24;
    for (int l = 0; l < NR; l++) {
        const double g0 = g[0][l], g1 = g[1][l], g2 = g[2][l];
        if (m == 2) {
            o[0][l] = g0;
            o[1][l] = 0.5 * (g0 + g1 + g2);
            o[2][l] = 0.5 * (g0 - g1 + g2);
            o[3][l] = g2;
        } else {
            o[0][l] = g0 * q;
            o[1][l] = -(g0 * s + g1 * s + g2 * s);
            o[2][l] = -(g0 * s - g1 * s + g2 * s);
            o[3][l] = g0 * v + g1 * t + g2 * s;
            o[4][l] = g0 * v - g1 * t + g2 * s;
            o[5][l] = g2;
        }
    }
}

/* U (a^2, C, K) = G g G^T for every (c, k), g read through the strides,
 * computed in double, rounded once, and written straight into the packed
 * panels of the a^2 products (their padding and bias rows zero), NR output
 * channels (one panel's row) at a time, so that the compiler vectorises
 * the transforms over them. The caller checks that every
 * weight is finite and at most the dtype's largest value / c in magnitude,
 * c = (the largest absolute row sum of G)^2 >= |U| / max |g|: 1.5^2 = 2.25
 * for F(2x2), 1 for F(4x4) (rows 1/4; 1/2; 1/2; 7/24; 7/24; 1): then no
 * value of U overflows. */
static void winograd_pack_m(const fc_conv_desc *d, int m, const real *w, fc_weight_strides s,
                            real *packed, int nthreads)
{
    const int64_t C = d->C, K = d->K;
    const int a = m + 2;
    const fc_conv_desc p = product_desc(d);
    const int64_t step = packed_size(&p);
    memset(packed, 0, sizeof(real) * (size_t)(a * a * step));
    const int64_t jobs = C * n_blocks(K);
    const int nt = clamp_threads(nthreads, jobs, (double)C * K * a * a);
    /* (in fastconv's mode, never flushing: U serves calls of either kind) */
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(0);
#pragma omp for schedule(static)
        for (int64_t job = 0; job < jobs; job++) {
            const int64_t c = job / n_blocks(K), k0 = job % n_blocks(K) * NR;
            const int64_t nk = MIN(NR, K - k0);
            double g[3][3][NR]; /* [tap column][tap row][channel] */
            for (int ty = 0; ty < 3; ty++)
                for (int tx = 0; tx < 3; tx++) {
                    const real *src = w + c * s.c + k0 * s.k + ty * s.ty + tx * s.tx;
                    if (nk == NR && s.k == 1) /* (HWIO: one vector load) */
                        for (int l = 0; l < NR; l++)
                            g[tx][ty][l] = src[l];
                    else
                        for (int64_t l = 0; l < NR; l++)
                            g[tx][ty][l] = l < nk ? src[l * s.k] : 0;
                }
            double col[3][ALPHA_MAX][NR], row[3][NR], r[ALPHA_MAX][NR];
            for (int tx = 0; tx < 3; tx++) /* G g, column by column */
                weight_1d(m, g[tx], col[tx]);
            real *u = packed + packed_row(&p, 0, k0 / NR, 0, c);
            for (int i = 0; i < a; i++) { /* (G g) G^T, row by row */
                for (int tx = 0; tx < 3; tx++)
                    for (int l = 0; l < NR; l++)
                        row[tx][l] = col[tx][i][l];
                weight_1d(m, row, r);
                for (int j = 0; j < a; j++)
                    for (int64_t l = 0; l < nk; l++)
                        u[(i * a + j) * step + l] = (real)r[j][l];
            }
        }
        fp_leave(fp);
    }
}

INTERNAL int NAME(winograd_pack)(const fc_conv_desc *d, int m, const void *wv,
                                 fc_weight_strides s, void *packedv, int nthreads)
{
    /* (one instance per tile size, the transforms' loops unrolled for it) */
    if (m == 2)
        winograd_pack_m(d, 2, wv, s, packedv, nthreads);
    else
        winograd_pack_m(d, 4, wv, s, packedv, nthreads);
    return FC_OK;
}

/* o (a vectors) = B^T d for the a vectors d[0], d[s], ... F(4x4)'s rows
 * (4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
 * 0 4 0 -5 0 1) share their sums; at most three roundings deep. */
static inline __attribute__((always_inline)) void input_1d(int m, const vec *d, int s, vec *o)
{
    if (m == 2) {
        o[0] = d[0] - d[2 * s];
        o[1] = d[s] + d[2 * s];
        o[2] = d[2 * s] - d[s];
        o[3] = d[s] - d[3 * s];
    } else {
        const vec d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s],
                  d5 = d[5 * s];
        const vec s12 = d1 + d2, s34 = d3 + d4, d21 = d1 - d2, d43 = d4 - d3;
        const vec d42 = d4 - d2, d31 = 2 * (d3 - d1);
        o[0] = 4 * d0 - 5 * d2 + d4;
        o[1] = s34 - 4 * s12;
        o[2] = d43 + 4 * d21;
        o[3] = d42 + d31;
        o[4] = d42 - d31;
        o[5] = 4 * d1 - 5 * d3 + d5;
    }
}

/* o (m vectors) = A^T t for the a vectors t[0], t[s], ... F(4x4)'s rows
 * (1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1): at most three
 * roundings deep. */
static inline __attribute__((always_inline)) void output_1d(int m, const vec *t, int s, vec *o)
{
    if (m == 2) {
        o[0] = t[0] + t[s] + t[2 * s];
        o[1] = t[s] - t[2 * s] - t[3 * s];
    } else {
        const vec s12 = t[s] + t[2 * s], s34 = t[3 * s] + t[4 * s];
        const vec d12 = t[s] - t[2 * s], d34 = t[3 * s] - t[4 * s];
        o[0] = t[0] + s12 + s34;
        o[1] = d12 + 2 * d34;
        o[2] = s12 + 4 * s34;
        o[3] = d12 + 8 * d34 + t[5 * s];
    }
}

/* v (a^2, n, C) = the transformed a x a input patches of tiles [t0, t0 + n);
 * 1 if a transformed value is Inf or NaN (from an input holding one, which
 * the transforms would spread to outputs that do not see it, or from an
 * overflow), else 0. */
static inline __attribute__((always_inline)) int
input_transform(const fc_conv_desc *d, int m, const real *x, int64_t t0, int64_t n, real *v)
{
    const int64_t C = d->C;
    const int a = m + 2;
    /* stays 0 unless a transformed value is Inf or NaN (0 * it is NaN) */
    vec check = {0};
    for (int64_t t = 0; t < n; t++) {
        int64_t img, oy, ox;
        tile_of(d, m, t0 + t, &img, &oy, &ox);
        const int64_t iy0 = oy - d->pad_top, ix0 = ox - d->pad_left;
        const real *p[ALPHA_MAX][ALPHA_MAX]; /* the patch's pixels; NULL in the padding */
        for (int i = 0; i < a; i++)
            for (int j = 0; j < a; j++) {
                const int64_t iy = iy0 + i, ix = ix0 + j;
                p[i][j] = iy >= 0 && iy < d->H && ix >= 0 && ix < d->W
                              ? x + ((img * d->H + iy) * d->W + ix) * C : NULL;
            }
        for (int64_t c = 0; c < C; c += VLEN) {
            const int64_t lanes = MIN(VLEN, C - c);
            vec dp[ALPHA_MAX][ALPHA_MAX], tb[ALPHA_MAX][ALPHA_MAX];
            for (int i = 0; i < a; i++)
                for (int j = 0; j < a; j++)
                    dp[i][j] = p[i][j] ? load_lanes(p[i][j] + c, lanes) : (vec){0};
            for (int j = 0; j < a; j++) { /* B^T d, column by column (into tb's rows) */
                vec col[ALPHA_MAX];
                input_1d(m, &dp[0][j], ALPHA_MAX, col);
                for (int i = 0; i < a; i++)
                    tb[i][j] = col[i];
            }
            for (int i = 0; i < a; i++) { /* (B^T d) B, row by row */
                vec r[ALPHA_MAX];
                input_1d(m, tb[i], 1, r);
                for (int j = 0; j < a; j++) {
                    check += r[j] * 0;
                    store_lanes(v + ((i * a + j) * n + t) * C + c, r[j], lanes);
                }
            }
        }
    }
    return met_nonfinite(check);
}

/* Tiles [t0, t0 + n) of y (NHWC) from their a^2 products m (a^2, n, K), with
 * bias (K values or NULL), the residual and the activation, the tiles at the
 * bottom and right edges cut to the output; 1 if an output is Inf or NaN (an
 * overflow in the products or their sums, where the direct convolution may
 * differ), else 0. */
static inline __attribute__((always_inline)) int
output_transform(const fc_conv_desc *d, int m, const real *mv, int64_t t0, int64_t n,
                 const real *bias, real *y)
{
    const int64_t K = d->K;
    const int a = m + 2;
    const act_vec act = act_prepare(d->act);
    const real *res = d->residual;
    vec check = {0}; /* as in input_transform: an Inf or NaN output */
    for (int64_t t = 0; t < n; t++) {
        int64_t img, oy, ox;
        tile_of(d, m, t0 + t, &img, &oy, &ox);
        const int rows = (int)MIN(m, d->Ho - oy), cols = (int)MIN(m, d->Wo - ox);
        for (int64_t k = 0; k < K; k += VLEN) {
            const int64_t lanes = MIN(VLEN, K - k);
            vec mp[ALPHA_MAX][ALPHA_MAX], s[ALPHA_MAX][ALPHA_MAX];
            for (int i = 0; i < a * a; i++)
                mp[i / a][i % a] = load_lanes(mv + (i * n + t) * K + k, lanes);
            for (int j = 0; j < a; j++) { /* A^T m, column by column (into s's rows) */
                vec col[ALPHA_MAX];
                output_1d(m, &mp[0][j], ALPHA_MAX, col);
                for (int i = 0; i < m; i++)
                    s[i][j] = col[i];
            }
            const vec b = bias ? load_lanes(bias + k, lanes) : (vec){0};
            for (int i = 0; i < rows; i++) { /* (A^T m) A, bias, residual, activation */
                vec r[ALPHA_MAX];
                output_1d(m, s[i], 1, r);
                for (int j = 0; j < cols; j++) {
                    const int64_t at = ((img * d->Ho + oy + i) * d->Wo + ox + j) * K + k;
                    vec o = r[j] + b;
                    check += o * 0;
                    if (res)
                        o += load_lanes(res + at, lanes);
                    if (act.kind != FC_ACT_NONE)
                        o = activate(o, &act);
                    store_lanes(y + at, o, lanes);
                }
            }
        }
    }
    return met_nonfinite(check);
}

/* The transforms compiled for each tile size (its loops then unrolled). */
static int input_transform_m(const fc_conv_desc *d, int m, const real *x, int64_t t0, int64_t n,
                             real *v)
{
    return m == 2 ? input_transform(d, 2, x, t0, n, v) : input_transform(d, 4, x, t0, n, v);
}

static int output_transform_m(const fc_conv_desc *d, int m, const real *mv, int64_t t0,
                              int64_t n, const real *bias, real *y)
{
    return m == 2 ? output_transform(d, 2, mv, t0, n, bias, y)
                  : output_transform(d, 4, mv, t0, n, bias, y);
}

INTERNAL int NAME(winograd)(const fc_conv_desc *d, int m, const void *xv, const void *packedv,
                            const void *biasv, void *yv, int nthreads)
{
    const real *x = xv, *u = packedv, *bias = biasv;
    real *y = yv;
    const int64_t C = d->C, K = d->K;
    const int a2 = (m + 2) * (m + 2);
    const int64_t T = d->N * ((d->Ho + m - 1) / m) * ((d->Wo + m - 1) / m);
    if (T == 0)
        return 0;
    const fc_conv_desc p = product_desc(d);
    const int64_t u_step = packed_size(&p);
    /* Blocks of whole register tiles whose V (or M) takes about
     * WINOGRAD_BLOCK_BYTES (so that it stays in cache from the transform to
     * the products), or a quarter of U where U is larger: each block
     * streams all of U once, so that fewer rows would read it too often
     * (at 512 -> 512 on 28x28, F(2x2)'s blocks of 16 tiles took 59 ms
     * against 32, and blocks of 48, streaming U's 17 MB four times, 42 ms in
     * the suite against the 35 ms of one pass). At least a task's MCT
     * register tiles; small enough to give every thread a share. */
    const int nt = clamp_threads(nthreads, (T + MR - 1) / MR, (double)T * a2 * C * K);
    const int64_t v_bytes_max = MAX(WINOGRAD_BLOCK_BYTES, u_step * a2 * (int64_t)sizeof(real) / 4);
    int64_t block = v_bytes_max / (a2 * (int64_t)sizeof(real) * MAX(MAX(C, K), 1));
    block = MIN(MAX(block, MCT * MR), (T + nt - 1) / nt);
    block = MAX((block + MR - 1) / MR, 1) * MR;
    const int64_t nblocks = (T + block - 1) / block;
    const size_t v_bytes = round64(sizeof(real) * (size_t)(a2 * block * C));
    const size_t m_bytes = round64(sizeof(real) * (size_t)(a2 * block * K));
    const size_t per_thread = v_bytes + m_bytes + NAME(gemm_serial_workspace)();
    char *work = fc_scratch_get(FC_SCRATCH_WORK, per_thread * (size_t)nt);
    if (!work)
        return -FC_ENOMEM;
    int nonfinite = 0; /* set by any thread: the others then stop early */
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(d->flush_denormals);
        char *mine = work + per_thread * (size_t)thread_id();
        real *v = (real *)mine, *mm = (real *)(mine + v_bytes);
        void *gemm_work = mine + v_bytes + m_bytes;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblocks; b++) {
            if (__atomic_load_n(&nonfinite, __ATOMIC_RELAXED) || interrupted(d->interrupt))
                continue;
            const int64_t t0 = b * block, n = MIN(block, T - t0);
            if (input_transform_m(d, m, x, t0, n, v)) {
                __atomic_store_n(&nonfinite, 1, __ATOMIC_RELAXED);
                continue;
            }
            for (int i = 0; i < a2; i++)
                NAME(gemm_serial)(n, C, K, v + i * n * C, u + i * u_step, mm + i * n * K,
                                  gemm_work);
            if (output_transform_m(d, m, mm, t0, n, bias, y))
                __atomic_store_n(&nonfinite, 1, __ATOMIC_RELAXED);
        }
        fp_leave(fp);
    }
    fc_scratch_put(FC_SCRATCH_WORK);
    return run_status(d->interrupt) ? -FC_EINTR : nonfinite;
}
