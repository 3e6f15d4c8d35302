"""Anthropic's Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`) as a thin
translation over the OpenAI chat pipeline: the request becomes an OpenAI chat request, the chat
pipeline (pyllamacy.chat + pipeline.responses) answers it, and its chat.completion dict or
chat.completion.chunk dicts become an Anthropic `Message` or Anthropic's stream events. Pure
Python: no HTTP, no I/O, no model.

    chat_request(body)           Anthropic request -> OpenAI chat request (AnthropicRequestError)
    count_tokens_request(body)   the same for count_tokens (max_tokens not required)
    message_response(chat, model, stop_sequence=)   chat.completion -> Message
    MessageStream(model, input_tokens)  .feed(chunk) / .finish(usage) -> [(event, data)]
    error_body(status, message)  Anthropic's error object; sse(event, data): one SSE frame

Request mapping (Anthropic -> OpenAI):

    model                          model
    max_tokens (required, >= 1)    max_tokens  (Anthropic's 0, "warm the prompt cache only", is
                                   refused: pyllamacy's max_tokens 0 means "no limit")
    system (str | [text blocks])   a first {"role": "system"} message (blocks joined by "\\n")
    messages[i] role user/assistant, content str | blocks:
      text                         a text part (one text block alone: a plain string)
      image source base64 / url    {"type": "image_url", "image_url": {"url": data:...;base64,
                                   ... | the URL}} (a model without a projector refuses it)
      tool_use (assistant)         tool_calls[{"id", "type": "function", "function":
                                   {"name", "arguments": json.dumps(input)}}]
      tool_result (user)           a {"role": "tool", "tool_call_id", "content"} message, in
                                   block order (content str, or text blocks joined by "\\n";
                                   with images a list of parts); is_error: content prefixed
                                   "Error: " (OpenAI's tool messages have no error flag)
      thinking (assistant)         reasoning_content (templates that render reasoning get it
                                   back, e.g. Qwen3; the others ignore it)
      redacted_thinking            dropped (encrypted, meaningless to a local model)
      cache_control, citations     ignored
    tools[{name, description, input_schema}]   tools[{"type": "function", "function": {"name",
                                   "description", "parameters": input_schema}}]; server tools
                                   (web_search_..., bash_..., a `type` other than "custom")
                                   are refused
    tool_choice auto/any/tool/none "auto" / "required" / {"type": "function", "function":
                                   {"name"}} / "none"
    disable_parallel_tool_use      parallel_tool_calls = not it (Anthropic's default allows
                                   several calls, so tools without it give True)
    stop_sequences                 stop
    temperature [0, 1], top_p [0, 1], top_k >= 0   the same names (absent: the server's
                                   defaults, not Anthropic's temperature 1.0)
    stream                         stream, with stream_options {"include_usage": true} (the
                                   usage chunk gives message_delta its token counts)
    thinking {"type": enabled | adaptive | disabled}   chat_template_kwargs.enable_thinking
                                   True / True / False (unless given there); budget_tokens
                                   is checked but not enforced
    output_config.format {"type": "json_schema", "schema"}   response_format json_schema
    metadata, service_tier, container, inference_geo, speed, cache_control, ...   ignored
    pyllamacy's own sampling fields (seed, min_p, typical_p, repeat_penalty, presence_penalty,
    frequency_penalty, mirostat_*, logit_bias, grammar, chat_template_kwargs, lora, timeout,
    t_max_predict_ms, allow_unconstrained_patterns) pass through unchanged for the OpenAI
    route's own checks.

Checked here, each an AnthropicRequestError (a ValueError; `.param` is the field's path,
"messages[2].content[0].type"): model, max_tokens, messages non-empty, roles user / assistant
(a "system" message points to the top-level field), content non-empty except in a final
assistant message (Anthropic's rule), each block's type and required fields, unique tool_use
ids, a tool_result's tool_use_id naming an earlier tool_use, tools (name, unique, input_schema
an object schema), tool_choice (type, a "tool" naming one of the tools, any/tool needing
tools), the sampling ranges, stop_sequences, stream, thinking, output_config. Consecutive
messages of one role are passed on as they are (Anthropic merges them; the templates take them
as they come), and a conversation may begin with an assistant message (Anthropic accepts it).

Reply mapping (OpenAI -> Anthropic): finish_reason "stop" -> "end_turn" (or "stop_sequence"
when the caller says which of the request's stop_sequences ended the text), "length" ->
"max_tokens", "tool_calls" / "function_call" -> "tool_use", "content_filter" -> "refusal";
reasoning_content -> a first `thinking` block (signature ""), content -> a `text` block,
tool_calls -> `tool_use` blocks (the call's id, its arguments parsed; arguments that are not a
JSON object give input {}, as llama-server does); usage prompt / completion tokens ->
input_tokens / output_tokens.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Dict, List, Optional, Tuple

from .checks import FieldError, short

__all__ = ["AnthropicRequestError", "chat_request", "count_tokens_request", "message_response",
           "MessageStream", "stop_reason", "stop_sequence_hit", "count_tokens_response",
           "error_body", "error_event", "sse"]

Event = Tuple[str, Dict[str, Any]]

_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_USER_BLOCKS = ("text", "image", "tool_result")
_ASSISTANT_BLOCKS = ("text", "thinking", "redacted_thinking", "tool_use")
_TOOL_CHOICES = ("auto", "any", "tool", "none")
_THINKING_TYPES = ("enabled", "adaptive", "disabled")
# pyllamacy's OpenAI chat route takes these too; the route's request model checks them
_PASSTHROUGH = ("seed", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                "frequency_penalty", "mirostat_mode", "mirostat_tau", "mirostat_eta",
                "logit_bias", "grammar", "lora", "timeout", "t_max_predict_ms",
                "allow_unconstrained_patterns")
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                 "function_call": "tool_use", "content_filter": "refusal"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                422: "invalid_request_error", 429: "rate_limit_error", 500: "api_error",
                503: "overloaded_error", 529: "overloaded_error"}
_ANTHROPIC_ERROR_TYPES = set(_ERROR_TYPES.values())


class AnthropicRequestError(FieldError):
    """A bad field in an Anthropic Messages request: `param` is its path
    ("messages[2].content[0].type"), the message says what is wrong (and starts with it)."""

    def __init__(self, param: str, message: str):
        super().__init__(param, f"{param}: {message}")


# -- small checks ------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _text(value, path: str) -> str:
    if not isinstance(value, str):
        raise AnthropicRequestError(path, f"must be a string, got {short(value)}")
    return value


def _nonempty(value, path: str) -> str:
    """A non-empty string (ids, names, the model, stop sequences)."""
    if not isinstance(value, str) or not value:
        raise AnthropicRequestError(path, f"must be a non-empty string, got {short(value)}")
    return value


def _dict(value, path: str) -> dict:
    if not isinstance(value, dict):
        raise AnthropicRequestError(path, f"must be an object, got {short(value)}")
    return value


def _list(value, path: str) -> list:
    if not isinstance(value, list):
        raise AnthropicRequestError(path, f"must be a list, got {short(value)}")
    return value


def _range(body: dict, name: str, lo: float, hi: Optional[float]) -> None:
    v = body.get(name)
    if v is None:
        return
    if not _is_number(v) or v < lo or (hi is not None and v > hi):
        what = f"a number from {lo} to {hi}" if hi is not None else f"a number >= {lo}"
        raise AnthropicRequestError(name, f"must be {what}, got {short(v)}")


# -- request ---------------------------------------------------------------------------------

def chat_request(body: dict) -> dict:
    """An Anthropic Messages request -> the OpenAI chat request pyllamacy's chat route takes
    (see the module docstring for the mapping); AnthropicRequestError names a bad field."""
    return _convert(body, count_only=False)


def count_tokens_request(body: dict) -> dict:
    """A `/v1/messages/count_tokens` body -> the OpenAI chat request whose rendered prompt is
    counted: messages (with system), tools, tool_choice and thinking are converted and checked
    as for chat_request; max_tokens is not required and sampling fields are left out."""
    return _convert(body, count_only=True)


def _convert(body, count_only: bool) -> dict:
    if not isinstance(body, dict):
        raise AnthropicRequestError("body", f"the request must be a JSON object, got "
                                            f"{short(body)}")
    model = body.get("model")
    if model is None:
        raise AnthropicRequestError("model", "missing required parameter")
    _nonempty(model, "model")
    out: Dict[str, Any] = {"model": model}
    if not count_only:
        mt = body.get("max_tokens")
        if mt is None:
            raise AnthropicRequestError("max_tokens", "missing required parameter (the most "
                                                      "tokens to generate, >= 1)")
        if not _is_int(mt) or mt < 1:
            raise AnthropicRequestError("max_tokens", f"must be an integer >= 1, got "
                                                      f"{short(mt)}")
        out["max_tokens"] = mt
    out["messages"] = _messages(body)
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
    choice, parallel = _tool_choice(body.get("tool_choice"), tools)
    if choice is not None:
        out["tool_choice"] = choice
    if tools:
        out["parallel_tool_calls"] = parallel
    kwargs = _template_kwargs(body)
    if kwargs is not None:
        out["chat_template_kwargs"] = kwargs
    fmt = _response_format(body.get("output_config"))
    if fmt is not None:
        out["response_format"] = fmt
    meta = body.get("metadata")
    if meta is not None:
        _dict(meta, "metadata")            # ignored, as llama-server ignores it
    if count_only:
        return out
    _range(body, "temperature", 0.0, 1.0)
    _range(body, "top_p", 0.0, 1.0)
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise AnthropicRequestError("top_k", f"must be an integer >= 0, got {short(top_k)}")
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if stops is not None:
        for i, s in enumerate(_list(stops, "stop_sequences")):
            _nonempty(s, f"stop_sequences[{i}]")
        if stops:
            out["stop"] = list(stops)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise AnthropicRequestError("stream", f"must be true or false, got {short(stream)}")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    for name in _PASSTHROUGH:
        if name in body:
            out[name] = body[name]
    return out


def _system(system) -> Optional[str]:
    if system is None:
        return None
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise AnthropicRequestError("system", f"must be a string or a list of text blocks, "
                                              f"got {short(system)}")
    texts = []
    for j, b in enumerate(system):
        at = f"system[{j}]"
        _dict(b, at)
        if b.get("type") != "text":
            raise AnthropicRequestError(f"{at}.type", f"system blocks must be text blocks, "
                                                      f"got {short(b.get('type'))}")
        texts.append(_text(b.get("text"), f"{at}.text"))
    return "\n".join(texts)


def _image_part(block: dict, at: str) -> dict:
    src = _dict(block.get("source"), f"{at}.source")
    kind = src.get("type")
    if kind == "base64":
        mt = src.get("media_type")
        if mt not in _IMAGE_TYPES:
            raise AnthropicRequestError(f"{at}.source.media_type",
                                        f"must be one of {', '.join(_IMAGE_TYPES)}, got "
                                        f"{short(mt)}")
        data = _text(src.get("data"), f"{at}.source.data")
        if not data:
            raise AnthropicRequestError(f"{at}.source.data", "is empty")
        url = f"data:{mt};base64,{data}"
    elif kind == "url":
        url = _text(src.get("url"), f"{at}.source.url")
        if not url:
            raise AnthropicRequestError(f"{at}.source.url", "is empty")
    else:
        raise AnthropicRequestError(f"{at}.source.type",
                                    f"must be 'base64' or 'url' (files are not supported "
                                    f"here), got {short(kind)}")
    return {"type": "image_url", "image_url": {"url": url}}


def _content(parts: List[dict]):
    """OpenAI content of these parts: one text part alone is a plain string."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def _tool_result(block: dict, at: str, known_ids: set) -> dict:
    tid = block.get("tool_use_id")
    if not isinstance(tid, str) or not tid:
        raise AnthropicRequestError(f"{at}.tool_use_id", f"must be the id of a tool_use block, "
                                                         f"got {short(tid)}")
    if tid not in known_ids:
        raise AnthropicRequestError(f"{at}.tool_use_id",
                                    f"{short(tid)} matches no tool_use block of an earlier "
                                    f"assistant message")
    is_error = block.get("is_error", False)
    if is_error is not None and not isinstance(is_error, bool):
        raise AnthropicRequestError(f"{at}.is_error", f"must be true or false, got "
                                                      f"{short(is_error)}")
    raw = block.get("content")
    if raw is None or isinstance(raw, str):
        content: Any = raw or ""
        if is_error:
            content = f"Error: {content}"
    else:
        parts = []
        for k, c in enumerate(_list(raw, f"{at}.content")):
            cat = f"{at}.content[{k}]"
            _dict(c, cat)
            typ = c.get("type")
            if typ == "text":
                parts.append({"type": "text", "text": _text(c.get("text"), f"{cat}.text")})
            elif typ == "image":
                parts.append(_image_part(c, cat))
            else:
                raise AnthropicRequestError(f"{cat}.type",
                                            f"a tool_result's content blocks must be 'text' or "
                                            f"'image', got {short(typ)}")
        if all(p["type"] == "text" for p in parts):
            content = "\n".join(p["text"] for p in parts)
            if is_error:
                content = f"Error: {content}"
        else:
            content = ([{"type": "text", "text": "Error:"}] if is_error else []) + parts
    return {"role": "tool", "tool_call_id": tid, "content": content}


def _user(blocks: list, at: str, known_ids: set) -> List[dict]:
    out: List[dict] = []
    parts: List[dict] = []

    def flush():
        if parts:
            out.append({"role": "user", "content": _content(list(parts))})
            parts.clear()

    for j, b in enumerate(blocks):
        bat = f"{at}.content[{j}]"
        typ = _block_type(b, bat, _USER_BLOCKS, "user")
        if typ == "text":
            parts.append({"type": "text", "text": _text(b.get("text"), f"{bat}.text")})
        elif typ == "image":
            parts.append(_image_part(b, bat))
        else:                                           # tool_result: a tool message, in order
            flush()
            out.append(_tool_result(b, bat, known_ids))
    flush()
    return out


def _assistant(blocks: list, at: str, known_ids: set) -> dict:
    parts: List[dict] = []
    calls: List[dict] = []
    reasoning: List[str] = []
    for j, b in enumerate(blocks):
        bat = f"{at}.content[{j}]"
        typ = _block_type(b, bat, _ASSISTANT_BLOCKS, "assistant")
        if typ == "text":
            parts.append({"type": "text", "text": _text(b.get("text"), f"{bat}.text")})
        elif typ == "thinking":
            reasoning.append(_text(b.get("thinking"), f"{bat}.thinking"))
        elif typ == "tool_use":
            tid = _nonempty(b.get("id"), f"{bat}.id")
            if tid in known_ids:
                raise AnthropicRequestError(f"{bat}.id", f"tool_use ids must be unique; "
                                                         f"{short(tid)} is used twice")
            name = _nonempty(b.get("name"), f"{bat}.name")
            args = _dict(b.get("input"), f"{bat}.input")
            known_ids.add(tid)
            calls.append({"id": tid, "type": "function",
                          "function": {"name": name,
                                       "arguments": json.dumps(args, ensure_ascii=False)}})
        # redacted_thinking: dropped
    msg: Dict[str, Any] = {"role": "assistant",
                           "content": _content(parts) if parts else (None if calls else "")}
    if calls:
        msg["tool_calls"] = calls
    if reasoning:
        msg["reasoning_content"] = "\n".join(reasoning)
    return msg


def _block_type(b, at: str, allowed: Tuple[str, ...], role: str) -> str:
    _dict(b, at)
    typ = b.get("type")
    if typ in allowed:
        return typ
    if typ is None:
        raise AnthropicRequestError(f"{at}.type", "missing required parameter")
    other = _ASSISTANT_BLOCKS if role == "user" else _USER_BLOCKS
    if typ in other:
        raise AnthropicRequestError(f"{at}.type", f"a {typ!r} block cannot be in a {role} "
                                                  f"message (allowed: {', '.join(allowed)})")
    raise AnthropicRequestError(f"{at}.type", f"unknown or unsupported block type "
                                              f"{short(typ)} (supported in {role} messages: "
                                              f"{', '.join(allowed)})")


def _messages(body: dict) -> List[dict]:
    out: List[dict] = []
    system = _system(body.get("system"))
    if system is not None:
        out.append({"role": "system", "content": system})
    messages = body.get("messages")
    if messages is None:
        raise AnthropicRequestError("messages", "missing required parameter")
    _list(messages, "messages")
    if not messages:
        raise AnthropicRequestError("messages", "must hold at least one message")
    known_ids: set = set()
    last = len(messages) - 1
    for i, m in enumerate(messages):
        at = f"messages[{i}]"
        _dict(m, at)
        role = m.get("role")
        if role not in ("user", "assistant"):
            hint = " (a system prompt is the top-level 'system' parameter)" \
                if role == "system" else ""
            raise AnthropicRequestError(f"{at}.role", f"must be 'user' or 'assistant', got "
                                                      f"{short(role)}{hint}")
        if "content" not in m:
            raise AnthropicRequestError(f"{at}.content", "missing required parameter")
        content = m["content"]
        if not isinstance(content, (str, list)):
            raise AnthropicRequestError(f"{at}.content", f"must be a string or a list of "
                                                         f"content blocks, got {short(content)}")
        if not content and not (role == "assistant" and i == last):
            raise AnthropicRequestError(f"{at}.content",
                                        "must not be empty (only a final assistant message "
                                        "may be)")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif role == "user":
            out.extend(_user(content, at, known_ids))
        else:
            out.append(_assistant(content, at, known_ids))
    return out


def _tools(tools) -> List[dict]:
    if tools is None:
        return []
    out = []
    names = set()
    for i, t in enumerate(_list(tools, "tools")):
        at = f"tools[{i}]"
        _dict(t, at)
        typ = t.get("type")
        if typ not in (None, "custom"):
            raise AnthropicRequestError(f"{at}.type",
                                        f"only client tools (type 'custom' or none) are "
                                        f"supported; server tools such as {short(typ)} are not")
        name = _nonempty(t.get("name"), f"{at}.name")
        if name in names:
            raise AnthropicRequestError(f"{at}.name", f"tool names must be unique; "
                                                      f"{name!r} is given twice")
        names.add(name)
        if "input_schema" not in t:
            raise AnthropicRequestError(f"{at}.input_schema", "missing required parameter")
        schema = _dict(t["input_schema"], f"{at}.input_schema")
        if schema.get("type") != "object":
            raise AnthropicRequestError(f"{at}.input_schema.type",
                                        f"must be 'object', got {short(schema.get('type'))}")
        fn: Dict[str, Any] = {"name": name}
        desc = t.get("description")
        if desc is not None:
            fn["description"] = _text(desc, f"{at}.description")
        fn["parameters"] = schema
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice, tools: List[dict]):
    """-> (OpenAI tool_choice or None, parallel_tool_calls)."""
    if choice is None:
        return None, True
    _dict(choice, "tool_choice")
    typ = choice.get("type")
    if typ not in _TOOL_CHOICES:
        raise AnthropicRequestError("tool_choice.type", f"must be one of "
                                                        f"{', '.join(_TOOL_CHOICES)}, got "
                                                        f"{short(typ)}")
    dis = choice.get("disable_parallel_tool_use", False)
    if dis is not None and not isinstance(dis, bool):
        raise AnthropicRequestError("tool_choice.disable_parallel_tool_use",
                                    f"must be true or false, got {short(dis)}")
    if typ in ("any", "tool") and not tools:
        raise AnthropicRequestError("tool_choice", f"tool_choice {typ!r} needs tools")
    if typ == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise AnthropicRequestError("tool_choice.name", f"must name a tool, got "
                                                            f"{short(name)}")
        names = [t["function"]["name"] for t in tools]
        if name not in names:
            raise AnthropicRequestError("tool_choice.name", f"{name!r} is not one of the tools "
                                                            f"({', '.join(names)})")
        return {"type": "function", "function": {"name": name}}, not dis
    return {"auto": "auto", "any": "required", "none": "none"}[typ], not dis


def _template_kwargs(body: dict) -> Optional[dict]:
    given = body.get("chat_template_kwargs")
    kwargs = dict(_dict(given, "chat_template_kwargs")) if given is not None else None
    thinking = body.get("thinking")
    if thinking is None:
        return kwargs
    _dict(thinking, "thinking")
    typ = thinking.get("type")
    if typ not in _THINKING_TYPES:
        raise AnthropicRequestError("thinking.type", f"must be one of "
                                                     f"{', '.join(_THINKING_TYPES)}, got "
                                                     f"{short(typ)}")
    budget = thinking.get("budget_tokens")
    if typ == "enabled":
        if budget is None:
            raise AnthropicRequestError("thinking.budget_tokens",
                                        "missing required parameter (thinking 'enabled')")
        if not _is_int(budget) or budget < 1:
            raise AnthropicRequestError("thinking.budget_tokens",
                                        f"must be an integer >= 1, got {short(budget)}")
    kwargs = kwargs or {}
    kwargs.setdefault("enable_thinking", typ != "disabled")
    return kwargs


def _response_format(config) -> Optional[dict]:
    if config is None:
        return None
    _dict(config, "output_config")
    fmt = config.get("format")
    if fmt is None:
        return None
    _dict(fmt, "output_config.format")
    if fmt.get("type") != "json_schema":
        raise AnthropicRequestError("output_config.format.type",
                                    f"must be 'json_schema', got {short(fmt.get('type'))}")
    schema = _dict(fmt.get("schema"), "output_config.format.schema")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


# -- reply -----------------------------------------------------------------------------------

def stop_reason(finish_reason: Optional[str], stop_sequence: Optional[str] = None) -> str:
    """OpenAI's finish_reason -> Anthropic's stop_reason; `stop_sequence`: the request's stop
    sequence that ended the text, if one did."""
    if finish_reason == "stop" and stop_sequence:
        return "stop_sequence"
    return _STOP_REASONS.get(finish_reason or "stop", "end_turn")


def stop_sequence_hit(body: dict, hit: Optional[str]) -> Optional[str]:
    """The stop string that ended the text (pipeline.text's TokenText.stop_hit) if it is one of
    the request's stop_sequences; None for a template's own end markers and the like."""
    stops = body.get("stop_sequences") if isinstance(body, dict) else None
    return hit if hit and isinstance(stops, list) and hit in stops else None


def _message_id(chat_id: Optional[str] = None) -> str:
    if isinstance(chat_id, str) and chat_id.startswith("chatcmpl-") and len(chat_id) > 9:
        return "msg_" + chat_id[9:].replace("-", "")
    return "msg_" + uuid.uuid4().hex


def _tool_input(arguments) -> dict:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _usage(use: Optional[dict]) -> Dict[str, int]:
    use = use or {}
    return {"input_tokens": int(use.get("prompt_tokens") or 0),
            "output_tokens": int(use.get("completion_tokens") or 0)}


def message_response(chat: dict, model: str, stop_sequence: Optional[str] = None) -> dict:
    """An OpenAI chat.completion dict (its first choice) -> an Anthropic `Message`.
    `stop_sequence`: which of the request's stop_sequences ended the text (stop_sequence_hit),
    None when none did or it is not known."""
    choices = chat.get("choices") if isinstance(chat, dict) else None
    if not choices:
        raise ValueError("the chat completion has no choices")
    choice = choices[0]
    msg = choice.get("message") or {}
    content: List[dict] = []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"],
                        "signature": ""})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or _tool_id(),
                        "name": fn.get("name", ""), "input": _tool_input(fn.get("arguments"))})
    finish = choice.get("finish_reason")
    reason = stop_reason(finish, stop_sequence)
    return {"id": _message_id(chat.get("id")), "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": reason,
            "stop_sequence": stop_sequence if reason == "stop_sequence" else None,
            "usage": _usage(chat.get("usage"))}


def count_tokens_response(n_tokens: int) -> dict:
    """The body of a count_tokens answer."""
    return {"input_tokens": int(n_tokens)}


def _tool_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def error_body(status: int, message: str, type_: Optional[str] = None) -> dict:
    """Anthropic's error object ({"type": "error", "error": {"type", "message"}}) for an HTTP
    status (400 invalid_request_error, 404 not_found_error, 500 api_error, ...)."""
    if type_ not in _ANTHROPIC_ERROR_TYPES:
        type_ = _ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500
                                 else "api_error")
    return {"type": "error", "error": {"type": type_, "message": message}}


def error_event(message: str, type_: str = "api_error") -> Event:
    """The `error` stream event (what Anthropic sends when a stream fails midway)."""
    return ("error", error_body(500, message, type_))


def sse(event: str, data: dict) -> bytes:
    """One server-sent event frame: "event: NAME\\ndata: JSON\\n\\n"."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode("utf-8")


class MessageStream:
    """OpenAI chat.completion.chunk dicts -> Anthropic's stream events, in Anthropic's order:

        message_start, then per content block content_block_start, its deltas (text_delta,
        thinking_delta then signature_delta, input_json_delta), content_block_stop -- one
        block at a time, a ping after the first block opens -- then message_delta (stop_reason,
        stop_sequence, usage) and message_stop. An error chunk ({"error": {...}}) gives the
        `error` event and ends the stream.

    Text, reasoning and each tool call (by its OpenAI index) are blocks; a block is closed when
    another opens. A tool call's first delta carries its id and name (as OpenAI and
    pyllamacy.chat.ChatDeltas send them): the tool_use block starts with them. Input tokens: `input_tokens` (known before generation), replaced by the
    usage chunk's prompt_tokens when one comes (message_delta then carries them too).

        ms = MessageStream(model, input_tokens=n_prompt)
        for chunk in openai_chunks: events += ms.feed(chunk)
        events += ms.finish()            # or finish(usage, stop_sequence=...)
    """

    def __init__(self, model: str, input_tokens: int = 0, message_id: Optional[str] = None):
        self.model = model
        self.id = message_id
        self.input_tokens = int(input_tokens)
        self.output_tokens = 0
        self._usage_seen = False
        self._started = False
        self._ended = False
        self._pinged = False
        self._n_blocks = 0
        self._open: Optional[tuple] = None          # key of the open block
        self._open_index = -1
        self._open_kind = ""
        self._tool_blocks: Dict[int, int] = {}      # OpenAI tool-call index -> block index
        self._finish_reason: Optional[str] = None

    @property
    def ended(self) -> bool:
        """message_stop or an error event was emitted; later calls emit nothing."""
        return self._ended

    def _start(self, chunk_id=None) -> List[Event]:
        if self._started:
            return []
        self._started = True
        if self.id is None:
            self.id = _message_id(chunk_id)
        message = {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}
        return [("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> List[Event]:
        if self._open is None:
            return []
        out: List[Event] = []
        if self._open_kind == "thinking":
            # Anthropic ends a thinking block with its signature (none here: a local model)
            out.append(self._delta(self._open_index, {"type": "signature_delta",
                                                      "signature": ""}))
        out.append(("content_block_stop", {"type": "content_block_stop",
                                           "index": self._open_index}))
        self._open = None
        return out

    def _open_block(self, key: tuple, block: dict) -> List[Event]:
        out = self._close()
        self._open, self._open_index, self._open_kind = key, self._n_blocks, block["type"]
        self._n_blocks += 1
        out.append(("content_block_start", {"type": "content_block_start",
                                            "index": self._open_index,
                                            "content_block": block}))
        if not self._pinged:
            self._pinged = True
            out.append(("ping", {"type": "ping"}))
        return out

    @staticmethod
    def _delta(index: int, delta: dict) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": index,
                                        "delta": delta})

    def _kind_delta(self, kind: str, delta: dict) -> List[Event]:
        """A text / thinking delta: on the open block of that kind, else on a new block."""
        out: List[Event] = []
        if self._open is None or self._open[0] != kind:
            empty = {"type": "text", "text": ""} if kind == "text" else \
                {"type": "thinking", "thinking": "", "signature": ""}
            out += self._open_block((kind, self._n_blocks), empty)
        out.append(self._delta(self._open_index, delta))
        return out

    def _tool_delta(self, tc: dict) -> List[Event]:
        out: List[Event] = []
        i = tc.get("index", 0)
        fn = tc.get("function") or {}
        if i not in self._tool_blocks:
            out += self._open_block(("tool", i), {"type": "tool_use",
                                                  "id": tc.get("id") or _tool_id(),
                                                  "name": fn.get("name") or "", "input": {}})
            self._tool_blocks[i] = self._open_index
        args = fn.get("arguments")
        if args:
            # a later piece of a call whose block was closed stays on that block's index
            # (pyllamacy's ChatDeltas finishes one call before the next starts)
            out.append(self._delta(self._tool_blocks[i], {"type": "input_json_delta",
                                                          "partial_json": args}))
        return out

    def feed(self, chunk: dict) -> List[Event]:
        """One OpenAI chunk (a choice's delta, the usage chunk, or an error body) -> events."""
        if self._ended:
            return []
        if "error" in chunk:
            err = chunk.get("error") or {}
            message = err.get("message") if isinstance(err, dict) else str(err)
            etype = err.get("type") if isinstance(err, dict) else None
            self._ended = True
            return [("error", error_body(500, str(message or "generation failed"),
                                         etype if etype in _ANTHROPIC_ERROR_TYPES
                                         else "api_error"))]
        out = self._start(chunk.get("id"))
        use = chunk.get("usage")
        if use:
            self._usage_seen = True
            self.input_tokens = int(use.get("prompt_tokens") or 0)
            self.output_tokens = int(use.get("completion_tokens") or 0)
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                raise ValueError("MessageStream takes one choice (index 0); got choice "
                                 f"{choice.get('index')}")
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                out += self._kind_delta("thinking", {"type": "thinking_delta",
                                                     "thinking": delta["reasoning_content"]})
            if delta.get("content"):
                out += self._kind_delta("text", {"type": "text_delta",
                                                 "text": delta["content"]})
            for tc in delta.get("tool_calls") or []:
                out += self._tool_delta(tc)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def finish(self, usage: Optional[dict] = None,
               stop_sequence: Optional[str] = None) -> List[Event]:
        """The end: the open block's stop, message_delta (stop_reason from the last
        finish_reason, `stop_sequence` as in message_response; output tokens from `usage`, an
        OpenAI usage dict, else from the usage chunk fed) and message_stop."""
        if self._ended:
            return []
        out = self._start()
        out += self._close()
        if usage:
            self._usage_seen = True
            self.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.output_tokens = int(usage.get("completion_tokens") or 0)
        reason = stop_reason(self._finish_reason, stop_sequence)
        counts: Dict[str, int] = {"output_tokens": self.output_tokens}
        if self._usage_seen:
            counts["input_tokens"] = self.input_tokens
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": reason,
                                                "stop_sequence": stop_sequence
                                                if reason == "stop_sequence" else None},
                                      "usage": counts}))
        out.append(("message_stop", {"type": "message_stop"}))
        self._ended = True
        return out

    def fail(self, message: str, type_: str = "api_error") -> List[Event]:
        """The `error` event for a failure the caller met itself (the stream ends)."""
        if self._ended:
            return []
        self._ended = True
        return [error_event(message, type_)]
