"""``llama_cpp.llama``: the Llama class with llama-cpp-python's defaults.

``pyllamacy.Llama`` picks faster defaults where llama-cpp-python's cost speed without changing
what the library is for; code written against llama-cpp-python expects llama-cpp-python's
(the same text for the same seed, the same embeddings). This Llama is pyllamacy.Llama with
llama-cpp-python 0.3.36's defaults where the two differ:

==================  ==============================  ========================================
setting             pyllamacy.Llama                 llama_cpp.Llama (this class)
==================  ==============================  ========================================
flash_attn          None: llama.cpp decides         False: off (None also means off)
n_threads           every CPU the process may use   half of the CPUs (at least 1)
n_threads_batch     every CPU the process may use   every CPU (multiprocessing.cpu_count())
yarn_*              the model's own values          ext -1.0, attn 1.0, beta_fast 32.0,
                                                    beta_slow 1.0 (llama-cpp-python's)
embed(normalize=)   see pyllamacy.Llama.embed       False: raw vectors
==================  ==============================  ========================================

Everything else (n_ctx=512, n_batch=512, n_ubatch=512, n_gpu_layers=0, seed, offload_kqv,
type_k/type_v, last_n_tokens_size=64, ...) is the same in both.
"""
from __future__ import annotations

import multiprocessing
from typing import List, Optional, Union

from ..llama import Llama as _PyllamacyLlama
from ..llama import LlamaTokenizer
from ..llama_cache import BaseLlamaCache, LlamaCache, LlamaDiskCache, LlamaRAMCache
from ..llama_speculative import LlamaDraftModel
from ..llama_types import (LlamaGrammar, LlamaState, LogitsProcessor, LogitsProcessorList,
                           StoppingCriteria, StoppingCriteriaList)

# llama-cpp-python's llama.py exports these names too (`from llama_cpp import LlamaGrammar`
# reaches them through it): the same objects as pyllamacy's
__all__ = ["Llama", "LlamaState", "LogitsProcessor", "LogitsProcessorList", "StoppingCriteria",
           "StoppingCriteriaList", "LlamaGrammar", "LlamaTokenizer", "BaseLlamaCache",
           "LlamaCache", "LlamaDiskCache", "LlamaRAMCache", "LlamaDraftModel"]

# llama-cpp-python 0.3.36's values for the YaRN settings (it passes them to llama.cpp
# explicitly; pyllamacy.Llama leaves them to the model)
YARN_EXT_FACTOR = -1.0
YARN_ATTN_FACTOR = 1.0
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0

_TOOL_CHOICE_MODES = ("auto", "none", "required")


def default_n_threads() -> int:
    """llama-cpp-python's generation threads: half of the CPUs, at least one."""
    return max(multiprocessing.cpu_count() // 2, 1)


def default_n_threads_batch() -> int:
    """llama-cpp-python's prompt-processing threads: every CPU."""
    return multiprocessing.cpu_count()


class Llama(_PyllamacyLlama):
    """pyllamacy.Llama with llama-cpp-python's defaults (the table in this module's
    docstring): what ``from llama_cpp import Llama`` gives after
    ``pyllamacy.compat.install_llama_cpp()``.

    Takes the same keywords as pyllamacy.Llama (llama-cpp-python's); only the defaults of
    flash_attn, n_threads, n_threads_batch, the yarn_* settings and embed()'s normalize
    differ. A tool_choice given as a bare tool name (LangChain's bind_tools) forces that
    tool.
    """

    def __init__(self, model_path: str, *,
                 n_threads: Optional[int] = None,
                 n_threads_batch: Optional[int] = None,
                 flash_attn: Optional[Union[bool, str]] = False,
                 yarn_ext_factor: Optional[float] = YARN_EXT_FACTOR,
                 yarn_attn_factor: Optional[float] = YARN_ATTN_FACTOR,
                 yarn_beta_fast: Optional[float] = YARN_BETA_FAST,
                 yarn_beta_slow: Optional[float] = YARN_BETA_SLOW,
                 **kwargs):
        """Load `model_path`; see pyllamacy.Llama for the keywords.

        n_threads / n_threads_batch: None or 0 take llama-cpp-python's defaults (half of the
        CPUs / all of them). flash_attn: False or None keep flash attention off, True turns
        it on ("auto", a pyllamacy extension, lets llama.cpp decide)."""
        super().__init__(
            model_path,
            n_threads=n_threads or default_n_threads(),
            n_threads_batch=n_threads_batch or default_n_threads_batch(),
            flash_attn=False if flash_attn is None else flash_attn,
            yarn_ext_factor=yarn_ext_factor, yarn_attn_factor=yarn_attn_factor,
            yarn_beta_fast=yarn_beta_fast, yarn_beta_slow=yarn_beta_slow,
            **kwargs)

    def embed(self, input: Union[str, List[str]], normalize: bool = False,
              truncate: bool = True, return_count: bool = False):
        """pyllamacy.Llama.embed() with llama-cpp-python's default: raw vectors
        (normalize=False). create_embedding() uses this default too."""
        return super().embed(input, normalize=normalize, truncate=truncate,
                             return_count=return_count)

    def create_chat_completion(self, messages, **kwargs):
        """pyllamacy.Llama.create_chat_completion(); a tool_choice that is the bare name of
        one of `tools` (what LangChain's ChatLlamaCpp.bind_tools(tool_choice="name") sends)
        forces that tool, as {"type": "function", "function": {"name": name}} does."""
        choice = kwargs.get("tool_choice")
        if (isinstance(choice, str) and choice not in _TOOL_CHOICE_MODES
                and any(isinstance(t, dict) and (t.get("function") or {}).get("name") == choice
                        for t in kwargs.get("tools") or ())):
            kwargs["tool_choice"] = {"type": "function", "function": {"name": choice}}
        return super().create_chat_completion(messages, **kwargs)

    def __repr__(self) -> str:
        state = "closed " if self.closed else ""
        return f"<llama_cpp.Llama (pyllamacy) {state}model_path={self.model_path!r}>"
