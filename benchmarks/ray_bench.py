"""Aggregate generated tokens/s: pyllamacy's server as 1 and 2 Ray Serve replicas (1 thread
each) against one plain server (`pyllamacy serve`) with 2 threads, under the same client load.

    python benchmarks/ray_bench.py [--model M.gguf] [--clients 8] [--max-tokens 32]
        [--duration 30] [--slots 8] [--replicas 1,2] [--json out.json]

Each server is started in turn from the same config file (one model, --slots slots of --n-ctx
tokens) through the command line: `pyllamacy serve --config F` with n_threads 2, and
`pyllamacy serve-ray --config F --replicas N --num-cpus 1` with n_threads 1 per replica (a
local Ray cluster started by the command). --clients clients each send /v1/completions requests
back to back for --duration seconds (--max-tokens tokens each, end-of-generation banned through
logit_bias so every request generates the same count, temperature 0.8, its own seed);
aggregate = completion tokens (from `usage`) / wall time until the last request finished. For
the Ray runs it also counts which replica answered (the x-pyllamacy-replica header). Needs the
`ray` extra. A benchmark, not a test: the numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server_bench import level, wait_up  # noqa: E402  (the same client loop)

ROOT = Path(__file__).resolve().parent.parent
if list((ROOT / "pyllamacy").glob("_llama*.so")):
    # a built checkout (this one): benchmark its pyllamacy, not an installed one
    sys.path.insert(0, str(ROOT))
REPLICA_HEADER = "x-pyllamacy-replica"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, args, threads: int, port: int) -> None:
    model = {"model": args.model, "model_alias": "m", "n_parallel": args.slots,
             "n_ctx": args.n_ctx, "n_threads": threads, "n_threads_batch": threads,
             "max_queue": 256, "verbose": False}
    path.write_text(json.dumps({"port": port, "log_level": "warning", "models": [model]}))


def start(kind: str, config: Path, replicas: int, log_path: Path) -> subprocess.Popen:
    """The `pyllamacy` command of the imported package (its parent folder first on
    PYTHONPATH, so the Ray workers import it too), run from that folder."""
    import pyllamacy
    parent = str(Path(pyllamacy.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = parent + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pyllamacy"]
    if kind == "serve":
        cmd += ["serve", "--config", str(config)]
    else:
        cmd += ["serve-ray", "--config", str(config), "--replicas", str(replicas),
                "--num-cpus", "1"]
    print(f"# {kind}{'' if kind == 'serve' else f' x{replicas}'}: {' '.join(cmd[1:])}",
          flush=True)
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=parent, env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGINT to the command (serve-ray then shuts Serve and its Ray down), SIGKILL after
    60 s; then SIGKILL whatever is left of its process group."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def load(url: str, args, no_end: dict) -> dict:
    """server_bench's load (args.clients clients, back to back), counting the replica that
    answered each request."""
    replicas: Counter = Counter()
    res = await level(url, args.clients, args, no_end,
                      on_reply=lambda r: replicas.update([r.headers.get(REPLICA_HEADER, "-")]))
    res.pop("clients")
    res["requests_per_replica"] = sorted(replicas.values(), reverse=True)
    res["loadavg_1m_after"] = round(os.getloadavg()[0], 2)     # this run and the others
    return res


def run_one(kind: str, replicas: int, args, no_end: dict, tmp: Path) -> dict:
    port = free_port()
    threads = 2 if kind == "serve" else 1
    config = tmp / f"{kind}{replicas}.json"
    write_config(config, args, threads, port)
    log_path = tmp / f"{kind}{replicas}.log"
    t0 = time.perf_counter()
    proc = start(kind, config, replicas, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url, proc, log_path=log_path)
        startup = time.perf_counter() - t0
        for _ in range(2 * max(1, replicas)):          # warm-up: every replica once or so
            httpx.post(url + "/v1/completions", timeout=300,
                       json={"model": "m", "prompt": "Hi", "max_tokens": 4})
        res = asyncio.run(load(url, args, no_end))
    finally:
        stop(proc)
    res.update(server="pyllamacy serve" if kind == "serve" else "serve-ray",
               replicas=replicas, threads_each=threads, startup_s=round(startup, 1))
    print(json.dumps(res), flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="GGUF (default: SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--slots", type=int, default=8, help="n_parallel of every server/replica")
    p.add_argument("--n-ctx", type=int, default=256, help="context per slot")
    p.add_argument("--replicas", default="1,2", help="Ray replica counts to run")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if not args.model:
        from pyllamacy import models
        local = ROOT / ".models" / models.SMOLLM2_135M.name
        args.model = str(local if local.exists() else models.fetch(models.SMOLLM2_135M))
    args.model = os.path.abspath(args.model)
    import pyllamacy
    with pyllamacy.Model(args.model, vocab_only=True) as m:
        no_end = {str(t): -100.0 for t in {m.token_eos(), m.token_eot()} if t >= 0}
    print(f"# {args.clients} clients, max_tokens {args.max_tokens}, {args.duration:g} s each, "
          f"{args.slots} slots x {args.n_ctx} tokens, {os.cpu_count()} CPUs", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="ray_bench_") as d:
        results.append(run_one("serve", 1, args, no_end, Path(d)))
        for n in (int(x) for x in args.replicas.split(",")):
            results.append(run_one("serve-ray", n, args, no_end, Path(d)))
    print("\n| server | replicas x threads | tokens/s | requests | errors | per replica | "
          "load avg |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['server']} | {r['replicas']} x {r['threads_each']} | {r['tok_s']} | "
              f"{r['requests']} | {r['errors']} | "
              f"{'/'.join(map(str, r['requests_per_replica']))} | {r['loadavg_1m_after']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
