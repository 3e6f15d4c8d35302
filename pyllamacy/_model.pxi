# Model: owns a llama_model (weights + vocabulary). Tokenization lives here too.

from cpython.pythread cimport PyThread_get_thread_ident

cdef object _MAIN_THREAD_IDENT = threading.main_thread().ident

_SPLIT_MODES = {"none": L.LLAMA_SPLIT_MODE_NONE, "layer": L.LLAMA_SPLIT_MODE_LAYER,
                "row": L.LLAMA_SPLIT_MODE_ROW}

def check_gguf(path, what="model"):
    """Validate a GGUF file's header without loading it.

    Raises FileNotFoundError / IsADirectoryError / PermissionError for path problems and
    ModelLoadError (a ValueError) naming the reason for a non-regular (FIFO, device), empty,
    truncated, non-GGUF or wrong-version file. `what` names the file in messages ("model",
    "LoRA adapter"). Returns (version, n_tensors, n_kv). (pyllamacy.gguf_preflight does it.)
    """
    from pyllamacy import gguf_preflight
    return gguf_preflight.check_header(path, what)


cdef cbool _progress_trampoline(float progress, void * user_data) noexcept with gil:
    cdef Model m = <Model> user_data
    try:
        PyErr_CheckSignals()          # Ctrl-C during a long load
        if m._progress_cb is not None:
            r = m._progress_cb(progress)
            if r is False:
                m._load_error = AbortedError("model loading cancelled by progress_callback")
                return False
        return True
    except BaseException as e:
        m._load_error = e
        return False


cdef class Model:
    """A GGUF model loaded with llama.cpp (weights and vocabulary).

    Model(path, *, n_gpu_layers=-1, split_mode="layer", main_gpu=0, tensor_split=None,
          vocab_only=False, use_mmap=True, use_mlock=False, check_tensors=False,
          kv_overrides=None, progress_callback=None, rpc_servers=None)

    rpc_servers: llama.cpp rpc-servers ("host:port,host:port" or a list) whose devices take the
    offloaded layers (n_gpu_layers), before any local GPU; each is checked and probed first
    (pyllamacy.rpc.RPCError when one cannot be used, ValueError for a malformed endpoint).

    Contexts keep their model alive; close() frees the weights once no context uses them.
    """
    cdef L.llama_model * _model
    cdef const L.llama_vocab * _vocab
    cdef readonly object path
    cdef readonly bint vocab_only
    cdef object _progress_cb
    cdef object _load_error
    cdef int _users            # live Contexts / Samplers borrowing this model
    cdef bint _close_pending
    cdef int32_t _n_vocab
    cdef object _meta_keys     # the file's non-array metadata keys (read by the pre-flight)
    cdef readonly tuple rpc_servers   # the RPC endpoints holding layers of this model
    cdef object __weakref__

    def __cinit__(self):
        self._model = NULL
        self._vocab = NULL
        self._users = 0
        self._close_pending = False
        self.rpc_servers = ()

    def __init__(self, path, *, int n_gpu_layers=-1, split_mode="layer", int main_gpu=0,
                 tensor_split=None, bint vocab_only=False, bint use_mmap=True,
                 bint use_mlock=False, bint check_tensors=False, kv_overrides=None,
                 progress_callback=None, tensor_buft_overrides=None, rpc_servers=None):
        if self._model != NULL:
            raise RuntimeError("Model.__init__ called twice")
        # checked before anything else: llama.cpp aborts on a bad endpoint (pyllamacy/rpc.py)
        rpc_endpoints = []
        if rpc_servers is not None:
            from pyllamacy import rpc
            rpc_endpoints = rpc.parse_servers(rpc_servers)
            if rpc_endpoints and vocab_only:
                raise ValueError("a vocab_only model has no weights to put on rpc_servers")
        # the file (and kv_overrides) checked for what would make llama.cpp abort the process
        from pyllamacy import gguf_preflight
        header = gguf_preflight.check_model_file(path, vocab_only=vocab_only, use_mmap=use_mmap,
                                                 kv_overrides=kv_overrides)
        self._meta_keys = header.scalar_keys()
        del header
        self.path = os.fspath(path)
        self.vocab_only = vocab_only
        cdef L.llama_model_params p = L.llama_model_default_params()
        p.n_gpu_layers = n_gpu_layers
        if isinstance(split_mode, str):
            if split_mode not in _SPLIT_MODES:
                raise ValueError(f"split_mode must be one of {sorted(_SPLIT_MODES)}, got {split_mode!r}")
            p.split_mode = _SPLIT_MODES[split_mode]
        elif isinstance(split_mode, int) and split_mode in _SPLIT_MODES.values():
            p.split_mode = split_mode
        else:
            raise ValueError(f"invalid split_mode {split_mode!r}")
        if main_gpu < 0:
            raise ValueError(f"main_gpu must be >= 0, got {main_gpu}")
        p.main_gpu = main_gpu
        p.vocab_only = vocab_only
        if use_mmap and use_mlock:
            p.load_mode = L.LLAMA_LOAD_MODE_MMAP_MLOCK
        elif use_mlock:
            p.load_mode = L.LLAMA_LOAD_MODE_MLOCK
        elif not use_mmap:
            p.load_mode = L.LLAMA_LOAD_MODE_NONE
        # else: llama.cpp's default (AUTO: mmap where the device allows it)
        p.check_tensors = check_tensors
        if progress_callback is not None and not callable(progress_callback):
            raise TypeError("progress_callback must be callable")
        self._progress_cb = progress_callback
        self._load_error = None
        p.progress_callback = _progress_trampoline
        p.progress_callback_user_data = <void *> self

        cdef size_t max_dev = L.llama_max_devices()
        cdef float * c_split = NULL
        cdef L.llama_model_kv_override * c_kv = NULL
        cdef bytes bpath = os.fsencode(self.path)
        cdef const char * c_path = bpath
        cdef uint64_t mark = S.log_mark()
        cdef L.llama_model * model = NULL
        cdef vector[GB.ggml_backend_dev_t] c_devs
        # [(tensor name regex, buffer type name)], as fit_params() answers them
        cdef _FitParams tbo_owner = None
        if tensor_buft_overrides:
            tbo_owner = _FitParams(self.path, tensor_buft_overrides=tensor_buft_overrides)
            p.tensor_buft_overrides = tbo_owner.tbo
        try:
            if rpc_endpoints:
                # the servers' devices first (as llama.cpp's --rpc puts them), then the local
                # GPUs llama.cpp would pick; given to this model only (see _rpc.pxi)
                _rpc_server_devices(rpc_endpoints, c_devs)
                _local_offload_devices(c_devs)
                if c_devs.size() > max_dev:
                    raise ValueError(f"rpc_servers and the local GPUs make {c_devs.size()} "
                                     f"devices; this build supports at most {max_dev}")
                c_devs.push_back(NULL)
                p.devices = c_devs.data()
            if tensor_split is not None:
                vals = [float(x) for x in tensor_split]
                if len(vals) > max_dev:
                    raise ValueError(f"tensor_split has {len(vals)} entries; this build supports "
                                     f"at most {max_dev} devices")
                if any((not v == v) or v < 0 for v in vals):
                    raise ValueError("tensor_split values must be finite and >= 0")
                c_split = <float *> calloc(max_dev, sizeof(float))
                for i, v in enumerate(vals):
                    c_split[i] = v
                p.tensor_split = c_split
            if kv_overrides:
                c_kv = _make_kv_overrides(kv_overrides)
                p.kv_overrides = c_kv
            with nogil:
                model = L.llama_model_load_from_file(c_path, p)
        finally:
            free(c_split)
            free(c_kv)
        if model == NULL:
            if self._load_error is not None:
                err, self._load_error = self._load_error, None
                raise err
            reason = _recent_log(mark)
            raise ModelLoadError(f"failed to load model from {self.path}: "
                                 f"{reason or 'llama.cpp gave no reason'}")
        self._model = model
        if rpc_endpoints:
            self.rpc_servers = tuple(rpc_endpoints)
            for ep in rpc_endpoints:
                _rpc_users[ep] = _rpc_users.get(ep, 0) + 1
        self._vocab = L.llama_model_get_vocab(model)
        self._n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._progress_cb = None

    # -- lifetime ---------------------------------------------------------------------------

    cdef int _check(self) except -1:
        if self._model == NULL or self._close_pending:
            raise ClosedError("this Model is closed")
        return 0

    cdef int _acquire(self) except -1:
        self._check()
        self._users += 1
        return 0

    cdef void _release(self) noexcept:
        self._users -= 1
        if self._users <= 0 and self._close_pending:
            self._free()

    cdef void _free(self) noexcept:
        if self._model != NULL:
            with nogil:
                L.llama_model_free(self._model)
            self._model = NULL
            self._vocab = NULL
            self._rpc_release()

    cdef void _rpc_release(self) noexcept:
        # the model's RPC connections are closed with its buffers
        try:
            for ep in self.rpc_servers:
                n = _rpc_users.get(ep, 0) - 1
                if n > 0:
                    _rpc_users[ep] = n
                else:
                    _rpc_users.pop(ep, None)
            self.rpc_servers = ()
        except BaseException:
            pass

    def close(self):
        """Free the weights (deferred until every Context of this model is closed). Idempotent."""
        if self._model == NULL:
            return
        self._close_pending = True
        if self._users <= 0:
            self._free()

    @property
    def closed(self):
        return self._model == NULL or self._close_pending

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        if self._model != NULL:
            L.llama_model_free(self._model)
            self._model = NULL
            self._rpc_release()

    def __repr__(self):
        if self._model == NULL:
            return f"<pyllamacy.Model closed path={self.path!r}>"
        return f"<pyllamacy.Model {self.desc!r} path={self.path!r}>"

    def __reduce__(self):
        raise TypeError("pyllamacy.Model cannot be pickled; load the file again")

    # -- properties ---------------------------------------------------------------------------

    @property
    def n_ctx_train(self):
        self._check(); return L.llama_model_n_ctx_train(self._model)

    @property
    def n_embd(self):
        self._check(); return L.llama_model_n_embd(self._model)

    @property
    def n_layer(self):
        self._check(); return L.llama_model_n_layer(self._model)

    @property
    def n_head(self):
        self._check(); return L.llama_model_n_head(self._model)

    @property
    def n_head_kv(self):
        self._check(); return L.llama_model_n_head_kv(self._model)

    @property
    def n_params(self):
        self._check(); return L.llama_model_n_params(self._model)

    @property
    def size(self):
        """Total size of the tensors in bytes."""
        self._check(); return L.llama_model_size(self._model)

    @property
    def desc(self):
        self._check()
        cdef char buf[256]
        cdef int32_t n = L.llama_model_desc(self._model, buf, sizeof(buf))
        return buf[:max(0, min(n, 255))].decode("utf-8", "replace")

    @property
    def ftype(self):
        self._check()
        return L.llama_ftype_name(L.llama_model_ftype(self._model)).decode()

    @property
    def has_encoder(self):
        self._check(); return bool(L.llama_model_has_encoder(self._model))

    @property
    def has_decoder(self):
        self._check(); return bool(L.llama_model_has_decoder(self._model))

    @property
    def is_recurrent(self):
        self._check(); return bool(L.llama_model_is_recurrent(self._model))

    @property
    def metadata(self):
        """All GGUF metadata as a dict of str -> str (llama.cpp leaves out arrays such as the
        vocabulary), in the file's order."""
        self._check()
        cdef int32_t i, n = L.llama_model_meta_count(self._model)
        out = {}
        keys = self._meta_keys
        if keys is not None and len(keys) == n:
            # by key: a hash lookup each (by index, llama.cpp walks its map up to the index
            # on every call, which is quadratic in the number of keys)
            for key in keys:
                val = _meta_value(self._model, key)
                if val is None:
                    break           # not the keys llama.cpp holds: fall back to indices
                out[key] = val
            else:
                return out
            out = {}
        for i in range(n):
            key = _meta_string(self._model, i, True)
            out[key] = _meta_string(self._model, i, False)
        return out

    def chat_template(self, name=None):
        """The model's chat template (tokenizer.chat_template[.name]) or None."""
        self._check()
        cdef bytes bname
        cdef const char * c_name = NULL
        if name is not None:
            bname = str(name).encode()
            c_name = bname
        cdef const char * t = L.llama_model_chat_template(self._model, c_name)
        return None if t == NULL else t.decode("utf-8", "replace")

    def load_lora(self, path):
        """Load a LoRA adapter (GGUF) for this model; attach it with Context.set_loras."""
        return LoraAdapter(self, path)

    def save(self, path):
        """Write the model to a GGUF file."""
        self._check()
        cdef bytes bpath = os.fsencode(os.fspath(path))
        cdef const char * c_path = bpath
        d = os.path.dirname(os.path.abspath(os.fsdecode(bpath)))
        if not os.path.isdir(d):
            raise FileNotFoundError(2, "directory does not exist", d)
        with nogil:
            L.llama_model_save_to_file(self._model, c_path)

    # -- vocabulary ---------------------------------------------------------------------------

    @property
    def n_vocab(self):
        self._check(); return self._n_vocab

    @property
    def vocab_type(self):
        self._check()
        return {L.LLAMA_VOCAB_TYPE_NONE: "none", L.LLAMA_VOCAB_TYPE_SPM: "spm",
                L.LLAMA_VOCAB_TYPE_BPE: "bpe", L.LLAMA_VOCAB_TYPE_WPM: "wpm",
                L.LLAMA_VOCAB_TYPE_UGM: "ugm", L.LLAMA_VOCAB_TYPE_RWKV: "rwkv"}.get(
                    L.llama_vocab_get_type(self._vocab), "other")

    def token_bos(self): self._check(); return L.llama_vocab_bos(self._vocab)
    def token_eos(self): self._check(); return L.llama_vocab_eos(self._vocab)
    def token_eot(self): self._check(); return L.llama_vocab_eot(self._vocab)
    def token_sep(self): self._check(); return L.llama_vocab_sep(self._vocab)
    def token_nl(self): self._check(); return L.llama_vocab_nl(self._vocab)
    def token_pad(self): self._check(); return L.llama_vocab_pad(self._vocab)
    def token_fim_pre(self): self._check(); return L.llama_vocab_fim_pre(self._vocab)
    def token_fim_suf(self): self._check(); return L.llama_vocab_fim_suf(self._vocab)
    def token_fim_mid(self): self._check(); return L.llama_vocab_fim_mid(self._vocab)
    def token_fim_pad(self): self._check(); return L.llama_vocab_fim_pad(self._vocab)
    def token_fim_rep(self): self._check(); return L.llama_vocab_fim_rep(self._vocab)
    def token_fim_sep(self): self._check(); return L.llama_vocab_fim_sep(self._vocab)

    @property
    def add_bos(self):
        self._check(); return bool(L.llama_vocab_get_add_bos(self._vocab))

    @property
    def add_eos(self):
        self._check(); return bool(L.llama_vocab_get_add_eos(self._vocab))

    @property
    def add_sep(self):
        """Whether the vocabulary puts a separator between two texts (rerankers, BERT)."""
        self._check(); return bool(L.llama_vocab_get_add_sep(self._vocab))

    @property
    def n_cls_out(self):
        """Outputs of the classifier head (0 without one): what a rank-pooled sequence gives."""
        self._check(); return int(L.llama_model_n_cls_out(self._model))

    def cls_labels(self):
        """The classifier's output labels (list of str; "" where a label has no name)."""
        self._check()
        cdef uint32_t i, n = L.llama_model_n_cls_out(self._model)
        cdef const char * p
        out = []
        for i in range(n):
            p = L.llama_model_cls_label(self._model, i)
            out.append("" if p == NULL else p.decode("utf-8", "replace"))
        return out

    def is_eog(self, int token):
        self._check(); self._check_token(token)
        return bool(L.llama_vocab_is_eog(self._vocab, token))

    def is_control(self, int token):
        self._check(); self._check_token(token)
        return bool(L.llama_vocab_is_control(self._vocab, token))

    def eog_tokens(self):
        """Every end-of-generation token id."""
        self._check()
        cdef int32_t t
        return [t for t in range(self._n_vocab) if L.llama_vocab_is_eog(self._vocab, t)]

    def token_text(self, int token):
        self._check(); self._check_token(token)
        return L.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace")

    def token_score(self, int token):
        self._check(); self._check_token(token)
        return L.llama_vocab_get_score(self._vocab, token)

    def token_attr(self, int token):
        self._check(); self._check_token(token)
        return int(L.llama_vocab_get_attr(self._vocab, token))

    cdef int _check_token(self, long long token) except -1:
        if token < 0 or token >= self._n_vocab:
            raise IndexError(f"token id {token} is out of range for a vocabulary of "
                             f"{self._n_vocab} tokens")
        return 0

    cdef int _fill_tokens(self, tokens, vector[L.llama_token] & out) except -1:
        """Copy a sequence of ints into `out`, checking every id before any C call."""
        cdef long long t
        cdef Py_ssize_t i = 0
        out.clear()
        if isinstance(tokens, (str, bytes)):
            raise TypeError("expected a sequence of token ids, got text; tokenize it first")
        try:
            out.reserve(len(tokens))
        except TypeError:
            pass
        for tok in tokens:
            if isinstance(tok, float) or isinstance(tok, bool):
                raise TypeError(f"token ids must be integers, got {tok!r} at index {i}")
            try:
                t = tok
            except (TypeError, OverflowError):
                raise TypeError(f"token ids must be integers, got {tok!r} at index {i}") from None
            if t < 0 or t >= self._n_vocab:
                raise IndexError(f"token id {t} at index {i} is out of range for a vocabulary "
                                 f"of {self._n_vocab} tokens")
            out.push_back(<L.llama_token> t)
            i += 1
        return 0

    def tokenize(self, text, bint add_special=True, bint parse_special=False):
        """Text (str or UTF-8 bytes) -> list of token ids."""
        self._check()
        cdef bytes data
        if isinstance(text, str):
            data = (<str> text).encode("utf-8")
        elif isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
        else:
            raise TypeError(f"text must be str or bytes, not {type(text).__name__}")
        if len(data) > 0x7FFFFFFF - 16:
            raise ValueError(f"text of {len(data)} bytes is too long to tokenize")
        cdef const char * c_text = data
        cdef int32_t n_text = len(data)
        cdef vector[L.llama_token] out
        cdef int32_t n
        out.resize(n_text + 4 if n_text < (1 << 20) else (n_text // 2) + 4)
        try:
            if n_text > 4096:
                with nogil:
                    n = L.llama_tokenize(self._vocab, c_text, n_text, out.data(),
                                         <int32_t> out.size(), add_special, parse_special)
            else:
                n = L.llama_tokenize(self._vocab, c_text, n_text, out.data(),
                                     <int32_t> out.size(), add_special, parse_special)
            if n < 0 and n != INT32_MIN:
                out.resize(-n)
                with nogil:
                    n = L.llama_tokenize(self._vocab, c_text, n_text, out.data(),
                                         <int32_t> out.size(), add_special, parse_special)
        except _CPP_ERRORS as e:
            raise TokenizeError(f"llama.cpp failed to tokenize the text ({type(e).__name__}: "
                                f"{e}); the model's vocabulary is probably broken") from e
        if n == INT32_MIN:
            raise TokenizeError("tokenization overflowed: too many tokens")
        if n < 0:
            raise TokenizeError(f"tokenization failed (code {n})")
        out.resize(n)
        return list(out)

    def token_to_piece(self, int token, bint special=False, int lstrip=0):
        """One token id -> its bytes (a piece may be an incomplete UTF-8 sequence)."""
        self._check()
        self._check_token(token)
        return _piece(self._vocab, token, special, lstrip)

    def detokenize(self, tokens, bint remove_special=False, bint unparse_special=False):
        """Token ids -> bytes (like llama-cpp-python's Llama.detokenize)."""
        self._check()
        cdef vector[L.llama_token] toks
        self._fill_tokens(tokens, toks)
        if toks.size() == 0:
            return b""
        cdef vector[char] buf
        cdef int32_t n
        buf.resize(toks.size() * 8 + 16)
        try:
            with nogil:
                n = L.llama_detokenize(self._vocab, toks.data(), <int32_t> toks.size(),
                                       buf.data(), <int32_t> buf.size(), remove_special,
                                       unparse_special)
                if n < 0:
                    buf.resize(-n)
                    n = L.llama_detokenize(self._vocab, toks.data(), <int32_t> toks.size(),
                                           buf.data(), <int32_t> buf.size(), remove_special,
                                           unparse_special)
        except _CPP_ERRORS as e:
            raise TokenizeError(f"llama.cpp failed to detokenize ({type(e).__name__}: {e})") \
                from e
        if n < 0:
            raise TokenizeError(f"detokenization failed (code {n})")
        return PyBytes_FromStringAndSize(buf.data(), n)


# what Cython makes of a C++ exception (std::out_of_range -> IndexError, ...; not bad_alloc)
_CPP_ERRORS = (IndexError, ValueError, ArithmeticError, RuntimeError, TypeError)


cdef bytes _piece(const L.llama_vocab * vocab, L.llama_token token, bint special, int lstrip):
    cdef char buf[256]
    cdef int32_t n = L.llama_token_to_piece(vocab, token, buf, sizeof(buf), lstrip, special)
    cdef vector[char] big
    if n >= 0:
        return PyBytes_FromStringAndSize(buf, n)
    big.resize(-n)
    n = L.llama_token_to_piece(vocab, token, big.data(), <int32_t> big.size(), lstrip, special)
    if n < 0:
        raise TokenizeError(f"token_to_piece failed for token {token}")
    return PyBytes_FromStringAndSize(big.data(), n)


cdef inline int32_t _meta_at(const L.llama_model * model, const L.llama_adapter_lora * adapter,
                             int32_t i, bint key, char * buf, size_t size) noexcept:
    """Metadata entry i of a model, or of a LoRA adapter when `adapter` is set."""
    if adapter != NULL:
        return (L.llama_adapter_meta_key_by_index(adapter, i, buf, size) if key else
                L.llama_adapter_meta_val_str_by_index(adapter, i, buf, size))
    return (L.llama_model_meta_key_by_index(model, i, buf, size) if key else
            L.llama_model_meta_val_str_by_index(model, i, buf, size))


cdef str _meta_string(const L.llama_model * model, int32_t i, bint key,
                      const L.llama_adapter_lora * adapter=NULL):
    cdef vector[char] buf
    cdef int32_t n
    buf.resize(256)
    n = _meta_at(model, adapter, i, key, buf.data(), buf.size())
    if n < 0:
        return ""
    if n >= <int32_t> buf.size():
        buf.resize(n + 1)
        n = _meta_at(model, adapter, i, key, buf.data(), buf.size())
    return PyBytes_FromStringAndSize(buf.data(), n).decode("utf-8", "replace")


cdef object _meta_value(const L.llama_model * model, str key):
    """The metadata value of `key` as a str, or None when the model has no such key."""
    cdef bytes bkey = key.encode("utf-8", "surrogateescape")
    cdef vector[char] buf
    cdef int32_t n
    buf.resize(256)
    n = L.llama_model_meta_val_str(model, bkey, buf.data(), buf.size())
    if n < 0:
        return None
    if n >= <int32_t> buf.size():
        buf.resize(n + 1)
        n = L.llama_model_meta_val_str(model, bkey, buf.data(), buf.size())
    return PyBytes_FromStringAndSize(buf.data(), n).decode("utf-8", "replace")


cdef L.llama_model_kv_override * _make_kv_overrides(dict overrides) except NULL:
    """{key: int | float | bool | str} -> a calloc'ed array terminated by an empty key."""
    cdef size_t n = len(overrides)
    cdef L.llama_model_kv_override * arr = <L.llama_model_kv_override *> calloc(
        n + 1, sizeof(L.llama_model_kv_override))
    cdef Py_ssize_t i = 0
    cdef bytes bk, bv
    if arr == NULL:
        raise MemoryError()
    try:
        for k, v in overrides.items():
            bk = str(k).encode()
            if not 0 < len(bk) < 128:
                raise ValueError(f"kv_overrides key {k!r} must be 1..127 bytes")
            memcpy(arr[i].key, <const char *> bk, len(bk))
            if isinstance(v, bool):
                arr[i].tag = L.LLAMA_KV_OVERRIDE_TYPE_BOOL
                arr[i].val_bool = v
            elif isinstance(v, int):
                arr[i].tag = L.LLAMA_KV_OVERRIDE_TYPE_INT
                arr[i].val_i64 = v
            elif isinstance(v, float):
                arr[i].tag = L.LLAMA_KV_OVERRIDE_TYPE_FLOAT
                arr[i].val_f64 = v
            elif isinstance(v, str):
                bv = v.encode()
                if len(bv) >= 128:
                    raise ValueError(f"kv_overrides value for {k!r} must be < 128 bytes")
                arr[i].tag = L.LLAMA_KV_OVERRIDE_TYPE_STR
                memcpy(arr[i].val_str, <const char *> bv, len(bv))
            else:
                raise TypeError(f"kv_overrides value for {k!r} must be int, float, bool or str")
            i += 1
    except BaseException:
        free(arr)
        raise
    return arr
