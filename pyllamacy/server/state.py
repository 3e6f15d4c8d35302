"""The server's state: one EngineRunner per model, its embeddings worker and chat target.

Held by the app (`app.state.server`) and read by the routes; it imports neither, so the routes
and the app both depend on it and not on each other.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional

from ..chat import prestart_sandbox, sandbox_max_workers
from ..embeddings import embed_texts
from ..loading import LoadedModel, load
from .errors import ApiError
from .metrics import Metrics
from .runner import EngineRunner
from .settings import ModelSettings, ServerSettings

__all__ = ["ServerState", "EmbeddingWorker", "ChatTarget"]


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


class ServerState:
    def __init__(self, model_settings: List[ModelSettings], server_settings: ServerSettings):
        self.settings = server_settings
        self.model_settings = model_settings
        self.metrics = Metrics()
        self.runners: Dict[str, EngineRunner] = {}
        self.embedders: Dict[str, EmbeddingWorker] = {}
        self.chat_targets: Dict[str, ChatTarget] = {}
        self.default: Optional[str] = None
        self.started = False

    def start(self) -> None:
        # the chat-template sandbox's workers, forked while this process is still small
        prestart_sandbox(sandbox_max_workers())
        try:
            for ms in self.model_settings:
                r = EngineRunner(ms)
                self.runners[r.name] = r
                self.embedders[r.name] = EmbeddingWorker(r)
                self.chat_targets[r.name] = ChatTarget(r.model, ms.chat_format)
                if self.default is None:
                    self.default = r.name
        except BaseException:
            self.stop()
            raise
        self.started = True

    def describe(self) -> List[str]:
        """One line per served model: name, file, size, where it runs, slots and context."""
        out = []
        for name, r in self.runners.items():
            ms = r.settings
            where = "CPU" if ms.n_gpu_layers == 0 else f"GPU layers {ms.n_gpu_layers}"
            out.append(f"model {name!r}: {ms.model} ({r.model.size / 2**20:.0f} MiB, "
                       f"{r.model.desc}), {where}, {r.n_slots} slots x {r.n_ctx_slot} tokens")
        return out

    def stop(self) -> None:
        for e in self.embedders.values():      # their contexts before the runners' models
            e.close()
        for r in self.runners.values():
            r.close()
        self.runners.clear()
        self.embedders.clear()
        self.started = False

    def runner(self, name: Optional[str]) -> EngineRunner:
        if not self.runners:
            raise ApiError(503, "no model is loaded", "server_error")
        if name in self.runners:
            return self.runners[name]
        if name is None or len(self.runners) == 1:
            # like llama-cpp-python, a single-model server answers whatever model name a
            # client sends (clients often hard-code one)
            return self.runners[self.default]
        raise ApiError(404, f"model {name!r} is not served here; see /v1/models",
                       "not_found_error")
