"""The Cython core on the real model: generation, sampling, state, embeddings, GIL, backends."""
from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest

import pyllamacy
from pyllamacy import Context, Model, Sampler

PROMPT = "The capital of France is"


def greedy(model, **kw):
    return Sampler(model, **kw).greedy()


def test_backend_loaded_and_not_amx():
    assert pyllamacy.cpu_variant() not in (None, "sapphirerapids")
    names = [b["name"] for b in pyllamacy.backends()]
    assert "CPU" in names
    cpu = next(b for b in pyllamacy.backends() if b["name"] == "CPU")
    assert cpu["devices"] and cpu["devices"][0]["type"] == "cpu"
    assert "CPU" in pyllamacy.system_info()
    report = pyllamacy.backend_report()
    assert any(v["status"] == "loaded" for v in report.values())


def test_model_properties(model):
    assert model.n_vocab == 49152
    assert model.n_embd == 576
    assert model.n_layer == 30
    assert model.n_ctx_train == 8192
    assert "llama" in model.desc.lower()
    assert model.metadata["general.architecture"] == "llama"
    assert "im_start" in model.chat_template()
    assert model.is_eog(model.token_eos())
    assert model.eog_tokens()


def test_tokenize_roundtrip(model):
    text = "Hello world! Ünïcödé ✓ 日本語"
    toks = model.tokenize(text, add_special=False)
    assert toks and all(isinstance(t, int) for t in toks)
    assert model.detokenize(toks).decode() == text
    assert b"".join(model.token_to_piece(t) for t in toks).decode() == text
    assert model.tokenize(b"abc", add_special=False) == model.tokenize("abc", add_special=False)
    assert model.tokenize("", add_special=False) == []
    special = model.tokenize("<|im_start|>user", add_special=False, parse_special=True)
    assert special[0] == 1  # <|im_start|>


def _llama_simple(bin_dir, model_path, prompt, n_predict):
    r = subprocess.run([str(bin_dir / "llama-simple"), "-m", model_path, "-n", str(n_predict),
                        prompt], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return r.stdout


@pytest.mark.parametrize("prompt", [PROMPT, "Once upon a time, in a small village,",
                                    "def fibonacci(n):"])
def test_greedy_matches_llama_simple(model, smollm2_path, llama_bin_dir, prompt):
    n_predict = 32
    expected = _llama_simple(llama_bin_dir, smollm2_path, prompt, n_predict)
    toks = model.tokenize(prompt, add_special=True, parse_special=True)
    # the same context settings as llama-simple
    with Context(model, n_ctx=len(toks) + n_predict - 1, n_batch=len(toks), n_threads=4) as ctx:
        ctx.eval(toks)
        with greedy(model) as s:
            gen = ctx.generate(s, max_tokens=n_predict)
            out = gen.run()
    pieces = b"".join(model.token_to_piece(t, special=True) for t in toks + out)
    assert pieces + b"\n" == expected
    assert gen.finish_reason in ("length", "stop")


def test_greedy_deterministic_and_stream_equals_run(model):
    toks = model.tokenize(PROMPT)
    results = []
    for mode in ("run", "run", "iter"):
        with Context(model, n_ctx=256) as ctx, greedy(model) as s:
            ctx.eval(toks)
            g = ctx.generate(s, max_tokens=24)
            results.append(g.run() if mode == "run" else list(g))
    assert results[0] == results[1] == results[2]
    assert len(results[0]) > 0


def test_seeded_sampling_reproducible(model):
    toks = model.tokenize("Write a short poem about the sea.")

    def sample(seed):
        with Context(model, n_ctx=256) as ctx:
            ctx.eval(toks)
            s = Sampler(model).top_k(40).top_p(0.95).temp(1.0).dist(seed)
            return ctx.generate(s, max_tokens=24).run()

    a, b = sample(1234), sample(1234)
    assert a == b
    others = [sample(s) for s in (1, 2, 3)]
    assert any(o != a for o in others)


def test_stop_conditions(model):
    toks = model.tokenize("Count: 1, 2, 3, 4,")
    with Context(model, n_ctx=256) as ctx:
        ctx.eval(toks)
        g = ctx.generate(greedy(model), max_tokens=5)
        out = g.run()
        assert len(out) == 5 and g.finish_reason == "length"
        # stop string: the token completing it is returned and generation ends
        ctx.seq_rm(0, 0, -1)
        ctx.eval(toks)
        g = ctx.generate(greedy(model), max_tokens=64, stop_strings=[","])
        out = g.run()
        text = model.detokenize(out)
        assert g.finish_reason == "stop" and b"," in text and len(out) < 64
        # stop token sequence
        ctx.seq_rm(0, 0, -1)
        ctx.eval(toks)
        first = ctx.generate(greedy(model), max_tokens=3).run()
        ctx.seq_rm(0, 0, -1)
        ctx.eval(toks)
        g = ctx.generate(greedy(model), max_tokens=64, stop_sequences=[first[:2]])
        assert g.run() == first[:2] and g.finish_reason == "stop"


def test_eval_overflow_and_bad_tokens(model):
    with Context(model, n_ctx=64) as ctx:
        n_ctx = ctx.n_ctx_seq                   # llama.cpp may round the size up
        n = n_ctx + 36
        with pytest.raises(pyllamacy.ContextOverflowError, match=f"{n} tokens.*{n_ctx}") as ei:
            ctx.eval([1] * n)
        assert isinstance(ei.value, ValueError)
        with pytest.raises(IndexError):
            ctx.eval([model.n_vocab])
        with pytest.raises(IndexError):
            ctx.eval([-1])
        with pytest.raises(TypeError):
            ctx.eval("text")
        with pytest.raises(ValueError):
            ctx.eval([])
        assert ctx.seq_pos_max(0) == -1          # nothing was decoded
        ctx.eval(model.tokenize(PROMPT))         # still usable
        assert ctx.seq_pos_max(0) >= 0


def test_logits_numpy(model):
    with Context(model, n_ctx=128) as ctx:
        toks = model.tokenize(PROMPT)
        ctx.eval(toks, logits="all")
        last = ctx.logits()
        assert last.dtype == np.float32 and last.shape == (model.n_vocab,)
        assert np.array_equal(ctx.logits(len(toks) - 1), last)
        assert np.isfinite(last).all()
        with pytest.raises(IndexError):
            ctx.logits(10_000)


def test_state_roundtrip(model, tmp_path):
    toks = model.tokenize(PROMPT)
    with Context(model, n_ctx=256) as ctx:
        ctx.eval(toks)
        state = ctx.state_get()
        a = ctx.generate(greedy(model), max_tokens=12).run()
        ctx.state_set(state)
        b = ctx.generate(greedy(model), max_tokens=12).run()
        assert a == b
        ctx.state_set(state)
        ctx.state_save_file(tmp_path / "s.bin", toks)
    with Context(model, n_ctx=256) as ref:
        ref.eval(toks[:-1])
        ref.eval(toks[-1:])
        expected = ref.generate(greedy(model), max_tokens=12).run()
    with Context(model, n_ctx=256) as ctx2:
        assert ctx2.state_load_file(tmp_path / "s.bin") == toks
        with pytest.raises(pyllamacy.LlamaError, match="eval"):
            ctx2.generate(greedy(model))        # a session file holds no logits
        ctx2.seq_rm(0, len(toks) - 1, -1)
        ctx2.eval(toks[-1:])
        assert ctx2.generate(greedy(model), max_tokens=12).run() == expected
        with pytest.raises(pyllamacy.StateError):
            ctx2.state_set(b"garbage" * 10)
        with pytest.raises(FileNotFoundError):
            ctx2.state_load_file(tmp_path / "missing.bin")


def test_embeddings(model):
    with Context(model, n_ctx=256, embeddings=True, pooling_type="mean") as ctx:
        ctx.eval(model.tokenize("hello world"))
        e = ctx.seq_embeddings(0)
        assert e.shape == (model.n_embd,) and np.isfinite(e).all() and np.linalg.norm(e) > 0
    with Context(model, n_ctx=256, embeddings=True, pooling_type="none") as ctx:
        toks = model.tokenize("hello world")
        ctx.eval(toks, logits="all")
        assert ctx.embeddings(0).shape == (model.n_embd,)


def test_sampler_validation(model):
    s = Sampler(model)
    with pytest.raises(ValueError):
        s.top_k(-1)
    with pytest.raises(ValueError):
        s.temp(float("nan"))
    with pytest.raises(ValueError):
        s.top_p(1.5)
    with pytest.raises(ValueError):
        s.penalties(64, repeat=0.0)
    with pytest.raises(IndexError):
        s.logit_bias({model.n_vocab: 1.0})
    with pytest.raises(pyllamacy.GrammarError):
        s.grammar("root ::= undefined_rule")
    with pytest.raises(pyllamacy.GrammarError):
        s.grammar("root ::= " + "(" * 60000 + '"a"' + ")" * 60000)
    with pytest.raises(pyllamacy.SamplerError):
        Sampler().grammar('root ::= "a"')       # needs the model's vocabulary
    s.greedy()
    with pytest.raises(pyllamacy.SamplerError):
        s.top_k(5)                              # nothing may follow a selector
    s.close()
    s.close()
    with pytest.raises(pyllamacy.ClosedError):
        s.greedy()


def test_grammar_constrains_output(model):
    toks = model.tokenize("Answer yes or no: is the sky blue?")
    with Context(model, n_ctx=256) as ctx:
        ctx.eval(toks)
        s = Sampler(model).grammar('root ::= ("yes" | "no") "."').greedy()
        out = ctx.generate(s, max_tokens=10).run()
        assert model.detokenize(out).decode() in ("yes.", "no.")


def test_gil_released_during_generation(model):
    toks = model.tokenize("Tell me a long story about a dragon.")
    ctx = Context(model, n_ctx=512, n_threads=1)
    ctx.eval(toks)
    bias = {t: float("-inf") for t in model.eog_tokens()}
    gen = ctx.generate(Sampler(model).logit_bias(bias).greedy(), max_tokens=96)

    def spin(seconds):
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
        return n

    alone = spin(0.3) / 0.3
    t = threading.Thread(target=gen.run)
    t0 = time.perf_counter()
    t.start()
    n = 0
    while t.is_alive():
        n += 1
    elapsed = time.perf_counter() - t0
    t.join()
    ctx.close()
    assert len(gen.tokens) == 96
    # were the GIL held for the run, this loop would only move during the thread's start-up
    # (one switch interval, ~5 ms); released, it keeps a sizeable share even on a busy machine
    assert n / elapsed > 0.05 * alone, (n / elapsed, alone)
    assert n > alone * 0.05 * 0.5


def test_context_busy_from_two_threads(model):
    ctx = Context(model, n_ctx=2048, n_threads=1)
    toks = model.tokenize("word " * 600)
    errors = []

    def worker():
        try:
            ctx.eval(toks)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.05)
    with pytest.raises(pyllamacy.BusyError):
        while t.is_alive():
            ctx.eval([1])
            time.sleep(0.001)
    t.join()
    assert not errors
    ctx.close()


def test_cancel_from_another_thread(model):
    ctx = Context(model, n_ctx=4096, n_threads=1)
    toks = model.tokenize("word " * 3000)
    threading.Timer(0.3, ctx.cancel).start()
    with pytest.raises(pyllamacy.AbortedError):
        ctx.eval(toks)
    assert ctx.seq_pos_max(0) == -1              # rolled back
    ctx.eval(model.tokenize(PROMPT))             # usable afterwards
    ctx.close()


def test_quantize(smollm2_path, tmp_path):
    seen = []
    out = pyllamacy.quantize(smollm2_path, tmp_path / "q8.gguf", "q8_0", allow_requantize=True,
                             progress_callback=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    with Model(out) as m:
        assert "Q8_0" in m.ftype
        with Context(m, n_ctx=128) as ctx:
            ctx.eval(m.tokenize(PROMPT))
            assert len(ctx.generate(greedy(m), max_tokens=4).run()) >= 1
    with pytest.raises(ValueError):
        pyllamacy.quantize(smollm2_path, tmp_path / "x.gguf", "q9_9")
    with pytest.raises(FileNotFoundError):
        pyllamacy.quantize(tmp_path / "missing.gguf", tmp_path / "x.gguf", "q8_0")


def test_grammar_with_everything_banned_raises_instead_of_aborting(model):
    toks = model.tokenize("Say yes:")
    yes = model.tokenize("yes", add_special=False)
    with Context(model, n_ctx=256) as ctx:
        ctx.eval(toks)
        # the grammar allows only "yes"-pieces; ban all of them and every end-of-generation token
        bias = {t: float("-inf") for t in set(yes) | set(model.eog_tokens())}
        s = Sampler(model).logit_bias(bias).grammar('root ::= "yes"').greedy()
        with pytest.raises(pyllamacy.GrammarError):
            ctx.generate(s, max_tokens=4).run()


def test_accept_checks_grammar(model):
    s = Sampler(model).grammar('root ::= "yes"').greedy()
    with pytest.raises(pyllamacy.GrammarError):
        s.accept(model.token_eos())             # EOG before the grammar is complete
    with pytest.raises(pyllamacy.GrammarError):
        s.accept(model.tokenize("no", add_special=False)[0])
    s.accept(model.tokenize("yes", add_special=False)[0])


def test_seq_rm_invalidates_logits(model):
    with Context(model, n_ctx=128) as ctx:
        toks = model.tokenize(PROMPT)
        ctx.eval(toks)
        ctx.seq_rm(0, len(toks) - 1, -1)
        with pytest.raises(pyllamacy.LlamaError, match="eval"):
            ctx.generate(Sampler(model).greedy())


def test_state_checksums(model, tmp_path):
    """A state or session file with a flipped byte is refused (issue 12); states of format 1
    (no checksum) and llama.cpp's own session files (no trailer) still load."""
    toks = model.tokenize(PROMPT)
    with Context(model, n_ctx=256) as ctx:
        ctx.eval(toks)
        state = ctx.state_get()
        want = ctx.generate(greedy(model), max_tokens=6).run()
        for at in (20, len(state) // 2, len(state) - 1):
            bad = bytearray(state)
            bad[at] ^= 0x40
            with pytest.raises(pyllamacy.StateError, match="corrupt"):
                ctx.state_set(bytes(bad))
        # format 1: the same without the checksum field
        v1 = state[:4] + (1).to_bytes(4, "little") + state[8:12] + state[16:]
        ctx.state_set(v1)
        assert ctx.generate(greedy(model), max_tokens=6).run() == want
        ctx.state_set(state)
        ctx.state_save_file(tmp_path / "s.bin", toks)
    raw = (tmp_path / "s.bin").read_bytes()
    assert raw[-12:-4] == b"PYLCRC32"
    (tmp_path / "plain.bin").write_bytes(raw[:-12])       # what llama.cpp itself writes
    for at in (10, 12 + 4 * len(toks) + 100, len(raw) - 20):
        bad = bytearray(raw)
        bad[at] ^= 0x01
        (tmp_path / "bad.bin").write_bytes(bytes(bad))
        with Context(model, n_ctx=256) as ctx2, \
                pytest.raises(pyllamacy.StateError, match="corrupt"):
            ctx2.state_load_file(tmp_path / "bad.bin")
    for name in ("s.bin", "plain.bin"):
        with Context(model, n_ctx=256) as ctx2:
            assert ctx2.state_load_file(tmp_path / name) == toks
            ctx2.seq_rm(0, len(toks) - 1, -1)
            ctx2.eval(toks[-1:])
            assert ctx2.generate(greedy(model), max_tokens=6).run() == want
