"""Named chat formats (llama-cpp-python's `chat_format=` names) as Jinja templates.

Each format is a template string rendered by llama.cpp's own Jinja engine in the same sandbox
as a model's template (pyllamacy._chat), plus the stop strings that end a reply. A model's own
template (GGUF `tokenizer.chat_template`) is used when no chat_format is given; these exist for
models without one, and for code that names a format explicitly.

    register_chat_template("my-format", "{% for m in messages %}...", stop=["<|end|>"])

llama-cpp-python's function-style formats (`@register_chat_format("name")` over a function
returning ChatFormatterResponse) are accepted by pyllamacy.chat.register_chat_format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = ["ChatTemplate", "register_chat_template", "get_chat_template", "chat_template_names"]


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    template: str
    stop: List[str] = field(default_factory=list)
    bos_token: str = ""
    eos_token: str = ""


_TEMPLATES: Dict[str, ChatTemplate] = {}


def register_chat_template(name: str, template: str, stop: Optional[List[str]] = None,
                           bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """Register (or replace) a named Jinja chat template."""
    if not isinstance(template, str) or not template.strip():
        raise ValueError("a chat template must be a non-empty Jinja string")
    t = ChatTemplate(name, template, list(stop or []), bos_token, eos_token)
    _TEMPLATES[name] = t
    return t


def get_chat_template(name: str) -> Optional[ChatTemplate]:
    return _TEMPLATES.get(name)


def chat_template_names() -> List[str]:
    return sorted(_TEMPLATES)


# the system message (if any) folded into the first user turn, for formats without a system role
_SYSTEM_INTO_USER = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set sys = messages[0]['content'] -%}{%- set msgs = messages[1:] -%}"
    "{%- else -%}{%- set sys = '' -%}{%- set msgs = messages -%}{%- endif -%}"
)

CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

LLAMA2 = (
    _SYSTEM_INTO_USER +
    "{%- for message in msgs -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first and sys -%}"
    "{{ bos_token + '[INST] <<SYS>>\n' + sys + '\n<</SYS>>\n\n' + message['content'] + ' [/INST]' }}"
    "{%- else -%}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ ' ' + (message['content'] or '') + ' ' + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + (message['content'] or '') + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"
)

MISTRAL_INSTRUCT = (
    _SYSTEM_INTO_USER +
    "{{ bos_token }}"
    "{%- for message in msgs -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first and sys -%}{{ '[INST] ' + sys + '\n\n' + message['content'] + ' [/INST]' }}"
    "{%- else -%}{{ '[INST] ' + message['content'] + ' [/INST]' }}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ (message['content'] or '') + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

GEMMA = (
    _SYSTEM_INTO_USER +
    "{{ bos_token }}"
    "{%- for message in msgs -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{%- if loop.first and sys -%}{%- set content = sys + '\n\n' + (message['content'] or '') -%}"
    "{%- else -%}{%- set content = message['content'] or '' -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + content + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

PHI3 = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\n' + (message['content'] or '') + '<|end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)

ZEPHYR = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\n' + (message['content'] or '') + eos_token + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)

VICUNA = (
    _SYSTEM_INTO_USER +
    "{%- if sys -%}{{ sys + '\n\n' }}{%- else -%}"
    "{{ \"A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.\n\n\" }}"
    "{%- endif -%}"
    "{%- for message in msgs -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' + message['content'] + '\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' + (message['content'] or '') + eos_token + '\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

ALPACA = (
    _SYSTEM_INTO_USER +
    "{%- if sys -%}{{ sys + '\n\n' }}{%- endif -%}"
    "{%- for message in msgs -%}"
    "{%- if message['role'] == 'user' -%}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '### Response:\n' + (message['content'] or '') + '\n\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '### Response:\n' }}{%- endif -%}"
)

OPENCHAT = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '<|end_of_turn|>' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'GPT4 Correct User: ' + message['content'] + '<|end_of_turn|>' }}"
    "{%- else -%}{{ 'GPT4 Correct Assistant: ' + (message['content'] or '') + '<|end_of_turn|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'GPT4 Correct Assistant:' }}{%- endif -%}"
)

register_chat_template("chatml", CHATML, ["<|im_end|>"])
register_chat_template("qwen", CHATML, ["<|im_end|>"])
# the function-calling variants render like their base format; tools are handled by
# pyllamacy.chat (JSON tool calls constrained by a grammar when a template has no native format)
register_chat_template("chatml-function-calling", CHATML, ["<|im_end|>"])
register_chat_template("functionary", CHATML, ["<|im_end|>"])
register_chat_template("llama-2", LLAMA2, ["</s>"], bos_token="<s>", eos_token="</s>")
register_chat_template("llama-3", LLAMA3, ["<|eot_id|>"], bos_token="<|begin_of_text|>",
                       eos_token="<|eot_id|>")
register_chat_template("mistral-instruct", MISTRAL_INSTRUCT, ["</s>"], bos_token="<s>",
                       eos_token="</s>")
register_chat_template("mistrallite", MISTRAL_INSTRUCT, ["</s>"], bos_token="<s>",
                       eos_token="</s>")
register_chat_template("gemma", GEMMA, ["<end_of_turn>"], bos_token="<bos>", eos_token="<eos>")
register_chat_template("phi-3", PHI3, ["<|end|>"])
register_chat_template("zephyr", ZEPHYR, ["</s>"], eos_token="</s>")
register_chat_template("vicuna", VICUNA, ["</s>"], eos_token="</s>")
register_chat_template("alpaca", ALPACA, ["###"])
register_chat_template("openchat", OPENCHAT, ["<|end_of_turn|>"], bos_token="<s>")
