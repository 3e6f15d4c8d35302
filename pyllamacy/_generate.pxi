# The generation loop of one sequence: sample -> check end-of-generation / stop tokens / stop
# strings / max tokens -> decode the token, all in C without the GIL, through the per-slot
# kernel of _slot.pxi. Generation.run() does the whole loop in one nogil call; iterating a
# Generation runs one step per item, taking the GIL only to hand the token back.


cdef class Generation:
    """Tokens generated from a Context's current logits; made by Context.generate().

    Iterate it to get token ids one by one (streaming), or call run() to generate everything
    in one call without the GIL. After it ends, `finish_reason` is "stop" (end-of-generation,
    stop token, stop sequence or stop string), "length" (max_tokens or context full),
    "aborted" (Context.cancel()) or "error" (the exception is raised). `tokens` holds every
    token returned so far.
    """
    cdef Context ctx
    cdef Sampler sampler
    cdef vector[_Slot] k1                  # the kernel's state (one slot)
    cdef _Slot * k
    cdef int seq_id
    cdef int32_t pos, n_ctx
    cdef L.llama_token pending
    cdef bint has_pending
    cdef bint done
    cdef int32_t _rc
    cdef uint64_t epoch
    cdef readonly object finish_reason
    cdef readonly bint stopped_by_eog
    cdef size_t n_returned                 # tokens handed out by the iterator
    cdef object draft_fn                   # keeps a Python drafter alive
    cdef Context draft_ctx
    cdef bint use_bs                       # sample inside the compute graph (backend_sampling)
    cdef uint64_t bs_id                    # which of the context's backend chains is ours
    cdef bint bs_tried                     # llama_set_sampler was called

    def __init__(self):
        raise TypeError("use Context.generate() to make a Generation")

    def __dealloc__(self):
        if self.k1.size():
            _k_clear_draft_error(&self.k1[0])

    @staticmethod
    cdef Generation _new(Context ctx, Sampler sampler, int max_tokens, int seq_id,
                         stop_tokens, stop_sequences, stop_strings, history, draft,
                         int n_draft, int ngram_max, bint backend_sampling=False):
        cdef Generation g = Generation.__new__(Generation)
        g.k1.resize(1)
        g.k = &g.k1[0]
        cdef _Slot * k = g.k
        _k_reset(k, max_tokens)
        _k_set_sampler(k, sampler, ctx._n_vocab)
        g.ctx = ctx
        g.sampler = sampler
        g.seq_id = seq_id
        g.has_pending = False
        g.done = max_tokens == 0
        g.finish_reason = "length" if g.done else None
        g.stopped_by_eog = False
        g.pos = ctx._next_pos(seq_id)
        g.n_ctx = L.llama_n_ctx_seq(ctx._ctx)
        g.epoch = ctx.epoch
        _k_set_stops(k, ctx.model, stop_tokens, stop_sequences, stop_strings)
        g.n_returned = 0
        if history is not None:
            ctx.model._fill_tokens(history, k.hist)
        _k_set_draft(k, ctx, draft, n_draft, ngram_max, 0)
        if k.draft_kind == DRAFT_MODEL:
            g.draft_ctx = <Context> draft
        elif k.draft_kind == DRAFT_PYTHON:
            g.draft_fn = draft
        g.use_bs = False
        g.bs_tried = False
        if backend_sampling and k.draft_kind == DRAFT_NONE and not g.done and \
                sampler.backend_capable:
            clone = _k_backend_chain(k, sampler)
            if clone == NULL:
                raise MemoryError("llama_sampler_clone failed")
            try:
                ctx._enter()                  # drops any earlier generation's chain
            except BaseException:
                L.llama_sampler_free(clone)
                raise
            ctx._bs_chain = clone
            ctx._bs_seq = seq_id
            ctx._bs_attached = False
            ctx._bs_id += 1
            ctx._leave()
            g.bs_id = ctx._bs_id
            g.use_bs = True
        return g

    cdef _Step _step(self) noexcept nogil:
        cdef L.llama_context * c = self.ctx._ctx
        cdef _Slot * k = self.k
        cdef L.llama_token tok
        cdef int32_t i
        cdef const float * src
        if self.has_pending:
            if self.pos >= self.n_ctx:
                return STEP_CTX_FULL
            L.llama_batch_ext_clear(self.ctx._bx)
            i = L.llama_batch_ext_add_token(self.ctx._bx, self.seq_id, self.pending)
            if i < 0 or not L.llama_batch_ext_set_pos(self.ctx._bx, i, &self.pos) or \
                    not L.llama_batch_ext_set_output_logits(self.ctx._bx, i, True):
                self._rc = -1
                return STEP_ERROR
            self._rc = L.llama_process(c, L.LLAMA_PROCESS_TYPE_DECODE, self.ctx._bx)
            if self._rc != 0:
                if self._rc == 2:
                    L.llama_memory_seq_rm(L.llama_get_memory(c), self.seq_id, self.pos, -1)
                    return STEP_ABORTED
                return STEP_ERROR
            self.pos += 1
            self.has_pending = False
            self.ctx._has_restored = False
            # with the sampler in the graph, llama.cpp returns the token, not the logits
            self.ctx._logits_valid = not self.ctx._bs_attached
            self.ctx._no_raw_logits = self.ctx._bs_attached
        if S.abort_requested(self.ctx._abort):
            return STEP_ABORTED
        # logits restored by state_set()/set_logits(), else those of the last decode (NULL)
        src = self.ctx._restored_logits.data() if self.ctx._has_restored else NULL
        # the first token of a backend-sampled generation comes from the prompt's logits, on
        # the CPU, with the copy; from the next decode on the chain runs in the graph
        k.bs = self.use_bs and self.ctx._bs_attached and self.ctx._no_raw_logits
        tok = _k_sample(k, c, -1, src)
        if self.use_bs and tok >= 0 and not self.bs_tried:
            self.bs_tried = True
            self.ctx._bs_attached = L.llama_set_sampler(c, self.seq_id, self.ctx._bs_chain)
        return self._took(_k_take(k, self.ctx.model._vocab, tok))

    cdef inline _Step _took(self, _Step st) noexcept nogil:
        """A produced token becomes the pending one (decoded at the next step)."""
        if st == STEP_TOKEN or st == STEP_STOP or st == STEP_LENGTH:
            self.pending = self.k.out.back()
            self.has_pending = True
        return st

    cdef _Step _step_spec(self) noexcept nogil:
        cdef L.llama_context * c = self.ctx._ctx
        cdef _Slot * k = self.k
        cdef int n, limit, i, kept = 0
        cdef int32_t p0 = self.pos
        cdef _Step st
        if self.pos >= self.n_ctx:
            return STEP_CTX_FULL
        limit = k.n_draft
        if limit > self.n_ctx - self.pos - 1:
            limit = self.n_ctx - self.pos - 1
        if limit > k.max_tokens - k.produced - 1:
            limit = k.max_tokens - k.produced - 1
        if limit > <int> L.llama_n_batch(c) - 1:
            limit = <int> L.llama_n_batch(c) - 1
        n = _k_draft(k, limit)
        if n < 0:
            return STEP_DRAFT_ERROR
        if n == 0:
            return self._step()
        if S.abort_requested(self.ctx._abort):
            return STEP_ABORTED
        self.ctx._batch.token[0] = self.pending
        for i in range(n + 1):
            if i > 0:
                self.ctx._batch.token[i] = k.draft[i - 1]
            self.ctx._batch.pos[i] = p0 + i
            self.ctx._batch.n_seq_id[i] = 1
            self.ctx._batch.seq_id[i][0] = self.seq_id
            self.ctx._batch.logits[i] = True
        self.ctx._batch.n_tokens = n + 1
        self._rc = L.llama_decode(c, self.ctx._batch)
        if self._rc != 0:
            L.llama_memory_seq_rm(L.llama_get_memory(c), self.seq_id, p0, -1)
            return STEP_ABORTED if self._rc == 2 else STEP_ERROR
        self.ctx._has_restored = False
        self.has_pending = False
        st = self._took(_k_verify(k, c, self.ctx.model._vocab, 0, n, &kept))
        # positions p0 .. p0+kept-1 hold the pending token and the drafts that were confirmed
        L.llama_memory_seq_rm(L.llama_get_memory(c), self.seq_id, p0 + kept, -1)
        self.pos = p0 + kept
        # the context's "last logits" are now those of some batch row: not meaningful
        self.ctx._logits_valid = False
        return st

    cdef inline _Step _advance(self) noexcept nogil:
        if self.k.draft_kind != DRAFT_NONE and self.has_pending:
            return self._step_spec()
        return self._step()

    cdef int _finish(self, _Step st, bint interrupted) except -1:
        self.done = True
        self.ctx.epoch += 1
        self.epoch = self.ctx.epoch
        self._drop_backend_sampler()
        self.finish_reason = _FINISH[st]
        self.stopped_by_eog = st == STEP_EOG
        if st == STEP_ERROR:
            L.llama_memory_seq_rm(L.llama_get_memory(self.ctx._ctx), self.seq_id, self.pos, -1)
        if st == STEP_DRAFT_ERROR:
            raise _k_take_draft_error(self.k)
        err = _step_error(st, self.k.sample_code, self._rc, "decoding a generated token")
        if err is not None:
            raise err
        if st == STEP_ABORTED and interrupted:
            PyErr_CheckSignals()
            raise KeyboardInterrupt()
        return 0

    cdef void _drop_backend_sampler(self) noexcept:
        if self.use_bs and self.ctx._bs_id == self.bs_id:
            self.ctx._bs_drop()

    cdef int _begin(self) except -1:
        self.ctx._enter(self.use_bs)
        if self.ctx.epoch != self.epoch or (self.use_bs and (self.ctx._bs_id != self.bs_id or
                                                             self.ctx._bs_chain == NULL)):
            self.ctx._leave()
            self.done = True
            self.finish_reason = "error"
            raise LlamaError("the Context was changed (eval, cache edit, another generation) "
                             "while this Generation was paused; it cannot continue")
        self.sampler._check()
        if self.sampler._owner != 0:
            self.ctx._leave()
            raise BusyError("this Sampler is in use by another generation")
        self.sampler._owner = self.ctx._owner
        if self.draft_ctx is not None:
            try:
                self.draft_ctx._enter()
            except BaseException:
                self.sampler._owner = 0
                self.ctx._leave()
                raise
        return 0

    cdef void _end(self) noexcept:
        if self.draft_ctx is not None:
            self.draft_ctx._leave()
        self.sampler._owner = 0
        self.epoch = self.ctx.epoch
        self.ctx._leave()

    def __iter__(self):
        return self

    def __next__(self):
        cdef vector[L.llama_token] * out = &self.k.out
        if self.n_returned < out.size():
            self.n_returned += 1
            return out[0][self.n_returned - 1]
        if self.done:
            raise StopIteration
        self._begin()
        cdef _Step st
        cdef bint watch = _in_main_thread() and S.sigint_watch_begin(self.ctx._abort)
        cdef bint interrupted = False
        try:
            with nogil:
                st = self._advance()
            interrupted = watch and S.sigint_seen(self.ctx._abort)
            self.ctx.epoch += 1
        finally:
            if watch:
                S.sigint_watch_end(self.ctx._abort)
            self._end()
        if st != STEP_TOKEN:
            self._finish(st, interrupted)
        if self.n_returned < out.size():
            self.n_returned += 1
            return out[0][self.n_returned - 1]
        raise StopIteration

    def run(self):
        """Generate to the end in one call without the GIL; returns the tokens not yet
        returned by iteration."""
        cdef size_t start = self.n_returned
        cdef vector[L.llama_token] * out = &self.k.out
        if self.done:
            self.n_returned = out.size()
            return [out[0][i] for i in range(start, out.size())]
        self._begin()
        cdef _Step st = STEP_TOKEN
        cdef bint watch = _in_main_thread() and S.sigint_watch_begin(self.ctx._abort)
        cdef bint interrupted = False
        try:
            with nogil:
                while st == STEP_TOKEN:
                    st = self._advance()
            interrupted = watch and S.sigint_seen(self.ctx._abort)
            self.ctx.epoch += 1
        finally:
            if watch:
                S.sigint_watch_end(self.ctx._abort)
            self._end()
        self.n_returned = out.size()
        self._finish(st, interrupted)
        return [out[0][i] for i in range(start, out.size())]

    @property
    def n_drafted(self):
        """Draft tokens proposed (speculative decoding)."""
        return self.k.n_drafted

    @property
    def n_accepted(self):
        """Draft tokens the sampler confirmed."""
        return self.k.n_accepted

    @property
    def acceptance_rate(self):
        """Fraction of drafted tokens that were confirmed (speculative decoding)."""
        return (<double> self.k.n_accepted) / self.k.n_drafted if self.k.n_drafted else 0.0

    def close(self):
        """Stop generating (the tokens so far stay in the context)."""
        if not self.done:
            self.done = True
            if self.finish_reason is None:
                self.finish_reason = "stop"
            if self.ctx._owner == 0:
                self._drop_backend_sampler()

    @property
    def backend_sampling(self):
        """Whether this generation samples inside the compute graph (asked for with
        backend_sampling=True, and its sampler chain can run there)."""
        return self.use_bs

    @property
    def tokens(self):
        return list(self.k.out)

    @property
    def eog_token(self):
        """The end-of-generation token that ended this Generation (sampled, neither returned
        nor decoded into the context), or None when something else ended it."""
        return self.k.eog if self.stopped_by_eog and self.k.eog >= 0 else None

    @property
    def n_past(self):
        """Position after the last token decoded into the context."""
        return self.pos

    @property
    def pending_token(self):
        """The last returned token, not yet decoded into the context (or None)."""
        return self.pending if self.has_pending else None


def _generate(Context ctx, Sampler sampler, int max_tokens=-1, int seq_id=0, stop_tokens=None,
              stop_sequences=None, stop_strings=None, history=None, draft=None, int n_draft=8,
              int ngram_max=3, bint backend_sampling=False):
    ctx._check()
    sampler._check()
    ctx._check_seq(seq_id)
    if not ctx._has_restored and (not ctx._logits_valid or
                                  L.llama_get_logits_ith(ctx._ctx, -1) == NULL):
        raise LlamaError("nothing to generate from: eval() the prompt (with logits for its last "
                         "token) first")
    return Generation._new(ctx, sampler, max_tokens, seq_id, stop_tokens, stop_sequences,
                           stop_strings, history, draft, n_draft, ngram_max, backend_sampling)
