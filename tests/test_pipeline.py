"""pyllamacy.pipeline without a model: prompts, options, sampling history, TokenText, the
response builders -- and the import rules that keep it one pipeline (no HTTP, no Llama)."""
from __future__ import annotations

import ast
import pathlib

import pytest

from pyllamacy import ContextOverflowError, SamplerError
from pyllamacy.pipeline import (ChatChunks, ResponseMeta, SamplingParams, TokenText,
                                chat_choice, chat_logprobs, chat_logprobs_count, chat_response,
                                completion_chunk, completion_logprobs,
                                completion_logprobs_count, completion_response, echo_entries,
                                feed_history, logprob_entry, prompt_tokens, stop_strings,
                                token_budget, usage)

PKG = pathlib.Path(__file__).resolve().parent.parent / "pyllamacy"


class FakeModel:
    """A byte-level vocabulary: token 10 + b is byte b; 1 is BOS; 2, 3, 4 are FIM tokens."""
    n_vocab = 300

    def __init__(self, bos=1, fim=(2, 3, 4), add_bos=True):
        self.bos, self.fim, self.add_bos = bos, fim, add_bos

    def token_bos(self):
        return self.bos

    def token_fim_pre(self):
        return self.fim[0]

    def token_fim_suf(self):
        return self.fim[1]

    def token_fim_mid(self):
        return self.fim[2]

    def tokenize(self, text, add_special=True, parse_special=False):
        ids = [10 + b for b in text]
        return ([self.bos] if add_special and self.add_bos and self.bos >= 0 else []) + ids

    def detokenize(self, ids):
        return bytes(i - 10 for i in ids if i >= 10)

    def token_to_piece(self, t, special=False):
        return bytes([t - 10]) if t >= 10 else b""


def _ids(text):
    return [10 + b for b in text.encode()]


# -- prompts -------------------------------------------------------------------------------------

def test_prompt_forms():
    m = FakeModel()
    assert prompt_tokens(m, "hi") == ([1] + _ids("hi"), "hi")
    assert prompt_tokens(m, b"hi") == ([1] + _ids("hi"), "hi")
    assert prompt_tokens(m, ["hi"]) == ([1] + _ids("hi"), "hi")
    assert prompt_tokens(m, _ids("ok")) == (_ids("ok"), "ok")
    assert prompt_tokens(m, "") == ([1], "")                     # empty: BOS
    assert prompt_tokens(m, []) == ([1], "")
    with pytest.raises(ValueError, match="no BOS"):
        prompt_tokens(FakeModel(bos=-1), "")
    with pytest.raises(ValueError, match="one prompt per request"):
        prompt_tokens(m, ["a", "b"])
    with pytest.raises(ValueError, match=r"0\.\.299"):
        prompt_tokens(m, [5, 300])
    with pytest.raises(TypeError):
        prompt_tokens(m, {"prompt": "x"})
    with pytest.raises(TypeError):
        prompt_tokens(m, [1, "a"])


def test_prompt_fim():
    m = FakeModel()
    toks, text = prompt_tokens(m, "ab", "cd")
    assert text == "ab" and toks == [1, 2] + _ids("ab") + [3] + _ids("cd") + [4]
    toks, _ = prompt_tokens(m, "ab", "cd", spm_infill=True)
    assert toks == [1, 3] + _ids("cd") + [2] + _ids("ab") + [4]
    with pytest.raises(ValueError, match="fill-in-the-middle.*model 'x' has none"):
        prompt_tokens(FakeModel(fim=(-1, -1, -1)), "ab", "cd", model_name="model 'x'")


# -- options -------------------------------------------------------------------------------------

def test_token_budget():
    assert token_budget(None, 10, 100) == 90
    assert token_budget(0, 10, 100) == 90
    assert token_budget(5, 10, 100) == 5
    assert token_budget(500, 10, 100) == 90
    assert token_budget(None, 10, 100, limit=20) == 20
    with pytest.raises(ValueError, match="max_tokens must be <= 20"):
        token_budget(21, 10, 100, limit=20)
    with pytest.raises(ContextOverflowError, match="exceed context window of 100.*a slot"):
        token_budget(None, 100, 100, holder="a slot")
    with pytest.raises(TypeError):
        token_budget("many", 1, 100)


def test_logprob_counts_and_stops():
    assert completion_logprobs_count(None) is None and completion_logprobs_count(3) == 3
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="logprobs"):
            completion_logprobs_count(bad)
    with pytest.raises(ValueError, match="logprobs must be <= 20"):
        completion_logprobs_count(21, limit=20)
    assert chat_logprobs_count(None, None) is None
    assert chat_logprobs_count(True, None) == 0 and chat_logprobs_count(True, 2) == 2
    with pytest.raises(ValueError, match="top_logprobs requires logprobs"):
        chat_logprobs_count(False, 2)
    with pytest.raises(ValueError, match="top_logprobs must be <= 20"):
        chat_logprobs_count(True, 99, limit=20)
    assert stop_strings(None) == [] and stop_strings("a") == ["a"]
    assert stop_strings(["a", "", "a", b"b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="at most 2 stop strings"):
        stop_strings(["a", "b", "c"], limit=2)


# -- sampling ------------------------------------------------------------------------------------

def _sp(**kw):
    base = dict(temp=0.8, top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0, repeat_penalty=1.0,
                frequency_penalty=0.0, presence_penalty=0.0, mirostat_mode=0, mirostat_tau=5.0,
                mirostat_eta=0.1)
    base.update(kw)
    return SamplingParams(**base)


def test_sampling_params_checked():
    for kw in (dict(top_k=-1), dict(top_p=1.5), dict(temp=float("nan")), dict(mirostat_mode=3),
               dict(repeat_penalty=0), dict(logit_bias={"x": 1})):
        with pytest.raises(SamplerError):
            _sp(**kw)
    with pytest.raises(TypeError):
        _sp(grammar=3)
    assert _sp(logit_bias={"5": "1.5"}).logit_bias == {5: 1.5}
    assert not _sp().penalized and _sp(presence_penalty=0.5).penalized


class _Recorder:
    def __init__(self):
        self.seen = []

    def accept(self, t):
        self.seen.append(t)


def test_feed_history():
    import numpy as np
    ctx = [5, -1, -1, 6, 7, 8]                      # -1: media positions
    s = _Recorder()
    feed_history(s, _sp(), ctx, 64)
    assert s.seen == []                             # no penalty: nothing to see
    s = _Recorder()
    feed_history(s, _sp(repeat_penalty=1.1), ctx, 4)
    assert s.seen == [6, 7, 8]                      # the last 4 positions, less media
    s = _Recorder()
    feed_history(s, _sp(repeat_penalty=1.1), np.array(ctx, dtype=np.intc), -1)
    assert s.seen == [5, 6, 7, 8]
    s = _Recorder()
    feed_history(s, _sp(repeat_penalty=1.1), ctx, 0)
    assert s.seen == []
    s = _Recorder()
    feed_history(s, _sp(repeat_penalty=1.1, grammar="root ::= \"a\""), ctx, 4, generated=[9])
    assert s.seen == [9]                            # a grammar sees the reply, not the prompt


# -- text ----------------------------------------------------------------------------------------

def _entry(text, lp=-0.5):
    return text, lp, {text: lp}


def test_token_text_utf8_and_entries():
    tt = TokenText(base=3)
    word = "é!".encode()                          # é is two bytes, split over two tokens
    out = [tt.push(word[:1], _entry("")), tt.push(word[1:2], _entry("é")),
           tt.push(word[2:], _entry("!"))]
    assert out[0] == ("", [])                     # half a character: nothing yet
    assert out[1][0] == "é" and [e[1] for e in out[1][1]] == [3, 3]
    assert out[2] == ("!", [("!", 4, -0.5, {"!": -0.5})])
    assert tt.finish("length") == ("", []) and tt.finish_reason == "length"
    assert tt.n_tokens == 3


def test_token_text_stop_drops_cut_entries():
    tt = TokenText(["END"])
    got = [tt.push(p.encode(), _entry(p)) for p in ("ab", "E", "N", "D", "zz")]
    assert got[0] == ("ab", [("ab", 0, -0.5, {"ab": -0.5})])
    assert got[1] == got[2] == ("", [])           # could be the stop: held back
    assert got[3] == ("", []) and tt.stopped and tt.stop_hit == "END"
    assert got[4] == ("", [])                     # after the stop: ignored
    assert tt.n_tokens == 4
    assert tt.finish("length") == ("", []) and tt.finish_reason == "stop"


def test_token_text_held_back_then_released():
    tt = TokenText(["END"])
    assert tt.push(b"x", _entry("x")) == ("x", [("x", 0, -0.5, {"x": -0.5})])
    assert tt.push(b"E", _entry("E")) == ("", [])      # an entry goes out with its text
    assert tt.finish(None) == ("E", [("E", 1, -0.5, {"E": -0.5})])
    assert tt.finish_reason == "stop"


@pytest.mark.parametrize("reason,want", [("stop", "stop"), ("length", "length"),
                                         ("aborted", "stop"), (None, "stop"),
                                         ("error", "error")])
def test_token_text_finish_reasons(reason, want):
    tt = TokenText()
    err = RuntimeError("boom")
    tt.finish(reason, err if reason == "error" else None)
    assert tt.finish_reason == want
    assert tt.error is (err if want == "error" else None)


def test_logprob_entry_top():
    m = FakeModel()
    a, b = 10 + ord("a"), 10 + ord("b")
    text, lp, top = logprob_entry(m, a, -0.1, [(a, -0.1), (b, -2.0), (b, -3.0)])
    assert (text, lp) == ("a", -0.1) and top == {"a": -0.1, "b": -2.0}


# -- responses -----------------------------------------------------------------------------------

ENTRIES = [("He", 5, -0.1, {"He": -0.1}), ("llo", 7, -0.2, {"llo": -0.2, "y": -3.0})]


def test_logprobs_shapes():
    assert completion_logprobs(ENTRIES) == {
        "tokens": ["He", "llo"], "text_offset": [5, 7], "token_logprobs": [-0.1, -0.2],
        "top_logprobs": [{"He": -0.1}, {"llo": -0.2, "y": -3.0}]}
    lp = chat_logprobs(ENTRIES)
    assert lp["refusal"] is None and [e["token"] for e in lp["content"]] == ["He", "llo"]
    assert lp["content"][1]["bytes"] == list(b"llo")
    assert [t["token"] for t in lp["content"][1]["top_logprobs"]] == ["llo", "y"]
    assert usage(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_completion_objects():
    meta = ResponseMeta("cmpl-1", "m", created=7)
    ch = completion_chunk(meta, 1, "x", None, ENTRIES)
    assert ch["object"] == "text_completion" and ch["created"] == 7 and "usage" not in ch
    assert ch["choices"][0]["index"] == 1 and ch["choices"][0]["logprobs"]["tokens"]
    assert completion_chunk(meta, 0, "", "stop")["choices"][0]["logprobs"] is None
    r = completion_response(meta, [ch["choices"][0]], usage(1, 2))
    assert r["usage"]["total_tokens"] == 3 and r["id"] == "cmpl-1"
    assert ResponseMeta.completion("m").id.startswith("cmpl-")
    assert ResponseMeta.chat("m").id.startswith("chatcmpl-")


def test_echo_entries():
    scored = {2: ("b", -1.0, {"b": -1.0})}
    out = echo_entries([1, 10 + ord("a"), 10 + ord("b")], 1, scored,
                       lambda t: chr(t - 10))
    assert out == [("a", 0, None, None), ("b", 1, -1.0, {"b": -1.0})]
    # without BOS the first token is the one without a log-probability
    out = echo_entries([10 + ord("a"), 10 + ord("b")], 1, {1: ("b", -1.0, {})},
                       lambda t: chr(t - 10))
    assert out == [("a", 0, None, None), ("b", 1, -1.0, {})]


class _Deltas:
    """ChatDeltas' interface: content until "{", then one tool call."""

    def __init__(self):
        self.text = ""

    def feed(self, text):
        self.text += text
        return [] if "{" in self.text else [{"content": text}]

    def finish(self, reason):
        if "{" in self.text:
            return ([{"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                      "function": {"name": "f", "arguments": "{}"}}]}],
                    "tool_calls")
        return [], reason


def test_chat_chunks():
    meta = ResponseMeta("chatcmpl-1", "m", created=1)
    cc = ChatChunks(meta, 2, _Deltas(), logprobs=True)
    first = cc.start()
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    a = cc.push("Hi", ENTRIES[:1])
    assert [c["choices"][0]["delta"] for c in a] == [{"content": "Hi"}]
    assert a[0]["choices"][0]["logprobs"]["content"][0]["token"] == "He"
    b = cc.push("{", ENTRIES[1:])                 # no delta yet: the entries still go out
    assert [c["choices"][0]["delta"] for c in b] == [{"content": ""}]
    assert b[0]["choices"][0]["logprobs"] is not None
    last = cc.finish("stop")
    assert last[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "f"
    assert last[-1]["choices"][0] == {"index": 2, "delta": {}, "logprobs": None,
                                      "finish_reason": "tool_calls"}
    r = chat_response(meta, [chat_choice(0, {"role": "assistant", "content": "Hi"}, "stop",
                                         None)], usage(1, 1))
    assert r["object"] == "chat.completion" and r["choices"][0]["logprobs"] is None


# -- the chat handler gets every argument ---------------------------------------------------------

def test_chat_handler_gets_the_arguments_it_used_to_lose():
    from pyllamacy.chat import create_chat_completion
    seen = {}

    class FakeLlama:
        chat_format = None

        @staticmethod
        def chat_handler(**kw):
            seen.update(kw)
            return {"ok": True}

    def stop(ids, logits):
        return False
    assert create_chat_completion(FakeLlama(), [{"role": "user", "content": "x"}],
                                  parallel_tool_calls=True,
                                  chat_template_kwargs={"enable_thinking": False},
                                  stopping_criteria=stop) == {"ok": True}
    assert seen["parallel_tool_calls"] is True and seen["stopping_criteria"] is stop
    assert seen["chat_template_kwargs"] == {"enable_thinking": False}
    seen.clear()
    create_chat_completion(FakeLlama(), [{"role": "user", "content": "x"}])
    # not given: not passed (llama-cpp-python handlers without these keywords keep working)
    assert not {"parallel_tool_calls", "chat_template_kwargs", "stopping_criteria"} & set(seen)


# -- import rules ---------------------------------------------------------------------------------

def _imports(path: pathlib.Path, package: str):
    """(imported module, imported names) for every import in the file, local ones included."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            names = [a.name for a in node.names]
            if node.module is None:       # from . import x: x is a module
                out += [(f"{mod}.{n}", []) for n in names]
            else:
                out.append((mod, names))
    return out


def _module_graph():
    graph = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        name = ".".join(parts)
        package = name if is_pkg else ".".join(parts[:-1])
        graph[name] = (path, _imports(path, package + ".__init__" if is_pkg else name))
    return graph


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        mod = todo.pop()
        if mod in seen or mod not in graph:
            continue
        seen.add(mod)
        for dep, _names in graph[mod][1]:
            todo.append(dep)
            # importing pyllamacy.pipeline.x runs pyllamacy.pipeline first (pyllamacy's own
            # __init__, the public facade that lists everything, is not counted)
            parts = dep.split(".")
            for k in range(2, len(parts)):
                todo.append(".".join(parts[:k]))
    return seen


def test_pipeline_imports_no_front_end():
    """Not Llama, not the server (no HTTP), not even indirectly; and not the chat templates
    (chat replies come in through a deltas object, ChatChunks)."""
    graph = _module_graph()
    for mod in [m for m in graph if m.startswith("pyllamacy.pipeline")]:
        reach = _reachable(graph, mod)
        assert not {m for m in reach if m == "pyllamacy.llama"
                    or m.startswith("pyllamacy.server")}, mod
        assert "pyllamacy.chat" not in {dep for dep, _ in graph[mod][1]}, mod


def test_chat_does_not_need_llama():
    graph = _module_graph()
    for mod in ("pyllamacy.chat", "pyllamacy.chat_multimodal"):
        assert "pyllamacy.llama" not in _reachable(graph, mod), mod


def test_no_private_names_across_modules():
    """The pipeline and its users import only public names of other pyllamacy modules (the
    compiled core, pyllamacy._llama / _chat, is imported by its public names)."""
    graph = _module_graph()
    owned = [m for m in graph if m.startswith("pyllamacy.pipeline")] + [
        "pyllamacy.llama", "pyllamacy.chat", "pyllamacy.chat_multimodal",
        "pyllamacy.server.routes"]
    for mod in owned:
        for dep, names in graph[mod][1]:
            if not dep.startswith("pyllamacy") or dep == mod:
                continue
            private = [n for n in names if n.startswith("_")]
            assert not private, (mod, dep, private)
