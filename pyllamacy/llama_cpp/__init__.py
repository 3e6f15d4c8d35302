"""llama-cpp-python's module layout over pyllamacy (the compatibility layer).

Code written against llama-cpp-python imports from here unchanged, either as
``from pyllamacy import llama_cpp`` or, after ``pyllamacy.compat.install_llama_cpp()``, as
``import llama_cpp``. Inside this layer the defaults follow llama-cpp-python (for example
``flash_attn=False``) so that its users get the same text; ``pyllamacy.Llama`` keeps pyllamacy's
own defaults.

Submodules mirror llama-cpp-python 0.3.36: ``llama``, ``llama_types``, ``llama_chat_format``,
``llama_grammar``, ``llama_speculative``, ``llama_cache``, ``llama_tokenizer`` and the low-level
``llama_cpp`` functions that integrations call.
"""
from __future__ import annotations

from .llama_cpp import *  # noqa: F401,F403  (low-level names, as llama_cpp/__init__.py does)
from .llama import *  # noqa: F401,F403

# what llama-cpp-python's llama.py imports, and so its `from .llama import *` exports too
from .llama_types import *  # noqa: F401,F403,E402
from ..llama_types import LogitsProcessor, StoppingCriteria  # noqa: F401,E402
from .llama_grammar import LlamaGrammar  # noqa: F401,E402
from .llama_cache import BaseLlamaCache, LlamaCache, LlamaDiskCache, LlamaRAMCache  # noqa: F401,E402
from .llama_tokenizer import BaseLlamaTokenizer, LlamaTokenizer  # noqa: F401,E402
from .llama_speculative import LlamaDraftModel  # noqa: F401,E402
from . import llama_chat_format  # noqa: F401,E402  (registers its chat formats)

from .._version import __version__  # noqa: F401
