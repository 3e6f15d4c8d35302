"""llama-cpp-python's function-style chat formats (format_llama2, format_chatml, ...).

Each takes the OpenAI messages and returns a ChatFormatterResponse whose prompt is the exact
string llama-cpp-python 0.3.36 builds for them, quirks included (for example "chatml" always
opens with a system turn, "open-orca" keeps no message turns, "saiga" drops assistant turns):
code tuned against those prompts gets the same text. They are plain string code, registered
under their format names by llama_chat_format.

pyllamacy's own `chat_format=` templates (pyllamacy.chat_formats) are Jinja templates rendered
by llama.cpp's chat layer, which can also render tools and JSON schemas; where a name exists in
both, the templates follow the model families' published formats rather than these quirks.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from ..chat import ChatFormatterResponse

Turn = Tuple[str, Optional[str]]      # (the role's tag text, the content or None)


# -- pieces ---------------------------------------------------------------------------------------

def system_text(messages) -> str:
    """The content of the first system message ("" when there is none)."""
    for m in messages:
        if m.get("role") == "system":
            return m.get("content") or ""
    return ""


def turns(messages, tags: Dict[str, str], reply: Optional[str] = None) -> List[Turn]:
    """(tag, content) for the messages whose role has a tag (non-string content -> None);
    `reply`: a last (tag, None) turn that opens the reply."""
    out: List[Turn] = []
    for m in messages:
        tag = tags.get(m.get("role"))
        if tag is not None:
            content = m.get("content")
            out.append((tag, content if isinstance(content, str) else None))
    if reply is not None:
        out.append((reply, None))
    return out


def colon_style(system: str, ts: Sequence[Turn], seps: Sequence[str], open_tail: str = ":") -> str:
    """`tag: text<sep>` turns after `system<sep>`; separators alternate through `seps`; a turn
    without text is `tag` + `open_tail`."""
    out = system + seps[0]
    for i, (tag, text) in enumerate(ts):
        out += tag + ": " + text + seps[i % len(seps)] if text else tag + open_tail
    return out


def plain_style(system: str, ts: Sequence[Turn], sep: str) -> str:
    """`tag + text + sep` turns after `system`; a turn without text is its tag alone."""
    out = system
    for tag, text in ts:
        out += tag + text + sep if text else tag
    return out


def line_style(system: str, ts: Sequence[Turn], sep: str) -> str:
    """`tag\\ntext<sep>\\n` turns (ChatML-like) after `system<sep>\\n` (nothing for no system);
    a turn without text is `tag\\n`."""
    out = system + sep + "\n" if system else ""
    for tag, text in ts:
        out += tag + "\n" + text + sep + "\n" if text else tag + "\n"
    return out


def llama2_style(system: str, ts: Sequence[Turn], seps: Sequence[str]) -> str:
    """Llama-2's turns: after a system block the first turn is its bare text; others are
    `tag + text + " " + sep`; a turn without text is `tag + " "`."""
    out = system + seps[0]
    for i, (tag, text) in enumerate(ts):
        if system and i == 0:
            out += (text or "") + seps[0]
        elif text:
            out += tag + text + " " + seps[i % 2]
        else:
            out += tag + " "
    return out


# -- the formats ----------------------------------------------------------------------------------

def format_llama2(messages, **kwargs) -> ChatFormatterResponse:
    system = system_text(messages)
    if system:
        system = f"[INST] <<SYS>>\n{system}\n<</SYS>>"
    ts = turns(messages, {"user": "<s>[INST]", "assistant": "[/INST]"})
    return ChatFormatterResponse(prompt=llama2_style(system, ts, (" ", "</s>")) + "[/INST]")


_LLAMA3_HEADERS = {r: f"<|start_header_id|>{r}<|end_header_id|>\n\n"
                   for r in ("system", "user", "assistant")}


def format_llama3(messages, **kwargs) -> ChatFormatterResponse:
    ts = turns(messages, _LLAMA3_HEADERS, reply=_LLAMA3_HEADERS["assistant"])
    return ChatFormatterResponse(prompt=plain_style("", ts, "<|eot_id|>"), stop="<|eot_id|>")


def format_alpaca(messages, **kwargs) -> ChatFormatterResponse:
    ts = turns(messages, {"user": "### Instruction", "assistant": "### Response"})
    return ChatFormatterResponse(prompt=colon_style(system_text(messages), ts, ("\n\n", "</s>")))


def format_qwen(messages, **kwargs) -> ChatFormatterResponse:
    system = "<|im_start|>system\n" + (system_text(messages) or "You are a helpful assistant.")
    ts = turns(messages, {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"},
               reply="<|im_start|>assistant")
    return ChatFormatterResponse(prompt=line_style(system, ts, "<|im_end|>"),
                                 stop="<|endoftext|>")


VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The "
                 "assistant gives helpful, detailed, and polite answers to the user's questions.")


def format_vicuna(messages, **kwargs) -> ChatFormatterResponse:
    ts = turns(messages, {"user": "USER", "assistant": "ASSISTANT"}, reply="ASSISTANT")
    return ChatFormatterResponse(prompt=colon_style(VICUNA_SYSTEM, ts, (" ", "</s>")))


def format_oasst_llama(messages, **kwargs) -> ChatFormatterResponse:
    system = f"[INST] <<SYS>>\n{system_text(messages)}\n<</SYS>>\n\n"
    ts = turns(messages, {"user": "<|prompter|>", "assistant": "<|assistant|>"},
               reply="<|assistant|>")
    return ChatFormatterResponse(prompt=plain_style(system, ts, "</s>"))


def _baichuan(messages, user: str, assistant: str) -> ChatFormatterResponse:
    ts = turns(messages, {"user": user, "assistant": assistant}, reply=assistant)
    return ChatFormatterResponse(prompt=plain_style(system_text(messages), ts, ""))


def format_baichuan2(messages, **kwargs) -> ChatFormatterResponse:
    return _baichuan(messages, "<reserved_106>", "<reserved_107>")


def format_baichuan(messages, **kwargs) -> ChatFormatterResponse:
    return _baichuan(messages, "<reserved_102>", "<reserved_103>")


OPENBUDDY_SYSTEM = (
    "You are a helpful, respectful and honest INTP-T AI Assistant named Buddy. You are talking "
    "to a human User.\nAlways answer as helpfully and logically as possible, while being safe. "
    "Your answers should not include any harmful, political, religious, unethical, racist, "
    "sexist, toxic, dangerous, or illegal content. Please ensure that your responses are "
    "socially unbiased and positive in nature.\nIf a question does not make any sense, or is "
    "not factually coherent, explain why instead of answering something not correct. If you "
    "don't know the answer to a question, please don't share false information.\nYou can speak "
    "fluently in many languages, for example: English, Chinese.\nYou cannot access the "
    "internet, but you have vast knowledge, cutoff: 2021-09.\nYou are trained by OpenBuddy "
    "team, (https://openbuddy.ai, https://github.com/OpenBuddy/OpenBuddy), you are based on "
    "LLaMA and Falcon transformers model, not related to GPT or OpenAI.\n\n")


def format_openbuddy(messages, **kwargs) -> ChatFormatterResponse:
    ts = turns(messages, {"user": "User", "assistant": "Assistant"}, reply="Assistant")
    return ChatFormatterResponse(prompt=colon_style(OPENBUDDY_SYSTEM, ts, ("\n",)))


def format_redpajama_incite(messages, **kwargs) -> ChatFormatterResponse:
    ts = turns(messages, {"user": "<human>", "assistant": "<bot>"}, reply="<bot>")
    return ChatFormatterResponse(prompt=colon_style(system_text(messages), ts, ("\n",)),
                                 stop="<human>")


SNOOZY_SYSTEM = ("The prompt below is a question to answer, a task to complete, or a "
                 "conversation to respond to; decide which and write an appropriate response.")


def format_snoozy(messages, **kwargs) -> ChatFormatterResponse:
    # llama-cpp-python uses the bare system text (its "### Instruction:" wrapper is unused)
    system = system_text(messages) or SNOOZY_SYSTEM
    ts = turns(messages, {"user": "### Prompt", "assistant": "### Response"},
               reply="### Response")
    return ChatFormatterResponse(prompt=colon_style(system, ts, ("\n",)), stop="###")


def format_phind(messages, **kwargs) -> ChatFormatterResponse:
    system = "### System Prompt\nYou are an intelligent programming assistant."
    ts = turns(messages, {"user": "### User Message", "assistant": "### Assistant"},
               reply="### Assistant")
    return ChatFormatterResponse(prompt=colon_style(system, ts, ("\n\n",)))


def format_intel(messages, **kwargs) -> ChatFormatterResponse:
    # llama-cpp-python sends its system placeholder unfilled, and tags "### User:" + ": "
    ts = turns(messages, {"user": "### User:", "assistant": "### Assistant:"},
               reply="### Assistant:")
    return ChatFormatterResponse(prompt=colon_style("### System:\n{system_message}", ts, ("\n",)))


OPEN_ORCA_SYSTEM = (
    "You are a helpful assistant. Please answer truthfully and write out your thinking step by "
    "step to be sure you get the right answer. If you make a mistake or encounter an error in "
    "your thinking, say so out loud and attempt to correct it. If you don't know or aren't sure "
    "about something, say so clearly. You will act as a professional logician, mathematician, "
    "and physicist. You will also act as the most appropriate type of expert to answer any "
    "particular question or solve the relevant problem; state which expert type your are, if "
    "so. Also think of any particular named expert that would be ideal to answer the relevant "
    "question or solve the relevant problem; name and act as them, if appropriate.")


def format_open_orca(messages, **kwargs) -> ChatFormatterResponse:
    # llama-cpp-python's role map has the keys "User" / "Assistant", which no OpenAI message
    # role matches: the prompt holds the system text and the reply opening only
    ts = turns(messages, {"User": "User", "Assistant": "Assistant"}, reply="Assistant")
    return ChatFormatterResponse(prompt=colon_style(OPEN_ORCA_SYSTEM, ts, ("<|end_of_turn|>\n",),
                                                    open_tail=": "), stop="User")


def format_mistrallite(messages, **kwargs) -> ChatFormatterResponse:
    system = f"<|system|>{system_text(messages)}</s>"
    ts = turns(messages, {"user": "<|prompter|>", "assistant": "</s>\n<|assistant|>"},
               reply="</s>\n<|assistant|>")
    return ChatFormatterResponse(prompt=plain_style(system, ts, " "))


def format_zephyr(messages, **kwargs) -> ChatFormatterResponse:
    system = f"<|system|>\n{system_text(messages)}"
    ts = turns(messages, {"user": "<|user|>\n", "assistant": "<|assistant|>\n"},
               reply="<|assistant|>\n")
    return ChatFormatterResponse(prompt=line_style(system, ts, "</s>"), stop="</s>")


def format_pygmalion(messages, **kwargs) -> ChatFormatterResponse:
    system = f"<|system|>{system_text(messages)}"
    ts = turns(messages, {"user": "<|user|>", "assistant": "<|model|>"}, reply="<|model|>")
    return ChatFormatterResponse(prompt=line_style(system, ts, "\n"), stop="\n")


def format_chatml(messages, **kwargs) -> ChatFormatterResponse:
    system = f"<|im_start|>system\n{system_text(messages)}"
    ts = turns(messages, {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"},
               reply="<|im_start|>assistant")
    return ChatFormatterResponse(prompt=line_style(system, ts, "<|im_end|>"), stop="<|im_end|>")


def format_mistral_instruct(messages, **kwargs) -> ChatFormatterResponse:
    prompt = ""
    for m in messages:
        content = m.get("content")
        if m.get("role") == "user" and isinstance(content, str):
            prompt += "[INST] " + content
        elif m.get("role") == "assistant" and content is not None:
            prompt += " [/INST]" + content + "</s>"
    return ChatFormatterResponse(prompt=prompt + " [/INST]", stop="</s>")


def format_chatglm3(messages, **kwargs) -> ChatFormatterResponse:
    out = f"<|system|>\n{system_text(messages)}"
    for tag, text in turns(messages, {"user": "<|user|>", "assistant": "<|assistant|>"},
                           reply="<|assistant|>"):
        out += tag + "\n " + text if text else tag
    return ChatFormatterResponse(prompt=out, stop="</s>")


def format_openchat(messages, **kwargs) -> ChatFormatterResponse:
    system = f"{system_text(messages)}<|end_of_turn|>"
    ts = turns(messages, {"user": "GPT4 Correct User: ",
                          "assistant": "<|end_of_turn|>GPT4 Correct Assistant: "},
               reply="<|end_of_turn|>GPT4 Correct Assistant: ")
    return ChatFormatterResponse(prompt=line_style(system, ts, "<|end_of_turn|>"),
                                 stop="<|end_of_turn|>")


def format_saiga(messages, **kwargs) -> ChatFormatterResponse:
    # llama-cpp-python maps the roles user / bot / system: "assistant" turns are not kept
    out = ""
    for role, text in turns(messages, {"user": "user", "bot": "bot", "system": "system"}):
        out += f"<s>{role}\n{text}</s>" if text else f"<s>{role}\n"
    return ChatFormatterResponse(prompt=(out + "<s>bot").strip())


def format_gemma(messages, **kwargs) -> ChatFormatterResponse:
    # Gemma has no system role; llama-cpp-python leaves system messages out
    ts = turns(messages, {"user": "<start_of_turn>user\n", "assistant": "<start_of_turn>model\n"},
               reply="<start_of_turn>model\n")
    return ChatFormatterResponse(prompt=plain_style("", ts, "<end_of_turn>\n"),
                                 stop="<end_of_turn>\n")


# chat_format name -> formatter, as llama-cpp-python registers them
FORMATS = {
    "llama-2": format_llama2, "llama-3": format_llama3, "alpaca": format_alpaca,
    "qwen": format_qwen, "vicuna": format_vicuna, "oasst_llama": format_oasst_llama,
    "baichuan-2": format_baichuan2, "baichuan": format_baichuan, "openbuddy": format_openbuddy,
    "redpajama-incite": format_redpajama_incite, "snoozy": format_snoozy, "phind": format_phind,
    "intel": format_intel, "open-orca": format_open_orca, "mistrallite": format_mistrallite,
    "zephyr": format_zephyr, "pygmalion": format_pygmalion, "chatml": format_chatml,
    "mistral-instruct": format_mistral_instruct, "chatglm3": format_chatglm3,
    "openchat": format_openchat, "saiga": format_saiga, "gemma": format_gemma,
}
