/*
 * Winograd F(2x2, 3x3) (Lavin and Gray, 2016): each 2x2 tile of outputs is
 * A^T [(G g G^T) . (B^T d B)] A for its 4x4 input patch d, so the 16 products
 * of the transformed patches and weights are 16 GEMMs (tiles x C) @ (C x K):
 * 16 multiply-adds per tile and channel pair instead of the direct
 * convolution's 36. The input and output transforms only add and subtract
 * (B^T and A^T are 0/+-1); G's halves are applied to the weights once, when
 * they are packed.
 *
 * One parallel region per call: each thread takes blocks of tiles, and for
 * each block transforms the input patches into V (16, tiles, C), runs the
 * 16 GEMMs V[i] @ U[i] into M (16, tiles, K) through igemm.c's micro-kernels
 * and transforms M back into the output with bias and activation, while V and M
 * are in its cache. Each output row of a GEMM is reduced in a fixed order
 * whatever the block, so the result does not depend on the thread count.
 */
#include "activation.h"
#include "packing.h"

/* Tile t (numbered row-major per image, image after image): its image and
 * the output coordinates of its top left value. */
static inline void tile_of(const fc_conv_desc *d, int64_t t, int64_t *n, int64_t *oy, int64_t *ox)
{
    const int64_t tw = (d->Wo + 1) / 2, th = (d->Ho + 1) / 2;
    *n = t / (th * tw);
    *oy = t / tw % th * 2;
    *ox = t % tw * 2;
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

INTERNAL int64_t NAME(winograd_packed_size)(const fc_conv_desc *d)
{
    const fc_conv_desc p = product_desc(d);
    return 16 * packed_size(&p);
}

/* U (16, C, K) = G g G^T for every (c, k), g read through the strides,
 * computed in double, rounded once, and written straight into the packed
 * panels of the 16 products (their padding and bias rows zero). The caller
 * checks that every weight is finite and at most the dtype's largest value
 * / 2.25 in magnitude (|U| <= 2.25 max |g|: then no value of U overflows). */
INTERNAL int NAME(winograd_pack)(const fc_conv_desc *d, const void *wv, fc_weight_strides s,
                                 void *packedv, int nthreads)
{
    const real *w = wv;
    real *packed = packedv;
    const int64_t C = d->C, K = d->K;
    const fc_conv_desc p = product_desc(d);
    const int64_t step = packed_size(&p);
    memset(packed, 0, sizeof(real) * (size_t)(16 * step));
    const int nt = clamp_threads(nthreads, C, (double)C * K * 16);
    /* (in fastconv's mode, never flushing: U serves calls of either kind) */
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(0);
#pragma omp for schedule(static)
        for (int64_t c = 0; c < C; c++)
            for (int64_t k = 0; k < K; k++) {
                const real *g = w + c * s.c + k * s.k;
                double t[4][3];
                for (int j = 0; j < 3; j++) { /* G g */
                    const double g0 = g[j * s.tx], g1 = g[s.ty + j * s.tx],
                                 g2 = g[2 * s.ty + j * s.tx];
                    t[0][j] = g0;
                    t[1][j] = 0.5 * (g0 + g1 + g2);
                    t[2][j] = 0.5 * (g0 - g1 + g2);
                    t[3][j] = g2;
                }
                real *u = packed + packed_row(&p, 0, k / NR, 0, c) + k % NR;
                for (int a = 0; a < 4; a++) { /* (G g) G^T */
                    u[(a * 4 + 0) * step] = (real)t[a][0];
                    u[(a * 4 + 1) * step] = (real)(0.5 * (t[a][0] + t[a][1] + t[a][2]));
                    u[(a * 4 + 2) * step] = (real)(0.5 * (t[a][0] - t[a][1] + t[a][2]));
                    u[(a * 4 + 3) * step] = (real)t[a][2];
                }
            }
        fp_leave(fp);
    }
    return FC_OK;
}

/* v (16, n, C) = the transformed 4x4 input patches of tiles [t0, t0 + n);
 * 1 if a transformed value is Inf or NaN (from an input holding one, which
 * the transforms would spread to outputs that do not see it, or from an
 * overflow), else 0. */
static int input_transform(const fc_conv_desc *d, const real *x, int64_t t0, int64_t n, real *v)
{
    const int64_t C = d->C;
    /* stays 0 unless a transformed value is Inf or NaN (0 * it is NaN) */
    vec check = {0};
    for (int64_t t = 0; t < n; t++) {
        int64_t img, oy, ox;
        tile_of(d, t0 + t, &img, &oy, &ox);
        const int64_t iy0 = oy - d->pad_top, ix0 = ox - d->pad_left;
        const real *p[4][4]; /* the patch's pixels; NULL in the padding */
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                const int64_t iy = iy0 + i, ix = ix0 + j;
                p[i][j] = iy >= 0 && iy < d->H && ix >= 0 && ix < d->W
                              ? x + ((img * d->H + iy) * d->W + ix) * C : NULL;
            }
        for (int64_t c = 0; c < C; c += VLEN) {
            const int64_t lanes = MIN(VLEN, C - c);
            vec dp[4][4], t4[4][4];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++)
                    dp[i][j] = p[i][j] ? load_lanes(p[i][j] + c, lanes) : (vec){0};
            for (int j = 0; j < 4; j++) { /* B^T d */
                t4[0][j] = dp[0][j] - dp[2][j];
                t4[1][j] = dp[1][j] + dp[2][j];
                t4[2][j] = dp[2][j] - dp[1][j];
                t4[3][j] = dp[1][j] - dp[3][j];
            }
            for (int i = 0; i < 4; i++) { /* (B^T d) B */
                const vec r[4] = {t4[i][0] - t4[i][2], t4[i][1] + t4[i][2],
                                  t4[i][2] - t4[i][1], t4[i][1] - t4[i][3]};
                for (int j = 0; j < 4; j++) {
                    check += r[j] * 0;
                    store_lanes(v + ((i * 4 + j) * n + t) * C + c, r[j], lanes);
                }
            }
        }
    }
    return met_nonfinite(check);
}

/* Tiles [t0, t0 + n) of y (NHWC) from their 16 products m (16, n, K), with
 * bias (K values or NULL) and the activation; 1 if an output is Inf or NaN (an
 * overflow in the products or their sums, where the direct convolution may
 * differ), else 0. */
static int output_transform(const fc_conv_desc *d, const real *m, int64_t t0, int64_t n,
                            const real *bias, real *y)
{
    const int64_t K = d->K;
    const act_vec act = act_prepare(d->act);
    const real *res = d->residual;
    vec check = {0}; /* as in input_transform: an Inf or NaN output */
    for (int64_t t = 0; t < n; t++) {
        int64_t img, oy, ox;
        tile_of(d, t0 + t, &img, &oy, &ox);
        const int rows = oy + 1 < d->Ho ? 2 : 1, cols = ox + 1 < d->Wo ? 2 : 1;
        for (int64_t k = 0; k < K; k += VLEN) {
            const int64_t lanes = MIN(VLEN, K - k);
            vec mp[4][4], s[2][4];
            for (int i = 0; i < 16; i++)
                mp[i / 4][i % 4] = load_lanes(m + (i * n + t) * K + k, lanes);
            for (int j = 0; j < 4; j++) { /* A^T m */
                s[0][j] = mp[0][j] + mp[1][j] + mp[2][j];
                s[1][j] = mp[1][j] - mp[2][j] - mp[3][j];
            }
            const vec b = bias ? load_lanes(bias + k, lanes) : (vec){0};
            for (int i = 0; i < rows; i++) { /* (A^T m) A, bias, ReLU */
                const vec r[2] = {s[i][0] + s[i][1] + s[i][2], s[i][1] - s[i][2] - s[i][3]};
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

INTERNAL int NAME(winograd)(const fc_conv_desc *d, const void *xv, const void *packedv,
                            const void *biasv, void *yv, int nthreads)
{
    const real *x = xv, *u = packedv, *bias = biasv;
    real *y = yv;
    const int64_t C = d->C, K = d->K;
    const int64_t T = d->N * ((d->Ho + 1) / 2) * ((d->Wo + 1) / 2);
    if (T == 0)
        return 0;
    const fc_conv_desc p = product_desc(d);
    const int64_t u_step = packed_size(&p);
    /* Blocks of whole register tiles whose V (or M) takes about
     * WINOGRAD_BLOCK_BYTES (so that it stays in cache from the transform to
     * the products), or a quarter of U where U is larger: each block
     * streams all of U once, so that fewer rows would read it too often
     * (at 512 -> 512 on 28x28, blocks of 16 tiles took 59 ms against 32,
     * and blocks of 48, streaming U's 17 MB four times, 42 ms in the suite
     * against the 35 ms of one pass). At least a task's MCT register tiles;
     * small enough to give every thread a share. */
    const int nt = clamp_threads(nthreads, (T + MR - 1) / MR, (double)T * 16 * C * K);
    const int64_t v_bytes_max = MAX(WINOGRAD_BLOCK_BYTES, u_step * 16 * (int64_t)sizeof(real) / 4);
    int64_t block = v_bytes_max / (16 * (int64_t)sizeof(real) * MAX(MAX(C, K), 1));
    block = MIN(MAX(block, MCT * MR), (T + nt - 1) / nt);
    block = MAX((block + MR - 1) / MR, 1) * MR;
    const int64_t nblocks = (T + block - 1) / block;
    const size_t v_bytes = round64(sizeof(real) * (size_t)(16 * block * C));
    const size_t m_bytes = round64(sizeof(real) * (size_t)(16 * block * K));
    const size_t per_thread = v_bytes + m_bytes + NAME(gemm_serial_workspace)();
    char *work = aligned_alloc(64, per_thread * (size_t)nt);
    if (!work)
        return -FC_ENOMEM;
    int nonfinite = 0; /* set by any thread: the others then stop early */
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(d->flush_denormals);
        char *mine = work + per_thread * (size_t)thread_id();
        real *v = (real *)mine, *m = (real *)(mine + v_bytes);
        void *gemm_work = mine + v_bytes + m_bytes;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblocks; b++) {
            if (__atomic_load_n(&nonfinite, __ATOMIC_RELAXED) || interrupted(d->interrupt))
                continue;
            const int64_t t0 = b * block, n = MIN(block, T - t0);
            if (input_transform(d, x, t0, n, v)) {
                __atomic_store_n(&nonfinite, 1, __ATOMIC_RELAXED);
                continue;
            }
            for (int i = 0; i < 16; i++)
                NAME(gemm_serial)(n, C, K, v + i * n * C, u + i * u_step, m + i * n * K,
                                  gemm_work);
            if (output_transform(d, m, t0, n, bias, y))
                __atomic_store_n(&nonfinite, 1, __ATOMIC_RELAXED);
        }
        fp_leave(fp);
    }
    free(work);
    return run_status(d->interrupt) ? -FC_EINTR : nonfinite;
}
