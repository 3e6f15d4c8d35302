"""Models loaded on demand (llama-server's router, Ollama): three models with models_max 2,
requests alternating among them all get 200 while at most two are loaded (from /v1/models),
memory returns to the one-model figure after unloads; idle models are unloaded after
sleep_idle_seconds; a model that cannot load answers 503 with the reason and the server goes
on; POST /models/load and /models/unload."""
from __future__ import annotations

import concurrent.futures as cf
import shutil
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")
import httpx  # noqa: E402

from pyllamacy.server import ModelSettings  # noqa: E402
from serving import LocalServer  # noqa: E402

COMMON = dict(n_ctx=256, n_batch=64, n_threads=1, n_threads_batch=1, n_parallel=1,
              verbose=False)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _loaded(s) -> list:
    data = httpx.get(s.url + "/v1/models").json()["data"]
    return sorted(m["id"] for m in data if m["status"]["value"] == "loaded")


def _ask(s, model):
    r = httpx.post(s.url + "/v1/completions", json={"model": model, "prompt": "Hello",
                                                    "max_tokens": 3, "temperature": 0},
                   timeout=120)
    return r


@pytest.fixture
def three(smollm2_path, tmp_path):
    """Three copies of the test model (separate files: separate weights in memory)."""
    paths = []
    for name in ("a", "b", "c"):
        p = tmp_path / f"{name}.gguf"
        shutil.copyfile(smollm2_path, p)
        paths.append(str(p))
    return paths


def test_models_max_alternating(three):
    s = LocalServer([ModelSettings(model=p, model_alias=n, **COMMON)
                     for n, p in zip("abc", three)], models_max=2)
    try:
        data = httpx.get(s.url + "/v1/models").json()["data"]
        assert [(m["id"], m["status"]["value"]) for m in data] == \
            [("a", "unloaded"), ("b", "unloaded"), ("c", "unloaded")]
        assert httpx.get(s.url + "/health").status_code == 200
        assert _ask(s, "a").status_code == 200
        one_model = _rss_mb()
        seen_max = 0
        for model in "bcabcacb":
            r = _ask(s, model)
            assert r.status_code == 200, r.text
            loaded = _loaded(s)
            assert model in loaded and len(loaded) <= 2, loaded
            seen_max = max(seen_max, len(loaded))
        assert seen_max == 2
        # concurrent requests for a model that is not loaded: loaded once, all answered
        for m in _loaded(s):
            httpx.post(s.url + "/models/unload", json={"model": m})
        assert _loaded(s) == []
        with cf.ThreadPoolExecutor(4) as ex:
            rs = list(ex.map(lambda m: _ask(s, m), "aaab"))
        assert [r.status_code for r in rs] == [200] * 4
        assert _loaded(s) == ["a", "b"]
        # back to one model: memory back to within 50 MB of the one-model figure
        r = httpx.post(s.url + "/models/unload", json={"model": "b"})
        assert r.status_code == 200 and r.json()["unloaded"] is True
        assert _loaded(s) == ["a"]
        print(f"RSS: one model {one_model:.0f} MB, after the unloads {_rss_mb():.0f} MB")
        assert _rss_mb() - one_model < 50, (one_model, _rss_mb())
        # load / unload by hand
        assert httpx.post(s.url + "/models/load", json={"model": "c"}).status_code == 200
        assert _loaded(s) == ["a", "c"]
        assert httpx.post(s.url + "/models/load", json={"model": "zzz"}).status_code == 404
        assert httpx.post(s.url + "/models/unload", json={}).status_code == 400
    finally:
        s.stop()


def test_models_dir_idle_unload_and_bad_model(smollm2_path, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copyfile(smollm2_path, d / "smol.gguf")
    (d / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 60)
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="main", **COMMON)],
                    models_dir=str(d), sleep_idle_seconds=1.0)
    try:
        ids = [m["id"] for m in httpx.get(s.url + "/v1/models").json()["data"]]
        assert ids == ["main", "broken", "smol"]
        r = _ask(s, "broken")
        assert r.status_code == 503
        msg = r.json()["error"]["message"]
        assert "broken" in msg and "Traceback" not in r.text
        st = {m["id"]: m["status"] for m in httpx.get(s.url + "/v1/models").json()["data"]}
        assert st["broken"]["value"] == "failed" and st["broken"]["error"]
        assert _ask(s, "smol").status_code == 200          # the server goes on
        assert "smol" in _loaded(s)
        t0 = time.monotonic()
        while "smol" in _loaded(s):
            assert time.monotonic() - t0 < 15, "an idle model was not unloaded"
            time.sleep(0.2)
        assert _ask(s, "smol").status_code == 200          # and loads again on demand
    finally:
        s.stop()


def test_models_dir_alone(smollm2_path, tmp_path):
    """No configured model: the folder's files are the models."""
    d = tmp_path / "only"
    d.mkdir()
    shutil.copyfile(smollm2_path, d / "x.gguf")
    s = LocalServer([], models_dir=str(d))
    try:
        assert httpx.get(s.url + "/health").status_code == 200
        assert _ask(s, None).status_code == 200            # the default: the first file
        assert _loaded(s) == ["x"]
    finally:
        s.stop()
