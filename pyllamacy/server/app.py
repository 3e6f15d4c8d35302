"""create_app(): the FastAPI application (llama-cpp-python's entry point and settings).

    app = create_app(model_settings=[ModelSettings(model="m.gguf", n_parallel=8)],
                     server_settings=ServerSettings(api_key="secret"))

Each model gets an EngineRunner (its own thread, context and slots); requests name a model by
its alias (or path), and a request without "model" goes to the first one. Every route but
/health needs `Authorization: Bearer <api_key>` when a key is set. Errors are JSON
{"error": {"message", "type", "code"}} without tracebacks.
"""
from __future__ import annotations

import json
import logging
import secrets
from contextlib import asynccontextmanager
from typing import List, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__
from .errors import ApiError, error_body
from .routes import router
from .routes_rerank import router as rerank_router
from .routes_slots import router as slots_router
from .routes_models import router as models_router
from .routes_anthropic import router as anthropic_router
from .routes_responses import router as responses_router
from .routes_infill import router as infill_router
from .trace import StepTrace, TraceMiddleware
from .settings import ModelSettings, ServerSettings
from .state import ServerState

# ApiError and ServerState are importable from here as before; they live in errors.py and
# state.py so that the routes need not import the app
__all__ = ["create_app", "ServerState", "ApiError"]

log = logging.getLogger("pyllamacy.server")


class _BodyLimit:
    """413 for bodies over `limit` bytes, by Content-Length or while reading."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = -1
                if n < 0 or n > self.limit:
                    return await _send_json(send, 413 if n > self.limit else 400, error_body(
                        413 if n > self.limit else 400,
                        f"request body over {self.limit} bytes" if n > self.limit
                        else "bad Content-Length", "invalid_request_error"))
        seen = 0
        limit = self.limit

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"request body over {limit} bytes")
            return msg
        return await self.app(scope, limited, send)


class _Auth:
    """The API key on every route but /health (constant-time compare): as
    `Authorization: Bearer <key>` (OpenAI's clients) or `x-api-key: <key>` (Anthropic's)."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.key = api_key.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") == "/health":
            return await self.app(scope, receive, send)
        ok = False
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                scheme, _, token = v.partition(b" ")
                ok = scheme.lower() == b"bearer" and secrets.compare_digest(token.strip(),
                                                                            self.key)
            elif k == b"x-api-key":
                ok = secrets.compare_digest(v.strip(), self.key)
            else:
                continue
            if ok:
                break
        if not ok:
            return await _send_json(send, 401, error_body(401, "invalid or missing API key",
                                                          "authentication_error"),
                                    {b"www-authenticate": b"Bearer"})
        return await self.app(scope, receive, send)


async def _send_json(send, status: int, body: dict, headers: Optional[dict] = None):
    data = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    hdrs += list((headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data})


def create_app(model_settings: Optional[List[ModelSettings]] = None,
               server_settings: Optional[ServerSettings] = None) -> FastAPI:
    """The server's ASGI app. Models are loaded when the app starts (lifespan) and freed when
    it stops."""
    server_settings = server_settings or ServerSettings()
    model_settings = list(model_settings or [])
    if not model_settings and not server_settings.models_dir:
        raise ValueError("create_app needs at least one ModelSettings (or a models_dir)")
    state = ServerState(model_settings, server_settings)

    @asynccontextmanager
    async def lifespan(app):
        if not state.started:       # the command line loads the models before uvicorn starts
            state.start()
        state.start_background()
        for line in state.describe():
            log.info("%s", line)
        log.info("serving at http://%s:%d/v1", server_settings.host, server_settings.port)
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(title="pyllamacy", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.status, exc.message, exc.type, exc.param),
                            status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail), "invalid_request_error"),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail), "invalid_request_error"),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:10]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
        status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
        return JSONResponse(error_body(status, "; ".join(parts) or "invalid request",
                                       "invalid_request_error"), status_code=status)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body(500, f"internal error ({type(exc).__name__})",
                                       "server_error"), status_code=500)

    app.include_router(router)
    app.include_router(rerank_router)
    app.include_router(slots_router)
    app.include_router(models_router)
    app.include_router(anthropic_router)
    app.include_router(responses_router)
    app.include_router(infill_router)
    app.add_middleware(_BodyLimit, limit=server_settings.max_body_bytes)
    if server_settings.api_key:
        app.add_middleware(_Auth, api_key=server_settings.api_key)
    trace = StepTrace.from_env()
    if trace is not None:        # outermost: the arrival before anything else runs
        app.add_middleware(TraceMiddleware, trace=trace)
    return app
