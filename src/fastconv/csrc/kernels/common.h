/*
 * What every kernel file shares. Each file of kernels/ is compiled six times by
 * setup.py: per dtype (FC_DTYPE_F32 / FC_DTYPE_F64) and per instruction set
 * (FC_TARGET_AVX512 / _AVX2 / _GENERIC), with that ISA's compiler flags and
 * its configuration (configs/<isa>.h). The SIMD code uses GCC/Clang vector
 * extensions, whose width the configuration sets, so one implementation
 * serves every target. NAME(fn) gives each compiled copy its own symbol.
 */
#ifndef FASTCONV_KERNELS_COMMON_H
#define FASTCONV_KERNELS_COMMON_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#elif defined(__aarch64__)
#define HAVE_FPCR 1
#else
#include <fenv.h>
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

#if defined(FC_TARGET_AVX512)
#define ISA avx512
#include "configs/avx512.h"
#elif defined(FC_TARGET_AVX2)
#define ISA avx2
#include "configs/avx2.h"
#elif defined(FC_TARGET_GENERIC)
#define ISA generic
#include "configs/generic.h"
#else
#error "define FC_TARGET_AVX512, FC_TARGET_AVX2 or FC_TARGET_GENERIC"
#endif

#define VLEN ((int64_t)(VBYTES / sizeof(real)))
#define NR (NV * VLEN)

typedef real vec __attribute__((vector_size(VBYTES)));
typedef real_bits vbits __attribute__((vector_size(VBYTES)));
/* Unaligned, alias-safe view used for every vector load and store. */
typedef real uvec __attribute__((vector_size(VBYTES), aligned(sizeof(real)), may_alias));

#define CAT3_(a, b, c) a##_##b##_##c
#define CAT3(a, b, c) CAT3_(a, b, c)
#define NAME(fn) CAT3(fn, DT, ISA)
#define STR_(x) #x
#define STR(x) STR_(x)
/* Functions one kernel file gives another of the same ISA and dtype. */
#define INTERNAL __attribute__((visibility("hidden")))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline vec load(const real *p) { return *(const uvec *)p; }
static inline void store(real *p, vec v) { *(uvec *)p = v; }

/* max(v, 0) that keeps NaN (as PyTorch does) and -0.0: clear lanes < 0. */
static inline vec relu(vec v)
{
    const vec zero = {0};
    return (vec)((vbits)v & ~(vbits)(v < zero));
}

/* The first `lanes` values at p as a vector (the rest zero), and back: the
 * channel tails of C or K values that are not a multiple of VLEN. */
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

/* Every thread of every kernel computes in one floating-point mode, whatever
 * the caller's or the thread's own was, so that results do not depend on who
 * calls or on the thread count: round to nearest, no exception traps, and
 * subnormals flushed (FTZ and DAZ: subnormal operands can slow FMAs down by
 * orders of magnitude) exactly when `flush` says so. fp_enter sets it and
 * returns the thread's previous mode; fp_leave restores that. x86: MXCSR
 * rounding (bits 13-14), exception masks (7-12), FTZ (15) and DAZ (6);
 * AArch64: FPCR RMode (22-23), trap enables (8-12, 15), FZ (24), which
 * flushes inputs and results, and DN (25, NaNs keep their payload). Elsewhere
 * only the rounding is set (fc_flush_denormals_supported() says so). */
typedef struct {
    uint64_t saved;
    int changed;
} fp_mode;

static inline fp_mode fp_enter(int flush)
{
    fp_mode m = {0, 0};
#if defined(HAVE_MXCSR)
    m.saved = _mm_getcsr();
    const uint64_t mode = (m.saved & ~(uint64_t)0xE040u) | 0x1F80u | (flush ? 0x8040u : 0);
    if (mode != m.saved) {
        _mm_setcsr((unsigned)mode);
        m.changed = 1;
    }
#elif defined(HAVE_FPCR)
    __asm__ volatile("mrs %0, fpcr" : "=r"(m.saved));
    const uint64_t mode = (m.saved & ~((3ull << 22) | (3ull << 24) | 0x9F00ull)) |
                          (flush ? 1ull << 24 : 0);
    if (mode != m.saved) {
        __asm__ volatile("msr fpcr, %0" : : "r"(mode));
        m.changed = 1;
    }
#else
    (void)flush;
    m.saved = (uint64_t)fegetround();
    if (m.saved != FE_TONEAREST) {
        fesetround(FE_TONEAREST);
        m.changed = 1;
    }
#endif
    return m;
}

static inline void fp_leave(fp_mode m)
{
    if (!m.changed)
        return;
#if defined(HAVE_MXCSR)
    _mm_setcsr((unsigned)m.saved);
#elif defined(HAVE_FPCR)
    __asm__ volatile("msr fpcr, %0" : : "r"(m.saved));
#else
    fesetround((int)m.saved);
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
    if (__atomic_load_n(&fc_threads_lost_in_fork, __ATOMIC_RELAXED))
        return 1;
    if (nthreads > omp_get_num_procs())
        nthreads = omp_get_num_procs();
    if (nthreads < 1 || work < MIN_PARALLEL_WORK)
        nthreads = 1;
    if (ntasks < nthreads)
        nthreads = (int)(ntasks > 0 ? ntasks : 1);
    if (nthreads > 1 && !__atomic_load_n(&fc_threads_started, __ATOMIC_RELAXED))
        __atomic_store_n(&fc_threads_started, 1, __ATOMIC_RELAXED);
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

/* Whether the run should skip its remaining blocks (fastconv.h:
 * fc_interrupt). Only the calling thread (thread 0 of a region, or the
 * serial caller) polls, on a monotonic clock, so a run shorter than
 * FC_POLL_SECONDS never does; the others read the flag it sets. */
static inline int interrupted(fc_interrupt *it)
{
    if (!it)
        return 0;
    if (__atomic_load_n(&it->stop, __ATOMIC_RELAXED))
        return 1;
    if (thread_id() != 0 || !it->poll || it->checks++ % 8)
        return 0; /* (a block takes microseconds; reading the clock, 35 ns) */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    if (it->next == 0)
        it->next = now + FC_POLL_SECONDS;
    if (now < it->next)
        return 0;
    it->next = now + FC_POLL_SECONDS;
    if (!it->poll(it->ctx))
        return 0;
    __atomic_store_n(&it->stop, 1, __ATOMIC_RELAXED);
    return 1;
}

/* A kernel's status at its end: FC_EINTR when it skipped blocks. */
static inline int run_status(const fc_interrupt *it)
{
    return it && __atomic_load_n(&it->stop, __ATOMIC_RELAXED) ? FC_EINTR : FC_OK;
}

#endif
