# cython: language_level=3
# distutils: language = c++
"""pyllamacy._llama — the Cython core over llama.h.

This file is a table of contents; each included .pxi holds one domain:

    _errors.pxi    exception classes and the one place that maps llama.cpp return codes to them
    _logging.pxi   llama.cpp / ggml log capture and verbosity
    _backend.pxi   loading backends (CPU variant choice, GPU modules), devices, system info
    _rpc.pxi       RPC devices: a model's layers on llama.cpp rpc-servers (pyllamacy/rpc.py)
    _model.pxi     Model (weights + vocabulary), tokenization
    _lora.pxi      LoraAdapter (a LoRA adapter of one Model, attached to Contexts)
    _batch.pxi     Batch (llama_batch owner)
    _context.pxi   Context (KV cache, decode, logits/embeddings, state, cancellation)
    _mtmd.pxi      Projector, MultimodalInput: images / audio through libmtmd
    _sampler.pxi   Sampler (a llama_sampler chain)
    _slot.pxi      the per-slot kernel: token choice, stop rules, speculative drafts, finish
                   reasons; shared by Generation and Engine
    _generate.pxi  Generation: the nogil loop of one sequence over the kernel
    _engine.pxi    Engine: continuous batching of many slots over one Context, on the kernel
    _quantize.pxi  quantize() over llama_model_quantize
    _fit.pxi       memory estimate (no-alloc dry run) and fitting, over libllama-common's fit.h

Ownership: every C pointer has exactly one owning Python object; children keep their parents
alive (Context -> Model, Sampler -> Model for vocab-bound samplers, LoraAdapter -> Model,
Context -> its attached LoraAdapters); close() is idempotent and
frees in the right order; __dealloc__ frees what was not closed and warns ResourceWarning.
"""
from libc.stdint cimport int8_t, uint8_t, int32_t, int64_t, uint32_t, uint64_t, INT32_MIN
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset, strlen
from libc.math cimport isnan, isfinite
from libcpp.string cimport string
from libcpp.vector cimport vector
from libc.stdbool cimport bool as cbool
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.exc cimport PyErr_CheckSignals

cimport cython
from cython.parallel cimport prange

from pyllamacy.includes cimport llama as L
from pyllamacy.includes cimport ggml as G
from pyllamacy.includes cimport ggml_backend as GB
from pyllamacy.includes cimport support as S
from pyllamacy.includes cimport mtmd as M

import os
import sys
import threading
import warnings
import zlib

import numpy as np

include "_errors.pxi"
include "_logging.pxi"
include "_backend.pxi"
include "_rpc.pxi"
include "_model.pxi"
include "_lora.pxi"
include "_batch.pxi"
include "_context.pxi"
include "_mtmd.pxi"
include "_sampler.pxi"
include "_slot.pxi"
include "_generate.pxi"
include "_engine.pxi"
include "_quantize.pxi"
include "_fit.pxi"

_init_library()
