/*
 * Run-time selection of the kernels: which instruction sets this build has
 * (setup.py defines FC_HAVE_X86_KERNELS when it compiled the AVX2 and AVX-512
 * variants) and which of them this CPU and OS can run.
 */
#include "fastconv.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FC_X86 1
#endif

extern const fc_kernel_set fc_kernels_f32_generic, fc_kernels_f64_generic;
#ifdef FC_HAVE_X86_KERNELS
extern const fc_kernel_set fc_kernels_f32_avx2, fc_kernels_f64_avx2;
extern const fc_kernel_set fc_kernels_f32_avx512, fc_kernels_f64_avx512;
#endif

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
    if (!fc_isa_supported(isa))
        return 0;
    switch (isa) {
#ifdef FC_HAVE_X86_KERNELS
    case FC_ISA_AVX512:
        return dtype == FC_F64 ? &fc_kernels_f64_avx512 : &fc_kernels_f32_avx512;
    case FC_ISA_AVX2:
        return dtype == FC_F64 ? &fc_kernels_f64_avx2 : &fc_kernels_f32_avx2;
#endif
    case FC_ISA_GENERIC:
        return dtype == FC_F64 ? &fc_kernels_f64_generic : &fc_kernels_f32_generic;
    default:
        return 0;
    }
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
