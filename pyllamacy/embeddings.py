"""Embeddings of texts on a context created with embeddings=True, one text at a time.

Shared by `Llama.embed()` and the server's /v1/embeddings (which runs it on a context of the
generation runner's own Model, so the weights are loaded once).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ._llama import Context, ContextOverflowError, Model

__all__ = ["embed_texts", "unit"]


def unit(v: np.ndarray) -> np.ndarray:
    """`v` scaled to L2 norm 1 (a zero vector stays zero)."""
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def embed_texts(model: Model, ctx: Context, texts: Sequence[str], *, limit: int,
                normalize: bool, truncate: bool = True,
                tokenize: Optional[Callable[[str], List[int]]] = None) -> Tuple[list, int]:
    """(embeddings, total tokens) of `texts`: one vector (a list of floats) per text, or with
    pooling "none" one list of per-token vectors per text.

    limit: the most tokens a text may have (the context's batch); longer texts are cut to it
    with truncate=True, else ContextOverflowError. normalize: unit L2 norm (no default: the
    server wants unit vectors, Llama.embed raw ones by default). tokenize: text ->
    token ids (default: the model's, with BOS, special tokens not parsed). The context's
    memory is cleared before each text and after the last."""
    if tokenize is None:
        def tokenize(text: str) -> List[int]:
            return model.tokenize(text.encode("utf-8"), add_special=True, parse_special=False)
    per_token = ctx.pooling_type == "none"
    encoder_only = model.has_encoder and not model.has_decoder
    out = []
    total = 0
    try:
        n_vocab = model.n_vocab
        for i, x in enumerate(texts):
            if isinstance(x, str):
                continue
            # token ids (what OpenAI's API also takes, and LangChain's OpenAIEmbeddings sends)
            if not isinstance(x, (list, tuple)) or not all(
                    isinstance(t, int) and not isinstance(t, bool) for t in x):
                raise TypeError(f"embed() takes str, a list of token ids, or a list of those; "
                                f"item {i} is {type(x).__name__}")
            bad = next((t for t in x if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise ValueError(f"input item {i}: token id {bad} is outside the vocabulary "
                                 f"(0..{n_vocab - 1})")
        for text in texts:
            toks = tokenize(text) if isinstance(text, str) else list(text)
            if len(toks) > limit:
                if not truncate:
                    raise ContextOverflowError(
                        f"Requested tokens ({len(toks)}) exceed batch size of {limit}: "
                        f"pass truncate=True or create the Llama with larger "
                        f"n_batch/n_ubatch")
                toks = toks[:limit]
            if not toks:
                raise ValueError("cannot embed an empty text (it has no tokens)")
            total += len(toks)
            ctx.memory_clear()
            if encoder_only:
                ctx.encode(toks)
            else:
                ctx.eval(toks, pos=0, logits="all")
            if per_token:
                vecs = [ctx.embeddings(j) for j in range(len(toks))]
                if normalize:
                    vecs = [unit(v) for v in vecs]
                out.append([v.tolist() for v in vecs])
            else:
                v = ctx.seq_embeddings(0)
                out.append((unit(v) if normalize else v).tolist())
    finally:
        ctx.memory_clear()
    return out, total
