"""Running the app under uvicorn: in the foreground (``onlymine serve``) or on a background thread (tests,
the load test)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from onlymine.web.app import create_app
from onlymine.web.config import ServerConfig

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def uvicorn_config(config: ServerConfig, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """uvicorn settings: keep-alive and header limits that do not let one slow client hold a connection."""
    return uvicorn.Config(create_app(config), host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                          timeout_graceful_shutdown=10, limit_concurrency=256, server_header=False)


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted."""
    uvicorn.Server(uvicorn_config(config, host, port, log_level)).run()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def background_server(config: ServerConfig, host: str = "127.0.0.1", port: int | None = None,
                      start_timeout: float = 120.0) -> Iterator[str]:
    """Run the app on a thread and yield its base URL (``http://127.0.0.1:PORT``); stops it on exit."""
    port = port or free_port(host)
    server = uvicorn.Server(uvicorn_config(config, host, port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="onlymine-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
