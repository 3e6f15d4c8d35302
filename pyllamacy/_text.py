"""Turning generated token pieces into text: UTF-8 reassembly and stop strings.

One class, used by both the streaming and the non-streaming completion paths so that the
concatenated stream is identical to the non-streamed text:

* token pieces are bytes, and a multi-byte character may be split over several tokens; an
  incremental decoder holds an incomplete sequence back until it is complete (bytes that can
  never be valid UTF-8 become U+FFFD; an incomplete sequence left at the very end, i.e. a
  character cut by max_tokens, is dropped);
* the text is cut before the first occurrence of any stop string, and text that could be the
  beginning of a stop string is held back until the following text tells whether it is.
"""
from __future__ import annotations

import codecs
from typing import Iterable, List, Optional, Sequence, Union

__all__ = ["TextAssembler", "normalize_stop"]


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
        decoded:  characters decoded so far, before any cut (offset of the next token's text).
        released: characters handed out so far (push + flush).
    """

    __slots__ = ("_dec", "_stop", "_max_hold", "_pending", "stopped", "stop_hit", "decoded",
                 "released")

    def __init__(self, stop: Optional[Sequence[str]] = None):
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = normalize_stop(stop)
        self._max_hold = max((len(s) for s in self._stop), default=1) - 1
        self._pending = ""
        self.stopped = False
        self.stop_hit: Optional[str] = None
        self.decoded = 0
        self.released = 0

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; returns the text that can be released now (maybe "")."""
        if self.stopped:
            return ""
        new = self._dec.decode(piece)
        if not new:
            return ""
        self.decoded += len(new)
        if not self._stop:
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
