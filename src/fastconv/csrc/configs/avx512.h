/*
 * AVX-512 (AVX512F/DQ/BW/VL with AVX2 and FMA): tile sizes and algorithm
 * thresholds, the same for float32 and float64 (the tile is counted in
 * vectors). Measured on the 2-core AMD EPYC Zen 4 of bench/RESULTS.md.
 *
 * A configuration defines: VBYTES (bytes per vector), the register tile
 * MR x NV vectors, the reduction blocks KC / KC_GEMM, MCT, and the
 * thresholds the operator reads (fc_isa_config in kernels/kernels.h).
 */
#define VBYTES 64
/* 6 output pixels x 4 vectors of output channels: 24 of the 32 registers
 * hold the tile. With only 6 input rows per tile the broadcasts stay few and
 * the rows' cache lines never contend for one L1 set (5-40% faster than
 * 12 x 2). */
#define MR 6
#define NV 4
/* Input channels per reduction block of a convolution with several taps
 * (a block of packed weights, taps * KC * NR, stays in L1/L2), and of a GEMM
 * (one tap): 512 measured 1-4% faster on 2048^3 and ResNet's 1x1 layers,
 * while 3x3 layers with 512 channels lost 2% with it. */
#define KC 256
#define KC_GEMM 512
/* Register tiles per task: the block of input rows a thread keeps in cache
 * while it sweeps every panel of the weights. */
#define MCT 8

/* Algorithm thresholds (read by the operator through fc_isa_config). */
/* Rows of x the dense kernel serves per pass over the weights: up to this
 * many rows (batch-1 fully-connected layers, and the convolutions whose
 * kernel covers their whole input), a one-call operator streams its weights
 * in place through it. */
#define DENSE_ROWS 8
/* A GEMM with fewer rows reads its weights in place instead of packing them
 * (1 thread: 49x2048x512 66 -> 86 GFLOP/s in place, while 1024^3 drops
 * 100 -> 93 and 2048^3 99 -> 75 as the strided rows are read again). */
#define DIRECT_GEMM_MAX_ROWS 512
/* Winograd F(2x2, 3x3): at least this many input and output channels,
 * 2x2 output tiles and multiply-adds of the direct convolution per image
 * (per image, so that an image's result does not depend on its batch), and
 * for weights that serve one call (conv2d, which also pays their transform)
 * this many tiles per image. Measured with bench/winograd_thresholds.py
 * (bench/RESULTS.md, 2026-12-01), layers against the direct convolution,
 * 1 / 2 threads: 32 channels never paid (0.7-1.0x); 64 from 14x14 (49
 * tiles, 1.11x / 1.05x; 10x10: 1.03x / 0.97x); 128 and 256 from 10x10 (25
 * tiles, 1.23-1.55x); 512 on 7x7 (16 tiles) 1.08x / 0.73x, on 10x10 1.40x /
 * 1.04x. conv2d: 1.13-1.46x from 784 tiles at one thread, and at 196 tiles
 * 1.05-1.29x at one thread but 0.92-1.08x at two, where the threshold
 * was 400 until conv2d kept the weights it sees again (2026-12-02): a
 * second call with the same weights reuses the transform, and at 196
 * tiles it then runs 1.5-2x faster than the direct convolution, so conv2d
 * now takes Winograd from 196 tiles too (28x28). Those runs were on the
 * AVX2 kernels of a Zen 3 machine (no AVX-512 was at hand): AVX-512 takes
 * the same values until it is measured. */
#define WINOGRAD_MIN_CHANNELS 64
#define WINOGRAD_MIN_TILES 25
#define WINOGRAD_MIN_MACS (1 << 22)
#define WINOGRAD_ONE_CALL_MIN_TILES 196
/* Winograd F(4x4, 3x3) where F(2x2) runs: avx2.h's values, not measured on
 * this ISA. */
#define WINOGRAD_F4_MIN_TILES 25
#define WINOGRAD_F4_ONE_CALL_MIN_TILES 196
/* Transformed inputs of a block of tiles (16 x tiles x channels) a thread
 * keeps in cache between the transforms and the 16 products. */
#define WINOGRAD_BLOCK_BYTES (512 << 10)
