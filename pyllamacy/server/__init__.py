"""pyllamacy's OpenAI-compatible server: `python -m pyllamacy.server --model m.gguf`.

Many clients at once: each model's requests are decoded together by a continuous-batching
Engine (one llama_decode per step for every active slot, without the GIL), with prompt-prefix
reuse, cancellation of requests whose client went away, and 429 + Retry-After when every slot
and the wait queue are taken. Needs the `server` extra (fastapi, uvicorn).
"""
from .app import create_app
from .settings import ConfigFileSettings, ModelSettings, ServerSettings, load_config_file

__all__ = ["create_app", "ModelSettings", "ServerSettings", "ConfigFileSettings",
           "load_config_file"]
