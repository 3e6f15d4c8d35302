"""pyllamacy's OpenAI server as Ray Serve replicas: one server app (create_app) per replica,
behind Ray's HTTP proxy, with a fixed number of replicas or autoscaling on ongoing requests.

    from pyllamacy.serve_ray import build_app, run
    from pyllamacy.server import ModelSettings, ServerSettings

    app = build_app([ModelSettings(model="/models/m.gguf", n_parallel=4)], ServerSettings(),
                    num_replicas=2, ray_actor_options={"num_cpus": 4})
    run(app, host="0.0.0.0", port=8000)          # or: serve.run(app) on a cluster of your own

or from the command line: ``pyllamacy serve-ray --config models.json --replicas 2``; or with
Ray's own ``serve run`` / ``serve deploy`` and the application builder ``app_builder``
(docs/SCALE.md). Every replica loads the models itself (the files must be at the same path on
every node) and answers the same routes as ``pyllamacy serve``; each response says which
replica answered in the ``x-pyllamacy-replica`` header (Ray's replica id) and
``x-pyllamacy-replica-pid``.

Needs the ``ray`` extra: ``pip install 'pyllamacy[ray]'``; ray is imported only when used.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

if TYPE_CHECKING:      # imported where used: `pyllamacy --help` must work without the extras
    from .server.settings import ModelSettings, ServerSettings

__all__ = ["DEPLOYMENT_NAME", "RayNotInstalledError", "ReplicaApp", "build_deployment",
           "build_app", "app_builder", "run", "REPLICA_HEADER", "REPLICA_PID_HEADER"]

DEPLOYMENT_NAME = "pyllamacy"
APP_NAME = "pyllamacy"
REPLICA_HEADER = "x-pyllamacy-replica"
REPLICA_PID_HEADER = "x-pyllamacy-replica-pid"

# ModelSettings / ServerSettings fields that name files or folders: made absolute where the
# application is built, since a replica's working directory is not the caller's
_MODEL_PATH_FIELDS = ("model", "lora_path", "clip_model_path", "draft_model")
_SERVER_PATH_FIELDS = ("models_dir", "slot_save_path")


class RayNotInstalledError(ImportError):
    """Ray Serve is not installed (the ``ray`` extra)."""


def _serve():
    """ray.serve, imported on first use."""
    try:
        from ray import serve
    except ImportError as e:
        raise RayNotInstalledError(
            f"Ray Serve is not installed ({e}): pip install 'pyllamacy[ray]'") from e
    return serve


def _absolute(path: Optional[str]) -> Optional[str]:
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def _model_dict(m: ModelSettings) -> Dict[str, Any]:
    d = m.model_dump()
    for name in _MODEL_PATH_FIELDS:
        if name == "draft_model" and d.get(name) == "prompt-lookup-decoding":
            continue
        d[name] = _absolute(d.get(name))
    if d.get("lora_paths"):
        d["lora_paths"] = [_absolute(p) for p in d["lora_paths"]]
    return d


def _server_dict(s: ServerSettings) -> Dict[str, Any]:
    if s.ssl_keyfile or s.ssl_certfile:
        raise ValueError("ssl_keyfile / ssl_certfile: Ray Serve's HTTP proxy serves the "
                         "replicas, not uvicorn; terminate TLS in front of it (the settings "
                         "have no effect here)")
    d = s.model_dump()
    for name in _SERVER_PATH_FIELDS:
        d[name] = _absolute(d.get(name))
    return d


class ReplicaApp:
    """The ASGI app of one replica: pyllamacy's server app (create_app), built inside the
    replica's process when Ray Serve runs its lifespan startup (so that the models load
    there, not where the application is defined), with two response headers that name the
    replica. Holds only the settings as plain data, so Ray can ship it to every replica."""

    def __init__(self, models: Sequence[ModelSettings], server: ServerSettings):
        from .server.settings import ConfigFileSettings
        models = list(models)
        if not models and not server.models_dir:
            raise ValueError("build_app needs at least one ModelSettings (or a models_dir)")
        ConfigFileSettings(models=models)          # unique aliases, checked here already
        self.models = [_model_dict(m) for m in models]
        self.server = _server_dict(server)
        self._app = None
        self._headers: List = []

    def __getstate__(self):
        return {"models": self.models, "server": self.server}

    def __setstate__(self, state):
        self.models = state["models"]
        self.server = state["server"]
        self._app = None
        self._headers = []

    def _build(self):
        from .server.app import create_app
        from .server.settings import ModelSettings, ServerSettings
        self._app = create_app([ModelSettings(**m) for m in self.models],
                               ServerSettings(**self.server))
        self._headers = [(REPLICA_HEADER.encode(), _replica_id().encode()),
                         (REPLICA_PID_HEADER.encode(), str(os.getpid()).encode())]
        return self._app

    async def __call__(self, scope, receive, send):
        app = self._build() if self._app is None else self._app
        if scope["type"] != "http":
            return await app(scope, receive, send)
        extra = self._headers

        async def send_with_replica(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", ())) + extra
            await send(message)
        return await app(scope, receive, send_with_replica)


def _replica_id() -> str:
    """Ray Serve's id of the replica this process runs (its pid outside a replica)."""
    try:
        ctx = _serve().get_replica_context()
    except Exception:          # not inside a replica (RayServeException)
        return f"pid-{os.getpid()}"
    rid = getattr(ctx, "replica_id", None)
    return str(getattr(rid, "unique_id", None) or rid or getattr(ctx, "replica_tag", ""))


def _check_options(num_replicas: Optional[int], autoscaling_config: Optional[Dict[str, Any]],
                   ray_actor_options: Optional[Dict[str, Any]],
                   max_ongoing_requests: Optional[int]) -> None:
    if autoscaling_config is not None and num_replicas is not None:
        raise ValueError("give num_replicas or autoscaling_config, not both (the autoscaler "
                         "sets the number of replicas)")
    if autoscaling_config is None:
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) \
                or num_replicas < 1:
            raise ValueError(f"num_replicas must be an integer >= 1, got {num_replicas!r}")
    elif not isinstance(autoscaling_config, dict):
        raise TypeError(f"autoscaling_config must be a dict (Ray Serve's AutoscalingConfig "
                        f"fields), got {type(autoscaling_config).__name__}")
    if ray_actor_options is not None and not isinstance(ray_actor_options, dict):
        raise TypeError(f"ray_actor_options must be a dict (num_cpus, num_gpus, ...), got "
                        f"{type(ray_actor_options).__name__}")
    for key in ("num_cpus", "num_gpus"):
        v = (ray_actor_options or {}).get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ValueError(f"ray_actor_options[{key!r}] must be a number >= 0, got {v!r}")
    if max_ongoing_requests is not None and (not isinstance(max_ongoing_requests, int)
                                             or max_ongoing_requests < 1):
        raise ValueError(f"max_ongoing_requests must be an integer >= 1, got "
                         f"{max_ongoing_requests!r}")


def _actor_options(ray_actor_options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The replicas' actor options with GRPC_ENABLE_FORK_SUPPORT=0 in their environment
    (unless given): the chat-template sandbox forks worker processes, and with gRPC's fork
    support on (Ray links gRPC in every worker) gRPC restarts its poller threads in the forked
    child, which then aborts once the sandbox closes the descriptors it inherited: every chat
    request of that replica failed."""
    options = dict(ray_actor_options or {})
    runtime_env = dict(options.get("runtime_env") or {})
    env_vars = dict(runtime_env.get("env_vars") or {})
    env_vars.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    runtime_env["env_vars"] = env_vars
    options["runtime_env"] = runtime_env
    return options


def build_deployment(models: Sequence[ModelSettings],
                     server_settings: Optional[ServerSettings] = None, *,
                     num_replicas: Optional[int] = None,
                     autoscaling_config: Optional[Dict[str, Any]] = None,
                     ray_actor_options: Optional[Dict[str, Any]] = None,
                     max_ongoing_requests: Optional[int] = None,
                     name: str = DEPLOYMENT_NAME):
    """The Ray Serve Deployment (not yet bound) whose replicas each serve `models` with
    create_app: num_replicas of them (default 1), or as many as `autoscaling_config` (Ray
    Serve's AutoscalingConfig as a dict: min_replicas, max_replicas, target_ongoing_requests,
    ...) asks for; not both.
    `max_ongoing_requests` (the most requests Ray sends one replica at once) defaults to
    twice the slots of the replica's models, so the server's own queue keeps every slot
    busy while Ray holds the rest."""
    from .server.settings import ServerSettings
    serve = _serve()
    server_settings = server_settings or ServerSettings()
    if num_replicas is None and autoscaling_config is None:
        num_replicas = 1
    _check_options(num_replicas, autoscaling_config, ray_actor_options, max_ongoing_requests)
    asgi = ReplicaApp(models, server_settings)
    if max_ongoing_requests is None:
        max_ongoing_requests = 2 * max(1, sum(m.n_parallel for m in models))

    @serve.ingress(asgi)
    class PyllamacyReplica:
        """One replica: pyllamacy's OpenAI server (every route) for the configured models."""

    options: Dict[str, Any] = {"name": name, "max_ongoing_requests": max_ongoing_requests,
                               "ray_actor_options": _actor_options(ray_actor_options)}
    if autoscaling_config is not None:
        options["autoscaling_config"] = dict(autoscaling_config)
    else:
        options["num_replicas"] = num_replicas
    return serve.deployment(PyllamacyReplica, **options)


def build_app(models: Sequence[ModelSettings],
              server_settings: Optional[ServerSettings] = None, *,
              num_replicas: Optional[int] = None,
              autoscaling_config: Optional[Dict[str, Any]] = None,
              ray_actor_options: Optional[Dict[str, Any]] = None,
              max_ongoing_requests: Optional[int] = None):
    """The bound Ray Serve application (serve.run(app) deploys it); see build_deployment."""
    return build_deployment(models, server_settings, num_replicas=num_replicas,
                            autoscaling_config=autoscaling_config,
                            ray_actor_options=ray_actor_options,
                            max_ongoing_requests=max_ongoing_requests).bind()


def _number(args: Dict[str, Any], key: str, kind):
    v = args.get(key)
    if v is None:
        return None
    try:
        return kind(v)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a {kind.__name__}, got {v!r}") from None


def app_builder(args: Dict[str, Any]):
    """Ray Serve's application builder for ``serve run`` / ``serve deploy``:
    ``serve run pyllamacy.serve_ray:app_builder config_file=models.json num_replicas=2``.
    Arguments: config_file (the server's config file: server settings and "models"),
    num_replicas, num_cpus, num_gpus, max_ongoing_requests; a Serve config file's
    ``deployments`` section (name "pyllamacy") may override the deployment's options."""
    from .server.settings import ServerSettings, load_config_file
    args = dict(args or {})
    known = {"config_file", "num_replicas", "num_cpus", "num_gpus", "max_ongoing_requests"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; app_builder takes {sorted(known)}")
    if not args.get("config_file"):
        raise ValueError("app_builder needs config_file=PATH (the server's config file)")
    cfg = load_config_file(args["config_file"])
    actor: Dict[str, Any] = {}
    for key in ("num_cpus", "num_gpus"):
        v = _number(args, key, float)
        if v is not None:
            actor[key] = v
    return build_app(list(cfg.models), ServerSettings(**cfg.model_dump(exclude={"models"})),
                     num_replicas=_number(args, "num_replicas", int) or 1,
                     ray_actor_options=actor,
                     max_ongoing_requests=_number(args, "max_ongoing_requests", int))


def run(app, *, host: str = "127.0.0.1", port: int = 8000, address: Optional[str] = None,
        ray_init_options: Optional[Dict[str, Any]] = None, blocking: bool = True,
        name: str = APP_NAME):
    """Deploy `app` (build_app's) on Ray and serve it at http://host:port/v1 through Ray
    Serve's HTTP proxy. Starts a local Ray instance unless Ray is already initialized or
    `address` names a cluster ("auto": the one on this machine). blocking: wait until
    Ctrl-C, then shut Serve down; else return the deployment handle at once (once every
    replica has loaded its models)."""
    import ray
    serve = _serve()
    if not ray.is_initialized():
        ray.init(address=address, **(ray_init_options or {}))
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(app, name=name, route_prefix="/", blocking=False)
    if not blocking:
        return handle
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return handle


# ---- the command line: pyllamacy serve-ray ------------------------------------------------


def add_arguments(parser) -> None:
    """The options of ``pyllamacy serve-ray`` (cli.py's subcommand)."""
    parser.add_argument("--config", "--config_file", "--config-file", dest="config",
                        required=True, help="the server's config file (JSON, or YAML): server "
                        "settings and a \"models\" list, as `pyllamacy serve --config`")
    parser.add_argument("--replicas", type=int, default=None, metavar="N",
                        help="replicas, each with every model (default 1)")
    parser.add_argument("--min-replicas", type=int, default=None, metavar="N",
                        help="autoscale between --min-replicas and --max-replicas on ongoing "
                             "requests (instead of --replicas)")
    parser.add_argument("--max-replicas", type=int, default=None, metavar="N")
    parser.add_argument("--target-ongoing-requests", type=float, default=None, metavar="N",
                        help="autoscaling target of ongoing requests per replica "
                             "(default: the models' slots)")
    parser.add_argument("--num-cpus", type=float, default=None,
                        help="CPUs Ray reserves for each replica (default 1)")
    parser.add_argument("--num-gpus", type=float, default=None,
                        help="GPUs Ray reserves for each replica (default 0)")
    parser.add_argument("--max-ongoing-requests", type=int, default=None, metavar="N",
                        help="most requests Ray sends one replica at once "
                             "(default: twice the models' slots)")
    parser.add_argument("--host", default=None,
                        help="address of Ray's HTTP proxy (default: the config's host)")
    parser.add_argument("--port", type=int, default=None,
                        help="port of Ray's HTTP proxy (default: the config's port)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (\"auto\": the one on this machine; "
                             "default: start a local one)")


def _autoscaling(args, models: Sequence[ModelSettings]) -> Optional[Dict[str, Any]]:
    if args.min_replicas is None and args.max_replicas is None:
        if args.target_ongoing_requests is not None:
            raise ValueError("--target-ongoing-requests needs --max-replicas (autoscaling)")
        return None
    lo = 1 if args.min_replicas is None else args.min_replicas
    hi = args.max_replicas if args.max_replicas is not None else max(lo, 1)
    if lo < 0 or hi < 1 or lo > hi:
        raise ValueError(f"--min-replicas {lo} / --max-replicas {hi}: need "
                         f"0 <= min <= max and max >= 1")
    target = args.target_ongoing_requests
    if target is None:
        target = max(1, sum(m.n_parallel for m in models))
    if not target > 0:
        raise ValueError(f"--target-ongoing-requests must be > 0, got {target}")
    return {"min_replicas": lo, "max_replicas": hi, "target_ongoing_requests": target}


def app_from_args(args):
    """(application, host, port) for ``pyllamacy serve-ray``'s parsed options. Raises
    FileNotFoundError / ValueError for bad input, RayNotInstalledError without ray."""
    from .server.settings import ServerSettings, load_config_file
    _serve()
    cfg = load_config_file(args.config)
    models = list(cfg.models)
    if not models:
        raise ValueError(f"{args.config}: no models (give a \"models\" list)")
    if args.address is None:                  # a local cluster: the files must be here
        for m in models:
            if not os.path.isfile(m.model):
                raise FileNotFoundError(2, "no model file", m.model)
    if args.replicas is not None and args.replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {args.replicas}")
    actor: Dict[str, Any] = {"num_cpus": 1.0 if args.num_cpus is None else args.num_cpus}
    if args.num_gpus is not None:
        actor["num_gpus"] = args.num_gpus
    server = ServerSettings(**cfg.model_dump(exclude={"models"}))
    autoscaling = _autoscaling(args, models)
    if autoscaling and args.replicas is not None:
        raise ValueError("give --replicas or --min-replicas/--max-replicas (autoscaling), "
                         "not both")
    app = build_app(models, server, num_replicas=None if autoscaling else (args.replicas or 1),
                    autoscaling_config=autoscaling, ray_actor_options=actor,
                    max_ongoing_requests=args.max_ongoing_requests)
    host = server.host if args.host is None else args.host
    port = server.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {port}")
    return app, host, port


def main(args) -> int:
    """``pyllamacy serve-ray``: deploy and serve until Ctrl-C. Without Ray, that is said first
    (RayNotInstalledError), before the options and models are checked."""
    _serve()
    app, host, port = app_from_args(args)
    print(f"pyllamacy serve-ray: starting Ray Serve at http://{host}:{port}/v1", flush=True)
    run(app, host=host, port=port, address=args.address, blocking=True)
    return 0
