#!/bin/bash
# GPU proof on the lent H100, in two calls made back to back while the machine stays warm
# (state lives in /tmp/w, which survives between warm calls; the repo copy's ignored folders
# do not). Prepared here by packaging/device/prepare.sh.
#
#   call 1: bash packaging/device/run_gpu_proof.sh build
#           carry: .device/core-src.tar.xz .device/llama.cpp-trim.tar.xz .device/lcp-src.tar.xz
#                  .device/whl .device/m1
#     - core wheel (python build_backends.py cpu) and CUDA wheel (python build_backends.py cuda
#       --cuda-arch 90) built in parallel at -j16, from a snapshot of the committed tree
#     - llama-cpp-python 0.3.36 (CUDA, same llama.cpp tree) started in the background (setsid)
#     - both wheels installed into a clean --target folder; `pyllamacy info`
#     - the 1B-shaped random model generated (gguf) and quantized to Q4_0
#   call 2: bash packaging/device/run_gpu_proof.sh test   (then `bench`)
#           carry: .device/whl .device/m2
#     - the real SmolLM2-135M Q4_1 rejoined (it travels in two halves: 64 MiB limit per call)
#     - tests/test_backends.py (GPU subset) against the installed wheels
#     - benchmark: pyllamacy vs llama-bench (CUDA) vs llama-cpp-python (CUDA), both models
#   or, right after call 1: bash packaging/device/run_gpu_proof.sh lora  (LoRA on the GPU)
#   call 3: bash packaging/device/run_gpu_proof.sh serve
#     - benchmarks/server_bench.py: pyllamacy's server vs llama-server vs llama-cpp-python's,
#       16 slots, all layers on the GPU; then both batching servers with backend sampling
#   or, right after a `build` with MAKE_8B=1 SKIP_1B=1: bash packaging/device/run_gpu_proof.sh fit
#     - issue 15: n_gpu_layers="auto" on the 8B shape with a margin for about half its layers,
#       then none; pyllamacy.estimate against nvidia-smi (packaging/device/fit_proof.py)
#   call 4: bash packaging/device/run_gpu_proof.sh prefill   (after `test`: needs the builds and
#           smol.gguf; carry .device/m2 too if `test` did not run on this machine)
#     - the 8B-shaped random model (Llama-3.1-8B dims, SmolLM2 vocabulary) written and quantized
#       to Q4_0, unless an earlier call left it in /tmp/w
#     - benchmarks/server_bench.py --workload prefill: 16 clients, one streamed chat request
#       each with its own ~1,500-token prompt and 128 generated tokens, 16 slots, all layers on
#       the GPU, pyllamacy's server vs llama-server, 8B shape then SmolLM2 (PREFILL_MODELS
#       picks); results in $OUT/prefill-*.txt (table, then the end of both servers' logs) and
#       .json (every request)
set -u
STAGE=${1:?build or test}
R=$(pwd)
W=/tmp/w
OUT=${OUT:-/tmp/out}
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1
CUDA_ARGS="-DCUDA_cuda_driver_LIBRARY=/usr/local/nvidia/lib64/libcuda.so.1 -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc"
# the image sets CC/CXX to /opt/gcc wrappers for CMake while setuptools links the extension
# with the system g++: mixing them crashed std::regex in the tokenizer (seen 2026-11-22).
# One compiler (the system's) for llama.cpp, the extension, the CUDA host code and llama-cpp-python.
export CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

make_lcp_venv() {
    # python3 there is itself a venv (/opt/torch/.venv): --system-site-packages would not see
    # its packages (scikit-build-core, numpy, jinja2), a .pth file does, also under python -I
    rm -rf "$W/lcpvenv"; python3 -m venv "$W/lcpvenv"
    python3 -c 'import site; print(site.getsitepackages()[0])' > \
        "$W/lcpvenv/lib/python3.12/site-packages/image-site.pth"
    "$W/lcpvenv/bin/python" -m pip install -q --no-index --no-deps "$R"/.device/whl/diskcache-*.whl
}
start_lcp() {
    rm -f "$W/lcp-build.rc"
    setsid nohup bash "$W/lcp-build.sh" > /dev/null 2>&1 < /dev/null &
    say "llama-cpp-python build started in the background"
}
build_core() {
    # the image's Cython lacks libc/stdbool.pxd: a newer one travels as a wheel
    python3 -m pip install -q --no-index --no-deps --target "$W/cy" "$R"/.device/whl/cython-*.whl
    # the image's CMake picks /opt/gcc (CC/CXX) while setuptools links with the system g++:
    # one compiler for both, or libstdc++ copies mix and std::regex crashes in the tokenizer
    export LDSHARED="$CXX -shared"
    ( cd "$W/src" && PYTHONPATH=$W/cy PYLLAMACY_JOBS=16 PYLLAMACY_BUILD_DIR=$W/b/core \
      PYLLAMACY_TOOLS=llama-bench,llama-quantize,llama-simple,llama-server,llama-batched-bench \
      python3 build_backends.py cpu --dist "$W/dist" > "$W/build-core.log" 2>&1; echo $? > "$W/core.rc" )
    say "core build rc=$(cat $W/core.rc)"; tail -n 3 "$W/build-core.log"
}
# the core and CUDA builds run in their own session (setsid), so that a call ending at its time
# limit does not kill them: the next call waits for their rc files
start_builds() {
    rm -f "$W/core.rc" "$W/cuda.rc"
    # a copy: the repo copy may be replaced by the next call while this one still runs
    cp "$R/packaging/device/run_gpu_proof.sh" "$W/run_gpu_proof.sh"
    (cd "$R" && setsid nohup bash "$W/run_gpu_proof.sh" _builds > "$W/builds.log" 2>&1 < /dev/null &)
    say "core + CUDA builds started in the background"
}
wait_builds() {   # $1: seconds at most; 0 when both are done
    # a fresh machine (the last one went back when idle): nothing to wait for, run `build`
    [ -d "$W/src" ] || { say "no build on this machine (a fresh one?): run the build stage first"; return 1; }
    for i in $(seq 1 "$1"); do
        [ -f "$W/core.rc" ] && [ -f "$W/cuda.rc" ] && break; sleep 1
    done
    [ -f "$W/core.rc" ] && [ -f "$W/cuda.rc" ] || { say "builds still running"; return 1; }
    say "core rc=$(cat $W/core.rc) cuda rc=$(cat $W/cuda.rc)"
    tail -n 3 "$W/build-core.log" "$W/build-cuda.log"
    cp "$W/build-core.log" "$W/build-cuda.log" "$OUT/" 2>/dev/null
    return 0
}
after_builds() {
    [ -f "$W/after.done" ] && return 0
    ls -la "$W/dist"
    # llama-bench and llama-server find backend modules in their own folder
    cp "$W/b/backend-cuda13/bin/libggml-cuda.so" "$W/b/core/bin/" 2>/dev/null
    ls "$W/b/core/bin"
    # clean target: core + CUDA wheels only; CUDA runtime + cuBLAS come from the nvidia-* packages
    rm -rf "$W/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$W"/dist/*.whl
    (cd "$W" && PYTHONPATH=$W/site python3 -m pyllamacy info 2>&1 | tee "$OUT/info.txt")
    # 1B-shaped random model (SmolLM2 tokenizer), Q4_0 (SKIP_1B=1: not needed this time)
    [ "${SKIP_1B:-0}" = 1 ] && { touch "$W/after.done"; return 0; }
    say "making the 1B-shaped model"
    PYTHONPATH=$W/gguf:$W/src python3 "$W/src/packaging/device/make_models.py" random \
        "$W/smollm2-template.gguf" "$W/r1b-f16.gguf" --shape 1b && \
    "$W/b/core/bin/llama-quantize" "$W/r1b-f16.gguf" "$W/r1b-q4_0.gguf" q4_0 > "$OUT/quantize.log" 2>&1
    rm -f "$W/r1b-f16.gguf"; ls -la "$W"/*.gguf
    touch "$W/after.done"
}
# the 8B shape that `build` wrote with MAKE_8B=1, quantized to Q4_0 once
quantize_8b() {
    if [ ! -f "$W/r8b-q4_0.gguf" ] && [ -f "$W/r8b-f16.gguf" ]; then
        "$W/b/core/bin/llama-quantize" "$W/r8b-f16.gguf" "$W/r8b-q4_0.gguf" q4_0 \
            > "$OUT/quantize-8b.log" 2>&1
        rm -f "$W/r8b-f16.gguf"; ls -la "$W"/*.gguf
    fi
}
# OLD_REF (prepare.sh) carries .device/old-src.tar.xz: pyllamacy/ and pyproject.toml of an
# earlier commit. Its wheel is built against the same llama.cpp build (only the Cython and
# Python parts differ: the llama.cpp libraries are up to date) and installed with the same CUDA
# wheel into $W/site-old, for an A/B of the two in one call.
build_old() {
    [ -f "$R/.device/old-src.tar.xz" ] || return 0
    [ -d "$W/site-old" ] && return 0
    say "building the earlier commit's extension against the same llama.cpp build"
    python3 -m pip install -q --no-index --no-deps --target "$W/cy" "$R"/.device/whl/cython-*.whl
    export LDSHARED="$CXX -shared"
    rm -rf "$W/new-parts"; mkdir -p "$W/new-parts" "$W/dist-old"
    mv "$W/src/pyllamacy" "$W/src/pyproject.toml" "$W/new-parts/"
    [ -d "$W/src/build" ] && mv "$W/src/build" "$W/new-parts/"
    tar -xJf "$R/.device/old-src.tar.xz" -C "$W/src"
    ( cd "$W/src" && PYTHONPATH=$W/cy PYLLAMACY_JOBS=16 PYLLAMACY_BUILD_DIR=$W/b/core \
      PYLLAMACY_TOOLS=llama-bench,llama-quantize,llama-simple,llama-server,llama-batched-bench \
      python3 build_backends.py cpu --dist "$W/dist-old" > "$W/build-old.log" 2>&1; echo $? > "$W/old.rc" )
    rm -rf "$W/src/pyllamacy" "$W/src/pyproject.toml" "$W/src/build"
    mv "$W/new-parts/"* "$W/src/"
    say "old build rc=$(cat $W/old.rc)"; tail -n 3 "$W/build-old.log"
    [ "$(cat $W/old.rc)" = 0 ] || { tail -n 30 "$W/build-old.log"; return 0; }
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$W/site-old" \
        "$W"/dist-old/pyllamacy-*.whl "$W"/dist/pyllamacy_cuda13-*.whl
    (cd "$W" && PYTHONPATH=$W/site-old python3 -c 'import pyllamacy, sys; print("old:", pyllamacy.__file__, pyllamacy.build_info().get("git_commit"))')
}
# the servers' Python packages (fastapi, uvicorn, pydantic, ...), for both servers: carried with
# `build` or, when that call's carry is full (64 MiB), with the first server stage
install_srv() {
    [ -d "$W/srvsite" ] && return 0
    ls "$R"/.device/srv/*.whl > /dev/null 2>&1 || { say "no .device/srv carried yet"; return 0; }
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$W/srvsite" "$R"/.device/srv/*.whl
}
install_wheels() {
    rm -rf "$W/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$W"/dist/*.whl
    (cd "$W" && PYTHONPATH=$W/site python3 -m pyllamacy info 2>&1 | tee "$OUT/info.txt")
}
bench() {
    LCP="--no-llama-cpp-python"
    [ "$(cat $W/lcp-build.rc 2>/dev/null)" = 0 ] && LCP="--llama-cpp-python-python $W/lcpvenv/bin/python"
    for m in smol.gguf r1b-q4_0.gguf; do
        say "bench $m ($LCP)"
        (cd "$W" && PYTHONPATH=$W/site python3 -m pyllamacy bench -m "$W/$m" --ngl 99 -r 3 \
            --inner-reps 5 -t 8 --llama-bench "$W/b/core/bin/llama-bench" $LCP --markdown 2>&1 \
            | tee "$OUT/bench-$m.md")
    done
}

if [ "$STAGE" = build ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv | tee "$OUT/gpu.txt"
    nproc; python3 --version; nvcc --version | tail -2
    rm -rf "$W"/*; mkdir -p "$W/src/vendor" "$W/dist"
    tar -xJf "$R/.device/core-src.tar.xz" -C "$W/src"
    tar -xJf "$R/.device/llama.cpp-trim.tar.xz" -C "$W/src/vendor"
    cp "$R"/.device/m1/* "$W/"
    python3 -m pip install -q --no-index --no-deps --target "$W/gguf" "$R"/.device/whl/gguf-*.whl
    install_srv
    cp "$R/.device/whl/smollm2-template.gguf" "$W/"

    # llama-cpp-python: its own CMake build (not GGML_BACKEND_DL), CUDA sm_90, same llama.cpp
    tar -xJf "$R/.device/lcp-src.tar.xz" -C "$W"
    cp -a "$W/src/vendor/llama.cpp" "$W/llama_cpp_python-0.3.36/vendor/"
    make_lcp_venv
    cat > "$W/lcp-build.sh" <<EOF
cd $W
export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $CUDA_ARGS"
export CMAKE_BUILD_PARALLEL_LEVEL=16
nice -n 15 $W/lcpvenv/bin/pip install -v --no-deps --no-build-isolation $W/llama_cpp_python-0.3.36 > $W/lcp-build.log 2>&1
echo \$? > $W/lcp-build.rc
EOF
    # SKIP_LCP=1: no llama-cpp-python this time (its numbers come from an earlier call)
    [ "${SKIP_LCP:-0}" = 1 ] || start_lcp

    start_builds
    # MAKE_8B=1: write the 8B-shaped model while the builds run (it needs llama-quantize, so
    # only the F16 file here; `issue11` quantizes it)
    if [ "${MAKE_8B:-0}" = 1 ]; then
        say "writing the 8B-shaped model (F16) while the builds run"
        PYTHONPATH=$W/gguf:$W/src python3 "$W/src/packaging/device/make_models.py" random \
            "$W/smollm2-template.gguf" "$W/r8b-f16.gguf" --shape 8b --pool
        say "8B F16 written"
    fi
    wait_builds ${BUILD_WAIT_S:-500} && after_builds
    say "lcp build: $(tail -c 300 $W/lcp-build.log | tr '\n' ' ')"
    say "build stage done"
    exit 0
fi
if [ "$STAGE" = _builds ]; then
    cd "$W/src"
    export PYLLAMACY_JOBS=16
    build_core &
    p1=$!
    ( PYLLAMACY_CMAKE_ARGS="$CUDA_ARGS" \
      python3 build_backends.py cuda --cuda-arch 90 --build-root "$W/b" --dist "$W/dist" --no-repair \
      > "$W/build-cuda.log" 2>&1; echo $? > "$W/cuda.rc" ) &
    wait $p1; wait
    exit 0
fi

if [ "$STAGE" = test ]; then
    cd "$W"
    if [ "${SKIP_LCP:-0}" != 1 ] && [ "$(cat $W/lcp-build.rc 2>/dev/null)" != 0 ] && \
            ! pgrep -f lcp-build.sh > /dev/null; then
        tail -n 5 "$W/lcp-build.log"; make_lcp_venv; start_lcp
    fi
    wait_builds ${BUILD_WAIT_S:-400} || exit 1
    after_builds
    cat "$W/smol.part-aa" "$R"/.device/m2/smol.part-a[b-z] > "$W/smol.gguf"
    (cd "$W" && sed "s#\.models/SmolLM2-135M-Instruct.Q4_1.gguf#smol.gguf#" "$R/.device/m2/smol.sha256" | sha256sum -c -) || exit 1
    export PYTHONPATH=$W/site
    # the tests read build_backends.py and pyproject.toml from the folder above tests/
    rm -rf "$W/tr"; mkdir -p "$W/tr/vendor"
    cp -a "$W/src/tests" "$W/src/build_backends.py" "$W/src/pyproject.toml" "$W/src/packaging" \
          "$W/src/buildtools" "$W/tr/"
    cp "$W/src/vendor/llama.cpp.json" "$W/tr/vendor/"
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv
    say "GPU tests"
    PYLLAMACY_TEST_MODEL=$W/smol.gguf python3 -m pytest -q -s -p no:cacheprovider \
        --rootdir "$W/tr" "$W/tr/tests/test_backends.py" "$W/tr/tests/test_backend_sampling.py" \
        "$W/tr/tests/test_engine.py" 2>&1 | tee "$OUT/gpu-tests.log"
    say "no driver: hide the GPU from the CUDA backend"
    CUDA_VISIBLE_DEVICES="" python3 -m pyllamacy info 2>&1 | grep -A30 "backend modules" | tee "$OUT/info-no-gpu.txt"

    say "lcp rc=$(cat $W/lcp-build.rc 2>/dev/null || echo 'still building') (bench: next call)"
    say "test stage done"
    exit 0
fi
if [ "$STAGE" = lora ]; then
    # LoRA on the GPU (tests/test_lora.py's GPU test): needs only the tokenizer of the real
    # model, so it runs right after the build call, on the metadata-only template
    wait_builds ${BUILD_WAIT_S:-400} || exit 1
    after_builds
    rm -rf "$W/tr"; mkdir -p "$W/tr"
    cp -a "$W/src/tests" "$W/tr/"
    PYTHONPATH=$W/site:$W/gguf PYLLAMACY_TEST_MODEL=$W/smollm2-template.gguf \
        python3 -m pytest -q -s -p no:cacheprovider --rootdir "$W/tr" \
        "$W/tr/tests/test_lora.py" -k gpu 2>&1 | tee "$OUT/lora-tests.log"
    exit 0
fi
if [ "$STAGE" = bench ]; then
    # call 3 (optional): once llama-cpp-python has finished building in the background
    [ "${SKIP_LCP:-0}" = 1 ] || for i in $(seq 1 240); do [ -f "$W/lcp-build.rc" ] && break; sleep 1; done
    say "lcp rc=$(cat $W/lcp-build.rc 2>/dev/null || echo 'still building')"; tail -n 3 "$W/lcp-build.log"
    cp "$W/lcp-build.log" "$OUT/" 2>/dev/null
    bench
    exit 0
fi
if [ "$STAGE" = serve ]; then
    # call 3: aggregate tokens/s of the three servers with 1, 4, 16 clients, all layers on the GPU
    install_srv
    export PYTHONPATH=$W/site:$W/srvsite
    LCPPY=/nonexistent
    [ "$(cat $W/lcp-build.rc 2>/dev/null)" = 0 ] && LCPPY=$W/lcpvenv/bin/python
    cd "$W"
    nvidia-smi --query-gpu=name,memory.used --format=csv
    say "server bench (sampling on the CPU, both servers' default)"
    python3 "$W/src/benchmarks/server_bench.py" --model "$W/smol.gguf" --ngl -1 --slots 16 \
        --threads 8 --duration ${SERVE_S:-10} --max-tokens 64 --llama-server "$W/b/core/bin/llama-server" \
        --lcp-python "$LCPPY" 2>&1 | tee "$OUT/server-bench.txt"
    say "server bench, backend sampling (pyllamacy --backend_sampling, llama-server -bs)"
    python3 "$W/src/benchmarks/server_bench.py" --model "$W/smol.gguf" --ngl -1 --slots 16 \
        --threads 8 --duration ${SERVE_S:-10} --max-tokens 64 --llama-server "$W/b/core/bin/llama-server" \
        --backend-sampling --only pyllamacy,llama-server 2>&1 | tee "$OUT/server-bench-bs.txt"
    cp /tmp/server_bench_*.log "$OUT/" 2>/dev/null
    say "serve stage done"
    exit 0
fi
if [ "$STAGE" = prefill ]; then
    # call 4: the prefill-heavy serving workload (issue 11), both servers on the same settings
    wait_builds ${BUILD_WAIT_S:-400} || exit 1
    after_builds
    install_srv
    cd "$W"
    if [ ! -f "$W/smol.gguf" ] && [ -f "$R/.device/m2/smol.sha256" ]; then
        cat "$W/smol.part-aa" "$R"/.device/m2/smol.part-a[b-z] > "$W/smol.gguf"
        sed "s#\.models/SmolLM2-135M-Instruct.Q4_1.gguf#smol.gguf#" "$R/.device/m2/smol.sha256" \
            | sha256sum -c - || exit 1
    fi
    if [ ! -f "$W/r8b-q4_0.gguf" ]; then
        say "making the 8B-shaped model"
        PYTHONPATH=$W/gguf:$W/src python3 "$W/src/packaging/device/make_models.py" random \
            "$W/smollm2-template.gguf" "$W/r8b-f16.gguf" --shape 8b --pool && \
        "$W/b/core/bin/llama-quantize" "$W/r8b-f16.gguf" "$W/r8b-q4_0.gguf" q4_0 \
            > "$OUT/quantize-8b.log" 2>&1
        rm -f "$W/r8b-f16.gguf"; ls -la "$W"/*.gguf
    fi
    export PYTHONPATH=$W/site:$W/srvsite
    nvidia-smi --query-gpu=name,memory.used --format=csv
    for m in ${PREFILL_MODELS:-r8b-q4_0.gguf smol.gguf}; do
        [ -f "$W/$m" ] || { say "no $m"; continue; }
        say "prefill-heavy serving, $m"
        python3 "$W/src/benchmarks/server_bench.py" --workload prefill --model "$W/$m" \
            --ngl -1 --slots 16 --clients 16 --threads 8 --prompt-tokens 1500 --max-tokens 128 \
            --llama-server "$W/b/core/bin/llama-server" --only pyllamacy,llama-server \
            --json "$OUT/prefill-${m%.gguf}.json" 2>&1 | tee "$OUT/prefill-${m%.gguf}.txt"
        # the end of both servers' logs (settings as each resolved them, timings) with the table
        tail -n 40 /tmp/server_bench_pyllamacy.log /tmp/server_bench_llama-server.log \
            >> "$OUT/prefill-${m%.gguf}.txt" 2>&1
    done
    say "prefill stage done"
    exit 0
fi
if [ "$STAGE" = issue11 ]; then
    # one call after `build` (MAKE_8B=1 SKIP_1B=1): the numbers issue 11 asks for, on the
    # SmolLM2 Q4_1 and the 8B-shaped Q4_0, each against llama.cpp's own programs in the same call:
    # single-stream tg vs llama-bench, server aggregate at 16 clients vs llama-server, and the
    # prefill-heavy workload (16 streamed chats, unique ~1,500-token prompts, 128 tokens)
    wait_builds ${BUILD_WAIT_S:-400} || exit 1
    after_builds
    install_srv
    build_old
    cd "$W"
    if [ ! -f "$W/smol.gguf" ] && echo "${ISSUE11_MODELS:-smol.gguf}" | grep -q smol; then
        cat "$W/smol.part-aa" "$R"/.device/m2/smol.part-a[b-z] > "$W/smol.gguf"
        sed "s#\.models/SmolLM2-135M-Instruct.Q4_1.gguf#smol.gguf#" "$R/.device/m2/smol.sha256" \
            | sha256sum -c - || exit 1
    fi
    quantize_8b
    export PYTHONPATH=$W/site:$W/srvsite
    nvidia-smi --query-gpu=name,memory.used --format=csv
    for m in ${ISSUE11_MODELS:-smol.gguf r8b-q4_0.gguf}; do
        [ -f "$W/$m" ] || { say "no $m"; continue; }
        b=${m%.gguf}
        [ "${I11_BENCH:-1}" = 1 ] && say "bench $m" && python3 -m pyllamacy bench -m "$W/$m" --ngl 99 -r 3 --inner-reps 5 -t 8 \
            --llama-bench "$W/b/core/bin/llama-bench" --no-llama-cpp-python --markdown 2>&1 \
            | tee "$OUT/i11-bench-$b.md"
        if [ -x "$W/b/core/bin/llama-batched-bench" ]; then
            # the ceiling without any server: 16 sequences decoded together, same sizes
            say "llama-batched-bench $m (16 sequences, 16-token prompts, 64 tokens)"
            "$W/b/core/bin/llama-batched-bench" -m "$W/$m" -ngl 99 -c 8192 -b 512 -ub 512 -t 8 \
                -npp 16 -ntg 64 -npl 1,16 2>&1 | grep '^|' | tee "$OUT/i11-batched-$b.txt"
        fi
        # REPEATS=N: N rounds of (pyllamacy, llama-server), each server started afresh, so the
        # two alternate through the call and the machine's drift falls on both
        for r in $(seq 1 "${REPEATS:-1}"); do
            say "server throughput $m, round $r"
            [ "${TRACE:-0}" = 1 ] && export PYLLAMACY_TRACE_STEPS="$OUT/i11-trace-serve-$b-$r.jsonl"
            python3 "$W/src/benchmarks/server_bench.py" --model "$W/$m" --ngl -1 --slots 16 \
                --threads 8 --duration ${SERVE_S:-10} --max-tokens 64 --clients 16 \
                --llama-server "$W/b/core/bin/llama-server" --only pyllamacy,llama-server 2>&1 \
                | tee -a "$OUT/i11-serve-$b.txt"
            unset PYLLAMACY_TRACE_STEPS
        done
        if [ -d "$W/site-old" ]; then
            # the same level with the earlier commit's server, then ours again (drift check)
            say "server throughput $m: earlier commit, then this one again"
            PYTHONPATH=$W/site-old:$W/srvsite python3 "$W/src/benchmarks/server_bench.py" \
                --model "$W/$m" --ngl -1 --slots 16 --threads 8 --duration ${SERVE_S:-10} \
                --max-tokens 64 --clients 16 --only pyllamacy 2>&1 | sed 's/"server": "pyllamacy"/"server": "pyllamacy-old"/' \
                | tee -a "$OUT/i11-serve-$b.txt"
            python3 "$W/src/benchmarks/server_bench.py" --model "$W/$m" --ngl -1 --slots 16 \
                --threads 8 --duration ${SERVE_S:-10} --max-tokens 64 --clients 16 --only pyllamacy 2>&1 \
                | tee -a "$OUT/i11-serve-$b.txt"
        fi
        say "prefill-heavy $m"
        # TRACE=1: pyllamacy's server writes one JSON line per engine step and per request
        # milestone (server/runner.py StepTrace) -- where the first token's time goes
        [ "${TRACE:-0}" = 1 ] && export PYLLAMACY_TRACE_STEPS="$OUT/i11-trace-$b.jsonl"
        python3 "$W/src/benchmarks/server_bench.py" --workload prefill --model "$W/$m" \
            --ngl -1 --slots 16 --clients ${PREFILL_CLIENTS:-16,16} --threads 8 --prompt-tokens 1500 --max-tokens 128 \
            --llama-server "$W/b/core/bin/llama-server" --only pyllamacy,llama-server \
            --json "$OUT/i11-prefill-$b.json" 2>&1 | tee "$OUT/i11-prefill-$b.txt"
        unset PYLLAMACY_TRACE_STEPS
        tail -n 30 /tmp/server_bench_pyllamacy.log >> "$OUT/i11-prefill-$b.txt" 2>&1
        grep -h "prompt eval time\|launch_slot\|print_timing" /tmp/server_bench_llama-server.log \
            | head -n 80 >> "$OUT/i11-prefill-$b.txt" 2>&1
    done
    # a few files come back per call: the traces and logs in one archive
    (cd "$OUT" && tar czf i11-all.tgz i11-* quantize-8b.log 2>/dev/null \
        && find . -maxdepth 1 -name 'i11-*' ! -name i11-all.tgz -delete && rm -f quantize-8b.log)
    say "issue11 stage done"
    exit 0
fi
if [ "$STAGE" = fit ]; then
    # issue 15, right after `build` (MAKE_8B=1 SKIP_1B=1): n_gpu_layers="auto" on the 8B-shaped
    # Q4_0 with a margin leaving room for about half of it, then with none; estimate vs
    # nvidia-smi (packaging/device/fit_proof.py). Results: $OUT/fit.jsonl, $OUT/fit-table.txt
    wait_builds ${BUILD_WAIT_S:-400} || exit 1
    after_builds
    quantize_8b
    export PYTHONPATH=$W/site
    cd "$W"
    nvidia-smi --query-gpu=name,memory.used,memory.free,memory.total --format=csv | tee "$OUT/fit-gpu.txt"
    python3 -m pyllamacy fit "$W/r8b-q4_0.gguf" -c 4096 2>&1 | tee "$OUT/fit-table.txt"
    python3 "$W/src/packaging/device/fit_proof.py" "$W/r8b-q4_0.gguf" --n-ctx 4096 2>&1 \
        | tee "$OUT/fit.jsonl"
    say "fit stage done"
    exit 0
fi
echo "unknown stage $STAGE"; exit 2
