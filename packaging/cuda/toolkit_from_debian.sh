#!/bin/bash
# A CUDA 12.4 toolkit folder (bin/nvcc, nvvm/, include/, lib64/) from Debian 13's non-free
# packages, for building the cuda12 backend on a machine without NVIDIA's installer (Debian 12
# has only CUDA 11.8). Build-time only: the wheel links libcudart.so.12 / libcublas.so.12 by
# soname and gets them from the nvidia-*-cu12 PyPI packages at run time.
#
#   bash packaging/cuda/toolkit_from_debian.sh DEST            (~1.3 GB of packages, 3.2 GB unpacked)
#   CUDA_HOME=DEST PYLLAMACY_CMAKE_ARGS="-DCMAKE_CUDA_COMPILER=DEST/bin/nvcc -DCUDAToolkit_ROOT=DEST" \
#       python build_backends.py cuda12 --cuda-arch 90
#
# Release wheels want CUDA >= 12.8: ggml compresses the fatbins only from there
# (-compress-mode), and 12.4's sm_90 module is ~5x the size.
set -euo pipefail
DEST=${1:?destination folder}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
APT=$DEST/.apt
ROOT=$DEST/.root
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs" "$ROOT"
echo 'deb http://deb.debian.org/debian trixie main contrib non-free' > "$APT/sources.list"
o=(-oDir::Etc::SourceList="$APT/sources.list" -oDir::Etc::SourceParts=/dev/null
   -oDir::State::Lists="$APT/lists" -oDir::Cache="$APT/cache")
apt-get "${o[@]}" update -q
(cd "$APT/debs" && apt-get "${o[@]}" download -q nvidia-cuda-toolkit nvidia-cuda-dev libcudart12 \
    libcublas12 libcublaslt12 libnvvm4 libcuda1 libcu++-dev libcub-dev libthrust-dev)
for f in "$APT"/debs/*.deb; do dpkg -x "$f" "$ROOT"; done

TK=$ROOT/usr/lib/nvidia-cuda-toolkit
mkdir -p "$DEST/bin" "$DEST/nvvm/bin" "$DEST/nvvm/lib64"
cp -a "$TK/bin/nvcc" "$TK/bin/crt" "$DEST/bin/"
for b in ptxas fatbinary nvlink cudafe++ bin2c nvprune cuobjdump nvdisasm cu++filt; do
    cp -a "$ROOT/usr/bin/$b" "$DEST/bin/"
done
cp -a "$TK/bin/cicc" "$DEST/nvvm/bin/"
cp -a "$TK/libdevice" "$DEST/nvvm/"
cp -a "$ROOT"/usr/lib/x86_64-linux-gnu/libnvvm.so* "$DEST/nvvm/lib64/"
ln -sfn "$ROOT/usr/include" "$DEST/include"
ln -sfn "$ROOT/usr/lib/x86_64-linux-gnu" "$DEST/lib64"     # libcudart, libcublas, stubs/libcuda
# Debian's nvcc.profile points at /usr; this one at the folder itself
cat > "$DEST/bin/nvcc.profile" <<'PROFILE'
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
PROFILE
"$DEST/bin/nvcc" --version | tail -n 2
