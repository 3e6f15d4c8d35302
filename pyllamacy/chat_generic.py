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

Thinking templates (SmolLM3, DeepSeek-R1-Distill, ...; llama.cpp's chat layer names their markers)
may think before the JSON: Thinking says how (the tags, and whether the generation prompt opened
the block already), thought_grammar() puts the optional thought in front of the JSON grammar,
and ThoughtReader splits the reply into the thought and the JSON after it, whole or as it comes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

__all__ = ["GenericCall", "GenericReplyScanner", "scan_generic_reply", "Thinking",
           "thinking_for", "thought_grammar", "ThoughtReader"]

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
    JSON (the scanner stops reading; the final parse decides what the reply is). With
    `thinking` (a thinking template's markers), the JSON is read after the reply's thought, which
    `thought` (a ThoughtReader) holds."""

    def __init__(self, thinking: Optional["Thinking"] = None):
        self.thought = ThoughtReader(thinking) if thinking is not None else None
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
        if self.thought is not None and self.thought.state != "after":
            text = self.thought.feed(text)
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


def scan_generic_reply(text: str, thinking: Optional["Thinking"] = None) -> GenericReplyScanner:
    """The whole reply, scanned."""
    s = GenericReplyScanner(thinking)
    s.feed(text)
    return s


# -- a thought before the JSON (thinking templates) --------------------------------------------

@dataclass(frozen=True)
class Thinking:
    """How a thinking template marks the reply's thought: its start and end tags, and `opened`:
    the generation prompt's text from the start tag on (e.g. "<think>\\n") when the prompt has
    opened the block already, so that the reply starts inside the thought; "" when the reply
    may open a block itself."""
    start: str
    end: str
    opened: str = ""


def thinking_for(generation_prompt: str, supports_thinking: bool, start_tag: str,
                 end_tags: Sequence[str], enable_thinking: bool) -> Optional[Thinking]:
    """The Thinking of a generic tool-call reply, from what llama.cpp's chat layer says of the
    template (supports_thinking, thinking_start_tag, thinking_end_tags, generation_prompt); None
    when the reply does not think: the template does not, thinking is off (enable_thinking
    False), or the generation prompt holds a closed block (the template's own way of turning
    thinking off). A block the prompt opened is a thought whatever enable_thinking says: the
    template did not honour it, and the model must close it before the JSON."""
    end = end_tags[0] if end_tags else ""
    if not supports_thinking or not start_tag or not end:
        return None
    i = generation_prompt.rfind(start_tag)
    if i >= 0:
        if end in generation_prompt[i + len(start_tag):]:
            return None
        return Thinking(start_tag, end, generation_prompt[i:])
    return Thinking(start_tag, end) if enable_thinking else None


def _gbnf_char(ch: str) -> str:
    """One character as a GBNF escape (valid in literals and character classes)."""
    o = ord(ch)
    return f"\\u{o:04X}" if o <= 0xFFFF else f"\\U{o:08X}"


def _gbnf_literal(text: str) -> str:
    return '"' + "".join(_gbnf_char(c) for c in text) + '"'


def _until_rules(prefix: str, end: str) -> List[str]:
    """GBNF rules {prefix}0 .. {prefix}{n-1}: any text that does not contain `end`, then `end`.

    A string-matching automaton (Knuth-Morris-Pratt): rule {prefix}k is the state where the
    text read so far ends with the first k characters of `end`; each character leads to exactly
    one next state, the full `end` to the end of the rule. Right-recursive, so llama.cpp's
    grammar stacks do not grow with the length of the text."""
    n = len(end)
    fail = [0] * (n + 1)                      # KMP failure function
    k = 0
    for i in range(1, n):
        while k and end[i] != end[k]:
            k = fail[k]
        if end[i] == end[k]:
            k += 1
        fail[i + 1] = k
    rules = []
    for state in range(n):
        moves = []                            # (character, next state) leaving state 0
        for c in sorted(set(end)):
            nxt = state
            while nxt and end[nxt] != c:
                nxt = fail[nxt]
            nxt = nxt + 1 if end[nxt] == c else 0
            if nxt:
                moves.append((c, nxt))
        others = "[^" + "".join(_gbnf_char(c) for c, _ in moves) + "]"
        alts = [f"{others} {prefix}0"] + [
            _gbnf_literal(c) + ("" if nxt == n else f" {prefix}{nxt}") for c, nxt in moves]
        rules.append(f"{prefix}{state} ::= " + " | ".join(alts))
    return rules


def thought_grammar(json_grammar: str, thinking: Thinking, json_root: str = "root") \
        -> Tuple[str, str]:
    """-> (grammar, its root rule): `json_grammar` (GBNF whose rule `json_root` is the JSON
    reply) with the thought in front: an optional "<start> ... <end>" block (any text without
    the end tag inside) and a little whitespace, or, when the prompt opened the block, the rest
    of the thought up to the end tag, which the reply must then write."""
    taken = {line.split("::=", 1)[0].strip() for line in json_grammar.splitlines()
             if "::=" in line}
    prefix = "thought-"
    while any(name.startswith(prefix) for name in taken):
        prefix = "x" + prefix
    root = prefix + "reply"
    ws = f"{prefix}ws"
    rules = _until_rules(prefix + "until-", thinking.end)
    rules.append(f'{ws} ::= [ \\t\\r\\n]{{0,8}}')
    if thinking.opened:
        rules.append(f"{root} ::= {prefix}until-0 {ws} {json_root}")
    else:
        rules.append(f"{root} ::= {ws} ({_gbnf_literal(thinking.start)} {prefix}until-0 {ws})? "
                     f"{json_root}")
    return json_grammar.rstrip("\n") + "\n" + "\n".join(rules) + "\n", root


class ThoughtReader:
    """Splits a reply into its thought and the text after it, as the reply comes: feed() the
    text, it returns the part that follows the thought (the JSON reply).

    thought(final): the text inside the block, stripped of surrounding whitespace; while the
    block is open (final False) a trailing part of the end tag is held back. raw: the thought
    as generated, with its tags (the opened prompt text first), for reasoning_format "none".
    A reply that does not start with the start tag (leading whitespace aside) has no thought:
    all of it is passed on."""

    def __init__(self, thinking: Thinking):
        self.thinking = thinking
        self.state = "in" if thinking.opened else "before"     # before | in | after
        self._head = ""                    # text read before deciding whether a block opens
        self._raw = [thinking.opened] if thinking.opened else []
        self._parts: List[str] = []        # the text inside the block
        self._tail = ""                    # its last len(end) - 1 characters

    def feed(self, text: str) -> str:
        t = self.thinking
        if self.state == "after":
            return text
        if self.state == "before":
            self._head += text
            head = self._head.lstrip()
            if len(head) < len(t.start) and t.start.startswith(head):
                return ""                  # whitespace or a part of the start tag: wait
            if not head.startswith(t.start):
                self.state = "after"
                return self._head
            self.state = "in"
            self._raw.append(t.start)
            text, self._head = head[len(t.start):], ""
        buf = self._tail + text
        i = buf.find(t.end)
        if i < 0:
            self._add(text)
            return ""
        cut = i + len(t.end) - len(self._tail)          # where the end tag ends in `text`
        self._add(text[:cut])
        inside = "".join(self._parts)
        self._parts = [inside[:len(inside) - len(t.end)]]
        self.state = "after"
        return text[cut:]

    def _add(self, text: str) -> None:
        self._parts.append(text)
        self._raw.append(text)
        keep = len(self.thinking.end) - 1
        self._tail = (self._tail + text)[-keep:] if keep else ""

    def thought(self, final: bool = True) -> str:
        inside = "".join(self._parts)
        if self.state == "in" and not final:
            end = self.thinking.end
            for k in range(min(len(end) - 1, len(inside)), 0, -1):
                if inside.endswith(end[:k]):
                    inside = inside[:-k]
                    break
        return inside.strip()

    @property
    def raw(self) -> str:
        return "".join(self._raw)
