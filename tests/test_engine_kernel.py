"""What a single Generation can do, a slot of the Engine can do (the per-slot kernel):
speculative drafts, multimodal prompts, per-request LoRA adapters, typed errors — each checked
against the single-sequence path (Context.eval / eval_multimodal + generate) on the CPU."""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import pyllamacy as pc  # noqa: E402

from gguf_fixtures import merged, write_tiny_model  # noqa: E402
from test_lora import ALPHA, tiny  # noqa: E402,F401  (module fixture)
from test_multimodal import _prompt, loaded, mm  # noqa: E402,F401  (module fixtures)

PROMPTS = ["Once upon a time", "def fibonacci(n):", "The capital of France is",
           "1, 2, 3, 4, 5, 6, 7, 8,"]


def _solo(model, prompt, sampler, n, loras=None, ctx_kw=None):
    """The single-sequence path: eval + Generation.run()."""
    with pc.Context(model, n_ctx=512, n_threads=1, **(ctx_kw or {})) as ctx:
        if loras:
            ctx.set_loras(loras)
        if isinstance(prompt, pc.MultimodalInput):
            ctx.eval_multimodal(prompt)
        else:
            ctx.eval(prompt)
        return ctx.generate(sampler, max_tokens=n).run()


def _drain(eng, want_logprobs=False):
    out, fins, errs = {}, {}, {}
    while eng.n_active:
        for ev in eng.step(want_logprobs):
            rid, tok, fin = ev[0], ev[1], ev[2]
            if tok >= 0:
                out.setdefault(rid, []).append(tok)
            if fin is not None:
                fins[rid] = fin
        errs.update(eng.last_errors())
    return out, fins, errs


def _sampler(model, seed):
    s = pc.Sampler(model)
    if seed is None:
        return s.greedy()
    return s.top_k(40).top_p(0.9).temp(0.8).dist(seed)


@pytest.mark.parametrize("seed", [None, 7])
@pytest.mark.parametrize("draft", ["ngram", "model", "python"])
def test_engine_speculative_equals_plain(model, smollm2_path, draft, seed):
    """Drafts change how many decodes run, never the tokens: greedy and seeded outputs of a
    drafting Engine equal the plain single-sequence generation, request by request."""
    n = 24
    prompts = [model.tokenize(p * 3) for p in PROMPTS]
    want = [_solo(model, p, _sampler(model, None if seed is None else seed + i), n)
            for i, p in enumerate(prompts)]
    dctx = None
    if draft == "model":
        dctx = pc.Context(model, n_ctx=4 * 512, n_seq_max=4, n_threads=1)
        spec = dctx
    elif draft == "python":
        calls = []

        def spec(ids):
            calls.append(len(ids))
            return np.array(ids[-3:][::-1], dtype=np.intc)   # poor drafts: some rejected
    else:
        spec = "ngram"
    try:
        with pc.Context(model, n_ctx=4 * 512, n_seq_max=4, n_threads=1) as ctx, \
                pc.Engine(ctx, draft=spec, n_draft=4) as eng:
            rids = [eng.submit(p, _sampler(model, None if seed is None else seed + i),
                               max_tokens=n) for i, p in enumerate(prompts)]
            out, fins, errs = _drain(eng)
            assert not errs
            assert [out[r] for r in rids] == want
            assert all(fins[r] == "length" for r in rids)
            assert eng.n_drafted > 0
            if draft == "model":
                assert eng.n_accepted > 0.5 * eng.n_drafted   # the same model drafts
                assert eng.n_steps < 4 * n
            if draft == "python":
                assert calls
    finally:
        if dctx is not None:
            dctx.close()


def test_engine_python_drafter_errors_are_typed(model):
    def bad(ids):
        raise RuntimeError("drafter broke")

    with pc.Context(model, n_ctx=512, n_seq_max=2, n_threads=1) as ctx, \
            pc.Engine(ctx, draft=bad) as eng:
        rid = eng.submit(model.tokenize("Hello"), pc.Sampler(model).greedy(), max_tokens=8)
        ok = eng.submit(model.tokenize("Hello"), pc.Sampler(model).greedy(), max_tokens=8,
                        draft=False)
        out, fins, errs = _drain(eng)
        assert fins[rid] == "error" and isinstance(errs[rid], RuntimeError)
        assert fins[ok] == "length" and len(out[ok]) == 8


def test_engine_draft_context_needs_a_sequence_per_slot(model):
    with pc.Context(model, n_ctx=512, n_seq_max=2, n_threads=1) as ctx, \
            pc.Context(model, n_ctx=256, n_threads=1) as small:
        with pytest.raises(ValueError, match="n_seq_max"):
            pc.Engine(ctx, draft=small)
        with pytest.raises(ValueError):
            pc.Engine(ctx, draft="bogus")


def test_engine_grammar_error_is_typed(model):
    with pc.Context(model, n_ctx=512, n_seq_max=2, n_threads=1) as ctx, pc.Engine(ctx) as eng:
        tok = model.tokenize("a", add_special=False)[0]
        s = pc.Sampler(model).grammar('root ::= "a"').logit_bias({tok: float("-inf")}).greedy()
        rid = eng.submit(model.tokenize("x"), s, max_tokens=4)
        _, fins, errs = _drain(eng)
        assert fins[rid] == "error" and isinstance(errs[rid], pc.GrammarError)


# -- multimodal prompts ----------------------------------------------------------------------

def test_engine_multimodal_equals_eval_multimodal(mm, loaded):
    """Image prompts in slots (media chunks encoded by the projector when the slot reaches
    them) give the tokens of Context.eval_multimodal + generate, also with text-only requests
    and the same image twice in flight."""
    _, _, images, _ = mm
    model, projector = loaded
    n = 8
    inputs = [projector.tokenize(_prompt(projector.marker), [rgb]) for _, rgb in images]
    inputs.append(projector.tokenize(_prompt(projector.marker), [images[0][1]]))
    want = [_solo(model, inp, pc.Sampler(model).greedy(), n) for inp in inputs]
    text = model.tokenize(_prompt(""), parse_special=True)
    want_text = _solo(model, text, pc.Sampler(model).greedy(), n)
    with pc.Context(model, n_ctx=5 * 256, n_seq_max=5, n_threads=1) as ctx, \
            pc.Engine(ctx) as eng:
        rids = [eng.submit(inp, pc.Sampler(model).greedy(), max_tokens=n) for inp in inputs]
        rid_text = eng.submit(text, pc.Sampler(model).greedy(), max_tokens=n)
        out, fins, errs = _drain(eng)
        assert not errs
        assert [out[r] for r in rids] == want
        assert out[rid_text] == want_text
        # a text prompt never reuses a prefix through a slot's media positions
        again = eng.submit(text, pc.Sampler(model).greedy(), max_tokens=n)
        out2, _, _ = _drain(eng)
        assert out2[again] == want_text


def test_engine_multimodal_bad_prompts(mm, loaded, model):
    _, proj_path, images, _ = mm
    m, projector = loaded
    with pc.Context(m, n_ctx=256, n_seq_max=1, n_threads=1) as ctx, pc.Engine(ctx) as eng:
        ends_with_image = projector.tokenize("look: " + projector.marker, [images[0][1]])
        with pytest.raises(ValueError, match="end with text"):
            eng.submit(ends_with_image, pc.Sampler(m).greedy())
        inp = projector.tokenize(_prompt(projector.marker), [images[0][1]])
        with pytest.raises(ValueError, match="prompt_logprobs"):
            eng.submit(inp, pc.Sampler(m).greedy(), logprobs=1, prompt_logprobs=True)
    with pc.Context(model, n_ctx=256, n_threads=1) as other, pc.Engine(other) as eng:
        with pytest.raises(ValueError, match="another Model"):
            eng.submit(inp, pc.Sampler(model).greedy())


# -- per-request LoRA ----------------------------------------------------------------------------

def test_engine_lora_per_request(tiny):
    """Each request gets its own adapter set, with others in flight at once: the tokens equal
    a context with that set attached, and a cached prefix is never shared across sets."""
    base, adapter_path, pairs, weights, d = tiny
    n = 10
    f32 = dict(type_k="f32", type_v="f32")
    with pc.Model(base) as m, m.load_lora(adapter_path) as lora:
        prompts = [m.tokenize(p) for p in PROMPTS[:3]]
        sets = [None, [(lora, 0.6)], [(lora, -0.5)]]
        want = {(i, j): _solo(m, p, pc.Sampler(m).greedy(), n, s, f32)
                for i, p in enumerate(prompts) for j, s in enumerate(sets)}
        # the adapters really change the output
        assert want[(0, 0)] != want[(0, 1)] != want[(0, 2)]
        with pc.Context(m, n_ctx=9 * 128, n_seq_max=9, n_threads=1, **f32) as ctx, \
                pc.Engine(ctx) as eng:
            rids = {(i, j): eng.submit(p, pc.Sampler(m).greedy(), max_tokens=n, loras=s)
                    for i, p in enumerate(prompts) for j, s in enumerate(sets)}
            out, fins, errs = _drain(eng)
            assert not errs
            for key, rid in rids.items():
                assert out[rid] == want[key], key
            # the same prompt under another adapter set: no prefix reuse across sets
            before = eng.n_reused_tokens
            r = eng.submit(prompts[0], pc.Sampler(m).greedy(), max_tokens=n, loras=sets[2])
            out, _, _ = _drain(eng)
            assert out[r] == want[(0, 2)]
            assert eng.n_reused_tokens - before == len(prompts[0]) - 1   # same set: reused


def test_engine_lora_merged_weights(tiny, smollm2_path):
    """An outside reference: a request with the adapter at scale s equals the model whose
    weights have the adapter merged in at s."""
    base, adapter_path, pairs, weights, d = tiny
    path = str(d / "tiny-merged-engine.gguf")
    write_tiny_model(path, smollm2_path, merged(weights, pairs, 0.6, ALPHA))
    f32 = dict(type_k="f32", type_v="f32")
    with pc.Model(path) as mm_:
        want = _solo(mm_, mm_.tokenize("Once upon a time"), pc.Sampler(mm_).greedy(), 10,
                     None, f32)
    with pc.Model(base) as m, m.load_lora(adapter_path) as lora, \
            pc.Context(m, n_ctx=256, n_seq_max=2, n_threads=1, **f32) as ctx, \
            pc.Engine(ctx) as eng:
        r1 = eng.submit(m.tokenize("Once upon a time"), pc.Sampler(m).greedy(), max_tokens=10,
                        loras=[(lora, 0.6)])
        r2 = eng.submit(m.tokenize("Once upon a time"), pc.Sampler(m).greedy(), max_tokens=10)
        out, _, _ = _drain(eng)
        assert out[r1] == want
        assert out[r2] != want


def test_engine_lora_bad_arguments(tiny, model):
    base, adapter_path, *_ = tiny
    with pc.Model(base) as m, m.load_lora(adapter_path) as lora, \
            pc.Context(model, n_ctx=256, n_threads=1) as ctx, pc.Engine(ctx) as eng:
        with pytest.raises(ValueError, match="another Model"):
            eng.submit(model.tokenize("x"), pc.Sampler(model).greedy(), loras=[(lora, 1.0)])
        with pytest.raises(TypeError):
            eng.submit(model.tokenize("x"), pc.Sampler(model).greedy(), loras=[("a", 1.0)])
