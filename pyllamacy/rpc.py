"""llama.cpp's RPC backend: a model's layers on other hosts (docs/SCALE.md).

    # on each helper host (a PRIVATE network only: the protocol has no authentication)
    pyllamacy rpc-server --host 10.0.0.2 --port 50052

    # where the model is loaded: the offloaded layers go to the servers
    Llama("model.gguf", n_gpu_layers=-1, rpc_servers="10.0.0.2:50052,10.0.0.3:50052")

`parse_servers` checks "host:port" lists and `probe` checks that a server answers llama.cpp's
RPC handshake with a protocol version this build speaks. Both run before any C call: llama.cpp
aborts the whole process when an endpoint does not parse, a connection fails or the handshake
fails (ggml-rpc.cpp's rpc_dispatcher::start), so Model(rpc_servers=...) probes every server
first and raises RPCError instead.

Security: llama.cpp's RPC server runs whatever tensors and graphs a client sends it, with no
authentication and no encryption, and has had remote-code-execution advisories
(CVE-2024-42478, CVE-2024-42479, CVE-2026-34159). Bind it to 127.0.0.1 (the default) or to an
address of a private network that only trusted hosts reach.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
import struct
from typing import List, Optional, Sequence, Tuple, Union

from ._llama import LlamaError

__all__ = ["RPCError", "parse_servers", "probe", "server_binary", "server_command", "check_port",
           "is_loopback", "add_server_arguments",
           "DEFAULT_PORT", "PROBE_TIMEOUT", "SECURITY_WARNING"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50052            # the rpc-server program's default
PROBE_TIMEOUT = 5.0             # seconds for the connection and for the handshake's answer
MAX_SERVERS = 16                # ggml-rpc.h's GGML_RPC_MAX_SERVERS

# the handshake as ggml-rpc.cpp (protocol 7.x) has it: a command byte (RPC_CMD_HELLO = 14,
# fixed for every version), the request size as uint64, the request (the transport's
# capabilities, RPC_CONN_CAPS_SIZE = 24 bytes; all zero = plain TCP); the answer is its size as
# uint64, then major, minor, patch, one padding byte and the server's 24 capability bytes
_RPC_CMD_HELLO = 14
_CONN_CAPS_SIZE = 24
_HELLO_RSP_SIZE = 4 + _CONN_CAPS_SIZE

SECURITY_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
WARNING: the RPC server is bound to {host}, not to a loopback address.
  llama.cpp's RPC protocol has NO authentication and NO encryption: anyone who can reach
  {host}:{port} can run computations on this machine, read what it holds, and has had
  remote-code-execution bugs to use (CVE-2024-42478, CVE-2024-42479, CVE-2026-34159).
  Run it only on a private network that only trusted hosts can reach, never on an open one.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


class RPCError(LlamaError, ConnectionError):
    """An RPC server cannot be used: not reachable, not an RPC server, busy with another
    client, or speaking another protocol version."""


# a host name (RFC 1123 labels) or a dotted IPv4 address; llama.cpp's client resolves it
# with gethostbyname, IPv4 only
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def _check_host(host: str, what: str) -> None:
    if not host:
        raise ValueError(f"{what}: the host is empty (expected host:port, e.g. "
                         f"127.0.0.1:{DEFAULT_PORT})")
    if ":" in host or host.startswith("["):
        raise ValueError(f"{what}: IPv6 addresses are not supported (llama.cpp's RPC client "
                         f"connects over IPv4); give an IPv4 address or a host name")
    if not _HOST_RE.match(host):
        raise ValueError(f"{what}: {host!r} is not a host name or an IPv4 address")


def check_port(port_text: str, what: str) -> int:
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"{what}: the port {port_text!r} is not a number (expected host:port, "
                         f"e.g. 127.0.0.1:{DEFAULT_PORT})")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: the port {port} is out of range (1-65535)")
    return port


def parse_endpoint(endpoint: str) -> Tuple[str, int]:
    """("host", port) of one "host:port", or ValueError naming what is wrong."""
    if not isinstance(endpoint, str):
        raise TypeError(f"an RPC server must be a 'host:port' string, got "
                        f"{type(endpoint).__name__}")
    what = f"RPC server {endpoint!r}"
    if endpoint != endpoint.strip() or any(c.isspace() for c in endpoint):
        raise ValueError(f"{what}: contains whitespace")
    if endpoint.count(":") != 1:
        if endpoint.count(":") == 0:
            raise ValueError(f"{what}: no port (expected host:port, e.g. "
                             f"127.0.0.1:{DEFAULT_PORT})")
        raise ValueError(f"{what}: IPv6 addresses are not supported (llama.cpp's RPC client "
                         f"connects over IPv4); expected host:port")
    host, port_text = endpoint.split(":")
    _check_host(host, what)
    return host, check_port(port_text, what)


def parse_servers(servers: Union[str, Sequence[str], None]) -> List[str]:
    """The endpoints of `servers` ("host:port,host:port" as llama-cpp-python's rpc_servers, or a
    list of "host:port"), each checked; [] for None or "". ValueError names the bad entry."""
    if servers is None:
        return []
    if isinstance(servers, str):
        if not servers.strip():
            return []
        items = [s.strip() for s in servers.split(",")]
    elif isinstance(servers, (list, tuple)):
        items = list(servers)
        for s in items:
            if not isinstance(s, str):
                raise TypeError(f"rpc_servers entries must be 'host:port' strings, got "
                                f"{type(s).__name__}")
        items = [s.strip() for s in items]
    else:
        raise TypeError(f"rpc_servers must be a 'host:port,host:port' string or a list of "
                        f"'host:port' strings, got {type(servers).__name__}")
    out = []
    for i, item in enumerate(items):
        if not item:
            raise ValueError(f"rpc_servers: entry {i} is empty (in {servers!r})")
        host, port = parse_endpoint(item)
        ep = f"{host}:{port}"
        if ep in out:
            raise ValueError(f"rpc_servers: {ep} is given twice")
        out.append(ep)
    if len(out) > MAX_SERVERS:
        raise ValueError(f"rpc_servers: {len(out)} servers; llama.cpp takes at most "
                         f"{MAX_SERVERS}")
    return out


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def probe(endpoint: str, timeout: Optional[float] = None) -> Tuple[int, int, int]:
    """Connect to an RPC server and do llama.cpp's handshake; return its protocol version
    (major, minor, patch). RPCError if it cannot be used (with the reason), ValueError for a
    malformed endpoint.

    An rpc-server serves one client at a time: a server busy with another process does not
    answer the handshake, and this raises after `timeout` seconds (default PROBE_TIMEOUT)
    instead of waiting."""
    from ._llama import rpc_protocol_version

    host, port = parse_endpoint(endpoint)
    timeout = PROBE_TIMEOUT if timeout is None else timeout
    major, minor, _ = rpc_protocol_version()
    try:
        addr = socket.gethostbyname(host)       # IPv4, as llama.cpp's client resolves it
    except OSError as e:
        raise RPCError(f"RPC server {endpoint}: cannot resolve {host!r} ({e})") from None
    try:
        sock = socket.create_connection((addr, port), timeout=timeout)
    except socket.timeout:
        raise RPCError(f"RPC server {endpoint}: no connection within {timeout:g} s") from None
    except OSError as e:
        raise RPCError(f"RPC server {endpoint} is not reachable: "
                       f"{e.strerror or e}") from None
    try:
        sock.settimeout(timeout)
        sock.sendall(struct.pack("<BQ", _RPC_CMD_HELLO, _CONN_CAPS_SIZE)
                     + bytes(_CONN_CAPS_SIZE))
        size = struct.unpack("<Q", _recv_exact(sock, 8))[0]
        if size != _HELLO_RSP_SIZE:
            raise RPCError(f"RPC server {endpoint}: the handshake's answer has {size} bytes, "
                           f"not {_HELLO_RSP_SIZE}: not a llama.cpp RPC server of protocol "
                           f"{major}.x")
        rsp = _recv_exact(sock, _HELLO_RSP_SIZE)
    except socket.timeout:
        raise RPCError(f"RPC server {endpoint}: no answer to the handshake within {timeout:g} "
                       f"s (an rpc-server serves one client at a time: is another process "
                       f"using it? or it is not an RPC server)") from None
    except (EOFError, ConnectionError):
        raise RPCError(f"RPC server {endpoint} closed the connection during the handshake: "
                       f"not a llama.cpp RPC server, or one of another protocol version") \
            from None
    except OSError as e:
        raise RPCError(f"RPC server {endpoint}: handshake failed: {e.strerror or e}") from None
    finally:
        sock.close()
    version = (rsp[0], rsp[1], rsp[2])
    if version[0] != major or version[1] > minor:
        raise RPCError(f"RPC server {endpoint} speaks protocol {'.'.join(map(str, version))}; "
                       f"this build speaks {major}.{minor}.x: run the same llama.cpp version "
                       f"on both sides")
    return version


# ------------------------------------------------------------------------------ the server


def server_binary() -> str:
    """The bundled ggml-rpc-server program (in pyllamacy/lib, beside the backends it loads)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "ggml-rpc-server")
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "this pyllamacy build has no RPC server program", path)
    return path


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8 or "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_command(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                   threads: Optional[int] = None, devices: Optional[str] = None,
                   cache: bool = False) -> List[str]:
    """The ggml-rpc-server command line for these options, each checked (ValueError)."""
    _check_host(host, f"--host {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"--port {port!r}: expected a port number 1-65535")
    cmd = [server_binary(), "--host", host, "--port", str(port)]
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"--threads {threads!r}: expected a number >= 1")
        cmd += ["--threads", str(threads)]
    if devices:
        if any(c.isspace() for c in devices) or devices.startswith("-"):
            raise ValueError(f"--device {devices!r}: expected device names such as CPU or "
                             f"CUDA0,CUDA1 (see `pyllamacy info`)")
        cmd += ["--device", devices]
    if cache:
        cmd.append("--cache")
    return cmd


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `pyllamacy rpc-server` (the ggml-rpc-server program's own)."""
    p.add_argument("-H", "--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}; anything else gets a "
                        f"warning: bind only to a private network)")
    p.add_argument("-p", "--port", default=str(DEFAULT_PORT),
                   help=f"port to bind (default {DEFAULT_PORT})")
    p.add_argument("-t", "--threads", type=int, default=None,
                   help="threads of the CPU device (default: the program's, half the cores)")
    p.add_argument("-d", "--device", default=None, metavar="DEV1,DEV2",
                   help="devices to serve (default: every GPU, else the CPU)")
    p.add_argument("-c", "--cache", action="store_true",
                   help="cache received tensors on disk ($LLAMA_CACHE/rpc or "
                        "~/.cache/llama.cpp/rpc): a model sent again loads faster")
    p.add_argument("--dry-run", action="store_true",
                   help="check the options, print the warnings and the command, do not start")
