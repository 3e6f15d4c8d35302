"""The Anthropic Messages API translation (pyllamacy.pipeline.anthropic_messages), without a
server. Oracles: the official `anthropic` client (its request bodies, its response and stream
event types, its own stream accumulator and SSE reader over an in-memory transport), the
OpenAI route's request model and message checks, and llama.cpp's chat layer rendering the
converted conversation (SmolLM2's template, Qwen's tool-calling templates)."""
from __future__ import annotations

import copy
import json

import pytest

anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")     # the transport the anthropic client is built on

from anthropic.lib.streaming._messages import accumulate_event  # noqa: E402
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent  # noqa: E402
from anthropic.types.shared import ErrorResponse  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from pyllamacy import Llama, chat  # noqa: E402
from pyllamacy.pipeline.anthropic_messages import (  # noqa: E402
    AnthropicRequestError, MessageStream, chat_request, count_tokens_request,
    count_tokens_response, error_body, message_response, sse, stop_sequence_hit)
from pyllamacy.pipeline.checks import FieldError, check_messages  # noqa: E402
from pyllamacy.pipeline.responses import (ChatChunks, ResponseMeta, chat_choice,  # noqa: E402
                                          chat_response, usage, usage_chunk)
from pyllamacy.server.types import ChatCompletionRequest  # noqa: E402

EVENT = TypeAdapter(RawMessageStreamEvent)

WEATHER = {"name": "get_weather", "description": "Get the weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}

# a tool-use round trip: user -> assistant (thinking, text, tool_use) -> user (tool_result,
# text) -> assistant -> user
ROUND_TRIP = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
         "input": {"city": "Paris"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01",
         "content": [{"type": "text", "text": "SUNNY 21C"}]},
        {"type": "text", "text": "And tomorrow?"}]},
    {"role": "assistant", "content": "Tomorrow I cannot tell."},
    {"role": "user", "content": [{"type": "text", "text": "Fine,"},
                                 {"type": "text", "text": "thanks."}]},
]


def _client(handler):
    return anthropic.Anthropic(api_key="test-key", base_url="http://anthropic.test",
                               max_retries=0,
                               http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def _sdk_body(**kwargs) -> dict:
    """The JSON body the official client sends for messages.create(**kwargs)."""
    seen = {}

    def handler(request):
        seen["body"] = json.loads(request.content)
        return httpx2.Response(200, json=message_response(_chat_completion("ok"), "m"))

    _client(handler).messages.create(**kwargs)
    return seen["body"]


def _chat_completion(content=None, calls=(), finish="stop", reasoning=None, n_prompt=11,
                     n_completion=4) -> dict:
    msg = {"role": "assistant", "content": content}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    if calls:
        msg["tool_calls"] = [{"id": cid, "type": "function",
                              "function": {"name": name, "arguments": args}}
                             for cid, name, args in calls]
    meta = ResponseMeta("chatcmpl-1234-abcd", "served")
    return chat_response(meta, [chat_choice(0, msg, finish, None)], usage(n_prompt, n_completion))


# -- requests --------------------------------------------------------------------------------

def test_sdk_request_converts_to_the_openai_request():
    body = _sdk_body(model="claude-test", max_tokens=64,
                     system=[{"type": "text", "text": "Be terse."},
                             {"type": "text", "text": "Use tools.",
                              "cache_control": {"type": "ephemeral"}}],
                     messages=ROUND_TRIP, tools=[WEATHER, TIME],
                     tool_choice={"type": "auto", "disable_parallel_tool_use": True},
                     stop_sequences=["END"], metadata={"user_id": "u1"},
                     extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5, "seed": 7})
    out = chat_request(body)
    assert out == {
        "model": "claude-test", "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "Be terse.\nUse tools."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "Let me check.",
             "reasoning_content": "I should call the tool.",
             "tool_calls": [{"id": "toolu_01", "type": "function",
                             "function": {"name": "get_weather",
                                          "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "SUNNY 21C"},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": "Tomorrow I cannot tell."},
            {"role": "user", "content": [{"type": "text", "text": "Fine,"},
                                         {"type": "text", "text": "thanks."}]}],
        "tools": [{"type": "function", "function": {
                      "name": "get_weather", "description": "Get the weather of a city",
                      "parameters": WEATHER["input_schema"]}},
                  {"type": "function", "function": {
                      "name": "get_time", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "auto", "parallel_tool_calls": False,
        "stop": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 5, "seed": 7}
    # what the OpenAI chat route takes: its request model and its message checks
    ChatCompletionRequest.model_validate(out)
    check_messages(out["messages"])


@pytest.fixture(scope="module")
def llm(smollm2_path):
    with Llama(smollm2_path, n_ctx=2048, n_threads=2, verbose=False, seed=1) as m:
        yield m


def test_round_trip_renders_with_the_model_template(llm):
    out = chat_request({"model": "m", "max_tokens": 32, "messages": ROUND_TRIP,
                        "tools": [WEATHER], "system": "Be terse."})
    creq = chat.prepare_chat(llm, out["messages"], tools=out["tools"],
                             tool_choice=out.get("tool_choice"),
                             parallel_tool_calls=out["parallel_tool_calls"])
    prompt = llm.detokenize(creq.prompt_tokens).decode()
    assert "SUNNY 21C" in prompt and "toolu_01" in prompt and "get_weather" in prompt
    assert prompt.index("Paris") < prompt.index("SUNNY 21C") < prompt.index("And tomorrow?")
    assert creq.grammar is not None          # tools: the reply is constrained


@pytest.mark.parametrize("template", ["Qwen-Qwen2.5-7B-Instruct", "Qwen-Qwen3-0.6B"])
def test_round_trip_renders_with_tool_calling_templates(templates_dir, template):
    src = (templates_dir / f"{template}.jinja").read_text()
    # ending with the tool result: Qwen3 renders the reasoning of the turn in progress
    out = chat_request({"model": "m", "max_tokens": 32, "messages": ROUND_TRIP[:2] + [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                      "content": "SUNNY 21C", "is_error": True}]}],
        "tools": [WEATHER]})
    prompt = chat.render_chat(src, out["messages"], tools=out["tools"])["prompt"]
    assert "<tool_response>\nError: SUNNY 21C\n</tool_response>" in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    if "Qwen3" in template:
        assert "<think>\nI should call the tool.\n</think>" in prompt


def test_images_and_tool_result_blocks():
    out = chat_request({"model": "m", "max_tokens": 8, "messages": [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
            {"type": "text", "text": "Compare."}]},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "tool_use", "id": "t1", "name": "look", "input": {}},
            {"type": "tool_use", "id": "t2", "name": "look", "input": {"deep": True}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1"},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True, "content": [
                {"type": "text", "text": "see"},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/b.png"}}]}]},
    ]})
    msgs = out["messages"]
    assert msgs[0] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
        {"type": "text", "text": "Compare."}]}
    assert msgs[1]["content"] is None and "reasoning_content" not in msgs[1]
    assert [c["function"]["arguments"] for c in msgs[1]["tool_calls"]] == ["{}",
                                                                            '{"deep": true}']
    assert msgs[2] == {"role": "tool", "tool_call_id": "t1", "content": ""}
    assert msgs[3] == {"role": "tool", "tool_call_id": "t2", "content": [
        {"type": "text", "text": "Error:"}, {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "https://x.test/b.png"}}]}
    check_messages(msgs)


@pytest.mark.parametrize("choice,expected,parallel", [
    ({"type": "auto"}, "auto", True),
    ({"type": "any"}, "required", True),
    ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ({"type": "tool", "name": "get_time"},
     {"type": "function", "function": {"name": "get_time"}}, True),
    ({"type": "none"}, "none", True),
    (None, None, True),
])
def test_tool_choice(llm, choice, expected, parallel):
    body = {"model": "m", "max_tokens": 8, "tools": [WEATHER, TIME],
            "messages": [{"role": "user", "content": "time?"}]}
    if choice is not None:
        body["tool_choice"] = choice
    out = chat_request(body)
    assert out.get("tool_choice") == expected
    assert out["parallel_tool_calls"] is parallel
    # the chat pipeline takes it
    chat.prepare_chat(llm, out["messages"], tools=out["tools"],
                      tool_choice=out.get("tool_choice"),
                      parallel_tool_calls=out["parallel_tool_calls"])


def test_stream_thinking_output_config_and_passthrough(llm):
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    body = {"model": "m", "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": "x?"}],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "output_config": {"effort": "low",
                              "format": {"type": "json_schema", "schema": schema}},
            "min_p": 0.1, "repeat_penalty": 1.1, "service_tier": "auto"}
    out = chat_request(body)
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["chat_template_kwargs"] == {"enable_thinking": True}
    assert out["response_format"] == {"type": "json_schema",
                                      "json_schema": {"name": "output", "schema": schema}}
    assert out["min_p"] == 0.1 and out["repeat_penalty"] == 1.1
    assert "service_tier" not in out and "thinking" not in out
    ChatCompletionRequest.model_validate(out)
    creq = chat.prepare_chat(llm, out["messages"], response_format=out["response_format"],
                             chat_template_kwargs=out["chat_template_kwargs"])
    assert creq.grammar is not None
    # thinking disabled; chat_template_kwargs given by the client win
    body.update(thinking={"type": "disabled"})
    assert chat_request(body)["chat_template_kwargs"] == {"enable_thinking": False}
    body.update(chat_template_kwargs={"enable_thinking": True, "x": 1})
    assert chat_request(body)["chat_template_kwargs"] == {"enable_thinking": True, "x": 1}


def test_count_tokens_request():
    seen = {}

    def handler(request):
        seen["body"] = json.loads(request.content)
        seen["path"] = request.url.path
        return httpx2.Response(200, json=count_tokens_response(42))

    res = _client(handler).messages.count_tokens(
        model="m", messages=ROUND_TRIP, system="Be terse.", tools=[WEATHER],
        tool_choice={"type": "any"})
    assert seen["path"] == "/v1/messages/count_tokens"
    assert isinstance(res, MessageTokensCount) and res.input_tokens == 42
    out = count_tokens_request(dict(seen["body"], temperature=0.5, stream=True))
    full = chat_request(dict(seen["body"], max_tokens=5))
    assert out["messages"] == full["messages"] and out["tools"] == full["tools"]
    assert out["tool_choice"] == "required"
    assert not {"max_tokens", "temperature", "stream", "stop"} & set(out)
    with pytest.raises(AnthropicRequestError) as e:
        count_tokens_request({"model": "m", "messages": []})
    assert e.value.param == "messages"


_GOOD = {"model": "m", "max_tokens": 16, "tools": [WEATHER],
         "messages": copy.deepcopy(ROUND_TRIP)}


def _bad(path, value):
    """_GOOD with the field at `path` (keys / list indexes) set to `value` (or removed)."""
    body = copy.deepcopy(_GOOD)
    node = body
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


@pytest.mark.parametrize("body,param,words", [
    (_bad(["max_tokens"], KeyError), "max_tokens", "missing"),
    (_bad(["max_tokens"], 0), "max_tokens", ">= 1"),
    (_bad(["max_tokens"], 2.5), "max_tokens", "integer"),
    (_bad(["model"], KeyError), "model", "missing"),
    (_bad(["messages"], KeyError), "messages", "missing"),
    (_bad(["messages"], []), "messages", "at least one"),
    (_bad(["messages"], "hi"), "messages", "list"),
    (_bad(["messages", 0, "role"], "system"), "messages[0].role", "top-level 'system'"),
    (_bad(["messages", 3, "role"], "tool"), "messages[3].role", "'user' or 'assistant'"),
    (_bad(["messages", 0, "content"], KeyError), "messages[0].content", "missing"),
    (_bad(["messages", 0, "content"], ""), "messages[0].content", "empty"),
    (_bad(["messages", 0, "content"], 5), "messages[0].content", "string or a list"),
    (_bad(["messages", 2, "content", 1, "type"], "document"),
     "messages[2].content[1].type", "unsupported block type 'document'"),
    (_bad(["messages", 2, "content", 1, "type"], "tool_use"),
     "messages[2].content[1].type", "cannot be in a user message"),
    (_bad(["messages", 1, "content", 0, "type"], "tool_result"),
     "messages[1].content[0].type", "cannot be in a assistant message"),
    (_bad(["messages", 2, "content", 1], {"text": "no type"}),
     "messages[2].content[1].type", "missing"),
    (_bad(["messages", 2, "content", 1, "text"], None), "messages[2].content[1].text", "string"),
    (_bad(["messages", 2, "content", 0, "tool_use_id"], "toolu_99"),
     "messages[2].content[0].tool_use_id", "matches no tool_use"),
    (_bad(["messages", 2, "content", 0, "content"], [{"type": "document"}]),
     "messages[2].content[0].content[0].type", "'text' or 'image'"),
    (_bad(["messages", 2, "content", 0, "is_error"], "yes"),
     "messages[2].content[0].is_error", "true or false"),
    (_bad(["messages", 1, "content", 2, "input"], "city=Paris"),
     "messages[1].content[2].input", "object"),
    (_bad(["messages", 1, "content", 2, "name"], ""), "messages[1].content[2].name", "empty"),
    (_bad(["messages", 1, "content", 2, "id"], None), "messages[1].content[2].id", "string"),
    (_bad(["messages", 0, "content"], [{"type": "image", "source": {
        "type": "base64", "media_type": "image/tiff", "data": "AA=="}}]),
     "messages[0].content[0].source.media_type", "image/png"),
    (_bad(["messages", 0, "content"], [{"type": "image", "source": {
        "type": "file", "file_id": "f"}}]),
     "messages[0].content[0].source.type", "'base64' or 'url'"),
    (_bad(["system"], 3), "system", "string or a list"),
    (_bad(["system"], [{"type": "image"}]), "system[0].type", "text blocks"),
    (_bad(["temperature"], 1.5), "temperature", "from 0.0 to 1.0"),
    (_bad(["temperature"], -0.1), "temperature", "from 0.0 to 1.0"),
    (_bad(["temperature"], True), "temperature", "number"),
    (_bad(["top_p"], 2), "top_p", "from 0.0 to 1.0"),
    (_bad(["top_k"], -1), "top_k", ">= 0"),
    (_bad(["top_k"], 1.5), "top_k", "integer"),
    (_bad(["stop_sequences"], "END"), "stop_sequences", "list"),
    (_bad(["stop_sequences"], ["a", ""]), "stop_sequences[1]", "non-empty string"),
    (_bad(["stream"], "yes"), "stream", "true or false"),
    (_bad(["metadata"], "x"), "metadata", "object"),
    (_bad(["tools"], {"name": "x"}), "tools", "list"),
    (_bad(["tools", 0, "name"], KeyError), "tools[0].name", "non-empty string"),
    (_bad(["tools", 0, "input_schema"], KeyError), "tools[0].input_schema", "missing"),
    (_bad(["tools", 0, "input_schema"], {"type": "string"}),
     "tools[0].input_schema.type", "'object'"),
    (_bad(["tools", 0, "type"], "web_search_20250305"), "tools[0].type", "server tools"),
    (_bad(["tools"], [WEATHER, WEATHER]), "tools[1].name", "unique"),
    (_bad(["tool_choice"], {"type": "required"}), "tool_choice.type", "auto, any, tool, none"),
    (_bad(["tool_choice"], "auto"), "tool_choice", "object"),
    (_bad(["tool_choice"], {"type": "tool", "name": "nope"}), "tool_choice.name",
     "not one of the tools"),
    (_bad(["tool_choice"], {"type": "tool"}), "tool_choice.name", "must name a tool"),
    (_bad(["tool_choice"], {"type": "any", "disable_parallel_tool_use": 1}),
     "tool_choice.disable_parallel_tool_use", "true or false"),
    (dict(_bad(["tools"], KeyError), tool_choice={"type": "any"}), "tool_choice",
     "needs tools"),
    (_bad(["thinking"], {"type": "on"}), "thinking.type", "enabled"),
    (_bad(["thinking"], {"type": "enabled"}), "thinking.budget_tokens", "missing"),
    (_bad(["thinking"], {"type": "enabled", "budget_tokens": 0}), "thinking.budget_tokens",
     ">= 1"),
    (_bad(["output_config"], {"format": {"type": "json_object"}}),
     "output_config.format.type", "'json_schema'"),
    (_bad(["output_config"], {"format": {"type": "json_schema"}}),
     "output_config.format.schema", "object"),
    (_bad(["chat_template_kwargs"], [1]), "chat_template_kwargs", "object"),
    ([], "body", "JSON object"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_requests_name_the_field(body, param, words):
    with pytest.raises(AnthropicRequestError) as e:
        chat_request(body)
    assert isinstance(e.value, ValueError) and isinstance(e.value, FieldError)
    assert e.value.param == param
    assert str(e.value).startswith(param + ": ")
    assert words in str(e.value)


def test_duplicate_tool_use_ids_are_refused():
    msgs = copy.deepcopy(ROUND_TRIP)
    msgs[3] = {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}]}
    with pytest.raises(AnthropicRequestError) as e:
        chat_request({"model": "m", "max_tokens": 4, "messages": msgs})
    assert e.value.param == "messages[3].content[0].id" and "unique" in str(e.value)


def test_lenient_where_anthropic_is():
    # an assistant first, consecutive user turns, an empty final assistant message (prefill)
    out = chat_request({"model": "m", "max_tokens": 4, "messages": [
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hi"},
        {"role": "user", "content": "there"}, {"role": "assistant", "content": []}]})
    assert [m["role"] for m in out["messages"]] == ["assistant", "user", "user", "assistant"]
    assert out["messages"][-1] == {"role": "assistant", "content": ""}


# -- replies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("chat_kw,stop_seq,expected", [
    (dict(content="Hello."), None,
     dict(stop_reason="end_turn", content=[{"type": "text", "text": "Hello."}])),
    (dict(content="Hel", finish="length"), None,
     dict(stop_reason="max_tokens", content=[{"type": "text", "text": "Hel"}])),
    (dict(content="one two"), "END",
     dict(stop_reason="stop_sequence", stop_sequence="END",
          content=[{"type": "text", "text": "one two"}])),
    (dict(content="bad", finish="content_filter"), None,
     dict(stop_reason="refusal", content=[{"type": "text", "text": "bad"}])),
    (dict(content="Checking.", reasoning="Need the tool.", finish="tool_calls",
          calls=[("call_a", "get_weather", '{"city": "Paris"}'),
                 ("call_b", "get_time", "{}")]), None,
     dict(stop_reason="tool_use", content=[
         {"type": "thinking", "thinking": "Need the tool.", "signature": ""},
         {"type": "text", "text": "Checking."},
         {"type": "tool_use", "id": "call_a", "name": "get_weather",
          "input": {"city": "Paris"}},
         {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}])),
    (dict(content=None, finish="tool_calls", calls=[("call_c", "f", '{"a": [1, 2]}')]), "END",
     dict(stop_reason="tool_use", content=[
         {"type": "tool_use", "id": "call_c", "name": "f", "input": {"a": [1, 2]}}])),
    (dict(content="", finish="length", calls=[("call_d", "f", '{"a": ')]), None,
     dict(stop_reason="max_tokens", content=[
         {"type": "tool_use", "id": "call_d", "name": "f", "input": {}}])),
])
def test_message_response(chat_kw, stop_seq, expected):
    msg = message_response(_chat_completion(**chat_kw), "claude-local", stop_sequence=stop_seq)
    parsed = Message.model_validate(msg)
    assert parsed.id == "msg_1234abcd" and parsed.model == "claude-local"
    assert msg["content"] == expected["content"]
    assert msg["stop_reason"] == expected["stop_reason"]
    assert msg["stop_sequence"] == expected.get("stop_sequence")
    assert msg["usage"] == {"input_tokens": 11, "output_tokens": 4}
    # the client reads it back as it would from Anthropic
    got = _client(lambda r: httpx2.Response(200, json=msg)).messages.create(
        model="claude-local", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert got == parsed


def test_message_response_needs_a_choice():
    with pytest.raises(ValueError, match="no choices"):
        message_response({"id": "x", "choices": []}, "m")


def test_stop_sequence_hit():
    body = {"stop_sequences": ["END", "STOP"]}
    assert stop_sequence_hit(body, "STOP") == "STOP"
    assert stop_sequence_hit(body, "<|im_end|>") is None      # the template's own end
    assert stop_sequence_hit({}, "END") is None and stop_sequence_hit(body, None) is None


# -- streams ---------------------------------------------------------------------------------

def _check_sequence(events):
    """Every event is one the client's types accept, named as its data's type, in Anthropic's
    order: message_start; blocks one at a time (start, deltas, stop) with indexes 0, 1, ...;
    message_delta; message_stop."""
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    open_index, n_blocks = None, 0
    for name, data in events:
        assert data["type"] == name
        if name == "ping":
            continue
        EVENT.validate_python(data)
        if name == "content_block_start":
            assert open_index is None and data["index"] == n_blocks
            open_index, n_blocks = data["index"], n_blocks + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None
    assert names.count("ping") == (1 if n_blocks else 0)


def _accumulate(events):
    snap, bufs = None, {}
    for name, data in events:
        if name != "ping":
            snap = accumulate_event(event=data, current_snapshot=snap, json_bufs=bufs)
    return Message.model_validate(snap.to_dict())


def _chunks(meta, deltas, finish):
    """OpenAI chunks of one choice from raw deltas, as pipeline.responses shapes them."""
    from pyllamacy.pipeline.responses import chat_chunk
    out = [chat_chunk(meta, 0, {"role": "assistant", "content": ""})]
    out += [chat_chunk(meta, 0, d) for d in deltas]
    out.append(chat_chunk(meta, 0, {}, finish))
    return out


def _same_ids(message: Message, other: dict) -> dict:
    """`other` (a Message dict) with its tool_use ids taken from `message` in order."""
    other = copy.deepcopy(other)
    ids = [b.id for b in message.content if b.type == "tool_use"]
    for b in other["content"]:
        if b["type"] == "tool_use":
            b["id"] = ids.pop(0)
    return other


@pytest.mark.parametrize("case", ["text", "text+tools", "both-in-one-chunk", "reasoning",
                                  "empty"])
def test_stream_events_accumulate_to_the_message(case):
    meta = ResponseMeta("chatcmpl-5678", "served")
    tc = lambda i, **kw: {"tool_calls": [dict(index=i, **kw)]}  # noqa: E731
    fn = lambda name=None, args="": {"function": dict(({"name": name} if name else {}),  # noqa
                                                       arguments=args)}
    if case == "text":
        deltas, finish = [{"content": "Hel"}, {"content": "lo"}, {"content": "."}], "stop"
        message = {"role": "assistant", "content": "Hello."}
    elif case == "text+tools":
        deltas = [{"content": "Let me "}, {"content": "look."},
                  tc(0, id="call_1", type="function", **fn("get_weather")),
                  tc(0, **fn(args='{"city"')), tc(0, **fn(args=': "Paris"}')),
                  tc(1, id="call_2", type="function", **fn("get_time", "{}"))]
        finish = "tool_calls"
        message = {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]}
    elif case == "both-in-one-chunk":
        deltas = [{"content": "On it.", "tool_calls": [
            {"index": 0, "id": "call_9", "type": "function",
             "function": {"name": "f", "arguments": '{"x": 1}'}}]}]
        finish = "tool_calls"
        message = {"role": "assistant", "content": "On it.", "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "f",
                                                              "arguments": '{"x": 1}'}}]}
    elif case == "reasoning":
        deltas = [{"reasoning_content": "Think"}, {"reasoning_content": "ing."},
                  {"content": "Answer."}]
        finish = "length"
        message = {"role": "assistant", "content": "Answer.", "reasoning_content": "Thinking."}
    else:
        deltas, finish = [], "stop"
        message = {"role": "assistant", "content": ""}
    chunks = _chunks(meta, deltas, finish)
    chunks.append(usage_chunk(meta, "chat.completion.chunk", usage(9, 6)))
    ms = MessageStream("claude-local", input_tokens=9)
    events = [e for c in chunks for e in ms.feed(c)] + ms.finish()
    _check_sequence(events)
    assert ms.ended and ms.feed(chunks[1]) == [] and ms.finish() == []
    whole = message_response(chat_response(meta, [chat_choice(0, message, finish, None)],
                                           usage(9, 6)), "claude-local")
    assert _accumulate(events).model_dump() == Message.model_validate(whole).model_dump()
    if case == "reasoning":
        kinds = [(n, d.get("delta", {}).get("type")) for n, d in events]
        assert kinds.index(("content_block_delta", "signature_delta")) < \
            kinds.index(("content_block_stop", None))


def test_stream_through_the_client_and_its_accumulator():
    """The events as SSE bytes, read by the official client's stream helper."""
    meta = ResponseMeta("chatcmpl-42", "served")
    chunks = _chunks(meta, [{"content": "one "}, {"content": "two"}], "stop")
    chunks.append(usage_chunk(meta, "chat.completion.chunk", usage(3, 2)))

    def handler(request):
        ms = MessageStream("claude-local")           # input tokens from the usage chunk
        events = [e for c in chunks for e in ms.feed(c)] + ms.finish(stop_sequence="END")
        return httpx2.Response(200, content=b"".join(sse(n, d) for n, d in events),
                               headers={"content-type": "text/event-stream"})

    with _client(handler).messages.stream(model="claude-local", max_tokens=8,
                                          messages=[{"role": "user", "content": "x"}]) as s:
        texts = list(s.text_stream)
        final = s.get_final_message()
    assert texts == ["one ", "two"]
    assert final.content[0].text == "one two" and final.id == "msg_42"
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "END"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 2)


def test_stream_with_real_chat_deltas_matches_the_whole_reply(llm):
    """The chat pipeline's own ChatChunks / ChatDeltas (SmolLM2's generic tool scheme) fed
    the same model text as chat_message: the stream accumulates to message_response of the
    whole reply."""
    out = chat_request({"model": "m", "max_tokens": 64, "tools": [WEATHER, TIME],
                        "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    creq = chat.prepare_chat(llm, out["messages"], tools=out["tools"],
                             parallel_tool_calls=out["parallel_tool_calls"])
    text = ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
            '{"name": "get_time", "arguments": {}}]}')
    meta = ResponseMeta.chat("served")
    cc = ChatChunks(meta, 0, chat.ChatDeltas(creq), logprobs=False)
    chunks = [cc.start()]
    for i in range(0, len(text), 7):
        chunks += cc.push(text[i:i + 7])
    chunks += cc.finish("stop")
    chunks.append(usage_chunk(meta, "chat.completion.chunk", usage(30, 25)))
    ms = MessageStream("claude-local", input_tokens=30)
    events = [e for c in chunks for e in ms.feed(c)] + ms.finish()
    _check_sequence(events)
    streamed = _accumulate(events)
    message, finish = chat.chat_message(creq, text, "stop")
    whole = message_response(chat_response(meta, [chat_choice(0, message, finish, None)],
                                           usage(30, 25)), "claude-local")
    assert streamed.stop_reason == "tool_use"
    assert [b.type for b in streamed.content] == ["tool_use", "tool_use"]
    expected = Message.model_validate(_same_ids(streamed, whole))
    assert streamed.model_dump() == expected.model_dump()


def test_stream_error_midway():
    meta = ResponseMeta("chatcmpl-err", "served")
    ms = MessageStream("claude-local", input_tokens=2)
    events = ms.feed(_chunks(meta, [{"content": "par"}], "stop")[1])
    events += ms.feed({"error": {"message": "decode failed", "type": "server_error",
                                 "param": None, "code": 500}})
    name, data = events[-1]
    assert name == "error"
    err = ErrorResponse.model_validate(data)
    assert err.error.type == "api_error" and err.error.message == "decode failed"
    assert ms.ended and ms.finish() == [] and ms.fail("again") == []

    def handler(request):
        return httpx2.Response(200, content=b"".join(sse(n, d) for n, d in events),
                               headers={"content-type": "text/event-stream"})

    with pytest.raises(anthropic.APIStatusError, match="decode failed"):
        with _client(handler).messages.stream(model="m", max_tokens=8, messages=[
                {"role": "user", "content": "x"}]) as s:
            for _ in s:
                pass


def test_fail_and_error_bodies():
    ms = MessageStream("m")
    name, data = ms.fail("overloaded", "overloaded_error")[0]
    assert name == "error" and ErrorResponse.model_validate(data).error.type == \
        "overloaded_error"
    for status, typ in [(400, "invalid_request_error"), (404, "not_found_error"),
                        (429, "rate_limit_error"), (500, "api_error"), (418,
                                                                        "invalid_request_error")]:
        body = error_body(status, "why")
        assert ErrorResponse.model_validate(body).error.type == typ


def test_stream_usage_from_finish_and_no_blocks():
    ms = MessageStream("m", input_tokens=4)
    events = ms.finish(usage={"prompt_tokens": 4, "completion_tokens": 1})
    _check_sequence(events)
    assert [n for n, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert events[1][1]["usage"] == {"output_tokens": 1, "input_tokens": 4}
    assert events[1][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
