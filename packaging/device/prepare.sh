#!/bin/sh
# Prepare what run_gpu_proof.sh / run_vulkan_proof.sh carry, all under the git-ignored .device/,
# from the package registries alone (the lent machine reaches nothing):
#   core-src.tar.xz        snapshot of the committed tree (snapshot.sh)
#   llama.cpp-trim.tar.xz  the pinned llama.cpp without models/docs/tests/web UI sources/unused
#                          backends (tools/server and the UI cmake files are kept: llama-server)
#   lcp-src.tar.xz         llama-cpp-python 0.3.36 sdist without its vendor/llama.cpp
#   whl/                   gguf, diskcache, cython wheels for Python 3.12; smollm2-template.gguf
#                          (the real model's metadata, no tensors)
#   srv/                   wheels of the servers' packages (fastapi, uvicorn, pydantic, ...)
#   m1/, m2/               the real SmolLM2-135M Q4_1 in two parts (64 MiB per call) + its sha256
# Needs the pinned tree in vendor/llama.cpp (any build fetches it) and the model in the cache
# (`pyllamacy fetch-model`). Only core-src is remade when the rest exists (FULL=1 remakes all).
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
D=.device
mkdir -p "$D"
grep -qx '/.device/' .gitignore || echo "warning: .device/ is not git-ignored" >&2

sh packaging/device/snapshot.sh /tmp/pyllamacy-snap
tar -C /tmp/pyllamacy-snap -cJf "$D/core-src.tar.xz" .
# OLD_REF=<commit>: also pyllamacy/ + pyproject.toml of that commit (run_gpu_proof.sh's A/B)
rm -f "$D/old-src.tar.xz"
if [ -n "${OLD_REF:-}" ]; then
    git archive "$OLD_REF" pyllamacy pyproject.toml | xz -9 > "$D/old-src.tar.xz"
fi

PY=${PYTHON:-python3}
WHEEL_FLAGS="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"

if [ "${FULL:-0}" = 1 ] || [ ! -f "$D/llama.cpp-trim.tar.xz" ]; then
    [ -f vendor/llama.cpp/CMakeLists.txt ] || "$PY" -m buildtools.vendor
    L=llama.cpp
    tar -C vendor -cJf "$D/llama.cpp-trim.tar.xz" \
        --exclude="$L/models" --exclude="$L/docs" --exclude="$L/tests" --exclude="$L/benches" \
        --exclude="$L/.git" --exclude="$L/tools/ui/src" --exclude="$L/tools/ui/tests" \
        --exclude="$L/tools/server/tests" --exclude="$L/tools/server/bench" \
        --exclude="$L/ggml/src/ggml-sycl" --exclude="$L/ggml/src/ggml-opencl" \
        --exclude="$L/ggml/src/ggml-cann" --exclude="$L/ggml/src/ggml-hexagon" \
        --exclude="$L/ggml/src/ggml-webgpu" --exclude="$L/ggml/src/ggml-openvino" \
        --exclude="$L/ggml/src/ggml-et" --exclude="$L/ggml/src/ggml-metal" \
        --exclude="$L/ggml/src/ggml-virtgpu" --exclude="$L/ggml/src/ggml-zdnn" \
        "$L"
fi

if [ "${FULL:-0}" = 1 ] || [ ! -f "$D/lcp-src.tar.xz" ]; then
    T=$(mktemp -d)
    # buildtools.vendor's downloader (pip, else the registry's simple index), sha256-checked
    "$PY" -c 'import sys; from pathlib import Path; from buildtools import vendor as v; p = v.load_pin(); a = v._pip_download(p, Path(sys.argv[1])) or v._simple_index_download(p, Path(sys.argv[1])); sys.exit(0 if v.sha256_of(a) == p["sha256"] else "sdist sha256 mismatch")' "$T"
    tar -C "$T" -xzf "$T"/llama_cpp_python-0.3.36.tar.gz
    tar -C "$T" -cJf "$D/lcp-src.tar.xz" --exclude=llama_cpp_python-0.3.36/vendor/llama.cpp --exclude=llama_cpp_python-0.3.36/.git \
        llama_cpp_python-0.3.36
    rm -rf "$T"
fi

if [ "${FULL:-0}" = 1 ] || [ ! -d "$D/whl" ]; then
    rm -rf "$D/whl"; mkdir -p "$D/whl"
    # shellcheck disable=SC2086
    "$PY" -m pip download -q $WHEEL_FLAGS -d "$D/whl" gguf diskcache "cython>=3.1"
fi

if [ "${FULL:-0}" = 1 ] || [ ! -d "$D/srv" ]; then
    rm -rf "$D/srv"; mkdir -p "$D/srv"
    # shellcheck disable=SC2086
    "$PY" -m pip download -q $WHEEL_FLAGS -d "$D/srv" fastapi starlette uvicorn h11 click \
        pydantic pydantic-core pydantic-settings python-dotenv typing-extensions \
        typing-inspection annotated-types anyio sniffio idna sse-starlette starlette-context \
        httpx httpcore certifi openai distro jiter tqdm opentelemetry-api importlib-metadata zipp \
        prometheus-client
fi

if [ "${FULL:-0}" = 1 ] || [ ! -d "$D/m2" ]; then
    # models.py needs only the standard library: load it without the compiled package
    MODEL=$("$PY" -c 'import sys; sys.path.insert(0, "pyllamacy"); import models; print(models.default_model_path())')
    rm -rf "$D/m1" "$D/m2"; mkdir -p "$D/m1" "$D/m2"
    split -b 44M "$MODEL" "$D/m1/smol.part-"
    mv "$D"/m1/smol.part-a[b-z] "$D/m2/"
    (cd "$(dirname "$MODEL")" && sha256sum "$(basename "$MODEL")") | \
        sed 's#  .*#  .models/SmolLM2-135M-Instruct.Q4_1.gguf#' > "$D/m2/smol.sha256"
    "$PY" -c 'import gguf' 2>/dev/null || "$PY" -m pip install -q gguf
    "$PY" packaging/device/make_models.py template "$MODEL" "$D/whl/smollm2-template.gguf"
fi
du -sh "$D"/* | sort -h
