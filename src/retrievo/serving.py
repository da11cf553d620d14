"""Running an ASGI app in a background thread, and the loopback check, for both servers.

``retrievo serve`` (the search service) and ``retrievo serve-llm`` (the OpenAI-compatible
LLM endpoint) are started in-process by tests, benchmarks and the HTTP LLM backend's
checks; both need the same things: a listening socket bound before the thread starts (a
client told the port can connect at once), ``TCP_NODELAY`` (without it every keep-alive
request waits ~40 ms for the peer's delayed ACK), a wait until uvicorn accepts
connections, and a clean stop. uvicorn is imported only when a server starts.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port), ``TCP_NODELAY`` set."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
    sock.bind((host, port))
    sock.listen(2048)  # connections queue from now on: a client told the port can connect at once
    return sock


class ServerThread:
    """A uvicorn server in a background thread: ``url`` (``http://host:port`` plus the
    app's base path), ``stop()``; a context manager."""

    def __init__(self, server: Any, thread: threading.Thread, host: str, port: int, base_path: str = ""):
        self.server, self.thread, self.host, self.port, self.base_path = server, thread, host, port, base_path

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.base_path}"

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> "ServerThread":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, *, lifespan: str = "on",
                    base_path: str = "", name: str = "retrievo-serve", ready_timeout: float = 30.0) -> ServerThread:
    """Run ``app`` on ``host:port`` in a daemon thread; returns once it accepts
    connections, or raises :class:`RuntimeError` when it does not start."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=name)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the {name} server did not start")
        time.sleep(0.02)
    return ServerThread(server, thread, host, sock.getsockname()[1], base_path)


__all__ = ["ServerThread", "bind", "is_loopback", "serve_in_thread"]
