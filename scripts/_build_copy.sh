# shellcheck shell=bash
# Shared steps of scripts/sanitize.sh and scripts/valgrind.sh; sourced, not run.
#
# Each checking script builds fastconv from a copy of this checkout in a
# temporary directory, into a fresh virtual environment of its own, and runs
# pytest from outside that copy (the source's fastconv/ has no compiled
# module, so the installed package must be the one imported). The checkout
# itself and any other environment are never touched.
#
#   fc_setup             make the work directory ($FC_WORK), copy the tree
#                        to $FC_WORK/src (its tests: $FC_TESTS)
#   fc_venv              create $FC_WORK/venv with the build and test deps
#   fc_build CFLAGS LDFLAGS
#                        pip-install the copy with these extra flags
#                        (setup.py's FASTCONV_EXTRA_CFLAGS/_LDFLAGS)
#   fc_module            path of the installed compiled module
#   fc_test_paths NAME...
#                        FC_PATHS: the copy's tests/NAME files that exist
#   fc_pytest ARGS...    run pytest from $FC_WORK/run (under "${FC_WRAP[@]}")
#
# Environment: PYTHON (default python3) makes the venv; KEEP=1 keeps
# $FC_WORK afterwards for inspection.

FC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Test dependencies of the named parts: pytest and hypothesis only (the
# [test] extra's scikit-learn / matplotlib / threadpoolctl serve the demo and
# bench tests, torch the parity tests; none of those run here).
FC_TEST_DEPS=("pytest>=7" "hypothesis>=6")

fc_log() { printf '== %s: %s\n' "$(basename "$0")" "$*"; }

fc_elapsed() { echo "$((SECONDS - FC_START)) s"; }

# Copy the checkout to $1: the files git knows (tracked, and new files that
# are not ignored), so build artefacts (*.so, build/, the generated _core.c)
# never come along; without git, the tree minus those artefacts.
fc_copy_tree() {
    local dest="$1"
    mkdir -p "$dest"
    if git -C "$FC_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$FC_ROOT" && git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
            tar --null -T - -cf -) | tar -C "$dest" -xf -
    else
        tar -C "$FC_ROOT" --exclude=.git --exclude=build --exclude=dist \
            --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.so' \
            --exclude=src/fastconv/_core.c --exclude=.pytest_cache \
            --exclude=.hypothesis --exclude=.benchmarks -cf - . | tar -C "$dest" -xf -
    fi
}

fc_setup() {
    FC_START=$SECONDS
    FC_WORK="$(mktemp -d "${TMPDIR:-/tmp}/fastconv-$(basename "$0" .sh).XXXXXX")"
    if [ "${KEEP:-0}" = 1 ]; then
        fc_log "work directory kept: $FC_WORK"
    else
        # shellcheck disable=SC2064
        trap "rm -rf '$FC_WORK'" EXIT
    fi
    fc_copy_tree "$FC_WORK/src"
    mkdir -p "$FC_WORK/run"
    # shellcheck disable=SC2034 # used by the scripts that source this file
    FC_TESTS="$FC_WORK/src/tests"
    fc_log "copied $FC_ROOT to $FC_WORK/src"
}

fc_venv() {
    "${PYTHON:-python3}" -m venv "$FC_WORK/venv"
    FC_PY="$FC_WORK/venv/bin/python"
    # The build requirements as pyproject.toml's [build-system] lists them.
    local build_deps
    mapfile -t build_deps < <("$FC_PY" - "$FC_WORK/src/pyproject.toml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
section = text.split("[build-system]", 1)[1]
print("\n".join(re.findall(r'"([^"]+)"', re.search(r"requires\s*=\s*\[(.*?)\]", section, re.S).group(1))))
EOF
    )
    fc_log "installing ${build_deps[*]} ${FC_TEST_DEPS[*]}"
    "$FC_PY" -m pip install -q --disable-pip-version-check "${build_deps[@]}" "${FC_TEST_DEPS[@]}"
}

fc_build() {
    local cflags="$1" ldflags="$2" log="$FC_WORK/build.log"
    fc_log "building with FASTCONV_EXTRA_CFLAGS='$cflags' FASTCONV_EXTRA_LDFLAGS='$ldflags'"
    # No build isolation: the venv already has the build requirements.
    if ! FASTCONV_EXTRA_CFLAGS="$cflags" FASTCONV_EXTRA_LDFLAGS="$ldflags" \
        "$FC_PY" -m pip install -v --no-deps --no-build-isolation --disable-pip-version-check \
        "$FC_WORK/src" >"$log" 2>&1; then
        tail -n 60 "$log"
        fc_log "build FAILED (full log above, last 60 lines)"
        exit 1
    fi
    fc_log "built $(fc_module) ($(fc_elapsed) so far)"
}

# Found without importing it (a sanitizer build loads only under LD_PRELOAD).
fc_module() {
    local site
    site="$("$FC_PY" -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")"
    compgen -G "$site/fastconv/_core*.so" | head -n 1
}

# FC_PATHS: the paths of the copy's test files named in $@ (tests/NAME),
# less any this checkout does not have, which is said.
fc_test_paths() {
    FC_PATHS=()
    local f
    for f in "$@"; do
        if [ -f "$FC_TESTS/$f" ]; then
            FC_PATHS+=("$FC_TESTS/$f")
        else
            fc_log "note: tests/$f is not in this checkout, not run"
        fi
    done
}

# FC_WRAP: a command the interpreter runs under (valgrind), if any.
FC_WRAP=()
fc_pytest() {
    (cd "$FC_WORK/run" &&
        "${FC_WRAP[@]}" "$FC_PY" -m pytest -p no:cacheprovider --rootdir "$FC_WORK/src" "$@")
}

# The end of a run: exit 1 if the tool reported anything ($1 != 0: its
# reports are printed above) or a test failed ($2 != 0), else say OK.
# $3 names the tool, $4 is the OK message.
fc_finish() {
    if [ "$1" != 0 ]; then
        fc_log "FAILED: $3 reports above ($(fc_elapsed))"
        exit 1
    fi
    if [ "$2" != 0 ]; then
        fc_log "FAILED: tests failed ($(fc_elapsed))"
        exit 1
    fi
    fc_log "OK: $4 ($(fc_elapsed))"
}
