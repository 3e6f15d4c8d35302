# Exceptions. Each failure llama.cpp can report has its own class; classes also inherit the
# built-in a caller would already catch (ValueError for bad input, RuntimeError for failures).

class LlamaError(Exception):
    """Base class of every pyllamacy error."""


class ModelLoadError(LlamaError, ValueError):
    """The file is not a loadable GGUF model (bad magic, wrong version, truncated, unsupported)."""


class AdapterLoadError(ModelLoadError):
    """The file is not a LoRA adapter for this model (not an adapter, another architecture,
    tensors the model lacks or of other shapes)."""


class ContextCreateError(LlamaError, RuntimeError):
    """llama.cpp could not create a context (out of memory, unsupported settings)."""


class DecodeError(LlamaError, RuntimeError):
    """llama_decode/llama_encode failed; the subclass says how."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class KVCacheFullError(DecodeError):
    """No free slot in the KV cache for the batch (llama_decode returned 1)."""


class AbortedError(DecodeError):
    """The computation was cancelled (Context.cancel() or an abort request)."""


class InvalidBatchError(DecodeError, ValueError):
    """llama.cpp rejected the batch as invalid (llama_decode returned -1)."""


class ContextOverflowError(LlamaError, ValueError):
    """The tokens do not fit in the context window."""


class ClosedError(LlamaError, ValueError):
    """The object was closed; like I/O on a closed file this is a ValueError."""


class BusyError(LlamaError, RuntimeError):
    """The context is in use by another thread; a context serves one call at a time."""


class TokenizeError(LlamaError, ValueError):
    """Tokenization or detokenization failed."""


class SamplerError(LlamaError, ValueError):
    """Invalid sampler parameters."""


class GrammarError(SamplerError):
    """The GBNF grammar could not be parsed."""


class StateError(LlamaError, RuntimeError):
    """Saving or restoring a context state failed."""


class QuantizeError(LlamaError, RuntimeError):
    """llama_model_quantize failed."""


class BackendError(LlamaError, RuntimeError):
    """A backend library could not be loaded."""


cdef str _recent_log(uint64_t mark, bint errors_only=False):
    cdef string s = S.log_since(mark, 4000, 4 if errors_only else 3)
    text = s.decode("utf-8", "replace").strip()
    return text


cdef object _decode_error(int32_t rc, str what):
    """Map a llama_decode / llama_encode return code to an exception instance."""
    if rc == 1:
        return KVCacheFullError(
            f"{what}: no free slot in the KV cache for this batch (llama.cpp code 1); "
            "increase n_ctx, shorten the input, or clear the cache", rc)
    if rc == 2:
        return AbortedError(f"{what}: aborted", rc)
    if rc == -1:
        return InvalidBatchError(f"{what}: llama.cpp rejected the batch as invalid (code -1)", rc)
    return DecodeError(f"{what}: llama.cpp failed with code {rc}", rc)
