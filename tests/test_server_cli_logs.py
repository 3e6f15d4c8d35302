"""python -m pyllamacy.server's command line: llama-server's short flags (-c, -np) and
--log_format json (one JSON object per log line, the access fields as keys)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from pyllamacy.server.__main__ import build_parser, settings_from_args  # noqa: E402


def test_help_shows_short_flags_with_defaults():
    text = build_parser().format_help()
    for flag in ("-c N, --ctx-size N", "-np N_PARALLEL", "--log_format", "-m MODEL",
                 "-ngl N_GPU_LAYERS"):
        assert flag in text, flag
    # every option has a help line, with its default where it has one
    for action in build_parser()._actions:
        assert action.help, action.option_strings
    ctx_help = " ".join(text.split("--ctx_size N", 1)[1].split("\n  -", 1)[0].split())
    assert "N / n_parallel" in ctx_help and "(default: n_ctx x n_parallel = 8192)" in ctx_help
    assert "(default: 4)" in " ".join(text.split("--slots N_PARALLEL", 1)[1].split()[:8])
    assert "(default: text)" in " ".join(text.split("--log-format LOG_FORMAT", 1)[1].split())


def test_ctx_size_is_the_total_split_across_slots():
    """-c is llama-server's total context: each of the -np slots gets c / np (ModelSettings'
    n_ctx is per slot)."""
    _, (m,) = settings_from_args(["-m", "x.gguf", "-c", "8192", "-np", "4"])
    assert (m.n_ctx, m.n_parallel) == (2048, 4)
    _, (m,) = settings_from_args(["-m", "x.gguf", "--ctx-size", "1000", "--parallel", "3"])
    assert (m.n_ctx, m.n_parallel) == (333, 3)
    _, (m,) = settings_from_args(["-m", "x.gguf", "-c", "4096"])       # default 4 slots
    assert (m.n_ctx, m.n_parallel) == (1024, 4)
    _, (m,) = settings_from_args(["-m", "x.gguf", "-c", "0", "-np", "2"])
    assert m.n_ctx == 0
    _, (m,) = settings_from_args(["-m", "x.gguf", "--n_ctx", "512", "-np", "2"])
    assert (m.n_ctx, m.n_parallel) == (512, 2)
    with pytest.raises(SystemExit, match="not both"):
        settings_from_args(["-m", "x.gguf", "-c", "4096", "--n_ctx", "512"])
    with pytest.raises(SystemExit, match="less than one token"):
        settings_from_args(["-m", "x.gguf", "-c", "3", "-np", "4"])
    s, _ = settings_from_args(["-m", "x.gguf", "--log_format", "JSON"])
    assert s.log_format == "json"
    with pytest.raises(Exception, match="log_format"):
        settings_from_args(["-m", "x.gguf", "--log_format", "xml"])


def _env():
    import pyllamacy
    return dict(os.environ, PYTHONPATH=str(Path(pyllamacy.__file__).parent.parent))


def test_json_log_lines(smollm2_path, tmp_path):
    """--log_format json: every line the server writes is a JSON object with time, level,
    logger and message; a request's line has method, route, status, tokens and duration."""
    from serving import free_port, start_process, stop_process
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_process([sys.executable, "-m", "pyllamacy.server", "-m", smollm2_path,
                          "-a", "smol", "--port", str(port), "-t", "2", "-c", "512",
                          "-np", "2", "--log_format", "json"], tmp_path / "out.log",
                         url=url, health="/health", env=_env())
    try:
        r = httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "model": "smol", "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}]}).json()
        time.sleep(0.3)
    finally:
        stop_process(proc)
    lines = [ln for ln in (tmp_path / "out.log").read_text().splitlines() if ln.strip()]
    objs = [json.loads(ln) for ln in lines]          # every line is JSON
    for o in objs:
        assert {"time", "level", "logger", "message"} <= set(o), o
        assert o["time"].endswith("Z") and "T" in o["time"]
    assert any("2 slots x 256 tokens" in o["message"] for o in objs), objs   # -c 512 -np 2
    (acc,) = [o for o in objs if o.get("route") == "/v1/chat/completions"]
    assert acc["method"] == "POST" and acc["status"] == 200 and acc["model"] == "smol"
    assert acc["tokens_in"] == r["usage"]["prompt_tokens"]
    assert acc["tokens_out"] == r["usage"]["completion_tokens"]
    assert isinstance(acc["duration_s"], float) and acc["duration_s"] > 0
    assert acc["level"] == "info" and acc["logger"] == "pyllamacy.server"


def test_missing_model_is_one_json_line(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "pyllamacy.server", "-m",
                          str(tmp_path / "no.gguf"), "--log_format", "json"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_env())
    assert bad.returncode == 2 and bad.stdout == ""
    (line,) = bad.stderr.splitlines()
    o = json.loads(line)
    assert o["level"] == "error" and "no model file" in o["message"]
