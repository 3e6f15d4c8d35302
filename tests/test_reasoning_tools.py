"""Thinking templates without a tool-call format of their own (llama.cpp's "generic" JSON tool
scheme): the model may think before the JSON. The grammar admits the thought (checked with
llama.cpp's grammar engine, token by token), the reply is split into reasoning_content and the
tool calls, whole and streamed, for Llama and the server alike. The templates are llama.cpp's
own files of the pinned tree: SmolLM3 (the reply may open <think>) and
DeepSeek-R1-Distill-Llama (the prompt opens it: the reply starts inside the thought)."""
from __future__ import annotations

import json
import random
import re
import types

import pytest

import pyllamacy
from pyllamacy import Llama, chat
from pyllamacy.chat_formats import register_chat_template
from chat_streams import joined, stream_deltas  # noqa: E402
from pyllamacy.chat_generic import Thinking, thought_grammar

MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
SMOLLM3 = "HuggingFaceTB-SmolLM3-3B.jinja"
R1 = "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"
CALL = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
THOUGHT = "The user wants the weather; I call get_weather with {city: Paris} </thin <b>."


def _fmt(templates_dir, name):
    fmt = "test-reasoning-tools-" + name
    register_chat_template(fmt, (templates_dir / name).read_text())
    return fmt


def _target(model, templates_dir, name, **attrs):
    """What prepare_chat takes: `model` with one of llama.cpp's templates as its chat format."""
    return types.SimpleNamespace(model=model, chat_format=_fmt(templates_dir, name), **attrs)


@pytest.fixture(scope="module")
def vocab_model(vocab_dir):
    with pyllamacy.Model(str(vocab_dir / "ggml-vocab-qwen2.gguf"), vocab_only=True) as m:
        yield m


# -- the grammar, judged by llama.cpp's grammar engine ------------------------------------------

def _accepts(model, grammar, text) -> bool:
    """Whether llama.cpp's grammar engine takes `text` (SmolLM2's tokens of it, one by one,
    after the grammar's prefill) as a whole reply: end of generation accepted at the end."""
    s = pyllamacy.Sampler(model).grammar(grammar.grammar, grammar.root).greedy()
    try:
        for t in model.tokenize((grammar.prefill + text).encode(), add_special=False,
                                parse_special=True):
            s.accept(t)
        s.accept(model.token_eos())
    except pyllamacy.GrammarError:
        return False
    return True


def _grammar(model, templates_dir, name, **kw):
    return chat.prepare_chat(_target(model, templates_dir, name), MSGS, tools=TOOLS,
                             **kw).grammar


def test_grammar_admits_a_thought_before_the_json(model, templates_dir):
    g = _grammar(model, templates_dir, SMOLLM3)
    assert _accepts(model, g, f"<think>\n{THOUGHT}\n</think>\n\n{CALL}")
    assert _accepts(model, g, '<think>ok</think>{"response": "Sunny."}')
    assert _accepts(model, g, CALL)                                 # the thought is optional
    assert _accepts(model, g, f"<think></think>{CALL}")
    # prose after the thought, a second end tag, a thought never closed, text before it
    assert not _accepts(model, g, f"<think>{THOUGHT}</think>\nIt is sunny in Paris.")
    assert not _accepts(model, g, f"<think>{THOUGHT}</think></think>{CALL}")
    assert not _accepts(model, g, f"<think>{THOUGHT}{CALL}")
    assert not _accepts(model, g, f"Let me think.<think>{THOUGHT}</think>{CALL}")
    assert not _accepts(model, g, f"<think>{THOUGHT}</think>{CALL} done")


def test_grammar_starts_inside_a_thought_the_prompt_opened(model, templates_dir):
    """DeepSeek-R1's generation prompt ends with "<think>\\n": the reply is the rest of the
    thought, "</think>", then the JSON; the JSON alone is refused."""
    target = _target(model, templates_dir, R1)
    req = chat.prepare_chat(target, MSGS, tools=TOOLS)
    assert chat.prompt_text(target, req.plan).endswith("<\uff5cAssistant\uff5c><think>\n")
    g = req.grammar
    assert _accepts(model, g, f"{THOUGHT}\n</think>\n\n{CALL}")
    assert _accepts(model, g, f"<think> is a word.</think>{CALL}")
    assert not _accepts(model, g, CALL)
    assert not _accepts(model, g, f"{THOUGHT}</think>\nSunny.")


@pytest.mark.parametrize("end", ["aab", "abab", "</think>"])
def test_thought_rule_matches_str_find(model, end):
    """The "any text without the end tag, then the end tag" rules, for end tags that overlap
    themselves ("aab": after "aa" another "a" keeps "aa"; "abab"), against Python's str.find:
    s + end + JSON is accepted exactly when the first `end` of s + end is the last one."""
    g = types.SimpleNamespace(prefill="", root=None, grammar=None)
    g.grammar, g.root = thought_grammar('root ::= "{}"\n', Thinking("<t>", end, "<t>"))
    rng = random.Random(end)
    letters = sorted(set(end)) + ["c"]
    seen = set()
    for _ in range(60):
        s = "".join(rng.choice(letters) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.3:
            i = rng.randint(0, len(s))
            s = s[:i] + end[:rng.randint(1, len(end))] + s[i:]
        want = (s + end).find(end) == len(s)
        seen.add(want)
        assert _accepts(model, g, s + end + "{}") == want, s
    assert seen == {True, False}


def test_thinking_off_changes_nothing(model, templates_dir, smollm2_path):
    """enable_thinking False / reasoning_effort "none" (SmolLM3 closes an empty block in the
    prompt) and a template that does not think (SmolLM2's own): llama.cpp's grammar, from its
    generation prompt on, as before; the reply is read as plain generic JSON."""
    target = _target(model, templates_dir, SMOLLM3)
    for kw in ({"chat_template_kwargs": {"enable_thinking": False}},
               {"reasoning_effort": "none"}):
        req = chat.prepare_chat(target, MSGS, tools=TOOLS, **kw)
        assert req.plan.thinking is None and req.grammar.root == "root"
        assert req.grammar.prefill.endswith("<think>\n\n</think>\n")
        assert "thought-" not in req.grammar.grammar
        msg, finish = chat.chat_message(req, CALL, "stop")
        assert finish == "tool_calls" and "reasoning_content" not in msg
    own = types.SimpleNamespace(model=model, chat_format=None)
    req = chat.prepare_chat(own, MSGS, tools=TOOLS)
    assert req.plan.generic_tools and req.plan.thinking is None
    assert req.grammar.root == "root" and "thought-" not in req.grammar.grammar
    assert _accepts(model, req.grammar, CALL)
    assert not _accepts(model, req.grammar, f"<think>x</think>{CALL}")


# -- the reply parsed, whole and streamed (model-free) --------------------------------------------

# (template, reply, reasoning_content, content, calls)
REPLIES = [
    (SMOLLM3, f"<think>\n{THOUGHT}\n</think>\n\n{CALL}", THOUGHT, None,
     [("get_weather", {"city": "Paris"})]),
    (R1, f"{THOUGHT}\n</think>\n\n{CALL}", THOUGHT, None, [("get_weather", {"city": "Paris"})]),
    (SMOLLM3, '<think>Easy.</think>\n{"response": "Sunny, {20} C."}', "Easy.", "Sunny, {20} C.",
     []),
    (SMOLLM3, CALL, "", None, [("get_weather", {"city": "Paris"})]),      # did not think
]


def _calls(msg):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in msg.get("tool_calls") or []]


@pytest.mark.parametrize("case", REPLIES, ids=[f"{c[0][:8]}-{i}" for i, c in enumerate(REPLIES)])
def test_reasoning_and_calls_whole_and_streamed(case, vocab_model, templates_dir):
    name, reply, reasoning, content, calls = case
    req = chat.prepare_chat(_target(vocab_model, templates_dir, name), MSGS, tools=TOOLS)
    msg, finish = chat.chat_message(req, reply, "stop")
    assert msg.get("reasoning_content", "") == reasoning
    assert msg["content"] == content and _calls(msg) == calls
    assert finish == ("tool_calls" if calls else "stop")
    rng = random.Random(len(reply))
    for sizes in ([1] * len(reply), [4] * len(reply),
                  [rng.randint(1, 9) for _ in range(len(reply))]):
        before, deltas, sfinish = stream_deltas(req, reply, sizes)
        assert sfinish == finish
        assert joined(deltas, "reasoning_content") == reasoning
        assert joined(deltas, "content") == (content or "")
        kinds = [next(iter(d)) for d in deltas]
        # the reasoning first, then the calls (or the response); nothing after the calls
        assert kinds == sorted(kinds, key=["reasoning_content", "content",
                                           "tool_calls"].index)
        streamed = {}
        for d in deltas:
            for tc in d.get("tool_calls", []):
                streamed.setdefault(tc["index"], ["", ""])
                streamed[tc["index"]][0] += tc["function"].get("name") or ""
                streamed[tc["index"]][1] += tc["function"].get("arguments") or ""
        assert [(n, json.loads(a)) for n, a in streamed.values()] == calls
        if reasoning and set(sizes) == {1}:
            # the thought streamed while it was generated, before the reply ended
            assert len([d for d in before if "reasoning_content" in d]) > len(reasoning) // 2


def test_reasoning_format_none_keeps_the_thought_in_content(vocab_model, templates_dir):
    """reasoning_format "none": the thought as written (R1: with the "<think>\\n" its prompt
    opened) is the content, the calls are still read from the JSON after it."""
    for name, reply, raw in [
            (SMOLLM3, f"<think>\n{THOUGHT}\n</think>\n\n{CALL}", f"<think>\n{THOUGHT}\n</think>"),
            (R1, f"{THOUGHT}\n</think>\n{CALL}", f"<think>\n{THOUGHT}\n</think>")]:
        req = chat.prepare_chat(_target(vocab_model, templates_dir, name), MSGS, tools=TOOLS,
                                reasoning_format="none")
        msg, finish = chat.chat_message(req, reply, "stop")
        assert (msg["content"], finish) == (raw, "tool_calls")
        assert "reasoning_content" not in msg and _calls(msg) == REPLIES[0][4]
        _b, deltas, _f = stream_deltas(req, reply, [3] * len(reply))
        assert joined(deltas, "content") == raw and not joined(deltas, "reasoning_content")


def test_cut_short_inside_the_thought(vocab_model, templates_dir):
    """max_tokens inside the thought: all of it is reasoning (the part of an end tag held back
    while streaming comes at the end), no content, no calls."""
    req = chat.prepare_chat(_target(vocab_model, templates_dir, SMOLLM3), MSGS, tools=TOOLS)
    reply = "<think>Hmm, the weather </thi"
    d = chat.ChatDeltas(req)
    out = d.feed(reply)
    assert joined(out, "reasoning_content") == "Hmm, the weather"
    last, finish = d.finish("length")
    assert joined(out + last, "reasoning_content") == "Hmm, the weather </thi"
    assert finish == "length" and not joined(out + last, "content")
    msg, _ = chat.chat_message(req, reply, "length")
    assert msg == {"role": "assistant", "content": "",
                   "reasoning_content": "Hmm, the weather </thi"}


# -- generated by SmolLM2 with SmolLM3's template: Llama and the server -------------------------

# SmolLM2 is no thinking model: these pieces of "<think>" / "</think>" ("<", "</", "think",
# ">") are made likelier, so that it opens a thought, writes a little and closes it.
THINK_BIAS = {"44": 5.0, "9617": 5.0, "17400": 5.0, "46": 5.0}


@pytest.fixture(scope="module")
def smol3(smollm2_path, templates_dir):
    with Llama(smollm2_path, chat_format=_fmt(templates_dir, SMOLLM3), n_ctx=1024,
               n_threads=2, verbose=False) as m:
        yield m


def _check_bias_tokens(model):
    pieces = {int(t): model.token_to_piece(int(t)) for t in THINK_BIAS}
    assert pieces == {44: b"<", 9617: b"</", 17400: b"think", 46: b">"}


def test_llama_thinks_then_calls_whole_and_streamed(smol3):
    _check_bias_tokens(smol3.model)
    kw = dict(messages=MSGS, tools=TOOLS, tool_choice="required", temperature=0,
              max_tokens=80, logit_bias=THINK_BIAS)
    r = smol3.create_chat_completion(**kw)["choices"][0]
    msg = r["message"]
    assert r["finish_reason"] == "tool_calls"
    assert msg["reasoning_content"] and msg["content"] is None
    (call,) = msg["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    chunks = list(smol3.create_chat_completion(stream=True, **kw))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    kinds = [k for d in deltas for k in ("reasoning_content", "content", "tool_calls")
             if d.get(k)]
    first_call = kinds.index("tool_calls")
    assert set(kinds[:first_call]) == {"reasoning_content"} and \
        set(kinds[first_call:]) == {"tool_calls"}
    assert joined(deltas, "reasoning_content") == msg["reasoning_content"]
    args = "".join(tc["function"].get("arguments") or "" for d in deltas
                   for tc in d.get("tool_calls") or [])
    assert args == call["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # the same model and bias with thinking off: no thought, the call only
    off = smol3.create_chat_completion(chat_template_kwargs={"enable_thinking": False},
                                       **kw)["choices"][0]["message"]
    assert "reasoning_content" not in off and off["tool_calls"]
    assert not re.search("think", json.dumps(off["tool_calls"]))


@pytest.mark.optional_deps
def test_server_thinks_then_calls(smollm2_path, templates_dir):
    """The server (one shared pipeline with Llama): the openai client gets reasoning_content and
    the tool call, whole and streamed, the same as Llama's."""
    pytest.importorskip("openai")
    from pyllamacy.server import ModelSettings
    from serving import LocalServer
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="smol3",
                                   chat_format=_fmt(templates_dir, SMOLLM3), n_ctx=1024,
                                   n_batch=128, n_threads=2, n_parallel=1, flash_attn=False)])
    try:
        c = s.client()
        kw = dict(model="smol3", messages=MSGS, tools=TOOLS, tool_choice="required",
                  temperature=0, max_tokens=80, logit_bias=THINK_BIAS)
        whole = c.chat.completions.create(**kw).choices[0]
        reasoning = whole.message.model_extra.get("reasoning_content")
        assert whole.finish_reason == "tool_calls" and reasoning and not whole.message.content
        (call,) = whole.message.tool_calls
        assert call.function.name == "get_weather"
        chunks = list(c.chat.completions.create(stream=True, **kw))
        deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
        got = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
        assert got == reasoning
        assert not "".join(d.content or "" for d in deltas)
        args = "".join(tc.function.arguments or "" for d in deltas for tc in d.tool_calls or [])
        assert args == call.function.arguments
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
    finally:
        s.stop()


# -- templates llama.cpp knows by their source (LFM2) -------------------------------------------

LFM2_CALL = '<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>'


@pytest.mark.parametrize("name", ["LFM2-8B-A1B.jinja", "LFM2.5-Instruct.jinja"])
def test_lfm2_uses_its_own_tool_format(name, model, vocab_model, templates_dir):
    """llama.cpp's probe of these templates says they make no tool calls, but its chat layer
    knows them and writes LFM2's own tool-call grammar (llama-server uses it): pyllamacy uses
    it too, not the generic JSON scheme. The prompt lists the tools in LFM2's words, the grammar
    takes an LFM2 call and refuses generic JSON, and llama.cpp's parser reads the call back."""
    target = _target(model, templates_dir, name)
    req = chat.prepare_chat(target, MSGS, tools=TOOLS, tool_choice="required")
    assert not req.plan.generic_tools
    assert "List of tools: " in chat.prompt_text(target, req.plan)
    assert _accepts(model, req.grammar, LFM2_CALL)
    assert not _accepts(model, req.grammar, CALL)
    req = chat.prepare_chat(_target(vocab_model, templates_dir, name), MSGS, tools=TOOLS)
    msg, finish = chat.chat_message(req, LFM2_CALL, "stop")
    assert finish == "tool_calls" and _calls(msg) == [("get_weather", {"city": "Paris"})]
    before, deltas, sfinish = stream_deltas(req, LFM2_CALL, [3] * len(LFM2_CALL))
    assert sfinish == "tool_calls" and joined(deltas, "content") == ""
    assert "".join(tc["function"].get("arguments") or "" for d in deltas
                   for tc in d.get("tool_calls", [])) == msg["tool_calls"][0]["function"]["arguments"]
