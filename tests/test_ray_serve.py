"""pyllamacy.serve_ray: the server as Ray Serve replicas on a local Ray cluster (2 CPUs).

Two replicas of the test model (1 thread each) behind Ray's HTTP proxy take 32 concurrent chat
requests from the official openai client: every one answers 200, both replicas answer some
(told apart by the x-pyllamacy-replica header the deployment adds), and a replica killed with
SIGKILL while requests run is replaced by a new process that then answers too. Needs the
`ray` extra (in the `test` extra): without ray the module skips (a failure under CI=true)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.optional_deps

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import pyllamacy  # noqa: E402
from pyllamacy import serve_ray  # noqa: E402
from pyllamacy.server import ModelSettings, ServerSettings  # noqa: E402

from serving import free_port, run_cli  # noqa: E402

SLOTS = 2


def _model(path: str, alias: str = "smol") -> ModelSettings:
    return ModelSettings(model=path, model_alias=alias, n_ctx=256, n_batch=64, n_threads=1,
                         n_threads_batch=1, n_parallel=SLOTS, flash_attn=False, verbose=False)


# -- a local cluster with two replicas ----------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(smollm2_path, tmp_path_factory):
    """Ray (2 CPUs, no dashboard, a small object store) and the test model as 2 replicas of
    1 CPU each behind Ray's HTTP proxy on a free port; Serve and Ray are shut down after the
    module's tests. The workers import the same pyllamacy as this process: Ray's workers
    put the driver's working folder first on sys.path, and from a source checkout its
    uncompiled pyllamacy/ would shadow the installed one, so Ray starts from an empty one."""
    parent = str(Path(pyllamacy.__file__).resolve().parent.parent)
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray-cwd"))
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": parent}})
    try:
        port = free_port()
        app = serve_ray.build_app([_model(smollm2_path)], ServerSettings(), num_replicas=2,
                                  ray_actor_options={"num_cpus": 1})
        serve_ray.run(app, host="127.0.0.1", port=port, blocking=False)
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            os.chdir(cwd)


def _client(url: str):
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)


def _chat(client, i: int, max_tokens: int = 8):
    """One chat request; (status, replica id, replica pid, reply text)."""
    raw = client.chat.completions.with_raw_response.create(
        model="smol", max_tokens=max_tokens, temperature=0,
        messages=[{"role": "user", "content": f"Say a word about the number {i}."}])
    reply = raw.parse()
    return (raw.http_response.status_code, raw.headers.get(serve_ray.REPLICA_HEADER),
            int(raw.headers.get(serve_ray.REPLICA_PID_HEADER)),
            reply.choices[0].message.content)


def _burst(url: str, n: int, max_tokens: int = 8):
    """n chat requests at once; each one's result, or the exception it raised."""
    client = _client(url)

    def one(i):
        try:
            return _chat(client, i, max_tokens)
        except Exception as e:          # noqa: BLE001 - counted by the caller
            return e
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _replica_pids(url: str, want: int, timeout: float = 120.0) -> dict:
    """{replica id: pid} of the replicas answering, once `want` distinct ones have answered
    within the last bursts (raises if they do not within `timeout`)."""
    t0 = time.monotonic()
    while True:
        seen = {}
        for r in _burst(url, 8):
            if isinstance(r, tuple) and r[0] == 200:
                seen[r[1]] = r[2]
        if len(seen) >= want:
            return seen
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"only replicas {seen} answered within {timeout:g} s")
        time.sleep(1)


def test_32_concurrent_chats_over_both_replicas(replicas):
    results = _burst(replicas, 32)
    errors = [r for r in results if not isinstance(r, tuple)]
    assert not errors, f"{len(errors)} of 32 requests failed, first: {errors[0]!r}"
    assert [r[0] for r in results] == [200] * 32
    assert all(r[3] for r in results), "an empty reply"
    by_replica = {}
    for _, rid, pid, _ in results:
        by_replica.setdefault(rid, set()).add(pid)
    assert len(by_replica) == 2, f"32 requests went to {sorted(by_replica)} only"
    # two replicas are two processes, neither of them this one
    pids = [next(iter(p)) for p in by_replica.values()]
    assert all(len(p) == 1 for p in by_replica.values())
    assert len(set(pids)) == 2 and os.getpid() not in pids


def test_same_routes_as_the_plain_server(replicas):
    h = httpx.get(replicas + "/health", timeout=30)
    assert h.status_code == 200
    models = _client(replicas).models.list()
    assert [m.id for m in models.data] == ["smol"]
    # a bad request is the server's own 4xx through the proxy, not a proxy error
    bad = httpx.post(replicas + "/v1/chat/completions", timeout=30,
                     json={"model": "smol", "messages": "not a list"})
    assert bad.status_code in (400, 422), bad.text
    assert "messages" in bad.json()["error"]["message"]
    assert bad.headers.get(serve_ray.REPLICA_HEADER)
    # streaming passes through the proxy chunk by chunk
    stream = _client(replicas).chat.completions.create(
        model="smol", max_tokens=6, temperature=0, stream=True,
        messages=[{"role": "user", "content": "Hello"}])
    chunks = [c for c in stream]
    assert len(chunks) >= 2 and chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_killed_replica_is_replaced(replicas):
    before = _replica_pids(replicas, 2)
    victim_id, victim_pid = sorted(before.items())[0]
    survivor_pid = before[sorted(before)[1]]
    # kill one replica while a burst of longer requests is running on both
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_burst, replicas, 8, 48)
        time.sleep(1.0)
        os.kill(victim_pid, signal.SIGKILL)
        during = running.result(timeout=300)
    answered = [r for r in during if isinstance(r, tuple)]
    assert all(r[0] == 200 for r in answered)
    assert any(r[2] == survivor_pid for r in answered), during   # the other replica went on
    # Ray Serve starts a new replica (a new process) in its place; then every request works
    after = _replica_pids(replicas, 2, timeout=150)
    assert victim_id not in after and victim_pid not in after.values(), after
    assert survivor_pid in after.values()
    results = _burst(replicas, 16)
    errors = [r for r in results if not isinstance(r, tuple)]
    assert not errors, f"{len(errors)} of 16 requests failed after the replacement: {errors[0]!r}"
    assert {r[2] for r in results} <= set(after.values())
    assert len({r[2] for r in results}) == 2


# -- options and bad input (no cluster needed) --------------------------------------------------


def test_deployment_options(smollm2_path):
    d = serve_ray.build_deployment([_model(smollm2_path)], num_replicas=3,
                                   ray_actor_options={"num_cpus": 2, "num_gpus": 0.5})
    assert d.name == serve_ray.DEPLOYMENT_NAME
    assert d.num_replicas == 3
    assert d.ray_actor_options["num_cpus"] == 2 and d.ray_actor_options["num_gpus"] == 0.5
    # the chat-template sandbox forks: gRPC's fork handlers must be off in the replicas
    assert d.ray_actor_options["runtime_env"]["env_vars"]["GRPC_ENABLE_FORK_SUPPORT"] == "0"
    assert d.max_ongoing_requests == 2 * SLOTS
    auto = serve_ray.build_deployment(
        [_model(smollm2_path)], autoscaling_config={"min_replicas": 1, "max_replicas": 4,
                                                    "target_ongoing_requests": 2})
    assert auto.name == serve_ray.DEPLOYMENT_NAME
    with pytest.raises(ValueError, match="num_replicas or autoscaling_config, not both"):
        serve_ray.build_deployment([_model(smollm2_path)], num_replicas=2,
                                   autoscaling_config={"max_replicas": 4})
    assert isinstance(serve_ray.build_app([_model(smollm2_path)]), serve.Application)


@pytest.mark.parametrize("kw, match", [
    ({"num_replicas": 0}, "num_replicas must be an integer >= 1"),
    ({"num_replicas": "2"}, "num_replicas must be an integer >= 1"),
    ({"ray_actor_options": {"num_cpus": -1}}, r"ray_actor_options\['num_cpus'\]"),
    ({"max_ongoing_requests": 0}, "max_ongoing_requests must be"),
])
def test_bad_options(smollm2_path, kw, match):
    with pytest.raises(ValueError, match=match):
        serve_ray.build_app([_model(smollm2_path)], **kw)


def test_bad_settings(smollm2_path, tmp_path):
    with pytest.raises(ValueError, match="at least one ModelSettings"):
        serve_ray.build_app([])
    with pytest.raises(ValueError, match="two models are served as 'smol'"):
        serve_ray.build_app([_model(smollm2_path), _model(smollm2_path)])
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(ValueError, match="ssl_keyfile"):
        serve_ray.build_app([_model(smollm2_path)],
                            ServerSettings(ssl_keyfile=str(key), ssl_certfile=str(key)))


def test_relative_model_paths_are_made_absolute(smollm2_path, monkeypatch):
    """A replica's working directory is not the caller's: paths are resolved where the app is
    built."""
    folder, name = os.path.split(smollm2_path)
    monkeypatch.chdir(folder)
    asgi = serve_ray.ReplicaApp([_model(name)], ServerSettings())
    assert asgi.models[0]["model"] == os.path.join(os.getcwd(), name)


def test_app_builder_for_serve_run(smollm2_path, tmp_path):
    cfg = tmp_path / "models.json"
    cfg.write_text(json.dumps({"models": [_model(smollm2_path).model_dump(exclude_unset=True)]}))
    app = serve_ray.app_builder({"config_file": str(cfg), "num_replicas": "2",
                                 "num_cpus": "1"})
    assert isinstance(app, serve.Application)
    with pytest.raises(ValueError, match="unknown argument"):
        serve_ray.app_builder({"config_file": str(cfg), "replicas": "2"})
    with pytest.raises(ValueError, match="num_replicas must be a int"):
        serve_ray.app_builder({"config_file": str(cfg), "num_replicas": "two"})
    with pytest.raises(ValueError, match="needs config_file"):
        serve_ray.app_builder({})


def _cli_args(config, **kw):
    p = argparse.ArgumentParser()
    serve_ray.add_arguments(p)
    argv = ["--config", str(config)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return p.parse_args(argv)


def test_cli_options_build_the_app(smollm2_path, tmp_path):
    cfg = tmp_path / "models.json"
    cfg.write_text(json.dumps({"port": 8123,
                               "models": [_model(smollm2_path).model_dump(exclude_unset=True)]}))
    app, host, port = serve_ray.app_from_args(_cli_args(cfg, replicas=2))
    assert isinstance(app, serve.Application) and (host, port) == ("127.0.0.1", 8123)
    _, host, port = serve_ray.app_from_args(_cli_args(cfg, host="0.0.0.0", port=9000,
                                                      min_replicas=1, max_replicas=3))
    assert (host, port) == ("0.0.0.0", 9000)
    with pytest.raises(ValueError, match="--replicas must be >= 1"):
        serve_ray.app_from_args(_cli_args(cfg, replicas=0))
    with pytest.raises(ValueError, match="--min-replicas 3 / --max-replicas 2"):
        serve_ray.app_from_args(_cli_args(cfg, min_replicas=3, max_replicas=2))
    with pytest.raises(ValueError, match="--replicas or --min-replicas/--max-replicas"):
        serve_ray.app_from_args(_cli_args(cfg, replicas=2, max_replicas=3))
    with pytest.raises(ValueError, match="--target-ongoing-requests needs --max-replicas"):
        serve_ray.app_from_args(_cli_args(cfg, target_ongoing_requests=2))


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    r = run_cli("serve-ray", "--config", str(tmp_path / "none.json"))
    assert r.returncode == 2 and "none.json: no such file" in r.stderr, r.stderr
    cfg = tmp_path / "models.json"
    cfg.write_text(json.dumps({"models": [{"model": str(tmp_path / "missing.gguf")}]}))
    r = run_cli("serve-ray", "--config", str(cfg))
    assert r.returncode == 2 and "missing.gguf: no such file" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_without_ray_says_what_to_install(tmp_path):
    """An installed-but-broken or absent ray: a stand-in `ray` package that fails to import
    first on the path."""
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray (stand-in)')\n")
    cfg = tmp_path / "models.json"
    cfg.write_text(json.dumps({"models": [{"model": "m.gguf"}]}))
    import pyllamacy as p
    parent = str(Path(p.__file__).resolve().parent.parent)
    # the stand-in goes first on sys.path from inside the process: `python -m` would put the
    # working folder (site-packages itself, for an installed pyllamacy) before PYTHONPATH
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pyllamacy.cli import main; "
            "sys.exit(main(['serve-ray', '--config', sys.argv[2]]))")
    r = subprocess.run([sys.executable, "-c", code, str(fake.parent), str(cfg)],
                       capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                       env=dict(os.environ, PYTHONPATH=parent))
    assert r.returncode == 2, r.stderr
    assert "pip install 'pyllamacy[ray]'" in r.stderr
