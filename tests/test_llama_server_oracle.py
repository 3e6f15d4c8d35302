"""An outside oracle: llama.cpp's own llama-server, built from the same pinned tree, against
`pyllamacy.Llama` and pyllamacy's server, greedy, on the CPU.

llama-server runs as a child process on 127.0.0.1 (a free port, one slot, a fixed context,
`-dev none`: no device offload), and is stopped by the fixture's finalizer (SIGTERM, then SIGKILL
after a bounded wait). What must agree, for every prompt:

- tokenization: llama-server's /tokenize (add_special true and false) = `Llama.tokenize` (so both
  add BOS, or not, the same way: the model's `add_bos` flag decides, for both);
- the raw completion: /completion with temperature 0 (llama-server's greedy: its chain ends in
  temp_ext(0), which keeps only the top logit) = `Llama.create_completion(temperature=0)`, text
  and finish reason; and its token ids (`return_tokens`) = `Llama.generate(temp=0)`;
- the chat path: /v1/chat/completions = `Llama.create_chat_completion`, both rendering the
  model's own template (SmolLM2's adds a default system prompt when the messages have none: both
  do, prompt_tokens must agree), and the prompt llama-server renders (/apply-template), given to
  `Llama.create_completion`, gives the same text again;
- pyllamacy's OpenAI server: /v1/completions through the official `openai` client = the same
  request to llama-server's /v1/completions.

Every request to llama-server sets `cache_prompt: false`, so each prompt is evaluated whole (a
reused prefix would change how the prompt is split into batches, not what greedy decoding should
give, but this keeps the comparison to one code path).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyllamacy

httpx = pytest.importorskip("httpx")

from serving import free_port, log_tail, start_process, stop_process  # noqa: E402

N_PREDICT = 32
N_CTX = 512
THREADS = 1
SEED = 1234

# plain text, code, non-ASCII text (multi-byte pieces on both sides), and one chat-formatted
# raw prompt whose greedy answer ends with end-of-generation well before N_PREDICT tokens
PROMPTS = {
    "plain": "The capital of France is",
    "story": "Once upon a time, in a small village by the sea,",
    "code": "def fibonacci(n):\n    ",
    "non_ascii": "Der Bär läuft über die Straße; 東京は日本の首都です。 «Ça va ?» ",
    "eos_early": "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n",
}
CHATS = {
    "color": [{"role": "user", "content": "Name a color."}],
    "system": [{"role": "system", "content": "You answer in one short sentence."},
               {"role": "user", "content": "Why is the sky blue?"}],
    "non_ascii": [{"role": "user", "content": "Traduis en anglais : « Où est la gare ? »"}],
}


class _LlamaServer:
    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log
        self.http = httpx.Client(base_url=url, timeout=300)

    def post(self, path: str, **body) -> dict:
        r = self.http.post(path, json=body)
        assert r.status_code == 200, (r.status_code, r.text, log_tail(self.log))
        return r.json()


@pytest.fixture(scope="module")
def llama_server(llama_server_bin, smollm2_path, tmp_path_factory):
    help_text = subprocess.run([str(llama_server_bin), "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    port = free_port()
    cmd = [str(llama_server_bin), "-m", smollm2_path, "--host", "127.0.0.1", "--port", str(port),
           "-a", "smol", "-c", str(N_CTX), "-np", "1", "-b", "512", "-ub", "512",
           "-t", str(THREADS), "-tb", str(THREADS), "-ngl", "0", "-dev", "none",
           "--seed", str(SEED)]
    # optional flags, where this llama-server has them: no warm-up run, no web UI, no RAM cache
    for flag in ("--no-warmup", "--no-webui"):
        if flag in help_text:
            cmd.append(flag)
    if "--cache-ram" in help_text:
        cmd += ["--cache-ram", "0"]
    log = tmp_path_factory.mktemp("llama-server") / "llama-server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_process(cmd, log, url, "/health")
    srv = _LlamaServer(url, log)
    try:
        yield srv
    finally:
        srv.http.close()
        stop_process(proc)


@pytest.fixture(scope="module")
def llm(smollm2_path):
    # the same context as the server's slot; no device offload (as llama-server's -dev none)
    m = pyllamacy.Llama(smollm2_path, n_ctx=N_CTX, n_batch=512, n_ubatch=512, seed=SEED,
                        n_threads=THREADS, n_threads_batch=THREADS, n_gpu_layers=0,
                        op_offload=False, verbose=False)
    yield m
    m.close()


def _server_completion(srv, prompt: str, n: int = N_PREDICT) -> dict:
    return srv.post("/completion", prompt=prompt, n_predict=n, temperature=0, seed=SEED,
                    cache_prompt=False, return_tokens=True)


# llama-server's stop_type -> OpenAI finish_reason
_FINISH = {"eos": "stop", "word": "stop", "limit": "length"}


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_tokenize_same_as_llama_server(llama_server, llm, name):
    prompt = PROMPTS[name]
    theirs, ours = {}, {}
    for add_special in (True, False):
        theirs[add_special] = llama_server.post("/tokenize", content=prompt,
                                                add_special=add_special,
                                                parse_special=True)["tokens"]
        ours[add_special] = llm.tokenize(prompt.encode("utf-8"), add_bos=add_special,
                                         special=True)
        assert ours[add_special] == theirs[add_special], (name, add_special)
    # BOS: both add it exactly when the model's flag says so (SmolLM2: add_bos_token false)
    bos = [llm.token_bos()] if llm.model.add_bos else []
    assert theirs[True] == bos + theirs[False]
    assert ours[True] == bos + ours[False]


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_greedy_completion_equals_llama_server(llama_server, llm, name):
    prompt = PROMPTS[name]
    theirs = _server_completion(llama_server, prompt)
    ours = llm.create_completion(prompt, max_tokens=N_PREDICT, temperature=0, seed=SEED)
    choice = ours["choices"][0]
    # the prompt as both evaluated it
    prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    assert theirs["tokens_evaluated"] == len(prompt_ids) == ours["usage"]["prompt_tokens"]
    assert choice["text"] == theirs["content"], name
    assert choice["finish_reason"] == _FINISH[theirs["stop_type"]], name
    # token ids: llama-server lists the end-of-generation token it stopped on; generate()
    # yields it too (as llama-cpp-python's), and the caller stops there
    their_ids = list(theirs["tokens"])
    our_ids = []
    for t in llm.generate(prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        our_ids.append(t)
        if len(our_ids) == N_PREDICT or llm.model.is_eog(t):
            break
    assert our_ids == their_ids, name
    if theirs["stop_type"] == "eos":
        assert llm.model.is_eog(their_ids[-1])
        their_ids = their_ids[:-1]
    # usage: llama-server counts the end-of-generation token it sampled (n_decoded), pyllamacy
    # does not, as llama-cpp-python (a known difference, not an error of either)
    assert ours["usage"]["completion_tokens"] == len(their_ids) == \
        theirs["tokens_predicted"] - (theirs["stop_type"] == "eos")
    if name == "eos_early":       # the case this prompt is here for
        assert theirs["stop_type"] == "eos" and theirs["tokens_predicted"] < N_PREDICT
    else:
        assert theirs["stop_type"] == "limit" and len(their_ids) == N_PREDICT


@pytest.mark.parametrize("name", sorted(CHATS))
def test_greedy_chat_equals_llama_server(llama_server, llm, name):
    messages = CHATS[name]
    theirs = llama_server.post("/v1/chat/completions", messages=messages, temperature=0,
                               max_tokens=N_PREDICT, seed=SEED, cache_prompt=False)
    ours = llm.create_chat_completion(messages, temperature=0, max_tokens=N_PREDICT, seed=SEED)
    # both render the model's own template, default system prompt included
    assert ours["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"], name
    assert ours["choices"][0]["message"]["content"] == \
        theirs["choices"][0]["message"]["content"], name
    assert ours["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"]
    # llama-server counts the end-of-generation token it stopped on, pyllamacy does not
    assert ours["usage"]["completion_tokens"] == theirs["usage"]["completion_tokens"] - (
        theirs["choices"][0]["finish_reason"] == "stop")
    # the prompt llama-server rendered, completed by Llama as plain text: the same answer
    rendered = llama_server.post("/apply-template", messages=messages)["prompt"]
    raw = llm.create_completion(rendered, max_tokens=N_PREDICT, temperature=0)
    assert raw["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"]
    assert raw["choices"][0]["text"] == theirs["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def pyllamacy_server(smollm2_path, tmp_path_factory):
    """pyllamacy's OpenAI server as a user starts it (python -m pyllamacy.server), one slot,
    the same context, threads and batch as llama-server above."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    port = free_port()
    env = dict(os.environ)
    pkg_root = str(Path(pyllamacy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pyllamacy.server", "--model", smollm2_path,
           "--model_alias", "smol", "--n_ctx", str(N_CTX), "--n_parallel", "1",
           "--n_batch", "512", "--n_ubatch", "512", "--n_threads", str(THREADS),
           "--n_threads_batch", str(THREADS), "--n_gpu_layers", "0",
           "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path_factory.mktemp("pyllamacy-server") / "pyllamacy-server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_process(cmd, log, url, "/health", env=env)
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.mark.parametrize("name", ["plain", "non_ascii", "eos_early"])
def test_our_server_completions_equal_llama_server(llama_server, pyllamacy_server, name):
    openai = pytest.importorskip("openai")
    prompt = PROMPTS[name]
    out = {}
    for who, url in (("llama-server", llama_server.url), ("pyllamacy", pyllamacy_server)):
        with openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                           timeout=300) as client:
            out[who] = client.completions.create(
                model="smol", prompt=prompt, max_tokens=N_PREDICT, temperature=0, seed=SEED,
                extra_body={"cache_prompt": False})
    a, b = out["pyllamacy"], out["llama-server"]
    assert a.choices[0].text == b.choices[0].text, name
    assert a.choices[0].finish_reason == b.choices[0].finish_reason
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    # llama-server also counts the end-of-generation token it stopped on (see above)
    assert a.usage.completion_tokens == \
        b.usage.completion_tokens - (b.choices[0].finish_reason == "stop")
