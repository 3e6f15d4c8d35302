# cython: language_level=3
#
# Declarations for the subset of ggml-cpu.h that pyllamacy needs.
# Declarations only, no code.
#
# IMPORTANT: with GGML_BACKEND_DL=ON the CPU backend (libggml-cpu-*.so) is a
# dynamically loaded plugin, NOT linked into libggml/libllama.  The functions
# below (ggml_cpu_has_*, ggml_numa_init, ggml_cpu_init, ...) therefore will
# not resolve at link time unless we link the CPU backend explicitly.  Prefer
# querying CPU features at runtime via
#     ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features")
# (see ggml_backend.pxd: ggml_backend_get_features_t) and llama_numa_init().
# Only the types (enum ggml_numa_strategy) are safe to use unconditionally.

from pyllamacy.includes.ggml_backend cimport ggml_backend_reg_t


cdef extern from "ggml-cpu.h" nogil:

    # numa strategies
    cdef enum ggml_numa_strategy:
        GGML_NUMA_STRATEGY_DISABLED
        GGML_NUMA_STRATEGY_DISTRIBUTE
        GGML_NUMA_STRATEGY_ISOLATE
        GGML_NUMA_STRATEGY_NUMACTL
        GGML_NUMA_STRATEGY_MIRROR
        GGML_NUMA_STRATEGY_COUNT

    void ggml_numa_init(ggml_numa_strategy numa)   # call once for better performance on NUMA systems
    bint ggml_is_numa()                            # true if init detected that system has >1 NUMA node

    #
    # system info
    #

    # x86
    int ggml_cpu_has_sse3       ()
    int ggml_cpu_has_ssse3      ()
    int ggml_cpu_has_avx        ()
    int ggml_cpu_has_avx_vnni   ()
    int ggml_cpu_has_avx2       ()
    int ggml_cpu_has_bmi2       ()
    int ggml_cpu_has_f16c       ()
    int ggml_cpu_has_fma        ()
    int ggml_cpu_has_avx512     ()
    int ggml_cpu_has_avx512_vbmi()
    int ggml_cpu_has_avx512_vnni()
    int ggml_cpu_has_avx512_bf16()
    int ggml_cpu_has_amx_int8   ()
    # ARM
    int ggml_cpu_has_neon       ()
    int ggml_cpu_has_arm_fma    ()
    int ggml_cpu_has_fp16_va    ()
    int ggml_cpu_has_dotprod    ()
    int ggml_cpu_has_matmul_int8()
    int ggml_cpu_has_sve        ()
    int ggml_cpu_get_sve_cnt    ()   # sve vector length in bytes
    int ggml_cpu_has_sme        ()
    int ggml_cpu_has_sme2       ()
    # other
    int ggml_cpu_has_riscv_v    ()
    int ggml_cpu_get_rvv_vlen   ()   # risc-v vector length in bytes
    int ggml_cpu_has_vsx        ()
    int ggml_cpu_has_vxe        ()
    int ggml_cpu_has_wasm_simd  ()
    int ggml_cpu_has_llamafile  ()

    void ggml_cpu_init()

    #
    # CPU backend
    #

    ggml_backend_reg_t ggml_backend_cpu_reg()
