"""pyllamacy: Cython bindings for llama.cpp.

Low level (pyllamacy._llama, re-exported here): Model, Context, Batch, Sampler, Generation,
LoraAdapter,
quantize, backends/devices/system_info and the exception classes.
High level: Llama — a near drop-in for llama_cpp.Llama.
"""
from __future__ import annotations

from ._version import __version__  # noqa: F401  (discovery checks backend packages against it)

from . import _llama
# installed backend packages (pyllamacy-cuda, -vulkan, ...): loaded before the names below are
# bound, so that `pyllamacy.backends` stays the function and not the submodule
from .backends import discover_at_import
discover_at_import()
from ._llama import (  # noqa: E402
    AbortedError,
    AdapterLoadError,
    BackendError,
    Batch,
    BusyError,
    ClosedError,
    Context,
    ContextCreateError,
    ContextOverflowError,
    DecodeError,
    Engine,
    EngineFullError,
    Generation,
    GrammarError,
    InvalidBatchError,
    KVCacheFullError,
    LlamaError,
    LoraAdapter,
    MediaError,
    Model,
    ModelLoadError,
    MultimodalInput,
    Projector,
    ProjectorLoadError,
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



def __getattr__(name):
    # the high-level API imports lazily so that `import pyllamacy` stays light
    if name in ("Llama", "LlamaGrammar", "LlamaState", "LlamaTokenizer",
                "StoppingCriteriaList", "LogitsProcessorList", "LLAMA_DEFAULT_SEED"):
        from . import llama as _hl
        return getattr(_hl, name)
    if name in ("estimate", "MemoryBreakdown", "DeviceMemory", "FitResult"):
        from . import memory as _mem
        return getattr(_mem, name)
    if name in ("LlamaPromptLookupDecoding", "LlamaDraftModel"):
        from . import llama_speculative as _spec
        return getattr(_spec, name)
    if name in ("LlamaCache", "LlamaRAMCache", "LlamaDiskCache", "BaseLlamaCache"):
        from . import llama_cache as _cache
        return getattr(_cache, name)
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
