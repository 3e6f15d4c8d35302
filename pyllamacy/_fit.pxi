# Fitting a model to the machine, through llama.cpp's common/fit.h (libllama-common):
#   device_memory_estimate()  the per-device memory a load would use, measured by a no-alloc
#                             ("dry run") load of the model and a context: nothing is allocated
#   fit_params()              llama.cpp's common_fit_params: the largest offload (n_gpu_layers,
#                             tensor_split, MoE experts on the CPU first) and context that leave
#                             a margin of free memory on every device
#   _context_memory_rows()    the same figures for a loaded Context (Context.memory_breakdown)
# The typed results and the policy (when to fit, MemoryError) live in pyllamacy/memory.py.

from pyllamacy.includes cimport common_fit as CF
from pyllamacy.includes cimport common_log as CL

cdef extern from "fit_shim.h" namespace "pyl_fit" nogil:
    cppclass device_memory:
        int64_t total
        int64_t free
        size_t model
        size_t context
        size_t compute
    vector[device_memory] context_breakdown(const L.llama_context * ctx) except +
    const char * device_name(const L.llama_model * model, int32_t i)
    const char * device_description(const L.llama_model * model, int32_t i)
    # common_fit_params / common_get_device_memory_data, one call at a time in the process
    CF.common_params_fit_status fit_params_locked(
        const char * path_model, L.llama_model_params * mparams,
        L.llama_context_params * cparams, float * tensor_split,
        L.llama_model_tensor_buft_override * tensor_buft_overrides, size_t * margins,
        uint32_t n_ctx_min, G.ggml_log_level log_level)
    vector[CF.common_device_memory_data] device_memory_data_locked(
        const char * path_model, const L.llama_model_params * mparams,
        const L.llama_context_params * cparams, vector[GB.ggml_backend_dev_t] & devs,
        uint32_t & hp_ngl, uint32_t & hp_n_ctx_train, uint32_t & hp_n_expert,
        G.ggml_log_level log_level) except +

_FIT_STATUS = {CF.COMMON_PARAMS_FIT_STATUS_SUCCESS: "success",
               CF.COMMON_PARAMS_FIT_STATUS_FAILURE: "failure",
               CF.COMMON_PARAMS_FIT_STATUS_ERROR: "error"}


cdef GB.ggml_backend_buffer_type_t _buft_by_name(str name) except NULL:
    """The buffer type of a device by its name ("CPU", "CUDA0", ...): how a fitted
    tensor_buft_override travels from fit_params() to Model()."""
    cdef size_t i
    cdef GB.ggml_backend_buffer_type_t buft
    for i in range(GB.ggml_backend_dev_count()):
        buft = GB.ggml_backend_dev_buffer_type(GB.ggml_backend_dev_get(i))
        if buft != NULL and GB.ggml_backend_buft_name(buft).decode("utf-8", "replace") == name:
            return buft
    raise ValueError(f"no device has a buffer type named {name!r}")


cdef class _FitParams:
    """Owner of a llama_model_params / llama_context_params pair built for a dry run, with the
    buffers they point into (tensor_split, tensor_buft_overrides and their pattern strings).
    Only the settings that change memory use are taken; the rest stay llama.cpp's defaults."""
    cdef L.llama_model_params mp
    cdef L.llama_context_params cp
    cdef float * split
    cdef L.llama_model_tensor_buft_override * tbo
    cdef size_t n_tbo
    cdef list _keep
    cdef bytes path

    def __cinit__(self):
        self.split = NULL
        self.tbo = NULL

    def __dealloc__(self):
        free(self.split)
        free(self.tbo)

    def __init__(self, path, *, int n_gpu_layers=-1, split_mode="layer", int main_gpu=0,
                 tensor_split=None, tensor_buft_overrides=None, n_ctx=0, n_batch=2048,
                 n_ubatch=512, n_seq_max=1, type_k=None, type_v=None, flash_attn=None,
                 bint offload_kqv=True, bint op_offload=True, bint swa_full=True,
                 kv_unified=None, bint embeddings=False):
        check_gguf(path)
        self.path = os.fsencode(os.fspath(path))
        self._keep = []
        cdef size_t max_dev = L.llama_max_devices()
        cdef size_t max_tbo = L.llama_max_tensor_buft_overrides()
        self.mp = L.llama_model_default_params()
        self.mp.n_gpu_layers = n_gpu_layers
        if isinstance(split_mode, str) and split_mode in _SPLIT_MODES:
            self.mp.split_mode = _SPLIT_MODES[split_mode]
        elif isinstance(split_mode, int) and split_mode in _SPLIT_MODES.values():
            self.mp.split_mode = split_mode
        else:
            raise ValueError(f"split_mode must be one of {sorted(_SPLIT_MODES)}, got {split_mode!r}")
        if main_gpu < 0:
            raise ValueError(f"main_gpu must be >= 0, got {main_gpu}")
        self.mp.main_gpu = main_gpu
        # writable buffers common_fit_params fills (it needs them even when left unset)
        self.split = <float *> calloc(max_dev, sizeof(float))
        self.tbo = <L.llama_model_tensor_buft_override *> calloc(
            max_tbo + 1, sizeof(L.llama_model_tensor_buft_override))
        if self.split == NULL or self.tbo == NULL:
            raise MemoryError("cannot allocate the fit buffers")
        if tensor_split is not None:
            vals = [float(x) for x in tensor_split]
            if len(vals) > max_dev:
                raise ValueError(f"tensor_split has {len(vals)} entries; this build supports "
                                 f"at most {max_dev} devices")
            if any((not v == v) or v < 0 or v == float("inf") for v in vals):
                raise ValueError("tensor_split values must be finite and >= 0")
            for i, v in enumerate(vals):
                self.split[i] = v
            if any(vals):
                self.mp.tensor_split = self.split
        if tensor_buft_overrides:
            items = list(tensor_buft_overrides)
            if len(items) > max_tbo:
                raise ValueError(f"at most {max_tbo} tensor_buft_overrides, got {len(items)}")
            for i, (pattern, buft_name) in enumerate(items):
                b = str(pattern).encode()
                self._keep.append(b)
                self.tbo[i].pattern = b
                self.tbo[i].buft = _buft_by_name(str(buft_name))
            self.mp.tensor_buft_overrides = self.tbo
        n_ctx, n_batch, n_ubatch, n_seq_max = int(n_ctx), int(n_batch), int(n_ubatch), int(n_seq_max)
        if n_ctx < 0 or n_ctx > 0xFFFFFFFF or (0 < n_ctx < 8):
            raise ValueError(f"n_ctx must be 0 (from the model) or 8..2**32-1, got {n_ctx}")
        if n_batch < 1 or n_ubatch < 1 or n_batch > 0xFFFFFFFF or n_ubatch > 0xFFFFFFFF:
            raise ValueError(f"n_batch and n_ubatch must be >= 1, got {n_batch} and {n_ubatch}")
        if n_seq_max < 1 or n_seq_max > L.llama_max_parallel_sequences():
            raise ValueError(f"n_seq_max must be 1..{L.llama_max_parallel_sequences()}, "
                             f"got {n_seq_max}")
        self.cp = L.llama_context_default_params()
        self.cp.n_ctx = n_ctx
        self.cp.n_batch = n_batch
        self.cp.n_ubatch = min(n_ubatch, n_batch)
        self.cp.n_seq_max = n_seq_max
        self.cp.embeddings = embeddings
        self.cp.flash_attn_type = <L.llama_flash_attn_type> _enum_arg(_FLASH_ATTN, flash_attn,
                                                                     "flash_attn")
        if type_k is not None:
            self.cp.type_k = <G.ggml_type> _enum_arg(_CACHE_TYPES, type_k, "type_k")
        if type_v is not None:
            self.cp.type_v = <G.ggml_type> _enum_arg(_CACHE_TYPES, type_v, "type_v")
        self.cp.offload_kqv = offload_kqv
        self.cp.op_offload = op_offload
        self.cp.swa_full = swa_full
        if kv_unified is not None:
            self.cp.kv_unified = bool(kv_unified)


def device_memory_estimate(path, **params):
    """Measure, without allocating, what loading `path` with `params` (_FitParams keywords)
    would use. Returns (rows, hparams): rows are (name, description, total, free, model,
    context, compute) per device, the host ("Host") last; hparams has n_layer, n_ctx_train,
    n_expert."""
    cdef _FitParams fp = _FitParams(path, **params)
    cdef vector[GB.ggml_backend_dev_t] devs
    cdef uint32_t hp_ngl = 0, hp_nct = 0, hp_nex = 0
    cdef vector[CF.common_device_memory_data] d
    cdef const char * c_path = fp.path
    cdef uint64_t mark = S.log_mark()
    CL.common_log_set_verbosity_thold(-1)
    try:
        with nogil:
            d = device_memory_data_locked(c_path, &fp.mp, &fp.cp, devs, hp_ngl, hp_nct,
                                          hp_nex, G.GGML_LOG_LEVEL_ERROR)
    except RuntimeError as e:
        raise ModelLoadError(f"cannot estimate the memory of {os.fsdecode(fp.path)}: {e}: "
                             f"{_recent_log(mark) or 'llama.cpp gave no reason'}") from None
    rows = []
    cdef size_t i
    for i in range(devs.size()):
        rows.append((GB.ggml_backend_dev_name(devs[i]).decode("utf-8", "replace"),
                     GB.ggml_backend_dev_description(devs[i]).decode("utf-8", "replace"),
                     d[i].total, d[i].free, d[i].model, d[i].context, d[i].compute))
    i = d.size() - 1
    rows.append(("Host", "system memory", d[i].total, d[i].free, d[i].model, d[i].context,
                 d[i].compute))
    return rows, {"n_layer": hp_ngl, "n_ctx_train": hp_nct, "n_expert": hp_nex}


def fit_params(path, *, margin_bytes, n_ctx_min=4096, **params):
    """llama.cpp's common_fit_params over `params` (_FitParams keywords). n_gpu_layers=-1 (its
    default) lets it choose the offload; n_ctx=0 lets it shrink the training context down to
    n_ctx_min. margin_bytes: memory to leave free on every device (one int, or one per device).
    Returns a dict: status ("success", "failure": no fit found, the parameters unchanged where
    it stopped, "error"), n_gpu_layers, n_ctx, tensor_split (None for one device) and
    tensor_buft_overrides ([(pattern, buffer type name)])."""
    cdef _FitParams fp = _FitParams(path, **params)
    cdef size_t max_dev = L.llama_max_devices()
    if isinstance(margin_bytes, (list, tuple)):
        margins = [int(m) for m in margin_bytes]
        if not margins or len(margins) > max_dev:
            raise ValueError(f"margin_bytes needs 1..{max_dev} values, got {len(margins)}")
        margins += [margins[-1]] * (max_dev - len(margins))
    else:
        margins = [int(margin_bytes)] * max_dev
    if any(m < 0 or m > (1 << 62) for m in margins):
        raise ValueError(f"margin_bytes must be 0..2**62, got {margin_bytes!r}")
    n_ctx_min = int(n_ctx_min)
    if n_ctx_min < 0 or n_ctx_min > 0xFFFFFFFF:
        raise ValueError(f"n_ctx_min must be 0..2**32-1, got {n_ctx_min}")
    cdef size_t * c_margins = <size_t *> calloc(max_dev, sizeof(size_t))
    if c_margins == NULL:
        raise MemoryError("cannot allocate the fit margins")
    cdef size_t i
    for i in range(max_dev):
        c_margins[i] = margins[i]
    cdef const char * c_path = fp.path
    cdef uint32_t c_min = n_ctx_min
    cdef CF.common_params_fit_status st
    CL.common_log_set_verbosity_thold(-1)
    try:
        with nogil:
            st = fit_params_locked(c_path, &fp.mp, &fp.cp, fp.split, fp.tbo, c_margins,
                                   c_min, G.GGML_LOG_LEVEL_ERROR)
    finally:
        free(c_margins)
    split = None
    if any(fp.split[i] for i in range(max_dev)):      # written only for several devices
        split = [fp.split[i] for i in range(max_dev)]
        while split and split[-1] == 0:
            split.pop()
    overrides = []
    i = 0
    while i < L.llama_max_tensor_buft_overrides() and fp.tbo[i].pattern != NULL:
        overrides.append((fp.tbo[i].pattern.decode(),
                          GB.ggml_backend_buft_name(fp.tbo[i].buft).decode()))
        i += 1
    return {"status": _FIT_STATUS.get(st, "error"), "n_gpu_layers": fp.mp.n_gpu_layers,
            "n_ctx": fp.cp.n_ctx, "tensor_split": split, "tensor_buft_overrides": overrides}


def _context_memory_rows(Context ctx not None):
    """What a loaded Context uses, per device then the host: rows as device_memory_estimate's."""
    ctx._check()
    cdef vector[device_memory] d = context_breakdown(ctx._ctx)
    cdef const L.llama_model * m = L.llama_get_model(ctx._ctx)
    rows = []
    cdef size_t i
    for i in range(d.size() - 1):
        rows.append((device_name(m, i).decode("utf-8", "replace"),
                     device_description(m, i).decode("utf-8", "replace"),
                     d[i].total, d[i].free, d[i].model, d[i].context, d[i].compute))
    i = d.size() - 1
    rows.append(("Host", "system memory", d[i].total, d[i].free, d[i].model, d[i].context,
                 d[i].compute))
    return rows
