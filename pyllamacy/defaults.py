"""Every default of pyllamacy's high-level layers, in one table.

`Llama`, the server (`server/settings.py`, `server/types.py`), the command line (`cli.py`), the
drafters (`llama_speculative.py`) and the loader (`loading.py`) take their defaults and sentinels
from here instead of spelling the numbers again. The core classes (`Model`, `Context`,
`Sampler`) keep llama.cpp's own defaults, as the C API has them; where those differ from the
high-level ones it is said below.

Pure Python, no import of the extension: settings modules import it at no cost.
"""
from __future__ import annotations

from typing import Optional

__all__ = [
    # sentinels
    "SEED_RANDOM", "SEED_MASK", "UNLIMITED", "ENUM_UNSPECIFIED", "normalize_seed",
    # model
    "N_GPU_LAYERS", "N_GPU_LAYERS_ALL", "N_GPU_LAYERS_AUTO", "FIT_MARGIN_MIB", "FIT_N_CTX_MIN",
    "SPLIT_MODE", "MAIN_GPU", "USE_MMAP", "USE_MLOCK",
    # context
    "N_CTX", "N_CTX_SLOT", "N_CTX_TRAIN", "N_BATCH", "N_UBATCH", "N_SEQ_MAX",
    "LAST_N_TOKENS_SIZE", "LORA_SCALE",
    # server batching
    "N_PARALLEL", "MAX_QUEUE",
    # sampling
    "MAX_TOKENS", "TEMPERATURE", "CHAT_TEMPERATURE", "TOP_K", "TOP_P", "MIN_P", "TYPICAL_P",
    "REPEAT_PENALTY", "FREQUENCY_PENALTY", "PRESENCE_PENALTY", "MIROSTAT_MODE", "MIROSTAT_TAU",
    "MIROSTAT_ETA",
    # speculative decoding
    "DRAFT_N_CTX", "DRAFT_N_BATCH", "DRAFT_NUM_PRED_TOKENS", "PROMPT_LOOKUP_MAX_NGRAM_SIZE",
    "PROMPT_LOOKUP_NUM_PRED_TOKENS", "CALLABLE_DRAFT_NUM_PRED_TOKENS",
]


# -- sentinels ------------------------------------------------------------------------------------
# Values that mean "not a number but a choice".
#
# SEED_RANDOM is llama.cpp's LLAMA_DEFAULT_SEED (also `pyllamacy.llama.LLAMA_DEFAULT_SEED` and the
# core's `_llama.DEFAULT_SEED`): a fresh random seed for every call or request. -1 and None mean
# the same wherever a seed is taken (normalize_seed). UNLIMITED is INT32_MAX, "no limit" for a
# 32-bit count (max_tokens < 0 in the core's generation loops). ENUM_UNSPECIFIED is
# llama-cpp-python's -1 for an enum setting left to llama.cpp (pooling_type, attention_type,
# rope_scaling_type); the core takes None for it.

SEED_RANDOM = 0xFFFFFFFF
SEED_MASK = 0xFFFFFFFF          # seeds are uint32: larger or negative values wrap
UNLIMITED = 0x7FFFFFFF
ENUM_UNSPECIFIED = -1


def normalize_seed(seed: Optional[int]) -> int:
    """A seed as the sampler takes it: None and -1 become SEED_RANDOM, anything else wraps to
    32 bits (so -1 & SEED_MASK is SEED_RANDOM too)."""
    if seed is None:
        return SEED_RANDOM
    return int(seed) & SEED_MASK


# -- model ----------------------------------------------------------------------------------------
# How weights are loaded.
#
# N_GPU_LAYERS = 0 (every layer on the CPU) is the default of every high-level layer: `Llama`
# (llama-cpp-python's default, which its users expect), the server's ModelSettings, `pyllamacy
# complete --ngl` and LlamaDraftModel. Pass N_GPU_LAYERS_ALL (-1, "all layers": llama.h says any
# negative value means all) to offload everything. The core `pyllamacy.Model` keeps llama.cpp's
# own default, -1 (all layers), as `llama_model_default_params()` has it.

N_GPU_LAYERS = 0
N_GPU_LAYERS_ALL = -1
# "auto": fit the model to the machine (pyllamacy/memory.py, llama.cpp's --fit): the largest
# offload, and with n_ctx=0 the largest context, that leave FIT_MARGIN_MIB free on each device
# (llama.cpp's --fit-target default); the context is not shrunk below FIT_N_CTX_MIN (its
# --fit-ctx default)
N_GPU_LAYERS_AUTO = "auto"
FIT_MARGIN_MIB = 1024
FIT_N_CTX_MIN = 4096
SPLIT_MODE = 1                  # llama_split_mode LAYER (the core's "layer")
MAIN_GPU = 0
USE_MMAP = True
USE_MLOCK = False


# -- context --------------------------------------------------------------------------------------
# Context sizes, in tokens.
#
# N_CTX is `Llama(n_ctx=)`'s default (llama-cpp-python's 512); N_CTX_SLOT is the context of each
# server slot and of `pyllamacy complete -c`. N_CTX_TRAIN (0) means "the model's training
# context" wherever an n_ctx is taken. N_BATCH / N_UBATCH are llama-cpp-python's (the core
# Context's default n_batch is llama.cpp's 2048); the loader clamps n_batch to the context and
# n_ubatch to n_batch. LAST_N_TOKENS_SIZE is the window of the repeat/frequency/presence
# penalties (-1: the whole context).

N_CTX = 512
N_CTX_SLOT = 2048
N_CTX_TRAIN = 0
N_BATCH = 512
N_UBATCH = 512
N_SEQ_MAX = 1
LAST_N_TOKENS_SIZE = 64
LORA_SCALE = 1.0


# -- server batching ------------------------------------------------------------------------------
# The continuous-batching engine of each served model: slots decoded together (llama-server's
# --parallel) and requests that may wait for a slot before the server answers 429.

N_PARALLEL = 4
MAX_QUEUE = 64


# -- sampling -------------------------------------------------------------------------------------
# A request's sampling settings when it names none: llama-cpp-python's (create_completion, its
# server's request bodies). CHAT_TEMPERATURE is `Llama.create_chat_completion`'s 0.2; the
# server's chat route, like llama-cpp-python's server, uses TEMPERATURE. MAX_TOKENS is
# /v1/completions' and create_completion's 16 (chat: until the context is full).

MAX_TOKENS = 16
TEMPERATURE = 0.8
CHAT_TEMPERATURE = 0.2
TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05
TYPICAL_P = 1.0
REPEAT_PENALTY = 1.0
FREQUENCY_PENALTY = 0.0
PRESENCE_PENALTY = 0.0
MIROSTAT_MODE = 0
MIROSTAT_TAU = 5.0
MIROSTAT_ETA = 0.1


# -- speculative decoding -------------------------------------------------------------------------
# The drafters of `Llama(draft_model=...)` (llama-cpp-python's names and defaults): a draft
# model's own context, the tokens drafted per step, prompt lookup's n-gram size. A callable
# drafter without a `num_pred_tokens` attribute drafts up to CALLABLE_DRAFT_NUM_PRED_TOKENS.

DRAFT_N_CTX = 4096
DRAFT_N_BATCH = 512
DRAFT_NUM_PRED_TOKENS = 8
PROMPT_LOOKUP_MAX_NGRAM_SIZE = 2
PROMPT_LOOKUP_NUM_PRED_TOKENS = 10
CALLABLE_DRAFT_NUM_PRED_TOKENS = 16
