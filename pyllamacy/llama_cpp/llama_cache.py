"""``llama_cpp.llama_cache``: prompt caches for ``Llama.set_cache`` (pyllamacy.llama_cache)."""
from __future__ import annotations

from ..llama_cache import BaseLlamaCache, LlamaCache, LlamaDiskCache, LlamaRAMCache

__all__ = ["BaseLlamaCache", "LlamaRAMCache", "LlamaCache", "LlamaDiskCache"]
