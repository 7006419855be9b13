"""A real HTTP server on 127.0.0.1 that records what alert senders POST to it."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest


class CaptureServer:
    """Records every POST (path, headers, body); answers `status` with `reply` after `delay` s."""

    def __init__(
        self, *, delay: float = 0.0, status: int = 200, reply: bytes = b'{"code":0,"msg":"success"}'
    ):
        self.delay, self.status, self.reply = delay, status, reply
        self.requests: list[tuple[str, dict, bytes]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server._lock:
                    server.requests.append((self.path, dict(self.headers), body))
                time.sleep(server.delay)
                try:
                    self.send_response(server.status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(server.reply)
                except OSError:
                    pass  # the client gave up waiting (its timeout): nothing to answer

            def log_message(self, *args):
                """Quiet: the tests read the recorded requests, not the server's log."""

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True  # a sleeping handler never holds up the test's end
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def bodies(self, path: str) -> list[dict]:
        """The JSON bodies POSTed to exactly `path`, in arrival order."""
        with self._lock:
            return [json.loads(body) for p, _, body in self.requests if p == path]

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        """Wait until `count` requests arrived (the sender delivers on its own thread)."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def http_server():
    """A factory of CaptureServers, all shut down after the test."""
    servers = []

    def make(**kwargs) -> CaptureServer:
        servers.append(CaptureServer(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def down_url() -> str:
    """A URL of a server that is down."""
    return refused_url()
