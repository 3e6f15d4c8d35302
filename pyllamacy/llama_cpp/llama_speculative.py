"""``llama_cpp.llama_speculative``: the drafters for ``Llama(draft_model=...)``.

pyllamacy's own (pyllamacy.llama_speculative): LlamaPromptLookupDecoding (with
llama-cpp-python's static find_candidate_pred_tokens) runs in the C generation loop;
LlamaDraftModel is a small-model drafter there. A subclass overriding ``__call__`` is a Python
drafter, as in llama-cpp-python.
"""
from __future__ import annotations

from ..llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

__all__ = ["LlamaDraftModel", "LlamaPromptLookupDecoding"]
