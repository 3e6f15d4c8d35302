"""A request's prompt -> the tokens to evaluate (Llama and the server).

A prompt is a str (or UTF-8 bytes), a list of token ids, or a list holding one str; with a
`suffix`, the fill-in-the-middle prompt around it. Bad input raises ValueError / TypeError with
a message meant for the caller (the server answers it with 400).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .checks import FieldError, check_text

__all__ = ["prompt_tokens", "infill_tokens"]


def infill_tokens(model, prefix_tokens: Sequence[int], suffix_tokens: Sequence[int],
                  spm_infill: bool = False, name: str = "this model") -> List[int]:
    """The fill-in-the-middle prompt: [BOS] FIM_PRE prefix FIM_SUF suffix FIM_MID (the suffix
    part first with spm_infill). ValueError when the model has no FIM tokens."""
    pre, suf, mid = model.token_fim_pre(), model.token_fim_suf(), model.token_fim_mid()
    if min(pre, suf, mid) < 0:
        raise ValueError(f"suffix= (fill-in-the-middle) needs a model with FIM prefix/suffix/"
                         f"middle tokens; {name} has none")
    prefix_part = [pre] + list(prefix_tokens)
    suffix_part = [suf] + list(suffix_tokens)
    toks = (suffix_part + prefix_part) if spm_infill else (prefix_part + suffix_part)
    bos = model.token_bos()
    if model.add_bos and bos >= 0:
        toks = [bos] + toks
    return toks + [mid]


class _ModelTokenizer:
    """llama-cpp-python's tokenizer calls over a pyllamacy.Model."""
    __slots__ = ("model",)

    def __init__(self, model):
        self.model = model

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> List[int]:
        return self.model.tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        return self.model.detokenize(list(tokens))


def _token_ids(prompt, n_vocab: int) -> List[int]:
    ids = []
    for t in prompt:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise TypeError(f"prompt must be a str or a list of token ids, got a list holding "
                            f"{type(t).__name__}")
        ids.append(int(t))
    if any(t < 0 or t >= n_vocab for t in ids):
        bad = next(t for t in ids if t < 0 or t >= n_vocab)
        raise FieldError("prompt", f"prompt: token ids must be in 0..{n_vocab - 1}, got {bad}")
    return ids


def prompt_tokens(model, prompt, suffix: Optional[str] = None, *, tokenizer=None,
                  spm_infill: bool = False, model_name: str = "this model"
                  ) -> Tuple[List[int], str]:
    """The prompt (and infill `suffix`) -> (tokens, prompt text for echo and text offsets).

    A text is tokenized with BOS (where the model adds one) and special-token text parsed; an
    empty prompt becomes [BOS] (ValueError for a model without one). With `suffix`, the prompt
    and the suffix are tokenized as plain text and placed around the model's FIM tokens
    (infill_tokens; ValueError for a model without them). `tokenizer`: an object with
    llama-cpp-python's tokenize(bytes, add_bos, special) / detokenize(ids) (Llama's, which
    honours Llama(tokenizer=...)); default: the model's own."""
    tk = tokenizer if tokenizer is not None else _ModelTokenizer(model)
    given: Optional[List[int]] = None
    if isinstance(prompt, (bytes, bytearray)):
        prompt = bytes(prompt).decode("utf-8")
    elif isinstance(prompt, (list, tuple, np.ndarray)):
        if len(prompt) and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise ValueError("one prompt per request (a list of several prompts is not "
                                 "supported)")
            prompt = check_text(prompt[0], "prompt[0]")
        else:
            given = _token_ids(prompt, model.n_vocab)
            prompt = tk.detokenize(given).decode("utf-8", errors="replace") if given else ""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str or a list of token ids, not "
                        f"{type(prompt).__name__}")
    text = check_text(prompt, "prompt")
    if suffix is not None and isinstance(suffix, str):
        check_text(suffix, "suffix")
    if suffix is None:
        toks = given if given is not None else tk.tokenize(text.encode("utf-8"), True, True)
        if not toks:
            bos = model.token_bos()
            if bos < 0:
                raise ValueError("the prompt is empty and this model has no BOS token to "
                                 "start from")
            toks = [bos]
        return list(toks), text
    if not isinstance(suffix, str):
        raise TypeError(f"suffix must be a str, not {type(suffix).__name__}")
    body = given if given is not None else (
        tk.tokenize(text.encode("utf-8"), False, False) if text else [])
    suffix_toks = tk.tokenize(suffix.encode("utf-8"), False, False) if suffix else []
    return infill_tokens(model, body, suffix_toks, spm_infill, model_name), text
