"""Never block (issue 12): a departed client frees its slot within a step, deadlines end
requests, slow work leaves the event loop, slow or idle connections are closed.

The server runs in a thread of this process (uvicorn, with the options python -m
pyllamacy.server uses); clients are raw sockets where the test must close a connection itself.
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from pyllamacy.server import ModelSettings  # noqa: E402
from pyllamacy.server import routes  # noqa: E402
from serving import LocalServer  # noqa: E402

# SmolLM2's end-of-generation tokens (<|endoftext|>, <|im_start|>, <|im_end|>): banned, so a
# generation runs to max_tokens
NO_EOS = {"0": -100, "1": -100, "2": -100}
READ_TIMEOUT = 1.5          # the servers' timeout_request_read
KEEP_ALIVE = 1.0            # and timeout_keep_alive


class _Server(LocalServer):
    def __init__(self, model_path, server_kw=None, **model_kw):
        base = dict(model=model_path, model_alias="smol", n_ctx=4096, n_batch=32, n_ubatch=32,
                    n_threads=1, n_threads_batch=1, n_parallel=2, max_queue=4, verbose=False)
        base.update(model_kw)
        super().__init__([ModelSettings(**base)], timeout_request_read=READ_TIMEOUT,
                         timeout_keep_alive=KEEP_ALIVE, **(server_kw or {}))
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def stop(self):
        self.http.close()
        super().stop()

    def stats(self):
        out = {}
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith("pyllamacy_") and "{" in line:
                name = line.split("{")[0]
                out[name] = out.get(name, 0) + float(line.rsplit(" ", 1)[1])
        return out

    def busy(self) -> int:
        return int(self.stats()["pyllamacy_slots_busy"])

    def raw_post(self, path, body) -> socket.socket:
        data = json.dumps(body).encode()
        s = socket.create_connection(("127.0.0.1", self.port))
        s.sendall(b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (path.encode(), len(data)) + data)
        return s


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = _Server(smollm2_path, server_kw=dict(max_body_bytes=8 * 1024 * 1024))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def capped_server(smollm2_path):
    """One slot; server-wide t_max_predict_ms."""
    s = _Server(smollm2_path, server_kw=dict(t_max_predict_ms=300), n_parallel=1)
    yield s
    s.stop()


def _wait(pred, timeout=60.0, every=0.002):
    t = time.perf_counter()
    while not pred():
        if time.perf_counter() - t > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(every)
    return time.perf_counter() - t


def _leave_and_measure(server, sock, prefill_tokens=None):
    """Close `sock` (its request holds a slot) and measure until /metrics shows the slot free:
    (seconds, engine steps meanwhile, mean step seconds before the close)."""
    st0 = server.stats()
    time.sleep(0.5)
    st1 = server.stats()
    steps = st1["pyllamacy_steps_total"] - st0["pyllamacy_steps_total"]
    step_s = 0.5 / steps if steps else float("nan")
    if prefill_tokens is not None:       # still in its prompt
        assert st1["pyllamacy_decoded_tokens_total"] - st0["pyllamacy_decoded_tokens_total"] \
            < prefill_tokens
    assert server.busy() == 1
    n0 = server.stats()["pyllamacy_steps_total"]
    t = time.perf_counter()
    sock.close()
    _wait(lambda: server.busy() == 0, timeout=30)
    dt = time.perf_counter() - t
    n1 = server.stats()["pyllamacy_steps_total"]
    return dt, n1 - n0, step_s


def _report(name, dt, n_steps, step_s):
    print(f"\n{name}: slot free {dt * 1000:.1f} ms after the disconnect, {n_steps:.0f} engine "
          f"steps meanwhile (mean step before: {step_s * 1000:.1f} ms)")


def _check_freed(dt, n_steps, step_s):
    # the step in flight when the client left, then the step whose start frees the slot (a
    # scrape may add one); before this change a non-streamed request ran to its max_tokens
    assert n_steps <= 3, n_steps
    assert dt < max(1.5, 4 * step_s), dt


def test_non_streamed_disconnect_frees_slot(server):
    sock = server.raw_post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 2000,
                                               "temperature": 0, "logit_bias": NO_EOS})
    _wait(lambda: server.busy() == 1)
    time.sleep(0.3)                       # tokens flowing
    dt, n, step_s = _leave_and_measure(server, sock)
    _report("non-streamed, generating", dt, n, step_s)
    _check_freed(dt, n, step_s)
    # recorded as 499, with the tokens it had
    _wait(lambda: 'status="499"' in server.http.get("/metrics").text, timeout=5)


def test_streamed_disconnect_frees_slot(server):
    sock = server.raw_post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 2000,
        "stream": True, "temperature": 0, "logit_bias": NO_EOS})
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    dt, n, step_s = _leave_and_measure(server, sock)
    _report("streamed, generating", dt, n, step_s)
    _check_freed(dt, n, step_s)


def test_disconnect_frees_every_choice(server):
    """n=2: both choices' slots are freed."""
    sock = server.raw_post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 2000,
                                               "n": 2, "logit_bias": NO_EOS})
    _wait(lambda: server.busy() == 2)
    time.sleep(0.3)
    t = time.perf_counter()
    sock.close()
    _wait(lambda: server.busy() == 0, timeout=30)
    assert time.perf_counter() - t < 1.5


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_during_prompt_frees_slot(server, stream):
    # ~3000 prompt tokens in steps of 32: a hundred steps of prompt processing
    prompt = "The quick brown fox jumps over the lazy dog. " * 300
    sock = server.raw_post("/v1/completions", {"prompt": prompt, "max_tokens": 16,
                                               "stream": stream, "logit_bias": NO_EOS})
    _wait(lambda: server.busy() == 1)
    dt, n, step_s = _leave_and_measure(server, sock, prefill_tokens=2500)
    _report(f"{'streamed' if stream else 'non-streamed'}, prompt processing", dt, n, step_s)
    _check_freed(dt, n, step_s)


# -- deadlines ---------------------------------------------------------------------------------

def test_t_max_predict_ms_ends_with_length(server):
    t = time.perf_counter()
    r = server.http.post("/v1/completions", json={
        "prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0,
        "logit_bias": NO_EOS, "t_max_predict_ms": 300})
    dt = time.perf_counter() - t
    body = r.json()
    assert r.status_code == 200, body
    assert body["choices"][0]["finish_reason"] == "length"
    assert 0 < body["usage"]["completion_tokens"] < 2000
    assert body["choices"][0]["text"]
    assert dt < 10
    assert server.busy() == 0


def test_timeout_ends_stream_with_length(server):
    finish, n = None, 0
    with server.http.stream("POST", "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 2000, "temperature": 0, "logit_bias": NO_EOS, "stream": True,
            "timeout": 0.5}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                ch = json.loads(line[6:])["choices"][0]
                n += bool(ch["delta"].get("content"))
                finish = ch["finish_reason"] or finish
    assert finish == "length" and 0 < n < 2000
    assert server.busy() == 0


def test_server_wide_deadline_caps_requests(capped_server):
    s = capped_server
    for extra in ({}, {"t_max_predict_ms": 60000}):      # default; and a longer ask is capped
        t = time.perf_counter()
        body = s.http.post("/v1/completions", json=dict(
            prompt="Once upon a time", max_tokens=2000, temperature=0, logit_bias=NO_EOS,
            **extra)).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] < 2000
        assert time.perf_counter() - t < 10


def test_timeout_in_the_wait_queue(capped_server):
    """The one slot is busy: a request whose timeout passes while it waits ends with "length"
    and no tokens, before the one in the slot."""
    s = capped_server
    out = {}

    def long():
        out["long"] = s.http.post("/v1/completions", json=dict(
            prompt="Once upon a time", max_tokens=2000, temperature=0,
            logit_bias=NO_EOS)).json()
        out["t_long"] = time.perf_counter()

    th = threading.Thread(target=long)
    th.start()
    _wait(lambda: s.busy() == 1)
    body = s.http.post("/v1/completions", json=dict(prompt="Hi", max_tokens=8,
                                                    timeout=0.1)).json()
    t_short = time.perf_counter()
    th.join()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 0 and body["choices"][0]["text"] == ""
    assert t_short < out["t_long"]
    assert out["long"]["choices"][0]["finish_reason"] == "length"


# -- slow work off the event loop -------------------------------------------------------------

def test_health_answers_during_large_tokenize(server):
    text = "hello world, " * (4_000_000 // 13)          # ~4 MB
    done = {}

    def tok():
        r = httpx.post(server.url + "/extras/tokenize/count", json={"input": text}, timeout=120)
        done["tok"] = time.perf_counter()
        done["count"] = r.json()["count"]

    th = threading.Thread(target=tok)
    th.start()
    time.sleep(0.5)                       # the body is in; the tokenizer runs
    t = time.perf_counter()
    assert server.http.get("/health").json() == {"status": "ok"}
    done["health"] = time.perf_counter()
    th.join()
    print(f"\n/health {1000 * (done['health'] - t):.1f} ms during a 4 MB tokenize; tokenize "
          f"ended {1000 * (done['tok'] - done['health']):.0f} ms after it")
    assert done["count"] > 600_000
    assert done["health"] < done["tok"]


def test_grammar_sampler_built_off_the_loop(server, monkeypatch):
    threads = []
    real = routes._new_sampler

    def spy(*a, **kw):
        threads.append(threading.current_thread())
        return real(*a, **kw)

    monkeypatch.setattr(routes, "_new_sampler", spy)
    loop_thread = server.thread
    body = server.http.post("/v1/completions", json={
        "prompt": "Answer:", "max_tokens": 4, "grammar": 'root ::= "yes" | "no"'}).json()
    assert body["choices"][0]["text"] in ("yes", "no")
    body = server.http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).json()
    assert body["choices"][0]["finish_reason"] in ("length", "stop")
    assert threads[0] is not loop_thread            # with a grammar: a worker thread
    assert threads[1] is loop_thread                # without: cheap, on the loop


# -- connections -------------------------------------------------------------------------------

def _closed_after(sock, limit) -> float:
    """Seconds until the server closes `sock` (recv gives b"" or a reset)."""
    sock.settimeout(limit)
    t = time.perf_counter()
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return time.perf_counter() - t


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n",
                                  b"POST /extras/tokenize HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Type: application/json\r\nContent-Length: 100\r\n"
                                  b"\r\n{\"input\": \"he"])
def test_slow_request_is_closed(server, sent):
    """Nothing, half the headers, half the body: closed after timeout_request_read, even
    while the client keeps sending a byte now and then (slowloris)."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    t = time.perf_counter()
    sock.sendall(sent)
    sock.settimeout(0.2)
    closed = False
    while not closed and time.perf_counter() - t < 10:
        try:
            closed = sock.recv(4096) == b""      # no answer comes: b"" is the close
        except socket.timeout:                    # a byte every 0.2 s, for up to 10 s
            if sent:
                try:
                    sock.sendall(b"X" if sent.startswith(b"GET") else b" ")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
        except ConnectionResetError:
            closed = True
    dt = time.perf_counter() - t
    sock.close()
    print(f"\nclosed after {dt:.2f} s (timeout_request_read {READ_TIMEOUT} s)")
    assert closed
    assert READ_TIMEOUT - 0.1 <= dt < READ_TIMEOUT + 1.0


def test_idle_keep_alive_closed_and_requests_in_time_served(server):
    sock = socket.create_connection(("127.0.0.1", server.port))
    # a request sent slowly but within the limit is answered
    req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(0, len(req), 8):
        sock.sendall(req[i:i + 8])
        time.sleep(0.05)
    sock.settimeout(5)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    # then idle: closed after timeout_keep_alive
    dt = _closed_after(sock, 10)
    sock.close()
    assert KEEP_ALIVE - 0.1 <= dt < KEEP_ALIVE + 1.0


def test_long_request_not_cut_by_read_timeout(server):
    """The read deadline covers receiving the request, not answering it."""
    sock = server.raw_post("/v1/completions", {"prompt": "Once upon a time", "temperature": 0,
                                               "max_tokens": 2000, "logit_bias": NO_EOS,
                                               "t_max_predict_ms": 2500})
    sock.settimeout(30)
    data = b""
    while b"finish_reason" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200") and b'"length"' in data
