"""The official openai client, unchanged, against the server on loopback: what
test_server_openai_edges.py does not cover -- the async client, streamed tool-call argument
deltas, `.parse()` with a pydantic response_format, the `.stream()` helper with a pydantic
tool."""
from __future__ import annotations

import asyncio
import json

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
from pydantic import BaseModel  # noqa: E402


class City(BaseModel):
    name: str
    country: str


class Trip(BaseModel):
    origin: City
    destination: City
    days: int


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}
FORCED = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(smollm2_path):
    from serving import client_test_server
    s = client_test_server(smollm2_path)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def _joined_calls(chunks):
    calls = {}
    for ch in chunks:
        for c in ch.choices:
            for tc in c.delta.tool_calls or ():
                if tc.index not in calls:
                    assert tc.id and tc.type == "function" and tc.function.name
                    calls[tc.index] = [tc.function.name, []]
                else:
                    assert tc.id is None and tc.function.name is None
                if tc.function.arguments:
                    calls[tc.index][1].append(tc.function.arguments)
    return calls


def test_streamed_tool_call_arguments_arrive_as_deltas(client):
    """Arguments stream as they are generated (many deltas), join to the non-streamed call's
    arguments, and the stream ends with finish_reason tool_calls."""
    kw = dict(model="smol", messages=ASK, tools=[WEATHER], tool_choice=FORCED, temperature=0,
              max_tokens=60)
    full = client.chat.completions.create(**kw).choices[0].message.tool_calls[0]
    chunks = list(client.chat.completions.create(stream=True, **kw))
    calls = _joined_calls(chunks)
    assert list(calls) == [0]
    name, frags = calls[0]
    assert name == "get_weather" and len(frags) > 1
    args = "".join(frags)
    assert args == full.function.arguments
    assert json.loads(args)["unit"] in ("c", "f")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_stream_helper_accumulates_pydantic_tool_call(client):
    """client.chat.completions.stream() accumulates the argument deltas and parses them into
    the pydantic tool's model (openai.pydantic_function_tool, nested models)."""
    tool = openai.pydantic_function_tool(Trip)
    with client.chat.completions.stream(
            model="smol", temperature=0, max_tokens=150, tools=[tool],
            tool_choice={"type": "function", "function": {"name": "Trip"}},
            messages=[{"role": "user", "content": "A 3 day trip from Paris, France to Rome, "
                                                  "Italy."}]) as stream:
        deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1
    call = final.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, Trip)
    assert deltas[-1].arguments == call.function.arguments


def test_parse_with_pydantic_response_format(client):
    r = client.chat.completions.parse(
        model="smol", temperature=0, max_tokens=150, response_format=Trip,
        messages=[{"role": "user", "content": "A 3 day trip from Paris, France to Rome, "
                                              "Italy, as JSON."}])
    msg = r.choices[0].message
    assert isinstance(msg.parsed, Trip)
    assert Trip.model_validate_json(msg.content) == msg.parsed


def test_async_client(server):
    """AsyncOpenAI: chat (plain and streamed with include_usage, two at once), completions,
    embeddings, models, streamed tool-call deltas."""
    async def main():
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                               timeout=120)
        msgs = [{"role": "user", "content": "Say hello."}]
        full = await c.chat.completions.create(model="smol", messages=msgs, max_tokens=8,
                                               temperature=0)

        async def streamed():
            out = []
            async for ch in await c.chat.completions.create(
                    model="smol", messages=msgs, max_tokens=8, temperature=0, stream=True,
                    stream_options={"include_usage": True}):
                out.append(ch)
            return out
        a, b = await asyncio.gather(streamed(), streamed())
        for chunks in (a, b):
            assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
            assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
            assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) \
                == full.choices[0].message.content
        comp = await c.completions.create(model="smol", prompt=["One,", "A, B,"], max_tokens=3,
                                          temperature=0)
        assert [ch.index for ch in comp.choices] == [0, 1]
        # the client asks for base64 and decodes it; token arrays are inputs too
        emb = await c.embeddings.create(model="smol", input=["x", "y z"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
        import httpx
        import numpy as np
        async with httpx.AsyncClient() as h:
            toks = (await h.post(server.url + "/extras/tokenize",
                                 json={"input": "y z"})).json()["tokens"]
        by_ids = await c.embeddings.create(model="smol", input=[toks], encoding_format="float")
        assert np.allclose(by_ids.data[0].embedding, emb.data[1].embedding, atol=1e-5)
        assert (await c.models.retrieve("smol")).id == "smol"
        tools_stream = await c.chat.completions.create(
            model="smol", messages=ASK, tools=[WEATHER], tool_choice=FORCED, temperature=0,
            max_tokens=60, stream=True)
        chunks = [ch async for ch in tools_stream]
        (name, frags), = _joined_calls(chunks).values()
        assert name == "get_weather" and len(frags) > 1 and json.loads("".join(frags))
        await c.close()
    asyncio.run(main())
