"""The process that runs fuzz cases. It reads one JSON case per line on stdin, writes
{"start": i} before running it and {"end": i, ...} after, on a private pipe (fd given by the
runner; llama.cpp may print to stdout). A Python exception is a pass; if this process dies,
the runner knows which case killed it."""
from __future__ import annotations

import json
import os
import pickle
import resource
import sys
import time

from . import gguf_doc as G
from . import mutators as M

PROMPT = "Hello world! <|im_start|>user\nÀ 日本語 \t\n  x<|im_end|>"


class Env:
    def __init__(self, workdir: str, smollm2: str, sandbox: bool = True):
        self.workdir = workdir
        self.smollm2 = smollm2
        self.sandbox = sandbox
        self._base = None
        self._model = None

    @property
    def base(self) -> G.Doc:
        if self._base is None:
            p = os.path.join(self.workdir, "base.pickle")
            if os.path.exists(p):
                with open(p, "rb") as f:
                    self._base = pickle.load(f)
            else:
                self._base = M.build_base(self.smollm2)
        return self._base

    @property
    def model(self):
        import pyllamacy
        if self._model is None:
            self._model = pyllamacy.Model(self.smollm2)
        return self._model


def _exercise_vocab(m):
    for special in (False, True):
        try:
            toks = m.tokenize(PROMPT, add_special=special, parse_special=special)
            m.detokenize(toks, remove_special=special, unparse_special=special)
        except Exception:
            pass
    for tok in (0, 1, 2, 3, 100, 4095, 49151, -1, 2 ** 31 - 1):
        try:
            m.token_to_piece(tok, special=True)
        except Exception:
            pass
    for name in ("metadata", "chat_template", "desc", "n_vocab"):
        try:
            v = getattr(m, name)
            v() if callable(v) else v
        except Exception:
            pass


def _decode(m, n_tokens=3, sampler=None):
    import pyllamacy
    with pyllamacy.Context(m, n_ctx=128, n_batch=64, n_ubatch=64, n_threads=1) as ctx:
        toks = m.tokenize("Hello, my name is", add_special=True, parse_special=False) or [0]
        ctx.eval(toks)
        s = sampler if sampler is not None else pyllamacy.Sampler(m).greedy()
        try:
            return ctx.generate(s, max_tokens=n_tokens).run()
        finally:
            if sampler is None:
                s.close()


def _load_and_run(path, full, use_mmap=True, kv_overrides=None, vocab_first=True):
    import pyllamacy
    if vocab_first:
        try:
            with pyllamacy.Model(path, vocab_only=True, kv_overrides=kv_overrides) as m:
                _exercise_vocab(m)
        except Exception:
            pass
    if full:
        with pyllamacy.Model(path, use_mmap=use_mmap, kv_overrides=kv_overrides) as m:
            _exercise_vocab(m)
            _decode(m)


def _run_grammar(env, grammar, lazy, n_tokens):
    import pyllamacy
    s = pyllamacy.Sampler(env.model)
    try:
        if lazy:
            s.grammar_lazy(grammar, trigger_patterns=["[\\s\\S]*?<tool"], trigger_tokens=[1])
        else:
            s.grammar(grammar)
        s.greedy()
        _decode(env.model, n_tokens, sampler=s)
    finally:
        s.close()


def run_case(env: Env, case: dict) -> None:
    """Run one case; exceptions propagate (the caller records them)."""
    kind = case["kind"]
    if kind == "gguf":
        doc, _ = M.apply_gguf(env.base, case)
        path = os.path.join(env.workdir, f"case-{os.getpid()}.gguf")
        with open(path, "wb") as f:
            f.write(G.serialize(doc))
        _load_and_run(path, case["full"], case["use_mmap"])
    elif kind == "kv":
        _load_and_run(env.smollm2, not case["vocab_only"], True, M.kv_decode(case["overrides"]),
                      vocab_first=case["vocab_only"])
        if case["vocab_only"]:
            pass
    elif kind == "template":
        from pyllamacy import _chat
        req = {"template": case["template"], "bos_token": case["bos_token"],
               "eos_token": case["eos_token"], "messages": case["messages"],
               "tools": case["tools"], "tool_choice": "auto", "json_schema": None,
               "add_generation_prompt": case["add_generation_prompt"],
               "parallel_tool_calls": False, "reasoning_format": "none",
               "chat_template_kwargs": {}}
        r = _chat.render(req, sandbox=env.sandbox)
        g = r.get("grammar") if isinstance(r, dict) else None
        if g:
            _run_grammar(env, g, bool(r.get("grammar_lazy")), 4)
    elif kind == "grammar":
        _run_grammar(env, case["grammar"], case["lazy"], case["n_tokens"])
    elif kind == "schema":
        from pyllamacy import _chat
        g = _chat.json_schema_to_grammar(case["schema"], sandbox=env.sandbox)
        _run_grammar(env, g, False, case["n_tokens"])
    elif kind == "selftest":            # the harness's own test: how a failure looks
        action = case["action"]
        if action == "abort":
            os.abort()
        elif action == "segv":
            import ctypes
            ctypes.string_at(0)
        elif action == "hang":
            time.sleep(3600)
        elif action == "exit":
            os._exit(3)
        raise ValueError("a Python exception is a pass")
    else:
        raise ValueError(kind)


def _limit_memory(gib: float) -> None:
    if gib <= 0:
        return
    lim = int(gib * (1 << 30))
    try:
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    except (ValueError, OSError):
        pass


def main(cfg: dict) -> None:
    proto = cfg["proto_fd"]
    os.dup2(2, 1)                       # llama.cpp's prints go to the log, not the protocol
    sys.stdout = sys.stderr
    _limit_memory(cfg.get("mem_gib", 0))
    import pyllamacy
    pyllamacy.set_log_level("none" if not cfg.get("verbose") else "warn")
    from pyllamacy import chat
    chat.set_limits(timeout=cfg.get("chat_timeout", 3.0), memory=512 << 20)
    env = Env(cfg["workdir"], cfg["smollm2"], cfg.get("sandbox", True))

    def say(obj):
        os.write(proto, (json.dumps(obj) + "\n").encode())

    say({"ready": os.getpid()})
    for line in sys.stdin:
        case = json.loads(line)
        i = case["index"]
        say({"start": i})
        sys.stderr.write(f"\n=== case seed={case['seed']} index={i} kind={case['kind']}\n")
        sys.stderr.flush()
        status, err = "ok", ""
        t0 = time.monotonic()
        try:
            run_case(env, case)
        except (Exception, RecursionError) as e:      # noqa: B014 - a pass by definition
            status, err = "exception", f"{type(e).__name__}: {str(e)[:300]}"
        except BaseException as e:      # SystemExit etc.: still not a crash
            status, err = "exception", f"{type(e).__name__}: {str(e)[:300]}"
        say({"end": i, "status": status, "error": err, "seconds": time.monotonic() - t0})
