"""Server settings: llama-cpp-python's field names (llama_cpp.server.settings), plus the
knobs of the batching engine (n_parallel slots, wait queue) and the request limits."""
from __future__ import annotations

import json
import os
from typing import List, Literal, Optional, Union

from pydantic import BaseModel, Field, field_validator, model_validator

from ..defaults import (LAST_N_TOKENS_SIZE, LORA_SCALE, MAIN_GPU, MAX_QUEUE, N_BATCH,
                        FIT_MARGIN_MIB, N_CTX_SLOT, N_GPU_LAYERS, N_GPU_LAYERS_AUTO, N_PARALLEL, N_UBATCH,
                        PROMPT_LOOKUP_MAX_NGRAM_SIZE, PROMPT_LOOKUP_NUM_PRED_TOKENS, SEED_RANDOM,
                        SPLIT_MODE, USE_MLOCK, USE_MMAP)

PROMPT_LOOKUP = "prompt-lookup-decoding"      # llama-cpp-python's draft_model value

__all__ = ["ModelSettings", "ServerSettings", "ConfigFileSettings", "load_config_file"]


class ModelSettings(BaseModel):
    """One served model. `model_alias` is the name clients pass as "model"."""
    model_config = {"protected_namespaces": (), "extra": "forbid"}

    model: str = Field(description="Path to the GGUF model file.")
    model_alias: Optional[str] = Field(None, description="Name clients use (default: the path).")
    # model
    n_gpu_layers: Optional[Union[int, Literal["auto"]]] = Field(
        None, description="Layers to offload (-1: all; 0: every layer on the CPU; \"auto\": as "
        "many as fit). Not given: \"auto\" while fit is on, else 0.")
    fit: Optional[bool] = Field(None, description="Fit the model to the machine before loading "
                                "(llama-server's --fit): with n_gpu_layers not given or "
                                "\"auto\", the largest offload, and with n_ctx 0 the largest "
                                "context, that leave fit_target MiB free on every device; a "
                                "model too large even for the host is refused before loading. "
                                "Default: on unless n_gpu_layers is a number.")
    fit_target: Optional[Union[int, List[int]]] = Field(
        None, description="MiB to leave free on each device when fitting (one value, or one "
        f"per device: 1024,2048); default {FIT_MARGIN_MIB}, llama-server's --fit-target.")
    main_gpu: int = MAIN_GPU
    split_mode: Union[int, str] = SPLIT_MODE
    tensor_split: Optional[List[float]] = None
    rpc_servers: Optional[str] = Field(
        None, description="llama.cpp rpc-servers (host:port,host:port; `pyllamacy rpc-server` "
        "starts one, on a private network only) whose devices take the offloaded layers: give "
        "n_gpu_layers as a number (fitting does not see them). Each is probed at load.")

    @field_validator("rpc_servers", mode="before")
    @classmethod
    def _check_rpc_servers(cls, v, info):
        if v is None:
            return None
        from ..rpc import parse_servers     # the syntax now; reachability when loading
        endpoints = parse_servers(v)
        layers = info.data.get("n_gpu_layers")
        if endpoints and (not isinstance(layers, int) or info.data.get("fit")):
            raise ValueError("rpc_servers needs n_gpu_layers as a number and fit off: fitting "
                             "does not see the servers' devices")
        return ",".join(endpoints) or None
    use_mmap: bool = USE_MMAP
    use_mlock: bool = USE_MLOCK
    lora_path: Optional[str] = Field(None, description="LoRA adapter (GGUF) applied to every "
                                     "request of this model.")
    lora_scale: float = Field(LORA_SCALE, allow_inf_nan=False, description="Scale of the LoRA "
                              "adapter.")
    lora_base: Optional[str] = Field(None, description="Accepted for llama-cpp-python's sake; "
                                     "no effect.")
    lora_paths: Optional[List[str]] = Field(None, description="LoRA adapters (GGUF) loaded once; "
                                            "a request picks scales with llama-server's field "
                                            "lora: [{\"id\": i, \"scale\": s}] (ids count "
                                            "lora_path first, then these).")
    lora_scales: Optional[List[float]] = Field(None, description="Scales of lora_paths for "
                                               "requests without a lora field (default 1.0 "
                                               "each).")
    # multimodal (llama-cpp-python's name)
    clip_model_path: Optional[str] = Field(None, description="Multimodal projector (mmproj "
                                           "GGUF): image/audio parts in chat messages.")
    media_allow_files: bool = Field(False, description="Media parts may name local files.")
    media_allow_urls: bool = Field(False, description="Media parts may be http(s) URLs the "
                                   "server fetches.")
    media_max_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest media input.")
    # speculative decoding (llama-cpp-python's names)
    draft_model: Optional[str] = Field(None, description=f"'{PROMPT_LOOKUP}' (prompt lookup) "
                                       "or a draft model GGUF with the same vocabulary.")
    draft_model_num_pred_tokens: int = Field(PROMPT_LOOKUP_NUM_PRED_TOKENS, ge=1, le=64,
                                             description="Draft tokens per step.")
    # context
    n_ctx: int = Field(N_CTX_SLOT, ge=0, description="Context of each slot, in tokens (0: the "
                       "model's own); the server holds n_ctx x n_parallel. The command line's "
                       "-c N gives the total instead, as llama-server's does.")
    n_batch: int = Field(N_BATCH, ge=1)
    n_ubatch: int = Field(N_UBATCH, ge=1)
    n_threads: Optional[int] = Field(None, ge=1)
    n_threads_batch: Optional[int] = Field(None, ge=1)
    flash_attn: Optional[bool] = None
    type_k: Optional[Union[int, str]] = None
    type_v: Optional[Union[int, str]] = None
    seed: int = Field(SEED_RANDOM, description=f"Default seed (0x{SEED_RANDOM:X}: random per "
                      f"request).")
    last_n_tokens_size: int = Field(LAST_N_TOKENS_SIZE, ge=-1)
    embedding: bool = Field(True, description="Serve /v1/embeddings with this model (an extra "
                                              "context, created on first use).")
    chat_format: Optional[str] = Field(None, description="None: the model's own template.")
    reasoning_format: Literal["auto", "deepseek", "deepseek-legacy", "none"] = Field(
        "auto", description="A thinking model's reasoning: auto / deepseek (deepseek-legacy "
        "alike) put it in message.reasoning_content and stream it as delta.reasoning_content; "
        "none leaves it in content (llama-server's --reasoning-format). A request's "
        "reasoning_format overrides it.")
    spm_infill: bool = Field(False, description="Fill-in-the-middle prompts (suffix=) put the "
                             "suffix before the prefix (models trained that way).")
    verbose: bool = False
    # batching (ours; llama-server's --parallel)
    n_parallel: int = Field(N_PARALLEL, ge=1, le=256, description="Slots: requests decoded "
                            "together.")
    max_queue: int = Field(MAX_QUEUE, ge=0, description="Requests waiting for a slot before "
                           "429.")
    backend_sampling: bool = Field(False, description="Sample inside the compute graph (on the "
                                   "GPU) where a request's sampler allows it (llama.cpp: "
                                   "experimental; llama-server's --backend-sampling).")
    grammar_max_ms_per_token: float = Field(
        100.0, ge=0, description="Refuse (400) a request whose grammar (grammar, "
        "response_format, tools) costs more than this per token to apply, measured when the "
        "request arrives (never below 50x a plain JSON string's grammar on this machine); a token "
        "that takes 4x the limit to choose ends its request. A costly "
        "grammar would slow every request sharing the model's batch. 0: no limit.")
    warmup: bool = Field(True, description="One decode before serving (as llama-server does; a "
                         "full ubatch when layers are on a GPU), so that the first request does "
                         "not pay for first-use setup.")

    @field_validator("n_gpu_layers")
    @classmethod
    def _check_n_gpu_layers(cls, v):
        if isinstance(v, int) and v < -1:
            raise ValueError(f"n_gpu_layers must be -1 (all), 0 or more, or \"auto\"; got {v}")
        return v

    @field_validator("fit_target", mode="before")
    @classmethod
    def _parse_fit_target(cls, v):
        """llama-server's spelling, "1024" or "1024,2048" (one per device), as numbers."""
        if isinstance(v, str):
            try:
                parts = [int(x) for x in v.split(",")]
            except ValueError:
                raise ValueError(f"fit_target must be MiB as an integer or a comma-separated "
                                 f"list of integers (one per device), got {v!r}") from None
            v = parts[0] if len(parts) == 1 else parts
        for x in (v if isinstance(v, list) else [v]):
            if isinstance(x, int) and not isinstance(x, bool) and x < 0:
                raise ValueError(f"fit_target must be >= 0 MiB, got {x}")
        return v

    def offload(self):
        """(n_gpu_layers, fit) as load() takes them: not given means "auto" while fit is on
        (the default) and 0 with fit off; "auto" with fit off is refused."""
        fit = self.fit
        if fit is None:
            fit = self.n_gpu_layers in (None, N_GPU_LAYERS_AUTO) or self.n_ctx == 0
        layers = self.n_gpu_layers
        if layers is None:
            layers = N_GPU_LAYERS_AUTO if fit else N_GPU_LAYERS
        return layers, fit

    @model_validator(mode="after")
    def _check_extras(self):
        if self.fit is False and self.n_gpu_layers == N_GPU_LAYERS_AUTO:
            raise ValueError("n_gpu_layers \"auto\" needs fit on: give a number of layers "
                             "with --fit off")
        if self.lora_scales is not None:
            if self.lora_paths is None or len(self.lora_scales) != len(self.lora_paths):
                raise ValueError("lora_scales needs one scale per entry of lora_paths")
            for v in self.lora_scales:
                if v != v or v in (float("inf"), float("-inf")):
                    raise ValueError(f"lora_scales must be finite, got {v}")
        for name in ("clip_model_path", "lora_path"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name}: no file at {path!r}")
        for path in self.lora_paths or ():
            if not os.path.isfile(path):
                raise ValueError(f"lora_paths: no file at {path!r}")
        if self.draft_model is not None and self.draft_model != PROMPT_LOOKUP and \
                not os.path.isfile(self.draft_model):
            raise ValueError(f"draft_model must be {PROMPT_LOOKUP!r} or a GGUF file; no file at "
                             f"{self.draft_model!r}")
        return self

    def adapters(self):
        """[(path, scale)] of every LoRA adapter, in id order (lora_path, then lora_paths)."""
        out = [] if self.lora_path is None else [(self.lora_path, self.lora_scale)]
        scales = self.lora_scales or [1.0] * len(self.lora_paths or ())
        return out + list(zip(self.lora_paths or (), scales))


class ServerSettings(BaseModel):
    """llama-cpp-python's server settings that apply here, and the request limits."""
    model_config = {"extra": "forbid"}

    host: str = Field("127.0.0.1", description="Listen address (loopback by default).")
    port: int = Field(8000, ge=0, le=65535)
    api_key: Optional[str] = Field(None, description="Require Authorization: Bearer <key> on "
                                                     "every route but /health.")
    ssl_keyfile: Optional[str] = None
    ssl_certfile: Optional[str] = None
    interrupt_requests: bool = True
    disable_ping_events: bool = False
    log_level: str = Field("info", description="pyllamacy's log on stderr: debug, info (the "
                           "startup lines and one line per request), warning or error.")

    log_format: str = Field("text", description="Log lines as text, or json: one JSON "
                            "object per line (time, level, logger, message; a request's line "
                            "adds method, route, model, status, tokens_in, tokens_out, "
                            "duration_s).")

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, v: str) -> str:
        v = v.lower()
        if v not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, not {v!r}")
        return v

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, v: str) -> str:
        v = v.lower()
        if v not in ("debug", "info", "warning", "error"):
            raise ValueError(f"log_level must be debug, info, warning or error, not {v!r}")
        return v
    # limits
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_tokens_limit: int = Field(8192, ge=1, description="Upper bound of max_tokens.")
    max_prompts: int = Field(16, ge=1, le=256, description="Most prompts in one /v1/completions "
                             "request (a list of prompts: n choices for each).")
    max_n: int = Field(4, ge=1, le=64, description="Most choices (n) per request; each one is "
                       "a request of its own in a slot.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After of a 429/503.")
    # deadlines of generation requests (0: none); a request's own `timeout` /
    # `t_max_predict_ms` may be shorter, not longer
    request_timeout_s: float = Field(0.0, ge=0, allow_inf_nan=False, description="Longest "
                                     "time a completion request may take, its wait for a slot "
                                     "included; it then ends with finish_reason 'length' and "
                                     "its slot is freed (0: no limit; the default of a "
                                     "request's `timeout` and its upper bound).")
    t_max_predict_ms: float = Field(0.0, ge=0, allow_inf_nan=False, description="Longest "
                                    "generation phase of a request in ms, from its first token "
                                    "(llama-server's t_max_predict_ms; 0: no limit; the default "
                                    "of a request's `t_max_predict_ms` and its upper bound).")
    # connections (uvicorn, run by python -m pyllamacy.server / pyllamacy.server.serve)
    timeout_keep_alive: float = Field(5.0, gt=0, allow_inf_nan=False, description="Close an "
                                      "idle keep-alive connection after this many seconds.")
    timeout_request_read: float = Field(60.0, gt=0, allow_inf_nan=False, description="A "
                                        "request's headers and body must have arrived this "
                                        "many seconds after the connection opened (or its "
                                        "previous response ended), else the connection is "
                                        "closed (slow or stalled clients).")
    allow_unconstrained_patterns: bool = Field(
        False, description="A JSON schema `pattern` (response_format, tool parameters) that "
        "llama.cpp cannot turn into grammar leaves that string unconstrained, with a warning, "
        "instead of a 400 (a request may also set allow_unconstrained_patterns: true).")
    slot_save_path: Optional[str] = Field(
        None, description="Folder for POST /slots/{id}?action=save|restore (llama-server's "
        "--slot-save-path): request file names are plain names inside it. None: save and "
        "restore are refused (erase and GET /slots work).")

    # /v1/responses (store: true): kept for previous_response_id and GET /v1/responses/{id}
    responses_max: int = Field(1000, ge=1, description="Most stored responses (/v1/responses); "
                               "the oldest go first.")
    responses_ttl_s: float = Field(3600.0, gt=0, allow_inf_nan=False, description="Seconds a "
                                   "stored response is kept.")
    # models loaded on demand (llama-server's router, Ollama)
    models_dir: Optional[str] = Field(
        None, description="Also serve every *.gguf file of this folder, named by its file name "
        "without .gguf, with the first configured model's settings (or the defaults); models "
        "are then loaded on first use.")
    models_max: int = Field(0, ge=0, description="Most models loaded at once; loading one more "
                            "unloads the least recently used idle one (0: no limit; a limit "
                            "means models are loaded on first use).")
    sleep_idle_seconds: float = Field(0.0, ge=0, allow_inf_nan=False, description="Unload a "
                                      "model after this many seconds without requests (0: "
                                      "never; a value means models are loaded on first use).")

    @field_validator("models_dir")
    @classmethod
    def _check_models_dir(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not os.path.isdir(v):
            raise ValueError(f"models_dir: no folder at {v!r}")
        return v

    @field_validator("slot_save_path")
    @classmethod
    def _check_slot_save_path(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not os.path.isdir(v):
            raise ValueError(f"slot_save_path: no folder at {v!r}")
        return v


class ConfigFileSettings(ServerSettings):
    """A --config file: the server settings and a list of models (JSON, or YAML when PyYAML
    is installed)."""
    models: List[ModelSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_aliases(self):
        seen = set()
        for m in self.models:
            name = m.model_alias or m.model
            if name in seen:
                raise ValueError(f"two models are served as {name!r}; give them model_alias")
            seen.add(name)
        return self


def load_config_file(path: Union[str, os.PathLike]) -> ConfigFileSettings:
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    if str(path).endswith((".yaml", ".yml")):
        import yaml       # optional dependency, only for YAML configs
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    return ConfigFileSettings.model_validate(data)
