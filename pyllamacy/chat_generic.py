"""The generic tool-call reply, read as it is generated.

Templates without a tool-call format of their own get llama.cpp's "generic" scheme (see
pyllamacy.chat): the reply is grammar-constrained JSON, {"tool_calls": [{"name": ..., "arguments":
{...}}, ...]} or {"response": "..."}. GenericReplyScanner reads that JSON one character at a time,
so that a stream can send each call's name as soon as it is complete, its arguments as they are
generated, and a direct response's text as it grows, with no re-parsing of the reply so far.

A call's arguments are the model's own JSON text of that value with the whitespace between tokens
normalized to json.dumps' default separators (", " and ": ", nothing else): for what the grammar
produces this is json.dumps(json.loads(text)) as far as whitespace goes, and string escapes and
number spellings stay as the model wrote them. The streamed fragments concatenate to exactly the
final arguments string because both come from this one scanner.
"""
from __future__ import annotations

import json
from typing import List, Optional

__all__ = ["GenericCall", "GenericReplyScanner", "scan_generic_reply"]

_WS = " \t\r\n"
_HEX = "0123456789abcdefABCDEF"


class GenericCall:
    """One call of the reply: its name once the name string is complete, the arguments text
    read so far, and whether that value is complete."""
    __slots__ = ("name", "arguments", "complete")

    def __init__(self):
        self.name: Optional[str] = None
        self.arguments = ""
        self.complete = False


class _Frame:
    __slots__ = ("obj", "key", "idx", "expect")

    def __init__(self, obj: bool):
        self.obj = obj            # an object (else an array)
        self.key = None           # objects: the key of the value being read
        self.idx = 0              # arrays: the index of the value being read
        self.expect = "first"     # first | key | colon | value | comma


class GenericReplyScanner:
    """Incremental reader of a generic tool-call reply; feed() the text as it comes.

    calls: the calls seen so far; response: the text of a {"response": ...} reply decoded so far
    (None when there is none); done: the top-level object is closed; broken: the text is not
    JSON (the scanner stops reading; the final parse decides what the reply is)."""

    def __init__(self):
        self.calls: List[GenericCall] = []
        self.response: Optional[str] = None
        self.done = False
        self.broken = False
        self._stack: List[_Frame] = []
        self._started = False
        self._str: Optional[list] = None     # raw characters of the string being read
        self._str_key = False                # that string is an object key
        self._str_path: tuple = ()
        self._esc = 0                        # characters left of an escape sequence (-1: "\")
        self._scalar: Optional[str] = None   # a number / literal being read
        self._scalar_path: tuple = ()
        self._capture: Optional[GenericCall] = None   # the call whose arguments are being read
        self._capture_depth = 0
        self._resp_raw: List[str] = []       # raw text of the response string not decoded yet

    # -- input ------------------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        for ch in text:
            if self.done or self.broken:
                return
            self._char(ch)

    def _char(self, ch: str) -> None:
        if not self._started:
            if ch == "{":
                self._started = True
                self._value_start(ch, ())
            return            # text before the object (whitespace, a ``` fence) is not JSON
        if self._str is not None:
            self._string_char(ch)
            return
        if self._scalar is not None:
            if ch not in _WS and ch not in ",]}":
                self._scalar += ch
                self._emit(ch)
                return
            self._scalar = None
            self._value_end(self._scalar_path)
        if ch in _WS:
            return
        f = self._stack[-1]
        if f.obj:
            if ch == '"' and f.expect in ("first", "key"):
                self._str, self._str_key, self._esc = [], True, 0
                self._emit(ch)
            elif ch == ":" and f.expect == "colon":
                f.expect = "value"
                self._emit(": ")
            elif ch == "," and f.expect == "comma":
                f.expect = "key"
                self._emit(", ")
            elif ch == "}" and f.expect in ("first", "comma"):
                self._close(ch)
            elif f.expect == "value":
                self._value_start(ch, self._path())
            else:
                self.broken = True
        else:
            if ch == "]" and f.expect in ("first", "comma"):
                self._close(ch)
            elif ch == "," and f.expect == "comma":
                f.idx += 1
                f.expect = "value"
                self._emit(", ")
            elif f.expect in ("first", "value"):
                self._value_start(ch, self._path())
            else:
                self.broken = True

    def _path(self) -> tuple:
        return tuple(f.key if f.obj else f.idx for f in self._stack)

    def _emit(self, s: str) -> None:
        if self._capture is not None:
            self._capture.arguments += s

    # -- values -----------------------------------------------------------------------------------

    def _value_start(self, ch: str, path: tuple) -> None:
        if len(path) == 2 and path[0] == "tool_calls" and isinstance(path[1], int):
            while len(self.calls) <= path[1]:
                self.calls.append(GenericCall())
        elif (self._capture is None and len(path) == 3 and path[0] == "tool_calls"
              and isinstance(path[1], int) and path[2] == "arguments"):
            while len(self.calls) <= path[1]:
                self.calls.append(GenericCall())
            call = self.calls[path[1]]
            if not call.arguments:           # a repeated key is left to the final parse
                self._capture = call
                self._capture_depth = len(self._stack)
        if ch in "{[":
            self._emit(ch)
            self._stack.append(_Frame(ch == "{"))
        elif ch == '"':
            self._emit(ch)
            self._str, self._str_key, self._str_path, self._esc = [], False, path, 0
            if path == ("response",):
                self.response = ""
                self._resp_raw = []
        elif ch in "-0123456789tfn":
            self._emit(ch)
            self._scalar, self._scalar_path = ch, path
        else:
            self.broken = True

    def _value_end(self, path: tuple) -> None:
        if self._capture is not None and len(self._stack) == self._capture_depth:
            self._capture.complete = True
            self._capture = None
        if not self._stack:
            self.done = True
            return
        self._stack[-1].expect = "comma"

    def _close(self, ch: str) -> None:
        self._emit(ch)
        self._stack.pop()
        self._value_end(self._path())

    # -- strings ----------------------------------------------------------------------------------

    def _string_char(self, ch: str) -> None:
        self._emit(ch)
        raw = self._str
        if self._esc == -1:                  # the character after a backslash
            if ch == "u":
                self._esc = 4
            elif ch in '"\\/bfnrt':
                self._esc = 0
            else:
                self.broken = True
                return
            raw.append(ch)
        elif self._esc > 0:
            if ch not in _HEX:
                self.broken = True
                return
            self._esc -= 1
            raw.append(ch)
        elif ch == "\\":
            self._esc = -1
            raw.append(ch)
        elif ch == '"':
            self._string_end()
            return
        elif ch < " ":
            self.broken = True               # json.loads refuses raw control characters
            return
        else:
            raw.append(ch)
        if not self._str_key and self._str_path == ("response",):
            self._resp_raw.append(ch)
            self._decode_response(final=False)

    def _string_end(self) -> None:
        raw, self._str = "".join(self._str), None
        f = self._stack[-1]
        if self._str_key:
            f.key = _decode(raw)
            f.expect = "colon"
            if f.key is None:
                self.broken = True
            return
        path = self._str_path
        if len(path) == 3 and path[0] == "tool_calls" and path[2] == "name" and \
                isinstance(path[1], int):
            while len(self.calls) <= path[1]:
                self.calls.append(GenericCall())
            self.calls[path[1]].name = _decode(raw)
        elif path == ("response",):
            self._decode_response(final=True)
        self._value_end(path)

    def _decode_response(self, final: bool) -> None:
        """Decode the response's raw text read so far, up to a point where no escape sequence
        (or a surrogate pair) is cut in two."""
        raw = "".join(self._resp_raw)
        cut = len(raw)
        if not final:
            if self._esc:
                cut = raw.rfind("\\")
            if cut >= 6 and raw[cut - 6:cut - 4] == "\\u" and \
                    "d800" <= raw[cut - 4:cut].lower() <= "dbff":
                cut -= 6                         # a high surrogate: wait for its pair
        part = _decode(raw[:cut]) if cut > 0 else ""
        if part is None:
            self.broken = True
            return
        self.response = (self.response or "") + part
        self._resp_raw = list(raw[cut:])


def _decode(raw: str) -> Optional[str]:
    try:
        return json.loads('"' + raw + '"')
    except ValueError:
        return None


def scan_generic_reply(text: str) -> GenericReplyScanner:
    """The whole reply, scanned."""
    s = GenericReplyScanner()
    s.feed(text)
    return s
