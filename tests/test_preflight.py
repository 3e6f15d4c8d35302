"""Never abort (issue 12): GGUF files and kv_overrides that made llama.cpp stop the process
(GGML_ASSERT, an uncaught C++ exception) raise a Python exception instead.

Each case runs in a subprocess, so that an abort fails the test rather than killing pytest:
the child loads the file (vocab_only and full), tokenizes and decodes when the load succeeds,
and after a refused load still loads a good model and decodes with it. The files are the tiny
random llama of gguf_fixtures with SmolLM2's tokenizer, changed in one place each.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gguf
from gguf import quants

import pyllamacy
from pyllamacy import gguf_preflight

from gguf_fixtures import TINY, tiny_weights

V = gguf.GGUFValueType
PKG_ROOT = str(Path(pyllamacy.__file__).resolve().parent.parent)   # import the same tree


# -- files -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    """SmolLM2's tokenizer.* keys: {key: (value, type, sub type)}."""
    r = gguf.GGUFReader(smollm2_path)
    out = {}
    for name, field in r.fields.items():
        if name.startswith("tokenizer."):
            vtype = field.types[0]
            sub = field.types[-1] if vtype == V.ARRAY else None
            out[name] = (field.contents(), vtype, sub)
    return out


def _write(path, tokenizer, tok=None, kv=None, alignment=None, pad=0, tensor_types=None,
           n_head_kv=None):
    """The tiny model: `tok` replaces tokenizer keys, `kv` hyperparameters, `tensor_types`
    stores tensors as "f16", "q8_0" or "i32" (the F32 bytes typed I32); `pad` bytes of a string key shift the data section;
    `n_head_kv` sizes the key/value weights (and sets the key) for that many heads."""
    tokd = dict(tokenizer)
    tokd.update(tok or {})
    w = gguf.GGUFWriter(str(path), arch="llama")
    if alignment:
        w.add_custom_alignment(alignment)
    if pad:
        w.add_string("general.padding", "x" * pad)
    for name, (val, vt, sub) in tokd.items():
        w.add_key_value(name, val, vt, sub_type=sub)
    E = TINY["n_embd"]
    hp = {"llama.block_count": (TINY["n_layer"], V.UINT32),
          "llama.context_length": (256, V.UINT32),
          "llama.embedding_length": (E, V.UINT32),
          "llama.feed_forward_length": (TINY["n_ff"], V.UINT32),
          "llama.attention.head_count": (TINY["n_head"], V.UINT32),
          "llama.attention.head_count_kv": (TINY["n_head_kv"], V.UINT32),
          "llama.rope.dimension_count": (E // TINY["n_head"], V.UINT32),
          "llama.attention.layer_norm_rms_epsilon": (1e-5, V.FLOAT32)}
    if n_head_kv:
        hp["llama.attention.head_count_kv"] = (n_head_kv, V.UINT32)
    hp.update(kv or {})
    for k, (v, t) in hp.items():
        w.add_key_value(k, v, t)
    weights = tiny_weights(len(tokd["tokenizer.ggml.tokens"][0]))
    del weights["output.weight"]           # tied to token_embd: a smaller file
    if n_head_kv:
        rows = E // TINY["n_head"] * n_head_kv
        for name in list(weights):
            if name.endswith(("attn_k.weight", "attn_v.weight")):
                weights[name] = np.full((rows, E), 0.01, dtype=np.float32)
    for name, arr in weights.items():
        kind = (tensor_types or {}).get(name)
        if kind == "f16":
            w.add_tensor(name, arr.astype(np.float16))
        elif kind == "i32":             # the same bytes, typed I32
            w.add_tensor(name, arr.view(np.int32))
        elif kind == "q8_0":
            w.add_tensor(name, quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _tokens_with_duplicate(tokenizer):
    toks = list(tokenizer["tokenizer.ggml.tokens"][0])
    toks[500] = toks[400]
    return {"tokenizer.ggml.tokens": (toks, V.ARRAY, V.STRING)}


def _tokens_with_nul_duplicate(tokenizer):
    """Token 500 is token 400's text, a NUL byte and more: llama.cpp reads up to the NUL."""
    toks = list(tokenizer["tokenizer.ggml.tokens"][0])
    toks[500] = toks[400] + "\0tail"
    return {"tokenizer.ggml.tokens": (toks, V.ARRAY, V.STRING)}


def _rwkv_byte(b):
    c = chr(b)
    return "\\\\" if c == "\\" else c if 0x20 <= b < 0x7F else "\\x%02x" % b


def _rwkv_vocab(tokenizer, n_bytes=256):
    """An RWKV-style vocabulary: the first `n_bytes` bytes (escaped), then words; as long as
    SmolLM2's, so that the tensors keep their shapes."""
    n = len(tokenizer["tokenizer.ggml.tokens"][0])
    toks = [_rwkv_byte(b) for b in range(n_bytes)]
    toks += [f"w{i}" for i in range(n - len(toks))]
    return {"tokenizer.ggml.model": ("rwkv", V.STRING, None),
            "tokenizer.ggml.tokens": (toks, V.ARRAY, V.STRING),
            "tokenizer.ggml.token_type": ([1] * n, V.ARRAY, V.INT32)}


CASES = {
    # name: (writer keywords (a function of the tokenizer), vocab_only result, full result)
    "duplicate_token": (lambda t: dict(tok=_tokens_with_duplicate(t)), "ModelLoadError",
                        "ModelLoadError"),
    "token_type_short": (lambda t: dict(tok={"tokenizer.ggml.token_type": ([1] * 100, V.ARRAY,
                                                                           V.INT32)}),
                         "ModelLoadError", "ModelLoadError"),
    "spm_over_byte_level": (lambda t: dict(tok={"tokenizer.ggml.model": ("llama", V.STRING,
                                                                         None)}),
                            "ModelLoadError", "ModelLoadError"),
    "tokenizer_none": (lambda t: dict(tok={"tokenizer.ggml.model": ("none", V.STRING, None)}),
                       "ModelLoadError", "ModelLoadError"),
    "block_count_0": (lambda t: dict(kv={"llama.block_count": (0, V.UINT32)}),
                      "ModelLoadError", "ModelLoadError"),
    "block_count_513": (lambda t: dict(kv={"llama.block_count": (513, V.UINT32)}),
                        "ModelLoadError", "ModelLoadError"),
    "expert_count_2000": (lambda t: dict(kv={"llama.expert_count": (2000, V.UINT32)}),
                          "ModelLoadError", "ModelLoadError"),
    "expert_used_without_experts": (
        lambda t: dict(kv={"llama.expert_used_count": (2, V.UINT32)}),
        "ModelLoadError", "ModelLoadError"),
    "expert_used_above_count": (
        lambda t: dict(kv={"llama.expert_count": (4, V.UINT32),
                           "llama.expert_used_count": (8, V.UINT32)}),
        "ModelLoadError", "ModelLoadError"),
    "heads_not_multiple_of_kv_heads": (lambda t: dict(n_head_kv=3), "ModelLoadError",
                                       "ModelLoadError"),
    "alignment_8": (lambda t: dict(alignment=8, pad=3), "ok", "ModelLoadError"),
    "alignment_1": (lambda t: dict(alignment=1, pad=1), "ok", "ModelLoadError"),
    "eps_nan": (lambda t: dict(kv={"llama.attention.layer_norm_rms_epsilon":
                                   (float("nan"), V.FLOAT32)}),
                "ModelLoadError", "ModelLoadError"),
    "eps_negative": (lambda t: dict(kv={"llama.attention.layer_norm_rms_epsilon":
                                        (-1.0, V.FLOAT32)}),
                     "ModelLoadError", "ModelLoadError"),
    "norm_f16": (lambda t: dict(tensor_types={"output_norm.weight": "f16"}), "ok",
                 "ModelLoadError"),
    "norm_q8_0": (lambda t: dict(tensor_types={"blk.0.attn_norm.weight": "q8_0"}), "ok",
                  "ModelLoadError"),
    # GGML_ASSERT(hparams.rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED)
    "rope_scaling_t5": (lambda t: dict(kv={"llama.rope.scaling.type": ("t5", V.STRING)}),
                        "ModelLoadError", "ModelLoadError"),
    "rope_scaling_empty": (lambda t: dict(kv={"llama.rope.scaling.type": ("", V.STRING)}),
                           "ModelLoadError", "ModelLoadError"),
    "rope_scaling_yarn": (lambda t: dict(kv={"llama.rope.scaling.type": ("yarn", V.STRING)}),
                          "ok", "ok"),
    # GGML_ASSERT(id_to_token.size() == token_to_id.size()): equal up to a NUL byte
    "duplicate_token_nul": (lambda t: dict(tok=_tokens_with_nul_duplicate(t)),
                            "ModelLoadError", "ModelLoadError"),
    # the RWKV tokenizer loops forever on a vocabulary without all 256 byte tokens
    "rwkv_over_byte_level": (lambda t: dict(tok={"tokenizer.ggml.model": ("rwkv", V.STRING,
                                                                          None)}),
                             "ModelLoadError", "ModelLoadError"),
    "rwkv_missing_bytes": (lambda t: dict(tok=_rwkv_vocab(t, n_bytes=200)),
                           "ModelLoadError", "ModelLoadError"),
    "rwkv_vocab": (lambda t: dict(tok=_rwkv_vocab(t)), "ok", "ok"),
    # SIGSEGV at decode: a matmul weight typed I32 (the data the same size)
    "matmul_weight_i32": (lambda t: dict(tensor_types={"blk.0.attn_output.weight": "i32"}),
                          "ok", "ModelLoadError"),
    "embedding_i32": (lambda t: dict(tensor_types={"token_embd.weight": "i32"}),
                      "ok", "ModelLoadError"),
}

OVERRIDES = {
    "block_count_0": {"llama.block_count": 0},
    "block_count_600": {"llama.block_count": 600},
    "expert_count_5000": {"llama.expert_count": 5000},
    "expert_used_3": {"llama.expert_used_count": 3},
    "kv_heads_3": {"llama.attention.head_count_kv": 3},
    "eps_nan": {"llama.attention.layer_norm_rms_epsilon": float("nan")},
    "eps_negative": {"llama.attention.layer_norm_rms_epsilon": -1e-5},
    "rope_scaling_t5": {"llama.rope.scaling.type": "t5"},
    "rope_scaling_upper": {"llama.rope.scaling.type": "YARN"},
    "tokenizer_none": {"tokenizer.ggml.model": "none"},          # fuzz seed 2 case 67
    "tokenizer_rwkv": {"tokenizer.ggml.model": "rwkv"},
    "tokenizer_llama": {"tokenizer.ggml.model": "llama"},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, tokenizer):
    """name -> path, written on first use."""
    d = tmp_path_factory.mktemp("preflight")
    made = {}

    def get(name):
        if name not in made:
            path = d / f"{name}.gguf"
            kw = CASES[name][0](tokenizer) if name != "good" else {}
            _write(path, tokenizer, **kw)
            while kw.get("alignment") and \
                    gguf_preflight.read_header(path).data_offset % 32 == 0:
                kw["pad"] += 1          # the data section must start off a 32-byte boundary
                _write(path, tokenizer, **kw)
            made[name] = str(path)
        return made[name]
    return get


# -- the child -------------------------------------------------------------------------------

CHILD = r"""
import json, sys
import pyllamacy
path, kw, good = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]

def use(m, vocab_only):
    toks = m.tokenize("Hello world, this is a test. \u20ac \u2603")
    assert toks, "no tokens"
    m.detokenize(toks)
    if not vocab_only:
        ctx = pyllamacy.Context(m, n_ctx=64, n_batch=64)
        ctx.eval(toks)
        ctx.close()

try:
    m = pyllamacy.Model(path, **kw)
except Exception as e:
    print("RAISED", type(e).__name__, "::", e, flush=True)
    m = pyllamacy.Model(good)           # the process goes on: a good model still decodes
    use(m, False)
    print("GOOD_DECODED", flush=True)
else:
    use(m, kw.get("vocab_only", False))
    print("LOADED_AND_USED", flush=True)
"""


def _run(path, good, **kw):
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(kw), good],
                       capture_output=True, text=True, timeout=300, env=env, cwd=PKG_ROOT)
    assert p.returncode == 0, (f"child exited with {p.returncode} (an abort is -6 / 134)\n"
                               f"stdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-3000:]}")
    return p.stdout


def _expect(out, expected):
    if expected == "ok":
        assert "LOADED_AND_USED" in out, out
    else:
        assert f"RAISED {expected} ::" in out, out
        assert "GOOD_DECODED" in out, out


@pytest.mark.parametrize("vocab_only", [True, False], ids=["vocab_only", "full"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_raises_instead_of_aborting(files, name, vocab_only):
    expected = CASES[name][1] if vocab_only else CASES[name][2]
    out = _run(files(name), files("good"), vocab_only=vocab_only)
    _expect(out, expected)


@pytest.mark.parametrize("name", ["alignment_8", "alignment_1"])
def test_unaligned_file_loads_without_mmap(files, name):
    out = _run(files(name), files("good"), use_mmap=False)
    _expect(out, "ok")


@pytest.mark.parametrize("name", ["matmul_weight_i32", "embedding_i32"])
def test_integer_weight_raises_without_mmap(files, name):
    """The SIGSEGV was with use_mmap=False (fuzz seed 3 case 263)."""
    out = _run(files(name), files("good"), use_mmap=False)
    _expect(out, "ModelLoadError")


def test_non_string_rope_override_is_ignored_like_llama_cpp(files):
    """llama.cpp ignores an override of the wrong type (the file's value stands)."""
    _expect(_run(files("good"), files("good"), vocab_only=True,
                 kv_overrides={"llama.rope.scaling.type": 3}), "ok")


def test_rwkv_unescape_matches_llama_cpp():
    u = gguf_preflight._unescape_rwkv
    assert u(b"\\x0a") == b"\n" and u(b"\\xff") == b"\xff" and u(b"\\n") == b"\n"
    assert u(b"\\\\") == b"\\" and u(b"\\") == b"" and u(b"ab\\") == b"ab"
    assert u(b"\\q") == b"q" and u(b"\\x4") == b"" and u(b"\\t\\r") == b"\t\r"


@pytest.mark.parametrize("vocab_only", [True, False], ids=["vocab_only", "full"])
@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_bad_kv_override_raises_value_error(files, name, vocab_only):
    out = _run(files("good"), files("good"), vocab_only=vocab_only,
               kv_overrides=OVERRIDES[name])
    _expect(out, "ValueError")
    key = next(iter(OVERRIDES[name]))
    assert f"kv_overrides[{key!r}]" in out


@pytest.mark.parametrize("vocab_only", [True, False], ids=["vocab_only", "full"])
def test_good_file_loads_and_decodes(files, vocab_only):
    _expect(_run(files("good"), files("good"), vocab_only=vocab_only), "ok")


def test_good_override_still_applies(files):
    ov = {"llama.attention.layer_norm_rms_epsilon": 1e-6, "llama.context_length": 128}
    _expect(_run(files("good"), files("good"), kv_overrides=ov), "ok")


def test_messages_name_the_problem(files):
    cases = {"duplicate_token": "same text", "spm_over_byte_level": "byte-level",
             "tokenizer_none": "no vocabulary", "token_type_short": "one per token", "block_count_0": "llama.block_count is 0",
             "expert_count_2000": "llama.expert_count is 2000",
             "eps_nan": "layer_norm_rms_epsilon is nan", "alignment_8": "use_mmap=False",
             "norm_f16": "'output_norm.weight' is stored as F16",
             "rope_scaling_t5": "rope.scaling.type is 't5'",
             "duplicate_token_nul": "up to the first NUL byte",
             "rwkv_over_byte_level": "'rwkv' but the vocabulary has no token for",
             "matmul_weight_i32": "'blk.0.attn_output.weight' is stored as I32"}
    for name, text in cases.items():
        with pytest.raises(pyllamacy.ModelLoadError, match=text):
            gguf_preflight.check_model_file(files(name))


def test_real_model_passes_quickly(smollm2_path):
    t = time.perf_counter()
    h = gguf_preflight.check_model_file(smollm2_path)
    assert time.perf_counter() - t < 10           # header only; the weights are not read
    assert h.arch == "llama" and len(h.tensors) > 100
    assert h.data_offset % h.alignment == 0


# -- what the reader refuses ------------------------------------------------------------------

def _in_child(code, timeout=60):
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=PKG_ROOT)


def test_fifo_raises_without_blocking(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    code = (f"import pyllamacy\n"
            f"for f in (lambda: pyllamacy.Model({str(fifo)!r}),\n"
            f"          lambda: pyllamacy.Model({str(fifo)!r}, vocab_only=True),\n"
            f"          lambda: pyllamacy.check_gguf({str(fifo)!r}),\n"
            f"          lambda: pyllamacy.Model('/dev/zero')):\n"
            f"    try:\n"
            f"        f()\n"
            f"    except pyllamacy.ModelLoadError as e:\n"
            f"        print('RAISED', e)\n")
    t = time.monotonic()
    p = _in_child(code)            # a blocking open() would hit the timeout instead
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("RAISED") == 4, p.stdout
    assert "not a regular file" in p.stdout
    assert time.monotonic() - t < 60


def test_truncated_and_corrupt_headers(tmp_path, files):
    good = Path(files("good")).read_bytes()
    h = gguf_preflight.read_header(files("good"))
    cut = tmp_path / "cut.gguf"
    for n in (30, 1000, h.data_offset - 10, h.data_offset + 100):
        cut.write_bytes(good[:n])
        with pytest.raises(pyllamacy.ModelLoadError, match="truncated|ended|past the end"):
            gguf_preflight.check_model_file(cut)
    # a string length far past the end of the file
    bad = bytearray(good)
    bad[24:32] = (1 << 60).to_bytes(8, "little")
    cut.write_bytes(bytes(bad))
    with pytest.raises(pyllamacy.ModelLoadError):
        gguf_preflight.check_model_file(cut)


def test_reader_matches_gguf_package(files):
    path = files("good")
    h = gguf_preflight.read_header(path)
    r = gguf.GGUFReader(path)
    assert list(h.kv) == [k for k in r.fields if not k.startswith("GGUF.")]
    assert [t.name for t in h.tensors] == [t.name for t in r.tensors]
    for mine, ref in zip(h.tensors, r.tensors):
        assert mine.type == int(ref.tensor_type)
        assert h.data_offset + mine.offset == ref.data_offset
    toks = h.kv["tokenizer.ggml.tokens"][1].values
    assert [t.decode() for t in toks] == list(r.fields["tokenizer.ggml.tokens"].contents())


# -- the second line: a C++ exception from llama_tokenize ------------------------------------

def test_tokenize_exception_becomes_tokenize_error(tmp_path, tokenizer, files):
    """SentencePiece over a vocabulary without byte tokens and without 'Ġ' (so the pre-flight
    lets it through): llama.cpp throws std::out_of_range for a character it has no piece for;
    that is a TokenizeError, and the process goes on."""
    toks = [t.replace("Ġ", "\u2581") for t in tokenizer["tokenizer.ggml.tokens"][0]]
    assert len(set(toks)) == len(toks)
    path = tmp_path / "spm_no_bytes.gguf"
    _write(path, tokenizer, tok={"tokenizer.ggml.tokens": (toks, V.ARRAY, V.STRING),
                                 "tokenizer.ggml.model": ("llama", V.STRING, None)})
    code = (f"import pyllamacy\n"
            f"m = pyllamacy.Model({str(path)!r}, vocab_only=True)\n"
            f"try:\n"
            f"    m.tokenize('snowman \\u2603')\n"
            f"except pyllamacy.TokenizeError as e:\n"
            f"    print('RAISED', e)\n"
            f"m = pyllamacy.Model({files('good')!r})\n"
            f"ctx = pyllamacy.Context(m, n_ctx=32)\n"
            f"ctx.eval(m.tokenize('hello'))\n"
            f"print('GOOD_DECODED')\n")
    p = _in_child(code, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "RAISED" in p.stdout and "GOOD_DECODED" in p.stdout, p.stdout


# -- Model.metadata: linear in the number of keys ---------------------------------------------

def test_metadata_many_keys(tmp_path, tokenizer):
    n = 40000
    path = tmp_path / "many_keys.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama")
    for name, (val, vt, sub) in tokenizer.items():
        w.add_key_value(name, val, vt, sub_type=sub)
    for i in range(n):
        if i % 2:
            w.add_uint32(f"test.key_{i}", i)
        else:
            w.add_string(f"test.key_{i}", f"value {i}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    expected_keys = gguf_preflight.read_header(path).scalar_keys()   # the file's order
    m = pyllamacy.Model(str(path), vocab_only=True)
    try:
        t = time.perf_counter()
        md = m.metadata
        elapsed = time.perf_counter() - t
        assert list(md) == expected_keys
        for i in range(n):
            assert md[f"test.key_{i}"] == (str(i) if i % 2 else f"value {i}")
        assert md["tokenizer.ggml.model"] == "gpt2"
        assert "tokenizer.ggml.tokens" not in md          # arrays are not in llama.cpp's map
        # by index this took 20-60 s (quadratic); by key it takes milliseconds: a bound far
        # from both
        assert elapsed < 5, elapsed
    finally:
        m.close()


def test_metadata_of_real_model(model, smollm2_path):
    md = model.metadata
    keys = gguf_preflight.read_header(smollm2_path).scalar_keys()
    assert list(md) == keys
    assert md["general.architecture"] == "llama"
    assert float(md["llama.attention.layer_norm_rms_epsilon"]) == pytest.approx(1e-5)
