"""The rest of llama-cpp-python's Llama surface: from_pretrained (Hugging Face Hub, here from a
local cache with the Hub offline), set_cache with the prompt caches, eval_logits,
create_chat_completion_openai_v1."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pyllamacy import Llama
from pyllamacy.llama_cache import LlamaDiskCache, LlamaRAMCache
from pyllamacy.llama_types import LlamaState

FAST = dict(n_threads=1, verbose=False)


# -- from_pretrained ----------------------------------------------------------------------------

def _fake_hub_cache(root, smollm2_path, repo="pyllamacy-test/smol-GGUF", extra=()):
    """The folder layout huggingface_hub keeps downloads in (models--owner--name/refs/main ->
    snapshots/<commit>/<files>), with the real model linked in."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    d = root / ("models--" + repo.replace("/", "--"))
    snap = d / "snapshots" / commit
    snap.mkdir(parents=True)
    (d / "refs").mkdir()
    (d / "refs" / "main").write_text(commit)
    os.symlink(smollm2_path, snap / "SmolLM2-135M-Instruct.Q4_1.gguf")
    (snap / "README.md").write_text("test repo\n")
    for name in extra:
        os.symlink(smollm2_path, snap / name)
    return repo


HUB_SCRIPT = textwrap.dedent('''
    import json, sys
    from pyllamacy import Llama
    from pyllamacy.hub import HubFileNotFoundError
    cache, repo = sys.argv[1], sys.argv[2]
    out = {}
    for name in ("*Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"):
        with Llama.from_pretrained(repo, name, cache_dir=cache, n_ctx=64, n_threads=1,
                                   verbose=False) as llm:
            out[name] = [llm.model_path,
                         llm("The capital of France is", max_tokens=4,
                             temperature=0)["choices"][0]["text"]]
    from pyllamacy.chat_multimodal import MultimodalChatHandler
    out["handler"] = MultimodalChatHandler.from_pretrained(repo, "SmolLM2-*.gguf",
                                                           cache_dir=cache).clip_model_path
    for args in ((repo, "*Q8_0.gguf"), (repo, "*.gguf"), ("not a repo", "x.gguf"),
                 (repo, None), ("pyllamacy-test/not-cached", "*.gguf")):
        try:
            Llama.from_pretrained(*args, cache_dir=cache, n_ctx=64, verbose=False)
            out[repr(args)] = "no error"
        except Exception as e:
            out[repr(args)] = [type(e).__name__, isinstance(e, ValueError), str(e)[:300]]
    print(json.dumps(out))
''')


@pytest.mark.optional_deps
def test_from_pretrained_offline_cache(tmp_path, smollm2_path):
    pytest.importorskip("huggingface_hub")
    repo = _fake_hub_cache(tmp_path, os.path.abspath(smollm2_path))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    r = subprocess.run([sys.executable, "-c", HUB_SCRIPT, str(tmp_path), repo], env=env,
                       capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ref = Llama(smollm2_path, n_ctx=64, **FAST)
    try:
        want = ref("The capital of France is", max_tokens=4, temperature=0)["choices"][0]["text"]
    finally:
        ref.close()
    for name in ("*Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"):
        path, text = out[name]
        assert path.startswith(str(tmp_path)) and path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
        assert text == want
    assert out["handler"] == out["*Q4_1.gguf"][0]
    kind, is_value_error, msg = out[repr((repo, "*Q8_0.gguf"))]
    assert kind == "HubFileNotFoundError" and is_value_error
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in msg         # lists what there is
    # a second GGUF makes "*.gguf" ambiguous
    repo2 = _fake_hub_cache(tmp_path, os.path.abspath(smollm2_path),
                            repo="pyllamacy-test/two-GGUF", extra=("other.Q8_0.gguf",))
    r = subprocess.run([sys.executable, "-c", HUB_SCRIPT, str(tmp_path), repo2], env=env,
                       capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    out2 = json.loads(r.stdout.strip().splitlines()[-1])
    kind, _, msg = out2[repr((repo2, "*.gguf"))]
    assert kind == "HubFileNotFoundError" and "2 files" in msg
    assert out[repr(("not a repo", "x.gguf"))][0] == "ValueError"
    assert out[repr((repo, None))][0] == "ValueError"
    assert out[repr(("pyllamacy-test/not-cached", "*.gguf"))] != "no error"


# -- prompt caches --------------------------------------------------------------------------------

def _state(tokens, size=100):
    ids = np.array(tokens, dtype=np.intc)
    return LlamaState(input_ids=ids, scores=np.zeros((0, 1), np.float32), n_tokens=len(ids),
                      llama_state=b"x" * size, llama_state_size=size, seed=0)


def test_ram_cache_lookup_and_eviction():
    c = LlamaRAMCache(capacity_bytes=250)
    a, b = _state([1, 2, 3]), _state([1, 2, 9, 9])
    c[[1, 2, 3]] = a
    c[(1, 2, 9, 9)] = b
    assert c[[1, 2, 3, 4]] is a and c[[1, 2, 9]] is b and c[[1]] in (a, b)
    assert [1, 2, 3] in c and [5] not in c
    with pytest.raises(KeyError):
        c[[5, 6]]
    assert c.cache_size == 200 and len(c) == 2
    # used last: a (by c[[1]], the first of the equal one-token matches), b before it
    c[[7]] = _state([7])                        # over capacity: the least recently used goes
    assert len(c) == 2 and c.cache_size == 200
    assert c[[1, 2, 9, 9]] is a                 # b is gone; a shares [1, 2]
    with pytest.raises(TypeError):
        c[[1]] = "not a state"
    with pytest.raises(ValueError):
        LlamaRAMCache(capacity_bytes=-1)


@pytest.mark.optional_deps
def test_disk_cache_survives_the_instance(tmp_path):
    pytest.importorskip("diskcache")
    c = LlamaDiskCache(cache_dir=str(tmp_path / "dc"), capacity_bytes=1 << 20)
    c[[4, 5, 6]] = _state([4, 5, 6])
    c.close()
    c2 = LlamaDiskCache(cache_dir=str(tmp_path / "dc"), capacity_bytes=1 << 20)
    got = c2[[4, 5, 6, 7]]
    assert list(got.input_ids) == [4, 5, 6] and got.llama_state == b"x" * 100
    with pytest.raises(KeyError):
        c2[[9]]
    c2.close()
    with LlamaDiskCache(cache_dir=str(tmp_path / "dc")) as c3:
        assert len(c3) == 1


def _count_evals(llm):
    counts = []
    orig = llm._eval

    def counting(tokens, on_logits=None):
        counts.append(len(tokens))
        return orig(tokens, on_logits=on_logits)
    llm._eval = counting
    return counts


@pytest.mark.parametrize("kind", ["ram", pytest.param("disk", marks=pytest.mark.optional_deps)])
def test_set_cache_restores_an_earlier_prompt(smollm2_path, tmp_path, kind):
    if kind == "disk":
        pytest.importorskip("diskcache")
    doc_a = "Alice's notes. " + "The garden has roses, tulips and ferns along the wall. " * 6
    doc_b = "Bob's notes. " + "The workshop holds saws, drills and clamps on a bench. " * 6
    q = " Question: what is there? Answer:"
    with Llama(smollm2_path, n_ctx=512, **FAST) as ref:
        want = ref(doc_a + q, max_tokens=8, temperature=0)["choices"][0]["text"]
    with Llama(smollm2_path, n_ctx=512, **FAST) as llm:
        cache = LlamaRAMCache() if kind == "ram" else LlamaDiskCache(str(tmp_path / "c"))
        llm.set_cache(cache)
        counts = _count_evals(llm)
        llm(doc_a + q, max_tokens=8, temperature=0)
        llm(doc_b + q, max_tokens=8, temperature=0)          # the context now holds B
        n_a = len(llm.tokenize((doc_a + q).encode()))
        counts.clear()
        got = llm(doc_a + q, max_tokens=8, temperature=0)["choices"][0]["text"]
        assert got == want
        assert sum(counts[:1]) <= 2, counts                  # A came back from the cache
        assert len(cache) == 2
        llm.set_cache(None)
        counts.clear()
        llm(doc_b + q, max_tokens=8, temperature=0)
        assert counts[0] > n_a // 2                          # no cache: B evaluated again
        with pytest.raises(TypeError):
            llm.set_cache({})
        if kind == "disk":
            cache.close()


# -- eval_logits, create_chat_completion_openai_v1 ----------------------------------------------

def test_eval_logits(smollm2_path):
    with Llama(smollm2_path, n_ctx=64, logits_all=True, **FAST) as llm:
        toks = llm.tokenize(b"Hello there, friend")
        llm.eval(toks)
        rows = llm.eval_logits
        assert len(rows) == len(toks) and len(rows[0]) == llm.n_vocab()
        assert np.allclose(rows[-1], llm.scores[len(toks) - 1])
    with Llama(smollm2_path, n_ctx=64, **FAST) as llm:
        llm.eval(llm.tokenize(b"Hello"))
        assert len(llm.eval_logits) == 0


@pytest.mark.optional_deps
def test_create_chat_completion_openai_v1(smollm2_path):
    pytest.importorskip("openai")
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    msgs = [{"role": "user", "content": "Say hello."}]
    with Llama(smollm2_path, n_ctx=256, **FAST) as llm:
        r = llm.create_chat_completion_openai_v1(messages=msgs, max_tokens=6, temperature=0)
        assert isinstance(r, ChatCompletion)
        assert isinstance(r.choices[0].message.content, str) and r.usage.completion_tokens > 0
        chunks = list(llm.create_chat_completion_openai_v1(messages=msgs, max_tokens=6,
                                                           temperature=0, stream=True))
        assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == r.choices[0].message.content
        with pytest.raises(TypeError):
            llm.create_chat_completion_openai_v1(messages=msgs, stream="yes")
