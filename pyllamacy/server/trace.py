"""$PYLLAMACY_TRACE_STEPS=<file>: a timeline of the server for benchmarks, one JSON line per
event, times from time.perf_counter() (one clock for every thread of the process):

- ``http_in`` / ``http_out``: a request arrived (method, path) / the first three body
  messages of its answer were handed to the server (n: 1..3), by `TraceMiddleware`;
- ``submit``, ``admit``, ``step``, ``first``: a generation was queued, got a slot, an engine
  step ran (ms, tokens decoded, running requests), a request's first token came out -- by the
  runner (server/runner.py).

Off (None) unless the variable is set; nothing is measured then.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
import time
from typing import Optional

__all__ = ["StepTrace", "TraceMiddleware"]


class StepTrace:
    """The trace file, shared by every thread of the process (a line is written whole)."""

    _shared: Optional["StepTrace"] = None
    _shared_lock = threading.Lock()

    def __init__(self, path: str):
        self._f = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Optional["StepTrace"]:
        """The process's trace when $PYLLAMACY_TRACE_STEPS names a file, else None."""
        path = os.environ.get("PYLLAMACY_TRACE_STEPS")
        if not path:
            return None
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls(path)
                atexit.register(cls._shared.close)      # shared by the process: closed at exit
            return cls._shared

    def close(self) -> None:
        """Close the file; later writes are dropped."""
        with self._lock:
            self._f.close()

    def write(self, event: str, **fields) -> None:
        fields["ev"] = event
        fields.setdefault("t", round(time.perf_counter(), 6))
        line = json.dumps(fields)
        with self._lock:
            if not self._f.closed:
                self._f.write(line + "\n")


class TraceMiddleware:
    """ASGI: writes http_in when a request arrives and http_out for its first three body
    messages (a stream's first chunks), numbered per process."""

    def __init__(self, app, trace: StepTrace):
        self.app = app
        self.trace = trace
        self._ids = itertools.count(1)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = next(self._ids)
        trace = self.trace
        trace.write("http_in", req=rid, method=scope.get("method"), path=scope.get("path"))
        sent = 0

        async def traced_send(message):
            nonlocal sent
            if message["type"] == "http.response.body" and sent < 3:
                sent += 1
                trace.write("http_out", req=rid, n=sent, bytes=len(message.get("body", b"")))
            await send(message)

        return await self.app(scope, receive, traced_send)
