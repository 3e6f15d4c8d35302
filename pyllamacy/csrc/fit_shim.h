// pyllamacy's view of a loaded context's memory, per device: the figures llama.cpp's own
// common_memory_breakdown_print() prints (common/fit.cpp), as data instead of a log table.
// llama_get_memory_breakdown() lives in llama.cpp's staging header src/llama-ext.h (C++: a map
// keyed by buffer type); this header folds it per device exactly as common/fit.cpp does.
#pragma once

#include "llama.h"
#include "llama-ext.h"
#include "ggml-backend.h"

#include <cstdint>
#include <vector>

namespace pyl_fit {

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
