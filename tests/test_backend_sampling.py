"""Sampling inside the compute graph (llama_set_sampler, backend_sampling=True).

On this CPU-only build the "backend" is the CPU backend: the sampler ops run in the ggml graph
instead of in llama.cpp's C++ samplers, which is enough to check the plumbing (attach, read the
sampled token, detach, fall back) and that the tokens are the ones CPU sampling picks.
"""
from __future__ import annotations

import pytest

import pyllamacy
from pyllamacy import Context, Sampler

PROMPT = "The capital of France is"


@pytest.fixture()
def ctx(model):
    with Context(model, n_ctx=512, n_threads=2, n_threads_batch=2) as c:
        yield c


def _prompt(ctx, model, text=PROMPT):
    ctx.memory_clear()
    ctx.eval(model.tokenize(text, add_special=True))


def _no_eog(model, s):
    s.logit_bias({t: float("-inf") for t in model.eog_tokens()})
    return s


def test_backend_capable_chains(model):
    assert Sampler(model).greedy().backend_capable
    assert _no_eog(model, Sampler(model)).top_k(40).top_p(0.9).min_p(0.05).temp(0.7) \
        .dist(1).backend_capable
    assert not Sampler(model).top_k(40).backend_capable               # no selector
    assert not Sampler(model).grammar('root ::= "yes"').greedy().backend_capable
    assert not Sampler(model).penalties(64, 1.1).greedy().backend_capable
    assert not Sampler(model).typical(0.9).dist(1).backend_capable


def test_greedy_backend_equals_cpu(ctx, model):
    with _no_eog(model, Sampler(model)).greedy() as s:
        _prompt(ctx, model)
        cpu = ctx.generate(s, max_tokens=24).run()
        _prompt(ctx, model)
        g = ctx.generate(s, max_tokens=24, backend_sampling=True)
        assert g.backend_sampling
        gpu = g.run()
    assert len(cpu) == 24
    assert gpu == cpu


def test_streamed_equals_run(ctx, model):
    with _no_eog(model, Sampler(model)).greedy() as s:
        _prompt(ctx, model)
        ran = ctx.generate(s, max_tokens=16, backend_sampling=True).run()
        _prompt(ctx, model)
        streamed = list(ctx.generate(s, max_tokens=16, backend_sampling=True))
    assert streamed == ran


def test_seeded_dist_is_reproducible(ctx, model):
    def chain():
        return _no_eog(model, Sampler(model)).top_k(40).top_p(0.95).min_p(0.05).temp(0.8) \
            .dist(1234)
    outs = []
    for _ in range(2):
        with chain() as s:
            _prompt(ctx, model, "Once upon a time")
            g = ctx.generate(s, max_tokens=32, backend_sampling=True)
            outs.append(g.run())
            assert g.backend_sampling
    assert outs[0] == outs[1]
    assert len(outs[0]) == 32 and all(0 <= t < model.n_vocab for t in outs[0])
    with chain() as s:
        _prompt(ctx, model, "Once upon a time")
        cpu = ctx.generate(s, max_tokens=32).run()
    # the graph draws from the same RNG in the same order; float sums in another order may
    # still tip a draw, so only the start is compared
    assert outs[0][:4] == cpu[:4], (outs[0], cpu)


def test_not_capable_falls_back_to_cpu(ctx, model):
    with Sampler(model).grammar('root ::= " Paris" | " Lyon"').greedy() as s:
        _prompt(ctx, model)
        g = ctx.generate(s, max_tokens=4, backend_sampling=True)
        assert not g.backend_sampling
        toks = g.run()
    assert model.detokenize(toks).strip() in (b"Paris", b"Lyon")


def test_logits_after_backend_sampling(ctx, model):
    with _no_eog(model, Sampler(model)).greedy() as s:
        _prompt(ctx, model)
        first = ctx.generate(s, max_tokens=8).run()
        _prompt(ctx, model)
        ctx.generate(s, max_tokens=8, backend_sampling=True).run()
        with pytest.raises(IndexError, match="backend_sampling"):
            ctx.logits()
        # a plain eval brings raw logits back, and the same Sampler still works on the CPU
        _prompt(ctx, model)
        assert ctx.logits().shape == (model.n_vocab,)
        again = ctx.generate(s, max_tokens=8).run()
    assert again == first


def test_second_generation_takes_the_graph_sampler(ctx, model):
    """A second backend-sampled generation takes the context's graph sampler: the first one
    cannot silently continue with the wrong chain."""
    with _no_eog(model, Sampler(model)).greedy() as s1, \
            _no_eog(model, Sampler(model)).greedy() as s2:
        _prompt(ctx, model)
        g1 = ctx.generate(s1, max_tokens=8, backend_sampling=True)
        g2 = ctx.generate(s2, max_tokens=4, backend_sampling=True)
        with pytest.raises(pyllamacy.LlamaError, match="changed"):
            next(g1)
        assert len(g2.run()) == 4
        # after graph-sampled steps there are no logits to start another generation from
        with pytest.raises(pyllamacy.LlamaError, match="nothing to generate"):
            ctx.generate(s1, max_tokens=4, backend_sampling=True)


def test_llama_backend_sampling_same_text(smollm2_path):
    from pyllamacy import Llama
    kw = dict(n_ctx=512, n_threads=2, n_threads_batch=2, verbose=False)
    with Llama(smollm2_path, **kw) as a, Llama(smollm2_path, backend_sampling=True, **kw) as b:
        ra = a.create_completion(PROMPT, max_tokens=20, temperature=0)
        rb = b.create_completion(PROMPT, max_tokens=20, temperature=0)
        assert rb["choices"][0]["text"] == ra["choices"][0]["text"]
        # streaming, and logprobs (which need the logits: the CPU path is used)
        sb = "".join(c["choices"][0]["text"] for c in
                     b.create_completion(PROMPT, max_tokens=20, temperature=0, stream=True))
        assert sb == ra["choices"][0]["text"]
        lp = b.create_completion(PROMPT, max_tokens=5, temperature=0, logprobs=2)
        assert len(lp["choices"][0]["logprobs"]["tokens"]) == 5
        # the same prompt again: prefix reuse after a backend-sampled generation
        rb2 = b.create_completion(PROMPT, max_tokens=20, temperature=0)
        assert rb2["choices"][0]["text"] == ra["choices"][0]["text"]


# -- the CPU greedy fast path: [logit_bias..., greedy] takes the argmax of the biased logits --

def test_greedy_fast_path_equals_the_chain(ctx, model):
    """temp(1.0) changes no logit but turns the fast path off: both must pick the same tokens,
    with biases that push, ban and tie."""
    eog = {t: float("-inf") for t in model.eog_tokens()}
    push = {7042: 3.5, 30: -1.25, 198: 0.0, model.n_vocab - 1: 50.0}
    for biases in ([], [eog], [eog, {11: 2.0, 12: -2.0}], [push]):
        outs = []
        for slow in (False, True):
            s = Sampler(model)
            for b in biases:
                s.logit_bias(b)
            if slow:
                s.temp(1.0)
            s.greedy()
            _prompt(ctx, model)
            outs.append(ctx.generate(s, max_tokens=20).run())
            s.close()
        assert outs[0] == outs[1], biases
    # the same token biased by two stages: added in two steps by llama.cpp; still equal
    s = Sampler(model).logit_bias({7042: 1.0}).logit_bias({7042: 2.5}).greedy()
    _prompt(ctx, model)
    a = ctx.generate(s, max_tokens=8).run()
    s2 = Sampler(model).logit_bias({7042: 1.0}).logit_bias({7042: 2.5}).temp(1.0).greedy()
    _prompt(ctx, model)
    assert ctx.generate(s2, max_tokens=8).run() == a


def test_greedy_fast_path_everything_banned(ctx, model):
    s = Sampler(model).logit_bias({t: float("-inf") for t in range(model.n_vocab)}).greedy()
    _prompt(ctx, model)
    with pytest.raises(pyllamacy.GrammarError):
        ctx.generate(s, max_tokens=4).run()


def test_greedy_fast_path_on_crafted_logits(ctx, model):
    """Ties, a biased token holding the raw maximum, NaN and -inf: the fast path picks what the
    llama.cpp chain picks (first maximum of the biased values)."""
    import numpy as np
    n = model.n_vocab
    rng = np.random.default_rng(7)
    cases = []
    base = rng.normal(size=n).astype(np.float32)
    tie = base.copy(); tie[[100, 200, 300]] = 9.0                       # first of a tie
    cases += [(base, {}), (tie, {}), (tie, {100: float("-inf")}), (tie, {100: -0.5, 300: 0.5})]
    held = base.copy(); held[5] = 50.0                                  # biased raw maximum
    cases += [(held, {5: -100.0}), (held, {5: 0.0}), (held, {0: 60.0, 5: -1.0})]
    nan = base.copy(); nan[[3, 4000]] = np.nan                          # NaN never wins ...
    cases += [(nan, {}), (nan, {3: 1.0})]
    nan0 = base.copy(); nan0[0] = np.nan                                # ... except at index 0
    cases += [(nan0, {}), (nan0, {0: float("-inf")})]
    allneg = np.full(n, -np.inf, dtype=np.float32); allneg[n - 1] = -3.0
    # the vectorized argmax works in blocks of 64: ties inside a block, across a block edge,
    # in the last position; and coarse values, where thousands of tokens tie
    edge = base.copy(); edge[[64 * 40 - 1, 64 * 40]] = 8.0
    inner = base.copy(); inner[[64 * 9 + 50, 64 * 9 + 3]] = 8.0; inner[64 * 9 + 20] = np.nan
    last = base.copy(); last[n - 1] = 8.0
    coarse = rng.integers(0, 5, size=n).astype(np.float32)
    cases += [(edge, {}), (edge, {64 * 40 - 1: -1.0}), (inner, {}), (last, {}),
              (last, {n - 1: -20.0}), (coarse, {}), (coarse, {int(np.argmax(coarse)): -1.0})]
    cases += [(allneg, {}), (allneg, {n - 1: float("-inf")}), (allneg, {7: 2.0})]
    for logits, bias in cases:
        picks = []
        for slow in (False, True):
            s = Sampler(model)
            if bias:
                s.logit_bias(bias)
            if slow:
                s.temp(1.0)
            s.greedy()
            ctx.set_logits(logits)
            try:
                picks.append(ctx.generate(s, max_tokens=1).run())
            except pyllamacy.GrammarError:
                picks.append("none")
            s.close()
        assert picks[0] == picks[1], (bias, picks)


# -- the top-k fast path: [logit_bias..., top_k(k), top_p/min_p/typical/temp..., dist] runs on
#    the k best candidates (exact: it falls back to the full array where values tie) --

def _chain(model, k, seed, biases=(), slow=False, tail=("top_p", "min_p", "temp")):
    s = Sampler(model)
    for b in biases:
        s.logit_bias(b)
    if slow:
        s.temp(1.0)                 # changes no logit, breaks the fast shape
    s.top_k(k)
    for name in tail:
        {"top_p": lambda: s.top_p(0.9), "min_p": lambda: s.min_p(0.05),
         "temp": lambda: s.temp(0.7), "typical": lambda: s.typical(0.95)}[name]()
    s.dist(seed)
    assert s.fast_path == (None if slow or k > 128 else "top_k"), s.names
    return s


def test_fast_path_shapes(model):
    assert Sampler(model).greedy().fast_path == "greedy"
    assert Sampler(model).logit_bias({1: 2.0}).top_k(40).top_p(0.9).min_p(0.1).temp(0.8) \
        .dist(1).fast_path == "top_k"
    for s in (Sampler(model).top_k(200).dist(1),                  # k > 128
              Sampler(model).top_k(40).top_k(20).dist(1),          # two top_k
              Sampler(model).penalties(64, 1.1).top_k(40).dist(1),
              Sampler(model).top_k(40).xtc(0.1, 0.1).dist(1),
              Sampler(model).top_k(0).dist(1),
              Sampler(model).logit_bias({1: 1.0}).logit_bias({1: 1.0}).top_k(4).dist(1),
              Sampler(model).top_k(40).top_p(0.9).greedy()):
        assert s.fast_path is None, s.names


def test_topk_fast_path_equals_the_chain(ctx, model):
    eog = {t: float("-inf") for t in model.eog_tokens()}
    push = {7042: 3.5, 30: -1.25, model.n_vocab - 1: 40.0}
    for k, biases, tail in ((40, [], ("top_p", "min_p", "temp")), (5, [eog], ("temp",)),
                            (128, [push], ("typical", "top_p")), (1, [], ()),
                            (40, [eog], ("min_p", "temp"))):
        for seed in (1, 2, 3):
            outs = []
            for slow in (False, True):
                s = _chain(model, k, seed, biases, slow, tail)
                _prompt(ctx, model)
                outs.append(ctx.generate(s, max_tokens=24).run())
                s.close()
            assert outs[0] == outs[1], (k, biases, tail, seed)


def test_topk_fast_path_on_crafted_logits(ctx, model):
    """Ties at and inside the k best, NaN, -inf and biased tokens among the best: the same
    token as the full chain (the fast path steps aside where the selection is not unique)."""
    import numpy as np
    n = model.n_vocab
    rng = np.random.default_rng(3)
    base = rng.normal(scale=3, size=n).astype(np.float32)
    tie_in = base.copy(); tie_in[[10, 20]] = 30.0
    tie_edge = base.copy(); order = np.argsort(-base); tie_edge[order[4]] = tie_edge[order[5]]
    nan = base.copy(); nan[77] = np.nan
    ninf = np.full(n, -np.inf, dtype=np.float32); ninf[[5, 6, 7]] = [1.0, 2.0, 3.0]
    coarse = rng.integers(0, 4, size=n).astype(np.float32)
    cases = [(base, {}), (tie_in, {}), (tie_edge, {}), (nan, {}), (ninf, {}), (coarse, {}),
             (base, {int(order[0]): -50.0, int(order[-1]): 60.0}), (ninf, {9: 5.0})]
    for logits, bias in cases:
        for k in (5, 40):
            for seed in range(4):
                picks = []
                for slow in (False, True):
                    s = _chain(model, k, seed, [bias] if bias else [], slow)
                    ctx.set_logits(logits)
                    try:
                        picks.append(ctx.generate(s, max_tokens=1).run())
                    except pyllamacy.GrammarError:
                        picks.append("none")
                    s.close()
                assert picks[0] == picks[1], (k, bias, seed, picks)


def test_topk_fast_path_in_the_engine(smollm2_path):
    """The Engine samples top-k chains on the fast path too: same tokens as Generation (on the
    CPU, where batched and single decodes give the same logits)."""
    from pyllamacy import Context, Engine
    model = pyllamacy.Model(smollm2_path, n_gpu_layers=0)
    prompts = ["Once upon a time", "The capital of France is"]
    with Context(model, n_ctx=512, n_seq_max=2) as c2, Engine(c2) as eng:
        ids = [eng.submit(model.tokenize(p), _chain(model, 40, 9 + i), max_tokens=12)
               for i, p in enumerate(prompts)]
        out = {i: [] for i in ids}
        done = set()
        while len(done) < 2:
            for rid, tok, fin in eng.step():
                if tok >= 0:
                    out[rid].append(tok)
                if fin is not None:
                    done.add(rid)
    for i, p in enumerate(prompts):
        with Context(model, n_ctx=512) as c1:
            c1.eval(model.tokenize(p))
            ref = c1.generate(_chain(model, 40, 9 + i, slow=True), max_tokens=12).run()
        assert out[ids[i]] == ref
    model.close()
