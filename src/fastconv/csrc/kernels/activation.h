/*
 * The activations of fastconv.h (fc_activation), on one vector: the one
 * implementation that every kernel's store and the standalone fc_activate
 * (activation.c) run, so that an activation fused into a convolution gives
 * bitwise the result of the same activation applied afterwards. A scalar
 * is run as a vector with one lane in use.
 *
 * NaN stays NaN everywhere (comparisons that are false for NaN select the
 * input). exp is Cephes' (range reduction by ln 2 in two parts, a degree-6
 * polynomial for float, degree 13 for double, scaled by 2^n in two steps so
 * that subnormal results round once); tanh is Cephes' (a polynomial below
 * 0.625 in magnitude, 1 - 2 / (exp(2|x|) + 1) above); sigmoid is
 * exp(-|x|)-based on both sides. Each is within a few units in the last
 * place of the exact result wherever that is a normal number
 * (tests/test_activations.py measures it).
 */
#ifndef FASTCONV_KERNELS_ACTIVATION_H
#define FASTCONV_KERNELS_ACTIVATION_H

#include "common.h"

/* An activation with its parameters as vectors. */
typedef struct {
    int kind;
    vec a, b;
} act_vec;

static inline act_vec act_prepare(fc_activation act)
{
    act_vec v = {act.kind, {0}, {0}};
    v.a += (real)act.a;
    /* hard_sigmoid runs as min(max(v + b / a, 0) * a, 1) (a > 0): with
     * torch's a = 1/6, b = 1/2 that is (v + 3) / 6 to a rounding, exact
     * where it crosses zero, which a * v + b is not */
    v.b += (real)(act.kind == FC_ACT_HARD_SIGMOID ? act.b / act.a : act.b);
    return v;
}

static inline vec vselect(vbits mask, vec yes, vec no)
{
    return (vec)(((vbits)yes & mask) | ((vbits)no & ~mask));
}

static inline vec vmax(vec v, vec lo) { return vselect(v < lo, lo, v); }
static inline vec vmin(vec v, vec hi) { return vselect(v > hi, hi, v); }

static inline vec vexp(vec x)
{
#if defined(FC_DTYPE_F64)
    const real lo = -746, hi = 710, magic = 6755399441055744.0; /* 1.5 * 2^52 */
    const real ln2_hi = 6.93145751953125E-1, ln2_lo = 1.42860682030941723212E-6;
    const int mant = 52, bias = 1023;
#else
    const real lo = -104, hi = 89, magic = 12582912.0f; /* 1.5 * 2^23 */
    const real ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const int mant = 23, bias = 127;
#endif
    const vec zero = {0};
    const vec xc = vmin(vmax(x, zero + lo), zero + hi);
    /* n = round(x / ln 2), exact in the low bits of t (round to nearest:
     * the kernels run in that mode, fp_enter) */
    const vec t = xc * (real)1.44269504088896340736 + magic;
    const vec n = t - magic;
    const vbits ni = (vbits)t - (vbits)(zero + magic);
    vec r = xc - n * ln2_hi;
    r = r - n * ln2_lo;
#if defined(FC_DTYPE_F64)
    vec p = zero + 1.0 / 6227020800.0; /* 1/13! ... 1/2! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
#else
    vec p = zero + 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
#endif
    p = p * r * r + r + 1;
    /* 2^n as 2^(n/2) * 2^(n - n/2): each factor a normal number for every n
     * of the clamped range */
    const vbits n1 = ni >> 1, n2 = ni - n1;
    const vec y = p * (vec)((n1 + bias) << mant) * (vec)((n2 + bias) << mant);
    return vselect(x != x, x, y);
}

static inline vec vtanh(vec x)
{
    const vec zero = {0};
    const vbits neg = x < zero;
    const vec ax = vselect(neg, -x, x);
    /* |x| >= 0.625: 1 - 2 / (exp(2|x|) + 1), Inf at large |x| giving 1 */
    vec big = 1 - 2 / (vexp(ax + ax) + 1);
    big = vselect(neg, -big, big);
    const vec z = x * x;
#if defined(FC_DTYPE_F64)
    const vec P = ((zero - 9.64399179425052238628E-1) * z - 9.92877231001918586564E1) * z -
                  1.61468768441708447952E3;
    const vec Q = ((z + 1.12811678491632931402E2) * z + 2.23548839060100448583E3) * z +
                  4.84406305325125486048E3;
    const vec small = x + x * z * (P / Q);
#else
    vec p = zero - 5.70498872745E-3f;
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    const vec small = p * z * x + x;
#endif
    /* (tanh(-0.0) is -0.0: x + x * z * ... would give +0.0) */
    return vselect(x == zero, x, vselect(ax >= (real)0.625, big, small));
}

/* 1 / (1 + exp(-v)), as exp(v) / (1 + exp(v)) below 0: exp(-v) would
 * overflow there before the result leaves the normal range. */
static inline vec vsigmoid(vec v)
{
    const vec zero = {0};
    const vbits neg = v < zero;
    const vec e = vexp(vselect(neg, v, -v)); /* exp(-|v|) */
    const vec r = 1 / (1 + e);
    return vselect(neg, e * r, r);
}

static inline vec activate(vec v, const act_vec *a)
{
    const vec zero = {0};
    switch (a->kind) {
    case FC_ACT_RELU:
        return relu(v);
    case FC_ACT_CLIP: /* a = low, b = high */
        return vmin(vmax(v, a->a), a->b);
    case FC_ACT_LEAKY_RELU: /* a = slope */
        return vselect(v < zero, v * a->a, v);
    case FC_ACT_SIGMOID:
        return vsigmoid(v);
    case FC_ACT_HARD_SIGMOID: /* clip(a * v + b, 0, 1) (ONNX's alpha, beta; b here b / a) */
        return vmin(vmax(v + a->b, zero) * a->a, zero + 1);
    case FC_ACT_HARD_SWISH: /* v * relu6(v + 3) / 6, as torch computes it */
        return v * vmin(vmax(v + 3, zero), zero + 6) / 6;
    case FC_ACT_SILU:
        return v * vsigmoid(v);
    case FC_ACT_TANH:
        return vtanh(v);
    default:
        return v;
    }
}

/* A scalar through the same code (a channel tail). */
static inline real activate1(real v, const act_vec *a)
{
    vec x = {0};
    x[0] = v;
    return activate(x, a)[0];
}

#endif
