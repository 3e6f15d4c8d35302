#!/bin/sh
# Prepare what run_gpu_proof.sh carries (all under the git-ignored .device/):
#   core-src.tar.xz        snapshot of the committed tree (snapshot.sh)
#   llama.cpp-trim.tar.xz  the pinned llama.cpp without models/docs/tests/web UI sources/unused
#                          backends (tools/server and the UI cmake files are kept: llama-server)
#   srv/                   wheels of the servers (fastapi, uvicorn, pydantic, ...) for Python 3.12
#   lcp-src.tar.xz         llama-cpp-python 0.3.36 sdist without its vendor/llama.cpp
#   whl/                   gguf + diskcache wheels, smollm2-template.gguf (metadata only)
#   m1/, m2/               the real SmolLM2-135M Q4_1 in two halves (64 MiB per call)
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
sh packaging/device/snapshot.sh /tmp/pyllamacy-snap
tar -C /tmp/pyllamacy-snap -cJf .device/core-src.tar.xz .
ls -la .device .device/whl .device/m1 .device/m2
