"""Aggregate generated tokens/s of OpenAI-compatible servers under 1, 4, 16 concurrent clients.

    python benchmarks/server_bench.py [--model M.gguf] [--slots 16] [--clients 1,4,16]
        [--llama-server PATH] [--lcp-python /opt/lcp-venv/bin/python] [--duration 20]

Starts each server in turn on loopback with the same model, the same slots and threads:
pyllamacy's (python -m pyllamacy.server), llama.cpp's llama-server (when --llama-server names
the program, or it is found beside the vendored build), llama-cpp-python's
(python -m llama_cpp.server, when that interpreter can import it; it has no slots and serves one
request at a time). Each client sends /v1/completions requests back to back (max_tokens
tokens, end-of-generation banned so every request generates the same count, temperature 0.8,
its own seed) for --duration seconds per level; aggregate = completion tokens (from `usage`)
of all requests / wall time until the last one finished. A benchmark, not a test: numbers
depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not come up")


def start(kind: str, args, port: int) -> subprocess.Popen:
    slots, n_ctx, th = args.slots, args.n_ctx, str(args.threads)
    if kind == "pyllamacy":
        cmd = [sys.executable, "-m", "pyllamacy.server", "--model", args.model,
               "--model_alias", "m", "--n_parallel", str(slots), "--n_ctx", str(n_ctx),
               "--n_threads", th, "--n_threads_batch", th, "--n_batch", str(args.n_batch),
               "--max_queue", "256", "--port", str(port)]
        if args.ngl is not None:
            cmd += ["--n_gpu_layers", str(args.ngl)]
        if args.backend_sampling:
            cmd += ["--backend_sampling", "true"]
    elif kind == "llama-server":
        cmd = [args.llama_server, "-m", args.model, "-np", str(slots), "-c",
               str(n_ctx * slots), "-t", th, "-tb", th, "-b", str(args.n_batch),
               "--port", str(port), "--host", "127.0.0.1", "-a", "m"]
        if args.ngl is not None:
            cmd += ["-ngl", str(99 if args.ngl < 0 else args.ngl)]
        if args.backend_sampling:
            cmd += ["--backend-sampling"]
    else:
        cmd = [args.lcp_python, "-m", "llama_cpp.server", "--model", args.model,
               "--model_alias", "m", "--n_ctx", str(n_ctx), "--n_threads", th,
               "--n_threads_batch", th, "--n_batch", str(args.n_batch), "--port", str(port)]
        if args.ngl is not None:
            cmd += ["--n_gpu_layers", str(args.ngl)]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"server_bench_{kind}.log", "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


async def level(url: str, n_clients: int, args, no_end: dict) -> dict:
    tokens = 0
    requests = 0
    errors = 0
    t_end = time.perf_counter() + args.duration

    async def client(i: int):
        nonlocal tokens, requests, errors
        seed = 1000 * i
        async with httpx.AsyncClient(base_url=url, timeout=600) as c:
            while time.perf_counter() < t_end:
                seed += 1
                body = {"model": "m", "prompt": f"Story number {i}-{seed}: once upon a time",
                        "max_tokens": args.max_tokens, "temperature": 0.8, "seed": seed,
                        "logit_bias": no_end}
                try:
                    r = await c.post("/v1/completions", json=body)
                    r.raise_for_status()
                    n = r.json()["usage"]["completion_tokens"]
                except Exception:
                    errors += 1
                    continue
                tokens += n
                requests += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(n_clients)))
    wall = time.perf_counter() - t0
    return {"clients": n_clients, "tokens": tokens, "requests": requests, "errors": errors,
            "wall_s": round(wall, 2), "tok_s": round(tokens / wall, 1)}


def run_server(kind: str, args, no_end: dict) -> list:
    port = free_port()
    proc = start(kind, args, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc)
        # warm-up
        httpx.post(url + "/v1/completions", json={"model": "m", "prompt": "Hi",
                                                  "max_tokens": 4}, timeout=300)
        out = []
        for n in args.clients:
            res = asyncio.run(level(url, n, args, no_end))
            res["server"] = kind
            print(json.dumps(res), flush=True)
            out.append(res)
        return out
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.environ.get("PYLLAMACY_MODEL"))
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--n-ctx", type=int, default=512, help="context per slot")
    p.add_argument("--n-batch", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    p.add_argument("--llama-server", default=None, help="llama.cpp's llama-server program")
    p.add_argument("--lcp-python", default="/opt/lcp-venv/bin/python",
                   help="interpreter with llama-cpp-python[server]")
    p.add_argument("--ngl", type=int, default=None, help="GPU layers for every server "
                                                          "(-1: all)")
    p.add_argument("--backend-sampling", action="store_true",
                   help="sampling inside the compute graph: pyllamacy --backend_sampling, "
                        "llama-server --backend-sampling (llama-cpp-python has none)")
    p.add_argument("--only", default=None, help="comma list: pyllamacy,llama-server,"
                                                "llama-cpp-python")
    args = p.parse_args(argv)
    args.clients = [int(x) for x in args.clients.split(",")]
    if not args.model:
        from pyllamacy import models
        local = ROOT / ".models" / models.SMOLLM2_135M.name
        args.model = str(local if local.exists() else models.fetch(models.SMOLLM2_135M))
    import pyllamacy
    with pyllamacy.Model(args.model, vocab_only=True) as m:
        no_end = {str(t): -100.0 for t in {m.token_eos(), m.token_eot()} if t >= 0}
    if args.llama_server is None:
        d = pyllamacy.build_info().get("build_bin_dir")
        cand = Path(d or "") / "llama-server"
        args.llama_server = str(cand) if d and cand.exists() else shutil.which("llama-server")
    kinds = ["pyllamacy"]
    if args.llama_server and Path(args.llama_server).exists():
        kinds.append("llama-server")
    else:
        print("# llama-server: not found (pass --llama-server PATH); skipped", flush=True)
    lcp_ok = Path(args.lcp_python).exists() and subprocess.run(
        [args.lcp_python, "-c", "import llama_cpp.server, uvicorn, fastapi"],
        capture_output=True).returncode == 0
    if lcp_ok:
        kinds.append("llama-cpp-python")
    else:
        print(f"# llama-cpp-python server: not importable with {args.lcp_python}; skipped",
              flush=True)
    if args.only:
        kinds = [k for k in kinds if k in args.only.split(",")]
    print(f"# {platform.node()} {os.cpu_count()} CPUs, model {Path(args.model).name}, "
          f"slots {args.slots}, threads {args.threads}, max_tokens {args.max_tokens}, "
          f"{args.duration:g} s per level, ngl {args.ngl}, backend sampling "
          f"{args.backend_sampling}", flush=True)
    results = []
    for k in kinds:
        try:
            results += run_server(k, args, no_end)
        except Exception as e:
            print(f"# {k}: failed: {e}", flush=True)
    print("\n| clients | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for n in args.clients:
        row = [next((f"{r['tok_s']} tok/s" for r in results
                     if r["server"] == k and r["clients"] == n), "-") for k in kinds]
        print(f"| {n} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
