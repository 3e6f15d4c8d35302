#!/bin/bash
# Vulkan proof on the lent NVIDIA machine: the pyllamacy-vulkan wheel built on the dev machine
# (python build_backends.py vulkan), driven through NVIDIA's Vulkan driver with CUDA hidden.
#
# Runs after `run_gpu_proof.sh build` in the same warm machine: that stage leaves the core wheel
# (built there for the image's Python 3.12) installed with pip --target in $W/site, and the first
# half of the test model in $W. Prepared on the dev machine (both folders are git-ignored):
#   .device/vk/pyllamacy_vulkan-*.whl   python build_backends.py vulkan; cp dist/pyllamacy_vulkan-*.whl .device/vk/
#   .gl/*.deb                           the Vulkan loader and libglvnd (the device image has no libvulkan):
#       mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#       apt-get $o update; (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
#
#   bash packaging/device/run_vulkan_proof.sh
#   carry: .device/vk .gl           (+ .device/m2 when $W/smol.gguf is not there yet, i.e. when
#                                     run_gpu_proof.sh test has not run in this warm machine)
# Logs under $OUT: vk-env.txt, vk-info.txt, vk-gpu-tests.log, vk-all-tests.log, vk-site.txt
# (+ vk-bench.md with VK_BENCH=1).
set -u
R=$(pwd)
W=${W:-/tmp/w}
OUT=${OUT:-/tmp/out}
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

[ -d "$W/site/pyllamacy" ] || { echo "no core in $W/site: run packaging/device/run_gpu_proof.sh build first"; exit 2; }
ls "$R"/.device/vk/pyllamacy_vulkan-*.whl > /dev/null 2>&1 || { echo "carry .device/vk (the Vulkan wheel)"; exit 2; }

# 1. the Vulkan loader (+ libglvnd, which NVIDIA's ICD library needs) from the carried .debs
if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
    ls "$R"/.gl/*.deb > /dev/null 2>&1 || { echo "no libvulkan here and no .gl/*.deb carried"; exit 2; }
    for f in "$R"/.gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
ldconfig -p | grep -E 'libvulkan.so.1|libGLX_nvidia|libEGL_nvidia' | tee "$OUT/vk-env.txt"
# (a rehearsal elsewhere may point these at another ICD, e.g. lavapipe's, with
#  GGML_VK_VISIBLE_DEVICES=0: ggml-vulkan skips CPU-type devices unless named)
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
{ echo "VK_DRIVER_FILES=$VK_DRIVER_FILES"; cat "$VK_DRIVER_FILES"; nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv; python3 --version; } 2>&1 | tee -a "$OUT/vk-env.txt"

# 2. the Vulkan wheel into the same --target folder as the core (replacing an older copy)
rm -rf "$W"/site/pyllamacy_vulkan "$W"/site/pyllamacy_vulkan-*.dist-info
python3 -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$R"/.device/vk/pyllamacy_vulkan-*.whl
ls -la "$W/site/pyllamacy_vulkan/lib" | tee "$OUT/vk-site.txt"
ls -d "$W"/site/*.dist-info | tee -a "$OUT/vk-site.txt"

# 3. CUDA hidden: the Vulkan backend alone drives the GPU
export PYTHONPATH=$W/site PYLLAMACY_BACKEND=vulkan CUDA_VISIBLE_DEVICES=
say "pyllamacy info (Vulkan only)"
(cd "$W" && python3 -m pyllamacy info 2>&1 | tee "$OUT/vk-info.txt")
(cd "$W" && python3 -m pyllamacy info --json > "$OUT/vk-info.json" 2>/dev/null)

# 4. the real SmolLM2-135M Q4_1 (its first half came with run_gpu_proof.sh build)
SUM=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ "$(sha256sum "$W/smol.gguf" 2>/dev/null | cut -c1-64)" != "$SUM" ]; then
    cat "$W/smol.part-aa" "$R"/.device/m2/smol.part-a[b-z] > "$W/smol.gguf" 2>/dev/null
    [ "$(sha256sum "$W/smol.gguf" | cut -c1-64)" = "$SUM" ] || { echo "model incomplete: carry .device/m2"; exit 3; }
fi

# 5. tests/test_backends.py from this tree, run outside it (its pyllamacy/ folder would shadow
#    the installed one); the tests read build_backends.py, pyproject.toml, the pin file
rm -rf "$W/trv"; mkdir -p "$W/trv/vendor"
cp -a "$R/tests" "$R/build_backends.py" "$R/pyproject.toml" "$R/packaging" "$R/buildtools" "$W/trv/"
cp "$R/vendor/llama.cpp.json" "$W/trv/vendor/"
say "GPU subset on Vulkan"
(cd "$W" && PYLLAMACY_TEST_MODEL=$W/smol.gguf python3 -m pytest -q -s -p no:cacheprovider \
    --rootdir "$W/trv" "$W/trv/tests/test_backends.py" -k gpu 2>&1 | tee "$OUT/vk-gpu-tests.log")
say "whole file (discovery tests too)"
(cd "$W" && PYLLAMACY_TEST_MODEL=$W/smol.gguf python3 -m pytest -q -p no:cacheprovider \
    --rootdir "$W/trv" "$W/trv/tests/test_backends.py" 2>&1 | tail -n 30 > "$OUT/vk-all-tests.log")
tail -n 3 "$OUT/vk-all-tests.log"

# 6. optional (VK_BENCH=1): pyllamacy vs llama-bench, both on Vulkan; llama-bench (from the
#    core build of run_gpu_proof.sh) loads the modules beside it, so the Vulkan one is put
#    there for the run and taken away after
if [ "${VK_BENCH:-0}" = 1 ]; then
    LB=$W/b/core/bin/llama-bench; LBA="--no-llama-bench"
    if [ -x "$LB" ]; then
        cp "$W/site/pyllamacy_vulkan/lib/libggml-vulkan.so" "$W/b/core/bin/"; LBA="--llama-bench $LB"
    fi
    say "bench ($LBA)"
    (cd "$W" && python3 -m pyllamacy bench -m "$W/smol.gguf" --ngl 99 -r 3 --inner-reps 5 -t 8 \
        $LBA --no-llama-cpp-python --markdown 2>&1 | tee "$OUT/vk-bench.md")
    rm -f "$W/b/core/bin/libggml-vulkan.so"
fi
say "vulkan proof done"
