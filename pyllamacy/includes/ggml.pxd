# cython: language_level=3
#
# Declarations for the subset of ggml.h (and ggml-opt.h) that llama.h and
# pyllamacy need.  Declarations only, no code.
#
# Notes:
#   * C `bool` values in plain parameters/returns/fields are declared as `bint`
#     (Cython converts by value, which is ABI-safe).  In *function pointer*
#     types we use `bool` from libc.stdbool instead (C name `bool`), because
#     there the exact C type matters: `int (*)(...)` and `_Bool (*)(...)` are
#     incompatible pointer types for the C compiler.  Cython callbacks meant
#     for those slots must therefore be declared with `bool` (libc.stdbool),
#     not `bint`.
#   * `ggml_numa_strategy` lives in ggml-cpu.h -> see ggml_cpu.pxd.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.stdio cimport FILE
from libc.stdbool cimport bool


cdef extern from "ggml.h" nogil:

    # ---- constants (macros) ----
    enum:
        GGML_FILE_MAGIC
        GGML_FILE_VERSION
        GGML_QNT_VERSION
        GGML_MAX_DIMS
        GGML_MAX_SRC
        GGML_MAX_N_THREADS
        GGML_MAX_OP_PARAMS
        GGML_MAX_NAME
        GGML_DEFAULT_N_THREADS
        GGML_MEM_ALIGN

        GGML_ROPE_TYPE_NORMAL
        GGML_ROPE_TYPE_NEOX
        GGML_ROPE_TYPE_MROPE
        GGML_ROPE_TYPE_VISION
        GGML_ROPE_TYPE_IMROPE

    # Function type used in fatal error callbacks
    ctypedef void (*ggml_abort_callback_t)(const char * error_message) noexcept

    # Set the abort callback (NULL restores the default); returns the old one
    ggml_abort_callback_t ggml_set_abort_callback(ggml_abort_callback_t callback)

    cdef enum ggml_status:
        GGML_STATUS_ALLOC_FAILED
        GGML_STATUS_FAILED
        GGML_STATUS_SUCCESS
        GGML_STATUS_ABORTED

    const char * ggml_status_to_string(ggml_status status)

    # ieee 754-2008 half-precision float16
    ctypedef uint16_t ggml_fp16_t
    float       ggml_fp16_to_fp32(ggml_fp16_t)
    ggml_fp16_t ggml_fp32_to_fp16(float)

    cdef struct ggml_object
    cdef struct ggml_context
    cdef struct ggml_cgraph
    cdef struct ggml_backend_buffer   # opaque, see ggml-backend.h

    # NOTE: always add types at the end of the enum to keep backward compatibility
    cdef enum ggml_type:
        GGML_TYPE_F32
        GGML_TYPE_F16
        GGML_TYPE_Q4_0
        GGML_TYPE_Q4_1
        # GGML_TYPE_Q4_2 = 4, support has been removed
        # GGML_TYPE_Q4_3 = 5, support has been removed
        GGML_TYPE_Q5_0
        GGML_TYPE_Q5_1
        GGML_TYPE_Q8_0
        GGML_TYPE_Q8_1
        GGML_TYPE_Q2_K
        GGML_TYPE_Q3_K
        GGML_TYPE_Q4_K
        GGML_TYPE_Q5_K
        GGML_TYPE_Q6_K
        GGML_TYPE_Q8_K
        GGML_TYPE_IQ2_XXS
        GGML_TYPE_IQ2_XS
        GGML_TYPE_IQ3_XXS
        GGML_TYPE_IQ1_S
        GGML_TYPE_IQ4_NL
        GGML_TYPE_IQ3_S
        GGML_TYPE_IQ2_S
        GGML_TYPE_IQ4_XS
        GGML_TYPE_I8
        GGML_TYPE_I16
        GGML_TYPE_I32
        GGML_TYPE_I64
        GGML_TYPE_F64
        GGML_TYPE_IQ1_M
        GGML_TYPE_BF16
        # GGML_TYPE_Q4_0_4_4 = 31, GGML_TYPE_Q4_0_4_8 = 32, GGML_TYPE_Q4_0_8_8 = 33: removed
        GGML_TYPE_TQ1_0
        GGML_TYPE_TQ2_0
        # GGML_TYPE_IQ4_NL_4_4 = 36, GGML_TYPE_IQ4_NL_4_8 = 37, GGML_TYPE_IQ4_NL_8_8 = 38: removed
        GGML_TYPE_MXFP4
        GGML_TYPE_NVFP4
        GGML_TYPE_Q1_0
        GGML_TYPE_Q2_0
        GGML_TYPE_COUNT

    cdef enum ggml_log_level:
        GGML_LOG_LEVEL_NONE
        GGML_LOG_LEVEL_DEBUG
        GGML_LOG_LEVEL_INFO
        GGML_LOG_LEVEL_WARN
        GGML_LOG_LEVEL_ERROR
        GGML_LOG_LEVEL_CONT   # continue previous log

    # this tensor...
    cdef enum ggml_tensor_flag:
        GGML_TENSOR_FLAG_INPUT
        GGML_TENSOR_FLAG_OUTPUT
        GGML_TENSOR_FLAG_PARAM
        GGML_TENSOR_FLAG_LOSS
        GGML_TENSOR_FLAG_COMPUTE

    # n-dimensional tensor
    # PARTIAL declaration: only the fields useful from Python are listed
    # (op, op_params, src, padding omitted).  Never rely on sizeof() from Cython
    # code beyond what the C compiler gives; it is the real struct in C.
    cdef struct ggml_tensor:
        ggml_type type
        ggml_backend_buffer * buffer
        int64_t ne[GGML_MAX_DIMS]   # number of elements
        size_t  nb[GGML_MAX_DIMS]   # stride in bytes
        int32_t flags
        ggml_tensor * view_src
        size_t        view_offs
        void * data
        char name[GGML_MAX_NAME]
        void * extra

    # Abort callback
    # If not NULL, called before ggml computation
    # If it returns true, the computation is aborted
    ctypedef bool (*ggml_abort_callback)(void * data) noexcept

    # misc

    const char * ggml_version()
    const char * ggml_commit()

    void    ggml_time_init()   # call this once at the beginning of the program
    int64_t ggml_time_ms()
    int64_t ggml_time_us()
    int64_t ggml_cycles()
    int64_t ggml_cycles_per_ms()

    int64_t ggml_nelements(const ggml_tensor * tensor)
    int64_t ggml_nrows    (const ggml_tensor * tensor)
    size_t  ggml_nbytes   (const ggml_tensor * tensor)

    int64_t ggml_blck_size(ggml_type type)
    size_t  ggml_type_size(ggml_type type)
    size_t  ggml_row_size (ggml_type type, int64_t ne)

    const char * ggml_type_name(ggml_type type)
    bint         ggml_is_quantized(ggml_type type)

    const char * ggml_get_name(const ggml_tensor * tensor)

    ctypedef void (*ggml_log_callback)(ggml_log_level level, const char * text, void * user_data) noexcept

    # Set callback for all future logging events.
    # If this is not called, or NULL is supplied, everything is output on stderr.
    void ggml_log_get(ggml_log_callback * log_callback, void ** user_data)
    void ggml_log_set(ggml_log_callback   log_callback, void *  user_data)

    #
    # quantization
    #

    void   ggml_quantize_init(ggml_type type)
    void   ggml_quantize_free()
    bint   ggml_quantize_requires_imatrix(ggml_type type)

    #
    # ggml threadpool
    #

    # scheduling priorities
    cdef enum ggml_sched_priority:
        GGML_SCHED_PRIO_LOW
        GGML_SCHED_PRIO_NORMAL
        GGML_SCHED_PRIO_MEDIUM
        GGML_SCHED_PRIO_HIGH
        GGML_SCHED_PRIO_REALTIME

    # threadpool params
    cdef struct ggml_threadpool_params:
        bint                cpumask[GGML_MAX_N_THREADS]   # C type is bool[]
        int                 n_threads
        ggml_sched_priority prio
        uint32_t            poll
        bint                strict_cpu
        bint                paused

    cdef struct ggml_threadpool   # forward declaration, see ggml.c

    ctypedef ggml_threadpool * ggml_threadpool_t

    ggml_threadpool_params ggml_threadpool_params_default(int n_threads)
    void                   ggml_threadpool_params_init (ggml_threadpool_params * p, int n_threads)
    bint                   ggml_threadpool_params_match(const ggml_threadpool_params * p0, const ggml_threadpool_params * p1)


# ---------------------------------------------------------------------------
# ggml-opt.h: only the types referenced by llama.h (training API).
# ---------------------------------------------------------------------------

cdef extern from "ggml-opt.h" nogil:

    cdef struct ggml_opt_dataset
    cdef struct ggml_opt_context
    cdef struct ggml_opt_result

    ctypedef ggml_opt_dataset * ggml_opt_dataset_t
    ctypedef ggml_opt_context * ggml_opt_context_t
    ctypedef ggml_opt_result  * ggml_opt_result_t

    cdef enum ggml_opt_optimizer_type:
        GGML_OPT_OPTIMIZER_TYPE_ADAMW
        GGML_OPT_OPTIMIZER_TYPE_SGD
        GGML_OPT_OPTIMIZER_TYPE_COUNT

    # parameters that control which optimizer is used and how said optimizer tries to find the minimal loss
    # (fields are two anonymous structs `adamw` / `sgd`, which Cython cannot
    # declare; declared field-less here -- complete type, usable by value)
    cdef struct ggml_opt_optimizer_params:
        pass

    # callback to calculate optimizer parameters prior to a backward pass
    ctypedef ggml_opt_optimizer_params (*ggml_opt_get_optimizer_params)(void * userdata) noexcept

    ggml_opt_optimizer_params ggml_opt_get_default_optimizer_params(void * userdata)
    ggml_opt_optimizer_params ggml_opt_get_constant_optimizer_params(void * userdata)

    # signature for a callback while evaluating opt_ctx on dataset, called after an evaluation
    ctypedef void (*ggml_opt_epoch_callback)(
            bool               train,
            ggml_opt_context_t opt_ctx,
            ggml_opt_dataset_t dataset,
            ggml_opt_result_t  result,
            int64_t            ibatch,
            int64_t            ibatch_max,
            int64_t            t_start_us) noexcept
