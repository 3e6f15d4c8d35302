# Multimodal input through llama.cpp's libmtmd: Projector owns an mtmd_context (the vision /
# audio encoder of an mmproj GGUF, for one Model); MultimodalInput owns the mtmd_input_chunks
# of one prompt (text tokens and encoded media); Context.eval_multimodal() decodes them.
#
# Lifetimes: a Projector keeps its Model alive (one of its users); a MultimodalInput keeps its
# Projector alive. One call at a time per Projector (libmtmd's encoder is not thread-safe).


class ProjectorLoadError(ModelLoadError):
    """The file is not a multimodal projector (mmproj) for this model."""


class MediaError(LlamaError, ValueError):
    """An image or audio input could not be decoded or preprocessed."""


@cython.no_gc_clear
cdef class Projector:
    """A multimodal projector (an mmproj GGUF) for a Model: turns images (and, for some
    models, audio) into embeddings that the model reads in place of tokens.

    Projector(model, mmproj_path, *, use_gpu=True, n_threads=None, flash_attn=None,
              image_min_tokens=-1, image_max_tokens=-1, warmup=True)

    prompt = projector.tokenize(f"Describe this: {projector.marker}", [png_bytes])
    n_past = ctx.eval_multimodal(prompt)      # then ctx.generate(...)
    """
    cdef M.mtmd_context * _c
    cdef readonly Model model
    cdef readonly str path
    cdef long _owner
    cdef object __weakref__

    def __cinit__(self):
        self._c = NULL
        self._owner = 0

    def __init__(self, Model model not None, path, *, bint use_gpu=True, n_threads=None,
                 flash_attn=None, int image_min_tokens=-1, int image_max_tokens=-1,
                 bint warmup=True):
        if self._c != NULL:
            raise RuntimeError("Projector.__init__ called twice")
        model._check()
        if model.vocab_only:
            raise ValueError("this Model was loaded with vocab_only=True; a projector needs "
                             "its weights")
        check_gguf(path, what="multimodal projector")
        p = os.fspath(path)
        self.path = os.fsdecode(p) if isinstance(p, bytes) else p
        nt = default_n_threads() if n_threads is None else int(n_threads)
        if nt < 1 or nt > 4096:
            raise ValueError(f"n_threads must be 1..4096, got {nt}")
        cdef M.mtmd_context_params cp = M.mtmd_context_params_default()
        cp.use_gpu = use_gpu
        cp.print_timings = False
        cp.n_threads = nt
        cp.warmup = warmup
        cp.image_min_tokens = image_min_tokens
        cp.image_max_tokens = image_max_tokens
        cp.flash_attn_type = <L.llama_flash_attn_type> _enum_arg(_FLASH_ATTN, flash_attn,
                                                                "flash_attn")
        cdef bytes bpath = os.fsencode(self.path)
        cdef const char * c_path = bpath
        cdef uint64_t mark = S.log_mark()
        cdef M.mtmd_context * c = NULL
        with nogil:
            c = M.mtmd_init_from_file(c_path, model._model, cp)
        if c == NULL:
            reason = _recent_log(mark, True)
            raise ProjectorLoadError(f"failed to load the multimodal projector {self.path} for "
                                     f"{model.path}: {reason or 'llama.cpp gave no reason'}")
        model._acquire()
        self._c = c
        self.model = model

    # -- lifetime -------------------------------------------------------------------------------

    cdef int _check(self) except -1:
        if self._c == NULL:
            raise ClosedError("this Projector is closed")
        return 0

    cdef int _claim(self) except -1:
        self._check()
        if self._owner != 0:
            raise BusyError("this Projector is in use by another call; one call at a time")
        self._owner = <long> PyThread_get_thread_ident()
        return 0

    def close(self):
        """Free the encoder. Idempotent; MultimodalInputs made by it stay readable."""
        if self._c == NULL:
            return
        if self._owner != 0:
            raise BusyError("cannot close a Projector while a call is running on it")
        M.mtmd_free(self._c)
        self._c = NULL
        self.model._release()

    @property
    def closed(self):
        return self._c == NULL

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        if self._c != NULL:
            M.mtmd_free(self._c)
            self._c = NULL
            if self.model is not None:
                self.model._release()

    def __reduce__(self):
        raise TypeError("pyllamacy.Projector cannot be pickled; load the file again")

    def __repr__(self):
        state = "closed " if self._c == NULL else ""
        return f"<pyllamacy.Projector {state}path={self.path!r}>"

    # -- what it does ---------------------------------------------------------------------------

    @property
    def marker(self):
        """The text that stands for one media input in a prompt (default "<__media__>")."""
        self._check()
        return M.mtmd_get_marker(self._c).decode("utf-8")

    @property
    def supports_vision(self):
        self._check()
        return M.mtmd_support_vision(self._c)

    @property
    def supports_audio(self):
        self._check()
        return M.mtmd_support_audio(self._c)

    @property
    def audio_sample_rate(self):
        """Hz, or -1 without audio support."""
        self._check()
        return M.mtmd_get_audio_sample_rate(self._c)

    @property
    def uses_mrope(self):
        """Whether positions are M-RoPE (then a prompt's n_pos differs from its n_tokens)."""
        self._check()
        return M.mtmd_decode_use_mrope(self._c)

    def tokenize(self, text, media=(), *, bint add_special=True, bint parse_special=True):
        """Split `text` at each marker and put the media there, in order.

        media: for each marker, the contents of an image file (jpg, png, bmp, gif, ...) or an
        audio file (wav, mp3, flac) as bytes, or an RGB image as a uint8 array of shape
        (height, width, 3). Returns a MultimodalInput for Context.eval_multimodal()."""
        self._check()
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        if "\0" in text:
            raise ValueError("text contains a NUL character")
        if isinstance(media, (bytes, bytearray, memoryview, np.ndarray)):
            media = [media]
        media = list(media)
        marker = self.marker
        n_markers = text.count(marker)
        if n_markers != len(media):
            raise ValueError(f"the text has {n_markers} media marker(s) {marker!r} but "
                             f"{len(media)} media input(s) were given")
        cdef vector[M.mtmd_bitmap *] bitmaps
        cdef M.mtmd_input_chunks * chunks = NULL
        cdef M.mtmd_input_text c_text
        cdef bytes btext = text.encode("utf-8")
        cdef int32_t rc
        cdef uint64_t mark
        self._claim()
        try:
            for i, item in enumerate(media):
                bitmaps.push_back(self._bitmap(item, i))
            memset(&c_text, 0, sizeof(c_text))
            c_text.text = btext
            c_text.text_len = len(btext)
            c_text.add_special = add_special
            c_text.parse_special = parse_special
            chunks = M.mtmd_input_chunks_init()
            if chunks == NULL:
                raise MemoryError("mtmd_input_chunks_init failed")
            mark = S.log_mark()
            with nogil:
                rc = M.mtmd_tokenize(self._c, chunks, &c_text,
                                     <const M.mtmd_bitmap * const *> bitmaps.data(),
                                     bitmaps.size())
            if rc != 0:
                reason = _recent_log(mark, True)
                M.mtmd_input_chunks_free(chunks)
                chunks = NULL
                if rc == 1:
                    raise ValueError(f"the media do not match the markers of the text: {reason}")
                raise MediaError(f"preprocessing the media failed (code {rc}): "
                                 f"{reason or 'llama.cpp gave no reason'}")
            out = MultimodalInput._new(self, chunks)
            chunks = NULL
            return out
        finally:
            for i in range(bitmaps.size()):
                M.mtmd_bitmap_free(bitmaps[i])
            if chunks != NULL:
                M.mtmd_input_chunks_free(chunks)
            self._owner = 0

    cdef M.mtmd_bitmap * _bitmap(self, item, int i) except NULL:
        cdef const unsigned char[:] buf
        cdef const unsigned char[:, :, ::1] px
        cdef M.mtmd_helper_bitmap_wrapper w
        cdef M.mtmd_bitmap * bm = NULL
        cdef uint64_t mark
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
                raise TypeError(f"media #{i}: an image array must be uint8 of shape (height, "
                                f"width, 3), got {item.dtype} {item.shape}")
            if item.shape[0] < 1 or item.shape[1] < 1:
                raise MediaError(f"media #{i}: the image is empty ({item.shape})")
            px = np.ascontiguousarray(item)
            bm = M.mtmd_bitmap_init(<uint32_t> item.shape[1], <uint32_t> item.shape[0], &px[0, 0, 0])
            if bm == NULL:
                raise MemoryError("mtmd_bitmap_init failed")
            return bm
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise TypeError(f"media #{i}: expected the bytes of an image or audio file, or an "
                            f"RGB uint8 array, not {type(item).__name__}")
        buf = bytes(item) if isinstance(item, memoryview) else item
        if buf.shape[0] == 0:
            raise MediaError(f"media #{i} is empty (0 bytes)")
        mark = S.log_mark()
        with nogil:
            w = M.mtmd_helper_bitmap_init_from_buf(self._c, &buf[0], buf.shape[0], False,
                                                   M.mtmd_helper_init_opt_default())
        if w.video_ctx != NULL:
            M.mtmd_helper_video_free(w.video_ctx)
            if w.bitmap != NULL:
                M.mtmd_bitmap_free(w.bitmap)
            raise MediaError(f"media #{i} is a video; only images and audio are supported")
        if w.bitmap == NULL:
            reason = _recent_log(mark, True)
            raise MediaError(f"media #{i} ({buf.shape[0]} bytes) could not be decoded as an "
                             f"image or audio file: {reason or 'unknown format'}")
        if M.mtmd_bitmap_is_audio(w.bitmap) and not M.mtmd_support_audio(self._c):
            M.mtmd_bitmap_free(w.bitmap)
            raise MediaError(f"media #{i} is audio, and this projector has no audio encoder")
        if not M.mtmd_bitmap_is_audio(w.bitmap) and not M.mtmd_support_vision(self._c):
            M.mtmd_bitmap_free(w.bitmap)
            raise MediaError(f"media #{i} is an image, and this projector has no vision encoder")
        return w.bitmap


_CHUNK_KINDS = {M.MTMD_INPUT_CHUNK_TYPE_TEXT: "text", M.MTMD_INPUT_CHUNK_TYPE_IMAGE: "image",
                M.MTMD_INPUT_CHUNK_TYPE_AUDIO: "audio"}


cdef class MultimodalInput:
    """A tokenized multimodal prompt (made by Projector.tokenize): text chunks and media
    chunks, each media chunk a run of embeddings that Context.eval_multimodal() computes."""
    cdef M.mtmd_input_chunks * _c
    cdef readonly Projector projector

    def __init__(self):
        raise TypeError("use Projector.tokenize() to make a MultimodalInput")

    @staticmethod
    cdef MultimodalInput _new(Projector projector, M.mtmd_input_chunks * chunks):
        cdef MultimodalInput m = MultimodalInput.__new__(MultimodalInput)
        m._c = chunks
        m.projector = projector
        return m

    def __dealloc__(self):
        if self._c != NULL:
            M.mtmd_input_chunks_free(self._c)
            self._c = NULL

    def __reduce__(self):
        raise TypeError("pyllamacy.MultimodalInput cannot be pickled")

    @property
    def n_tokens(self):
        """Text tokens plus media embeddings."""
        return M.mtmd_helper_get_n_tokens(self._c)

    @property
    def n_pos(self):
        """Positions the prompt takes in a sequence (n_tokens except with M-RoPE)."""
        return M.mtmd_helper_get_n_pos(self._c)

    def __len__(self):
        return M.mtmd_input_chunks_size(self._c)

    def chunks(self):
        """[(kind, n_tokens, n_pos, text tokens or None)] with kind "text", "image" or
        "audio"."""
        cdef size_t i, n = M.mtmd_input_chunks_size(self._c), nt
        cdef const M.mtmd_input_chunk * ch
        cdef const L.llama_token * toks
        out = []
        for i in range(n):
            ch = M.mtmd_input_chunks_get(self._c, i)
            kind = _CHUNK_KINDS.get(M.mtmd_input_chunk_get_type(ch), "unknown")
            tokens = None
            if kind == "text":
                toks = M.mtmd_input_chunk_get_tokens_text(ch, &nt)
                tokens = [toks[j] for j in range(nt)]
            out.append((kind, M.mtmd_input_chunk_get_n_tokens(ch),
                        M.mtmd_input_chunk_get_n_pos(ch), tokens))
        return out

    def __repr__(self):
        kinds = [c[0] for c in self.chunks()]
        return f"<pyllamacy.MultimodalInput {len(kinds)} chunks {kinds} n_tokens={self.n_tokens}>"


cdef int32_t _eval_multimodal(Context ctx, MultimodalInput inp, pos, int seq_id) except -1:
    """Context.eval_multimodal's work, with the context already claimed."""
    cdef Projector proj = inp.projector
    if proj.model is not ctx.model:
        raise ValueError(f"the projector was loaded for another Model ({proj.model.path}); "
                         f"this context's is {ctx.model.path}")
    proj._claim()
    cdef int32_t rc = 0
    cdef L.llama_pos new_pos = 0
    cdef int32_t p0
    cdef bint watch = False, interrupted = False
    cdef uint64_t mark
    try:
        ctx._check_seq(seq_id)
        p0 = ctx._start_pos(pos, seq_id, inp.n_pos, "positions of a multimodal prompt")
        if L.llama_memory_seq_pos_max(L.llama_get_memory(ctx._ctx), seq_id) >= p0:
            L.llama_memory_seq_rm(L.llama_get_memory(ctx._ctx), seq_id, p0, -1)
        watch = _in_main_thread() and S.sigint_watch_begin(ctx._abort)
        mark = S.log_mark()
        with nogil:
            rc = M.mtmd_helper_eval_chunks(proj._c, ctx._ctx, inp._c, p0, seq_id,
                                           L.llama_n_batch(ctx._ctx), True, &new_pos)
        interrupted = watch and S.sigint_seen(ctx._abort)
        ctx.epoch += 1
        if rc != 0:
            ctx._logits_valid = False
            ctx._decode_failed(rc, seq_id, p0, interrupted, "evaluating the multimodal prompt",
                               _recent_log(mark, True))
        ctx._decoded(True)
        return new_pos
    finally:
        if watch:
            S.sigint_watch_end(ctx._abort)
        proj._owner = 0
