"""``llama_cpp.llama_types``: the OpenAI-shaped request and result TypedDicts.

They are defined once, in pyllamacy.llama_types; this module gives them llama-cpp-python's
module path.
"""
from __future__ import annotations

from ..llama_types import *  # noqa: F401,F403
from ..llama_types import __all__ as _types_all

__all__ = [n for n in _types_all
           if n not in ("LlamaGrammar", "LlamaState", "LogitsProcessor", "LogitsProcessorList",
                        "StoppingCriteria", "StoppingCriteriaList")]
