/*
 * The kernel table of one instruction set and dtype, with its configuration
 * (configs/<isa>.h): what dispatch.c hands the operators.
 */
#include "common.h"

#define DECLARE(ret, fn, ...) INTERNAL ret NAME(fn)(__VA_ARGS__);
DECLARE(int64_t, packed_size, const fc_conv_desc *d)
DECLARE(void, pack, const fc_conv_desc *d, const void *w, fc_weight_strides ws,
        const void *bias, void *packed, int nthreads)
DECLARE(void, unpack, const fc_conv_desc *d, const void *packed, fc_weight_strides ws, void *w)
DECLARE(int, igemm, const fc_conv_desc *d, const void *x, const void *packed, void *y,
        int nthreads)
DECLARE(int, igemm_phases, const fc_conv_desc *descs, const void *const *packed,
        int64_t nphases, const void *x, void *y, int nthreads)
DECLARE(int, gemm_in_place, const fc_conv_desc *d, const void *x, const void *w,
        const void *bias, void *y, int nthreads)
DECLARE(int, dense, const fc_dense_desc *d, const void *x, const void *w, const void *bias,
        void *y, int nthreads)
DECLARE(int64_t, winograd_packed_size, const fc_conv_desc *d, int m)
DECLARE(int, winograd_pack, const fc_conv_desc *d, int m, const void *w, fc_weight_strides ws,
        void *packed, int nthreads)
DECLARE(int, winograd, const fc_conv_desc *d, int m, const void *x, const void *packed,
        const void *bias, void *y, int nthreads)
DECLARE(int, dwconv, const fc_conv_desc *d, const void *x, const void *w, const void *bias,
        void *y, int nthreads)
DECLARE(void, activate, fc_activation act, const void *x, void *y, int64_t n, int flush,
        int nthreads)
DECLARE(int, pool, const fc_pool_desc *d, const void *x, void *y, int nthreads,
        fc_interrupt *interrupt)

const fc_kernel_set CAT3(fc_kernels, DT, ISA) = {
    .isa = STR(ISA),
    .config = {
        .mr = MR,
        .nr = NR,
        .vlen = VLEN,
        .kc = KC,
        .kc_gemm = KC_GEMM,
        .mct = MCT,
        .dense_rows = DENSE_ROWS,
        .direct_gemm_max_rows = DIRECT_GEMM_MAX_ROWS,
        .winograd_min_channels = WINOGRAD_MIN_CHANNELS,
        .winograd_min_tiles = WINOGRAD_MIN_TILES,
        .winograd_min_macs = WINOGRAD_MIN_MACS,
        .winograd_one_call_min_tiles = WINOGRAD_ONE_CALL_MIN_TILES,
        .winograd_f4_min_tiles = WINOGRAD_F4_MIN_TILES,
        .winograd_f4_one_call_min_tiles = WINOGRAD_F4_ONE_CALL_MIN_TILES,
        .winograd_block_bytes = WINOGRAD_BLOCK_BYTES,
    },
    .packed_size = NAME(packed_size),
    .pack = NAME(pack),
    .unpack = NAME(unpack),
    .igemm = NAME(igemm),
    .igemm_phases = NAME(igemm_phases),
    .gemm_in_place = NAME(gemm_in_place),
    .dense = NAME(dense),
    .winograd_packed_size = NAME(winograd_packed_size),
    .winograd_pack = NAME(winograd_pack),
    .winograd = NAME(winograd),
    .dwconv = NAME(dwconv),
    .activate = NAME(activate),
    .pool = NAME(pool),
};
