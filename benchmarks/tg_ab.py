"""A whole-process single-stream workload for A/B timings of two pyllamacy builds:

    PYTHONPATH=/path/to/build-a python benchmarks/tg_ab.py
    PYTHONPATH=/path/to/build-b python benchmarks/tg_ab.py

Generates 4 x 256 tokens from the default small model with llama-cpp-python's default sampling
chain (top_k 40, top_p 0.95, min_p 0.05, temperature 0.8), through Context.eval +
Context.generate(...).run(); time each command as a whole (e.g. /usr/bin/time, several runs,
interleaved) and compare the medians."""
import sys

import pyllamacy as pc
from pyllamacy import models

m = pc.Model(str(models.fetch(models.SMOLLM2_135M)))
ctx = pc.Context(m, n_ctx=1024, n_threads=int(sys.argv[1]) if len(sys.argv) > 1 else 2)
prompt = m.tokenize("Once upon a time")
for _ in range(4):
    ctx.memory_clear()
    ctx.eval(prompt, pos=0)
    s = pc.Sampler(m).top_k(40).top_p(0.95).min_p(0.05).temp(0.8).dist(1)
    ctx.generate(s, max_tokens=256).run()
print(pc.__file__, file=sys.stderr)
