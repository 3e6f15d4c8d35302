"""OpenAI's Responses API on pyllamacy's server, through the official `openai` client on
loopback: plain, streamed (the SDK's own stream accumulation), a function tool round trip,
previous_response_id, retrieve / input_items / delete, and bad requests."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serving import client_test_server  # noqa: E402

KEY = "responses-key"
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = client_test_server(smollm2_path, api_key=KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client(KEY)


def test_plain_and_streamed_agree(client):
    kw = dict(model="smol", input="Name a primary color.", instructions="Answer briefly.",
              max_output_tokens=96, temperature=0)
    r = client.responses.create(**kw)
    # (the SDK's stream helper needs response.completed: the reply must end before the limit)
    assert r.object == "response" and r.status == "completed", r.status
    assert r.output_text and r.usage.input_tokens > 0
    assert 0 < r.usage.output_tokens < 96
    with client.responses.stream(**kw) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == r.output_text
    assert final.usage.output_tokens == r.usage.output_tokens
    assert client.responses.retrieve(r.id).output_text == r.output_text


def test_function_tool_and_previous_response(client):
    r = client.responses.create(model="smol", input="What is the weather in Paris?",
                                tools=[WEATHER], tool_choice={"type": "function",
                                                              "name": "get_weather"},
                                max_output_tokens=64, temperature=0)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    import json
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    # streamed: argument deltas join to the same arguments
    with client.responses.stream(model="smol", input="What is the weather in Paris?",
                                 tools=[WEATHER], tool_choice={"type": "function",
                                                               "name": "get_weather"},
                                 max_output_tokens=64, temperature=0) as stream:
        parts = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    s_calls = [o for o in final.output if o.type == "function_call"]
    assert "".join(parts) == s_calls[0].arguments == calls[0].arguments
    # the tool's output continues the conversation through previous_response_id
    r2 = client.responses.create(model="smol", previous_response_id=r.id, tools=[WEATHER],
                                 input=[{"type": "function_call_output",
                                         "call_id": calls[0].call_id,
                                         "output": "Sunny, 21 degrees."}],
                                 max_output_tokens=32, temperature=0)
    assert r2.previous_response_id == r.id and r2.usage.input_tokens > r.usage.input_tokens
    items = client.responses.input_items.list(r2.id)
    types = [i.type for i in items.data]
    assert "function_call_output" in types and "function_call" in types
    # delete, then it is gone
    client.responses.delete(r2.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r2.id)


def test_incomplete(client):
    r = client.responses.create(model="smol", input="Tell me a long story.",
                                max_output_tokens=4, temperature=0)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 4
    events = list(client.responses.create(model="smol", input="Tell me a long story.",
                                          max_output_tokens=4, temperature=0, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.incomplete"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_bad_requests(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="smol", input="hi", previous_response_id="resp_nope")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="smol", input="hi", max_output_tokens=0)
    assert "max_output_tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="smol", input="hi", tools=[{"type": "web_search"}])
    assert "web_search" in str(e.value)
