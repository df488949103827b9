#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer check of fastconv's compiled
# code, in one command:
#
#     scripts/sanitize.sh [extra pytest arguments]
#
# Copies this checkout to a temporary directory, builds fastconv there into a
# fresh virtual environment with every C object (each kernel file once per
# ISA and dtype, the operators, dispatch.c, the Cython module) compiled with
# -fsanitize=address,undefined,
# and runs the named part of the test suite below under the sanitizers. Any
# report fails the run: ASan stops at the first error, and UBSan is built
# with -fno-sanitize-recover so that undefined behaviour aborts the test that
# caused it. Needs gcc (or clang) with its sanitizer runtimes, and PyPI.
set -euo pipefail
# shellcheck source=scripts/_build_copy.sh
source "$(dirname "$0")/_build_copy.sh"

# The named part: every test file that drives the kernels (conv2d, matmul,
# the dense kernel, Winograd F(2x2) and F(4x4), the weights the functions
# keep, layers, the micro-kernel sweeps and forced
# algorithms, the bindings' bounds checks, fc_to_conv, argument errors, input kinds, size
# limits, nn, config/threads/GIL, the hypothesis properties, fork and
# Ctrl-C), less the
# PyTorch parity tests (torch is not installed here). Not run: test_leaks.py
# (it measures resident memory, which ASan's quarantine and shadow memory
# make meaningless), test_scratch.py (it counts page faults, which ASan's
# allocator changes), test_ieee.py (one test insists that a -0.0 reaches the
# activation, which depends on the FMA contraction of the optimised build),
# test_bench.py / test_demo.py (Python-level, need scikit-learn and
# matplotlib) and the torch / Keras parity files. The `isa` fixture of
# tests/conftest.py runs the kernel tests once per instruction set the CPU
# supports (avx512, avx2, generic on an AVX-512 machine); the other tests
# (-k "not isa") run on the best one first, then again with FASTCONV_ISA
# forcing each lower one, less the VGG16 network (40 s on AVX-512 under the
# sanitizers, 2 minutes on AVX2) and the `info` command test (it compares
# with a subprocess that drops FASTCONV_ISA). About 3 minutes in all on
# 2 cores, the build included.
TEST_FILES=(test_conv2d.py test_matmul.py test_dense.py test_winograd.py test_layers.py
            test_microkernels.py test_core_bounds.py test_fc_to_conv.py
            test_errors.py test_inputs.py test_limits.py test_nn.py test_config.py
            test_threads.py test_security.py test_hypothesis.py test_fork.py
            test_interrupt.py test_conv_transpose.py test_activations.py test_fusion.py
            test_winograd_f4.py test_prepared.py)
SELECT="not torch"
SELECT_PER_ISA="not torch and not isa and not vgg16 and not info_command"

SAN="-fsanitize=address,undefined"
# -fsanitize=float-cast-overflow: a float converted to an integer type it
# does not fit is undefined too, but not part of gcc's "undefined" group.
# -fno-wrapv: Python's own CFLAGS (which setuptools passes to every object)
# have -fwrapv, which makes signed overflow defined and so turns UBSan's
# signed-integer-overflow check off; the kernels must not rely on it.
CFLAGS="$SAN -fsanitize=float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow"
CFLAGS+=" -fno-omit-frame-pointer -fno-wrapv -g -O1"

fc_setup
fc_test_paths "${TEST_FILES[@]}"
fc_venv
fc_build "$CFLAGS" "$SAN"

# The flags reached every kernel object, and the module links both runtimes.
libs="$(ldd "$(fc_module)")"
kernels=$(grep -c -- "csrc/kernels/[a-z_]*\.c.*-fsanitize=address,undefined" "$FC_WORK/build.log" || true)
expected=$((6 * $(find "$FC_WORK/src/src/fastconv/csrc/kernels" -name '*.c' | wc -l)))
if [ "$kernels" -lt "$expected" ] || [[ "$libs" != *libasan* ]] || [[ "$libs" != *libubsan* ]]; then
    fc_log "the sanitizer flags did not reach the build ($kernels of $expected kernel objects; ldd: $libs)"
    exit 1
fi
# CPython is not built with ASan, so the runtime the module links is preloaded
# (ASan must come first among the libraries).
libasan="$(awk '$1 ~ /^libasan/ {print $3}' <<<"$libs")"

reports="$FC_WORK/reports"
mkdir -p "$reports"
# detect_leaks=0: CPython and NumPy keep allocations alive until exit (interned
# objects, caches, module state), which LeakSanitizer would report by the
# thousand; leaks have tests of their own. allocator_may_return_null=1: an
# impossible allocation returns NULL as glibc's malloc does (the code must
# then raise MemoryError) rather than being an ASan error. ASan writes its
# reports to files, so that one from a subprocess (tests run `python -c ...`)
# cannot be lost in captured output: any file there fails the run. UBSan
# (whose log_path the combined gcc runtime ignores) prints to stderr, which
# pytest leaves alone (--capture=sys), and aborts, which fails the run too
# (in a subprocess: its exit status, which those tests check).
export LD_PRELOAD="$libasan"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1"
# Python objects through malloc too, so ASan sees them.
export PYTHONMALLOC=malloc

status=0
run() { # run SELECT [VAR=value...]: the named part, with -k SELECT
    local select="$1"
    shift
    fc_log "pytest under ASan+UBSan ${*:-(default ISA)}: ${TEST_FILES[*]} -k '$select'"
    (
        # shellcheck disable=SC2163 # "$@" are VAR=value words to export
        [ $# = 0 ] || export "$@"
        # (-m: the slow tests too, VGG16 among them; -k leaves it out below)
        fc_pytest "${FC_PATHS[@]}" -k "$select" -m "slow or not slow" -q --capture=sys \
            "${EXTRA[@]}"
    ) || status=1
}
EXTRA=("$@")
run "$SELECT"
for isa in $(cd "$FC_WORK/run" && "$FC_PY" -c "import fastconv._config as c; print(*c.available_isas()[1:])"); do
    run "$SELECT_PER_ISA" FASTCONV_ISA="$isa"
done

# A report is an "ERROR:"; the log files may also hold warnings that are
# not, such as "failed to allocate" for the impossible sizes that the limit
# tests ask for (returned as NULL, see allocator_may_return_null).
failed=0
for f in "$reports"/*; do
    [ -e "$f" ] || continue
    if grep -q "ERROR:" "$f"; then
        echo "---- $f"
        cat "$f"
        failed=1
    else
        fc_log "$(basename "$f"): $(wc -l <"$f") warning line(s), no error, e.g.$(head -n 1 "$f" | sed 's/^==[0-9]*==/ /')"
    fi
done
fc_finish "$failed" "$status" sanitizer "no ASan/UBSan reports"
