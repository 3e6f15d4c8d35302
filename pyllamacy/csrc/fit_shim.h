// pyllamacy's view of a loaded context's memory, per device: the figures llama.cpp's own
// common_memory_breakdown_print() prints (common/fit.cpp), as data instead of a log table.
// llama_get_memory_breakdown() lives in llama.cpp's staging header src/llama-ext.h (C++: a map
// keyed by buffer type); this header folds it per device exactly as common/fit.cpp does.
#pragma once

#include "llama.h"
#include "llama-ext.h"
#include "ggml-backend.h"
#include "fit.h"

#include <cstdint>
#include <mutex>
#include <vector>

namespace pyl_fit {

// common/fit.cpp replaces llama.cpp's process-wide log callback with one whose user data lives
// in its own stack frame, and puts the previous callback back when it returns. Two fits at
// once (a server loading two models on demand) would each restore the other's callback, whose
// frame is gone: the next log line jumps into freed stack. Every fit and estimate takes this
// lock, so at most one runs at a time in the process.
inline std::mutex & fit_lock() {
    static std::mutex m;
    return m;
}

inline common_params_fit_status fit_params_locked(
        const char * path_model, llama_model_params * mparams, llama_context_params * cparams,
        float * tensor_split, llama_model_tensor_buft_override * tensor_buft_overrides,
        size_t * margins, uint32_t n_ctx_min, ggml_log_level log_level) {
    std::lock_guard<std::mutex> hold(fit_lock());
    return common_fit_params(path_model, mparams, cparams, tensor_split, tensor_buft_overrides,
                             margins, n_ctx_min, nullptr, log_level);
}

// throws what common_get_device_memory_data throws (std::runtime_error)
inline std::vector<common_device_memory_data> device_memory_data_locked(
        const char * path_model, const llama_model_params * mparams,
        const llama_context_params * cparams, std::vector<ggml_backend_dev_t> & devs,
        uint32_t & hp_ngl, uint32_t & hp_n_ctx_train, uint32_t & hp_n_expert,
        ggml_log_level log_level) {
    std::lock_guard<std::mutex> hold(fit_lock());
    return common_get_device_memory_data(path_model, mparams, cparams, devs, hp_ngl,
                                         hp_n_ctx_train, hp_n_expert, log_level);
}

struct device_memory {
    int64_t total;
    int64_t free;
    size_t  model;
    size_t  context;
    size_t  compute;
};

// One entry per device of the context's model (llama_model_get_device order), then the host
// (every host buffer type: CPU weights, CPU KV cache, CPU compute buffers) last. free/total
// are what the backend reports now; the host's are the CPU device's (system memory).
inline std::vector<device_memory> context_breakdown(const llama_context * ctx) {
    const llama_model * model = llama_get_model(ctx);
    const int32_t nd = llama_model_n_devices(model);
    std::vector<device_memory> out(nd + 1, device_memory{0, 0, 0, 0, 0});
    const llama_memory_breakdown mb = llama_get_memory_breakdown(ctx);
    for (const auto & kv : mb) {
        ggml_backend_buffer_type_t buft = kv.first;
        device_memory * slot = nullptr;
        if (ggml_backend_buft_is_host(buft)) {
            slot = &out.back();
        } else {
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
            for (int32_t i = 0; dev && i < nd; i++) {
                if (llama_model_get_device(model, i) == dev) {
                    slot = &out[i];
                    break;
                }
            }
        }
        if (slot) {
            slot->model   += kv.second.model;
            slot->context += kv.second.context;
            slot->compute += kv.second.compute;
        }
    }
    for (int32_t i = 0; i <= nd; i++) {
        ggml_backend_dev_t dev = i < nd ? llama_model_get_device(model, i)
                                        : ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        if (!dev) {
            continue;
        }
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        out[i].free  = (int64_t) free;
        out[i].total = (int64_t) total;
    }
    return out;
}

inline const char * device_name(const llama_model * model, int32_t i) {
    return ggml_backend_dev_name(llama_model_get_device(model, i));
}

inline const char * device_description(const llama_model * model, int32_t i) {
    return ggml_backend_dev_description(llama_model_get_device(model, i));
}

}  // namespace pyl_fit
