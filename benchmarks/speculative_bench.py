"""Speculative decoding benchmark: plain greedy decoding vs prompt lookup (and optionally a
draft model) on a task whose output mostly copies the prompt (rewriting code).

    python benchmarks/speculative_bench.py [--model PATH] [--threads 2] [--reps 3] [-n 192]
                                           [--draft-model PATH]

Reports generated tokens/s, the speed-up over plain decoding, the acceptance rate, and checks
that every variant produced exactly the same tokens as plain decoding. "prompt lookup (Python)"
drafts the same n-grams from a Python callable (llama-cpp-python's draft model protocol),
which the C loop calls with the GIL once per step: the difference to "prompt lookup" is the
cost of a Python drafter.
"""
from __future__ import annotations

import argparse
import statistics
import time

import pyllamacy
from pyllamacy import Context, Model, Sampler
from pyllamacy.llama_speculative import LlamaPromptLookupDecoding
from pyllamacy.models import default_model_path

CODE = "\n".join(
    f"def op_{i}(a, b):\n    \"\"\"Apply operation {i}.\"\"\"\n    result = a * {i} + b\n    return result\n"
    for i in range(12))
PROMPT = ("Rewrite the following Python code exactly as it is, keeping every line.\n\n" + CODE +
          "\nRewritten code:\n")


def run(model, toks, n_gen, threads, draft=None, n_draft=10):
    with Context(model, n_ctx=2048, n_threads=threads) as ctx:
        ctx.eval(toks)
        kw = {} if draft is None else {"draft": draft, "n_draft": n_draft, "history": toks}
        t0 = time.perf_counter()
        g = ctx.generate(Sampler(model).greedy(), max_tokens=n_gen, **kw)
        out = g.run()
        dt = time.perf_counter() - t0
        return out, len(out) / dt, g.acceptance_rate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=pyllamacy.default_n_threads())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-n", "--n-gen", type=int, default=192)
    ap.add_argument("--n-draft", type=int, default=10)
    ap.add_argument("--draft-model", default=None)
    a = ap.parse_args(argv)
    pyllamacy.set_log_level("none")
    path = a.model or default_model_path()
    model = Model(path)
    toks = model.tokenize(PROMPT)
    py_lookup = LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=a.n_draft)
    variants = [("plain", None), ("prompt lookup", "ngram"),
                ("prompt lookup (Python)", lambda ids: py_lookup(ids))]
    draft_ctx = None
    if a.draft_model:
        dm = Model(a.draft_model)
        draft_ctx = Context(dm, n_ctx=2048, n_threads=a.threads)
        variants.append(("draft model", draft_ctx))
    results = {name: [] for name, _ in variants}
    ref = None
    for _ in range(a.reps):                      # interleaved rounds
        for name, draft in variants:
            out, tps, acc = run(model, toks, a.n_gen, a.threads, draft, a.n_draft)
            if ref is None:
                ref = out
            results[name].append((tps, acc, out == ref))
    base = statistics.median(t for t, _, _ in results["plain"])
    print(f"model {path}, {a.threads} threads, {len(toks)} prompt tokens, {a.n_gen} generated, "
          f"n_draft {a.n_draft}, {a.reps} rounds")
    print("| variant | tokens/s (median) | speed-up | acceptance | same tokens as plain |")
    print("|---|---|---|---|---|")
    for name, _ in variants:
        tps = statistics.median(t for t, _, _ in results[name])
        acc = statistics.median(x for _, x, _ in results[name])
        same = all(s for _, _, s in results[name])
        print(f"| {name} | {tps:.1f} | {tps / base:.2f}x | {acc:.0%} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
