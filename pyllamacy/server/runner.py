"""One thread per served model drives the continuous-batching Engine.

The runner thread owns the Model, the Context (one sequence per slot) and the Engine: it admits
waiting requests into free slots, calls Engine.step() (one llama_decode for every active slot,
without the GIL) while there is work, turns tokens into bytes and hands each step's events to
the asyncio loop in one call_soon_threadsafe. The event loop never touches the Engine: submits
and cancels are queued for the runner, so a slow step never blocks the server.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Deque, Dict, List, Optional, Set

from .._llama import Engine, LlamaError, Sampler, set_log_level, supports_gpu_offload
from ..defaults import PROMPT_LOOKUP_MAX_NGRAM_SIZE
from ..loading import load
from ..pipeline.sampling import grammar_limit_ms
from ..pipeline.text import logprob_entry
from .settings import PROMPT_LOOKUP, ModelSettings
from .trace import StepTrace

__all__ = ["EngineRunner", "GenRequest", "QueueFullError", "RunnerClosedError"]

log = logging.getLogger("pyllamacy.server")


class QueueFullError(RuntimeError):
    """Every slot and every place in the wait queue is taken (HTTP 429)."""


class RunnerClosedError(RuntimeError):
    """The model is shutting down or failed (HTTP 503)."""


class GenRequest:
    """One generation: prompt tokens + its own sampler; events arrive on `queue` as
    (piece: bytes | None, finish, logprob: LogprobEntry | None); finish is None while it goes
    on, then "stop", "length", "aborted", or the exception that ended it.

    logprobs=N asks for each token's log-probability and the N most likely alternatives:
    LogprobEntry = (token text, log-probability, {text: log-probability} of the top N and the
    token itself), the shape of llama-cpp-python's completion logprobs.

    Deadlines (None: none): `timeout_s` counts from the submit (the wait for a slot included),
    `t_max_predict_ms` from the first generated token (llama-server's limit of the generation
    phase). The runner ends a request whose deadline passed at its next step, with finish
    "length" and the text generated so far; its slot is free for the step after."""
    __slots__ = ("tokens", "media", "loras", "sampler", "max_tokens", "stop", "special",
                 "logprobs", "prompt_logprobs", "prompt_entries", "queue", "loop", "rid", "done",
                 "t_submit", "t_first", "n_tokens", "finish_reason", "timeout_s",
                 "t_max_predict_ms", "expired")

    def __init__(self, tokens: List[int], sampler: Sampler, max_tokens: int,
                 stop: List[str], special: Optional[Set[int]] = None,
                 logprobs: Optional[int] = None, prompt_logprobs: bool = False,
                 media=None, loras=None, timeout_s: Optional[float] = None,
                 t_max_predict_ms: Optional[float] = None):
        self.tokens = tokens
        # the prompt as a MultimodalInput (its text tokens are `tokens`), or None
        self.media = media
        # [(LoraAdapter, scale)] of this request, or None: the model's adapter set
        self.loras = loras
        self.sampler = sampler
        self.max_tokens = max_tokens
        self.stop = stop
        self.special = special or set()
        self.logprobs = logprobs
        # with prompt_logprobs: {prompt position: LogprobEntry} for positions 1.., complete
        # before the request's first event arrives (the prompt is decoded before any token)
        self.prompt_logprobs = prompt_logprobs
        self.prompt_entries: Dict[int, tuple] = {}
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.rid: Optional[int] = None
        self.done = False
        self.t_submit = time.perf_counter()
        self.t_first: Optional[float] = None
        self.n_tokens = 0
        self.finish_reason: Optional[str] = None
        self.timeout_s = timeout_s
        self.t_max_predict_ms = t_max_predict_ms
        self.expired = False           # ended by a deadline: its "aborted" reads "length"

    @property
    def has_deadline(self) -> bool:
        return self.timeout_s is not None or self.t_max_predict_ms is not None

    def past_deadline(self, now: float) -> bool:
        """Whether a deadline of this request has passed at perf_counter() `now`."""
        if self.timeout_s is not None and now - self.t_submit >= self.timeout_s:
            return True
        return self.t_max_predict_ms is not None and self.t_first is not None and \
            (now - self.t_first) * 1000.0 >= self.t_max_predict_ms


def _close_sampler(req: GenRequest) -> None:
    try:
        req.sampler.close()
    except Exception:              # still held by the Engine: freed with the request
        pass


def _deliver(batch):
    """On the event loop: hand one step's events to their requests."""
    for req, pieces, finish in batch:
        q = req.queue
        for p, lp in pieces:
            q.put_nowait((p, None, lp))
        if finish is not None:
            q.put_nowait((None, finish, None))


class _MediaTokenizer:
    """The model's projector for the event loop's threads: marker, and tokenize() while the
    runner thread is not stepping (a projector serves one call at a time)."""

    def __init__(self, projector, lock: threading.Lock):
        self._projector = projector
        self._lock = lock
        self.marker = projector.marker

    def tokenize(self, text, media):
        with self._lock:
            return self._projector.tokenize(text, media)


class EngineRunner:
    """Model + Context(n_seq_max=slots) + LoRA adapters (pyllamacy.loading) + Engine, stepped
    by one daemon thread. `model` is shared with the model's embeddings context."""

    def __init__(self, settings: ModelSettings):
        self.settings = settings
        self.name = settings.model_alias or settings.model
        set_log_level("warn" if settings.verbose else "error")
        s = settings
        self.n_slots = s.n_parallel
        layers, fit = s.offload()
        self.loaded = load(
            s.model, n_gpu_layers=layers, fit=fit, fit_margin_mib=s.fit_target,
            split_mode=s.split_mode,
            main_gpu=s.main_gpu, tensor_split=s.tensor_split, rpc_servers=s.rpc_servers,
            use_mmap=s.use_mmap,
            use_mlock=s.use_mlock, n_ctx=s.n_ctx, n_seq_max=self.n_slots, n_batch=s.n_batch,
            n_ubatch=s.n_ubatch,
            context_options=dict(n_threads=s.n_threads, n_threads_batch=s.n_threads_batch,
                                 flash_attn=s.flash_attn, type_k=s.type_k, type_v=s.type_v,
                                 kv_unified=False),
            lora=s.adapters(),
            clip_model_path=s.clip_model_path,
            projector_options=dict(n_threads=s.n_threads),
            draft_model_path=None if s.draft_model in (None, PROMPT_LOOKUP) else s.draft_model,
            draft_options=dict(n_gpu_layers=layers, fit=fit, fit_margin_mib=s.fit_target,
                               n_ctx=s.n_ctx,
                               n_seq_max=self.n_slots, n_batch=s.n_batch,
                               context_options=dict(n_threads=s.n_threads,
                                                    n_threads_batch=s.n_threads_batch,
                                                    kv_unified=False)))
        # as loaded: the fitted offload where fit chose it
        self.n_gpu_layers = self.loaded.n_gpu_layers
        self.model = self.loaded.model
        self.ctx = self.loaded.ctx
        # [(LoraAdapter, scale)] attached to ctx: the adapter set of requests without `lora`;
        # a request's `lora` ids index this list
        self.loras = self.loaded.loras
        self.projector = self.loaded.projector
        self._media_lock = threading.Lock()
        # what the routes tokenize media prompts with: the projector, between engine steps
        self.media_tokenizer = None if self.projector is None else \
            _MediaTokenizer(self.projector, self._media_lock)
        self.engine: Optional[Engine] = None
        try:
            draft = None
            if s.draft_model == PROMPT_LOOKUP:
                draft = "ngram"
            elif self.loaded.draft is not None:
                draft = self.loaded.draft.ctx
            self.engine = Engine(self.ctx, backend_sampling=s.backend_sampling, draft=draft,
                                 n_draft=s.draft_model_num_pred_tokens,
                                 ngram_max=PROMPT_LOOKUP_MAX_NGRAM_SIZE)
            self.n_ctx_slot = self.ctx.n_ctx_seq
            self._trace = StepTrace.from_env()
            if s.warmup:
                self._warmup()
            # what a request's grammar may cost per token (routes refuse dearer ones; a token
            # taking 4x this ends its request): the setting, scaled to this machine
            self.grammar_limit_ms = grammar_limit_ms(self.model, s.grammar_max_ms_per_token)
            self._cv = threading.Condition()
            self._waiting: Deque[GenRequest] = collections.deque()
            self._to_cancel: List[GenRequest] = []
            self._running: Dict[int, GenRequest] = {}
            # requests (waiting or running) with a deadline: checked before every step
            self._n_deadlines = 0
            self._closing = False
            self.n_running = 0           # read by /metrics without locks
            self.n_waiting = 0
            self._thread = threading.Thread(target=self._run,
                                            name=f"pyllamacy-engine-{self.name}", daemon=True)
            self._thread.start()
        except BaseException:
            self._free()
            raise

    def meta(self) -> dict:
        """What /v1/models says of the loaded model: llama-server's "meta" fields, and how it
        was placed (n_gpu_layers as loaded, each slot's context, whether fit chose them)."""
        m = self.model
        return {"n_vocab": m.n_vocab,
                "n_ctx_train": m.n_ctx_train, "n_embd": m.n_embd, "n_params": m.n_params,
                "size": m.size, "n_gpu_layers": self.n_gpu_layers, "n_ctx": self.n_ctx_slot,
                "n_parallel": self.n_slots, "fit": self.loaded.fit is not None}

    def _warmup(self) -> None:
        """One decode into slot 0, then an empty cache (llama.cpp's warmup: BOS + EOS). With
        layers on a GPU the batch is one full ubatch, so the kernels prompts use are loaded
        before the first request too."""
        m = self.model
        toks = [t for t in (m.token_bos(), m.token_eos()) if t >= 0] or [0]
        if self.n_gpu_layers != 0 and supports_gpu_offload():
            n = max(len(toks), min(self.ctx.n_ubatch, self.n_ctx_slot - 1))
            toks = (toks * n)[:n]
        try:
            self.ctx.eval(toks, pos=0, seq_id=0, logits="last")
        except LlamaError as e:          # not fatal: the first request pays instead
            log.warning("warmup decode failed: %s", e)
        finally:
            self.ctx.memory_clear()

    # -- called from the event loop ------------------------------------------------------------

    def submit(self, req: GenRequest) -> None:
        with self._cv:
            if self._closing:
                raise RunnerClosedError(f"model {self.name!r} is shutting down")
            if len(self._running) + len(self._waiting) >= self.n_slots + \
                    self.settings.max_queue:
                raise QueueFullError(f"all {self.n_slots} slots of {self.name!r} and its "
                                     f"{self.settings.max_queue} queue places are taken")
            self._waiting.append(req)
            self.n_waiting = len(self._waiting)
            if self._trace is not None:
                self._trace.write("submit", n_prompt=len(req.tokens), t=round(req.t_submit, 6),
                                  waiting=self.n_waiting)
            if req.has_deadline:
                self._n_deadlines += 1
            self._cv.notify()

    def cancel(self, req: GenRequest) -> None:
        """The client went away: free its slot at the next step (or drop it from the queue)."""
        if req.done:
            return
        with self._cv:
            self._to_cancel.append(req)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._free()

    def _free(self) -> None:
        """The Engine, then the context, adapters and model (safe to call twice)."""
        if self.engine is not None:
            self.engine.close()
        self.loaded.close()

    # -- the runner thread ---------------------------------------------------------------------

    def _fail(self, req: GenRequest, reason, batch) -> None:
        """End `req` without tokens: reason "aborted", "length" or an exception."""
        req.done = True
        self._ended(req)
        batch.append((req, (), reason))

    def _ended(self, req: GenRequest) -> None:
        """Bookkeeping of a request that ended (under self._cv)."""
        if req.has_deadline:
            self._n_deadlines -= 1

    def _expire(self, batch) -> None:
        """Under self._cv, before a step: requests whose deadline passed end with "length".
        A waiting one leaves the queue now; a running one is cancelled in the Engine, which
        frees its slot at the start of the next step (its "aborted" reads "length")."""
        now = time.perf_counter()
        for req in [r for r in self._waiting if r.has_deadline and r.past_deadline(now)]:
            self._waiting.remove(req)
            _close_sampler(req)
            req.expired = True
            req.finish_reason = "length"
            self._fail(req, "length", batch)
        for req in self._running.values():
            if not req.expired and req.has_deadline and req.past_deadline(now):
                req.expired = True
                self.engine.cancel(req.rid)

    def _run(self) -> None:
        eng = self.engine
        s = self.settings
        while True:
            batch = []
            with self._cv:
                while (not self._closing and not self._waiting and not self._to_cancel
                       and not self._running):
                    self._cv.wait()
                if self._closing:
                    for req in list(self._waiting) + list(self._running.values()):
                        self._fail(req, RunnerClosedError(
                            f"model {self.name!r} is shutting down"), batch)
                    self._waiting.clear()
                    self._running.clear()
                    self._flush(batch)
                    return
                for req in self._to_cancel:
                    if req.done:
                        continue
                    if req.rid is None:
                        try:
                            self._waiting.remove(req)
                        except ValueError:
                            continue
                        _close_sampler(req)
                        self._fail(req, "aborted", batch)
                    else:
                        eng.cancel(req.rid)
                self._to_cancel.clear()
                if self._n_deadlines:
                    self._expire(batch)
                while self._waiting and len(self._running) < self.n_slots:
                    req = self._waiting.popleft()
                    try:
                        req.rid = eng.submit(
                            req.tokens if req.media is None else req.media, req.sampler,
                            req.max_tokens, req.stop,
                            -1 if req.logprobs is None else req.logprobs, req.prompt_logprobs,
                            loras=req.loras, max_sample_ms=4 * self.grammar_limit_ms)
                    except Exception as e:    # bad prompt: only this request fails
                        _close_sampler(req)
                        self._fail(req, e, batch)
                        continue
                    self._running[req.rid] = req
                    if self._trace is not None:
                        self._trace.write("admit", rid=req.rid, n_prompt=len(req.tokens),
                                          t_submit=round(req.t_submit, 6))
                self.n_waiting = len(self._waiting)
                self.n_running = len(self._running)
            if self._running:
                if self._trace is not None:
                    t_step, n_dec = time.perf_counter(), eng.n_decoded_tokens
                try:
                    with self._media_lock:     # the projector: one user at a time
                        events = eng.step(True)
                    if self._trace is not None:
                        self._trace.write("step", t=round(t_step, 6),
                                          ms=round((time.perf_counter() - t_step) * 1e3, 3),
                                          tokens=eng.n_decoded_tokens - n_dec,
                                          running=len(self._running), events=len(events))
                except Exception as e:          # the engine itself failed: end everything
                    log.exception("Engine.step failed")
                    with self._cv:
                        for req in self._running.values():
                            self._fail(req, e, batch)
                        self._running.clear()
                    events = ()
                self._collect(events, batch)
            self._flush(batch)

    def _collect(self, events, batch) -> None:
        by_req: Dict[int, list] = {}
        to_piece = self.model.token_to_piece
        now = time.perf_counter()
        for rid, pos, tok, lp in self.engine.last_prompt_logprobs():
            req = self._running.get(rid)
            if req is not None:
                req.prompt_entries[pos] = self._logprob_entry(tok, lp)
        errors = self.engine.last_errors() if any(e[2] == "error" for e in events) else {}
        for rid, tok, fin, lp in events:
            req = self._running.get(rid)
            if req is None:
                continue
            if fin == "error":             # the finish is the exception that ended it
                fin = errors.get(rid) or RuntimeError("generation failed")
            ent = by_req.get(rid)
            if ent is None:
                ent = by_req[rid] = [req, [], None]
            if tok >= 0:
                ent[1].append((to_piece(tok, tok in req.special),
                               None if lp is None else self._logprob_entry(tok, lp)))
                req.n_tokens += 1
                if req.t_first is None:
                    req.t_first = now
                    if self._trace is not None:
                        self._trace.write("first", rid=rid, t=round(now, 6),
                                          ttft_ms=round((now - req.t_submit) * 1e3, 3))
            if fin is not None:
                if fin == "aborted" and req.expired:
                    fin = "length"
                ent[2] = fin
                req.done = True
                req.finish_reason = fin
                _close_sampler(req)         # the Engine let go of it in step()
        if any(e[2] is not None for e in by_req.values()):
            with self._cv:
                for rid, ent in by_req.items():
                    if ent[2] is not None:
                        self._running.pop(rid, None)
                        self._ended(ent[0])
                self.n_running = len(self._running)
        batch.extend(tuple(e) for e in by_req.values())

    def _logprob_entry(self, tok: int, lp):
        return logprob_entry(self.model, tok, lp[0], lp[1])     # lp: (logprob, top pairs)

    def _flush(self, batch) -> None:
        if not batch:
            return
        by_loop: Dict[asyncio.AbstractEventLoop, list] = {}
        for item in batch:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:          # that loop is closed: nobody is listening
                pass

    # -- state for /metrics ---------------------------------------------------------------------

    def stats(self) -> dict:
        eng = self.engine
        return {"slots_total": self.n_slots, "slots_busy": self.n_running,
                "queue": self.n_waiting, "steps": eng.n_steps,
                "decoded_tokens": eng.n_decoded_tokens, "reused_tokens": eng.n_reused_tokens,
                "drafted_tokens": eng.n_drafted, "accepted_tokens": eng.n_accepted}
