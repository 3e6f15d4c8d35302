"""The server's error type and its JSON body (OpenAI's shape: {"error": {"message", "type",
"param", "code"}}), shared by the app, its middleware and the routes."""
from __future__ import annotations

from typing import Optional

__all__ = ["ApiError", "error_body"]


class ApiError(Exception):
    """An error with an HTTP status, shown to the client as an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 headers: Optional[dict] = None, param: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.headers = headers
        self.param = param          # the request field at fault ("messages[0].content")


def error_body(status: int, message: str, type_: str, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}
