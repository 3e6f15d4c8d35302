"""Checks of a request's content that name the field at fault (Llama and the server): text that
cannot be encoded (a lone surrogate such as "\\ud800", which JSON can carry), chat messages in
OpenAI's shape, a seed that fits in 64 bits.

Each raises FieldError (a ValueError) whose `param` is the field's path as OpenAI writes it
("messages[1].content", "stop[0]"); the server answers it with 400.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["FieldError", "short", "check_text", "check_texts", "check_messages", "check_seed",
           "MESSAGE_ROLES"]

# OpenAI's roles ("function": the legacy functions API)
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")

_SHORT = 80


class FieldError(ValueError):
    """A bad value in one field of a request; `param` names it."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def short(value: Any, limit: int = _SHORT) -> str:
    """repr(value), cut to about `limit` characters (for messages and log lines)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def check_text(value: str, param: str) -> str:
    """`value` (a str) if it can be encoded as UTF-8; FieldError naming `param` for a lone
    surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FieldError(param, f"{param} is not valid Unicode text: a lone surrogate "
                                f"U+{ord(value[e.start]):04X} at character {e.start}") from None
    return value


def check_texts(value: Any, param: str) -> None:
    """check_text on every string (and dict key) in nested dicts / lists / tuples, naming the
    first bad one by its path under `param`."""
    stack = [(value, param)]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            check_text(v, path)
        elif isinstance(v, dict):
            for k, item in v.items():
                sub = f"{path}.{k}" if isinstance(k, str) and k.isidentifier() else \
                    f"{path}[{short(k)}]"
                if isinstance(k, str):
                    check_text(k, f"{path} (a key)")
                stack.append((item, sub))
        elif isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                stack.append((item, f"{path}[{i}]"))


def _content_ok(content) -> bool:
    return isinstance(content, str) or (
        isinstance(content, (list, tuple)) and all(isinstance(p, dict) for p in content))


def check_messages(messages) -> None:
    """Chat messages as OpenAI's API takes them: a list of objects with a known `role`;
    system / developer / user messages have `content` (a string or a list of parts); an
    assistant message has content, unless it carries tool_calls or function_call (then its
    content may be null or missing); a tool message has `tool_call_id`, a function message a
    `name`. Every string is valid Unicode. FieldError names the message and the field."""
    if not isinstance(messages, (list, tuple)):
        raise FieldError("messages", "messages must be a list of message objects")
    if not messages:
        raise FieldError("messages", "messages must hold at least one message")
    for i, m in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            raise FieldError(at, f"{at} must be an object with 'role' and 'content', got "
                                 f"{type(m).__name__}")
        role = m.get("role")
        if role is None:
            raise FieldError(f"{at}.role", f"missing required parameter {at}.role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise FieldError(f"{at}.role", f"{at}.role must be one of "
                                           f"{', '.join(MESSAGE_ROLES)}; got {short(role)}")
        content = m.get("content")
        calls = m.get("tool_calls") or m.get("function_call")
        if content is None:
            if role != "assistant" or not calls:
                what = "missing required parameter" if "content" not in m else \
                    "null is not allowed for"
                extra = " (an assistant message may leave it out only when it has " \
                        "tool_calls)" if role == "assistant" else ""
                raise FieldError(f"{at}.content", f"{what} {at}.content{extra}")
        elif not _content_ok(content):
            raise FieldError(f"{at}.content", f"{at}.content must be a string or a list of "
                                              f"content parts, got {type(content).__name__}")
        if role == "tool":
            tid = m.get("tool_call_id")
            if not isinstance(tid, str) or not tid:
                raise FieldError(f"{at}.tool_call_id",
                                 f"missing required parameter {at}.tool_call_id (a tool "
                                 f"message answers the tool call with that id)")
        if role == "function" and not (isinstance(m.get("name"), str) and m["name"]):
            raise FieldError(f"{at}.name", f"missing required parameter {at}.name (a function "
                                           f"message names the function)")
        tc = m.get("tool_calls")
        if tc is not None and not (isinstance(tc, (list, tuple)) and
                                   all(isinstance(c, dict) for c in tc)):
            raise FieldError(f"{at}.tool_calls", f"{at}.tool_calls must be a list of objects")
        check_texts(m, at)


def check_seed(seed: Optional[int], param: str = "seed") -> Optional[int]:
    """A seed: None, or an integer in -2**63 .. 2**64 - 1 (the sampler uses its low 32 bits;
    -1 and 0xFFFFFFFF mean a random one)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise FieldError(param, f"{param} must be an integer, got {short(seed)}")
    if not -2 ** 63 <= int(seed) < 2 ** 64:
        raise FieldError(param, f"{param} must be a 64-bit integer, got {short(seed)}")
    return int(seed)
