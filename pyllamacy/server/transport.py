"""uvicorn's HTTP/1.1 protocol with a deadline for reading a request.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but has no limit on
the time a client takes to send a request: a connection that sends nothing, or its headers or
body a byte at a time (slowloris), holds its socket and memory for as long as it likes. The
protocol here closes such a connection once `timeout_request_read` seconds have passed since
it opened (or since its previous response ended) without a complete request (headers and
body). A request that has arrived is never cut: the timer is re-armed when its response ends.

    uvicorn.run(app, **uvicorn_options(server_settings))
"""
from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional

from .settings import ServerSettings

__all__ = ["guarded_protocol", "uvicorn_options"]


def guarded_protocol(read_timeout: float, base: Optional[type] = None) -> type:
    """A subclass of uvicorn's HTTP/1.1 protocol (`base`; default: the one uvicorn's "auto"
    picks, httptools or h11) that closes connections whose request does not arrive within
    `read_timeout` seconds."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base

    class RequestReadDeadline(base):            # type: ignore[misc, valid-type]
        timeout_request_read = float(read_timeout)
        _read_timer: Optional[asyncio.TimerHandle] = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_read_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # the next request (keep-alive) gets the same time; uvicorn's timeout_keep_alive
            # still closes the connection sooner when nothing at all comes
            self._arm_read_timer()

        def connection_lost(self, exc) -> None:
            self._disarm_read_timer()
            super().connection_lost(exc)

        def _arm_read_timer(self) -> None:
            self._disarm_read_timer()
            transport = getattr(self, "transport", None)
            if transport is not None and not transport.is_closing():
                self._read_timer = self.loop.call_later(self.timeout_request_read,
                                                        self._read_timed_out)

        def _disarm_read_timer(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _request_read(self) -> bool:
            """Whether the current request is complete (headers and body) and not yet
            answered: the app has it, and the connection is not waiting on the client."""
            cycle = getattr(self, "cycle", None)
            return cycle is not None and not cycle.response_complete and \
                not getattr(cycle, "more_body", False)

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self._request_read():
                return                      # re-armed when its response is complete
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.close()           # connection_lost tells a running app: disconnect

    RequestReadDeadline.__name__ = RequestReadDeadline.__qualname__ = \
        f"RequestReadDeadline{base.__name__}"
    return RequestReadDeadline


def uvicorn_options(settings: ServerSettings) -> Dict[str, Any]:
    """uvicorn.run / uvicorn.Config keywords for the connection limits of `settings`."""
    return {"timeout_keep_alive": settings.timeout_keep_alive,
            "http": guarded_protocol(settings.timeout_request_read)}
