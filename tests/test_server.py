"""The OpenAI-compatible server, driven by the official openai client over loopback."""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402  (the openai client's dependency)

from pyllamacy.server import ModelSettings  # noqa: E402
from pyllamacy.server.__main__ import settings_from_args  # noqa: E402
from serving import LocalServer  # noqa: E402

KEY = "test-key-123"


class _Server(LocalServer):
    def client(self, key=KEY, **kw):
        return super().client(key, **kw)

    def stats(self, key=KEY):
        return super().stats(key)


def _settings(path, **kw):
    base = dict(model=path, model_alias="smol", n_ctx=256, n_batch=64, n_threads=1,
                n_threads_batch=1, verbose=False)
    base.update(kw)
    return ModelSettings(**base)


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = _Server([_settings(smollm2_path, n_parallel=16, max_queue=16)], api_key=KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def small_server(smollm2_path):
    """One slot, no queue: the second request is refused."""
    s = _Server([_settings(smollm2_path, n_parallel=1, max_queue=0, n_batch=16)])
    yield s
    s.stop()


def test_models_health_auth(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["smol"]
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    for path in ("/v1/models", "/metrics"):
        r = httpx.get(server.url + path)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x"},
                   headers={"Authorization": "Basic " + KEY})
    assert r.status_code == 401


def test_completion_and_extras(server):
    c = server.client()
    out = c.completions.create(model="smol", prompt="The capital of France is", max_tokens=8,
                               temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop")
    assert out.usage.completion_tokens <= 8 and out.choices[0].text
    h = {"Authorization": f"Bearer {KEY}"}
    toks = httpx.post(server.url + "/extras/tokenize", json={"input": "hello world"},
                      headers=h).json()["tokens"]
    assert toks
    text = httpx.post(server.url + "/extras/detokenize", json={"tokens": toks},
                      headers=h).json()["text"]
    assert "hello world" in text
    n = httpx.post(server.url + "/extras/tokenize/count", json={"input": "hello world"},
                   headers=h).json()["count"]
    assert n == len(toks)


def test_chat_stream_equals_non_stream(server):
    c = server.client()
    msgs = [{"role": "user", "content": "Name a color."}]
    full = c.chat.completions.create(model="smol", messages=msgs, max_tokens=12,
                                     temperature=0)
    assert full.choices[0].message.role == "assistant"
    pieces, finish = [], None
    for ch in c.chat.completions.create(model="smol", messages=msgs, max_tokens=12,
                                        temperature=0, stream=True):
        d = ch.choices[0].delta
        if d.content:
            pieces.append(d.content)
        if ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason


def test_tools_and_json_schema(server):
    c = server.client()
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string",
                                                                 "maxLength": 12}},
                       "required": ["city"], "additionalProperties": False}}}]
    out = c.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=48, temperature=0)
    call = out.choices[0].message.tool_calls[0]
    assert out.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)

    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 99}},
              "required": ["n"], "additionalProperties": False}
    out = c.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Pick a number."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "num", "schema": schema}},
        max_tokens=24, temperature=0)
    obj = json.loads(out.choices[0].message.content)
    assert isinstance(obj["n"], int)


def test_embeddings(server):
    out = server.client().embeddings.create(model="smol", input=["hello", "a longer text"])
    assert len(out.data) == 2
    v = out.data[0].embedding
    assert len(v) == 576 and abs(sum(x * x for x in v) - 1.0) < 1e-3


def test_bad_requests(server):
    h = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    u = server.url
    cases = [
        (b"{not json", (400, 422)),
        (json.dumps({"prompt": 3}).encode(), (422,)),
        (json.dumps({"prompt": "x", "max_tokens": "many"}).encode(), (422,)),
        (json.dumps({"prompt": "x", "max_tokens": 10 ** 9}).encode(), (400,)),
        (json.dumps({"prompt": "x", "n": 5}).encode(), (400,)),
        (json.dumps({"prompt": "x", "temperature": -1}).encode(), (422,)),
        (json.dumps({"prompt": "x", "grammar": "root ::= ("}).encode(), (400,)),
        (json.dumps({"prompt": [10 ** 9]}).encode(), (400,)),
        (json.dumps({"prompt": "word " * 400}).encode(), (400,)),
    ]
    for body, want in cases:
        r = httpx.post(u + "/v1/completions", content=body, headers=h)
        assert r.status_code in want, (body[:40], r.status_code, r.text)
        err = r.json()["error"]
        assert err["message"] and "Traceback" not in r.text
    r = httpx.post(u + "/v1/chat/completions", json={"messages": []}, headers=h)
    assert r.status_code == 422
    r = httpx.post(u + "/v1/chat/completions", headers=h, json={
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "#"}}}})
    assert r.status_code == 400 and "Traceback" not in r.text
    r = httpx.post(u + "/v1/completions", content=b"x" * (5 * 1024 * 1024), headers=h)
    assert r.status_code == 413
    with pytest.raises(openai.BadRequestError):
        server.client().completions.create(model="smol", prompt="x", max_tokens=10 ** 6)


def _stream_text(client, prompt, seed, max_tokens=16):
    parts, finish, n = [], None, 0
    for ch in client.completions.create(model="smol", prompt=prompt, max_tokens=max_tokens,
                                        temperature=0.8, seed=seed, stream=True):
        n += 1
        parts.append(ch.choices[0].text)
        if ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
    return "".join(parts), finish


def _rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def test_load_16_streams_equal_serial(server):
    prompts = [f"Story {i}: once upon a time there was a" for i in range(16)]
    c = server.client()
    serial = [_stream_text(c, p, seed=100 + i) for i, p in enumerate(prompts)]
    rss = []
    for _ in range(2):
        with cf.ThreadPoolExecutor(16) as ex:
            conc = list(ex.map(lambda a: _stream_text(c, a[1], 100 + a[0]), enumerate(prompts)))
        assert conc == serial
        assert all(f in ("length", "stop") for _, f in conc)
        rss.append(_rss_mb())
    assert rss[1] - rss[0] < 50, rss          # no growth from one round to the next
    st = server.stats()
    assert st["pyllamacy_slots_busy"] == 0 and st["pyllamacy_queue"] == 0
    assert st["pyllamacy_requests_total"] >= 48


def _wait_idle(server, timeout=10.0):
    t = time.time()
    while time.time() - t < timeout:
        st = server.stats()
        if st.get("pyllamacy_slots_busy", 1) == 0 and st.get("pyllamacy_queue", 1) == 0:
            return True
        time.sleep(0.05)
    return False


def test_queue_full_and_disconnect(small_server, model):
    s = small_server
    no_end = {str(t): -100 for t in {model.token_eos(), model.token_eot()} if t >= 0}
    body = {"prompt": "Once upon a time, in a land far away,", "max_tokens": 200,
            "stream": True, "temperature": 0, "logit_bias": no_end}
    with httpx.Client(timeout=60) as h:
        # mid-generation: read one chunk, then the busy server refuses a second request
        with h.stream("POST", s.url + "/v1/completions", json=body) as r:
            it = r.iter_lines()
            first = next(line for line in it if line.startswith("data:"))
            assert json.loads(first[5:])["choices"]
            r2 = h.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2})
            assert r2.status_code == 429 and int(r2.headers["Retry-After"]) >= 1
            assert r2.json()["error"]["type"] == "rate_limit_error"
        # the client went away: the slot is freed and the next request is served
        assert _wait_idle(s)
        r3 = h.post(s.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
        assert r3.status_code == 200
    # mid-prompt: a long prompt, the client gives up before the first token
    before = s.stats()["pyllamacy_decoded_tokens_total"]
    with pytest.raises(httpx.TimeoutException):
        httpx.post(s.url + "/v1/completions", json={"prompt": "word " * 200, "max_tokens": 50},
                   timeout=0.3)
    assert _wait_idle(s)
    st = s.stats()
    assert st["pyllamacy_decoded_tokens_total"] - before < 200 + 50
    out = httpx.post(s.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2},
                     timeout=60)
    assert out.status_code == 200 and out.json()["choices"][0]["finish_reason"]


def test_cli_settings(tmp_path, smollm2_path):
    cfg = tmp_path / "models.json"
    cfg.write_text(json.dumps({"port": 9999, "api_key": "k", "models": [
        {"model": smollm2_path, "model_alias": "a", "n_ctx": 128, "n_parallel": 2},
        {"model": smollm2_path, "model_alias": "b", "chat_format": "chatml"}]}))
    server, models = settings_from_args(["--config_file", str(cfg), "--port", "8123"])
    assert server.port == 8123 and server.api_key == "k" and server.host == "127.0.0.1"
    assert [m.model_alias for m in models] == ["a", "b"] and models[0].n_parallel == 2
    server, models = settings_from_args(["--model", smollm2_path, "--n_ctx", "64",
                                         "--slots", "3", "--api-key", "z"])
    assert models[0].n_ctx == 64 and models[0].n_parallel == 3 and server.api_key == "z"
    cfg.write_text(json.dumps({"models": [{"model": "x"}, {"model": "x"}]}))
    with pytest.raises(Exception):
        settings_from_args(["--config_file", str(cfg)])


def test_completion_logprobs(server, smollm2_path):
    """logprobs=N on the batched server: llama-cpp-python's shape, streamed equal to
    non-streamed, and the numbers of Llama.create_completion on the same model."""
    from pyllamacy import Llama
    c = server.client()
    prompt = "The capital of France is"
    full = c.completions.create(model="smol", prompt=prompt, max_tokens=8, temperature=0,
                                logprobs=2)
    ch = full.choices[0]
    lp = ch.logprobs
    assert len(lp.tokens) == full.usage.completion_tokens == len(lp.token_logprobs)
    assert "".join(lp.tokens) == ch.text
    assert lp.text_offset[0] == len(prompt)
    assert all(b - a == len(t) for a, b, t in zip(lp.text_offset, lp.text_offset[1:], lp.tokens))
    for tok, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert v <= 0 and top[tok] == v and len(top) <= 3
        assert v == pytest.approx(max(top.values()))           # greedy: the most likely
    streamed = {"tokens": [], "token_logprobs": [], "text_offset": []}
    for chunk in c.completions.create(model="smol", prompt=prompt, max_tokens=8, temperature=0,
                                      logprobs=2, stream=True):
        got = chunk.choices[0].logprobs
        if got is not None:
            for k in streamed:
                streamed[k] += getattr(got, k) or []
    assert streamed == {"tokens": lp.tokens, "token_logprobs": lp.token_logprobs,
                        "text_offset": lp.text_offset}
    with Llama(smollm2_path, n_ctx=256, n_threads=1, verbose=False) as llm:
        ref = llm.create_completion(prompt, max_tokens=8, temperature=0, logprobs=2)
    rl = ref["choices"][0]["logprobs"]
    assert rl["tokens"] == lp.tokens and rl["text_offset"] == lp.text_offset
    assert lp.token_logprobs == pytest.approx(rl["token_logprobs"], abs=1e-2)
    for a, b in zip(lp.top_logprobs, rl["top_logprobs"]):
        assert set(a) == set(b) and [a[k] for k in b] == pytest.approx(list(b.values()), abs=1e-2)


def test_chat_logprobs(server):
    c = server.client()
    msgs = [{"role": "user", "content": "Name a color."}]
    full = c.chat.completions.create(model="smol", messages=msgs, max_tokens=10, temperature=0,
                                     logprobs=True, top_logprobs=3)
    content = full.choices[0].logprobs.content
    assert "".join(e.token for e in content) == full.choices[0].message.content
    assert all(len(e.top_logprobs) in (3, 4) and e.logprob <= 0 for e in content)
    assert all(e.bytes == list(e.token.encode("utf-8")) for e in content)
    streamed = []
    for ch in c.chat.completions.create(model="smol", messages=msgs, max_tokens=10,
                                        temperature=0, logprobs=True, top_logprobs=3,
                                        stream=True):
        if ch.choices and ch.choices[0].logprobs is not None:
            streamed += ch.choices[0].logprobs.content
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    plain = c.chat.completions.create(model="smol", messages=msgs, max_tokens=4, temperature=0)
    assert plain.choices[0].logprobs is None


def test_logprobs_bad_requests(server):
    h = {"Authorization": f"Bearer {KEY}"}
    u = server.url
    msgs = [{"role": "user", "content": "x"}]
    for path, body in (("/v1/completions", {"prompt": "x", "logprobs": 21}),
                       ("/v1/chat/completions", {"messages": msgs, "top_logprobs": 2}),
                       ("/v1/chat/completions", {"messages": msgs, "logprobs": True,
                                                 "top_logprobs": 99})):
        r = httpx.post(u + path, json=body, headers=h)
        assert r.status_code == 400, (path, body, r.text)
        assert "logprobs" in r.json()["error"]["message"]
    # SmolLM2 has no fill-in-the-middle tokens: suffix= says so
    r = httpx.post(u + "/v1/completions", json={"prompt": "def f(", "suffix": "  return 1\n"},
                   headers=h)
    assert r.status_code == 400 and "fill-in-the-middle" in r.json()["error"]["message"]


def test_n_choices(server):
    """n=3: three requests of their own (choice i seeded seed + i), run side by side: each
    choice equals the single request with that seed; streamed choices equal the non-streamed."""
    c = server.client()
    kw = dict(model="smol", prompt="Once upon a time", max_tokens=10, temperature=0.9)
    multi = c.completions.create(n=3, seed=40, **kw)
    assert [ch.index for ch in multi.choices] == [0, 1, 2]
    singles = [c.completions.create(seed=40 + i, **kw).choices[0].text for i in range(3)]
    assert [ch.text for ch in multi.choices] == singles
    assert len(set(singles)) > 1                                  # the seeds differ
    assert 3 <= multi.usage.completion_tokens <= 30 and multi.usage.prompt_tokens > 0
    parts = {0: [], 1: [], 2: []}
    for chunk in c.completions.create(n=3, seed=40, stream=True, **kw):
        for ch in chunk.choices:
            parts[ch.index].append(ch.text)
    assert ["".join(parts[i]) for i in range(3)] == singles
    msgs = [{"role": "user", "content": "Name a color."}]
    chat = c.chat.completions.create(model="smol", messages=msgs, max_tokens=8, n=2, seed=7,
                                     temperature=0.9)
    one = [c.chat.completions.create(model="smol", messages=msgs, max_tokens=8, seed=7 + i,
                                     temperature=0.9).choices[0].message.content
           for i in range(2)]
    assert [ch.message.content for ch in chat.choices] == one
    streamed = {0: [], 1: []}
    for chunk in c.chat.completions.create(model="smol", messages=msgs, max_tokens=8, n=2,
                                           seed=7, temperature=0.9, stream=True):
        for ch in chunk.choices:
            if ch.delta.content:
                streamed[ch.index].append(ch.delta.content)
    assert ["".join(streamed[i]) for i in range(2)] == one


def test_n_all_or_none(small_server):
    """One slot and no queue: n=2 cannot be placed whole, so nothing is (429) and the slot is
    free for the next request."""
    s = small_server
    r = httpx.post(s.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 4, "n": 2},
                   timeout=60)
    assert r.status_code == 429, r.text
    assert _wait_idle(s)
    r = httpx.post(s.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2},
                   timeout=60)
    assert r.status_code == 200 and len(r.json()["choices"]) == 1


def test_echo_logprobs_like_llama(server, smollm2_path):
    """echo + logprobs: the prompt's log-probabilities (first token None), then the generated
    tokens', as Llama.create_completion gives them; max_tokens=0 scores the prompt alone (what
    evaluation harnesses ask a completions server for), streamed or not."""
    from pyllamacy import Llama
    c = server.client()
    prompt = "The three primary colors are red, yellow and"
    with Llama(smollm2_path, n_ctx=256, n_threads=1, verbose=False) as llm:
        ref = llm.create_completion(prompt, max_tokens=4, temperature=0, logprobs=1,
                                    echo=True)["choices"][0]
    got = c.completions.create(model="smol", prompt=prompt, max_tokens=4, temperature=0,
                               logprobs=1, echo=True).choices[0]
    assert got.text == ref["text"]
    rl, gl = ref["logprobs"], got.logprobs
    assert gl.tokens == rl["tokens"] and gl.text_offset == rl["text_offset"]
    assert gl.token_logprobs[0] is None and rl["token_logprobs"][0] is None
    assert gl.token_logprobs[1:] == pytest.approx(rl["token_logprobs"][1:], abs=1e-2)
    n_prompt = len(rl["tokens"]) - 4
    only = c.completions.create(model="smol", prompt=prompt, max_tokens=0, logprobs=1,
                                echo=True)
    oc = only.choices[0]
    assert oc.text == prompt and oc.finish_reason == "length"
    assert oc.logprobs.tokens == rl["tokens"][:n_prompt]
    assert oc.logprobs.token_logprobs[1:] == pytest.approx(
        rl["token_logprobs"][1:n_prompt], abs=1e-2)
    assert only.usage.completion_tokens == 0
    streamed = {"tokens": [], "token_logprobs": [], "text": ""}
    for ch in c.completions.create(model="smol", prompt=prompt, max_tokens=4, temperature=0,
                                   logprobs=1, echo=True, stream=True):
        streamed["text"] += ch.choices[0].text
        if ch.choices[0].logprobs is not None:
            streamed["tokens"] += ch.choices[0].logprobs.tokens
            streamed["token_logprobs"] += ch.choices[0].logprobs.token_logprobs
    assert streamed["text"] == got.text and streamed["tokens"] == gl.tokens
    assert streamed["token_logprobs"] == gl.token_logprobs
