"""The llama-cpp-python compatibility switch (pyllamacy.compat) with the integrations that
import llama_cpp: LangChain's LlamaCpp / ChatLlamaCpp / LlamaCppEmbeddings and outlines'
from_llamacpp, in-process, with no llama-cpp-python installed.

Oracles: the model file itself (read with the gguf package) for the low-level vocabulary
functions and for the vocabulary outlines builds from them; llama.h / ggml.h for the
constants; the regex / pydantic schema for constrained output; the mean of the per-token
embeddings for mean pooling; and the Llama's own output for what LangChain returns.
"""
from __future__ import annotations

import ctypes
import importlib.util
import inspect
import json
import multiprocessing
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import pyllamacy
from pyllamacy import compat
from pyllamacy import llama_cpp as lc

N_CTX = 1024

_REAL = importlib.util.find_spec("llama_cpp")
pytestmark = pytest.mark.skipif(
    _REAL is not None and not compat.installed(),
    reason=f"a real llama-cpp-python is importable ({_REAL and _REAL.origin}): the switch "
           f"leaves it alone, so these tests of pyllamacy's llama_cpp cannot run here")


@pytest.fixture(scope="module")
def switch():
    """`import llama_cpp` is pyllamacy.llama_cpp for this module's tests, and only for them."""
    assert importlib.util.find_spec("llama_cpp") is None, "a real llama-cpp-python exists"
    assert compat.install_llama_cpp() is True
    yield
    compat.uninstall_llama_cpp()
    assert "llama_cpp" not in sys.modules


@pytest.fixture(scope="module")
def llm(switch, smollm2_path):
    import llama_cpp
    m = llama_cpp.Llama(smollm2_path, n_ctx=N_CTX, verbose=False)
    yield m
    m.close()


@pytest.fixture(scope="module")
def gguf_vocab(smollm2_path):
    """(token strings, token types) as the model file stores them."""
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(smollm2_path)
    tokens = list(r.fields["tokenizer.ggml.tokens"].contents())
    types = [int(t) for t in r.fields["tokenizer.ggml.token_type"].contents()]
    assert r.fields["tokenizer.ggml.model"].contents() == "gpt2"      # byte-level BPE
    return tokens, types


def _gpt2_byte_decoder():
    """GPT-2's byte-level BPE alphabet: the printable character standing for each byte."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    chars = {}
    extra = 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _token_bytes(text: str, decoder) -> bytes:
    return bytes(decoder[c] for c in text)


# -- the switch itself (subprocesses: they change sys.modules and sys.path) ------------------

def _run(code: str, cwd: Path, extra_path=()) -> subprocess.CompletedProcess:
    root = Path(pyllamacy.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, extra_path), str(root)]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_switch_installs_and_uninstalls(tmp_path):
    r = _run("""
        import importlib.util, inspect, sys
        assert importlib.util.find_spec("llama_cpp") is None
        import pyllamacy.compat as compat
        import pyllamacy.llama_cpp, pyllamacy.llama_cpp.llama
        assert compat.install_llama_cpp() is True
        assert compat.install_llama_cpp() is True and compat.installed()
        import llama_cpp
        import llama_cpp.llama_cpp as low
        from llama_cpp import Llama, LlamaGrammar, LogitsProcessorList
        from llama_cpp.llama import Llama as Llama2
        assert llama_cpp is pyllamacy.llama_cpp, llama_cpp
        assert low is sys.modules["pyllamacy.llama_cpp.llama_cpp"]
        assert Llama is Llama2 is pyllamacy.llama_cpp.llama.Llama
        assert issubclass(Llama, pyllamacy.Llama) and Llama is not pyllamacy.Llama
        assert inspect.signature(Llama.__init__).parameters["flash_attn"].default is False
        assert llama_cpp.__name__ == "pyllamacy.llama_cpp"
        assert callable(llama_cpp.llama_token_to_piece) and llama_cpp.LLAMA_TOKEN_ATTR_CONTROL == 8
        compat.uninstall_llama_cpp()
        assert not compat.installed()
        assert not [n for n in sys.modules if n == "llama_cpp" or n.startswith("llama_cpp.")]
        assert importlib.util.find_spec("llama_cpp") is None
        try:
            import llama_cpp
        except ImportError:
            pass
        else:
            raise AssertionError("llama_cpp still importable after uninstall")
        print("ok")
        """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_switch_leaves_a_real_llama_cpp_alone(tmp_path):
    fake = tmp_path / "site"
    (fake / "llama_cpp").mkdir(parents=True)
    (fake / "llama_cpp" / "__init__.py").write_text("REAL = True\n")
    r = _run("""
        import pyllamacy.compat as compat
        assert compat.install_llama_cpp() is False
        assert not compat.installed()
        import llama_cpp
        assert getattr(llama_cpp, "REAL", False), llama_cpp
        assert compat.install_llama_cpp() is False     # also once it is imported
        print("ok")
        """, tmp_path, extra_path=[fake])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# -- the compat Llama's defaults --------------------------------------------------------------

def test_compat_llama_defaults(llm, smollm2_path):
    import llama_cpp
    sig = inspect.signature(llama_cpp.Llama.__init__).parameters
    assert sig["flash_attn"].default is False
    assert inspect.signature(pyllamacy.Llama.__init__).parameters["flash_attn"].default is None
    # llama-cpp-python: half of the CPUs for generation, all of them for prompts
    assert llm.n_threads == max(multiprocessing.cpu_count() // 2, 1)
    assert llm.n_threads_batch == multiprocessing.cpu_count()
    assert llm.n_batch == 512 and llm.n_ubatch == 512 and llm.n_ctx() == N_CTX
    state = llm.__getstate__()
    assert state["flash_attn"] is False and state["yarn_beta_fast"] == 32.0
    assert state["n_gpu_layers"] == 0 and state["offload_kqv"] is True


def test_compat_embed_is_raw_by_default(switch, smollm2_path):
    import llama_cpp
    with llama_cpp.Llama(smollm2_path, embedding=True, verbose=False,
                         pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN) as e:
        raw = np.asarray(e.embed("hello world"))
        unit = np.asarray(e.embed("hello world", normalize=True))
        n_embd = e.n_embd()
    assert raw.shape == unit.shape == (n_embd,)
    assert abs(np.linalg.norm(unit) - 1) < 1e-4
    assert abs(np.linalg.norm(raw) - 1) > 1e-2          # not normalized
    np.testing.assert_allclose(raw / np.linalg.norm(raw), unit, rtol=1e-4, atol=1e-5)


# -- low-level functions ----------------------------------------------------------------------

def test_constants_match_llama_h(vocab_dir):
    """Every LLAMA_* / GGML_* integer of llama_cpp.llama_cpp is llama.h's / ggml.h's value."""
    root = vocab_dir.parent
    headers = [root / "include" / "llama.h", root / "ggml" / "include" / "ggml.h"]
    values = {}
    for h in headers:
        src = re.sub(r"//[^\n]*", "", h.read_text())
        for name, expr in re.findall(r"#define\s+((?:LLAMA|GGML)_[A-Z0-9_]+)\s+(-?\w+)\s*$", src,
                                     re.M):
            values[name] = expr
        for body in re.findall(r"enum\s+\w+\s*\{(.*?)\}", src, re.S):
            for name, expr in re.findall(r"((?:LLAMA|GGML)_[A-Z0-9_]+)\s*=\s*([^,]+)", body):
                values[name] = expr.strip()

    def ev(expr, depth=0):
        if depth > 5 or not re.fullmatch(r"[\w\s<()\-x]+", expr):
            raise ValueError(expr)
        names = {n: ev(values[n], depth + 1) for n in re.findall(r"[A-Z][A-Z0-9_]+", expr)
                 if n in values}
        return int(eval(expr, {"__builtins__": {}}, names))

    checked = 0
    for name in lc.llama_cpp.__all__:
        value = getattr(lc.llama_cpp, name)
        if not (name.isupper() and isinstance(value, int)) or name == "LLAMA_MAX_DEVICES":
            continue
        assert name in values, f"{name} is not in llama.h / ggml.h"
        assert value == ev(values[name]), f"{name} = {value}, llama.h: {values[name]}"
        checked += 1
    assert checked > 100
    assert lc.LLAMA_MAX_DEVICES == pyllamacy.max_devices()


def test_token_to_piece_matches_the_model_file(llm, gguf_vocab):
    """llama_token_to_piece / llama_vocab_get_text / _get_attr for every token against the
    GGUF's own token table (byte-level BPE: each character stands for one byte)."""
    import llama_cpp
    tokens, types = gguf_vocab
    decoder = _gpt2_byte_decoder()
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_n_tokens(vocab) == len(tokens) == llm.n_vocab()
    assert llama_cpp.llama_n_vocab(vocab) == len(tokens)
    assert llama_cpp.llama_vocab_type(vocab) == llama_cpp.LLAMA_VOCAB_TYPE_BPE
    size = 64
    buf = ctypes.create_string_buffer(size)
    n_control = 0
    for i, (text, typ) in enumerate(zip(tokens, types)):
        assert llama_cpp.llama_vocab_get_text(vocab, i) == text.encode("utf-8")
        attr = llama_cpp.llama_vocab_get_attr(vocab, i)
        n = llama_cpp.llama_token_to_piece(vocab, i, buf, size, 0, True)
        if n < 0:                                               # needs -n bytes
            assert -n > size
            big = ctypes.create_string_buffer(-n)
            assert llama_cpp.llama_token_to_piece(vocab, i, big, -n, 0, True) == -n
            n, buf_raw = -n, big.raw
        else:
            buf_raw = buf.raw
        if typ == llama_cpp.LLAMA_TOKEN_TYPE_CONTROL:
            n_control += 1
            assert attr & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
            assert buf_raw[:n] == text.encode("utf-8")          # rendered with special=True
            assert llama_cpp.llama_token_to_piece(vocab, i, buf, size, 0, False) == 0
        else:
            assert typ == llama_cpp.LLAMA_TOKEN_TYPE_NORMAL
            assert attr & llama_cpp.LLAMA_TOKEN_ATTR_NORMAL
            assert buf_raw[:n] == _token_bytes(text, decoder), (i, text)
    assert n_control == 17
    eos = llama_cpp.llama_vocab_eos(vocab)
    assert llama_cpp.llama_vocab_is_eog(vocab, eos) and llama_cpp.llama_token_is_eog(vocab, eos)
    assert not llama_cpp.llama_vocab_is_eog(vocab, 100)


def test_buffer_conventions(llm):
    """llama.h's conventions: a result that does not fit is not written and its size comes
    back negated; lstrip drops a leading space; snprintf for descriptions."""
    import llama_cpp
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    im_end = 2
    small = (ctypes.c_char * 4)(*b"wxyz")
    assert llama_cpp.llama_token_to_piece(vocab, im_end, small, 4, 0, True) == -len(b"<|im_end|>")
    assert small.raw == b"wxyz"                                  # untouched
    ba = bytearray(16)
    assert llama_cpp.llama_token_to_piece(vocab, im_end, ba, 16, 0, True) == 10
    assert bytes(ba[:10]) == b"<|im_end|>"
    space_the = llm.tokenize(b" the", add_bos=False)
    assert len(space_the) == 1
    buf = ctypes.create_string_buffer(8)
    assert llama_cpp.llama_token_to_piece(vocab, space_the[0], buf, 8, 0, False) == 4
    assert llama_cpp.llama_token_to_piece(vocab, space_the[0], buf, 8, 1, False) == 3
    assert buf.raw[:3] == b"the"

    text = b"Hello world, how are you?"
    few = (llama_cpp.llama_token * 2)(7, 7)
    n = llama_cpp.llama_tokenize(vocab, text, len(text), few, 2, True, False)
    expected = llm.tokenize(text, add_bos=True)
    assert n == -len(expected) and list(few) == [7, 7]
    many = (llama_cpp.llama_token * 32)()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), many, 32, True, False)
    assert list(many[:n]) == expected
    special = b"<|im_start|>user"
    n2 = llama_cpp.llama_tokenize(vocab, special, len(special), many, 32, False, True)
    assert many[0] == 1 and n2 == 2
    out = ctypes.create_string_buffer(64)
    assert llama_cpp.llama_detokenize(vocab, many, n2, out, 64, False, True) == len(special)
    assert out.raw[:len(special)] == special
    assert llama_cpp.llama_detokenize(vocab, many, n2, out, 3, False, True) == -len(special)
    n3 = llama_cpp.llama_tokenize(vocab, text, len(text), many, 32, False, False)
    assert llama_cpp.llama_detokenize(vocab, many, n3, out, 64, False, False) == len(text)
    assert out.raw[:len(text)] == text

    desc = llm.model.desc.encode()
    tiny = ctypes.create_string_buffer(6)
    assert llama_cpp.llama_model_desc(llm.model, tiny, 6) == len(desc)
    assert tiny.raw == desc[:5] + b"\0"
    arch = ctypes.create_string_buffer(32)
    assert llama_cpp.llama_model_meta_val_str(llm.model, b"general.architecture", arch, 32) == 5
    assert arch.value == b"llama"
    assert llama_cpp.llama_model_meta_val_str(llm.model, b"no.such.key", arch, 32) == -1
    assert arch.value == b""
    assert llama_cpp.llama_model_meta_count(llm.model) == len(llm.metadata)
    assert llama_cpp.llama_model_n_embd(llm.model) == llm.n_embd()
    assert llama_cpp.llama_n_ctx(llm.ctx) == N_CTX
    assert llama_cpp.llama_get_model(llm.ctx) is llm.model
    assert llama_cpp.llama_pooling_type(llm.ctx) in (llama_cpp.LLAMA_POOLING_TYPE_NONE,
                                                      llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED)
    tmpl = llama_cpp.llama_model_chat_template(llm.model, None)
    assert isinstance(tmpl, bytes) and b"<|im_start|>" in tmpl


def test_bad_arguments_are_exceptions(llm):
    import llama_cpp
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    buf = ctypes.create_string_buffer(8)
    with pytest.raises(TypeError, match="llama_vocab_p.*not Model.*llama_model_get_vocab"):
        llama_cpp.llama_token_to_piece(llm.model, 1, buf, 8, 0, True)
    with pytest.raises(TypeError, match="llama_model_get_vocab\\(\\) takes the model"):
        llama_cpp.llama_model_get_vocab(llm)
    with pytest.raises(TypeError, match="llama_n_ctx\\(\\) takes the context.*not Model"):
        llama_cpp.llama_n_ctx(llm.model)
    for bad in (-1, llm.n_vocab(), 2**40):
        with pytest.raises(ValueError, match="out of range"):
            llama_cpp.llama_token_to_piece(vocab, bad, buf, 8, 0, True)
        with pytest.raises(ValueError, match="out of range"):
            llama_cpp.llama_vocab_get_attr(vocab, bad)
    with pytest.raises(TypeError, match="token must be an integer"):
        llama_cpp.llama_token_to_piece(vocab, 1.0, buf, 8, 0, True)
    with pytest.raises(ValueError, match="holds 8 bytes, fewer than the 9"):
        llama_cpp.llama_token_to_piece(vocab, 1, buf, 9, 0, True)
    with pytest.raises(TypeError, match="writable char buffer.*not bytes"):
        llama_cpp.llama_token_to_piece(vocab, 1, b"12345678", 8, 0, True)
    with pytest.raises(ValueError, match="length must be >= 0"):
        llama_cpp.llama_token_to_piece(vocab, 1, buf, -1, 0, True)
    ints = (ctypes.c_int64 * 4)()
    with pytest.raises(TypeError, match="array of llama_token"):
        llama_cpp.llama_tokenize(vocab, b"hi", 2, ints, 4, False, False)
    toks = (llama_cpp.llama_token * 4)()
    with pytest.raises(ValueError, match="text_len 9 is longer"):
        llama_cpp.llama_tokenize(vocab, b"hi", 9, toks, 4, False, False)
    with pytest.raises(TypeError, match="text must be bytes"):
        llama_cpp.llama_tokenize(vocab, "hi", 2, toks, 4, False, False)
    with pytest.raises(ValueError, match="holds 4 tokens, fewer than the 5"):
        llama_cpp.llama_tokenize(vocab, b"hi", 2, toks, 5, False, False)
    with pytest.raises(ValueError, match="out of range"):
        llama_cpp.llama_detokenize(vocab, [1, -5], 2, buf, 8, False, False)
    with pytest.raises(TypeError, match="log_callback must be callable"):
        llama_cpp.llama_log_set(42, None)


def test_vocab_of_a_closed_model_is_an_error(switch, smollm2_path):
    import llama_cpp
    m = llama_cpp.Llama(smollm2_path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(m.model)
    model = m.model
    m.close()
    buf = ctypes.create_string_buffer(8)
    with pytest.raises(pyllamacy.ClosedError):
        llama_cpp.llama_token_to_piece(vocab, 1, buf, 8, 0, True)
    with pytest.raises(pyllamacy.ClosedError):
        llama_cpp.llama_model_get_vocab(model)


def test_log_set_silences_and_restores(switch):
    import llama_cpp
    before = pyllamacy.get_log_level()
    try:
        with pytest.warns(UserWarning, match="does not pass llama.cpp's log messages"):
            llama_cpp.llama_log_set(llama_cpp.llama_log_callback(lambda *a: None),
                                    ctypes.c_void_p(0))
        assert pyllamacy.get_log_level() == "none"
        llama_cpp.llama_log_set(None, None)
        assert pyllamacy.get_log_level() == "error"
    finally:
        pyllamacy.set_log_level(before)


# -- outlines ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def outlines_model(llm):
    outlines = pytest.importorskip("outlines")
    pytest.importorskip("numba")       # outlines_core's numpy kernels (outlines[llamacpp])
    return outlines.from_llamacpp(llm, chat_mode=False)


def test_outlines_vocabulary_matches_the_model_file(outlines_model, gguf_vocab):
    """outlines builds its token table with llama_model_get_vocab / llama_token_to_piece
    (32-byte buffer, special=True): it must be the GGUF's table, decoded."""
    tokens, types = gguf_vocab
    decoder = _gpt2_byte_decoder()
    expected = {}
    for i, (text, typ) in enumerate(zip(tokens, types)):
        piece = text.encode() if typ == 3 else _token_bytes(text, decoder)
        if len(piece) <= 32:          # outlines skips the negative "needs more" returns
            expected[piece.decode("utf-8", errors="replace")] = i
    tok = outlines_model.tokenizer
    assert tok.vocabulary == dict(sorted(expected.items(), key=lambda kv: kv[1]))
    assert tok.eos_token_id == 2 and tok.eos_token == "<|im_end|>"


def test_outlines_text(outlines_model):
    out = outlines_model("The capital of France is", max_tokens=8, temperature=0)
    assert isinstance(out, str) and out.strip()
    streamed = "".join(outlines_model.stream("The capital of France is", max_tokens=8,
                                             temperature=0))
    assert streamed == out


def test_outlines_regex(outlines_model):
    from outlines.types import Regex
    pattern = r"[0-9]{3}-[0-9]{4}"
    out = outlines_model("My phone number is ", Regex(pattern), max_tokens=12, temperature=0.7,
                         seed=3)
    assert re.fullmatch(pattern, out), out


def test_outlines_json_from_pydantic(llm, outlines_model):
    import outlines
    from pydantic import BaseModel, Field
    from typing import Literal

    class Pet(BaseModel):
        kind: Literal["cat", "dog"]
        age: int = Field(ge=0, le=30)

    chat = outlines.from_llamacpp(llm)          # chat_mode: the prompt is a user message
    out = chat("Describe a pet as JSON.", Pet, max_tokens=40, temperature=0)
    pet = Pet.model_validate_json(out)
    assert pet.kind in ("cat", "dog")
    assert json.loads(out) == pet.model_dump()


# -- LangChain --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lc_llms():
    pytest.importorskip("langchain_community")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community import chat_models, embeddings, llms
    return llms, chat_models, embeddings


def test_langchain_llamacpp(switch, lc_llms, smollm2_path):
    llms = lc_llms[0]
    kw = dict(model_path=smollm2_path, max_tokens=12, temperature=0, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # n_parts / f16_kv: accepted without a word
        llm = llms.LlamaCpp(streaming=False, **kw)
    try:
        text = llm.invoke("The capital of France is")
        assert isinstance(text, str) and text.strip()
        # what LangChain returns is the Llama's own completion with LangChain's settings
        direct = llm.client("The capital of France is", max_tokens=12, temperature=0,
                            top_p=0.95, top_k=40, repeat_penalty=1.1, stop=[])
        assert text == direct["choices"][0]["text"]
        chunks = list(llm.stream("The capital of France is"))
        assert len(chunks) > 2 and "".join(chunks) == text
        assert llm.get_num_tokens("hello world") == len(llm.client.tokenize(b"hello world"))
    finally:
        llm.client.close()


def test_langchain_chat(switch, lc_llms, smollm2_path):
    chat_models = lc_llms[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # n_batch: LangChain's default of 8 evaluates a prompt 8 tokens at a time (slow)
        chat = chat_models.ChatLlamaCpp(model_path=smollm2_path, max_tokens=40, temperature=0,
                                        verbose=False, n_ctx=N_CTX, n_batch=512)
    try:
        reply = chat.invoke("Say hi")
        assert isinstance(reply.content, str) and reply.content.strip()
        streamed = "".join(c.content for c in chat.stream("Say hi"))
        assert streamed == reply.content

        from pydantic import BaseModel, Field
        from typing import Literal

        class Weather(BaseModel):
            """The weather in a city."""
            city: Literal["Paris", "London"]
            degrees: int = Field(ge=-50, le=60)

        for choice in ({"type": "function", "function": {"name": "Weather"}}, "Weather"):
            msg = chat.bind_tools([Weather], tool_choice=choice).invoke(
                "What is the weather in Paris?")
            assert len(msg.tool_calls) == 1, msg
            call = msg.tool_calls[0]
            assert call["name"] == "Weather"
            Weather.model_validate(call["args"])
        w = chat.with_structured_output(Weather).invoke("What is the weather in London?")
        assert isinstance(w, Weather)
    finally:
        chat.client.close()


def test_langchain_embeddings(switch, lc_llms, smollm2_path):
    """LlamaCppEmbeddings as llama-cpp-python serves it: a generative model has no pooling,
    so each text gives one vector per token (LangChain flattens them: embed_documents returns
    one vector per *token*, embed_query the first token's); with a pooled model (here
    pooling_type=MEAN) one vector per text, the mean of the per-token vectors."""
    import llama_cpp
    embeddings = lc_llms[2]
    texts = ["hello world", "good morning to you all"]
    with pytest.warns(UserWarning, match="device"):
        per_token = embeddings.LlamaCppEmbeddings(model_path=smollm2_path, verbose=False)
    client = llama_cpp.Llama(smollm2_path, embedding=True, verbose=False,
                             pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    pooled = embeddings.LlamaCppEmbeddings(client=client)
    try:
        n_embd = per_token.client.n_embd()
        n_tokens = [len(per_token.client.tokenize(t.encode(), add_bos=True)) for t in texts]
        docs = per_token.embed_documents(texts)
        assert len(docs) == sum(n_tokens)
        assert all(len(v) == n_embd and all(isinstance(x, float) for x in v) for v in docs)
        q = per_token.embed_query(texts[0])
        assert q == docs[0]

        pdocs = pooled.embed_documents(texts)
        assert len(pdocs) == len(texts) and all(len(v) == n_embd for v in pdocs)
        assert pooled.embed_query(texts[1]) == pytest.approx(pdocs[1], rel=1e-5, abs=1e-6)
        # mean pooling is the mean of the (raw) per-token vectors
        start = 0
        for i, n in enumerate(n_tokens):
            mean = np.mean(np.asarray(docs[start:start + n]), axis=0)
            np.testing.assert_allclose(pdocs[i], mean, rtol=1e-3, atol=1e-4)
            start += n
    finally:
        per_token.client.close()
        client.close()
