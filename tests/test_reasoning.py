"""Reasoning models: the reply's thinking in reasoning_content, apart from content, whole and
streamed (issue 14). The templates are llama.cpp's own files of the pinned tree; the replies
are recorded model outputs of those families (DeepSeek-R1's starts inside the <think> its
template opened)."""
from __future__ import annotations

import json
import random
import types

import pytest

from pyllamacy import Llama, chat
from pyllamacy.chat_formats import register_chat_template
from chat_streams import joined, stream_deltas  # noqa: E402

MSGS = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]

# (template file, recorded reply, reasoning_content, content) with reasoning_format "auto"
CASES = [
    ("Qwen-Qwen3-0.6B.jinja",
     "<think>\nThe user asks for the capital of France. That is Paris.\n</think>\n\n"
     "The capital of France is **Paris**.",
     "The user asks for the capital of France. That is Paris.\n",
     "The capital of France is **Paris**."),
    # the template's generation prompt ends with "<think>\n": the reply starts inside it;
    # llama.cpp's parser (llama-server's) then keeps the whitespace around the reasoning
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
     "Okay, so the user wants the capital of France. I remember it's Paris.\n</think>\n\n"
     "The capital of France is Paris.",
     "\nOkay, so the user wants the capital of France. I remember it's Paris.\n",
     "\n\nThe capital of France is Paris."),
    ("Qwen-QwQ-32B.jinja",
     "Hmm, France's capital... Paris, of course.\n</think>\n\nParis.",
     "\nHmm, France's capital... Paris, of course.\n",
     "\n\nParis."),
    ("openai-gpt-oss-120b.jinja",
     "<|channel|>analysis<|message|>User asks capital of France. Answer: Paris.<|end|>"
     "<|start|>assistant<|channel|>final<|message|>The capital of France is Paris.",
     "User asks capital of France. Answer: Paris.",
     "The capital of France is Paris."),
    # a thinking model that did not think this time: all content
    ("Qwen-Qwen3-0.6B.jinja", "Paris is the capital of France.", "",
     "Paris is the capital of France."),
]
IDS = [f"{c[0].split('.jinja')[0]}-{i}" for i, c in enumerate(CASES)]


@pytest.fixture(scope="module")
def vocab_model(vocab_dir):
    import pyllamacy
    with pyllamacy.Model(str(vocab_dir / "ggml-vocab-qwen2.gguf"), vocab_only=True) as m:
        yield m


def _target(vocab_model, templates_dir, name, **attrs):
    """What prepare_chat takes (.model, .chat_format): the vocab-only model with one of
    llama.cpp's template files registered as its chat format."""
    fmt = "test-reasoning-" + name
    register_chat_template(fmt, (templates_dir / name).read_text())
    return types.SimpleNamespace(model=vocab_model, chat_format=fmt, **attrs)


def _splits(reply, seed):
    rng = random.Random(seed)
    return [rng.randint(1, 9) for _ in range(len(reply))]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_recorded_replies_whole_and_streamed(case, vocab_model, templates_dir):
    name, reply, reasoning, content = case
    req = chat.prepare_chat(_target(vocab_model, templates_dir, name), MSGS)
    msg, finish = chat.chat_message(req, reply, "stop")
    assert msg["content"] == content and finish == "stop"
    assert msg.get("reasoning_content", "") == reasoning
    assert ("reasoning_content" in msg) == bool(reasoning)
    for sizes in ([1] * len(reply), [3] * len(reply), _splits(reply, 1), _splits(reply, 2)):
        before, deltas, finish = stream_deltas(req, reply, sizes)
        assert joined(deltas, "reasoning_content") == reasoning, sizes[:8]
        assert joined(deltas, "content") == content, sizes[:8]
        assert finish == "stop" and not any("tool_calls" in d for d in deltas)
        if reasoning and set(sizes) == {1}:
            # streamed while generated: in many deltas, before the reply ended
            assert len([d for d in before if "reasoning_content" in d]) > 10
        # each delta carries one of the two
        assert all(len(d) == 1 for d in deltas)


@pytest.mark.parametrize("case", CASES[:4], ids=IDS[:4])
def test_reasoning_format_none_leaves_the_raw_text(case, vocab_model, templates_dir):
    """reasoning_format="none": the reply in content as generated (DeepSeek-R1: with the
    "<think>\\n" the template opened, as llama-server gives it), streamed alike. gpt-oss:
    llama.cpp keeps the analysis channel in content and drops the final channel's header."""
    name, reply, reasoning, content = case
    for target_kw, call_kw in (({}, {"reasoning_format": "none"}),
                               ({"reasoning_format": "none"}, {})):    # the target's default
        req = chat.prepare_chat(_target(vocab_model, templates_dir, name, **target_kw), MSGS,
                                **call_kw)
        msg, _ = chat.chat_message(req, reply, "stop")
        raw = ("<think>\n" if name.startswith(("deepseek", "Qwen-QwQ")) else "") + reply
        if name.startswith("openai-gpt-oss"):
            raw = f"<|channel|>analysis<|message|>{reasoning}<|end|>{content}"
        assert "reasoning_content" not in msg
        assert msg["content"] == raw
        for sizes in ([1] * len(reply), _splits(reply, 3)):
            _b, deltas, _f = stream_deltas(req, reply, sizes)
            assert joined(deltas, "content") == raw
            assert not joined(deltas, "reasoning_content")


def test_deepseek_names_match_auto(vocab_model, templates_dir):
    name, reply, reasoning, content = CASES[1]
    for fmt in ("deepseek", "deepseek-legacy"):
        req = chat.prepare_chat(_target(vocab_model, templates_dir, name), MSGS,
                                reasoning_format=fmt)
        msg, _ = chat.chat_message(req, reply, "stop")
        assert (msg["reasoning_content"], msg["content"]) == (reasoning, content)


def test_reasoning_and_tool_call(vocab_model, templates_dir):
    """Qwen3 thinks, then calls a tool: both parsed, whole and streamed (the arguments in
    pieces, as before)."""
    reply = ('<think>\nThe user wants the weather; I should call get_weather.\n</think>\n\n'
             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
             '</tool_call>')
    req = chat.prepare_chat(_target(vocab_model, templates_dir, "Qwen-Qwen3-0.6B.jinja"),
                            MSGS, tools=TOOLS)
    msg, finish = chat.chat_message(req, reply, "stop")
    assert finish == "tool_calls"
    assert msg["reasoning_content"] == \
        "The user wants the weather; I should call get_weather.\n"
    assert msg["content"] is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in msg["tool_calls"]] == [("get_weather", {"city": "Paris"})]
    for sizes in ([1] * len(reply), _splits(reply, 4)):
        before, deltas, finish = stream_deltas(req, reply, sizes)
        assert finish == "tool_calls"
        assert joined(deltas, "reasoning_content") == msg["reasoning_content"]
        assert not joined(deltas, "content")
        args = [d["tool_calls"][0]["function"].get("arguments", "") for d in deltas
                if "tool_calls" in d]
        assert "".join(args) == msg["tool_calls"][0]["function"]["arguments"]
        if set(sizes) == {1}:
            assert len([a for a in args if a]) > 1


def test_enable_thinking_and_reasoning_effort_reach_the_template(vocab_model, templates_dir):
    """Qwen3's template closes an empty <think> block itself when enable_thinking is false;
    llama-server's reasoning_effort "none" does the same; another effort is given to the
    template (gpt-oss writes it in its system message)."""
    qwen = _target(vocab_model, templates_dir, "Qwen-Qwen3-0.6B.jinja")

    def prompt(target, **kw):
        return chat.prompt_text(target, chat.prepare_chat(target, MSGS, **kw).plan)

    on = prompt(qwen)
    off = prompt(qwen, chat_template_kwargs={"enable_thinking": False})
    assert on.endswith("<|im_start|>assistant\n")
    assert off == on + "<think>\n\n</think>\n\n"
    assert prompt(qwen, reasoning_effort="none") == off
    assert prompt(qwen, chat_template_kwargs={"enable_thinking": True}) == on
    # the reply after the closed block is content
    req = chat.prepare_chat(qwen, MSGS, reasoning_effort="none")
    msg, _ = chat.chat_message(req, "Paris.", "stop")
    assert msg == {"role": "assistant", "content": "Paris."}

    oss = _target(vocab_model, templates_dir, "openai-gpt-oss-120b.jinja")
    assert "Reasoning: medium" in prompt(oss)                # the template's default
    assert "Reasoning: high" in prompt(oss, reasoning_effort="high")
    assert "Reasoning: low" in prompt(oss, chat_template_kwargs={"reasoning_effort": "low"})


@pytest.mark.parametrize("kw,field", [
    ({"reasoning_format": "think"}, "reasoning_format"),
    ({"reasoning_format": ""}, "reasoning_format"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"reasoning_effort": 3}, "reasoning_effort"),
    ({"chat_template_kwargs": {"enable_thinking": "false"}}, "enable_thinking"),
])
def test_bad_reasoning_options_name_the_field(kw, field, vocab_model, templates_dir):
    target = _target(vocab_model, templates_dir, "Qwen-Qwen3-0.6B.jinja")
    with pytest.raises(ValueError, match=field):
        chat.prepare_chat(target, MSGS, **kw)


def test_llama_default_reasoning_format(vocab_dir, templates_dir):
    path = str(vocab_dir / "ggml-vocab-qwen2.gguf")
    register_chat_template("test-reasoning-qwen3",
                           (templates_dir / "Qwen-Qwen3-0.6B.jinja").read_text())
    reply = CASES[0][1]
    with pytest.raises(ValueError, match="reasoning_format"):
        Llama(path, vocab_only=True, verbose=False, reasoning_format="raw")
    with Llama(path, vocab_only=True, verbose=False, chat_format="test-reasoning-qwen3") as m:
        assert m.reasoning_format == "auto"
        msg, _ = chat.chat_message(chat.prepare_chat(m, MSGS), reply, "stop")
        assert msg["reasoning_content"] == CASES[0][2]
    with Llama(path, vocab_only=True, verbose=False, chat_format="test-reasoning-qwen3",
               reasoning_format="none") as m:
        msg, _ = chat.chat_message(chat.prepare_chat(m, MSGS), reply, "stop")
        assert msg == {"role": "assistant", "content": reply}
        msg, _ = chat.chat_message(chat.prepare_chat(m, MSGS, reasoning_format="auto"),
                                   reply, "stop")
        assert msg["reasoning_content"] == CASES[0][2]


# -- the server, end to end with SmolLM2 ------------------------------------------------------------

@pytest.fixture(scope="module")
def server(smollm2_path, templates_dir):
    """SmolLM2 served with DeepSeek-R1's template (it opens <think> in the prompt, so the
    whole reply of a model that never closes it is reasoning), and with its own."""
    from pyllamacy.server import ModelSettings
    from serving import LocalServer
    register_chat_template(
        "test-reasoning-r1",
        (templates_dir / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").read_text())
    common = dict(n_ctx=512, n_batch=128, n_threads=2, n_parallel=1, flash_attn=False)
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="r1",
                                   chat_format="test-reasoning-r1", **common),
                     ModelSettings(model=smollm2_path, model_alias="r1-raw",
                                   chat_format="test-reasoning-r1", reasoning_format="none",
                                   **common)])
    yield s
    s.stop()


@pytest.mark.optional_deps
def test_server_reasoning_content_whole_and_streamed(server):
    pytest.importorskip("openai")
    c = server.client()
    kw = dict(messages=MSGS, max_tokens=24, temperature=0, seed=1)
    whole = c.chat.completions.create(model="r1", **kw).choices[0].message
    reasoning = whole.model_extra.get("reasoning_content")
    assert reasoning and not whole.content
    chunks = list(c.chat.completions.create(model="r1", stream=True, **kw))
    streamed = [ch.choices[0].delta for ch in chunks if ch.choices]
    got = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in streamed)
    assert got == reasoning
    assert len([d for d in streamed if (d.model_extra or {}).get("reasoning_content")]) > 1
    assert not "".join(d.content or "" for d in streamed)
    # the model's setting "none", and a request's reasoning_format over it
    raw = c.chat.completions.create(model="r1-raw", **kw).choices[0].message
    # DeepSeek-R1's parser keeps the newline after the opened <think> in the reasoning
    assert raw.content == "<think>" + reasoning
    assert not raw.model_extra.get("reasoning_content")
    again = c.chat.completions.create(model="r1-raw", extra_body={"reasoning_format": "auto"},
                                      **kw).choices[0].message
    assert again.model_extra.get("reasoning_content") == reasoning
    # OpenAI's reasoning_effort is accepted
    r = c.chat.completions.create(model="r1", reasoning_effort="low", **kw)
    assert r.choices[0].message.model_extra.get("reasoning_content")


@pytest.mark.optional_deps
@pytest.mark.parametrize("extra,field", [({"reasoning_format": "thinking"}, "reasoning_format"),
                                         ({"reasoning_effort": "maximal"}, "reasoning_effort"),
                                         ({"chat_template_kwargs": {"enable_thinking": "no"}},
                                          "enable_thinking")])
def test_server_rejects_bad_reasoning_options(server, extra, field):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(model="r1", messages=MSGS, max_tokens=2,
                                                extra_body=extra)
    assert e.value.status_code == 400 and field in str(e.value)
