"""Reranking against llama.cpp's own llama-server (`--reranking`) on a tiny random
Qwen3-reranker-shaped GGUF written here: the same scores, token counts and order from
`Llama.rank` / `create_rerank` and from pyllamacy's /v1/rerank; the Jina / Cohere answer's shape;
bad requests are 400s naming the field; the API key is required (Bearer or x-api-key)."""
from __future__ import annotations

import pytest

import pyllamacy

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from gguf_fixtures import write_tiny_reranker  # noqa: E402
from pyllamacy.rerank import check_rerank_request  # noqa: E402
from pyllamacy.server import ModelSettings  # noqa: E402
from serving import LocalServer, free_port, log_tail, start_process, stop_process  # noqa: E402

QUERY = "What is a panda?"
DOCS = ["hi", "The giant panda is a bear native to south central China.",
        "Paris is the capital of France.", "Pandas eat bamboo.", "Ça va ? Der Bär läuft."]
KEY = "rerank-key"


@pytest.fixture(scope="module", params=["template", "plain"])
def reranker(request, smollm2_path, tmp_path_factory):
    """Two rerankers: one with a `tokenizer.chat_template.rerank` prompt, one without (the
    [BOS] query [EOS] [SEP] document [EOS] path)."""
    path = tmp_path_factory.mktemp("rr") / f"rr-{request.param}.gguf"
    write_tiny_reranker(str(path), smollm2_path, template=request.param == "template")
    return str(path)


@pytest.fixture(scope="module")
def oracle(reranker, llama_server_bin, tmp_path_factory):
    """llama-server --reranking: {document index: score}, total tokens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("ls") / "llama-server.log"
    cmd = [str(llama_server_bin), "-m", reranker, "--reranking", "--host", "127.0.0.1",
           "--port", str(port), "-c", "512", "-np", "1", "-t", "1", "-tb", "1", "-ngl", "0",
           "-dev", "none"]
    proc = start_process(cmd, log, url, "/health")
    try:
        r = httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": DOCS,
                                                 "top_n": len(DOCS)}, timeout=120)
        assert r.status_code == 200, (r.text, log_tail(log))
        body = r.json()
    finally:
        stop_process(proc)
    return {x["index"]: x["relevance_score"] for x in body["results"]}, \
        body["usage"]["prompt_tokens"], [x["index"] for x in body["results"]]


@pytest.fixture(scope="module")
def llama(reranker):
    m = pyllamacy.Llama(reranker, embedding=True, n_ctx=512, n_threads=1, verbose=False)
    yield m
    m.close()


def test_llama_rank_equals_llama_server(llama, oracle):
    scores, n_tokens, order = oracle
    ours = llama.rank(QUERY, DOCS)
    assert ours == pytest.approx([scores[i] for i in range(len(DOCS))], abs=1e-4)
    # the scores differ between documents, so the order below is a real check
    assert len({round(s, 4) for s in ours}) == len(DOCS)
    out = llama.create_rerank(QUERY, DOCS)
    assert [r["index"] for r in out["results"]] == order
    assert out["usage"]["prompt_tokens"] == n_tokens
    top = llama.create_rerank(QUERY, DOCS, top_n=2, return_documents=True)
    assert [r["index"] for r in top["results"]] == order[:2]
    assert [r["document"]["text"] for r in top["results"]] == [DOCS[i] for i in order[:2]]


def test_llama_rank_needs_a_reranker(smollm2_path):
    with pyllamacy.Llama(smollm2_path, embedding=True, n_ctx=256, verbose=False) as m:
        with pytest.raises(ValueError, match="rank"):
            m.rank(QUERY, DOCS)
    with pytest.raises(ValueError, match="documents"):
        check_rerank_request(QUERY, [])


@pytest.fixture(scope="module")
def server(reranker, smollm2_path):
    common = dict(n_ctx=512, n_batch=512, n_threads=1, n_threads_batch=1, n_parallel=1,
                  verbose=False)
    s = LocalServer([ModelSettings(model=reranker, model_alias="rr", **common),
                     ModelSettings(model=smollm2_path, model_alias="smol", **common)],
                    api_key=KEY)
    yield s
    s.stop()


def _post(server, path, body, headers=None):
    return httpx.post(server.url + path, json=body, timeout=120,
                      headers={"Authorization": f"Bearer {KEY}"} if headers is None else headers)


def test_server_rerank_equals_llama_server(server, oracle):
    scores, n_tokens, order = oracle
    for path in ("/v1/rerank", "/rerank", "/v1/reranking"):
        r = _post(server, path, {"model": "rr", "query": QUERY, "documents": DOCS})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["index"] for x in body["results"]] == order
        assert [x["relevance_score"] for x in body["results"]] == \
            pytest.approx([scores[i] for i in order], abs=1e-4)
        assert body["usage"]["prompt_tokens"] == n_tokens and body["model"] == "rr"
    r = _post(server, "/v1/rerank", {"model": "rr", "query": QUERY, "top_n": 3,
                                     "return_documents": True,
                                     "documents": [{"text": d} for d in DOCS]})
    assert r.status_code == 200
    assert [(x["index"], x["document"]["text"]) for x in r.json()["results"]] == \
        [(i, DOCS[i]) for i in order[:3]]


def test_server_rerank_bad_requests(server):
    cases = [({"query": QUERY, "documents": []}, "documents"),
             ({"query": QUERY}, "documents"),
             ({"documents": DOCS}, "query"),
             ({"query": QUERY, "documents": ["a", 3]}, "documents"),
             ({"query": QUERY, "documents": DOCS, "top_n": 0}, "top_n"),
             ({"query": QUERY, "documents": DOCS, "top_n": "2"}, "top_n")]
    for body, field in cases:
        r = _post(server, "/v1/rerank", dict(body, model="rr"))
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["error"]["message"], (body, r.text)
    # a model without a classifier head
    r = _post(server, "/v1/rerank", {"model": "smol", "query": QUERY, "documents": DOCS})
    assert r.status_code == 400 and "rank" in r.json()["error"]["message"]
    # the server still answers
    assert _post(server, "/v1/rerank", {"model": "rr", "query": QUERY,
                                        "documents": DOCS}).status_code == 200


def test_server_rerank_needs_the_key(server):
    body = {"model": "rr", "query": QUERY, "documents": DOCS}
    assert _post(server, "/v1/rerank", body, headers={}).status_code == 401
    assert _post(server, "/v1/rerank", body,
                 headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert _post(server, "/v1/rerank", body, headers={"x-api-key": "wrong"}).status_code == 401
    assert _post(server, "/v1/rerank", body, headers={"x-api-key": KEY}).status_code == 200
