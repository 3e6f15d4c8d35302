"""Checks of GBNF grammar text that llama.cpp's parser does not make (pure Python; no model).

llama.cpp parses an empty character class ("[]", or "[^]") into no symbol at all: the rule
then matches the empty string where the author meant one character, and a repetition of it
("[]*") loops on nothing. The grammar is refused here, when a request is built, instead.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["gbnf_problem"]


def _line_col(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {col}"


def gbnf_problem(text: str) -> Optional[str]:
    """What is wrong with GBNF `text` that llama.cpp would accept, or None. Comments, string
    literals and token references (<[id]>) are skipped as llama.cpp's parser skips them."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":                                   # comment to the end of the line
            while i < n and text[i] not in "\r\n":
                i += 1
        elif c == '"':                                 # literal; backslash escapes one char
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == "<" and text.startswith("<[", i):    # token id <[123]>
            end = text.find("]>", i)
            i = n if end < 0 else end + 2
        elif c == "[":                                 # character class
            start = i
            i += 1
            if i < n and text[i] == "^":
                i += 1
            if i < n and text[i] == "]":
                return (f"empty character class {text[start:i + 1]!r} at "
                        f"{_line_col(text, start)} (it matches no character)")
            while i < n and text[i] != "]":
                i += 2 if text[i] == "\\" else 1
            i += 1
        else:
            i += 1
    return None
