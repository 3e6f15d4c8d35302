"""Speculative decoding: the output is exactly that of plain decoding; drafts get accepted."""
from __future__ import annotations

import pytest

import pyllamacy
from pyllamacy import Context, Sampler
from pyllamacy.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

CODE = '''def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b
'''
PROMPT = ("Rewrite the following Python code exactly, adding type hints.\n\n" + CODE +
          "\nRewritten code:\n")


def _generate(model, prompt, sampler_fn, n=48, **kw):
    toks = model.tokenize(prompt)
    with Context(model, n_ctx=1024, n_threads=2) as ctx:
        ctx.eval(toks)
        g = ctx.generate(sampler_fn(), max_tokens=n, history=toks, **kw)
        out = g.run()
        return out, g


@pytest.mark.parametrize("n_draft", [4, 10])
def test_prompt_lookup_greedy_identical(model, n_draft):
    plain, _ = _generate(model, PROMPT, lambda: Sampler(model).greedy())
    spec, g = _generate(model, PROMPT, lambda: Sampler(model).greedy(), draft="ngram",
                        n_draft=n_draft, ngram_max=3)
    assert spec == plain
    assert g.n_drafted > 0 and g.n_accepted > 0


def test_prompt_lookup_seeded_sampling_identical(model):
    def sampler():
        return Sampler(model).top_k(40).temp(0.7).dist(7)

    plain, _ = _generate(model, PROMPT, sampler)
    spec, g = _generate(model, PROMPT, sampler, draft="ngram", n_draft=8)
    assert spec == plain


def test_prompt_lookup_streaming_identical(model):
    toks = model.tokenize(PROMPT)
    plain, _ = _generate(model, PROMPT, lambda: Sampler(model).greedy(), n=40)
    with Context(model, n_ctx=1024) as ctx:
        ctx.eval(toks)
        g = ctx.generate(Sampler(model).greedy(), max_tokens=40, history=toks, draft="ngram")
        assert list(g) == plain
        assert g.n_accepted > 0


def test_draft_model_identical(model, smollm2_path):
    plain, _ = _generate(model, PROMPT, lambda: Sampler(model).greedy(), n=32)
    with LlamaDraftModel(smollm2_path, num_pred_tokens=6, n_ctx=1024) as drafter:
        spec, g = _generate(model, PROMPT, lambda: Sampler(model).greedy(), n=32,
                            draft=drafter.ctx, n_draft=6)
    assert spec == plain
    # the same model drafting for itself: nearly every draft is right
    assert g.acceptance_rate > 0.5


def test_stop_and_eog_with_drafts(model):
    plain, pg = _generate(model, PROMPT, lambda: Sampler(model).greedy(), n=200,
                          stop_strings=["mul"])
    spec, sg = _generate(model, PROMPT, lambda: Sampler(model).greedy(), n=200,
                         stop_strings=["mul"], draft="ngram")
    assert spec == plain and sg.finish_reason == pg.finish_reason


def test_bad_draft_arguments(model):
    with Context(model, n_ctx=128) as ctx:
        ctx.eval(model.tokenize("hi"))
        with pytest.raises(ValueError):
            ctx.generate(Sampler(model).greedy(), draft="magic")
        with pytest.raises(ValueError):
            ctx.generate(Sampler(model).greedy(), draft="ngram", n_draft=0)
        with pytest.raises(ValueError):
            ctx.generate(Sampler(model).greedy(), draft=ctx)
        with pytest.raises(TypeError):
            ctx.generate(Sampler(model).greedy(), draft=42)


def test_llama_with_prompt_lookup(smollm2_path):
    kw = dict(model_path=smollm2_path, n_ctx=1024, n_threads=2, verbose=False)
    with pyllamacy.Llama(**kw) as plain_llm:
        plain = plain_llm(PROMPT, max_tokens=40, temperature=0)["choices"][0]["text"]
    drafter = LlamaPromptLookupDecoding(num_pred_tokens=10)
    with pyllamacy.Llama(draft_model=drafter, **kw) as llm:
        out = llm(PROMPT, max_tokens=40, temperature=0)
        assert out["choices"][0]["text"] == plain
        assert llm._last_generation.n_accepted > 0
        streamed = "".join(c["choices"][0]["text"]
                           for c in llm(PROMPT, max_tokens=40, temperature=0, stream=True))
        assert streamed == plain
    with pytest.raises(TypeError):
        pyllamacy.Llama(draft_model=object(), **kw)


def test_prompt_lookup_call_matches_llama_cpp_python_semantics():
    import numpy as np
    d = LlamaPromptLookupDecoding(max_ngram_size=2, num_pred_tokens=3)
    ids = np.array([1, 2, 3, 4, 5, 1, 2])
    assert d(ids).tolist() == [3, 4, 5]
    assert d(np.array([9, 8, 7])).tolist() == []


# -- drafters written in Python (llama-cpp-python's LlamaDraftModel protocol) ------------------

class _Oracle:
    """Drafts the plain run's own continuation (all accepted), or junk (all rejected)."""

    def __init__(self, prompt_len, continuation, wrong=False, num_pred_tokens=6):
        self.prompt_len, self.cont, self.wrong = prompt_len, continuation, wrong
        self.num_pred_tokens = num_pred_tokens
        self.calls = 0

    def __call__(self, input_ids, **kwargs):
        import numpy as np
        self.calls += 1
        assert input_ids.dtype == np.intc
        done = len(input_ids) - self.prompt_len
        nxt = self.cont[done:done + 50]          # more than asked for: the loop truncates
        return np.array([(t + 1) % 1000 for t in nxt] if self.wrong else nxt, dtype=np.intc)


@pytest.mark.parametrize("wrong", [False, True])
def test_python_drafter_identical(model, wrong):
    toks = model.tokenize(PROMPT)
    plain, _ = _generate(model, PROMPT, lambda: Sampler(model).greedy(), n=32)
    drafter = _Oracle(len(toks), plain, wrong=wrong)
    spec, g = _generate(model, PROMPT, lambda: Sampler(model).greedy(), n=32, draft=drafter,
                        n_draft=drafter.num_pred_tokens)
    assert spec == plain
    assert drafter.calls > 0 and g.n_drafted > 0
    if wrong:
        assert g.n_accepted == 0
    else:
        assert g.n_accepted >= len(plain) // 2   # whole drafts confirmed: few decodes


def test_python_drafter_errors(model):
    toks = model.tokenize(PROMPT)

    def bad_range(ids):
        return [model.n_vocab + 5]

    def raises(ids):
        raise RuntimeError("drafter broke")

    for fn, exc, msg in [(bad_range, ValueError, "vocabulary"), (raises, RuntimeError, "broke"),
                         (lambda ids: [[1, 2]], TypeError, "1-D"),
                         (lambda ids: ["a"], TypeError, "token ids")]:
        with Context(model, n_ctx=1024, n_threads=2) as ctx:
            ctx.eval(toks)
            g = ctx.generate(Sampler(model).greedy(), max_tokens=8, history=toks, draft=fn)
            with pytest.raises(exc, match=msg):
                g.run()
            assert g.finish_reason == "error"
            # the context is still usable
            ctx.memory_clear()
            ctx.eval(toks)
            assert len(ctx.generate(Sampler(model).greedy(), max_tokens=3).run()) == 3
    with Context(model, n_ctx=64) as ctx:
        ctx.eval(model.tokenize("Hi"))
        with pytest.raises(TypeError):
            ctx.generate(Sampler(model).greedy(), max_tokens=4, draft=42)


def test_llama_accepts_a_python_draft_model(smollm2_path):
    """A llama-cpp-python style subclass with its own __call__ (and no model of its own)."""
    import numpy as np
    from pyllamacy import Llama

    class Lookup(LlamaDraftModel):
        def __init__(self):              # does not load a model: only __call__ matters
            self.num_pred_tokens = 4
            self.calls = 0

        def __call__(self, input_ids, **kwargs):
            self.calls += 1
            return LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=4)(input_ids)

    kw = dict(n_ctx=1024, n_threads=2, verbose=False)
    with Llama(smollm2_path, **kw) as plain:
        want = plain(PROMPT, max_tokens=40, temperature=0)["choices"][0]["text"]
    d = Lookup()
    with Llama(smollm2_path, draft_model=d, **kw) as llm:
        got = llm(PROMPT, max_tokens=40, temperature=0)["choices"][0]["text"]
        stream = "".join(c["choices"][0]["text"] for c in
                         llm(PROMPT, max_tokens=40, temperature=0, stream=True))
    assert got == want and stream == want
    assert d.calls > 0
    with pytest.raises(TypeError):
        Llama(smollm2_path, draft_model=object(), **kw)
    assert np.intc  # numpy imported for the drafter's arrays
