/*
 * Indirect GEMM (Dukhan 2019; XNNPACK) over BLIS-style packed weights: an
 * MR x NR register tile of the output (MR output pixels x NR output
 * channels) is computed by the micro-kernel, which reads the NHWC input
 * through MR row pointers per kernel tap (padding points at a zero row), so
 * no im2col buffer exists: the extra memory is MR * taps pointers per
 * thread.
 *   - a 1x1, stride 1, unpadded convolution is a plain GEMM over the pixel
 *     rows, its pointers simply consecutive rows (and may read its (C, K)
 *     weight matrix in place: gemm_in_place);
 *   - with few input channels (the RGB first layer), the kw taps of a kernel
 *     row are read as one run of kw * C values from a zero-padded copy of
 *     the input, instead of one pointer per 3-channel tap;
 *   - bias, a residual and the activation are applied in the micro-kernel's store;
 *   - a single output pixel uses a one-row micro-kernel.
 * Every output tile is computed by exactly one thread with a fixed reduction
 * order, so results do not depend on the number of threads.
 */
#include "activation.h"
#include "packing.h"

/* Inputs with fewer channels than this read the kw taps of a kernel row as
 * one run (ROWS_MERGED). */
#define MERGE_ROWS_BELOW_C 32

#define F_ACCUMULATE 1 /* add to the tile already in c (later KC blocks) */
#define F_LAST 2       /* last KC block: apply bias, residual and activation */

/* Reads of padding taps point here; it is never offset (see ukernel), and
 * holds a whole reduction block of either size. */
static const real zero_row[KC > KC_GEMM ? KC : KC_GEMM] __attribute__((aligned(64)));

/*
 * The micro-kernel: c[0:MR, 0:nv*VLEN] (+)= sum over taps t and channels k of
 * a[t][i][a_off + k] * w[t][k][0:nv*VLEN].
 * a holds ntaps * MR row pointers (tap-major); zero_row pointers are not
 * offset. With tap_step != 0, a holds MR pointers only, and tap t of row i
 * is a[i] + t * tap_step (rows of a zero-padded copy, ROWS_MERGED).
 * w is the packed panel of this KC block, nv vectors wide. nv is a
 * compile-time constant in each instance below.
 */
static inline __attribute__((always_inline)) void ukernel(
    const int rows, const int nv, int64_t kc, int64_t ntaps, const real *const *a, int64_t a_off,
    int64_t tap_step, const real *restrict w, int64_t ldw, real *restrict c, int64_t ldc,
    const real *restrict bias, const real *restrict res, int flags, const act_vec *act)
{
    vec acc[MR][NV];
    if (flags & F_ACCUMULATE) {
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[i][v] = load(c + i * ldc + v * VLEN);
    } else {
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[i][v] = (vec){0};
    }
    for (int64_t t = 0; t < ntaps; t++) {
        const real *ap[MR];
#pragma GCC unroll 16
        for (int i = 0; i < rows; i++) {
            const real *p = tap_step ? a[i] + t * tap_step : a[t * MR + i];
            ap[i] = p == zero_row ? p : p + a_off;
        }
        for (int64_t k = 0; k < kc; k++) {
            vec wv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                wv[v] = load(w + v * VLEN);
            w += ldw;
#pragma GCC unroll 16
            for (int i = 0; i < rows; i++) {
                const real s = ap[i][k];
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    acc[i][v] += wv[v] * s;
            }
        }
    }
    if (flags & F_LAST) {
        if (bias) {
#pragma GCC unroll 16
            for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    acc[i][v] += load(bias + v * VLEN);
        }
        if (res) { /* a residual connection, laid out as c */
#pragma GCC unroll 16
            for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    acc[i][v] += load(res + i * ldc + v * VLEN);
        }
        if (act->kind == FC_ACT_RELU) { /* (the common case, kept inline) */
#pragma GCC unroll 16
            for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    acc[i][v] = relu(acc[i][v]);
        } else if (act->kind != FC_ACT_NONE) {
            for (int i = 0; i < rows; i++)
                for (int v = 0; v < nv; v++)
                    acc[i][v] = activate(acc[i][v], act);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            store(c + i * ldc + v * VLEN, acc[i][v]);
}

typedef void (*ukernel_fn)(int64_t kc, int64_t ntaps, const real *const *a, int64_t a_off,
                           int64_t tap_step, const real *restrict w, int64_t ldw, real *restrict c, int64_t ldc,
                           const real *restrict bias, const real *restrict res, int flags,
                           const act_vec *act);
#define UKERNEL_NV(n)                                                                   \
    static void ukernel_##n(int64_t kc, int64_t ntaps, const real *const *a,           \
                            int64_t a_off, int64_t tap_step, const real *restrict w,   \
                            int64_t ldw,                                               \
                            real *restrict c, int64_t ldc, const real *restrict bias,  \
                            const real *restrict res, int flags, const act_vec *act)   \
    {                                                                                  \
        ukernel(MR, n, kc, ntaps, a, a_off, tap_step, w, ldw, c, ldc, bias, res, flags,\
                act);                                                                  \
    }                                                                                  \
    static void ukernel_1row_##n(int64_t kc, int64_t ntaps, const real *const *a,      \
                                 int64_t a_off, int64_t tap_step,                      \
                                 const real *restrict w, int64_t ldw,                  \
                                 real *restrict c, int64_t ldc,                        \
                                 const real *restrict bias, const real *restrict res,  \
                                 int flags, const act_vec *act)                        \
    {                                                                                  \
        ukernel(1, n, kc, ntaps, a, a_off, tap_step, w, ldw, c, ldc, bias, res, flags, \
                act);                                                                  \
    }
UKERNEL_NV(1)
#if NV >= 2
UKERNEL_NV(2)
#endif
#if NV >= 3
UKERNEL_NV(3)
#endif
#if NV >= 4
UKERNEL_NV(4)
#endif
/* The micro-kernels for a panel nv vectors wide (the last panel of a group
 * may be narrower than NR): MR output rows, and one row for a single output
 * pixel (a batch-1 dense layer), which would waste MR - 1 rows of FMAs. */
static const ukernel_fn ukernels[NV + 1] = {
    0, ukernel_1,
#if NV >= 2
    ukernel_2,
#endif
#if NV >= 3
    ukernel_3,
#endif
#if NV >= 4
    ukernel_4,
#endif
};
static const ukernel_fn ukernels_1row[NV + 1] = {
    0, ukernel_1row_1,
#if NV >= 2
    ukernel_1row_2,
#endif
#if NV >= 3
    ukernel_1row_3,
#endif
#if NV >= 4
    ukernel_1row_4,
#endif
};


/* How a tile's input rows are found. */
typedef struct {
    const real *x;   /* input, NHWC (for ROWS_MERGED its zero-padded copy) */
    int64_t H, W;    /* height and width of x */
    int64_t goff;    /* channel offset of the group */
    enum { ROWS_GEMM, ROWS_TAPS, ROWS_MERGED } kind;
} row_source;

/* Row pointers of the npix output pixels p0, p0 + 1, ..., laid out per
 * tile of MR pixels as the micro-kernel reads them: tile t at
 * a + t * MR * ntaps, tap-major, MR apart. Pixels at or past M repeat the
 * last one (their results are never stored).
 *   ROWS_GEMM   one pointer per pixel (1x1, stride 1, unpadded);
 *   ROWS_TAPS   one per pixel and tap (tap-major), padding taps at zero_row;
 *   ROWS_MERGED one per pixel, to its first tap in a zero-padded copy of the
 *               input, where the kw taps of a kernel row are adjacent (one
 *               run of kw * C values) and the kernel rows are a fixed step
 *               apart. For inputs with few channels (the RGB first layer),
 *               where a pointer per 3-channel tap would cost more than the
 *               few FMAs it feeds.
 * The coordinates of p0 take one division; later pixels step along the
 * output row. */
/* Steps (n, oy, ox) to the next output pixel; 1 if it is on the same
 * output row. */
static inline int next_pixel(const fc_conv_desc *d, int64_t *n, int64_t *oy, int64_t *ox)
{
    if (++*ox < d->Wo)
        return 1;
    *ox = 0;
    if (++*oy == d->Ho) {
        *oy = 0;
        ++*n;
    }
    return 0;
}

static void build_pointers(const fc_conv_desc *d, const row_source *src, int64_t p0,
                           int64_t npix, int64_t M, const real **a)
{
    const int64_t C = d->C, ntaps = d->kh * d->kw, hw = d->Ho * d->Wo;
#define SLOT(j) (a + (j) / MR * MR * ntaps + (j) % MR)
    if (src->kind == ROWS_GEMM) {
        for (int64_t j = 0; j < npix; j++)
            *SLOT(j) = src->x + MIN(p0 + j, M - 1) * C + src->goff;
        return;
    }
    int64_t n = p0 / hw, oy = (p0 % hw) / d->Wo, ox = (p0 % hw) % d->Wo;
    if (src->kind == ROWS_MERGED) {
        /* The hot case of few channels: a pointer feeds only kh * kw * C
         * FMAs per vector, so this loop is kept to a few instructions (the
         * slot steps along instead of SLOT's division: 1.5% of conv1_1). */
        const real *p = src->x + ((n * src->H + oy * d->sh) * src->W + ox * d->sw) * C;
        const real **tile = a;
        for (int64_t j = 0, i = 0; j < npix; j++) {
            tile[i] = p;
            if (++i == MR) {
                i = 0;
                tile += MR * ntaps;
            }
            if (p0 + j + 1 < M) /* (past the last pixel: repeat it) */
                p = next_pixel(d, &n, &oy, &ox)
                        ? p + d->sw * C
                        : src->x + (n * src->H + oy * d->sh) * src->W * C;
        }
        return;
    }
    for (int64_t j = 0; j < npix; j++) {
        if (j > 0 && p0 + j < M)
            next_pixel(d, &n, &oy, &ox);
        const real **slot = SLOT(j);
        const real *img = src->x + n * src->H * src->W * C + src->goff;
        for (int64_t ty = 0; ty < d->kh; ty++) {
            const int64_t iy = oy * d->sh - d->pad_top + ty * d->dh;
            const int inside_y = iy >= 0 && iy < d->H;
            for (int64_t tx = 0; tx < d->kw; tx++) {
                const int64_t ix = ox * d->sw - d->pad_left + tx * d->dw;
                slot[(ty * d->kw + tx) * MR] =
                    inside_y && ix >= 0 && ix < d->W ? img + (iy * d->W + ix) * C : zero_row;
            }
        }
    }
#undef SLOT
}

/* x with its padding made of zeros, and only the rows and columns the
 * output reads: (N, (Ho - 1) * sh + (kh - 1) * dh + 1, (Wo - 1) * sw + kw,
 * C) (ROWS_MERGED has dw == 1). O(input) memory, not O(im2col), in the
 * calling thread's scratch (kept between calls). */
static real *pad_input(const fc_conv_desc *d, const real *x, int nthreads, row_source *src)
{
    const int64_t C = d->C;
    const int64_t Hp = (d->Ho - 1) * d->sh + (d->kh - 1) * d->dh + 1;
    const int64_t Wp = (d->Wo - 1) * d->sw + d->kw;
    real *xp = fc_scratch_get(FC_SCRATCH_PADDED, sizeof(real) * (size_t)(d->N * Hp * Wp * C));
    if (!xp)
        return NULL;
#pragma omp parallel for num_threads(clamp_threads(nthreads, d->N * Hp, (double)d->N * Hp * Wp * C)) \
    schedule(static)
    for (int64_t row = 0; row < d->N * Hp; row++) {
        real *dst = xp + row * Wp * C;
        const int64_t n = row / Hp, iy = row % Hp - d->pad_top;
        if (iy < 0 || iy >= d->H) {
            memset(dst, 0, sizeof(real) * (size_t)(Wp * C));
            continue;
        }
        /* [pad_left zero pixels][the W input pixels][zero pixels to Wp] */
        const int64_t left = MIN(d->pad_left, Wp), inner = MIN(d->W, Wp - left);
        memset(dst, 0, sizeof(real) * (size_t)(left * C));
        memcpy(dst + left * C, x + (n * d->H + iy) * d->W * C, sizeof(real) * (size_t)(inner * C));
        memset(dst + (left + inner) * C, 0, sizeof(real) * (size_t)((Wp - left - inner) * C));
    }
    src->x = xp;
    src->H = Hp;
    src->W = Wp;
    return xp;
}

/*
 * Loop structure (BLIS-like, per thread):
 *   task = (group, block of <= MCT m-tiles, NR block of output channels), the
 *          NR block innermost so that a thread keeps one block of input rows
 *          (and its row pointers) in cache while it sweeps the weights;
 *     for each KC block of input channels:      weights panel: L1/L2
 *       for each m-tile of the block:           input rows: L2
 *         micro-kernel (all taps of this KC block).
 * Partial tiles (the last pixels, the last channels) go through a per-thread
 * buffer and are copied out at the end.
 */
/* Where the micro-kernels read the weights: packed panels, or (in place) a
 * GEMM's (C, K) matrix itself, rows K apart, with the bias beside it. */
typedef struct {
    const real *w;
    const real *bias; /* in place only */
    int in_place;
} weight_source;

/* One convolution's loop, set up once and run task by task. */
typedef struct {
    const fc_conv_desc *d;
    row_source src;
    weight_source ws;
    const real *pbias;         /* the bias of group 0, or NULL */
    act_vec act;
    real *y;
    int64_t M, ntaps, nb, mtiles, mblocks, bsize, ntasks;
    int64_t rows_per_tile;     /* row pointers per pixel: taps, or kh (ROWS_MERGED) */
    int64_t run;               /* values reduced per row pointer */
    int64_t tap_step;          /* ROWS_MERGED: between a pixel's kernel rows */
} igemm_loop;

static igemm_loop loop_of(const fc_conv_desc *d, const real *x, weight_source ws, real *y,
                          int allow_merged)
{
    igemm_loop g = {.d = d, .ws = ws, .y = y, .act = act_prepare(d->act)};
    const int64_t G = d->groups, Cg = d->C / G, Kg = d->K / G;
    g.ntaps = d->kh * d->kw;
    g.M = d->N * d->Ho * d->Wo;
    g.nb = n_blocks(Kg);
    g.mtiles = (g.M + MR - 1) / MR;
    /* At most MCT tiles per block, the tiles spread evenly over the blocks
     * (9 tiles make blocks of 5 and 4, not 8 and 1, for the two threads). */
    g.mblocks = (g.mtiles + MCT - 1) / MCT;
    g.bsize = g.mblocks ? (g.mtiles + g.mblocks - 1) / g.mblocks : 0;
    g.ntasks = G * g.mblocks * g.nb;
    g.src = (row_source){x, d->H, d->W, 0, ROWS_TAPS};
    if (g.ntaps == 1 && d->sh == 1 && d->sw == 1 && d->pad_top == 0 && d->pad_left == 0 &&
        d->Ho == d->H && d->Wo == d->W)
        g.src.kind = ROWS_GEMM;
    else if (allow_merged && G == 1 && d->C < MERGE_ROWS_BELOW_C && d->kw > 1 && d->dw == 1 &&
             d->C * d->kw <= KC)
        g.src.kind = ROWS_MERGED; /* weights [ty][tx][c] are then [ty][tx * C + c] */
    g.rows_per_tile = g.src.kind == ROWS_MERGED ? d->kh : g.ntaps;
    g.run = g.src.kind == ROWS_MERGED ? d->kw * Cg : Cg;
    g.pbias = !d->has_bias ? NULL : ws.in_place ? ws.bias : ws.w + bias_offset(d);
    return g;
}

/* Per thread: MCT * MR * ntaps row pointers, then MCT partial-tile buffers,
 * each region 64-byte aligned. */
static inline size_t pointer_bytes(int64_t ntaps)
{
    return round64(sizeof(real *) * (size_t)(MCT * MR * ntaps));
}

static inline size_t workspace_bytes(int64_t ntaps)
{
    return pointer_bytes(ntaps) + round64(sizeof(real) * (size_t)(MCT * MR * NR));
}

/* Where output pixel p (of N * Ho * Wo) goes in y: p * K when y is
 * contiguous, else through the desc's y_off, y_img, y_row and y_col (one
 * phase of a transposed convolution's output). */
static inline int64_t y_offset(const fc_conv_desc *d, int64_t p)
{
    if (!d->y_col)
        return p * d->K;
    const int64_t hw = d->Ho * d->Wo, n = p / hw, oy = p % hw / d->Wo, ox = p % d->Wo;
    return d->y_off + n * d->y_img + oy * d->y_row + ox * d->y_col;
}

/* Whether the micro-kernel stores the tile at pixel p0 straight into y:
 * whole (MR pixels, a full panel), and its pixels a fixed step apart in y
 * (always when y is contiguous; on one output row otherwise). Other tiles
 * go through the per-thread buffer. */
static inline int stores_direct(const fc_conv_desc *d, int64_t p0, int64_t M, int64_t nr,
                                int64_t width)
{
    return p0 + MR <= M && nr == width && (!d->y_col || p0 % d->Wo + MR <= d->Wo);
}

/* Task `task` of loop g, with this thread's workspace; *built is the
 * (group, m-block) whose pointers are already in the workspace (-1: none). */
static void run_task(const igemm_loop *g, int64_t task, char *work, int64_t *built)
{
    const fc_conv_desc *d = g->d;
    const int64_t Cg = d->C / d->groups, Kg = d->K / d->groups, M = g->M;
    const real **a = (const real **)work;
    real *tiles = (real *)(work + pointer_bytes(g->ntaps));
    const int64_t b = task % g->nb, gm = task / g->nb;
    const int64_t mb = gm % g->mblocks, grp = gm / g->mblocks;
    const int64_t t0 = mb * g->bsize, tcount = MIN(g->bsize, g->mtiles - t0);
    if (gm != *built) {
        row_source gsrc = g->src;
        gsrc.goff = grp * Cg;
        build_pointers(d, &gsrc, t0 * MR, tcount * MR, M, a);
        *built = gm;
    }
    const int64_t nr = MIN(NR, Kg - b * NR), width = panel_width(Kg, b);
    const ukernel_fn uk = (M == 1 ? ukernels_1row : ukernels)[width / VLEN];
    /* Panel b: its first row, the distance between its rows, and the
     * distance between reduction blocks. */
    const weight_source ws = g->ws;
    const real *wb = ws.in_place ? ws.w + b * NR : ws.w + panel_offset(d, grp, b);
    const int64_t ldw = ws.in_place ? d->K : width;
    const int64_t block_step = ws.in_place ? d->K : g->rows_per_tile * width;
    const real *bias = g->pbias ? g->pbias + grp * padded(Kg) + b * NR : NULL;
    real *y = g->y;
    /* The reduction runs over `run` values per row pointer in kc_block(d)
     * blocks; the panel holds them as [block][row][value][width] (for
     * ROWS_MERGED, C * kw <= KC makes that [ty][tx * C + c]). At least one
     * block, so that C == 0 still stores bias/zeros. */
    const int64_t ldy = d->y_col ? d->y_col : d->K, cofs = grp * Kg + b * NR;
    const real *res = d->residual;
    static const act_vec no_act; /* (FC_ACT_NONE) */
    int64_t c0 = 0;
    do {
        const int64_t kc = MIN(kc_block(d), g->run - c0);
        const int flags = (c0 > 0 ? F_ACCUMULATE : 0) | (c0 + kc >= g->run ? F_LAST : 0);
        for (int64_t t = 0; t < tcount; t++) {
            const int64_t p0 = (t0 + t) * MR;
            const int direct = stores_direct(d, p0, M, nr, width);
            real *c = direct ? y + y_offset(d, p0) + cofs : tiles + t * MR * NR;
            /* a buffered tile gets its residual and activation when copied
             * out, in the same order of operations */
            uk(kc, g->rows_per_tile, a + t * MR * g->ntaps, c0, g->tap_step,
               wb + c0 * block_step, ldw, c, direct ? ldy : NR, bias,
               direct && res ? res + (c - y) : NULL, flags,
               direct || !res ? &g->act : &no_act);
        }
        c0 += kc;
    } while (c0 < g->run);
    for (int64_t t = 0; t < tcount; t++) {
        const int64_t p0 = (t0 + t) * MR, mr = MIN(MR, M - p0);
        if (stores_direct(d, p0, M, nr, width))
            continue;
        for (int64_t i = 0; i < mr; i++) {
            const int64_t at = y_offset(d, p0 + i) + cofs;
            const real *src = tiles + (t * MR + i) * NR;
            if (!res) {
                memcpy(y + at, src, sizeof(real) * (size_t)nr);
                continue;
            }
            for (int64_t j = 0; j < nr; j += VLEN) {
                const int64_t lanes = MIN(VLEN, nr - j);
                const vec v = load_lanes(src + j, lanes) + load_lanes(res + at + j, lanes);
                store_lanes(y + at + j, activate(v, &g->act), lanes);
            }
        }
    }
}

static int igemm_run(const fc_conv_desc *d, const real *x, weight_source ws, real *y,
                     int nthreads)
{
    igemm_loop g = loop_of(d, x, ws, y, 1);
    if (g.ntasks == 0)
        return FC_OK;
    const int nt = clamp_threads(nthreads, g.ntasks,
                                 (double)g.M * d->K * g.ntaps * (d->C / d->groups));
    real *xpad = NULL;
    if (g.src.kind == ROWS_MERGED) {
        xpad = pad_input(d, x, nthreads, &g.src);
        if (!xpad)
            return FC_ENOMEM;
        /* the kernel rows of a pixel are dh padded rows apart */
        g.tap_step = d->dh * g.src.W * d->C;
    }
    const size_t per_thread = workspace_bytes(g.ntaps);
    char *work = fc_scratch_get(FC_SCRATCH_WORK, per_thread * (size_t)nt);
    if (!work) {
        if (xpad)
            fc_scratch_put(FC_SCRATCH_PADDED);
        return FC_ENOMEM;
    }
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(d->flush_denormals);
        char *mine = work + per_thread * (size_t)thread_id();
        int64_t built = -1;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < g.ntasks; task++)
            if (!interrupted(d->interrupt))
                run_task(&g, task, mine, &built);
        fp_leave(fp);
    }
    fc_scratch_put(FC_SCRATCH_WORK);
    if (xpad)
        fc_scratch_put(FC_SCRATCH_PADDED);
    return run_status(d->interrupt);
}

INTERNAL int NAME(igemm)(const fc_conv_desc *d, const void *x, const void *packed, void *y,
                         int nthreads)
{
    const weight_source ws = {packed, NULL, 0};
    return igemm_run(d, x, ws, y, nthreads);
}

/* Several convolutions of one input into disjoint parts of one output (the
 * phases of a transposed convolution: fc_conv_desc's y_*), in one parallel
 * region: their tasks in one list, phase after phase. */
INTERNAL int NAME(igemm_phases)(const fc_conv_desc *descs, const void *const *packed,
                                int64_t nphases, const void *x, void *y, int nthreads)
{
    /* (aligned: a loop holds vectors, its activation's parameters) */
    igemm_loop *loops =
        aligned_alloc(64, round64(sizeof(igemm_loop) * (size_t)(nphases ? nphases : 1)));
    int64_t *first = malloc(sizeof(int64_t) * (size_t)(nphases + 1)); /* each one's first task */
    if (!loops || !first) {
        free(loops);
        free(first);
        return FC_ENOMEM;
    }
    int64_t max_taps = 0;
    double work = 0;
    first[0] = 0;
    for (int64_t i = 0; i < nphases; i++) {
        const fc_conv_desc *d = &descs[i];
        const weight_source ws = {packed[i], NULL, 0};
        loops[i] = loop_of(d, x, ws, y, 0);
        first[i + 1] = first[i] + loops[i].ntasks;
        max_taps = MAX(max_taps, loops[i].ntaps);
        work += (double)loops[i].M * d->K * loops[i].ntaps * (d->C / d->groups);
    }
    const int64_t ntasks = first[nphases];
    if (ntasks == 0) { /* (no output, or no channels: nothing to write) */
        free(loops);
        free(first);
        return FC_OK;
    }
    fc_interrupt *it = descs[0].interrupt;
    const int nt = clamp_threads(nthreads, ntasks, work);
    const size_t per_thread = workspace_bytes(max_taps);
    char *work_mem = fc_scratch_get(FC_SCRATCH_WORK, per_thread * (size_t)nt);
    if (!work_mem) {
        free(loops);
        free(first);
        return FC_ENOMEM;
    }
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(descs[0].flush_denormals);
        char *mine = work_mem + per_thread * (size_t)thread_id();
        int64_t built = -1, phase = 0;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < ntasks; task++) {
            if (interrupted(it))
                continue;
            if (task >= first[phase + 1]) { /* (a thread's tasks ascend: static schedule) */
                while (task >= first[phase + 1])
                    phase++;
                built = -1;
            }
            run_task(&loops[phase], task - first[phase], mine, &built);
        }
        fp_leave(fp);
    }
    fc_scratch_put(FC_SCRATCH_WORK);
    free(loops);
    free(first);
    return run_status(it);
}

/* A GEMM (1x1 kernel, one group, K a multiple of VLEN) reading its (C, K)
 * weight matrix in place: no packing pass, for calls that would pack the
 * weights only to read them once. */
INTERNAL int NAME(gemm_in_place)(const fc_conv_desc *d, const void *x, const void *w,
                                 const void *bias, void *y, int nthreads)
{
    if (d->kh != 1 || d->kw != 1 || d->groups != 1 || d->K % VLEN)
        return FC_EINVAL;
    const weight_source ws = {w, bias, 1};
    return igemm_run(d, x, ws, y, nthreads);
}

INTERNAL size_t NAME(gemm_serial_workspace)(void) { return workspace_bytes(1); }

INTERNAL void NAME(gemm_serial)(int64_t M, int64_t C, int64_t K, const real *a,
                                const real *packed, real *c, void *work)
{
    const fc_conv_desc d = {.N = 1, .H = M, .W = 1, .C = C, .K = K, .groups = 1, .kh = 1,
                            .kw = 1, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .Ho = M, .Wo = 1};
    const weight_source ws = {packed, NULL, 0};
    const igemm_loop g = loop_of(&d, a, ws, c, 1);
    int64_t built = -1;
    for (int64_t task = 0; task < g.ntasks; task++)
        run_task(&g, task, work, &built);
}
