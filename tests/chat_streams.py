"""Feeding a chat reply to pyllamacy.chat.ChatDeltas piece by piece, as a stream would."""
from __future__ import annotations

from pyllamacy import chat


def stream_deltas(req, reply: str, sizes):
    """Feed `reply` to ChatDeltas in pieces of the given sizes (the rest in one piece) ->
    (deltas before the end, all deltas, finish reason)."""
    d = chat.ChatDeltas(req)
    out, i = [], 0
    for n in sizes:
        if i >= len(reply):
            break
        out += d.feed(reply[i:i + n])
        i += n
    if i < len(reply):
        out += d.feed(reply[i:])
    last, finish = d.finish("stop")
    return out, out + last, finish


def joined(deltas, key: str) -> str:
    """The text of one delta field over a stream."""
    return "".join(d.get(key, "") for d in deltas)
