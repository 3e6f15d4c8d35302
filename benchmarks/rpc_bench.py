"""Decode speed of a model split over llama.cpp rpc-servers on loopback vs the same model local.

    python benchmarks/rpc_bench.py [--model PATH] [--threads 2] [-n 128] [--reps 3]

Starts two `pyllamacy rpc-server` processes on loopback ports (--threads each), then measures
greedy generation (tokens/s after the prompt) for:

    local       every layer in this process (n_gpu_layers=0)
    rpc x1      every layer on one server (n_gpu_layers=-1)
    rpc x2      the layers split evenly across the two servers (tensor_split 1,1)
    split       half the layers here, the other half across the two servers

Runs are interleaved (local, rpc x1, rpc x2, split, local, ...) so that a noisy neighbour
slows every configuration alike; the median of --reps runs is reported with the min-max range.
The servers are always stopped. Loopback costs no network time but every token still pays
each server's round trips (a graph per device, the activations there and back): the overhead
shown is the protocol's, a lower bound for a real network.
"""
from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))          # this checkout's pyllamacy, not an installed one
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, threads: int) -> subprocess.Popen:
    from pyllamacy import rpc
    env = dict(os.environ)
    import pyllamacy
    parent = str(Path(pyllamacy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = parent + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "pyllamacy", "rpc-server", "--port",
                             str(port), "--threads", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                            cwd=parent)
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"rpc-server on port {port} exited with {proc.returncode}")
        try:
            rpc.probe(f"127.0.0.1:{port}", timeout=2)
            return proc
        except rpc.RPCError:
            if time.monotonic() - t0 > 60:
                _stop(proc)
                raise RuntimeError(f"rpc-server on port {port} did not answer in 60 s")
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    import signal
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=15)


def _measure(model: str, n: int, threads: int, **kw):
    """(tokens/s of the decode, the tokens) for one load of the model with `kw`."""
    from pyllamacy import Llama
    llm = Llama(model, n_ctx=512, n_batch=128, n_threads=threads, flash_attn=False,
                verbose=False, **kw)
    try:
        tokens = llm.tokenize(PROMPT.encode())
        gen = llm.generate(tokens, top_k=1, temp=0.0)
        first = next(gen)                       # the prompt's decode and the first token
        t0 = time.perf_counter()
        rest = list(itertools.islice(gen, n - 1))
        dt = time.perf_counter() - t0
        return (n - 1) / dt, [first] + rest
    finally:
        llm.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("PYLLAMACY_MODEL"),
                    help="GGUF (default: $PYLLAMACY_MODEL or the default small model)")
    ap.add_argument("--threads", type=int, default=2, help="threads here and on each server")
    ap.add_argument("-n", type=int, default=128, help="tokens to generate")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    if args.model is None:
        from pyllamacy.models import default_model_path
        args.model = default_model_path()
    from pyllamacy import Model
    probe = Model(args.model, n_gpu_layers=0)
    layers = probe.n_layer
    probe.close()

    procs = []
    try:
        for _ in range(2):
            port = _free_port()
            procs.append((f"127.0.0.1:{port}", _start_server(port, args.threads)))
        eps = [ep for ep, _ in procs]
        configs = {
            "local": dict(n_gpu_layers=0),
            "rpc x1": dict(n_gpu_layers=-1, rpc_servers=eps[0]),
            "rpc x2": dict(n_gpu_layers=-1, rpc_servers=eps, tensor_split=[1, 1]),
            "split": dict(n_gpu_layers=layers // 2, rpc_servers=eps, tensor_split=[1, 1]),
        }
        speeds = {k: [] for k in configs}
        tokens = {}
        for _ in range(args.reps):
            for name, kw in configs.items():
                tps, toks = _measure(args.model, args.n, args.threads, **kw)
                speeds[name].append(tps)
                tokens.setdefault(name, toks)
    finally:
        for _, proc in procs:
            _stop(proc)

    print(f"model {os.path.basename(args.model)} ({layers} layers), {args.n} greedy tokens, "
          f"{args.threads} threads here and per server, {args.reps} interleaved runs\n")
    print("| configuration | decode t/s (median) | min-max | vs local | same tokens as local |")
    print("|---|---|---|---|---|")
    base = statistics.median(speeds["local"])
    for name in configs:
        med = statistics.median(speeds[name])
        print(f"| {name} | {med:.1f} | {min(speeds[name]):.1f}-{max(speeds[name]):.1f} | "
              f"{med / base:.2f}x | {'yes' if tokens[name] == tokens['local'] else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
