"""Anthropic's Messages API on pyllamacy's server, through the official `anthropic` client on
loopback: plain, streamed (the SDK's own stream accumulation), a tool-use round trip, token
counting, errors in Anthropic's shape, and the API key as x-api-key."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
anthropic = pytest.importorskip("anthropic")

from serving import client_test_server  # noqa: E402

KEY = "anthropic-key"
# this client version has no temperature argument (newer Claude models take none); the server
# accepts Anthropic's temperature field, sent here as an extra body field
GREEDY = {"temperature": 0}
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = client_test_server(smollm2_path, api_key=KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)


def test_plain_and_streamed_agree(client):
    kw = dict(model="smol", max_tokens=24, extra_body=GREEDY,
              system="You answer briefly.",
              messages=[{"role": "user", "content": "Name a primary color."}])
    msg = client.messages.create(**kw)
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 0 and 0 < msg.usage.output_tokens <= 24
    with client.messages.stream(**kw) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == msg.content[0].text == final.content[0].text
    assert final.stop_reason == msg.stop_reason
    assert final.usage.output_tokens == msg.usage.output_tokens


def test_stop_sequence(client):
    msg = client.messages.create(model="smol", max_tokens=40, extra_body=GREEDY,
                                 stop_sequences=[" "],
                                 messages=[{"role": "user", "content": "Say hello world."}])
    if msg.stop_reason == "stop_sequence":
        assert msg.stop_sequence == " " and " " not in msg.content[0].text


def test_tool_use_round_trip(client):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    msg = client.messages.create(model="smol", max_tokens=64, extra_body=GREEDY, tools=[WEATHER],
                                 tool_choice={"type": "tool", "name": "get_weather"},
                                 messages=ask)
    assert msg.stop_reason == "tool_use"
    use = [b for b in msg.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str)
    # streamed: the SDK accumulates the input_json deltas into the same input
    with client.messages.stream(model="smol", max_tokens=64, extra_body=GREEDY, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=ask) as stream:
        final = stream.get_final_message()
    s_use = [b for b in final.content if b.type == "tool_use"][0]
    assert s_use.input == use.input and final.stop_reason == "tool_use"
    # the result goes back; the model answers in text
    follow = ask + [{"role": "assistant", "content": msg.content},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": use.id,
                         "content": "Sunny, 21 degrees."}]}]
    answer = client.messages.create(model="smol", max_tokens=32, extra_body=GREEDY,
                                    tools=[WEATHER], messages=follow)
    assert answer.content and answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    n = client.messages.count_tokens(model="smol", tools=[WEATHER], messages=follow)
    assert n.input_tokens > client.messages.count_tokens(
        model="smol", messages=ask).input_tokens > 0


def test_errors_and_key(server, client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="smol", max_tokens=0,
                               messages=[{"role": "user", "content": "hi"}])
    assert "max_tokens" in str(e.value)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="smol", max_tokens=8, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope",
                                          "content": "x"}]}])
    assert "tool_use_id" in str(e.value)
    bad = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="smol", max_tokens=8,
                            messages=[{"role": "user", "content": "hi"}])
