"""Engine: continuous batching of several requests over one context."""
from __future__ import annotations

import pytest

import pyllamacy
from pyllamacy import Context, Engine, Sampler

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):",
           "The three primary colors are"]


@pytest.fixture(scope="module")
def model(smollm2_path):
    """On the CPU: batched and one-at-a-time decoding give bit-identical logits there. On a GPU
    a batch of 4 runs other kernels than a batch of 1 and greedy outputs can part after a few
    tokens (seen on an H100: 13/16 equal) -- llama.cpp (and llama-server) promise no batch
    invariance, so these tests check the Engine's bookkeeping where the numbers are exact."""
    m = pyllamacy.Model(smollm2_path, n_gpu_layers=0)
    yield m
    m.close()


def _drain(eng, ids):
    out = {i: [] for i in ids}
    reasons = {}
    while len(reasons) < len(ids):
        for rid, tok, fin in eng.step():
            if tok >= 0:
                out[rid].append(tok)
            if fin is not None:
                reasons[rid] = fin
    return out, reasons


def _alone(model, prompt, n):
    with Context(model, n_ctx=1024, n_seq_max=4) as ctx, Engine(ctx) as eng:
        rid = eng.submit(model.tokenize(prompt), Sampler(model).greedy(), max_tokens=n)
        out, reasons = _drain(eng, [rid])
        return out[rid], reasons[rid]


def test_concurrent_equals_one_at_a_time(model):
    n = 16
    alone = [_alone(model, p, n) for p in PROMPTS]
    with Context(model, n_ctx=1024, n_seq_max=4) as ctx, Engine(ctx) as eng:
        ids = [eng.submit(model.tokenize(p), Sampler(model).greedy(), max_tokens=n)
               for p in PROMPTS]
        assert eng.n_active == 4 and eng.n_free == 0
        with pytest.raises(pyllamacy.EngineFullError):
            eng.submit(model.tokenize("x"), Sampler(model).greedy())
        out, reasons = _drain(eng, ids)
        assert eng.n_active == 0
    for rid, (toks, reason) in zip(ids, alone):
        assert out[rid] == toks
        assert reasons[rid] == reason


def test_alone_equals_generation(model):
    toks = model.tokenize(PROMPTS[0])
    with Context(model, n_ctx=1024, n_seq_max=4) as ctx:
        ctx.eval(toks)
        ref = ctx.generate(Sampler(model).greedy(), max_tokens=12).run()
    assert _alone(model, PROMPTS[0], 12)[0] == ref


def test_prefix_reuse_and_cancel(model):
    base = model.tokenize("You are a helpful assistant. Answer briefly. " * 4)
    with Context(model, n_ctx=2048, n_seq_max=2) as ctx, Engine(ctx) as eng:
        rid = eng.submit(base + model.tokenize("Q: 2+2?"), Sampler(model).greedy(), max_tokens=4)
        _drain(eng, [rid])
        before = eng.n_reused_tokens
        rid = eng.submit(base + model.tokenize("Q: 3+3?"), Sampler(model).greedy(), max_tokens=4)
        assert eng.n_reused_tokens - before >= len(base) - 2
        _drain(eng, [rid])
        # cancel mid-generation frees the slot at the next step
        rid = eng.submit(model.tokenize("Tell me a story"), Sampler(model).greedy(),
                         max_tokens=200)
        eng.step()
        eng.step()
        assert eng.cancel(rid)
        events = eng.step()
        assert (rid, -1, "aborted") in events
        assert eng.n_active == 0
        assert not eng.cancel(rid)


def test_stop_strings_and_eog(model):
    with Context(model, n_ctx=1024, n_seq_max=2) as ctx, Engine(ctx) as eng:
        rid = eng.submit(model.tokenize("Count: 1, 2, 3,"), Sampler(model).greedy(),
                         max_tokens=50, stop_strings=[","])
        out, reasons = _drain(eng, [rid])
        assert reasons[rid] == "stop"
        assert b"," in model.detokenize(out[rid])


def test_submit_validation(model):
    with Context(model, n_ctx=256, n_seq_max=2) as ctx, Engine(ctx) as eng:
        with pytest.raises(ValueError):
            eng.submit([], Sampler(model).greedy())
        with pytest.raises(IndexError):
            eng.submit([model.n_vocab], Sampler(model).greedy())
        with pytest.raises(pyllamacy.ContextOverflowError):
            eng.submit([1] * (ctx.n_ctx_seq + 1), Sampler(model).greedy())
        with pytest.raises(pyllamacy.SamplerError):
            eng.submit([1, 2], Sampler(model).top_k(3))
        s = Sampler(model).greedy()
        eng.submit([1, 2], s)
        with pytest.raises(pyllamacy.BusyError):
            eng.submit([1, 2], s)             # one sampler, one request


def test_backend_sampling_equals_cpu_sampling(model):
    """Chains run inside the graph (one copy attached per slot) give the tokens that CPU
    sampling gives; a chain that cannot run there (grammar) is sampled on the CPU beside them,
    and slots are reused by later requests."""
    n = 12
    alone = [_alone(model, p, n) for p in PROMPTS]
    with Context(model, n_ctx=1024, n_seq_max=4) as ctx, \
            Engine(ctx, backend_sampling=True) as eng:
        for _round in range(2):
            ids = [eng.submit(model.tokenize(p), Sampler(model).greedy(), max_tokens=n)
                   for p in PROMPTS[:3]]
            gid = eng.submit(model.tokenize(PROMPTS[0]),
                             Sampler(model).grammar('root ::= " Paris." | " Lyon."').greedy(),
                             max_tokens=n)
            out, reasons = _drain(eng, ids + [gid])
            for rid, (toks, reason) in zip(ids, alone):
                assert out[rid] == toks
                assert reasons[rid] == reason
            assert model.detokenize(out[gid]).strip() in (b"Paris.", b"Lyon.")


def _log_softmax(row):
    import numpy as np
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


def test_logprobs_match_the_logits(model):
    """submit(logprobs=N): each token's log-probability and the N most likely tokens equal
    the log-softmax of the logits of the same tokens decoded one by one; a request beside it
    without logprobs gets None; a non-greedy chain reports the token it sampled."""
    import numpy as np
    n, k = 10, 3
    with Context(model, n_ctx=1024, n_seq_max=3) as ctx, Engine(ctx) as eng:
        a = eng.submit(model.tokenize(PROMPTS[0]), Sampler(model).greedy(), max_tokens=n,
                       logprobs=k)
        b = eng.submit(model.tokenize(PROMPTS[1]), Sampler(model).greedy(), max_tokens=n)
        c = eng.submit(model.tokenize(PROMPTS[2]), Sampler(model).top_k(20).dist(5),
                       max_tokens=n, logprobs=0)
        toks = {a: [], b: [], c: []}
        lps = {a: [], b: [], c: []}
        done = set()
        while len(done) < 3:
            for rid, tok, fin, lp in eng.step(with_logprobs=True):
                if tok >= 0:
                    toks[rid].append(tok)
                    lps[rid].append(lp)
                else:
                    assert lp is None
                if fin is not None:
                    done.add(rid)
    assert all(lp is None for lp in lps[b]) and len(lps[b]) == n
    for rid, prompt, want_top in ((a, PROMPTS[0], k), (c, PROMPTS[2], 0)):
        assert len(lps[rid]) == len(toks[rid]) == n
        with Context(model, n_ctx=1024) as ref:
            ref.eval(model.tokenize(prompt))
            for tok, (tok_lp, top) in zip(toks[rid], lps[rid]):
                ls = _log_softmax(ref.logits())
                assert tok_lp == pytest.approx(ls[tok], abs=1e-4)
                assert len(top) == want_top
                if want_top:
                    order = np.argsort(-ls, kind="stable")[:want_top]
                    assert [t for t, _ in top] == order.tolist()
                    assert [v for _, v in top] == pytest.approx(ls[order].tolist(), abs=1e-4)
                    assert top[0][0] == tok                    # greedy: the most likely one
                ref.eval([tok])
    assert any(lp[0] < max(-1e-3, -0.01) for lp in lps[c])      # sampled, not always the top


def test_logprobs_validation(model):
    with Context(model, n_ctx=256, n_seq_max=1) as ctx, Engine(ctx) as eng:
        for bad in (-2, model.n_vocab + 1):
            with pytest.raises(ValueError, match="logprobs"):
                eng.submit([1, 2], Sampler(model).greedy(), logprobs=bad)
        rid = eng.submit([1, 2], Sampler(model).greedy(), max_tokens=1,
                         logprobs=model.n_vocab)                  # the whole vocabulary
        ev = [e for e in eng.step(True) if e[1] >= 0]
        assert ev[0][0] == rid and len(ev[0][3][1]) == model.n_vocab
        import math
        total = math.fsum(math.exp(v) for _, v in ev[0][3][1])
        assert total == pytest.approx(1.0, abs=1e-3)


def test_logprobs_beside_backend_sampling(model):
    """With backend_sampling, a request that asks for logprobs is sampled on the CPU (it needs
    the logits) beside requests sampled in the graph; same tokens as alone."""
    n = 8
    alone = _alone(model, PROMPTS[0], n)[0]
    with Context(model, n_ctx=1024, n_seq_max=2) as ctx, \
            Engine(ctx, backend_sampling=True) as eng:
        a = eng.submit(model.tokenize(PROMPTS[0]), Sampler(model).greedy(), max_tokens=n,
                       logprobs=2)
        b = eng.submit(model.tokenize(PROMPTS[1]), Sampler(model).greedy(), max_tokens=n)
        got = {a: [], b: []}
        done = set()
        while len(done) < 2:
            for rid, tok, fin, lp in eng.step(True):
                if tok >= 0:
                    got[rid].append((tok, lp))
                if fin is not None:
                    done.add(rid)
    assert [t for t, _ in got[a]] == alone
    assert all(lp is not None and lp[1][0][0] == t for t, lp in got[a])
    assert all(lp is None for _, lp in got[b])


def test_prompt_logprobs(model):
    """prompt_logprobs=True: every prompt token after the first gets the log-softmax of the
    previous position's logits, across prompt chunks (n_batch 8 < prompt), beside another
    request; the first generated token's still comes with the events."""
    import numpy as np
    prompt = model.tokenize("The three primary colors are red, yellow and blue, said the teacher")
    assert len(prompt) > 12
    with Context(model, n_ctx=512, n_seq_max=2, n_batch=8) as ctx, Engine(ctx) as eng:
        other = eng.submit(model.tokenize(PROMPTS[1]), Sampler(model).greedy(), max_tokens=4)
        rid = eng.submit(prompt, Sampler(model).greedy(), max_tokens=2, logprobs=2,
                         prompt_logprobs=True)
        got, first = [], None
        done = set()
        while len(done) < 2:
            events = eng.step(True)
            got += eng.last_prompt_logprobs()
            for r, tok, fin, lp in events:
                if r == rid and tok >= 0 and first is None:
                    first = (tok, lp)
                if fin is not None:
                    done.add(r)
    assert all(r == rid for r, *_ in got)
    assert [p for _, p, _, _ in got] == list(range(1, len(prompt)))
    assert [t for _, _, t, _ in got] == prompt[1:]
    with Context(model, n_ctx=512) as ref:
        for _, pos, tok, (tok_lp, top) in got:
            ref.memory_clear()
            ref.eval(prompt[:pos])
            ls = _log_softmax(ref.logits())
            assert tok_lp == pytest.approx(ls[tok], abs=1e-3)
            order = np.argsort(-ls, kind="stable")[:2]
            assert [t for t, _ in top] == order.tolist()
    assert first is not None and first[1][1][0][0] == first[0]
    with Context(model, n_ctx=64, n_seq_max=1) as ctx, Engine(ctx) as eng:
        with pytest.raises(ValueError, match="prompt_logprobs"):
            eng.submit([1, 2], Sampler(model).greedy(), prompt_logprobs=True)
