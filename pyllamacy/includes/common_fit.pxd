# Declarations of llama.cpp's common/fit.h (libllama-common): fitting model and context parameters
# to free device memory, and the no-alloc ("dry run") per-device memory estimate it rests on.
from libc.stdint cimport int64_t, uint32_t
from libcpp.vector cimport vector

from pyllamacy.includes.llama cimport (llama_model_params, llama_context_params,
                                       llama_model_tensor_buft_override, llama_context)
from pyllamacy.includes.ggml cimport ggml_log_level
from pyllamacy.includes.ggml_backend cimport ggml_backend_dev_t

cdef extern from "fit.h" nogil:
    cdef enum common_params_fit_status:
        COMMON_PARAMS_FIT_STATUS_SUCCESS
        COMMON_PARAMS_FIT_STATUS_FAILURE
        COMMON_PARAMS_FIT_STATUS_ERROR

    cdef struct common_fit_extra_model:
        const char * path_model
        llama_model_params * mparams
        llama_context_params * cparams
        bint shares_model

    # catches its own exceptions and answers with a status
    common_params_fit_status common_fit_params(
        const char * path_model, llama_model_params * mparams, llama_context_params * cparams,
        float * tensor_split, llama_model_tensor_buft_override * tensor_buft_overrides,
        size_t * margins, uint32_t n_ctx_min, const common_fit_extra_model * extra,
        ggml_log_level log_level)

    void common_memory_breakdown_print(const llama_context * ctx)

    cdef struct common_device_memory_data:
        int64_t total
        int64_t free
        size_t model
        size_t context
        size_t compute

    # one entry per device of the model, then the host; throws std::runtime_error
    vector[common_device_memory_data] common_get_device_memory_data(
        const char * path_model, const llama_model_params * mparams,
        const llama_context_params * cparams, vector[ggml_backend_dev_t] & devs,
        uint32_t & hp_ngl, uint32_t & hp_n_ctx_train, uint32_t & hp_n_expert,
        ggml_log_level log_level) except +
