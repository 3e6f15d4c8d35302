"""Checks of GBNF grammar text that llama.cpp's parser does not make (pure Python; no model).

llama.cpp parses an empty character class ("[]", or "[^]") into no symbol at all: the rule
then matches the empty string where the author meant one character, and a repetition of it
("[]*") loops on nothing. A bounded repetition whose maximum is below its minimum
("x"{5,2}) makes llama.cpp's parser loop (max - min wraps around in an unsigned 64-bit
count). The grammar is refused here, when a request is built (and by Sampler.grammar),
instead.
"""
from __future__ import annotations

import re
from typing import Optional

__all__ = ["gbnf_problem"]


_BOUNDED = re.compile(r"\{\s*([0-9]+)\s*,\s*([0-9]+)\s*\}")


def _line_col(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {col}"


def gbnf_problem(text: str, empty_classes: bool = True) -> Optional[str]:
    """What is wrong with GBNF `text` that llama.cpp would accept, or None. Comments, string
    literals and token references (<[id]>) are skipped as llama.cpp's parser skips them.
    `empty_classes=False` leaves empty character classes alone (Sampler.grammar takes them,
    as llama.cpp does) and finds only what would hang the parser."""
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
            if i < n and text[i] == "]" and empty_classes:
                return (f"empty character class {text[start:i + 1]!r} at "
                        f"{_line_col(text, start)} (it matches no character)")
            while i < n and text[i] != "]":
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == "{":                                 # repetition {m}, {m,}, {m,n}
            start = i
            m = _BOUNDED.match(text, i)
            if m and int(m.group(2)) < int(m.group(1)):
                return (f"repetition {m.group(0)!r} at {_line_col(text, start)} has a "
                        f"maximum ({m.group(2)}) below its minimum ({m.group(1)})")
            i += 1
        else:
            i += 1
    return None
