"""A request's generation options, checked once (Llama and the server): how many tokens may be
generated, how many log-probabilities are reported, which stop strings end the text.

Bad values raise ValueError / TypeError (ContextOverflowError, a ValueError, for a prompt that
leaves no room); the server answers them with 400. Its own limits (max_tokens_limit, at most 20
log-probabilities, 16 stop strings) are passed in as `limit`.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .._llama import ContextOverflowError
from .checks import FieldError, check_text
from .text import normalize_stop

__all__ = ["token_budget", "completion_logprobs_count", "chat_logprobs_count", "stop_strings"]


def _is_int(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def token_budget(max_tokens: Optional[int], n_prompt: int, n_ctx: int, *,
                 limit: Optional[int] = None, holder: str = "the context",
                 hint: str = "shorten the prompt") -> int:
    """How many tokens may follow an `n_prompt`-token prompt in `n_ctx` positions.

    max_tokens None or <= 0: as many as fit (or `limit`); more than `limit`: ValueError; a
    prompt leaving no room for one token: ContextOverflowError (`holder` names what holds
    n_ctx, `hint` says what to do)."""
    if max_tokens is not None and not _is_int(max_tokens):
        raise TypeError(f"max_tokens must be an integer or None, got {max_tokens!r}")
    if n_prompt >= n_ctx:
        raise ContextOverflowError(
            f"Requested tokens ({n_prompt}) exceed context window of {n_ctx}: the prompt has "
            f"{n_prompt} tokens and {holder} holds {n_ctx}, with room needed for at least one "
            f"generated token; {hint}")
    if limit is not None and max_tokens is not None and max_tokens > limit:
        raise ValueError(f"max_tokens must be <= {limit}")
    room = n_ctx - n_prompt
    if max_tokens is None or max_tokens <= 0:
        max_tokens = room if limit is None else limit
    return min(int(max_tokens), room)


def completion_logprobs_count(logprobs, limit: Optional[int] = None) -> Optional[int]:
    """A completion's `logprobs` (None, or N alternatives per token) checked."""
    if logprobs is None:
        return None
    if not _is_int(logprobs) or logprobs < 0:
        raise ValueError(f"logprobs must be None or an integer >= 0, got {logprobs!r}")
    if limit is not None and logprobs > limit:
        raise ValueError(f"logprobs must be <= {limit}")
    return int(logprobs)


def chat_logprobs_count(logprobs, top_logprobs, limit: Optional[int] = None
                        ) -> Optional[int]:
    """A chat's `logprobs` (bool) and `top_logprobs` (N) -> N alternatives per token, or None
    when no log-probabilities are asked for."""
    if top_logprobs is not None and not logprobs:
        raise ValueError("top_logprobs requires logprobs=True")
    if not logprobs:
        return None
    n = top_logprobs or 0
    if not _is_int(n) or n < 0:
        raise ValueError(f"top_logprobs must be None or an integer >= 0, got {top_logprobs!r}")
    if limit is not None and n > limit:
        raise ValueError(f"top_logprobs must be <= {limit}")
    return int(n)


def stop_strings(stop, limit: Optional[int] = None) -> List[str]:
    """None / a str / a list of str -> the distinct non-empty stop strings (TypeError for
    anything else; ValueError for more than `limit`)."""
    if isinstance(stop, (list, tuple)):
        if limit is not None and len(stop) > limit:
            raise FieldError("stop", f"stop: at most {limit} stop strings, got {len(stop)}")
        for i, s in enumerate(stop):
            if isinstance(s, str):
                check_text(s, f"stop[{i}]")
    elif isinstance(stop, str):
        check_text(stop, "stop")
    out = normalize_stop(stop)
    if limit is not None and len(out) > limit:
        raise FieldError("stop", f"stop: at most {limit} stop strings")
    return out
