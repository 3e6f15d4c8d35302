#!/usr/bin/env bash
# The AddressSanitizer run of docs/FUZZING.md in one command: build llama.cpp and the extension
# with -fsanitize=address into their own venv and build folder, then run the fuzzer and a part
# of the test suite against that build with the ASan runtime preloaded.
#
#   tools/asan_run.sh build                 # venv + instrumented build (long: ~25 min on 2 cores)
#   tools/asan_run.sh fuzz [ARGS...]        # python -m tests.fuzz ARGS (default: 300 cases, seed 1;
#                                           # add --no-sandbox to see what the chat sandbox contains)
#   tools/asan_run.sh pytest [FILES...]     # pytest on these test files (default: ASAN_TESTS below)
#   tools/asan_run.sh check                 # is the imported pyllamacy the instrumented one?
#   tools/asan_run.sh all                   # build, check, fuzz, pytest
#
# Environment: PYLLAMACY_ASAN_VENV (default build/asan-venv), PYLLAMACY_ASAN_BUILD_DIR (default
# build/llama.cpp-asan), PYLLAMACY_LLAMA_CPP_DIR (a llama.cpp tree instead of the pinned fetch),
# PYLLAMACY_TEST_MODEL (the SmolLM2 GGUF), PYLLAMACY_JOBS, ASAN_NICE (nice level of the build,
# default 10). The fuzzer and pytest run from a temporary folder, never from the checkout: the
# checkout's pyllamacy/ (uncompiled, or an in-place build without ASan) would shadow the
# instrumented one, and so would PYTHONPATH=<checkout>; only <checkout>/tests goes on the path.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${PYLLAMACY_ASAN_VENV:-$ROOT/build/asan-venv}"
BDIR="${PYLLAMACY_ASAN_BUILD_DIR:-$ROOT/build/llama.cpp-asan}"
ASAN_TESTS_DEFAULT="test_preflight.py test_fuzz.py test_grammar_fairness.py test_core.py
test_lifetime_and_bad_input.py test_tokenizer_vectors.py test_loading.py test_backend_sampling.py"
ASAN_TESTS="${ASAN_TESTS:-$ASAN_TESTS_DEFAULT}"

# -O1: ASan's recommended level, and the instrumented build compiles noticeably faster than at
# -O2; -g1: line tables for the reports without full debug info
SAN="-fsanitize=address -fno-omit-frame-pointer -g1"

build() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q "cython>=3.0,<4" "setuptools>=64" wheel cmake ninja numpy gguf \
        pytest jsonschema
    cd "$ROOT"
    PYLLAMACY_BUILD_DIR="$BDIR" \
    PYLLAMACY_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo \
'-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG' '-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG' \
-DLLAMA_SANITIZE_ADDRESS=ON -DGGML_SANITIZE_ADDRESS=ON" \
    PYLLAMACY_CPU_VARIANTS=x64 PYLLAMACY_TOOLS="" \
    CFLAGS="$SAN" CXXFLAGS="$SAN" LDFLAGS="-fsanitize=address" \
        nice -n "${ASAN_NICE:-10}" "$VENV/bin/pip" install --no-build-isolation --no-deps -v .
}

asan_env() {
    # Python is not instrumented, so the ASan runtime is preloaded; libstdc++ with it, because
    # ASan's __cxa_throw interceptor resolves the real one when it starts, and python does not
    # link libstdc++: without it every C++ exception (a bad GGUF, a bad schema) ends in
    # "AddressSanitizer: CHECK failed: asan_interceptors.cpp ... real___cxa_throw" and an abort
    local asan stdcxx
    asan="$(gcc -print-file-name=libasan.so)"
    stdcxx="$(gcc -print-file-name=libstdc++.so)"
    for f in "$asan" "$stdcxx"; do
        case "$f" in /*) ;; *) echo "gcc -print-file-name found no $f" >&2; exit 2;; esac
    done
    export LD_PRELOAD="$asan $stdcxx"
    # detect_leaks=0: CPython does not free everything at exit; allocator_may_return_null=1:
    # absurd sizes fail as std::bad_alloc (as without ASan) instead of as an ASan report;
    # abort_on_error=1: a report ends the process with SIGABRT, which the fuzz runner records;
    # soft_rss_limit_mb: the fuzz runner's address-space limit (RLIMIT_AS) cannot coexist with
    # ASan's shadow memory, so past 6 GiB resident, malloc returns NULL (MemoryError,
    # std::bad_alloc) instead of the process being OOM-killed (e.g. general.alignment = 2^31
    # makes the fuzzer's own GGUF writer pad tensors to 2 GiB each)
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:symbolize=1:soft_rss_limit_mb=6144}"
    export PYTHONPATH="$ROOT/tests"
    export PATH="$VENV/bin:$PATH"
    RUN_DIR="$(mktemp -d /tmp/pyllamacy-asan-XXXXXX)"
    # kept when it holds something (the fuzz workers' logs), removed when empty
    trap 'rmdir "$RUN_DIR" 2>/dev/null || true' EXIT
    cd "$RUN_DIR"
}

# Refuses to run when the pyllamacy that Python imports is not linked against libasan (the
# checkout's in-place build, or a venv built without the flags): that run would test nothing.
check() {
    python - <<'EOF'
import os, subprocess, sys
import pyllamacy, pyllamacy._llama as L, pyllamacy._chat as C
lib = os.path.join(os.path.dirname(pyllamacy.__file__), "lib")
objs = [L.__file__, C.__file__] + sorted(os.path.join(lib, f) for f in os.listdir(lib))
# the objects' own NEEDED entries (readelf), not ldd: ldd lists LD_PRELOAD (libasan) for anything
def needs_asan(o):
    out = subprocess.run(["readelf", "-d", o], capture_output=True, text=True).stdout
    return any("NEEDED" in l and "libasan" in l for l in out.splitlines())
bad = [o for o in objs if not needs_asan(o)]
print("pyllamacy:", pyllamacy.__file__)
print("cpu variants:", sorted(f for f in os.listdir(lib) if f.startswith("libggml-cpu-")))
if bad:
    sys.exit("not instrumented (libasan not NEEDED): " + ", ".join(bad))
print(f"all {len(objs)} native objects link libasan (NEEDED)")
EOF
}

cmd="${1:-all}"
[ $# -gt 0 ] && shift
case "$cmd" in
    build) build ;;
    check) asan_env; check ;;
    fuzz)
        asan_env; check
        [ $# -gt 0 ] || set -- --cases 300 --seed 1 --jobs 2
        python -m fuzz --timeout 120 --workdir "$RUN_DIR/fuzz" "$@" ;;
    pytest)
        asan_env; check
        files=()
        if [ $# -gt 0 ]; then
            for f in "$@"; do case "$f" in -*) files+=("$f");; /*) files+=("$f");; *) files+=("$ROOT/tests/${f#tests/}");; esac; done
        else
            for f in $ASAN_TESTS; do files+=("$ROOT/tests/$f"); done
            # this harness self-test expects a SIGSEGV; ASan's SEGV handler reports the fault
            # and (abort_on_error=1) ends the process with SIGABRT instead
            files+=(--deselect "tests/test_fuzz.py::test_harness_reports_the_case_that_killed_its_worker")  # rootdir-relative
        fi
        python -m pytest -q -p no:cacheprovider "${files[@]}" ;;
    all)
        "$0" build
        "$0" fuzz
        "$0" pytest ;;
    *) echo "usage: $0 [build|check|fuzz [ARGS]|pytest [FILES]|all]" >&2; exit 2 ;;
esac
