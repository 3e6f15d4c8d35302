"""OpenAI's Responses API (`POST /v1/responses`) as a thin adapter over the chat pipeline: a
Responses request becomes an OpenAI chat request (pyllamacy.chat renders it, tools and all),
the chat.completion -- or its stream of chat.completion.chunk dicts -- becomes a `Response`
object or the Responses event stream. Pure Python: no HTTP, no generation, no I/O.

    req = parse_request(body, store)          # ResponsesRequestError (a FieldError) -> 400
    chat = run_the_chat_pipeline(req.chat)    # a chat.completion dict, or chunk dicts
    resp = response_object(chat, body, new_response_id(), created_at)
    if req.store: store.put(resp, req.input_items)
    # streamed: events = ResponseEventStream(body, resp_id, created_at, model)
    #           events.start(); events.feed(chunk) for each chunk; events.finish()
    #           (the last event's response is what to store)

Request mapping (Responses field -> chat field):

    input (string)                 one user message
    input[] message item           a message; role developer -> system (the role every chat
                                   template knows); content parts input_text -> text,
                                   input_image (image_url: URL or data URL) -> image_url part
                                   (user messages only), output_text / refusal -> the assistant
                                   message's text
    input[] function_call          an assistant message's tool_calls[] (id = call_id; calls
                                   right after an assistant message join it)
    input[] function_call_output   a tool message, tool_call_id = call_id (it must answer a
                                   function_call of the conversation, as OpenAI checks)
    input[] reasoning              dropped (templates drop earlier turns' reasoning); kept in
                                   the stored input items
    instructions                   a system message first; NOT carried over by
                                   previous_response_id (OpenAI's rule: each request gives its own)
    previous_response_id           the stored response's input items, then its output items,
                                   come before this input (ResponseNotFound -> 404)
    tools[] {type: function, name, description, parameters, strict}
                                   tools[] {type: function, function: {...}}
    tool_choice auto/none/required/{type: function, name}
                                   the same / {type: function, function: {name}}
    parallel_tool_calls            parallel_tool_calls
    text.format text / json_object / json_schema {name, schema, strict, description}
                                   response_format (none) / {type: json_object} /
                                   {type: json_schema, json_schema: {...}}
    max_output_tokens (>= 1)       max_tokens
    temperature, top_p             the same (absent: pyllamacy.defaults' TEMPERATURE / TOP_P,
                                   the server chat route's; echoed in the Response)
    top_logprobs, include ["message.output_text.logprobs"]
                                   logprobs: true, top_logprobs (output_text.logprobs)
    reasoning.effort               reasoning_effort (the chat layer turns thinking off for
                                   "none" and passes a level to the template, as llama-server)
    stream                         stream, with stream_options.include_usage (the usage of
                                   response.completed)
    user                           user
    model                          model
    seed, top_k, min_p, typical_p, repeat_penalty, presence_penalty, frequency_penalty, stop,
    logit_bias                     passed through (pyllamacy's sampling extras)
    store (default true), metadata, truncation "disabled", reasoning.summary, text.verbosity,
    max_tool_calls, service_tier, safety_identifier, prompt_cache_key, stream_options
                                   not for the chat; echoed in the Response (store: whether the
                                   caller keeps it in the ResponseStore)

Not supported (ResponsesRequestError naming the field): built-in tools (web_search,
file_search, code_interpreter, computer use, mcp, image_generation, shell, custom ...) and
tool_choice naming them or `allowed_tools`; input_file parts and input_image by file_id (no
file store); item_reference and other item types than message / function_call /
function_call_output / reasoning; truncation "auto" (nothing drops conversation items to fit
the context: a too-long input fails as with "disabled"); background: true; conversation;
prompt (stored prompt templates).

Output mapping (chat.completion -> Response): reasoning_content -> a `reasoning` item (its
text as reasoning_text content), content -> a `message` item with one output_text part (also
an empty one when there is nothing else), each tool call -> a `function_call` item (call_id =
the chat call's id); finish_reason "length" -> status "incomplete", incomplete_details.reason
"max_output_tokens" (the last item "incomplete"); usage prompt/completion tokens ->
input/output tokens.
"""
from __future__ import annotations

import copy
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..defaults import TEMPERATURE, TOP_P
from .checks import FieldError, check_texts, short

__all__ = ["ResponsesRequestError", "ResponseNotFound", "ResponsesRequest", "parse_request",
           "chat_request", "response_object", "ResponseEventStream", "ResponseStore",
           "new_response_id"]

# OpenAI's built-in tool types: named in the error that refuses them
_BUILTIN_TOOLS = ("web_search", "web_search_preview", "web_search_preview_2025_03_11",
                  "web_search_2025_08_26", "file_search", "computer_use_preview", "computer",
                  "code_interpreter", "image_generation", "local_shell", "shell", "mcp",
                  "custom", "apply_patch", "tool_search")
_INCLUDABLE = ("file_search_call.results", "web_search_call.results",
               "web_search_call.action.sources", "message.input_image.image_url",
               "computer_call_output.output.image_url", "code_interpreter_call.outputs",
               "reasoning.encrypted_content", "message.output_text.logprobs")
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_MESSAGE_ROLES = ("user", "assistant", "system", "developer")
# pyllamacy's sampling extras, passed to the chat request as given (the chat route checks them)
_PASSED = ("seed", "top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
           "frequency_penalty", "stop", "logit_bias")
_LOGPROBS = "message.output_text.logprobs"


class ResponsesRequestError(FieldError):
    """A Responses request that cannot be served; `param` is the field's path as OpenAI
    writes it ("input[2].content[0].type"). The route answers 400."""


class ResponseNotFound(KeyError):
    """No stored response with this id (never stored, deleted, or evicted); the route answers
    404. `param` is the request field that named it, when one did."""

    def __init__(self, response_id: str, param: Optional[str] = None):
        super().__init__(response_id)
        self.response_id = response_id
        self.param = param

    def __str__(self) -> str:
        return f"no response with id {self.response_id!r} (not stored, deleted or expired)"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def new_response_id() -> str:
    """A fresh Response id ("resp_" + 32 hex digits)."""
    return _new_id("resp")


# -- checks --------------------------------------------------------------------------------------

def _fail(param: str, message: str):
    raise ResponsesRequestError(param, f"{param}: {message}")


def _str(v, param: str, *, required: bool = False, nonempty: bool = False) -> Optional[str]:
    if v is None:
        if required:
            _fail(param, "missing required parameter")
        return None
    if not isinstance(v, str):
        _fail(param, f"must be a string, got {short(v)}")
    if nonempty and not v:
        _fail(param, "must not be empty")
    return v


def _bool(v, param: str) -> Optional[bool]:
    if v is not None and not isinstance(v, bool):
        _fail(param, f"must be true or false, got {short(v)}")
    return v


def _number(v, param: str, lo: float, hi: float) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        _fail(param, f"must be a number in {lo:g}..{hi:g}, got {short(v)}")
    return v


def _int(v, param: str, lo: int, hi: Optional[int] = None) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        span = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        _fail(param, f"must be an integer {span}, got {short(v)}")
    return v


def _dict(v, param: str) -> dict:
    if not isinstance(v, dict):
        _fail(param, f"must be an object, got {short(v)}")
    return v


def _list(v, param: str) -> list:
    if not isinstance(v, (list, tuple)):
        _fail(param, f"must be a list, got {short(v)}")
    return list(v)


# -- input items -> normalized items (what the store keeps) --------------------------------------

def _input_part(p, at: str, role: str) -> dict:
    _dict(p, at)
    typ = p.get("type")
    if typ == "input_text" or (role == "assistant" and typ == "output_text"):
        text = _str(p.get("text"), f"{at}.text", required=True)
        if role == "assistant":
            return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {"type": "input_text", "text": text}
    if role == "assistant" and typ == "refusal":
        return {"type": "refusal",
                "refusal": _str(p.get("refusal"), f"{at}.refusal", required=True)}
    if typ == "input_image":
        if role != "user":
            _fail(f"{at}.type", f"input_image parts are taken in user messages, not {role}")
        if p.get("file_id") is not None:
            _fail(f"{at}.file_id", "images by file_id are not supported (pyllamacy has no "
                                   "file store); give image_url (a URL or a data: URL)")
        url = _str(p.get("image_url"), f"{at}.image_url", required=True, nonempty=True)
        detail = p.get("detail", "auto") or "auto"
        if detail not in ("auto", "low", "high", "original"):
            _fail(f"{at}.detail", f"must be auto, low, high or original, got {short(detail)}")
        return {"type": "input_image", "image_url": url, "detail": detail}
    if typ == "input_file":
        _fail(f"{at}.type", "input_file parts are not supported (pyllamacy has no file "
                            "handling); send the file's text as an input_text part")
    allowed = "output_text, input_text or refusal" if role == "assistant" else \
        "input_text or input_image"
    _fail(f"{at}.type", f"a {role} message's content parts are {allowed}, got {short(typ)}")


def _message_item(item: dict, at: str) -> dict:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        _fail(f"{at}.role", f"must be one of {', '.join(_MESSAGE_ROLES)}, got {short(role)}")
    content = item.get("content")
    if isinstance(content, str):
        parts = [_input_part({"type": "output_text" if role == "assistant" else "input_text",
                              "text": content}, f"{at}.content", role)]
    elif isinstance(content, (list, tuple)):
        parts = [_input_part(p, f"{at}.content[{j}]", role) for j, p in enumerate(content)]
    elif content is None:
        _fail(f"{at}.content", "missing required parameter")
    else:
        _fail(f"{at}.content", f"must be a string or a list of content parts, got "
                               f"{short(content)}")
    return {"id": item.get("id") if isinstance(item.get("id"), str) else _new_id("msg"),
            "type": "message", "role": role, "content": parts, "status": "completed"}


def _function_call_item(item: dict, at: str) -> dict:
    return {"id": item.get("id") if isinstance(item.get("id"), str) else _new_id("fc"),
            "type": "function_call",
            "call_id": _str(item.get("call_id"), f"{at}.call_id", required=True, nonempty=True),
            "name": _str(item.get("name"), f"{at}.name", required=True, nonempty=True),
            "arguments": _str(item.get("arguments"), f"{at}.arguments", required=True),
            "status": "completed"}


def _function_output_item(item: dict, at: str) -> dict:
    out = item.get("output")
    if isinstance(out, (list, tuple)):
        out = [_input_part(p, f"{at}.output[{j}]", "user") for j, p in enumerate(out)]
    elif not isinstance(out, str):
        _fail(f"{at}.output", "must be a string or a list of input_text / input_image parts"
              if out is not None else "missing required parameter")
    return {"id": item.get("id") if isinstance(item.get("id"), str) else _new_id("fco"),
            "type": "function_call_output",
            "call_id": _str(item.get("call_id"), f"{at}.call_id", required=True, nonempty=True),
            "output": out, "status": "completed"}


def _reasoning_item(item: dict, at: str) -> dict:
    out = dict(item)
    out["summary"] = _list(item.get("summary", []), f"{at}.summary")
    if not isinstance(item.get("id"), str):
        out["id"] = _new_id("rs")
    return out


def _normalize_input(value, known_calls: set) -> List[dict]:
    """The request's `input` as items with ids (the shape GET .../input_items lists);
    `known_calls`: the call ids of earlier function_call items (grows with this input's)."""
    if isinstance(value, str):
        return [_message_item({"role": "user", "content": value}, "input")]
    items = _list(value, "input")
    out = []
    for i, item in enumerate(items):
        at = f"input[{i}]"
        _dict(item, at)
        typ = item.get("type", "message" if "role" in item else None)
        if typ == "message":
            out.append(_message_item(item, at))
        elif typ == "function_call":
            out.append(_function_call_item(item, at))
            known_calls.add(out[-1]["call_id"])
        elif typ == "function_call_output":
            out.append(_function_output_item(item, at))
            if out[-1]["call_id"] not in known_calls:
                _fail(f"{at}.call_id", f"no function_call with call_id "
                                       f"{out[-1]['call_id']!r} comes before this output")
        elif typ == "reasoning":
            out.append(_reasoning_item(item, at))
        elif typ is None:
            _fail(f"{at}.type", "missing: an item is a message ({'role', 'content'}) or has "
                                "a type (function_call, function_call_output, reasoning)")
        else:
            _fail(f"{at}.type", f"{short(typ)} items are not supported; pyllamacy takes "
                                f"message, function_call, function_call_output and reasoning "
                                f"items" + (" (send the referenced item itself, or use "
                                            "previous_response_id)"
                                            if typ == "item_reference" else ""))
    return out


# -- normalized items -> chat messages ------------------------------------------------------------

def _chat_part(p: dict) -> dict:
    if p["type"] == "input_image":
        return {"type": "image_url", "image_url": {"url": p["image_url"],
                                                   "detail": p.get("detail", "auto")}}
    return {"type": "text", "text": p["text"] if "text" in p else p["refusal"]}


def _chat_content(parts: List[dict]):
    """A message's parts as chat content: one text part as a string, else chat's parts (the
    chat layer joins text parts with newlines, as llama.cpp does)."""
    if len(parts) == 1 and parts[0]["type"] != "input_image":
        return _chat_part(parts[0])["text"]
    return [_chat_part(p) for p in parts]


def _messages(items: List[dict]) -> List[dict]:
    msgs: List[dict] = []
    for item in items:
        typ = item["type"]
        last = msgs[-1] if msgs else None
        if typ == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            msgs.append({"role": role, "content": _chat_content(item["content"])})
        elif typ == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif typ == "function_call_output":
            out = item["output"]
            msgs.append({"role": "tool", "tool_call_id": item["call_id"],
                         "content": out if isinstance(out, str) else _chat_content(out)})
        # reasoning: dropped
    for m in msgs:          # an assistant message with calls and no text: content null
        if m["role"] == "assistant" and m.get("tool_calls") and m["content"] == "":
            m["content"] = None
    return msgs


# -- the other fields ------------------------------------------------------------------------------

def _tools(value) -> List[dict]:
    """Responses function tools, normalized (as echoed: strict defaults to true)."""
    out = []
    for i, t in enumerate(_list(value, "tools") if value is not None else []):
        at = f"tools[{i}]"
        _dict(t, at)
        typ = t.get("type")
        if typ != "function":
            if typ in _BUILTIN_TOOLS or (isinstance(typ, str) and typ.startswith("web_search")):
                _fail(f"{at}.type", f"the built-in tool {typ!r} is not supported by pyllamacy; "
                                    f"only function tools ({{'type': 'function', 'name': ..., "
                                    f"'parameters': ...}})")
            _fail(f"{at}.type", f"must be 'function', got {short(typ)}")
        if "name" not in t and isinstance(t.get("function"), dict):
            _fail(f"{at}.name", "missing required parameter (Responses function tools are "
                                "flat: {'type': 'function', 'name', 'description', "
                                "'parameters'}, not chat's {'type', 'function': {...}})")
        tool = {"type": "function",
                "name": _str(t.get("name"), f"{at}.name", required=True, nonempty=True),
                "description": _str(t.get("description"), f"{at}.description"),
                "parameters": _dict(t["parameters"], f"{at}.parameters")
                if t.get("parameters") is not None else None,
                "strict": True if t.get("strict") is None else _bool(t["strict"],
                                                                     f"{at}.strict")}
        out.append(tool)
    names = [t["name"] for t in out]
    for i, n in enumerate(names):
        if n in names[:i]:
            _fail(f"tools[{i}].name", f"the function {n!r} is given twice")
    return out


def _chat_tool(t: dict) -> dict:
    fn = {"name": t["name"]}
    if t["description"] is not None:
        fn["description"] = t["description"]
    if t["parameters"] is not None:
        fn["parameters"] = t["parameters"]
    # `strict` stays out: pyllamacy constrains the arguments to the schema either way, and
    # templates without their own tool format would show it to the model
    return {"type": "function", "function": fn}


def _tool_choice(value, tools: List[dict]):
    """-> (echoed tool_choice, chat tool_choice)."""
    if value is None:
        return "auto", None
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            _fail("tool_choice", f"must be 'auto', 'none', 'required' or {{'type': "
                                 f"'function', 'name': ...}}, got {short(value)}")
        if value == "required" and not tools:
            _fail("tool_choice", "'required' needs function tools in `tools`")
        return value, value
    _dict(value, "tool_choice")
    typ = value.get("type")
    if typ != "function":
        _fail("tool_choice.type", f"only function tools can be chosen ({{'type': 'function', "
                                  f"'name': ...}}); {short(typ)} is not supported")
    name = _str(value.get("name"), "tool_choice.name", required=True, nonempty=True)
    if name not in [t["name"] for t in tools]:
        _fail("tool_choice.name", f"{name!r} is not a function in `tools`")
    return {"type": "function", "name": name}, {"type": "function", "function": {"name": name}}


def _text_format(value) -> Tuple[dict, Optional[dict]]:
    """-> (echoed `text`, chat response_format or None)."""
    if value is None:
        return {"format": {"type": "text"}, "verbosity": "medium"}, None
    _dict(value, "text")
    verbosity = value.get("verbosity") or "medium"
    if verbosity not in ("low", "medium", "high"):
        _fail("text.verbosity", f"must be low, medium or high, got {short(verbosity)}")
    fmt = value.get("format")
    if fmt is None:
        fmt = {"type": "text"}
    _dict(fmt, "text.format")
    typ = fmt.get("type")
    if typ == "text":
        return {"format": {"type": "text"}, "verbosity": verbosity}, None
    if typ == "json_object":
        return {"format": {"type": "json_object"}, "verbosity": verbosity}, \
            {"type": "json_object"}
    if typ == "json_schema":
        name = _str(fmt.get("name"), "text.format.name", required=True, nonempty=True)
        schema = fmt.get("schema")
        if schema is None:
            _fail("text.format.schema", "missing required parameter")
        _dict(schema, "text.format.schema")
        echo = {"type": "json_schema", "name": name, "schema": schema,
                "strict": _bool(fmt.get("strict"), "text.format.strict"),
                "description": _str(fmt.get("description"), "text.format.description")}
        js = {k: v for k, v in echo.items() if k != "type" and v is not None}
        return {"format": echo, "verbosity": verbosity}, {"type": "json_schema",
                                                          "json_schema": js}
    _fail("text.format.type", f"must be text, json_object or json_schema, got {short(typ)}")


def _metadata(value) -> dict:
    if value is None:
        return {}
    _dict(value, "metadata")
    if len(value) > 16:
        _fail("metadata", f"at most 16 keys, got {len(value)}")
    for k, v in value.items():
        if not isinstance(k, str) or len(k) > 64:
            _fail("metadata", f"keys are strings of at most 64 characters, got {short(k)}")
        if not isinstance(v, str) or len(v) > 512:
            _fail(f"metadata.{k}", f"values are strings of at most 512 characters, got "
                                   f"{short(v)}")
    return dict(value)


def _reasoning(value) -> dict:
    if value is None:
        return {"effort": None, "summary": None}
    _dict(value, "reasoning")
    effort = value.get("effort")
    if effort is not None and effort not in _EFFORTS:
        _fail("reasoning.effort", f"must be one of {', '.join(_EFFORTS)}, got {short(effort)}")
    summary = value.get("summary", value.get("generate_summary"))
    if summary is not None and summary not in ("auto", "concise", "detailed"):
        _fail("reasoning.summary", f"must be auto, concise or detailed, got {short(summary)}")
    return {"effort": effort, "summary": summary}


def _include(value) -> List[str]:
    out = _list(value, "include") if value is not None else []
    for i, v in enumerate(out):
        if v not in _INCLUDABLE:
            _fail(f"include[{i}]", f"must be one of {', '.join(_INCLUDABLE)}, got {short(v)}")
    return out


def _unsupported(body: dict) -> None:
    if body.get("background"):
        _fail("background", "background responses are not supported; leave it out or false")
    if body.get("conversation") is not None:
        _fail("conversation", "conversations are not supported; chain responses with "
                              "previous_response_id")
    if body.get("prompt") is not None:
        _fail("prompt", "stored prompt templates are not supported; send `instructions` and "
                        "`input`")
    trunc = body.get("truncation")
    if trunc == "auto":
        _fail("truncation", "'auto' is not supported: pyllamacy does not drop conversation "
                            "items to fit the context; use 'disabled' (the default) and "
                            "shorten the input")
    if trunc not in (None, "disabled"):
        _fail("truncation", f"must be 'disabled' or 'auto', got {short(trunc)}")


@dataclass
class _Echo:
    """The request's fields a Response repeats, checked once."""
    tools: List[dict]
    tool_choice: Any
    chat_tool_choice: Any
    text: dict
    response_format: Optional[dict]
    metadata: dict
    reasoning: dict
    include: List[str]
    temperature: float
    top_p: float
    top_logprobs: int


def _echo(body: dict) -> _Echo:
    tools = _tools(body.get("tools"))
    choice, chat_choice = _tool_choice(body.get("tool_choice"), tools)
    text, rf = _text_format(body.get("text"))
    temperature = _number(body.get("temperature"), "temperature", 0.0, 2.0)
    top_p = _number(body.get("top_p"), "top_p", 0.0, 1.0)
    return _Echo(tools, choice, chat_choice, text, rf, _metadata(body.get("metadata")),
                 _reasoning(body.get("reasoning")), _include(body.get("include")),
                 TEMPERATURE if temperature is None else temperature,
                 TOP_P if top_p is None else top_p,
                 _int(body.get("top_logprobs"), "top_logprobs", 0, 20) or 0)


# -- the request ------------------------------------------------------------------------------------

@dataclass
class ResponsesRequest:
    """A checked Responses request: `chat` the OpenAI chat request to run, `input_items` the
    conversation before the reply as items with ids (the previous response's context, its
    output, then this input: what to store with the reply and to list as its input items),
    `store` whether to keep the reply, `stream` whether to stream it."""
    body: dict
    chat: dict
    input_items: List[dict]
    store: bool
    stream: bool


def parse_request(body: dict, store: Optional["ResponseStore"] = None) -> ResponsesRequest:
    """Check a Responses request and turn it into a chat request (see the module docstring).
    ResponsesRequestError names the field at fault; ResponseNotFound: previous_response_id
    names no stored response (or `store` is None)."""
    if not isinstance(body, dict):
        raise ResponsesRequestError("body", "the request body must be a JSON object")
    try:
        for name in ("input", "instructions", "tools", "text", "metadata", "tool_choice"):
            check_texts(body.get(name), name)
    except FieldError as e:
        raise ResponsesRequestError(e.param, str(e)) from None
    _unsupported(body)
    echo = _echo(body)
    model = _str(body.get("model"), "model")
    instructions = _str(body.get("instructions"), "instructions")
    max_out = _int(body.get("max_output_tokens"), "max_output_tokens", 1)
    stream = bool(_bool(body.get("stream"), "stream"))
    keep = _bool(body.get("store"), "store")
    parallel = _bool(body.get("parallel_tool_calls"), "parallel_tool_calls")
    user = _str(body.get("user"), "user")
    for name in ("safety_identifier", "prompt_cache_key", "service_tier"):
        _str(body.get(name), name)

    prev_id = _str(body.get("previous_response_id"), "previous_response_id", nonempty=True)
    context: List[dict] = []
    if prev_id is not None:
        if store is None:
            raise ResponseNotFound(prev_id, "previous_response_id")
        try:
            context = store.context(prev_id)
        except ResponseNotFound:
            raise ResponseNotFound(prev_id, "previous_response_id") from None
    known_calls = {it["call_id"] for it in context if it.get("type") == "function_call"}
    if body.get("input") is None:
        if prev_id is None:
            _fail("input", "missing required parameter")
        new_items: List[dict] = []
    else:
        new_items = _normalize_input(body["input"], known_calls)
    items = context + new_items

    messages = ([{"role": "system", "content": instructions}] if instructions else []) + \
        _messages(items)
    if not messages:
        _fail("input", "gives no message: the conversation is empty")
    chat: Dict[str, Any] = {"messages": messages, "temperature": echo.temperature,
                            "top_p": echo.top_p, "stream": stream}
    if model is not None:
        chat["model"] = model
    if echo.tools:
        chat["tools"] = [_chat_tool(t) for t in echo.tools]
    if echo.chat_tool_choice is not None:
        chat["tool_choice"] = echo.chat_tool_choice
    if parallel is not None:
        chat["parallel_tool_calls"] = parallel
    if echo.response_format is not None:
        chat["response_format"] = echo.response_format
    if max_out is not None:
        chat["max_tokens"] = max_out
    if _LOGPROBS in echo.include:
        chat["logprobs"] = True
        chat["top_logprobs"] = echo.top_logprobs
    effort = echo.reasoning["effort"]
    if effort is not None:
        # the chat's reasoning_effort: "none" turns thinking off, a level reaches the template
        # as chat_template_kwargs.reasoning_effort (llama-server's handling, pyllamacy.chat)
        chat["reasoning_effort"] = effort
    if stream:
        chat["stream_options"] = {"include_usage": True}
    if user is not None:
        chat["user"] = user
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    return ResponsesRequest(body, chat, items, True if keep is None else keep, stream)


def chat_request(body: dict, store: Optional["ResponseStore"] = None) -> dict:
    """The OpenAI chat request of a Responses request (parse_request(...).chat)."""
    return parse_request(body, store).chat


# -- the reply: output items and the Response ------------------------------------------------------

def _logprobs(content) -> List[dict]:
    """Chat logprob entries -> output_text logprobs (the same fields)."""
    out = []
    for e in content or []:
        out.append({"token": e["token"], "bytes": list(e.get("bytes") or []),
                    "logprob": e["logprob"],
                    "top_logprobs": [{"token": t["token"], "bytes": list(t.get("bytes") or []),
                                      "logprob": t["logprob"]}
                                     for t in e.get("top_logprobs") or []]})
    return out


def _reasoning_dict(id_: str, text: str, status: str) -> dict:
    return {"id": id_, "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": text}] if text else [],
            "status": status}


def _text_part(text: str, logprobs: List[dict]) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def _message_dict(id_: str, text: str, logprobs: List[dict], status: str) -> dict:
    return {"id": id_, "type": "message", "role": "assistant", "status": status,
            "content": [_text_part(text, logprobs)]}


def _call_dict(id_: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"id": id_, "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


class _Item:
    """One output item while it is built: kind "reasoning" / "message" / "function_call"."""
    __slots__ = ("kind", "id", "text", "call_id", "name", "logprobs")

    def __init__(self, kind: str, id_: str, text: str = "", call_id: str = "",
                 name: str = ""):
        self.kind = kind
        self.id = id_
        self.text = text            # the reasoning / message text, or the call's arguments
        self.call_id = call_id
        self.name = name
        self.logprobs: List[dict] = []

    def as_dict(self, status: str) -> dict:
        if self.kind == "reasoning":
            return _reasoning_dict(self.id, self.text, status)
        if self.kind == "message":
            return _message_dict(self.id, self.text, self.logprobs, status)
        return _call_dict(self.id, self.call_id, self.name, self.text, status)


def _items_of(message: dict, logprobs: List[dict]) -> List[_Item]:
    """The output items of an assistant message, in OpenAI's order: reasoning, the message
    (also an empty one when there is nothing else), the function calls."""
    items = []
    if message.get("reasoning_content"):
        items.append(_Item("reasoning", _new_id("rs"), message["reasoning_content"]))
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        items.append(_Item("message", _new_id("msg"), message.get("content") or ""))
        items[-1].logprobs = logprobs
    for c in calls:
        fn = c.get("function") or {}
        items.append(_Item("function_call", _new_id("fc"), fn.get("arguments") or "",
                           c.get("id") or _new_id("call"), fn.get("name") or ""))
    return items


def _usage(use: Optional[dict]) -> Optional[dict]:
    if use is None:
        return None
    n_in = int(use.get("prompt_tokens") or 0)
    n_out = int(use.get("completion_tokens") or 0)
    cached = (use.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (use.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": reasoning}}


def _status(finish_reason: Optional[str]) -> Tuple[str, Optional[dict]]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _response(body: dict, echo: _Echo, response_id: str, created_at, model: str, *,
              status: str, output: List[dict], usage: Optional[dict],
              incomplete: Optional[dict] = None, error: Optional[dict] = None,
              completed_at=None) -> dict:
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "completed_at": completed_at, "error": error,
        "incomplete_details": incomplete, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"), "model": model, "output": output,
        "parallel_tool_calls": True if body.get("parallel_tool_calls") is None
        else body["parallel_tool_calls"],
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": echo.reasoning, "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "service_tier": "default", "store": True if body.get("store") is None else body["store"],
        "temperature": echo.temperature, "text": echo.text, "tool_choice": echo.tool_choice,
        "tools": echo.tools, "top_logprobs": echo.top_logprobs, "top_p": echo.top_p,
        "truncation": "disabled", "usage": usage, "user": body.get("user"),
        "metadata": echo.metadata}


def _finished(body: dict, echo: _Echo, response_id: str, created_at, model: str,
              items: List[_Item], finish_reason: Optional[str], use: Optional[dict],
              completed_at) -> dict:
    status, incomplete = _status(finish_reason)
    output = [it.as_dict("incomplete" if status == "incomplete" and i == len(items) - 1
                         else "completed") for i, it in enumerate(items)]
    return _response(body, echo, response_id, created_at, model, status=status, output=output,
                     usage=_usage(use), incomplete=incomplete,
                     completed_at=(int(time.time()) if completed_at is None else completed_at)
                     if status == "completed" else None)


def response_object(chat: dict, request_body: dict, response_id: str, created_at,
                    completed_at=None) -> dict:
    """A chat.completion dict (its first choice) -> the Response object (OpenAI's shape, the
    request's settings echoed). completed_at: when it completed (None: now; left out unless
    the status is "completed")."""
    echo = _echo(request_body)
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    lp = _logprobs((choice.get("logprobs") or {}).get("content")) \
        if _LOGPROBS in echo.include else []
    return _finished(request_body, echo, response_id, created_at,
                     chat.get("model") or request_body.get("model") or "",
                     _items_of(message, lp), choice.get("finish_reason"), chat.get("usage"),
                     completed_at)


# -- streaming --------------------------------------------------------------------------------------

class ResponseEventStream:
    """The Responses stream events of one reply, from its chat.completion.chunk dicts.

        es = ResponseEventStream(body, new_response_id(), created_at, model)
        yield from es.start()                       # response.created, response.in_progress
        for chunk in chunks: yield from es.feed(chunk)
        yield from es.finish()                      # ... response.completed / .incomplete

    Items open as their first delta arrives (reasoning text, message text, each tool call)
    and close (their .done events) when the next opens or at finish(); the final response is
    response_object's for the same reply (its items in the order they streamed). The usage
    and finish reason come from the chunks (a usage chunk: stream_options.include_usage) unless
    finish() is given them. An error chunk ({"error": {...}}) or fail() ends the stream with
    response.failed. Each event is a dict with `type` and `sequence_number` (from 0): the
    route sends it as an SSE event named by its type."""

    def __init__(self, request_body: dict, response_id: str, created_at, model: str):
        self.body = request_body
        self.echo = _echo(request_body)
        self.id = response_id
        self.created_at = created_at
        self.model = model
        self.items: List[_Item] = []
        self._open: Optional[int] = None          # index of the open item
        self._calls: Dict[int, int] = {}         # chat tool-call index -> item index
        self._seq = 0
        self._started = False
        self._ended = False
        self._usage: Optional[dict] = None
        self._finish: Optional[str] = None
        self._logprobs = _LOGPROBS in self.echo.include
        self._all_logprobs: List[dict] = []

    def _event(self, type_: str, **fields) -> dict:
        ev = {"type": type_, "sequence_number": self._seq, **fields}
        self._seq += 1
        return ev

    def _snapshot(self, status: str, **kw) -> dict:
        return _response(self.body, self.echo, self.id, self.created_at, self.model,
                         status=status, output=kw.pop("output", []), usage=None, **kw)

    def start(self) -> List[dict]:
        """response.created and response.in_progress (once; feed() starts a stream that was
        not)."""
        if self._started:
            return []
        self._started = True
        return [self._event("response.created", response=self._snapshot("in_progress")),
                self._event("response.in_progress", response=self._snapshot("in_progress"))]

    # items

    def _close(self, out: List[dict], status: str = "completed") -> None:
        if self._open is None:
            return
        i, it = self._open, self.items[self._open]
        self._open = None
        if it.kind == "function_call":
            out.append(self._event("response.function_call_arguments.done", item_id=it.id,
                                   output_index=i, arguments=it.text, name=it.name))
        else:
            part = _text_part(it.text, it.logprobs) if it.kind == "message" else \
                {"type": "reasoning_text", "text": it.text}
            if it.kind == "message":
                out.append(self._event("response.output_text.done", item_id=it.id,
                                       output_index=i, content_index=0, text=it.text,
                                       logprobs=it.logprobs))
            else:
                out.append(self._event("response.reasoning_text.done", item_id=it.id,
                                       output_index=i, content_index=0, text=it.text))
            out.append(self._event("response.content_part.done", item_id=it.id,
                                   output_index=i, content_index=0, part=part))
        out.append(self._event("response.output_item.done", output_index=i,
                               item=it.as_dict(status)))

    def _open_item(self, out: List[dict], item: _Item) -> int:
        self._close(out)
        self.items.append(item)
        i = self._open = len(self.items) - 1
        added = item.as_dict("in_progress")
        if item.kind != "function_call":
            added["content"] = []
        out.append(self._event("response.output_item.added", output_index=i, item=added))
        if item.kind == "message":
            out.append(self._event("response.content_part.added", item_id=item.id,
                                   output_index=i, content_index=0, part=_text_part("", [])))
        elif item.kind == "reasoning":
            out.append(self._event("response.content_part.added", item_id=item.id,
                                   output_index=i, content_index=0,
                                   part={"type": "reasoning_text", "text": ""}))
        return i

    def _text(self, out: List[dict], kind: str, delta: str, logprobs: List[dict]) -> None:
        i = self._open
        if i is None or self.items[i].kind != kind:
            i = self._open_item(out, _Item(kind, _new_id("msg" if kind == "message" else "rs")))
        it = self.items[i]
        it.text += delta
        if kind == "message":
            it.logprobs.extend(logprobs)
            out.append(self._event("response.output_text.delta", item_id=it.id,
                                   output_index=i, content_index=0, delta=delta,
                                   logprobs=logprobs))
        else:
            out.append(self._event("response.reasoning_text.delta", item_id=it.id,
                                   output_index=i, content_index=0, delta=delta))

    def _call(self, out: List[dict], tc: dict) -> None:
        idx = tc.get("index", 0)
        fn = tc.get("function") or {}
        if idx not in self._calls:
            self._calls[idx] = self._open_item(
                out, _Item("function_call", _new_id("fc"), "", tc.get("id") or _new_id("call"),
                           fn.get("name") or ""))
        i = self._calls[idx]
        it = self.items[i]
        if fn.get("name") and not it.name:
            it.name = fn["name"]
        args = fn.get("arguments") or ""
        if args:
            it.text += args
            if self._open == i:
                out.append(self._event("response.function_call_arguments.delta",
                                       item_id=it.id, output_index=i, delta=args))
            # arguments of a call already closed (not sent by pyllamacy.chat.ChatDeltas): the
            # final response carries them

    def feed(self, chunk: dict) -> List[dict]:
        """One chat.completion.chunk (or the usage chunk, or an error body) -> its events."""
        if self._ended:
            return []
        out = self.start()
        if isinstance(chunk.get("error"), dict):
            err = chunk["error"]
            return out + self.fail(str(err.get("message") or "generation failed"))
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            lp = _logprobs((choice.get("logprobs") or {}).get("content")) \
                if self._logprobs else []
            self._all_logprobs.extend(lp)
            if delta.get("reasoning_content"):
                self._text(out, "reasoning", delta["reasoning_content"], [])
            if delta.get("content"):
                self._text(out, "message", delta["content"], lp)
            for tc in delta.get("tool_calls") or []:
                self._call(out, tc)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def finish(self, usage: Optional[dict] = None, finish_reason: Optional[str] = None,
               completed_at=None) -> List[dict]:
        """The last events: the open item's .done events, then response.completed (or
        response.incomplete when the reply was cut at max_output_tokens). usage /
        finish_reason: the chat usage and finish reason (None: those the chunks gave)."""
        if self._ended:
            return []
        out = self.start()
        use = usage if usage is not None else self._usage
        fin = finish_reason if finish_reason is not None else self._finish
        if not self.items or all(it.kind == "reasoning" for it in self.items):
            self._open_item(out, _Item("message", _new_id("msg")))   # an empty message
        status, _ = _status(fin)
        if self._logprobs:      # the reply's entries, as response_object gives them
            for it in self.items:
                if it.kind == "message":
                    it.logprobs = list(self._all_logprobs)
                    break
        self._close(out, "incomplete" if status == "incomplete" else "completed")
        self._ended = True
        resp = _finished(self.body, self.echo, self.id, self.created_at, self.model,
                         self.items, fin, use, completed_at)
        self.response = resp
        out.append(self._event("response.completed" if status == "completed"
                               else "response.incomplete", response=resp))
        return out

    def fail(self, message: str, code: str = "server_error") -> List[dict]:
        """End the stream with response.failed (the error, the output so far)."""
        if self._ended:
            return []
        out = self.start()
        self._ended = True
        output = [it.as_dict("incomplete") for it in self.items]
        self.response = self._snapshot("failed", output=output,
                                       error={"code": code, "message": message})
        out.append(self._event("response.failed", response=self.response))
        return out

    def error(self, message: str, code: Optional[str] = None,
              param: Optional[str] = None) -> List[dict]:
        """An `error` event (a request-level error once the stream has begun)."""
        self._ended = True
        return [self._event("error", code=code, message=message, param=param)]


# -- the store --------------------------------------------------------------------------------------

class _Entry:
    __slots__ = ("response", "input_items", "stored_at")

    def __init__(self, response: dict, input_items: List[dict], stored_at: float):
        self.response = response
        self.input_items = input_items
        self.stored_at = stored_at


class ResponseStore:
    """Stored responses (with the input items before each) for previous_response_id,
    GET / DELETE /v1/responses/{id} and its input_items: in memory, at most `max_entries`
    (the oldest go first), each for `ttl_s` seconds. Thread-safe (the route and Llama may call
    it from any thread). `clock`: seconds, monotonic (tests give a fake one)."""

    def __init__(self, max_entries: int = 1000, ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: "OrderedDict[str, _Entry]" = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._entries:
            key, e = next(iter(self._entries.items()))
            if now - e.stored_at < self.ttl_s:
                break
            del self._entries[key]

    def _entry(self, response_id: str) -> _Entry:
        self._expire(self._clock())
        e = self._entries.get(response_id)
        if e is None:
            raise ResponseNotFound(response_id)
        return e

    def put(self, response: dict, input_items: List[dict]) -> None:
        """Keep a response (its id is response["id"]) with the items that came before it."""
        e = _Entry(copy.deepcopy(response), copy.deepcopy(list(input_items)), 0.0)
        with self._lock:
            now = self._clock()
            e.stored_at = now
            self._entries.pop(response["id"], None)
            self._entries[response["id"]] = e
            self._expire(now)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, response_id: str) -> dict:
        """The stored Response (a copy); ResponseNotFound if not there."""
        with self._lock:
            return copy.deepcopy(self._entry(response_id).response)

    def context(self, response_id: str) -> List[dict]:
        """The conversation up to and with this response: its input items, then its output
        items (what previous_response_id puts before a new input)."""
        with self._lock:
            e = self._entry(response_id)
            return copy.deepcopy(e.input_items + e.response.get("output", []))

    def delete(self, response_id: str) -> dict:
        """Remove it -> OpenAI's deletion object; ResponseNotFound if not there."""
        with self._lock:
            self._entry(response_id)
            del self._entries[response_id]
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    def input_items(self, response_id: str, *, limit: int = 20, order: str = "desc",
                    after: Optional[str] = None) -> dict:
        """GET /v1/responses/{id}/input_items: a list object of the items before the reply
        (newest first with order "desc", OpenAI's default), `limit` (1..100) of them, after
        the item with id `after`."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            raise ResponsesRequestError("limit", f"limit: must be an integer in 1..100, got "
                                                 f"{short(limit)}")
        if order not in ("asc", "desc"):
            raise ResponsesRequestError("order", f"order: must be 'asc' or 'desc', got "
                                                 f"{short(order)}")
        with self._lock:
            items = copy.deepcopy(self._entry(response_id).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [it.get("id") for it in items]
            if after not in ids:
                raise ResponsesRequestError("after", f"after: no input item {after!r} in "
                                                     f"response {response_id!r}")
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return {"object": "list", "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit}

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def __contains__(self, response_id: str) -> bool:
        with self._lock:
            self._expire(self._clock())
            return response_id in self._entries
