/*
 * AVX2 with FMA: tile sizes and algorithm thresholds (the same for float32
 * and float64: the tile is counted in vectors). What each value means is
 * explained in avx512.h; these were measured with FASTCONV_ISA=avx2 on the
 * Zen 4 machine of bench/RESULTS.md.
 */
#define VBYTES 32
/* 6 pixels x 2 vectors: 12 of the 16 ymm registers hold the tile. */
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
#define WINOGRAD_ONE_CALL_MIN_TILES 400
#define WINOGRAD_BLOCK_BYTES (512 << 10)
