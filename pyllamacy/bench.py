"""Benchmark pyllamacy against llama.cpp's own llama-bench and llama-cpp-python, in one run.

Same model, same thread count, same batch settings (llama-bench's defaults: n_batch 2048,
n_ubatch 512, flash attention "auto"), runs interleaved A B C A B C ... so that a noisy machine
hurts every engine alike. Every run is a fresh process (like llama-bench itself): it loads the
model, warms up like llama-bench (one full prompt, one generated token), then measures.

Tests (t/s = tokens per second; mean ± sample standard deviation over the runs, like llama-bench):

  ppN                 prompt processing: N random valid token ids (BOS first when the model adds
                      one) decoded in one eval, KV cache cleared before each repetition.
  tgN                 generation. llama-bench: N single-token decodes after BOS, no sampling.
                      pyllamacy: the real path, eval(BOS) + Generation.run() with a greedy sampler
                      (end-of-generation tokens banned with a -inf logit bias so that exactly N
                      tokens come out): N decodes and N samples in one nogil call.
                      llama-cpp-python: Llama.generate([BOS], temp=0), N tokens.
  tgN decode-only     Context.eval of one token at a time, N times, no sampling: like-for-like with
                      llama-bench's tgN (pyllamacy and llama-cpp-python only).

This module must not import pyllamacy at module level: it also runs, by file path and with
``python -I``, as the measuring process under llama-cpp-python's interpreter (usually another
virtual environment), which must never load pyllamacy's copy of ggml. pyllamacy's measuring
process is ``python -m pyllamacy.bench --worker pyllamacy`` from the folder holding the package.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import random
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

N_BATCH = 2048          # llama-bench's defaults
N_UBATCH = 512
TARGETS = {"pp": 0.98, "tg": 0.97}     # pyllamacy / llama-bench, see benchmarks/README.md
RESULT_MARK = "PYLLAMACY-BENCH-RESULT "
DEFAULT_LCP_VENV_PYTHON = "/opt/lcp-venv/bin/python"
TESTS = ("pp", "tg", "tg_bs", "tg_decode")


class BenchError(RuntimeError):
    pass


# =====================================================================================
# measuring processes
# =====================================================================================


def _prompt_tokens(rng: random.Random, n: int, n_vocab: int, bos: Optional[int]) -> List[int]:
    """What llama-bench decodes for ppN: BOS (when the model adds one), then random ids."""
    toks = [rng.randrange(n_vocab) for _ in range(n)]
    if n and bos is not None:
        toks[0] = bos
    return toks


def _ts(n_tokens: int, t0: int, t1: int) -> float:
    return n_tokens * 1e9 / max(t1 - t0, 1)


def _worker_pyllamacy(a) -> dict:
    if a.pkg_parent:
        sys.path.insert(0, a.pkg_parent)
    import pyllamacy as P

    fa = {"auto": None, "on": True, "off": False}[a.flash_attn]
    rng = random.Random(a.seed)
    out: Dict[str, list] = {}
    model = P.Model(a.model, n_gpu_layers=-1 if a.ngl is None else a.ngl)
    n_vocab = model.n_vocab
    bos = model.token_bos() if model.add_bos and model.token_bos() >= 0 else None
    first = bos if bos is not None else rng.randrange(n_vocab)
    cparams = dict(n_batch=a.n_batch, n_ubatch=a.n_ubatch, n_threads=a.threads,
                   n_threads_batch=a.threads, flash_attn=fa)
    info = {"pyllamacy_version": P.__version__, "cpu_variant": P.cpu_variant(),
            "llama_cpp_commit": P.build_info().get("llama_cpp_commit"),
            "package": os.path.dirname(P.__file__), "model_desc": model.desc,
            "model_size": model.size, "model_n_params": model.n_params}

    if a.n_prompt > 0:
        with P.Context(model, n_ctx=max(a.n_prompt, 8), **cparams) as ctx:
            ctx.eval(_prompt_tokens(rng, a.n_prompt, n_vocab, bos))          # warmup
            samples = []
            for _ in range(a.reps):
                toks = _prompt_tokens(rng, a.n_prompt, n_vocab, bos)
                ctx.memory_clear(False)
                t0 = time.perf_counter_ns()
                ctx.eval(toks)
                t1 = time.perf_counter_ns()
                samples.append(_ts(a.n_prompt, t0, t1))
            out["pp"] = samples

    if a.n_gen > 0:
        with P.Context(model, n_ctx=max(a.n_gen, 8), **cparams) as ctx, \
                P.Sampler(model) as sampler:
            eog = model.eog_tokens()
            if eog:
                sampler.logit_bias({t: float("-inf") for t in eog})
            sampler.greedy()
            ctx.eval([first])                                   # warmup: one decode ...
            ctx.generate(sampler, max_tokens=1).run()           # ... and one sample
            samples = []
            for _ in range(a.reps):
                ctx.memory_clear(False)
                sampler.reset()
                t0 = time.perf_counter_ns()
                ctx.eval([first])
                toks = ctx.generate(sampler, max_tokens=a.n_gen).run()
                t1 = time.perf_counter_ns()
                if len(toks) != a.n_gen:
                    raise BenchError(f"generation produced {len(toks)} tokens, not {a.n_gen}")
                samples.append(_ts(a.n_gen, t0, t1))
            out["tg"] = samples
            # the same with the sampler chain inside the compute graph (backend_sampling)
            ctx.memory_clear(False)
            ctx.eval([first])
            g = ctx.generate(sampler, max_tokens=2, backend_sampling=True)
            g.run()                                              # warmup, graph reserve
            if g.backend_sampling:
                samples = []
                for _ in range(a.reps):
                    ctx.memory_clear(False)
                    t0 = time.perf_counter_ns()
                    ctx.eval([first])
                    toks = ctx.generate(sampler, max_tokens=a.n_gen, backend_sampling=True).run()
                    t1 = time.perf_counter_ns()
                    if len(toks) != a.n_gen:
                        raise BenchError(f"generation produced {len(toks)} tokens, not {a.n_gen}")
                    samples.append(_ts(a.n_gen, t0, t1))
                out["tg_bs"] = samples
            samples = []
            for _ in range(a.reps):
                toks = [first] + [rng.randrange(n_vocab) for _ in range(a.n_gen - 1)]
                ctx.memory_clear(False)
                t0 = time.perf_counter_ns()
                for t in toks:
                    ctx.eval([t])
                t1 = time.perf_counter_ns()
                samples.append(_ts(a.n_gen, t0, t1))
            out["tg_decode"] = samples
    model.close()
    return {"tests": out, "info": info}


def _worker_llama_cpp_python(a) -> dict:
    import llama_cpp
    from llama_cpp import Llama

    rng = random.Random(a.seed)
    out: Dict[str, list] = {}
    kw = dict(model_path=a.model, n_batch=a.n_batch, n_ubatch=a.n_ubatch, n_threads=a.threads,
              n_threads_batch=a.threads, n_gpu_layers=-1 if a.ngl is None else a.ngl,
              flash_attn=a.flash_attn == "on", verbose=False, seed=a.seed)
    info = {"llama_cpp_python_version": getattr(llama_cpp, "__version__", None),
            "flash_attn": a.flash_attn == "on"}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    except Exception:
        pass

    def clear(llm):
        # outside the timed region; Llama.eval() would otherwise do it inside
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)

    def close(llm):
        c = getattr(llm, "close", None)
        if c is not None:
            c()

    if a.n_prompt > 0:
        llm = Llama(n_ctx=max(a.n_prompt, 8), **kw)
        n_vocab = llm.n_vocab()
        bos = llm.token_bos() if llm._model.add_bos_token() and llm.token_bos() >= 0 else None
        clear(llm)
        llm.eval(_prompt_tokens(rng, a.n_prompt, n_vocab, bos))              # warmup
        samples = []
        for _ in range(a.reps):
            toks = _prompt_tokens(rng, a.n_prompt, n_vocab, bos)
            clear(llm)
            t0 = time.perf_counter_ns()
            llm.eval(toks)
            t1 = time.perf_counter_ns()
            samples.append(_ts(a.n_prompt, t0, t1))
        out["pp"] = samples
        close(llm)

    if a.n_gen > 0:
        llm = Llama(n_ctx=max(a.n_gen, 8), **kw)
        n_vocab = llm.n_vocab()
        bos = llm.token_bos() if llm._model.add_bos_token() and llm.token_bos() >= 0 else None
        first = bos if bos is not None else rng.randrange(n_vocab)
        clear(llm)
        it = llm.generate([first], temp=0.0, reset=True)        # warmup: a decode, a sample
        next(it)
        it.close()
        samples = []
        for _ in range(a.reps):
            clear(llm)
            n = 0
            t0 = time.perf_counter_ns()
            # Llama.generate never stops on its own (EOS is create_completion's business)
            it = llm.generate([first], temp=0.0, reset=True)
            for _tok in it:
                n += 1
                if n == a.n_gen:
                    break
            t1 = time.perf_counter_ns()
            it.close()
            samples.append(_ts(a.n_gen, t0, t1))
        out["tg"] = samples
        samples = []
        for _ in range(a.reps):
            toks = [first] + [rng.randrange(n_vocab) for _ in range(a.n_gen - 1)]
            clear(llm)
            t0 = time.perf_counter_ns()
            for t in toks:
                llm.eval([t])
            t1 = time.perf_counter_ns()
            samples.append(_ts(a.n_gen, t0, t1))
        out["tg_decode"] = samples
        close(llm)
    return {"tests": out, "info": info}


def _worker_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyllamacy-bench-worker")
    p.add_argument("--worker", required=True, choices=("pyllamacy", "llama-cpp-python"))
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--n-prompt", type=int, required=True)
    p.add_argument("--n-gen", type=int, required=True)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--n-batch", type=int, default=N_BATCH)
    p.add_argument("--n-ubatch", type=int, default=N_UBATCH)
    p.add_argument("--flash-attn", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--ngl", type=int, default=None)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--pkg-parent", default=None)
    return p


def _worker_main(argv: Optional[List[str]] = None) -> int:
    a = _worker_parser().parse_args(argv)
    fn = _worker_pyllamacy if a.worker == "pyllamacy" else _worker_llama_cpp_python
    result = fn(a)
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# =====================================================================================
# the run: engines, interleaving, report
# =====================================================================================


class Engine:
    """One contender: a label and the command that measures it once (in a fresh process)."""

    def __init__(self, key: str, label: str, kind: str, argv: List[str], cwd: Optional[str] = None):
        self.key = key
        self.label = label
        self.kind = kind            # "pyllamacy", "llama-bench", "llama-cpp-python"
        self.argv = argv
        self.cwd = cwd
        self.samples: Dict[str, List[float]] = {}
        self.info: dict = {}
        self.error: Optional[str] = None

    def run_once(self, timeout: float) -> Dict[str, List[float]]:
        try:
            r = subprocess.run(self.argv, cwd=self.cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.label}: no result after {timeout:.0f} s") from None
        except OSError as e:
            raise BenchError(f"{self.label}: could not start {self.argv[0]}: {e}") from None
        if r.returncode != 0:
            tail = " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
            raise BenchError(f"{self.label}: exit code {r.returncode}: {tail}")
        if self.kind == "llama-bench":
            return self._parse_llama_bench(r.stdout)
        for line in reversed(r.stdout.splitlines()):
            if line.startswith(RESULT_MARK):
                res = json.loads(line[len(RESULT_MARK):])
                self.info.update(res.get("info") or {})
                return res["tests"]
        raise BenchError(f"{self.label}: no result in its output: {r.stdout[-300:]!r}")

    def _parse_llama_bench(self, stdout: str) -> Dict[str, List[float]]:
        try:
            data = json.loads(stdout[stdout.index("["):])
        except ValueError:
            raise BenchError(f"{self.label}: could not parse its JSON output: "
                             f"{stdout[:300]!r}") from None
        out: Dict[str, List[float]] = {}
        for t in data:
            key = "pp" if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0 else \
                  "tg" if t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0 else None
            if key is None:
                continue
            out.setdefault(key, []).extend(t.get("samples_ts") or [t["avg_ts"]])
            for k in ("build_commit", "build_number", "cpu_info", "backends", "n_threads",
                      "flash_attn", "n_batch", "n_ubatch", "model_type", "poll", "repack",
                      "type_k", "type_v"):
                if k in t:
                    self.info[k] = t[k]
        return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _program(given: str) -> str:
    """A program named on the command line, as an absolute path: the engines run in their own
    working folders, where a relative path means something else. A bare name is looked up
    on $PATH."""
    if os.sep not in given:
        return shutil.which(given) or given
    return os.path.abspath(given)


def find_llama_bench(explicit: Optional[str] = None) -> Optional[str]:
    """llama.cpp's llama-bench from the vendored build: --llama-bench, $PYLLAMACY_LLAMA_BIN,
    or pyllamacy.build_info()["build_bin_dir"]."""
    import pyllamacy

    if explicit:
        return _program(explicit)
    for d in (os.environ.get("PYLLAMACY_LLAMA_BIN"), pyllamacy.build_info().get("build_bin_dir")):
        if d:
            p = os.path.join(d, "llama-bench")
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
    return None


def find_llama_cpp_python(explicit: Optional[str] = None) -> Optional[str]:
    """An interpreter that can import llama_cpp: --llama-cpp-python-python,
    $PYLLAMACY_LCP_PYTHON, /opt/lcp-venv/bin/python, or this one if llama_cpp is installed."""
    if explicit:
        return _program(explicit)
    for p in (os.environ.get("PYLLAMACY_LCP_PYTHON"), DEFAULT_LCP_VENV_PYTHON):
        if p and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    import importlib.util
    if importlib.util.find_spec("llama_cpp") is not None:
        return sys.executable
    return None


def _loadavg() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _noisy(report: dict, limit: float = 0.05) -> List[str]:
    """Figures whose relative spread is above `limit`: the machine was not quiet."""
    out = []
    for e in report["engines"].values():
        for t, s in e["summary"].items():
            if s and s["n"] > 1 and s["mean"] > 0 and s["std"] / s["mean"] > limit:
                out.append(f"{e['label']} {_test_name(t, report['n_prompt'], report['n_gen'])} "
                           f"±{100 * s['std'] / s['mean']:.0f}%")
    return out


def _summary(samples: List[float]) -> dict:
    if not samples:
        return {}
    return {"mean": statistics.fmean(samples),
            "std": statistics.stdev(samples) if len(samples) > 1 else 0.0,
            "n": len(samples)}


def run(model: str, *, threads: int, reps: int = 5, n_prompt: int = 512, n_gen: int = 128,
        llama_bench: bool = True, llama_bench_path: Optional[str] = None,
        llama_cpp_python: bool = True, lcp_python: Optional[str] = None,
        lcp_flash_attn: str = "both", flash_attn: str = "auto", ngl: Optional[int] = None,
        inner_reps: int = 1, seed: int = 1234, timeout: float = 1800.0,
        progress=None) -> dict:
    """Measure every engine `reps` times, interleaved; return the report (a JSON-able dict)."""
    import pyllamacy

    if reps < 1 or inner_reps < 1:
        raise ValueError("reps and inner_reps must be >= 1")
    if n_prompt < 0 or n_gen < 0 or n_prompt + n_gen == 0:
        raise ValueError("n_prompt and n_gen must be >= 0, and not both 0")
    if threads < 1:
        raise ValueError("threads must be >= 1")
    pyllamacy.check_gguf(model)
    model = os.path.abspath(model)
    say = progress or (lambda msg: None)
    bench_file = os.path.abspath(__file__)
    common = ["--model", model, "--threads", str(threads), "--n-prompt", str(n_prompt),
              "--n-gen", str(n_gen), "--reps", str(inner_reps), "--n-batch", str(N_BATCH),
              "--n-ubatch", str(N_UBATCH), "--seed", str(seed)]
    if ngl is not None:
        common += ["--ngl", str(ngl)]
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(pyllamacy.__file__)))
    # the same pyllamacy as this process: run from the folder that holds the package
    engines = [Engine("pyllamacy", "pyllamacy", "pyllamacy",
                      [sys.executable, "-m", "pyllamacy.bench", "--worker", "pyllamacy",
                       "--pkg-parent", pkg_parent, "--flash-attn", flash_attn] + common,
                      cwd=pkg_parent)]
    skipped: Dict[str, str] = {}

    if llama_bench:
        lb = find_llama_bench(llama_bench_path)
        if lb is None:
            skipped["llama-bench"] = ("not found: build llama.cpp's programs (PYLLAMACY_TOOLS) "
                                      "or set PYLLAMACY_LLAMA_BIN")
        else:
            argv = [lb, "-m", model, "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                    "-r", str(inner_reps), "-b", str(N_BATCH), "-ub", str(N_UBATCH),
                    "-fa", flash_attn, "-o", "json"]
            if ngl is not None:
                argv += ["-ngl", str(ngl)]
            # its own folder as cwd: ggml also looks for backend modules in the cwd
            e = Engine("llama-bench", "llama-bench", "llama-bench", argv,
                       cwd=os.path.dirname(lb))
            e.info["path"] = lb
            engines.append(e)
    else:
        skipped["llama-bench"] = "--no-llama-bench"

    if llama_cpp_python:
        py = find_llama_cpp_python(lcp_python)
        if py is None:
            skipped["llama-cpp-python"] = (f"not installed here nor in {DEFAULT_LCP_VENV_PYTHON} "
                                           "(see benchmarks/README.md)")
        else:
            fas = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}[lcp_flash_attn]
            for fa in fas:
                key = "llama-cpp-python" if fa == "off" else "llama-cpp-python-fa"
                label = ("llama-cpp-python (fa off, its default)" if fa == "off"
                         else "llama-cpp-python (fa on)")
                e = Engine(key, label, "llama-cpp-python",
                           [py, "-I", bench_file, "--worker", "llama-cpp-python",
                            "--flash-attn", fa] + common)
                e.info["python"] = py
                engines.append(e)
    else:
        skipped["llama-cpp-python"] = "--no-llama-cpp-python"

    load_before = _loadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    for rnd in range(reps):
        for e in engines:
            if e.error is not None:
                continue
            try:
                res = e.run_once(timeout)
            except BenchError as err:
                e.error = str(err)
                say(f"[{rnd + 1}/{reps}] {e.label}: FAILED: {err}")
                continue
            for k, v in res.items():
                e.samples.setdefault(k, []).extend(v)
            shown = ", ".join(f"{_test_name(k, n_prompt, n_gen)} {statistics.fmean(v):.1f}"
                              for k, v in res.items() if v)
            say(f"[{rnd + 1}/{reps}] {e.label}: {shown} t/s")

    bi = pyllamacy.build_info()
    report = {
        "date": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t_start, 1),
        "machine": {"cpu": _cpu_model(), "logical_cpus": os.cpu_count(),
                    "usable_cpus": _usable_cpus(), "os": platform.platform(),
                    "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": _loadavg()},
        "threads": threads, "model": model, "model_bytes": os.path.getsize(model),
        "n_prompt": n_prompt, "n_gen": n_gen, "reps": reps, "inner_reps": inner_reps,
        "n_batch": N_BATCH, "n_ubatch": N_UBATCH, "flash_attn": flash_attn, "ngl": ngl,
        "pyllamacy": {"version": pyllamacy.__version__, "cpu_variant": pyllamacy.cpu_variant(),
                      "llama_cpp_commit": bi.get("llama_cpp_commit")},
        "engines": {},
        "skipped": skipped,
    }
    for e in engines:
        report["engines"][e.key] = {
            "label": e.label, "kind": e.kind, "command": e.argv, "info": e.info,
            "error": e.error, "samples": e.samples,
            "summary": {k: _summary(v) for k, v in e.samples.items()},
        }
    report["ratios"] = _ratios(report)
    return report


def _mean(report: dict, engine: str, test: str) -> Optional[float]:
    e = report["engines"].get(engine)
    if not e or e["error"]:
        return None
    return (e["summary"].get(test) or {}).get("mean")


def _ratios(report: dict) -> Dict[str, Dict[str, Optional[float]]]:
    """pyllamacy / other, per test. Against llama-bench all of our tg figures are compared
    with its tg (it has only the decode-only kind); against llama-cpp-python our
    backend-sampled tg is compared with its tg (it samples on the CPU)."""
    out: Dict[str, Dict[str, Optional[float]]] = {}
    ours = {t: _mean(report, "pyllamacy", t) for t in TESTS}
    for other in report["engines"]:
        if other == "pyllamacy":
            continue
        r = {}
        for t in TESTS:
            if other == "llama-bench" and t in ("tg_decode", "tg_bs"):
                theirs = _mean(report, other, "tg")
            elif t == "tg_bs":
                theirs = _mean(report, other, "tg")
            else:
                theirs = _mean(report, other, t)
            r[t] = ours[t] / theirs if ours[t] and theirs else None
        out[other] = r
    return out


# =====================================================================================
# output
# =====================================================================================


def _test_name(test: str, n_prompt: int, n_gen: int) -> str:
    return {"pp": f"pp{n_prompt}", "tg": f"tg{n_gen}",
            "tg_bs": f"tg{n_gen} backend-sampled",
            "tg_decode": f"tg{n_gen} decode-only"}[test]


def _table(header: List[str], rows: List[List[str]], right: set) -> List[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    return [line(header), sep] + [line(r) for r in rows]


def _fmt_ratio(r: Optional[float], target: Optional[float]) -> str:
    if r is None:
        return "-"
    if target is None:
        return f"{r:.3f}"
    return f"{r:.3f} {'ok' if r >= target else 'BELOW ' + format(target, '.2f')}"


def format_report(report: dict, markdown: bool = False) -> str:
    n_prompt, n_gen = report["n_prompt"], report["n_gen"]
    m = report["machine"]
    py = report["pyllamacy"]
    lines: List[str] = []
    title = (f"{report['date']} | {m['cpu']} ({m['usable_cpus']} CPUs usable) | "
             f"{report['threads']} threads | {os.path.basename(report['model'])}")
    if markdown:
        lines += [f"### {title}", ""]
    else:
        lines += [f"pyllamacy bench: {title}", ""]
    meta = [
        f"model: `{report['model']}` ({report['model_bytes'] / 1e6:.1f} MB)",
        f"pyllamacy {py['version']}, llama.cpp {py['llama_cpp_commit'] or 'unknown'}, "
        f"CPU variant {py['cpu_variant']}",
        f"machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
        f"{m['os']}, Python {m['python']}",
        f"settings: {report['threads']} threads, n_batch {report['n_batch']}, n_ubatch "
        f"{report['n_ubatch']}, flash_attn {report['flash_attn']}"
        + (f", ngl {report['ngl']}" if report["ngl"] is not None else ""),
        f"method: {report['reps']} round{'s' if report['reps'] != 1 else ''}, engines interleaved, one fresh process per engine "
        f"per round ({report['inner_reps']} measured repetition"
        f"{'s' if report['inner_reps'] != 1 else ''} each, after a warmup); "
        f"{report['duration_s']:.0f} s in all; load average {m.get('loadavg_before')} before, "
        f"{m.get('loadavg_after')} after",
    ]
    for key, e in report["engines"].items():
        info = e["info"]
        if e["kind"] == "llama-bench":
            fa = {-1: "auto", 0: "off", 1: "on"}.get(info.get("flash_attn"), info.get("flash_attn"))
            build = info.get("build_commit")
            meta.append(f"llama-bench: {info.get('path')}"
                        + (f" (build {build})" if build and build != "unknown" else "")
                        + f", flash_attn {fa}, poll {info.get('poll')}, repack {info.get('repack')}")
        elif e["kind"] == "llama-cpp-python" and key == "llama-cpp-python":
            meta.append(f"llama-cpp-python {info.get('llama_cpp_python_version')} "
                        f"({info.get('python')})")
    for key, why in report["skipped"].items():
        meta.append(f"{key}: skipped ({why})")
    lines += [("- " if markdown else "  ") + x for x in meta] + [""]

    rows = []
    for key, e in report["engines"].items():
        if e["error"]:
            rows.append([e["label"], "-", "FAILED: " + e["error"][:120]])
            continue
        for t in TESTS:
            s = e["summary"].get(t)
            if s:
                rows.append([e["label"], _test_name(t, n_prompt, n_gen),
                             f"{s['mean']:.2f} ± {s['std']:.2f}"])
    lines += _table(["engine", "test", "t/s"], rows, {2}) + [""]

    ratio_rows = []
    for other, r in report["ratios"].items():
        label = report["engines"][other]["label"]
        lb = other == "llama-bench"
        cells = [f"pyllamacy / {label}"]
        for t in TESTS:
            target = (None if t == "tg_decode" else TARGETS["tg" if t == "tg_bs" else t]) \
                if lb else 1.0
            cells.append(_fmt_ratio(r.get(t), target))
        ratio_rows.append(cells)
    if ratio_rows:
        header = ["ratio (higher: pyllamacy faster)", _test_name("pp", n_prompt, n_gen),
                  _test_name("tg", n_gen=n_gen, n_prompt=n_prompt),
                  _test_name("tg_bs", n_prompt, n_gen),
                  _test_name("tg_decode", n_prompt, n_gen)]
        lines += _table(header, ratio_rows, {1, 2, 3, 4})
        lines += ["", f"targets: pp >= {TARGETS['pp']} x llama-bench, tg >= {TARGETS['tg']} x "
                      "llama-bench (pyllamacy's tg includes sampling; llama-bench's does not), "
                      "faster than llama-cpp-python"]
    noisy = _noisy(report)
    if noisy:
        lines += ["", f"WARNING: noisy machine, spread above 5% for: {', '.join(noisy)}; "
                      "do not record these numbers"]
    return "\n".join(lines) + "\n"


# =====================================================================================
# command line
# =====================================================================================


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="GGUF file (default: $PYLLAMACY_MODEL or the default "
                                         "small model)")
    p.add_argument("-t", "--threads", type=int, default=None,
                   help="threads for every engine (default: pyllamacy.default_n_threads())")
    p.add_argument("-r", "--reps", type=int, default=5,
                   help="rounds; each round runs every engine once, in a fresh process "
                        "(default 5)")
    p.add_argument("--inner-reps", type=int, default=1,
                   help="repetitions inside each process (default 1)")
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens (default 128)")
    p.add_argument("-fa", "--flash-attn", choices=("auto", "on", "off"), default="auto",
                   help="for pyllamacy and llama-bench (default auto, llama-bench's default)")
    p.add_argument("--lcp-flash-attn", choices=("off", "on", "both"), default="both",
                   help="llama-cpp-python's flash_attn: its default off, on (like-for-like), "
                        "or both (default)")
    p.add_argument("--ngl", type=int, default=None, help="GPU layers (default: engine default)")
    p.add_argument("--no-llama-bench", action="store_true")
    p.add_argument("--no-llama-cpp-python", action="store_true")
    p.add_argument("--llama-bench", dest="llama_bench_path", default=None, metavar="PATH",
                   help="llama-bench binary (default: $PYLLAMACY_LLAMA_BIN or the vendored "
                        "build's)")
    p.add_argument("--llama-cpp-python-python", dest="lcp_python", default=None, metavar="PATH",
                   help="python that has llama_cpp (default: $PYLLAMACY_LCP_PYTHON, "
                        f"{DEFAULT_LCP_VENV_PYTHON}, or this one if llama_cpp is installed)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="seconds one measuring process may take (default 1800)")
    p.add_argument("--seed", type=int, default=1234, help=argparse.SUPPRESS)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the full report as JSON")
    out.add_argument("--markdown", action="store_true",
                     help="print a section for benchmarks/RESULTS.md")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


def run_from_args(args) -> int:
    """`pyllamacy bench`: returns the exit code (2 bad input, 1 an engine failed)."""
    import pyllamacy
    from pyllamacy import models

    def err(msg: str, code: int) -> int:
        sys.stderr.write(f"pyllamacy bench: error: {msg}\n")
        return code

    model = args.model
    if model is None:
        try:
            model = models.default_model_path()
        except models.ModelFetchError as e:
            return err(f"could not get the default model: {e}", 1)
    try:
        pyllamacy.check_gguf(model)
    except FileNotFoundError:
        return err(f"{model}: no such file", 2)
    except (OSError, ValueError) as e:
        return err(str(e), 2)
    threads = args.threads if args.threads is not None else pyllamacy.default_n_threads()

    def progress(msg: str) -> None:
        if not args.quiet:
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()

    try:
        report = run(model, threads=threads, reps=args.reps, n_prompt=args.n_prompt,
                     n_gen=args.n_gen, llama_bench=not args.no_llama_bench,
                     llama_bench_path=args.llama_bench_path,
                     llama_cpp_python=not args.no_llama_cpp_python, lcp_python=args.lcp_python,
                     lcp_flash_attn=args.lcp_flash_attn, flash_attn=args.flash_attn,
                     ngl=args.ngl, inner_reps=args.inner_reps, seed=args.seed,
                     timeout=args.timeout, progress=progress)
    except ValueError as e:
        return err(str(e), 2)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        sys.stdout.write(format_report(report, markdown=args.markdown))
    failed = [e["label"] for e in report["engines"].values() if e["error"]]
    if failed:
        sys.stderr.write(f"pyllamacy bench: failed: {', '.join(failed)}\n")
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="pyllamacy bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        sys.exit(_worker_main())
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
