"""``llama_cpp.llama``: the Llama class with llama-cpp-python's defaults."""
from __future__ import annotations

from ..llama import Llama as _PyllamacyLlama
from ..llama import LlamaState, LogitsProcessorList, StoppingCriteriaList  # noqa: F401

__all__ = ["Llama", "LlamaState", "LogitsProcessorList", "StoppingCriteriaList"]


class Llama(_PyllamacyLlama):
    """pyllamacy.Llama with llama-cpp-python's defaults."""
