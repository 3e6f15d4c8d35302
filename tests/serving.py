"""pyllamacy's server in-process on loopback, for the server tests: one place that starts it
(with the uvicorn options `python -m pyllamacy.server` uses), waits for it and stops it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from typing import Optional
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_test_server(model_path: str, **server_kw) -> "LocalServer":
    """The test model served as "smol" the way the client-library tests use it: 2 slots,
    1,024 tokens each, flash attention off (CPU flash attention's results depend a little on
    where a request's cells lie in the KV cache, i.e. on earlier requests: off, greedy replies
    compare exactly)."""
    from pyllamacy.server import ModelSettings
    return LocalServer([ModelSettings(model=model_path, model_alias="smol", n_ctx=1024,
                                      n_batch=128, n_threads=2, n_parallel=2,
                                      flash_attn=False, verbose=False)], **server_kw)


class LocalServer:
    """create_app(models, ServerSettings(port=..., **server_kw)) served by uvicorn in a thread;
    `url` once it answers. stop() ends it."""

    def __init__(self, models, **server_kw):
        import uvicorn

        from pyllamacy.server import ServerSettings, create_app
        from pyllamacy.server.transport import uvicorn_options
        self.port = free_port()
        self.settings = ServerSettings(port=self.port, **server_kw)
        self.app = create_app(list(models), self.settings)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="error", lifespan="on",
            **uvicorn_options(self.settings)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t > 120:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def client(self, key: str = "x", **kw):
        import openai
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0,
                             timeout=120, **kw)

    def stats(self, key: str = "x") -> dict:
        """/metrics: each pyllamacy_* series summed over its labels."""
        import httpx
        text = httpx.get(self.url + "/metrics",
                         headers={"Authorization": f"Bearer {key}"}).text
        out: dict = {}
        for line in text.splitlines():
            if line.startswith("pyllamacy_") and "{" in line:
                name = line.split("{")[0]
                out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
        return out


# -- llama.cpp's programs (llama-server) as child processes ---------------------------------------

def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, wait at most 15 s, then SIGKILL and wait again."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=15)


def log_tail(path: Path, n: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def start_process(cmd, log_path: Path, url: Optional[str] = None, health: Optional[str] = None,
                  env=None, timeout: float = 120, ready=None,
                  what: Optional[str] = None) -> subprocess.Popen:
    """Start `cmd` (its output into log_path) and wait until it is ready: GET url+health
    answers 200, or `ready()` returns True (a check of the caller's: a handshake, a port)."""
    if ready is None:
        import httpx

        def ready():
            try:
                return httpx.get(url + health, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
    what = what or (f"answer {health}" if health else "get ready")
    log = open(log_path, "wb")
    # started from the log's folder: `python -m` puts the current folder first on sys.path, and
    # in a source checkout the uncompiled pyllamacy/ there would shadow the installed package
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env, cwd=str(Path(log_path).parent))
    log.close()
    t0 = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}:\n"
                                   f"{log_tail(log_path)}")
            if ready():
                return proc
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{cmd[0]} did not {what} within {timeout:g} s:\n"
                                   f"{log_tail(log_path)}")
            time.sleep(0.2)
    except BaseException:
        stop_process(proc)
        raise


# -- the `pyllamacy` command as a subprocess ----------------------------------------------------

def run_cli(*args, input=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`python -m pyllamacy ARGS` with the pyllamacy this test process imported: its parent
    folder first on PYTHONPATH, and run from there (`python -m` puts the working directory
    first on sys.path, and from a source checkout the uncompiled package would shadow the
    installed one)."""
    import sys

    import pyllamacy
    parent = str(Path(pyllamacy.__file__).resolve().parent.parent)
    e = dict(os.environ)
    e["PYTHONPATH"] = parent + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("PYLLAMACY_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pyllamacy", *args], input=input,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, env=e, cwd=parent)
