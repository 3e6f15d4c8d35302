# CMake toolchain: cross-compile for 64-bit ARM Linux (aarch64) with the Debian/Ubuntu cross
# compilers, e.g. on an x86-64 build machine:
#
#     apt-get install g++-aarch64-linux-gnu qemu-user        # compilers + arm64 libc/libstdc++
#     python build_backends.py arm-fp16 --toolchain packaging/toolchains/aarch64-linux-gnu.cmake
#
# The arm64 libc, libstdc++ and libgomp live in /usr/aarch64-linux-gnu (the multiarch cross
# layout: the compilers find them without a --sysroot). Programs built here run on the build
# machine through qemu-user (CMAKE_CROSSCOMPILING_EMULATOR), which try_run() and ctest use.
#
# Overrides (cache variables, -D...=): AARCH64_CROSS_PREFIX (default aarch64-linux-gnu-),
# AARCH64_CROSS_ROOT (default /usr/aarch64-linux-gnu), AARCH64_QEMU (default qemu-aarch64 on PATH).

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(AARCH64_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "prefix of the cross compilers")
set(AARCH64_CROSS_ROOT "/usr/aarch64-linux-gnu" CACHE PATH "arm64 libraries and headers")

# CMake loads the toolchain file more than once (try_compile projects): keep it idempotent
find_program(AARCH64_CROSS_GCC "${AARCH64_CROSS_PREFIX}gcc")
find_program(AARCH64_CROSS_GXX "${AARCH64_CROSS_PREFIX}g++")
if (NOT AARCH64_CROSS_GCC OR NOT AARCH64_CROSS_GXX)
    message(FATAL_ERROR "${AARCH64_CROSS_PREFIX}gcc/g++ not found: "
                        "apt-get install g++-aarch64-linux-gnu")
endif()
set(CMAKE_C_COMPILER   "${AARCH64_CROSS_GCC}")
set(CMAKE_CXX_COMPILER "${AARCH64_CROSS_GXX}")
set(CMAKE_ASM_COMPILER "${AARCH64_CROSS_GCC}")

# headers, libraries and CMake packages from the arm64 tree only; programs (cmake, ninja,
# python, ccache) from the build machine
set(CMAKE_FIND_ROOT_PATH "${AARCH64_CROSS_ROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# run arm64 programs (try_run, tests) through qemu-user, with the arm64 loader and libraries
find_program(AARCH64_QEMU qemu-aarch64)
if (AARCH64_QEMU)
    set(CMAKE_CROSSCOMPILING_EMULATOR "${AARCH64_QEMU};-L;${AARCH64_CROSS_ROOT}")
endif()
