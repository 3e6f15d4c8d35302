"""POST /v1/rerank (and llama-server's aliases /rerank, /v1/reranking): Jina / Cohere-shaped
reranking on a reranker model's embeddings context (pyllamacy.rerank does the work)."""
from __future__ import annotations

import time
from typing import Any, List, Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .._llama import LlamaError
from ..rerank import RerankError, check_rerank_request, rerank_response
from .errors import ApiError
from .state import ServerState

__all__ = ["router", "RerankRequest"]

router = APIRouter()


class RerankRequest(BaseModel):
    model_config = {"extra": "ignore", "protected_namespaces": ()}
    model: Optional[str] = None
    query: Any = None
    documents: Any = None
    top_n: Optional[Any] = None
    return_documents: bool = False


async def _rerank(body: RerankRequest, request: Request):
    t0 = time.perf_counter()
    state: ServerState = request.app.state.server
    runner = await state.acquire(body.model)
    try:
        texts: List[str] = check_rerank_request(body.query, body.documents, body.top_n)
    except RerankError as e:
        raise ApiError(400, str(e), param=e.param) from None
    if not runner.settings.embedding:
        raise ApiError(400, f"model {runner.name!r} is not served for embeddings/reranking")
    try:
        scores, total = await run_in_threadpool(state.embedders[runner.name].rank,
                                                body.query, texts)
    except RerankError as e:
        raise ApiError(400, f"model {runner.name!r}: {e}", param=e.param) from None
    except (ValueError, TypeError, LlamaError) as e:
        raise ApiError(400, str(e), param="documents") from None
    state.metrics.request(runner.name, "rerank", 200)
    state.metrics.tokens(runner.name, total, 0)
    state.metrics.latency_s(runner.name, "rerank", time.perf_counter() - t0)
    return rerank_response(runner.name, scores, texts, total, body.top_n, body.return_documents)


for _path in ("/v1/rerank", "/rerank", "/v1/reranking"):
    router.add_api_route(_path, _rerank, methods=["POST"])
