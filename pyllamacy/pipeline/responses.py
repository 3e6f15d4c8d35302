"""The OpenAI-shaped objects (llama_types' TypedDicts), built in one place for Llama and the
server: completions and their stream chunks, chat completions and theirs, logprobs, usage.

Inputs are what TokenText releases -- text and TextEntry tuples (token text, text offset,
log-probability, top) -- and, for chat, the assistant message / stream deltas of
pyllamacy.chat (chat_message, ChatDeltas).
"""
from __future__ import annotations

import time
import uuid
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from ..llama_types import (ChatCompletionChunk, ChatCompletionLogprobs,
                           ChatCompletionResponseChoice, ChatCompletionResponseMessage,
                           CompletionChoice, CompletionLogprobs, CompletionUsage,
                           CreateChatCompletionResponse, CreateCompletionResponse)
from .text import LogprobEntry, TextEntry

__all__ = ["ResponseMeta", "completion_logprobs", "chat_logprobs", "usage", "usage_chunk",
           "echo_entries",
           "completion_choice", "completion_response", "completion_chunk", "chat_choice",
           "chat_response", "chat_chunk", "ChatChunks"]


class ResponseMeta:
    """What every object of one response shares: id, created (Unix time), model name."""
    __slots__ = ("id", "created", "model")

    def __init__(self, id: str, model: str, created: Optional[int] = None):
        self.id = id
        self.model = model
        self.created = int(time.time()) if created is None else int(created)

    @classmethod
    def completion(cls, model: str) -> "ResponseMeta":
        return cls(f"cmpl-{uuid.uuid4()}", model)

    @classmethod
    def chat(cls, model: str) -> "ResponseMeta":
        return cls(f"chatcmpl-{uuid.uuid4()}", model)

    def wrap(self, object: str, choices: list, use: Optional[CompletionUsage] = None) -> dict:
        """The object around `choices` (with `usage` unless a stream chunk)."""
        out = {"id": self.id, "object": object, "created": self.created, "model": self.model,
               "choices": choices}
        if use is not None:
            out["usage"] = use
        return out


# -- pieces --------------------------------------------------------------------------------------

def completion_logprobs(entries: Iterable[TextEntry]) -> CompletionLogprobs:
    """llama-cpp-python's completion logprobs (parallel lists) of these entries."""
    entries = list(entries)
    return {"tokens": [e[0] for e in entries], "text_offset": [e[1] for e in entries],
            "token_logprobs": [e[2] for e in entries], "top_logprobs": [e[3] for e in entries]}


def _token_bytes(text: str) -> List[int]:
    return list(text.encode("utf-8", "replace"))


def chat_logprobs(entries: Iterable[TextEntry]) -> ChatCompletionLogprobs:
    """OpenAI's chat logprobs ({"content": [...], "refusal": None}) of these entries."""
    content = []
    for tok, _off, lp, top in entries:
        content.append({
            "token": tok, "logprob": lp, "bytes": _token_bytes(tok),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": _token_bytes(t)}
                             for t, v in (top or {}).items()]})
    return {"content": content, "refusal": None}


def usage(n_prompt: int, n_completion: int) -> CompletionUsage:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
            "total_tokens": n_prompt + n_completion}


def usage_chunk(meta: ResponseMeta, object: str, use: CompletionUsage) -> dict:
    """The last chunk of a stream asked for with stream_options.include_usage: no choices,
    the request's usage (OpenAI's shape)."""
    return meta.wrap(object, [], use)


def echo_entries(prompt: Sequence[int], bos: int, scored: Mapping[int, LogprobEntry],
                 piece: Callable[[int], str]) -> List[TextEntry]:
    """The prompt's entries for echo + logprobs, as llama-cpp-python gives them: from the first
    token after BOS, that one without a log-probability; `scored`: position -> the entry of the
    prompt token there (what the model predicted for it), `piece(token)`: a token's text for
    positions without one. Offsets count from the start of the prompt text."""
    first = 1 if prompt and prompt[0] == bos else 0
    out: List[TextEntry] = []
    off = 0
    for i in range(first, len(prompt)):
        ent = scored.get(i) if i > first else None
        if ent is None:
            out.append((piece(prompt[i]), off, None, None))
        else:
            out.append((ent[0], off, ent[1], ent[2]))
        off += len(out[-1][0])
    return out


# -- completions ---------------------------------------------------------------------------------

def completion_choice(index: int, text: str, finish_reason: Optional[str],
                      entries: Optional[Iterable[TextEntry]]) -> CompletionChoice:
    """One choice; entries None: no logprobs asked for."""
    return {"text": text, "index": index,
            "logprobs": None if entries is None else completion_logprobs(entries),
            "finish_reason": finish_reason}


def completion_response(meta: ResponseMeta, choices: List[CompletionChoice],
                        use: CompletionUsage) -> CreateCompletionResponse:
    return meta.wrap("text_completion", choices, use)


def completion_chunk(meta: ResponseMeta, index: int, text: str,
                     finish_reason: Optional[str] = None,
                     entries: Optional[Iterable[TextEntry]] = None) -> CreateCompletionResponse:
    """One stream chunk: released text (with its entries when logprobs were asked for), or
    the last one ("" and the finish reason)."""
    return meta.wrap("text_completion", [completion_choice(index, text, finish_reason, entries)])


# -- chat completions ----------------------------------------------------------------------------

def chat_choice(index: int, message: ChatCompletionResponseMessage,
                finish_reason: Optional[str],
                entries: Optional[Iterable[TextEntry]]) -> ChatCompletionResponseChoice:
    """One choice; entries None: no logprobs asked for."""
    return {"index": index, "message": message,
            "logprobs": None if entries is None else chat_logprobs(entries),
            "finish_reason": finish_reason}


def chat_response(meta: ResponseMeta, choices: List[ChatCompletionResponseChoice],
                  use: CompletionUsage) -> CreateChatCompletionResponse:
    return meta.wrap("chat.completion", choices, use)


def chat_chunk(meta: ResponseMeta, index: int, delta: Dict,
               finish_reason: Optional[str] = None,
               logprobs: Optional[ChatCompletionLogprobs] = None) -> ChatCompletionChunk:
    return meta.wrap("chat.completion.chunk", [{"index": index, "delta": delta,
                                                "logprobs": logprobs,
                                                "finish_reason": finish_reason}])


class ChatChunks:
    """The stream chunks of one chat choice, from released text and entries.

    `deltas`: the reply as deltas -- an object with feed(text) -> [delta] and
    finish(finish_reason) -> ([delta], finish_reason), such as pyllamacy.chat.ChatDeltas (which
    turns tool calls into tool_calls deltas). `logprobs`: whether the chunks carry them.

        cc = ChatChunks(meta, 0, ChatDeltas(req), logprobs=False)
        yield cc.start()
        for text, entries in released: yield from cc.push(text, entries)
        yield from cc.finish(finish_reason)
    """
    __slots__ = ("meta", "index", "deltas", "logprobs")

    def __init__(self, meta: ResponseMeta, index: int, deltas, logprobs: bool):
        self.meta = meta
        self.index = index
        self.deltas = deltas
        self.logprobs = logprobs

    def start(self) -> ChatCompletionChunk:
        """The first chunk: the assistant role."""
        return chat_chunk(self.meta, self.index, {"role": "assistant", "content": ""})

    def push(self, text: str, entries: Sequence[TextEntry] = ()) -> List[ChatCompletionChunk]:
        """Released text -> its chunks; the entries ride on the first (an empty content delta
        carries them when the text gives no delta yet)."""
        lp = chat_logprobs(entries) if self.logprobs and entries else None
        ds = self.deltas.feed(text) if text else []
        if not ds and lp is not None:
            ds = [{"content": ""}]
        return [chat_chunk(self.meta, self.index, d, None, lp if j == 0 else None)
                for j, d in enumerate(ds)]

    def finish(self, finish_reason: Optional[str]) -> List[ChatCompletionChunk]:
        """The last deltas, then the chunk with the finish reason ("tool_calls" when calls
        were sent)."""
        last, finish = self.deltas.finish(finish_reason)
        out = [chat_chunk(self.meta, self.index, d) for d in last]
        out.append(chat_chunk(self.meta, self.index, {}, finish))
        return out
