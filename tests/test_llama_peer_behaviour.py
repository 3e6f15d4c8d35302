"""`pyllamacy.Llama` against llama-cpp-python's `Llama` for the same calls, with outside oracles:

- tokenize / detokenize on llama.cpp's ggml-vocab-*.gguf vocabularies (SentencePiece, BPE,
  WordPiece, Unigram): llama-cpp-python 0.3.36's own Python code (its `llama_cpp` package, run in
  a subprocess over the same pinned libllama) for the same calls, and llama.cpp's tokenizer test
  vectors (the .inp/.out files) for the token ids;
- embeddings: llama.cpp's llama-server (same tree) on its /embeddings endpoint, raw vectors
  (pooling none: per token; mean pooling with embd_normalize -1), and their unit vectors;
- generate(): the end-of-generation token is yielded, as llama-cpp-python's loop yields every
  sampled token, and generation goes on after it when asked (llama-cpp-python samples on).
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import pyllamacy
from pyllamacy import Llama
from pyllamacy.llama_types import LogitsProcessorList, StoppingCriteriaList
from conftest import missing_prerequisite

ROOT = Path(__file__).resolve().parent.parent
SEP = b"\n__ggml_vocab_test__\n"
FAST = dict(n_threads=1, n_threads_batch=1, verbose=False)

# -- the llama-cpp-python oracle ------------------------------------------------------------------

# run by a child Python: llama-cpp-python's package over libllama, the answers written as JSON
_ORACLE = r'''
import base64, json, sys
sys.path.insert(0, sys.argv[1])
import llama_cpp
job = json.load(open(sys.argv[2]))
b64 = lambda x: base64.b64encode(x).decode()
out = {}
for path, work in job.items():
    llm = llama_cpp.Llama(path, vocab_only=True, verbose=False, n_ctx=64)
    tk = llm.tokenizer()
    res = {"tokenize": [], "detokenize": []}
    for text in work["texts"]:
        t = base64.b64decode(text)
        res["tokenize"].append([llm.tokenize(t), llm.tokenize(t, add_bos=False),
                                llm.tokenize(t, special=True), tk.tokenize(t),
                                tk.tokenize(t, add_bos=False, special=False)])
    for ids in work["ids"]:
        res["detokenize"].append([
            b64(llm.detokenize(ids)), b64(llm.detokenize(ids, special=True)),
            [b64(llm.detokenize([x], prev_tokens=ids[:i])) for i, x in enumerate(ids)],
            [b64(llm.detokenize([x])) for x in ids],
            b64(tk.detokenize(ids, prev_tokens=ids[:1])), tk.decode(ids)])
    out[path] = res
    llm.close()
json.dump(out, open(sys.argv[3], "w"))
'''

# llama-cpp-python reads a piece into a 32-byte buffer (a longer piece comes back mangled there):
# id lists with such a piece are left out of the comparison
_LCP_PIECE_MAX = 32


def _lcp_source() -> Path:
    """llama-cpp-python's sources (the folder holding its llama_cpp package): vendor/
    llama_cpp_python (fetched by buildtools/vendor.py) or $PYLLAMACY_LCP_SOURCE."""
    for d in (os.environ.get("PYLLAMACY_LCP_SOURCE"), ROOT / "vendor" / "llama_cpp_python"):
        if d and (Path(d) / "llama_cpp" / "llama.py").exists():
            return Path(d)
    missing_prerequisite("llama_templates", "llama-cpp-python's sources are not here "
                                            "(vendor/llama_cpp_python, or $PYLLAMACY_LCP_SOURCE)")


def _libllama_dir(tmp: Path) -> Path:
    """A folder with the libllama.so pyllamacy was built with, for llama-cpp-python's loader."""
    d = pyllamacy.build_info().get("build_bin_dir")
    if d and (Path(d) / "libllama.so").exists():
        return Path(d)
    lib = Path(pyllamacy.__file__).parent / "lib"
    so = next(iter(sorted(lib.glob("libllama.so*"))), None)
    if so is None:
        missing_prerequisite("llama_tools", "no libllama.so to run llama-cpp-python's code over")
    (tmp / "libllama.so").symlink_to(so)
    return tmp


def _vocab_files(vocab_dir: Path):
    return sorted(p for p in vocab_dir.glob("ggml-vocab-*.gguf")
                  if p.with_suffix(".gguf.inp").exists() and p.with_suffix(".gguf.out").exists())


def _cases(path: Path):
    """llama.cpp's test vectors of a vocabulary: (text bytes, expected ids without BOS)."""
    inputs = path.with_suffix(".gguf.inp").read_bytes().split(SEP)
    outputs = path.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    if outputs and outputs[-1] == "":
        outputs.pop()
    if len(inputs) == len(outputs) + 1 and inputs[-1] in (b"", b"\n"):
        inputs.pop()
    assert len(inputs) == len(outputs)
    return [(i, [int(t) for t in o.split()]) for i, o in zip(inputs, outputs)]


EXTRA_TEXTS = [b"Hello world", b" Hello world", b"Hello\n\nworld ", b"na\xc3\xafve caf\xc3\xa9 "
               b"\xe6\x9d\xb1\xe4\xba\xac", b"It's 3.14, isn't it ?", b"<s>Hi</s> <|im_end|>"]


@pytest.fixture(scope="module")
def peer(vocab_dir, tmp_path_factory):
    """Every vocabulary's texts and id lists, and llama-cpp-python's answers for them."""
    src = _lcp_source()
    tmp = tmp_path_factory.mktemp("lcp")
    job, local = {}, {}
    for path in _vocab_files(vocab_dir):
        with pyllamacy.Model(path, vocab_only=True) as m:
            cases = _cases(path)
            texts = [t for t, _ in cases] + EXTRA_TEXTS
            ids = [e for _, e in cases if e]
            bos = m.token_bos()
            ids += [[bos] + e for e in ids[:8] if bos >= 0]
            ids += [m.tokenize(t, add_special=True, parse_special=True) for t in EXTRA_TEXTS]
            ids = [i for i in ids if i and all(
                len(m.token_to_piece(t, True)) <= _LCP_PIECE_MAX for t in i)]
        job[str(path)] = {"texts": [base64.b64encode(t).decode() for t in texts], "ids": ids}
        local[str(path)] = (texts, ids)
    (tmp / "job.json").write_text(json.dumps(job))
    (tmp / "oracle.py").write_text(_ORACLE)
    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(_libllama_dir(tmp)))
    r = subprocess.run([sys.executable, str(tmp / "oracle.py"), str(src), str(tmp / "job.json"),
                        str(tmp / "out.json")], env=env, cwd=str(tmp), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    theirs = json.loads((tmp / "out.json").read_text())
    return {p: (local[p][0], local[p][1], theirs[p]) for p in job}


def _b(s: str) -> bytes:
    return base64.b64decode(s)


def test_tokenize_same_as_llama_cpp_python(peer):
    for path, (texts, _ids, theirs) in peer.items():
        with Llama(path, vocab_only=True, **FAST) as llm:
            tk = llm.tokenizer()
            for text, want in zip(texts, theirs["tokenize"]):
                ours = [llm.tokenize(text), llm.tokenize(text, add_bos=False),
                        llm.tokenize(text, special=True), tk.tokenize(text),
                        tk.tokenize(text, add_bos=False, special=False)]
                assert ours == want, (Path(path).name, text[:40])


def test_tokenize_matches_llama_cpp_vectors(vocab_dir):
    """llama.cpp's own expected ids (its test-tokenizer-0 vectors) through Llama.tokenize, with
    and without the model's BOS."""
    for path in _vocab_files(vocab_dir):
        with Llama(str(path), vocab_only=True, **FAST) as llm:
            bos = [llm.token_bos()] if llm.model.add_bos else []
            for text, expected in _cases(path):
                assert llm.tokenize(text, add_bos=False) == expected, (path.name, text[:40])
                with_bos = llm.tokenize(text)
                assert with_bos[:len(bos)] == bos
                assert with_bos[len(bos):len(bos) + len(expected)] == expected


def test_detokenize_same_as_llama_cpp_python(peer):
    n = 0
    for path, (_texts, ids_list, theirs) in peer.items():
        with Llama(path, vocab_only=True, **FAST) as llm:
            tk = llm.tokenizer()
            for ids, want in zip(ids_list, theirs["detokenize"]):
                whole, special, stepped, single, tk_prev, decoded = want
                name = (Path(path).name, ids[:8])
                assert llm.detokenize(ids) == _b(whole), name
                assert llm.detokenize(ids, special=True) == _b(special), name
                assert [llm.detokenize([x], prev_tokens=ids[:i]) for i, x in
                        enumerate(ids)] == [_b(s) for s in stepped], name
                assert [llm.detokenize([x]) for x in ids] == [_b(s) for s in single], name
                assert tk.detokenize(ids, prev_tokens=ids[:1]) == _b(tk_prev), name
                assert tk.decode(ids) == decoded, name
                n += 1
    assert n > 100


def test_detokenize_spm_examples(vocab_dir):
    """The SentencePiece cases where llama-cpp-python's rule differs from llama.cpp's
    llama_detokenize (which strips the first token's word-start space)."""
    path = vocab_dir / "ggml-vocab-llama-spm.gguf"
    if not path.exists():
        missing_prerequisite("llama_templates", f"{path} is missing")
    with Llama(str(path), vocab_only=True, **FAST) as llm:
        toks = llm.tokenize(b"Hello world")
        bos = llm.token_bos()
        assert toks[0] == bos and len(toks) == 3
        # a BOS round trip gives the text back, without a leading space
        assert llm.detokenize(toks) == b"Hello world"
        # token by token: each piece with its word-start space
        assert llm.detokenize([toks[1]], prev_tokens=toks[:1]) == b" Hello"
        assert llm.detokenize([toks[2]], prev_tokens=toks[:2]) == b" world"
        pieces = [llm.detokenize([t], prev_tokens=toks[:i]) for i, t in enumerate(toks)]
        assert b"".join(pieces) == b" Hello world"
        # without BOS the space SentencePiece put before the first word stays (as there)
        plain = llm.tokenize(b"Hello world", add_bos=False)
        assert plain == toks[1:]
        assert llm.detokenize(plain) == b" Hello world"
        assert b"".join(llm.detokenize([t], prev_tokens=plain[:i])
                        for i, t in enumerate(plain)) == llm.detokenize(plain)
        # llama.cpp's llama_detokenize strips that space: the difference this is about
        assert llm.model.detokenize(plain) == b"Hello world"
        assert llm.detokenize([bos], special=True) == b"<s>"
        with pytest.raises(TypeError):
            llm.detokenize(["a"])
        with pytest.raises(TypeError):
            llm.detokenize(plain, prev_tokens=5)


@pytest.mark.parametrize("name", ["llama-bpe", "gpt-2", "qwen2", "phi-3", "llama-spm"])
def test_detokenize_round_trip(vocab_dir, name):
    path = vocab_dir / f"ggml-vocab-{name}.gguf"
    if not path.exists():
        missing_prerequisite("llama_templates", f"{path} is missing")
    with Llama(str(path), vocab_only=True, **FAST) as llm:
        spm = llm.model.vocab_type == "spm"
        for text, _ in _cases(path):
            if not text or b"\xef\xbf\xbd" in text:
                continue
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                continue
            with_bos = llm.tokenize(text)
            plain = llm.tokenize(text, add_bos=False)
            joined = b"".join(llm.detokenize([t], prev_tokens=plain[:i])
                              for i, t in enumerate(plain))
            assert joined == llm.detokenize(plain), text[:40]
            if spm:
                # SentencePiece puts a word-start space before the text; a leading BOS
                # takes it off again
                assert llm.detokenize(plain) == b" " + text, text[:40]
                assert llm.detokenize(with_bos) == text, text[:40]
            else:
                assert llm.detokenize(plain) == text, text[:40]
                # llama-cpp-python drops one leading space after BOS whatever the vocabulary
                bos_first = bool(with_bos) and with_bos[0] == llm.token_bos()
                want = text[1:] if bos_first and text.startswith(b" ") else text
                assert llm.detokenize(with_bos) == want, text[:40]


# -- generate(): the end-of-generation token ------------------------------------------------------

EOS_PROMPT = "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def llm(smollm2_path):
    m = Llama(smollm2_path, n_ctx=256, **FAST)
    yield m
    m.close()


def _until_eog(llm, toks, limit=64):
    out = []
    for t in llm.generate(toks, temp=0):
        out.append(t)
        if llm.model.is_eog(t) or len(out) >= limit:
            break
    return out


def test_generate_yields_the_eog_token(llm):
    toks = llm.tokenize(EOS_PROMPT.encode(), special=True)
    got = _until_eog(llm, toks)
    assert llm.model.is_eog(got[-1]) and len(got) < 64
    assert not any(llm.model.is_eog(t) for t in got[:-1])
    # create_completion runs the same loop: its text is the generated tokens less the EOG
    out = llm.create_completion(EOS_PROMPT, max_tokens=64, temperature=0)
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["choices"][0]["text"] == llm.detokenize(got[:-1]).decode("utf-8")
    assert out["usage"]["completion_tokens"] == len(got) - 1
    stream = "".join(c["choices"][0]["text"] for c in
                     llm.create_completion(EOS_PROMPT, max_tokens=64, temperature=0, stream=True))
    assert stream == out["choices"][0]["text"]


def test_generate_goes_on_after_eog(llm):
    """As llama-cpp-python's loop: asked for more after the EOG token, it evaluates it and
    samples on, the same tokens as a generation from the prompt with the EOG appended."""
    toks = llm.tokenize(EOS_PROMPT.encode(), special=True)
    got = _until_eog(llm, toks)
    g = llm.generate(toks, temp=0)
    seq = [next(g) for _ in range(len(got) + 3)]
    g.close()
    assert seq[:len(got)] == got
    ref = []
    for t in llm.generate(toks + got, temp=0):
        ref.append(t)
        if len(ref) == 3:
            break
    assert seq[len(got):] == ref


def test_generate_eog_with_logits_processor_and_stopping_criteria(llm):
    toks = llm.tokenize(EOS_PROMPT.encode(), special=True)
    got = _until_eog(llm, toks)
    # the Python-side loop (a logits processor) yields the same tokens, EOG included
    ident = LogitsProcessorList([lambda ids, logits: logits])
    via_python = []
    for t in llm.generate(toks, temp=0, logits_processor=ident):
        via_python.append(t)
        if llm.model.is_eog(t) or len(via_python) >= 64:
            break
    assert via_python == got
    # a stopping criterion sees the EOG token before it is yielded, as in llama-cpp-python
    seen = []

    def stop_at_eog(ids, logits):
        seen.append(int(ids[-1]))
        return llm.model.is_eog(int(ids[-1]))

    assert list(llm.generate(toks, temp=0, stopping_criteria=StoppingCriteriaList([stop_at_eog]))) == got[:-1]
    assert seen[-1] == got[-1]


# -- embeddings against llama-server ------------------------------------------------------------

EMBED_TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _EmbeddingServer:
    """llama-server --embeddings as a child process (its own session), stopped on exit."""

    def __init__(self, binary: Path, model: str, pooling: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        cmd = [str(binary), "-m", model, "--host", "127.0.0.1", "--port", str(self.port),
               "--embeddings", "--pooling", pooling, "-c", "512", "-np", "1", "-b", "512",
               "-ub", "512", "-t", "1", "-tb", "1", "-ngl", "0", "-dev", "none"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def __enter__(self):
        import httpx
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        self.log.seek(0)
        raise RuntimeError("llama-server did not start: " + self.log.read()[-2000:].decode(
            "utf-8", "replace"))

    def embed(self, text: str, **extra):
        import httpx
        r = httpx.post(self.url + "/embeddings", json=dict(content=text, **extra), timeout=120)
        assert r.status_code == 200, r.text
        return r.json()[0]["embedding"]

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def server_bin(llama_bin_dir):
    pytest.importorskip("httpx")
    b = llama_bin_dir / "llama-server"
    if not b.exists():
        missing_prerequisite("llama_tools", f"no llama-server in {llama_bin_dir}")
    return b


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_embed_pooling_none_raw_like_llama_server(server_bin, smollm2_path):
    """A generative model (no pooling of its own): one raw vector per token, as llama-cpp-
    python gives and llama-server's /embeddings returns; normalize=True: their unit vectors."""
    with Llama(smollm2_path, n_ctx=512, n_batch=512, n_ubatch=512, embedding=True,
               n_gpu_layers=0, **FAST) as emb:
        assert emb.pooling_type() == "none"
        ours = emb.embed(EMBED_TEXTS)
        unit = emb.embed(EMBED_TEXTS, normalize=True)
        resp = emb.create_embedding(EMBED_TEXTS)
        tokens = [emb.tokenize(t.encode()) for t in EMBED_TEXTS]
    with _EmbeddingServer(server_bin, smollm2_path, "none") as srv:
        theirs = [srv.embed(t) for t in EMBED_TEXTS]
    for o, u, t, toks, r in zip(ours, unit, theirs, tokens, resp["data"]):
        assert len(o) == len(t) == len(toks)            # one vector per token
        np.testing.assert_allclose(o, t, rtol=1e-3, atol=1e-3 * np.abs(t).max())
        assert abs(np.linalg.norm(o[0]) - 1) > 1e-2      # raw: not unit vectors
        np.testing.assert_allclose(u, [_unit(v) for v in t], atol=2e-3)
        assert r["embedding"] == o                       # create_embedding: raw too


def test_embed_mean_pooling_raw_like_llama_server(server_bin, smollm2_path):
    with Llama(smollm2_path, n_ctx=512, n_batch=512, n_ubatch=512, embedding=True,
               pooling_type="mean", n_gpu_layers=0, **FAST) as emb:
        ours = emb.embed(EMBED_TEXTS)
        unit = emb.embed(EMBED_TEXTS, normalize=True)
        one = emb.embed(EMBED_TEXTS[0])
    with _EmbeddingServer(server_bin, smollm2_path, "mean") as srv:
        raw = [srv.embed(t, embd_normalize=-1)[0] for t in EMBED_TEXTS]
        normed = [srv.embed(t)[0] for t in EMBED_TEXTS]        # its default: euclidean
    for o, u, r, n in zip(ours, unit, raw, normed):
        np.testing.assert_allclose(o, r, rtol=1e-3, atol=1e-3 * np.abs(r).max())
        assert abs(np.linalg.norm(o) - 1) > 1e-2
        np.testing.assert_allclose(u, n, atol=2e-3)
        assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-5)
    assert one == ours[0]
