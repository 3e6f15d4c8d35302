"""How fast Context.cancel() stops a running eval (issue 12: under 50 ms).

A thread evaluates a long prompt; after a random delay another thread calls cancel() and
times how long the eval takes to return (it raises). llama.cpp checks the abort callback
between graph nodes, so the latency is at most the longest node of the ubatch in flight: it
grows with n_ubatch, the context already filled (attention) and the model's width.

    python benchmarks/cancel_bench.py [--model M] [--trials 12] [--ubatch 256,512,2048]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time


def trial(ctx, toks, delay_s: float) -> float:
    """ms from cancel() to eval() returning; -1 when the eval finished first."""
    ctx.memory_clear()
    done = {}

    def run():
        try:
            ctx.eval(toks, logits="none")
        except Exception as e:          # the cancelled eval raises
            done["error"] = type(e).__name__
        done["t"] = time.perf_counter()

    th = threading.Thread(target=run)
    th.start()
    time.sleep(delay_s)
    t0 = time.perf_counter()
    ctx.cancel()
    th.join()
    return (done["t"] - t0) * 1000 if "error" in done else -1.0


def main() -> int:
    import pyllamacy
    from pyllamacy import models
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="GGUF (default: the test model)")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--ubatch", default="256,512,2048")
    ap.add_argument("--prompt-tokens", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    path = a.model or str(models.fetch(models.SMOLLM2_135M))
    with pyllamacy.Model(path) as m:
        toks = (m.tokenize("hello world, " * (a.prompt_tokens // 2)))[:a.prompt_tokens]
        for ub in (int(x) for x in a.ubatch.split(",")):
            for fa in (True, False):
                with pyllamacy.Context(m, n_ctx=a.prompt_tokens + 64, n_batch=max(ub, 2048),
                                       n_ubatch=ub, n_threads=a.threads,
                                       flash_attn=fa) as ctx:
                    t = time.perf_counter()
                    ctx.eval(toks, logits="none")
                    full_s = time.perf_counter() - t
                    lat = [trial(ctx, toks, rng.uniform(0.05, 0.9) * full_s)
                           for _ in range(a.trials)]
                    lat = sorted(x for x in lat if x >= 0)
                    print(json.dumps({
                        "n_ubatch": ub, "flash_attn": fa, "prompt_tokens": len(toks),
                        "eval_s": round(full_s, 2), "cancelled": len(lat),
                        "median_ms": round(statistics.median(lat), 1) if lat else None,
                        "max_ms": round(max(lat), 1) if lat else None,
                        "all_ms": [round(x, 1) for x in lat]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
