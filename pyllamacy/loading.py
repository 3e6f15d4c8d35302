"""One loader: settings -> Model, Context, LoRA adapters, projector and draft model.

    with load("m.gguf", n_ctx=4096, lora=[("style.gguf", 0.8)],
              clip_model_path="mmproj.gguf") as lm:
        lm.model, lm.ctx, lm.loras, lm.projector, lm.draft

`Llama`, the server's runner and embeddings worker, the command line and `LlamaDraftModel` open
their weights through `load()`. It checks every file's GGUF header before the (long) model load,
opens the pieces in order and, when one fails, closes everything it had opened before raising.
`LoadedModel.close()` frees them in the reverse order (a context before its model).

`model` may be an already open `Model`: the result then borrows it (close() leaves it open),
which is how the server's embeddings context shares the weights of the generation runner.
LoRA adapters may likewise be given as open `LoraAdapter` objects of that model, borrowed.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ._llama import Context, LoraAdapter, Model, Projector, check_gguf
from .defaults import (DRAFT_N_BATCH, DRAFT_N_CTX, MAIN_GPU, N_BATCH, N_CTX, N_GPU_LAYERS,
                       N_GPU_LAYERS_AUTO, N_SEQ_MAX, N_UBATCH, SPLIT_MODE, USE_MLOCK, USE_MMAP)
from . import memory, rpc

__all__ = ["load", "LoadedModel"]

_Path = Union[str, "os.PathLike[str]"]
LoraSpec = Tuple[Union[_Path, LoraAdapter], float]


class LoadedModel:
    """What load() opened: `model`, `ctx` (None with vocab_only), `loras` ([(adapter, scale)],
    attached to ctx), `projector` (or None), `draft` (a LoadedModel, or None) and the context
    sizes as resolved (`n_ctx` of the whole context, `n_batch`, `n_ubatch`: the context's
    own when there is one), `n_gpu_layers` as loaded and `fit` (the memory.FitResult, or None
    when the load was not fitted).

    close() frees what this object opened, in reverse order; borrowed objects (a Model or
    LoraAdapter passed in) stay open. Safe to call twice; a `with` block calls it."""

    __slots__ = ("model", "ctx", "loras", "projector", "draft", "n_ctx", "n_batch", "n_ubatch",
                 "n_gpu_layers", "fit", "_owned", "_closed")

    def __init__(self) -> None:
        self.model: Optional[Model] = None
        self.ctx: Optional[Context] = None
        self.loras: List[Tuple[LoraAdapter, float]] = []
        self.projector: Optional[Projector] = None
        self.draft: Optional[LoadedModel] = None
        self.n_ctx = 0
        self.n_batch = 0
        self.n_ubatch = 0
        self.n_gpu_layers = 0            # as loaded (the fitted value with "auto")
        self.fit = None                  # the memory.FitResult when the load was fitted
        self._owned: List[Any] = []      # in the order opened; closed in reverse
        self._closed = False

    def _own(self, obj):
        self._owned.append(obj)
        return obj

    def close(self) -> None:
        """Free the draft model, the projector, the context, the adapters and the model that
        load() opened (borrowed ones stay open). Idempotent."""
        self._closed = True
        owned, self._owned = self._owned, []
        error = None
        for obj in reversed(owned):
            try:
                obj.close()
            except BaseException as e:     # free the rest, then report the first failure
                if error is None:
                    error = e
        if error is not None:
            raise error

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed " if self._closed else ""
        path = None if self.model is None else self.model.path
        return f"<pyllamacy.loading.LoadedModel {state}model={path!r}>"


def _lora_specs(lora: Iterable[LoraSpec]) -> List[Tuple[Union[str, LoraAdapter], float]]:
    """Checked (path or adapter, scale) pairs; every adapter file's header read."""
    out = []
    for item in lora:
        try:
            src, scale = item
        except (TypeError, ValueError):
            raise TypeError(f"each LoRA adapter must be a (path, scale) pair, got {item!r}") \
                from None
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"lora_scale must be a number, got {scale!r}")
        scale = float(scale)
        if not math.isfinite(scale):
            raise ValueError(f"lora_scale must be finite, got {scale}")
        if not isinstance(src, LoraAdapter):
            check_gguf(src, what="LoRA adapter")
            src = os.fspath(src)
        out.append((src, scale))
    return out


def load(model: Union[_Path, Model], *,
         # the model (not used when `model` is an open Model)
         n_gpu_layers: Union[int, str] = N_GPU_LAYERS, split_mode: Union[int, str] = SPLIT_MODE,
         main_gpu: int = MAIN_GPU, tensor_split: Optional[Sequence[float]] = None,
         vocab_only: bool = False, use_mmap: bool = USE_MMAP, use_mlock: bool = USE_MLOCK,
         kv_overrides: Optional[Mapping[str, Union[bool, int, float, str]]] = None,
         rpc_servers: Optional[Union[str, Sequence[str]]] = None,
         # the context (none with vocab_only)
         n_ctx: int = N_CTX, n_seq_max: int = N_SEQ_MAX, n_batch: int = N_BATCH,
         n_ubatch: int = N_UBATCH, context_options: Optional[Mapping[str, Any]] = None,
         # what goes with it
         lora: Iterable[LoraSpec] = (),
         clip_model_path: Optional[_Path] = None,
         projector_options: Optional[Mapping[str, Any]] = None,
         draft_model_path: Optional[_Path] = None,
         draft_options: Optional[Mapping[str, Any]] = None,
         # fitting to the machine (pyllamacy/memory.py)
         fit: Optional[bool] = None, fit_margin_mib: Optional[int] = None) -> LoadedModel:
    """Open a model and what goes with it; on any failure close what was opened and raise.

    n_ctx: tokens per sequence (0: the model's training context); the context holds
    n_ctx * n_seq_max tokens (one sequence per server slot). n_batch is clamped to the
    context, n_ubatch to n_batch. context_options: further Context() keywords (n_threads,
    embeddings, pooling_type, flash_attn, type_k, kv_unified, ...).

    lora: (path or LoraAdapter, scale) pairs, attached to the context in that order.
    clip_model_path: a multimodal projector (mmproj GGUF) for this model, opened with
    projector_options (Projector() keywords: use_gpu, n_threads, ...; use_gpu defaults to
    whether the model has layers on a GPU).
    draft_model_path: a draft model for speculative decoding, loaded by load() itself with
    draft_options (its keywords; default n_ctx DRAFT_N_CTX, n_batch DRAFT_N_BATCH); its
    vocabulary must be the size of this model's.

    Every file's GGUF header is checked before anything is loaded, so a wrong adapter or
    projector path fails in milliseconds rather than after the weights are read.

    fit (default: on when n_gpu_layers is "auto" or n_ctx is 0): before loading, llama.cpp's
    common_fit_params picks, for n_gpu_layers="auto", the largest offload and, for n_ctx=0,
    the largest context (up to the training one) that leave fit_margin_mib MiB free on every
    device, measured by a dry run that allocates nothing; a load that cannot fit even the host
    raises MemoryError with the figures, before anything is loaded. The choice is logged once
    at info level and kept in the result's n_gpu_layers, n_ctx and fit.

    rpc_servers ("host:port,..." or a list): llama.cpp rpc-servers whose devices take the
    offloaded layers (pyllamacy.rpc; checked first, ValueError for a malformed one). The fit
    stage does not see them: with rpc_servers, n_ctx=0 is the training context unfitted, and
    fit=True or n_gpu_layers="auto" is a ValueError.
    """
    borrowed_model = isinstance(model, Model)
    rpc_endpoints = rpc.parse_servers(rpc_servers)
    if rpc_endpoints and borrowed_model:
        raise ValueError("rpc_servers applies to a model loaded here, not to an open Model "
                         "(give Model(..., rpc_servers=) instead)")
    if not borrowed_model:
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model_path must be str or os.PathLike, not "
                            f"{type(model).__name__}")
        check_gguf(model)
    loras = _lora_specs(lora)
    if clip_model_path is not None:
        check_gguf(clip_model_path, what="multimodal projector")
    if draft_model_path is not None:
        check_gguf(draft_model_path, what="draft model")
    if vocab_only and (loras or clip_model_path is not None or draft_model_path is not None):
        raise ValueError("a vocab_only model has no weights: it takes no LoRA adapter, "
                         "projector or draft model")

    auto = n_gpu_layers == N_GPU_LAYERS_AUTO
    if rpc_endpoints and (fit or auto):
        # common_fit_params measures the registered devices, never a model's RPC devices
        raise ValueError("fitting (fit=True, n_gpu_layers='auto') does not see rpc_servers: "
                         "give n_gpu_layers as a number")
    if fit is None:
        fit = (auto or n_ctx == 0) and not rpc_endpoints
    if auto and not fit:
        raise ValueError("n_gpu_layers='auto' needs fit on: give a number of layers with "
                         "fit=False")
    fitted = None
    tensor_buft_overrides = None
    if fit and not borrowed_model and not vocab_only:
        fitted = memory.fit(model, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx,
                            n_parallel=n_seq_max, n_batch=n_batch, n_ubatch=n_ubatch,
                            split_mode=split_mode, main_gpu=main_gpu,
                            tensor_split=tensor_split, fit_margin_mib=fit_margin_mib,
                            **{k: v for k, v in dict(context_options or {}).items()
                               if k in memory.CONTEXT_KEYS})
        memory.logger.info("fitted %s to the machine: n_gpu_layers=%d, n_ctx=%d per sequence%s",
                           os.fspath(model), fitted.n_gpu_layers, fitted.n_ctx,
                           f", tensor_split={fitted.tensor_split}" if fitted.tensor_split
                           else "")
        n_gpu_layers, n_ctx = fitted.n_gpu_layers, fitted.n_ctx
        tensor_split = fitted.tensor_split or tensor_split
        tensor_buft_overrides = fitted.tensor_buft_overrides or None
    elif auto:      # nothing to fit (vocab_only, or an open Model)
        n_gpu_layers = 0

    lm = LoadedModel()
    lm.fit = fitted
    try:
        if borrowed_model:
            lm.model = model
        else:
            lm.model = lm._own(Model(
                model, n_gpu_layers=int(n_gpu_layers), split_mode=split_mode,
                main_gpu=main_gpu, tensor_split=tensor_split, vocab_only=vocab_only,
                use_mmap=use_mmap, use_mlock=use_mlock, kv_overrides=kv_overrides,
                tensor_buft_overrides=tensor_buft_overrides,
                rpc_servers=rpc_endpoints or None))
            lm.n_gpu_layers = int(n_gpu_layers)
        m = lm.model
        n_ctx_total = (n_ctx or m.n_ctx_train) * n_seq_max
        lm.n_batch = max(1, min(n_ctx_total, n_batch))
        lm.n_ubatch = min(lm.n_batch, n_ubatch)
        lm.n_ctx = n_ctx_total
        if not vocab_only:
            lm.ctx = lm._own(Context(m, n_ctx=n_ctx_total, n_batch=lm.n_batch,
                                     n_ubatch=lm.n_ubatch, n_seq_max=n_seq_max,
                                     **dict(context_options or {})))
            lm.n_ctx = lm.ctx.n_ctx
            lm.n_ubatch = lm.ctx.n_ubatch
            for src, scale in loras:
                adapter = src if isinstance(src, LoraAdapter) else lm._own(LoraAdapter(m, src))
                lm.loras.append((adapter, scale))
            if lm.loras:
                lm.ctx.set_loras(lm.loras)
        if clip_model_path is not None:
            popts = dict(projector_options or {})
            if not borrowed_model:          # with the model's layers
                popts.setdefault("use_gpu", lm.n_gpu_layers != 0)
            lm.projector = lm._own(Projector(m, clip_model_path, **popts))
        if draft_model_path is not None:
            opts = dict(n_ctx=DRAFT_N_CTX, n_batch=DRAFT_N_BATCH)
            opts.update(draft_options or {})
            lm.draft = lm._own(load(draft_model_path, **opts))
            if lm.draft.model.n_vocab != m.n_vocab:
                raise ValueError(f"the draft model's vocabulary ({lm.draft.model.n_vocab} "
                                 f"tokens) differs from the target model's ({m.n_vocab})")
    except BaseException:
        lm.close()
        raise
    return lm
