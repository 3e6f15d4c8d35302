"""``llama_cpp.llama_cpp``: the low-level functions that integrations call, over pyllamacy.

llama-cpp-python exposes llama.h through ctypes: a model is a raw ``llama_model *``, a
vocabulary a ``llama_vocab *``, and functions write into ctypes buffers. Integrations such as
outlines build their token tables with a handful of these functions::

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    buf = ctypes.create_string_buffer(32)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, 32, 0, True)

Here the same calls work on pyllamacy objects, with llama.h's return conventions:

* a model is the ``pyllamacy.Model`` that ``Llama.model`` returns (``llama_model_p``);
  a context is the ``pyllamacy.Context`` of ``Llama.ctx`` (``llama_context_p``);
* ``llama_model_get_vocab(model)`` returns a ``llama_vocab_p``, a small handle on that model's
  vocabulary, which the ``llama_vocab_*`` / ``llama_token_*`` / tokenization functions take;
* output buffers are ctypes arrays (``ctypes.create_string_buffer(n)``, ``(ctypes.c_char *
  n)()``, ``(ctypes.c_int32 * n)()``) or a bytearray; a function that would write more than
  the length it is given writes nothing and returns the size it needs, negated (as llama.cpp
  does), and ``llama_model_desc`` / ``llama_model_meta_val_str`` follow snprintf.

Unlike raw ctypes calls, every argument is checked first: a wrong handle is a TypeError that
names it, an out-of-range token id or a length larger than the buffer a ValueError, and a
closed model pyllamacy.ClosedError; nothing here can crash the process.

Not provided: functions that hand out raw memory (``llama_get_logits``, ``llama_batch_*``,
``llama_sampler_*``, ``*_default_params``); use pyllamacy's Context, Batch and Sampler.
"""
from __future__ import annotations

import ctypes
import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np

from .._llama import (ClosedError, Context, Model, max_devices, set_log_level,
                      supports_gpu_offload, supports_mlock, supports_mmap, system_info, time_us)
from ..defaults import SEED_RANDOM

# -- constants (llama.h / ggml.h of the llama.cpp pyllamacy is built with) -------------------

LLAMA_DEFAULT_SEED = SEED_RANDOM
LLAMA_TOKEN_NULL = -1

# enum llama_vocab_type
LLAMA_VOCAB_TYPE_NONE = 0
LLAMA_VOCAB_TYPE_SPM = 1
LLAMA_VOCAB_TYPE_BPE = 2
LLAMA_VOCAB_TYPE_WPM = 3
LLAMA_VOCAB_TYPE_UGM = 4
LLAMA_VOCAB_TYPE_RWKV = 5
LLAMA_VOCAB_TYPE_PLAMO2 = 6

# GGML_ROPE_TYPE_* / enum llama_rope_type
GGML_ROPE_TYPE_NEOX = 2
GGML_ROPE_TYPE_MROPE = 8
GGML_ROPE_TYPE_VISION = 24
GGML_ROPE_TYPE_IMROPE = 40
LLAMA_ROPE_TYPE_NONE = -1
LLAMA_ROPE_TYPE_NORM = 0
LLAMA_ROPE_TYPE_NEOX = GGML_ROPE_TYPE_NEOX
LLAMA_ROPE_TYPE_MROPE = GGML_ROPE_TYPE_MROPE
LLAMA_ROPE_TYPE_IMROPE = GGML_ROPE_TYPE_IMROPE
LLAMA_ROPE_TYPE_VISION = GGML_ROPE_TYPE_VISION

# enum llama_token_type
LLAMA_TOKEN_TYPE_UNDEFINED = 0
LLAMA_TOKEN_TYPE_NORMAL = 1
LLAMA_TOKEN_TYPE_UNKNOWN = 2
LLAMA_TOKEN_TYPE_CONTROL = 3
LLAMA_TOKEN_TYPE_USER_DEFINED = 4
LLAMA_TOKEN_TYPE_UNUSED = 5
LLAMA_TOKEN_TYPE_BYTE = 6

# enum llama_token_attr (bit flags)
LLAMA_TOKEN_ATTR_UNDEFINED = 0
LLAMA_TOKEN_ATTR_UNKNOWN = 1 << 0
LLAMA_TOKEN_ATTR_UNUSED = 1 << 1
LLAMA_TOKEN_ATTR_NORMAL = 1 << 2
LLAMA_TOKEN_ATTR_CONTROL = 1 << 3
LLAMA_TOKEN_ATTR_USER_DEFINED = 1 << 4
LLAMA_TOKEN_ATTR_BYTE = 1 << 5
LLAMA_TOKEN_ATTR_NORMALIZED = 1 << 6
LLAMA_TOKEN_ATTR_LSTRIP = 1 << 7
LLAMA_TOKEN_ATTR_RSTRIP = 1 << 8
LLAMA_TOKEN_ATTR_SINGLE_WORD = 1 << 9

# enum llama_ftype
LLAMA_FTYPE_ALL_F32 = 0
LLAMA_FTYPE_MOSTLY_F16 = 1
LLAMA_FTYPE_MOSTLY_Q4_0 = 2
LLAMA_FTYPE_MOSTLY_Q4_1 = 3
LLAMA_FTYPE_MOSTLY_Q8_0 = 7
LLAMA_FTYPE_MOSTLY_Q5_0 = 8
LLAMA_FTYPE_MOSTLY_Q5_1 = 9
LLAMA_FTYPE_MOSTLY_Q2_K = 10
LLAMA_FTYPE_MOSTLY_Q3_K_S = 11
LLAMA_FTYPE_MOSTLY_Q3_K_M = 12
LLAMA_FTYPE_MOSTLY_Q3_K_L = 13
LLAMA_FTYPE_MOSTLY_Q4_K_S = 14
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15
LLAMA_FTYPE_MOSTLY_Q5_K_S = 16
LLAMA_FTYPE_MOSTLY_Q5_K_M = 17
LLAMA_FTYPE_MOSTLY_Q6_K = 18
LLAMA_FTYPE_MOSTLY_IQ2_XXS = 19
LLAMA_FTYPE_MOSTLY_IQ2_XS = 20
LLAMA_FTYPE_MOSTLY_Q2_K_S = 21
LLAMA_FTYPE_MOSTLY_IQ3_XS = 22
LLAMA_FTYPE_MOSTLY_IQ3_XXS = 23
LLAMA_FTYPE_MOSTLY_IQ1_S = 24
LLAMA_FTYPE_MOSTLY_IQ4_NL = 25
LLAMA_FTYPE_MOSTLY_IQ3_S = 26
LLAMA_FTYPE_MOSTLY_IQ3_M = 27
LLAMA_FTYPE_MOSTLY_IQ2_S = 28
LLAMA_FTYPE_MOSTLY_IQ2_M = 29
LLAMA_FTYPE_MOSTLY_IQ4_XS = 30
LLAMA_FTYPE_MOSTLY_IQ1_M = 31
LLAMA_FTYPE_MOSTLY_BF16 = 32
LLAMA_FTYPE_MOSTLY_TQ1_0 = 36
LLAMA_FTYPE_MOSTLY_TQ2_0 = 37
LLAMA_FTYPE_MOSTLY_MXFP4_MOE = 38
LLAMA_FTYPE_GUESSED = 1024

# enum llama_rope_scaling_type
LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED = -1
LLAMA_ROPE_SCALING_TYPE_NONE = 0
LLAMA_ROPE_SCALING_TYPE_LINEAR = 1
LLAMA_ROPE_SCALING_TYPE_YARN = 2
LLAMA_ROPE_SCALING_TYPE_LONGROPE = 3
LLAMA_ROPE_SCALING_TYPE_MAX_VALUE = LLAMA_ROPE_SCALING_TYPE_LONGROPE

# enum llama_pooling_type
LLAMA_POOLING_TYPE_UNSPECIFIED = -1
LLAMA_POOLING_TYPE_NONE = 0
LLAMA_POOLING_TYPE_MEAN = 1
LLAMA_POOLING_TYPE_CLS = 2
LLAMA_POOLING_TYPE_LAST = 3
LLAMA_POOLING_TYPE_RANK = 4

# enum llama_attention_type
LLAMA_ATTENTION_TYPE_UNSPECIFIED = -1
LLAMA_ATTENTION_TYPE_CAUSAL = 0
LLAMA_ATTENTION_TYPE_NON_CAUSAL = 1

# enum llama_flash_attn_type
LLAMA_FLASH_ATTN_TYPE_AUTO = -1
LLAMA_FLASH_ATTN_TYPE_DISABLED = 0
LLAMA_FLASH_ATTN_TYPE_ENABLED = 1

# enum llama_split_mode
LLAMA_SPLIT_MODE_NONE = 0
LLAMA_SPLIT_MODE_LAYER = 1
LLAMA_SPLIT_MODE_ROW = 2

# enum ggml_type (the KV cache types of type_k / type_v among them)
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_Q4_0 = 2
GGML_TYPE_Q4_1 = 3
GGML_TYPE_Q5_0 = 6
GGML_TYPE_Q5_1 = 7
GGML_TYPE_Q8_0 = 8
GGML_TYPE_Q8_1 = 9
GGML_TYPE_Q2_K = 10
GGML_TYPE_Q3_K = 11
GGML_TYPE_Q4_K = 12
GGML_TYPE_Q5_K = 13
GGML_TYPE_Q6_K = 14
GGML_TYPE_Q8_K = 15
GGML_TYPE_IQ2_XXS = 16
GGML_TYPE_IQ2_XS = 17
GGML_TYPE_IQ3_XXS = 18
GGML_TYPE_IQ1_S = 19
GGML_TYPE_IQ4_NL = 20
GGML_TYPE_IQ3_S = 21
GGML_TYPE_IQ2_S = 22
GGML_TYPE_IQ4_XS = 23
GGML_TYPE_I8 = 24
GGML_TYPE_I16 = 25
GGML_TYPE_I32 = 26
GGML_TYPE_I64 = 27
GGML_TYPE_F64 = 28
GGML_TYPE_IQ1_M = 29
GGML_TYPE_BF16 = 30
GGML_TYPE_TQ1_0 = 34
GGML_TYPE_TQ2_0 = 35
GGML_TYPE_MXFP4 = 39

# pyllamacy's names of the enum values it reports as strings
_VOCAB_TYPES = {"none": LLAMA_VOCAB_TYPE_NONE, "spm": LLAMA_VOCAB_TYPE_SPM,
                "bpe": LLAMA_VOCAB_TYPE_BPE, "wpm": LLAMA_VOCAB_TYPE_WPM,
                "ugm": LLAMA_VOCAB_TYPE_UGM, "rwkv": LLAMA_VOCAB_TYPE_RWKV}
_POOLING_TYPES = {"unspecified": LLAMA_POOLING_TYPE_UNSPECIFIED,
                  "none": LLAMA_POOLING_TYPE_NONE, "mean": LLAMA_POOLING_TYPE_MEAN,
                  "cls": LLAMA_POOLING_TYPE_CLS, "last": LLAMA_POOLING_TYPE_LAST,
                  "rank": LLAMA_POOLING_TYPE_RANK}

# -- types ------------------------------------------------------------------------------------

llama_token = ctypes.c_int32
llama_pos = ctypes.c_int32
llama_seq_id = ctypes.c_int32

llama_model_p = Model          # what Llama.model returns and the llama_model_* functions take
llama_context_p = Context      # what Llama.ctx returns and the context functions take

# typedef void (*ggml_log_callback)(enum ggml_log_level level, const char * text, void * data)
llama_log_callback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
ggml_log_callback = llama_log_callback


class llama_vocab_p:
    """The vocabulary of a loaded model: what llama_model_get_vocab() returns and what the
    llama_vocab_* / llama_token_* / tokenization functions take.

    llama-cpp-python hands out a raw ``llama_vocab *``; this handle holds the pyllamacy.Model
    instead (``.model``), so it stays valid exactly as long as the model is open.
    """
    __slots__ = ("model",)

    def __init__(self, model: Model):
        if not isinstance(model, Model):
            raise TypeError(f"llama_vocab_p wraps a pyllamacy.Model, not {type(model).__name__}")
        self.model = model

    def __eq__(self, other: object) -> bool:
        return isinstance(other, llama_vocab_p) and other.model is self.model

    def __hash__(self) -> int:
        return hash((llama_vocab_p, id(self.model)))

    def __repr__(self) -> str:
        return f"<llama_vocab_p of {self.model!r}>"


# -- argument checks --------------------------------------------------------------------------

def _model(model: Any, fn: str) -> Model:
    if not isinstance(model, Model):
        raise TypeError(f"{fn}() takes the model of a Llama (Llama.model, a pyllamacy.Model), "
                        f"not {type(model).__name__}")
    return model


def _context(ctx: Any, fn: str) -> Context:
    if not isinstance(ctx, Context):
        raise TypeError(f"{fn}() takes the context of a Llama (Llama.ctx, a pyllamacy.Context),"
                        f" not {type(ctx).__name__}")
    return ctx


def _vocab(vocab: Any, fn: str) -> Model:
    if not isinstance(vocab, llama_vocab_p):
        hint = (" (pass llama_model_get_vocab(model))" if isinstance(vocab, Model) else "")
        raise TypeError(f"{fn}() takes a llama_vocab_p from llama_model_get_vocab(), not "
                        f"{type(vocab).__name__}{hint}")
    return vocab.model


def _int(value: Any, fn: str, name: str) -> int:
    if isinstance(value, (ctypes.c_int32, ctypes.c_int64, ctypes.c_uint32, ctypes.c_int)):
        value = value.value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}(): {name} must be an integer, got {value!r}")
    return int(value)


def _length(value: Any, fn: str, name: str) -> int:
    n = _int(value, fn, name)
    if n < 0:
        raise ValueError(f"{fn}(): {name} must be >= 0, got {n}")
    return n


def _token(model: Model, token: Any, fn: str) -> int:
    t = _int(token, fn, "token")
    n_vocab = model.n_vocab
    if not 0 <= t < n_vocab:
        raise ValueError(f"{fn}(): token id {t} is out of range for a vocabulary of {n_vocab} "
                         f"tokens (0..{n_vocab - 1})")
    return t


_CHAR_TYPES = (ctypes.c_char, ctypes.c_byte, ctypes.c_ubyte)
_TOKEN_TYPES = (ctypes.c_int32, ctypes.c_int)


def _byte_buffer(buf: Any, length: int, fn: str, name: str) -> None:
    """Check that `buf` is a writable byte buffer of at least `length` bytes."""
    if isinstance(buf, ctypes.Array) and buf._type_ in _CHAR_TYPES:
        size = ctypes.sizeof(buf)
    elif isinstance(buf, bytearray):
        size = len(buf)
    else:
        raise TypeError(f"{fn}(): {name} must be a writable char buffer "
                        f"(ctypes.create_string_buffer(n), (ctypes.c_char * n)() or a "
                        f"bytearray), not {type(buf).__name__}")
    if length > size:
        raise ValueError(f"{fn}(): {name} holds {size} bytes, fewer than the {length} passed "
                         f"as its length")


def _write_bytes(buf: Any, data: bytes) -> None:
    if isinstance(buf, bytearray):
        buf[: len(data)] = data
    else:
        ctypes.memmove(buf, data, len(data))


def _token_buffer(tokens: Any, length: int, fn: str, name: str) -> None:
    """Check that `tokens` is a writable llama_token array of at least `length` items."""
    if not (isinstance(tokens, ctypes.Array) and tokens._type_ in _TOKEN_TYPES
            and ctypes.sizeof(tokens._type_) == 4):
        raise TypeError(f"{fn}(): {name} must be a ctypes array of llama_token "
                        f"((llama_cpp.llama_token * n)()), not {type(tokens).__name__}")
    if length > len(tokens):
        raise ValueError(f"{fn}(): {name} holds {len(tokens)} tokens, fewer than the {length} "
                         f"passed as its length")


def _text(text: Any, fn: str, name: str) -> bytes:
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    if isinstance(text, ctypes.Array) and text._type_ in _CHAR_TYPES:
        return ctypes.string_at(text, ctypes.sizeof(text))
    raise TypeError(f"{fn}(): {name} must be bytes (UTF-8), not {type(text).__name__}")


def _snprintf(buf: Any, buf_size: int, text: str, fn: str) -> int:
    """Write `text` NUL-terminated and cut to buf_size-1 bytes; return its full length."""
    data = text.encode("utf-8")
    if buf_size > 0:
        _byte_buffer(buf, buf_size, fn, "buf")
        _write_bytes(buf, data[: buf_size - 1] + b"\0")
    return len(data)


# -- system -----------------------------------------------------------------------------------

def llama_backend_init() -> None:
    """Nothing to do: pyllamacy initializes llama.cpp's backends when it is imported."""


def llama_backend_free() -> None:
    """Nothing to do: pyllamacy frees llama.cpp's backends at interpreter exit."""


def llama_max_devices() -> int:
    return max_devices()


LLAMA_MAX_DEVICES = llama_max_devices()


def llama_supports_mmap() -> bool:
    return supports_mmap()


def llama_supports_mlock() -> bool:
    return supports_mlock()


def llama_supports_gpu_offload() -> bool:
    return supports_gpu_offload()


def llama_print_system_info() -> bytes:
    """llama.cpp's system info line (CPU features, backends), as bytes like llama.h's."""
    return system_info().encode("utf-8")


def llama_time_us() -> int:
    return time_us()


def llama_log_set(log_callback: Optional[Any], user_data: Any = None, /) -> None:
    """Where llama.cpp's log messages go.

    pyllamacy keeps its own log callback (so that its exceptions can quote llama.cpp's
    errors) and does not call Python callbacks from it. Code calls this to take llama.cpp's
    output off stderr, and that is what it does: with a callback, nothing more is printed
    (a UserWarning says the callback is not called); with None, errors are printed again.
    pyllamacy.set_log_level() chooses the level directly.
    """
    if log_callback is None:
        set_log_level("error")
        return
    if not callable(log_callback):
        raise TypeError(f"llama_log_set(): log_callback must be callable or None, not "
                        f"{type(log_callback).__name__}")
    set_log_level("none")
    warnings.warn("llama_log_set(): pyllamacy does not pass llama.cpp's log messages to "
                  "Python callbacks; they are no longer printed (pyllamacy.set_log_level() "
                  "chooses what is)", UserWarning, stacklevel=2)


# -- model ------------------------------------------------------------------------------------

def llama_model_get_vocab(model: Model, /) -> llama_vocab_p:
    """The vocabulary handle of `model` (Llama.model)."""
    m = _model(model, "llama_model_get_vocab")
    if m.closed:
        raise ClosedError("llama_model_get_vocab(): the model is closed")
    return llama_vocab_p(m)


def llama_model_n_ctx_train(model: Model, /) -> int:
    return _model(model, "llama_model_n_ctx_train").n_ctx_train


def llama_model_n_embd(model: Model, /) -> int:
    return _model(model, "llama_model_n_embd").n_embd


def llama_model_n_layer(model: Model, /) -> int:
    return _model(model, "llama_model_n_layer").n_layer


def llama_model_n_head(model: Model, /) -> int:
    return _model(model, "llama_model_n_head").n_head


def llama_model_n_head_kv(model: Model, /) -> int:
    return _model(model, "llama_model_n_head_kv").n_head_kv


def llama_model_n_params(model: Model, /) -> int:
    return _model(model, "llama_model_n_params").n_params


def llama_model_size(model: Model, /) -> int:
    """The total size of the model's tensors, in bytes."""
    return _model(model, "llama_model_size").size


def llama_model_has_encoder(model: Model, /) -> bool:
    return _model(model, "llama_model_has_encoder").has_encoder


def llama_model_has_decoder(model: Model, /) -> bool:
    return _model(model, "llama_model_has_decoder").has_decoder


def llama_model_is_recurrent(model: Model, /) -> bool:
    return _model(model, "llama_model_is_recurrent").is_recurrent


def llama_model_desc(model: Model, buf: Any, buf_size: int, /) -> int:
    """The model's description ("llama 135M Q4_1" style) into `buf`, snprintf-style: at most
    buf_size-1 bytes and a NUL; returns the description's full length in bytes."""
    m = _model(model, "llama_model_desc")
    return _snprintf(buf, _length(buf_size, "llama_model_desc", "buf_size"), m.desc,
                     "llama_model_desc")


def llama_model_meta_count(model: Model, /) -> int:
    """The number of metadata key/value pairs."""
    return len(_model(model, "llama_model_meta_count").metadata)


def llama_model_meta_val_str(model: Model, key: Union[bytes, str], buf: Any, buf_size: int,
                             /) -> int:
    """The metadata value of `key` into `buf`, snprintf-style; -1 when there is no such key
    (then `buf` holds an empty string)."""
    fn = "llama_model_meta_val_str"
    m = _model(model, fn)
    if isinstance(key, (bytes, bytearray)):
        key = bytes(key).decode("utf-8")
    elif not isinstance(key, str):
        raise TypeError(f"{fn}(): key must be bytes or str, not {type(key).__name__}")
    size = _length(buf_size, fn, "buf_size")
    value = m.metadata.get(key)
    if value is None:
        _snprintf(buf, size, "", fn)
        return -1
    return _snprintf(buf, size, value, fn)


def llama_model_chat_template(model: Model, name: Optional[bytes] = None, /) -> Optional[bytes]:
    """The model's chat template (or the one called `name`), or None."""
    fn = "llama_model_chat_template"
    m = _model(model, fn)
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).decode("utf-8")
    elif name is not None and not isinstance(name, str):
        raise TypeError(f"{fn}(): name must be bytes, str or None, not {type(name).__name__}")
    tmpl = m.chat_template(name)
    return None if tmpl is None else tmpl.encode("utf-8")


# deprecated model-level names of llama.h that llama-cpp-python still exports
def llama_n_ctx_train(model: Model, /) -> int:
    return _model(model, "llama_n_ctx_train").n_ctx_train


def llama_n_embd(model: Model, /) -> int:
    return _model(model, "llama_n_embd").n_embd


def llama_n_layer(model: Model, /) -> int:
    return _model(model, "llama_n_layer").n_layer


def llama_n_head(model: Model, /) -> int:
    return _model(model, "llama_n_head").n_head


# -- vocabulary -------------------------------------------------------------------------------

def llama_vocab_n_tokens(vocab: llama_vocab_p, /) -> int:
    """The number of tokens in the vocabulary."""
    return _vocab(vocab, "llama_vocab_n_tokens").n_vocab


def llama_n_vocab(vocab: Union[llama_vocab_p, Model], /) -> int:
    """Deprecated name of llama_vocab_n_tokens(). Also takes the model itself, as the
    llama.h of older llama-cpp-python releases did."""
    if isinstance(vocab, Model):
        return vocab.n_vocab
    return _vocab(vocab, "llama_n_vocab").n_vocab


def llama_vocab_type(vocab: llama_vocab_p, /) -> int:
    """The tokenizer kind: LLAMA_VOCAB_TYPE_SPM, _BPE, _WPM, _UGM, _RWKV or _NONE."""
    name = _vocab(vocab, "llama_vocab_type").vocab_type
    try:
        return _VOCAB_TYPES[name]
    except KeyError:
        raise ValueError(f"llama_vocab_type(): pyllamacy reports this model's vocabulary type "
                         f"as {name!r}, which has no llama-cpp-python constant") from None


def llama_vocab_get_text(vocab: llama_vocab_p, token: int, /) -> bytes:
    """The token's text as stored in the model (e.g. b"\\xc4\\xa0the" for " the" in GPT-2 style
    vocabularies); see llama_token_to_piece() for the bytes it stands for."""
    m = _vocab(vocab, "llama_vocab_get_text")
    return m.token_text(_token(m, token, "llama_vocab_get_text")).encode("utf-8")


def llama_vocab_get_score(vocab: llama_vocab_p, token: int, /) -> float:
    m = _vocab(vocab, "llama_vocab_get_score")
    return m.token_score(_token(m, token, "llama_vocab_get_score"))


def llama_vocab_get_attr(vocab: llama_vocab_p, token: int, /) -> int:
    """The token's LLAMA_TOKEN_ATTR_* bit flags."""
    m = _vocab(vocab, "llama_vocab_get_attr")
    return m.token_attr(_token(m, token, "llama_vocab_get_attr"))


def llama_vocab_is_eog(vocab: llama_vocab_p, token: int, /) -> bool:
    """Whether the token ends generation (EOS, EOT, ...)."""
    m = _vocab(vocab, "llama_vocab_is_eog")
    return m.is_eog(_token(m, token, "llama_vocab_is_eog"))


def llama_vocab_is_control(vocab: llama_vocab_p, token: int, /) -> bool:
    m = _vocab(vocab, "llama_vocab_is_control")
    return m.is_control(_token(m, token, "llama_vocab_is_control"))


def llama_vocab_bos(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_bos").token_bos()


def llama_vocab_eos(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_eos").token_eos()


def llama_vocab_eot(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_eot").token_eot()


def llama_vocab_sep(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_sep").token_sep()


def llama_vocab_nl(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_nl").token_nl()


def llama_vocab_pad(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_pad").token_pad()


def llama_vocab_fim_pre(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_fim_pre").token_fim_pre()


def llama_vocab_fim_suf(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_fim_suf").token_fim_suf()


def llama_vocab_fim_mid(vocab: llama_vocab_p, /) -> int:
    return _vocab(vocab, "llama_vocab_fim_mid").token_fim_mid()


def llama_vocab_get_add_bos(vocab: llama_vocab_p, /) -> bool:
    return _vocab(vocab, "llama_vocab_get_add_bos").add_bos


def llama_vocab_get_add_eos(vocab: llama_vocab_p, /) -> bool:
    return _vocab(vocab, "llama_vocab_get_add_eos").add_eos


# deprecated llama_token_* names of the same functions (llama.h keeps them)
llama_token_get_text = llama_vocab_get_text
llama_token_get_score = llama_vocab_get_score
llama_token_get_attr = llama_vocab_get_attr
llama_token_is_eog = llama_vocab_is_eog
llama_token_is_control = llama_vocab_is_control
llama_token_bos = llama_vocab_bos
llama_token_eos = llama_vocab_eos
llama_token_eot = llama_vocab_eot
llama_token_sep = llama_vocab_sep
llama_token_nl = llama_vocab_nl
llama_token_pad = llama_vocab_pad
llama_token_fim_pre = llama_vocab_fim_pre
llama_token_fim_suf = llama_vocab_fim_suf
llama_token_fim_mid = llama_vocab_fim_mid
llama_add_bos_token = llama_vocab_get_add_bos
llama_add_eos_token = llama_vocab_get_add_eos


# -- tokenization -----------------------------------------------------------------------------

def llama_tokenize(vocab: llama_vocab_p, text: bytes, text_len: int, tokens: Any,
                   n_tokens_max: int, add_special: bool, parse_special: bool, /) -> int:
    """Tokenize the first text_len bytes of `text` into `tokens` (a ctypes llama_token array).

    Returns the number of tokens written, or, when more than n_tokens_max are needed, minus
    that number (nothing is written). add_special: BOS/EOS as the model wants them;
    parse_special: special-token text such as b"<|im_start|>" becomes that token."""
    fn = "llama_tokenize"
    m = _vocab(vocab, fn)
    data = _text(text, fn, "text")
    n_text = _length(text_len, fn, "text_len")
    if n_text > len(data):
        raise ValueError(f"{fn}(): text_len {n_text} is longer than the text ({len(data)} "
                         f"bytes)")
    n_max = _length(n_tokens_max, fn, "n_tokens_max")
    _token_buffer(tokens, n_max, fn, "tokens")
    toks = m.tokenize(data[:n_text], add_special=bool(add_special),
                      parse_special=bool(parse_special))
    if len(toks) > n_max:
        return -len(toks)
    tokens[: len(toks)] = toks
    return len(toks)


def llama_token_to_piece(vocab: llama_vocab_p, token: int, buf: Any, length: int,
                         lstrip: int, special: bool, /) -> int:
    """The bytes `token` stands for, into `buf` (not NUL-terminated).

    Returns the number of bytes written, or, when they do not fit in `length`, minus the
    number needed (nothing is written). lstrip: leading spaces to drop (up to that many);
    special: render control tokens (b"<|im_end|>") instead of nothing."""
    fn = "llama_token_to_piece"
    m = _vocab(vocab, fn)
    t = _token(m, token, fn)
    n = _length(length, fn, "length")
    n_lstrip = _length(lstrip, fn, "lstrip")
    _byte_buffer(buf, n, fn, "buf")
    piece = m.token_to_piece(t, bool(special), n_lstrip)
    if len(piece) > n:
        return -len(piece)
    _write_bytes(buf, piece)
    return len(piece)


def llama_detokenize(vocab: llama_vocab_p, tokens: Any, n_tokens: int, text: Any,
                     text_len_max: int, remove_special: bool, unparse_special: bool, /) -> int:
    """The text of the first n_tokens of `tokens`, into `text` (not NUL-terminated).

    Returns the number of bytes written, or, when more than text_len_max are needed, minus
    that number (nothing is written). remove_special: drop BOS/EOS the model adds;
    unparse_special: render control tokens as their text."""
    fn = "llama_detokenize"
    m = _vocab(vocab, fn)
    n = _length(n_tokens, fn, "n_tokens")
    if isinstance(tokens, (str, bytes, bytearray)) or not isinstance(
            tokens, (ctypes.Array, Sequence, np.ndarray)):
        raise TypeError(f"{fn}(): tokens must be a llama_token array or a sequence of token "
                        f"ids, not {type(tokens).__name__}")
    if n > len(tokens):
        raise ValueError(f"{fn}(): n_tokens {n} is more than the {len(tokens)} tokens given")
    ids = [_token(m, t, fn) for t in tokens[:n]]
    n_max = _length(text_len_max, fn, "text_len_max")
    _byte_buffer(text, n_max, fn, "text")
    data = m.detokenize(ids, bool(remove_special), bool(unparse_special))
    if len(data) > n_max:
        return -len(data)
    _write_bytes(text, data)
    return len(data)


# -- context ----------------------------------------------------------------------------------

def llama_get_model(ctx: Context, /) -> Model:
    """The model a context (Llama.ctx) runs."""
    return _context(ctx, "llama_get_model").model


def llama_n_ctx(ctx: Context, /) -> int:
    return _context(ctx, "llama_n_ctx").n_ctx


def llama_n_batch(ctx: Context, /) -> int:
    return _context(ctx, "llama_n_batch").n_batch


def llama_n_ubatch(ctx: Context, /) -> int:
    return _context(ctx, "llama_n_ubatch").n_ubatch


def llama_n_seq_max(ctx: Context, /) -> int:
    return _context(ctx, "llama_n_seq_max").n_seq_max


def llama_n_threads(ctx: Context, /) -> int:
    return _context(ctx, "llama_n_threads").n_threads


def llama_n_threads_batch(ctx: Context, /) -> int:
    return _context(ctx, "llama_n_threads_batch").n_threads_batch


def llama_pooling_type(ctx: Context, /) -> int:
    """The context's LLAMA_POOLING_TYPE_*."""
    p = _context(ctx, "llama_pooling_type").pooling_type
    return _POOLING_TYPES[p] if isinstance(p, str) else int(p)


__all__ = sorted(name for name in list(globals())
                 if (name.startswith(("llama_", "LLAMA_", "GGML_", "ggml_")))
                 and not name.startswith("_"))
