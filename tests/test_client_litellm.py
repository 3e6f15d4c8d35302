"""litellm, unchanged, against the server on loopback as an "openai/<alias>" model: streamed
usage (stream_options.include_usage) equal to the server's own count, a plain completion, and
embeddings.

litellm fetches its model cost map from the network at import unless told not to; the
environment below keeps it offline (set before the import)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")   # no download at import
os.environ.setdefault("LITELLM_TELEMETRY", "False")
os.environ.setdefault("LITELLM_LOG", "ERROR")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
litellm = pytest.importorskip("litellm")
import numpy as np  # noqa: E402

MSGS = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server(smollm2_path):
    from serving import client_test_server
    s = client_test_server(smollm2_path)
    yield s
    s.stop()


def _kw(server):
    return dict(model="openai/smol", api_base=server.url + "/v1", api_key="x", timeout=120,
                num_retries=0)


def _prompt_tokens(server):
    """The server's own count of the chat prompt (its tokenizer, through a 1-token call)."""
    return httpx.post(server.url + "/v1/chat/completions", json={
        "model": "smol", "messages": MSGS, "max_tokens": 1}).json()["usage"]["prompt_tokens"]


def test_completion(server):
    r = litellm.completion(messages=MSGS, max_tokens=10, temperature=0, **_kw(server))
    assert r.choices[0].message.content
    assert r.usage.prompt_tokens == _prompt_tokens(server)
    assert 0 < r.usage.completion_tokens <= 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_usage_is_the_servers_count(server):
    full = litellm.completion(messages=MSGS, max_tokens=10, temperature=0, **_kw(server))
    chunks = list(litellm.completion(messages=MSGS, max_tokens=10, temperature=0, stream=True,
                                     stream_options={"include_usage": True}, **_kw(server)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    usages = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usages
    u = usages[-1]
    assert u.prompt_tokens == full.usage.prompt_tokens == _prompt_tokens(server)
    assert u.completion_tokens == full.usage.completion_tokens
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # litellm's own assembly of the stream agrees
    built = litellm.stream_chunk_builder(chunks, messages=MSGS)
    assert built.usage.prompt_tokens == u.prompt_tokens
    assert built.usage.completion_tokens == u.completion_tokens


def test_stream_tool_call(server):
    tool = {"type": "function", "function": {
        "name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"]}}}
    chunks = list(litellm.completion(
        messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[tool],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=80,
        temperature=0, stream=True, **_kw(server)))
    built = litellm.stream_chunk_builder(chunks)
    (call,) = built.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    import json
    assert json.loads(call.function.arguments)["city"]
    assert built.choices[0].finish_reason == "tool_calls"


def test_embedding(server):
    r = litellm.embedding(input=["Hello world", "Bye"], **_kw(server))
    assert len(r.data) == 2
    want = httpx.post(server.url + "/v1/embeddings", json={
        "model": "smol", "input": "Hello world"}).json()
    assert np.allclose(r.data[0]["embedding"], want["data"][0]["embedding"], atol=1e-5)
    assert r.usage.prompt_tokens > 0
