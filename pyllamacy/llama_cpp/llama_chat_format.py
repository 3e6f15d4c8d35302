"""``llama_cpp.llama_chat_format``: chat formatters and chat completion handlers.

What it holds, by llama-cpp-python's names:

- the handler registry (LlamaChatCompletionHandlerRegistry, register_chat_completion_handler,
  get_chat_completion_handler) and register_chat_format, which also makes the name usable as
  ``Llama(chat_format=name)`` (through pyllamacy.chat.register_chat_format);
- the function-style formats format_llama2, format_chatml, ... (in prompt_formats: the exact
  prompts llama-cpp-python builds), registered under their names. Names for which pyllamacy
  has a Jinja template of its own (pyllamacy.chat_formats: "chatml", "llama-2", ...) keep that
  template for ``Llama(chat_format=...)``, which can also render tools; the others ("phind",
  "snoozy", "saiga", ...) become usable there through these functions;
- Jinja2ChatFormatter and the hf_* constructors, which render with llama.cpp's own Jinja engine
  in pyllamacy's sandbox (pyllamacy.chat.render_chat), the engine that renders a model's
  template everywhere else in pyllamacy (no jinja2 dependency);
- chat_formatter_to_chat_completion_handler, which generates with Llama.complete_chat;
- chatml_function_calling: ChatML with tool calls through pyllamacy's chat layer;
- the multimodal handler names (pyllamacy.chat_multimodal: one handler, the model's own
  template decides the format).

Not provided: the functionary handlers (functionary models carry their own chat template,
which pyllamacy uses by default; "functionary" as chat_format= is pyllamacy's ChatML template).
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Union

from .. import chat as _chat_layer
from ..chat import ChatFormatterResponse, ChatRequest, render_chat
from ..chat_formats import get_chat_template
from ..chat_multimodal import (Llama3VisionAlphaChatHandler, Llava15ChatHandler,  # noqa: F401
                               Llava16ChatHandler, MiniCPMv26ChatHandler, MoondreamChatHandler,
                               MultimodalChatHandler, NanoLlavaChatHandler, Qwen25VLChatHandler)
from ..grammars import schema_to_grammar
from ..llama_types import LlamaGrammar, StoppingCriteriaList
from . import prompt_formats
from ._gbnf_texts import JSON_GBNF
from .prompt_formats import (format_alpaca, format_baichuan, format_baichuan2,  # noqa: F401
                              format_chatglm3, format_chatml, format_gemma, format_intel,
                              format_llama2, format_llama3, format_mistral_instruct,
                              format_mistrallite, format_oasst_llama, format_open_orca,
                              format_openbuddy, format_openchat, format_phind, format_pygmalion,
                              format_qwen, format_redpajama_incite, format_saiga, format_snoozy,
                              format_vicuna, format_zephyr)

__all__ = [
    "CHATML_CHAT_TEMPLATE", "CHATML_BOS_TOKEN", "CHATML_EOS_TOKEN",
    "MISTRAL_INSTRUCT_CHAT_TEMPLATE", "MISTRAL_INSTRUCT_BOS_TOKEN", "MISTRAL_INSTRUCT_EOS_TOKEN",
    "MIXTRAL_INSTRUCT_CHAT_TEMPLATE", "LLAMA3_INSTRUCT_CHAT_TEMPLATE",
    "LlamaChatCompletionHandler", "LlamaChatCompletionHandlerNotFoundException",
    "LlamaChatCompletionHandlerRegistry", "get_chat_completion_handler",
    "register_chat_completion_handler", "ChatFormatterResponse", "ChatFormatter",
    "Jinja2ChatFormatter", "chat_formatter_to_chat_completion_handler",
    "hf_autotokenizer_to_chat_formatter", "hf_autotokenizer_to_chat_completion_handler",
    "hf_tokenizer_config_to_chat_formatter", "hf_tokenizer_config_to_chat_completion_handler",
    "guess_chat_format_from_gguf_metadata", "register_chat_format", "chatml_function_calling",
    *[f.__name__ for f in prompt_formats.FORMATS.values()], "format",
    "Llava15ChatHandler", "Llava16ChatHandler", "MoondreamChatHandler", "NanoLlavaChatHandler",
    "Llama3VisionAlphaChatHandler", "Llama3VisionAlpha", "MiniCPMv26ChatHandler",
    "Qwen25VLChatHandler", "MTMDChatHandler", "Gemma4ChatHandler", "ObsidianChatHandler",
]

# The Hugging Face templates llama-cpp-python recognises in GGUF metadata (a model's
# tokenizer.chat_template equal to one of them gets that chat_format name).
CHATML_CHAT_TEMPLATE = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"  # noqa: E501
CHATML_BOS_TOKEN = "<s>"
CHATML_EOS_TOKEN = "<|im_end|>"
MISTRAL_INSTRUCT_CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"  # noqa: E501
MISTRAL_INSTRUCT_BOS_TOKEN = "<s>"
MISTRAL_INSTRUCT_EOS_TOKEN = "</s>"
MIXTRAL_INSTRUCT_CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"  # noqa: E501
LLAMA3_INSTRUCT_CHAT_TEMPLATE = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"  # noqa: E501


# -- handlers and their registry ------------------------------------------------------------------

class LlamaChatCompletionHandler(Protocol):
    """What ``Llama(chat_handler=...)`` calls: handler(llama=, messages=, functions=, tools=,
    tool_choice=, temperature=, ..., stream=, **kwargs) -> a chat completion dict, or an
    iterator of chunks when stream=True (see pyllamacy.chat.create_chat_completion)."""

    def __call__(self, *, llama: Any, messages: List[dict], **kwargs: Any
                 ) -> Union[dict, Iterator[dict]]: ...


class LlamaChatCompletionHandlerNotFoundException(LookupError):
    """No handler is registered under that name."""


class LlamaChatCompletionHandlerRegistry:
    """The process-wide name -> handler registry (every instance shares it)."""

    _chat_handlers: Dict[str, LlamaChatCompletionHandler] = {}

    def register_chat_completion_handler(self, name: str,
                                         chat_handler: LlamaChatCompletionHandler,
                                         overwrite: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a chat handler name must be a non-empty string")
        if not callable(chat_handler):
            raise TypeError(f"chat_handler must be callable, got {type(chat_handler).__name__}")
        if not overwrite and name in self._chat_handlers:
            raise ValueError(f"a chat handler named {name!r} is already registered; pass "
                             "overwrite=True to replace it")
        self._chat_handlers[name] = chat_handler

    def unregister_chat_handler(self, name: str) -> None:
        if name not in self._chat_handlers:
            raise ValueError(f"no chat handler is registered under {name!r}")
        del self._chat_handlers[name]

    def get_chat_completion_handler_by_name(self, name: str) -> LlamaChatCompletionHandler:
        try:
            return self._chat_handlers[name]
        except KeyError:
            raise LlamaChatCompletionHandlerNotFoundException(
                f"no chat handler {name!r} (registered: {sorted(self._chat_handlers)})") from None

    def names(self) -> List[str]:
        return sorted(self._chat_handlers)


def get_chat_completion_handler(name: str) -> LlamaChatCompletionHandler:
    return LlamaChatCompletionHandlerRegistry().get_chat_completion_handler_by_name(name)


def register_chat_completion_handler(name: str):
    """Decorator: register a chat completion handler under `name`."""
    def decorator(f: LlamaChatCompletionHandler) -> LlamaChatCompletionHandler:
        LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(name, f)
        return f
    return decorator


# -- formatters -------------------------------------------------------------------------------------

class ChatFormatter(Protocol):
    """formatter(messages=, **kwargs) -> ChatFormatterResponse (prompt, stop, ...)."""

    def __call__(self, *, messages: List[dict], **kwargs: Any) -> ChatFormatterResponse: ...


def _check_messages(messages) -> List[dict]:
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if "role" not in m:
            raise ValueError(f"messages[{i}] has no 'role'")
    return list(messages)


class Jinja2ChatFormatter:
    """A chat formatter from a Jinja chat template (a model's tokenizer.chat_template).

    Rendered by llama.cpp's Jinja engine in pyllamacy's sandbox, with messages, bos_token,
    eos_token, add_generation_prompt, tools, raise_exception and strftime_now, as
    llama-cpp-python renders it with jinja2; other keyword arguments of a call are template
    variables. With tools, llama.cpp's chat layer renders them: a template that has no
    tool-call format of its own gets them described in a system message (as llama-server
    does). The response's stop is [eos_token]; with stop_token_ids, its stopping_criteria
    stops on any of them.
    """

    def __init__(self, template: str, eos_token: str, bos_token: str,
                 add_generation_prompt: bool = True, stop_token_ids: Optional[List[int]] = None):
        if not isinstance(template, str) or not template.strip():
            raise ValueError("template must be a non-empty Jinja chat template string")
        self.template = template
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.add_generation_prompt = add_generation_prompt
        self.stop_token_ids = set(stop_token_ids) if stop_token_ids is not None else None

    def render(self, messages: List[dict], *, tools=None, add_generation_prompt=None,
               **variables: Any) -> str:
        """The prompt text alone."""
        answer = render_chat(
            self.template, _check_messages(messages), bos_token=self.bos_token or "",
            eos_token=self.eos_token or "", tools=tools or None,
            add_generation_prompt=(self.add_generation_prompt if add_generation_prompt is None
                                   else add_generation_prompt),
            chat_template_kwargs={k: v for k, v in variables.items() if v is not None} or None)
        return answer["prompt"]

    def __call__(self, *, messages: List[dict], functions=None, function_call=None, tools=None,
                 tool_choice=None, **kwargs: Any) -> ChatFormatterResponse:
        if tools is None and functions:
            tools = [{"type": "function", "function": f} for f in functions]
        prompt = self.render(messages, tools=tools, **_template_variables(kwargs))
        criteria = None
        if self.stop_token_ids is not None:
            ids = self.stop_token_ids
            criteria = StoppingCriteriaList([lambda tokens, logits: int(tokens[-1]) in ids])
        return ChatFormatterResponse(prompt=prompt, stop=[self.eos_token],
                                     stopping_criteria=criteria, added_special=True)

    def to_chat_handler(self) -> LlamaChatCompletionHandler:
        return chat_formatter_to_chat_completion_handler(self)


# the sampling arguments a handler passes on to its formatter, which are not template variables
_HANDLER_ARGS = {"temperature", "top_p", "top_k", "min_p", "typical_p", "stream", "stop", "seed",
                 "response_format", "max_tokens", "presence_penalty", "frequency_penalty",
                 "repeat_penalty", "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta",
                 "model", "logits_processor", "grammar", "logit_bias", "logprobs",
                 "top_logprobs", "llama", "stopping_criteria", "parallel_tool_calls",
                 "allow_unconstrained_patterns"}


def _template_variables(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k not in _HANDLER_ARGS}
    extra = out.pop("chat_template_kwargs", None) or {}
    return {**extra, **out}


def _token_text(value: Any, what: str) -> str:
    if isinstance(value, dict):                   # {"content": "<s>", "lstrip": ...}
        value = value.get("content")
    if not isinstance(value, str):
        raise ValueError(f"tokenizer_config[{what!r}] must be a string (or a dict with "
                         f"'content'), got {type(value).__name__}")
    return value


def hf_tokenizer_config_to_chat_formatter(tokenizer_config: Dict[str, Any],
                                          add_generation_prompt: bool = True) -> ChatFormatter:
    """A formatter from a Hugging Face tokenizer_config.json dict (chat_template, bos_token,
    eos_token). As in llama-cpp-python, add_generation_prompt appends an empty assistant
    message to the conversation; stop is [eos_token, bos_token]."""
    if not isinstance(tokenizer_config, dict):
        raise TypeError("tokenizer_config must be a dict (a parsed tokenizer_config.json)")
    for key in ("chat_template", "bos_token", "eos_token"):
        if key not in tokenizer_config:
            raise ValueError(f"tokenizer_config has no {key!r}")
    template = tokenizer_config["chat_template"]
    if not isinstance(template, str):
        raise ValueError("tokenizer_config['chat_template'] must be a string (a template "
                         "list with names is not supported)")
    bos = _token_text(tokenizer_config["bos_token"], "bos_token")
    eos = _token_text(tokenizer_config["eos_token"], "eos_token")
    jinja = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos,
                                add_generation_prompt=False)

    def format_tokenizer_config(messages: List[dict], **kwargs: Any) -> ChatFormatterResponse:
        msgs = _check_messages(messages)
        if add_generation_prompt:
            msgs = msgs + [{"role": "assistant", "content": ""}]
        prompt = jinja.render(msgs, **_template_variables(kwargs))
        return ChatFormatterResponse(prompt=prompt, stop=[eos, bos], added_special=True)

    return format_tokenizer_config


def hf_tokenizer_config_to_chat_completion_handler(
        tokenizer_config: Dict[str, Any],
        add_generation_prompt: bool = True) -> LlamaChatCompletionHandler:
    return chat_formatter_to_chat_completion_handler(
        hf_tokenizer_config_to_chat_formatter(tokenizer_config, add_generation_prompt))


def hf_autotokenizer_to_chat_formatter(pretrained_model_name_or_path) -> ChatFormatter:
    """A formatter that renders with transformers' AutoTokenizer.apply_chat_template (needs
    the `transformers` package)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ImportError("hf_autotokenizer_to_chat_formatter needs the `transformers` "
                          "package: pip install transformers") from e
    tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path)

    def format_autotokenizer(messages: List[dict], **kwargs: Any) -> ChatFormatterResponse:
        tokenizer.use_default_system_prompt = False
        prompt = tokenizer.apply_chat_template(_check_messages(messages), tokenize=False,
                                               **_template_variables(kwargs))
        if not isinstance(prompt, str):
            raise TypeError("apply_chat_template(tokenize=False) did not return a string")
        return ChatFormatterResponse(prompt=prompt, stop=tokenizer.eos_token, added_special=True)

    return format_autotokenizer


def hf_autotokenizer_to_chat_completion_handler(
        pretrained_model_name_or_path) -> LlamaChatCompletionHandler:
    return chat_formatter_to_chat_completion_handler(
        hf_autotokenizer_to_chat_formatter(pretrained_model_name_or_path))


def guess_chat_format_from_gguf_metadata(metadata: Dict[str, str]) -> Optional[str]:
    """The chat_format name whose Hugging Face template equals the GGUF's
    tokenizer.chat_template ("chatml", "mistral-instruct", "llama-3"), else None."""
    template = metadata.get("tokenizer.chat_template")
    if template is None:
        return None
    if template == CHATML_CHAT_TEMPLATE:
        return "chatml"
    if template in (MISTRAL_INSTRUCT_CHAT_TEMPLATE, MIXTRAL_INSTRUCT_CHAT_TEMPLATE):
        return "mistral-instruct"
    if template == LLAMA3_INSTRUCT_CHAT_TEMPLATE:
        return "llama-3"
    return None


# -- a formatter as a handler --------------------------------------------------------------------------

def _forced_tool(tools, functions, tool_choice, function_call) -> Optional[dict]:
    if tools is None and functions is not None:
        tools = [{"type": "function", "function": f} for f in functions]
    if tool_choice is None and isinstance(function_call, dict) and function_call.get("name"):
        tool_choice = {"type": "function", "function": {"name": function_call["name"]}}
    if not isinstance(tool_choice, dict) or not tools:
        return None
    name = (tool_choice.get("function") or {}).get("name")
    for t in tools:
        if (t.get("function") or {}).get("name") == name:
            return t["function"]
    raise ValueError(f"tool_choice names {name!r}, which is not in tools")


def _format_grammar(response_format, forced: Optional[dict], grammar):
    if forced is not None:
        return LlamaGrammar.from_string(schema_to_grammar(
            forced.get("parameters") or {"type": "object"}))
    if not isinstance(response_format, dict):
        return grammar
    kind = response_format.get("type")
    schema = None
    if kind == "json_object":
        schema = response_format.get("schema")
        if schema is None:
            return LlamaGrammar.from_string(JSON_GBNF)
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is None:
            raise ValueError("response_format json_schema needs json_schema.schema")
    else:
        return grammar
    return LlamaGrammar.from_string(schema_to_grammar(schema))


def _as_tool_call(response: dict, name: str) -> dict:
    """A chat completion whose content is the forced tool's arguments -> a tool call."""
    call_id = "call_" + uuid.uuid4().hex[:24]
    for choice in response["choices"]:
        msg = choice["message"]
        msg["tool_calls"] = [{"id": call_id, "type": "function",
                              "function": {"name": name, "arguments": msg.get("content") or ""}}]
        msg["content"] = None
        choice["finish_reason"] = "tool_calls"
    return response


def _as_tool_call_chunks(chunks: Iterator[dict], name: str) -> Iterator[dict]:
    call_id = "call_" + uuid.uuid4().hex[:24]
    started = False
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice.get("delta") or {}
            text = delta.pop("content", None)
            if text:
                fn = {"arguments": text}
                call = {"index": 0, "function": fn}
                if not started:
                    call.update(id=call_id, type="function")
                    fn["name"] = name
                    started = True
                delta["tool_calls"] = [call]
            if choice.get("finish_reason") is not None:
                choice["finish_reason"] = "tool_calls"
        yield chunk


def chat_formatter_to_chat_completion_handler(
        chat_formatter: ChatFormatter) -> LlamaChatCompletionHandler:
    """A handler that renders with `chat_formatter` and generates with the Llama: the reply is
    plain content; response_format constrains it to JSON; a tool_choice naming one function
    constrains it to that function's parameters and returns it as a tool call."""

    def chat_completion_handler(*, llama, messages, functions=None, function_call=None,
                                tools=None, tool_choice=None, temperature: float = 0.2,
                                top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                                typical_p: float = 1.0, stream: bool = False, stop=None,
                                seed=None, response_format=None, max_tokens=None,
                                presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                                repeat_penalty: float = 1.1, tfs_z: float = 1.0,
                                mirostat_mode: int = 0, mirostat_tau: float = 5.0,
                                mirostat_eta: float = 0.1, model=None, logits_processor=None,
                                grammar=None, logit_bias=None, logprobs=None, top_logprobs=None,
                                stopping_criteria=None, **kwargs):
        result = chat_formatter(messages=messages, functions=functions,
                                function_call=function_call, tools=tools,
                                tool_choice=tool_choice, **kwargs)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if result.stop is not None:
            stops += [result.stop] if isinstance(result.stop, str) else list(result.stop)
        forced = _forced_tool(tools, functions, tool_choice, function_call)
        if isinstance(grammar, str):
            grammar = LlamaGrammar.from_string(grammar)
        grammar = _format_grammar(response_format, forced, grammar)
        tokens = llama.tokenize(result.prompt.encode("utf-8"),
                                add_bos=not result.added_special, special=True)
        request = ChatRequest(tokens, grammar, stops, set(), None, False)
        out = llama.complete_chat(
            request, max_tokens=max_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
            typical_p=typical_p, logprobs=logprobs, top_logprobs=top_logprobs,
            frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            repeat_penalty=repeat_penalty, top_k=top_k, stream=stream, seed=seed,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
            model=model, stopping_criteria=result.stopping_criteria or stopping_criteria,
            logits_processor=logits_processor, logit_bias=logit_bias)
        if forced is None:
            return out
        if stream:
            return _as_tool_call_chunks(out, forced["name"])
        return _as_tool_call(out, forced["name"])

    return chat_completion_handler


def register_chat_format(name: str):
    """Decorator: register a formatter (messages, **kwargs) -> ChatFormatterResponse under
    `name`, as a chat completion handler and as ``Llama(chat_format=name)``."""
    def decorator(f: ChatFormatter) -> ChatFormatter:
        LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
            name, chat_formatter_to_chat_completion_handler(f), overwrite=True)
        _chat_layer.register_chat_format(name)(f)
        return f
    return decorator


def _register_builtin(name: str, formatter: ChatFormatter) -> None:
    LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        name, chat_formatter_to_chat_completion_handler(formatter), overwrite=True)
    if get_chat_template(name) is None:          # pyllamacy's own template keeps its name
        _chat_layer.register_chat_format(name)(formatter)


for _name, _formatter in prompt_formats.FORMATS.items():
    _register_builtin(_name, _formatter)

format = format_vicuna    # llama-cpp-python's name for the "vicuna" formatter  # noqa: A001


# -- ChatML with tool calls -----------------------------------------------------------------------

class _WithFormat:
    """A Llama seen through another chat_format (what pyllamacy.chat.prepare_chat reads)."""

    def __init__(self, llama, chat_format: str):
        self.model = llama.model
        self.chat_format = chat_format


@register_chat_completion_handler("chatml-function-calling")
def chatml_function_calling(*, llama, messages, functions=None, function_call=None, tools=None,
                            tool_choice=None, response_format=None, grammar=None, stop=None,
                            parallel_tool_calls=None, chat_template_kwargs=None,
                            allow_unconstrained_patterns: bool = False, temperature: float = 0.2,
                            **kwargs):
    """ChatML prompts with tool calls: pyllamacy's chat layer with its ChatML template
    (tools described in the system message, the reply constrained to JSON tool calls by a
    grammar, parsed into tool_calls). The prompt text is pyllamacy's, not llama-cpp-python's
    ChatML-with-functions prompt; the reply has the same shape."""
    request = _chat_layer.prepare_chat(
        _WithFormat(llama, "chatml-function-calling"), messages, functions=functions,
        function_call=function_call, tools=tools, tool_choice=tool_choice,
        response_format=response_format, grammar=grammar, stop=stop,
        parallel_tool_calls=parallel_tool_calls, chat_template_kwargs=chat_template_kwargs,
        allow_unconstrained_patterns=allow_unconstrained_patterns)
    allowed = {"max_tokens", "top_p", "min_p", "typical_p", "logprobs", "top_logprobs",
               "frequency_penalty", "presence_penalty", "repeat_penalty", "top_k", "stream",
               "seed", "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta", "model",
               "stopping_criteria", "logits_processor", "logit_bias"}
    return llama.complete_chat(request, temperature=temperature,
                               **{k: v for k, v in kwargs.items() if k in allowed})


# -- multimodal: one handler in pyllamacy (the model's own template decides the format) -----------

MTMDChatHandler = MultimodalChatHandler
Gemma4ChatHandler = MultimodalChatHandler
ObsidianChatHandler = MultimodalChatHandler
Llama3VisionAlpha = Llama3VisionAlphaChatHandler
