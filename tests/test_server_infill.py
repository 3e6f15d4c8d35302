"""POST /infill (llama-server's code completion for editors) on pyllamacy's server.

The outside oracle is llama.cpp's llama-server, built from the same pinned tree, serving the
same tiny random-weight models (F32, so both run the same arithmetic) over vocabularies with
fill-in-the-middle tokens:

- "sc": StarCoder2's vocabulary, no BOS, with FIM_REP / FIM_SEP set (<repo_name>,
  <file_sep>): the repo-level layout of input_extra;
- "ds": DeepSeek-Coder's, with BOS and without FIM_REP / FIM_SEP: extra chunks behind a
  "--- snippet ---" line;
- "nofim": GPT-2's, without FIM tokens: /infill is refused.

Both servers get one slot of N_CTX tokens, batches of N_BATCH, and requests with n_predict
N_PREDICT (llama-server also started with -n N_PREDICT: it budgets the extra chunks by its
own -n, pyllamacy by the request's). Greedy (temperature 0), cache_prompt false: the prompt
(llama-server's `prompt` text and `tokens_evaluated`) and the completion must be the same,
also when the prefix, the suffix and the extra chunks are cut to fit.
"""
from __future__ import annotations

import json
import subprocess

import pytest

httpx = pytest.importorskip("httpx")
gguf = pytest.importorskip("gguf")

from gguf_fixtures import tiny_weights, write_tiny_model  # noqa: E402
from serving import LocalServer, free_port, log_tail, start_process, stop_process  # noqa: E402

N_CTX, N_BATCH, N_PREDICT = 256, 64, 8
MODELS = {"sc": ("starcoder", {"fim_rep_token_id": 5, "fim_sep_token_id": 6}),
          "ds": ("deepseek-coder", None),
          "nofim": ("gpt-2", None)}

CODE = "def add(a, b):\n    return a + b\n\n"
SMALL = dict(input_prefix="import os\n\ndef area(w, h):\n    ",
             input_suffix="\n\nprint(area(2, 3))\n",
             prompt="return", input_extra=[{"filename": "util.py", "text": CODE},
                                           {"text": "x = 1\n"}])
# over every budget: prefix > 3/4 n_batch, suffix > n_batch/4, extras > n_ctx - n_batch - 2n
# (n_ctx: the tiny models were trained on 256 positions; llama-server caps a slot there)
LONG = dict(input_prefix="".join(f"v{i} = {i} * {i}\n" for i in range(120)),
            input_suffix="".join(f"print(v{i})\n" for i in range(60)),
            prompt="total =",
            input_extra=[{"filename": f"m{k}.py", "text": CODE * 12} for k in range(6)])
CASES = {"small": SMALL, "long": LONG, "no_extra": {k: v for k, v in SMALL.items()
                                                    if k != "input_extra"}}
GREEDY = dict(n_predict=N_PREDICT, temperature=0, cache_prompt=False, seed=1)


@pytest.fixture(scope="module")
def fim_models(vocab_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("fim-models")
    out = {}
    for name, (vocab, ids) in MODELS.items():
        src = str(vocab_dir / f"ggml-vocab-{vocab}.gguf")
        n_vocab = len(gguf.GGUFReader(src).fields["tokenizer.ggml.tokens"].data)
        path = str(d / f"{name}.gguf")
        write_tiny_model(path, src, tiny_weights(n_vocab, seed=3), token_ids=ids)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def server(fim_models):
    from pyllamacy.server import ModelSettings
    srv = LocalServer([ModelSettings(model=p, model_alias=name, n_ctx=N_CTX, n_batch=N_BATCH,
                                     n_ubatch=N_BATCH, n_parallel=1, n_threads=1,
                                     embedding=False)
                       for name, p in fim_models.items()])
    yield srv
    srv.stop()


def _start_llama_server(bin_path, model_path, log_dir):
    help_text = subprocess.run([str(bin_path), "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    port = free_port()
    cmd = [str(bin_path), "-m", model_path, "--host", "127.0.0.1", "--port", str(port),
           "-c", str(N_CTX), "-np", "1", "-b", str(N_BATCH), "-ub", str(N_BATCH),
           "-n", str(N_PREDICT), "-t", "1", "-tb", "1", "-ngl", "0", "-dev", "none"]
    for flag in ("--no-warmup", "--no-webui"):
        if flag in help_text:
            cmd.append(flag)
    if "--cache-ram" in help_text:
        cmd += ["--cache-ram", "0"]
    log = log_dir / "llama-server.log"
    url = f"http://127.0.0.1:{port}"
    return start_process(cmd, log, url, "/health"), url, log


@pytest.fixture(scope="module")
def oracles(llama_server_bin, fim_models, tmp_path_factory):
    procs, urls = [], {}
    try:
        for name in ("sc", "ds"):
            proc, url, log = _start_llama_server(llama_server_bin, fim_models[name],
                                                 tmp_path_factory.mktemp(f"ls-{name}"))
            procs.append(proc)
            urls[name] = (url, log)
        yield urls
    finally:
        for p in procs:
            stop_process(p)


def _post(url, body, **kw):
    return httpx.post(url + "/infill", json=body, timeout=300, **kw)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["sc", "ds"])
def test_infill_equals_llama_server(server, oracles, name, case):
    url, log = oracles[name]
    body = dict(CASES[case], **GREEDY)
    theirs = _post(url, body)
    assert theirs.status_code == 200, (theirs.text, log_tail(log))
    ours = _post(server.url, dict(body, model=name))
    assert ours.status_code == 200, ours.text
    t, o = theirs.json(), ours.json()
    assert o["prompt"] == t["prompt"]
    assert o["tokens_evaluated"] == t["tokens_evaluated"]
    assert o["content"] == t["content"]
    assert o["tokens_predicted"] == t["tokens_predicted"]
    assert o["stop_type"] == t["stop_type"] and o["stop"] is True
    if case == "long":
        # everything was cut: the prompt fits n_ctx - n_batch (extras) + n_batch (FIM part)
        assert o["tokens_evaluated"] <= N_CTX - 2 * N_PREDICT + 2
        assert "v0 = 0" not in o["prompt"] and "v119 = 119" in o["prompt"]
        assert "print(v0)" in o["prompt"] and "print(v59)" not in o["prompt"]
    if name == "sc" and case != "long":
        assert o["prompt"].startswith("<repo_name>myproject\n<file_sep>")
    if name == "ds" and case == "small":
        assert "--- snippet ---" in o["prompt"]


@pytest.mark.parametrize("n_indent", [0, 2, 4])
def test_n_indent_equals_llama_server(server, oracles, n_indent):
    """n_indent: the completion ends before the first line (after the first) indented less
    than n_indent, as llama-server's stop_type "limit". A grammar makes the text lines of known
    indentation, so the cut is exercised whatever the random weights prefer."""
    url, log = oracles["sc"]
    grammar = 'root ::= "x = 1\\n  y = 2\\n      z = 3\\n    w = 4\\nv = 5\\n"'
    body = dict(SMALL, temperature=0, cache_prompt=False, seed=1, n_predict=40,
                grammar=grammar, n_indent=n_indent)
    theirs = _post(url, body)
    assert theirs.status_code == 200, (theirs.text, log_tail(log))
    ours = _post(server.url, dict(body, model="sc"))
    assert ours.status_code == 200, ours.text
    t, o = theirs.json(), ours.json()
    assert o["content"] == t["content"], (o["content"], t["content"])
    assert o["stop_type"] == t["stop_type"]
    expect = {0: "x = 1\n  y = 2\n      z = 3\n    w = 4\nv = 5\n",
              2: "x = 1\n  y = 2\n      z = 3\n    w = 4\n",
              4: "x = 1\n  "}[n_indent]
    assert o["content"] == expect
    assert (o["stop_type"] == "limit") == (n_indent > 0)
    # streamed: the same pieces
    with httpx.stream("POST", server.url + "/infill", json=dict(body, model="sc", stream=True),
                      timeout=300) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert "".join(e.get("content", "") for e in events) == expect
    assert events[-1]["stop"] is True and events[-1]["stop_type"] == o["stop_type"]


def test_prompt_only_equals_llama_server(server, oracles):
    """n_predict 0: the prompt is evaluated, nothing is generated here."""
    url, log = oracles["sc"]
    body = dict(SMALL, temperature=0, cache_prompt=False, n_predict=0)
    theirs = _post(url, body)
    assert theirs.status_code == 200, (theirs.text, log_tail(log))
    ours = _post(server.url, dict(body, model="sc")).json()
    assert ours["tokens_evaluated"] == theirs.json()["tokens_evaluated"]
    assert ours["prompt"] == theirs.json()["prompt"]
    assert ours["content"] == "" and ours["tokens_predicted"] == 0


def test_infill_equals_completions_suffix(server):
    """Without input_extra (and with a model without FIM_REP / FIM_SEP, so no repo header),
    /infill's prompt is /v1/completions' prompt + suffix: the same greedy text."""
    prefix, suffix = SMALL["input_prefix"], SMALL["input_suffix"]
    r = _post(server.url, dict(model="ds", input_prefix=prefix, input_suffix=suffix,
                               **GREEDY)).json()
    c = httpx.post(server.url + "/v1/completions", timeout=300,
                   json=dict(model="ds", prompt=prefix, suffix=suffix, max_tokens=N_PREDICT,
                             temperature=0, seed=1)).json()
    assert r["content"] == c["choices"][0]["text"]
    assert r["tokens_evaluated"] == c["usage"]["prompt_tokens"]
    assert r["tokens_predicted"] == c["usage"]["completion_tokens"]


@pytest.mark.parametrize("name", ["sc", "ds"])
def test_stream_joins_to_content(server, name):
    body = dict(SMALL, model=name, **GREEDY)
    whole = _post(server.url, body).json()
    pieces, last = [], None
    with httpx.stream("POST", server.url + "/infill", json=dict(body, stream=True),
                      timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            ev = json.loads(line[6:])
            assert last is None, "nothing after the stop event"
            if ev["stop"]:
                last = ev
            else:
                pieces.append(ev["content"])
    assert last is not None and last["content"] == ""
    assert "".join(pieces) == whole["content"] and whole["content"]
    assert last["tokens_predicted"] == whole["tokens_predicted"]
    assert last["tokens_evaluated"] == whole["tokens_evaluated"]


BAD = [
    ({"input_suffix": ""}, "input_prefix"),
    ({"input_prefix": 1, "input_suffix": ""}, "input_prefix"),
    ({"input_prefix": "", "input_suffix": ["x"]}, "input_suffix"),
    ({"input_prefix": "", "input_suffix": "", "prompt": 5}, "prompt"),
    ({"input_prefix": "", "input_suffix": "", "input_extra": "x"}, "input_extra"),
    ({"input_prefix": "", "input_suffix": "", "input_extra": ["x"]}, "input_extra[0]"),
    ({"input_prefix": "", "input_suffix": "", "input_extra": [{"filename": "a"}]},
     "input_extra[0].text"),
    ({"input_prefix": "", "input_suffix": "", "input_extra": [{"text": "a", "filename": 3}]},
     "input_extra[0].filename"),
    ({"input_prefix": "", "input_suffix": "", "n_predict": -2}, "n_predict"),
    ({"input_prefix": "", "input_suffix": "", "n_predict": "5"}, "n_predict"),
    ({"input_prefix": "", "input_suffix": "", "n_indent": -1}, "n_indent"),
    ({"input_prefix": "", "input_suffix": "", "n_indent": 2.5}, "n_indent"),
    ({"input_prefix": "", "input_suffix": "", "temperature": "hot"}, "temperature"),
    ({"input_prefix": "", "input_suffix": "", "temperature": -1}, "temperature"),
    ({"input_prefix": "", "input_suffix": "", "top_k": 1.5}, "top_k"),
    ({"input_prefix": "", "input_suffix": "", "stop": [1]}, "stop"),
    ({"input_prefix": "", "input_suffix": "", "stream": "yes"}, "stream"),
    ({"input_prefix": "", "input_suffix": "", "seed": True}, "seed"),
    ({"input_prefix": "\ud800", "input_suffix": ""}, "input_prefix"),
]


@pytest.mark.parametrize("body,field", BAD)
def test_bad_requests_name_the_field(server, body, field):
    # json.dumps escapes a lone surrogate as \\ud800, which JSON can carry
    r = httpx.post(server.url + "/infill", content=json.dumps(dict(body, model="ds")),
                   headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert field in err["message"] and err.get("param") == field, err


def test_model_without_fim_and_bad_json(server):
    r = _post(server.url, dict(SMALL, model="nofim", **GREEDY))
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "not supported" in msg and "missing: prefix, suffix, middle" in msg
    r = httpx.post(server.url + "/infill", content=b"{not json", timeout=30)
    assert r.status_code == 400
    r = _post(server.url, ["input_prefix"])
    assert r.status_code == 400
    # the server still answers
    assert _post(server.url, dict(SMALL, model="ds", **GREEDY)).status_code == 200


def test_api_key_required(fim_models):
    from pyllamacy.server import ModelSettings
    srv = LocalServer([ModelSettings(model=fim_models["ds"], model_alias="ds", n_ctx=256,
                                     n_parallel=1, n_threads=1, embedding=False)],
                      api_key="s3cret")
    try:
        body = dict(input_prefix="a = ", input_suffix="\n", n_predict=2, temperature=0)
        assert _post(srv.url, body).status_code == 401
        assert _post(srv.url, body, headers={"Authorization": "Bearer nope"}).status_code == 401
        r = _post(srv.url, body, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["tokens_predicted"] <= 2
    finally:
        srv.stop()
