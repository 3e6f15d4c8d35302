"""pyllamacy's server in-process on loopback, for the server tests: one place that starts it
(with the uvicorn options `python -m pyllamacy.server` uses), waits for it and stops it."""
from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
