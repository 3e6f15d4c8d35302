"""What the Engine's slots can do, the server serves, with llama-cpp-python's and llama-server's
names: images in chat (clip_model_path), per-request LoRA (lora_paths + the `lora` field,
GET /lora-adapters) and speculative decoding per model (draft_model) — checked with the
official openai client on loopback against `Llama`, which runs the single-sequence path."""
from __future__ import annotations

import concurrent.futures as cf

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
gguf = pytest.importorskip("gguf")
import httpx  # noqa: E402

import pyllamacy as pc  # noqa: E402
from pyllamacy import Llama  # noqa: E402
from pyllamacy.server import ModelSettings  # noqa: E402
from pyllamacy.server.__main__ import settings_from_args  # noqa: E402

from test_lora import tiny  # noqa: E402,F401  (module fixture)
from test_multimodal import QUESTION, _data_uri, _msgs, mm  # noqa: E402,F401
from test_server import KEY, _Server  # noqa: E402

KW = dict(n_ctx=256, n_batch=64, n_threads=1, n_threads_batch=1, verbose=False)


def _chat(client, messages, **kw):
    r = client.chat.completions.create(model="m", messages=messages, max_tokens=8,
                                       temperature=0, **kw)
    return r.choices[0].message.content, r


# -- images -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mm_server(mm):
    text, proj, _, _ = mm
    srv = _Server([ModelSettings(model=text, model_alias="m", clip_model_path=proj,
                                 n_parallel=4, max_queue=16, **KW)], api_key=KEY)
    yield srv
    srv.stop()


def test_server_images_equal_llama_handler(mm, mm_server):
    """Greedy image answers of the server equal Llama + MultimodalChatHandler, token for
    token (the server's slots evaluate the media chunks through the projector)."""
    from pyllamacy.chat_multimodal import MultimodalChatHandler
    text, proj, images, _ = mm
    client = mm_server.client()
    with MultimodalChatHandler(clip_model_path=proj) as handler, \
            Llama(text, chat_handler=handler, n_ctx=256, n_threads=1, verbose=False) as llm:
        for path, _ in images:
            msgs = _msgs({"type": "image_url", "image_url": {"url": _data_uri(path)}})
            want = llm.create_chat_completion(messages=msgs, max_tokens=8, temperature=0)
            got, r = _chat(client, msgs)
            assert got == want["choices"][0]["message"]["content"]
            assert r.usage.prompt_tokens == want["usage"]["prompt_tokens"]
            assert r.usage.completion_tokens == want["usage"]["completion_tokens"]
            # streamed: the same text
            stream = client.chat.completions.create(model="m", messages=msgs, max_tokens=8,
                                                    temperature=0, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream
                           if c.choices) == got
        plain = [{"role": "user", "content": QUESTION}]
        want = llm.create_chat_completion(messages=plain, max_tokens=8, temperature=0)
        assert _chat(client, plain)[0] == want["choices"][0]["message"]["content"]


def test_server_images_16_concurrent(mm, mm_server):
    """16 image+text requests at once on 4 slots: all complete, each equal to its solo
    answer."""
    _, _, images, _ = mm
    client = mm_server.client()
    msgs = [_msgs({"type": "image_url", "image_url": {"url": _data_uri(images[i % 3][0])}},
                  text=f"{QUESTION} ({i})") for i in range(16)]
    solo = [_chat(client, m)[0] for m in msgs[:3]]
    with cf.ThreadPoolExecutor(16) as ex:
        got = list(ex.map(lambda m: _chat(client, m)[0], msgs))
    assert len(got) == 16 and all(isinstance(g, str) for g in got)
    assert got[:3] == solo


def test_server_bad_media_is_400(mm, mm_server, tmp_path):
    _, _, images, _ = mm
    client = mm_server.client()
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"\x89PNG nonsense")
    for part in ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
                 # files and URLs are off unless the model's settings allow them
                 {"type": "image_url", "image_url": {"url": "file://" + images[0][0]}},
                 {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}},
                 {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}):
        with pytest.raises(openai.BadRequestError):
            _chat(client, _msgs(part))
    # and the server still answers
    _chat(client, [{"role": "user", "content": "Hi"}])


def test_server_images_without_projector_is_400(smollm2_path, mm):
    _, _, images, _ = mm
    srv = _Server([ModelSettings(model=smollm2_path, model_alias="m", n_parallel=1, **KW)])
    try:
        with pytest.raises(openai.BadRequestError, match="clip_model_path"):
            _chat(srv.client(), _msgs({"type": "image_url",
                                       "image_url": {"url": _data_uri(images[0][0])}}))
    finally:
        srv.stop()


def test_clip_model_path_setting(mm):
    text, proj, _, _ = mm
    _, models = settings_from_args(["--model", text, "--clip_model_path", proj])
    assert models[0].clip_model_path == proj


# -- per-request LoRA -------------------------------------------------------------------------

def test_server_lora_per_request(tiny):
    """`lora: [{"id", "scale"}]` (llama-server's field) equals Llama(lora_path, lora_scale),
    greedy; requests with different adapters in flight at once each get their own."""
    base, adapter_path, *_ = tiny
    f32 = dict(type_k="f32", type_v="f32")
    prompts = ["Once upon a time", "The capital of France is", "def fibonacci(n):"]
    scales = [None, 0.6, -0.5]          # None: no `lora` field (the adapter's global scale 0)
    want = {}
    for s in scales:
        kw = dict(lora_path=adapter_path, lora_scale=s) if s is not None else {}
        with Llama(base, n_ctx=256, n_threads=1, verbose=False, **f32, **kw) as llm:
            for p in prompts:
                want[(p, s)] = llm(p, max_tokens=10, temperature=0)["choices"][0]["text"]
    assert want[(prompts[0], 0.6)] != want[(prompts[0], None)]
    srv = _Server([ModelSettings(model=base, model_alias="m", lora_paths=[adapter_path],
                                 lora_scales=[0.0], n_parallel=9, **KW, **f32)])
    try:
        client = srv.client()

        def ask(p, s):
            extra = {"lora": [{"id": 0, "scale": s}]} if s is not None else None
            r = client.completions.create(model="m", prompt=p, max_tokens=10, temperature=0,
                                          extra_body=extra)
            return r.choices[0].text
        for p in prompts:
            for s in scales:
                assert ask(p, s) == want[(p, s)], (p, s)
        jobs = [(p, s) for p in prompts for s in scales] * 2
        with cf.ThreadPoolExecutor(len(jobs)) as ex:
            got = list(ex.map(lambda j: ask(*j), jobs))
        assert got == [want[j] for j in jobs]
        # chat takes the field too
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content":
                                                                 "Hi"}], max_tokens=6,
                                           temperature=0,
                                           extra_body={"lora": [{"id": 0, "scale": 0.6}]})
        assert r.choices[0].message.content is not None
        info = httpx.get(srv.url + "/lora-adapters").json()
        assert info == [{"id": 0, "path": adapter_path, "scale": 0.0}]
        for bad in ([{"id": 1, "scale": 1.0}], [{"id": 0, "scale": "x"}], [{"scale": 1.0}],
                    [{"id": -1, "scale": 1.0}], [{"id": True, "scale": 1.0}], {"id": 0}):
            with pytest.raises(openai.BadRequestError):
                client.completions.create(model="m", prompt="x", max_tokens=2,
                                          extra_body={"lora": bad})
    finally:
        srv.stop()


def test_lora_settings(tiny):
    base, adapter_path, *_ = tiny
    _, models = settings_from_args(["--model", base, "--lora_paths", adapter_path, adapter_path,
                                    "--lora_scales", "0.5", "1.0"])
    assert models[0].lora_paths == [adapter_path, adapter_path]
    assert models[0].lora_scales == [0.5, 1.0]
    with pytest.raises(Exception):
        ModelSettings(model=base, lora_paths=[adapter_path], lora_scales=[1.0, 2.0])


# -- speculative decoding ------------------------------------------------------------------------

@pytest.mark.parametrize("draft", ["prompt-lookup-decoding", "gguf"])
def test_server_speculative_equals_plain(smollm2_path, draft):
    """A model served with a draft (prompt lookup, or a draft GGUF) answers exactly as without
    one: greedy and seeded, completions and chat, several requests at once."""
    spec = dict(draft_model=smollm2_path if draft == "gguf" else draft,
                draft_model_num_pred_tokens=4)
    plain = _Server([ModelSettings(model=smollm2_path, model_alias="m", n_parallel=4,
                                   seed=1234, **KW)])
    fast = _Server([ModelSettings(model=smollm2_path, model_alias="m", n_parallel=4, seed=1234,
                                  **spec, **KW)])
    prompts = ["1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,", "Once upon a time, once upon a time,",
               "def fibonacci(n):"]
    try:
        def ask(srv, p, **kw):
            r = srv.client().completions.create(model="m", prompt=p, max_tokens=24, **kw)
            return r.choices[0].text, r.choices[0].finish_reason

        for kw in ({"temperature": 0}, {"temperature": 0.8, "seed": 7}):
            want = [ask(plain, p, **kw) for p in prompts]
            with cf.ThreadPoolExecutor(3) as ex:
                got = list(ex.map(lambda p: ask(fast, p, **kw), prompts))
            assert got == want, kw
        msgs = [{"role": "user", "content": "Count from 1 to 20."}]
        a = plain.client().chat.completions.create(model="m", messages=msgs, max_tokens=24,
                                                   temperature=0)
        b = fast.client().chat.completions.create(model="m", messages=msgs, max_tokens=24,
                                                  temperature=0)
        assert a.choices[0].message.content == b.choices[0].message.content
        stats = fast.stats()
        assert stats.get("pyllamacy_drafted_tokens_total", 0) > 0
    finally:
        plain.stop()
        fast.stop()


def test_draft_settings(smollm2_path, tmp_path):
    _, models = settings_from_args(["--model", smollm2_path, "--draft_model",
                                    "prompt-lookup-decoding", "--draft_model_num_pred_tokens",
                                    "5"])
    assert models[0].draft_model == "prompt-lookup-decoding"
    assert models[0].draft_model_num_pred_tokens == 5
    with pytest.raises(Exception):
        ModelSettings(model=smollm2_path, draft_model=str(tmp_path / "missing.gguf"))


# -- the same results as Llama -------------------------------------------------------------------

def test_server_n_choices_and_logprobs_equal_llama(smollm2_path):
    """n > 1 (choice i seeded seed + i) and chat logprobs: the server's numbers are Llama's
    (both go through pyllamacy.pipeline; the server's slots run the Engine)."""
    srv = _Server([ModelSettings(model=smollm2_path, model_alias="m", n_parallel=4, **KW)])
    prompt, seed = "Once upon a time", 5
    try:
        client = srv.client()
        r = client.completions.create(model="m", prompt=prompt, max_tokens=12, n=3, seed=seed,
                                      temperature=0.8, top_p=0.9)
        got = sorted((c.index, c.text) for c in r.choices)
        msgs = [{"role": "user", "content": "Name a color."}]
        c = client.chat.completions.create(model="m", messages=msgs, max_tokens=6,
                                           temperature=0, logprobs=True, top_logprobs=3)
        with Llama(smollm2_path, n_ctx=256, n_threads=1, verbose=False) as llm:
            want = [(i, llm(prompt, max_tokens=12, seed=seed + i, temperature=0.8,
                            top_p=0.9)["choices"][0]["text"]) for i in range(3)]
            lc = llm.create_chat_completion(messages=msgs, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=3)
        assert got == want
        assert c.choices[0].message.content == lc["choices"][0]["message"]["content"]
        ours = [(t.token, round(t.logprob, 3), [(a.token, round(a.logprob, 3))
                                                for a in t.top_logprobs])
                for t in c.choices[0].logprobs.content]
        theirs = [(t["token"], round(t["logprob"], 3), [(a["token"], round(a["logprob"], 3))
                                                       for a in t["top_logprobs"]])
                  for t in lc["choices"][0]["logprobs"]["content"]]
        assert ours == theirs
    finally:
        srv.stop()
