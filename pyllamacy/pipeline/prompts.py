"""A request's prompt -> the tokens to evaluate (Llama and the server).

A prompt is a str (or UTF-8 bytes), a list of token ids, or a list holding one str; with a
`suffix`, the fill-in-the-middle prompt around it. Bad input raises ValueError / TypeError with
a message meant for the caller (the server answers it with 400).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .checks import FieldError, check_text

__all__ = ["prompt_tokens", "infill_tokens", "InfillLimits", "InfillUnsupportedError"]


class InfillUnsupportedError(ValueError):
    """The model has no fill-in-the-middle tokens (FIM prefix / suffix / middle)."""


@dataclass(frozen=True)
class InfillLimits:
    """llama-server /infill's budget for the parts of a FIM prompt: the prefix keeps its last
    3/4 of `n_batch` tokens, the suffix its first n_batch/4 - 2 - (typed tokens), and the
    other files' chunks (repo-level context) the last n_ctx - n_batch - 2 * n_predict tokens
    (n_ctx: a slot's context; n_predict: the tokens the request asks for)."""
    n_batch: int
    n_ctx: int
    n_predict: int = 0


# a chunk of another file without a FIM file-separator token: a text line around it
_SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"
_REPO_NAME = "myproject"          # llama-server's project name line after FIM_REP
_FILE_NAME = "filename"           # and its name of the file being edited


def _fim_ids(model, name: str) -> Tuple[int, int, int]:
    pre, suf, mid = model.token_fim_pre(), model.token_fim_suf(), model.token_fim_mid()
    missing = [what for what, t in (("prefix", pre), ("suffix", suf), ("middle", mid)) if t < 0]
    if missing:
        raise InfillUnsupportedError(
            f"fill-in-the-middle (infill) needs a model with FIM prefix/suffix/middle tokens; "
            f"{name} has none (missing: {', '.join(missing)})")
    return pre, suf, mid


def _repo_tokens(model, extra: Sequence[Tuple[str, str]]) -> List[int]:
    """The repo-level context: FIM_REP "myproject\\n", then per chunk FIM_SEP "<filename>\\n"
    and its text (a "--- snippet ---" line instead of FIM_SEP for a model without one), then
    FIM_SEP "filename\\n" for the file being edited (the layout of Qwen2.5-Coder's paper,
    arXiv 2409.12186, as llama-server writes it)."""
    def tok(text: str) -> List[int]:
        return model.tokenize(text.encode("utf-8"), add_special=False, parse_special=False) \
            if text else []
    rep, sep = model.token_fim_rep(), model.token_fim_sep()
    out: List[int] = []
    if rep >= 0:
        out += [rep] + tok(_REPO_NAME + "\n")
    for filename, text in extra:
        out += ([sep] + tok(filename + "\n")) if sep >= 0 else tok(_SNIPPET_SEPARATOR)
        out += tok(text)
    if sep >= 0:
        out += [sep] + tok(_FILE_NAME + "\n")
    return out


def infill_tokens(model, prefix_tokens: Sequence[int], suffix_tokens: Sequence[int],
                  spm_infill: bool = False, name: str = "this model", *,
                  typed: Sequence[int] = (), extra: Optional[Sequence[Tuple[str, str]]] = None,
                  limits: Optional[InfillLimits] = None) -> List[int]:
    """The fill-in-the-middle prompt: [BOS] FIM_PRE prefix typed FIM_SUF suffix FIM_MID (the
    FIM_SUF part first with spm_infill), for Llama(suffix=), /v1/completions' suffix and
    /infill. `typed`: the tokens of the line being typed (/infill's `prompt`), after the
    prefix. `extra`: [(filename, text)] of other files (/infill's input_extra; [] for none):
    the repo-level context (_repo_tokens) goes first, before BOS. `limits`: cut the parts to
    llama-server /infill's budget (InfillLimits); None: nothing is cut.
    InfillUnsupportedError (a ValueError) when the model has no FIM tokens."""
    pre, suf, mid = _fim_ids(model, name)
    prefix, suffix, typed = list(prefix_tokens), list(suffix_tokens), list(typed)
    repo = _repo_tokens(model, extra) if extra is not None else []
    if limits is not None:
        quarter = limits.n_batch // 4
        n_prefix = min(len(prefix), 3 * quarter)
        prefix = prefix[len(prefix) - n_prefix:]
        suffix = suffix[:max(0, quarter - (2 + len(typed)))]
        n_repo = min(max(0, limits.n_ctx - limits.n_batch - 2 * limits.n_predict), len(repo))
        repo = repo[len(repo) - n_repo:]
    prefix_part = [pre] + prefix + typed
    suffix_part = [suf] + suffix
    first, second = (suffix_part, prefix_part) if spm_infill else (prefix_part, suffix_part)
    bos = model.token_bos()
    lead = [bos] if model.add_bos and bos >= 0 else []
    return repo + lead + first + second + [mid]


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
