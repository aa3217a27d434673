"""A real redis-server for tests: started on a free port when ``redis-server`` is on PATH,
else taken from ``REDIS_URL``. Under CI (``CI=true``) a missing Redis fails the run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process this test session owns (it can be restarted for fault tests)."""

    def __init__(self, port: int, workdir: str, extra: tuple[str, ...] = ()) -> None:
        self.port = port
        self.workdir = workdir
        #: more redis-server options (TLS, a unix socket, a password...)
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the process without waiting for it to answer (a test that wants to meet a
        server still loading its data calls this)."""
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
                "--maxmemory-policy",
                "noeviction",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    # a server with a password answers NOAUTH: it is up all the same
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def redis_url_for_tests() -> Iterator[tuple[str, RedisServer | None]]:
    if shutil.which("redis-server"):
        with tempfile.TemporaryDirectory() as workdir:
            server = RedisServer(free_port(), workdir)
            server.start()
            try:
                yield server.url, server
            finally:
                server.stop()
        return
    url = os.environ.get("REDIS_URL")
    if url:
        yield url, None
        return
    message = "no redis-server on PATH and no REDIS_URL set"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI needs a real Redis", pytrace=False)
    pytest.skip(message)
