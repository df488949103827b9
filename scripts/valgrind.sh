#!/usr/bin/env bash
# Valgrind memcheck run of fastconv's compiled code, in one command:
#
#     scripts/valgrind.sh [extra pytest arguments]
#
# Copies this checkout to a temporary directory, builds fastconv there into a
# fresh virtual environment (-O2 -g, no sanitizers) and runs the named part
# of the test suite below under memcheck. Fails on any memcheck error (invalid
# read or write, use of uninitialised memory in a branch or address, bad
# free) and on any block definitely leaked through fastconv's module. Noise
# from CPython and the loader is suppressed by scripts/valgrind-python.supp.
#
# Exit status 77 (and a message) when valgrind is not installed and cannot be
# installed (apt-get, as root); CI treats that as skipped.
set -euo pipefail
# shellcheck source=scripts/_build_copy.sh
source "$(dirname "$0")/_build_copy.sh"

# The named part (memcheck runs Python some 30 times slower): the GEMM path,
# the dense (few-row) kernel and the layers, on every ISA the `isa` fixture
# finds under valgrind (AVX2 and generic: valgrind cannot run AVX-512 and
# hides it from cpuid, which the run checks), plus a sample of conv2d's
# geometry tests: padding, strides, dilation, groups, depthwise, few-channel
# (RGB) inputs, partial tiles, and the float32 Winograd tests, and the
# micro-kernel sweeps and bounds checks. (-k matches module names too:
# "matmul", "dense", "layer", "microkernels" and "core_bounds" select whole
# files.) Less the flush-to-zero tests:
# valgrind does not emulate the MXCSR's FTZ/DAZ modes, so subnormals stay
# subnormal under it. About 4 minutes on 2 cores.
TEST_FILES=(test_matmul.py test_dense.py test_layers.py test_conv2d.py test_winograd.py
            test_microkernels.py test_core_bounds.py test_conv_transpose.py test_fusion.py
            test_activations.py)
SELECT="not torch and not flush and (matmul or dense or layer or microkernels or core_bounds or padding or stride or dilation or groups or depthwise or rgb or tile or (winograd and not f64) or scatter or fusion or residual or fused_into)"

if ! command -v valgrind >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        fc_log "valgrind is not installed: installing it with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq valgrind >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq valgrind >/dev/null 2>&1; } || true
    fi
    if ! command -v valgrind >/dev/null; then
        fc_log "SKIPPED: valgrind is not installed and could not be installed here"
        fc_log "(install it, e.g. 'apt-get install valgrind' as root, and run this again)"
        exit 77
    fi
fi

fc_setup
fc_test_paths "${TEST_FILES[@]}"
fc_venv
fc_build "-O2 -g" ""

logs="$FC_WORK/valgrind"
mkdir -p "$logs"
supp="$FC_ROOT/scripts/valgrind-python.supp"
# Leaks are collected (definite ones, with their allocation stacks) but not
# counted by valgrind itself: CPython and NumPy leave thousands of blocks
# unfreed at exit. The check below fails only on those allocated through
# fastconv's module. PYTHONMALLOC=malloc: every Python object is a malloc
# block that memcheck tracks, rather than a piece of a pymalloc arena.
VALGRIND=(valgrind --tool=memcheck --error-exitcode=1 "--suppressions=$supp"
          --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none
          --num-callers=40 --trace-children=yes "--log-file=$logs/memcheck.%p.log")
export PYTHONMALLOC=malloc
# NumPy's BLAS threads only slow valgrind (which runs one thread at a time).
export OPENBLAS_NUM_THREADS=1

fc_log "checking that no AVX-512 kernel can be chosen under valgrind"
isas="$(cd "$FC_WORK/run" && "${VALGRIND[@]}" "$FC_PY" -c \
    "import fastconv._config as c; print(*c.available_isas())")" || true
if [ -z "$isas" ]; then
    sed '/HEAP SUMMARY/q' "$logs"/memcheck.*.log | tail -n 60
    fc_log "FAILED: fastconv could not be imported under valgrind (its log above)"
    exit 1
fi
fc_log "instruction sets under valgrind: $isas"
if [[ " $isas " == *" avx512 "* ]]; then
    fc_log "FAILED: AVX-512 is offered under valgrind, which cannot run it"
    exit 1
fi

status=0
fc_log "pytest under valgrind memcheck: ${TEST_FILES[*]} -k '$SELECT'"
FC_WRAP=("${VALGRIND[@]}")
fc_pytest "${FC_PATHS[@]}" -k "$SELECT" -q "$@" || status=$?

# Memcheck errors (every process: pytest and the interpreters it starts), and
# definite leaks whose allocation stack passes through fastconv's module: a
# frame in the installed fastconv/_core*.so or in one of its source files.
OURS='fastconv/_core[.]cpython|[(](_core|dispatch|convolution|pooling|pack|igemm|dense|winograd|dwconv|pool|table|fma_probe)[.]c:'
errors=0
for log in "$logs"/memcheck.*.log; do
    n=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
    leaks=$(awk -v ours="$OURS" '/definitely lost in loss record/ {rec = 1; text = ""}
                 rec {text = text $0 "\n"}
                 rec && /^==[0-9]+== *$/ {rec = 0; if (text ~ ours) printf "%s", text}' "$log")
    if [ "${n:-0}" != 0 ] || [ -n "$leaks" ]; then
        errors=1
        echo "---- $log"
        sed '/HEAP SUMMARY/q' "$log" # the errors, as they happened
        printf '%s' "$leaks"
        grep "ERROR SUMMARY" "$log"
    fi
done
fc_finish "$errors" "$status" memcheck "no memcheck errors and no leaks from fastconv"
