"""create_app(): the FastAPI application (llama-cpp-python's entry point and settings).

    app = create_app(model_settings=[ModelSettings(model="m.gguf", n_parallel=8)],
                     server_settings=ServerSettings(api_key="secret"))

Each model gets an EngineRunner (its own thread, context and slots); requests name a model by
its alias (or path), and a request without "model" goes to the first one. Every route but
/health needs `Authorization: Bearer <api_key>` when a key is set. Errors are JSON
{"error": {"message", "type", "code"}} without tracebacks.
"""
from __future__ import annotations

import logging
import secrets
import threading
from contextlib import asynccontextmanager
from typing import Dict, List, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .metrics import Metrics
from .runner import EngineRunner
from .settings import ModelSettings, ServerSettings

__all__ = ["create_app", "ServerState", "ApiError"]

log = logging.getLogger("pyllamacy.server")


class ApiError(Exception):
    """An error with an HTTP status, shown to the client as an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.headers = headers


def error_body(status: int, message: str, type_: str) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": status}}


class EmbeddingWorker:
    """A second context with embeddings=True for one model, created on first use; one request
    at a time (embeddings are one short batch each)."""

    def __init__(self, settings: ModelSettings):
        self.settings = settings
        self.lock = threading.Lock()
        self.llama = None

    def _get(self):
        if self.llama is None:
            from ..llama import Llama
            s = self.settings
            kw = dict(n_gpu_layers=s.n_gpu_layers, n_ctx=s.n_ctx, n_batch=s.n_batch,
                      n_ubatch=s.n_batch, n_threads=s.n_threads,
                      n_threads_batch=s.n_threads_batch, embedding=True, verbose=s.verbose,
                      lora_path=s.lora_path, lora_scale=s.lora_scale)
            llama = Llama(s.model, **kw)
            if llama.pooling_type() in ("none", 0):
                # a generative model: one vector per text (mean of its tokens), as OpenAI's API
                # promises, instead of one per token
                llama.close()
                llama = Llama(s.model, pooling_type="mean", **kw)
            self.llama = llama
        return self.llama

    def embed(self, inputs: List[str]):
        with self.lock:
            return self._get().embed(inputs, return_count=True)

    def close(self):
        with self.lock:
            if self.llama is not None:
                self.llama.close()
                self.llama = None


class _ChatTarget:
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
        self.chat_targets: Dict[str, _ChatTarget] = {}
        self.default: Optional[str] = None
        self.started = False

    def start(self) -> None:
        try:
            for ms in self.model_settings:
                r = EngineRunner(ms)
                self.runners[r.name] = r
                self.embedders[r.name] = EmbeddingWorker(ms)
                self.chat_targets[r.name] = _ChatTarget(r.model, ms.chat_format)
                if self.default is None:
                    self.default = r.name
        except BaseException:
            self.stop()
            raise
        self.started = True

    def stop(self) -> None:
        for e in self.embedders.values():
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
    """Authorization: Bearer <key> on every route but /health (constant-time compare)."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.key = api_key.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") == "/health":
            return await self.app(scope, receive, send)
        got = b""
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                got = v
                break
        scheme, _, token = got.partition(b" ")
        ok = scheme.lower() == b"bearer" and secrets.compare_digest(token.strip(), self.key)
        if not ok:
            return await _send_json(send, 401, error_body(401, "invalid or missing API key",
                                                          "authentication_error"),
                                    {b"www-authenticate": b"Bearer"})
        return await self.app(scope, receive, send)


async def _send_json(send, status: int, body: dict, headers: Optional[dict] = None):
    import json
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
    if not model_settings:
        raise ValueError("create_app needs at least one ModelSettings")
    state = ServerState(model_settings, server_settings)

    @asynccontextmanager
    async def lifespan(app):
        if not state.started:
            state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(title="pyllamacy", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.status, exc.message, exc.type), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail), "invalid_request_error"),
                            status_code=exc.status_code, headers=exc.headers)

    from starlette.exceptions import HTTPException as StarletteHTTPException

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

    from .routes import router
    app.include_router(router)
    app.add_middleware(_BodyLimit, limit=server_settings.max_body_bytes)
    if server_settings.api_key:
        app.add_middleware(_Auth, api_key=server_settings.api_key)
    return app
