/*
 * fastconv compute kernels.
 *
 * This one source is compiled six times by setup.py: for each dtype
 * (FC_DTYPE_F32 / FC_DTYPE_F64) and each instruction set (FC_TARGET_AVX512,
 * FC_TARGET_AVX2, FC_TARGET_GENERIC), each time with that ISA's compiler
 * flags. The SIMD code is written with GCC/Clang vector extensions, whose
 * width is set per ISA, so one implementation serves every target; the
 * dispatch table (dispatch.c) picks one at run time.
 *
 * The design is the indirect GEMM of XNNPACK (Dukhan 2019) with BLIS-style
 * weight packing:
 *   - weights are packed once per call (or per layer) into NR-wide
 *     micro-panels, [group][NR-block][KC-block][tap][channel][NR];
 *   - an MR x NR register tile of the output (MR output pixels x NR output
 *     channels) is computed by the micro-kernel, which reads the NHWC input
 *     through MR row pointers per kernel tap (padding points at a zero row),
 *     so no im2col buffer exists: the extra memory is MR * taps pointers per
 *     thread;
 *   - a 1x1, stride 1, unpadded convolution is a plain GEMM over the pixel
 *     rows; its pointers are simply consecutive rows;
 *   - with few input channels (the RGB first layer), the kw taps of a kernel
 *     row are read as one run of kw * C values from a width-padded copy of
 *     the input, instead of one pointer per 3-channel tap;
 *   - bias and ReLU are applied in the micro-kernel's store;
 *   - a GEMM with few rows may read its weight matrix in place (gemm_direct)
 *     and a single output pixel uses a one-row micro-kernel;
 *   - depthwise convolution and pooling have their own kernels, channels in
 *     SIMD lanes.
 * Every output tile is computed by exactly one thread with a fixed reduction
 * order, so results do not depend on the number of threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastconv.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#endif

#if defined(FC_DTYPE_F64)
typedef double real;
typedef int64_t real_bits;
#define DT f64
#elif defined(FC_DTYPE_F32)
typedef float real;
typedef int32_t real_bits;
#define DT f32
#else
#error "define FC_DTYPE_F32 or FC_DTYPE_F64"
#endif

/* MR: output pixels per register tile; NR = NV vectors of output channels.
 * 6 x 4 vectors on AVX-512 (24 of the 32 registers hold the tile): with only
 * 6 input rows per tile the broadcasts stay few and the rows' cache lines
 * never contend for one L1 set, which measured 5-40% faster than 12 x 2. */
#if defined(FC_TARGET_AVX512)
#define ISA avx512
#define VBYTES 64
#define MR 6
#define NV 4
#elif defined(FC_TARGET_AVX2)
#define ISA avx2
#define VBYTES 32
#define MR 6
#define NV 2
#elif defined(FC_TARGET_GENERIC)
#define ISA generic
#define VBYTES 16
#define MR 6
#define NV 2
#else
#error "define FC_TARGET_AVX512, FC_TARGET_AVX2 or FC_TARGET_GENERIC"
#endif

#define VLEN ((int64_t)(VBYTES / sizeof(real)))
#define NR (NV * VLEN)
/* Input channels per reduction block: keeps a block of packed weights
 * (taps * KC * NR) and of input rows cache-resident. A GEMM (one tap) takes
 * blocks of KC_GEMM: fewer passes over its output tiles, measured 1-4%
 * faster on 2048^3 and ResNet's 1x1 layers, while 3x3 layers with 512
 * channels lost 2% with it. KC, KC_GEMM and MCT may be set with -D for
 * tuning experiments; these are the measured best here. */
#ifndef KC
#define KC 256
#endif
#ifndef KC_GEMM
#define KC_GEMM 512
#endif
/* Register tiles (of MR output pixels) per task: the block of input rows a
 * thread keeps in cache while it sweeps every NR block of the weights. */
#ifndef MCT
#define MCT 8
#endif
/* Inputs with fewer channels than this read the kw taps of a kernel row as
 * one run (ROWS_MERGED). */
#define MERGE_ROWS_BELOW_C 32
/* Output pixels per depthwise register tile (one vector of channels each). */
#define DW_OX 8

typedef real vec __attribute__((vector_size(VBYTES)));
typedef real_bits vbits __attribute__((vector_size(VBYTES)));
/* Unaligned, alias-safe view used for every vector load and store. */
typedef real uvec __attribute__((vector_size(VBYTES), aligned(sizeof(real)), may_alias));

#define CAT3_(a, b, c) a##_##b##_##c
#define CAT3(a, b, c) CAT3_(a, b, c)
#define NAME(fn) CAT3(fn, DT, ISA)
#define STR_(x) #x
#define STR(x) STR_(x)

#define F_ACCUMULATE 1 /* add to the tile already in c (later KC blocks) */
#define F_LAST 2       /* last KC block: apply bias and ReLU */

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static inline vec load(const real *p) { return *(const uvec *)p; }
static inline void store(real *p, vec v) { *(uvec *)p = v; }

/* max(v, 0) that keeps NaN (as PyTorch does) and -0.0: clear lanes < 0. */
static inline vec relu(vec v)
{
    const vec zero = {0};
    return (vec)((vbits)v & ~(vbits)(v < zero));
}

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
    const real *restrict bias, int flags, int do_relu)
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
        if (do_relu) {
#pragma GCC unroll 16
            for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    acc[i][v] = relu(acc[i][v]);
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
                           const real *restrict bias, int flags, int do_relu);
#define UKERNEL_NV(n)                                                                   \
    static void ukernel_##n(int64_t kc, int64_t ntaps, const real *const *a,           \
                            int64_t a_off, int64_t tap_step, const real *restrict w,   \
                            int64_t ldw,                                               \
                            real *restrict c, int64_t ldc, const real *restrict bias,  \
                            int flags, int do_relu)                                    \
    {                                                                                  \
        ukernel(MR, n, kc, ntaps, a, a_off, tap_step, w, ldw, c, ldc, bias, flags,     \
                do_relu);                                                              \
    }                                                                                  \
    static void ukernel_1row_##n(int64_t kc, int64_t ntaps, const real *const *a,      \
                                 int64_t a_off, int64_t tap_step,                      \
                                 const real *restrict w, int64_t ldw,                  \
                                 real *restrict c, int64_t ldc,                        \
                                 const real *restrict bias, int flags, int do_relu)    \
    {                                                                                  \
        ukernel(1, n, kc, ntaps, a, a_off, tap_step, w, ldw, c, ldc, bias, flags,      \
                do_relu);                                                              \
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

/* Flush-to-zero and denormals-are-zero for the calling thread while a kernel
 * runs (subnormal operands can slow FMAs down by orders of magnitude); the
 * thread's previous mode is restored by fp_leave. */
typedef struct {
    unsigned csr;
    int changed;
} fp_mode;

static inline fp_mode fp_enter(int flush)
{
    fp_mode m = {0, 0};
#ifdef HAVE_MXCSR
    if (flush) {
        m.csr = _mm_getcsr();
        _mm_setcsr(m.csr | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
        m.changed = 1;
    }
#else
    (void)flush;
#endif
    return m;
}

static inline void fp_leave(fp_mode m)
{
#ifdef HAVE_MXCSR
    if (m.changed)
        _mm_setcsr(m.csr);
#else
    (void)m;
#endif
}

static inline size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* Below this many multiply-adds (or values moved) a call runs on one thread:
 * waking a second costs more than it saves (a few microseconds of work). */
#define MIN_PARALLEL_WORK (1 << 18)

/* Threads for a loop of ntasks tasks doing `work` in all (a double: a
 * product of valid sizes may exceed int64_t): at most one per task and per
 * processor (more would only oversubscribe the cores), and one for tiny
 * work. The results do not depend on it. */
static inline int clamp_threads(int nthreads, int64_t ntasks, double work)
{
#ifdef _OPENMP
    if (nthreads > omp_get_num_procs())
        nthreads = omp_get_num_procs();
    if (nthreads < 1 || work < MIN_PARALLEL_WORK)
        nthreads = 1;
    if (ntasks < nthreads)
        nthreads = (int)(ntasks > 0 ? ntasks : 1);
    return nthreads;
#else
    (void)nthreads;
    (void)ntasks;
    (void)work;
    return 1;
#endif
}

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Threads in the current parallel region (OpenMP may give fewer than asked). */
static inline int team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static inline int64_t n_blocks(int64_t n) { return (n + NR - 1) / NR; }
/* Output channels of a group rounded up to whole vectors: the packed width. */
static inline int64_t padded(int64_t n) { return (n + VLEN - 1) / VLEN * VLEN; }
/* Width of panel b of a group with Kg output channels: NR, except the last. */
static inline int64_t panel_width(int64_t Kg, int64_t b) { return MIN(NR, padded(Kg - b * NR)); }
/* Reduction block of a convolution (packing and kernels agree on it). */
static inline int64_t kc_block(const fc_conv_desc *d) { return d->kh * d->kw == 1 ? KC_GEMM : KC; }

/* Packed layout: per group, panels of NR output channels (the last one
 * padded(remaining) wide), each [KC block][tap][channel][width]; then the
 * bias, per group padded(Kg) values. */
static int64_t NAME(packed_size)(const fc_conv_desc *d)
{
    const int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    return d->groups * padded(Kg) * (d->kh * d->kw * Cg + 1);
}

static inline int64_t bias_offset(const fc_conv_desc *d)
{
    const int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    return d->groups * padded(Kg) * d->kh * d->kw * Cg;
}

/* Offset of panel b of group g. */
static inline int64_t panel_offset(const fc_conv_desc *d, int64_t g, int64_t b)
{
    const int64_t Cg = d->C / d->groups, Kg = d->K / d->groups;
    return (g * padded(Kg) + b * NR) * d->kh * d->kw * Cg;
}

/* Offset of row (tap t, channel c) of panel b of group g: its NR-wide slot. */
static inline int64_t packed_row(const fc_conv_desc *d, int64_t g, int64_t b, int64_t t,
                                 int64_t c)
{
    const int64_t Cg = d->C / d->groups, kcb = kc_block(d), ntaps = d->kh * d->kw;
    const int64_t c0 = c / kcb * kcb, kc = MIN(kcb, Cg - c0);
    const int64_t width = panel_width(d->K / d->groups, b);
    return panel_offset(d, g, b) + (c0 * ntaps + t * kc + (c - c0)) * width;
}

/* Offset of tap t of group g (its channel 0, the group's output channel 0)
 * in weights addressed through strides s. */
static inline int64_t tap_offset(const fc_conv_desc *d, fc_weight_strides s, int64_t g,
                                 int64_t t)
{
    return (t / d->kw) * s.ty + (t % d->kw) * s.tx + g * (d->K / d->groups) * s.k;
}

/* Packing moves the weights once through memory, in jobs of PACK_ROWS input
 * channels (all taps): with output channels contiguous (HWIO, a GEMM's b)
 * each source row is read in order and spread over the panels; otherwise
 * (OIHW, a transposed b) each panel gathers its columns from a source block
 * that the job has in cache. Reading a 400 MB kernel panel by panel instead,
 * 256 bytes per row, took 1.1 s for VGG's fc6. */
#define PACK_ROWS 16

static void NAME(pack)(const fc_conv_desc *d, const void *wv, fc_weight_strides s,
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
static void NAME(unpack)(const fc_conv_desc *d, const void *packedv, fc_weight_strides s,
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

/* Threads for a loop of ntasks: at most one per task and per processor
 * (more would only oversubscribe the cores). */
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
 * C) (ROWS_MERGED has dw == 1). O(input) memory, not O(im2col). */
static real *pad_input(const fc_conv_desc *d, const real *x, int nthreads, row_source *src)
{
    const int64_t C = d->C;
    const int64_t Hp = (d->Ho - 1) * d->sh + (d->kh - 1) * d->dh + 1;
    const int64_t Wp = (d->Wo - 1) * d->sw + d->kw;
    real *xp = malloc(sizeof(real) * (size_t)(d->N * Hp * Wp * C));
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
/* Where the micro-kernels read the weights: packed panels, or (direct) a
 * GEMM's (C, K) matrix itself, rows K apart, with the bias beside it. */
typedef struct {
    const real *w;
    const real *bias; /* direct only */
    int direct;
} weight_source;

static int conv_impl(const fc_conv_desc *d, const real *x, weight_source ws, real *y,
                     int nthreads)
{
    const real *packed = ws.w;
    const int64_t G = d->groups, Cg = d->C / G, Kg = d->K / G;
    const int64_t ntaps = d->kh * d->kw, M = d->N * d->Ho * d->Wo;
    const int64_t nb = n_blocks(Kg), mtiles = (M + MR - 1) / MR;
    /* At most MCT tiles per block, the tiles spread evenly over the blocks
     * (9 tiles make blocks of 5 and 4, not 8 and 1, for the two threads). */
    const int64_t mblocks = (mtiles + MCT - 1) / MCT;
    const int64_t bsize = mblocks ? (mtiles + mblocks - 1) / mblocks : 0;
    const int64_t ntasks = G * mblocks * nb;
    if (ntasks == 0)
        return FC_OK;
    row_source src = {x, d->H, d->W, 0, ROWS_TAPS};
    if (ntaps == 1 && d->sh == 1 && d->sw == 1 && d->pad_top == 0 && d->pad_left == 0 &&
        d->Ho == d->H && d->Wo == d->W)
        src.kind = ROWS_GEMM;
    else if (G == 1 && d->C < MERGE_ROWS_BELOW_C && d->kw > 1 && d->dw == 1 &&
             d->C * d->kw <= KC)
        src.kind = ROWS_MERGED; /* weights [ty][tx][c] are then [ty][tx * C + c] */
    const int64_t rows_per_tile = src.kind == ROWS_MERGED ? d->kh : ntaps;
    const int64_t run = src.kind == ROWS_MERGED ? d->kw * Cg : Cg;
    const real *pbias = !d->has_bias ? NULL : ws.direct ? ws.bias : packed + bias_offset(d);
    const int nt = clamp_threads(nthreads, ntasks, (double)M * d->K * ntaps * Cg);
    real *xpad = NULL;
    if (src.kind == ROWS_MERGED) {
        xpad = pad_input(d, x, nthreads, &src);
        if (!xpad)
            return FC_ENOMEM;
    }
    /* ROWS_MERGED: the kernel rows of a pixel are dh padded rows apart */
    const int64_t tap_step = src.kind == ROWS_MERGED ? d->dh * src.W * d->C : 0;
    /* Per thread: MCT * MR * ntaps row pointers and MCT partial-tile
     * buffers, each region 64-byte aligned. */
    const size_t ptr_bytes = round64(sizeof(real *) * (size_t)(MCT * MR * ntaps));
    const size_t per_thread = ptr_bytes + round64(sizeof(real) * (size_t)(MCT * MR * NR));
    char *work = aligned_alloc(64, per_thread * (size_t)nt);
    if (!work) {
        free(xpad);
        return FC_ENOMEM;
    }

#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(d->flush_denormals);
        char *mine = work + per_thread * (size_t)thread_id();
        const real **a = (const real **)mine;
        real *tiles = (real *)(mine + ptr_bytes);
        int64_t built = -1; /* (group, m-block) whose pointers are in `a` */
#pragma omp for schedule(static)
        for (int64_t task = 0; task < ntasks; task++) {
            const int64_t b = task % nb, gm = task / nb;
            const int64_t mb = gm % mblocks, g = gm / mblocks;
            const int64_t t0 = mb * bsize, tcount = MIN(bsize, mtiles - t0);
            if (gm != built) {
                row_source gsrc = src;
                gsrc.goff = g * Cg;
                build_pointers(d, &gsrc, t0 * MR, tcount * MR, M, a);
                built = gm;
            }
            const int64_t nr = MIN(NR, Kg - b * NR), width = panel_width(Kg, b);
            const ukernel_fn uk = (M == 1 ? ukernels_1row : ukernels)[width / VLEN];
            /* Panel b: its first row, the distance between its rows, and
             * the distance between reduction blocks. */
            const real *wb = ws.direct ? ws.w + b * NR : packed + panel_offset(d, g, b);
            const int64_t ldw = ws.direct ? d->K : width;
            const int64_t block_step = ws.direct ? d->K : rows_per_tile * width;
            const real *bias = pbias ? pbias + g * padded(Kg) + b * NR : NULL;
            /* The reduction runs over `run` values per row pointer in
             * kc_block(d) blocks; the panel holds them as [block][row][value][width]
             * (for ROWS_MERGED, C * kw <= KC makes that [ty][tx * C + c]). At
             * least one block, so that C == 0 still stores bias/zeros. */
            int64_t c0 = 0;
            do {
                const int64_t kc = MIN(kc_block(d), run - c0);
                const int flags = (c0 > 0 ? F_ACCUMULATE : 0) | (c0 + kc >= run ? F_LAST : 0);
                for (int64_t t = 0; t < tcount; t++) {
                    const int64_t p0 = (t0 + t) * MR;
                    const int full = p0 + MR <= M && nr == width;
                    real *c = full ? y + p0 * d->K + g * Kg + b * NR : tiles + t * MR * NR;
                    uk(kc, rows_per_tile, a + t * MR * ntaps, c0, tap_step, wb + c0 * block_step, ldw, c,
                       full ? d->K : NR, bias, flags, d->relu);
                }
                c0 += kc;
            } while (c0 < run);
            for (int64_t t = 0; t < tcount; t++) {
                const int64_t p0 = (t0 + t) * MR, mr = MIN(MR, M - p0);
                if (mr == MR && nr == width)
                    continue;
                real *dst = y + p0 * d->K + g * Kg + b * NR;
                for (int64_t i = 0; i < mr; i++)
                    memcpy(dst + i * d->K, tiles + (t * MR + i) * NR, sizeof(real) * (size_t)nr);
            }
        }
        fp_leave(fp);
    }
    free(work);
    free(xpad);
    return FC_OK;
}

static int NAME(conv)(const fc_conv_desc *d, const void *x, const void *packed, void *y,
                      int nthreads)
{
    const weight_source ws = {packed, NULL, 0};
    return conv_impl(d, x, ws, y, nthreads);
}

/* A GEMM (1x1 kernel, one group, K a multiple of VLEN) reading its (C, K)
 * weight matrix in place: no packing pass, for calls that would pack the
 * weights only to read them once. */
static int NAME(gemm_direct)(const fc_conv_desc *d, const void *x, const void *w,
                             const void *bias, void *y, int nthreads)
{
    if (d->kh != 1 || d->kw != 1 || d->groups != 1 || d->K % VLEN)
        return FC_EINVAL;
    const weight_source ws = {w, bias, 1};
    return conv_impl(d, x, ws, y, nthreads);
}

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
#define DENSE_ROWS 8
#define DENSE_DOT_OUTS 4
#define DENSE_OUTS 16
#define DENSE_PASS 8
#define DENSE_CHUNK 1024
#define DENSE_PREFETCH 16

static inline real finish(real v, const real *bias, int64_t k, int do_relu)
{
    if (bias)
        v += bias[k];
    return do_relu && v < 0 ? (real)0 : v; /* as relu(): NaN and -0.0 stay */
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
                    finish(lane_sum(acc[q][0] + acc[q][1]) + tail, bias, k + q, d->relu);
            }
        }
    }
}

static int NAME(dense)(const fc_dense_desc *d, const void *xv, const void *wv,
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
                dense_out_in(d, x, w, bias, y, t * DENSE_OUTS, MIN((t + 1) * DENSE_OUTS, K));
            fp_leave(fp);
        }
        return FC_OK;
    }
    /* (R, K): tasks of (chunk of rows, range of whole vectors of columns),
     * chunk-major, so that consecutive tasks read consecutive parts of W;
     * the columns are split only as far as needed to give every thread a
     * task. part holds each chunk's partial sums, (nchunks, M, K). */
    const int64_t nchunks = d->R > 0 ? (d->R + DENSE_CHUNK - 1) / DENSE_CHUNK : 1;
    const int64_t nvec = (K + VLEN - 1) / VLEN;
    int nt = clamp_threads(nthreads, nchunks * nvec, work);
    const int64_t ncols = MIN(nvec, (nt + nchunks - 1) / nchunks), ntasks = nchunks * ncols;
    real *part = malloc(sizeof(real) * (size_t)(nchunks * M * K));
    if (!part)
        return FC_ENOMEM;
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(d->flush_denormals);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < ntasks; t++) {
            const int64_t c = t / ncols, b = t % ncols;
            dense_in_out(d, x, w, c * DENSE_CHUNK, MIN((c + 1) * DENSE_CHUNK, d->R),
                         nvec * b / ncols * VLEN, MIN(nvec * (b + 1) / ncols * VLEN, K),
                         part + c * M * K);
        }
        /* (the loop's implied barrier: every partial sum is complete) */
#pragma omp for schedule(static)
        for (int64_t k = 0; k < K; k++)
            for (int64_t m = 0; m < M; m++) {
                real v = part[m * K + k];
                for (int64_t c = 1; c < nchunks; c++)
                    v += part[(c * M + m) * K + k];
                y[m * K + k] = finish(v, bias, k, d->relu);
            }
        fp_leave(fp);
    }
    free(part);
    return FC_OK;
}

/*
 * Winograd F(2x2, 3x3) (Lavin and Gray, 2016): each 2x2 tile of outputs is
 * A^T [(G g G^T) . (B^T d B)] A for its 4x4 input patch d, so the 16 products
 * of the transformed patches and weights are 16 GEMMs (tiles x C) @ (C x K),
 * run by the caller through the GEMM kernel: 16 multiply-adds per tile and
 * channel pair instead of the direct convolution's 36. The transforms only
 * add and subtract (B^T and A^T are 0/+-1); G's halves are applied to the
 * weights once, by the caller.
 */
static inline void tile_of(const fc_conv_desc *d, int64_t t, int64_t *n, int64_t *oy, int64_t *ox)
{
    const int64_t tw = (d->Wo + 1) / 2, th = (d->Ho + 1) / 2;
    *n = t / (th * tw);
    *oy = t / tw % th * 2;
    *ox = t % tw * 2;
}

/* U (16, C, K) = G g G^T for every (c, k), g read through the strides,
 * computed in double and rounded once. The caller checks that every weight
 * is finite and at most the dtype's largest value / 2.25 in magnitude
 * (|U| <= 2.25 max |g|), so that no value overflows the dtype. */
/* The first `lanes` values at p as a vector (the rest zero), and back: the
 * channel tail of the transforms when C or K is not a multiple of VLEN. */
static inline vec load_lanes(const real *p, int64_t lanes)
{
    if (lanes == VLEN)
        return load(p);
    vec v = {0};
    for (int64_t l = 0; l < lanes; l++)
        v[l] = p[l];
    return v;
}

static inline void store_lanes(real *p, vec v, int64_t lanes)
{
    if (lanes == VLEN)
        store(p, v);
    else
        for (int64_t l = 0; l < lanes; l++)
            p[l] = v[l];
}

/* Whether a sum of `v * 0` terms met an Inf or NaN (0 * it is NaN). */
static inline int met_nonfinite(vec check)
{
    int any = 0;
    for (int l = 0; l < VLEN; l++)
        any |= check[l] != 0;
    return any;
}

static void NAME(wino_weights)(const fc_conv_desc *d, const void *wv, fc_weight_strides s,
                               void *uv, int nthreads)
{
    const real *w = wv;
    real *u = uv;
    const int64_t C = d->C, K = d->K;
    const int nt = clamp_threads(nthreads, C, (double)C * K * 16);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t c = 0; c < C; c++)
        for (int64_t k = 0; k < K; k++) {
            const real *g = w + c * s.c + k * s.k;
            double t[4][3];
            for (int j = 0; j < 3; j++) { /* G g */
                const double g0 = g[j * s.tx], g1 = g[s.ty + j * s.tx], g2 = g[2 * s.ty + j * s.tx];
                t[0][j] = g0;
                t[1][j] = 0.5 * (g0 + g1 + g2);
                t[2][j] = 0.5 * (g0 - g1 + g2);
                t[3][j] = g2;
            }
            real *uk = u + c * K + k;
            for (int a = 0; a < 4; a++) { /* (G g) G^T */
                uk[(a * 4 + 0) * C * K] = (real)t[a][0];
                uk[(a * 4 + 1) * C * K] = (real)(0.5 * (t[a][0] + t[a][1] + t[a][2]));
                uk[(a * 4 + 2) * C * K] = (real)(0.5 * (t[a][0] - t[a][1] + t[a][2]));
                uk[(a * 4 + 3) * C * K] = (real)t[a][2];
            }
        }
}

static int NAME(wino_input)(const fc_conv_desc *d, const void *xv, int64_t t0, int64_t t1,
                            void *vv, int nthreads)
{
    const real *x = xv;
    real *v = vv;
    const int64_t C = d->C, T = t1 - t0;
    const int nt = clamp_threads(nthreads, T, (double)T * 16 * C);
    int nonfinite = 0;
#pragma omp parallel num_threads(nt) reduction(| : nonfinite)
    {
    const fp_mode fp = fp_enter(d->flush_denormals);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        int64_t n, oy, ox;
        tile_of(d, t0 + t, &n, &oy, &ox);
        const int64_t iy0 = oy - d->pad_top, ix0 = ox - d->pad_left;
        const real *p[4][4]; /* the patch's pixels; NULL in the padding */
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                const int64_t iy = iy0 + i, ix = ix0 + j;
                p[i][j] = iy >= 0 && iy < d->H && ix >= 0 && ix < d->W
                              ? x + ((n * d->H + iy) * d->W + ix) * C : NULL;
            }
        /* stays 0 unless a transformed value is Inf or NaN (0 * it is NaN):
         * an input holding one, or finite inputs whose sum overflows */
        vec check = {0};
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
                    store_lanes(v + ((i * 4 + j) * T + t) * C + c, r[j], lanes);
                }
            }
        }
        nonfinite |= met_nonfinite(check);
    }
    fp_leave(fp);
    }
    return nonfinite;
}

static int NAME(wino_output)(const fc_conv_desc *d, const void *mv, int64_t t0, int64_t t1,
                             const void *biasv, void *yv, int nthreads)
{
    const real *m = mv, *bias = biasv;
    real *y = yv;
    const int64_t K = d->K, T = t1 - t0;
    const int nt = clamp_threads(nthreads, T, (double)T * 16 * K);
    int nonfinite = 0;
#pragma omp parallel num_threads(nt) reduction(| : nonfinite)
    {
    const fp_mode fp = fp_enter(d->flush_denormals);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        int64_t n, oy, ox;
        tile_of(d, t0 + t, &n, &oy, &ox);
        const int rows = oy + 1 < d->Ho ? 2 : 1, cols = ox + 1 < d->Wo ? 2 : 1;
        for (int64_t k = 0; k < K; k += VLEN) {
            const int64_t lanes = MIN(VLEN, K - k);
            vec mp[4][4], s[2][4];
            for (int i = 0; i < 16; i++)
                mp[i / 4][i % 4] = load_lanes(m + (i * T + t) * K + k, lanes);
            for (int j = 0; j < 4; j++) { /* A^T m */
                s[0][j] = mp[0][j] + mp[1][j] + mp[2][j];
                s[1][j] = mp[1][j] - mp[2][j] - mp[3][j];
            }
            const vec b = bias ? load_lanes(bias + k, lanes) : (vec){0};
            vec check = {0}; /* as in wino_input: an Inf or NaN output */
            for (int i = 0; i < rows; i++) { /* (A^T m) A, bias, ReLU */
                const vec r[2] = {s[i][0] + s[i][1] + s[i][2], s[i][1] - s[i][2] - s[i][3]};
                for (int j = 0; j < cols; j++) {
                    vec o = r[j] + b;
                    check += o * 0;
                    if (d->relu)
                        o = relu(o);
                    store_lanes(y + ((n * d->Ho + oy + i) * d->Wo + ox + j) * K + k, o, lanes);
                }
            }
            nonfinite |= met_nonfinite(check);
        }
    }
    fp_leave(fp);
    }
    return nonfinite;
}

/*
 * Depthwise convolution, channels in SIMD lanes: for one output row and one
 * vector of channels, DW_OX output pixels at a time accumulate over the taps
 * in registers, each input vector read straight from the NHWC row. Tiles
 * whose taps all fall inside the image skip every bounds check; the others
 * (the image border) check each tap. The sum over taps is in the same order
 * everywhere, so the result does not depend on the thread count.
 */
static inline __attribute__((always_inline)) void dw_tile(
    const fc_conv_desc *d, const real *img, const real *w, const real *bias, int64_t oy,
    int64_t ox0, int64_t c0, const int nox, const int checked, const int k3_stride,
    real *out_row)
{
    const int64_t C = d->C;
    vec acc[DW_OX];
#pragma GCC unroll 16
    for (int i = 0; i < DW_OX; i++)
        acc[i] = (vec){0};
    for (int64_t ty = 0; ty < d->kh; ty++) {
        const int64_t iy = oy * d->sh - d->pad_top + ty * d->dh;
        if (iy < 0 || iy >= d->H)
            continue;
        const real *xrow = img + iy * d->W * C + c0;
        if (k3_stride) {
            /* 3 taps, dilation 1, stride k3_stride (1 or 2): each input
             * vector of the row is loaded once and feeds every output it
             * touches; columns outside the image read as zeros. */
            const int S = k3_stride;
            const int64_t ix0 = ox0 * S - d->pad_left;
            const vec w0 = load(w + ty * 3 * C + c0), w1 = load(w + (ty * 3 + 1) * C + c0),
                      w2 = load(w + (ty * 3 + 2) * C + c0);
            vec xv[(DW_OX - 1) * 2 + 3];
#pragma GCC unroll 32
            for (int j = 0; j < (DW_OX - 1) * S + 3; j++) {
                const int64_t ix = ix0 + j;
                xv[j] = !checked || (ix >= 0 && ix < d->W) ? load(xrow + ix * C) : (vec){0};
            }
#pragma GCC unroll 16
            for (int i = 0; i < nox; i++) {
                acc[i] += xv[i * S] * w0;
                acc[i] += xv[i * S + 1] * w1;
                acc[i] += xv[i * S + 2] * w2;
            }
            continue;
        }
        for (int64_t tx = 0; tx < d->kw; tx++) {
            const vec wv = load(w + (ty * d->kw + tx) * C + c0);
            const int64_t ix0 = ox0 * d->sw - d->pad_left + tx * d->dw;
#pragma GCC unroll 16
            for (int i = 0; i < nox; i++) {
                const int64_t ix = ix0 + i * d->sw;
                if (!checked || (ix >= 0 && ix < d->W))
                    acc[i] += load(xrow + ix * C) * wv;
            }
        }
    }
    const vec b = bias ? load(bias + c0) : (vec){0};
#pragma GCC unroll 16
    for (int i = 0; i < nox; i++) {
        vec v = bias ? acc[i] + b : acc[i];
        if (d->relu)
            v = relu(v);
        store(out_row + (ox0 + i) * C + c0, v);
    }
}

/* One output value the plain way: the channel tail (C not a multiple of
 * VLEN). */
static inline void dw_scalar(const fc_conv_desc *d, const real *img, const real *w,
                             const real *bias, int64_t oy, int64_t ox, int64_t c, real *out_row)
{
    const int64_t C = d->C;
    real acc = 0;
    for (int64_t ty = 0; ty < d->kh; ty++) {
        const int64_t iy = oy * d->sh - d->pad_top + ty * d->dh;
        if (iy < 0 || iy >= d->H)
            continue;
        for (int64_t tx = 0; tx < d->kw; tx++) {
            const int64_t ix = ox * d->sw - d->pad_left + tx * d->dw;
            if (ix >= 0 && ix < d->W)
                acc += img[(iy * d->W + ix) * C + c] * w[(ty * d->kw + tx) * C + c];
        }
    }
    if (bias)
        acc += bias[c];
    if (d->relu && acc < 0)
        acc = 0;
    out_row[ox * C + c] = acc;
}

static int NAME(dwconv)(const fc_conv_desc *d, const void *xv, const void *wv,
                        const void *biasv, void *yv, int nthreads)
{
    const real *x = xv, *w = wv, *bias = biasv;
    real *y = yv;
    const int64_t rows = d->N * d->Ho, C = d->C, cvec = C / VLEN * VLEN;
    /* Output columns [ox_lo, ox_hi) read only columns inside the image. */
    const int64_t ox_lo = MIN(d->Wo, (d->pad_left + d->sw - 1) / d->sw);
    const int64_t last = d->W - 1 + d->pad_left - (d->kw - 1) * d->dw; /* max ox*sw */
    const int64_t ox_hi = last < 0 ? 0 : MIN(d->Wo, last / d->sw + 1);
    /* 3-tap rows at stride 1 or 2 (MobileNet's) load each input once. */
    const int k3 = d->kw == 3 && d->dw == 1 && (d->sw == 1 || d->sw == 2) ? (int)d->sw : 0;
    const int nt = clamp_threads(nthreads, rows, (double)rows * d->Wo * C * d->kh * d->kw);
#pragma omp parallel num_threads(nt)
    {
        const fp_mode fp = fp_enter(d->flush_denormals);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; row++) {
            const int64_t n = row / d->Ho, oy = row % d->Ho;
            const real *img = x + n * d->H * d->W * C;
            real *out_row = y + row * d->Wo * C;
            /* Pixels outer, channels inner: a tile's input window (kh rows
             * of DW_OX * sw + kw pixels, all channels) stays in L1. */
            for (int64_t ox = 0; ox < d->Wo; ox += DW_OX) {
                const int nox = (int)MIN(DW_OX, d->Wo - ox);
                const int inside = nox == DW_OX && ox >= ox_lo && ox + DW_OX <= ox_hi;
                for (int64_t c0 = 0; c0 < cvec; c0 += VLEN) {
                    if (k3 == 1 && inside)
                        dw_tile(d, img, w, bias, oy, ox, c0, DW_OX, 0, 1, out_row);
                    else if (k3 == 1)
                        dw_tile(d, img, w, bias, oy, ox, c0, nox, 1, 1, out_row);
                    else if (k3 == 2 && inside)
                        dw_tile(d, img, w, bias, oy, ox, c0, DW_OX, 0, 2, out_row);
                    else if (k3 == 2)
                        dw_tile(d, img, w, bias, oy, ox, c0, nox, 1, 2, out_row);
                    else if (inside)
                        dw_tile(d, img, w, bias, oy, ox, c0, DW_OX, 0, 0, out_row);
                    else
                        dw_tile(d, img, w, bias, oy, ox, c0, nox, 1, 0, out_row);
                }
                for (int64_t o = ox; o < ox + nox; o++)
                    for (int64_t c = cvec; c < C; c++)
                        dw_scalar(d, img, w, bias, oy, o, c, out_row);
            }
        }
        fp_leave(fp);
    }
    return FC_OK;
}

/*
 * Pooling, NHWC, one vector of channels at a time over each output pixel's
 * window (the window is clipped to the image; padding never wins a max and,
 * with count_include_pad, counts in an average's divisor as in PyTorch).
 */
static inline vec pool_max(vec m, vec v)
{
    /* v where v > m or v is NaN: NaN propagates, as in PyTorch. */
    const vbits take = (vbits)(v > m) | (vbits)(v != v);
    return (vec)(((vbits)m & ~take) | ((vbits)v & take));
}

static int NAME(pool)(const fc_pool_desc *d, const void *xv, void *yv, int nthreads)
{
    const real *x = xv;
    real *y = yv;
    const int64_t C = d->C, rows = d->N * d->Ho, cvec = C / VLEN * VLEN;
    const int nt = clamp_threads(nthreads, rows, (double)rows * d->Wo * C * d->kh * d->kw);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t row = 0; row < rows; row++) {
        const int64_t n = row / d->Ho, oy = row % d->Ho;
        const real *img = x + n * d->H * d->W * C;
        const int64_t y0 = oy * d->sh - d->ph;
        const int64_t y1 = MIN(y0 + d->kh, d->H + d->ph);
        const int64_t ya = y0 < 0 ? 0 : y0, yb = MIN(y1, d->H);
        for (int64_t ox = 0; ox < d->Wo; ox++) {
            const int64_t x0 = ox * d->sw - d->pw;
            const int64_t x1 = MIN(x0 + d->kw, d->W + d->pw);
            const int64_t xa = x0 < 0 ? 0 : x0, xb = MIN(x1, d->W);
            const int64_t count = d->count_include_pad ? (y1 - y0) * (x1 - x0)
                                                       : (yb - ya) * (xb - xa);
            const real scale = count > 0 ? (real)1 / (real)count : 0;
            real *out = y + (row * d->Wo + ox) * C;
            for (int64_t c = 0; c < cvec; c += VLEN) {
                vec acc = d->max ? (vec){0} - (real)__builtin_inf() : (vec){0};
                for (int64_t iy = ya; iy < yb; iy++)
                    for (int64_t ix = xa; ix < xb; ix++) {
                        const vec v = load(img + (iy * d->W + ix) * C + c);
                        acc = d->max ? pool_max(acc, v) : acc + v;
                    }
                store(out + c, d->max ? acc : acc * scale);
            }
            for (int64_t c = cvec; c < C; c++) {
                real acc = d->max ? -(real)__builtin_inf() : 0;
                for (int64_t iy = ya; iy < yb; iy++)
                    for (int64_t ix = xa; ix < xb; ix++) {
                        const real v = img[(iy * d->W + ix) * C + c];
                        acc = d->max ? (v > acc || v != v ? v : acc) : acc + v;
                    }
                out[c] = d->max ? acc : acc * scale;
            }
        }
    }
    return FC_OK;
}

/* Peak-throughput probe: iters rounds of FMA_CHAINS independent vector FMAs
 * per thread, registers only. Returns the floating-point operations done. */
#define FMA_CHAINS 16
static double NAME(fma_probe)(int64_t iters, int nthreads)
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

const fc_kernel_set CAT3(fc_kernels, DT, ISA) = {
    .isa = STR(ISA),
    .mr = MR,
    .nr = NR,
    .packed_size = NAME(packed_size),
    .pack = NAME(pack),
    .unpack = NAME(unpack),
    .vlen = VLEN,
    .conv = NAME(conv),
    .gemm_direct = NAME(gemm_direct),
    .dense = NAME(dense),
    .wino_weights = NAME(wino_weights),
    .wino_input = NAME(wino_input),
    .wino_output = NAME(wino_output),
    .dwconv = NAME(dwconv),
    .pool = NAME(pool),
    .fma_probe = NAME(fma_probe),
};
