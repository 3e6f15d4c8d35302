"""Llama: the high-level API, a near drop-in for llama-cpp-python's `llama_cpp.Llama`.

Built only on the public core (Model, Context, Sampler, Generation). The fast path of a
completion (no streaming, no logprobs, no logits_processor) evaluates the prompt and then runs
the whole decode/sample loop in one call without the GIL (`Generation.run()`); streaming steps
the same loop one token at a time. A `logits_processor` needs the logits in Python at every
step, so that path samples token by token from Python.

Differences from llama-cpp-python worth knowing (each is also noted where it happens):

* flash_attn=None (the default) lets llama.cpp decide ("auto"); llama-cpp-python's default is
  False (off).
* n_threads=None uses every CPU this process may run on (llama-cpp-python: half of them).
* seed=LLAMA_DEFAULT_SEED (the default) gives a random seed per call; with a fixed seed the
  calls are reproducible: each call without `seed=` uses the current seed and then advances it.
* logprobs work without logits_all=True.
* top_k=0 disables top-k; a negative top_k is an error (llama-cpp-python passes it on to
  llama.cpp, which treats it like 0).
* temperature <= 0 means greedy (llama-cpp-python samples from the unfiltered distribution for
  a negative temperature).
* repeat/frequency/presence penalties also see the last `last_n_tokens_size` prompt tokens
  (as llama.cpp's server does), except when a grammar is used.
* `embed()` on a Llama differs from the server's /v1/embeddings, not from llama-cpp-python:
  raw vectors unless normalize=True, and the model's own pooling (per-token vectors for a
  generative model); the server normalizes and mean-pools a generative model.
"""
from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections import deque
from typing import (Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union)

import numpy as np

from ._llama import (ClosedError, Context, ContextOverflowError, Model, MultimodalInput,
                     Sampler, check_gguf, set_log_level)
from .chat import DEFAULT_REASONING_FORMAT, ChatDeltas, ChatRequest, chat_message
from .chat import check_reasoning_format
from .chat import create_chat_completion as _create_chat_completion
from .defaults import (ENUM_UNSPECIFIED, LAST_N_TOKENS_SIZE, LORA_SCALE, MAIN_GPU, N_BATCH,
                       N_CTX, N_GPU_LAYERS, N_UBATCH, SEED_RANDOM, SPLIT_MODE, USE_MLOCK,
                       USE_MMAP, normalize_seed)
from .embeddings import embed_texts
from .pipeline.responses_api import (ResponseEventStream, ResponseStore, new_response_id,
                                     response_object)
from .pipeline.responses_api import parse_request as parse_response_request
from .rerank import check_rerank_request, rank_documents, rerank_response
from .loading import LoadedModel, load
from .llama_cache import (BaseLlamaCache, LlamaCache, LlamaDiskCache,  # noqa: F401
                          LlamaRAMCache, longest_token_prefix)
from .llama_speculative import check_draft_model
from .llama_speculative import generate_kwargs as _spec_generate_kwargs
from .llama_types import (ChatCompletionChunk, CreateChatCompletionResponse,
                          CreateCompletionResponse, LlamaGrammar, LlamaState,
                          LogitsProcessorList, StoppingCriteriaList)
from .pipeline.options import (chat_logprobs_count, completion_logprobs_count, stop_strings,
                               token_budget)
from .pipeline.prompts import infill_tokens, prompt_tokens
from .pipeline.responses import (ChatChunks, ResponseMeta, chat_choice, chat_response,
                                 completion_choice, completion_chunk, completion_response,
                                 echo_entries, usage, usage_chunk)
from .pipeline.sampling import SamplingParams, build_sampler, feed_history
from .pipeline.text import (LogprobEntry, TextEntry, TokenText, join_pieces, logprob_entry,
                            piece_text)

__all__ = ["Llama", "LlamaGrammar", "LlamaState", "LlamaTokenizer", "LogitsProcessorList",
           "StoppingCriteriaList", "LLAMA_DEFAULT_SEED",
           # pyllamacy.pipeline's, importable from here as before
           "build_sampler", "infill_tokens"]

LLAMA_DEFAULT_SEED = SEED_RANDOM      # llama.cpp's name: a random seed per call (defaults.py)

# llama-cpp-python keywords that we accept and ignore (they have no effect in llama.cpp any
# more, or describe settings llama.cpp now picks by itself)
_IGNORED_KWARGS = frozenset({"numa", "mul_mat_q", "f16_kv", "low_vram", "n_gqa", "rms_norm_eps",
                             "n_parts"})

# chat-request fields of a Responses request that Llama.create_chat_completion does not take
_NOT_FOR_LLAMA_CHAT = frozenset({"model", "user"})
_FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
_GOLDEN = 0x9E3779B1


def _fmix(seed: int, step: int) -> int:
    """A different, reproducible 32-bit seed for each step of a per-token sampler."""
    return (seed + (step + 1) * _GOLDEN) & 0xFFFFFFFF


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    m = np.max(x)
    if not np.isfinite(m):
        m = 0.0
    shifted = x - m
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted)))


class _Finish:
    """Why a token producer stopped (filled in by the producer); `eog`: the end-of-generation
    token that stopped it (sampled, not handed out, not evaluated), else None."""
    __slots__ = ("reason", "eog")

    def __init__(self):
        self.reason = None
        self.eog = None


class PreloadedPrompt:
    """A prompt already in the context (a multimodal one, Llama._load_multimodal): its tokens
    per position (-1 where media embeddings are) and its text; create_completion continues
    from it without evaluating anything."""
    __slots__ = ("tokens", "text")

    def __init__(self, tokens: Sequence[int], text: str = ""):
        self.tokens = list(tokens)
        self.text = text


class LlamaTokenizer:
    """llama-cpp-python's tokenizer object over a Llama (Llama.tokenizer()): the model's own
    vocabulary, also when the Llama was given another tokenizer (as in llama-cpp-python).
    special defaults to True for tokenize here, False on Llama.tokenize (as there)."""

    def __init__(self, llama: "Llama"):
        self.llama = llama

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> List[int]:
        return self.llama._vocab_tokenize(text, add_bos, special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Optional[Sequence[int]] = None,
                   special: bool = False) -> bytes:
        """Token ids -> bytes, as Llama.detokenize without a tokenizer override."""
        return self.llama._vocab_detokenize(tokens, prev_tokens, special)

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> List[int]:
        return self.tokenize(text.encode("utf-8", errors="ignore"), add_bos=add_bos,
                             special=special)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.detokenize(tokens).decode("utf-8", errors="ignore")


class Llama:
    """A llama.cpp model with one context: completion, embeddings, tokenization.

    Accepts llama-cpp-python's constructor keywords; see the module docstring for the few
    places where the behaviour differs. Not for use by two threads at once (a second thread
    gets pyllamacy.BusyError). close() (or a `with` block) frees the context and the weights;
    every method afterwards raises pyllamacy.ClosedError.

    Accepted and ignored keywords (llama-cpp-python's, without effect in llama.cpp now):
    numa, mul_mat_q, f16_kv, low_vram, n_gqa, rms_norm_eps, n_parts. Any other unknown keyword
    is a TypeError. lora_base is accepted for llama-cpp-python's sake and has no effect (a
    UserWarning says so): llama.cpp applies an adapter to the loaded weights as they are.
    """

    def __init__(
        self,
        model_path: str,
        *,
        # model
        n_gpu_layers: Union[int, str] = N_GPU_LAYERS,
        split_mode: Union[int, str] = SPLIT_MODE,
        main_gpu: int = MAIN_GPU,
        tensor_split: Optional[List[float]] = None,
        vocab_only: bool = False,
        use_mmap: bool = USE_MMAP,
        use_mlock: bool = USE_MLOCK,
        kv_overrides: Optional[Dict[str, Union[bool, int, float, str]]] = None,
        rpc_servers: Optional[Union[str, List[str]]] = None,
        # context
        seed: int = LLAMA_DEFAULT_SEED,
        n_ctx: int = N_CTX,
        n_batch: int = N_BATCH,
        n_ubatch: int = N_UBATCH,
        n_threads: Optional[int] = None,
        n_threads_batch: Optional[int] = None,
        rope_scaling_type: Optional[Union[int, str]] = None,
        pooling_type: Optional[Union[int, str]] = None,
        attention_type: Optional[Union[int, str]] = None,
        rope_freq_base: float = 0.0,
        rope_freq_scale: float = 0.0,
        yarn_ext_factor: Optional[float] = None,
        yarn_attn_factor: Optional[float] = None,
        yarn_beta_fast: Optional[float] = None,
        yarn_beta_slow: Optional[float] = None,
        yarn_orig_ctx: int = 0,
        logits_all: bool = False,
        embedding: bool = False,
        offload_kqv: bool = True,
        flash_attn: Optional[Union[bool, str]] = None,
        op_offload: Optional[bool] = None,
        swa_full: Optional[bool] = None,
        type_k: Optional[Union[int, str]] = None,
        type_v: Optional[Union[int, str]] = None,
        # sampling
        no_perf: bool = False,
        last_n_tokens_size: int = LAST_N_TOKENS_SIZE,
        # LoRA adapter (GGUF), applied with lora_scale
        lora_base: Optional[str] = None,
        lora_scale: float = LORA_SCALE,
        lora_path: Optional[str] = None,
        # chat (used by create_chat_completion)
        chat_format: Optional[str] = None,
        chat_handler: Optional[Any] = None,
        reasoning_format: str = DEFAULT_REASONING_FORMAT,
        # speculative decoding: LlamaPromptLookupDecoding / LlamaDraftModel
        draft_model: Optional[Any] = None,
        # tokenizer override
        tokenizer: Optional[Any] = None,
        # misc
        spm_infill: bool = False,
        verbose: bool = True,
        backend_sampling: bool = False,
        fit_margin_mib: Optional[int] = None,
        **kwargs,
    ):
        """Load `model_path` and create a context of `n_ctx` tokens (0: the model's own).

        n_gpu_layers: layers to offload (-1: all; the default 0 keeps every layer on the CPU,
        as llama-cpp-python does; pyllamacy.Model's own default is -1; "auto": the most that
        leave fit_margin_mib MiB free on every device, 0 without a GPU; see
        pyllamacy.memory). n_ctx=0 is the training context, shrunk to what fits. flash_attn: None lets
        llama.cpp decide ("auto"); llama-cpp-python's default is False. verbose=True prints
        llama.cpp's warnings and errors, verbose=False only its errors (llama.cpp's log level
        is process-wide).
        reasoning_format: the default of create_chat_completion(reasoning_format=) for a
        thinking model's reply ("auto": its reasoning in reasoning_content, as llama-server's
        --reasoning-format does; "none": left in content; see pyllamacy.chat).
        backend_sampling=True samples inside the compute graph (on the GPU with n_gpu_layers)
        where a request allows it: a chain of greedy/dist/top_k/top_p/min_p/temp/logit_bias,
        no logprobs, grammar, penalties, logits processors or draft model. Saves copying the
        logits to the host every token; llama.cpp marks it experimental.
        rpc_servers: llama.cpp rpc-servers ("host:port,host:port" or a list; `pyllamacy
        rpc-server` starts one) whose devices take the offloaded layers: give n_gpu_layers
        too (with the default 0 every layer stays here). Each server is probed before the
        load (pyllamacy.rpc.RPCError if it cannot be used); see docs/SCALE.md, and run the
        servers on a private network only.
        """
        self._closed = True          # until everything is built
        self._loaded: Optional[LoadedModel] = None
        self._model = None
        self._ctx = None
        unknown = sorted(k for k in kwargs if k not in _IGNORED_KWARGS)
        if unknown:
            # llama-cpp-python takes any keyword (LangChain's LlamaCpp always passes
            # device=None): accepted here too, with a warning that names them
            warnings.warn(f"Llama() ignores keyword argument(s) it does not know: "
                          f"{', '.join(unknown)}", UserWarning, stacklevel=2)
        if lora_path is not None:
            check_gguf(lora_path, what="LoRA adapter")     # before the model loads
        if isinstance(lora_scale, bool) or not isinstance(lora_scale, (int, float, np.number)):
            raise TypeError(f"lora_scale must be a number, got {lora_scale!r}")
        if not math.isfinite(float(lora_scale)):
            raise ValueError(f"lora_scale must be finite, got {lora_scale}")
        if lora_base is not None:
            warnings.warn("lora_base has no effect: llama.cpp applies the LoRA adapter to the "
                          "loaded model's weights as they are", UserWarning, stacklevel=2)
        check_draft_model(draft_model)
        check_reasoning_format(reasoning_format)
        if not isinstance(model_path, (str, os.PathLike)):
            raise TypeError(f"model_path must be str or os.PathLike, not "
                            f"{type(model_path).__name__}")
        for name, v in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_ubatch", n_ubatch),
                        ("last_n_tokens_size", last_n_tokens_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, got {v!r}")
        if n_ctx < 0:
            raise ValueError(f"n_ctx must be >= 0 (0: the model's training context), got {n_ctx}")
        if n_batch < 1 or n_ubatch < 1:
            raise ValueError(f"n_batch and n_ubatch must be >= 1, got {n_batch} and {n_ubatch}")
        if last_n_tokens_size < -1:
            raise ValueError(f"last_n_tokens_size must be >= -1, got {last_n_tokens_size}")

        self._init_kwargs = dict(
            model_path=model_path, n_gpu_layers=n_gpu_layers, split_mode=split_mode,
            main_gpu=main_gpu, tensor_split=tensor_split, vocab_only=vocab_only,
            use_mmap=use_mmap, use_mlock=use_mlock, kv_overrides=kv_overrides,
            rpc_servers=rpc_servers, seed=seed,
            n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_threads=n_threads,
            n_threads_batch=n_threads_batch, rope_scaling_type=rope_scaling_type,
            pooling_type=pooling_type, attention_type=attention_type,
            rope_freq_base=rope_freq_base, rope_freq_scale=rope_freq_scale,
            yarn_ext_factor=yarn_ext_factor, yarn_attn_factor=yarn_attn_factor,
            yarn_beta_fast=yarn_beta_fast, yarn_beta_slow=yarn_beta_slow,
            yarn_orig_ctx=yarn_orig_ctx, logits_all=logits_all, embedding=embedding,
            offload_kqv=offload_kqv, flash_attn=flash_attn, op_offload=op_offload,
            swa_full=swa_full, type_k=type_k, type_v=type_v, no_perf=no_perf,
            last_n_tokens_size=last_n_tokens_size, chat_format=chat_format,
            chat_handler=chat_handler, reasoning_format=reasoning_format,
            tokenizer=tokenizer, spm_infill=spm_infill,
            verbose=verbose, lora_path=lora_path, lora_scale=lora_scale, lora_base=lora_base,
            fit_margin_mib=fit_margin_mib)

        self.verbose = verbose
        set_log_level("warn" if verbose else "error")

        self.model_path = os.fspath(model_path)
        self.tensor_split = tensor_split
        self.kv_overrides = kv_overrides
        self.lora_base = lora_base
        self.lora_scale = float(lora_scale)
        self.lora_path = None if lora_path is None else os.fspath(lora_path)
        self.chat_format = chat_format
        self.chat_handler = chat_handler
        self.reasoning_format = reasoning_format
        self.draft_model = draft_model
        self.backend_sampling = bool(backend_sampling)
        self.cache: Optional[BaseLlamaCache] = None
        self._last_generation = None     # the core Generation of the last completion (stats)
        self._saved_logits = None        # (n, logits after evaluating input_ids[:n]) or None
        self.spm_infill = spm_infill
        self.last_n_tokens_size = int(last_n_tokens_size)
        self.tokenizer_ = tokenizer
        self._logits_all = bool(logits_all)
        self._embedding = bool(embedding)
        self._seed = normalize_seed(seed)

        context_options = {}
        for name, v in (("yarn_ext_factor", yarn_ext_factor),
                        ("yarn_attn_factor", yarn_attn_factor),
                        ("yarn_beta_fast", yarn_beta_fast), ("yarn_beta_slow", yarn_beta_slow),
                        ("op_offload", op_offload), ("swa_full", swa_full)):
            if v is not None:
                context_options[name] = v
        context_options.update(
            n_threads=n_threads, n_threads_batch=n_threads_batch, embeddings=embedding,
            pooling_type=_unspecified(pooling_type), attention_type=_unspecified(attention_type),
            rope_scaling_type=_unspecified(rope_scaling_type), flash_attn=flash_attn,
            offload_kqv=offload_kqv, type_k=type_k, type_v=type_v,
            rope_freq_base=rope_freq_base, rope_freq_scale=rope_freq_scale,
            yarn_orig_ctx=yarn_orig_ctx, no_perf=no_perf)
        loaded = load(self.model_path, n_gpu_layers=n_gpu_layers, split_mode=split_mode,
                      main_gpu=main_gpu, tensor_split=tensor_split, vocab_only=vocab_only,
                      use_mmap=use_mmap, use_mlock=use_mlock, kv_overrides=kv_overrides,
                      rpc_servers=rpc_servers,
                      n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                      context_options=context_options, fit_margin_mib=fit_margin_mib,
                      # a vocab_only Llama ignores its adapter (it has no weights to change)
                      lora=[] if self.lora_path is None or vocab_only
                      else [(self.lora_path, self.lora_scale)])
        self._loaded = loaded
        self._model = model = loaded.model
        self._ctx = ctx = loaded.ctx
        try:
            self._n_ctx = loaded.n_ctx
            self.n_gpu_layers = loaded.n_gpu_layers     # as loaded: the fitted value of "auto"
            self.n_batch = loaded.n_batch
            self.n_ubatch = loaded.n_ubatch
            self.n_threads = None if ctx is None else ctx.n_threads
            self.n_threads_batch = None if ctx is None else ctx.n_threads_batch
            self._n_vocab = model.n_vocab
            self.metadata: Dict[str, str] = model.metadata
            self.n_tokens = 0
            self.input_ids: np.ndarray = np.zeros(self._n_ctx, dtype=np.intc)
            self.scores: np.ndarray = np.zeros(
                (self._n_ctx if self._logits_all else 0, self._n_vocab), dtype=np.single)
        except BaseException:
            loaded.close()
            raise
        self._closed = False

    # -- lifetime ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("this Llama is closed")

    def _need_ctx(self) -> Context:
        self._check()
        if self._ctx is None:
            raise ValueError("this Llama was loaded with vocab_only=True: it can tokenize but "
                             "not evaluate")
        return self._ctx

    def close(self) -> None:
        """Free the context, the LoRA adapter and the model weights. Safe to call twice."""
        if self._loaded is not None:
            self._loaded.close()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Llama":
        self._check()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        return dict(self._init_kwargs, seed=self._seed)

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: Optional[str], additional_files=None,
                        local_dir=None, local_dir_use_symlinks: Any = "auto", cache_dir=None,
                        **kwargs: Any) -> "Llama":
        """Download a GGUF from the Hugging Face Hub (or find it in the local cache) and load
        it: Llama.from_pretrained("org/Model-GGUF", "*Q4_K_M.gguf", n_ctx=4096).

        filename: a file of the repository or an fnmatch pattern matching exactly one; for a
        split model the first shard, with the other shards in additional_files. Needs
        `pip install huggingface-hub`; works offline for files already in the cache.
        local_dir_use_symlinks is accepted for llama-cpp-python's sake (huggingface_hub no
        longer takes it). The other keywords are Llama()'s (pyllamacy.hub)."""
        from . import hub
        if filename is None:
            raise ValueError("filename is required: the GGUF file of the repository (or a "
                             "pattern such as '*Q4_K_M.gguf')")
        path = hub.download(repo_id, filename, additional_files, local_dir=local_dir,
                            cache_dir=cache_dir)
        return cls(model_path=path, **kwargs)

    def __setstate__(self, state):
        self.__init__(**state)

    def __repr__(self) -> str:
        state = "closed " if self._closed else ""
        return f"<pyllamacy.Llama {state}model_path={self.model_path!r}>"

    # -- handles ------------------------------------------------------------------------------

    @property
    def ctx(self) -> Context:
        """The pyllamacy.Context (llama-cpp-python returns a raw pointer here)."""
        return self._need_ctx()

    @property
    def model(self) -> Model:
        """The pyllamacy.Model."""
        self._check()
        return self._model

    @property
    def _input_ids(self) -> np.ndarray:
        return self.input_ids[: self.n_tokens]

    @property
    def _scores(self) -> np.ndarray:
        return self.scores[: self.n_tokens, :]

    @property
    def eval_tokens(self) -> Deque[int]:
        return deque(self.input_ids[: self.n_tokens].tolist(), maxlen=self._n_ctx)

    @property
    def eval_logits(self) -> Deque[List[float]]:
        """The logits of the evaluated positions (all of them with logits_all=True, else
        none: llama-cpp-python keeps only the last row there, pyllamacy keeps no rows)."""
        return deque(self.scores[: self.n_tokens, :].tolist(),
                     maxlen=self._n_ctx if self._logits_all else 1)

    # -- sizes and special tokens -----------------------------------------------------------

    def memory_breakdown(self):
        """What the model and its context use, per device then the host (llama.cpp's
        figures): a pyllamacy.memory.MemoryBreakdown; `.table()` renders it."""
        if self._ctx is None:
            raise ValueError("a vocab_only Llama has no context")
        return self._ctx.memory_breakdown()

    def n_ctx(self) -> int:
        self._check()
        return self._n_ctx

    def n_vocab(self) -> int:
        self._check()
        return self._n_vocab

    def n_embd(self) -> int:
        self._check()
        return self._model.n_embd

    def token_bos(self) -> int:
        self._check()
        return self._model.token_bos()

    def token_eos(self) -> int:
        self._check()
        return self._model.token_eos()

    def token_nl(self) -> int:
        self._check()
        return self._model.token_nl()

    def pooling_type(self):
        return self._need_ctx().pooling_type

    def tokenizer(self) -> LlamaTokenizer:
        self._check()
        return LlamaTokenizer(self)

    # -- tokenization -------------------------------------------------------------------------

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> List[int]:
        """UTF-8 bytes (or str) -> token ids. add_bos adds the special tokens the model wants
        around a text (BOS where its add_bos flag says so; llama_tokenize's add_special);
        special=True parses special-token text such as "<|im_start|>". With
        Llama(tokenizer=...), that tokenizer's tokenize(text, add_bos, special)."""
        self._check()
        if self.tokenizer_ is not None:
            return list(self.tokenizer_.tokenize(text, add_bos, special))
        return self._vocab_tokenize(text, add_bos, special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Optional[Sequence[int]] = None,
                   special: bool = False) -> bytes:
        """Token ids -> UTF-8 bytes, as llama-cpp-python's Llama.detokenize: every token's
        piece as it is (a SentencePiece word-start becomes a space: "▁world" -> b" world"),
        joined, less one leading space when the list starts with BOS. So pieces detokenized
        one at a time and joined equal the whole list detokenized (unless it starts with
        BOS), and detokenize(tokenize(text)) == text where the tokenizer is lossless.
        special=True renders control tokens (BOS, <|im_end|>, ...) as their text; without it
        they render as nothing.

        prev_tokens (the tokens before `tokens`) changes nothing here, as in llama-cpp-python,
        whose own tokenizer also ignores it: a piece does not depend on what comes before it.
        A tokenizer given as Llama(tokenizer=...) gets it (llama-cpp-python's
        LlamaHFTokenizer uses it to cut the text of prev_tokens off)."""
        self._check()
        if self.tokenizer_ is not None:
            return self.tokenizer_.detokenize(tokens, prev_tokens=prev_tokens, special=special)
        return self._vocab_detokenize(tokens, prev_tokens, special)

    def _vocab_tokenize(self, text, add_bos: bool, special: bool) -> List[int]:
        """The model's own tokenization (Llama.tokenize without a tokenizer override)."""
        self._check()
        return self._model.tokenize(text, add_special=add_bos, parse_special=special)

    def _vocab_detokenize(self, tokens, prev_tokens, special: bool) -> bytes:
        """The model's own detokenization (pipeline.text.join_pieces)."""
        self._check()
        if prev_tokens is not None and not isinstance(prev_tokens, (list, tuple, np.ndarray)):
            raise TypeError(f"prev_tokens must be a list of token ids or None, not "
                            f"{type(prev_tokens).__name__}")
        return join_pieces(self._model, tokens, special)

    # -- state --------------------------------------------------------------------------------

    def set_seed(self, seed: int) -> None:
        """The seed of the next calls that pass no `seed=` (LLAMA_DEFAULT_SEED or -1: random)."""
        self._check()
        self._seed = LLAMA_DEFAULT_SEED if seed is None or seed == -1 else int(seed) & 0xFFFFFFFF

    def _call_seed(self, seed: Optional[int]) -> int:
        """The seed of one call, following llama-cpp-python: an explicit seed becomes the
        Llama's seed; otherwise a fixed seed advances reproducibly and the default is random."""
        if seed is not None and seed != -1:
            self._seed = int(seed) & 0xFFFFFFFF
            return self._seed
        if seed == -1 or self._seed == LLAMA_DEFAULT_SEED:
            return random.getrandbits(32) & 0xFFFFFFFE
        self._seed = random.Random(self._seed).randrange(0, 0xFFFFFFFF)
        return self._seed

    def set_cache(self, cache: Optional[BaseLlamaCache]) -> None:
        """Keep the state after each completion in `cache` (a LlamaRAMCache or
        LlamaDiskCache; None: no cache) and start the next completion from the cached state
        sharing the longest prefix with its prompt (pyllamacy.llama_cache)."""
        if cache is not None and not isinstance(cache, BaseLlamaCache):
            raise TypeError(f"cache must be a pyllamacy.llama_cache cache or None, not "
                            f"{type(cache).__name__}")
        self.cache = cache

    def _restore_from_cache(self, prompt_tokens: List[int]) -> None:
        """Load the cached state sharing a longer prefix with the prompt than the context."""
        try:
            state = self.cache[prompt_tokens]
        except KeyError:
            return
        cached_prefix = longest_token_prefix(
            np.asarray(state.input_ids[: int(state.n_tokens)]).tolist(), prompt_tokens)
        held_prefix = longest_token_prefix(self.input_ids[: self.n_tokens].tolist(),
                                           prompt_tokens)
        if cached_prefix > held_prefix:
            self.load_state(state)

    def _load_multimodal(self, prompt) -> "PreloadedPrompt":
        """Evaluate a MultimodalInput from position 0 and return the PreloadedPrompt that
        create_completion continues from. Media positions hold -1 in input_ids: no text prompt
        shares a prefix through them, so nothing computed from an image is reused for another."""
        ctx = self._need_ctx()
        self._saved_logits = None
        self.n_tokens = 0
        end = ctx.eval_multimodal(prompt, pos=0)
        toks: List[int] = []
        for kind, _n_tok, n_pos, text_toks in prompt.chunks():
            toks.extend(text_toks if kind == "text" else [-1] * n_pos)
        if len(toks) != end:
            raise RuntimeError(f"the multimodal prompt took {end} positions, its chunks list "
                               f"{len(toks)}")
        self.input_ids[:end] = toks
        self.n_tokens = end
        self._saved_logits = (end, ctx.logits())
        return PreloadedPrompt(toks, "")

    def reset(self) -> None:
        """Forget the evaluated tokens (the KV cache is overwritten by the next eval)."""
        self._check()
        self.n_tokens = 0

    def save_state(self) -> LlamaState:
        """Snapshot of the context (KV cache, logits, RNG) and of the token bookkeeping."""
        ctx = self._need_ctx()
        data = ctx.state_get()
        return LlamaState(input_ids=self.input_ids.copy(), scores=self._scores.copy(),
                          n_tokens=self.n_tokens, llama_state=data,
                          llama_state_size=len(data), seed=self._seed)

    def load_state(self, state: LlamaState) -> None:
        """Restore a snapshot made by save_state() of a Llama with the same model and n_ctx.

        Sampling continues from the logits saved with the state."""
        ctx = self._need_ctx()
        if not isinstance(state, LlamaState):
            raise TypeError(f"expected a LlamaState, not {type(state).__name__}")
        if state.n_tokens > self._n_ctx:
            raise ValueError(f"the state holds {state.n_tokens} tokens, more than this "
                             f"context's n_ctx={self._n_ctx}")
        data = state.llama_state
        if state.llama_state_size is not None and state.llama_state_size < len(data):
            data = memoryview(data)[: state.llama_state_size]
        ctx.state_set(data)
        ids = np.zeros(self._n_ctx, dtype=np.intc)
        src = np.asarray(state.input_ids, dtype=np.intc)[: self._n_ctx]
        ids[: len(src)] = src
        self.input_ids = ids
        self.n_tokens = int(state.n_tokens)
        if self._logits_all and state.scores is not None and len(state.scores):
            rows = min(len(state.scores), self._n_ctx)
            self.scores[:rows] = state.scores[:rows]
        self._seed = state.seed
        self._saved_logits = None
        # pyllamacy's context state carries the last logits; a bare llama.cpp state does not,
        # and then the last token is evaluated again so that sampling starts from fresh logits
        if self.n_tokens > 0 and not ctx.has_logits:
            last = int(self.input_ids[self.n_tokens - 1])
            self.n_tokens -= 1
            self._eval([last])

    # -- evaluation ---------------------------------------------------------------------------

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate `tokens` after the first n_tokens tokens (anything after them in the KV
        cache is dropped); input_ids / n_tokens (and scores with logits_all) follow."""
        self._need_ctx()
        self._eval([int(t) for t in tokens])

    def _eval(self, tokens: List[int], on_logits=None) -> None:
        """Decode `tokens` at position n_tokens. With logits_all (or `on_logits`, called as
        on_logits(position, logits) for every token) every position keeps its logits."""
        ctx = self._ctx
        n0 = self.n_tokens
        if self._saved_logits is not None and n0 < self._saved_logits[0]:
            self._saved_logits = None         # positions they depend on are rewritten
        if ctx.seq_pos_max(0) >= n0:
            ctx.seq_rm(0, n0, -1)
        m = len(tokens)
        if m == 0:
            return
        if n0 + m > self._n_ctx:
            raise ContextOverflowError(
                f"Requested tokens ({n0 + m}) exceed context window of {self._n_ctx}: "
                f"{m} new tokens after {n0} already in the context; shorten the input or "
                f"create the Llama with a larger n_ctx")
        if not (self._logits_all or on_logits is not None):
            ctx.eval(tokens, pos=n0, logits="last")
            self.input_ids[n0:n0 + m] = tokens
            self.n_tokens = n0 + m
            return
        step = self.n_batch
        for i in range(0, m, step):
            chunk = tokens[i:i + step]
            p = n0 + i
            ctx.eval(chunk, pos=p, logits="all")
            for j in range(len(chunk)):
                row = ctx.logits(j)
                if self._logits_all:
                    self.scores[p + j] = row
                if on_logits is not None:
                    on_logits(p + j, row)
            self.input_ids[p:p + len(chunk)] = chunk
            self.n_tokens = p + len(chunk)

    def _load_prompt(self, tokens: List[int], reuse: bool = True, on_logits=None) -> int:
        """Make the context hold exactly `tokens` with fresh logits for the last one, keeping
        the longest common prefix with what it holds now. Returns the tokens evaluated."""
        ctx = self._ctx
        n = len(tokens)
        keep = 0
        if reuse and self.n_tokens > 0:
            k = min(self.n_tokens, n)
            diff = np.nonzero(self.input_ids[:k] != np.asarray(tokens[:k], dtype=np.intc))[0]
            keep = int(diff[0]) if len(diff) else k
            saved = self._saved_logits
            if keep >= n and saved is not None and saved[0] == n and on_logits is None:
                # all of it is cached and so are the logits its evaluation produced: reuse
                # both (re-evaluating the last token alone can round differently and change
                # a greedy continuation)
                if ctx.seq_pos_max(0) >= n:
                    ctx.seq_rm(0, n, -1)
                if ctx.seq_pos_max(0) == n - 1:
                    ctx.set_logits(saved[1])
                    self.n_tokens = n
                    return 0
            if keep >= n:                     # all of it is cached: redo the last token so
                keep = n - 1                  # that its logits are the current ones
        if keep < self.n_tokens or ctx.seq_pos_max(0) >= keep:
            if not ctx.seq_rm(0, keep, -1) or ctx.seq_pos_max(0) != keep - 1:
                ctx.memory_clear()            # memory that cannot drop a tail (recurrent)
                keep = 0
        self.n_tokens = keep
        self._eval(tokens[keep:], on_logits=on_logits)
        self._saved_logits = (n, ctx.logits())
        return n - keep

    # -- sampling -----------------------------------------------------------------------------

    def _sampler(self, sp: SamplingParams, seed: int, extra_bias=None) -> Sampler:
        return build_sampler(self._model, sp, seed, self.last_n_tokens_size, extra_bias)

    def _accept_history(self, s: Sampler, sp: SamplingParams,
                        generated: Sequence[int] = ()) -> None:
        """Feed the penalties the recent context (or, with a grammar, the generated tokens,
        which the grammar must see and the prompt would not parse): pipeline.feed_history."""
        feed_history(s, sp, self.input_ids[: self.n_tokens], self.last_n_tokens_size, generated)

    def _text_tokens(self, start: int, end: int) -> List[int]:
        """input_ids[start:end] as tokens, less the media positions (-1) of a multimodal
        prompt: what samplers and drafters may see."""
        return [t for t in self.input_ids[start:end].tolist() if t >= 0]

    @staticmethod
    def _processor_bias(raw: np.ndarray, processed) -> Optional[Dict[int, float]]:
        """What a logits processor changed, as a logit bias over the raw logits."""
        proc = np.asarray(processed, dtype=np.float32)
        if proc.shape != raw.shape:
            raise ValueError(f"a logits processor returned shape {proc.shape}, expected "
                             f"{raw.shape}")
        if np.isnan(proc).any():
            raise ValueError("a logits processor returned NaN")
        with np.errstate(invalid="ignore", over="ignore"):
            bias = np.where(np.isneginf(proc), -np.inf, proc - raw)
        bias = np.where(np.isposinf(bias), np.float32(1e30), bias)
        bias = np.where(np.isnan(bias), np.float32(0), bias)
        idx = np.nonzero(bias)[0]
        if len(idx) == 0:
            return None
        return dict(zip(idx.tolist(), bias[idx].tolist()))

    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
               typical_p: float = 1.0, temp: float = 0.80, repeat_penalty: float = 1.0,
               frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
               tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_eta: float = 0.1,
               mirostat_tau: float = 5.0, penalize_nl: bool = True,
               logits_processor: Optional[LogitsProcessorList] = None,
               grammar: Optional[LlamaGrammar] = None, idx: Optional[int] = None) -> int:
        """Sample one token from the logits of the last eval (of token `idx`; needs
        logits_all for any but the last). tfs_z and penalize_nl are ignored (llama.cpp dropped
        them). A grammar starts from its root on every call."""
        ctx = self._need_ctx()
        if self.n_tokens <= 0:
            raise ValueError("nothing to sample from: eval() some tokens first")
        sp = SamplingParams(**_sampling_kwargs(locals()))
        ridx = -1 if idx is None else int(idx) - self.n_tokens
        base = (random.getrandbits(32) if self._seed == LLAMA_DEFAULT_SEED else self._seed)
        seed = _fmix(base, self.n_tokens)
        extra = None
        if logits_processor:
            raw = ctx.logits(ridx)
            proc = raw.copy()
            for p in logits_processor:
                proc = p(self._input_ids, proc)
            extra = self._processor_bias(raw, proc)
        s = self._sampler(sp, seed, extra)
        self._accept_history(s, sp)
        return s.sample(ctx, ridx)

    # -- token producers ----------------------------------------------------------------------
    # Generators of (token, logits-it-was-sampled-from or None) that keep input_ids/n_tokens
    # in step with the context. `send(list_of_tokens)` appends tokens after the last one.

    def _draft_kwargs(self) -> dict:
        """Speculative decoding arguments for Context.generate (empty without a draft_model)."""
        if self.draft_model is None:
            return {}
        kw = _spec_generate_kwargs(self.draft_model, self._model)
        kw["history"] = self._text_tokens(0, self.n_tokens)
        return kw

    def _tokens_fast(self, sampler: Sampler, max_tokens: int, stop: List[str], fin: _Finish):
        """The whole loop in one nogil call."""
        ctx = self._ctx
        base = self.n_tokens
        spec = self._draft_kwargs()
        gen = ctx.generate(sampler, max_tokens=max_tokens, stop_strings=stop or None,
                           backend_sampling=self.backend_sampling and not spec, **spec)
        self._last_generation = gen
        try:
            toks = gen.run()
        finally:
            done = gen.tokens
            self.n_tokens = gen.n_past
            end = min(base + len(done), self._n_ctx)
            self.input_ids[base:end] = done[:end - base]
        fin.reason = gen.finish_reason
        fin.eog = gen.eog_token
        for t in toks:
            yield t, None

    def _tokens_iter(self, sampler: Sampler, max_tokens: int, stop: List[str],
                     want_logits: bool, stopping_criteria, fin: _Finish,
                     allow_draft: bool = True):
        """One nogil step per token (streaming, logprobs, stopping criteria)."""
        ctx = self._ctx
        cap = self._n_ctx
        want_logits = want_logits or self._logits_all or stopping_criteria is not None
        produced = 0
        base = self.n_tokens
        # speculative decoding only where nobody reads per-token logits
        spec = {} if want_logits or not allow_draft else self._draft_kwargs()
        bs = self.backend_sampling and not want_logits and not spec
        gen = ctx.generate(sampler, max_tokens=max_tokens, stop_strings=stop or None,
                           backend_sampling=bs, **spec)
        self._last_generation = gen
        try:
            while True:
                try:
                    tok = next(gen)
                except StopIteration:
                    self.n_tokens = gen.n_past
                    fin.reason = gen.finish_reason
                    fin.eog = gen.eog_token
                    return
                produced += 1
                # token k of this generation sits at base + k; with speculative decoding the
                # context may already hold tokens that have not been handed out yet
                pos = base + produced - 1
                self.n_tokens = min(gen.n_past, pos)
                if pos < cap:
                    self.input_ids[pos] = tok
                logits = ctx.logits() if want_logits else None
                if self._logits_all:
                    self.scores[pos - 1] = logits
                if stopping_criteria is not None and stopping_criteria(
                        self.input_ids[:min(pos + 1, cap)], logits):
                    fin.reason = "stop"
                    return
                extra = yield tok, logits
                if extra:
                    pending = gen.pending_token
                    gen.close()
                    more = ([pending] if pending is not None else []) + [int(t) for t in extra]
                    self._eval(more)
                    left = -1 if max_tokens < 0 else max(0, max_tokens - produced)
                    base = self.n_tokens - produced
                    gen = ctx.generate(sampler, max_tokens=left, stop_strings=stop or None,
                                       backend_sampling=bs)
        finally:
            gen.close()

    def _tokens_python(self, sp: SamplingParams, seed: int, max_tokens: int, want_logits: bool,
                       logits_processor, stopping_criteria, fin: _Finish):
        """Python-side loop for logits processors: each step applies the processors to the
        logits and samples with a fresh chain that carries their changes as a logit bias."""
        if sp.mirostat_mode and sp.temp > 0:
            raise NotImplementedError("mirostat together with logits_processor is not supported")
        ctx = self._ctx
        model = self._model
        cap = self._n_ctx
        produced = 0
        generated: List[int] = []
        while True:
            if 0 <= max_tokens <= produced:
                fin.reason = "length"
                return
            raw = ctx.logits()
            proc = raw.copy()
            ids = self.input_ids[: self.n_tokens]
            for p in logits_processor:
                proc = p(ids, proc)
            s = self._sampler(sp, _fmix(seed, produced), self._processor_bias(raw, proc))
            self._accept_history(s, sp, generated)
            tok = s.sample(ctx, -1)
            s.close()
            if model.is_eog(tok):
                fin.reason = "stop"
                fin.eog = tok
                return
            produced += 1
            generated.append(tok)
            pos = self.n_tokens
            if pos < cap:
                self.input_ids[pos] = tok
            if stopping_criteria is not None and stopping_criteria(
                    self.input_ids[:min(pos + 1, cap)], raw):
                fin.reason = "stop"
                return
            extra = yield tok, raw
            if 0 <= max_tokens <= produced:
                fin.reason = "length"
                return
            more = [tok] + [int(t) for t in (extra or ())]
            if self.n_tokens + len(more) > cap:
                fin.reason = "length"
                return
            self._eval(more)

    # -- generate -----------------------------------------------------------------------------

    def generate(self, tokens: Sequence[int], top_k: int = 40, top_p: float = 0.95,
                 min_p: float = 0.05, typical_p: float = 1.0, temp: float = 0.80,
                 repeat_penalty: float = 1.0, reset: bool = True,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_tau: float = 5.0,
                 mirostat_eta: float = 0.1, penalize_nl: bool = True,
                 logits_processor: Optional[LogitsProcessorList] = None,
                 stopping_criteria: Optional[StoppingCriteriaList] = None,
                 grammar: Optional[LlamaGrammar] = None) -> Iterator[int]:
        """Generate token ids after `tokens`, as llama-cpp-python's generate: every sampled
        token is yielded, the end-of-generation token too (check `llama.model.is_eog(token)`,
        or token == token_eos(), and stop iterating there, as llama-cpp-python's callers do);
        asked for more after it, generation goes on after that token. It ends on a stopping
        criterion or a full context. reset=True keeps the cached prefix the prompt shares
        with the previous call; reset=False appends `tokens` to what the context holds.
        `send()` a list of ids to append them after the last yielded token. The arguments are
        checked when this is called; the prompt is evaluated at the first next()."""
        self._need_ctx()
        sp = SamplingParams(**_sampling_kwargs(locals()))
        toks = [int(t) for t in tokens]
        seed = (random.getrandbits(32) if self._seed == LLAMA_DEFAULT_SEED else self._seed)
        sampler = None if logits_processor else self._sampler(sp, seed)
        if not toks and (reset or self.n_tokens == 0):
            raise ValueError("generate() needs at least one prompt token")
        return self._generate(toks, sp, sampler, seed, reset, logits_processor,
                              stopping_criteria)

    def _generate(self, toks, sp, sampler, seed, reset, logits_processor, stopping_criteria):
        self._need_ctx()
        if reset:
            self._load_prompt(toks)
        elif toks:
            self._eval(toks)
        if sampler is not None:
            self._accept_history(sampler, sp)
        try:
            while True:
                fin = _Finish()
                if sampler is not None:
                    # on a restart after an end-of-generation token the sampler has already
                    # seen the history and that token
                    prod = self._tokens_iter(sampler, -1, [], False, stopping_criteria, fin,
                                             allow_draft=False)
                else:
                    prod = self._tokens_python(sp, seed, -1, False, logits_processor,
                                               stopping_criteria, fin)
                try:
                    item = next(prod)
                    while True:
                        sent = yield item[0]
                        item = prod.send(sent)
                except StopIteration:
                    pass
                finally:
                    prod.close()
                if fin.eog is None:
                    return
                # the producers stop on end-of-generation without handing the token out;
                # llama-cpp-python's generate yields it like any other token (after the
                # stopping criteria), and goes on after it if the caller asks for more
                eog = fin.eog
                cap = self._n_ctx
                pos = self.n_tokens
                if pos < cap:
                    self.input_ids[pos] = eog
                if stopping_criteria is not None and stopping_criteria(
                        self.input_ids[:min(pos + 1, cap)], self._ctx.logits()):
                    return
                sent = yield eog
                more = [eog] + [int(t) for t in (sent or ())]
                if self.n_tokens + len(more) > cap:
                    return
                self._eval(more)
                seed = _fmix(seed, self.n_tokens)       # the Python path: fresh draws
        finally:
            if sampler is not None:
                sampler.close()

    # -- completion ---------------------------------------------------------------------------
    # One completion: _prepare_completion (the request checked, pipeline.options / prompts /
    # sampling) -> _completion_events (the tokens through pipeline.text.TokenText) -> objects
    # (pipeline.responses), the same functions the server's routes use.

    def _prompt_tokens(self, prompt, suffix: Optional[str]) -> Tuple[List[int], str]:
        """Prompt (and infill suffix) -> (tokens, prompt text for echo and text offsets)."""
        if isinstance(prompt, PreloadedPrompt):
            if suffix is not None:
                raise ValueError("suffix cannot be combined with a multimodal prompt")
            return list(prompt.tokens), prompt.text
        return prompt_tokens(self._model, prompt, suffix, tokenizer=self,
                             spm_infill=self.spm_infill,
                             model_name=os.path.basename(self.model_path))

    def _logprob_entry(self, logits: np.ndarray, tok: int, n: int) -> LogprobEntry:
        """The entry of `tok` sampled from `logits`, with the `n` most likely tokens."""
        lp = _log_softmax(logits)
        top: List[Tuple[int, float]] = []
        if n > 0:
            k = min(n, len(lp))
            best = np.argpartition(-lp, k - 1)[:k]
            best = best[np.argsort(-lp[best], kind="stable")]
            top = [(i, float(lp[i])) for i in best.tolist()]
        return logprob_entry(self._model, tok, float(lp[tok]), top)

    def _completion_events(self, run: Dict[str, Any]):
        """The work of one completion, shared by the streaming and the non-streaming paths:
        yields (text, logprob entries) as they become final; fills run["finish_reason"] and
        run["completion_tokens"]. Entries are pipeline.text.TextEntry tuples."""
        self._need_ctx()
        prompt_tokens: List[int] = run["prompt_tokens"]
        n_logprobs: Optional[int] = run["logprobs"]
        echo: List[TextEntry] = []

        if run["echo"] and n_logprobs is not None:
            scored: Dict[int, LogprobEntry] = {}

            def on_logits(pos, row):
                if pos + 1 < len(prompt_tokens):
                    scored[pos + 1] = self._logprob_entry(row, prompt_tokens[pos + 1],
                                                          n_logprobs)
            self._load_prompt(prompt_tokens, reuse=False, on_logits=on_logits)
            model = self._model
            echo = echo_entries(prompt_tokens, model.token_bos(), scored,
                                lambda t: piece_text(model, t))
        else:
            if self.cache is not None and not run.get("preloaded"):
                self._restore_from_cache(prompt_tokens)
            self._load_prompt(prompt_tokens)

        if run["echo"] and (run["prompt_text"] or echo):
            yield run["prompt_text"], echo

        fin = _Finish()
        sp: SamplingParams = run["sampling"]
        sampler: Optional[Sampler] = run["sampler"]
        if sampler is not None:
            self._accept_history(sampler, sp)
        mode = run["mode"]
        if mode == "fast":
            prod = self._tokens_fast(sampler, run["max_tokens"], run["stop"], fin)
        elif mode == "iter":
            prod = self._tokens_iter(sampler, run["max_tokens"], run["stop"],
                                     n_logprobs is not None, run["stopping_criteria"], fin)
        else:
            prod = self._tokens_python(sp, run["seed"], run["max_tokens"],
                                       n_logprobs is not None, run["logits_processor"],
                                       run["stopping_criteria"], fin)

        tt = TokenText(run["stop"], base=len(run["prompt_text"]))
        to_piece = self._model.token_to_piece
        special = run.get("special_tokens")      # chat: control tokens a parser must see
        if special:
            plain = to_piece

            def to_piece(tok):
                return plain(tok, tok in special)
        try:
            for tok, logits in prod:
                entry = (self._logprob_entry(logits, tok, n_logprobs)
                         if n_logprobs is not None else None)
                text, entries = tt.push(to_piece(tok), entry)
                if text or entries:
                    yield text, entries
                if tt.stopped:
                    break
        finally:
            prod.close()
            if sampler is not None:
                sampler.close()
        text, entries = tt.finish(fin.reason)
        if text or entries:
            yield text, entries
        run["finish_reason"] = tt.finish_reason
        run["completion_tokens"] = tt.n_tokens
        if self.cache is not None and self.n_tokens > 0 and not run.get("preloaded"):
            self.cache[self.input_ids[: self.n_tokens].tolist()] = self.save_state()

    def _collect(self, run: Dict[str, Any]) -> Tuple[str, List[TextEntry]]:
        """A whole completion: (text, logprob entries)."""
        texts: List[str] = []
        entries: List[TextEntry] = []
        for text, ents in self._completion_events(run):
            texts.append(text)
            entries.extend(ents)
        return "".join(texts), entries

    def _prepare_completion(self, prompt, suffix, max_tokens, temperature, top_p, min_p,
                            typical_p, logprobs, echo, stop, frequency_penalty,
                            presence_penalty, repeat_penalty, top_k, stream, seed,
                            mirostat_mode, mirostat_tau, mirostat_eta, meta: ResponseMeta,
                            stopping_criteria, logits_processor, grammar, logit_bias):
        self._need_ctx()
        logprobs = completion_logprobs_count(logprobs)
        stop_list = stop_strings(stop)
        sp = SamplingParams(temp=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                            typical_p=typical_p, repeat_penalty=repeat_penalty,
                            frequency_penalty=frequency_penalty,
                            presence_penalty=presence_penalty, mirostat_mode=mirostat_mode,
                            mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
                            grammar=grammar, logit_bias=logit_bias)
        prompt_tokens, prompt_text = self._prompt_tokens(prompt, suffix)
        max_tokens = token_budget(max_tokens, len(prompt_tokens), self._n_ctx,
                                  hint="shorten the prompt or create the Llama with a larger "
                                       "n_ctx")
        call_seed = self._call_seed(seed)
        if logits_processor:
            mode = "python"
            sampler = None
            self._sampler(sp, call_seed).close()         # check the settings now
        else:
            sampler = self._sampler(sp, call_seed)
            mode = ("fast" if not stream and logprobs is None and stopping_criteria is None
                    and not self._logits_all else "iter")
        return {
            "meta": meta, "prompt_tokens": prompt_tokens, "prompt_text": prompt_text,
            "echo": bool(echo), "logprobs": logprobs, "stop": stop_list,
            "max_tokens": max_tokens, "sampling": sp, "sampler": sampler, "seed": call_seed,
            "mode": mode, "stopping_criteria": stopping_criteria,
            "logits_processor": logits_processor, "finish_reason": None,
            "completion_tokens": 0, "preloaded": isinstance(prompt, PreloadedPrompt),
        }

    def _stream_chunks(self, run) -> Iterator[CreateCompletionResponse]:
        meta = run["meta"]
        want = run["logprobs"] is not None
        for text, entries in self._completion_events(run):
            yield completion_chunk(meta, 0, text, None, entries if want else None)
        yield completion_chunk(meta, 0, "", run["finish_reason"])

    def create_completion(
        self,
        prompt: Union[str, List[int]],
        suffix: Optional[str] = None,
        max_tokens: Optional[int] = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        logprobs: Optional[int] = None,
        echo: bool = False,
        stop: Optional[Union[str, List[str]]] = [],
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: Optional[int] = None,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: Optional[str] = None,
        stopping_criteria: Optional[StoppingCriteriaList] = None,
        logits_processor: Optional[LogitsProcessorList] = None,
        grammar: Optional[LlamaGrammar] = None,
        logit_bias: Optional[Dict[int, float]] = None,
    ) -> Union[CreateCompletionResponse, Iterator[CreateCompletionResponse]]:
        """Complete `prompt` (text or token ids); an OpenAI-style text_completion dict, or with
        stream=True an iterator of chunks whose texts join to the same text.

        max_tokens None or <= 0: until the context is full. temperature 0: greedy. stop: text
        that ends the completion (cut before it; finish_reason "stop"). logprobs=N: the
        chosen token's log-probability and the N most likely alternatives per token.
        suffix: fill-in-the-middle (models with FIM tokens only). tfs_z is ignored. Settings
        are checked when this is called (ValueError); with stream=True the prompt is evaluated
        at the first next().
        """
        meta = ResponseMeta.completion(model if model is not None else self.model_path)
        run = self._prepare_completion(
            prompt, suffix, max_tokens, temperature, top_p, min_p, typical_p, logprobs, echo,
            stop, frequency_penalty, presence_penalty, repeat_penalty, top_k, stream, seed,
            mirostat_mode, mirostat_tau, mirostat_eta, meta, stopping_criteria,
            logits_processor, grammar, logit_bias)
        if stream:
            return self._stream_chunks(run)
        text, entries = self._collect(run)
        choice = completion_choice(0, text, run["finish_reason"],
                                   entries if run["logprobs"] is not None else None)
        return completion_response(meta, [choice], usage(len(run["prompt_tokens"]),
                                                          run["completion_tokens"]))

    def __call__(self, prompt: Union[str, List[int]], *args, **kwargs):
        """Same as create_completion()."""
        return self.create_completion(prompt, *args, **kwargs)

    def create_chat_completion(self, messages, **kwargs):
        """An OpenAI-style chat completion (or, with stream=True, an iterator of
        chat.completion.chunk dicts) with llama-cpp-python's arguments: the model's own chat
        template (or chat_format= / chat_handler=), tools and tool_choice, response_format,
        logprobs/top_logprobs and the sampling settings of create_completion().
        See pyllamacy.chat."""
        self._check()
        opts = kwargs.pop("stream_options", None)
        if opts is not None and (not isinstance(opts, dict) or
                                 not isinstance(opts.get("include_usage", False), bool)):
            raise ValueError(f"stream_options must be {{'include_usage': bool}}, got {opts!r}")
        out = _create_chat_completion(self, messages, **kwargs)
        if opts and opts.get("include_usage") and kwargs.get("stream"):
            return self._with_usage_chunk(out)
        return out

    def _with_usage_chunk(self, chunks):
        """OpenAI's stream_options.include_usage: the stream, then a chunk without choices
        that carries the usage (of the chat this Llama streamed last)."""
        self._stream_usage = None
        yield from chunks
        if self._stream_usage is not None:
            meta, use = self._stream_usage
            yield usage_chunk(meta, "chat.completion.chunk", use)

    def complete_chat(self, request: ChatRequest, prompt=None, *,
                      max_tokens: Optional[int] = None, temperature: float = 0.2,
                      top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
                      logprobs: Optional[bool] = None, top_logprobs: Optional[int] = None,
                      frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                      repeat_penalty: float = 1.0, top_k: int = 40, stream: bool = False,
                      seed: Optional[int] = None, tfs_z: float = 1.0, mirostat_mode: int = 0,
                      mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                      model: Optional[str] = None,
                      stopping_criteria: Optional[StoppingCriteriaList] = None,
                      logits_processor: Optional[LogitsProcessorList] = None,
                      logit_bias: Optional[Dict[int, float]] = None
                      ) -> Union[CreateChatCompletionResponse, Iterator[ChatCompletionChunk]]:
        """The reply to a rendered chat (pyllamacy.chat.prepare_chat), shaped as
        create_chat_completion() returns it: what chat handlers call to generate.

        prompt: None for request.prompt_tokens, or a pyllamacy.MultimodalInput of the same
        prompt with its media (chat_multimodal), evaluated here. The other arguments are
        create_chat_completion()'s (tfs_z is ignored)."""
        n_logprobs = chat_logprobs_count(logprobs, top_logprobs)
        if prompt is None:
            prompt = request.prompt_tokens
        elif isinstance(prompt, MultimodalInput):
            prompt = self._load_multimodal(prompt)
        meta = ResponseMeta.chat(model if model is not None else self.model_path)
        run = self._prepare_completion(
            prompt, None, max_tokens, temperature, top_p, min_p, typical_p, n_logprobs,
            False, request.stop, frequency_penalty, presence_penalty, repeat_penalty, top_k,
            stream, seed, mirostat_mode, mirostat_tau, mirostat_eta, meta, stopping_criteria,
            logits_processor, request.grammar, logit_bias)
        run["special_tokens"] = request.special_tokens
        if stream:
            return self._chat_chunks(run, request)
        text, entries = self._collect(run)
        message, finish = chat_message(request, text, run["finish_reason"])
        choice = chat_choice(0, message, finish, entries if n_logprobs is not None else None)
        return chat_response(meta, [choice], usage(len(run["prompt_tokens"]),
                                                    run["completion_tokens"]))

    def _chat_chunks(self, run, request: ChatRequest) -> Iterator[ChatCompletionChunk]:
        chunks = ChatChunks(run["meta"], 0, ChatDeltas(request), run["logprobs"] is not None)
        yield chunks.start()
        for text, entries in self._completion_events(run):
            yield from chunks.push(text, entries)
        yield from chunks.finish(run["finish_reason"])
        self._stream_usage = (run["meta"], usage(len(run["prompt_tokens"]),
                                                 run["completion_tokens"]))

    def create_chat_completion_openai_v1(self, *args, **kwargs):
        """create_chat_completion() returning the openai package's types (ChatCompletion, or
        an iterator of ChatCompletionChunk with stream=True). Needs `pip install openai`."""
        try:
            from openai.types.chat import ChatCompletion, ChatCompletionChunk
        except ImportError as e:
            raise ImportError("create_chat_completion_openai_v1 needs the openai package: "
                              "pip install openai") from e
        stream = kwargs.get("stream", False)
        if not isinstance(stream, bool):
            raise TypeError(f"stream must be a bool, got {stream!r}")
        result = self.create_chat_completion(*args, **kwargs)
        if stream:
            return (ChatCompletionChunk.model_validate(chunk) for chunk in result)
        return ChatCompletion.model_validate(result)

    # -- OpenAI's Responses API ----------------------------------------------------------------

    def create_response(self, **body):
        """OpenAI's Responses API on this model, the shape of the server's POST /v1/responses:
        `input` (a string or items), `instructions`, function `tools`, `tool_choice`,
        `text={"format": ...}`, `max_output_tokens`, `temperature`, ... -> a Response dict;
        stream=True -> an iterator of the Responses events (response.created ...
        response.completed). Responses are kept (store=True, the default) in this Llama's
        bounded store, for `previous_response_id` and retrieve_response(). A bad field is a
        ValueError naming it (pyllamacy.pipeline.responses_api.ResponsesRequestError); an
        unknown previous_response_id is a KeyError (ResponseNotFound)."""
        self._check()
        req = parse_response_request(body, self._responses)
        chat = {k: v for k, v in req.chat.items() if k not in _NOT_FOR_LLAMA_CHAT}
        rid, created = new_response_id(), int(time.time())
        model = self.model_path
        if req.stream:
            return self._response_events(req, chat, rid, created, model)
        out = self.create_chat_completion(**chat)
        resp = response_object(out, body, rid, created)
        resp["model"] = body.get("model") or model
        if req.store:
            self._responses.put(resp, req.input_items)
        return resp

    def _response_events(self, req, chat, rid, created, model):
        stream = ResponseEventStream(req.body, rid, created, req.body.get("model") or model)
        yield from stream.start()
        final = None
        for chunk in self.create_chat_completion(**chat):
            for ev in stream.feed(chunk):
                final = ev if ev["type"] in _FINAL_EVENTS else final
                yield ev
        if final is None:
            for ev in stream.finish():
                final = ev if ev["type"] in _FINAL_EVENTS else final
                yield ev
        if req.store and final is not None and final["type"] != "response.failed":
            self._responses.put(final["response"], req.input_items)

    def retrieve_response(self, response_id: str) -> dict:
        """A response stored by create_response (KeyError if it is not, or no longer, kept)."""
        return self._responses.get(response_id)

    def delete_response(self, response_id: str) -> dict:
        return self._responses.delete(response_id)

    @property
    def _responses(self) -> ResponseStore:
        store = self.__dict__.get("_response_store")
        if store is None:
            store = self.__dict__["_response_store"] = ResponseStore()
        return store

    # -- reranking ----------------------------------------------------------------------------

    def rank(self, query: str, documents: Sequence[str], truncate: bool = True) -> List[float]:
        """The relevance score of each document to `query` (list of floats, in the documents'
        order). Needs a reranker model (a classifier head) loaded with embedding=True; its
        GGUF's pooling type "rank" is used (or pass pooling_type="rank")."""
        scores, _ = self._rank(query, documents, truncate)
        return scores

    def create_rerank(self, query: str, documents: Sequence[str], top_n: Optional[int] = None,
                      return_documents: bool = False, model: Optional[str] = None):
        """The Jina / Cohere rerank answer (what the server's /v1/rerank returns): results
        sorted by relevance_score, highest first, at most top_n."""
        texts = check_rerank_request(query, documents, top_n)
        scores, total = self._rank(query, texts, True)
        return rerank_response(model if model is not None else self.model_path, scores, texts,
                               total, top_n, return_documents)

    def _rank(self, query, documents, truncate):
        ctx = self._need_ctx()
        if not self._embedding:
            raise RuntimeError("reranking needs a Llama created with embedding=True")
        texts = check_rerank_request(query, documents)
        try:
            return rank_documents(self._model, ctx, query, texts,
                                  limit=min(self.n_batch, self.n_ubatch), truncate=truncate)
        finally:
            self.n_tokens = 0

    # -- embeddings ---------------------------------------------------------------------------

    def embed(self, input: Union[str, List[str]], normalize: bool = False,
              truncate: bool = True, return_count: bool = False):
        """Embeddings of one text (-> list[float]) or of a list of texts (-> list of those),
        as llama-cpp-python's Llama.embed.

        Needs embedding=True. The pooling is the Llama's pooling_type, by default the
        model's own (its GGUF's pooling_type): an embedding model pools each text into one
        vector; a generative model (no pooling of its own: "none") gives each text one vector
        per token, a list of lists. normalize=True scales each vector to unit L2 norm; by
        default the vectors are the model's raw output. truncate: cut each text to the batch
        size instead of raising. return_count: also return the token count.

        The server's /v1/embeddings differs (OpenAI's API promises one unit vector per
        text): it normalizes, and mean-pools a generative model. Llama(embedding=True,
        pooling_type="mean") and normalize=True give the same vectors here.
        """
        ctx = self._need_ctx()
        if not self._embedding:
            raise RuntimeError("embeddings need a Llama created with embedding=True")
        single = isinstance(input, str)
        inputs = [input] if single else list(input)
        try:
            out, total = embed_texts(
                self._model, ctx, inputs, limit=min(self.n_batch, self.n_ubatch),
                normalize=normalize, truncate=truncate,
                tokenize=lambda text: self.tokenize(text.encode("utf-8"), add_bos=True,
                                                    special=False))
        finally:
            self.n_tokens = 0
        result = out[0] if single else out
        return (result, total) if return_count else result

    def create_embedding(self, input: Union[str, List[str]], model: Optional[str] = None):
        """OpenAI-style embeddings response for one text or a list of texts: embed()'s
        vectors as they are (raw, the Llama's pooling), as llama-cpp-python returns them."""
        embeds, total = self.embed(input, return_count=True)
        if isinstance(input, str):
            embeds = [embeds]
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": e, "index": i}
                     for i, e in enumerate(embeds)],
            "model": model if model is not None else self.model_path,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }

    # -- helpers kept from llama-cpp-python ---------------------------------------------------

    @staticmethod
    def logits_to_logprobs(logits, axis: int = -1) -> np.ndarray:
        x = np.asarray(logits, dtype=np.float32)
        m = np.amax(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        shifted = x - m
        with np.errstate(divide="ignore"):
            return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))

    longest_token_prefix = staticmethod(longest_token_prefix)


def _unspecified(v):
    """llama-cpp-python passes -1 for "unspecified" enum settings; the core takes None."""
    return None if v is None or (isinstance(v, int) and not isinstance(v, bool)
                                 and v == ENUM_UNSPECIFIED) else v


_SAMPLING_ARGS = ("top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "frequency_penalty",
                  "presence_penalty", "mirostat_mode", "mirostat_tau", "mirostat_eta", "grammar")


def _sampling_kwargs(args: Dict[str, Any]) -> Dict[str, Any]:
    """SamplingParams' keywords from the arguments of Llama.sample() / generate() (llama-cpp-
    python's names: `temp` for the temperature)."""
    kw = {name: args[name] for name in _SAMPLING_ARGS}
    kw["temp"] = args["temp"]
    return kw
