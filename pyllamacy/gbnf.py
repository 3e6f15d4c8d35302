"""Checks of GBNF grammar text that llama.cpp's parser does not make (pure Python; no model).

llama.cpp parses an empty character class ("[]", or "[^]") into no symbol at all: the rule
then matches the empty string where the author meant one character, and a repetition of it
("[]*") loops on nothing. A bounded repetition whose maximum is below its minimum ("{5,2}")
makes its parser loop for good (an unsigned count underflows). Sampler.grammar() refuses both
before llama.cpp sees the text.
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
        elif c == "{":                                 # repetition {m}, {m,}, {m,n}
            start = i
            j = i + 1
            while j < n and text[j] in " \t":
                j += 1
            k = j
            while k < n and text[k].isdigit():
                k += 1
            lo = int(text[j:k]) if k > j else None
            while k < n and text[k] in " \t":
                k += 1
            if lo is not None and k < n and text[k] == ",":
                k += 1
                while k < n and text[k] in " \t":
                    k += 1
                m = k
                while m < n and text[m].isdigit():
                    m += 1
                if m > k and int(text[k:m]) < lo:
                    end = text.find("}", m)
                    return (f"repetition {text[start:end + 1 if end >= 0 else m]!r} at "
                            f"{_line_col(text, start)} has its maximum below its minimum")
            i += 1
        else:
            i += 1
    return None
