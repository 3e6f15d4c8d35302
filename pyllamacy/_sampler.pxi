# Sampler: owns a llama_sampler chain. Every parameter is checked here, before llama.cpp sees it.

DEFAULT_SEED = 0xFFFFFFFF      # LLAMA_DEFAULT_SEED: a random seed


cdef float _finite(name, value, lo=None, hi=None, bint allow_inf=False) except? -1.0:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SamplerError(f"{name} must be a number, got {value!r}") from None
    if v != v:
        raise SamplerError(f"{name} must not be NaN")
    if not allow_inf and (v == float("inf") or v == float("-inf")):
        raise SamplerError(f"{name} must be finite, got {v}")
    if lo is not None and v < lo:
        raise SamplerError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise SamplerError(f"{name} must be <= {hi}, got {v}")
    return v


cdef int32_t _nonneg_int(name, value) except? -1:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SamplerError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise SamplerError(f"{name} must be >= 0, got {value}")
    if value > 0x7FFFFFFF:
        raise SamplerError(f"{name} is too large: {value}")
    return value


cdef uint32_t _seed(value) except? 0xFFFFFFFF:
    if value is None or value == -1:
        return DEFAULT_SEED
    if isinstance(value, bool) or not isinstance(value, int):
        raise SamplerError(f"seed must be an integer, got {value!r}")
    return value & 0xFFFFFFFF


from pyllamacy.gbnf import gbnf_problem as _gbnf_problem


def _grammar_depth_ok(str grammar, int limit=2000):
    """Reject grammars nested deeper than llama.cpp's recursive parser can take."""
    cdef int depth = 0, worst = 0
    cdef bint in_str = False, in_cls = False, esc = False
    for ch in grammar:
        if esc:
            esc = False
            continue
        if ch == "\\":
            esc = True
        elif in_str:
            if ch == '"':
                in_str = False
        elif in_cls:
            if ch == "]":
                in_cls = False
        elif ch == '"':
            in_str = True
        elif ch == "[":
            in_cls = True
        elif ch == "(":
            depth += 1
            if depth > worst:
                worst = depth
        elif ch == ")":
            depth -= 1
    return worst <= limit


# sampler stages that llama.cpp can run in the compute graph at the pinned commit (and that we
# test): a chain made only of these is offloaded whole
_BACKEND_STAGES = frozenset(("greedy", "dist", "top_k", "top_p", "min_p", "temp", "temp_ext",
                             "logit_bias"))


ctypedef vector[L.llama_logit_bias] _BiasVec


# stages that may follow top_k on the fast path: they read only the candidate array
_TOPK_TAIL = frozenset(("top_p", "min_p", "typical", "temp", "temp_ext"))


cdef class Sampler:
    """A chain of llama.cpp samplers, applied in the order added.

        s = Sampler(model).top_k(40).top_p(0.95).temp(0.8).dist(seed=42)
        s = Sampler().greedy()

    `model` is needed by vocabulary-aware samplers (grammar, dry, logit_bias, penalties,
    mirostat, infill); the sampler keeps it alive.
    """
    cdef L.llama_sampler * _chain
    cdef readonly Model model
    cdef list _names
    cdef list _grammar_stages      # chain indices of grammar samplers
    cdef list _lazy_grammars       # (GBNF, root) of lazy grammar stages, for grammar_cost()
    cdef bint _has_selector
    cdef long _owner
    # chain is [logit_bias..., greedy]: generation takes the argmax of the biased logits
    # directly (S.greedy_biased) instead of building an n_vocab candidate array
    cdef bint _greedy_fast
    # chain is [logit_bias / grammar ..., greedy] with a grammar: the biased argmax is checked
    # against the grammars first (S.greedy_grammar), the vocabulary constrained only if refused
    cdef bint _greedy_grammar
    cdef vector[L.llama_logit_bias] _fast_bias      # one entry per token, sorted by token
    cdef dict _bias_sum                # token -> bias so far; None once a token repeats
    # chain is [logit_bias..., top_k(k), top_p/min_p/typical/temp/temp_ext..., dist]: the
    # chain runs on the k best candidates (S.sample_topk), k <= 128; 0: not that shape
    cdef int32_t _topk_fast
    cdef int32_t _topk_k

    def __cinit__(self, Model model=None, *, bint no_perf=True):
        cdef L.llama_sampler_chain_params p = L.llama_sampler_chain_default_params()
        p.no_perf = no_perf
        self._chain = L.llama_sampler_chain_init(p)
        if self._chain == NULL:
            raise MemoryError("llama_sampler_chain_init failed")
        self._names = []
        self._grammar_stages = []
        self._lazy_grammars = []
        self._has_selector = False
        self._owner = 0
        self._greedy_fast = False
        self._greedy_grammar = False
        self._bias_sum = {}
        self._topk_fast = 0
        self._topk_k = 0
        if model is not None:
            model._acquire()
            self.model = model

    def __dealloc__(self):
        if self._chain != NULL:
            L.llama_sampler_free(self._chain)
            self._chain = NULL
            if self.model is not None:
                self.model._release()

    def close(self):
        """Free the chain. Idempotent."""
        if self._chain == NULL:
            return
        if self._owner != 0:
            raise BusyError("cannot close a Sampler while it is in use")
        L.llama_sampler_free(self._chain)
        self._chain = NULL
        if self.model is not None:
            self.model._release()

    @property
    def closed(self):
        return self._chain == NULL

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, *exc):
        self.close()

    def __reduce__(self):
        raise TypeError("pyllamacy.Sampler cannot be pickled")

    cdef int _check(self) except -1:
        if self._chain == NULL:
            raise ClosedError("this Sampler is closed")
        return 0

    cdef const L.llama_vocab * _vocab(self, str what) except NULL:
        if self.model is None:
            raise SamplerError(f"the {what} sampler needs the model: Sampler(model)")
        self.model._check()
        return self.model._vocab

    cdef int32_t _n_vocab(self, str what) except -1:
        self._vocab(what)
        return self.model._n_vocab

    cdef Sampler _add(self, L.llama_sampler * s, str name, bint selector=False):
        if s == NULL:
            raise SamplerError(f"llama.cpp could not create the {name} sampler")
        if self._has_selector:
            L.llama_sampler_free(s)
            raise SamplerError(f"cannot add {name} after {self._names[len(self._names) - 1]}: greedy, dist and "
                               "mirostat select the token and must come last")
        L.llama_sampler_chain_add(self._chain, s)
        if name == "grammar":
            self._grammar_stages.append(len(self._names))
        self._names.append(name)
        if selector:
            self._has_selector = True
        self._greedy_fast = (name == "greedy" and self._bias_sum is not None and
                             all(n == "logit_bias" for n in self._names[:len(self._names) - 1]))
        self._greedy_grammar = (name == "greedy" and self._bias_sum is not None and
                                "grammar" in self._names and
                                all(n in ("logit_bias", "grammar")
                                    for n in self._names[:len(self._names) - 1]))
        self._topk_fast = self._topk_k if (name == "dist" and self._topk_shape()) else 0
        return self

    cdef bint _topk_shape(self):
        cdef list names = self._names
        cdef int i = 0, n = len(names)
        if self._bias_sum is None or not (0 < self._topk_k <= 128):
            return False
        while i < n and names[i] == "logit_bias":
            i += 1
        if i >= n or names[i] != "top_k":
            return False
        i += 1
        while i < n - 1 and names[i] in _TOPK_TAIL:
            i += 1
        return i == n - 1 and names[i] == "dist"

    def __len__(self):
        return 0 if self._chain == NULL else L.llama_sampler_chain_n(self._chain)

    @property
    def names(self):
        return list(self._names)

    @property
    def fast_path(self):
        """How generation samples with this chain: "greedy" (argmax of the biased logits),
        "greedy_grammar" (that argmax, checked against the grammars; the whole vocabulary only
        when they refuse it), "top_k" (the chain runs on the k best candidates), or None (the
        whole vocabulary)."""
        if self._greedy_fast:
            return "greedy"
        if self._greedy_grammar:
            return "greedy_grammar"
        if self._topk_fast > 0:
            return "top_k"
        return None

    @property
    def backend_capable(self):
        """Whether every stage can run inside the compute graph (Context.generate(...,
        backend_sampling=True)): greedy, dist, top_k, top_p, min_p, temp, temp_ext, logit_bias,
        ending in greedy or dist. Grammars, penalties, mirostat, typical, xtc, dry: not."""
        return (self._chain != NULL and self._has_selector and len(self._names) > 0
                and self._names[len(self._names) - 1] in ("greedy", "dist")
                and all(n in _BACKEND_STAGES for n in self._names))

    # -- stages -------------------------------------------------------------------------------

    def greedy(self):
        self._check()
        return self._add(L.llama_sampler_init_greedy(), "greedy", True)

    def dist(self, seed=None):
        self._check()
        return self._add(L.llama_sampler_init_dist(_seed(seed)), "dist", True)

    def top_k(self, k):
        self._check()
        cdef int32_t kk = _nonneg_int("top_k", k)
        self._topk_k = kk if "top_k" not in self._names else 0     # one top_k only
        return self._add(L.llama_sampler_init_top_k(kk), "top_k")

    def top_p(self, p, size_t min_keep=1):
        self._check()
        return self._add(L.llama_sampler_init_top_p(_finite("top_p", p, 0.0, 1.0), min_keep),
                         "top_p")

    def min_p(self, p, size_t min_keep=1):
        self._check()
        return self._add(L.llama_sampler_init_min_p(_finite("min_p", p, 0.0, 1.0), min_keep),
                         "min_p")

    def typical(self, p, size_t min_keep=1):
        self._check()
        return self._add(L.llama_sampler_init_typical(_finite("typical_p", p, 0.0, 1.0),
                                                      min_keep), "typical")

    def temp(self, t):
        self._check()
        return self._add(L.llama_sampler_init_temp(_finite("temperature", t, 0.0)), "temp")

    def temp_ext(self, t, delta=0.0, exponent=1.0):
        self._check()
        return self._add(L.llama_sampler_init_temp_ext(_finite("temperature", t, 0.0),
                                                       _finite("dynatemp_range", delta, 0.0),
                                                       _finite("dynatemp_exponent", exponent)),
                         "temp_ext")

    def xtc(self, p, t, size_t min_keep=1, seed=None):
        self._check()
        return self._add(L.llama_sampler_init_xtc(_finite("xtc_probability", p, 0.0, 1.0),
                                                  _finite("xtc_threshold", t, 0.0, 1.0),
                                                  min_keep, _seed(seed)), "xtc")

    def top_n_sigma(self, n):
        self._check()
        return self._add(L.llama_sampler_init_top_n_sigma(_finite("top_n_sigma", n)),
                         "top_n_sigma")

    def mirostat(self, tau=5.0, eta=0.1, int m=100, seed=None):
        self._check()
        cdef int32_t nv = self._n_vocab("mirostat")
        if m < 1:
            raise SamplerError(f"mirostat m must be >= 1, got {m}")
        return self._add(L.llama_sampler_init_mirostat(nv, _seed(seed),
                                                       _finite("mirostat_tau", tau, 0.0),
                                                       _finite("mirostat_eta", eta, 0.0), m),
                         "mirostat", True)

    def mirostat_v2(self, tau=5.0, eta=0.1, seed=None):
        self._check()
        return self._add(L.llama_sampler_init_mirostat_v2(_seed(seed),
                                                          _finite("mirostat_tau", tau, 0.0),
                                                          _finite("mirostat_eta", eta, 0.0)),
                         "mirostat_v2", True)

    def penalties(self, int last_n=64, repeat=1.0, frequency=0.0, presence=0.0):
        self._check()
        if last_n < -1:
            raise SamplerError(f"penalty_last_n must be >= -1, got {last_n}")
        cdef float r = _finite("repeat_penalty", repeat)
        if r <= 0:
            raise SamplerError(f"repeat_penalty must be > 0, got {r}")
        cdef int32_t nv = self._n_vocab("penalties")
        return self._add(L.llama_sampler_init_penalties(
            nv, last_n, r, _finite("frequency_penalty", frequency),
            _finite("presence_penalty", presence)), "penalties")

    def dry(self, multiplier=0.0, base=1.75, int allowed_length=2, int last_n=-1,
            seq_breakers=("\n", ":", "\"", "*")):
        self._check()
        cdef const L.llama_vocab * vocab = self._vocab("dry")
        cdef float mult = _finite("dry_multiplier", multiplier, 0.0)
        cdef float b = _finite("dry_base", base, 0.0)
        if allowed_length < 0:
            raise SamplerError(f"dry_allowed_length must be >= 0, got {allowed_length}")
        if last_n < -1:
            raise SamplerError(f"dry_penalty_last_n must be >= -1, got {last_n}")
        encoded = [str(s).encode() for s in seq_breakers]
        if any(len(e) == 0 or b"\0" in e for e in encoded):
            raise SamplerError("dry seq_breakers must be non-empty strings without NUL")
        cdef vector[const char *] ptrs
        for e in encoded:
            ptrs.push_back(<const char *> e)
        return self._add(L.llama_sampler_init_dry(vocab, mult, b, allowed_length, last_n,
                                                  ptrs.data(), ptrs.size()), "dry")

    def logit_bias(self, bias):
        """{token_id: bias} added to the logits (-inf bans a token)."""
        self._check()
        cdef int32_t nv = self._n_vocab("logit_bias")
        cdef vector[L.llama_logit_bias] arr
        cdef L.llama_logit_bias lb
        cdef size_t k
        items = bias.items() if hasattr(bias, "items") else bias
        for tok, val in items:
            t = int(tok)
            if t < 0 or t >= nv:
                raise IndexError(f"logit_bias token id {t} is out of range for a vocabulary of "
                                 f"{nv} tokens")
            v = float(val)
            if v != v or v == float("inf"):
                raise SamplerError(f"logit_bias for token {t} must be a number or -inf, got {v}")
            lb.token = t
            lb.bias = v
            arr.push_back(lb)
        self._add(L.llama_sampler_init_logit_bias(nv, <int32_t> arr.size(), arr.data()),
                  "logit_bias")
        # the greedy fast path adds each token's bias once, as this stage does; a token biased
        # twice (here or by another stage) would be added in two float steps: no fast path
        for k in range(arr.size()):
            if self._bias_sum is None:
                break
            t = arr[k].token
            if t in self._bias_sum:
                self._bias_sum = None
                break
            self._bias_sum[t] = arr[k].bias
        self._fast_bias.clear()
        if self._bias_sum is not None:
            for t in sorted(self._bias_sum):
                lb.token = t
                lb.bias = self._bias_sum[t]
                self._fast_bias.push_back(lb)
        return self

    def grammar(self, grammar, str root="root"):
        """Constrain output with a GBNF grammar."""
        self._check()
        cdef const L.llama_vocab * vocab = self._vocab("grammar")
        if not isinstance(grammar, str):
            raise TypeError("grammar must be a GBNF string")
        if not grammar.strip():
            raise GrammarError("empty grammar")
        if not _grammar_depth_ok(grammar):
            raise GrammarError("grammar is nested too deeply (more than 2000 levels of groups)")
        _problem = _gbnf_problem(grammar, empty_classes=False)
        if _problem:
            raise GrammarError(f"invalid grammar: {_problem}")
        cdef bytes g = grammar.encode()
        cdef bytes r = root.encode()
        if b"\0" in g:
            raise GrammarError("grammar contains a NUL byte")
        cdef const char * c_g = g
        cdef const char * c_r = r
        cdef uint64_t mark = S.log_mark()
        cdef L.llama_sampler * s
        with nogil:
            s = L.llama_sampler_init_grammar(vocab, c_g, c_r)
        if s == NULL:
            raise GrammarError(f"invalid grammar: {_recent_log(mark) or 'parse failed'}")
        return self._add(s, "grammar")

    def grammar_lazy(self, grammar, trigger_patterns=(), trigger_tokens=(), str root="root"):
        """A GBNF grammar that stays inactive until the output matches one of
        `trigger_patterns` (ECMAScript regexes, matched against the generated text; the
        grammar is fed from the first match group) or one of `trigger_tokens` is sampled —
        how llama.cpp constrains tool calls while leaving plain replies free."""
        self._check()
        cdef const L.llama_vocab * vocab = self._vocab("grammar")
        if not isinstance(grammar, str):
            raise TypeError("grammar must be a GBNF string")
        if not grammar.strip():
            raise GrammarError("empty grammar")
        if not _grammar_depth_ok(grammar):
            raise GrammarError("grammar is nested too deeply (more than 2000 levels of groups)")
        _problem = _gbnf_problem(grammar, empty_classes=False)
        if _problem:
            raise GrammarError(f"invalid grammar: {_problem}")
        import re as _re
        pats = []
        for p in trigger_patterns:
            if not isinstance(p, str) or not p or "\0" in p:
                raise GrammarError(f"trigger patterns must be non-empty strings, got {p!r}")
            # std::regex (ECMAScript) throws on what it does not know; llama.cpp does not catch
            # it, so reject here what would abort the process there
            if "(?<" in p or "(?P" in p or _re.match(r"\(\?[a-zA-Z]", p):
                raise GrammarError(f"trigger pattern {p!r} uses syntax std::regex lacks")
            try:
                _re.compile(p)
            except _re.error as e:
                raise GrammarError(f"invalid trigger pattern {p!r}: {e}") from None
            pats.append(p.encode())
        cdef int32_t nv = self._n_vocab("grammar")
        cdef vector[L.llama_token] toks
        for t in trigger_tokens:
            ti = int(t)
            if ti < 0 or ti >= nv:
                raise IndexError(f"trigger token {ti} is out of range for a vocabulary of {nv}")
            toks.push_back(ti)
        if not pats and toks.empty():
            raise GrammarError("a lazy grammar needs at least one trigger pattern or token")
        cdef vector[const char *] c_pats
        for b in pats:
            c_pats.push_back(<const char *> b)
        cdef bytes g = grammar.encode()
        cdef bytes r = root.encode()
        if b"\0" in g:
            raise GrammarError("grammar contains a NUL byte")
        cdef const char * c_g = g
        cdef const char * c_r = r
        cdef uint64_t mark = S.log_mark()
        cdef L.llama_sampler * s
        with nogil:
            s = L.llama_sampler_init_grammar_lazy_patterns(vocab, c_g, c_r, c_pats.data(),
                                                           c_pats.size(), toks.data(),
                                                           toks.size())
        if s == NULL:
            raise GrammarError(f"invalid grammar: {_recent_log(mark) or 'parse failed'}")
        self._add(s, "grammar")
        self._lazy_grammars.append((len(self._names) - 1, grammar, root))
        return self

    def infill(self):
        self._check()
        return self._add(L.llama_sampler_init_infill(self._vocab("infill")), "infill")

    # -- use ------------------------------------------------------------------------------------

    def sample(self, Context ctx not None, int32_t idx=-1):
        """Sample (and accept) a token from output `idx` of ctx's last decode."""
        self._check()
        ctx._check_read()
        if not self._has_selector:
            raise SamplerError("this chain never selects a token: end it with greedy(), dist() "
                               "or mirostat()")
        if ctx.model._n_vocab != (self.model._n_vocab if self.model is not None else ctx.model._n_vocab):
            raise SamplerError("this Sampler was built for a model with another vocabulary")
        cdef L.llama_token t
        cdef const float * logits = NULL
        cdef vector[L.llama_token_data] cur
        if ctx._has_restored and idx == -1:
            logits = ctx._restored_logits.data()
        elif L.llama_get_logits_ith(ctx._ctx, idx) == NULL:
            raise IndexError(f"no logits for output {idx} of the last decode")
        with nogil:
            t = S.sample_checked(self._chain, ctx._ctx, idx, logits, ctx._n_vocab, cur)
        if t < 0:
            raise _sample_error(t)
        return t

    def grammar_cost(self, int max_tokens=8192):
        """CPU seconds that constraining one token costs at worst with this chain's grammars: one
        pass of each grammar over the whole vocabulary, in its current state (a lazy grammar:
        in the state it starts from once triggered), estimated from at most `max_tokens`
        tokens spread over the vocabulary (0: all). 0.0 without a grammar. The chain's state
        does not change. A server refuses requests whose grammar costs too much per token
        before they share a batch with others."""
        self._check()
        if not self._grammar_stages:
            return 0.0
        cdef int32_t nv = self._n_vocab("grammar")
        cdef double total = 0.0, t
        cdef L.llama_sampler * g
        cdef dict lazy = {i: (text, root) for i, text, root in self._lazy_grammars}
        cdef Sampler tmp
        for i in self._grammar_stages:
            if i in lazy:
                tmp = Sampler(self.model).grammar(*lazy[i])
                g = L.llama_sampler_chain_get(tmp._chain, 0)
            else:
                tmp = None
                g = L.llama_sampler_chain_get(self._chain, i)
            with nogil:
                t = S.grammar_apply_seconds(g, nv, max_tokens)
            if t < 0:
                raise GrammarError("the grammar failed while constraining a token")
            total += t
        return total

    def accept(self, int32_t token):
        """Feed a token to the chain's state (penalties, grammar) as if it had been sampled."""
        self._check()
        if self.model is not None:
            self.model._check_token(token)
        for i in self._grammar_stages:
            if not S.grammar_allows(L.llama_sampler_chain_get(self._chain, i), token):
                raise GrammarError(f"token {token} is not allowed by the grammar here")
        if S.sampler_accept_checked(self._chain, token) != 0:
            raise SamplerError(f"a llama.cpp sampler rejected token {token}")

    def reset(self):
        self._check()
        L.llama_sampler_reset(self._chain)

    @property
    def seed(self):
        self._check()
        return L.llama_sampler_get_seed(self._chain)

    def perf(self):
        self._check()
        cdef L.llama_perf_sampler_data d = L.llama_perf_sampler(self._chain)
        return {"t_sample_ms": d.t_sample_ms, "n_sample": d.n_sample}

    def clone(self):
        """An independent copy of the chain with its current state."""
        self._check()
        cdef Sampler s = Sampler.__new__(Sampler, self.model)
        L.llama_sampler_free(s._chain)
        s._chain = L.llama_sampler_clone(self._chain)
        s._names = list(self._names)
        s._grammar_stages = list(self._grammar_stages)
        s._lazy_grammars = list(self._lazy_grammars)
        s._has_selector = self._has_selector
        s._greedy_fast = self._greedy_fast
        s._greedy_grammar = self._greedy_grammar
        s._fast_bias = self._fast_bias
        s._bias_sum = None if self._bias_sum is None else dict(self._bias_sum)
        s._topk_fast = self._topk_fast
        s._topk_k = self._topk_k
        return s
