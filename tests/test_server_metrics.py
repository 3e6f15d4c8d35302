"""/metrics read back with prometheus_client's own parser (the format's reference reader):
the counters move with the requests made, and llama-server's names are present."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
parser = pytest.importorskip("prometheus_client.parser")
import httpx  # noqa: E402

from pyllamacy.server import ModelSettings  # noqa: E402
from serving import LocalServer  # noqa: E402


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="smol", n_ctx=256,
                                   n_batch=64, n_threads=1, n_threads_batch=1, n_parallel=2,
                                   verbose=False)])
    yield s
    s.stop()


def _scrape(server) -> dict:
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in parser.text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_requests(server):
    before = _scrape(server)
    c = server.client()
    out = c.completions.create(model="smol", prompt="The capital of France is", max_tokens=5,
                               temperature=0)
    after = _scrape(server)
    u = out.usage
    for name in ("pyllamacy_prompt_tokens_total", "llamacpp:prompt_tokens_total"):
        assert _get(after, name, model="smol") - _get(before, name, model="smol") \
            == u.prompt_tokens
    for name in ("pyllamacy_completion_tokens_total", "llamacpp:tokens_predicted_total"):
        assert _get(after, name, model="smol") - _get(before, name, model="smol") \
            == u.completion_tokens
    key = dict(model="smol", route="completions", status="200")
    assert _get(after, "pyllamacy_requests_total", **key) \
        == _get(before, "pyllamacy_requests_total", **key) + 1
    # one more observation in the latency histogram, the +Inf bucket equal to the count
    lat = dict(model="smol", route="completions")
    assert _get(after, "pyllamacy_request_duration_seconds_count", **lat) \
        == _get(before, "pyllamacy_request_duration_seconds_count", **lat) + 1
    assert _get(after, "pyllamacy_request_duration_seconds_bucket", le="+Inf", **lat) \
        == _get(after, "pyllamacy_request_duration_seconds_count", **lat)
    # the engine's figures, under both names
    assert _get(after, "pyllamacy_steps_total", model="smol") > \
        _get(before, "pyllamacy_steps_total", model="smol")
    assert _get(after, "llamacpp:n_decode_total", model="smol") == \
        _get(after, "pyllamacy_steps_total", model="smol")
    assert _get(after, "pyllamacy_slots_total", model="smol") == 2
    assert _get(after, "llamacpp:requests_processing", model="smol") == 0
    assert ("llamacpp:requests_deferred", (("model", "smol"),)) in after
