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
/* (measured on a 2-core Zen 3, AVX2, 1 thread, conv2d's first call: in
 * place vs packed in the call, 36 rows 256 -> 256 0.25 vs 0.34 ms, 25 rows
 * 1024 -> 1024 4.6 vs 5.4, 49 rows 512 -> 2048 9.5 vs 7.4, 196 rows
 * 256 -> 1024 3.8 vs 3.0: the strided rows of the weights, read again for
 * every 6 rows of the result, cost more than packing them from about 40
 * rows on; the packed panels are also what conv2d's later calls with the
 * same weights reuse) */
#define DIRECT_GEMM_MAX_ROWS 40
#define WINOGRAD_MIN_CHANNELS 64
#define WINOGRAD_MIN_TILES 25
#define WINOGRAD_MIN_MACS (1 << 22)
#define WINOGRAD_ONE_CALL_MIN_TILES 196
/* Winograd F(4x4, 3x3) instead of F(2x2) where F(2x2) runs and an image has
 * at least this many 4x4 output tiles (a layer), or this many (conv2d, which
 * also pays the 36 transformed panels). Measured on this Zen 3 machine's
 * AVX2 kernels (2026-12-02, float32, batch 1, layers, direct / F(2x2) /
 * F(4x4) GFLOP/s at one thread): 64@56 67 / 73 / 118, 128@28 84 / 127 / 153,
 * 256@56 73 / 118 / 165, 512@28 64 / 123 / 188; 14x14 (16 tiles) a tie
 * (256@14 127 / 127; 512@14 101 / 108); 7x7 (4 tiles: 8x8 outputs for 49)
 * left to F(2x2)'s thresholds, which send it to the direct convolution.
 * conv2d, ms direct / F(2x2) / F(4x4): 28x28 (49 tiles) loses, 128@28 2.95 /
 * 2.66 / 3.29, 512@28 51 / 40 / 72 (the transform of U's 36 panels); 56x56
 * (196 tiles) wins, 64@56 3.58 / 3.37 / 3.42, 128@56 13.0 / 8.7 / 6.9, 256@56
 * 43 / 27 / 25; 64@112 12.2 / 9.9 / 7.3. Both costs scale with C * K: the
 * threshold is in tiles alone. Generic and AVX-512 take the same values. */
#define WINOGRAD_F4_MIN_TILES 25
#define WINOGRAD_F4_ONE_CALL_MIN_TILES 196
#define WINOGRAD_BLOCK_BYTES (512 << 10)
