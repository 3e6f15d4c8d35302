"""OpenAI API edges through the official client (issue 13): stream_options.include_usage,
models.retrieve."""
from __future__ import annotations

import time

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def server(smollm2_path):
    from pyllamacy.server import ModelSettings
    from serving import LocalServer
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="smol", n_ctx=512,
                                   n_batch=64, n_threads=2, n_parallel=4)])
    yield s.url
    s.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0, timeout=120)


def test_chat_stream_include_usage(client):
    msgs = [{"role": "user", "content": "Say hello."}]
    full = client.chat.completions.create(model="smol", messages=msgs, max_tokens=12,
                                          temperature=0)
    chunks = list(client.chat.completions.create(
        model="smol", messages=msgs, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == full.usage.prompt_tokens
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert last.usage.total_tokens == full.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices)
    assert text == full.choices[0].message.content
    # without the option: no usage chunk
    plain = list(client.chat.completions.create(model="smol", messages=msgs, max_tokens=4,
                                                stream=True))
    assert all(c.choices for c in plain) and all(c.usage is None for c in plain)


def test_completion_stream_include_usage_with_n(client):
    chunks = list(client.completions.create(
        model="smol", prompt="The capital of France is", max_tokens=6, n=2, seed=3,
        stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    full = client.completions.create(model="smol", prompt="The capital of France is",
                                     max_tokens=6, n=2, seed=3)
    assert last.usage.prompt_tokens == full.usage.prompt_tokens
    assert last.usage.completion_tokens == full.usage.completion_tokens
    assert 2 <= last.usage.completion_tokens <= 12


def test_bad_stream_options_is_400(server):
    r = httpx.post(server + "/v1/chat/completions", json={
        "model": "smol", "messages": [{"role": "user", "content": "x"}], "stream": True,
        "stream_options": {"include_usage": "yes"}})
    assert r.status_code == 400 and "stream_options" in r.text


def test_models_retrieve(client):
    m = client.models.retrieve("smol")
    assert m.id == "smol" and m.object == "model"
    with pytest.raises(openai.NotFoundError, match="smol"):
        client.models.retrieve("other")


def test_cli_logs_startup_and_requests(smollm2_path, tmp_path):
    """`python -m pyllamacy.server -m MODEL` (llama-server's short flag) says where it serves
    and what, then one line per request; a missing model file is one clear line, exit 2."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pyllamacy
    env = dict(os.environ, PYTHONPATH=str(Path(pyllamacy.__file__).parent.parent))
    bad = subprocess.run([sys.executable, "-m", "pyllamacy.server", "-m", str(tmp_path / "no.gguf")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "no model file" in bad.stderr
    assert "Traceback" not in bad.stderr
    from serving import free_port, start_process, stop_process
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_process([sys.executable, "-m", "pyllamacy.server", "-m", smollm2_path,
                          "-a", "smol", "--port", str(port), "-t", "2", "--n_ctx", "256"],
                         tmp_path / "err.log", url=url, health="/health", env=env)
    try:
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        c.chat.completions.create(model="smol", messages=[{"role": "user", "content": "hi"}],
                                  max_tokens=3)
        time.sleep(0.3)
        text = (tmp_path / "err.log").read_text()
        assert f"serving at http://127.0.0.1:{port}/v1" in text
        assert "model 'smol':" in text and "slots" in text
        assert "POST /v1/chat/completions smol 200 prompt=" in text and "completion=" in text
    finally:
        stop_process(proc)


def test_tool_with_a_nested_pydantic_model(client):
    """openai.pydantic_function_tool with a nested model puts `$defs` in the parameters: the
    tool call's arguments follow the whole schema (issue 13)."""
    import json

    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    class Register(BaseModel):
        person: Person

    tool = openai.pydantic_function_tool(Register)
    assert "$defs" in json.dumps(tool)
    r = client.chat.completions.create(
        model="smol", temperature=0, max_tokens=120, tools=[tool], tool_choice="required",
        messages=[{"role": "user", "content": "Register Alice, who is 30."}])
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and calls
    assert calls[0].function.name == "Register"
    Register.model_validate(json.loads(calls[0].function.arguments))


def test_embeddings_token_arrays_base64_dimensions(client, server):
    """Token-array input (what LangChain's OpenAIEmbeddings sends), base64 encoding, and a
    `dimensions` the model cannot give (issue 13)."""
    import base64

    import numpy as np
    text = client.embeddings.create(model="smol", input="Hello world")
    dim = len(text.data[0].embedding)
    toks = httpx.post(server + "/extras/tokenize", json={"input": "Hello world"}).json()["tokens"]
    for inp in (toks, [toks]):
        e = client.embeddings.create(model="smol", input=inp, encoding_format="float")
        assert len(e.data) == 1
        assert np.allclose(e.data[0].embedding, text.data[0].embedding, atol=1e-5)
    two = client.embeddings.create(model="smol", input=[toks, toks[:1]])
    assert len(two.data) == 2 and two.usage.prompt_tokens == len(toks) + 1
    # the openai client asks for base64 by default and decodes it
    raw = httpx.post(server + "/v1/embeddings", json={"model": "smol", "input": "Hello world",
                                                     "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (dim,) and np.allclose(vec, text.data[0].embedding, atol=1e-6)
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="smol", input="x", dimensions=64)
    assert len(client.embeddings.create(model="smol", input="x", dimensions=dim)
               .data[0].embedding) == dim
    with pytest.raises(openai.BadRequestError, match="token id"):
        client.embeddings.create(model="smol", input=[[10**9]])


def test_completions_with_a_list_of_prompts(client):
    """A list of prompts is a batch: n choices per prompt, indexed prompt by prompt
    (langchain_openai.OpenAI().batch sends these)."""
    prompts = ["The capital of France is", "One, two, three,"]
    alone = [client.completions.create(model="smol", prompt=p, max_tokens=6, temperature=0)
             for p in prompts]
    r = client.completions.create(model="smol", prompt=prompts, max_tokens=6, temperature=0,
                                  n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    texts = [c.text for c in r.choices]
    assert texts[:2] == [alone[0].choices[0].text] * 2
    assert texts[2:] == [alone[1].choices[0].text] * 2
    assert r.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    # token-id prompts, streamed
    ids = [[1, 504, 3575], [1, 3575]]
    got = {}
    for ch in client.completions.create(model="smol", prompt=ids, max_tokens=4, stream=True,
                                        temperature=0):
        for c in ch.choices:
            got[c.index] = got.get(c.index, "") + c.text
    assert sorted(got) == [0, 1]
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.completions.create(model="smol", prompt=["x"] * 100, max_tokens=1)
