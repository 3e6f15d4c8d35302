"""pyllamacy.loading (one loader, cleanup on every failure path) and pyllamacy.defaults (one
table the layers agree on)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

import pyllamacy
from pyllamacy import defaults, loading
from pyllamacy.loading import LoadedModel, load

CTX = {"n_threads": 1, "n_threads_batch": 1}


@pytest.fixture
def opened(monkeypatch):
    """Every Model / Context / LoraAdapter / Projector the loader creates, to check that a
    failure closes them all."""
    made = []

    def recording(cls):
        class Recorded(cls):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                made.append(self)
        Recorded.__name__ = cls.__name__
        return Recorded

    for name in ("Model", "Context", "LoraAdapter", "Projector"):
        monkeypatch.setattr(loading, name, recording(getattr(loading, name)))
    return made


def _kinds(objs):
    return sorted(type(o).__name__ for o in objs)


# -- the loader ----------------------------------------------------------------------------------

def test_load_and_close(smollm2_path, opened):
    with load(smollm2_path, n_ctx=128, n_batch=1000, n_ubatch=1000, context_options=CTX) as lm:
        assert isinstance(lm, LoadedModel) and not lm.closed
        assert lm.model.path == smollm2_path and lm.ctx.model is lm.model
        assert lm.n_ctx == lm.ctx.n_ctx >= 128
        assert lm.n_batch == 128 and lm.n_ubatch == lm.ctx.n_ubatch == 128   # clamped
        assert lm.loras == [] and lm.projector is None and lm.draft is None
        assert lm.ctx.n_threads == 1
    assert lm.closed and lm.model.closed and lm.ctx.closed
    lm.close()                                     # twice is fine
    assert _kinds(opened) == ["Context", "Model"]


def test_n_ctx_is_per_sequence(smollm2_path):
    with load(smollm2_path, n_ctx=128, n_seq_max=3, context_options=CTX) as lm:
        assert lm.ctx.n_seq_max == 3 and lm.ctx.n_ctx >= 3 * 128
    with load(smollm2_path, n_ctx=0, vocab_only=True) as lm:   # 0: the training context
        assert lm.ctx is None and lm.n_ctx == lm.model.n_ctx_train


def test_bad_files_fail_before_the_model_loads(smollm2_path, tmp_path, opened):
    missing = str(tmp_path / "missing.gguf")
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"not a gguf file at all, but long enough...")
    with pytest.raises(FileNotFoundError):
        load(smollm2_path, lora=[(missing, 1.0)])
    with pytest.raises(pyllamacy.ModelLoadError):
        load(smollm2_path, clip_model_path=str(not_gguf))
    with pytest.raises(FileNotFoundError):
        load(smollm2_path, draft_model_path=missing)
    with pytest.raises(TypeError):
        load(smollm2_path, lora=[(smollm2_path, "big")])
    with pytest.raises(ValueError):
        load(smollm2_path, lora=[(smollm2_path, float("nan"))])
    with pytest.raises(TypeError):
        load(smollm2_path, lora=[smollm2_path])
    with pytest.raises(ValueError, match="vocab_only"):
        load(smollm2_path, vocab_only=True, lora=[(smollm2_path, 1.0)])
    assert opened == []                            # nothing was loaded


def test_a_bad_adapter_after_a_good_model_closes_it(smollm2_path, opened):
    # a GGUF model is no LoRA adapter: llama.cpp refuses it once the model is loaded
    with pytest.raises(pyllamacy.AdapterLoadError):
        load(smollm2_path, n_ctx=64, context_options=CTX, lora=[(smollm2_path, 1.0)])
    assert _kinds(opened) == ["Context", "Model"]
    assert all(o.closed for o in opened)


def test_a_bad_context_closes_the_model(smollm2_path, opened):
    with pytest.raises(ValueError):
        load(smollm2_path, n_ctx=64, context_options=dict(CTX, type_k="no-such-type"))
    assert _kinds(opened) == ["Model"] and opened[0].closed


def test_a_bad_projector_closes_everything(smollm2_path, opened):
    with pytest.raises(pyllamacy.ProjectorLoadError):
        load(smollm2_path, n_ctx=64, context_options=CTX, clip_model_path=smollm2_path)
    assert _kinds(opened) == ["Context", "Model"]
    assert all(o.closed for o in opened)


def test_draft_model(smollm2_path, opened):
    with load(smollm2_path, n_ctx=64, context_options=CTX, draft_model_path=smollm2_path,
              draft_options={"n_ctx": 64, "context_options": CTX}) as lm:
        d = lm.draft
        assert isinstance(d, LoadedModel) and d.model is not lm.model
        assert d.model.n_vocab == lm.model.n_vocab and d.ctx.n_ctx >= 64
    assert d.closed and d.model.closed and d.ctx.closed and lm.model.closed
    assert all(o.closed for o in opened) and len(opened) == 4


def test_a_failing_draft_closes_the_target(smollm2_path, opened):
    with pytest.raises(ValueError):
        load(smollm2_path, n_ctx=64, context_options=CTX, draft_model_path=smollm2_path,
             draft_options={"n_ctx": 64, "context_options": dict(CTX, type_k="bogus")})
    assert _kinds(opened) == ["Context", "Model", "Model"]
    assert all(o.closed for o in opened)


def test_a_failure_in_close_still_closes_the_rest():
    closed = []

    class Part:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail

        def close(self):
            closed.append(self.name)
            if self.fail:
                raise RuntimeError(self.name)

    lm = LoadedModel()
    for p in (Part("model"), Part("ctx", fail=True), Part("projector")):
        lm._own(p)
    with pytest.raises(RuntimeError, match="ctx"):
        lm.close()
    assert closed == ["projector", "ctx", "model"] and lm.closed
    lm.close()
    assert closed == ["projector", "ctx", "model"]


def test_borrowed_model_and_adapter_stay_open(smollm2_path):
    with load(smollm2_path, n_ctx=64, context_options=CTX) as owner:
        with load(owner.model, n_ctx=64,
                  context_options=dict(CTX, embeddings=True, pooling_type="mean")) as emb:
            assert emb.model is owner.model and emb.ctx is not owner.ctx
        assert emb.ctx.closed and not owner.model.closed and not owner.ctx.closed
        owner.ctx.eval(owner.model.tokenize("Hello"))          # still usable


def test_adapter_is_attached(tmp_path, smollm2_path):
    gguf = pytest.importorskip("gguf")
    from gguf_fixtures import random_lora, tiny_weights, write_lora, write_tiny_model
    n_vocab = len(gguf.GGUFReader(smollm2_path).fields["tokenizer.ggml.tokens"].data)
    weights = tiny_weights(n_vocab)
    base, adapter = str(tmp_path / "tiny.gguf"), str(tmp_path / "tiny-lora.gguf")
    write_tiny_model(base, smollm2_path, weights)
    write_lora(adapter, random_lora(weights, ["blk.0.attn_q.weight"], 4), 8.0)
    with load(base, n_ctx=64, context_options=CTX, lora=[(adapter, 0.5)]) as lm:
        (a, scale), = lm.loras
        assert a.path == adapter and scale == 0.5
        assert lm.ctx.loras == [(a, 0.5)]
        # a second context on the same model borrows the adapter
        with load(lm.model, n_ctx=64, context_options=CTX, lora=[(a, 0.25)]) as other:
            assert other.loras == [(a, 0.25)]
        assert not a.closed
    assert a.closed


# -- Llama, the server's runner and embeddings, the drafter --------------------------------------

def test_llama_failure_closes_the_model(smollm2_path, opened):
    with pytest.raises(pyllamacy.AdapterLoadError):
        pyllamacy.Llama(smollm2_path, n_ctx=64, n_threads=1, verbose=False,
                        lora_path=smollm2_path)
    assert _kinds(opened) == ["Context", "Model"] and all(o.closed for o in opened)


def test_llama_close_frees_what_it_loaded(smollm2_path, opened):
    llm = pyllamacy.Llama(smollm2_path, n_ctx=64, n_threads=1, verbose=False)
    assert llm.n_batch == 64 and llm.n_ubatch == 64
    llm.close()
    assert _kinds(opened) == ["Context", "Model"] and all(o.closed for o in opened)


def test_draft_model_uses_the_loader(smollm2_path, opened):
    from pyllamacy.llama_speculative import LlamaDraftModel
    d = LlamaDraftModel(smollm2_path, n_ctx=64, n_threads=1)
    assert d.ctx.n_batch == 64 and d.ctx.n_threads == 1
    d.close()
    assert _kinds(opened) == ["Context", "Model"] and all(o.closed for o in opened)


def test_runner_failure_closes_the_model(smollm2_path, opened, monkeypatch):
    pytest.importorskip("pydantic")
    from pyllamacy.server import runner as runner_mod
    from pyllamacy.server.settings import ModelSettings

    def broken_engine(*a, **k):
        raise RuntimeError("no engine today")
    monkeypatch.setattr(runner_mod, "Engine", broken_engine)
    with pytest.raises(RuntimeError, match="no engine"):
        runner_mod.EngineRunner(ModelSettings(model=smollm2_path, n_ctx=64, n_threads=1,
                                              n_parallel=2))
    assert _kinds(opened) == ["Context", "Model"] and all(o.closed for o in opened)


def test_embeddings_share_the_runners_weights(smollm2_path, opened):
    pytest.importorskip("pydantic")
    from pyllamacy.server.runner import EngineRunner
    from pyllamacy.server.settings import ModelSettings
    from pyllamacy.server.state import EmbeddingWorker

    r = EngineRunner(ModelSettings(model=smollm2_path, n_ctx=64, n_threads=1,
                                   n_threads_batch=1, n_parallel=2))
    try:
        w = EmbeddingWorker(r)
        vecs, total = w.embed(["hello", "a longer text"])
        assert w.loaded.model is r.model                 # no second copy of the weights
        assert w.loaded.ctx.pooling_type == "mean"       # a generative model: mean pooling
        assert len(vecs) == 2 and len(vecs[0]) == r.model.n_embd
        assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in vecs)
        with pyllamacy.Llama(smollm2_path, n_ctx=64, n_threads=1, n_threads_batch=1,
                             embedding=True, pooling_type="mean", verbose=False) as llm:
            want, want_total = llm.embed(["hello", "a longer text"], normalize=True,
                                         return_count=True)
        assert total == want_total
        np.testing.assert_allclose(vecs, want, atol=1e-5)
        w.close()
        assert w.loaded is None and not r.model.closed
    finally:
        r.close()
    assert sum(type(o).__name__ == "Model" for o in opened) == 2    # the runner's and Llama's


# -- one defaults table --------------------------------------------------------------------------

def _default(func, name):
    return inspect.signature(func).parameters[name].default


def test_seed_sentinel_is_spelled_once():
    from pyllamacy.llama import LLAMA_DEFAULT_SEED
    assert LLAMA_DEFAULT_SEED == defaults.SEED_RANDOM == pyllamacy._llama.DEFAULT_SEED
    assert pyllamacy.LLAMA_DEFAULT_SEED == defaults.SEED_RANDOM
    for seed in (None, -1, defaults.SEED_RANDOM):
        assert defaults.normalize_seed(seed) == defaults.SEED_RANDOM
    assert defaults.normalize_seed(7) == 7 and defaults.normalize_seed(2 ** 32 + 5) == 5


def test_the_layers_agree_on_defaults():
    from pyllamacy.cli import build_parser
    from pyllamacy.llama import Llama
    from pyllamacy.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

    init = Llama.__init__
    assert _default(init, "n_gpu_layers") == defaults.N_GPU_LAYERS == 0   # llama-cpp-python's
    assert _default(init, "n_ctx") == defaults.N_CTX
    assert _default(init, "n_batch") == defaults.N_BATCH
    assert _default(init, "n_ubatch") == defaults.N_UBATCH
    assert _default(init, "last_n_tokens_size") == defaults.LAST_N_TOKENS_SIZE
    assert _default(init, "seed") == defaults.SEED_RANDOM
    assert _default(init, "lora_scale") == defaults.LORA_SCALE
    assert _default(LlamaDraftModel.__init__, "n_gpu_layers") == defaults.N_GPU_LAYERS
    assert _default(LlamaDraftModel.__init__, "n_ctx") == defaults.DRAFT_N_CTX
    assert _default(LlamaPromptLookupDecoding.__init__, "num_pred_tokens") == \
        defaults.PROMPT_LOOKUP_NUM_PRED_TOKENS
    assert _default(load, "n_gpu_layers") == defaults.N_GPU_LAYERS

    args = build_parser().parse_args(["complete", "x"])
    assert args.ngl == defaults.N_GPU_LAYERS and args.n_ctx == defaults.N_CTX_SLOT
    assert args.temperature == defaults.TEMPERATURE and args.top_k == defaults.TOP_K
    assert args.lora_scale == defaults.LORA_SCALE

    pytest.importorskip("pydantic")
    from pyllamacy.server.settings import ModelSettings
    from pyllamacy.server.types import CompletionRequest
    ms = ModelSettings(model="m.gguf")
    # the server fits by default, as llama-server (docs/MEMORY.md): no layers given -> "auto";
    # fit off -> the library default
    assert ms.n_gpu_layers is None and ms.offload() == (defaults.N_GPU_LAYERS_AUTO, True)
    assert ModelSettings(model="m.gguf", fit=False).offload() == (defaults.N_GPU_LAYERS, False)
    assert ms.seed == defaults.SEED_RANDOM
    assert (ms.n_ctx, ms.n_batch, ms.n_ubatch) == (defaults.N_CTX_SLOT, defaults.N_BATCH,
                                                   defaults.N_UBATCH)
    assert ms.last_n_tokens_size == defaults.LAST_N_TOKENS_SIZE
    req = CompletionRequest()
    assert (req.max_tokens, req.temperature, req.top_p, req.top_k, req.min_p) == (
        defaults.MAX_TOKENS, defaults.TEMPERATURE, defaults.TOP_P, defaults.TOP_K, defaults.MIN_P)


def test_model_keeps_llama_cpps_default():
    # the core mirrors llama.cpp (-1: every layer); the high-level layers default to 0
    assert defaults.N_GPU_LAYERS_ALL == -1
    assert "n_gpu_layers=-1" in pyllamacy.Model.__doc__
