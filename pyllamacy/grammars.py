"""JSON schema -> GBNF grammar: the checks pyllamacy makes before handing a schema to llama.cpp's
converter (json_schema_to_grammar, run sandboxed by pyllamacy._chat).

Used by LlamaGrammar.from_json_schema (llama_types.py), by chat completions' response_format
and tools (chat.py) and through them by the server. A schema that is not an object, not valid
JSON, nested more than MAX_SCHEMA_DEPTH levels or with a $ref cycle raises SchemaError (a
ValueError) before any C++ code sees it.
"""
from __future__ import annotations

import json

from . import _chat
from ._chat import SchemaError

__all__ = ["MAX_SCHEMA_DEPTH", "check_schema", "parse_schema", "schema_to_grammar",
           "SchemaError"]

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


def parse_schema(schema):
    """The schema as a dict (from a dict or JSON text), checked; SchemaError otherwise."""
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
    return schema


def schema_to_grammar(schema) -> str:
    """GBNF for a JSON schema (dict or JSON text), by llama.cpp's converter, sandboxed."""
    schema = parse_schema(schema)
    return _chat.json_schema_to_grammar(schema, True)
