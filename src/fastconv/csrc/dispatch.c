/*
 * Run-time selection of the kernels: which instruction sets this build has
 * (setup.py defines FC_HAVE_X86_KERNELS when it compiled the AVX2 and AVX-512
 * variants) and which of them this CPU and OS can run. A new instruction set
 * is one configuration (configs/<isa>.h), its entries in the two tables
 * below, and its detection.
 */
#include "kernels/kernels.h"

#ifdef _OPENMP
#include <omp.h>
#include <pthread.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FC_X86 1
#endif

typedef double (*fma_probe_fn)(int64_t iters, int nthreads);
#define DECLARE_ISA(isa)                                                               \
    extern const fc_kernel_set fc_kernels_f32_##isa, fc_kernels_f64_##isa;             \
    double fma_probe_f32_##isa(int64_t, int), fma_probe_f64_##isa(int64_t, int);
DECLARE_ISA(generic)
#ifdef FC_HAVE_X86_KERNELS
DECLARE_ISA(avx2)
DECLARE_ISA(avx512)
#endif

/* [isa][dtype], NULL where this build has none */
static const fc_kernel_set *const kernel_sets[FC_ISA_COUNT][2] = {
    [FC_ISA_GENERIC] = {&fc_kernels_f32_generic, &fc_kernels_f64_generic},
#ifdef FC_HAVE_X86_KERNELS
    [FC_ISA_AVX2] = {&fc_kernels_f32_avx2, &fc_kernels_f64_avx2},
    [FC_ISA_AVX512] = {&fc_kernels_f32_avx512, &fc_kernels_f64_avx512},
#endif
};
static const fma_probe_fn fma_probes[FC_ISA_COUNT][2] = {
    [FC_ISA_GENERIC] = {fma_probe_f32_generic, fma_probe_f64_generic},
#ifdef FC_HAVE_X86_KERNELS
    [FC_ISA_AVX2] = {fma_probe_f32_avx2, fma_probe_f64_avx2},
    [FC_ISA_AVX512] = {fma_probe_f32_avx512, fma_probe_f64_avx512},
#endif
};

#ifdef FC_X86
static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

fc_cpu_features fc_cpu_detect(void)
{
    fc_cpu_features f = {0};
#ifdef FC_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return f;
    f.sse2 = (d >> 26) & 1;
    const int osxsave = (c >> 27) & 1;
    /* The registers exist only where the OS saves them: XCR0 bits 1-2 for
     * the SSE/AVX state, bits 5-7 for the AVX-512 opmask and upper ZMM. */
    const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    const int os_avx = (xcr0 & 0x6) == 0x6;
    const int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
    f.avx = os_avx && ((c >> 28) & 1);
    f.fma = f.avx && ((c >> 12) & 1);
    if (__get_cpuid_max(0, 0) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f.avx2 = f.avx && ((b >> 5) & 1);
        f.avx512f = os_avx512 && ((b >> 16) & 1);
        f.avx512dq = os_avx512 && ((b >> 17) & 1);
        f.avx512bw = os_avx512 && ((b >> 30) & 1);
        f.avx512vl = os_avx512 && ((b >> 31) & 1);
    }
#endif
    return f;
}

int fc_isa_supported(int isa)
{
    if (isa == FC_ISA_GENERIC)
        return 1;
#ifdef FC_HAVE_X86_KERNELS
    const fc_cpu_features f = fc_cpu_detect();
    if (isa == FC_ISA_AVX2)
        return f.avx2 && f.fma;
    if (isa == FC_ISA_AVX512)
        return f.avx2 && f.fma && f.avx512f && f.avx512dq && f.avx512bw && f.avx512vl;
#endif
    return 0;
}

const fc_kernel_set *fc_kernels(int isa, int dtype)
{
    if (!fc_isa_supported(isa) || (dtype != FC_F32 && dtype != FC_F64))
        return 0;
    return kernel_sets[isa][dtype];
}

int fc_isa_get_config(int isa, int dtype, fc_isa_config *config)
{
    const fc_kernel_set *ks = fc_kernels(isa, dtype);
    if (ks)
        *config = ks->config;
    return ks != 0;
}

double fc_fma_probe(int isa, int dtype, int64_t iters, int nthreads)
{
    if (!fc_kernels(isa, dtype))
        return 0;
    return fma_probes[isa][dtype](iters, nthreads);
}

int fc_flush_denormals_supported(void)
{
#if defined(__x86_64__) || defined(__i386__) || defined(__aarch64__)
    return 1; /* kernels/common.h: fp_enter */
#else
    return 0;
#endif
}

int fc_threads_started, fc_threads_lost_in_fork;

#ifdef _OPENMP
/* GNU OpenMP keeps the worker threads of a process's first multi-threaded
 * region and never learns that a fork left them behind: a child's next
 * region would wait for them forever. So the child of a process that has
 * workers runs single-threaded (kernels/kernels.h, clamp_threads). */
static void after_fork_in_child(void)
{
    if (__atomic_load_n(&fc_threads_started, __ATOMIC_RELAXED))
        __atomic_store_n(&fc_threads_lost_in_fork, 1, __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void watch_forks(void)
{
    pthread_atfork(NULL, NULL, after_fork_in_child);
}
#endif

int fc_single_threaded_after_fork(void)
{
    return __atomic_load_n(&fc_threads_lost_in_fork, __ATOMIC_RELAXED);
}

int fc_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

const char *fc_isa_name(int isa)
{
    static const char *names[FC_ISA_COUNT] = {"generic", "avx2", "avx512"};
    return (isa >= 0 && isa < FC_ISA_COUNT) ? names[isa] : "unknown";
}

const char *fc_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown";
#endif
}

int fc_openmp_version(void)
{
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}
