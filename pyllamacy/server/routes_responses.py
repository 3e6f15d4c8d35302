"""OpenAI's Responses API: POST /v1/responses (plain and streamed), GET and DELETE
/v1/responses/{id}, GET /v1/responses/{id}/input_items -- a thin adapter: the request becomes
an OpenAI chat request (pipeline.responses_api), runs through the chat route's pipeline
(routes.start_chat), and the chat.completion (or its chunks) becomes a Response (or the
Responses event stream). Stored responses live in the server's bounded ResponseStore (by count
and age), for previous_response_id."""
from __future__ import annotations

import json
import time
from typing import Optional

from fastapi import APIRouter, Request

from ..pipeline import responses_api as ra
from .errors import ApiError
from .routes import chat_request_model, read_json_object, start_chat
from .state import ServerState

__all__ = ["router"]

router = APIRouter()

_FINAL = ("response.completed", "response.incomplete", "response.failed")


def _event_bytes(ev: dict):
    data = json.dumps(ev, ensure_ascii=False)
    return (f"event: {ev['type']}\ndata: {data}\n\n".encode("utf-8"),
            ev["type"] in ("response.failed", "error"))


@router.post("/v1/responses")
async def create_response(request: Request):
    state: ServerState = request.app.state.server
    store = state.responses
    body = await read_json_object(request)
    try:
        req = ra.parse_request(body, store)
    except ra.ResponsesRequestError as e:
        raise ApiError(400, str(e), param=e.param) from None
    except ra.ResponseNotFound as e:
        raise ApiError(404, str(e), "not_found_error", param="previous_response_id") from None
    chat = chat_request_model(req.chat)
    job = await start_chat(chat, request, route="responses")
    rid, created = ra.new_response_id(), int(time.time())
    if req.stream:
        stream = ra.ResponseEventStream(body, rid, created, job.runner.name)

        async def events():
            final = None
            for ev in stream.start():
                yield ev
            async for chunk in job.chunks():
                for ev in stream.feed(chunk):
                    if ev["type"] in _FINAL:
                        final = ev
                    yield ev
            if final is None:
                for ev in stream.finish():
                    if ev["type"] in _FINAL:
                        final = ev
                    yield ev
            if req.store and final is not None and final["type"] != "response.failed":
                store.put(final["response"], req.input_items)

        return job.sse(events(), encode=_event_bytes, end=b"")
    out = await job.result()
    if out is None:
        raise ApiError(499, "client closed the request", "cancelled")
    resp = ra.response_object(out, body, rid, created)
    if req.store:
        store.put(resp, req.input_items)
    return resp


def _found(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ra.ResponseNotFound as e:
        raise ApiError(404, str(e), "not_found_error", param="response_id") from None


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request):
    return _found(request.app.state.server.responses.get, response_id)


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request):
    return _found(request.app.state.server.responses.delete, response_id)


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(response_id: str, request: Request, limit: int = 20,
                      order: str = "desc", after: Optional[str] = None):
    if not 1 <= limit <= 100:
        raise ApiError(400, f"limit must be 1..100, got {limit}", param="limit")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"order must be asc or desc, got {order!r}", param="order")
    return _found(request.app.state.server.responses.input_items, response_id, limit=limit,
                  order=order, after=after)
