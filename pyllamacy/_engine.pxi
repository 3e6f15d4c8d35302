# Engine: continuous batching. Many requests share one Context (one KV cache, one sequence id
# per slot); each step() is one llama_decode carrying the next token of every generating slot
# plus chunks of newly submitted prompts, then one sample per slot with that slot's own chain.
# The whole step runs without the GIL; Python only hands requests in and events out.

cdef enum _SlotState:
    SLOT_FREE = 0
    SLOT_PREFILL = 1
    SLOT_GEN = 2


class EngineFullError(LlamaError, RuntimeError):
    """Every slot of the Engine is busy."""


cdef class Engine:
    """Continuous batching over `ctx` (create it with n_seq_max = number of slots).

        eng = Engine(ctx)
        rid = eng.submit(tokens, sampler, max_tokens=64, stop_strings=["\\n"])
        while eng.n_active:
            for rid, token, finish_reason in eng.step(): ...

    submit() reuses the longest cached prefix among the free slots (the prompt's shared part is
    not decoded again). cancel() frees a slot at the next step. step() and submit()/cancel()
    may be called from different threads; they serialize on an internal lock.

    backend_sampling=True runs each request's sampler chain inside the compute graph (on the
    GPU with the model) when the chain allows it (Sampler.backend_capable): a copy of the
    chain is attached to the slot's sequence, and llama.cpp returns tokens instead of logits.
    """
    cdef readonly Context ctx
    cdef int n_slots
    cdef int32_t n_ctx_seq
    cdef vector[int] state
    cdef vector[int64_t] req_id
    cdef vector[int32_t] pos
    cdef vector[size_t] n_prompt_done
    cdef vector[int] produced, max_tokens
    cdef vector[L.llama_token] pending
    cdef vector[int] batch_idx
    cdef vector[bint] cancelled
    cdef vector[vector[L.llama_token]] prompt, cached
    cdef vector[vector[string]] stop_strs
    cdef vector[string] tail
    cdef vector[size_t] max_stop
    cdef vector[L.llama_sampler *] chains
    cdef vector[L.llama_sampler *] bs_chains      # owned copies attached to the slot's sequence
    cdef vector[_BiasVec *] fast_bias   # greedy / top-k fast paths (Sampler's vector)
    cdef vector[int32_t] topk_k         # > 0: the top-k fast path with this k
    cdef S.TopkScratch topk_scratch
    cdef bint backend_sampling
    cdef vector[vector[L.llama_token_data]] cur
    cdef list samplers
    cdef int64_t next_id
    cdef object lock
    cdef L.llama_batch batch
    cdef bint batch_alive
    # events of the last step
    cdef vector[int64_t] ev_req
    cdef vector[L.llama_token] ev_tok
    cdef vector[int] ev_fin
    cdef vector[int] ev_code
    # log-probabilities of the last step's tokens, for slots that asked (submit(logprobs=N)):
    # event k's are ev_lp_tok/ev_lp_val[ev_lp_at[k] : ev_lp_at[k] + ev_lp_n[k]], its token's
    # own in ev_tok_lp[k]; ev_lp_at[k] = -1 when none were asked
    cdef vector[int] n_probs
    cdef vector[bint] prompt_lp                 # also the prompt tokens' log-probabilities
    cdef vector[int32_t] chunk_at, chunk_n      # this step's prompt chunk of each slot
    # prompt log-probabilities of the last step: token pv_tok[k] of request pv_req[k] (the
    # prompt token at position pv_pos[k]), values as for events, from pv_lp_at[k]
    cdef vector[int64_t] pv_req
    cdef vector[L.llama_token] pv_tok
    cdef vector[int32_t] pv_pos
    cdef vector[int] pv_lp_at, pv_lp_n
    cdef vector[float] pv_tok_lp
    cdef vector[int] ev_lp_at, ev_lp_n
    cdef vector[float] ev_tok_lp, ev_lp_val
    cdef vector[L.llama_token] ev_lp_tok
    cdef vector[L.llama_token] lp_tok_tmp
    cdef vector[float] lp_val_tmp
    cdef readonly long n_steps, n_decoded_tokens, n_reused_tokens

    def __cinit__(self):
        self.batch_alive = False

    def __init__(self, Context ctx not None, *, bint backend_sampling=False):
        ctx._check()
        self.ctx = ctx
        self.backend_sampling = backend_sampling
        self.n_slots = L.llama_n_seq_max(ctx._ctx)
        self.n_ctx_seq = L.llama_n_ctx_seq(ctx._ctx)
        n = self.n_slots
        self.state.resize(n, SLOT_FREE)
        self.req_id.resize(n, -1)
        self.pos.resize(n, 0)
        self.n_prompt_done.resize(n, 0)
        self.produced.resize(n, 0)
        self.max_tokens.resize(n, 0)
        self.pending.resize(n, -1)
        self.batch_idx.resize(n, -1)
        self.cancelled.resize(n, False)
        self.prompt.resize(n)
        self.cached.resize(n)
        self.stop_strs.resize(n)
        self.tail.resize(n)
        self.max_stop.resize(n, 0)
        self.chains.resize(n, NULL)
        self.bs_chains.resize(n, NULL)
        self.fast_bias.resize(n, NULL)
        self.topk_k.resize(n, 0)
        self.n_probs.resize(n, -1)
        self.prompt_lp.resize(n, False)
        self.chunk_at.resize(n, 0)
        self.chunk_n.resize(n, 0)
        self.cur.resize(n)
        self.samplers = [None] * n
        self.next_id = 1
        self.lock = threading.Lock()
        self.batch = L.llama_batch_init(L.llama_n_batch(ctx._ctx), 0, 1)
        self.batch_alive = True
        self.n_steps = self.n_decoded_tokens = self.n_reused_tokens = 0

    def __dealloc__(self):
        cdef int i
        for i in range(<int> self.bs_chains.size()):
            self._drop_bs(i)
        if self.batch_alive:
            L.llama_batch_free(self.batch)
            self.batch_alive = False

    def close(self):
        """Release the samplers and the batch (the Context stays open). Idempotent."""
        with self.lock:
            for i in range(self.n_slots):
                self._free_slot(i)
            if self.batch_alive:
                L.llama_batch_free(self.batch)
                self.batch_alive = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def n_slots_total(self):
        return self.n_slots

    @property
    def n_active(self):
        cdef int i, n = 0
        for i in range(self.n_slots):
            if self.state[i] != SLOT_FREE:
                n += 1
        return n

    @property
    def n_free(self):
        return self.n_slots - self.n_active

    cdef void _drop_bs(self, int i) noexcept:
        S.detach_free_sampler(self.ctx._ctx if self.ctx is not None else NULL, i,
                              self.bs_chains[i], True)
        self.bs_chains[i] = NULL

    cdef void _free_slot(self, int i):
        cdef Sampler s = self.samplers[i]
        self._drop_bs(i)
        if s is not None:
            s._owner = 0
        self.samplers[i] = None
        self.chains[i] = NULL
        self.fast_bias[i] = NULL
        self.topk_k[i] = 0
        self.state[i] = SLOT_FREE
        self.req_id[i] = -1

    def submit(self, tokens, Sampler sampler not None, int max_tokens=-1, stop_strings=None,
               int logprobs=-1, bint prompt_logprobs=False):
        """Queue a prompt; returns its request id. EngineFullError when no slot is free.

        logprobs=N (>= 0): each generated token comes with its log-probability under the
        model (log-softmax of the raw logits) and the N most likely tokens', in step(...,
        with_logprobs=True). Such a request samples on the CPU (it needs the logits).
        prompt_logprobs=True (with logprobs >= 0): the same for every prompt token after the
        first, from last_prompt_logprobs() after each step; the whole prompt is decoded (no
        cached prefix is reused)."""
        cdef vector[L.llama_token] toks
        cdef int i, best = -1
        cdef size_t common, best_common = 0, j
        cdef L.llama_sampler * clone
        self.ctx.model._fill_tokens(tokens, toks)
        if toks.size() == 0:
            raise ValueError("empty prompt")
        if <int32_t> toks.size() >= self.n_ctx_seq:
            raise ContextOverflowError(f"prompt of {toks.size()} tokens does not fit a slot's "
                                       f"context of {self.n_ctx_seq} tokens")
        if prompt_logprobs and logprobs < 0:
            raise ValueError("prompt_logprobs needs logprobs >= 0")
        if logprobs < -1 or logprobs > self.ctx._n_vocab:
            raise ValueError(f"logprobs must be in 0..{self.ctx._n_vocab} (or -1: none), "
                             f"got {logprobs}")
        sampler._check()
        if not sampler._has_selector:
            raise SamplerError("the sampler chain must end with greedy(), dist() or mirostat()")
        if sampler._owner != 0:
            raise BusyError("this Sampler is in use by another generation")
        strs = []
        for s in (stop_strings or ()):
            b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
            if b:
                strs.append(b)
        with self.lock:
            if not self.batch_alive:
                raise ClosedError("this Engine is closed")
            for i in range(self.n_slots):
                if self.state[i] != SLOT_FREE:
                    continue
                common = 0
                while (not prompt_logprobs and common < self.cached[i].size() and
                       common < toks.size() - 1 and
                       self.cached[i][common] == toks[common]):
                    common += 1
                if best < 0 or common > best_common:
                    best, best_common = i, common
            if best < 0:
                raise EngineFullError(f"all {self.n_slots} slots are busy")
            i = best
            L.llama_memory_seq_rm(L.llama_get_memory(self.ctx._ctx), i, <int32_t> best_common, -1)
            self.cached[i].resize(best_common)
            self.prompt[i] = toks
            self.n_prompt_done[i] = best_common
            self.pos[i] = <int32_t> best_common
            self.produced[i] = 0
            self.max_tokens[i] = max_tokens if max_tokens >= 0 else 0x7FFFFFFF
            self.cancelled[i] = False
            self.stop_strs[i].clear()
            self.max_stop[i] = 0
            for b in strs:
                self.stop_strs[i].push_back(b)
                self.max_stop[i] = max(self.max_stop[i], len(b))
            self.tail[i].clear()
            self.state[i] = SLOT_PREFILL
            self.req_id[i] = self.next_id
            self.next_id += 1
            self.samplers[i] = sampler
            self.chains[i] = sampler._chain
            self.fast_bias[i] = &sampler._fast_bias if (sampler._greedy_fast or
                                                        sampler._topk_fast > 0) else NULL
            self.topk_k[i] = sampler._topk_fast
            self.n_probs[i] = logprobs
            self.prompt_lp[i] = prompt_logprobs
            self._drop_bs(i)
            if self.backend_sampling and sampler.backend_capable and logprobs < 0:
                clone = L.llama_sampler_clone(sampler._chain)
                if clone != NULL:
                    if L.llama_set_sampler(self.ctx._ctx, i, clone):
                        self.bs_chains[i] = clone
                        self.chains[i] = clone
                        self.fast_bias[i] = NULL
                        self.topk_k[i] = 0
                    else:
                        L.llama_sampler_free(clone)
            sampler._owner = -1
            self.n_reused_tokens += best_common
            return self.req_id[i]

    def cancel(self, int64_t request_id):
        """Stop a request; its slot is freed at the next step. False if it is not running."""
        cdef int i
        with self.lock:
            for i in range(self.n_slots):
                if self.req_id[i] == request_id and self.state[i] != SLOT_FREE:
                    self.cancelled[i] = True
                    return True
        return False

    cdef int _finish_slot(self, int i, int fin, int code) noexcept nogil:
        self.ev_req.push_back(self.req_id[i])
        self.ev_tok.push_back(-1)
        self.ev_fin.push_back(fin)
        self.ev_code.push_back(code)
        self.ev_lp_at.push_back(-1)
        self.ev_lp_n.push_back(0)
        self.ev_tok_lp.push_back(0)
        self.state[i] = SLOT_FREE
        return 0

    cdef void _push_prompt_logprobs(self, int i, int32_t take) noexcept nogil:
        """Log-probabilities of the prompt tokens that slot i's chunk predicts: the output of
        prompt position p gives token p + 1's (the chunk's last output, when it ends the
        prompt, is the first generated token's: sampled as usual)."""
        cdef int32_t j, p
        cdef const float * row
        cdef float tok_lp = 0
        cdef int32_t nt, k
        cdef L.llama_token nxt
        if take != self.chunk_n[i]:
            return
        for j in range(take):
            p = <int32_t> self.n_prompt_done[i] + j
            if <size_t> (p + 1) >= self.prompt[i].size():
                break
            nxt = self.prompt[i][p + 1]
            row = L.llama_get_logits_ith(self.ctx._ctx, self.chunk_at[i] + j)
            if row == NULL:
                continue
            nt = S.token_logprobs(row, self.ctx._n_vocab, nxt, self.n_probs[i],
                                  self.lp_tok_tmp, self.lp_val_tmp, &tok_lp)
            self.pv_req.push_back(self.req_id[i])
            self.pv_tok.push_back(nxt)
            self.pv_pos.push_back(p + 1)
            self.pv_lp_at.push_back(<int> self.ev_lp_tok.size())
            self.pv_lp_n.push_back(nt)
            self.pv_tok_lp.push_back(tok_lp)
            for k in range(nt):
                self.ev_lp_tok.push_back(self.lp_tok_tmp[k])
                self.ev_lp_val.push_back(self.lp_val_tmp[k])

    cdef void _push_logprobs(self, int i, L.llama_token tok) noexcept nogil:
        """The log-probabilities of slot i's new token (its event is the next one pushed)."""
        cdef const float * row
        cdef float tok_lp = 0
        cdef int32_t n, k
        if self.n_probs[i] < 0:
            self.ev_lp_at.push_back(-1)
            self.ev_lp_n.push_back(0)
            self.ev_tok_lp.push_back(0)
            return
        row = L.llama_get_logits_ith(self.ctx._ctx, self.batch_idx[i])
        if row == NULL:
            self.ev_lp_at.push_back(-1)
            self.ev_lp_n.push_back(0)
            self.ev_tok_lp.push_back(0)
            return
        n = S.token_logprobs(row, self.ctx._n_vocab, tok, self.n_probs[i], self.lp_tok_tmp,
                             self.lp_val_tmp, &tok_lp)
        self.ev_lp_at.push_back(<int> self.ev_lp_tok.size())
        self.ev_lp_n.push_back(n)
        self.ev_tok_lp.push_back(tok_lp)
        for k in range(n):
            self.ev_lp_tok.push_back(self.lp_tok_tmp[k])
            self.ev_lp_val.push_back(self.lp_val_tmp[k])

    cdef int _check_stops(self, int i, L.llama_token tok) noexcept nogil:
        """STEP_TOKEN, STEP_STOP or STEP_LENGTH after slot i produced `tok`."""
        cdef char buf[256]
        cdef int32_t np
        cdef size_t k
        cdef vector[char] big
        if self.stop_strs[i].size() > 0:
            np = L.llama_token_to_piece(self.ctx.model._vocab, tok, buf, sizeof(buf), 0, False)
            if np > 0:
                self.tail[i].append(buf, np)
            elif np < 0:                      # a piece longer than the stack buffer
                big.resize(-np)
                np = L.llama_token_to_piece(self.ctx.model._vocab, tok, big.data(),
                                            <int32_t> big.size(), 0, False)
                if np > 0:
                    self.tail[i].append(big.data(), np)
            for k in range(self.stop_strs[i].size()):
                if self.tail[i].find(self.stop_strs[i][k]) != <size_t> -1:
                    return STEP_STOP
            if self.tail[i].size() > 2 * self.max_stop[i] + 256:
                self.tail[i].erase(0, self.tail[i].size() - self.max_stop[i] - 256)
        if self.produced[i] >= self.max_tokens[i]:
            return STEP_LENGTH
        if self.pos[i] >= self.n_ctx_seq:
            return STEP_CTX_FULL
        return STEP_TOKEN

    cdef int32_t _step_c(self) noexcept nogil:
        cdef L.llama_context * c = self.ctx._ctx
        cdef int32_t n_batch = L.llama_n_batch(c), n = 0, rc, take, j
        cdef int i, st
        cdef bint evicted
        cdef size_t left
        cdef L.llama_token tok
        self.ev_req.clear(); self.ev_tok.clear(); self.ev_fin.clear(); self.ev_code.clear()
        self.ev_lp_at.clear(); self.ev_lp_n.clear(); self.ev_tok_lp.clear()
        self.ev_lp_tok.clear(); self.ev_lp_val.clear()
        self.pv_req.clear(); self.pv_tok.clear(); self.pv_pos.clear(); self.pv_lp_at.clear()
        self.pv_lp_n.clear(); self.pv_tok_lp.clear()
        # cancelled slots leave first
        for i in range(self.n_slots):
            self.batch_idx[i] = -1
            if self.state[i] != SLOT_FREE and self.cancelled[i]:
                self._finish_slot(i, STEP_ABORTED, 0)
        # 1. one token for every generating slot
        for i in range(self.n_slots):
            if self.state[i] == SLOT_GEN and n < n_batch:
                self.batch.token[n] = self.pending[i]
                self.batch.pos[n] = self.pos[i]
                self.batch.n_seq_id[n] = 1
                self.batch.seq_id[n][0] = i
                self.batch.logits[n] = True
                self.batch_idx[i] = n
                n += 1
        # 2. prompt chunks in what is left of the batch
        for i in range(self.n_slots):
            if self.state[i] != SLOT_PREFILL or n >= n_batch:
                continue
            left = self.prompt[i].size() - self.n_prompt_done[i]
            take = <int32_t> left if left < <size_t> (n_batch - n) else n_batch - n
            self.chunk_at[i] = n
            self.chunk_n[i] = take
            for j in range(take):
                self.batch.token[n] = self.prompt[i][self.n_prompt_done[i] + j]
                self.batch.pos[n] = self.pos[i] + j
                self.batch.n_seq_id[n] = 1
                self.batch.seq_id[n][0] = i
                self.batch.logits[n] = self.prompt_lp[i]
                n += 1
            if <size_t> take == left:
                self.batch.logits[n - 1] = True
                self.batch_idx[i] = n - 1
        if n == 0:
            return 0
        self.batch.n_tokens = n
        rc = L.llama_decode(c, self.batch)
        if rc == 1:
            # no room in the KV cache (llama.cpp restored it): first forget the prefixes kept
            # by idle slots; if there are none, the generating requests end with "length" and
            # prompts that cannot fit alone fail
            evicted = False
            for i in range(self.n_slots):
                if self.state[i] == SLOT_FREE and self.cached[i].size() > 0:
                    L.llama_memory_seq_rm(L.llama_get_memory(c), i, 0, -1)
                    self.cached[i].clear()
                    evicted = True
            if evicted:
                return rc
            for i in range(self.n_slots):
                if self.state[i] == SLOT_GEN:
                    self._finish_slot(i, STEP_CTX_FULL, rc)
                    evicted = True
            if not evicted:
                for i in range(self.n_slots):
                    if self.state[i] == SLOT_PREFILL:
                        self._finish_slot(i, STEP_ERROR, rc)
            return rc
        if rc != 0:
            # abort or fatal error: drop what the failed batch left in the cache
            for i in range(self.n_slots):
                if self.state[i] == SLOT_FREE:
                    continue
                L.llama_memory_seq_rm(L.llama_get_memory(c), i, self.pos[i], -1)
                self._finish_slot(i, STEP_ERROR, rc)
            return rc
        self.n_steps += 1
        self.n_decoded_tokens += n
        # 3. bookkeeping and one sample per slot that got logits
        for i in range(self.n_slots):
            if self.state[i] == SLOT_GEN:
                self.cached[i].push_back(self.pending[i])
                self.pos[i] += 1
            elif self.state[i] == SLOT_PREFILL:
                # how many of this slot's prompt tokens went in: count them in the batch
                take = 0
                for j in range(n):
                    if self.batch.seq_id[j][0] == i:
                        take += 1
                if self.prompt_lp[i]:
                    self._push_prompt_logprobs(i, take)
                for j in range(take):
                    self.cached[i].push_back(self.prompt[i][self.n_prompt_done[i] + j])
                self.n_prompt_done[i] += take
                self.pos[i] += take
                if self.n_prompt_done[i] == self.prompt[i].size():
                    self.state[i] = SLOT_GEN
            if self.batch_idx[i] < 0 or self.state[i] != SLOT_GEN:
                continue
            if self.bs_chains[i] != NULL:
                tok = S.sample_backend_checked(self.chains[i], c, self.batch_idx[i],
                                               self.ctx._n_vocab, self.cur[i])
            elif self.topk_k[i] > 0:
                tok = S.sample_topk(self.chains[i], c, self.batch_idx[i], NULL,
                                    self.ctx._n_vocab, self.topk_k[i], self.fast_bias[i][0],
                                    self.topk_scratch, self.cur[i])
            elif self.fast_bias[i] != NULL:
                tok = S.greedy_biased(self.chains[i], c, self.batch_idx[i], NULL,
                                      self.ctx._n_vocab, self.fast_bias[i][0])
            else:
                tok = S.sample_checked(self.chains[i], c, self.batch_idx[i], NULL,
                                       self.ctx._n_vocab, self.cur[i])
            if tok < 0:
                self._finish_slot(i, STEP_NO_TOKEN if tok == S.SAMPLE_NONE_ALLOWED
                                  else STEP_SAMPLER_ERROR, tok)
                continue
            if L.llama_vocab_is_eog(self.ctx.model._vocab, tok):
                self._finish_slot(i, STEP_EOG, 0)
                continue
            self.produced[i] += 1
            self.pending[i] = tok
            st = self._check_stops(i, tok)
            self._push_logprobs(i, tok)
            self.ev_req.push_back(self.req_id[i])
            self.ev_tok.push_back(tok)
            self.ev_fin.push_back(st)
            self.ev_code.push_back(0)
            if st != STEP_TOKEN:
                self.state[i] = SLOT_FREE
        return 0

    def step(self, bint with_logprobs=False):
        """One llama_decode for every active slot. Returns events (request_id, token,
        finish_reason): token is -1 for an event that only ends a request; finish_reason is
        None while the request goes on, else "stop", "length", "cancelled" or "error: ...".

        with_logprobs=True: events are (request_id, token, finish_reason, logprobs), logprobs
        None or (token's log-probability, [(token, log-probability), ...] most likely first)
        for requests submitted with logprobs >= 0."""
        cdef int32_t rc
        cdef size_t k
        cdef int i, a, j
        with self.lock:
            if not self.batch_alive:
                raise ClosedError("this Engine is closed")
            self.ctx._enter()
            try:
                with nogil:
                    rc = self._step_c()
                self.ctx.epoch += 1
                self.ctx._logits_valid = False
                self.ctx._no_raw_logits = False
            finally:
                self.ctx._leave()
            events = []
            for k in range(self.ev_req.size()):
                fin = self.ev_fin[k]
                if fin == STEP_TOKEN:
                    reason = None
                elif fin == STEP_STOP or fin == STEP_EOG:
                    reason = "stop"
                elif fin == STEP_LENGTH or fin == STEP_CTX_FULL:
                    reason = "length"
                elif fin == STEP_ABORTED:
                    reason = "cancelled"
                elif fin == STEP_NO_TOKEN:
                    reason = "error: the grammar and logit biases exclude every token"
                elif fin == STEP_SAMPLER_ERROR:
                    reason = "error: a sampler failed"
                else:
                    reason = f"error: llama_decode returned {self.ev_code[k]}"
                if not with_logprobs:
                    events.append((self.ev_req[k], self.ev_tok[k], reason))
                    continue
                a = self.ev_lp_at[k]
                if a < 0:
                    lp = None
                else:
                    lp = (self.ev_tok_lp[k],
                          [(self.ev_lp_tok[j], self.ev_lp_val[j])
                           for j in range(a, a + self.ev_lp_n[k])])
                events.append((self.ev_req[k], self.ev_tok[k], reason, lp))
            for i in range(self.n_slots):
                if self.state[i] == SLOT_FREE and self.samplers[i] is not None:
                    self._free_slot(i)
        return events

    def last_prompt_logprobs(self):
        """Prompt log-probabilities computed by the last step(), for requests submitted with
        prompt_logprobs=True: [(request_id, position in the prompt, token, (log-probability,
        [(token, log-probability), ...]))], in prompt order."""
        cdef size_t k
        cdef int a, j
        with self.lock:
            out = []
            for k in range(self.pv_req.size()):
                a = self.pv_lp_at[k]
                out.append((self.pv_req[k], self.pv_pos[k], self.pv_tok[k],
                            (self.pv_tok_lp[k], [(self.ev_lp_tok[j], self.ev_lp_val[j])
                                                 for j in range(a, a + self.pv_lp_n[k])])))
            return out

    def slot_info(self):
        """Per slot: state, request id, cached tokens, position (for /metrics and tests)."""
        names = {SLOT_FREE: "free", SLOT_PREFILL: "prefill", SLOT_GEN: "generating"}
        return [{"slot": i, "state": names[self.state[i]], "request_id": self.req_id[i],
                 "cached_tokens": self.cached[i].size(), "pos": self.pos[i]}
                for i in range(self.n_slots)]
