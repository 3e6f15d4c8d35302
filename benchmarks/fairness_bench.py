"""A costly grammar next to a small request (issue 12): the small request's time alone and
while another client streams a grammar-constrained request, on pyllamacy's server.

    python benchmarks/fairness_bench.py [--model M.gguf] [--threads 2] [--reps 5]

Cases for the other client (a streamed chat whose response_format is an array of enum
strings): a 5,000-string enum (refused with 400 by the grammar_max_ms_per_token gate), a
60-string enum at temperature 0 and at 0.8 (under the default limit: served), and, for
comparison, the 5,000-string enum with the gate off (grammar_max_ms_per_token 0, a second
server). The small request: 16 greedy tokens of a short completion. Prints one JSON line per
case: the small request's median time with the other client streaming, over its median alone.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, threads: int, limit: float) -> tuple:
    port = free_port()
    cmd = [sys.executable, "-m", "pyllamacy.server", "--model", model, "--model_alias", "m",
           "--n_parallel", "4", "--n_ctx", "512", "--n_threads", str(threads),
           "--port", str(port), "--grammar_max_ms_per_token", str(limit)]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "fairness_bench.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=os.environ.get("TMPDIR", "/tmp"))
    url = f"http://127.0.0.1:{port}"
    t = time.time()
    while time.time() - t < 180:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the server exited; see fairness_bench.log")
        time.sleep(0.2)
    raise RuntimeError("the server did not start")


def small(url: str) -> float:
    t = time.perf_counter()
    r = httpx.post(url + "/v1/completions", timeout=600, json={
        "model": "m", "prompt": "The capital of France is", "max_tokens": 16,
        "temperature": 0, "logit_bias": {"2": -100, "0": -100}})
    r.raise_for_status()
    return time.perf_counter() - t


def enum_schema(n: int) -> dict:
    return {"type": "array", "items": {"type": "string",
                                       "enum": [f"item-{i}-{'x' * (i % 7)}" for i in range(n)]}}


def costly(url: str, n_enum: int, temp: float, out: dict, stop: threading.Event) -> None:
    body = {"model": "m", "stream": True, "max_tokens": 400, "temperature": temp, "seed": 1,
            "messages": [{"role": "user", "content": "List items."}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "l", "schema": enum_schema(n_enum)}}}
    t = time.perf_counter()
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        out["status"] = r.status_code
        n = 0
        for line in r.iter_lines():
            n += line.startswith("data: {")
            if stop.is_set():
                break
        out["chunks"] = n
    out["s"] = time.perf_counter() - t


def case(url: str, n_enum: int, temp: float, reps: int, alone: float) -> dict:
    out: dict = {}
    stop = threading.Event()
    th = threading.Thread(target=costly, args=(url, n_enum, temp, out, stop), daemon=True)
    th.start()
    time.sleep(0.5)
    times = [small(url) for _ in range(reps)]
    stop.set()
    th.join(timeout=600)
    med = statistics.median(times)
    return {"other": f"enum {n_enum}, temperature {temp:g}", "other_status": out.get("status"),
            "other_chunks": out.get("chunks"), "small_alone_s": round(alone, 3),
            "small_with_other_s": round(med, 3), "ratio": round(med / alone, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    if a.model is None:
        from pyllamacy import models
        a.model = str(models.fetch(models.SMOLLM2_135M))
    for limit, cases in ((100.0, ((5000, 0.0), (60, 0.0), (60, 0.8))), (0.0, ((5000, 0.0),))):
        proc, url = start(a.model, a.threads, limit)
        try:
            small(url)
            alone = statistics.median(small(url) for _ in range(a.reps))
            for n, temp in cases:
                r = case(url, n, temp, a.reps, alone)
                r["grammar_max_ms_per_token"] = limit
                print(json.dumps(r), flush=True)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
