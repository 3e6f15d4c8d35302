"""Request bodies of the OpenAI-compatible routes (llama-cpp-python's field names and defaults).
Unknown fields are ignored, as OpenAI clients send some we do not use."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, Field

from ..defaults import (FREQUENCY_PENALTY, MAX_TOKENS, MIN_P, MIROSTAT_ETA, MIROSTAT_MODE,
                        MIROSTAT_TAU, PRESENCE_PENALTY, REPEAT_PENALTY, TEMPERATURE, TOP_K, TOP_P,
                        TYPICAL_P)

__all__ = ["CompletionRequest", "ChatCompletionRequest", "EmbeddingRequest", "TokenizeRequest",
           "DetokenizeRequest"]

_STOP = Optional[Union[str, List[str]]]


class _Sampling(BaseModel):
    model_config = {"extra": "ignore", "protected_namespaces": ()}

    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=0)
    temperature: float = Field(TEMPERATURE, ge=0.0, le=2.0)
    top_p: float = Field(TOP_P, ge=0.0, le=1.0)
    min_p: float = Field(MIN_P, ge=0.0, le=1.0)
    typical_p: float = Field(TYPICAL_P, ge=0.0, le=1.0)
    top_k: int = Field(TOP_K, ge=0)
    stop: _STOP = None
    stream: bool = False
    # OpenAI's {"include_usage": true}: a last chunk (no choices) with the usage
    stream_options: Optional[Dict[str, Any]] = None
    seed: Optional[int] = None
    n: int = Field(1, ge=1)
    frequency_penalty: float = Field(FREQUENCY_PENALTY, ge=-2.0, le=2.0)
    presence_penalty: float = Field(PRESENCE_PENALTY, ge=-2.0, le=2.0)
    repeat_penalty: float = Field(REPEAT_PENALTY, gt=0.0)
    mirostat_mode: int = Field(MIROSTAT_MODE, ge=0, le=2)
    mirostat_tau: float = Field(MIROSTAT_TAU, ge=0.0)
    mirostat_eta: float = Field(MIROSTAT_ETA, ge=0.0)
    logit_bias: Optional[Dict[str, float]] = None
    grammar: Optional[str] = Field(None, max_length=200_000)
    user: Optional[str] = None
    # llama-server's per-request LoRA: [{"id": adapter id, "scale": number}] (checked by the
    # route, which names what is wrong)
    lora: Optional[Any] = None
    # deadlines (0 or absent: the server's): seconds from arrival (the wait for a slot
    # included) and llama-server's limit of the generation phase in milliseconds; the
    # request then ends with finish_reason "length" and the text so far
    timeout: Optional[float] = Field(None, ge=0, allow_inf_nan=False)
    t_max_predict_ms: Optional[float] = Field(None, ge=0, allow_inf_nan=False)


class CompletionRequest(_Sampling):
    # a text, token ids, or a list of either (a batch: n choices for each prompt, in order)
    prompt: Union[str, List[str], List[int], List[List[int]]] = ""
    max_tokens: Optional[int] = Field(MAX_TOKENS, ge=0)
    suffix: Optional[str] = None
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0)


class ChatCompletionRequest(_Sampling):
    messages: List[Dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=0)
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: Optional[Union[str, Dict[str, Any]]] = None
    functions: Optional[List[Dict[str, Any]]] = None
    function_call: Optional[Union[str, Dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[Dict[str, Any]] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = Field(None, ge=0)
    chat_template_kwargs: Optional[Dict[str, Any]] = None
    # llama-server's: where a thinking model's reasoning goes (auto / deepseek /
    # deepseek-legacy: reasoning_content, none: content); None: the model's setting. OpenAI's
    # reasoning_effort ("none" turns thinking off). Both checked by pyllamacy.chat (a 400
    # naming the field)
    reasoning_format: Optional[str] = None
    reasoning_effort: Optional[str] = None
    # ours: a JSON schema `pattern` llama.cpp cannot enforce leaves the string unconstrained
    # (with a warning) instead of a 400; None: the server's setting
    allow_unconstrained_patterns: Optional[bool] = None


class EmbeddingRequest(BaseModel):
    model_config = {"extra": "ignore", "protected_namespaces": ()}
    model: Optional[str] = None
    # text, texts, token ids, or lists of token ids (OpenAI's four shapes)
    input: Union[str, List[str], List[int], List[List[int]]]
    encoding_format: Optional[str] = None
    dimensions: Optional[int] = None
    user: Optional[str] = None


class TokenizeRequest(BaseModel):
    model_config = {"extra": "ignore", "protected_namespaces": ()}
    model: Optional[str] = None
    input: str


class DetokenizeRequest(BaseModel):
    model_config = {"extra": "ignore", "protected_namespaces": ()}
    model: Optional[str] = None
    tokens: List[int]
