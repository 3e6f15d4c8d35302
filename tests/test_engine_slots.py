"""Engine.slot_save / slot_restore / slot_erase: a slot's cache to a file and back.

A restored slot continues exactly as if it had never been saved: a request whose prompt starts
with the saved tokens reuses them (no prompt evaluation for them) and its greedy tokens equal
those of an Engine that never saved anything. Damaged, truncated, foreign or wrong-version
files are refused with StateError before llama.cpp sees them, and the Engine goes on."""
from __future__ import annotations

import pytest

import pyllamacy
from pyllamacy import Context, Engine, Sampler, StateError

PROMPT = "The three primary colors are red, yellow and"


@pytest.fixture(scope="module")
def model(smollm2_path):
    m = pyllamacy.Model(smollm2_path, n_gpu_layers=0)
    yield m
    m.close()


def _run(eng, model, toks, n):
    rid = eng.submit(toks, Sampler(model).greedy(), max_tokens=n)
    out = []
    while True:
        for r, tok, fin in eng.step():
            assert r == rid
            if tok >= 0:
                out.append(tok)
            if fin is not None:
                return out


def test_restored_slot_continues_exactly(model, tmp_path):
    prompt = model.tokenize(PROMPT)
    with Context(model, n_ctx=512, n_seq_max=2) as ctx, Engine(ctx) as eng:
        first = _run(eng, model, prompt, 8)
        info = eng.slot_info()
        slot = max(info, key=lambda s: s["cached_tokens"])["slot"]
        n_cached = info[slot]["cached_tokens"]
        assert n_cached >= len(prompt)
        n_tok, n_bytes = eng.slot_save(slot, tmp_path / "a.slot")
        assert n_tok == n_cached and n_bytes == (tmp_path / "a.slot").stat().st_size
        # what a continuation gives when the cache is still there
        follow = prompt + first + model.tokenize(" and then", add_special=False)
        reused0 = eng.n_reused_tokens
        ref = _run(eng, model, follow, 12)
        assert eng.n_reused_tokens - reused0 > 0
    # a new Engine (a restarted server): restore into the other slot, then the same request
    with Context(model, n_ctx=512, n_seq_max=2) as ctx, Engine(ctx) as eng:
        other = 1 - slot
        assert eng.slot_restore(other, tmp_path / "a.slot") == (n_tok, n_bytes)
        assert eng.slot_info()[other]["cached_tokens"] == n_tok
        reused0 = eng.n_reused_tokens
        assert _run(eng, model, follow, 12) == ref
        assert eng.n_reused_tokens - reused0 == min(n_tok, len(follow) - 1)
        # erase: nothing is reused afterwards
        for s in range(2):
            eng.slot_erase(s)
        assert all(s["cached_tokens"] == 0 for s in eng.slot_info())
        reused0 = eng.n_reused_tokens
        assert _run(eng, model, follow, 12) == ref
        assert eng.n_reused_tokens == reused0


def test_bad_files_are_refused(model, smollm2_path, tmp_path):
    prompt = model.tokenize(PROMPT)
    with Context(model, n_ctx=512, n_seq_max=2) as ctx, Engine(ctx) as eng:
        _run(eng, model, prompt, 4)
        slot = max(eng.slot_info(), key=lambda s: s["cached_tokens"])["slot"]
        good = tmp_path / "good.slot"
        eng.slot_save(slot, good)
        data = good.read_bytes()
        cases = {
            "truncated": data[:len(data) // 2],
            "empty": b"",
            "flipped": data[:100] + bytes([data[100] ^ 0xFF]) + data[101:],
            "magic": b"GGUF" + data[4:],
            "garbage": b"\x00" * 64,
        }
        # another version, with a valid CRC: refused for its version
        import zlib
        body = data[:8] + (99).to_bytes(4, "little") + data[12:-4]
        cases["version"] = body + (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "little")
        for name, blob in cases.items():
            p = tmp_path / f"{name}.slot"
            p.write_bytes(blob)
            with pytest.raises(StateError):
                eng.slot_restore(0, p)
        with pytest.raises(FileNotFoundError):
            eng.slot_restore(0, tmp_path / "missing.slot")
        with pytest.raises(ValueError, match="slot 7"):
            eng.slot_save(7, tmp_path / "x.slot")
        # the Engine still works and the good file still restores
        assert eng.slot_restore(0, good)[0] > 0
        assert len(_run(eng, model, prompt, 4)) == 4


def test_foreign_model_file_is_refused(model, tmp_path, smollm2_path):
    from gguf_fixtures import tiny_weights, write_tiny_model
    import gguf
    n_vocab = len(gguf.GGUFReader(smollm2_path).fields["tokenizer.ggml.tokens"].data)
    path = tmp_path / "tiny.gguf"
    write_tiny_model(str(path), smollm2_path, tiny_weights(n_vocab))
    prompt = model.tokenize(PROMPT)
    with Context(model, n_ctx=512, n_seq_max=1) as ctx, Engine(ctx) as eng:
        _run(eng, model, prompt, 4)
        eng.slot_save(0, tmp_path / "smol.slot")
    with pyllamacy.Model(str(path), n_gpu_layers=0) as tiny, \
            Context(tiny, n_ctx=512, n_seq_max=1) as ctx, Engine(ctx) as eng:
        with pytest.raises(StateError, match="another model"):
            eng.slot_restore(0, tmp_path / "smol.slot")
        assert len(_run(eng, tiny, prompt, 3)) == 3


def test_busy_slot_cannot_be_saved(model, tmp_path):
    with Context(model, n_ctx=512, n_seq_max=1) as ctx, Engine(ctx) as eng:
        eng.submit(model.tokenize(PROMPT), Sampler(model).greedy(), max_tokens=50)
        eng.step()
        with pytest.raises(pyllamacy.BusyError):
            eng.slot_save(0, tmp_path / "busy.slot")
        with pytest.raises(pyllamacy.BusyError):
            eng.slot_erase(0)
