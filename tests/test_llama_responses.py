"""Llama.create_response: the same Response as the server's /v1/responses for the same request
(greedy), its events valid under the openai client's own types, previous_response_id from the
Llama's store, and bad fields named."""
from __future__ import annotations

import pytest

import pyllamacy

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from openai.types.responses import Response, ResponseStreamEvent  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from pyllamacy.pipeline.responses_api import ResponseNotFound  # noqa: E402
from pyllamacy.server import ModelSettings  # noqa: E402
from serving import LocalServer  # noqa: E402

ASK = dict(input="Name a primary color.", instructions="Answer in one sentence.",
           max_output_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def llama(smollm2_path):
    m = pyllamacy.Llama(smollm2_path, n_ctx=1024, n_threads=1, flash_attn=False, verbose=False)
    yield m
    m.close()


def test_llama_equals_server(llama, smollm2_path):
    ours = llama.create_response(**ASK)
    Response.model_validate(ours)
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="smol", n_ctx=1024,
                                   n_threads=1, n_threads_batch=1, n_parallel=1,
                                   flash_attn=False, verbose=False)])
    try:
        theirs = s.client().responses.create(model="smol", **ASK)
    finally:
        s.stop()
    assert theirs.output_text == Response.model_validate(ours).output_text
    assert theirs.usage.input_tokens == ours["usage"]["input_tokens"]
    assert theirs.usage.output_tokens == ours["usage"]["output_tokens"]
    assert theirs.status == ours["status"]


def test_stream_and_previous_response(llama):
    events = list(llama.create_response(stream=True, **ASK))
    adapter = TypeAdapter(ResponseStreamEvent)
    for ev in events:
        adapter.validate_python(ev)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == llama.create_response(**ASK)["output"][0]["content"][0]["text"]
    first = events[-1]["response"]
    assert llama.retrieve_response(first["id"])["id"] == first["id"]
    nxt = llama.create_response(input="And another one?", previous_response_id=first["id"],
                                max_output_tokens=8, temperature=0)
    assert nxt["previous_response_id"] == first["id"]
    assert nxt["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    llama.delete_response(nxt["id"])
    with pytest.raises(KeyError):
        llama.retrieve_response(nxt["id"])


def test_bad_fields(llama):
    with pytest.raises(ValueError, match="max_output_tokens"):
        llama.create_response(input="hi", max_output_tokens=0)
    with pytest.raises(ValueError, match="web_search"):
        llama.create_response(input="hi", tools=[{"type": "web_search"}])
    with pytest.raises(ResponseNotFound):
        llama.create_response(input="hi", previous_response_id="resp_nope")


def test_chat_stream_include_usage(llama):
    msgs = [{"role": "user", "content": "Name a primary color."}]
    full = llama.create_chat_completion(msgs, max_tokens=12, temperature=0)
    chunks = list(llama.create_chat_completion(msgs, max_tokens=12, temperature=0, stream=True,
                                               stream_options={"include_usage": True}))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == full["usage"]
    assert all("usage" not in c for c in chunks[:-1])
    with pytest.raises(ValueError, match="stream_options"):
        llama.create_chat_completion(msgs, stream=True, stream_options={"include_usage": 1})
