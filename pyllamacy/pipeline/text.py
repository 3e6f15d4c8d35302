"""Turning generated token pieces into text: UTF-8 reassembly, stop strings, logprob entries.

TokenText is the one consumer of a generation's tokens, for Llama and the server alike, streamed
or not: (piece bytes, logprob entry or None) in, (released text, released logprob entries) out,
then the finish reason. It builds on TextAssembler, so that the concatenated stream is identical
to the non-streamed text:

* token pieces are bytes, and a multi-byte character may be split over several tokens; an
  incremental decoder holds an incomplete sequence back until it is complete (bytes that can
  never be valid UTF-8 become U+FFFD; an incomplete sequence left at the very end, i.e. a
  character cut by max_tokens, is dropped);
* the text is cut before the first occurrence of any stop string, and text that could be the
  beginning of a stop string is held back until the following text tells whether it is;
* a token's logprob entry is released with the token's text, and dropped with it when a stop
  string cuts the text before the token.
"""
from __future__ import annotations

import codecs
from collections import deque
from numbers import Integral
from typing import Deque, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = ["TextAssembler", "normalize_stop", "TokenText", "LogprobEntry", "TextEntry",
           "piece_text", "logprob_entry", "join_pieces", "FINISH_REASONS"]

# One token's log-probability: (token text, log-probability, {text: log-probability} of the top
# N alternatives and of the token itself) -- the engine's and Llama's shape.
LogprobEntry = Tuple[str, float, Dict[str, float]]
# The same, placed in the text: (token text, text offset, log-probability, top). Echoed prompt
# tokens without a log-probability carry None for both.
TextEntry = Tuple[str, int, Optional[float], Optional[Dict[str, float]]]

# why a generation ended, as producers report it, and what a response says for each
FINISH_REASONS = {"stop": "stop", "length": "length", "aborted": "stop", "cancelled": "stop",
                  "error": "error", None: "stop"}


def normalize_stop(stop: Union[None, str, bytes, Iterable[Union[str, bytes]]]) -> List[str]:
    """None / a string / a list of strings -> list of non-empty stop strings."""
    if stop is None:
        return []
    if isinstance(stop, (str, bytes)):
        stop = [stop]
    out = []
    for s in stop:
        if isinstance(s, bytes):
            s = s.decode("utf-8", "replace")
        if not isinstance(s, str):
            raise TypeError(f"stop strings must be str, got {type(s).__name__}")
        if s and s not in out:
            out.append(s)
    return out


class TextAssembler:
    """Consumes token pieces (bytes), releases text that is safe to show.

        t = TextAssembler(stop=["\\n\\n"])
        for piece in pieces:
            out += t.push(piece)
            if t.stopped:
                break
        out += t.flush()

    Attributes:
        stopped:  a stop string was found; `push` ignores further input.
        stop_hit: the stop string that ended the text (or None).
        indent_stop: a line less indented than `min_indent` ended the text (llama-server's
                  n_indent; its first character and what follows are cut).
        decoded:  characters decoded so far, before any cut (offset of the next token's text).
        released: characters handed out so far (push + flush).
    """

    __slots__ = ("_dec", "_stop", "_max_hold", "_pending", "stopped", "stop_hit", "decoded",
                 "released", "_min_indent", "_indent", "indent_stop")

    def __init__(self, stop: Optional[Sequence[str]] = None, min_indent: int = 0):
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = normalize_stop(stop)
        self._max_hold = max((len(s) for s in self._stop), default=1) - 1
        self._pending = ""
        self.stopped = False
        self.stop_hit: Optional[str] = None
        self.decoded = 0
        self.released = 0
        # llama-server's n_indent: a line after the first that starts less indented than
        # this (spaces and tabs count one each) ends the text before its first character
        self._min_indent = min_indent
        self._indent = -1           # -1: first line (or past the indentation of this one)
        self.indent_stop = False    # the text ended at a less-indented line

    def _indent_cut(self, new: str) -> int:
        """Where in `new` a line starts less indented than min_indent (its first character
        that is not a space or tab), or -1; follows the lines across pushes."""
        for i, ch in enumerate(new):
            if ch == "\n":
                if self._indent >= 0 and self._indent < self._min_indent:
                    return i        # an empty line is less indented too (as llama-server)
                self._indent = 0
            elif self._indent >= 0:
                if ch in " \t":
                    self._indent += 1
                elif self._indent < self._min_indent:
                    return i
                else:
                    self._indent = -1
        return -1

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; returns the text that can be released now (maybe "")."""
        if self.stopped:
            return ""
        new = self._dec.decode(piece)
        if not new:
            return ""
        self.decoded += len(new)
        indent_cut = self._indent_cut(new) if self._min_indent > 0 else -1
        if not self._stop and indent_cut == -1:
            self.released += len(new)
            return new
        # the held-back text cannot contain a whole stop string (it would have been cut), so
        # an occurrence can only end in `new`; searching from the start of the pending text is
        # enough
        buf = self._pending + new
        cut = -1
        hit = None
        for s in self._stop:
            i = buf.find(s)
            if i != -1 and (cut == -1 or i < cut):
                cut, hit = i, s
        if indent_cut != -1 and (cut == -1 or len(self._pending) + indent_cut < cut):
            cut, hit = len(self._pending) + indent_cut, None
            self.indent_stop = True
        if cut != -1:
            self.stopped = True
            self.stop_hit = hit
            self._pending = ""
            out = buf[:cut]
            self.released += len(out)
            return out
        hold = self._hold_len(buf)
        if hold:
            out, self._pending = buf[:-hold], buf[-hold:]
        else:
            out, self._pending = buf, ""
        self.released += len(out)
        return out

    def _hold_len(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of a stop string."""
        best = 0
        n = min(self._max_hold, len(buf))
        for s in self._stop:
            for k in range(min(len(s) - 1, n), best, -1):
                if buf.endswith(s[:k]):
                    best = k
                    break
        return best

    def flush(self) -> str:
        """End of the text: release what was held back (unless a stop string was found).

        An incomplete UTF-8 sequence left in the decoder (a character cut in the middle by
        max_tokens) is dropped.
        """
        if self.stopped:
            return ""
        out, self._pending = self._pending, ""
        self._dec.reset()
        self.released += len(out)
        return out


def join_pieces(model, tokens: Sequence[int], special: bool = False) -> bytes:
    """Token ids -> bytes the way llama-cpp-python's Llama.detokenize does it: each token's
    own piece (llama_token_to_piece, nothing stripped; control tokens render as their text only
    with special=True) joined, less one leading space when the first token is the model's BOS
    (where a SentencePiece vocabulary's first word carries a word-start space).

    Unlike llama.cpp's llama_detokenize this does not strip a SentencePiece vocabulary's
    word-start space from whatever token comes first, nor clean up spaces before
    punctuation (WordPiece): pieces detokenized one by one and joined give the same bytes as
    the whole list detokenized at once (less that one space after a leading BOS)."""
    ids = []
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, Integral):
            raise TypeError(f"token ids must be integers, got {type(t).__name__}")
        ids.append(int(t))
    to_piece = model.token_to_piece
    out = b"".join([to_piece(t, special) for t in ids])
    if ids and ids[0] == model.token_bos() and out[:1] == b" ":
        out = out[1:]
    return out


def piece_text(model, token: int) -> str:
    """A token's text as logprob entries show it (bytes that are no valid UTF-8 on their own,
    such as part of a character, are dropped)."""
    return model.token_to_piece(token).decode("utf-8", errors="ignore")


def logprob_entry(model, token: int, logprob: float, top) -> LogprobEntry:
    """The entry of `token` sampled with `logprob`; `top`: (token id, log-probability) pairs of
    the most likely tokens, best first. Two tokens with the same text keep the likelier one's
    value; the token itself is always in the top dict, with its own value."""
    text = piece_text(model, token)
    top_dict: Dict[str, float] = {}
    for t, v in top:
        top_dict.setdefault(piece_text(model, int(t)), float(v))
    top_dict[text] = float(logprob)
    return text, float(logprob), top_dict


class TokenText:
    """One generation's tokens -> released text and logprob entries, then its finish reason.

        tt = TokenText(stop, base=len(prompt_text))
        for piece, entry in tokens:                 # entry: LogprobEntry or None
            text, entries = tt.push(piece, entry)
            ...                                     # hand out text + entries
            if tt.stopped:
                break                               # (cancel the producer)
        text, entries = tt.finish(reason, error)    # what was held back
        tt.finish_reason                            # "stop", "length" or "error" (+ tt.error)

    Text offsets of the entries count from `base` (the prompt's length in characters, as in
    llama-cpp-python). An entry is released once its token's text is; the entries of tokens
    that a stop string cut off are dropped.

    Attributes:
        n_tokens:      tokens pushed before the text stopped (the completion's token count)
        stopped:       a stop string ended the text (further pushes are ignored)
        finish_reason: None until finish(); then "stop", "length" or "error"
        error:         with finish_reason "error", the exception that ended it (or None)
    """

    __slots__ = ("_asm", "_base", "_pending", "n_tokens", "finish_reason", "error")

    def __init__(self, stop: Optional[Sequence[str]] = None, base: int = 0,
                 min_indent: int = 0):
        self._asm = TextAssembler(stop, min_indent)
        self._base = base
        self._pending: Deque[TextEntry] = deque()
        self.n_tokens = 0
        self.finish_reason: Optional[str] = None
        self.error: Optional[BaseException] = None

    @property
    def stopped(self) -> bool:
        return self._asm.stopped

    @property
    def stop_hit(self) -> Optional[str]:
        return self._asm.stop_hit

    def _released(self) -> List[TextEntry]:
        out = []
        pending, limit = self._pending, self._base + self._asm.released
        while pending and pending[0][1] < limit:
            out.append(pending.popleft())
        return out

    def push(self, piece: bytes, entry: Optional[LogprobEntry] = None
             ) -> Tuple[str, List[TextEntry]]:
        """One token's bytes (and its logprob entry) -> (text, entries) released now."""
        asm = self._asm
        if asm.stopped:
            return "", []
        self.n_tokens += 1
        offset = self._base + asm.decoded
        text = asm.push(piece)
        if entry is not None:
            self._pending.append((entry[0], offset, entry[1], entry[2]))
        return text, (self._released() if self._pending else [])

    def finish(self, reason: Optional[str], error: Optional[BaseException] = None
               ) -> Tuple[str, List[TextEntry]]:
        """The generation ended (reason: "stop", "length", "aborted", "error" or None, with
        `error` for "error") -> the (text, entries) held back until now. The finish reason of
        the response: "stop" when a stop string ended the text, for "aborted" and for None;
        "length" when a less-indented line did (min_indent)."""
        asm = self._asm
        text = asm.flush()
        if asm.stopped:
            entries = self._released()
            self._pending.clear()
            # a less-indented line is llama-server's "limit" stop, not a stop string
            self.finish_reason = "length" if asm.indent_stop else "stop"
        else:
            entries = list(self._pending)
            self._pending.clear()
            self.finish_reason = FINISH_REASONS.get(reason, reason)
        self.error = error if self.finish_reason == "error" else None
        return text, entries
