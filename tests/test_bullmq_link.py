"""The BullMQ driver's connection for its scripts (drivers/bullmq/link.py) against a real
redis-server with a password, TLS (a certificate made here with openssl) and a unix socket:
every way of naming a Redis that redis-py accepts reaches the same server and database."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from tickkit import DriverError, Kernel, TaskContext, TaskRegistry, task
from tickkit.drivers.bullmq import BullMQDriver
from tickkit.drivers.bullmq.link import Link, Script, Target

from .redis_server import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

PASSWORD = "s3cret/word"  # a '/' to show the URL's password is decoded


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Secured:
    def __init__(self, plain: int, tls: int, sock: str, ca: str) -> None:
        self.plain, self.tls, self.sock, self.ca = plain, tls, sock, ca


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    """A redis-server with a password on a plain port, a TLS port and a unix socket."""
    missing = [tool for tool in ("redis-server", "openssl") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI needs them", pytrace=False)
        pytest.skip(message)
    with tempfile.TemporaryDirectory() as workdir:
        cert, key = Path(workdir, "cert.pem"), Path(workdir, "key.pem")
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        tls_port = free_port()
        sock = str(Path(workdir, "redis.sock"))
        server = RedisServer(
            free_port(),
            workdir,
            (
                "--requirepass",
                PASSWORD,
                "--tls-port",
                str(tls_port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(cert),
                "--tls-auth-clients",
                "no",
                "--unixsocket",
                sock,
            ),
        )
        server.start()
        try:
            yield Secured(server.port, tls_port, sock, str(cert))
        finally:
            server.stop()


async def run_one_job(driver: BullMQDriver) -> Any:
    """Create a job on ``driver`` and run it; return the data the task saw."""
    seen: list[Any] = []
    done = anyio.Event()
    reg = TaskRegistry()

    async def record(ctx: TaskContext) -> None:
        seen.append(ctx.data)
        done.set()

    task(name="record", execute=record, registry=reg)
    async with Kernel(driver, tasks=reg) as kernel:
        await kernel.create_task("record", {"over": "the link"})
        with anyio.fail_after(10):
            await done.wait()
    return seen


def quoted() -> str:
    return quote(PASSWORD, safe="")


async def keys_in_db(secured: Secured, db: int, queue: str) -> list[str]:
    client = aioredis.Redis(
        host="127.0.0.1", port=secured.plain, db=db, password=PASSWORD, decode_responses=True
    )
    try:
        return sorted(await client.keys(f"bull:{queue}:*"))
    finally:
        await client.aclose()


async def test_rediss_url_with_password_and_database(secured: Secured) -> None:
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    url = f"rediss://:{quoted()}@localhost:{secured.tls}/2?ssl_ca_certs={secured.ca}"
    assert await run_one_job(BullMQDriver(url, queue=queue)) == [{"over": "the link"}]
    # the job went through the scripts into database 2 (the completed job is kept)
    assert f"bull:{queue}:completed" in await keys_in_db(secured, 2, queue)
    assert await keys_in_db(secured, 0, queue) == []


async def test_rediss_certificate_is_verified(secured: Secured) -> None:
    # without the CA the self-signed certificate is refused: a clear error at start
    url = f"rediss://:{quoted()}@localhost:{secured.tls}/0"
    link = Link(Target.from_url(url), retries=0)
    with pytest.raises(DriverError, match="CERTIFICATE_VERIFY_FAILED"):
        await link.call("PING")
    await link.close()
    # ssl_cert_reqs=none accepts it, as redis-py does
    insecure = Link(Target.from_url(url + "?ssl_cert_reqs=none"), retries=0)
    assert await insecure.call("PING") == "PONG"
    await insecure.close()


async def test_unix_socket_url(secured: Secured) -> None:
    queue = f"unix-{uuid.uuid4().hex[:8]}"
    url = f"unix://:{quoted()}@{secured.sock}?db=3"
    assert await run_one_job(BullMQDriver(url, queue=queue)) == [{"over": "the link"}]
    assert f"bull:{queue}:completed" in await keys_in_db(secured, 3, queue)


async def test_a_given_client_lends_its_settings(secured: Secured) -> None:
    queue = f"given-{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis(
        host="localhost",
        port=secured.tls,
        db=4,
        password=PASSWORD,
        ssl=True,
        ssl_ca_certs=secured.ca,
        decode_responses=True,
    )
    try:
        assert await run_one_job(BullMQDriver(client, queue=queue)) == [{"over": "the link"}]
    finally:
        await client.aclose()
    assert f"bull:{queue}:completed" in await keys_in_db(secured, 4, queue)


async def test_a_wrong_password_is_a_clear_error(secured: Secured) -> None:
    link = Link(Target.from_url(f"redis://:wrong@127.0.0.1:{secured.plain}/0"), retries=0)
    with pytest.raises(DriverError, match=r"WRONGPASS|invalid password"):
        await link.call("PING")
    await link.close()


async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(
    redis_url: str,
) -> None:
    link = Link(Target.from_url(redis_url))
    script = Script("return {ARGV[1], redis.call('INCR', ARGV[2])}")
    key = f"link-{uuid.uuid4().hex[:8]}"
    try:
        replies = await asyncio.gather(*(link.run(script, (str(i), key)) for i in range(200)))
        assert [r[0] for r in replies] == [str(i) for i in range(200)]
        assert sorted(r[1] for r in replies) == list(range(1, 201))
        ids = await asyncio.gather(*(link.call("CLIENT", "ID") for _ in range(50)))
        assert len(set(ids)) == 1  # one connection carries every call
        # an error reply goes to its own caller only
        bad = Script("return redis.error_reply('ERR no ' .. ARGV[1])")
        results = await asyncio.gather(
            link.run(script, ("a", key)),
            link.run(bad, ("b",)),
            link.run(script, ("c", key)),
            return_exceptions=True,
        )
        assert results[0][0] == "a" and results[2][0] == "c"
        assert isinstance(results[1], ResponseError) and "ERR no b" in str(results[1])
    finally:
        await link.close()


async def test_scripts_are_loaded_again_after_a_flush(redis_url: str) -> None:
    link = Link(Target.from_url(redis_url))
    script = Script(f"return '{uuid.uuid4().hex}'")
    try:
        first = await link.run(script, ())
        await link.call("SCRIPT", "FLUSH")
        assert await link.run(script, ()) == first  # NOSCRIPT, then EVAL with the source
    finally:
        await link.close()


async def test_no_reply_for_too_long_reconnects_and_retries(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that stops answering (CLIENT PAUSE here): the watchdog drops the connection
    and the call is retried until it succeeds."""
    link = Link(Target.from_url(redis_url), reply_timeout=0.2)
    other = aioredis.from_url(redis_url)
    try:
        assert await link.call("PING") == "PONG"
        await other.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        with caplog.at_level(logging.WARNING, logger="tickkit.drivers.bullmq"):
            assert await link.call("ECHO", "still here") == "still here"
        assert "no reply from Redis" in caplog.text
    finally:
        await other.execute_command("CLIENT", "UNPAUSE")
        await other.aclose()
        await link.close()


async def test_a_call_while_redis_loads_its_data_waits_instead_of_failing() -> None:
    """A restarted Redis answers ``-LOADING`` until its data is back in memory. The command was
    not run, so the link retries it like a lost connection; before, it failed the call (an
    outcome write lost, the job run twice once its lock expired: contrib/chaos found it)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server not on PATH: CI needs it", pytrace=False)
        pytest.skip("redis-server not on PATH")
    with tempfile.TemporaryDirectory() as workdir:
        # key-load-delay (microseconds per key, a setting Redis's own tests use) makes loading
        # the 20,000 keys of the dump take about 2 s, so the first calls surely meet LOADING
        server = RedisServer(
            free_port(),
            workdir,
            (
                *("--enable-debug-command", "local", "--key-load-delay", "100"),
                # answer clients every 1 KiB loaded (not every 2 MiB): they meet LOADING
                *("--loading-process-events-interval-bytes", "1024"),
            ),
        )
        server.start()
        try:
            link = Link(Target.from_url(server.url))
            assert await link.call("DEBUG", "POPULATE", 20000) == "OK"
            await link.call("SET", "kept", "before")
            assert await link.call("SAVE") == "OK"  # the restart loads this dump
            await link.close()
            server.stop()
            assert server.proc is None
            server.spawn()  # no waiting: the port opens while the dump loads
            link = Link(Target.from_url(server.url), retries=200)
            with anyio.fail_after(30):
                while True:  # wait for the port, then check the server is still loading
                    try:
                        with socket.create_connection(("127.0.0.1", server.port), 0.5) as sock:
                            sock.sendall(b"GET kept\r\n")
                            first = sock.recv(64)
                        break
                    except OSError:
                        await anyio.sleep(0.01)
                assert first.startswith(b"-LOADING"), f"loaded already: GET said {first!r}"
                assert await link.call("GET", "kept") == "before"
                assert await link.call("SET", "after", "1") == "OK"
            await link.close()
        finally:
            server.stop()
