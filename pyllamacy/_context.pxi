# Context: owns a llama_context (KV cache, compute buffers) over a Model it keeps alive.

_STATE_MAGIC = b"PYLC"
# 1: magic, version, n_logits, logits, llama.cpp's state; 2: the same with a CRC-32 of what
# follows the 16-byte header (after n_logits), checked on load
cdef uint32_t _STATE_VERSION = 2
# a session file (llama.cpp's format) ends with this and the CRC-32 of what precedes it
_SESSION_TRAILER = b"PYLCRC32"


def _file_crc32(f, size):
    """CRC-32 of the first `size` bytes of open file `f` (-1: all of it)."""
    f.seek(0)
    crc = 0
    left = size
    while left != 0:
        chunk = f.read(1 << 24 if left < 0 else min(left, 1 << 24))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        if left > 0:
            left -= len(chunk)
    return crc & 0xFFFFFFFF

_POOLING = {None: L.LLAMA_POOLING_TYPE_UNSPECIFIED, "unspecified": L.LLAMA_POOLING_TYPE_UNSPECIFIED,
            "none": L.LLAMA_POOLING_TYPE_NONE, "mean": L.LLAMA_POOLING_TYPE_MEAN,
            "cls": L.LLAMA_POOLING_TYPE_CLS, "last": L.LLAMA_POOLING_TYPE_LAST,
            "rank": L.LLAMA_POOLING_TYPE_RANK}
_ROPE_SCALING = {None: L.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED,
                 "unspecified": L.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED,
                 "none": L.LLAMA_ROPE_SCALING_TYPE_NONE, "linear": L.LLAMA_ROPE_SCALING_TYPE_LINEAR,
                 "yarn": L.LLAMA_ROPE_SCALING_TYPE_YARN,
                 "longrope": L.LLAMA_ROPE_SCALING_TYPE_LONGROPE}
_ATTENTION = {None: L.LLAMA_ATTENTION_TYPE_UNSPECIFIED, "causal": L.LLAMA_ATTENTION_TYPE_CAUSAL,
              "non_causal": L.LLAMA_ATTENTION_TYPE_NON_CAUSAL}
_FLASH_ATTN = {None: L.LLAMA_FLASH_ATTN_TYPE_AUTO, "auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO,
               True: L.LLAMA_FLASH_ATTN_TYPE_ENABLED, "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
               False: L.LLAMA_FLASH_ATTN_TYPE_DISABLED, "off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED}
_CACHE_TYPES = {"f32": G.GGML_TYPE_F32, "f16": G.GGML_TYPE_F16, "bf16": G.GGML_TYPE_BF16,
                "q8_0": G.GGML_TYPE_Q8_0, "q4_0": G.GGML_TYPE_Q4_0, "q4_1": G.GGML_TYPE_Q4_1,
                "q5_0": G.GGML_TYPE_Q5_0, "q5_1": G.GGML_TYPE_Q5_1, "iq4_nl": G.GGML_TYPE_IQ4_NL}


def default_n_threads():
    """Threads to use by default: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


cdef int _enum_arg(dict table, value, str name) except? -999:
    if isinstance(value, str):
        value = value.lower()
    try:
        return table[value]
    except (KeyError, TypeError):
        pass
    if isinstance(value, int) and not isinstance(value, bool) and value in table.values():
        return value
    choices = sorted(str(k) for k in table if k is not None)
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


cdef inline bint _in_main_thread():
    return PyThread_get_thread_ident() == _MAIN_THREAD_IDENT


@cython.no_gc_clear     # __dealloc__ needs self.model and the attached adapters
cdef class Context:
    """An inference context (KV cache + compute buffers) for a Model.

    Context(model, *, n_ctx=0, n_batch=2048, n_ubatch=512, n_seq_max=1, n_threads=None,
            n_threads_batch=None, embeddings=False, pooling_type=None, attention_type=None,
            flash_attn=None, offload_kqv=True, type_k=None, type_v=None, rope_scaling_type=None,
            rope_freq_base=0.0, rope_freq_scale=0.0, yarn_ext_factor=-1.0, yarn_attn_factor=-1.0,
            yarn_beta_fast=-1.0, yarn_beta_slow=-1.0, yarn_orig_ctx=0, swa_full=True,
            kv_unified=None, op_offload=True, no_perf=True)

    n_ctx=0 takes the model's training context. flash_attn=None is llama.cpp's "auto".
    One call at a time: a second thread using the context while it works gets BusyError.
    """
    cdef L.llama_context * _ctx
    cdef readonly Model model
    cdef S.AbortFlag * _abort
    cdef L.llama_batch _batch          # reusable batch for eval()/generation
    # one-token decodes of the generation loop: llama_process() over a reused extended batch
    # (llama_decode() converts a llama_batch into a new one on every call)
    cdef L.llama_batch_ext * _bx
    cdef bint _batch_alive
    cdef long _owner                   # thread ident while a call is running, else 0
    cdef readonly uint64_t epoch       # bumped by every change to the KV cache
    cdef int32_t _n_vocab
    # llama.cpp's state holds the KV cache but not the last logits: state_get() saves them and
    # state_set() restores them here, so generation continues exactly where it left off
    cdef vector[float] _restored_logits
    cdef bint _has_restored
    cdef bint _logits_valid
    # backend sampling: a copy of a generation's sampler chain, run inside the compute graph
    # for sequence _bs_seq once attached (llama_set_sampler). The context owns the copy and
    # drops it (detach + free) when anything else uses the context.
    cdef L.llama_sampler * _bs_chain
    cdef int _bs_seq
    cdef bint _bs_attached
    cdef uint64_t _bs_id
    cdef bint _no_raw_logits           # the last decode left no raw logits (backend sampled)
    cdef tuple _loras                  # ((LoraAdapter, scale), ...) attached, each acquired
    cdef object __weakref__

    def __cinit__(self):
        self._ctx = NULL
        self._has_restored = False
        self._logits_valid = False
        self._abort = NULL
        self._batch_alive = False
        self._owner = 0
        self.epoch = 0
        self._bs_chain = NULL
        self._bs_attached = False
        self._bs_id = 0
        self._bx = NULL
        self._no_raw_logits = False
        self._loras = ()

    def __init__(self, Model model not None, *, uint32_t n_ctx=0, uint32_t n_batch=2048,
                 uint32_t n_ubatch=512, uint32_t n_seq_max=1, n_threads=None,
                 n_threads_batch=None, bint embeddings=False, pooling_type=None,
                 attention_type=None, flash_attn=None, bint offload_kqv=True, type_k=None,
                 type_v=None, rope_scaling_type=None, float rope_freq_base=0.0,
                 float rope_freq_scale=0.0, float yarn_ext_factor=-1.0,
                 float yarn_attn_factor=-1.0, float yarn_beta_fast=-1.0,
                 float yarn_beta_slow=-1.0, uint32_t yarn_orig_ctx=0, bint swa_full=True,
                 kv_unified=None, bint op_offload=True, bint no_perf=True):
        if self._ctx != NULL:
            raise RuntimeError("Context.__init__ called twice")
        model._check()
        if model.vocab_only:
            raise ValueError("this Model was loaded with vocab_only=True; it has no weights to run")
        if n_batch < 1 or n_ubatch < 1:
            raise ValueError(f"n_batch and n_ubatch must be >= 1, got {n_batch} and {n_ubatch}")
        if n_seq_max < 1 or n_seq_max > L.llama_max_parallel_sequences():
            raise ValueError(f"n_seq_max must be 1..{L.llama_max_parallel_sequences()}, "
                             f"got {n_seq_max}")
        if n_ctx > 0 and n_ctx < 8:
            raise ValueError(f"n_ctx must be 0 (from the model) or >= 8, got {n_ctx}")
        cdef L.llama_context_params p = L.llama_context_default_params()
        p.n_ctx = n_ctx
        p.n_batch = n_batch
        p.n_ubatch = min(n_ubatch, n_batch)
        p.n_seq_max = n_seq_max
        nt = default_n_threads() if n_threads is None else int(n_threads)
        ntb = nt if n_threads_batch is None else int(n_threads_batch)
        if nt < 1 or ntb < 1 or nt > 4096 or ntb > 4096:
            raise ValueError(f"n_threads and n_threads_batch must be 1..4096, got {nt} and {ntb}")
        p.n_threads = nt
        p.n_threads_batch = ntb
        p.embeddings = embeddings
        p.pooling_type = <L.llama_pooling_type> _enum_arg(_POOLING, pooling_type, "pooling_type")
        p.attention_type = <L.llama_attention_type> _enum_arg(_ATTENTION, attention_type,
                                                             "attention_type")
        p.flash_attn_type = <L.llama_flash_attn_type> _enum_arg(_FLASH_ATTN, flash_attn,
                                                               "flash_attn")
        p.rope_scaling_type = <L.llama_rope_scaling_type> _enum_arg(_ROPE_SCALING,
                                                                   rope_scaling_type,
                                                                   "rope_scaling_type")
        for name, v in (("rope_freq_base", rope_freq_base), ("rope_freq_scale", rope_freq_scale)):
            if not isfinite(v) or v < 0:
                raise ValueError(f"{name} must be finite and >= 0 (0 = from the model), got {v}")
        p.rope_freq_base = rope_freq_base
        p.rope_freq_scale = rope_freq_scale
        p.yarn_ext_factor = yarn_ext_factor
        p.yarn_attn_factor = yarn_attn_factor
        p.yarn_beta_fast = yarn_beta_fast
        p.yarn_beta_slow = yarn_beta_slow
        p.yarn_orig_ctx = yarn_orig_ctx
        if type_k is not None:
            p.type_k = <G.ggml_type> _enum_arg(_CACHE_TYPES, type_k, "type_k")
        if type_v is not None:
            p.type_v = <G.ggml_type> _enum_arg(_CACHE_TYPES, type_v, "type_v")
        p.offload_kqv = offload_kqv
        p.op_offload = op_offload
        p.swa_full = swa_full
        if kv_unified is not None:
            p.kv_unified = bool(kv_unified)
        p.no_perf = no_perf
        self._abort = S.abort_flag_new()
        p.abort_callback = S.abort_callback
        p.abort_callback_data = <void *> self._abort

        cdef uint64_t mark = S.log_mark()
        cdef L.llama_context * ctx = NULL
        with nogil:
            ctx = L.llama_init_from_model(model._model, p)
        if ctx == NULL:
            raise ContextCreateError(f"failed to create a context (n_ctx={n_ctx}, n_batch={n_batch}): "
                                     f"{_recent_log(mark) or 'llama.cpp gave no reason'}")
        self._ctx = ctx
        self.model = model
        model._acquire()
        self._n_vocab = model._n_vocab
        self._batch = L.llama_batch_init(L.llama_n_batch(ctx), 0, 1)
        self._batch_alive = True
        self._bx = L.llama_batch_ext_init(ctx)
        if self._bx == NULL:
            raise MemoryError("llama_batch_ext_init failed")

    def memory_breakdown(self):
        """What this context and its model use, per device then the host, as llama.cpp counts
        it (llama_get_memory_breakdown): a pyllamacy.memory.MemoryBreakdown."""
        from pyllamacy.memory import MemoryBreakdown
        return MemoryBreakdown.from_rows(_context_memory_rows(self), n_ctx=self.n_ctx)

    # -- lifetime -----------------------------------------------------------------------------

    cdef int _check(self) except -1:
        if self._ctx == NULL:
            raise ClosedError("this Context is closed")
        return 0

    cdef void _bs_drop(self) noexcept nogil:
        """Detach and free the backend sampler chain, if any."""
        S.detach_free_sampler(self._ctx, self._bs_seq, self._bs_chain, self._bs_attached)
        self._bs_chain = NULL
        self._bs_attached = False

    cdef int _enter(self, bint keep_backend_sampler=False) except -1:
        """Claim the context for one call; BusyError if another call is running."""
        if self._ctx == NULL:
            raise ClosedError("this Context is closed")
        if self._owner != 0:
            if self._owner == <long> PyThread_get_thread_ident():
                raise BusyError("this Context is already running a call in this thread "
                                "(e.g. eval from inside a generation); finish or close it first")
            raise BusyError("this Context is in use by another thread; a Context serves one "
                            "call at a time: use one Context per thread")
        self._owner = <long> PyThread_get_thread_ident()
        S.abort_flag_set(self._abort, False)
        if not keep_backend_sampler:
            self._bs_drop()
        return 0

    cdef inline void _leave(self) noexcept:
        self._owner = 0

    cdef int _check_read(self) except -1:
        if self._ctx == NULL:
            raise ClosedError("this Context is closed")
        if self._owner != 0 and self._owner != <long> PyThread_get_thread_ident():
            raise BusyError("this Context is in use by another thread")
        return 0

    def close(self):
        """Free the context (and release its model). Idempotent."""
        if self._ctx == NULL:
            return
        if self._owner != 0:
            raise BusyError("cannot close a Context while a call is running on it")
        if self._batch_alive:
            L.llama_batch_free(self._batch)
            self._batch_alive = False
        self._bs_drop()
        if self._bx != NULL:
            L.llama_batch_ext_free(self._bx)
            self._bx = NULL
        with nogil:
            L.llama_free(self._ctx)
        self._ctx = NULL
        self._release_loras()
        if self.model is not None:
            self.model._release()

    @property
    def closed(self):
        return self._ctx == NULL

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        if self._batch_alive:
            L.llama_batch_free(self._batch)
            self._batch_alive = False
        self._bs_drop()
        if self._bx != NULL:
            L.llama_batch_ext_free(self._bx)
            self._bx = NULL
        if self._ctx != NULL:
            L.llama_free(self._ctx)
            self._ctx = NULL
            self._release_loras()
            if self.model is not None:
                self.model._release()
        if self._abort != NULL:
            S.abort_flag_free(self._abort)
            self._abort = NULL

    def __reduce__(self):
        raise TypeError("pyllamacy.Context cannot be pickled; use state_get()/state_set()")

    cdef void _release_loras(self) noexcept:
        cdef LoraAdapter a
        old, self._loras = self._loras, ()
        for pair in old:
            a = <LoraAdapter> pair[0]
            a._release()

    # -- LoRA adapters ----------------------------------------------------------------------------

    def set_loras(self, adapters):
        """Attach LoRA adapters, replacing those attached before.

        adapters: a LoraAdapter (scale 1.0), a list of LoraAdapter or (LoraAdapter, scale)
        pairs, a dict {adapter: scale}, or None / [] to detach all. Each adapter must have been
        loaded for this context's model; a scale of 0 leaves that adapter out. llama.cpp adds
        scale * alpha / rank * B·A to each adapted weight. What the KV cache already holds was
        computed under the earlier adapters: memory_clear() (or seq_rm()) for a clean start.
        """
        cdef list pairs = _lora_pairs(adapters, self.model)
        self._enter(True)
        cdef size_t n = len(pairs), i
        cdef vector[L.llama_adapter_lora *] c_adapters
        cdef vector[float] c_scales
        cdef LoraAdapter a
        try:
            c_adapters.resize(n)
            c_scales.resize(n)
            for i in range(n):
                a = <LoraAdapter> pairs[i][0]
                c_adapters[i] = a._c
                c_scales[i] = pairs[i][1]
            with nogil:
                L.llama_set_adapters_lora(self._ctx, c_adapters.data() if n else NULL, n,
                                          c_scales.data() if n else NULL)
            for i in range(n):
                (<LoraAdapter> pairs[i][0])._acquire()
            self._release_loras()
            self._loras = tuple(pairs)
        finally:
            self._leave()

    def clear_loras(self):
        """Detach every LoRA adapter (the same as set_loras(None))."""
        self.set_loras(None)

    @property
    def loras(self):
        """The attached adapters: [(LoraAdapter, scale), ...]."""
        self._check()
        return list(self._loras)


    def cancel(self):
        """Ask the running call (from any thread) to stop as soon as possible."""
        if self._abort != NULL:
            S.abort_flag_set(self._abort, True)

    # -- sizes --------------------------------------------------------------------------------

    @property
    def n_ctx(self):
        self._check(); return L.llama_n_ctx(self._ctx)

    @property
    def n_ctx_seq(self):
        self._check(); return L.llama_n_ctx_seq(self._ctx)

    @property
    def n_batch(self):
        self._check(); return L.llama_n_batch(self._ctx)

    @property
    def n_ubatch(self):
        self._check(); return L.llama_n_ubatch(self._ctx)

    @property
    def n_seq_max(self):
        self._check(); return L.llama_n_seq_max(self._ctx)

    @property
    def n_threads(self):
        self._check(); return L.llama_n_threads(self._ctx)

    @property
    def n_threads_batch(self):
        self._check(); return L.llama_n_threads_batch(self._ctx)

    @property
    def pooling_type(self):
        self._check()
        v = L.llama_get_pooling_type(self._ctx)
        for k, val in _POOLING.items():
            if val == v and k is not None:
                return k
        return v

    def set_n_threads(self, int n_threads, n_threads_batch=None):
        self._check()
        ntb = n_threads if n_threads_batch is None else int(n_threads_batch)
        if n_threads < 1 or ntb < 1:
            raise ValueError("thread counts must be >= 1")
        L.llama_set_n_threads(self._ctx, n_threads, ntb)

    def set_embeddings(self, bint value):
        self._check(); L.llama_set_embeddings(self._ctx, value)

    def set_causal_attn(self, bint value):
        self._check(); L.llama_set_causal_attn(self._ctx, value)

    # -- KV cache -----------------------------------------------------------------------------

    cdef int _check_seq(self, int seq_id, bint allow_all=False) except -1:
        cdef int n = L.llama_n_seq_max(self._ctx)
        if allow_all and seq_id == -1:
            return 0
        if seq_id < 0 or seq_id >= n:
            raise ValueError(f"seq_id {seq_id} is out of range: this context has n_seq_max={n}")
        return 0

    def memory_clear(self, bint data=True):
        """Forget every sequence in the KV cache."""
        self._enter()
        try:
            L.llama_memory_clear(L.llama_get_memory(self._ctx), data)
            self.epoch += 1
            self._has_restored = False
            self._logits_valid = False
        finally:
            self._leave()

    def seq_rm(self, int seq_id=0, int p0=0, int p1=-1):
        """Remove positions [p0, p1) of a sequence (-1 seq_id: all; p1=-1: to the end)."""
        self._enter()
        cdef int32_t pm
        try:
            self._check_seq(seq_id, True)
            self.epoch += 1
            # logits of the last decode are stale once the position they came from is gone
            pm = -1 if seq_id < 0 else L.llama_memory_seq_pos_max(L.llama_get_memory(self._ctx),
                                                                  seq_id)
            if seq_id < 0 or (p0 <= pm and (p1 < 0 or p1 > pm)):
                self._logits_valid = False
                self._has_restored = False
            return bool(L.llama_memory_seq_rm(L.llama_get_memory(self._ctx), seq_id, p0, p1))
        finally:
            self._leave()

    def seq_cp(self, int src, int dst, int p0=0, int p1=-1):
        self._enter()
        try:
            self._check_seq(src); self._check_seq(dst)
            L.llama_memory_seq_cp(L.llama_get_memory(self._ctx), src, dst, p0, p1)
            self.epoch += 1
        finally:
            self._leave()

    def seq_keep(self, int seq_id):
        self._enter()
        try:
            self._check_seq(seq_id)
            L.llama_memory_seq_keep(L.llama_get_memory(self._ctx), seq_id)
            self.epoch += 1
        finally:
            self._leave()

    def seq_add(self, int seq_id, int p0, int p1, int delta):
        self._enter()
        try:
            self._check_seq(seq_id)
            if not L.llama_memory_can_shift(L.llama_get_memory(self._ctx)):
                raise LlamaError("this model's memory cannot shift positions")
            L.llama_memory_seq_add(L.llama_get_memory(self._ctx), seq_id, p0, p1, delta)
            self.epoch += 1
        finally:
            self._leave()

    def seq_pos_max(self, int seq_id=0):
        """Largest position stored for the sequence, -1 when empty."""
        self._check_read(); self._check_seq(seq_id)
        return L.llama_memory_seq_pos_max(L.llama_get_memory(self._ctx), seq_id)

    def seq_pos_min(self, int seq_id=0):
        self._check_read(); self._check_seq(seq_id)
        return L.llama_memory_seq_pos_min(L.llama_get_memory(self._ctx), seq_id)

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, Batch batch not None):
        """Decode a Batch (tokens checked against the vocabulary and n_seq_max first)."""
        self._enter()
        try:
            batch._check()
            if batch._batch.n_tokens == 0:
                raise ValueError("cannot decode an empty batch")
            self._check_batch(batch._batch)
            self._decode_batch(batch._batch)
        finally:
            self._leave()

    cdef int _check_batch(self, L.llama_batch b) except -1:
        cdef int32_t i, j
        cdef int n_seq = L.llama_n_seq_max(self._ctx)
        if b.n_tokens > <int32_t> L.llama_n_batch(self._ctx):
            raise ValueError(f"batch of {b.n_tokens} tokens exceeds n_batch="
                             f"{L.llama_n_batch(self._ctx)}")
        for i in range(b.n_tokens):
            if b.token[i] < 0 or b.token[i] >= self._n_vocab:
                raise IndexError(f"token id {b.token[i]} at batch index {i} is out of range for "
                                 f"a vocabulary of {self._n_vocab} tokens")
            if b.pos[i] < 0:
                raise ValueError(f"negative position {b.pos[i]} at batch index {i}")
            if b.pos[i] >= <int32_t> L.llama_n_ctx_seq(self._ctx):
                raise ContextOverflowError(f"position {b.pos[i]} at batch index {i} is beyond "
                                           f"the context window (n_ctx={L.llama_n_ctx_seq(self._ctx)})")
            for j in range(b.n_seq_id[i]):
                if b.seq_id[i][j] < 0 or b.seq_id[i][j] >= n_seq:
                    raise ValueError(f"seq_id {b.seq_id[i][j]} at batch index {i} is out of "
                                     f"range (n_seq_max={n_seq})")
        return 0

    cdef int _decode_batch(self, L.llama_batch b) except -1:
        """Decode a caller-built multi-sequence batch; on abort every touched sequence is cut
        back to where it was before the call."""
        cdef int32_t rc
        cdef bint watch = _in_main_thread() and S.sigint_watch_begin(self._abort)
        cdef bint interrupted
        cdef dict first = {}
        cdef int32_t i, j
        for i in range(b.n_tokens):
            for j in range(b.n_seq_id[i]):
                s = b.seq_id[i][j]
                if s not in first or b.pos[i] < first[s]:
                    first[s] = b.pos[i]
        try:
            with nogil:
                rc = L.llama_decode(self._ctx, b)
            interrupted = watch and S.sigint_seen(self._abort)
        finally:
            if watch:
                S.sigint_watch_end(self._abort)
        self.epoch += 1
        self._has_restored = False
        self._logits_valid = rc == 0
        self._no_raw_logits = False
        if rc == 0:
            return 0
        if rc == 2 or rc < -1:
            for s, p in first.items():
                L.llama_memory_seq_rm(L.llama_get_memory(self._ctx), s, p, -1)
        if rc == 2 and interrupted:
            PyErr_CheckSignals()
            raise KeyboardInterrupt()
        raise _decode_error(rc, "llama_decode")

    cdef int32_t _next_pos(self, int seq_id):
        return L.llama_memory_seq_pos_max(L.llama_get_memory(self._ctx), seq_id) + 1

    def eval(self, tokens, pos=None, int seq_id=0, logits="last"):
        """Decode `tokens` into sequence `seq_id` starting at `pos` (default: after what the
        sequence holds), in n_batch chunks, without the GIL.

        logits: "last" (default), "all" or "none" — which positions keep output logits.
        Returns the position after the last token. On any failure the sequence is rolled back
        to where it was before the call.
        """
        self._enter()
        try:
            return self._eval(tokens, pos, seq_id, logits)
        finally:
            self._leave()

    def eval_multimodal(self, prompt, pos=None, int seq_id=0):
        """Decode a MultimodalInput (Projector.tokenize): its text chunks as tokens, its media
        chunks encoded by the projector, starting at `pos` (default: after what the sequence
        holds), with logits for the last position. Returns the position after the prompt; on
        failure the sequence is rolled back to `pos`."""
        if not isinstance(prompt, MultimodalInput):
            raise TypeError(f"eval_multimodal takes a MultimodalInput (Projector.tokenize), "
                            f"not {type(prompt).__name__}")
        self._enter()
        try:
            return _eval_multimodal(self, <MultimodalInput> prompt, pos, seq_id)
        finally:
            self._leave()

    cdef int32_t _eval(self, tokens, pos, int seq_id, logits) except -1:
        cdef vector[L.llama_token] toks
        self.model._fill_tokens(tokens, toks)
        self._check_seq(seq_id)
        if logits not in ("last", "all", "none"):
            raise ValueError(f"logits must be 'last', 'all' or 'none', got {logits!r}")
        cdef int32_t n = <int32_t> toks.size()
        if n == 0:
            raise ValueError("eval needs at least one token")
        cdef int32_t p0 = self._start_pos(pos, seq_id, n, "tokens")
        cdef int32_t n_batch = L.llama_n_batch(self._ctx)
        cdef int32_t start = 0, i, m
        cdef bint all_logits = logits == "all"
        cdef bint last_logits = logits == "last"
        cdef int32_t rc = 0
        cdef bint watch = _in_main_thread() and S.sigint_watch_begin(self._abort)
        cdef bint interrupted = False
        try:
            with nogil:
                while start < n:
                    m = n - start if n - start < n_batch else n_batch
                    for i in range(m):
                        self._batch.token[i] = toks[start + i]
                        self._batch.pos[i] = p0 + start + i
                        self._batch.n_seq_id[i] = 1
                        self._batch.seq_id[i][0] = seq_id
                        self._batch.logits[i] = all_logits
                    if last_logits and start + m == n:
                        self._batch.logits[m - 1] = True
                    self._batch.n_tokens = m
                    rc = L.llama_decode(self._ctx, self._batch)
                    if rc != 0:
                        break
                    start += m
            interrupted = watch and S.sigint_seen(self._abort)
        finally:
            if watch:
                S.sigint_watch_end(self._abort)
        self.epoch += 1
        if rc != 0:
            self._decode_failed(rc, seq_id, p0, interrupted,
                                f"eval of {n} tokens at position {p0}", "")
        self._decoded(logits != "none")
        return p0 + n

    cdef int32_t _start_pos(self, pos, int seq_id, int32_t n, str what) except -1:
        """Where `n` positions of input go (default: after what the sequence holds); raises
        before any decode when they do not fit."""
        cdef int32_t p0 = self._next_pos(seq_id) if pos is None else pos
        if p0 < 0:
            raise ValueError(f"position must be >= 0, got {p0}")
        cdef int32_t n_ctx = L.llama_n_ctx_seq(self._ctx)
        if p0 + n > n_ctx:
            raise ContextOverflowError(
                f"{n} {what} starting at position {p0} need a context of {p0 + n} tokens, but "
                f"n_ctx is {n_ctx}: shorten the input or create the context with a larger n_ctx")
        return p0

    cdef int _decode_failed(self, int32_t rc, int seq_id, int32_t p0, bint interrupted,
                            str what, str reason) except -1:
        """Roll the sequence back to p0 and raise the error for decode code `rc` (Ctrl-C:
        KeyboardInterrupt)."""
        L.llama_memory_seq_rm(L.llama_get_memory(self._ctx), seq_id, p0, -1)
        if rc == 2 and interrupted:
            PyErr_CheckSignals()
            raise KeyboardInterrupt()
        err = _decode_error(rc, what)
        if reason:
            err.args = (f"{err.args[0]}: {reason}",) + err.args[1:]
        raise err

    cdef void _decoded(self, bint has_logits) noexcept:
        """Bookkeeping after a successful decode of new input."""
        self._has_restored = False
        self._logits_valid = has_logits
        self._no_raw_logits = False

    def encode(self, tokens, int seq_id=0):
        """Run the encoder of an encoder-decoder (or embedding) model over `tokens`."""
        self._enter()
        cdef vector[L.llama_token] toks
        cdef int32_t rc, i, n
        try:
            self.model._fill_tokens(tokens, toks)
            self._check_seq(seq_id)
            n = <int32_t> toks.size()
            if n == 0:
                raise ValueError("encode needs at least one token")
            if n > <int32_t> L.llama_n_batch(self._ctx):
                raise ContextOverflowError(f"encode takes at most n_batch="
                                           f"{L.llama_n_batch(self._ctx)} tokens, got {n}")
            for i in range(n):
                self._batch.token[i] = toks[i]
                self._batch.pos[i] = i
                self._batch.n_seq_id[i] = 1
                self._batch.seq_id[i][0] = seq_id
                self._batch.logits[i] = True
            self._batch.n_tokens = n
            with nogil:
                rc = L.llama_encode(self._ctx, self._batch)
            if rc != 0:
                raise _decode_error(rc, "llama_encode")
        finally:
            self._leave()

    def generate(self, Sampler sampler not None, int max_tokens=-1, int seq_id=0,
                 stop_tokens=None, stop_sequences=None, stop_strings=None, history=None,
                 draft=None, int n_draft=8, int ngram_max=3, bint backend_sampling=False):
        """Generate from the logits of the last eval() -> Generation.

        Iterate the Generation for tokens one at a time, or call .run() for all of them in one
        call without the GIL. max_tokens=-1: until end-of-generation or the context is full.
        stop_tokens: ids that end generation (returned); stop_sequences: lists of ids;
        stop_strings: text that ends generation once it appears in the output (the token that
        completes it is returned; trimming the text is the caller's job).

        Speculative decoding: draft="ngram" (prompt lookup over `history` + the output), a
        Context of a small model with the same vocabulary, or a Python callable taking the
        sequence so far (np.intc array: history + output) and returning draft token ids (called
        with the GIL once per step); up to n_draft tokens are verified per llama_decode. The
        tokens are exactly those of plain decoding.
        history: the tokens already in the sequence (the prompt), for prompt lookup.

        backend_sampling=True runs the sampler chain inside the compute graph (on the GPU when
        the model is there): llama.cpp hands back the token instead of copying every logit
        to the host. Used only where the chain allows (Sampler.backend_capable) and without
        speculative decoding; `Generation.backend_sampling` tells. The chain runs as a copy
        (the Sampler passed in does not see the tokens), the RNG of `dist` draws in the same
        order, and logits() of those steps are not available. Experimental in llama.cpp.
        """
        return _generate(self, sampler, max_tokens, seq_id, stop_tokens, stop_sequences,
                         stop_strings, history, draft, n_draft, ngram_max, backend_sampling)

    # -- outputs ------------------------------------------------------------------------------

    def logits(self, int32_t i=-1):
        """Logits of output `i` of the last decode (-1: the last one), a float32 array (copy)."""
        self._check_read()
        cdef float * p
        if self._has_restored and i == -1:
            p = self._restored_logits.data()
        elif self._no_raw_logits:
            raise IndexError("no logits: the last decode sampled inside the compute graph "
                             "(backend_sampling) and returned only the token")
        else:
            p = L.llama_get_logits_ith(self._ctx, i)
        if p == NULL:
            raise IndexError(f"no logits for output {i}: decode with logits for that position")
        arr = np.empty(self._n_vocab, dtype=np.float32)
        cdef float[::1] view = arr
        memcpy(&view[0], p, self._n_vocab * sizeof(float))
        return arr

    @property
    def has_logits(self):
        """Whether generate()/Sampler.sample() have last logits to start from (after an eval
        with logits, a generation step, or a state_set() of a state that carried them)."""
        return self._ctx != NULL and (self._has_restored or self._logits_valid)

    def set_logits(self, logits):
        """Make `logits` (n_vocab floats) the "last logits" that generate()/Sampler.sample()
        start from, e.g. ones saved earlier for a prefix that is still in the cache."""
        self._check_read()
        cdef const float[::1] view = np.ascontiguousarray(logits, dtype=np.float32).reshape(-1)
        if view.shape[0] != self._n_vocab:
            raise ValueError(f"expected {self._n_vocab} logits, got {view.shape[0]}")
        self._restored_logits.resize(self._n_vocab)
        memcpy(self._restored_logits.data(), &view[0], self._n_vocab * sizeof(float))
        self._has_restored = True

    def embeddings(self, int32_t i=-1):
        """Embedding of output `i` (token-level, pooling none) as a float32 array (copy)."""
        self._check_read()
        cdef float * p = L.llama_get_embeddings_ith(self._ctx, i)
        if p == NULL:
            raise IndexError(f"no embedding for output {i}: create the context with "
                             "embeddings=True and decode with outputs for that position")
        cdef int32_t n = L.llama_model_n_embd_out(self.model._model)
        arr = np.empty(n, dtype=np.float32)
        cdef float[::1] view = arr
        memcpy(&view[0], p, n * sizeof(float))
        return arr

    def seq_embeddings(self, int seq_id=0):
        """Pooled embedding of a sequence (mean/cls/last pooling), float32 array (copy)."""
        self._check_read()
        self._check_seq(seq_id)
        cdef float * p = L.llama_get_embeddings_seq(self._ctx, seq_id)
        if p == NULL:
            raise LlamaError("no pooled embedding: create the context with embeddings=True and a "
                             "pooling_type other than 'none'")
        cdef int32_t n
        if L.llama_get_pooling_type(self._ctx) == L.LLAMA_POOLING_TYPE_RANK:
            n = max(1, L.llama_model_n_cls_out(self.model._model))
        else:
            n = L.llama_model_n_embd_out(self.model._model)
        arr = np.empty(n, dtype=np.float32)
        cdef float[::1] view = arr
        memcpy(&view[0], p, n * sizeof(float))
        return arr

    # -- state --------------------------------------------------------------------------------

    def state_get(self):
        """The context state as bytes: llama.cpp's state (the KV cache) plus the last logits,
        so that state_set() + generate() continues exactly as if nothing happened."""
        self._enter()
        cdef size_t n, written, head
        cdef bytes out
        cdef uint8_t * buf
        cdef float * lg = NULL
        cdef uint32_t n_logits = 0, crc
        cdef bytes magic
        try:
            if self._has_restored:
                lg = self._restored_logits.data()
            elif self._logits_valid:
                lg = L.llama_get_logits_ith(self._ctx, -1)
            if lg != NULL:
                n_logits = self._n_vocab
            head = 16 + n_logits * sizeof(float)
            with nogil:
                n = L.llama_state_get_size(self._ctx)
            out = PyBytes_FromStringAndSize(NULL, head + n)
            buf = <uint8_t *> PyBytes_AS_STRING(out)
            magic = _STATE_MAGIC
            memcpy(buf, <const char *> magic, 4)
            memcpy(buf + 4, &_STATE_VERSION, 4)
            memcpy(buf + 8, &n_logits, 4)
            if n_logits:
                memcpy(buf + 16, lg, n_logits * sizeof(float))
            with nogil:
                written = L.llama_state_get_data(self._ctx, buf + head, n)
            if written != n:
                raise StateError(f"llama_state_get_data wrote {written} of {n} bytes")
            crc = zlib.crc32(memoryview(out)[16:]) & 0xFFFFFFFF
            memcpy(buf + 12, &crc, 4)
            return out
        finally:
            self._leave()

    def state_set(self, data):
        """Restore a state made by state_get() with the same model and context settings."""
        self._enter()
        cdef const uint8_t[::1] view
        cdef size_t n, read, head, lg_at
        cdef uint32_t n_logits
        cdef uint64_t mark = S.log_mark()
        try:
            if isinstance(data, str):
                raise TypeError("state must be bytes, not str")
            view = memoryview(data).cast("B")
            n = view.shape[0]
            if n == 0:
                raise StateError("empty state")
            head = 0
            lg_at = 0
            n_logits = 0
            if n >= 12 and bytes(view[:4]) == _STATE_MAGIC:
                version = int.from_bytes(bytes(view[4:8]), "little")
                n_logits = int.from_bytes(bytes(view[8:12]), "little")
                if version not in (1, 2):
                    raise StateError(f"unsupported pyllamacy state version {version}")
                if n_logits not in (0, self._n_vocab):
                    raise StateError(f"state holds logits for {n_logits} tokens; this model's "
                                     f"vocabulary has {self._n_vocab}")
                lg_at = 12 if version == 1 else 16
                head = lg_at + n_logits * sizeof(float)
                if n <= head:
                    raise StateError("truncated state")
                if version == 2:
                    want = int.from_bytes(bytes(view[12:16]), "little")
                    if zlib.crc32(view[16:]) & 0xFFFFFFFF != want:
                        raise StateError("the state is corrupt (its checksum does not match)")
            with nogil:
                read = L.llama_state_set_data(self._ctx, &view[head], n - head)
            self.epoch += 1
            self._has_restored = False
            self._logits_valid = False
            if read == 0:
                L.llama_memory_clear(L.llama_get_memory(self._ctx), True)
                raise StateError("could not restore the state (made with another model or "
                                 f"context size?): {_recent_log(mark) or 'no reason given'}")
            if n_logits:
                self._restored_logits.resize(n_logits)
                memcpy(self._restored_logits.data(), &view[lg_at], n_logits * sizeof(float))
                self._has_restored = True
            return read + head
        finally:
            self._leave()

    def state_save_file(self, path, tokens=()):
        """Save the state and the token ids it was built from to a session file: llama.cpp's
        format, then a 12-byte trailer with its CRC-32 (state_load_file checks it; llama.cpp's
        own loader wants the file without the trailer)."""
        self._enter()
        cdef vector[L.llama_token] toks
        cdef bytes bpath = os.fsencode(os.fspath(path))
        cdef const char * c_path = bpath
        cdef bint ok
        try:
            self.model._fill_tokens(tokens, toks)
            with nogil:
                ok = L.llama_state_save_file(self._ctx, c_path, toks.data(), toks.size())
            if not ok:
                raise StateError(f"could not save the state to {os.fsdecode(bpath)}")
            with open(bpath, "r+b") as f:
                crc = _file_crc32(f, -1)
                f.seek(0, 2)
                f.write(_SESSION_TRAILER + crc.to_bytes(4, "little"))
        finally:
            self._leave()

    def state_load_file(self, path):
        """Load a session file; returns the token ids saved with it."""
        self._enter()
        cdef vector[L.llama_token] toks
        cdef size_t n_out = 0
        cdef bint ok
        cdef uint64_t mark = S.log_mark()
        p = os.fspath(path)
        cdef bytes bpath = os.fsencode(p)
        cdef const char * c_path = bpath
        try:
            if not os.path.isfile(p):
                raise FileNotFoundError(2, "state file not found", p)
            toks.resize(L.llama_n_ctx(self._ctx) + 1)
            with open(p, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                trailer = b""
                if size >= 12:
                    f.seek(size - 12)
                    trailer = f.read(12)
                if trailer[:8] == _SESSION_TRAILER:
                    if _file_crc32(f, size - 12) != int.from_bytes(trailer[8:], "little"):
                        raise StateError(f"the state file {p} is corrupt (its checksum does "
                                         "not match)")
                    f.seek(0)
                    return self._load_session(f.read(size - 12), p, mark)
            with nogil:
                ok = L.llama_state_load_file(self._ctx, c_path, toks.data(), toks.size(), &n_out)
            self.epoch += 1
            if not ok:
                L.llama_memory_clear(L.llama_get_memory(self._ctx), True)
                raise StateError(f"could not load state from {p}: "
                                 f"{_recent_log(mark) or 'no reason given'}")
            toks.resize(n_out)
            self._has_restored = False
            self._logits_valid = False
            return list(toks)
        finally:
            self._leave()

    cdef list _load_session(self, bytes data, str p, uint64_t mark):
        """A session file's content (llama.cpp's format, trailer removed) into this context:
        what llama_state_load_file does, from memory."""
        cdef const uint8_t * buf = <const uint8_t *> PyBytes_AS_STRING(data)
        cdef size_t n = len(data), at, read
        cdef uint32_t magic, version, n_tok
        if n < 12:
            raise StateError(f"the state file {p} is truncated")
        memcpy(&magic, buf, 4)
        memcpy(&version, buf + 4, 4)
        memcpy(&n_tok, buf + 8, 4)
        if magic != L.LLAMA_SESSION_MAGIC or version != L.LLAMA_SESSION_VERSION:
            raise StateError(f"{p} is not a session file of this llama.cpp (magic {magic:08x}, "
                             f"version {version})")
        if n_tok > L.llama_n_ctx(self._ctx):
            raise StateError(f"the state file {p} holds {n_tok} tokens, more than this "
                             f"context's {L.llama_n_ctx(self._ctx)}")
        at = 12 + <size_t> n_tok * 4
        if at > n:
            raise StateError(f"the state file {p} is truncated")
        toks = list(memoryview(data)[12:at].cast("i"))
        with nogil:
            read = L.llama_state_set_data(self._ctx, buf + at, n - at)
        self.epoch += 1
        self._has_restored = False
        self._logits_valid = False
        if read != n - at:
            L.llama_memory_clear(L.llama_get_memory(self._ctx), True)
            raise StateError(f"could not load state from {p}: "
                             f"{_recent_log(mark) or 'no reason given'}")
        return toks

    def perf(self):
        """llama.cpp's timing counters for this context (needs no_perf=False)."""
        self._check_read()
        cdef L.llama_perf_context_data d = L.llama_perf_context(self._ctx)
        return {"t_start_ms": d.t_start_ms, "t_load_ms": d.t_load_ms,
                "t_p_eval_ms": d.t_p_eval_ms, "t_eval_ms": d.t_eval_ms,
                "n_p_eval": d.n_p_eval, "n_eval": d.n_eval, "n_reused": d.n_reused}

    def perf_reset(self):
        self._check_read()
        L.llama_perf_context_reset(self._ctx)
