"""Where does generation lose time against llama-bench's tg? Per-token times of several loops
over the same context, all layers on the GPU (a diagnostic, not a benchmark):

    gen        Context.generate(greedy).run(): decode, read logits (sync), argmax, in C
    eval+sync  Python: ctx.eval([t]); ctx.logits()   (sync each token, like llama-bench)
    eval       Python: ctx.eval([t])                  (no sync: CPU work overlaps the GPU)

    python tg_probe.py MODEL [threads ...]
"""
from __future__ import annotations

import statistics
import sys
import time

import pyllamacy as P

N = 128
REPS = 7


def per_token_us(fn) -> float:
    samples = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) / N * 1e6)
    return statistics.median(samples)


def main() -> int:
    path = sys.argv[1]
    threads = [int(t) for t in sys.argv[2:]] or [8]
    model = P.Model(path, n_gpu_layers=-1)
    first = model.token_bos()
    for th in threads:
        with P.Context(model, n_ctx=256, n_threads=th, n_threads_batch=th) as ctx, \
                P.Sampler(model) as s:
            s.logit_bias({t: float("-inf") for t in model.eog_tokens()}).greedy()
            toks = []

            def gen():
                ctx.memory_clear(False)
                ctx.eval([first])
                toks[:] = ctx.generate(s, max_tokens=N - 1).run()

            def eval_sync():
                ctx.memory_clear(False)
                for t in [first] + toks:
                    ctx.eval([t])
                    ctx.logits()

            def eval_only():
                ctx.memory_clear(False)
                for t in [first] + toks:
                    ctx.eval([t])

            gen()                                            # warm up, fills toks
            r = {"gen": per_token_us(gen), "eval+sync": per_token_us(eval_sync),
                 "eval": per_token_us(eval_only)}
            print(f"threads {th}: " + ", ".join(f"{k} {v:.1f} us/token ({1e6 / v:.0f} t/s)"
                                                for k, v in r.items()), flush=True)
        # the sampling chains generation meets: per-token time of a 128-token generation with
        # each, the fast paths against the same chain made to take the whole vocabulary (a
        # temp(1.0) in front changes no logit but breaks the fast shape)
        with P.Context(model, n_ctx=256, n_threads=th, n_threads_batch=th) as ctx:
            eog = {t: float("-inf") for t in model.eog_tokens()}

            def chain(kind, slow):
                s = P.Sampler(model).logit_bias(eog)
                if slow:
                    s.temp(1.0)
                if kind == "greedy":
                    return s.greedy()
                return s.top_k(40).top_p(0.95).min_p(0.05).temp(0.8).dist(7)

            out = []
            for kind in ("greedy", "top_k 40 chain"):
                for slow in (False, True):
                    s = chain(kind, slow)

                    def gen():
                        ctx.memory_clear(False)
                        ctx.eval([first])
                        ctx.generate(s, max_tokens=N - 1).run()

                    gen()
                    out.append(f"{kind} {'full vocabulary' if slow else s.fast_path}: "
                               f"{per_token_us(gen):.1f} us/token")
                    s.close()
            print(f"threads {th}: " + ", ".join(out), flush=True)
    model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
