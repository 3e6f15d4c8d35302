"""The server's log: pyllamacy's logger on stderr, as text lines or one JSON object per line,
and the access line of each request.

    setup_logging("info", "json")
    access(log, method="POST", route="/v1/chat/completions", model="smol", status=200,
           tokens_in=12, tokens_out=30, duration_s=0.8)

JSON lines hold "time" (ISO 8601, UTC), "level", "logger", "message", and an access line adds
method, route, model, status, tokens_in, tokens_out, duration_s (and ttft_s, finish_reason
for generation) as keys of their own, for log collectors that read JSON.
"""
from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Optional

__all__ = ["LOG_FORMATS", "JsonFormatter", "setup_logging", "uvicorn_log_config", "access"]

LOG_FORMATS = ("text", "json")
_ACCESS_KEY = "pyllamacy_access"          # the LogRecord attribute the access fields ride on


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (+ the access fields, + the
    exception text as "exception")."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
               .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
               "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        fields = getattr(record, _ACCESS_KEY, None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                out.setdefault(k, v)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: str = "text") -> None:
    """pyllamacy's log lines on stderr in `fmt` ("text" or "json"), at `level` (uvicorn keeps
    its own log, at warning; python -m pyllamacy.server sends that to the same handler)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    logger = logging.getLogger("pyllamacy")
    handler = next((h for h in logger.handlers if getattr(h, "_pyllamacy", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._pyllamacy = True
        logger.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.setLevel(level.upper())
    logger.propagate = False
    if fmt == "json":
        # Python warnings (a deprecated option, ...) as JSON lines too, not bare text
        logging.captureWarnings(True)
        wlog = logging.getLogger("py.warnings")
        if handler not in wlog.handlers:
            wlog.addHandler(handler)
        wlog.propagate = False


def uvicorn_log_config(fmt: str) -> Optional[dict]:
    """uvicorn's log_config for `fmt`: None (uvicorn's own) for text; for json, uvicorn's
    loggers (errors, at warning) written as JSON lines too."""
    if fmt != "json":
        return None
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                    "stream": "ext://sys.stderr"}},
            "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "WARNING",
                                    "propagate": False},
                        "uvicorn.error": {"level": "WARNING"},
                        "uvicorn.access": {"handlers": [], "level": "WARNING",
                                           "propagate": False}}}


def access(logger: logging.Logger, *, method: str, route: str, model: str, status: int,
           tokens_in: int, tokens_out: int, duration_s: float, **more: Any) -> None:
    """One request's access line: text "METHOD ROUTE MODEL STATUS in=N out=N 0.123s k=v..."; in
    JSON the fields are keys of their own."""
    if not logger.isEnabledFor(logging.INFO):
        return
    fields = {"method": method, "route": route, "model": model, "status": status,
              "tokens_in": tokens_in, "tokens_out": tokens_out,
              "duration_s": round(duration_s, 6), **more}
    extra = "".join(f" {k}={'-' if v is None else v}" for k, v in more.items())
    logger.info("%s %s %s %d prompt=%d completion=%d total=%.3fs%s", method, route, model,
                status, tokens_in, tokens_out, duration_s, extra,
                extra={_ACCESS_KEY: fields})
