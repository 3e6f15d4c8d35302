"""pyllamacy.pipeline.responses_api: the Responses API over the chat pipeline, checked against
the openai package's own types (Response, ResponseStreamEvent, ResponseItemList) and its own
stream accumulators (ResponseStreamState for Responses events, ChatCompletionStreamState for
chat chunks), with real SmolLM2 replies from Llama.create_chat_completion."""
from __future__ import annotations

import json
import threading

import pytest

openai = pytest.importorskip("openai")
from openai import omit  # noqa: E402
from openai.lib.streaming.chat import ChatCompletionStreamState  # noqa: E402
from openai.lib.streaming.responses import ResponseStreamState  # noqa: E402
from openai.types.chat import ChatCompletionChunk  # noqa: E402
from openai.types.responses import (Response, ResponseItemList,  # noqa: E402
                                    ResponseStreamEvent)
from pydantic import TypeAdapter  # noqa: E402

from pyllamacy import Llama, chat  # noqa: E402
from pyllamacy.defaults import TEMPERATURE, TOP_P  # noqa: E402
from pyllamacy.pipeline.responses_api import (ResponseEventStream,  # noqa: E402
                                              ResponseNotFound, ResponsesRequestError,
                                              ResponseStore, chat_request, new_response_id,
                                              parse_request, response_object)

EVENT = TypeAdapter(ResponseStreamEvent)

WEATHER = {"type": "function", "name": "get_weather", "description": "Get a city's weather",
           "parameters": {"type": "object", "properties": {"city": {
               "type": "string", "enum": ["Rome", "Paris", "Lyon", "Oslo"]}},
               "required": ["city"]}}


@pytest.fixture(scope="module")
def llm(smollm2_path):
    with Llama(smollm2_path, n_ctx=2048, n_threads=2, verbose=False, seed=1) as m:
        yield m


def _llama_kwargs(chat_req: dict) -> dict:
    """A chat request as Llama.create_chat_completion's keywords (it takes no user /
    stream_options: the server's route does)."""
    return {k: v for k, v in chat_req.items() if k not in ("user", "stream_options")}


def _rendered(llm, chat_req: dict) -> str:
    """The prompt pyllamacy.chat renders for a chat request (as the server's route calls
    prepare_chat), as text."""
    req = chat.prepare_chat(llm, chat_req["messages"], tools=chat_req.get("tools"),
                            tool_choice=chat_req.get("tool_choice"),
                            response_format=chat_req.get("response_format"),
                            parallel_tool_calls=chat_req.get("parallel_tool_calls"),
                            chat_template_kwargs=chat_req.get("chat_template_kwargs"),
                            reasoning_effort=chat_req.get("reasoning_effort"))
    return llm.detokenize(req.prompt_tokens, special=True).decode()


# -- requests ----------------------------------------------------------------------------------

def test_string_input_and_instructions(llm):
    body = {"model": "m", "input": "What is 2+2?", "instructions": "Answer tersely."}
    c = chat_request(body, ResponseStore())
    assert c["messages"] == [{"role": "system", "content": "Answer tersely."},
                             {"role": "user", "content": "What is 2+2?"}]
    assert c["model"] == "m" and c["stream"] is False
    assert (c["temperature"], c["top_p"]) == (TEMPERATURE, TOP_P)
    assert "tools" not in c and "max_tokens" not in c
    p = _rendered(llm, c)
    assert "<|im_start|>system\nAnswer tersely.<|im_end|>" in p
    assert p.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


def test_item_list_with_function_call_round_trip(llm):
    body = {"input": [
        {"role": "developer", "content": "Use the tools."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather",
         "arguments": "{\"city\": \"Paris\"}"},
        {"type": "function_call", "call_id": "call_b", "name": "get_weather",
         "arguments": "{\"city\": \"Lyon\"}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "22 C, sunny"},
        {"type": "function_call_output", "call_id": "call_b",
         "output": [{"type": "input_text", "text": "18 C"}]}],
        "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": True}
    r = parse_request(body, ResponseStore())
    m = r.chat["messages"]
    assert m[0] == {"role": "system", "content": "Use the tools."}
    assert m[1] == {"role": "user", "content": "Weather in Paris?"}
    # the assistant text and both calls are one assistant message; the reasoning is dropped
    assert m[2]["role"] == "assistant" and m[2]["content"] == "Let me check."
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in m[2]["tool_calls"]] == [("call_a", "get_weather", {"city": "Paris"}),
                                             ("call_b", "get_weather", {"city": "Lyon"})]
    assert m[3] == {"role": "tool", "tool_call_id": "call_a", "content": "22 C, sunny"}
    assert m[4] == {"role": "tool", "tool_call_id": "call_b", "content": "18 C"}
    assert len(m) == 5
    assert r.chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"],
        "parameters": WEATHER["parameters"]}}]
    assert r.chat["tool_choice"] == "auto" and r.chat["parallel_tool_calls"] is True
    # the stored input items have ids and OpenAI's item shapes
    assert [it["type"] for it in r.input_items] == [
        "message", "message", "reasoning", "message", "function_call", "function_call",
        "function_call_output", "function_call_output"]
    assert all(it["id"] for it in r.input_items) and r.input_items[2]["id"] == "rs_1"
    p = _rendered(llm, r.chat)
    assert "Weather in Paris?" in p and "22 C, sunny" in p and "18 C" in p
    assert '"Lyon"' in p and p.endswith("<|im_start|>assistant\n")


def test_function_call_without_text_is_an_assistant_message_with_null_content():
    c = chat_request({"input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
        "tools": [{"type": "function", "name": "f"}]})
    assert c["messages"][1]["role"] == "assistant" and c["messages"][1]["content"] is None
    assert c["messages"][1]["tool_calls"][0]["id"] == "c1"


def test_fields_mapped():
    body = {"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}],
        "tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "answer", "strict": True,
                            "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
        "max_output_tokens": 7, "temperature": 0.0, "top_p": 0.5, "stream": True,
        "user": "u1", "seed": 3, "top_k": 5, "reasoning": {"effort": "low"},
        "include": ["message.output_text.logprobs"], "top_logprobs": 2,
        "metadata": {"k": "v"}, "store": False, "truncation": "disabled"}
    r = parse_request(body)
    c = r.chat
    assert c["messages"][0]["content"][1] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                           "detail": "auto"}}
    assert c["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert c["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True,
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    assert (c["max_tokens"], c["temperature"], c["top_p"]) == (7, 0.0, 0.5)
    assert c["stream"] is True and c["stream_options"] == {"include_usage": True}
    assert (c["user"], c["seed"], c["top_k"]) == ("u1", 3, 5)
    assert c["reasoning_effort"] == "low" and "chat_template_kwargs" not in c
    assert (c["logprobs"], c["top_logprobs"]) == (True, 2)
    assert r.store is False and r.stream is True
    assert chat_request({"input": "x", "text": {"format": {"type": "json_object"}}})[
        "response_format"] == {"type": "json_object"}
    assert "response_format" not in chat_request({"input": "x",
                                                  "text": {"format": {"type": "text"}}})
    assert chat_request({"input": "x", "reasoning": {"effort": "none"}})[
        "reasoning_effort"] == "none"


def test_json_schema_request_renders_and_constrains(llm):
    c = chat_request({"input": "Give a name.", "max_output_tokens": 60, "temperature": 0.0,
                      "text": {"format": {"type": "json_schema", "name": "n", "schema": {
                          "type": "object", "properties": {"name": {"type": "string",
                                                                    "maxLength": 6}},
                          "required": ["name"]}}}})
    assert c["response_format"]["type"] == "json_schema"
    out = llm.create_chat_completion(**_llama_kwargs(c))
    assert out["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(out["choices"][0]["message"]["content"])["name"], str)


def test_previous_response_id_chains_through_the_store(llm):
    store = ResponseStore()
    first = parse_request({"input": "My name is Ada.", "instructions": "Be kind."}, store)
    chat1 = {"model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello Ada!"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}
    resp1 = response_object(chat1, first.body, new_response_id(), 1700000000)
    store.put(resp1, first.input_items)

    second = parse_request({"input": "What is my name?", "previous_response_id": resp1["id"],
                            "instructions": "Answer in one word."}, store)
    # the earlier input and output come first; the earlier instructions are not carried over
    assert second.chat["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada!"},
        {"role": "user", "content": "What is my name?"}]
    assert [it["type"] for it in second.input_items] == ["message", "message", "message"]
    assert second.input_items[1] == resp1["output"][0]
    p = _rendered(llm, second.chat)
    assert "Be kind." not in p
    assert p.index("My name is Ada.") < p.index("Hello Ada!") < p.index("What is my name?")

    # a third turn sees all of it; the stored input items are listed newest first
    chat2 = dict(chat1, choices=[{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "Ada."}}])
    resp2 = response_object(chat2, second.body, new_response_id(), 1700000001)
    store.put(resp2, second.input_items)
    third = chat_request({"input": "Thanks", "previous_response_id": resp2["id"]}, store)
    assert [m["content"] for m in third["messages"]] == [
        "My name is Ada.", "Hello Ada!", "What is my name?", "Ada.", "Thanks"]
    listed = store.input_items(resp2["id"])
    ResponseItemList.model_validate(listed)
    assert [it["id"] for it in listed["data"]] == [it["id"] for it in second.input_items][::-1]
    assert resp2["previous_response_id"] == resp1["id"]
    Response.model_validate(resp2)


def test_function_call_output_may_answer_a_call_of_the_previous_response():
    store = ResponseStore()
    first = parse_request({"input": "Weather in Oslo?", "tools": [WEATHER]}, store)
    chat1 = {"model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}]}
    resp1 = response_object(chat1, first.body, new_response_id(), 1)
    store.put(resp1, first.input_items)
    c = chat_request({"previous_response_id": resp1["id"], "tools": [WEATHER], "input": [
        {"type": "function_call_output", "call_id": "call_9", "output": "-3 C"}]}, store)
    assert c["messages"][1]["tool_calls"][0]["id"] == "call_9"
    assert c["messages"][2] == {"role": "tool", "tool_call_id": "call_9", "content": "-3 C"}


def test_unknown_previous_response_id_is_not_found():
    with pytest.raises(ResponseNotFound) as e:
        chat_request({"input": "x", "previous_response_id": "resp_nope"}, ResponseStore())
    assert e.value.param == "previous_response_id" and "resp_nope" in str(e.value)
    assert isinstance(e.value, KeyError)
    with pytest.raises(ResponseNotFound):          # no store at all
        chat_request({"input": "x", "previous_response_id": "resp_nope"})


BAD = [
    ({}, "input"),
    ({"input": 3}, "input"),
    ({"input": [5]}, "input[0]"),
    ({"input": [{"content": "x"}]}, "input[0].type"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user"}]}, "input[0].content"),
    ({"input": [{"role": "user", "content": 3}]}, "input[0].content"),
    ({"input": ["ok", {"role": "user", "content": [{"type": "input_text", "text": "a"},
                                                   {"type": "audio"}]}][1:]},
     "input[0].content[1].type"),
    ({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[2].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "system", "content": [{"type": "input_image",
                                                "image_url": "http://x/y.png"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
     "input[0].content[0].text"),
    ({"input": [{"role": "assistant", "content": [{"type": "input_image",
                                                   "image_url": "http://x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]},
     "input[0].name"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
     "input[0].arguments"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
     "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c"}]}, "input[1].output"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": [{"type": "reasoning", "summary": "no"}]}, "input[0].summary"),
    ({"input": "x", "instructions": 5}, "instructions"),
    ({"input": "x", "tools": {"type": "function"}}, "tools"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "tools": [WEATHER, {"type": "file_search", "vector_store_ids": []}]},
     "tools[1].type"),
    ({"input": "x", "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tools[0].name"),
    ({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": "{}"}]},
     "tools[0].parameters"),
    ({"input": "x", "tools": [{"type": "function", "name": "f"},
                              {"type": "function", "name": "f"}]}, "tools[1].name"),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
     "tool_choice.name"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "web_search_preview"}},
     "tool_choice.type"),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
     "text.format.schema"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
     "text.format.name"),
    ({"input": "x", "text": {"verbosity": "loud"}}, "text.verbosity"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": "5"}, "max_output_tokens"),
    ({"input": "x", "temperature": 3}, "temperature"),
    ({"input": "x", "top_p": -0.1}, "top_p"),
    ({"input": "x", "top_logprobs": 21}, "top_logprobs"),
    ({"input": "x", "stream": "yes"}, "stream"),
    ({"input": "x", "store": 1}, "store"),
    ({"input": "x", "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"input": "x", "metadata": {"k": 1}}, "metadata.k"),
    ({"input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"input": "x", "truncation": "auto"}, "truncation"),
    ({"input": "x", "truncation": "sometimes"}, "truncation"),
    ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"input": "x", "include": ["everything"]}, "include[0]"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "\ud800"}, "input"),
    ({"input": [{"role": "user", "content": "ok \udfff"}]}, "input[0].content"),
]


@pytest.mark.parametrize("body,param", BAD, ids=[p for _, p in BAD])
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(ResponsesRequestError) as e:
        parse_request(body, ResponseStore())
    assert e.value.param == param
    assert param in str(e.value)
    assert isinstance(e.value, ValueError)


def test_the_errors_say_what_is_supported():
    with pytest.raises(ResponsesRequestError, match="built-in tool 'web_search'"):
        chat_request({"input": "x", "tools": [{"type": "web_search"}]})
    with pytest.raises(ResponsesRequestError, match="flat"):
        chat_request({"input": "x", "tools": [{"type": "function",
                                               "function": {"name": "f"}}]})
    with pytest.raises(ResponsesRequestError, match="input_file parts are not supported"):
        chat_request({"input": [{"role": "user", "content": [{"type": "input_file"}]}]})


# -- response objects ----------------------------------------------------------------------------

def _chat(message: dict, finish: str = "stop", usage=(11, 5), model: str = "smol") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish,
                         "logprobs": None}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                      "total_tokens": sum(usage)}}


def test_text_reply_response_object():
    body = {"model": "smol", "input": "hi", "instructions": "Be brief.", "metadata": {"a": "b"},
            "max_output_tokens": 50, "temperature": 0.3}
    r = response_object(_chat({"role": "assistant", "content": "Hello!"}), body, "resp_1",
                        1700000000, completed_at=1700000002)
    resp = Response.model_validate(r)
    assert resp.output_text == "Hello!" and resp.status == "completed"
    assert r["output"][0]["id"].startswith("msg_") and r["output"][0]["status"] == "completed"
    assert r["output"][0]["content"] == [{"type": "output_text", "text": "Hello!",
                                          "annotations": [], "logprobs": []}]
    assert (r["id"], r["object"], r["created_at"], r["completed_at"], r["model"]) == (
        "resp_1", "response", 1700000000, 1700000002, "smol")
    assert r["usage"] == {"input_tokens": 11, "output_tokens": 5, "total_tokens": 16,
                          "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 0}}
    assert (r["instructions"], r["metadata"], r["max_output_tokens"], r["temperature"],
            r["top_p"]) == ("Be brief.", {"a": "b"}, 50, 0.3, TOP_P)
    assert (r["tool_choice"], r["tools"], r["parallel_tool_calls"], r["store"],
            r["truncation"], r["text"]) == ("auto", [], True, True, "disabled",
                                            {"format": {"type": "text"}, "verbosity": "medium"})
    assert r["incomplete_details"] is None and r["error"] is None


def test_tool_call_reply_response_object():
    body = {"input": "Weather in Rome?", "tools": [WEATHER], "tool_choice": "required"}
    msg = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_x", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]}
    r = response_object(_chat(msg, "tool_calls"), body, "resp_2", 5)
    resp = Response.model_validate(r)
    assert len(resp.output) == 1
    fc = resp.output[0]
    assert (fc.type, fc.call_id, fc.name, fc.arguments, fc.status) == (
        "function_call", "call_x", "get_weather", "{\"city\":\"Rome\"}", "completed")
    assert fc.id.startswith("fc_")
    assert r["tools"] == [dict(WEATHER, strict=True)] and r["tool_choice"] == "required"


def test_reasoning_and_length_reply_is_incomplete():
    msg = {"role": "assistant", "content": "The answ", "reasoning_content": "Think..."}
    r = response_object(_chat(msg, "length"), {"input": "q", "max_output_tokens": 8}, "resp_3",
                        5)
    resp = Response.model_validate(r)
    assert resp.status == "incomplete"
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.completed_at is None
    assert [o.type for o in resp.output] == ["reasoning", "message"]
    assert resp.output[0].content[0].text == "Think..."
    assert resp.output[1].status == "incomplete" and resp.output_text == "The answ"


def test_empty_reply_is_an_empty_message():
    r = response_object(_chat({"role": "assistant", "content": ""}), {"input": "q"}, "resp_4", 5)
    assert Response.model_validate(r).output_text == ""
    assert [o["type"] for o in r["output"]] == ["message"]


def test_real_replies_validate(llm):
    body = {"model": "smol", "input": "Weather in Rome?", "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "max_output_tokens": 60, "include": ["message.output_text.logprobs"]}
    out = llm.create_chat_completion(**_llama_kwargs(chat_request(body)))
    r = response_object(out, body, new_response_id(), 1)
    resp = Response.model_validate(r)
    calls = [o for o in resp.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    assert calls[0].call_id == out["choices"][0]["message"]["tool_calls"][0]["id"]
    assert resp.usage.output_tokens == out["usage"]["completion_tokens"] > 0

    body = {"input": "Say hello.", "max_output_tokens": 6, "temperature": 0.0,
            "include": ["message.output_text.logprobs"], "top_logprobs": 2}
    out = llm.create_chat_completion(**_llama_kwargs(chat_request(body)))
    resp = Response.model_validate(response_object(out, body, new_response_id(), 1))
    assert resp.output_text == out["choices"][0]["message"]["content"]
    lps = resp.output[0].content[0].logprobs
    assert "".join(lp.token for lp in lps) == resp.output_text
    assert all(len(lp.top_logprobs) == 2 for lp in lps)
    if out["choices"][0]["finish_reason"] == "length":
        assert resp.status == "incomplete"


# -- streams ----------------------------------------------------------------------------------------

def _check_stream(events: list, body: dict) -> Response:
    """Every event is one of the SDK's types, numbered 0, 1, ...; the SDK's own accumulator
    rebuilds the same text and calls the final response carries. -> the final Response."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    typed = [EVENT.validate_python(e) for e in events]
    assert typed[0].type == "response.created" and typed[1].type == "response.in_progress"
    assert typed[-1].type in ("response.completed", "response.incomplete")
    state = ResponseStreamState(input_tools=body.get("tools", omit), text_format=omit)
    texts, args = {}, {}
    for ev in typed:
        for out in state.handle_event(ev):
            if out.type == "response.output_text.delta":
                texts[out.item_id] = out.snapshot
            elif out.type == "response.function_call_arguments.delta":
                args[out.item_id] = out.snapshot
    final = typed[-1].response
    for item in final.output:
        if item.type == "message":
            assert texts.get(item.id, "") == item.content[0].text
        elif item.type == "function_call":
            assert args.get(item.id, "") == item.arguments
    # added / done pairs, one item open at a time, indexes in order
    added = [e for e in events if e["type"] == "response.output_item.added"]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["output_index"] for e in added] == [e["output_index"] for e in done] == \
        list(range(len(final.output)))
    assert [e["item"] for e in done] == events[-1]["response"]["output"]
    return final


def _without_item_ids(resp: dict) -> dict:
    resp = json.loads(json.dumps(resp))
    for o in resp["output"]:
        o.pop("id")
    return resp


def _chat_of_chunks(chunks: list, tools=None) -> dict:
    """The chat.completion the openai SDK's own chat-stream accumulator makes of the chunks."""
    st = ChatCompletionStreamState(input_tools=tools or omit)
    usage = None
    for c in chunks:
        if c.get("choices"):
            st.handle_chunk(ChatCompletionChunk.model_validate(c))
        if c.get("usage"):
            usage = c["usage"]
    try:
        done = st.get_final_completion().model_dump(exclude_none=True)
    except openai.LengthFinishReasonError as e:     # the SDK refuses to parse a cut reply
        done = e.completion.model_dump(exclude_none=True)
    done["usage"] = usage
    return done


def _stream(body: dict, chunks: list, usage=None, completed_at=7) -> list:
    es = ResponseEventStream(body, "resp_s", 5, "smol")
    events = es.start()
    for c in chunks:
        events += es.feed(c)
    return events + es.finish(usage, completed_at=completed_at)


def _chunk(delta: dict, finish=None) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "smol",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                         "logprobs": None}]}


def test_synthetic_text_stream():
    body = {"input": "hi"}
    chunks = [_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hel"}),
              _chunk({"content": "lo"}), _chunk({}, "stop"),
              {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "smol",
               "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2,
                                        "total_tokens": 6}}]
    events = _stream(body, chunks)
    final = _check_stream(events, body)
    assert final.output_text == "Hello" and final.usage.total_tokens == 6
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    Response.model_validate(events[0]["response"])
    expect = response_object(_chat_of_chunks(chunks), body, "resp_s", 5, completed_at=7)
    assert _without_item_ids(events[-1]["response"]) == _without_item_ids(expect)


def test_synthetic_stream_with_text_calls_reasoning_and_length():
    body = {"input": "q", "tools": [WEATHER]}
    chunks = [_chunk({"role": "assistant", "content": ""}),
              _chunk({"reasoning_content": "hmm"}),
              _chunk({"content": "Checking."}),
              _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": ""}}]}),
              _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
              _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Rome\"}"}}]}),
              _chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                                      "function": {"name": "get_weather",
                                                   "arguments": "{\"city\":\"Ni"}}]}),
              _chunk({}, "length")]
    events = _stream(body, chunks, usage={"prompt_tokens": 3, "completion_tokens": 9})
    final = _check_stream(events, body)
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call",
                                              "function_call"]
    assert [o.status for o in final.output] == ["completed"] * 3 + ["incomplete"]
    assert final.output[2].arguments == "{\"city\":\"Rome\"}"
    assert final.output[3].call_id == "call_2"
    types = [e["type"] for e in events]
    assert types.count("response.function_call_arguments.done") == 2
    assert "response.reasoning_text.delta" in types and types[-1] == "response.incomplete"
    # done events for an item come before the next item is added
    first_call_done = types.index("response.function_call_arguments.done")
    assert first_call_done < [i for i, e in enumerate(events)
                              if e["type"] == "response.output_item.added"][3]
    msg = {"role": "assistant", "content": "Checking.", "reasoning_content": "hmm",
           "tool_calls": [{"id": "call_1", "type": "function", "function": {
               "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
               {"id": "call_2", "type": "function", "function": {
                   "name": "get_weather", "arguments": "{\"city\":\"Ni"}}]}
    expect = response_object(_chat(msg, "length", (3, 9)), body, "resp_s", 5)
    assert _without_item_ids(events[-1]["response"]) == _without_item_ids(expect)


def test_empty_stream_gives_an_empty_message():
    events = _stream({"input": "q"}, [_chunk({"role": "assistant", "content": ""}),
                                      _chunk({}, "stop")])
    final = _check_stream(events, {"input": "q"})
    assert final.output_text == "" and len(final.output) == 1


def test_error_mid_stream_is_response_failed():
    body = {"input": "q"}
    es = ResponseEventStream(body, "resp_f", 5, "smol")
    events = es.start() + es.feed(_chunk({"content": "par"}))
    events += es.feed({"error": {"message": "decode failed", "type": "server_error",
                                 "param": None, "code": 500}})
    assert es.feed(_chunk({"content": "more"})) == [] and es.finish() == []
    typed = [EVENT.validate_python(e) for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert typed[-1].type == "response.failed"
    assert typed[-1].response.status == "failed"
    assert typed[-1].response.error.message == "decode failed"
    assert typed[-1].response.output[0].content[0].text == "par"
    err = ResponseEventStream(body, "resp_g", 5, "smol")
    ev = err.start() + err.error("context is full", code="context_length_exceeded")
    assert EVENT.validate_python(ev[-1]).type == "error" and ev[-1]["sequence_number"] == 2


@pytest.mark.parametrize("forced", [True, False])
def test_real_streams(llm, forced):
    if forced:
        body = {"model": "smol", "input": "Weather in Rome?", "tools": [WEATHER],
                "tool_choice": {"type": "function", "name": "get_weather"}, "stream": True,
                "max_output_tokens": 60}
    else:
        body = {"model": "smol", "input": "Tell me a short story.", "stream": True,
                "max_output_tokens": 12, "temperature": 0.0}
    c = chat_request(body)
    chunks = list(llm.create_chat_completion(**_llama_kwargs(c)))
    events = _stream(body, chunks, usage={"prompt_tokens": 10, "completion_tokens": 3})
    final = _check_stream(events, body)
    done = _chat_of_chunks(chunks, c.get("tools"))
    done["usage"] = {"prompt_tokens": 10, "completion_tokens": 3}
    expect = response_object(done, body, "resp_s", 5, completed_at=7)
    assert _without_item_ids(events[-1]["response"]) == _without_item_ids(expect)
    if forced:
        call = [o for o in final.output if o.type == "function_call"][0]
        assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    else:
        assert final.output_text and final.status == "incomplete"     # 12 tokens: cut


# -- the store --------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _stored(store: ResponseStore, text: str = "x") -> dict:
    req = parse_request({"input": text}, store)
    chat_ = _chat({"role": "assistant", "content": text.upper()})
    resp = response_object(chat_, req.body, new_response_id(), 1)
    store.put(resp, req.input_items)
    return resp


def test_store_get_delete():
    store = ResponseStore()
    r = _stored(store)
    got = store.get(r["id"])
    assert got == r and got is not r
    got["output"].clear()                       # a copy: the store keeps its own
    assert store.get(r["id"])["output"]
    assert store.delete(r["id"]) == {"id": r["id"], "object": "response.deleted",
                                     "deleted": True}
    for op in (store.get, store.delete, store.input_items, store.context):
        with pytest.raises(ResponseNotFound):
            op(r["id"])


def test_store_evicts_by_count():
    store = ResponseStore(max_entries=3)
    rs = [_stored(store, f"t{i}") for i in range(5)]
    assert len(store) == 3
    assert [r["id"] in store for r in rs] == [False, False, True, True, True]
    with pytest.raises(ResponseNotFound):
        chat_request({"input": "again", "previous_response_id": rs[0]["id"]}, store)


def test_store_evicts_by_age():
    clock = FakeClock()
    store = ResponseStore(ttl_s=60, clock=clock)
    old = _stored(store, "old")
    clock.now += 30
    new = _stored(store, "new")
    clock.now += 29.9
    assert old["id"] in store and new["id"] in store
    clock.now += 0.2                            # old is 60.1 s old, new 30.1 s
    assert old["id"] not in store and new["id"] in store
    with pytest.raises(ResponseNotFound):
        store.get(old["id"])
    clock.now += 30
    assert len(store) == 0


def test_store_input_items_pages():
    store = ResponseStore()
    req = parse_request({"input": [{"role": "user", "content": f"m{i}"} for i in range(5)]})
    resp = response_object(_chat({"role": "assistant", "content": "ok"}), req.body, "resp_p", 1)
    store.put(resp, req.input_items)
    ids = [it["id"] for it in req.input_items]
    page = store.input_items("resp_p", limit=2)
    ResponseItemList.model_validate(page)
    assert [it["id"] for it in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    page = store.input_items("resp_p", limit=2, order="asc", after=ids[2])
    assert [it["id"] for it in page["data"]] == ids[3:] and page["has_more"] is False
    assert (page["first_id"], page["last_id"]) == (ids[3], ids[4])
    for kw, param in (({"limit": 0}, "limit"), ({"order": "up"}, "order"),
                      ({"after": "msg_nope"}, "after")):
        with pytest.raises(ResponsesRequestError) as e:
            store.input_items("resp_p", **kw)
        assert e.value.param == param


def test_store_is_thread_safe():
    store = ResponseStore(max_entries=50)
    errors = []

    def work(k):
        try:
            for i in range(40):
                r = _stored(store, f"{k}-{i}")
                try:
                    store.get(r["id"])
                    store.context(r["id"])
                except ResponseNotFound:
                    pass                        # evicted by the other threads: allowed
        except Exception as e:                  # pragma: no cover - the failure shown
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store) == 50


def test_store_settings_checked():
    with pytest.raises(ValueError):
        ResponseStore(max_entries=0)
    with pytest.raises(ValueError):
        ResponseStore(ttl_s=0)
