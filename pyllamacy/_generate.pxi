# The generation loop: sample -> check end-of-generation / stop tokens / stop strings /
# max tokens -> decode the token, all in C without the GIL. Generation.run() does the whole
# loop in one nogil call; iterating a Generation runs one step per item, taking the GIL only
# to hand the token back.

cdef enum _Step:
    STEP_TOKEN = 0        # a token was produced; go on
    STEP_STOP = 1         # a token was produced and completed a stop sequence / string
    STEP_LENGTH = 2       # a token was produced and it was the last allowed
    STEP_EOG = 3          # the model produced end-of-generation (not returned)
    STEP_CTX_FULL = 4     # no room in the context for the next token
    STEP_ABORTED = 5      # cancel() / Ctrl-C
    STEP_ERROR = 6        # llama_decode failed (code in _rc)
    STEP_NO_TOKEN = 7     # the grammar and logit biases leave no token to choose
    STEP_SAMPLER_ERROR = 8
    STEP_DRAFT_ERROR = 9  # a Python drafter raised or returned something unusable


cdef object _sample_error(int code):
    if code == S.SAMPLE_NONE_ALLOWED:
        return GrammarError("no token can be generated: the grammar and the logit biases "
                            "together exclude every token")
    if code == S.SAMPLE_NO_LOGITS:
        return LlamaError("no logits to sample from: eval() with logits for the last token")
    return SamplerError("a llama.cpp sampler failed while choosing a token")


_FINISH = {STEP_STOP: "stop", STEP_LENGTH: "length", STEP_EOG: "stop",
           STEP_CTX_FULL: "length", STEP_ABORTED: "aborted"}


cdef class Generation:
    """Tokens generated from a Context's current logits; made by Context.generate().

    Iterate it to get token ids one by one (streaming), or call run() to generate everything
    in one call without the GIL. After it ends, `finish_reason` is "stop" (end-of-generation,
    stop token, stop sequence or stop string), "length" (max_tokens or context full) or
    "aborted" (Context.cancel()). `tokens` holds every token returned so far.
    """
    cdef Context ctx
    cdef Sampler sampler
    cdef int seq_id
    cdef int32_t pos, n_ctx
    cdef int max_tokens, produced
    cdef L.llama_token pending
    cdef bint has_pending
    cdef vector[vector[L.llama_token]] stop_seqs
    cdef vector[string] stop_strs
    cdef string tail
    cdef size_t max_stop
    cdef vector[L.llama_token] out
    cdef bint done
    cdef int32_t _rc
    cdef uint64_t epoch
    cdef readonly object finish_reason
    cdef readonly bint stopped_by_eog
    cdef vector[L.llama_token_data] cur    # candidates buffer, reused every step
    cdef S.TopkScratch topk_scratch        # the top-k fast path's buffer
    cdef vector[L.llama_token] hist        # the whole sequence: history given + generated
    cdef size_t n_returned                 # tokens handed out by the iterator
    cdef int draft_kind                    # 0 none, 1 prompt lookup (n-gram), 2 draft model,
                                           # 3 a Python callable (draft_fn)
    cdef object draft_fn
    cdef object draft_error
    cdef bint draft_failed
    cdef int n_draft, ngram_max
    cdef Context draft_ctx
    cdef vector[L.llama_token] draft, draft_kv
    cdef readonly long n_drafted, n_accepted
    cdef vector[char] piece
    cdef int _sample_code
    cdef bint use_bs                       # sample inside the compute graph (backend_sampling)
    cdef uint64_t bs_id                    # which of the context's backend chains is ours
    cdef bint bs_tried                     # llama_set_sampler was called

    def __init__(self):
        raise TypeError("use Context.generate() to make a Generation")

    @staticmethod
    cdef Generation _new(Context ctx, Sampler sampler, int max_tokens, int seq_id,
                         stop_tokens, stop_sequences, stop_strings, history, draft,
                         int n_draft, int ngram_max, bint backend_sampling=False):
        cdef Generation g = Generation.__new__(Generation)
        cdef vector[L.llama_token] seq
        g.ctx = ctx
        g.sampler = sampler
        g.seq_id = seq_id
        g.max_tokens = max_tokens
        g.produced = 0
        g.has_pending = False
        g.done = max_tokens == 0
        g.finish_reason = "length" if g.done else None
        g.stopped_by_eog = False
        g.pos = ctx._next_pos(seq_id)
        g.n_ctx = L.llama_n_ctx_seq(ctx._ctx)
        g.epoch = ctx.epoch
        for t in (stop_tokens or ()):
            ctx.model._fill_tokens([t], seq)
            g.stop_seqs.push_back(seq)
        for s in (stop_sequences or ()):
            ctx.model._fill_tokens(s, seq)
            if seq.size() == 0:
                raise ValueError("empty stop sequence")
            g.stop_seqs.push_back(seq)
        g.n_returned = 0
        g.n_drafted = 0
        g.n_accepted = 0
        g.draft_kind = 0
        if history is not None:
            ctx.model._fill_tokens(history, g.hist)
        if draft is not None:
            if n_draft < 1:
                raise ValueError(f"n_draft must be >= 1, got {n_draft}")
            if ngram_max < 1:
                raise ValueError(f"ngram_max must be >= 1, got {ngram_max}")
            g.n_draft = n_draft
            g.ngram_max = ngram_max
            if isinstance(draft, str):
                if draft not in ("ngram", "prompt_lookup"):
                    raise ValueError(f"draft must be 'ngram', a Context or None, got {draft!r}")
                g.draft_kind = 1
            elif isinstance(draft, Context):
                (<Context> draft)._check()
                if (<Context> draft) is ctx:
                    raise ValueError("the draft context must not be the target context")
                if (<Context> draft)._n_vocab != ctx._n_vocab:
                    raise ValueError("the draft model's vocabulary differs from the target's "
                                     f"({(<Context> draft)._n_vocab} vs {ctx._n_vocab} tokens)")
                g.draft_kind = 2
                g.draft_ctx = <Context> draft
                g.draft_ctx.memory_clear()
            elif callable(draft):
                g.draft_kind = 3
                g.draft_fn = draft
                g.draft_failed = False
            else:
                raise TypeError("draft must be 'ngram', a Context of a draft model, a callable "
                                "(input_ids -> draft token ids) or None")
        g.max_stop = 0
        for s in (stop_strings or ()):
            b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
            if len(b) == 0:
                continue
            g.stop_strs.push_back(b)
            g.max_stop = max(g.max_stop, len(b))
        g.use_bs = False
        g.bs_tried = False
        if backend_sampling and g.draft_kind == 0 and not g.done and sampler.backend_capable:
            # a copy of the chain: once attached, llama.cpp marks a chain as running in the
            # graph for good, so the caller's Sampler stays usable on the CPU
            clone = L.llama_sampler_clone(sampler._chain)
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
        cdef L.llama_token tok
        cdef int32_t k
        cdef const float * src
        if self.has_pending:
            if self.pos >= self.n_ctx:
                return STEP_CTX_FULL
            L.llama_batch_ext_clear(self.ctx._bx)
            k = L.llama_batch_ext_add_token(self.ctx._bx, self.seq_id, self.pending)
            if k < 0 or not L.llama_batch_ext_set_pos(self.ctx._bx, k, &self.pos) or \
                    not L.llama_batch_ext_set_output_logits(self.ctx._bx, k, True):
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
        if not self.use_bs:
            if self.sampler._greedy_fast:
                tok = S.greedy_biased(self.sampler._chain, c, -1, src, self.ctx._n_vocab,
                                      self.sampler._fast_bias)
            elif self.sampler._topk_fast > 0:
                tok = S.sample_topk(self.sampler._chain, c, -1, src, self.ctx._n_vocab,
                                    self.sampler._topk_fast, self.sampler._fast_bias,
                                    self.topk_scratch, self.cur)
            else:
                tok = S.sample_checked(self.sampler._chain, c, -1, src, self.ctx._n_vocab,
                                       self.cur)
        elif self.ctx._bs_attached and self.ctx._no_raw_logits:
            tok = S.sample_backend_checked(self.ctx._bs_chain, c, -1, self.ctx._n_vocab, self.cur)
        else:
            # the first token comes from the prompt's logits, on the CPU, with the copy; from
            # the next decode on the chain runs in the graph
            tok = S.sample_checked(self.ctx._bs_chain, c, -1, src, self.ctx._n_vocab, self.cur)
            if tok >= 0 and not self.bs_tried:
                self.bs_tried = True
                self.ctx._bs_attached = L.llama_set_sampler(c, self.seq_id, self.ctx._bs_chain)
        if tok < 0:
            self._sample_code = tok
            return STEP_NO_TOKEN if tok == S.SAMPLE_NONE_ALLOWED else STEP_SAMPLER_ERROR
        if L.llama_vocab_is_eog(self.ctx.model._vocab, tok):
            return STEP_EOG
        return self._accept(tok)

    cdef _Step _accept(self, L.llama_token tok) noexcept nogil:
        """Record a generated token (it becomes the pending one) and check the stop rules."""
        cdef size_t i, k, n
        cdef bint match
        cdef char buf[256]
        cdef int32_t np
        self.out.push_back(tok)
        self.hist.push_back(tok)
        self.produced += 1
        self.pending = tok
        self.has_pending = True
        # stop token sequences: suffix match
        for i in range(self.stop_seqs.size()):
            k = self.stop_seqs[i].size()
            n = self.out.size()
            if k <= n:
                match = True
                while k > 0:
                    if self.stop_seqs[i][k - 1] != self.out[n - 1]:
                        match = False
                        break
                    k -= 1
                    n -= 1
                if match:
                    return STEP_STOP
        # stop strings: search the recent text
        if self.stop_strs.size() > 0:
            np = L.llama_token_to_piece(self.ctx.model._vocab, tok, buf, sizeof(buf), 0, False)
            if np > 0:
                self.tail.append(buf, np)
            elif np < 0:                      # a piece longer than the stack buffer
                self.piece.resize(-np)
                np = L.llama_token_to_piece(self.ctx.model._vocab, tok, self.piece.data(),
                                            <int32_t> self.piece.size(), 0, False)
                if np > 0:
                    self.tail.append(self.piece.data(), np)
            for i in range(self.stop_strs.size()):
                if self.tail.find(self.stop_strs[i]) != <size_t> -1:
                    return STEP_STOP
            if self.tail.size() > 2 * self.max_stop + 256:
                self.tail.erase(0, self.tail.size() - self.max_stop - 256)
        if self.produced >= self.max_tokens:
            return STEP_LENGTH
        return STEP_TOKEN

    # -- speculative decoding ---------------------------------------------------------------
    # Draft up to n_draft tokens (prompt lookup or a small draft model), decode the pending
    # token plus the drafts in one batch, then sample position by position with the real
    # sampler: a draft is kept while it equals the sampled token. Every generated token is
    # sampled from the target model's logits in order, so the output (and the RNG stream) is
    # that of plain decoding; only the number of llama_decode calls changes.

    cdef int _draft_ngram(self, int limit) noexcept nogil:
        cdef int n, j, m
        cdef Py_ssize_t i, L_ = <Py_ssize_t> self.hist.size()
        cdef bint eq
        self.draft.clear()
        n = self.ngram_max
        while n >= 1:
            if L_ > n:
                i = L_ - n - 1
                while i >= 0:
                    eq = True
                    for j in range(n):
                        if self.hist[i + j] != self.hist[L_ - n + j]:
                            eq = False
                            break
                    if eq:
                        m = 0
                        while m < limit and i + n + m < L_:
                            self.draft.push_back(self.hist[i + n + m])
                            m += 1
                        if m > 0:
                            return m
                    i -= 1
            n -= 1
        return 0

    cdef int _draft_model(self, int limit) noexcept nogil:
        """Greedy drafts from the draft context, kept in step with hist through its KV cache."""
        cdef L.llama_context * dc = self.draft_ctx._ctx
        cdef L.llama_batch * db = &self.draft_ctx._batch
        cdef size_t L_ = self.hist.size(), common = 0, start, m, i
        cdef int32_t nb = L.llama_n_batch(dc), rc, j, v, best
        cdef const float * lg
        cdef float bestv
        self.draft.clear()
        while common < self.draft_kv.size() and common < L_ and self.draft_kv[common] == self.hist[common]:
            common += 1
        if common == L_:
            common = L_ - 1               # the last token must be decoded again for its logits
        if L_ + limit >= <size_t> L.llama_n_ctx_seq(dc):
            return 0
        L.llama_memory_seq_rm(L.llama_get_memory(dc), 0, <int32_t> common, -1)
        self.draft_kv.resize(common)
        start = common
        while start < L_:
            m = L_ - start if L_ - start < <size_t> nb else <size_t> nb
            for i in range(m):
                db.token[i] = self.hist[start + i]
                db.pos[i] = <int32_t> (start + i)
                db.n_seq_id[i] = 1
                db.seq_id[i][0] = 0
                db.logits[i] = start + i == L_ - 1
            db.n_tokens = <int32_t> m
            rc = L.llama_decode(dc, db[0])
            if rc != 0:
                L.llama_memory_seq_rm(L.llama_get_memory(dc), 0, <int32_t> start, -1)
                return 0
            for i in range(m):
                self.draft_kv.push_back(self.hist[start + i])
            start += m
        for j in range(limit):
            lg = L.llama_get_logits_ith(dc, -1)
            if lg == NULL:
                break
            best = 0
            bestv = lg[0]
            for v in range(1, self.draft_ctx._n_vocab):
                if lg[v] > bestv:
                    bestv = lg[v]
                    best = v
            if L.llama_vocab_is_eog(self.draft_ctx.model._vocab, best):
                break
            self.draft.push_back(best)
            if j == limit - 1:
                break
            db.token[0] = best
            db.pos[0] = <int32_t> self.draft_kv.size()
            db.n_seq_id[0] = 1
            db.seq_id[0][0] = 0
            db.logits[0] = True
            db.n_tokens = 1
            if L.llama_decode(dc, db[0]) != 0:
                break
            self.draft_kv.push_back(best)
        return <int> self.draft.size()

    cdef int _draft_python(self, int limit) noexcept nogil:
        """Drafts from a Python callable, llama-cpp-python's LlamaDraftModel protocol:
        draft_fn(input_ids: np.ndarray[intc]) -> token ids; at most `limit` are used. An
        exception, or a token outside the vocabulary, ends the generation with that error."""
        self.draft.clear()
        with gil:
            try:
                ids = np.array(<L.llama_token[:self.hist.size()]> self.hist.data(), dtype=np.intc) \
                    if self.hist.size() else np.zeros(0, dtype=np.intc)
                out = np.asarray(self.draft_fn(ids))
                if out.ndim != 1 or (out.size and out.dtype.kind not in "iu"):
                    raise TypeError(f"a draft model must return a 1-D array of token ids, got "
                                    f"shape {out.shape} of {out.dtype}")
                out = out[:limit]
                if out.size and (int(out.min()) < 0 or int(out.max()) >= self.ctx._n_vocab):
                    raise ValueError(f"the draft model returned a token id outside the "
                                     f"vocabulary (0..{self.ctx._n_vocab - 1})")
                for t in out.tolist():
                    self.draft.push_back(<L.llama_token> t)
            except BaseException as e:
                self.draft_error = e
                self.draft_failed = True
                self.draft.clear()
        return <int> self.draft.size()

    cdef _Step _step_spec(self) noexcept nogil:
        cdef L.llama_context * c = self.ctx._ctx
        cdef int k, limit, i
        cdef int32_t p0 = self.pos
        cdef L.llama_token tok = -1
        cdef _Step st = STEP_TOKEN
        if self.pos >= self.n_ctx:
            return STEP_CTX_FULL
        limit = self.n_draft
        if limit > self.n_ctx - self.pos - 1:
            limit = self.n_ctx - self.pos - 1
        if limit > self.max_tokens - self.produced - 1:
            limit = self.max_tokens - self.produced - 1
        if limit > <int> L.llama_n_batch(c) - 1:
            limit = <int> L.llama_n_batch(c) - 1
        k = 0
        if limit > 0:
            if self.draft_kind == 2:
                k = self._draft_model(limit)
            elif self.draft_kind == 3:
                k = self._draft_python(limit)
                if self.draft_failed:
                    return STEP_DRAFT_ERROR
            else:
                k = self._draft_ngram(limit)
        if k <= 0:
            return self._step()
        if S.abort_requested(self.ctx._abort):
            return STEP_ABORTED
        self.ctx._batch.token[0] = self.pending
        for i in range(k + 1):
            if i > 0:
                self.ctx._batch.token[i] = self.draft[i - 1]
            self.ctx._batch.pos[i] = p0 + i
            self.ctx._batch.n_seq_id[i] = 1
            self.ctx._batch.seq_id[i][0] = self.seq_id
            self.ctx._batch.logits[i] = True
        self.ctx._batch.n_tokens = k + 1
        self._rc = L.llama_decode(c, self.ctx._batch)
        if self._rc != 0:
            L.llama_memory_seq_rm(L.llama_get_memory(c), self.seq_id, p0, -1)
            return STEP_ABORTED if self._rc == 2 else STEP_ERROR
        self.ctx._has_restored = False
        self.has_pending = False
        self.n_drafted += k
        for i in range(k + 1):
            tok = S.sample_checked(self.sampler._chain, c, i, NULL, self.ctx._n_vocab, self.cur)
            if tok < 0:
                self._sample_code = tok
                st = STEP_NO_TOKEN if tok == S.SAMPLE_NONE_ALLOWED else STEP_SAMPLER_ERROR
                break
            if L.llama_vocab_is_eog(self.ctx.model._vocab, tok):
                st = STEP_EOG
                break
            st = self._accept(tok)
            if st != STEP_TOKEN or i == k or tok != self.draft[i]:
                break
            self.n_accepted += 1
        # positions p0 .. p0+i hold the pending token and the drafts that were confirmed
        L.llama_memory_seq_rm(L.llama_get_memory(c), self.seq_id, p0 + i + 1, -1)
        self.pos = p0 + i + 1
        # the context's "last logits" are now those of some batch row: not meaningful
        self.ctx._logits_valid = False
        return st

    cdef inline _Step _advance(self) noexcept nogil:
        if self.draft_kind != 0 and self.has_pending:
            return self._step_spec()
        return self._step()

    cdef int _finish(self, _Step st, bint interrupted) except -1:
        self.done = True
        self.ctx.epoch += 1
        self.epoch = self.ctx.epoch
        self._drop_backend_sampler()
        if st == STEP_ERROR:
            L.llama_memory_seq_rm(L.llama_get_memory(self.ctx._ctx), self.seq_id, self.pos, -1)
            self.finish_reason = "error"
            raise _decode_error(self._rc, "decoding a generated token")
        if st == STEP_NO_TOKEN or st == STEP_SAMPLER_ERROR:
            self.finish_reason = "error"
            raise _sample_error(self._sample_code)
        if st == STEP_DRAFT_ERROR:
            self.finish_reason = "error"
            err, self.draft_error = self.draft_error, None
            raise err
        if st == STEP_ABORTED and interrupted:
            self.finish_reason = "aborted"
            PyErr_CheckSignals()
            raise KeyboardInterrupt()
        self.finish_reason = _FINISH[st]
        self.stopped_by_eog = st == STEP_EOG
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
        if self.n_returned < self.out.size():
            self.n_returned += 1
            return self.out[self.n_returned - 1]
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
        if self.n_returned < self.out.size():
            self.n_returned += 1
            return self.out[self.n_returned - 1]
        raise StopIteration

    def run(self):
        """Generate to the end in one call without the GIL; returns the tokens not yet
        returned by iteration."""
        cdef size_t start = self.n_returned
        if self.done:
            self.n_returned = self.out.size()
            return [self.out[i] for i in range(start, self.out.size())]
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
        self.n_returned = self.out.size()
        self._finish(st, interrupted)
        return [self.out[i] for i in range(start, self.out.size())]

    @property
    def acceptance_rate(self):
        """Fraction of drafted tokens that were confirmed (speculative decoding)."""
        return (<double> self.n_accepted) / self.n_drafted if self.n_drafted else 0.0

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
        return list(self.out)

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
    if max_tokens < 0:
        max_tokens = 0x7FFFFFFF
    if not ctx._has_restored and (not ctx._logits_valid or
                                  L.llama_get_logits_ith(ctx._ctx, -1) == NULL):
        raise LlamaError("nothing to generate from: eval() the prompt (with logits for its last "
                         "token) first")
    return Generation._new(ctx, sampler, max_tokens, seq_id, stop_tokens, stop_sequences,
                           stop_strings, history, draft, n_draft, ngram_max, backend_sampling)

