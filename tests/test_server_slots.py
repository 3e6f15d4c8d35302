"""llama-server's slot routes on pyllamacy's server: GET /slots, POST /slots/{id}?action=
save|restore|erase. A restored slot continues exactly (greedy) as if never saved, in a server
started afresh; traversal names and bad files are 400s and the next request still gets 200;
the routes need the API key."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402

from pyllamacy.server import ModelSettings  # noqa: E402
from serving import LocalServer  # noqa: E402

KEY = "slots-key"
PROMPT = "The three primary colors are red, yellow and"


def _server(path, folder):
    return LocalServer([ModelSettings(model=path, model_alias="smol", n_ctx=512, n_batch=64,
                                      n_threads=1, n_threads_batch=1, n_parallel=2,
                                      verbose=False)],
                       api_key=KEY, slot_save_path=str(folder))


def _http(s):
    return httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


def _complete(s, prompt, n):
    out = s.client(KEY).completions.create(model="smol", prompt=prompt, max_tokens=n,
                                           temperature=0)
    return out.choices[0].text


def _busiest(http):
    slots = http.get("/slots").json()
    return max(slots, key=lambda x: x["n_cached_tokens"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("slots")


def test_restored_slot_continues_exactly(smollm2_path, folder):
    s = _server(smollm2_path, folder)
    try:
        http = _http(s)
        first = _complete(s, PROMPT, 8)
        slot = _busiest(http)
        assert not slot["is_processing"] and slot["n_cached_tokens"] > 0
        r = http.post(f"/slots/{slot['id']}?action=save", json={"filename": "colors.bin"})
        assert r.status_code == 200, r.text
        assert r.json()["n_saved"] == slot["n_cached_tokens"]
        assert (folder / "colors.bin").stat().st_size == r.json()["n_written"]
        follow = PROMPT + first + " and then"
        ref = _complete(s, follow, 12)
    finally:
        s.stop()
    s = _server(smollm2_path, folder)          # a fresh server: nothing cached
    try:
        http = _http(s)
        r = http.post("/slots/1?action=restore", json={"filename": "colors.bin"})
        assert r.status_code == 200, r.text
        assert r.json()["n_restored"] == slot["n_cached_tokens"]
        assert http.get("/slots").json()[1]["n_cached_tokens"] == slot["n_cached_tokens"]
        before = s.stats(KEY)["pyllamacy_reused_tokens_total"]
        assert _complete(s, follow, 12) == ref
        assert s.stats(KEY)["pyllamacy_reused_tokens_total"] - before > 0
        # erase: both slots empty
        for i in (0, 1):
            r = http.post(f"/slots/{i}?action=erase")
            assert r.status_code == 200 and r.json()["id_slot"] == i
        assert all(x["n_cached_tokens"] == 0 for x in http.get("/slots").json())
    finally:
        s.stop()


def test_bad_names_and_files(smollm2_path, folder, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x")
    os.symlink(outside, folder / "link.bin")
    (folder / "junk.bin").write_bytes(b"\x00" * 100)
    s = _server(smollm2_path, folder)
    try:
        http = _http(s)
        _complete(s, PROMPT, 4)
        bad = [("save", {"filename": "../evil.bin"}), ("save", {"filename": "a/b.bin"}),
               ("save", {"filename": ".hidden"}), ("save", {"filename": ""}),
               ("save", {}), ("restore", {"filename": "link.bin"}),
               ("restore", {"filename": "junk.bin"}), ("restore", {"filename": "none.bin"}),
               ("restore", {"filename": "..%2Fx"}), ("explode", {"filename": "a.bin"})]
        for action, body in bad:
            r = http.post(f"/slots/0?action={action}", json=body)
            assert r.status_code == 400, (action, body, r.text)
            assert "Traceback" not in r.text
        for slot_id in ("9", "-1", "x"):
            assert http.post(f"/slots/{slot_id}?action=erase").status_code == 400
        assert not (tmp_path / "evil.bin").exists() and not (folder.parent / "evil.bin").exists()
        # truncated file of a real save
        r = http.post("/slots/0?action=save", json={"filename": "real.bin"})
        assert r.status_code == 200
        data = (folder / "real.bin").read_bytes()
        (folder / "cut.bin").write_bytes(data[: len(data) // 3])
        r = http.post("/slots/0?action=restore", json={"filename": "cut.bin"})
        assert r.status_code == 400
        msg = r.json()["error"]["message"]
        assert "truncated" in msg or "CRC" in msg, msg
        # the server goes on
        assert _complete(s, PROMPT, 4)
        assert http.post("/slots/0?action=restore", json={"filename": "real.bin"}).status_code \
            == 200
        # the key is required
        assert httpx.get(s.url + "/slots").status_code == 401
        assert httpx.post(s.url + "/slots/0?action=erase").status_code == 401
    finally:
        s.stop()


def test_without_slot_save_path(smollm2_path):
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="smol", n_ctx=256,
                                   n_threads=1, n_parallel=1, verbose=False)])
    try:
        r = httpx.post(s.url + "/slots/0?action=save", json={"filename": "a.bin"})
        assert r.status_code == 400 and "slot_save_path" in r.json()["error"]["message"]
        assert httpx.post(s.url + "/slots/0?action=erase").status_code == 200
    finally:
        s.stop()
