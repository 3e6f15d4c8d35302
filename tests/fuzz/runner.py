"""Runs fuzz cases in worker processes (several cases per process) and reports every case
during which a worker died by a signal, exited, or hung past the timeout."""
from __future__ import annotations

import json
import re
import os
import pickle
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import List, Optional

from . import mutators as M

_PKG_PARENT = str(Path(__file__).resolve().parent.parent)        # tests/

_BOOT = (
    "import json, sys\n"
    "cfg = json.loads(sys.argv[1])\n"
    "sys.path[:0] = cfg['path']\n"
    "from fuzz.worker import main\n"
    "main(cfg)\n")


def default_model() -> str:
    env = os.environ.get("PYLLAMACY_TEST_MODEL")
    if env:
        return env
    from pyllamacy import models
    return str(models.fetch(models.SMOLLM2_135M))


def env_list(name: str) -> Optional[List[str]]:
    v = os.environ.get(name, "").strip()
    return [x.strip() for x in v.split(",") if x.strip()] or None


def _in_asan() -> bool:
    return "asan" in os.environ.get("LD_PRELOAD", "") or "ASAN_OPTIONS" in os.environ


_REASON = re.compile(r"(GGML_ASSERT\(.*|what\(\): .*|ERROR: AddressSanitizer: .*|"
                     r"terminate called .*|Fatal Python error: .*|\S+\.(?:c|cc|cpp|h):\d+: .*)")


def _reason(log: str) -> str:
    found = [f for f in _REASON.findall(log) if not f.startswith("terminate called")] or \
        _REASON.findall(log)
    return found[-1].strip()[:200] if found else ""


class Failure(dict):
    def line(self) -> str:
        return (f"{self['outcome']:<8} {self['class']:<44} seed={self['seed']} case={self['index']}"
                f"  {self.get('reason', '')}\n             reproduce: python -m tests.fuzz "
                f"--seed {self['seed']} --case {self['index']}")


class _Worker:
    def __init__(self, cfg: dict, log_path: str):
        r, w = os.pipe()
        cfg = dict(cfg, proto_fd=w)
        self.log = open(log_path, "ab")
        pyl = os.path.dirname(os.path.dirname(__import__("pyllamacy").__file__))
        cfg["path"] = [pyl, _PKG_PARENT]
        env = dict(os.environ)
        if not cfg.get("backtrace"):
            env.setdefault("GGML_NO_BACKTRACE", "1")      # ggml's gdb backtrace takes seconds
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=self.log, stderr=self.log,
                                     pass_fds=(w,), cwd=cfg["workdir"], start_new_session=True,
                                     env=env)
        os.close(w)
        self.fd = r
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(r, selectors.EVENT_READ)

    def read(self, deadline: float):
        """The next protocol message; None on EOF; "timeout" past the deadline."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                return "timeout"
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send(self, case: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(case) + "\n").encode("utf-8", "surrogatepass"))
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        # the process group: the chat sandbox's forked workers
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.sel.close()
        os.close(self.fd)
        self.log.close()


def _outcome(rc: int) -> str:
    if rc < 0:
        try:
            return signal.Signals(-rc).name
        except ValueError:
            return f"signal {-rc}"
    return f"exit {rc}"


def _tail(path: str, start: int, n: int = 3000) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    return data[-n:].decode("utf-8", "replace")


def _run_slice(cases, cfg, job: int, timeout: float, results: list, failures: list,
               progress) -> None:
    log_path = os.path.join(cfg["workdir"], f"worker-{job}.log")
    w = None
    for case in cases:
        if w is None:
            w = _Worker(cfg, log_path)
            msg = w.read(time.monotonic() + 120)
            if not isinstance(msg, dict) or "ready" not in msg:
                rc = w.proc.poll()
                raise RuntimeError(f"fuzz worker did not start ({msg!r}, rc={rc}): "
                                   + _tail(log_path, 0))
        w.log.flush()
        start_off = os.path.getsize(log_path)
        t_case = time.monotonic()
        if not w.send(case):
            msg = None
        else:
            msg = w.read(time.monotonic() + timeout)          # {"start": i}
            if isinstance(msg, dict):
                msg = w.read(time.monotonic() + timeout)      # {"end": i}
        if isinstance(msg, dict) and msg.get("end") == case["index"]:
            results.append((case, msg["status"], msg.get("error", ""), msg.get("seconds", 0.0)))
        else:
            if msg == "timeout":
                w.kill()
                outcome = f"hang>{timeout:g}s"
            else:
                try:
                    w.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w.kill()
                outcome = _outcome(w.proc.returncode)
            w.close()
            w = None
            log = _tail(log_path, start_off)
            f = Failure(outcome=outcome, kind=case["kind"], seed=case["seed"], index=case["index"],
                        reason=_reason(log), **{"class": M.case_class(case)}, log=log)
            failures.append(f)
            results.append((case, "FAIL", outcome, time.monotonic() - t_case))
        if progress:
            progress(len(results))
    if w is not None:
        w.close()


def run(n_cases: int, seed: int = 0, *, jobs: int = 2, timeout: float = 30.0,
        kinds=None, gguf_classes=None, skip_gguf_classes=None, smollm2: Optional[str] = None,
        workdir: Optional[str] = None, sandbox: bool = True, verbose: bool = False,
        backtrace: bool = False,
        start: int = 0, mem_gib: Optional[float] = None, quiet: bool = False) -> dict:
    """Run cases start..start+n_cases-1 of `seed`; returns a summary with the failures."""
    kinds = tuple(kinds or env_list("PYLLAMACY_FUZZ_KINDS") or M.KINDS)
    classes = set(gguf_classes or env_list("PYLLAMACY_FUZZ_GGUF_CLASSES") or M.GGUF_MUTATORS)
    classes -= set(skip_gguf_classes or env_list("PYLLAMACY_FUZZ_SKIP_GGUF_CLASSES") or ())
    unknown = classes - set(M.GGUF_MUTATORS)
    if unknown:
        raise ValueError(f"unknown GGUF mutator classes {sorted(unknown)}; known: {sorted(M.GGUF_MUTATORS)}")
    cases = [M.make_case(seed, i, kinds, classes) for i in range(start, start + n_cases)]
    summary = run_cases(cases, jobs=jobs, timeout=timeout, smollm2=smollm2, workdir=workdir,
                        sandbox=sandbox, verbose=verbose, backtrace=backtrace, mem_gib=mem_gib,
                        quiet=quiet)
    summary["seed"] = seed
    return summary


def run_cases(cases: list, *, jobs: int = 2, timeout: float = 30.0, smollm2: Optional[str] = None,
              workdir: Optional[str] = None, sandbox: bool = True, verbose: bool = False,
              backtrace: bool = False, mem_gib: Optional[float] = None, quiet: bool = False) -> dict:
    """Run these cases (dicts from mutators.make_case, or {"kind": "selftest", ...})."""
    smollm2 = smollm2 or default_model()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="pyllamacy-fuzz-")
        workdir = tmp.name
    os.makedirs(workdir, exist_ok=True)
    t0 = time.monotonic()
    if any(c["kind"] == "gguf" for c in cases):
        with open(os.path.join(workdir, "base.pickle"), "wb") as f:
            pickle.dump(M.build_base(smollm2), f)
    if mem_gib is None:
        mem_gib = 0 if _in_asan() else float(os.environ.get("PYLLAMACY_FUZZ_MEM_GIB", "8"))
    cfg = {"workdir": workdir, "smollm2": smollm2, "sandbox": sandbox, "verbose": verbose,
           "mem_gib": mem_gib, "backtrace": backtrace}
    results: list = []
    failures: list = []
    lock = threading.Lock()
    last = [0.0]

    def progress(n):
        if quiet:
            return
        with lock:
            if time.monotonic() - last[0] > 5 or n == len(cases):
                last[0] = time.monotonic()
                print(f"  {n}/{len(cases)} cases, {len(failures)} failures, "
                      f"{time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)

    jobs = max(1, min(jobs, len(cases) or 1))
    threads = [threading.Thread(target=_run_slice, args=(cases[j::jobs], cfg, j, timeout, results,
                                                         failures, progress)) for j in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(results) != len(cases):
        raise RuntimeError(f"fuzz run incomplete: {len(results)} of {len(cases)} cases ran")
    if tmp is not None:
        tmp.cleanup()
    counts = Counter((c["kind"], status) for c, status, _, _ in results)
    slowest = sorted(results, key=lambda r: -r[3])[:5]
    failures.sort(key=lambda f: f["index"])
    return {"seed": cases[0].get("seed") if cases else None, "cases": len(cases), "seconds": round(time.monotonic() - t0, 1),
            "counts": {f"{k}:{s}": n for (k, s), n in sorted(counts.items())},
            "failures": failures,
            "slowest": [(c["index"], M.case_class(c), round(t, 1)) for c, _, _, t in slowest],
            "contained": [(c["index"], M.case_class(c), e) for c, s, e, _ in results
                          if s == "exception" and ("signal" in e.lower() or "crash" in e.lower())]}


def format_report(summary: dict) -> str:
    lines = [f"fuzz: seed {summary['seed']}, {summary['cases']} cases in {summary['seconds']}s",
             "  " + ", ".join(f"{k}={v}" for k, v in summary["counts"].items())]
    if summary["contained"]:
        lines.append(f"  {len(summary['contained'])} crashes contained by the chat sandbox "
                     "(exceptions, not failures), e.g. " + repr(summary["contained"][:3]))
    lines.append("  slowest: " + ", ".join(f"#{i} {c} {t}s" for i, c, t in summary["slowest"]))
    fails = summary["failures"]
    lines.append(f"  {len(fails)} failures (process died or hung):")
    for f in fails:
        lines.append("    " + Failure(f).line())
    by_reason = Counter(f.get("reason") or f["outcome"] for f in fails)
    if by_reason:
        lines.append("  by reason:")
        for r, n in by_reason.most_common():
            first = next(f for f in fails if (f.get("reason") or f["outcome"]) == r)
            lines.append(f"    x{n:<3} {r}  (e.g. --seed {first['seed']} --case {first['index']})")
    return "\n".join(lines)
