"""The high-level API (pyllamacy.Llama) against a real chat model (SmolLM2-135M-Instruct).

Kept fast: short prompts, max_tokens 4..32, one shared Llama per module where possible.
"""
import math

import numpy as np
import pytest

import pyllamacy
from pyllamacy import ClosedError, ContextOverflowError, Llama, LlamaGrammar
from pyllamacy.pipeline.text import TextAssembler
from pyllamacy.llama_types import LlamaState, LogitsProcessorList, StoppingCriteriaList


def chat(user):
    return (f"<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")


PROMPT = chat("Name three colors.")

# One thread: on a shared 2-core machine ggml's spinning worker threads slow down by 10-100x
# when other processes compete for the cores; a single thread does not wait on barriers.
FAST = dict(n_threads=1, verbose=False)


@pytest.fixture(scope="module")
def llama(smollm2_path):
    llm = Llama(model_path=smollm2_path, n_ctx=512, **FAST)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def embedder(smollm2_path):
    llm = Llama(model_path=smollm2_path, n_ctx=512, embedding=True, **FAST)
    yield llm
    llm.close()


def stream_text(chunks):
    text, finish = [], None
    for c in chunks:
        assert c["object"] == "text_completion"
        text.append(c["choices"][0]["text"])
        if c["choices"][0]["finish_reason"] is not None:
            finish = c["choices"][0]["finish_reason"]
    return "".join(text), finish


# -- the text assembler (no model) ------------------------------------------------------------

class TestTextAssembler:
    S = "héllo 世界 🙂 end\n\nmore"

    @pytest.mark.parametrize("stop", [[], ["\n\n"], ["end"], ["🙂"], ["界 🙂"], ["zz"]])
    def test_bytewise_equals_whole(self, stop):
        b = self.S.encode()
        a = TextAssembler(stop)
        parts = [a.push(b[i:i + 1]) for i in range(len(b))]
        out = "".join(parts) + a.flush()
        a2 = TextAssembler(stop)
        assert out == a2.push(b) + a2.flush()
        # no part is ever a broken character
        assert all("\ufffd" not in p for p in parts)
        expected = self.S
        for s in stop:
            if s in expected:
                expected = expected[:expected.index(s)]
        assert out == expected

    def test_holds_back_stop_prefix(self):
        a = TextAssembler(["abc"])
        assert a.push(b"xxab") == "xx"
        assert a.push(b"d") == "abd"
        a = TextAssembler(["abc"])
        assert a.push(b"xxab") == "xx"
        assert a.flush() == "ab"          # ended without the stop: released

    def test_cut_character_at_end_dropped(self):
        a = TextAssembler()
        assert a.push("ok 🙂".encode()[:-1]) == "ok "
        assert a.flush() == ""

    @staticmethod
    def _indent_reference(text, n):
        """llama-server's n_indent rule, line by line: the text up to the first character of
        the first line after the first whose leading spaces/tabs number fewer than n."""
        if n <= 0:
            return text
        first, sep, rest = text.partition("\n")
        out = first + sep
        while sep:
            line, sep, rest = rest.partition("\n")
            body = line.lstrip(" \t")
            lead = len(line) - len(body)
            if lead < n and (body or sep):
                return out + line[:lead]
            out += line + sep
        return out

    @pytest.mark.parametrize("n", [0, 1, 2, 4])
    @pytest.mark.parametrize("stop", [[], ["w ="], ["q"]])
    def test_min_indent(self, n, stop):
        text = "def f(x):\n    y = 1\n  \tz = 2\n\n      w = 3\n  v\nlast"
        by_indent = self._indent_reference(text, n)
        at_stop = min([text.index(s) for s in stop if s in text], default=len(text) + 1)
        indent_first = len(by_indent) < min(len(text), at_stop)
        want = by_indent if indent_first else text[:at_stop]
        for step in (1, 3, len(text.encode())):            # pieces of any size
            a = TextAssembler(stop, min_indent=n)
            b = text.encode()
            out = "".join(a.push(b[i:i + step]) for i in range(0, len(b), step)) + a.flush()
            assert out == want, (step, out)
            assert a.indent_stop == indent_first


# -- constructor --------------------------------------------------------------------------------

def test_unknown_kwarg_is_a_warning(smollm2_path):
    # llama-cpp-python takes any keyword; so does Llama, naming what it ignores
    with pytest.warns(UserWarning, match="bogus_option"):
        llm = Llama(model_path=smollm2_path, bogus_option=1, **FAST)
    llm.close()


def test_lora_path_missing(smollm2_path):
    # checked before the model loads (LoRA itself: tests/test_lora.py)
    with pytest.raises(FileNotFoundError, match="LoRA adapter file not found"):
        Llama(model_path=smollm2_path, lora_path="/nonexistent.gguf", **FAST)


def test_basics(llama):
    assert llama.n_ctx() == 512
    assert llama.n_vocab() > 1000
    assert llama.n_embd() > 0
    assert isinstance(llama.metadata, dict) and llama.metadata
    assert llama.token_eos() >= 0
    assert isinstance(llama.ctx, pyllamacy.Context)
    assert isinstance(llama._model, pyllamacy.Model)


# -- tokenization -------------------------------------------------------------------------------

def test_tokenize_roundtrip(llama):
    text = "Hello, world! Ünïcödé 世界 🙂"
    toks = llama.tokenize(text.encode(), add_bos=False)
    assert toks and all(isinstance(t, int) for t in toks)
    assert llama.detokenize(toks) == text.encode()


def test_tokenize_special(llama):
    plain = llama.tokenize(b"<|im_start|>", add_bos=False, special=False)
    special = llama.tokenize(b"<|im_start|>", add_bos=False, special=True)
    assert len(special) == 1 and len(plain) > 1
    assert llama.detokenize(special, special=True) == b"<|im_start|>"


# -- completion ---------------------------------------------------------------------------------

def test_completion_shape(llama):
    out = llama.create_completion(PROMPT, max_tokens=8, temperature=0)
    assert out["id"].startswith("cmpl-")
    assert out["object"] == "text_completion"
    assert isinstance(out["created"], int)
    assert out["model"] == llama.model_path
    (choice,) = out["choices"]
    assert isinstance(choice["text"], str) and choice["text"]
    assert choice["index"] == 0
    assert choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length")
    u = out["usage"]
    assert u["prompt_tokens"] == len(llama.tokenize(PROMPT.encode(), special=True))
    assert 1 <= u["completion_tokens"] <= 8
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # __call__ is create_completion
    assert llama(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"] == choice["text"]


def test_greedy_is_deterministic(llama):
    a = llama.create_completion(PROMPT, max_tokens=16, temperature=0)
    llama.create_completion(chat("Something else entirely"), max_tokens=4, temperature=0)
    b = llama.create_completion(PROMPT, max_tokens=16, temperature=0)
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_seeded_sampling_reproducible(llama):
    p = chat("Write a short poem about the sea.")
    kw = dict(max_tokens=16, temperature=1.2, top_k=0, top_p=1.0, min_p=0.0)
    a = llama.create_completion(p, seed=1234, **kw)["choices"][0]["text"]
    b = llama.create_completion(p, seed=1234, **kw)["choices"][0]["text"]
    assert a == b
    others = {llama.create_completion(p, seed=s, **kw)["choices"][0]["text"] for s in (1, 2, 3)}
    assert len(others | {a}) > 1


def test_fixed_constructor_seed_advances(smollm2_path):
    p = chat("Tell me a story.")
    kw = dict(max_tokens=8, temperature=1.3, top_k=0, top_p=1.0, min_p=0.0)
    with Llama(model_path=smollm2_path, n_ctx=128, seed=7, **FAST) as a:
        first = [a.create_completion(p, **kw)["choices"][0]["text"] for _ in range(2)]
    with Llama(model_path=smollm2_path, n_ctx=128, seed=7, **FAST) as b:
        second = [b.create_completion(p, **kw)["choices"][0]["text"] for _ in range(2)]
    assert first == second


MULTI_PROMPTS = [
    PROMPT,
    chat("Write the word 'hello' in Chinese characters and then three emoji."),
    chat("Translate to Japanese: good morning"),
    "The quick brown fox",
]


@pytest.mark.parametrize("prompt", MULTI_PROMPTS)
def test_stream_equals_nonstream(llama, prompt):
    kw = dict(max_tokens=24, temperature=0)
    whole = llama.create_completion(prompt, **kw)
    text, finish = stream_text(llama.create_completion(prompt, stream=True, **kw))
    assert text == whole["choices"][0]["text"]
    assert finish == whole["choices"][0]["finish_reason"]
    assert "\ufffd" not in text


def test_multibyte_output_is_whole_characters(llama):
    # Whatever the model writes, every streamed piece must be valid text on its own and the
    # whole must match the non-streamed text; at least one of these prompts gives non-ASCII.
    seen_non_ascii = False
    for p in MULTI_PROMPTS[1:3]:
        chunks = list(llama.create_completion(p, max_tokens=32, temperature=0, stream=True))
        for c in chunks:
            c["choices"][0]["text"].encode("utf-8")      # no lone surrogates etc.
        text = "".join(c["choices"][0]["text"] for c in chunks)
        seen_non_ascii |= any(ord(ch) > 127 for ch in text)
    assert seen_non_ascii


def test_stop_string(llama):
    base = llama.create_completion(PROMPT, max_tokens=24, temperature=0)["choices"][0]["text"]
    # stop on a piece of the greedy text that is not at its very start
    words = base.split()
    assert len(words) >= 2, base
    stop = words[1]
    out = llama.create_completion(PROMPT, max_tokens=24, temperature=0, stop=[stop])
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == base[:base.index(stop)]
    assert stop not in choice["text"]
    text, finish = stream_text(llama.create_completion(PROMPT, max_tokens=24, temperature=0,
                                                       stop=stop, stream=True))
    assert text == choice["text"] and finish == "stop"


def test_max_tokens_length(llama):
    out = llama.create_completion("Once upon a time", max_tokens=5, temperature=0)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 5
    _, finish = stream_text(llama.create_completion("Once upon a time", max_tokens=5,
                                                    temperature=0, stream=True))
    assert finish == "length"


def test_echo(llama):
    plain = llama.create_completion("Once upon a time", max_tokens=6, temperature=0)
    echo = llama.create_completion("Once upon a time", max_tokens=6, temperature=0, echo=True)
    assert echo["choices"][0]["text"] == "Once upon a time" + plain["choices"][0]["text"]


def test_token_prompt(llama):
    toks = llama.tokenize(PROMPT.encode(), special=True)
    a = llama.create_completion(toks, max_tokens=8, temperature=0)
    b = llama.create_completion(PROMPT, max_tokens=8, temperature=0)
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_logprobs(llama):
    out = llama.create_completion(PROMPT, max_tokens=6, temperature=0, logprobs=3)
    lp = out["choices"][0]["logprobs"]
    n = out["usage"]["completion_tokens"]
    assert set(lp) == {"tokens", "text_offset", "token_logprobs", "top_logprobs"}
    assert len(lp["tokens"]) == len(lp["text_offset"]) == len(lp["token_logprobs"]) == n
    assert "".join(lp["tokens"]) == out["choices"][0]["text"]
    assert lp["text_offset"][0] == len(PROMPT)
    assert lp["text_offset"] == sorted(lp["text_offset"])
    for tok, val, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert val <= 0 and math.isfinite(val)
        assert 1 <= len(top) <= 4 and tok in top
        # greedy: the chosen token is the most likely one
        assert val == pytest.approx(max(top.values()), abs=1e-5)
    # same text as without logprobs, and the stream carries the same entries
    plain = llama.create_completion(PROMPT, max_tokens=6, temperature=0)
    assert plain["choices"][0]["text"] == out["choices"][0]["text"]
    streamed = [c["choices"][0]["logprobs"] for c in
                llama.create_completion(PROMPT, max_tokens=6, temperature=0, logprobs=3,
                                        stream=True)]
    toks = sum((c["tokens"] for c in streamed if c), [])
    assert toks == lp["tokens"]


def test_echo_logprobs(llama):
    out = llama.create_completion("Once upon a time", max_tokens=3, temperature=0, echo=True,
                                  logprobs=1)
    lp = out["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(v is not None and v <= 0 for v in lp["token_logprobs"][1:])
    assert "".join(lp["tokens"]) == out["choices"][0]["text"]


def test_prefix_reuse(llama, monkeypatch):
    evaluated = []
    real = llama._eval

    def spy(tokens, *a, **kw):
        evaluated.append(len(tokens))
        return real(tokens, *a, **kw)

    monkeypatch.setattr(llama, "_eval", spy)
    first = PROMPT
    llama.create_completion(first, max_tokens=2, temperature=0)
    n_first = len(llama.tokenize(first.encode(), special=True))
    assert evaluated[0] in (n_first, n_first - 0)      # cold or fully re-evaluated
    evaluated.clear()
    longer = first + "Red, green and"
    n_longer = len(llama.tokenize(longer.encode(), special=True))
    out = llama.create_completion(longer, max_tokens=2, temperature=0)
    assert 0 < evaluated[0] < n_longer - n_first + 2
    # same answer as from a cold context
    llama.reset()
    cold = llama.create_completion(longer, max_tokens=2, temperature=0)
    assert cold["choices"][0]["text"] == out["choices"][0]["text"]
    # the very same prompt again: nothing is evaluated (the cache and the logits its
    # evaluation produced are reused) and the answer is the same
    evaluated.clear()
    again = llama.create_completion(longer, max_tokens=2, temperature=0)
    assert evaluated == []
    assert again["choices"][0]["text"] == cold["choices"][0]["text"]


def test_grammar(llama):
    g = LlamaGrammar.from_string('root ::= "yes" | "no"')
    out = llama.create_completion(chat("Is the sky blue?"), max_tokens=8, temperature=0.7,
                                  grammar=g, seed=3)
    assert out["choices"][0]["text"] in ("yes", "no")


def test_bad_grammar_is_value_error(llama):
    with pytest.raises(ValueError):
        llama.create_completion(PROMPT, max_tokens=2, grammar=LlamaGrammar.from_string("root ::= ("))


def test_logit_bias_and_processor(llama):
    greedy = llama.create_completion(PROMPT, max_tokens=1, temperature=0)
    first = llama.tokenize(greedy["choices"][0]["text"].encode(), add_bos=False)[0]
    banned = llama.create_completion(PROMPT, max_tokens=1, temperature=0,
                                     logit_bias={first: -math.inf})
    assert banned["choices"][0]["text"] != greedy["choices"][0]["text"]

    def ban(input_ids, scores):
        scores[first] = -np.inf
        return scores

    proc = llama.create_completion(PROMPT, max_tokens=1, temperature=0,
                                   logits_processor=LogitsProcessorList([ban]))
    assert proc["choices"][0]["text"] == banned["choices"][0]["text"]
    # the python path gives the same text as the fast path when the processor is a no-op
    same = llama.create_completion(PROMPT, max_tokens=6, temperature=0,
                                   logits_processor=LogitsProcessorList([lambda i, s: s]))
    fast = llama.create_completion(PROMPT, max_tokens=6, temperature=0)
    assert same["choices"][0]["text"] == fast["choices"][0]["text"]


def test_stopping_criteria(llama):
    calls = []

    def after_three(input_ids, logits):
        calls.append(len(input_ids))
        return len(calls) >= 3

    out = llama.create_completion(PROMPT, max_tokens=16, temperature=0,
                                  stopping_criteria=StoppingCriteriaList([after_three]))
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] == 2
    assert isinstance(calls[0], int)


def test_generate_and_sample(llama):
    toks = llama.tokenize(PROMPT.encode(), special=True)
    got = []
    for t in llama.generate(toks, temp=0):
        got.append(t)
        if len(got) == 5:
            break
    ref = llama.create_completion(toks, max_tokens=5, temperature=0)
    assert llama.detokenize(got).decode("utf-8", "ignore") == ref["choices"][0]["text"]
    llama.reset()
    llama.eval(toks)
    assert llama.n_tokens == len(toks)
    assert list(llama.input_ids[:len(toks)]) == toks
    assert llama.sample(temp=0) == got[0]


def test_save_load_state(llama):
    toks = llama.tokenize(PROMPT.encode(), special=True)
    llama.reset()
    llama.eval(toks)
    state = llama.save_state()
    assert isinstance(state, LlamaState) and state.n_tokens == len(toks)
    expected = llama.sample(temp=0)
    # wreck the context
    llama.reset()
    llama.eval(llama.tokenize(b"Something different entirely, to overwrite the cache."))
    llama.load_state(state)
    assert llama.n_tokens == len(toks)
    assert llama.sample(temp=0) == expected
    # a greedy continuation after loading equals one from scratch
    a = [t for _, t in zip(range(4), llama.generate(toks, temp=0))]
    llama.reset()
    b = [t for _, t in zip(range(4), llama.generate(toks, temp=0))]
    assert a == b and a[0] == expected


# -- errors -------------------------------------------------------------------------------------

def test_prompt_too_long(llama):
    long_prompt = "hello " * 600
    with pytest.raises(ContextOverflowError) as ei:
        llama.create_completion(long_prompt, max_tokens=4)
    assert isinstance(ei.value, ValueError)
    assert "exceed context window of 512" in str(ei.value)
    # the Llama still works afterwards
    assert llama.create_completion(PROMPT, max_tokens=2, temperature=0)["choices"][0]["text"]


@pytest.mark.parametrize("kw", [dict(top_k=-1), dict(temperature=float("nan")),
                                dict(top_p=1.5), dict(repeat_penalty=0.0),
                                dict(mirostat_mode=3), dict(min_p=float("nan"))])
def test_invalid_sampling_params(llama, kw):
    with pytest.raises(ValueError):
        llama.create_completion(PROMPT, max_tokens=2, **kw)
    with pytest.raises(ValueError):
        llama.create_completion(PROMPT, max_tokens=2, stream=True, **kw)


def test_closed(smollm2_path):
    llm = Llama(model_path=smollm2_path, n_ctx=128, **FAST)
    stream = llm.create_completion("Hi", max_tokens=4, stream=True)
    llm.close()
    llm.close()                                   # twice is fine
    assert llm.closed
    for call in (lambda: llm.create_completion("Hi", max_tokens=2),
                 lambda: llm("Hi"),
                 lambda: llm.tokenize(b"Hi"),
                 lambda: llm.detokenize([1]),
                 lambda: llm.eval([1]),
                 lambda: llm.n_ctx(),
                 lambda: llm.save_state(),
                 lambda: llm.embed("Hi"),
                 lambda: llm.ctx,
                 lambda: next(stream)):
        with pytest.raises(ClosedError):
            call()


# -- embeddings ---------------------------------------------------------------------------------

def test_embed_needs_embedding_mode(llama):
    with pytest.raises(RuntimeError, match="embedding=True"):
        llama.embed("hello")


def test_embeddings(embedder):
    n_embd = embedder.n_embd()
    texts = ["Hello world", "A second, somewhat longer text."]
    pooled = embedder.pooling_type() != "none"
    one = embedder.embed(texts[0], normalize=True)
    many, count = embedder.embed(texts, normalize=True, return_count=True)
    assert count == sum(len(embedder.tokenize(t.encode())) for t in texts)
    assert len(many) == 2
    if pooled:
        assert len(one) == n_embd
        vecs = [one] + many
    else:
        # generative model, pooling none: one vector per token, as in llama-cpp-python
        assert len(one) == len(embedder.tokenize(texts[0].encode()))
        assert all(len(v) == n_embd for v in one)
        assert len(many[1]) == len(embedder.tokenize(texts[1].encode()))
        vecs = one + many[0] + many[1]
    for v in vecs:
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)
    assert one == many[0]
    raw = embedder.embed(texts[0])                # raw by default, as in llama-cpp-python
    raw0 = raw if pooled else raw[0]
    assert np.linalg.norm(raw0) != pytest.approx(1.0, abs=1e-3)
    assert raw == embedder.embed(texts[0], normalize=False)

    resp = embedder.create_embedding(texts)
    assert resp["data"][0]["embedding"] == raw
    assert resp["object"] == "list" and len(resp["data"]) == 2
    assert resp["data"][1]["index"] == 1 and resp["data"][0]["object"] == "embedding"
    assert resp["usage"]["prompt_tokens"] == count


def test_embeddings_mean_pooling(smollm2_path):
    with Llama(model_path=smollm2_path, n_ctx=128, embedding=True, pooling_type="mean",
               **FAST) as llm:
        v = llm.embed(["one text", "another"], normalize=True)
        assert len(v) == 2 and all(len(x) == llm.n_embd() for x in v)
        assert np.linalg.norm(v[0]) == pytest.approx(1.0, abs=1e-4)
        assert v[0] != v[1]


def test_suffix_needs_fim_tokens(llama):
    # SmolLM2 has no fill-in-the-middle tokens
    with pytest.raises(ValueError, match="fill-in-the-middle"):
        llama.create_completion("def f(", suffix="    return x\n", max_tokens=4)


def test_vocab_only(smollm2_path):
    with Llama(model_path=smollm2_path, vocab_only=True, **FAST) as v:
        toks = v.tokenize(b"Hello world", add_bos=False)
        assert v.detokenize(toks) == b"Hello world"
        with pytest.raises(ValueError, match="vocab_only"):
            v.create_completion("Hello", max_tokens=2)


def test_stream_logprobs_with_stop_match_nonstream(llama):
    base = llama.create_completion(PROMPT, max_tokens=16, temperature=0)["choices"][0]["text"]
    stop = base.split()[1]
    kw = dict(max_tokens=16, temperature=0, logprobs=1, stop=[stop])
    whole = llama.create_completion(PROMPT, **kw)["choices"][0]
    chunks = [c["choices"][0] for c in llama.create_completion(PROMPT, stream=True, **kw)]
    assert "".join(c["text"] for c in chunks) == whole["text"]
    assert sum((c["logprobs"]["tokens"] for c in chunks if c["logprobs"]), []) == \
        whole["logprobs"]["tokens"]
    assert chunks[-1]["finish_reason"] == whole["finish_reason"] == "stop"


def test_other_samplers_run(llama):
    for kw in (dict(mirostat_mode=1), dict(mirostat_mode=2), dict(typical_p=0.9),
               dict(repeat_penalty=1.1, frequency_penalty=0.2, presence_penalty=0.2)):
        out = llama.create_completion(PROMPT, max_tokens=4, temperature=0.7, seed=5, **kw)
        assert out["usage"]["completion_tokens"] >= 1


def test_generate_send_appends_tokens(llama):
    toks = llama.tokenize(PROMPT.encode(), special=True)
    g = llama.generate(toks, temp=0)
    first = next(g)
    extra = llama.tokenize(b" Purple", add_bos=False)
    g.send(extra)
    assert list(llama.input_ids[len(toks):len(toks) + 1 + len(extra)]) == [first] + extra
    g.close()


def test_logits_all_scores(smollm2_path):
    with Llama(model_path=smollm2_path, n_ctx=64, logits_all=True, **FAST) as llm:
        toks = llm.tokenize(b"The capital of France is", add_bos=False)
        llm.eval(toks)
        assert llm.scores.shape == (llm.n_ctx(), llm.n_vocab())
        last = llm.scores[len(toks) - 1]
        assert np.isfinite(last).all() and np.abs(last).sum() > 0
        assert llm.sample(temp=0) == int(np.argmax(last))


def test_infill_tokens_layout(vocab_dir):
    """The fill-in-the-middle prompt, shared by Llama(suffix=) and the server, on vocabularies
    that have FIM tokens: BOS where the model adds one, then PRE prefix SUF suffix MID (the
    suffix part first with spm_infill)."""
    from pyllamacy import Model
    from pyllamacy.llama import infill_tokens
    for name in ("ggml-vocab-deepseek-coder.gguf", "ggml-vocab-starcoder.gguf"):
        with Model(str(vocab_dir / name), vocab_only=True) as m:
            pre, suf, mid = m.token_fim_pre(), m.token_fim_suf(), m.token_fim_mid()
            p = m.tokenize("def add(a, b):\n", add_special=False)
            s = m.tokenize("\n    return c\n", add_special=False)
            lead = [m.token_bos()] if m.add_bos else []
            assert infill_tokens(m, p, s) == lead + [pre] + p + [suf] + s + [mid]
            assert infill_tokens(m, p, s, spm_infill=True) == lead + [suf] + s + [pre] + p + [mid]
            assert infill_tokens(m, [], []) == lead + [pre, suf, mid]
    with Model(str(vocab_dir / "ggml-vocab-gpt-2.gguf"), vocab_only=True) as m:
        with pytest.raises(ValueError, match="fill-in-the-middle"):
            infill_tokens(m, [1], [2])


def test_unknown_keywords_are_ignored_with_a_warning(smollm2_path):
    """llama-cpp-python's Llama takes any keyword; LangChain's LlamaCpp passes device=None
    (issue 13)."""
    with pytest.warns(UserWarning, match="device"):
        llm = Llama(smollm2_path, n_ctx=128, n_threads=1, verbose=False, device=None,
                    some_future_option=3)
    with llm:
        assert llm("Hi", max_tokens=2, temperature=0)["choices"][0]["text"] is not None
