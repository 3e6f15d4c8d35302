"""Small helper types of the high-level API, under llama-cpp-python's names.

LlamaGrammar (a GBNF grammar), LlamaState (a saved context), the list types that
llama-cpp-python takes for `stopping_criteria=` and `logits_processor=`, and the TypedDicts of
the OpenAI-shaped results (CreateCompletionResponse, CreateChatCompletionResponse,
ChatCompletionChunk, ...), which pyllamacy.pipeline.responses builds for Llama and the server,
and of the requests (ChatCompletionRequestMessage, ChatCompletionTool,
ChatCompletionRequestResponseFormat, ...), for type-checking code that calls them.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Literal, Optional, TypedDict, Union

import numpy as np

__all__ = ["LlamaGrammar", "LlamaState", "LogitsProcessor", "LogitsProcessorList",
           "StoppingCriteria", "StoppingCriteriaList",
           # the OpenAI-shaped results (llama-cpp-python's names)
           "CompletionLogprobs", "CompletionChoice", "CompletionUsage",
           "CreateCompletionResponse", "CreateCompletionStreamResponse", "CompletionChunk",
           "Completion", "ChatCompletionTopLogprobToken", "ChatCompletionLogprobToken",
           "ChatCompletionLogprobs", "ChatCompletionMessageToolCallFunction",
           "ChatCompletionMessageToolCall", "ChatCompletionResponseFunctionCall",
           "ChatCompletionResponseMessage", "ChatCompletionResponseChoice",
           "CreateChatCompletionResponse", "ChatCompletion",
           "ChatCompletionMessageToolCallChunkFunction", "ChatCompletionMessageToolCallChunk",
           "ChatCompletionStreamResponseDelta", "ChatCompletionStreamResponseDeltaEmpty",
           "ChatCompletionStreamResponseChoice", "CreateChatCompletionStreamResponse",
           "ChatCompletionChunk", "EmbeddingUsage", "Embedding", "CreateEmbeddingResponse",
           # the OpenAI-shaped requests (llama-cpp-python's names)
           "JsonType", "ChatCompletionFunction", "ChatCompletionFunctions",
           "ChatCompletionFunctionCallOption", "ChatCompletionRequestResponseFormat",
           "ChatCompletionRequestMessageContentPartText",
           "ChatCompletionRequestMessageContentPartImageImageUrl",
           "ChatCompletionRequestMessageContentPartImage",
           "ChatCompletionRequestMessageContentPart", "ChatCompletionRequestSystemMessage",
           "ChatCompletionRequestUserMessage", "ChatCompletionMessageToolCalls",
           "ChatCompletionRequestAssistantMessageFunctionCall",
           "ChatCompletionRequestAssistantMessage", "ChatCompletionRequestToolMessage",
           "ChatCompletionRequestFunctionMessage", "ChatCompletionRequestMessage",
           "ChatCompletionRequestFunctionCallOption", "ChatCompletionRequestFunctionCall",
           "ChatCompletionFunctionParameters", "ChatCompletionToolFunction",
           "ChatCompletionTool", "ChatCompletionNamedToolChoiceFunction",
           "ChatCompletionNamedToolChoice", "ChatCompletionToolChoiceOption",
           "ChatCompletionStreamResponseDeltaFunctionCall",
           # older names llama-cpp-python keeps as aliases
           "EmbeddingData", "ChatCompletionMessage", "ChatCompletionChoice",
           "ChatCompletionChunkDeltaEmpty", "ChatCompletionChunkChoice",
           "ChatCompletionChunkDelta", "ChatCompletionStreamResponse",
           "ChatCompletionResponseFunction", "ChatCompletionFunctionCall"]

# (input_ids, scores) -> scores / -> bool, as in llama-cpp-python
LogitsProcessor = Callable[[np.ndarray, np.ndarray], np.ndarray]
StoppingCriteria = Callable[[np.ndarray, np.ndarray], bool]


class LogitsProcessorList(List[LogitsProcessor]):
    """Processors applied in order: each gets (input_ids, scores) and returns new scores."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class StoppingCriteriaList(List[StoppingCriteria]):
    """Stop when any criterion, called with (input_ids, logits), returns True."""

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> bool:
        return any(criterion(input_ids, logits) for criterion in self)


class LlamaGrammar:
    """A GBNF grammar for constrained generation (pass it as `grammar=`).

    Built with LlamaGrammar.from_string(text) or LlamaGrammar.from_file(path). The text is
    parsed by llama.cpp when a completion uses it; a grammar that does not parse raises
    pyllamacy.GrammarError (a ValueError) then. A grammar object holds no parser state, so one
    object can be used by any number of calls.
    """

    __slots__ = ("_grammar", "_root", "_lazy", "_prefill")

    def __init__(self, *, _grammar: str, root: str = "root", _lazy=None, _prefill: str = ""):
        if not isinstance(_grammar, str):
            raise TypeError(f"grammar must be a GBNF string, not {type(_grammar).__name__}")
        if not _grammar.strip():
            raise ValueError("empty grammar")
        self._grammar = _grammar
        self._root = root
        # chat grammars (set by pyllamacy.chat): (trigger_patterns, trigger_tokens) for a
        # grammar that waits for a trigger, and the text of the prompt that the grammar's root
        # starts with (the template's generation prompt), fed to it before sampling
        self._lazy = _lazy
        self._prefill = _prefill

    @property
    def grammar(self) -> str:
        return self._grammar

    @property
    def root(self) -> str:
        return self._root

    @property
    def lazy_triggers(self):
        """(trigger patterns, trigger tokens) of a chat grammar that waits for a trigger, or
        None for a grammar that applies from the first token."""
        return self._lazy

    @property
    def prefill(self) -> str:
        """The text the grammar's root starts with (a chat template's generation prompt), fed
        to the grammar before sampling; "" for none."""
        return self._prefill

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> "LlamaGrammar":
        """A grammar from GBNF text (`verbose` is accepted for compatibility)."""
        return cls(_grammar=grammar)

    @classmethod
    def for_chat(cls, grammar: str, *, lazy_triggers=None, prefill: str = "",
                 root: str = "root") -> "LlamaGrammar":
        """A grammar that a chat template's rendering produced (pyllamacy.chat): lazy, waiting
        for one of `lazy_triggers` = (regex patterns, token ids), or starting with `prefill`
        text (the template's generation prompt); `root`: its start rule."""
        return cls(_grammar=grammar, root=root, _lazy=lazy_triggers, _prefill=prefill)

    @classmethod
    def from_file(cls, file, verbose: bool = True) -> "LlamaGrammar":
        """A grammar from a GBNF file."""
        with open(os.fspath(file), encoding="utf-8") as f:
            text = f.read()
        if not text.strip():
            raise ValueError(f"{os.fspath(file)}: the grammar file is empty")
        return cls(_grammar=text)

    @classmethod
    def from_json_schema(cls, json_schema: str, verbose: bool = True) -> "LlamaGrammar":
        """A grammar for JSON documents that validate against `json_schema` (JSON text or a
        dict), converted by llama.cpp's json_schema_to_grammar. An invalid, cyclic or absurdly
        deep schema raises pyllamacy.SchemaError (a ValueError) within the sandbox's budget."""
        from .grammars import schema_to_grammar     # loads the _chat extension on first use
        return cls(_grammar=schema_to_grammar(json_schema))

    def reset(self) -> None:
        """No-op (kept for compatibility): parser state lives in each call's sampler."""

    def __repr__(self) -> str:
        first = self._grammar.strip().splitlines()[0] if self._grammar.strip() else ""
        return f"<LlamaGrammar {first[:40]!r}...>"


class LlamaState:
    """A snapshot made by Llama.save_state(); restore it with Llama.load_state()."""

    def __init__(self, input_ids: np.ndarray, scores: np.ndarray, n_tokens: int,
                 llama_state: bytes, llama_state_size: int, seed: int):
        self.input_ids = input_ids
        self.scores = scores
        self.n_tokens = n_tokens
        self.llama_state = llama_state
        self.llama_state_size = llama_state_size
        self.seed = seed

    def __repr__(self) -> str:
        return f"<LlamaState n_tokens={self.n_tokens} size={self.llama_state_size} bytes>"


# -- the OpenAI-shaped results (llama-cpp-python's llama_types names) ---------------------------
# Optional keys are spelled with total=False subclasses (NotRequired needs Python 3.11).

# any JSON value (kept loose, as llama-cpp-python does: a recursive alias trips pydantic)
JsonType = Union[None, int, str, bool, List[Any], Dict[str, Any]]

class EmbeddingUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


class Embedding(TypedDict):
    index: int
    object: str
    embedding: Union[List[float], List[List[float]]]


class CreateEmbeddingResponse(TypedDict):
    object: Literal["list"]
    model: str
    data: List[Embedding]
    usage: EmbeddingUsage


class CompletionLogprobs(TypedDict):
    text_offset: List[int]
    token_logprobs: List[Optional[float]]
    tokens: List[str]
    top_logprobs: List[Optional[Dict[str, float]]]


class CompletionChoice(TypedDict):
    text: str
    index: int
    logprobs: Optional[CompletionLogprobs]
    finish_reason: Optional[str]            # "stop", "length" (or "error" on the server)


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _CreateCompletionResponseBase(TypedDict):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: List[CompletionChoice]


class CreateCompletionResponse(_CreateCompletionResponseBase, total=False):
    usage: CompletionUsage                  # absent from stream chunks


CreateCompletionStreamResponse = CreateCompletionResponse
CompletionChunk = CreateCompletionResponse
Completion = CreateCompletionResponse


class ChatCompletionTopLogprobToken(TypedDict):
    token: str
    logprob: float
    bytes: Optional[List[int]]


class ChatCompletionLogprobToken(ChatCompletionTopLogprobToken):
    top_logprobs: List[ChatCompletionTopLogprobToken]


class ChatCompletionLogprobs(TypedDict):
    content: Optional[List[ChatCompletionLogprobToken]]
    refusal: Optional[List[ChatCompletionLogprobToken]]


class ChatCompletionMessageToolCallFunction(TypedDict):
    name: str
    arguments: str


class ChatCompletionMessageToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: ChatCompletionMessageToolCallFunction


ChatCompletionResponseFunctionCall = ChatCompletionMessageToolCallFunction


class _ChatCompletionResponseMessageBase(TypedDict):
    role: Literal["assistant"]
    content: Optional[str]


class ChatCompletionResponseMessage(_ChatCompletionResponseMessageBase, total=False):
    tool_calls: List[ChatCompletionMessageToolCall]
    function_call: ChatCompletionResponseFunctionCall      # the legacy functions API
    reasoning_content: str                                  # pyllamacy / llama-server


class ChatCompletionResponseChoice(TypedDict):
    index: int
    message: ChatCompletionResponseMessage
    logprobs: Optional[ChatCompletionLogprobs]
    finish_reason: Optional[str]            # "stop", "length", "tool_calls"


class CreateChatCompletionResponse(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: List[ChatCompletionResponseChoice]
    usage: CompletionUsage


ChatCompletion = CreateChatCompletionResponse


class _ChatCompletionMessageToolCallChunkFunctionBase(TypedDict):
    arguments: str


class ChatCompletionMessageToolCallChunkFunction(
        _ChatCompletionMessageToolCallChunkFunctionBase, total=False):
    name: Optional[str]                     # in a call's first chunk


class _ChatCompletionMessageToolCallChunkBase(TypedDict):
    index: int
    function: ChatCompletionMessageToolCallChunkFunction


class ChatCompletionMessageToolCallChunk(_ChatCompletionMessageToolCallChunkBase, total=False):
    id: str                                 # in a call's first chunk
    type: Literal["function"]


class ChatCompletionStreamResponseDeltaEmpty(TypedDict):
    pass


class ChatCompletionStreamResponseDelta(TypedDict, total=False):
    role: Literal["assistant"]
    content: Optional[str]
    tool_calls: List[ChatCompletionMessageToolCallChunk]
    function_call: Dict[str, Any]           # the legacy functions API


class ChatCompletionStreamResponseChoice(TypedDict):
    index: int
    delta: Union[ChatCompletionStreamResponseDelta, ChatCompletionStreamResponseDeltaEmpty]
    finish_reason: Optional[str]
    logprobs: Optional[ChatCompletionLogprobs]


class CreateChatCompletionStreamResponse(TypedDict):
    id: str
    model: str
    object: Literal["chat.completion.chunk"]
    created: int
    choices: List[ChatCompletionStreamResponseChoice]


ChatCompletionChunk = CreateChatCompletionStreamResponse


class ChatCompletionStreamResponseDeltaFunctionCall(TypedDict):
    name: str
    arguments: str


# older names of the result types
EmbeddingData = Embedding
ChatCompletionMessage = ChatCompletionResponseMessage
ChatCompletionChoice = ChatCompletionResponseChoice
ChatCompletionChunkDeltaEmpty = ChatCompletionStreamResponseDeltaEmpty
ChatCompletionChunkChoice = ChatCompletionStreamResponseChoice
ChatCompletionChunkDelta = ChatCompletionStreamResponseDelta
ChatCompletionStreamResponse = CreateChatCompletionStreamResponse
ChatCompletionFunctionCall = ChatCompletionResponseFunctionCall


# -- the OpenAI-shaped requests: messages, tools, tool_choice, response_format --------------------

class _ChatCompletionFunctionBase(TypedDict):
    name: str
    parameters: Dict[str, JsonType]


class ChatCompletionFunction(_ChatCompletionFunctionBase, total=False):
    """A function of the legacy `functions=` API."""
    description: str


ChatCompletionFunctions = ChatCompletionFunction
ChatCompletionResponseFunction = ChatCompletionFunction


class ChatCompletionFunctionCallOption(TypedDict):
    name: str


class _ChatCompletionRequestResponseFormatBase(TypedDict):
    type: Literal["text", "json_object", "json_schema"]


class ChatCompletionRequestResponseFormat(_ChatCompletionRequestResponseFormatBase,
                                          total=False):
    """`response_format=`: {"type": "json_object", "schema": {...}} (llama-cpp-python's form)
    or OpenAI's {"type": "json_schema", "json_schema": {"name", "schema"}}."""
    schema: JsonType
    json_schema: Dict[str, JsonType]


class ChatCompletionRequestMessageContentPartText(TypedDict):
    type: Literal["text"]
    text: str


class _ImageUrlBase(TypedDict):
    url: str


class ChatCompletionRequestMessageContentPartImageImageUrl(_ImageUrlBase, total=False):
    detail: Literal["auto", "low", "high"]


class ChatCompletionRequestMessageContentPartImage(TypedDict):
    type: Literal["image_url"]
    image_url: Union[str, ChatCompletionRequestMessageContentPartImageImageUrl]


ChatCompletionRequestMessageContentPart = Union[
    ChatCompletionRequestMessageContentPartText, ChatCompletionRequestMessageContentPartImage]


class ChatCompletionRequestSystemMessage(TypedDict):
    role: Literal["system"]
    content: Optional[str]


class ChatCompletionRequestUserMessage(TypedDict):
    role: Literal["user"]
    content: Optional[Union[str, List[ChatCompletionRequestMessageContentPart]]]


ChatCompletionMessageToolCalls = List[ChatCompletionMessageToolCall]


class ChatCompletionRequestAssistantMessageFunctionCall(TypedDict):
    name: str
    arguments: str


class _ChatCompletionRequestAssistantMessageBase(TypedDict):
    role: Literal["assistant"]


class ChatCompletionRequestAssistantMessage(_ChatCompletionRequestAssistantMessageBase,
                                            total=False):
    content: Optional[str]
    tool_calls: ChatCompletionMessageToolCalls
    function_call: ChatCompletionRequestAssistantMessageFunctionCall   # the legacy API


class ChatCompletionRequestToolMessage(TypedDict):
    role: Literal["tool"]
    content: Optional[str]
    tool_call_id: str


class ChatCompletionRequestFunctionMessage(TypedDict):
    role: Literal["function"]
    content: Optional[str]
    name: str


ChatCompletionRequestMessage = Union[
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestFunctionMessage]


class ChatCompletionRequestFunctionCallOption(TypedDict):
    name: str


ChatCompletionRequestFunctionCall = Union[Literal["none", "auto"],
                                          ChatCompletionRequestFunctionCallOption]

ChatCompletionFunctionParameters = Dict[str, JsonType]


class _ChatCompletionToolFunctionBase(TypedDict):
    name: str
    parameters: ChatCompletionFunctionParameters


class ChatCompletionToolFunction(_ChatCompletionToolFunctionBase, total=False):
    description: str


class ChatCompletionTool(TypedDict):
    type: Literal["function"]
    function: ChatCompletionToolFunction


class ChatCompletionNamedToolChoiceFunction(TypedDict):
    name: str


class ChatCompletionNamedToolChoice(TypedDict):
    type: Literal["function"]
    function: ChatCompletionNamedToolChoiceFunction


ChatCompletionToolChoiceOption = Union[Literal["none", "auto", "required"],
                                       ChatCompletionNamedToolChoice]
