"""llama.cpp's RPC backend: a model split across this process's CPU and two rpc-servers.

The two servers are `pyllamacy rpc-server` processes on loopback ports of this machine (no
network namespace: the test runs unprivileged in CI). They are started once for the module
and always stopped (their process groups), whatever the tests do.
"""
from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import pyllamacy
from pyllamacy import Llama, Model, rpc

from serving import free_port, run_cli, start_process, stop_process

PROMPTS = ["The capital of France is", "def fibonacci(n):",
           "Once upon a time, in a small village,"]
N_TOKENS = 32
N_LAYERS_OFFLOADED = 20         # SmolLM2-135M: layers 11-29 and the output on the servers


def _start_rpc_server(tmp_path: Path, port: int) -> subprocess.Popen:
    """`python -m pyllamacy rpc-server` on 127.0.0.1:port, once it answers the handshake."""
    parent = str(Path(pyllamacy.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = parent + os.pathsep + env.get("PYTHONPATH", "")
    endpoint = f"127.0.0.1:{port}"

    def handshake() -> bool:
        try:
            rpc.probe(endpoint, timeout=2)
            return True
        except rpc.RPCError:
            return False

    return start_process([sys.executable, "-m", "pyllamacy", "rpc-server", "--port", str(port),
                          "--threads", "1"], tmp_path / f"rpc-server-{port}.log", env=env,
                         timeout=60, ready=handshake, what="answer the RPC handshake")


@pytest.fixture(scope="module")
def rpc_servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rpc")
    procs = []
    try:
        for _ in range(2):
            port = free_port()
            procs.append((port, _start_rpc_server(tmp, port)))
        yield [f"127.0.0.1:{port}" for port, _ in procs]
    finally:
        for _, proc in procs:
            stop_process(proc)


def _greedy(llm: Llama, prompt: str):
    tokens = llm.tokenize(prompt.encode())
    return list(itertools.islice(llm.generate(tokens, top_k=1, temp=0.0), N_TOKENS))


def _llama(path, **kw):
    # one thread: with more runnable threads than free cores (CI, a shared box) ggml's CPU
    # threads stall each other at every operation's barrier
    return Llama(path, n_ctx=256, n_batch=64, n_threads=1, flash_attn=False, verbose=False,
                 **kw)


# ------------------------------------------------------------------------- the split model


def test_split_across_two_servers_gives_the_local_tokens(smollm2_path, rpc_servers):
    local = _llama(smollm2_path)
    try:
        expected = [_greedy(local, p) for p in PROMPTS]
    finally:
        local.close()
    assert all(len(t) == N_TOKENS for t in expected)

    llm = _llama(smollm2_path, n_gpu_layers=N_LAYERS_OFFLOADED, tensor_split=[1, 1],
                 rpc_servers=",".join(rpc_servers))
    try:
        assert llm._model.rpc_servers == tuple(rpc_servers)
        # the layers really are on the servers: weights on each RPC device and on the host
        mb = llm.memory_breakdown()
        on = {d.description: d for d in mb.devices}
        assert set(on) == set(rpc_servers), mb.table()
        for ep in rpc_servers:
            assert on[ep].model > 1 << 20, mb.table()       # ~10 layers each (by tensor_split)
        assert mb.host.model > 1 << 20, mb.table()          # embeddings, layers 0-10
        got = [_greedy(llm, p) for p in PROMPTS]
        assert got == expected
        # the devices are this model's only: nothing registered for later loads
        assert not [d for d in pyllamacy.devices() if d["backend"] == "RPC"]
        # a second model on the same servers while the first holds their connections
        # (an rpc-server serves one connection at a time; this process shares one)
        with Model(smollm2_path, n_gpu_layers=4, rpc_servers=rpc_servers) as m2:
            assert m2.rpc_servers == tuple(rpc_servers)
    finally:
        llm.close()


def test_rpc_devices_lists_each_servers_device(rpc_servers):
    devs = pyllamacy._llama.rpc_devices(rpc_servers)
    assert [d["description"] for d in devs] == rpc_servers
    for d in devs:
        assert d["name"].startswith("RPC")
        assert 0 < d["memory_free"] <= d["memory_total"]


def test_probe_answers_the_protocol_version(rpc_servers):
    assert rpc.probe(rpc_servers[0]) == pyllamacy._llama.rpc_protocol_version()


# ------------------------------------------------------------------------ servers not usable


def test_unreachable_server_is_an_exception(smollm2_path):
    ep = f"127.0.0.1:{free_port()}"             # nothing listens there
    with pytest.raises(rpc.RPCError, match="not reachable"):
        _llama(smollm2_path, n_gpu_layers=10, rpc_servers=ep)
    with pytest.raises(ConnectionError):
        Model(smollm2_path, rpc_servers=[ep])


def test_unresolvable_host_is_an_exception(smollm2_path):
    with pytest.raises(rpc.RPCError, match="cannot resolve"):
        Model(smollm2_path, rpc_servers="no-such-host.invalid:50052")


def _serve_once(answer: bytes):
    """A TCP server on a loopback port that reads a little, sends `answer` and closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run():
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(64)
                except OSError:
                    pass
                conn.sendall(answer)
        except OSError:
            pass

    threading.Thread(target=run, daemon=True).start()
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


def test_a_server_that_is_not_rpc_is_an_exception(smollm2_path):
    srv, ep = _serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        with pytest.raises(rpc.RPCError, match="not a llama.cpp RPC server"):
            Model(smollm2_path, rpc_servers=ep)
    finally:
        srv.close()


def test_another_protocol_version_is_an_exception(smollm2_path):
    major = pyllamacy._llama.rpc_protocol_version()[0]
    answer = (28).to_bytes(8, "little") + bytes([major + 1, 0, 0, 0]) + bytes(24)
    srv, ep = _serve_once(answer)
    try:
        with pytest.raises(rpc.RPCError, match=f"speaks protocol {major + 1}.0.0"):
            Model(smollm2_path, rpc_servers=ep)
    finally:
        srv.close()


def test_a_silent_server_times_out(smollm2_path, monkeypatch):
    # listens but never accepts: the connection is made (backlog), the handshake never answered,
    # as with an rpc-server busy with another process's connection
    monkeypatch.setattr(rpc, "PROBE_TIMEOUT", 0.5)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(rpc.RPCError, match="no answer to the handshake"):
            Model(smollm2_path, rpc_servers=f"127.0.0.1:{srv.getsockname()[1]}")
        assert time.monotonic() - t0 < 10
    finally:
        srv.close()


# ----------------------------------------------------------------------- malformed endpoints


@pytest.mark.parametrize("servers, match", [
    ("127.0.0.1", "no port"),
    ("127.0.0.1:0", "out of range"),
    ("127.0.0.1:65536", "out of range"),
    ("127.0.0.1:abc", "not a number"),
    ("127.0.0.1:-5", "not a number"),
    (":50052", "host is empty"),
    ("[::1]:50052", "IPv6"),
    ("::1", "IPv6"),
    ("bad host:50052", "whitespace"),
    ("bad_host!:50052", "not a host name"),
    ("127.0.0.1:50052,,127.0.0.1:50053", "entry 1 is empty"),
    ("127.0.0.1:50052,127.0.0.1:50052", "given twice"),
    (",".join(f"127.0.0.1:{p}" for p in range(50000, 50017)), "at most 16"),
])
def test_malformed_endpoint_is_a_value_error(smollm2_path, servers, match):
    with pytest.raises(ValueError, match=match):
        _llama(smollm2_path, n_gpu_layers=10, rpc_servers=servers)
    with pytest.raises(ValueError, match=match):
        Model(smollm2_path, rpc_servers=servers)


def test_rpc_servers_types_and_empty_values(smollm2_path):
    assert rpc.parse_servers(" 127.0.0.1:1 , localhost:65535 ") == ["127.0.0.1:1",
                                                                     "localhost:65535"]
    assert rpc.parse_servers(["10.0.0.2:50052"]) == ["10.0.0.2:50052"]
    assert rpc.parse_servers("") == [] and rpc.parse_servers([]) == []
    with pytest.raises(TypeError, match="entries must be"):
        Model(smollm2_path, rpc_servers=["127.0.0.1:1", 2])
    with pytest.raises(TypeError, match="rpc_servers must be"):
        Model(smollm2_path, rpc_servers=50052)


def test_fitting_does_not_see_rpc_servers(smollm2_path):
    with pytest.raises(ValueError, match="fitting"):
        _llama(smollm2_path, n_gpu_layers="auto", rpc_servers="127.0.0.1:50052")


def test_server_settings_check_rpc_servers(smollm2_path):
    from pydantic import ValidationError

    from pyllamacy.server import ModelSettings

    s = ModelSettings(model=smollm2_path, n_gpu_layers=10,
                      rpc_servers=["127.0.0.1:50052", "127.0.0.1:50053"])
    assert s.rpc_servers == "127.0.0.1:50052,127.0.0.1:50053"
    with pytest.raises(ValidationError, match="out of range"):
        ModelSettings(model=smollm2_path, n_gpu_layers=10, rpc_servers="127.0.0.1:0")
    with pytest.raises(ValidationError, match="n_gpu_layers as a number"):
        ModelSettings(model=smollm2_path, rpc_servers="127.0.0.1:50052")


def test_server_runner_loads_the_model_on_the_servers(smollm2_path, rpc_servers):
    from pyllamacy.server import ModelSettings
    from pyllamacy.server.runner import EngineRunner

    def settings(servers):
        return ModelSettings(model=smollm2_path, n_gpu_layers=10, rpc_servers=servers,
                             n_ctx=256, n_parallel=1, n_threads=1, warmup=False)

    runner = EngineRunner(settings(",".join(rpc_servers)))
    try:
        assert runner.loaded.model.rpc_servers == tuple(rpc_servers)
    finally:
        runner.close()
    with pytest.raises(rpc.RPCError, match="not reachable"):
        EngineRunner(settings(f"127.0.0.1:{free_port()}"))


# ---------------------------------------------------------------------- the rpc-server command


def test_rpc_server_command_binds_loopback_by_default():
    r = run_cli("rpc-server", "--dry-run", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--host 127.0.0.1 --port 50052" in r.stderr
    assert "WARNING" not in r.stderr


def test_rpc_server_command_warns_when_bound_elsewhere():
    r = run_cli("rpc-server", "--host", "0.0.0.0", "--port", "50099", "--threads", "2",
                "--cache", "--dry-run", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "WARNING: the RPC server is bound to 0.0.0.0" in r.stderr
    assert "NO authentication" in r.stderr and "CVE-2024-42478" in r.stderr
    assert "--host 0.0.0.0 --port 50099 --threads 2 --cache" in r.stderr


@pytest.mark.parametrize("args, match", [
    (["--port", "0"], "out of range"),
    (["--port", "70000"], "out of range"),
    (["--port", "http"], "not a number"),
    (["--host", "::"], "IPv6"),
    (["--host", ""], "host is empty"),
    (["--threads", "0"], "--threads"),
    (["--device=-x"], "--device"),
    (["--device", "CPU 0"], "--device"),
])
def test_rpc_server_command_refuses_bad_options(args, match):
    r = run_cli("rpc-server", *args, "--dry-run", timeout=60)
    assert r.returncode == 2, r.stderr
    assert match in r.stderr and "pyllamacy: error:" in r.stderr
