"""python -m pyllamacy.server: llama-cpp-python's server command line.

    python -m pyllamacy.server --model m.gguf --n_parallel 8 --api_key secret
    python -m pyllamacy.server --config_file models.json

Every ModelSettings / ServerSettings field is an option (--n_ctx or --n-ctx); with
--config_file the file holds the server settings and a "models" list, and options given on the
command line override its server settings.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from typing import List, Optional

from .._llama import LlamaError
from ..defaults import N_CTX_SLOT, N_PARALLEL
from .logs import setup_logging, uvicorn_log_config
from .settings import ConfigFileSettings, ModelSettings, ServerSettings, load_config_file


def _scalar(annotation):
    """The argparse type of a pydantic field annotation (Optional[int] -> int ...); a list
    field gives ("list", item type)."""
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else str
    if typing.get_origin(annotation) in (list, List):
        item = (typing.get_args(annotation) or (str,))[0]
        return ("list", item if item in (int, float, str) else str)
    if annotation is bool:
        return bool
    if annotation in (int, float, str):
        return annotation
    return str


def _bool(v: str) -> bool:
    v = v.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def _add_fields(parser, model_cls, group_name):
    group = parser.add_argument_group(group_name)
    for name, field in model_cls.model_fields.items():
        typ = _scalar(field.annotation)
        if typ is None or name == "models":
            continue
        flags = [f"--{name}"]
        if "_" in name:
            flags.append(f"--{name.replace('_', '-')}")
        flags += _SHORT.get(name, [])
        help_ = _help(name, field)
        if isinstance(typ, tuple):
            group.add_argument(*flags, dest=name, type=typ[1], nargs="+",
                               default=argparse.SUPPRESS, help=help_)
            continue
        group.add_argument(*flags, dest=name, type=_bool if typ is bool else typ,
                           default=argparse.SUPPRESS, help=help_)
    return group


# llama-server's (and every tutorial's) short options, where they mean the same thing here
_SHORT = {"model": ["-m"], "model_alias": ["-a", "--alias"], "n_gpu_layers": ["-ngl"],
          "n_threads": ["-t"], "n_threads_batch": ["-tb"], "n_batch": ["-b"],
          "n_ubatch": ["-ub"], "n_parallel": ["-np", "--parallel", "--slots"],
          "host": [], "port": []}

_CTX_HELP = ("Total context in tokens, split evenly across the slots, as llama-server's -c: "
             "each slot gets N / n_parallel tokens (-c 8192 -np 4: 2048 per slot, the same as "
             "--n_ctx 2048). 0: the model's training context for each slot. Give -c or --n_ctx, "
             "not both. (default: n_ctx x n_parallel = {default})")


def _help(name: str, field) -> str:
    """The field's description (or its name in words) and its default."""
    text = field.description or name.replace("_", " ").capitalize() + "."
    if field.is_required():
        return text + " (required)"
    default = field.get_default()
    if default is None:
        return text + " (default: none)"
    if isinstance(default, bool):
        default = "true" if default else "false"
    return f"{text} (default: {default})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pyllamacy.server",
                                description="OpenAI-compatible server with continuous batching.")
    p.add_argument("--config_file", "--config-file", "--config", dest="config_file",
                   help="JSON (or YAML) file with server settings and a list of models")
    model = _add_fields(p, ModelSettings, "model")
    _add_fields(p, ServerSettings, "server")
    model.add_argument("-c", "--ctx-size", "--ctx_size", dest="ctx_size", type=int,
                   default=argparse.SUPPRESS, metavar="N",
                   help=_CTX_HELP.format(default=N_CTX_SLOT * N_PARALLEL))
    return p


def _split_ctx_size(model_kw: dict) -> None:
    """-c N (llama-server's total context) -> n_ctx, the context of each slot."""
    if "ctx_size" not in model_kw:
        return
    total = model_kw.pop("ctx_size")
    if "n_ctx" in model_kw:
        raise SystemExit("give -c/--ctx-size (the total context, split across the slots) or "
                         "--n_ctx (the context of each slot), not both")
    slots = model_kw.get("n_parallel", N_PARALLEL)
    if total < 0:
        raise SystemExit(f"-c/--ctx-size must be >= 0, not {total}")
    if total and total < slots:
        raise SystemExit(f"-c {total} is less than one token for each of the {slots} slots")
    model_kw["n_ctx"] = total // slots


def settings_from_args(argv: Optional[List[str]] = None):
    args = vars(build_parser().parse_args(argv))
    config = args.pop("config_file", None)
    server_keys = set(ServerSettings.model_fields)
    server_kw = {k: v for k, v in args.items() if k in server_keys}
    model_kw = {k: v for k, v in args.items() if k not in server_keys}
    _split_ctx_size(model_kw)
    if config:
        cfg = load_config_file(config)
        data = cfg.model_dump(exclude={"models"})
        data.update(server_kw)
        server = ServerSettings.model_validate(data)
        models = list(cfg.models)
        if model_kw.get("model"):
            models.append(ModelSettings(**model_kw))
    else:
        if not model_kw.get("model") and not server_kw.get("models_dir"):
            raise SystemExit("give --model PATH, --models_dir DIR or --config_file FILE")
        server = ServerSettings(**server_kw)
        models = [ModelSettings(**model_kw)] if model_kw.get("model") else []
    if not models and not server.models_dir:
        raise SystemExit(f"{config}: no models")
    ConfigFileSettings(models=models)       # unique aliases
    return server, models


def _log_config(fmt: str) -> dict:
    config = uvicorn_log_config(fmt)
    return {} if config is None else {"log_config": config}


def main(argv: Optional[List[str]] = None) -> int:
    try:
        import uvicorn
    except ImportError:
        print("the server needs its extra: pip install 'pyllamacy[server]'", file=sys.stderr)
        return 2
    from .app import create_app
    from .transport import uvicorn_options
    server, models = settings_from_args(argv)
    setup_logging(server.log_level, server.log_format)
    for m in models:
        if not os.path.isfile(m.model):
            logging.getLogger("pyllamacy.server").error(
                "python -m pyllamacy.server: no model file at %r", m.model)
            return 2
    app = create_app(model_settings=models, server_settings=server)
    try:
        # before uvicorn: a model that cannot load is one line and exit status 1, not a
        # lifespan traceback
        app.state.server.start()
    except (MemoryError, LlamaError, ValueError, OSError) as e:
        logging.getLogger("pyllamacy.server").error(
            "python -m pyllamacy.server: cannot load the models: %s: %s", type(e).__name__, e)
        return 1
    uvicorn.run(app, host=server.host, port=server.port, ssl_keyfile=server.ssl_keyfile,
                ssl_certfile=server.ssl_certfile, log_level="warning",
                **_log_config(server.log_format),
                **uvicorn_options(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
