# LoraAdapter: owns a llama_adapter_lora loaded for one Model; Contexts attach it with a scale
# (Context.set_loras).
#
# Lifetimes, as llama.cpp has them: an adapter belongs to its model (llama_model_free deletes
# the model's adapters), and a context only points at the adapters attached to it. So an
# adapter keeps its Model alive (one of the model's users), and each Context it is attached to
# keeps the adapter alive (one of the adapter's users): close() frees the adapter at once, or
# once the last context lets it go; the model's free waits for its adapters.


@cython.no_gc_clear
cdef class LoraAdapter:
    """A LoRA adapter (a GGUF file of general.type "adapter") loaded for one Model.

    LoraAdapter(model, path)   (or model.load_lora(path))

    Attach it to a context with Context.set_loras([(adapter, scale)]); one adapter serves any
    number of that model's contexts, each with its own scale. Raises AdapterLoadError when the
    file is not a LoRA adapter for this model (another architecture, other tensor shapes).
    """
    cdef L.llama_adapter_lora * _c
    cdef readonly Model model
    cdef readonly str path
    cdef int _users                    # contexts this adapter is attached to
    cdef bint _close_pending
    cdef object __weakref__

    def __cinit__(self):
        self._c = NULL
        self._users = 0
        self._close_pending = False

    def __init__(self, Model model not None, path):
        if self._c != NULL:
            raise RuntimeError("LoraAdapter.__init__ called twice")
        model._check()
        if model.vocab_only:
            raise ValueError("this Model was loaded with vocab_only=True; it has no weights "
                             "for a LoRA adapter to change")
        check_gguf(path, what="LoRA adapter")
        p = os.fspath(path)
        self.path = os.fsdecode(p) if isinstance(p, bytes) else p
        cdef bytes bpath = os.fsencode(self.path)
        cdef const char * c_path = bpath
        cdef uint64_t mark = S.log_mark()
        cdef L.llama_adapter_lora * c = NULL
        with nogil:
            c = L.llama_adapter_lora_init(model._model, c_path)
        if c == NULL:
            reason = _recent_log(mark, True)
            raise AdapterLoadError(f"failed to load the LoRA adapter {self.path} for "
                                   f"{model.path}: {reason or 'llama.cpp gave no reason'}")
        model._acquire()
        self._c = c
        self.model = model

    # -- lifetime -------------------------------------------------------------------------------

    cdef int _check(self) except -1:
        if self._c == NULL or self._close_pending:
            raise ClosedError("this LoraAdapter is closed")
        return 0

    cdef void _acquire(self) noexcept:
        self._users += 1

    cdef void _release(self) noexcept:
        self._users -= 1
        if self._users <= 0 and self._close_pending:
            self._free()

    cdef void _free(self) noexcept:
        if self._c != NULL:
            L.llama_adapter_lora_free(self._c)
            self._c = NULL
            self.model._release()

    def close(self):
        """Free the adapter (deferred while a Context has it attached). Idempotent."""
        if self._c == NULL:
            return
        self._close_pending = True
        if self._users <= 0:
            self._free()

    @property
    def closed(self):
        return self._c == NULL or self._close_pending

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        # no context holds it (each attached Context holds a reference), so free it now;
        # no_gc_clear keeps self.model set here, and the model outlives this call
        if self._c != NULL:
            L.llama_adapter_lora_free(self._c)
            self._c = NULL
            if self.model is not None:
                self.model._release()

    def __reduce__(self):
        raise TypeError("pyllamacy.LoraAdapter cannot be pickled; load the file again")

    def __repr__(self):
        state = "closed " if self.closed else ""
        return f"<pyllamacy.LoraAdapter {state}path={self.path!r}>"

    # -- metadata -------------------------------------------------------------------------------

    @property
    def metadata(self):
        """The adapter's GGUF metadata (scalar values) as a dict of str -> str."""
        self._check()
        cdef int32_t i, n = L.llama_adapter_meta_count(self._c)
        out = {}
        for i in range(n):
            out[_meta_string(NULL, i, True, self._c)] = _meta_string(NULL, i, False, self._c)
        return out

    @property
    def alpha(self):
        """adapter.lora.alpha: llama.cpp scales the update by scale * alpha / rank (alpha 0:
        by scale alone)."""
        value = self.metadata.get("adapter.lora.alpha")
        return float(value) if value else 0.0

    @property
    def alora_invocation_tokens(self):
        """The invocation tokens of an activated LoRA (aLoRA); [] for a plain adapter."""
        self._check()
        cdef uint64_t n = L.llama_adapter_get_alora_n_invocation_tokens(self._c)
        if n == 0:
            return []
        cdef const L.llama_token * toks = L.llama_adapter_get_alora_invocation_tokens(self._c)
        return [toks[i] for i in range(n)]


cdef list _lora_pairs(object adapters, Model model):
    """Context.set_loras' argument -> [(LoraAdapter, float scale)], checked before any C call."""
    if adapters is None:
        return []
    if isinstance(adapters, LoraAdapter):
        adapters = [adapters]
    elif isinstance(adapters, dict):
        adapters = list(adapters.items())
    elif isinstance(adapters, (str, bytes)) or not hasattr(adapters, "__iter__"):
        raise TypeError("set_loras takes a LoraAdapter, a list of LoraAdapter or "
                        f"(LoraAdapter, scale) pairs, or a dict; got {type(adapters).__name__}")
    cdef list out = []
    cdef LoraAdapter a
    seen = set()
    for item in adapters:
        if isinstance(item, LoraAdapter):
            obj, scale = item, 1.0
        elif isinstance(item, tuple) and len(item) == 2:
            obj, scale = item
        else:
            raise TypeError(f"set_loras: expected a LoraAdapter or a (LoraAdapter, scale) pair, "
                            f"got {item!r}")
        if not isinstance(obj, LoraAdapter):
            raise TypeError(f"set_loras: expected a LoraAdapter, got {type(obj).__name__}")
        a = <LoraAdapter> obj
        a._check()
        if a.model is not model:
            raise ValueError(f"the LoRA adapter {a.path} was loaded for another Model "
                             f"({a.model.path}); load it for this context's model")
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
            raise TypeError(f"a LoRA scale must be a number, got {scale!r}")
        scale = float(scale)
        if not isfinite(scale):
            raise ValueError(f"a LoRA scale must be finite, got {scale}")
        if id(a) in seen:
            raise ValueError(f"the LoRA adapter {a.path} is given twice")
        seen.add(id(a))
        out.append((a, scale))
    return out
