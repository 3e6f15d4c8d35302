"""pyllamacy: Cython bindings for llama.cpp.

Low level (pyllamacy._llama, re-exported here): Model, Context, Batch, Sampler, Generation,
quantize, backends/devices/system_info and the exception classes.
High level: Llama — a near drop-in for llama_cpp.Llama.
"""
from __future__ import annotations

from . import _llama
from ._llama import (
    AbortedError,
    BackendError,
    Batch,
    BusyError,
    ClosedError,
    Context,
    ContextCreateError,
    ContextOverflowError,
    DecodeError,
    Generation,
    GrammarError,
    InvalidBatchError,
    KVCacheFullError,
    LlamaError,
    Model,
    ModelLoadError,
    QuantizeError,
    Sampler,
    SamplerError,
    StateError,
    TokenizeError,
    QUANT_TYPES,
    backend_report,
    backends,
    check_gguf,
    cpu_variant,
    cpu_variant_scores,
    default_n_threads,
    devices,
    get_log_level,
    llama_cpp_version,
    load_backend,
    max_devices,
    quantize,
    set_log_level,
    supports_gpu_offload,
    supports_mlock,
    supports_mmap,
    system_info,
)

__version__ = "0.1.0"


def __getattr__(name):
    # the high-level API imports lazily so that `import pyllamacy` stays light
    if name in ("Llama", "LlamaGrammar", "LlamaState", "LlamaTokenizer",
                "StoppingCriteriaList", "LogitsProcessorList", "LLAMA_DEFAULT_SEED"):
        from . import llama as _hl
        return getattr(_hl, name)
    raise AttributeError(f"module 'pyllamacy' has no attribute {name!r}")


def build_info() -> dict:
    """How this copy was built: llama.cpp commit, CMake flags, where llama.cpp's programs are."""
    import json
    import os
    p = os.path.join(os.path.dirname(__file__), "_build_info.json")
    try:
        with open(p) as f:
            return json.load(f)
    except OSError:
        return {}
