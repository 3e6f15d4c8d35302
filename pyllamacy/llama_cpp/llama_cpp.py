"""``llama_cpp.llama_cpp``: the low-level functions that integrations call."""
from __future__ import annotations

__all__: list = []
