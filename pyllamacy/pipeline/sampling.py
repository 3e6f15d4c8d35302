"""Sampling settings of one request -> the llama.cpp sampler chain (Llama and the server).

    sp = SamplingParams(temp=0.8, top_k=40, ...)          # checked once (SamplerError/TypeError)
    s = build_sampler(model, sp, seed, last_n_tokens_size)
    feed_history(s, sp, prompt_tokens, last_n_tokens_size)   # after the prompt is known
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .._llama import GrammarError, Sampler, SamplerError
from ..gbnf import gbnf_problem
from ..llama_types import LlamaGrammar
from .checks import check_text, short

__all__ = ["SamplingParams", "check_number", "check_logit_bias_ids", "build_sampler",
           "feed_history", "prefill_tokens", "grammar_limit_ms", "reference_grammar_ms"]


def check_number(name: str, value, lo: Optional[float] = None,
                 hi: Optional[float] = None) -> float:
    """`value` as a finite float within [lo, hi]; SamplerError (a ValueError) otherwise."""
    if isinstance(value, bool):
        raise SamplerError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SamplerError(f"{name} must be a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise SamplerError(f"{name} must be a finite number, got {v}")
    if lo is not None and v < lo:
        raise SamplerError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise SamplerError(f"{name} must be <= {hi}, got {v}")
    return v


def _logit_bias(bias) -> Dict[int, float]:
    """{token id: bias} from llama-cpp-python's / OpenAI's {"id": number} (keys may be str or
    int; a bias is finite, or -inf to ban the token). The ids' range is checked against the
    model's vocabulary in build_sampler."""
    if not isinstance(bias, dict):
        raise SamplerError(f"logit_bias must map token ids to numbers, got "
                           f"{type(bias).__name__}")
    out: Dict[int, float] = {}
    for k, v in bias.items():
        if isinstance(k, str) and k.strip().lstrip("+-").isdigit() and k.isascii():
            t = int(k)
        elif not isinstance(k, bool) and isinstance(k, (int, np.integer)):
            t = int(k)
        else:
            raise SamplerError(f"logit_bias: key {short(k)} is not a token id")
        try:
            if isinstance(v, bool):
                raise TypeError
            f = float(v)
        except (TypeError, ValueError):
            raise SamplerError(f"logit_bias[{t}] must be a number, got {short(v)}") from None
        if f != f or f == float("inf"):
            raise SamplerError(f"logit_bias[{t}] must be a finite number (or -inf to ban the "
                               f"token), got {f}")
        out[t] = f
    return out


def check_logit_bias_ids(bias: Optional[Dict[int, float]], n_vocab: int) -> None:
    """SamplerError naming the first token id of `bias` outside the vocabulary."""
    for t in bias or ():
        if not 0 <= t < n_vocab:
            raise SamplerError(f"logit_bias: token id {t} is out of range for this model's "
                               f"vocabulary (0..{n_vocab - 1})")


class SamplingParams:
    """One request's sampling settings, checked once (llama-cpp-python's meanings, with
    `temp` for temperature; no defaults, as Llama's completion and chat defaults differ).
    SamplerError (a ValueError) or TypeError for a bad value."""
    __slots__ = ("temp", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty",
                 "frequency_penalty", "presence_penalty", "mirostat_mode", "mirostat_tau",
                 "mirostat_eta", "grammar", "grammar_obj", "logit_bias")

    def __init__(self, *, temp, top_k, top_p, min_p, typical_p, repeat_penalty,
                 frequency_penalty, presence_penalty, mirostat_mode, mirostat_tau, mirostat_eta,
                 grammar=None, logit_bias=None):
        self.temp = check_number("temperature", temp)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
            raise SamplerError(f"top_k must be an integer, got {top_k!r}")
        if top_k < 0:
            raise SamplerError(f"top_k must be >= 0 (0 disables it), got {top_k}")
        self.top_k = int(top_k)
        self.top_p = check_number("top_p", top_p, 0.0, 1.0)
        self.min_p = check_number("min_p", min_p, 0.0, 1.0)
        self.typical_p = check_number("typical_p", typical_p, 0.0, 1.0)
        self.repeat_penalty = check_number("repeat_penalty", repeat_penalty)
        if self.repeat_penalty <= 0:
            raise SamplerError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        self.frequency_penalty = check_number("frequency_penalty", frequency_penalty)
        self.presence_penalty = check_number("presence_penalty", presence_penalty)
        if mirostat_mode not in (0, 1, 2) or isinstance(mirostat_mode, bool):
            raise SamplerError(f"mirostat_mode must be 0 (off), 1 or 2, got {mirostat_mode!r}")
        self.mirostat_mode = int(mirostat_mode)
        self.mirostat_tau = check_number("mirostat_tau", mirostat_tau, 0.0)
        self.mirostat_eta = check_number("mirostat_eta", mirostat_eta, 0.0)
        self.grammar_obj: Optional[LlamaGrammar] = None
        if grammar is None:
            self.grammar: Optional[str] = None
        elif isinstance(grammar, LlamaGrammar):
            self.grammar = grammar.grammar
            self.grammar_obj = grammar
        elif isinstance(grammar, str):
            self.grammar = grammar
        else:
            raise TypeError(f"grammar must be a LlamaGrammar or a GBNF string, "
                            f"not {type(grammar).__name__}")
        if self.grammar is not None:
            check_text(self.grammar, "grammar")
            problem = gbnf_problem(self.grammar)
            if problem is not None:
                raise GrammarError(f"grammar: {problem}")
        self.logit_bias: Optional[Dict[int, float]] = _logit_bias(logit_bias) \
            if logit_bias else None

    @property
    def penalized(self) -> bool:
        """Whether a repeat/frequency/presence penalty applies."""
        return not (self.repeat_penalty == 1.0 and self.frequency_penalty == 0.0
                    and self.presence_penalty == 0.0)


def prefill_tokens(model, text: str) -> List[int]:
    """The tokens of a template's generation prompt, as llama.cpp's common_sampler feeds them
    to an output-format grammar (a leading space piece some tokenizers add is skipped)."""
    toks = model.tokenize(text.encode("utf-8"), add_special=False, parse_special=True)
    out = []
    for i, t in enumerate(toks):
        if i == 0 and text and not text[0].isspace():
            piece = model.token_to_piece(t, True)
            if piece[:1].isspace():
                continue
        out.append(t)
    return out


def build_sampler(model, sp: SamplingParams, seed: int, last_n_tokens_size: int,
                  extra_bias: Optional[Dict[int, float]] = None) -> Sampler:
    """The llama.cpp sampler chain for one request, in llama-cpp-python's order; stages that
    would change nothing are left out. A chat grammar with a prefill has seen it already."""
    check_logit_bias_ids(sp.logit_bias, model.n_vocab)
    s = Sampler(model)
    if extra_bias:
        s.logit_bias(extra_bias)
    if sp.logit_bias:
        s.logit_bias(sp.logit_bias)
    if sp.penalized:
        s.penalties(last_n_tokens_size, sp.repeat_penalty, sp.frequency_penalty,
                    sp.presence_penalty)
    g = sp.grammar_obj
    lazy = g.lazy_triggers if g is not None else None
    if sp.grammar is not None:
        if lazy is not None:
            s.grammar_lazy(sp.grammar, lazy[0], lazy[1], g.root)
        else:
            s.grammar(sp.grammar, g.root if g is not None else "root")
    if sp.temp <= 0:
        s.greedy()
    elif sp.mirostat_mode == 1:
        s.temp(sp.temp)
        s.mirostat(sp.mirostat_tau, sp.mirostat_eta, 100, seed)
    elif sp.mirostat_mode == 2:
        s.temp(sp.temp)
        s.mirostat_v2(sp.mirostat_tau, sp.mirostat_eta, seed)
    else:
        if sp.top_k != 0:
            s.top_k(sp.top_k)
        if sp.typical_p != 1.0:
            s.typical(sp.typical_p)
        if sp.top_p != 1.0:
            s.top_p(sp.top_p)
        if sp.min_p != 0.0:
            s.min_p(sp.min_p)
        if sp.temp != 1.0:
            s.temp(sp.temp)
        s.dist(seed)
    if g is not None and g.prefill and lazy is None:
        for t in prefill_tokens(model, g.prefill):
            s.accept(t)
    return s


def feed_history(sampler: Sampler, sp: SamplingParams, context: Sequence[int],
                 last_n_tokens_size: int, generated: Sequence[int] = ()) -> None:
    """What a fresh sampler must have seen before its first token.

    Without a grammar, the penalties see the last `last_n_tokens_size` positions of `context`
    (the prompt, or what the context holds; -1: all of it), as llama.cpp's server does; media
    positions (negative ids) are skipped. With a grammar, the prompt would not parse: the
    grammar sees `generated` (the tokens of this reply so far, for a chain built mid-reply)."""
    if sp.grammar is not None:
        for t in generated:
            sampler.accept(int(t))
        return
    if not sp.penalized or last_n_tokens_size == 0:
        return
    n = len(context)
    window = context if last_n_tokens_size < 0 else context[max(0, n - last_n_tokens_size):]
    if isinstance(window, np.ndarray):
        window = window.tolist()
    for t in window:
        t = int(t)
        if t >= 0:
            sampler.accept(t)


class GrammarCostError(ValueError):
    """A request's grammar costs more per token than the server allows."""


# A grammar is never refused for costing less than this many times what a plain JSON string's
# grammar costs on the same vocabulary and machine: a slow or busy CPU makes every grammar
# dearer, and the limit follows it, so it refuses the same grammars everywhere (long enums,
# thousands of alternatives) and not a three-field tool schema on a slow machine.
GRAMMAR_COST_REFERENCE_FACTOR = 50.0
_REFERENCE_GRAMMAR = r'root ::= "\"" [^"\\]* "\""'


def reference_grammar_ms(model) -> float:
    """Milliseconds of CPU one full pass of a plain JSON string's grammar costs over `model`'s
    vocabulary on this machine (the least of three passes): the unit a grammar's cost is
    judged in."""
    with Sampler(model).grammar(_REFERENCE_GRAMMAR) as s:
        return min(s.grammar_cost(0) for _ in range(3)) * 1000.0


def grammar_limit_ms(model, limit_ms: float) -> float:
    """The per-token grammar cost a server refuses above: `limit_ms` (grammar_max_ms_per_token),
    raised to GRAMMAR_COST_REFERENCE_FACTOR times reference_grammar_ms(model) where this
    machine is slower than that allows; 0 (no limit) stays 0."""
    if limit_ms <= 0:
        return 0.0
    return max(float(limit_ms), GRAMMAR_COST_REFERENCE_FACTOR * reference_grammar_ms(model))


def check_grammar_cost(sampler: Sampler, limit_ms: float, field: str = "grammar") -> float:
    """Milliseconds the grammars of `sampler` cost per token at worst (one pass over the
    vocabulary from their starting state); GrammarCostError when above `limit_ms` (<= 0: no
    limit, nothing measured). A cheap estimate on part of the vocabulary comes first, so that
    a grammar far over the limit is refused without paying a full pass; a full pass over the
    limit is measured once more (the lesser counts), so that one unlucky pass refuses nothing."""
    if limit_ms <= 0 or "grammar" not in sampler.names:
        return 0.0
    ms = sampler.grammar_cost(4096) * 1000.0
    if ms <= limit_ms:
        ms = sampler.grammar_cost(0) * 1000.0
        if ms > limit_ms:
            ms = min(ms, sampler.grammar_cost(0) * 1000.0)
    if ms > limit_ms:
        raise GrammarCostError(
            f"{field}: the grammar it makes costs about {ms:.0f} ms per token to apply, over "
            f"this server's limit of {limit_ms:.0f} ms (grammar_max_ms_per_token, or "
            f"{GRAMMAR_COST_REFERENCE_FACTOR:g}x a plain string's grammar on this machine); "
            f"long enums or many alternatives are the usual cause")
    return ms
