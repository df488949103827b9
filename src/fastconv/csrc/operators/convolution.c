/*
 * The convolution operator: made once from its parameters and weights (the
 * layers of fastconv.nn, or one call of conv2d / matmul), it chooses the
 * algorithm for each call from the shapes and the configuration of its ISA
 * (configs/<isa>.h), prepares the weights that algorithm reads (packed
 * panels, Winograd's transformed panels, depthwise taps, or the weights in
 * place), and runs the kernels. In the spirit of XNNPACK's
 * operators/convolution-nhwc.c over its configs.
 *
 * An operator may be run by several threads at once (conv2d keeps the
 * operators of weights it sees again): what it prepares lazily (packed
 * panels, Winograd's weights) is published with one atomic compare-and-swap,
 * and a thread that loses the race frees its own copy; whether Winograd can
 * use a ONE_CALL operator's weights is stored atomically, each thread that
 * finds it unknown computing the same answer.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "kernels/kernels.h"

#define MIN_OF(a, b) ((a) < (b) ? (a) : (b))

struct fc_conv_op {
    const fc_kernel_set *ks;
    size_t itemsize;
    fc_conv_params p;
    int flags;
    int has_bias;
    int depthwise;          /* groups == C == K > 1 */
    int algorithm;          /* what the weights were prepared for */
    /* ONE_CALL: the caller's weights, read in place; else NULL */
    const void *w;
    fc_weight_strides ws;
    int w_hwio, w_oihw;     /* w is contiguous HWIO / OIHW */
    /* ONE_CALL: -1 unknown, 0 / 1: Winograd F(2x2) [0] / F(4x4) [1] can use w */
    int transformable[2];
    void *bias;             /* own copy of the K values, or NULL */
    void *taps;             /* depthwise: contiguous (kh, kw, C) */
    void *packed;           /* panels with the bias; NULL until needed */
    /* Winograd F(2x2)'s 16 [0] and F(4x4)'s 36 [1] packed products; NULL
     * until made */
    void *wino[2];
    /* FC_CONV_TRANSPOSED */
    int transposed;
    int phases;             /* stride > 1: runs the output's phases */
    /* the phases' sub-kernels: one per class of taps, tap rows ty0, ty0 +
     * step_y, ... (step = stride / gcd(stride, dilation): the taps of a
     * class reach one phase of the output), columns likewise, class
     * (ty0, tx0) at ty0 * ncls_x + tx0, NULL where it has no taps; and the
     * bias alone, for a phase that no tap reaches */
    int64_t step_y, step_x;
    int64_t ncls_y, ncls_x; /* classes with taps: min(step, kernel size) */
    void **sub;
    void *bias_only;
};

/* Memory for weights the kernels stream (free() releases it): 64-byte
 * aligned, and from 4 MiB on on 2 MiB boundaries with transparent huge
 * pages asked for, as numpy does for its large arrays: with 4 KiB pages a
 * 3x3 512 -> 512 layer's 9 MB of panels and Winograd's 17 MB ran about
 * 10% slower (TLB misses), Linux's THP being "madvise" by default. */
static void *weights_alloc(size_t n)
{
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (posix_memalign(&p, n >= 2 * huge ? huge : 64, n ? n : 1))
        return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= 2 * huge)
        madvise(p, n, MADV_HUGEPAGE); /* (advice: its failure changes nothing) */
#endif
    return p;
}

/* Marks Winograd weights that cannot be made (non-finite or too large). */
static char unusable;
#define WINO_UNUSABLE ((void *)&unusable)

const char *fc_algorithm_name(int algorithm)
{
    static const char *names[FC_ALGO_COUNT] = {
        "auto", "igemm", "gemm", "gemm-in-place", "dense", "winograd-f2x2-3x3", "depthwise",
        "winograd-f4x4-3x3"};
    return algorithm >= 0 && algorithm < FC_ALGO_COUNT ? names[algorithm] : "unknown";
}

/* a * b * c * d as a size_t, or 0 with *ok cleared if it overflows. */
static size_t product(int64_t a, int64_t b, int64_t c, int64_t d, int *ok)
{
    uint64_t r;
    if (a < 0 || b < 0 || c < 0 || d < 0 || __builtin_mul_overflow((uint64_t)a, (uint64_t)b, &r) ||
        __builtin_mul_overflow(r, (uint64_t)c, &r) || __builtin_mul_overflow(r, (uint64_t)d, &r) ||
        r > (uint64_t)INT64_MAX) {
        *ok = 0;
        return 0;
    }
    return (size_t)r;
}

/* The kernels' descriptor of this operator with an empty call: enough for
 * packing, which reads only the channels, groups and taps. */
static fc_conv_desc weights_desc(const fc_conv_op *op)
{
    const fc_conv_params *p = &op->p;
    return (fc_conv_desc){.C = p->C, .K = p->K, .groups = p->groups, .kh = p->kh, .kw = p->kw,
                          .sh = p->sh, .sw = p->sw, .dh = p->dh, .dw = p->dw,
                          .has_bias = op->has_bias};
}

static fc_conv_desc call_desc(const fc_conv_op *op, const fc_conv_call *c,
                              const void *residual, fc_interrupt *interrupt)
{
    fc_conv_desc d = weights_desc(op);
    d.residual = residual;
    d.interrupt = interrupt;
    d.N = c->N;
    d.H = c->H;
    d.W = c->W;
    d.pad_top = c->pad_top;
    d.pad_left = c->pad_left;
    d.Ho = c->Ho;
    d.Wo = c->Wo;
    d.act = c->act;
    d.flush_denormals = c->flush_denormals;
    return d;
}

/* Whether strides s address a C-ordered array of these sizes (axes of size
 * 1 have no meaningful stride). */
static int c_ordered(const int64_t size[4], const int64_t stride[4])
{
    int64_t expect = 1;
    for (int i = 3; i >= 0; i--) {
        if (size[i] > 1 && stride[i] != expect)
            return 0;
        expect *= size[i];
    }
    return 1;
}

/* Set once a pointer is published; a thread that loses the race frees its
 * own and takes the winner's. */
static void *publish(void **slot, void *mine)
{
    void *seen = NULL;
    if (__atomic_compare_exchange_n(slot, &seen, mine, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return mine;
    if (mine != WINO_UNUSABLE)
        free(mine);
    return seen;
}

/* Where the weights can be read from: the caller's (ONE_CALL) or the
 * depthwise taps; NULL for a layer, whose weights are only in its panels. */
static const void *source_weights(const fc_conv_op *op, fc_weight_strides *ws)
{
    if (op->w) {
        *ws = op->ws;
        return op->w;
    }
    if (op->taps) { /* (kh, kw, C): tap row, tap column, output channel */
        *ws = (fc_weight_strides){op->p.kw * op->p.C, op->p.C, 0, 1};
        return op->taps;
    }
    return NULL;
}

/* The packed panels, packed now if they are not yet (NULL: no memory). */
static const void *packed_weights(fc_conv_op *op, int nthreads)
{
    void *packed = __atomic_load_n(&op->packed, __ATOMIC_ACQUIRE);
    if (packed)
        return packed;
    fc_weight_strides ws;
    const void *w = source_weights(op, &ws);
    const fc_conv_desc d = weights_desc(op);
    int ok = 1;
    const size_t n = product(op->ks->packed_size(&d), (int64_t)op->itemsize, 1, 1, &ok);
    packed = ok && w ? weights_alloc(n) : NULL;
    if (!packed)
        return NULL;
    op->ks->pack(&d, w, ws, op->bias, packed, nthreads);
    return publish(&op->packed, packed);
}

static int winograd_kernel(const fc_conv_op *op)
{
    const fc_conv_params *p = &op->p;
    return p->kh == 3 && p->kw == 3 && p->groups == 1 && p->sh == 1 && p->sw == 1 &&
           p->dh == 1 && p->dw == 1 && !(op->flags & FC_CONV_NO_WINOGRAD);
}

/* Whether no value of the kh*kw*C/groups*K weights at w (through s) exceeds
 * `limit` in magnitude (or is NaN), read in their memory's order where they
 * are HWIO (output channels innermost) or OIHW (taps innermost). */
#define DEFINE_WITHIN(real)                                                              \
    static int within_##real(const real *w, fc_weight_strides s, int64_t taps_w,       \
                             int64_t taps, int64_t C, int64_t K, double limit)          \
    {                                                                                   \
        const int hwio = s.k == 1;                                                      \
        for (int64_t o = 0; o < (hwio ? taps * C : K); o++) {                           \
            const int64_t c0 = hwio ? o % C : 0, t0 = hwio ? o / C : 0;                 \
            const real *row = w + (hwio ? c0 * s.c + t0 / taps_w * s.ty + t0 % taps_w * s.tx \
                                        : o * s.k);                                     \
            for (int64_t j = 0; j < (hwio ? K : taps * C); j++) {                       \
                const int64_t c = j / taps, t = j % taps;                               \
                const real v = hwio ? row[j] : row[c * s.c + t / taps_w * s.ty + t % taps_w * s.tx]; \
                if (!(fabs((double)v) <= limit)) /* (NaN fails the comparison) */       \
                    return 0;                                                           \
            }                                                                           \
        }                                                                               \
        return 1;                                                                       \
    }
DEFINE_WITHIN(float)
DEFINE_WITHIN(double)

/* Winograd F(m x m, 3x3)'s tile size m (2 or 4) for its algorithm, and the
 * index of its weights in op->wino. */
static int wino_tile(int algorithm) { return algorithm == FC_ALGO_WINOGRAD_F4X4_3X3 ? 4 : 2; }
static int wino_index(int m) { return m == 4; }

/* Whether Winograd F(m x m) can use these 3x3 weights: finite and at most the
 * dtype's largest value / c in magnitude, c = 2.25 for m = 2, 1 for m = 4
 * (winograd.c derives them), so that G g G^T cannot overflow. */
static int transformable(const fc_conv_op *op, int m, const void *w, fc_weight_strides s)
{
    const double limit = (op->itemsize == 4 ? FLT_MAX : DBL_MAX) / (m == 4 ? 1.0 : 2.25);
    return op->itemsize == 4 ? within_float(w, s, 3, 9, op->p.C, op->p.K, limit)
                             : within_double(w, s, 3, 9, op->p.C, op->p.K, limit);
}

/* Winograd F(m x m)'s weights, made now if they are not yet: NULL for no
 * memory, WINO_UNUSABLE for weights it cannot transform. */
static const void *winograd_weights(fc_conv_op *op, int m, int nthreads)
{
    const int i = wino_index(m);
    void *u = __atomic_load_n(&op->wino[i], __ATOMIC_ACQUIRE);
    if (u)
        return u;
    const fc_conv_desc d = weights_desc(op);
    fc_weight_strides ws;
    const void *w = source_weights(op, &ws);
    void *unpacked = NULL;
    if (!w) { /* a layer: its weights back from the panels, HWIO */
        int ok = 1;
        const size_t n = product(9 * op->p.C, op->p.K, (int64_t)op->itemsize, 1, &ok);
        unpacked = ok ? malloc(n ? n : 1) : NULL;
        if (!unpacked)
            return NULL;
        ws = (fc_weight_strides){3 * op->p.C * op->p.K, op->p.C * op->p.K, op->p.K, 1};
        op->ks->unpack(&d, op->packed, ws, unpacked);
        w = unpacked;
    }
    int status = FC_OK;
    const int known = op->w ? __atomic_load_n(&op->transformable[i], __ATOMIC_RELAXED) : -1;
    if (!(known >= 0 ? known : transformable(op, m, w, ws))) {
        u = WINO_UNUSABLE;
    } else {
        int ok = 1;
        const size_t n = product(op->ks->winograd_packed_size(&d, m), (int64_t)op->itemsize, 1,
                                 1, &ok);
        u = ok ? weights_alloc(n) : NULL;
        status = u ? op->ks->winograd_pack(&d, m, w, ws, u, nthreads) : FC_ENOMEM;
    }
    free(unpacked);
    if (status != FC_OK) {
        free(u);
        return NULL;
    }
    return publish(&op->wino[i], u);
}

/* Whether Winograd can use the weights: known once its weights are made
 * (a layer's, at creation or at the first call that runs it); for the
 * caller's weights of a ONE_CALL operator, checked once, here. */
static int winograd_usable(fc_conv_op *op, int m)
{
    const int i = wino_index(m);
    const void *u = __atomic_load_n(&op->wino[i], __ATOMIC_ACQUIRE);
    if (u)
        return u != WINO_UNUSABLE;
    int known = __atomic_load_n(&op->transformable[i], __ATOMIC_RELAXED);
    if (op->w && known < 0) {
        known = transformable(op, m, op->w, op->ws);
        __atomic_store_n(&op->transformable[i], known, __ATOMIC_RELAXED);
    }
    return known != 0;
}

static int is_gemm(const fc_conv_op *op, const fc_conv_call *c)
{
    const fc_conv_params *p = &op->p;
    return p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && c->pad_top == 0 &&
           c->pad_left == 0 && c->Ho == c->H && c->Wo == c->W;
}

/* Whether `algorithm` can compute this call at all (thresholds aside). */
static int applies(fc_conv_op *op, const fc_conv_call *c, int algorithm)
{
    const fc_conv_params *p = &op->p;
    switch (algorithm) {
    case FC_ALGO_DEPTHWISE:
        return op->depthwise;
    case FC_ALGO_GEMM:
        return is_gemm(op, c);
    case FC_ALGO_IGEMM:
        return !is_gemm(op, c);
    case FC_ALGO_GEMM_IN_PLACE:
        return op->w && op->w_hwio && p->groups == 1 && is_gemm(op, c) &&
               p->K % op->ks->config.vlen == 0;
    case FC_ALGO_DENSE:
        return op->w && (op->w_hwio || op->w_oihw) && p->groups == 1 && p->dh == 1 &&
               p->dw == 1 && c->Ho == 1 && c->Wo == 1;
    case FC_ALGO_WINOGRAD_F2X2_3X3:
    case FC_ALGO_WINOGRAD_F4X4_3X3:
        return winograd_kernel(op) && winograd_usable(op, wino_tile(algorithm));
    default:
        return 0;
    }
}

/* The algorithm this call runs when the operator chooses. */
static int choose(fc_conv_op *op, const fc_conv_call *c)
{
    const fc_isa_config *cfg = &op->ks->config;
    const fc_conv_params *p = &op->p;
    if (op->depthwise)
        return FC_ALGO_DEPTHWISE;
    /* one output pixel (a fully-connected layer written as a convolution):
     * bound by the memory bandwidth, so its weights are streamed in place */
    if (c->N <= cfg->dense_rows && applies(op, c, FC_ALGO_DENSE))
        return FC_ALGO_DENSE;
    if (c->N * c->H * c->W < cfg->direct_gemm_max_rows && applies(op, c, FC_ALGO_GEMM_IN_PLACE))
        return FC_ALGO_GEMM_IN_PLACE;
    /* Winograd where its transforms pay (per image: an image's result does
     * not depend on its batch) */
    const double tiles = (double)((c->Ho + 1) / 2) * ((c->Wo + 1) / 2);
    if (c->allow_winograd && applies(op, c, FC_ALGO_WINOGRAD_F2X2_3X3) &&
        MIN_OF(p->C, p->K) >= cfg->winograd_min_channels &&
        tiles >= (double)cfg->winograd_min_tiles &&
        (double)c->Ho * c->Wo * p->C * p->K * 9 >= (double)cfg->winograd_min_macs &&
        (!(op->flags & FC_CONV_ONE_CALL) || tiles >= (double)cfg->winograd_one_call_min_tiles)) {
        /* F(4x4) over enough of its tiles, where its weights can be made */
        const double tiles4 = (double)((c->Ho + 3) / 4) * ((c->Wo + 3) / 4);
        const int64_t min4 = op->flags & FC_CONV_ONE_CALL ? cfg->winograd_f4_one_call_min_tiles
                                                          : cfg->winograd_f4_min_tiles;
        return tiles4 >= (double)min4 && applies(op, c, FC_ALGO_WINOGRAD_F4X4_3X3)
                   ? FC_ALGO_WINOGRAD_F4X4_3X3 : FC_ALGO_WINOGRAD_F2X2_3X3;
    }
    return is_gemm(op, c) ? FC_ALGO_GEMM : FC_ALGO_IGEMM;
}


/* --- Transposed convolutions (FC_CONV_TRANSPOSED) ----------------------
 * Output row oy of a transposed convolution (stride s, dilation d, padding
 * p) gets input row iy through tap ky of w_t where oy = iy * s - p + ky * d;
 * with the direct kernel's tap ty = kh - 1 - ky and oy = q * s + r (phase
 * r), iy = q + (A + ty * d) / s, A = r + p - (kh - 1) * d. The taps with
 * A + ty * d divisible by s are one class ty = ty0 + j * step (step =
 * s / gcd(s, d)), or none; they read iy = q + off + j * d / gcd(s, d), off =
 * (A + ty0 * d) / s: a direct convolution of stride 1, dilation d / gcd and
 * padding -off (negative: it starts inside the input) with the class's
 * sub-kernel, computing the phase's rows q = 0, 1, ... while oy < Ho. */

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        const int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Taps t0, t0 + step, ... below k. */
static int64_t class_taps(int64_t t0, int64_t step, int64_t k)
{
    return t0 < k ? (k - 1 - t0) / step + 1 : 0;
}

/* The class of taps (*t0) that reaches the phase r of one axis (stride s,
 * dilation d, padding p, k taps), and its input offset; 0 if none with a
 * tap (t0 < k) does. In 128 bits: r + p may pass INT64_MAX (a padding near
 * it with a stride to match); the offset, within an input row's reach,
 * fits 64 bits. */
static int phase_class(int64_t r, int64_t p, int64_t k, int64_t s, int64_t d, int64_t step,
                       int64_t *t0, int64_t *off)
{
    const __int128 A = (__int128)r + p - (__int128)(k - 1) * d;
    for (int64_t t = 0; t < MIN_OF(step, k); t++)
        if ((A + (__int128)t * d) % s == 0) {
            *t0 = t;
            *off = (int64_t)((A + (__int128)t * d) / s);
            return 1;
        }
    return 0;
}

/* The packing descriptor of the sub-kernel of class (ty0, tx0): no taps at
 * all (the bias alone) where either axis has none. */
static fc_conv_desc sub_desc(const fc_conv_op *op, int64_t ty0, int64_t tx0)
{
    const fc_conv_params *p = &op->p;
    fc_conv_desc d = weights_desc(op);
    d.kh = class_taps(ty0, op->step_y, p->kh);
    d.kw = class_taps(tx0, op->step_x, p->kw);
    if (!d.kh || !d.kw)
        d.kh = d.kw = 0;
    d.sh = d.sw = 1;
    d.dh = p->dh / gcd64(p->sh, p->dh);
    d.dw = p->dw / gcd64(p->sw, p->dw);
    return d;
}

/* The sub-kernel of class (ty0, tx0) in weights addressed through ws: its
 * first tap and strides (between taps of the class: a class of one tap has
 * none, and its step, which may be as large as the stride, is not used). */
static const char *sub_weights(const fc_conv_op *op, const void *w, fc_weight_strides ws,
                               int64_t ty0, int64_t tx0, fc_weight_strides *sub)
{
    const fc_conv_params *p = &op->p;
    *sub = (fc_weight_strides){class_taps(ty0, op->step_y, p->kh) > 1 ? ws.ty * op->step_y : 0,
                               class_taps(tx0, op->step_x, p->kw) > 1 ? ws.tx * op->step_x : 0,
                               ws.c, ws.k};
    return (const char *)w + (ty0 * ws.ty + tx0 * ws.tx) * (int64_t)op->itemsize;
}

static void *pack_desc(const fc_conv_op *op, const fc_conv_desc *d, const void *w,
                       fc_weight_strides ws, int nthreads)
{
    int ok = 1;
    const size_t n = product(op->ks->packed_size(d), (int64_t)op->itemsize, 1, 1, &ok);
    void *packed = ok ? weights_alloc(n) : NULL;
    if (packed)
        op->ks->pack(d, w, ws, op->bias, packed, nthreads);
    return packed;
}

/* Packs every class's sub-kernel, and the bias alone. */
static int pack_phases(fc_conv_op *op, const void *w, fc_weight_strides ws, int nthreads)
{
    const fc_conv_params *p = &op->p;
    op->step_y = p->sh / gcd64(p->sh, p->dh);
    op->step_x = p->sw / gcd64(p->sw, p->dw);
    op->ncls_y = MIN_OF(op->step_y, p->kh);
    op->ncls_x = MIN_OF(op->step_x, p->kw);
    op->sub = calloc((size_t)(op->ncls_y * op->ncls_x), sizeof(void *));
    if (!op->sub)
        return FC_ENOMEM;
    for (int64_t ty0 = 0; ty0 < op->ncls_y; ty0++)
        for (int64_t tx0 = 0; tx0 < op->ncls_x; tx0++) {
            const fc_conv_desc d = sub_desc(op, ty0, tx0);
            if (!d.kh)
                continue;
            fc_weight_strides sws;
            const char *sw = sub_weights(op, w, ws, ty0, tx0, &sws);
            if (!(op->sub[ty0 * op->ncls_x + tx0] = pack_desc(op, &d, sw, sws, nthreads)))
                return FC_ENOMEM;
        }
    fc_conv_desc none = weights_desc(op);
    none.kh = none.kw = 0;
    op->bias_only = pack_desc(op, &none, w, ws, nthreads);
    return op->bias_only ? FC_OK : FC_ENOMEM;
}

/* The descriptor of phase (ry, rx) of a call, and the packed weights it
 * reads. */
static fc_conv_desc phase_desc(const fc_conv_op *op, const fc_conv_call *c,
                               const void *residual, fc_interrupt *interrupt, int64_t ry,
                               int64_t rx, const void **packed)
{
    const fc_conv_params *p = &op->p;
    fc_conv_desc d = call_desc(op, c, residual, interrupt);
    int64_t ty0 = 0, tx0 = 0, off_y = 0, off_x = 0;
    const int hit =
        phase_class(ry, c->pad_top, p->kh, p->sh, p->dh, op->step_y, &ty0, &off_y) &&
        phase_class(rx, c->pad_left, p->kw, p->sw, p->dw, op->step_x, &tx0, &off_x);
    const fc_conv_desc sd = sub_desc(op, hit ? ty0 : p->kh, hit ? tx0 : p->kw);
    d.kh = sd.kh;
    d.kw = sd.kw;
    d.sh = d.sw = 1;
    d.dh = sd.dh;
    d.dw = sd.dw;
    d.pad_top = -off_y;
    d.pad_left = -off_x;
    /* (the rows q with q * sh + ry < Ho, written not to overflow with a
     * stride near INT64_MAX) */
    d.Ho = ry < c->Ho ? (c->Ho - 1 - ry) / p->sh + 1 : 0;
    d.Wo = rx < c->Wo ? (c->Wo - 1 - rx) / p->sw + 1 : 0;
    d.y_off = (ry * c->Wo + rx) * p->K;
    d.y_img = c->Ho * c->Wo * p->K;
    /* (a phase of one row or column never steps: its step, a stride that
     * may be larger than the output, is not formed) */
    d.y_row = d.Ho > 1 ? p->sh * c->Wo * p->K : 0;
    d.y_col = d.Wo > 1 ? p->sw * p->K : 1;
    *packed = d.kh ? op->sub[ty0 * op->ncls_x + tx0] : op->bias_only;
    return d;
}

static int run_phases(fc_conv_op *op, const fc_conv_call *c, const void *x,
                      const void *residual, void *y, int nthreads, fc_interrupt *interrupt)
{
    /* (the phases with outputs: a stride larger than the output has fewer) */
    const int64_t ny = MIN_OF(op->p.sh, c->Ho), nx = MIN_OF(op->p.sw, c->Wo), n = ny * nx;
    fc_conv_desc *descs = malloc(sizeof *descs * (size_t)(n ? n : 1));
    const void **packed = malloc(sizeof *packed * (size_t)(n ? n : 1));
    int status = FC_ENOMEM;
    if (descs && packed) {
        for (int64_t i = 0; i < n; i++)
            descs[i] = phase_desc(op, c, residual, interrupt, i / nx, i % nx, &packed[i]);
        status = op->ks->igemm_phases(descs, packed, n, x, y, nthreads);
    }
    free(descs);
    free(packed);
    return status;
}

/* The multiply-adds the phases run. */
static double phase_macs(const fc_conv_op *op, const fc_conv_call *c)
{
    const fc_conv_params *p = &op->p;
    const int64_t ny = MIN_OF(p->sh, c->Ho), nx = MIN_OF(p->sw, c->Wo);
    double macs = 0;
    for (int64_t i = 0; i < ny * nx; i++) {
        const void *packed;
        const fc_conv_desc d = phase_desc(op, c, NULL, NULL, i / nx, i % nx, &packed);
        macs += (double)c->N * d.Ho * d.Wo * d.kh * d.kw * (p->C / p->groups) * p->K;
    }
    return macs;
}

/* A stride-1 transposed call as the call of its direct convolution: the
 * padding (kh - 1) * dh - pad_top before the first row (likewise for the
 * columns); where that is negative, the first *crop_top rows (columns:
 * *crop_left) of x are left out and the padding is 0. */
static fc_conv_call direct_call(const fc_conv_op *op, const fc_conv_call *c, int64_t *crop_top,
                                int64_t *crop_left)
{
    const fc_conv_params *p = &op->p;
    fc_conv_call d = *c;
    const int64_t top = (p->kh - 1) * p->dh - c->pad_top, left = (p->kw - 1) * p->dw - c->pad_left;
    *crop_top = top < 0 ? MIN_OF(-top, c->H) : 0;
    *crop_left = left < 0 ? MIN_OF(-left, c->W) : 0;
    d.pad_top = top < 0 ? 0 : top;
    d.pad_left = left < 0 ? 0 : left;
    d.H -= *crop_top;
    d.W -= *crop_left;
    return d;
}

int fc_conv_create(int isa, int dtype, const fc_conv_params *p, const void *w,
                   fc_weight_strides ws, const void *bias, int flags, int nthreads,
                   fc_conv_op **out)
{
    *out = NULL;
    const fc_kernel_set *ks = fc_kernels(isa, dtype);
    if (!ks || p->C < 0 || p->K < 0 || p->groups < 1 || p->C % p->groups ||
        p->K % p->groups || p->kh < 1 || p->kw < 1 || p->sh < 1 || p->sw < 1 || p->dh < 1 ||
        p->dw < 1)
        return FC_EINVAL;
    fc_conv_op *op = calloc(1, sizeof *op);
    if (!op)
        return FC_ENOMEM;
    op->ks = ks;
    op->itemsize = dtype == FC_F64 ? 8 : 4;
    op->p = *p;
    op->flags = flags;
    op->has_bias = bias != NULL;
    op->transposed = (flags & FC_CONV_TRANSPOSED) != 0;
    op->phases = op->transposed && (p->sh > 1 || p->sw > 1);
    op->depthwise = !op->phases && p->groups > 1 && p->groups == p->C && p->groups == p->K;
    op->transformable[0] = op->transformable[1] = -1;
    const int64_t Cg = p->C / p->groups;
    const int64_t hwio[4] = {p->kh, p->kw, Cg, p->K}, hwio_s[4] = {ws.ty, ws.tx, ws.c, ws.k};
    const int64_t oihw[4] = {p->K, Cg, p->kh, p->kw}, oihw_s[4] = {ws.k, ws.c, ws.ty, ws.tx};
    op->w_hwio = c_ordered(hwio, hwio_s);
    op->w_oihw = c_ordered(oihw, oihw_s);
    int ok = 1;
    if (bias) {
        const size_t n = product(p->K, (int64_t)op->itemsize, 1, 1, &ok);
        op->bias = ok ? malloc(n ? n : 1) : NULL;
        if (!op->bias)
            goto nomem;
        memcpy(op->bias, bias, n);
    }
    if (op->phases) {
        const int status = pack_phases(op, w, ws, nthreads);
        if (status != FC_OK)
            goto nomem;
        op->algorithm = FC_ALGO_IGEMM;
    } else if (op->depthwise) { /* taps (kh, kw, C) */
        const size_t n = product(p->kh, p->kw, p->C, (int64_t)op->itemsize, &ok);
        op->taps = ok ? weights_alloc(n) : NULL;
        if (!op->taps)
            goto nomem;
        char *dst = op->taps;
        for (int64_t t = 0; t < p->kh * p->kw; t++)
            for (int64_t c = 0; c < p->C; c++, dst += op->itemsize)
                memcpy(dst, (const char *)w + (t / p->kw * ws.ty + t % p->kw * ws.tx + c * ws.k) *
                                                  (int64_t)op->itemsize, op->itemsize);
        op->algorithm = FC_ALGO_DEPTHWISE;
    } else if (flags & FC_CONV_ONE_CALL) {
        op->w = w;
        op->ws = ws;
        op->algorithm = FC_ALGO_AUTO; /* chosen per call */
    } else {
        op->w = w; /* (until packed) */
        op->ws = ws;
        if (!packed_weights(op, nthreads))
            goto nomem;
        if ((flags & FC_CONV_WINOGRAD_NOW) && winograd_kernel(op) &&
            MIN_OF(p->C, p->K) >= ks->config.winograd_min_channels &&
            !winograd_weights(op, 2, nthreads))
            goto nomem;
        op->w = NULL; /* a layer keeps no other copy */
        op->algorithm = op->wino[0] && op->wino[0] != WINO_UNUSABLE ? FC_ALGO_WINOGRAD_F2X2_3X3
                        : p->kh * p->kw == 1 && p->sh == 1 && p->sw == 1 ? FC_ALGO_GEMM
                                                                        : FC_ALGO_IGEMM;
    }
    *out = op;
    return FC_OK;
nomem:
    fc_conv_destroy(op);
    return FC_ENOMEM;
}

void fc_conv_destroy(fc_conv_op *op)
{
    if (!op)
        return;
    free(op->bias);
    free(op->taps);
    free(op->packed);
    for (int i = 0; i < 2; i++)
        if (op->wino[i] != WINO_UNUSABLE)
            free(op->wino[i]);
    if (op->sub)
        for (int64_t i = 0; i < op->ncls_y * op->ncls_x; i++)
            free(op->sub[i]);
    free(op->sub);
    free(op->bias_only);
    free(op);
}

int fc_conv_algorithm(const fc_conv_op *op) { return op->algorithm; }

const char *fc_conv_isa(const fc_conv_op *op) { return op->ks->isa; }

static int valid_call(const fc_conv_call *c)
{
    return c->N >= 0 && c->H >= 0 && c->W >= 0 && c->pad_top >= 0 && c->pad_left >= 0 &&
           c->Ho >= 0 && c->Wo >= 0 && c->algorithm >= 0 && c->algorithm < FC_ALGO_COUNT &&
           c->act.kind >= 0 && c->act.kind < FC_ACT_COUNT;
}

/* The plan of a direct convolution's call. */
static int plan_direct(fc_conv_op *op, const fc_conv_call *c, fc_conv_plan *plan)
{
    const fc_conv_params *p = &op->p;
    const int algorithm = c->algorithm == FC_ALGO_AUTO ? choose(op, c) : c->algorithm;
    if (!applies(op, c, algorithm))
        return FC_EINVAL;
    plan->algorithm = algorithm;
    plan->direct_macs = (double)c->N * c->Ho * c->Wo * p->K * p->kh * p->kw * (p->C / p->groups);
    const int m = wino_tile(algorithm); /* (when Winograd runs) */
    plan->macs = algorithm == FC_ALGO_WINOGRAD_F2X2_3X3 || algorithm == FC_ALGO_WINOGRAD_F4X4_3X3
                     ? (double)c->N * ((c->Ho + m - 1) / m) * ((c->Wo + m - 1) / m) * (m + 2) *
                           (m + 2) * p->C * p->K
                     : plan->direct_macs;
    return FC_OK;
}

int fc_conv_plan_call(fc_conv_op *op, const fc_conv_call *c, fc_conv_plan *plan)
{
    if (!valid_call(c))
        return FC_EINVAL;
    const fc_conv_params *p = &op->p;
    if (op->phases) {
        if (c->algorithm != FC_ALGO_AUTO && c->algorithm != FC_ALGO_IGEMM)
            return FC_EINVAL;
        plan->algorithm = FC_ALGO_IGEMM;
        plan->direct_macs = (double)c->N * c->H * c->W * p->K * p->kh * p->kw * (p->C / p->groups);
        plan->macs = phase_macs(op, c);
        return FC_OK;
    }
    if (op->transposed) {
        int64_t crop_top, crop_left;
        const fc_conv_call d = direct_call(op, c, &crop_top, &crop_left);
        return plan_direct(op, &d, plan);
    }
    return plan_direct(op, c, plan);
}

/* A one-pixel result through the dense kernel: the input window at
 * (-pad_top, -pad_left) as rows of R = kh * kw * C values in the order of
 * the weights' rows (HWIO: (ty, tx, c); OIHW: (c, ty, tx)), zero where it
 * lies in the padding; x itself where it is that window. */
static int run_dense(const fc_conv_op *op, const fc_conv_desc *d, const void *x, void *y,
                     int nthreads)
{
    const fc_conv_params *p = &op->p;
    const int64_t R = p->kh * p->kw * p->C;
    const size_t item = op->itemsize;
    const fc_dense_desc dd = {.M = d->N, .R = R, .K = p->K, .w_out_in = !op->w_hwio,
                              .residual = d->residual, .act = d->act, .flush_denormals = d->flush_denormals,
                              .interrupt = d->interrupt};
    if (op->w_hwio && d->pad_top == 0 && d->pad_left == 0 && d->H == p->kh && d->W == p->kw)
        return op->ks->dense(&dd, x, op->w, op->bias, y, nthreads);
    int ok = 1;
    const size_t n = product(d->N, R, (int64_t)item, 1, &ok);
    char *window = ok ? fc_scratch_get(FC_SCRATCH_WINDOW, n) : NULL;
    if (!window)
        return FC_ENOMEM;
    memset(window, 0, n);
    for (int64_t img = 0; img < d->N; img++)
        for (int64_t ty = 0; ty < p->kh; ty++) {
            const int64_t iy = ty - d->pad_top;
            for (int64_t tx = 0; tx < p->kw && iy >= 0 && iy < d->H; tx++) {
                const int64_t ix = tx - d->pad_left;
                if (ix < 0 || ix >= d->W)
                    continue;
                const char *src = (const char *)x + ((img * d->H + iy) * d->W + ix) * p->C * item;
                char *row = window + img * R * item;
                if (op->w_hwio)
                    memcpy(row + (ty * p->kw + tx) * p->C * item, src, p->C * item);
                else
                    for (int64_t c = 0; c < p->C; c++)
                        memcpy(row + ((c * p->kh + ty) * p->kw + tx) * item, src + c * item, item);
            }
        }
    const int status = op->ks->dense(&dd, window, op->w, op->bias, y, nthreads);
    fc_scratch_put(FC_SCRATCH_WINDOW);
    return status;
}

/* A direct convolution's call (or a stride-1 transposed one's, translated). */
static int run_direct(fc_conv_op *op, const fc_conv_call *c, const void *x,
                      const void *residual, void *y, int nthreads, fc_interrupt *interrupt,
                      int *ran)
{
    fc_conv_plan plan;
    int status = plan_direct(op, c, &plan);
    if (status != FC_OK)
        return status;
    const fc_conv_desc d = call_desc(op, c, residual, interrupt);
    int algorithm = plan.algorithm;
    switch (algorithm) {
    case FC_ALGO_DEPTHWISE:
        status = op->ks->dwconv(&d, x, op->taps, op->bias, y, nthreads);
        break;
    case FC_ALGO_DENSE:
        status = run_dense(op, &d, x, y, nthreads);
        break;
    case FC_ALGO_GEMM_IN_PLACE:
        status = op->ks->gemm_in_place(&d, x, op->w, op->bias, y, nthreads);
        break;
    case FC_ALGO_WINOGRAD_F2X2_3X3:
    case FC_ALGO_WINOGRAD_F4X4_3X3: {
        const int m = wino_tile(algorithm);
        const void *u = winograd_weights(op, m, nthreads);
        if (!u)
            return FC_ENOMEM;
        const int result = u == WINO_UNUSABLE ? 1 : op->ks->winograd(&d, m, x, u, op->bias, y,
                                                                      nthreads);
        if (result < 0)
            return -result;
        if (result == 0)
            break;
        /* Inf or NaN met (or weights it cannot use): the direct convolution
         * keeps IEEE semantics the transforms would not */
        algorithm = FC_ALGO_IGEMM;
    }
        /* fall through */
    default: {
        const void *packed = packed_weights(op, nthreads);
        if (!packed)
            return FC_ENOMEM;
        status = op->ks->igemm(&d, x, packed, y, nthreads);
    }
    }
    if (ran)
        *ran = algorithm;
    return status;
}

int fc_conv_run(fc_conv_op *op, const fc_conv_call *c, const void *x, const void *residual,
                void *y, int nthreads, fc_interrupt *interrupt, int *ran)
{
    if (!valid_call(c) || (residual && residual == y))
        return FC_EINVAL;
    if (op->phases) {
        if (c->algorithm != FC_ALGO_AUTO && c->algorithm != FC_ALGO_IGEMM)
            return FC_EINVAL;
        if (ran)
            *ran = FC_ALGO_IGEMM;
        return run_phases(op, c, x, residual, y, nthreads, interrupt);
    }
    if (!op->transposed)
        return run_direct(op, c, x, residual, y, nthreads, interrupt, ran);
    int64_t crop_top, crop_left;
    const fc_conv_call d = direct_call(op, c, &crop_top, &crop_left);
    if (!crop_top && !crop_left)
        return run_direct(op, &d, x, residual, y, nthreads, interrupt, ran);
    /* a padding larger than the kernel's reach: its direct convolution
     * starts inside x, whose rows and columns before that are copied out */
    const int64_t row = d.W * op->p.C * (int64_t)op->itemsize;
    int ok = 1;
    const size_t n = product(d.N, d.H, row, 1, &ok);
    char *xc = ok ? fc_scratch_get(FC_SCRATCH_CROPPED, n) : NULL;
    if (!xc)
        return FC_ENOMEM;
    for (int64_t img = 0; img < d.N; img++)
        for (int64_t iy = 0; iy < d.H; iy++)
            memcpy(xc + (img * d.H + iy) * row,
                   (const char *)x + (((img * c->H + iy + crop_top) * c->W + crop_left) * op->p.C) *
                                         (int64_t)op->itemsize,
                   (size_t)row);
    const int status = run_direct(op, &d, xc, residual, y, nthreads, interrupt, ran);
    fc_scratch_put(FC_SCRATCH_CROPPED);
    return status;
}

int fc_conv_unpack(fc_conv_op *op, void *w, fc_weight_strides ws)
{
    const fc_conv_params *p = &op->p;
    if (op->phases) {
        for (int64_t ty0 = 0; ty0 < op->ncls_y; ty0++)
            for (int64_t tx0 = 0; tx0 < op->ncls_x; tx0++) {
                const fc_conv_desc d = sub_desc(op, ty0, tx0);
                if (!d.kh)
                    continue;
                fc_weight_strides sws;
                char *sw = (char *)sub_weights(op, w, ws, ty0, tx0, &sws);
                op->ks->unpack(&d, op->sub[ty0 * op->ncls_x + tx0], sws, sw);
            }
        return FC_OK;
    }
    if (op->taps) {
        const char *src = op->taps;
        for (int64_t t = 0; t < p->kh * p->kw; t++)
            for (int64_t c = 0; c < p->C; c++, src += op->itemsize)
                memcpy((char *)w + (t / p->kw * ws.ty + t % p->kw * ws.tx + c * ws.k) *
                                       (int64_t)op->itemsize, src, op->itemsize);
        return FC_OK;
    }
    const void *packed = packed_weights(op, 1);
    if (!packed)
        return FC_ENOMEM;
    const fc_conv_desc d = weights_desc(op);
    op->ks->unpack(&d, packed, ws, w);
    return FC_OK;
}
