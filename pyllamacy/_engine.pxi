# Engine: continuous batching. Many requests share one Context (one KV cache, one sequence id
# per slot); each step() is one llama_decode carrying the next token of every generating slot
# (with its speculative drafts) plus chunks of newly submitted prompts, then each slot's tokens
# are chosen by the per-slot kernel of _slot.pxi — the same code a single Generation runs.
# Media chunks of multimodal prompts are encoded by the projector and decoded into their
# slot's sequence before the step's batch. Requests whose LoRA adapter sets differ take turns:
# one step serves one adapter set. The whole step runs without the GIL; Python only hands
# requests in and events out.

cdef enum _SlotState:
    SLOT_FREE = 0
    SLOT_PREFILL = 1
    SLOT_GEN = 2


cdef struct _Media:
    size_t at                               # where its positions start in the slot's prompt
    int32_t n_pos
    const M.mtmd_input_chunk * chunk


class EngineFullError(LlamaError, RuntimeError):
    """Every slot of the Engine is busy."""


cdef class Engine:
    """Continuous batching over `ctx` (create it with n_seq_max = number of slots).

        eng = Engine(ctx)
        rid = eng.submit(tokens, sampler, max_tokens=64, stop_strings=["\\n"])
        while eng.n_active:
            for rid, token, finish_reason in eng.step(): ...

    finish_reason is None while a request goes on, else "stop", "length", "aborted" or
    "error" (the exception is in last_errors()). submit() reuses the longest cached prefix
    among the free slots (the prompt's shared part is not decoded again). cancel() frees a
    slot at the next step. step() and submit()/cancel() may be called from different threads;
    they serialize on an internal lock.

    A prompt is token ids or a MultimodalInput (Projector.tokenize): its media are encoded by
    the projector when the slot reaches them. loras=[(LoraAdapter, scale), ...] per request:
    requests with different adapter sets are served in different steps, in turn (None: the
    adapters the context had when the Engine was made).

    draft: speculative decoding for every request that allows it (submit(draft=True), no
    logprobs, no backend sampling): "ngram" (prompt lookup), a Context of a small model with
    the same vocabulary and n_seq_max >= the slots (slot i drafts in its sequence i), or a
    Python callable input_ids -> draft token ids. Output equals plain decoding.

    backend_sampling=True runs each request's sampler chain inside the compute graph (on the
    GPU with the model) when the chain allows it (Sampler.backend_capable): a copy of the
    chain is attached to the slot's sequence, and llama.cpp returns tokens instead of logits.
    """
    cdef readonly Context ctx
    cdef int n_slots
    cdef int32_t n_ctx_seq
    cdef vector[_Slot] k                        # the per-slot kernel's state
    cdef vector[int] state
    cdef vector[int64_t] req_id
    cdef vector[int32_t] pos
    cdef vector[size_t] n_prompt_done
    cdef vector[L.llama_token] pending
    cdef vector[int] batch_idx                  # the row sampled for the slot in this step
    cdef vector[int] n_spec                     # drafts in this step's batch
    cdef vector[bint] cancelled
    cdef vector[bint] in_step                   # the slot takes part in this step
    cdef vector[bint] use_draft
    cdef vector[vector[L.llama_token]] prompt   # -1 at the positions of media
    cdef vector[vector[L.llama_token]] cached   # what the slot's sequence holds (-1: media)
    cdef vector[int64_t] lora_key, cached_key   # adapter set of the request / of the cache
    cdef vector[vector[_Media]] media
    cdef vector[size_t] media_next
    cdef vector[M.mtmd_context *] mctx
    cdef vector[int32_t] rc                     # llama.cpp's code for an error finish
    cdef vector[bint] media_failed              # ... which came from a media chunk
    cdef vector[L.llama_sampler *] bs_chains    # owned copies attached to the slot's sequence
    cdef bint backend_sampling
    cdef list samplers
    cdef list inputs                            # MultimodalInput of each slot, or None
    cdef dict groups                            # lora key -> [(LoraAdapter, scale), ...]
    cdef dict group_ids                         # ((id(adapter), scale), ...) -> lora key
    cdef int64_t next_key, applied_key
    cdef object draft
    cdef int n_draft, ngram_max
    cdef int64_t next_id
    cdef object lock
    cdef L.llama_batch batch
    cdef bint batch_alive
    cdef dict errors                            # request id -> exception, of the last step
    # events of the last step
    cdef vector[int64_t] ev_req
    cdef vector[L.llama_token] ev_tok
    cdef vector[int] ev_fin
    cdef vector[int] ev_slot
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
    cdef vector[int] order                      # prefill slots, oldest request first
    # this step's samples, taken in parallel (one slot per thread) and then applied in slot order
    cdef vector[int] smp_slot
    cdef vector[const float *] smp_src
    cdef vector[L.llama_token] smp_tok
    cdef readonly long n_steps, n_decoded_tokens, n_reused_tokens, n_drafted, n_accepted

    def __cinit__(self):
        self.batch_alive = False

    def __init__(self, Context ctx not None, *, bint backend_sampling=False, draft=None,
                 int n_draft=8, int ngram_max=3):
        ctx._check()
        self.ctx = ctx
        self.backend_sampling = backend_sampling
        self.n_slots = L.llama_n_seq_max(ctx._ctx)
        self.n_ctx_seq = L.llama_n_ctx_seq(ctx._ctx)
        n = self.n_slots
        self.k.resize(n)
        for i in range(n):
            _k_reset(&self.k[i], -1)
        self.state.resize(n, SLOT_FREE)
        self.req_id.resize(n, -1)
        self.pos.resize(n, 0)
        self.n_prompt_done.resize(n, 0)
        self.pending.resize(n, -1)
        self.batch_idx.resize(n, -1)
        self.n_spec.resize(n, 0)
        self.cancelled.resize(n, False)
        self.in_step.resize(n, False)
        self.use_draft.resize(n, False)
        self.prompt.resize(n)
        self.cached.resize(n)
        self.lora_key.resize(n, 0)
        self.cached_key.resize(n, 0)
        self.media.resize(n)
        self.media_next.resize(n, 0)
        self.mctx.resize(n, NULL)
        self.rc.resize(n, 0)
        self.media_failed.resize(n, False)
        self.bs_chains.resize(n, NULL)
        self.n_probs.resize(n, -1)
        self.prompt_lp.resize(n, False)
        self.chunk_at.resize(n, 0)
        self.chunk_n.resize(n, 0)
        self.samplers = [None] * n
        self.inputs = [None] * n
        self.groups = {0: list(ctx.loras)}
        self.group_ids = {}
        self.next_key = 1
        self.applied_key = 0
        self.errors = {}
        if draft is not None:
            # checked here once; each slot uses it through the kernel
            _k_set_draft(&self.k[0], ctx, draft, n_draft, ngram_max, 0)
            if isinstance(draft, Context) and L.llama_n_seq_max((<Context> draft)._ctx) < n:
                raise ValueError(f"the draft model's context has "
                                 f"{L.llama_n_seq_max((<Context> draft)._ctx)} sequences; the "
                                 f"Engine needs one per slot ({n}): create it with n_seq_max={n}")
            _k_reset(&self.k[0], -1)
        self.draft = draft
        self.n_draft = n_draft
        self.ngram_max = ngram_max
        self.next_id = 1
        self.lock = threading.Lock()
        self.batch = L.llama_batch_init(L.llama_n_batch(ctx._ctx), 0, 1)
        self.batch_alive = True
        self.n_steps = self.n_decoded_tokens = self.n_reused_tokens = 0
        self.n_drafted = self.n_accepted = 0

    def __dealloc__(self):
        cdef int i
        for i in range(<int> self.bs_chains.size()):
            self._drop_bs(i)
        for i in range(<int> self.k.size()):
            _k_clear_draft_error(&self.k[i])
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
        self.inputs[i] = None
        self.media[i].clear()
        self.media_next[i] = 0
        self.mctx[i] = NULL
        _k_reset(&self.k[i], -1)
        self.state[i] = SLOT_FREE
        self.req_id[i] = -1

    cdef int64_t _group(self, loras) except -1:
        """The key of an adapter set (interned; 0: the context's own adapters)."""
        if loras is None:
            return 0
        cdef list pairs = _lora_pairs(loras, self.ctx.model)
        sig = tuple((id(a), s) for a, s in pairs)
        key = self.group_ids.get(sig)
        if key is None:
            key = self.next_key
            self.next_key += 1
            self.group_ids[sig] = key
            self.groups[key] = pairs
        return key

    cdef int _prompt(self, prompt, vector[L.llama_token] & toks, vector[_Media] & media,
                     vector[L.llama_token] & text) except -1:
        """Token ids, or a MultimodalInput -> positions (-1 at media) and media chunks."""
        cdef MultimodalInput inp
        cdef size_t j, n, nt
        cdef const M.mtmd_input_chunk * ch
        cdef const L.llama_token * tt
        cdef _Media md
        cdef int32_t p
        media.clear()
        if not isinstance(prompt, MultimodalInput):
            self.ctx.model._fill_tokens(prompt, toks)
            text = toks
            return 0
        inp = <MultimodalInput> prompt
        if inp.projector.model is not self.ctx.model:
            raise ValueError(f"the projector was loaded for another Model "
                             f"({inp.projector.model.path}); this engine's is "
                             f"{self.ctx.model.path}")
        inp.projector._check()
        if M.mtmd_decode_use_mrope(inp.projector._c):
            raise ValueError("the Engine does not take prompts of M-RoPE projectors (Qwen2-VL "
                             "and kin) yet; use Context.eval_multimodal")
        toks.clear()
        text.clear()
        n = M.mtmd_input_chunks_size(inp._c)
        for j in range(n):
            ch = M.mtmd_input_chunks_get(inp._c, j)
            if M.mtmd_input_chunk_get_type(ch) == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                tt = M.mtmd_input_chunk_get_tokens_text(ch, &nt)
                for p in range(<int32_t> nt):
                    toks.push_back(tt[p])
                    text.push_back(tt[p])
            else:
                if j == n - 1:
                    raise ValueError("a multimodal prompt must end with text (the Engine "
                                     "samples from the logits of its last text token)")
                md.at = toks.size()
                md.n_pos = M.mtmd_input_chunk_get_n_pos(ch)
                md.chunk = ch
                media.push_back(md)
                for p in range(md.n_pos):
                    toks.push_back(-1)
        return 0

    def submit(self, prompt, Sampler sampler not None, int max_tokens=-1, stop_strings=None,
               int logprobs=-1, bint prompt_logprobs=False, *, loras=None, bint draft=True,
               stop_tokens=None, stop_sequences=None, double max_sample_ms=0):
        """Queue a prompt (token ids or a MultimodalInput); returns its request id.
        EngineFullError when no slot is free.

        logprobs=N (>= 0): each generated token comes with its log-probability under the
        model (log-softmax of the raw logits) and the N most likely tokens', in step(...,
        with_logprobs=True). Such a request samples on the CPU (it needs the logits) and
        without drafts. prompt_logprobs=True (with logprobs >= 0): the same for every prompt
        token after the first, from last_prompt_logprobs() after each step; the whole prompt
        is decoded (no cached prefix is reused). loras: this request's adapter set (see the
        class). draft=False: no speculative decoding for this request. max_sample_ms > 0:
        a token whose choice takes more CPU time (a costly grammar) ends the request with
        "error"
        (GrammarError in last_errors()), so that one request cannot hold every other slot's
        step for long."""
        cdef vector[L.llama_token] toks, text
        cdef vector[_Media] media
        cdef int i, best = -1
        cdef size_t common, best_common = 0
        cdef L.llama_sampler * clone
        cdef _Slot * k
        cdef int64_t key
        cdef size_t j
        self._prompt(prompt, toks, media, text)
        if toks.size() == 0:
            raise ValueError("empty prompt")
        if <int32_t> toks.size() >= self.n_ctx_seq:
            raise ContextOverflowError(f"prompt of {toks.size()} tokens does not fit a slot's "
                                       f"context of {self.n_ctx_seq} tokens")
        if prompt_logprobs and logprobs < 0:
            raise ValueError("prompt_logprobs needs logprobs >= 0")
        if prompt_logprobs and media.size():
            raise ValueError("prompt_logprobs cannot be given for a multimodal prompt")
        if logprobs < -1 or logprobs > self.ctx._n_vocab:
            raise ValueError(f"logprobs must be in 0..{self.ctx._n_vocab} (or -1: none), "
                             f"got {logprobs}")
        sampler._check()
        if not sampler._has_selector:
            raise SamplerError("the sampler chain must end with greedy(), dist() or mirostat()")
        if sampler._owner != 0:
            raise BusyError("this Sampler is in use by another generation")
        with self.lock:
            if not self.batch_alive:
                raise ClosedError("this Engine is closed")
            key = self._group(loras)
            for i in range(self.n_slots):
                if self.state[i] != SLOT_FREE:
                    continue
                common = 0
                if self.cached_key[i] == key and not prompt_logprobs:
                    while (common < self.cached[i].size() and common < toks.size() - 1 and
                           self.cached[i][common] >= 0 and
                           self.cached[i][common] == toks[common]):
                        common += 1
                if best < 0 or common > best_common:
                    best, best_common = i, common
            if best < 0:
                raise EngineFullError(f"all {self.n_slots} slots are busy")
            i = best
            # a prompt that starts inside a media chunk re-evaluates the whole chunk
            for j in range(media.size()):
                if media[j].at < best_common < media[j].at + media[j].n_pos:
                    best_common = media[j].at
            k = &self.k[i]
            _k_reset(k, max_tokens)
            if max_sample_ms > 0:
                k.max_sample_ns = <int64_t> (max_sample_ms * 1e6)
            _k_set_sampler(k, sampler, self.ctx._n_vocab)
            _k_set_stops(k, self.ctx.model, stop_tokens, stop_sequences, stop_strings)
            L.llama_memory_seq_rm(L.llama_get_memory(self.ctx._ctx), i, <int32_t> best_common,
                                  -1)
            self.cached[i].resize(best_common)
            self.cached_key[i] = key
            self.lora_key[i] = key
            self.prompt[i] = toks
            k.hist = text
            self.media[i] = media
            self.media_next[i] = 0
            while (self.media_next[i] < media.size() and
                   media[self.media_next[i]].at < best_common):
                self.media_next[i] += 1
            self.inputs[i] = prompt if media.size() else None
            self.mctx[i] = (<MultimodalInput> prompt).projector._c if media.size() else NULL
            self.n_prompt_done[i] = best_common
            self.pos[i] = <int32_t> best_common
            self.cancelled[i] = False
            self.rc[i] = 0
            self.media_failed[i] = False
            self.n_probs[i] = logprobs
            self.prompt_lp[i] = prompt_logprobs
            self._drop_bs(i)
            bs = False
            if self.backend_sampling and sampler.backend_capable and logprobs < 0:
                # the slot's sequence is ready now: the prompt's last token samples in the graph
                clone = _k_backend_chain(k, sampler)
                if clone != NULL:
                    if L.llama_set_sampler(self.ctx._ctx, i, clone):
                        self.bs_chains[i] = clone
                        k.bs = True
                        bs = True
                    else:
                        L.llama_sampler_free(clone)
                        _k_set_sampler(k, sampler, self.ctx._n_vocab)
            self.use_draft[i] = draft and self.draft is not None and logprobs < 0 and not bs
            if self.use_draft[i]:
                _k_set_draft(k, self.ctx, self.draft, self.n_draft, self.ngram_max, i)
            self.state[i] = SLOT_PREFILL
            self.req_id[i] = self.next_id
            self.next_id += 1
            self.samplers[i] = sampler
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

    # -- one step, without the GIL ---------------------------------------------------------------

    cdef void _event(self, int i, L.llama_token tok, int fin) noexcept nogil:
        self.ev_req.push_back(self.req_id[i])
        self.ev_tok.push_back(tok)
        self.ev_fin.push_back(fin)
        self.ev_slot.push_back(i)

    cdef void _finish_slot(self, int i, int fin, int code) noexcept nogil:
        """An event that only ends slot i's request."""
        self._event(i, -1, fin)
        self.ev_lp_at.push_back(-1)
        self.ev_lp_n.push_back(0)
        self.ev_tok_lp.push_back(0)
        self.rc[i] = code
        self.state[i] = SLOT_FREE

    cdef void _push_prompt_logprobs(self, int i, int32_t take) noexcept nogil:
        """Log-probabilities of the prompt tokens that slot i's chunk predicts: the output of
        prompt position p gives token p + 1's (the chunk's last output, when it ends the
        prompt, is the first generated token's: sampled as usual)."""
        cdef int32_t j, p
        cdef const float * row
        cdef float tok_lp = 0
        cdef int32_t nt, k
        cdef L.llama_token nxt
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
        cdef const float * row = NULL
        cdef float tok_lp = 0
        cdef int32_t n, k
        if self.n_probs[i] >= 0:
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

    cdef void _eval_media(self, int i) noexcept nogil:
        """Encode and decode the media chunks that come next in slot i's prompt."""
        cdef _Media * md
        cdef L.llama_pos new_pos = 0
        cdef int32_t r, n_batch = L.llama_n_batch(self.ctx._ctx)
        cdef size_t j
        while (self.media_next[i] < self.media[i].size() and
               self.media[i][self.media_next[i]].at == self.n_prompt_done[i]):
            md = &self.media[i][self.media_next[i]]
            r = M.mtmd_helper_eval_chunk_single(self.mctx[i], self.ctx._ctx, md.chunk,
                                                self.pos[i], i, n_batch, False, &new_pos)
            if r != 0:
                L.llama_memory_seq_rm(L.llama_get_memory(self.ctx._ctx), i, self.pos[i], -1)
                self.media_failed[i] = r != 2
                self._finish_slot(i, STEP_ABORTED if r == 2 else STEP_ERROR, r)
                return
            for j in range(<size_t> md.n_pos):
                self.cached[i].push_back(-1)
            self.n_prompt_done[i] += md.n_pos
            self.pos[i] += md.n_pos
            self.media_next[i] += 1

    cdef int32_t _prompt_room(self, int i) noexcept nogil:
        """Prompt tokens of slot i before its next media chunk (or the end)."""
        cdef size_t end = self.prompt[i].size()
        if self.media_next[i] < self.media[i].size():
            end = self.media[i][self.media_next[i]].at
        return <int32_t> (end - self.n_prompt_done[i])

    cdef void _gen_tokens(self, int i, size_t n_before, _Step st) noexcept nogil:
        """Events for the tokens slot i produced this step (from out[n_before]), the last one
        carrying the finish when the request ends."""
        cdef _Slot * k = &self.k[i]
        cdef size_t j, n = k.out.size()
        cdef bint carried          # the finish rides on the last token's event
        if st == STEP_TOKEN and self.pos[i] >= self.n_ctx_seq:
            st = STEP_CTX_FULL
        carried = n > n_before and (st == STEP_STOP or st == STEP_LENGTH or
                                    st == STEP_CTX_FULL)
        for j in range(n_before, n):
            self._push_logprobs(i, k.out[j])
            self._event(i, k.out[j], st if carried and j == n - 1 else STEP_TOKEN)
        if n > n_before:
            self.pending[i] = k.out.back()
        if carried:
            self.state[i] = SLOT_FREE
        elif st != STEP_TOKEN:
            self._finish_slot(i, st, 0)

    cdef int32_t _step_c(self, int64_t key) noexcept nogil:
        cdef L.llama_context * c = self.ctx._ctx
        cdef const L.llama_vocab * vocab = self.ctx.model._vocab
        cdef int32_t n_batch = L.llama_n_batch(c), n = 0, rc, take, j, room, cap
        cdef int i, a, nd, limit, kept, n_gen = 0, n_gen_left
        cdef size_t n_before
        cdef L.llama_token tok
        cdef _Step st
        cdef _Slot * k
        cdef bint evicted
        self.ev_req.clear(); self.ev_tok.clear(); self.ev_fin.clear(); self.ev_slot.clear()
        self.ev_lp_at.clear(); self.ev_lp_n.clear(); self.ev_tok_lp.clear()
        self.ev_lp_tok.clear(); self.ev_lp_val.clear()
        self.pv_req.clear(); self.pv_tok.clear(); self.pv_pos.clear(); self.pv_lp_at.clear()
        self.pv_lp_n.clear(); self.pv_tok_lp.clear()
        # cancelled slots leave first (whatever their adapter set)
        for i in range(self.n_slots):
            self.batch_idx[i] = -1
            self.n_spec[i] = 0
            self.chunk_n[i] = 0
            if self.state[i] != SLOT_FREE and self.cancelled[i]:
                self._finish_slot(i, STEP_ABORTED, 0)
            self.in_step[i] = self.state[i] != SLOT_FREE and self.lora_key[i] == key
            if self.in_step[i] and self.state[i] == SLOT_GEN:
                n_gen += 1
        # media chunks that come next in a prompt: encoded and decoded now, one by one
        for i in range(self.n_slots):
            if self.in_step[i] and self.state[i] == SLOT_PREFILL:
                self._eval_media(i)
                if self.state[i] == SLOT_FREE:
                    self.in_step[i] = False
        # 1. every generating slot: its pending token and its drafts
        n_gen_left = n_gen
        for i in range(self.n_slots):
            if not self.in_step[i] or self.state[i] != SLOT_GEN or n >= n_batch:
                continue
            n_gen_left -= 1
            k = &self.k[i]
            nd = 0
            if self.use_draft[i]:
                limit = k.n_draft
                if limit > self.n_ctx_seq - self.pos[i] - 1:
                    limit = self.n_ctx_seq - self.pos[i] - 1
                if limit > k.max_tokens - k.produced - 1:
                    limit = k.max_tokens - k.produced - 1
                if limit > n_batch - n - 1 - n_gen_left:
                    limit = n_batch - n - 1 - n_gen_left
                nd = _k_draft(k, limit)
                if nd < 0:
                    self._finish_slot(i, STEP_DRAFT_ERROR, 0)
                    continue
            self.batch_idx[i] = n
            self.n_spec[i] = nd
            for j in range(nd + 1):
                self.batch.token[n] = self.pending[i] if j == 0 else k.draft[j - 1]
                self.batch.pos[n] = self.pos[i] + j
                self.batch.n_seq_id[n] = 1
                self.batch.seq_id[n][0] = i
                self.batch.logits[n] = True
                n += 1
        # 2. prompt chunks in what is left of the batch, oldest request first. While slots
        # are generating, the step holds one ubatch (their tokens plus prompt tokens), so
        # they keep streaming while new prompts are taken in: a longer batch would only be
        # split into ubatches by llama.cpp, each of them delaying every generating slot
        if n > 0:
            cap = L.llama_n_ubatch(c)
            if cap < n + 32:
                cap = n + 32
            if cap < n_batch:
                n_batch = cap
        self.order.clear()
        for i in range(self.n_slots):
            if self.in_step[i] and self.state[i] == SLOT_PREFILL:
                a = <int> self.order.size()
                self.order.push_back(i)
                while a > 0 and self.req_id[self.order[a - 1]] > self.req_id[i]:
                    self.order[a] = self.order[a - 1]
                    a -= 1
                self.order[a] = i
        for a in range(<int> self.order.size()):
            i = self.order[a]
            if n >= n_batch:
                break
            room = self._prompt_room(i)
            take = room if room < n_batch - n else n_batch - n
            if take <= 0:
                continue
            self.chunk_at[i] = n
            self.chunk_n[i] = take
            for j in range(take):
                self.batch.token[n] = self.prompt[i][self.n_prompt_done[i] + j]
                self.batch.pos[n] = self.pos[i] + j
                self.batch.n_seq_id[n] = 1
                self.batch.seq_id[n][0] = i
                self.batch.logits[n] = self.prompt_lp[i]
                n += 1
            if self.n_prompt_done[i] + take == self.prompt[i].size():
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
                if self.in_step[i] and self.state[i] == SLOT_GEN:
                    self._finish_slot(i, STEP_CTX_FULL, rc)
                    evicted = True
            if not evicted:
                for i in range(self.n_slots):
                    if self.in_step[i] and self.state[i] == SLOT_PREFILL:
                        self._finish_slot(i, STEP_ERROR, rc)
            return rc
        if rc != 0:
            # abort or fatal error: drop what the failed batch left in the cache
            for i in range(self.n_slots):
                if not self.in_step[i] or self.state[i] == SLOT_FREE:
                    continue
                L.llama_memory_seq_rm(L.llama_get_memory(c), i, self.pos[i], -1)
                self._finish_slot(i, STEP_ERROR, rc)
            return rc
        self.n_steps += 1
        self.n_decoded_tokens += n
        # 3. bookkeeping, and which slots sample a token now
        self.smp_slot.clear()
        for i in range(self.n_slots):
            if not self.in_step[i]:
                continue
            k = &self.k[i]
            if self.state[i] == SLOT_GEN:
                if self.batch_idx[i] < 0:
                    continue                  # no room in this step's batch
                if self.n_spec[i] > 0:
                    n_before = k.out.size()
                    st = _k_verify(k, c, vocab, self.batch_idx[i], self.n_spec[i], &kept)
                    self.n_drafted += self.n_spec[i]
                    self.n_accepted += kept - 1
                    # the pending token and the confirmed drafts stay; the rest goes
                    for j in range(kept):
                        self.cached[i].push_back(self.pending[i] if j == 0 else k.draft[j - 1])
                    self.pos[i] += kept
                    L.llama_memory_seq_rm(L.llama_get_memory(c), i, self.pos[i], -1)
                    self._gen_tokens(i, n_before, st)
                else:
                    self.cached[i].push_back(self.pending[i])
                    self.pos[i] += 1
                    self.smp_slot.push_back(i)
            elif self.state[i] == SLOT_PREFILL:
                take = self.chunk_n[i]
                if self.prompt_lp[i] and take > 0:
                    self._push_prompt_logprobs(i, take)
                for j in range(take):
                    self.cached[i].push_back(self.prompt[i][self.n_prompt_done[i] + j])
                self.n_prompt_done[i] += take
                self.pos[i] += take
                if self.n_prompt_done[i] == self.prompt[i].size():
                    self.state[i] = SLOT_GEN
                    self.smp_slot.push_back(i)
        # 4. the samples: each slot's own sampler over its own logits row, so the slots are
        # independent and sample in parallel (the rows are fetched first, in this thread: that
        # is the only call into the context); then each token through the kernel in slot order
        self._sample_slots(c)
        for a in range(<int> self.smp_slot.size()):
            i = self.smp_slot[a]
            k = &self.k[i]
            n_before = k.out.size()
            self._gen_tokens(i, n_before, _k_take(k, vocab, self.smp_tok[a]))
        return 0

    cdef void _sample_slots(self, L.llama_context * c) noexcept nogil:
        cdef int a, i, m = <int> self.smp_slot.size(), n_par = 0
        cdef int nt = L.llama_n_threads(c)
        self.smp_src.resize(m)
        self.smp_tok.resize(m)
        for a in range(m):
            i = self.smp_slot[a]
            self.smp_src[a] = NULL
            if self.k[i].bs:              # sampled in the graph: read back from the context
                self.smp_tok[a] = _k_sample(&self.k[i], c, self.batch_idx[i], NULL)
                continue
            self.smp_src[a] = L.llama_get_logits_ith(c, self.batch_idx[i])
            if self.smp_src[a] == NULL:   # the kernel reports it
                self.smp_tok[a] = _k_sample(&self.k[i], c, self.batch_idx[i], NULL)
                continue
            n_par += 1
        if n_par == 0:
            return
        if nt > n_par:
            nt = n_par
        if nt < 1:
            nt = 1
        for a in prange(m, schedule="dynamic", chunksize=1, num_threads=nt):
            if self.smp_src[a] != NULL:
                self.smp_tok[a] = _k_sample(&self.k[self.smp_slot[a]], c,
                                            self.batch_idx[self.smp_slot[a]],
                                            self.smp_src[a])

    def step(self, bint with_logprobs=False):
        """One llama_decode for the active slots of one adapter set. Returns events
        (request_id, token, finish_reason): token is -1 for an event that only ends a request;
        finish_reason is None while the request goes on, else "stop", "length", "aborted" or
        "error" (then last_errors() has the exception). With speculative decoding one step can
        bring several tokens of a request.

        with_logprobs=True: events are (request_id, token, finish_reason, logprobs), logprobs
        None or (token's log-probability, [(token, log-probability), ...] most likely first)
        for requests submitted with logprobs >= 0."""
        cdef int32_t rc
        cdef size_t e
        cdef int i, a, j, fin
        cdef int64_t key
        cdef list claimed = []
        with self.lock:
            if not self.batch_alive:
                raise ClosedError("this Engine is closed")
            key = self._pick_group()
            if key != self.applied_key:
                self.ctx.set_loras(self.groups[key])
                self.applied_key = key
            try:
                for i in range(self.n_slots):
                    if self.state[i] == SLOT_PREFILL and self.inputs[i] is not None and \
                            self.media_next[i] < self.media[i].size():
                        proj = (<MultimodalInput> self.inputs[i]).projector
                        if proj not in claimed:
                            (<Projector> proj)._claim()
                            claimed.append(proj)
                if isinstance(self.draft, Context):
                    (<Context> self.draft)._enter()
                    claimed.append(self.draft)
                self.ctx._enter(True)
                try:
                    with nogil:
                        rc = self._step_c(key)
                    self.ctx.epoch += 1
                    self.ctx._logits_valid = False
                    self.ctx._no_raw_logits = False
                finally:
                    self.ctx._leave()
            finally:
                for obj in claimed:
                    if isinstance(obj, Projector):
                        (<Projector> obj)._owner = 0
                    else:
                        (<Context> obj)._leave()
            self.errors = {}
            events = []
            for e in range(self.ev_req.size()):
                fin = self.ev_fin[e]
                reason = None if fin == STEP_TOKEN else _FINISH[fin]
                if reason == "error":
                    i = self.ev_slot[e]
                    if fin == STEP_DRAFT_ERROR:
                        err = _k_take_draft_error(&self.k[i])
                    elif self.media_failed[i]:
                        err = MediaError(f"encoding or decoding a media chunk of the prompt "
                                         f"failed (code {self.rc[i]})")
                    else:
                        err = _step_error(fin, self.k[i].sample_code, self.rc[i],
                                          "decoding the batch")
                    self.errors[self.ev_req[e]] = err
                if not with_logprobs:
                    events.append((self.ev_req[e], self.ev_tok[e], reason))
                    continue
                a = self.ev_lp_at[e]
                if a < 0:
                    lp = None
                else:
                    lp = (self.ev_tok_lp[e],
                          [(self.ev_lp_tok[j], self.ev_lp_val[j])
                           for j in range(a, a + self.ev_lp_n[e])])
                events.append((self.ev_req[e], self.ev_tok[e], reason, lp))
            for i in range(self.n_slots):
                if self.state[i] == SLOT_FREE and self.samplers[i] is not None:
                    self._free_slot(i)
            self._prune_groups()
        return events

    cdef int64_t _pick_group(self) except -1:
        """The adapter set this step serves: while requests of several sets are active, each
        set gets a step in turn."""
        cdef int i
        keys = set()
        for i in range(self.n_slots):
            if self.state[i] != SLOT_FREE:
                keys.add(self.lora_key[i])
        if not keys or self.applied_key in keys and len(keys) == 1:
            return self.applied_key
        if len(keys) == 1:
            return keys.pop()
        later = [x for x in keys if x > self.applied_key]
        return min(later) if later else min(keys)

    cdef void _prune_groups(self):
        """Forget adapter sets that no request and no cached prefix uses."""
        cdef int i
        if len(self.groups) <= 1:
            return
        used = {0, self.applied_key}
        for i in range(self.n_slots):
            used.add(self.lora_key[i])
            if self.cached[i].size():
                used.add(self.cached_key[i])
        for key in [x for x in self.groups if x not in used]:
            del self.groups[key]
        for sig in [s for s, x in self.group_ids.items() if x not in used]:
            del self.group_ids[sig]

    def last_errors(self):
        """{request_id: exception} for the requests the last step() ended with "error"."""
        return dict(self.errors)

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

    # -- a slot's cache to a file and back (llama-server's /slots save / restore / erase) ---------

    def _fingerprint(self):
        m = self.ctx.model
        return {"n_vocab": m.n_vocab, "n_embd": m.n_embd, "n_layer": m.n_layer,
                "n_params": int(m.n_params), "size": int(m.size)}

    cdef int _free_slot_or_raise(self, int slot) except -1:
        if slot < 0 or slot >= self.n_slots:
            raise ValueError(f"slot {slot} does not exist (0..{self.n_slots - 1})")
        if not self.batch_alive:
            raise ClosedError("this Engine is closed")
        if self.state[slot] != SLOT_FREE:
            raise BusyError(f"slot {slot} is processing a request")
        return 0

    def slot_save(self, int slot, path):
        """Write free slot `slot`'s cache -- the tokens it holds and their KV -- to `path`
        (written to a temporary name, then renamed). Returns (tokens, bytes written).
        BusyError while a request runs in it; StateError for a cache that holds media or a
        request's own LoRA adapters (restoring it would mix adapter sets)."""
        cdef size_t n, got, j
        cdef bytes state
        cdef vector[L.llama_token] toks
        with self.lock:
            self._free_slot_or_raise(slot)
            if self.cached_key[slot] != 0:
                raise StateError(f"slot {slot} holds a request's own LoRA adapter set: it cannot "
                                 f"be saved")
            toks = self.cached[slot]
            for j in range(toks.size()):
                if toks[j] < 0:
                    raise StateError(f"slot {slot} holds media embeddings: it cannot be saved")
            n = L.llama_state_seq_get_size(self.ctx._ctx, slot)
            state = PyBytes_FromStringAndSize(NULL, n)
            got = L.llama_state_seq_get_data(self.ctx._ctx,
                                             <uint8_t *> PyBytes_AS_STRING(state), n, slot)
            if got != n:
                raise StateError(f"llama.cpp wrote {got} of {n} bytes of slot {slot}'s state")
        data = _slot_file_bytes(self._fingerprint(), list(toks), state)
        tmp = os.fspath(path) + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return int(toks.size()), len(data)

    def slot_restore(self, int slot, path):
        """Load a file of slot_save() into free slot `slot` (any slot of an Engine on the same
        model); a request whose prompt starts with its tokens reuses them. Returns (tokens,
        bytes read). The whole file is checked first -- format, version, CRC-32, the model it
        was saved from, the token ids, that it fits a slot -- and a bad one raises StateError
        with the slot left as it was (if llama.cpp itself refuses the state, the slot is left
        empty); either way it stays usable."""
        cdef bytes state
        cdef size_t got
        cdef vector[L.llama_token] toks
        if isinstance(self.draft, Context):
            raise StateError("slot restore is not supported with a draft model (its own cache "
                             "for the slot would not match)")
        with open(path, "rb") as f:
            data = f.read()
        tok_list, state = _slot_file_parse(data, self._fingerprint(), self.n_ctx_seq)
        for t in tok_list:
            toks.push_back(t)
        with self.lock:
            self._free_slot_or_raise(slot)
            L.llama_memory_seq_rm(L.llama_get_memory(self.ctx._ctx), slot, -1, -1)
            self.cached[slot].clear()
            self.cached_key[slot] = 0
            if toks.size():
                got = L.llama_state_seq_set_data(self.ctx._ctx,
                                                 <const uint8_t *> PyBytes_AS_STRING(state),
                                                 len(state), slot)
                if got == 0:
                    L.llama_memory_seq_rm(L.llama_get_memory(self.ctx._ctx), slot, -1, -1)
                    raise StateError(f"llama.cpp refused the state in {os.fspath(path)!r}")
                self.cached[slot] = toks
        return int(toks.size()), len(data)

    def slot_erase(self, int slot):
        """Forget free slot `slot`'s cache; returns how many tokens it held."""
        with self.lock:
            self._free_slot_or_raise(slot)
            n = self.cached[slot].size()
            L.llama_memory_seq_rm(L.llama_get_memory(self.ctx._ctx), slot, -1, -1)
            self.cached[slot].clear()
            self.cached_key[slot] = 0
            return int(n)

    def slot_info(self):
        """Per slot: state, request id, cached tokens, position, adapter set (for /metrics,
        /slots and tests)."""
        names = {SLOT_FREE: "free", SLOT_PREFILL: "prefill", SLOT_GEN: "generating"}
        return [{"slot": i, "state": names[self.state[i]], "request_id": self.req_id[i],
                 "cached_tokens": self.cached[i].size(), "pos": self.pos[i],
                 "lora": [(a.path, s) for a, s in self.groups.get(self.lora_key[i], ())]}
                for i in range(self.n_slots)]


# -- the slot file: magic, version, JSON header (the model's fingerprint, token count), the
# tokens (int32), llama.cpp's sequence state, CRC-32 of all of it ---------------------------------

_SLOT_MAGIC = b"PYLSLOT\x00"
_SLOT_VERSION = 1


def _slot_file_bytes(fingerprint, tokens, bytes state):
    import json
    meta = json.dumps({"model": fingerprint, "n_tokens": len(tokens)}).encode("utf-8")
    body = b"".join([_SLOT_MAGIC, _SLOT_VERSION.to_bytes(4, "little"),
                     len(meta).to_bytes(4, "little"), meta,
                     np.asarray(tokens, dtype="<i4").tobytes(),
                     len(state).to_bytes(8, "little"), state])
    return body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little")


def _slot_file_parse(bytes data, fingerprint, int n_ctx_seq):
    """-> (tokens, state), or StateError naming what is wrong with the file."""
    import json
    if len(data) < 8 or data[:8] != _SLOT_MAGIC:
        raise StateError("not a pyllamacy slot file (wrong magic)")
    if len(data) < 20:
        raise StateError("slot file is truncated")
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != int.from_bytes(data[-4:], "little"):
        raise StateError("slot file is damaged or truncated (CRC-32 mismatch)")
    version = int.from_bytes(data[8:12], "little")
    if version != _SLOT_VERSION:
        raise StateError(f"slot file version {version} is not supported (this pyllamacy "
                         f"reads version {_SLOT_VERSION})")
    n_meta = int.from_bytes(data[12:16], "little")
    at = 16 + n_meta
    if at > len(data) - 4:
        raise StateError("slot file is truncated (header)")
    try:
        meta = json.loads(data[16:at].decode("utf-8"))
        n = int(meta["n_tokens"])
        saved_from = meta["model"]
    except (ValueError, KeyError, TypeError) as e:
        raise StateError(f"slot file header is invalid ({e})") from None
    if saved_from != fingerprint:
        raise StateError(f"slot file was saved from another model ({saved_from}); this one is "
                         f"{fingerprint}")
    if n < 0 or n >= n_ctx_seq:
        raise StateError(f"slot file holds {n} tokens; a slot holds fewer than {n_ctx_seq}")
    if at + 4 * n + 8 > len(data) - 4:
        raise StateError("slot file is truncated (tokens)")
    toks = np.frombuffer(data, dtype="<i4", count=n, offset=at)
    if n and (int(toks.min()) < 0 or int(toks.max()) >= fingerprint["n_vocab"]):
        raise StateError("slot file holds token ids outside the vocabulary")
    at += 4 * n
    n_state = int.from_bytes(data[at:at + 8], "little")
    at += 8
    if at + n_state != len(data) - 4:
        raise StateError("slot file is truncated or has trailing bytes (state)")
    return [int(t) for t in toks], data[at:at + n_state]
