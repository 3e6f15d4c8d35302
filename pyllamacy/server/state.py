"""The server's state: one EngineRunner per model, its embeddings worker and chat target.

Held by the app (`app.state.server`) and read by the routes; it imports neither, so the routes
and the app both depend on it and not on each other.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
import time
from typing import Dict, List, Optional

from starlette.concurrency import run_in_threadpool

from ..chat import prestart_sandbox, sandbox_max_workers
from ..embeddings import embed_texts
from ..loading import LoadedModel, load
from ..pipeline.responses_api import ResponseStore
from ..rerank import rank_documents
from .errors import ApiError
from .metrics import Metrics
from .runner import EngineRunner
from .settings import ModelSettings, ServerSettings

__all__ = ["ServerState", "EmbeddingWorker", "ChatTarget"]

log = logging.getLogger("pyllamacy.server")
_GRACE_S = 0.5          # a model used this recently is not unloaded (its request may be
#                         between taking the runner and submitting to it)
_ROOM_WAIT_S = 30.0     # how long a load waits for a busy model to become idle


class EmbeddingWorker:
    """A context with embeddings=True on the runner's Model (the weights are loaded once, by
    the runner), created on first use; one request at a time (embeddings are one short batch
    each). The runner's LoRA adapters are attached to it with the same scales."""

    def __init__(self, runner: EngineRunner):
        self.runner = runner
        self.settings: ModelSettings = runner.settings
        self.lock = threading.Lock()
        self.loaded: Optional[LoadedModel] = None

    def _get(self) -> LoadedModel:
        if self.loaded is None:
            s = self.settings
            options = dict(n_threads=s.n_threads, n_threads_batch=s.n_threads_batch,
                           embeddings=True)
            kw = dict(n_ctx=s.n_ctx, n_batch=s.n_batch, n_ubatch=s.n_batch,
                      lora=self.runner.loras)
            loaded = load(self.runner.model, context_options=options, **kw)
            if loaded.ctx.pooling_type in ("none", 0):
                # a generative model: one vector per text (mean of its tokens), as OpenAI's API
                # promises, instead of one per token
                loaded.close()
                loaded = load(self.runner.model, context_options=dict(options,
                                                                      pooling_type="mean"), **kw)
            self.loaded = loaded
        return self.loaded

    def embed(self, inputs: List[str]):
        """(one normalized vector per text, total tokens)."""
        with self.lock:
            lm = self._get()
            return embed_texts(lm.model, lm.ctx, inputs, limit=min(lm.n_batch, lm.n_ubatch),
                               normalize=True)

    def rank(self, query: str, documents: List[str]):
        """(one relevance score per document, total tokens): needs a reranker model, whose
        context pools with "rank"."""
        with self.lock:
            lm = self._get()
            return rank_documents(lm.model, lm.ctx, query, documents,
                                  limit=min(lm.n_batch, lm.n_ubatch))

    def close(self):
        with self.lock:
            if self.loaded is not None:
                self.loaded.close()
                self.loaded = None


class ChatTarget:
    """What pyllamacy.chat.prepare_chat needs of a Llama: the model and its chat format."""

    def __init__(self, model, chat_format):
        self.model = model
        self.chat_format = chat_format
        self.chat_handler = None


class _Entry:
    """One model the server knows: its settings and whether it is loaded now."""
    __slots__ = ("name", "settings", "status", "runner", "error", "last_used", "loading")

    def __init__(self, name: str, settings: ModelSettings):
        self.name = name
        self.settings = settings
        self.status = "unloaded"       # unloaded | loading | loaded | failed
        self.runner: Optional[EngineRunner] = None
        self.error: Optional[str] = None
        self.last_used = 0.0
        self.loading: Optional[asyncio.Event] = None


def _release_freed_memory() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise), so that the
    process shrinks after a model is unloaded."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class ServerState:
    """The models the server knows and the loaded ones' runners.

    Eager (the default): every configured model is loaded when the server starts. On demand
    (a models_dir, models_max or sleep_idle_seconds is set, as llama-server's router and
    Ollama do): the configured models and the *.gguf files of models_dir are known, each is
    loaded by the first request that names it (requests for a model that is loading wait),
    unloaded after sleep_idle_seconds without requests, and when loading one more would
    exceed models_max the least recently used idle model is unloaded first. A model that
    fails to load answers 503 with the reason (the next request tries again); the server
    goes on."""

    def __init__(self, model_settings: List[ModelSettings], server_settings: ServerSettings):
        self.settings = server_settings
        self.model_settings = model_settings
        self.metrics = Metrics()
        self.runners: Dict[str, EngineRunner] = {}
        self.embedders: Dict[str, EmbeddingWorker] = {}
        self.chat_targets: Dict[str, ChatTarget] = {}
        self.entries: Dict[str, _Entry] = {}
        # /v1/responses: stored responses for previous_response_id (bounded)
        self.responses = ResponseStore(max_entries=server_settings.responses_max,
                                       ttl_s=server_settings.responses_ttl_s)
        for ms in model_settings:
            name = ms.model_alias or ms.model
            self.entries[name] = _Entry(name, ms)
        ss = server_settings
        if ss.models_dir:
            template = model_settings[0] if model_settings else None
            for fn in sorted(os.listdir(ss.models_dir)):
                path = os.path.join(ss.models_dir, fn)
                name = fn[:-5] if fn.endswith(".gguf") else None
                if name is None or name in self.entries or not os.path.isfile(path):
                    continue
                ms = ModelSettings(model=path, model_alias=name) if template is None else \
                    template.model_copy(update={"model": path, "model_alias": name})
                self.entries[name] = _Entry(name, ms)
        self.default: Optional[str] = next(iter(self.entries), None)
        self.on_demand = bool(ss.models_dir or ss.models_max or ss.sleep_idle_seconds)
        self.started = False
        self._idle_task: Optional[asyncio.Task] = None

    # -- loading and unloading (blocking: called in worker threads, or at start/stop) ----------

    def _load(self, entry: _Entry) -> None:
        r = EngineRunner(entry.settings)
        try:
            self.embedders[entry.name] = EmbeddingWorker(r)
            self.chat_targets[entry.name] = ChatTarget(r.model, entry.settings.chat_format)
        except BaseException:
            r.close()
            raise
        entry.runner = r
        entry.error = None
        entry.status = "loaded"
        entry.last_used = time.monotonic()
        self.runners[entry.name] = r

    def _unload(self, entry: _Entry) -> None:
        """Forget the runner (no new request gets it), then free it."""
        r = entry.runner
        entry.runner = None
        entry.status = "unloaded"
        self.runners.pop(entry.name, None)
        self.chat_targets.pop(entry.name, None)
        e = self.embedders.pop(entry.name, None)
        if e is not None:          # its context before the runner's model
            e.close()
        if r is not None:
            r.close()
        _release_freed_memory()

    def start(self) -> None:
        # the chat-template sandbox's workers, forked while this process is still small
        prestart_sandbox(sandbox_max_workers())
        if not self.on_demand:
            try:
                for entry in self.entries.values():
                    self._load(entry)
            except BaseException:
                self.stop()
                raise
        self.started = True

    def start_background(self) -> None:
        """In the event loop, after start(): the task that unloads idle models."""
        if self.settings.sleep_idle_seconds and self._idle_task is None:
            self._idle_task = asyncio.get_running_loop().create_task(self._unload_idle())

    def describe(self) -> List[str]:
        """One line per loaded model: name, file, size, where it runs, slots and context; and
        one for the models loaded on demand."""
        out = []
        for name, r in self.runners.items():
            ms = r.settings
            where = "CPU" if r.n_gpu_layers == 0 else f"GPU layers {r.n_gpu_layers}"
            out.append(f"model {name!r}: {ms.model} ({r.model.size / 2**20:.0f} MiB, "
                       f"{r.model.desc}), {where}, {r.n_slots} slots x {r.n_ctx_slot} tokens")
        if self.on_demand:
            ss = self.settings
            out.append(f"{len(self.entries)} models loaded on demand "
                       f"({', '.join(self.entries) or 'none yet'}); at most "
                       f"{ss.models_max or 'any number'} at once; idle ones unloaded after "
                       f"{ss.sleep_idle_seconds or 'never'} s")
        return out

    def stop(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        for entry in self.entries.values():
            if entry.runner is not None:
                self._unload(entry)
        self.runners.clear()
        self.embedders.clear()
        self.started = False

    # -- what the routes call ----------------------------------------------------------------

    def _entry(self, name: Optional[str]) -> _Entry:
        if not self.entries:
            raise ApiError(503, "no model is configured", "server_error")
        entry = self.entries.get(name) if name is not None else None
        if entry is None:
            if name is None or len(self.entries) == 1:
                # like llama-cpp-python, a single-model server answers whatever model name a
                # client sends (clients often hard-code one)
                return self.entries[self.default]
            raise ApiError(404, f"model {name!r} is not served here; see /v1/models",
                           "not_found_error", param="model")
        return entry

    def runner(self, name: Optional[str]) -> EngineRunner:
        """A loaded model's runner (503 if that model is not loaded now); see acquire()."""
        entry = self._entry(name)
        if entry.runner is None:
            raise ApiError(503, f"model {entry.name!r} is not loaded ({entry.status})",
                           "server_error")
        entry.last_used = time.monotonic()
        return entry.runner

    async def acquire(self, name: Optional[str]) -> EngineRunner:
        """The runner of model `name`, loading it first if needed (a request for a model that
        is loading waits for it); 503 with the reason if it cannot be loaded."""
        entry = self._entry(name)
        while True:
            if entry.status == "loaded":
                entry.last_used = time.monotonic()
                return entry.runner
            if entry.status == "loading":
                await entry.loading.wait()
                if entry.status == "failed":
                    raise ApiError(503, f"model {entry.name!r} failed to load: {entry.error}",
                                   "server_error")
                continue
            await self.load(entry.name)

    async def load(self, name: Optional[str]) -> None:
        """Load model `name` (POST /models/load); returns when it is loaded."""
        entry = self._entry(name)
        if entry.status == "loaded":
            return
        if entry.status == "loading":
            await entry.loading.wait()
        else:
            entry.status = "loading"
            entry.loading = asyncio.Event()
            try:
                await self._make_room(entry)
                await run_in_threadpool(self._load, entry)
            except BaseException as e:
                entry.status = "failed"
                entry.error = f"{type(e).__name__}: {e}"
                log.warning("model %r failed to load: %s", entry.name, entry.error)
            finally:
                entry.loading.set()
        if entry.status == "failed":
            raise ApiError(503, f"model {entry.name!r} failed to load: {entry.error}",
                           "server_error")
        log.info("model %r loaded (%d loaded now)", entry.name, len(self.runners))

    async def unload(self, name: Optional[str]) -> bool:
        """Unload model `name` (POST /models/unload); False if it was not loaded."""
        entry = self._entry(name)
        if entry.status == "loading":
            await entry.loading.wait()
        if entry.status != "loaded":
            return False
        await run_in_threadpool(self._unload, entry)
        log.info("model %r unloaded", entry.name)
        return True

    @staticmethod
    def _idle(entry: _Entry) -> bool:
        r = entry.runner
        return r is not None and r.n_running == 0 and r.n_waiting == 0 and \
            time.monotonic() - entry.last_used > _GRACE_S

    async def _make_room(self, entry: _Entry) -> None:
        """Unload least recently used idle models until one more fits models_max; waits
        (at most _ROOM_WAIT_S) while every loaded model is busy."""
        limit = self.settings.models_max
        if not limit:
            return
        deadline = time.monotonic() + _ROOM_WAIT_S
        while True:
            loaded = [e for e in self.entries.values() if e.status == "loaded"]
            if len(loaded) < limit:
                return
            idle = sorted((e for e in loaded if self._idle(e)), key=lambda e: e.last_used)
            if idle:
                victim = idle[0]
                log.info("unloading model %r to make room for %r (models_max %d)",
                         victim.name, entry.name, limit)
                await run_in_threadpool(self._unload, victim)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"all {limit} loaded models (models_max) are busy")
            await asyncio.sleep(0.05)

    async def _unload_idle(self) -> None:
        idle_s = self.settings.sleep_idle_seconds
        while True:
            await asyncio.sleep(min(1.0, idle_s / 2))
            now = time.monotonic()
            for entry in list(self.entries.values()):
                if self._idle(entry) and now - entry.last_used >= idle_s:
                    log.info("model %r idle for %.0f s: unloading", entry.name, idle_s)
                    await run_in_threadpool(self._unload, entry)

    def model_list(self) -> List[dict]:
        """/v1/models: every known model, with its status."""
        out = []
        for e in self.entries.values():
            st = {"value": e.status}
            if e.error and e.status == "failed":
                st["error"] = e.error
            item = {"id": e.name, "object": "model", "owned_by": "me", "permissions": [],
                    "created": 0, "status": st}
            r = self.runners.get(e.name)
            if r is not None:
                item["meta"] = r.meta()
            out.append(item)
        return out
