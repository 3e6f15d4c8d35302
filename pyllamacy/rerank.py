"""Reranking: the relevance of documents to a query, scored by a reranker model (a classifier
head read through rank pooling), and the Jina / Cohere-shaped answer.

Shared by `Llama.rank()` / `Llama.create_rerank()` and the server's /v1/rerank. The prompt of a
(query, document) pair is built as llama-server builds it: the model's
``tokenizer.chat_template.rerank`` with ``{query}`` and ``{document}`` filled in, else
[BOS] query [EOS] [SEP] document [EOS], each special token where the vocabulary asks for it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._llama import Context, ContextOverflowError, Model

__all__ = ["RerankError", "pair_tokens", "rank_documents", "check_rerank_request",
           "rerank_response"]

MAX_DOCUMENTS = 1024


class RerankError(ValueError):
    """A rerank request that cannot be served (names the field)."""

    def __init__(self, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.param = param


def pair_tokens(model: Model, query: str, document: str) -> List[int]:
    """The token ids of one (query, document) pair, as llama-server makes them."""
    template = model.chat_template("rerank")
    if template:
        text = template.replace("{query}", query).replace("{document}", document)
        return model.tokenize(text.encode("utf-8"), add_special=False, parse_special=True)
    q = model.tokenize(query.encode("utf-8"), add_special=False, parse_special=False)
    d = model.tokenize(document.encode("utf-8"), add_special=False, parse_special=False)
    eos = model.token_eos()
    if eos < 0:
        eos = model.token_sep()
    out: List[int] = []
    if model.add_bos and model.token_bos() >= 0:
        out.append(model.token_bos())
    out += q
    if model.add_eos and eos >= 0:
        out.append(eos)
    if model.add_sep and model.token_sep() >= 0:
        out.append(model.token_sep())
    out += d
    if model.add_eos and eos >= 0:
        out.append(eos)
    return out


def rank_documents(model: Model, ctx: Context, query: str, documents: Sequence[str], *,
                   limit: int, truncate: bool = True) -> Tuple[List[float], int]:
    """(one score per document, total tokens evaluated) on `ctx`, a context of `model` with
    embeddings=True and rank pooling. The score is the classifier's first output (for a
    Qwen3-style yes/no head, llama.cpp's softmax probability of "yes"). A pair longer than
    `limit` tokens is cut to it with truncate=True, else ContextOverflowError."""
    if ctx.pooling_type != "rank":
        raise RerankError(f"the context pools with {ctx.pooling_type!r}, not 'rank': reranking "
                          f"needs a reranker model (a classifier head) and pooling_type='rank'")
    scores: List[float] = []
    total = 0
    try:
        for i, doc in enumerate(documents):
            toks = pair_tokens(model, query, doc)
            if not toks:
                raise RerankError(f"documents[{i}]: the pair has no tokens", "documents")
            if len(toks) > limit:
                if not truncate:
                    raise ContextOverflowError(
                        f"documents[{i}]: the query and document take {len(toks)} tokens, "
                        f"more than the batch of {limit}")
                toks = toks[:limit]
            total += len(toks)
            ctx.memory_clear()
            ctx.eval(toks, pos=0, logits="all")
            scores.append(float(ctx.seq_embeddings(0)[0]))
    finally:
        ctx.memory_clear()
    return scores, total


def check_rerank_request(query: Any, documents: Any, top_n: Any = None) -> List[str]:
    """Validate a rerank request's fields before anything runs; returns the document texts.
    Documents may be strings or objects with a "text" field (Cohere's older shape)."""
    if not isinstance(query, str) or not query:
        raise RerankError("query must be a non-empty string", "query")
    if not isinstance(documents, (list, tuple)) or not documents:
        raise RerankError("documents must be a non-empty list of strings", "documents")
    if len(documents) > MAX_DOCUMENTS:
        raise RerankError(f"documents: at most {MAX_DOCUMENTS} per request, got "
                          f"{len(documents)}", "documents")
    texts = []
    for i, d in enumerate(documents):
        if isinstance(d, dict) and isinstance(d.get("text"), str):
            d = d["text"]
        if not isinstance(d, str):
            raise RerankError(f"documents[{i}] must be a string (or an object with a 'text' "
                              f"string), not {type(d).__name__}", "documents")
        texts.append(d)
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int)
                              or top_n < 1):
        raise RerankError(f"top_n must be a positive integer, got {top_n!r}", "top_n")
    return texts


def rerank_response(model_name: str, scores: Sequence[float], documents: Sequence[str],
                    n_tokens: int, top_n: Optional[int] = None,
                    return_documents: bool = False) -> Dict[str, Any]:
    """The Jina / Cohere answer: results sorted by relevance_score, highest first (ties keep
    the documents' order), at most top_n of them; each with the document's index and, with
    return_documents, {"text": document}."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if top_n is not None:
        order = order[:top_n]
    results = []
    for i in order:
        r: Dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if return_documents:
            r["document"] = {"text": documents[i]}
        results.append(r)
    return {"object": "list", "model": model_name, "results": results,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
