"""Speculative decoding drafters for ``Llama(draft_model=...)`` (llama-cpp-python's names).

Both drafters run inside the core's nogil generation loop: the target model verifies up to
``num_pred_tokens`` drafted tokens per ``llama_decode``, sampling every position with the real
sampler, so the output is exactly that of plain decoding — only faster when drafts are right.

- ``LlamaPromptLookupDecoding``: prompt lookup (n-gram) drafting — continue the text with
  what followed the latest earlier occurrence of its last 1..max_ngram_size tokens. Strong when
  the output copies from the prompt (editing code or text, extraction, summaries with quotes).
- ``LlamaDraftModel``: a small model with the same vocabulary drafts greedily.

A drafter of your own, as in llama-cpp-python: any callable (or a subclass of either class
that overrides ``__call__``) taking ``input_ids`` (np.intc, the sequence so far) and returning
draft token ids; the loop calls it with the GIL once per step and verifies up to its
``num_pred_tokens`` (default 16) drafts. An exception it raises ends the completion with it.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ._llama import Model
from .defaults import (CALLABLE_DRAFT_NUM_PRED_TOKENS, DRAFT_N_BATCH, DRAFT_N_CTX,
                       DRAFT_NUM_PRED_TOKENS, N_GPU_LAYERS, PROMPT_LOOKUP_MAX_NGRAM_SIZE,
                       PROMPT_LOOKUP_NUM_PRED_TOKENS)
from .loading import load


class LlamaDraftModelBase:
    """Base of the drafters that run inside the C loop. A subclass that overrides
    ``__call__`` is a Python drafter instead (see the module docstring)."""

    num_pred_tokens: int = DRAFT_NUM_PRED_TOKENS

    def _generate_kwargs(self, target_model: Model) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LlamaPromptLookupDecoding(LlamaDraftModelBase):
    """Prompt lookup decoding (llama-cpp-python: ``llama_cpp.llama_speculative``)."""

    def __init__(self, max_ngram_size: int = PROMPT_LOOKUP_MAX_NGRAM_SIZE,
                 num_pred_tokens: int = PROMPT_LOOKUP_NUM_PRED_TOKENS):
        if int(max_ngram_size) < 1:
            raise ValueError(f"max_ngram_size must be >= 1, got {max_ngram_size}")
        if int(num_pred_tokens) < 1:
            raise ValueError(f"num_pred_tokens must be >= 1, got {num_pred_tokens}")
        self.max_ngram_size = int(max_ngram_size)
        self.num_pred_tokens = int(num_pred_tokens)

    def _generate_kwargs(self, target_model: Model) -> dict:
        return {"draft": "ngram", "n_draft": self.num_pred_tokens,
                "ngram_max": self.max_ngram_size}

    @staticmethod
    def find_candidate_pred_tokens(input_ids: np.ndarray, max_ngram_size: int,
                                   num_pred_tokens: int) -> np.ndarray:
        """llama-cpp-python's drafting rule: for n from min(max_ngram_size, len - 1) down to 1,
        find the *first* earlier occurrence of the trailing n tokens that has tokens after it,
        and return up to `num_pred_tokens` of those; an empty np.intc array when none.

        (The C loop, and __call__, continue the *latest* occurrence instead: the same idea,
        biased to recent text.)"""
        ids = np.asarray(input_ids)
        if ids.ndim != 1:
            raise ValueError(f"input_ids must be a 1-D token array, got shape {ids.shape}")
        n_total = ids.shape[0]
        for n in range(min(int(max_ngram_size), n_total - 1), 0, -1):
            tail = ids[n_total - n:]
            windows = np.lib.stride_tricks.sliding_window_view(ids, n)
            for start in np.flatnonzero((windows == tail).all(axis=1)):
                end = min(start + n + int(num_pred_tokens), n_total)
                if start + n < end:
                    return ids[start + n:end]
        return np.array([], dtype=np.intc)

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        """The same drafts as the C loop, for inspection: continuation after the latest earlier
        occurrence of the trailing n-gram."""
        ids = np.asarray(input_ids)
        n_total = len(ids)
        for n in range(min(self.max_ngram_size, n_total - 1), 0, -1):
            tail = ids[n_total - n:]
            for i in range(n_total - n - 1, -1, -1):
                if np.array_equal(ids[i:i + n], tail):
                    out = ids[i + n:i + n + self.num_pred_tokens]
                    if len(out):
                        return out.astype(np.intc)
        return np.array([], dtype=np.intc)

    def __repr__(self) -> str:
        return (f"LlamaPromptLookupDecoding(max_ngram_size={self.max_ngram_size}, "
                f"num_pred_tokens={self.num_pred_tokens})")


class LlamaDraftModel(LlamaDraftModelBase):
    """A small GGUF model (same tokenizer as the target) that drafts greedily.

    LlamaDraftModel(model_path, num_pred_tokens=8, n_ctx=4096, n_threads=None, n_gpu_layers=0)
    """

    def __init__(self, model_path: str | os.PathLike,
                 num_pred_tokens: int = DRAFT_NUM_PRED_TOKENS, n_ctx: int = DRAFT_N_CTX,
                 n_threads: Optional[int] = None, n_gpu_layers: int = N_GPU_LAYERS):
        if int(num_pred_tokens) < 1:
            raise ValueError(f"num_pred_tokens must be >= 1, got {num_pred_tokens}")
        self.num_pred_tokens = int(num_pred_tokens)
        self._loaded = load(model_path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx,
                            n_batch=DRAFT_N_BATCH, context_options={"n_threads": n_threads})
        self.model = self._loaded.model
        self.ctx = self._loaded.ctx

    def _generate_kwargs(self, target_model: Model) -> dict:
        if self.model.n_vocab != target_model.n_vocab:
            raise ValueError(f"the draft model's vocabulary ({self.model.n_vocab} tokens) differs "
                             f"from the target model's ({target_model.n_vocab})")
        return {"draft": self.ctx, "n_draft": self.num_pred_tokens}

    def close(self) -> None:
        self._loaded.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _defines_call(cls: type) -> bool:
    return any("__call__" in vars(k) for k in cls.__mro__ if k is not object)


def _is_builtin(draft_model: Any) -> bool:
    """One of ours, run in C: not a subclass that brings a __call__ of its own."""
    cls = type(draft_model)
    if isinstance(draft_model, LlamaPromptLookupDecoding):
        return cls.__call__ is LlamaPromptLookupDecoding.__call__
    if isinstance(draft_model, LlamaDraftModel):
        return not _defines_call(cls)
    return False


def check_draft_model(draft_model: Any) -> None:
    if draft_model is not None and not _is_builtin(draft_model) and not callable(draft_model):
        raise TypeError(f"draft_model must be LlamaPromptLookupDecoding, LlamaDraftModel or a "
                        f"callable (input_ids -> draft token ids), not "
                        f"{type(draft_model).__name__}")


def generate_kwargs(draft_model: Any, target_model: Model) -> dict:
    """Keyword arguments for Context.generate() that switch on speculative decoding."""
    if draft_model is None:
        return {}
    if _is_builtin(draft_model):
        return draft_model._generate_kwargs(target_model)
    check_draft_model(draft_model)
    n = getattr(draft_model, "num_pred_tokens", CALLABLE_DRAFT_NUM_PRED_TOKENS)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the draft model's num_pred_tokens must be an integer >= 1, got {n!r}")
    return {"draft": draft_model, "n_draft": int(n)}
