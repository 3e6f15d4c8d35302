"""Anthropic's Messages API: POST /v1/messages (plain and streamed) and
POST /v1/messages/count_tokens, a thin adapter: the request becomes an OpenAI chat request
(pipeline.anthropic_messages), runs through the chat route's pipeline (routes.start_chat), and
its chat.completion (or chunks) becomes a Message (or Anthropic's stream events). Errors are
Anthropic's error objects. The API key may come as `x-api-key` (the app's auth)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..pipeline import anthropic_messages as am
from ..pipeline.checks import FieldError
from .errors import ApiError
from .routes import chat_request_model, count_chat_tokens, read_json_object, start_chat

__all__ = ["router"]

router = APIRouter()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(am.error_body(status, message), status_code=status)


@router.post("/v1/messages")
async def messages(request: Request):
    try:
        body = await read_json_object(request)
        chat = am.chat_request(body)
        job = await start_chat(chat_request_model(chat), request, route="messages")
    except FieldError as e:
        return _error(400, str(e))
    except ApiError as e:
        return _error(e.status, e.message)
    model = body.get("model") or job.runner.name
    if chat.get("stream"):
        stream = am.MessageStream(model, input_tokens=job.n_prompt)

        async def events():
            async for chunk in job.chunks():
                for ev in stream.feed(chunk):
                    yield ev
                if stream.ended:
                    return
            for ev in stream.finish(
                    job.usage(), stop_sequence=am.stop_sequence_hit(body, job.tts[0].stop_hit)):
                yield ev

        return job.sse(events(), encode=lambda ev: (am.sse(ev[0], ev[1]), ev[0] == "error"),
                       end=b"")
    out = await job.result()
    if out is None:
        return _error(499, "client closed the request")
    return am.message_response(out, model,
                               stop_sequence=am.stop_sequence_hit(body, job.tts[0].stop_hit))


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request):
    try:
        body = await read_json_object(request)
        n = await count_chat_tokens(chat_request_model(am.count_tokens_request(body)), request)
    except FieldError as e:
        return _error(400, str(e))
    except ApiError as e:
        return _error(e.status, e.message)
    return am.count_tokens_response(n)
