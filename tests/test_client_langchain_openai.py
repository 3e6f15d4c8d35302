"""langchain-openai, unchanged, against the server on loopback: embeddings (text and the
default token-array path), ChatOpenAI streaming with usage, the completions LLM's batch,
tools and structured output.

OpenAIEmbeddings' defaults (check_embedding_ctx_length=True) count and split the texts with
tiktoken and send token ids: tiktoken downloads its BPE file (cl100k_base) on first use, and
those ids are OpenAI's vocabulary, not the served model's. With a local server set
OpenAIEmbeddings(check_embedding_ctx_length=False): the texts are sent as text and the server
tokenizes them with the model's own vocabulary (no tiktoken, no network).
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("uvicorn")
langchain_openai = pytest.importorskip("langchain_openai")
httpx = pytest.importorskip("httpx")
import numpy as np  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402


class City(BaseModel):
    """A city."""
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)


class Weather(BaseModel):
    """Ask for the weather of a city."""
    city: City
    unit: str = Field(pattern="^(c|f)$")


@pytest.fixture(scope="module")
def server(smollm2_path):
    from serving import client_test_server
    s = client_test_server(smollm2_path)
    yield s
    s.stop()


def _kw(server):
    return dict(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


def _chat(server, **kw):
    return langchain_openai.ChatOpenAI(model="smol", temperature=0, **_kw(server), **kw)


def _server_embedding(server, text):
    r = httpx.post(server.url + "/v1/embeddings", json={"model": "smol", "input": text})
    return np.array(r.json()["data"][0]["embedding"])


def _tokenize(server, text):
    return httpx.post(server.url + "/extras/tokenize",
                      json={"input": text, "add_special": False}).json()["tokens"]


def test_embeddings_as_text(server):
    """check_embedding_ctx_length=False: texts go as text, the vectors are the server's."""
    emb = langchain_openai.OpenAIEmbeddings(model="smol", check_embedding_ctx_length=False,
                                            **_kw(server))
    texts = ["Hello world", "The cat sat on the mat."]
    vecs = emb.embed_documents(texts)
    for t, v in zip(texts, vecs):
        assert np.allclose(v, _server_embedding(server, t), atol=1e-5)
    assert np.allclose(emb.embed_query(texts[0]), vecs[0], atol=1e-6)


def test_embeddings_default_settings_send_token_arrays(server, monkeypatch):
    """OpenAIEmbeddings() as it comes: it tokenizes with tiktoken and sends token arrays in
    chunks of embedding_ctx_length, then averages the chunk vectors. tiktoken's files cannot be
    downloaded here, so tiktoken's encoding is replaced by the served model's tokenizer (what
    the ids must be for the vectors to mean anything); the rest is langchain's default path."""
    import tiktoken

    class ModelEncoding:
        name = "smol"

        def encode(self, text, **kw):
            return _tokenize(server, text)

        def encode_ordinary(self, text):
            return _tokenize(server, text)

    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda *a, **k: ModelEncoding())
    monkeypatch.setattr(tiktoken, "get_encoding", lambda *a, **k: ModelEncoding())
    sent = []

    def spy(request):
        if request.url.path.endswith("/embeddings"):
            sent.append(json.loads(request.read()))
    client = httpx.Client(event_hooks={"request": [spy]}, timeout=120)
    emb = langchain_openai.OpenAIEmbeddings(model="smol", http_client=client, **_kw(server))
    assert emb.check_embedding_ctx_length and emb.tiktoken_enabled        # the defaults
    text = "Hello world"
    (vec,) = emb.embed_documents([text])
    assert sent and all(isinstance(x, list) and isinstance(x[0], int)
                        for s in sent for x in s["input"])               # token arrays
    want = _server_embedding(server, text)
    assert np.allclose(vec, want / np.linalg.norm(want), atol=1e-5)
    # a text longer than embedding_ctx_length: chunks, averaged by langchain
    emb_small = langchain_openai.OpenAIEmbeddings(model="smol", embedding_ctx_length=4,
                                                  **_kw(server))
    (long_vec,) = emb_small.embed_documents(["one two three four five six seven eight nine"])
    assert len(long_vec) == len(vec) and abs(np.linalg.norm(long_vec) - 1) < 1e-5


def test_foreign_token_ids_get_a_hint(server):
    """Token ids past the model's vocabulary (tiktoken's, sent by OpenAIEmbeddings' default
    path) are a 400 that says what to set."""
    r = httpx.post(server.url + "/v1/embeddings", json={"model": "smol", "input": [[100257]]})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "100257" in msg and "check_embedding_ctx_length=False" in msg


def test_chat_stream_usage_matches_the_server(server):
    llm = _chat(server, max_tokens=12, stream_usage=True)
    msgs = [("user", "Say hello.")]
    full = llm.invoke(msgs)
    chunks = list(llm.stream(msgs))
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.content == full.content
    assert total.usage_metadata is not None
    for k in ("input_tokens", "output_tokens", "total_tokens"):
        assert total.usage_metadata[k] == full.usage_metadata[k], k
    count = httpx.post(server.url + "/v1/chat/completions", json={
        "model": "smol", "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 12, "temperature": 0}).json()["usage"]
    assert total.usage_metadata["input_tokens"] == count["prompt_tokens"]
    assert total.usage_metadata["output_tokens"] == count["completion_tokens"]


def test_completion_llm_batch(server):
    llm = langchain_openai.OpenAI(model="smol", temperature=0, max_tokens=6, **_kw(server))
    prompts = ["The capital of France is", "One, two, three,"]
    got = llm.batch(prompts)
    alone = [httpx.post(server.url + "/v1/completions", json={
        "model": "smol", "prompt": p, "max_tokens": 6, "temperature": 0}).json()
        ["choices"][0]["text"] for p in prompts]
    assert got == alone
    res = llm.generate(prompts)              # one request with a list of prompts
    assert [g[0].text for g in res.generations] == alone
    assert res.llm_output["token_usage"]["completion_tokens"] > 0


def test_bind_tools(server):
    llm = _chat(server, max_tokens=120).bind_tools([Weather], tool_choice="Weather")
    msg = llm.invoke("What is the weather in Paris, France, in celsius?")
    (call,) = msg.tool_calls
    assert call["name"] == "Weather" and call["id"]
    Weather.model_validate(call["args"])
    # streamed: the tool call chunks add up to the same call
    total = None
    n = 0
    for c in llm.stream("What is the weather in Paris, France, in celsius?"):
        total = c if total is None else total + c
        n += bool(c.tool_call_chunks)
    assert n > 2
    assert total.tool_calls[0]["name"] == "Weather"
    assert total.tool_calls[0]["args"] == call["args"]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output(server, method):
    llm = _chat(server, max_tokens=120).with_structured_output(Weather, method=method)
    out = llm.invoke("What is the weather in Rome, Italy, in fahrenheit?")
    assert isinstance(out, Weather)
    raw = _chat(server, max_tokens=120).with_structured_output(
        Weather, method=method, include_raw=True).invoke("Weather in Oslo, Norway, in c?")
    assert raw["parsing_error"] is None and isinstance(raw["parsed"], Weather)
