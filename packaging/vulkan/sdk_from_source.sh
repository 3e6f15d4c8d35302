#!/bin/bash
# A VULKAN_SDK-shaped folder for building the Vulkan backend inside a manylinux_2_28 container
# (AlmaLinux 8), built from Khronos' and Google's sources at fixed tags:
#   include/vulkan/...            Vulkan-Headers (ggml-vulkan at the pinned llama.cpp needs
#                                 >= 1.3.272; AlmaLinux 8 ships older headers)
#   share/cmake/SPIRV-Headers/    SPIRV-Headers
#   bin/glslc                     glslc from shaderc, built here: prebuilt SDK binaries need a
#                                 newer glibc than the container's 2.28
# The loader to link against (libvulkan.so) comes from the distribution (vulkan-loader-devel);
# the wheel never bundles it. build_backends.py reads $VULKAN_SDK.
#
#   bash packaging/vulkan/sdk_from_source.sh DEST [JOBS]
set -euo pipefail
DEST=${1:?destination folder}
JOBS=${2:-4}
VULKAN_TAG=v1.4.309
SPIRV_TAG=vulkan-sdk-1.4.309.0
SHADERC_TAG=v2025.1

if [ -x "$DEST/bin/glslc" ] && [ -f "$DEST/include/vulkan/vulkan_core.h" ]; then
    echo "vulkan sdk folder: $DEST already complete"
    exit 0
fi
mkdir -p "$DEST/bin"
DEST=$(cd "$DEST" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

fetch() {   # fetch REPO TAG DIR: a shallow clone of one tag
    git clone --quiet --depth 1 --branch "$2" "https://github.com/$1.git" "$3"
}

fetch KhronosGroup/Vulkan-Headers "$VULKAN_TAG" vulkan-headers
cmake -S vulkan-headers -B vulkan-headers/build -G Ninja -DCMAKE_INSTALL_PREFIX="$DEST" \
    -DVULKAN_HEADERS_ENABLE_MODULE=OFF -DVULKAN_HEADERS_ENABLE_TESTS=OFF
cmake --install vulkan-headers/build

fetch KhronosGroup/SPIRV-Headers "$SPIRV_TAG" spirv-headers
cmake -S spirv-headers -B spirv-headers/build -G Ninja -DCMAKE_INSTALL_PREFIX="$DEST" \
    -DSPIRV_HEADERS_ENABLE_TESTS=OFF -DSPIRV_HEADERS_ENABLE_INSTALL=ON
cmake --install spirv-headers/build

# glslc: shaderc with the glslang / SPIRV-Tools / SPIRV-Headers commits its DEPS file pins
fetch google/shaderc "$SHADERC_TAG" shaderc
(cd shaderc && "${PYTHON:-python3}" utils/git-sync-deps)
cmake -S shaderc -B shaderc/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSHADERC_SKIP_TESTS=ON -DSHADERC_SKIP_EXAMPLES=ON -DSHADERC_SKIP_COPYRIGHT_CHECK=ON \
    -DSPIRV_SKIP_TESTS=ON -DSPIRV_SKIP_EXECUTABLES=ON -DENABLE_GLSLANG_BINARIES=OFF
cmake --build shaderc/build --target glslc_exe -j "$JOBS"
install -m 755 shaderc/build/glslc/glslc "$DEST/bin/glslc"

"$DEST/bin/glslc" --version | head -n 1
grep -m1 '#define VK_HEADER_VERSION ' "$DEST/include/vulkan/vulkan_core.h"
