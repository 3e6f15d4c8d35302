"""LoRA adapters: LoraAdapter, Context.set_loras, Llama(lora_path=...), the server's lora_path.

The exact check: a tiny random F32 model with an adapter attached must give the logits of the
same model with the adapter merged into its weights here (W + scale * alpha / rank * B @ A).
"""
from __future__ import annotations

import gc
import pickle
import warnings

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import pyllamacy as pc  # noqa: E402
from pyllamacy import Llama  # noqa: E402

from gguf_fixtures import (merged, random_lora, tiny_weights, write_lora,  # noqa: E402
                           write_tiny_model)

PROMPT = "The quick brown fox jumps over the lazy dog"
ADAPTED = ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output.weight"]
RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_path):
    """(base model path, adapter path, adapter pairs, weights) for the tiny F32 model."""
    d = tmp_path_factory.mktemp("lora")
    n_vocab = len(gguf.GGUFReader(smollm2_path).fields["tokenizer.ggml.tokens"].data)
    weights = tiny_weights(n_vocab)
    base = str(d / "tiny-f32.gguf")
    write_tiny_model(base, smollm2_path, weights)
    pairs = random_lora(weights, ADAPTED, RANK)
    adapter = str(d / "tiny-lora.gguf")
    write_lora(adapter, pairs, ALPHA)
    return base, adapter, pairs, weights, d


def _last_logits(model, loras=None, text=PROMPT):
    with pc.Context(model, n_ctx=64, n_threads=1, type_k="f32", type_v="f32") as ctx:
        if loras is not None:
            ctx.set_loras(loras)
        ctx.eval(model.tokenize(text))
        return ctx.logits().copy()


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("scale", [1.0, 0.5, -0.75])
def test_adapter_equals_merged_weights(tiny, smollm2_path, scale):
    base, adapter_path, pairs, weights, d = tiny
    merged_path = str(d / f"tiny-merged-{scale}.gguf")
    write_tiny_model(merged_path, smollm2_path, merged(weights, pairs, scale, ALPHA))
    with pc.Model(base) as m, pc.Model(merged_path) as mm:
        with m.load_lora(adapter_path) as lora:
            got = _last_logits(m, [(lora, scale)])
            plain = _last_logits(m)
        want = _last_logits(mm)
    # the adapter moves the logits far more than the merge's float rounding does
    assert _rel(plain, want) > 0.05
    assert _rel(got, want) < 1e-4, (_rel(got, want), _rel(plain, want))


def test_scale_zero_and_detaching_restore_the_base(tiny):
    base, adapter_path, _, _, _ = tiny
    with pc.Model(base) as m, pc.LoraAdapter(m, adapter_path) as lora:
        plain = _last_logits(m)
        assert np.array_equal(_last_logits(m, [(lora, 0.0)]), plain)
        with pc.Context(m, n_ctx=64, n_threads=1, type_k="f32", type_v="f32") as ctx:
            toks = m.tokenize(PROMPT)
            ctx.set_loras(lora)                       # a bare adapter: scale 1
            assert ctx.loras == [(lora, 1.0)]
            ctx.eval(toks)
            adapted = ctx.logits().copy()
            ctx.clear_loras()
            assert ctx.loras == []
            ctx.memory_clear()
            ctx.eval(toks)
            assert np.array_equal(ctx.logits(), plain)
            ctx.set_loras({lora: 1.0})
            ctx.memory_clear()
            ctx.eval(toks)
            assert np.array_equal(ctx.logits(), adapted)
        assert _rel(adapted, plain) > 0.05


def test_two_adapters_add_up(tiny, smollm2_path):
    base, adapter_path, pairs, weights, d = tiny
    pairs2 = random_lora(weights, ["blk.1.attn_v.weight", "blk.0.ffn_up.weight"], 2, seed=7)
    second = str(d / "tiny-lora2.gguf")
    write_lora(second, pairs2, 0.0)                   # alpha 0: scale alone
    both = merged(merged(weights, pairs, 0.5, ALPHA), pairs2, 2.0, 0.0)
    merged_path = str(d / "tiny-merged-both.gguf")
    write_tiny_model(merged_path, smollm2_path, both)
    with pc.Model(base) as m, pc.Model(merged_path) as mm:
        a, b = m.load_lora(adapter_path), m.load_lora(second)
        got = _last_logits(m, [(a, 0.5), (b, 2.0)])
        want = _last_logits(mm)
        a.close(), b.close()
    assert _rel(got, want) < 1e-4


def test_adapter_metadata(tiny):
    base, adapter_path, _, _, _ = tiny
    with pc.Model(base) as m, m.load_lora(adapter_path) as lora:
        md = lora.metadata
        assert md["general.type"] == "adapter" and md["adapter.type"] == "lora"
        assert lora.alpha == ALPHA
        assert lora.alora_invocation_tokens == []
        assert lora.path == adapter_path and lora.model is m
        assert "LoraAdapter" in repr(lora)
        with pytest.raises(TypeError):
            pickle.dumps(lora)


def test_real_model_adapter(model):
    """An adapter on the real quantized model: it changes the output, scale 0 does not."""
    import tempfile
    import os
    E = model.n_embd
    rng = np.random.default_rng(3)
    pairs = {f"blk.{i}.attn_q.weight": ((rng.standard_normal((8, E)) * 0.05).astype(np.float32),
                                         (rng.standard_normal((E, 8)) * 0.05).astype(np.float32))
             for i in range(4)}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "smol-lora.gguf")
        write_lora(path, pairs, 8.0)
        with model.load_lora(path) as lora:
            plain = _last_logits(model)
            assert np.array_equal(_last_logits(model, [(lora, 0.0)]), plain)
            adapted = _last_logits(model, [(lora, 4.0)])
    assert np.isfinite(adapted).all()
    assert _rel(adapted, plain) > 1e-3


# -- bad input: a clear exception, before any C call that could abort ---------------------------

def test_bad_adapter_files(tiny, model, tmp_path):
    base, adapter_path, pairs, weights, _ = tiny
    with pytest.raises(FileNotFoundError, match="LoRA adapter file not found"):
        model.load_lora(tmp_path / "missing.gguf")
    with pytest.raises(IsADirectoryError):
        model.load_lora(tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all, just some bytes to read")
    with pytest.raises(pc.ModelLoadError, match="not a GGUF file"):
        model.load_lora(junk)
    # a model is not an adapter
    with pytest.raises(pc.AdapterLoadError, match="general.type"):
        model.load_lora(base)
    # the tiny model's adapter against SmolLM2: other shapes
    with pytest.raises(pc.AdapterLoadError, match="shape"):
        model.load_lora(adapter_path)
    # a tensor the model lacks
    p = str(tmp_path / "nosuch.gguf")
    a, b = pairs["blk.0.attn_q.weight"]
    write_lora(p, {"blk.99.attn_q.weight": (a, b)}, 1.0)
    with pc.Model(base) as m:
        with pytest.raises(pc.AdapterLoadError, match="does not exist in base model"):
            m.load_lora(p)
        # another architecture
        p2 = str(tmp_path / "arch.gguf")
        write_lora(p2, {"blk.0.attn_q.weight": (a, b)}, 1.0, arch="qwen2")
        with pytest.raises(pc.AdapterLoadError, match="arch"):
            m.load_lora(p2)
        # A with the wrong rank for B
        p3 = str(tmp_path / "rank.gguf")
        write_lora(p3, {"blk.0.attn_q.weight": (a[:2], b)}, 1.0)
        with pytest.raises(pc.AdapterLoadError):
            m.load_lora(p3)
        # the model still works after every failure
        assert np.isfinite(_last_logits(m)).all()
    with pytest.raises(TypeError):
        model.load_lora(123)


def test_bad_set_loras_arguments(tiny, model):
    base, adapter_path, _, _, _ = tiny
    with pc.Model(base) as m, m.load_lora(adapter_path) as lora, \
            pc.Context(m, n_ctx=64, n_threads=1) as ctx, \
            pc.Context(model, n_ctx=64, n_threads=1) as other:
        for bad, exc in [("lora.gguf", TypeError), (42, TypeError), ([42], TypeError),
                         ([(lora, "1")], TypeError), ([(lora, True)], TypeError),
                         ([(lora, float("nan"))], ValueError),
                         ([(lora, float("inf"))], ValueError),
                         ([(lora, 1.0), (lora, 0.5)], ValueError),
                         ([(lora, 1.0, 2.0)], TypeError)]:
            with pytest.raises(exc):
                ctx.set_loras(bad)
            assert ctx.loras == []
        with pytest.raises(ValueError, match="another Model"):
            other.set_loras(lora)
        ctx.set_loras([(lora, np.float32(0.5))])
        assert ctx.loras == [(lora, 0.5)]


# -- lifetimes --------------------------------------------------------------------------------

def test_close_while_attached_is_deferred(tiny):
    base, adapter_path, _, _, _ = tiny
    m = pc.Model(base)
    lora = m.load_lora(adapter_path)
    ctx = pc.Context(m, n_ctx=64, n_threads=1, type_k="f32", type_v="f32")
    toks = m.tokenize(PROMPT)
    ctx.set_loras(lora)
    ctx.eval(toks)
    adapted = ctx.logits().copy()
    lora.close()                      # still attached: freed once the context lets it go
    m.close()                         # the weights wait for the context and the adapter
    assert lora.closed and m.closed
    with pytest.raises(pc.ClosedError):
        lora.metadata
    with pytest.raises(pc.ClosedError):
        ctx.set_loras(lora)           # a closed adapter cannot be attached again
    ctx.memory_clear()
    ctx.eval(toks)                    # the attached adapter still works
    assert np.array_equal(ctx.logits(), adapted)
    ctx.close()                       # frees the adapter, then the model
    lora.close()
    ctx.close()


def test_dropping_references_frees_in_order(tiny):
    base, adapter_path, _, _, _ = tiny
    m = pc.Model(base)
    ctx = pc.Context(m, n_ctx=64, n_threads=1)
    ctx.set_loras(pc.LoraAdapter(m, adapter_path))    # only the context holds the adapter
    gc.collect()
    ctx.eval(m.tokenize("hello"))
    assert ctx.loras[0][0].model is m
    del m
    del ctx                           # context, then adapter, then model: no crash
    gc.collect()


def test_vocab_only_model_rejects_adapters(tiny, smollm2_path):
    _, adapter_path, _, _, _ = tiny
    with pc.Model(smollm2_path, vocab_only=True) as m:
        with pytest.raises(ValueError, match="vocab_only"):
            m.load_lora(adapter_path)


# -- high level -------------------------------------------------------------------------------

def test_llama_lora_path_matches_merged_model(tiny, smollm2_path):
    base, adapter_path, pairs, weights, d = tiny
    merged_path = str(d / "tiny-merged-0.8.gguf")
    write_tiny_model(merged_path, smollm2_path, merged(weights, pairs, 0.8, ALPHA))
    kw = dict(n_ctx=64, n_threads=1, type_k="f32", type_v="f32", verbose=False)
    with Llama(base, lora_path=adapter_path, lora_scale=0.8, **kw) as llm, \
            Llama(merged_path, **kw) as ref, Llama(base, **kw) as plain:
        toks = llm.tokenize(PROMPT.encode())
        for x in (llm, ref, plain):
            x.eval(toks)
        got = llm._ctx.logits().copy()
        want = ref._ctx.logits().copy()
        assert _rel(got, want) < 1e-4
        assert _rel(plain._ctx.logits(), want) > 0.05
        out = llm("Once upon a time", max_tokens=8, temperature=0.0)
        ref_out = ref("Once upon a time", max_tokens=8, temperature=0.0)
        assert out["choices"][0]["text"] == ref_out["choices"][0]["text"]
        # pickling carries the adapter along
        clone = pickle.loads(pickle.dumps(llm))
        try:
            assert clone.lora_path == adapter_path and clone.lora_scale == 0.8
            assert clone("Once upon a time", max_tokens=8, temperature=0.0)["choices"][0][
                "text"] == ref_out["choices"][0]["text"]
        finally:
            clone.close()


def test_llama_lora_errors(tiny, smollm2_path):
    base, adapter_path, _, _, _ = tiny
    with pytest.raises(pc.AdapterLoadError):
        Llama(smollm2_path, lora_path=adapter_path, n_ctx=64, verbose=False)
    with pytest.raises(TypeError):
        Llama(base, lora_path=adapter_path, lora_scale="big", n_ctx=64, verbose=False)
    with pytest.raises(ValueError):
        Llama(base, lora_path=adapter_path, lora_scale=float("nan"), n_ctx=64, verbose=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with Llama(base, lora_path=adapter_path, lora_base=base, n_ctx=64, verbose=False) as llm:
            assert llm.lora_base == base
    assert any("lora_base" in str(x.message) for x in w)


# -- server -----------------------------------------------------------------------------------

@pytest.mark.optional_deps
def test_server_lora_path(tiny, smollm2_path):
    """A served model with lora_path answers like the merged model, batched or not."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("openai")
    from test_server import _Server
    from pyllamacy.server import ModelSettings
    from pyllamacy.server.__main__ import settings_from_args

    base, adapter_path, pairs, weights, d = tiny
    merged_path = str(d / "tiny-merged-srv.gguf")
    write_tiny_model(merged_path, smollm2_path, merged(weights, pairs, 0.6, ALPHA))
    kw = dict(n_ctx=128, n_batch=64, n_threads=1, n_threads_batch=1, n_parallel=2,
              verbose=False, type_k="f32", type_v="f32")
    srv = _Server([ModelSettings(model=base, model_alias="tuned", lora_path=adapter_path,
                                 lora_scale=0.6, **kw),
                   ModelSettings(model=merged_path, model_alias="merged", **kw),
                   ModelSettings(model=base, model_alias="plain", **kw)])
    try:
        client = srv.client()
        texts = {}
        for alias in ("tuned", "merged", "plain"):
            r = client.completions.create(model=alias, prompt="Once upon a time",
                                          max_tokens=12, temperature=0)
            texts[alias] = r.choices[0].text
        assert texts["tuned"] == texts["merged"]
        assert texts["tuned"] != texts["plain"]
        emb = {alias: np.array(client.embeddings.create(model=alias, input=PROMPT)
                               .data[0].embedding) for alias in ("tuned", "merged")}
        cos = emb["tuned"] @ emb["merged"] / (np.linalg.norm(emb["tuned"]) *
                                              np.linalg.norm(emb["merged"]))
        assert cos > 0.9999
    finally:
        srv.stop()
    _, models = settings_from_args(["--model", base, "--lora_path", adapter_path,
                                    "--lora-scale", "0.5"])
    assert models[0].lora_path == adapter_path and models[0].lora_scale == 0.5
    with pytest.raises(Exception):
        ModelSettings(model=base, lora_path=adapter_path, lora_scale=float("nan"))
    with pytest.raises(pc.AdapterLoadError):
        from pyllamacy.server.runner import EngineRunner
        EngineRunner(ModelSettings(model=smollm2_path, lora_path=adapter_path, **kw))


# -- on a GPU (skips without one) ---------------------------------------------------------------

def _has_gpu():
    return any(d["type"] == "gpu" for d in pc.devices())


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="no GPU backend with a device loaded")
def test_gpu_adapter_equals_merged_weights(tiny, smollm2_path):
    """Every layer offloaded: the adapter's tensors live beside the weights on the device."""
    base, adapter_path, pairs, weights, d = tiny
    merged_path = str(d / "tiny-merged-gpu.gguf")
    write_tiny_model(merged_path, smollm2_path, merged(weights, pairs, 0.7, ALPHA))
    with pc.Model(base, n_gpu_layers=-1) as m, pc.Model(merged_path, n_gpu_layers=-1) as mm, \
            pc.Model(base, n_gpu_layers=0) as cm:
        with m.load_lora(adapter_path) as lora, cm.load_lora(adapter_path) as clora:
            got = _last_logits(m, [(lora, 0.7)])
            plain = _last_logits(m)
            cpu = _last_logits(cm, [(clora, 0.7)])
        want = _last_logits(mm)
    print(f"gpu lora vs merged {_rel(got, want):.2e}, vs cpu {_rel(got, cpu):.2e}, "
          f"plain vs merged {_rel(plain, want):.2e}")
    assert _rel(plain, want) > 0.05
    assert _rel(got, want) < 2e-3
    assert _rel(got, cpu) < 2e-3
