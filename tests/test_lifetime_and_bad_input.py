"""Bad input never crashes the interpreter; lifetimes are explicit; Ctrl-C works."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyllamacy
from pyllamacy import Context, Model, Sampler


# ------------------------------------------------------------------ bad model files


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        Model(tmp_path / "nope.gguf")


def test_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        Model(tmp_path)


def test_wrong_type():
    with pytest.raises(TypeError):
        Model(123)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    with pytest.raises(pyllamacy.ModelLoadError, match="empty") as ei:
        Model(p)
    assert isinstance(ei.value, ValueError)


def test_not_gguf(tmp_path):
    p = tmp_path / "text.gguf"
    p.write_text("this is not a model, just some text that is long enough " * 10)
    with pytest.raises(pyllamacy.ModelLoadError, match="not a GGUF"):
        Model(p)


def test_wrong_version(tmp_path, smollm2_path):
    data = bytearray(open(smollm2_path, "rb").read(4096))
    data[4:8] = (99).to_bytes(4, "little")
    p = tmp_path / "v99.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(pyllamacy.ModelLoadError, match="version 99"):
        Model(p)


@pytest.mark.parametrize("keep", [24, 4096, 1_000_000, 50_000_000])
def test_truncated(tmp_path, smollm2_path, keep):
    with open(smollm2_path, "rb") as f:
        data = f.read(keep)
    p = tmp_path / f"trunc{keep}.gguf"
    p.write_bytes(data)
    with pytest.raises(pyllamacy.ModelLoadError) as ei:
        Model(p)
    msg = str(ei.value)
    assert str(p) in msg and len(msg) > len(str(p)) + 30   # a reason, not just the path


def test_corrupt_header_counts(tmp_path, smollm2_path):
    data = bytearray(open(smollm2_path, "rb").read(1 << 16))
    data[16:24] = (1 << 60).to_bytes(8, "little")           # absurd number of keys
    p = tmp_path / "corrupt.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(pyllamacy.ModelLoadError, match="corrupt|truncated"):
        Model(p)


def test_bad_model_params(smollm2_path):
    with pytest.raises(ValueError):
        Model(smollm2_path, split_mode="diagonal")
    with pytest.raises(ValueError):
        Model(smollm2_path, tensor_split=[float("nan")])
    with pytest.raises(TypeError):
        Model(smollm2_path, kv_overrides={"general.name": object()})


def test_bad_context_params(model):
    with pytest.raises(ValueError):
        Context(model, n_batch=0)
    with pytest.raises(ValueError):
        Context(model, n_threads=0)
    with pytest.raises(ValueError):
        Context(model, flash_attn="sometimes")
    with pytest.raises(ValueError):
        Context(model, type_k="q9")
    with pytest.raises(ValueError):
        Context(model, n_seq_max=100000)


def test_detokenize_bad_tokens(model):
    with pytest.raises(IndexError):
        model.detokenize([0, model.n_vocab + 5])
    with pytest.raises(IndexError):
        model.token_to_piece(-3)
    with pytest.raises(TypeError):
        model.detokenize([1.5])
    with pytest.raises(TypeError):
        model.tokenize(42)


def test_vocab_only_model_cannot_run(smollm2_path):
    with Model(smollm2_path, vocab_only=True) as m:
        assert m.tokenize("hi", add_special=False)
        with pytest.raises(ValueError, match="vocab_only"):
            Context(m)


# ------------------------------------------------------------------ lifetimes


def test_close_idempotent_and_use_after_close(smollm2_path):
    m = Model(smollm2_path)
    ctx = Context(m, n_ctx=64)
    s = Sampler(m).greedy()
    for obj in (s, ctx):
        obj.close()
        obj.close()
        assert obj.closed
    with pytest.raises(pyllamacy.ClosedError):
        ctx.eval([1])
    with pytest.raises(pyllamacy.ClosedError):
        ctx.logits()
    with pytest.raises(pyllamacy.ClosedError):
        s.sample(ctx)
    m.close()
    m.close()
    with pytest.raises(pyllamacy.ClosedError):
        m.tokenize("x")
    with pytest.raises(pyllamacy.ClosedError):
        Context(m)
    with pytest.raises(ValueError):          # ClosedError is a ValueError, like closed files
        m.n_vocab


def test_context_keeps_model_alive(smollm2_path):
    m = Model(smollm2_path)
    ctx = Context(m, n_ctx=64)
    del m
    gc.collect()
    ctx.eval(ctx.model.tokenize("hello"))
    # closing the model while a context lives defers the free until the context closes
    ctx.model.close()
    assert ctx.model.closed
    ctx.eval([1])  # the context still works: the weights are alive until it closes
    ctx.close()


def test_context_managers(smollm2_path):
    with Model(smollm2_path) as m, Context(m, n_ctx=64) as ctx, Sampler(m) as s:
        s.greedy()
        ctx.eval(m.tokenize("hi"))
        s.sample(ctx)
    assert m.closed and ctx.closed and s.closed


def test_paused_generation_invalidated_by_eval(model):
    with Context(model, n_ctx=128) as ctx:
        ctx.eval(model.tokenize("hello there"))
        g = ctx.generate(Sampler(model).greedy(), max_tokens=10)
        next(g)
        ctx.eval(model.tokenize(" again"))
        with pytest.raises(pyllamacy.LlamaError, match="changed"):
            next(g)


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _leak_check(cycle, warmup, n, limit_mb):
    for _ in range(warmup):
        cycle()
    gc.collect()
    before = _rss_kb()
    for _ in range(n):
        cycle()
    gc.collect()
    grown_mb = (_rss_kb() - before) / 1024
    assert grown_mb < limit_mb, f"RSS grew by {grown_mb:.1f} MB over {n} cycles"


def test_context_create_close_cycles_do_not_leak(model):
    def cycle():
        with Context(model, n_ctx=128, n_batch=32) as ctx, Sampler(model) as s:
            ctx.eval(model.tokenize("hello"))
            s.top_k(10).greedy().sample(ctx)
            ctx.state_get()

    _leak_check(cycle, 20, 200, 8)


def test_model_load_close_cycles_do_not_leak(smollm2_path):
    def cycle():
        with Model(smollm2_path) as m, Context(m, n_ctx=128, n_batch=32) as ctx:
            ctx.eval(m.tokenize("hello"))

    # a model load repacks the weights (about 0.2 s each here): fewer cycles
    _leak_check(cycle, 10, 40, 8)


# ------------------------------------------------------------------ Ctrl-C

CHILD = textwrap.dedent("""
    import sys, time
    import pyllamacy
    from pyllamacy import Model, Context, Sampler
    m = Model(sys.argv[1])
    ctx = Context(m, n_ctx=8192, n_batch=8192, n_ubatch=512, n_threads=1)
    mode = sys.argv[2]
    toks = m.tokenize("word " * 6000)
    print("ready", flush=True)
    t0 = time.perf_counter()
    try:
        if mode == "prompt":
            ctx.eval(toks)
        else:
            ctx.eval(m.tokenize("Tell me a story."))
            bias = {t: float("-inf") for t in m.eog_tokens()}
            ctx.generate(Sampler(m).logit_bias(bias).greedy(), max_tokens=100000).run()
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    # the context must still work
    ctx.seq_rm(0, 0, -1)
    ctx.eval(m.tokenize("The capital of France is"))
    out = ctx.generate(Sampler(m).greedy(), max_tokens=4).run()
    print("usable", len(out), flush=True)
""")


@pytest.mark.parametrize("mode", ["prompt", "generate"])
def test_ctrl_c_stops_and_context_stays_usable(smollm2_path, tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    p = subprocess.Popen([sys.executable, str(script), smollm2_path, mode],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        t0 = time.perf_counter()
        p.send_signal(signal.SIGINT)
        line = p.stdout.readline().strip()
        latency = time.perf_counter() - t0
        assert line == "interrupted", (line, p.stderr.read()[-2000:])
        # generous bound: this is a hang check, not a benchmark (typical: a few ms)
        assert latency < 2.0
        assert p.stdout.readline().startswith("usable")
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
