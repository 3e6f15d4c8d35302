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

--workload prefill (prefill-heavy serving): each of --clients (default 16) clients streams ONE
/v1/chat/completions request (stream=True) with its own ~--prompt-tokens (default 1500) token
prompt of seeded random words (unique per client and level, so no server can reuse a cached
prefix beyond the chat template's own), --max-tokens (default 128) generated tokens,
temperature 0, end-of-generation banned through logit_bias (both servers honour it). All
requests start together; per request it records time to the first content delta (TTFT), the
gaps between content deltas (inter-token latency), total time and tokens; per server: wall time
until the last request finished, generated tokens/s, TTFT and ITL p50/p90. Same settings for
every server (slots, context per slot, n_batch, n_ubatch, threads: printed), same prompts.

    python benchmarks/server_bench.py --workload prefill [--clients 16] [--prompt-tokens 1500]
        [--max-tokens 128] [--json out.json] ...
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shlex
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


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 300, log_path=None) -> None:
    """Until GET /v1/models answers 200; the server's exit (with its log's end when
    `log_path` is given) or the timeout raise RuntimeError."""
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            tail = "" if log_path is None else \
                ":\n" + Path(log_path).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"server exited with {proc.returncode}{tail}")
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
               "--n_ubatch", str(args.n_ubatch), "--max_queue", "256", "--port", str(port)]
        if args.ngl is not None:
            cmd += ["--n_gpu_layers", str(args.ngl)]
        if args.backend_sampling:
            cmd += ["--backend_sampling", "true"]
        cmd += shlex.split(args.pyllamacy_args)
    elif kind == "llama-server":
        # -c is the whole context: n_ctx per slot x slots (the slots' KV is not unified when
        # -np is given, so each slot gets n_ctx, as pyllamacy's)
        cmd = [args.llama_server, "-m", args.model, "-np", str(slots), "-c",
               str(n_ctx * slots), "-t", th, "-tb", th, "-b", str(args.n_batch),
               "-ub", str(args.n_ubatch),
               "--port", str(port), "--host", "127.0.0.1", "-a", "m"]
        if args.ngl is not None:
            cmd += ["-ngl", str(99 if args.ngl < 0 else args.ngl)]
        if args.backend_sampling:
            cmd += ["--backend-sampling"]
        cmd += shlex.split(args.llama_server_args)
    else:
        cmd = [args.lcp_python, "-m", "llama_cpp.server", "--model", args.model,
               "--model_alias", "m", "--n_ctx", str(n_ctx), "--n_threads", th,
               "--n_threads_batch", th, "--n_batch", str(args.n_batch),
               "--n_ubatch", str(args.n_ubatch), "--port", str(port)]
        if args.ngl is not None:
            cmd += ["--n_gpu_layers", str(args.ngl)]
    print(f"# {kind}: {shlex.join(cmd)}", flush=True)
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"server_bench_{kind}.log", "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


async def level(url: str, n_clients: int, args, no_end: dict, on_reply=None) -> dict:
    """`n_clients` clients sending completions back to back for args.duration seconds;
    on_reply(response) is called for each answered request (ray_bench counts replicas)."""
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
                if on_reply is not None:
                    on_reply(r)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(n_clients)))
    wall = time.perf_counter() - t0
    return {"clients": n_clients, "tokens": tokens, "requests": requests, "errors": errors,
            "wall_s": round(wall, 2), "tok_s": round(tokens / wall, 1)}


# -- prefill-heavy workload ------------------------------------------------------------------

# plain English words: seeded random sequences of them tokenize to ~1.3 tokens per word
_WORDS = """the of and to in is was for on that with as by at from his her they this have
had are were be not but which one all their there been has more when will would who so if out
up about into than them can only other new some could time these two may then do first any my
now such like our over man me even most made after also did many before must through back years
where much your way well down should because each just those people how too little state good
very make world still own see men work long get here between both life being under never day
same another know while last might us great old year off come since against go came right used
take three river garden window morning evening market harbor village mountain forest letter
engine bridge winter summer island silver copper paper stone glass cloud storm light shadow
number reason question answer music picture corner kitchen station doctor teacher farmer
captain soldier painter writer sailor circle square bottle basket ladder pocket button candle
lantern blanket compass anchor feather thunder meadow valley canyon desert glacier volcano
orchard vineyard meadowlark sparrow falcon otter badger beaver walnut almond pepper ginger
cinnamon saffron velvet linen cotton marble granite timber harvest journey voyage festival
""".split()


def _make_prompt(vocab, seed: int, n_tokens: int) -> tuple:
    """A unique text of about n_tokens tokens (seeded random words, cut at n_tokens by the
    model's own tokenizer) and its exact token count (no BOS, no template)."""
    rnd = random.Random(seed)
    head = f"Record {seed}. Read these notes and summarize them in one paragraph.\n"
    words = []
    text = head
    while True:
        words += [rnd.choice(_WORDS) for _ in range(max(16, n_tokens // 2))]
        text = head + " ".join(words)
        toks = vocab.tokenize(text, add_special=False, parse_special=False)
        if len(toks) >= n_tokens:
            break
    text = vocab.detokenize(toks[:n_tokens]).decode("utf-8", errors="ignore")
    return text, len(vocab.tokenize(text, add_special=False, parse_special=False))


def _pct(values, q: float):
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


async def prefill_level(url: str, n_clients: int, args, no_end: dict, prompts: list) -> dict:
    """n_clients clients, one streamed chat request each, all sent at once."""

    async def client(i: int) -> dict:
        text, n_prompt = prompts[i]
        body = {"model": "m", "messages": [{"role": "user", "content": text}],
                "max_tokens": args.max_tokens, "temperature": 0, "seed": 1000 + i,
                "logit_bias": no_end, "stream": True,
                "stream_options": {"include_usage": True}}
        rec = {"client": i, "prompt_tokens_content": n_prompt, "ok": False}
        times = []
        usage = None
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(1800, connect=60)) as c:
            t0 = time.perf_counter()
            try:
                async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if not line.startswith("data:"):
                            continue                      # blank lines, SSE comments (pings)
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        ev = json.loads(data)
                        if ev.get("usage"):
                            usage = ev["usage"]
                        for ch in ev.get("choices") or []:
                            if (ch.get("delta") or {}).get("content"):
                                times.append(time.perf_counter())
                t1 = time.perf_counter()
            except Exception as e:            # noqa: BLE001 (recorded, the level goes on)
                rec["error"] = f"{type(e).__name__}: {e}"[:300]
                return rec
        rec.update(ok=bool(times), total_s=t1 - t0, deltas=len(times),
                   ttft_s=(times[0] - t0) if times else None,
                   itl_s=[b - a for a, b in zip(times, times[1:])])
        # tokens: the server's usage where it sends one in the stream, else content deltas
        rec["completion_tokens"] = usage.get("completion_tokens") if usage else len(times)
        rec["prompt_tokens_server"] = usage.get("prompt_tokens") if usage else None
        return rec

    t0 = time.perf_counter()
    recs = await asyncio.gather(*(client(i) for i in range(n_clients)))
    wall = time.perf_counter() - t0
    ok = [r for r in recs if r["ok"]]
    ttft = [r["ttft_s"] for r in ok]
    itl = [g for r in ok for g in r["itl_s"]]
    tokens = sum(r["completion_tokens"] for r in ok)
    r3 = (lambda x: None if x is None else round(x, 4))
    server_pt = [r["prompt_tokens_server"] for r in ok if r["prompt_tokens_server"]]
    out = {"workload": "prefill", "clients": n_clients, "requests": len(ok),
           "errors": len(recs) - len(ok), "wall_s": round(wall, 3), "tokens": tokens,
           "tok_s": round(tokens / wall, 1),
           "prompt_tokens_content_mean": round(sum(p[1] for p in prompts[:n_clients])
                                               / n_clients, 1),
           "prompt_tokens_server_mean": (round(sum(server_pt) / len(server_pt), 1)
                                         if server_pt else None),
           "ttft_p50_s": r3(_pct(ttft, 0.5)), "ttft_p90_s": r3(_pct(ttft, 0.9)),
           "ttft_max_s": r3(max(ttft) if ttft else None),
           "itl_p50_ms": r3(_pct(itl, 0.5) * 1e3 if itl else None),
           "itl_p90_ms": r3(_pct(itl, 0.9) * 1e3 if itl else None),
           "total_p50_s": r3(_pct([r["total_s"] for r in ok], 0.5)),
           "short_requests": sum(1 for r in ok if r["completion_tokens"] != args.max_tokens)}
    errs = [r["error"] for r in recs if "error" in r]
    if errs:
        out["first_error"] = errs[0]
    out["per_request"] = [{k: (r3(v) if isinstance(v, float) else v) for k, v in r.items()
                           if k != "itl_s"} for r in recs]
    return out


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
        for k, n in enumerate(args.clients):
            if args.workload == "prefill":
                httpx.post(url + "/v1/chat/completions", timeout=300, json={
                    "model": "m", "max_tokens": 4,
                    "messages": [{"role": "user", "content": "Hi"}]})
                res = asyncio.run(prefill_level(url, n, args, no_end, args.prompts[k]))
                res["server"] = kind
                res["level"] = k
                per = res.pop("per_request")
                print(json.dumps(res), flush=True)
                res["per_request"] = per
            else:
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


def _prefill_table(results: list, kinds: list, args) -> None:
    f = (lambda v, nd=2: "-" if v is None else f"{v:.{nd}f}")
    print("\n| server | clients | wall s | gen tok/s | TTFT p50 s | TTFT p90 s | ITL p50 ms "
          "| ITL p90 ms | prompt tokens (content / server) | errors |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    ratios = []
    for lv, n in enumerate(args.clients):
        row = {}
        for k in kinds:
            r = next((r for r in results if r["server"] == k and r["level"] == lv), None)
            if r is None:
                continue
            row[k] = r
            print(f"| {k} | {n} | {f(r['wall_s'])} | {f(r['tok_s'], 1)} | "
                  f"{f(r['ttft_p50_s'])} | {f(r['ttft_p90_s'])} | {f(r['itl_p50_ms'], 1)} | "
                  f"{f(r['itl_p90_ms'], 1)} | {f(r['prompt_tokens_content_mean'], 0)} / "
                  f"{f(r['prompt_tokens_server_mean'], 0)} | {r['errors']} |")
        ours, ref = row.get("pyllamacy"), row.get("llama-server")
        if ours and ref and not ours["errors"] and not ref["errors"]:
            ratios.append(f"{n} clients (level {lv}): pyllamacy vs llama-server: speed (their "
                          f"wall / ours) {ref['wall_s'] / ours['wall_s']:.2f}x, TTFT p50 "
                          f"{f(ours['ttft_p50_s'])} s vs {f(ref['ttft_p50_s'])} s, p90 "
                          f"{f(ours['ttft_p90_s'])} s vs {f(ref['ttft_p90_s'])} s")
    if ratios:
        print()
        print("\n".join(ratios))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=os.environ.get("PYLLAMACY_MODEL"))
    p.add_argument("--workload", choices=("throughput", "prefill"), default="throughput",
                   help="throughput: back-to-back /v1/completions for --duration s per level; "
                        "prefill: one streamed chat request per client, long unique prompts")
    p.add_argument("--slots", type=int, default=16)
    p.add_argument("--clients", default=None, help="comma list of client counts (default: "
                                                   "1,4,16; prefill: 16; prefill runs a count "
                                                   "given twice twice, with new prompts)")
    p.add_argument("--n-ctx", type=int, default=None,
                   help="context per slot (default: 512; prefill: prompt + max tokens + 256, "
                        "rounded up to 256)")
    p.add_argument("--n-batch", type=int, default=512)
    p.add_argument("--n-ubatch", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=None,
                   help="tokens per request (default: 64; prefill: 128)")
    p.add_argument("--prompt-tokens", type=int, default=1500,
                   help="prefill: tokens of each user message (the model's tokenizer)")
    p.add_argument("--json", default=None, help="write every result (prefill: every request) "
                                                "to this file")
    p.add_argument("--pyllamacy-args", default="", help="extra options for pyllamacy's server")
    p.add_argument("--llama-server-args", default="", help="extra options for llama-server")
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
    prefill = args.workload == "prefill"
    args.clients = [int(x) for x in (args.clients or ("16" if prefill else "1,4,16")).split(",")]
    if args.max_tokens is None:
        args.max_tokens = 128 if prefill else 64
    if args.n_ctx is None:
        args.n_ctx = (-(-(args.prompt_tokens + args.max_tokens + 256) // 256) * 256 if prefill
                      else 512)
    if not args.model:
        from pyllamacy import models
        local = ROOT / ".models" / models.SMOLLM2_135M.name
        args.model = str(local if local.exists() else models.fetch(models.SMOLLM2_135M))
    import pyllamacy
    with pyllamacy.Model(args.model, vocab_only=True) as m:
        no_end = {str(t): -100.0 for t in {m.token_eos(), m.token_eot()} if t >= 0}
        if prefill:
            # every end-of-generation token (a chat may end on any of them); the same prompts
            # for every server, new ones for every level (no prefix a server could reuse)
            no_end = {str(t): -100.0 for t in
                      sorted({m.token_eos(), m.token_eot(), *m.eog_tokens()}) if t >= 0}
            args.prompts = [[_make_prompt(m, 100_000 * (k + 1) + i, args.prompt_tokens)
                             for i in range(n)] for k, n in enumerate(args.clients)]
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
          f"workload {args.workload}, slots {args.slots}, n_ctx per slot {args.n_ctx}, "
          f"n_batch {args.n_batch}, n_ubatch {args.n_ubatch}, threads {args.threads}, "
          f"max_tokens {args.max_tokens}, clients {args.clients}, " +
          (f"prompt {args.prompt_tokens} tokens, " if prefill else
           f"{args.duration:g} s per level, ") +
          f"ngl {args.ngl}, backend sampling {args.backend_sampling}", flush=True)
    results = []
    for k in kinds:
        try:
            results += run_server(k, args, no_end)
        except Exception as e:
            print(f"# {k}: failed: {e}", flush=True)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "prompts"}
        Path(args.json).write_text(json.dumps({"settings": settings, "host": platform.node(),
                                               "cpus": os.cpu_count(), "results": results},
                                              indent=1) + "\n")
    if prefill:
        _prefill_table(results, kinds, args)
        return 0
    print("\n| clients | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for n in args.clients:
        row = [next((f"{r['tok_s']} tok/s" for r in results
                     if r["server"] == k and r["clients"] == n), "-") for k in kinds]
        print(f"| {n} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
