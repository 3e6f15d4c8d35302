# The per-slot kernel: what one generating sequence does at each step, written once and used
# by both Generation (one sequence, one token per llama_process) and Engine (many slots in one
# llama_decode): choosing a token (the sampling fast paths, the full chain with its grammar,
# or a chain running in the compute graph), the stop rules (end-of-generation, stop token
# sequences, stop strings, max_tokens), speculative drafts (prompt lookup, a draft model, a
# Python drafter) and their verification, and the one table of finish reasons and errors.
#
# A _Slot is a plain C++ struct driven by nogil functions; its owner (a Generation or an
# Engine) keeps the Python objects it points at (Sampler, draft Context, drafter callable)
# alive for as long as the slot uses them.

from cpython.ref cimport PyObject, Py_XINCREF, Py_XDECREF


cdef enum _Step:
    STEP_TOKEN = 0        # a token was produced; go on
    STEP_STOP = 1         # a token was produced and completed a stop sequence / string
    STEP_LENGTH = 2       # a token was produced and it was the last allowed
    STEP_EOG = 3          # the model produced end-of-generation (not returned)
    STEP_CTX_FULL = 4     # no room in the context for the next token
    STEP_ABORTED = 5      # cancel() / Ctrl-C
    STEP_ERROR = 6        # llama_decode failed (its code kept by the owner)
    STEP_NO_TOKEN = 7     # the grammar and logit biases leave no token to choose
    STEP_SAMPLER_ERROR = 8
    STEP_DRAFT_ERROR = 9  # a Python drafter raised or returned something unusable


# The one table of finish reasons. Errors all finish with "error"; the exception that says
# what went wrong comes from _step_error().
_FINISH = {STEP_STOP: "stop", STEP_EOG: "stop", STEP_LENGTH: "length",
           STEP_CTX_FULL: "length", STEP_ABORTED: "aborted", STEP_ERROR: "error",
           STEP_NO_TOKEN: "error", STEP_SAMPLER_ERROR: "error", STEP_DRAFT_ERROR: "error"}

FINISH_REASONS = ("stop", "length", "aborted", "error")


cdef object _sample_error(int code):
    if code == S.SAMPLE_NONE_ALLOWED:
        return GrammarError("no token can be generated: the grammar and the logit biases "
                            "together exclude every token")
    if code == S.SAMPLE_TOO_SLOW:
        return GrammarError("choosing one token took longer than this request may take per "
                            "token (its grammar is too costly); the request was ended")
    if code == S.SAMPLE_NO_LOGITS:
        return LlamaError("no logits to sample from: eval() with logits for the last token")
    return SamplerError("a llama.cpp sampler failed while choosing a token")


cdef object _step_error(int st, int sample_code, int decode_rc, str what):
    """The exception for an error step (None for the others)."""
    if st == STEP_NO_TOKEN or st == STEP_SAMPLER_ERROR:
        return _sample_error(sample_code)
    if st == STEP_ERROR:
        return _decode_error(decode_rc, what)
    return None


cdef enum:
    _UNLIMITED = 0x7FFFFFFF   # max_tokens of a generation without a limit


# draft kinds
cdef enum:
    DRAFT_NONE = 0
    DRAFT_NGRAM = 1       # prompt lookup: the continuation of the latest earlier n-gram match
    DRAFT_MODEL = 2       # greedy tokens of a small draft model (its own context and sequence)
    DRAFT_PYTHON = 3      # a callable: input_ids -> draft token ids (LlamaDraftModel protocol)


cdef struct _Slot:
    # -- choosing a token
    L.llama_sampler * chain         # the chain to run (on the CPU, or in the graph when bs)
    bint bs                         # the chain runs in the compute graph: llama.cpp returns
                                    # the token, not the logits
    bint greedy_fast                # [logit_bias..., greedy]: argmax of the biased logits
    bint greedy_grammar             # [logit_bias / grammar..., greedy]: that argmax, checked
    vector[L.llama_sampler *] grammars  # ... against these stages of the chain
    int32_t topk_k                  # > 0: the top-k fast path with this k
    const _BiasVec * bias           # the Sampler's fast-path bias (one entry per token)
    S.TopkScratch topk_scratch
    vector[L.llama_token_data] cur  # candidates buffer, reused every step
    int sample_code                 # why the last choice failed (< 0)
    int64_t max_sample_ns           # > 0: a choice that takes longer ends the request
    # -- the stop rules
    vector[vector[L.llama_token]] stop_seqs
    vector[string] stop_strs
    size_t max_stop
    string tail                     # recent text, searched for the stop strings
    vector[char] piece
    int produced
    int max_tokens
    vector[L.llama_token] out       # tokens produced
    L.llama_token eog               # the end-of-generation token that ended it (or -1)
    vector[L.llama_token] hist      # the whole text sequence: prompt (less media) + out
    # -- speculative drafts
    int draft_kind
    int n_draft
    int ngram_max
    vector[L.llama_token] draft
    L.llama_context * draft_ctx     # DRAFT_MODEL: its context, the sequence it uses there,
    int draft_seq                   # its batch, and what that sequence holds
    L.llama_batch * draft_batch
    const L.llama_vocab * draft_vocab
    int32_t draft_n_vocab
    vector[L.llama_token] draft_kv
    PyObject * draft_fn             # DRAFT_PYTHON: the callable (the owner holds a reference)
    PyObject * draft_error          # its exception (a reference of ours) or NULL
    int32_t n_vocab
    long n_drafted
    long n_accepted


cdef void _k_reset(_Slot * k, int max_tokens) noexcept:
    """Forget the last generation (the sampler and drafter are set by the caller)."""
    k.chain = NULL
    k.bs = False
    k.greedy_fast = False
    k.greedy_grammar = False
    k.grammars.clear()
    k.topk_k = 0
    k.bias = NULL
    k.sample_code = 0
    k.max_sample_ns = 0
    k.stop_seqs.clear()
    k.stop_strs.clear()
    k.max_stop = 0
    k.tail.clear()
    k.produced = 0
    k.eog = -1
    k.max_tokens = max_tokens if max_tokens >= 0 else _UNLIMITED
    k.out.clear()
    k.hist.clear()
    k.draft_kind = DRAFT_NONE
    k.draft.clear()
    k.draft_ctx = NULL
    k.draft_batch = NULL
    k.draft_fn = NULL
    _k_clear_draft_error(k)
    k.n_drafted = 0
    k.n_accepted = 0


cdef void _k_clear_draft_error(_Slot * k) noexcept:
    if k.draft_error != NULL:
        Py_XDECREF(k.draft_error)
        k.draft_error = NULL


cdef object _k_take_draft_error(_Slot * k):
    if k.draft_error == NULL:
        return LlamaError("the draft model failed")
    err = <object> k.draft_error
    _k_clear_draft_error(k)
    return err


cdef int _k_set_sampler(_Slot * k, Sampler sampler, int32_t n_vocab) except -1:
    """Use `sampler`'s chain and fast paths (checked by the caller)."""
    k.chain = sampler._chain
    k.greedy_fast = sampler._greedy_fast
    k.greedy_grammar = sampler._greedy_grammar
    k.grammars.clear()
    if k.greedy_grammar:
        for i in sampler._grammar_stages:
            k.grammars.push_back(L.llama_sampler_chain_get(sampler._chain, i))
    k.topk_k = sampler._topk_fast
    k.bias = &sampler._fast_bias
    k.bs = False
    k.n_vocab = n_vocab
    return 0


cdef L.llama_sampler * _k_backend_chain(_Slot * k, Sampler sampler) noexcept:
    """A copy of `sampler`'s chain for running in the compute graph (NULL when llama.cpp
    cannot copy it), made the slot's chain: once attached, llama.cpp marks a chain as running
    in the graph for good, so the caller's Sampler stays usable on the CPU; the copy runs the
    whole chain (no CPU fast path). The caller owns the copy and attaches it
    (llama_set_sampler) when its sequence is ready."""
    cdef L.llama_sampler * clone = L.llama_sampler_clone(sampler._chain)
    if clone != NULL:
        k.chain = clone
        k.greedy_fast = False
        k.greedy_grammar = False
        k.grammars.clear()
        k.topk_k = 0
    return clone


cdef int _k_set_stops(_Slot * k, Model model, stop_tokens, stop_sequences,
                      stop_strings) except -1:
    """Checked stop rules: token ids, token sequences and strings (bytes or str)."""
    cdef vector[L.llama_token] seq
    for t in (stop_tokens or ()):
        model._fill_tokens([t], seq)
        k.stop_seqs.push_back(seq)
    for s in (stop_sequences or ()):
        model._fill_tokens(s, seq)
        if seq.size() == 0:
            raise ValueError("empty stop sequence")
        k.stop_seqs.push_back(seq)
    for s in (stop_strings or ()):
        b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        if len(b) == 0:
            continue
        k.stop_strs.push_back(b)
        if <size_t> len(b) > k.max_stop:
            k.max_stop = len(b)
    return 0


cdef int _k_set_draft(_Slot * k, Context ctx, draft, int n_draft, int ngram_max,
                      int draft_seq) except -1:
    """Speculative decoding: "ngram" (prompt lookup), a Context of a draft model (sequence
    `draft_seq` of it), a callable, or None."""
    k.draft_kind = DRAFT_NONE
    if draft is None:
        return 0
    if n_draft < 1:
        raise ValueError(f"n_draft must be >= 1, got {n_draft}")
    if ngram_max < 1:
        raise ValueError(f"ngram_max must be >= 1, got {ngram_max}")
    k.n_draft = n_draft
    k.ngram_max = ngram_max
    cdef Context dc
    if isinstance(draft, str):
        if draft not in ("ngram", "prompt_lookup"):
            raise ValueError(f"draft must be 'ngram', a Context or None, got {draft!r}")
        k.draft_kind = DRAFT_NGRAM
    elif isinstance(draft, Context):
        dc = <Context> draft
        dc._check()
        if dc is ctx:
            raise ValueError("the draft context must not be the target context")
        if dc._n_vocab != ctx._n_vocab:
            raise ValueError("the draft model's vocabulary differs from the target's "
                             f"({dc._n_vocab} vs {ctx._n_vocab} tokens)")
        dc._check_seq(draft_seq)
        k.draft_kind = DRAFT_MODEL
        k.draft_ctx = dc._ctx
        k.draft_seq = draft_seq
        k.draft_batch = &dc._batch
        k.draft_vocab = dc.model._vocab
        k.draft_n_vocab = dc._n_vocab
        k.draft_kv.clear()
        L.llama_memory_seq_rm(L.llama_get_memory(dc._ctx), draft_seq, 0, -1)
    elif callable(draft):
        k.draft_kind = DRAFT_PYTHON
        k.draft_fn = <PyObject *> draft
    else:
        raise TypeError("draft must be 'ngram', a Context of a draft model, a callable "
                        "(input_ids -> draft token ids) or None")
    return 0


# -- choosing a token and the stop rules ----------------------------------------------------------

cdef L.llama_token _k_sample(_Slot * k, L.llama_context * c, int32_t idx,
                             const float * src) noexcept nogil:
    """The token for output row `idx` of the last decode (-1: the last row; `src`: logits
    to use instead of the decode's), through the fastest path that gives the chain's answer.
    A negative result is an error code (S.SAMPLE_*); S.SAMPLE_TOO_SLOW when the choice took
    more than k.max_sample_ns of CPU time (a costly grammar: the slot must not hold the
    others)."""
    cdef int64_t t0
    cdef L.llama_token tok
    if k.max_sample_ns <= 0:
        return _k_sample_path(k, c, idx, src)
    t0 = S.thread_cpu_ns()
    tok = _k_sample_path(k, c, idx, src)
    if tok >= 0 and S.thread_cpu_ns() - t0 > k.max_sample_ns:
        return S.SAMPLE_TOO_SLOW
    return tok


cdef inline L.llama_token _k_sample_path(_Slot * k, L.llama_context * c, int32_t idx,
                                         const float * src) noexcept nogil:
    if k.bs:
        return S.sample_backend_checked(k.chain, c, idx, k.n_vocab, k.cur)
    if k.greedy_fast:
        return S.greedy_biased(k.chain, c, idx, src, k.n_vocab, k.bias[0])
    if k.greedy_grammar:
        return S.greedy_grammar(k.chain, k.grammars, c, idx, src, k.n_vocab, k.bias[0], k.cur)
    if k.topk_k > 0:
        return S.sample_topk(k.chain, c, idx, src, k.n_vocab, k.topk_k, k.bias[0],
                             k.topk_scratch, k.cur)
    return S.sample_checked(k.chain, c, idx, src, k.n_vocab, k.cur)


cdef _Step _k_accept(_Slot * k, const L.llama_vocab * vocab, L.llama_token tok) noexcept nogil:
    """Record a produced token and check the stop rules."""
    cdef size_t i, n, m
    cdef bint match
    cdef int32_t np
    cdef char buf[256]
    k.out.push_back(tok)
    k.hist.push_back(tok)
    k.produced += 1
    # stop token sequences: suffix match
    for i in range(k.stop_seqs.size()):
        m = k.stop_seqs[i].size()
        n = k.out.size()
        if m <= n:
            match = True
            while m > 0:
                if k.stop_seqs[i][m - 1] != k.out[n - 1]:
                    match = False
                    break
                m -= 1
                n -= 1
            if match:
                return STEP_STOP
    # stop strings: search the recent text
    if k.stop_strs.size() > 0:
        np = L.llama_token_to_piece(vocab, tok, buf, sizeof(buf), 0, False)
        if np > 0:
            k.tail.append(buf, np)
        elif np < 0:                      # a piece longer than the stack buffer
            k.piece.resize(-np)
            np = L.llama_token_to_piece(vocab, tok, k.piece.data(), <int32_t> k.piece.size(),
                                        0, False)
            if np > 0:
                k.tail.append(k.piece.data(), np)
        for i in range(k.stop_strs.size()):
            if k.tail.find(k.stop_strs[i]) != <size_t> -1:
                return STEP_STOP
        if k.tail.size() > 2 * k.max_stop + 256:
            k.tail.erase(0, k.tail.size() - k.max_stop - 256)
    if k.produced >= k.max_tokens:
        return STEP_LENGTH
    return STEP_TOKEN


cdef _Step _k_take(_Slot * k, const L.llama_vocab * vocab, L.llama_token tok) noexcept nogil:
    """What a chosen token (or error code) means: an error, end-of-generation, or a token."""
    if tok < 0:
        k.sample_code = tok
        return STEP_NO_TOKEN if tok == S.SAMPLE_NONE_ALLOWED else STEP_SAMPLER_ERROR
    if L.llama_vocab_is_eog(vocab, tok):
        k.eog = tok
        return STEP_EOG
    return _k_accept(k, vocab, tok)


# -- speculative decoding ---------------------------------------------------------------------------
# Draft up to n_draft tokens, decode the pending token plus the drafts in one batch, then sample
# row by row with the real sampler: a draft is kept while it equals the sampled token. Every
# produced token is sampled from the target model's logits in order, so the output (and the
# RNG stream) is that of plain decoding; only the number of decodes changes.

cdef int _k_draft(_Slot * k, int limit) noexcept nogil:
    """Up to `limit` draft tokens into k.draft; -1 when a Python drafter failed."""
    k.draft.clear()
    if limit <= 0:
        return 0
    if k.draft_kind == DRAFT_NGRAM:
        return _k_draft_ngram(k, limit)
    if k.draft_kind == DRAFT_MODEL:
        return _k_draft_model(k, limit)
    if k.draft_kind == DRAFT_PYTHON:
        return _k_draft_python(k, limit)
    return 0


cdef int _k_draft_ngram(_Slot * k, int limit) noexcept nogil:
    cdef int n, j, m
    cdef Py_ssize_t i, L_ = <Py_ssize_t> k.hist.size()
    cdef bint eq
    n = k.ngram_max
    while n >= 1:
        if L_ > n:
            i = L_ - n - 1
            while i >= 0:
                eq = True
                for j in range(n):
                    if k.hist[i + j] != k.hist[L_ - n + j]:
                        eq = False
                        break
                if eq:
                    m = 0
                    while m < limit and i + n + m < L_:
                        k.draft.push_back(k.hist[i + n + m])
                        m += 1
                    if m > 0:
                        return m
                i -= 1
        n -= 1
    return 0


cdef int _k_draft_model(_Slot * k, int limit) noexcept nogil:
    """Greedy drafts from the draft context, kept in step with hist through its KV cache."""
    cdef L.llama_context * dc = k.draft_ctx
    cdef L.llama_batch * db = k.draft_batch
    cdef size_t L_ = k.hist.size(), common = 0, start, m, i
    cdef int32_t nb = L.llama_n_batch(dc), j, v, best
    cdef const float * lg
    cdef float bestv
    if L_ == 0:
        return 0
    while common < k.draft_kv.size() and common < L_ and k.draft_kv[common] == k.hist[common]:
        common += 1
    if common == L_:
        common = L_ - 1               # the last token must be decoded again for its logits
    if L_ + limit >= <size_t> L.llama_n_ctx_seq(dc):
        return 0
    L.llama_memory_seq_rm(L.llama_get_memory(dc), k.draft_seq, <int32_t> common, -1)
    k.draft_kv.resize(common)
    start = common
    while start < L_:
        m = L_ - start if L_ - start < <size_t> nb else <size_t> nb
        for i in range(m):
            db.token[i] = k.hist[start + i]
            db.pos[i] = <int32_t> (start + i)
            db.n_seq_id[i] = 1
            db.seq_id[i][0] = k.draft_seq
            db.logits[i] = start + i == L_ - 1
        db.n_tokens = <int32_t> m
        if L.llama_decode(dc, db[0]) != 0:
            L.llama_memory_seq_rm(L.llama_get_memory(dc), k.draft_seq, <int32_t> start, -1)
            return 0
        for i in range(m):
            k.draft_kv.push_back(k.hist[start + i])
        start += m
    for j in range(limit):
        lg = L.llama_get_logits_ith(dc, -1)
        if lg == NULL:
            break
        best = 0
        bestv = lg[0]
        for v in range(1, k.draft_n_vocab):
            if lg[v] > bestv:
                bestv = lg[v]
                best = v
        if L.llama_vocab_is_eog(k.draft_vocab, best):
            break
        k.draft.push_back(best)
        if j == limit - 1:
            break
        db.token[0] = best
        db.pos[0] = <int32_t> k.draft_kv.size()
        db.n_seq_id[0] = 1
        db.seq_id[0][0] = k.draft_seq
        db.logits[0] = True
        db.n_tokens = 1
        if L.llama_decode(dc, db[0]) != 0:
            break
        k.draft_kv.push_back(best)
    return <int> k.draft.size()


cdef int _k_draft_python(_Slot * k, int limit) noexcept nogil:
    """Drafts from a Python callable, llama-cpp-python's LlamaDraftModel protocol:
    draft_fn(input_ids: np.ndarray[intc]) -> token ids; at most `limit` are used. An
    exception, or a token outside the vocabulary, is kept for the owner to raise (-1)."""
    cdef bint failed = False
    with gil:
        try:
            ids = np.array(<L.llama_token[:k.hist.size()]> k.hist.data(), dtype=np.intc) \
                if k.hist.size() else np.zeros(0, dtype=np.intc)
            out = np.asarray((<object> k.draft_fn)(ids))
            if out.ndim != 1 or (out.size and out.dtype.kind not in "iu"):
                raise TypeError(f"a draft model must return a 1-D array of token ids, got "
                                f"shape {out.shape} of {out.dtype}")
            out = out[:limit]
            if out.size and (int(out.min()) < 0 or int(out.max()) >= k.n_vocab):
                raise ValueError(f"the draft model returned a token id outside the "
                                 f"vocabulary (0..{k.n_vocab - 1})")
            for t in out.tolist():
                k.draft.push_back(<L.llama_token> t)
        except BaseException as e:
            _k_clear_draft_error(k)
            k.draft_error = <PyObject *> e
            Py_XINCREF(k.draft_error)
            k.draft.clear()
            failed = True
    return -1 if failed else <int> k.draft.size()


cdef _Step _k_verify(_Slot * k, L.llama_context * c, const L.llama_vocab * vocab,
                     int32_t row0, int n_draft, int * n_kept) noexcept nogil:
    """After a decode of [pending, draft...] at rows row0.. : sample row by row and keep the
    drafts the sampler confirms. n_kept: the positions of that batch that stay in the KV cache
    (the pending token and the confirmed drafts)."""
    cdef int i
    cdef L.llama_token tok
    cdef _Step st = STEP_TOKEN
    k.n_drafted += n_draft
    for i in range(n_draft + 1):
        tok = _k_sample(k, c, row0 + i, NULL)
        st = _k_take(k, vocab, tok)
        if st != STEP_TOKEN or i == n_draft or tok != k.draft[i]:
            break
        k.n_accepted += 1
    n_kept[0] = i + 1
    return st
