"""Prompt caches for Llama.set_cache (llama-cpp-python's LlamaCache, LlamaRAMCache,
LlamaDiskCache).

After each completion the Llama stores its state (KV cache, logits, tokens) under the tokens it
holds; before the next one it looks up the stored state whose tokens share the longest prefix
with the new prompt and, when that prefix is longer than what the context holds now, restores
it, so only the rest of the prompt is evaluated. That pays off when several conversations or
documents alternate on one Llama (the context alone keeps only the last one).

A cache belongs to one model and one n_ctx: states restore only into a Llama like the one that
saved them.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Iterable, Optional, Sequence, Tuple

from .llama_types import LlamaState

__all__ = ["BaseLlamaCache", "LlamaRAMCache", "LlamaDiskCache", "LlamaCache"]

Key = Tuple[int, ...]


def _key(tokens: Iterable[int]) -> Key:
    return tuple(int(t) for t in tokens)


def longest_token_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _size(state: LlamaState) -> int:
    n = state.llama_state_size
    return int(n) if n is not None else len(state.llama_state)


class BaseLlamaCache:
    """A mapping from token sequences to LlamaState, looked up by longest common prefix:
    cache[tokens] returns the state of the stored sequence sharing the longest (non-empty)
    prefix with `tokens`, or raises KeyError."""

    def __init__(self, capacity_bytes: int = 2 << 30):
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) \
                or capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be an integer >= 0, got {capacity_bytes!r}")
        self.capacity_bytes = capacity_bytes

    # the storage, per subclass
    def _keys(self) -> Iterable[Key]:
        raise NotImplementedError

    def _get(self, key: Key) -> LlamaState:
        raise NotImplementedError

    def _set(self, key: Key, state: LlamaState) -> None:
        raise NotImplementedError

    @property
    def cache_size(self) -> int:
        """Bytes of saved context state held."""
        raise NotImplementedError

    def _find_prefix_key(self, key: Key) -> Optional[Key]:
        best, best_len = None, 0
        for k in self._keys():
            n = longest_token_prefix(k, key)
            if n > best_len:
                best, best_len = k, n
        return best

    def __getitem__(self, tokens: Sequence[int]) -> LlamaState:
        found = self._find_prefix_key(_key(tokens))
        if found is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        return self._get(found)

    def __contains__(self, tokens: Sequence[int]) -> bool:
        return self._find_prefix_key(_key(tokens)) is not None

    def __setitem__(self, tokens: Sequence[int], state: LlamaState) -> None:
        if not isinstance(state, LlamaState):
            raise TypeError(f"a cache holds LlamaState values, not {type(state).__name__}")
        self._set(_key(tokens), state)

    def __len__(self) -> int:
        return sum(1 for _ in self._keys())


class LlamaRAMCache(BaseLlamaCache):
    """States in memory, least recently used dropped first beyond `capacity_bytes`."""

    def __init__(self, capacity_bytes: int = 2 << 30):
        super().__init__(capacity_bytes)
        self._states: "OrderedDict[Key, LlamaState]" = OrderedDict()
        self._bytes = 0

    @property
    def cache_size(self) -> int:
        return self._bytes

    def _keys(self):
        return list(self._states)

    def _get(self, key: Key) -> LlamaState:
        self._states.move_to_end(key)
        return self._states[key]

    def _set(self, key: Key, state: LlamaState) -> None:
        old = self._states.pop(key, None)
        if old is not None:
            self._bytes -= _size(old)
        self._states[key] = state
        self._bytes += _size(state)
        while self._bytes > self.capacity_bytes and self._states:
            _, dropped = self._states.popitem(last=False)
            self._bytes -= _size(dropped)


class LlamaDiskCache(BaseLlamaCache):
    """States in a folder through the `diskcache` package (pip install diskcache), dropped
    least recently used first beyond `capacity_bytes`; they survive the process."""

    def __init__(self, cache_dir: str = ".cache/llama_cache", capacity_bytes: int = 2 << 30):
        super().__init__(capacity_bytes)
        try:
            import diskcache
        except ImportError as e:
            raise ImportError("LlamaDiskCache needs the diskcache package: pip install "
                              "diskcache") from e
        self.cache_dir = os.fspath(cache_dir)
        self._cache = diskcache.Cache(self.cache_dir, size_limit=max(capacity_bytes, 1),
                                      eviction_policy="least-recently-used")

    @property
    def cache_size(self) -> int:
        return int(self._cache.volume())

    def _keys(self):
        return list(self._cache.iterkeys())

    def _get(self, key: Key) -> LlamaState:
        state = self._cache.get(key)
        if state is None:                    # evicted between the lookup and now
            raise KeyError("the cached state was evicted")
        return state

    def _set(self, key: Key, state: LlamaState) -> None:
        self._cache.set(key, state)
        self._cache.cull()

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> "LlamaDiskCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


LlamaCache = LlamaRAMCache
