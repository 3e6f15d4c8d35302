"""JSON schema -> GBNF grammar: the checks pyllamacy makes before handing a schema to llama.cpp's
converter (json_schema_to_grammar, run sandboxed by pyllamacy._chat).

Used by LlamaGrammar.from_json_schema (llama_types.py), by chat completions' response_format
and tools (chat.py) and through them by the server. A schema that is not an object, not valid
JSON, nested more than MAX_SCHEMA_DEPTH levels or with a $ref cycle raises SchemaError (a
ValueError) before any C++ code sees it.
"""
from __future__ import annotations

import json
import logging
from typing import Optional

from . import _chat
from ._chat import SchemaError

__all__ = ["MAX_SCHEMA_DEPTH", "check_schema", "parse_schema", "schema_to_grammar",
           "check_patterns", "unsupported_pattern", "unsupported_patterns", "SchemaError"]

log = logging.getLogger("pyllamacy")

MAX_SCHEMA_DEPTH = 64           # nesting of a JSON schema we accept before calling llama.cpp


def check_schema(schema, depth=0):
    """Reject what would take llama.cpp's converter a long time or a deep recursion."""
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"the JSON schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    if isinstance(schema, dict):
        for v in schema.values():
            check_schema(v, depth + 1)
    elif isinstance(schema, list):
        for v in schema:
            check_schema(v, depth + 1)


def _resolve_local(root, ref):
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _check_ref_cycles(root):
    """A $ref chain that comes back to itself without consuming anything ({"$ref": "#"},
    a -> b -> a) describes no document; llama.cpp would emit a grammar that never ends."""
    def walk(node, depth=0):
        if isinstance(node, dict):
            if "$ref" in node:
                seen = set()
                cur = node
                while isinstance(cur, dict) and "$ref" in cur and \
                        not (set(cur) - {"$ref", "$defs", "definitions", "$schema", "$id",
                                         "title", "description"}):
                    ref = cur["$ref"]
                    if ref in seen:
                        raise SchemaError(f"the JSON schema's $ref {ref!r} refers to itself "
                                          f"without any content (a $ref cycle)")
                    seen.add(ref)
                    cur = _resolve_local(root, ref)
            for v in node.values():
                walk(v, depth + 1)
        elif isinstance(node, list):
            for v in node:
                walk(v, depth + 1)
    walk(root)


# -- `pattern`s llama.cpp's converter cannot turn into grammar ------------------------------------
# A mirror of _pattern_to_rule() in llama.cpp's common/json-schema-to-grammar.cpp, deciding only
# whether a pattern is converted: for one that is not, the converter prints a warning (with the
# whole pattern) and lets the string be any string. Keep in sync with the vendored converter.

_NON_LITERAL = set("|.()[]{}*+?^$")
_ESCAPED_IN_REGEX_NOT_IN_LITERAL = set("^$.[]()|{}*+?")
_MAX_PATTERN_DEPTH = 100
_HEX = set("0123456789abcdefABCDEF")


def _escape_len(p: str, i: int) -> int:
    """gbnf_escape_length(): length of the GBNF escape at p[i] ("\\"...), 0 for none."""
    if i + 1 >= len(p) or p[i] != "\\":
        return 0
    c = p[i + 1]
    if c in "trn\\\"[]-":
        return 2
    n_hex = {"x": 2, "u": 4, "U": 8}.get(c)
    if n_hex is None or i + 2 + n_hex > len(p) or \
            not all(h in _HEX for h in p[i + 2:i + 2 + n_hex]):
        return 0
    return 2 + n_hex


def _stoi_ok(s: str) -> bool:
    """std::stoi(s) succeeds (leading blanks, a sign, digits; what follows is ignored)."""
    t = s.lstrip(" \t\n\r\f\v")
    if t[:1] in "+-" and t:
        t = t[1:]
    digits = len(t) - len(t.lstrip("0123456789"))
    if not digits:
        return False
    v = int(s.strip()[:len(s.strip()) - len(t) + digits] or "0")
    return -2 ** 31 <= v < 2 ** 31


def unsupported_pattern(pattern: str) -> Optional[str]:
    """Why llama.cpp's converter would let a string with this `pattern` be any string (the
    reason it gives), or None when it converts the pattern (or rejects it as invalid, which
    the conversion reports as an error)."""
    if len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$":
        return "not anchored with '^' and '$'"
    s = pattern[1:-1]
    n = len(s)
    i = 0
    seq = [False]                # per open group: does its sequence hold an element yet
    while i < n:
        c = s[i]
        if c == ".":
            seq[-1] = True
            i += 1
        elif c == "(":
            i += 1
            if i < n and s[i] == "?":
                if i + 1 < n and s[i + 1] == ":":
                    i += 2
                else:
                    return "unsupported group syntax"
            if len(seq) > _MAX_PATTERN_DEPTH:
                return "pattern nesting too deep"
            seq.append(False)
        elif c == ")":
            i += 1
            if len(seq) == 1:
                return None                         # invalid: unbalanced parentheses
            seq.pop()
            seq[-1] = True
        elif c in "^$":
            return "anchor inside the pattern"
        elif c == "[":
            i += 1
            while i < n and s[i] != "]":
                if s[i] == "\\":
                    k = _escape_len(s, i)
                    if not k:
                        return f"unsupported escape in character class: {s[i:i + 2]}"
                    i += k
                else:
                    i += 1
            if i >= n:
                return None                         # invalid: unterminated class
            i += 1
            seq[-1] = True
        elif c == "|":
            seq[-1] = True
            i += 1
        elif c in "*+?":
            if not seq[-1]:
                return None                         # invalid: nothing to repeat
            i += 1
        elif c == "{":
            end = s.find("}", i + 1)
            if end < 0:
                return "unterminated curly brackets"
            nums = s[i + 1:end].split(",")
            i = end + 1
            if len(nums) not in (1, 2):
                return "wrong number of values in curly brackets"
            if (len(nums) == 1 and not _stoi_ok(nums[0])) or \
                    any(x and not _stoi_ok(x) for x in nums[:2] if len(nums) == 2):
                return "invalid number in curly brackets"
            if not seq[-1]:
                return None                         # invalid: nothing to repeat
        else:
            consumed = False
            while i < n:
                ch = s[i]
                if ch == "\\":
                    if i == n - 1:
                        return None                 # invalid: trailing backslash
                    if s[i + 1] in _ESCAPED_IN_REGEX_NOT_IN_LITERAL:
                        i += 2
                    else:
                        k = _escape_len(s, i)
                        if not k:
                            return f"unsupported escape: {s[i:i + 2]}"
                        i += k
                    consumed = True
                elif ch == '"':
                    i += 1
                    consumed = True
                elif ch not in _NON_LITERAL and (i == n - 1 or not consumed or
                                                 s[i + 1] == "." or
                                                 s[i + 1] not in _NON_LITERAL):
                    i += 1
                    consumed = True
                else:
                    break
            if not consumed:
                return f"unsupported character: {c}"
            seq[-1] = True
    return None


_SCHEMA_VALUES = ("const", "enum", "default", "examples", "example")   # data, not schemas


def _is_string_schema(node: dict) -> bool:
    """Whether llama.cpp reads `node` as a string schema (build_node in common/json-schema.cpp),
    so that its `pattern` is used."""
    if any(k in node for k in ("$ref", "oneOf", "anyOf")):
        return False
    t = node.get("type")
    if isinstance(t, list):
        return "string" in t
    if "const" in node or "enum" in node:
        return False
    if t is None:
        has_props = "properties" in node or node.get("additionalProperties", True) is not True
        return not (has_props or any(k in node for k in ("allOf", "items", "prefixItems")))
    return t == "string"


def unsupported_patterns(schema, path: str = "#"):
    """(JSON pointer, pattern, reason) of each `pattern` in `schema` that llama.cpp's converter
    cannot turn into grammar (see unsupported_pattern)."""
    out = []
    # unused: a string schema directly in an allOf (or an alternative of an anyOf / oneOf
    # there) contributes nothing to the converter's merged object (_visit_all_of)
    stack = [(schema, path, False)]
    while stack:
        node, at, unused = stack.pop()
        if isinstance(node, dict):
            p = node.get("pattern")
            if isinstance(p, str) and not unused and _is_string_schema(node):
                why = unsupported_pattern(p)
                if why is not None:
                    out.append((f"{at}/pattern", p, why))
            for k, v in node.items():
                if k in _SCHEMA_VALUES:
                    continue
                key = str(k).replace("~", "~0").replace("/", "~1")
                if isinstance(v, list) and (k == "allOf" or (unused and k in ("anyOf",
                                                                               "oneOf"))):
                    for i, item in enumerate(v):
                        stack.append((item, f"{at}/{key}/{i}", True))
                else:
                    stack.append((v, f"{at}/{key}", False))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                stack.append((v, f"{at}/{i}", False))
    out.sort(key=lambda x: x[0])
    return out


def _drop_pattern(schema, pointer: str):
    """`schema` with the `pattern` at JSON pointer `pointer` removed (copies along the way)."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]

    def rec(node, ps):
        if len(ps) == 1:
            node = dict(node)
            node.pop(ps[0], None)
            return node
        if isinstance(node, dict):
            node = dict(node)
            node[ps[0]] = rec(node[ps[0]], ps[1:])
        else:
            node = list(node)
            node[int(ps[0])] = rec(node[int(ps[0])], ps[1:])
        return node
    return rec(schema, parts)


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else \
        f"{text[:limit]!r}... ({len(text)} characters)"


def check_patterns(schema, allow_unconstrained_patterns: bool = False, where: str = "schema"):
    """`schema` as llama.cpp's converter will honour it: SchemaError naming the first `pattern`
    the converter cannot convert (it would accept any string there), or, with
    allow_unconstrained_patterns, the schema without those patterns and one warning (cut short)
    in the log."""
    bad = unsupported_patterns(schema)
    if not bad:
        return schema
    at, pattern, why = bad[0]
    if not allow_unconstrained_patterns:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise SchemaError(
            f"{where} {at}: pattern {_short(pattern)} cannot be enforced by a grammar ({why})"
            f"{more}; simplify it, or allow unconstrained strings (request field / server "
            f"setting allow_unconstrained_patterns, or allow_unconstrained_patterns=True)")
    for at_i, _p, _w in bad:
        schema = _drop_pattern(schema, at_i)
    log.warning("%s: %d pattern(s) cannot be enforced by a grammar and are left "
                "unconstrained: %s", where, len(bad),
                "; ".join(f"{a}: {_short(p)} ({w})" for a, p, w in bad[:3])
                + (" ..." if len(bad) > 3 else ""))
    return schema


def parse_schema(schema, allow_unconstrained_patterns: bool = False, where: str = "schema"):
    """The schema as a dict (from a dict or JSON text), checked; SchemaError otherwise (also
    for a `pattern` llama.cpp's converter cannot convert: check_patterns)."""
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except (ValueError, RecursionError) as e:
            raise SchemaError(f"the JSON schema is not valid JSON: {e}") from None
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON schema must be an object, not {type(schema).__name__}")
    try:
        check_schema(schema)
        _check_ref_cycles(schema)
    except RecursionError:
        raise SchemaError("the JSON schema is nested too deeply") from None
    return check_patterns(schema, allow_unconstrained_patterns, where)


def schema_to_grammar(schema, allow_unconstrained_patterns: bool = False) -> str:
    """GBNF for a JSON schema (dict or JSON text), by llama.cpp's converter, sandboxed. A
    `pattern` the converter cannot convert raises SchemaError, unless
    allow_unconstrained_patterns (then that string is unconstrained, with a warning)."""
    schema = parse_schema(schema, allow_unconstrained_patterns)
    return _chat.json_schema_to_grammar(schema, True)
