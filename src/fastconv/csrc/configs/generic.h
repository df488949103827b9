/*
 * Portable C: GCC/Clang vector extensions of 16 bytes (SSE2 or NEON width),
 * for any CPU. Tile sizes and thresholds as in avx2.h (see avx512.h for what
 * each value means); not tuned for a particular machine.
 */
#define VBYTES 16
#define MR 6
#define NV 2
#define KC 256
#define KC_GEMM 512
#define MCT 8

#define DENSE_ROWS 8
#define DIRECT_GEMM_MAX_ROWS 512
#define WINOGRAD_MIN_CHANNELS 64
#define WINOGRAD_MIN_TILES 25
#define WINOGRAD_MIN_MACS (1 << 22)
#define WINOGRAD_ONE_CALL_MIN_TILES 196
/* Winograd F(4x4, 3x3) where F(2x2) runs: avx2.h's values, not measured on
 * this ISA. */
#define WINOGRAD_F4_MIN_TILES 25
#define WINOGRAD_F4_ONE_CALL_MIN_TILES 196
#define WINOGRAD_BLOCK_BYTES (512 << 10)
