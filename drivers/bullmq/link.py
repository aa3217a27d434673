"""A multiplexed Redis connection for the driver's Lua scripts (the hot path).

redis-py's asyncio client keeps one command in flight per pooled connection, so sixteen
concurrent workers mean sixteen sockets, sixteen writes and sixteen reads per round. A
:class:`Link` sends every script call of this process on one socket as it is made and matches
replies to callers in order (Redis answers in the order it was asked), like ioredis, the client
Node's BullMQ uses. Replies are parsed by
hiredis. redis-py still serves everything else (management commands, the blocking marker
connection).

Connection settings come from redis-py's own URL parsing (``redis.asyncio.connection.parse_url``)
or from a given client's pool, so a ``redis://``, ``rediss://`` or ``unix://`` URL means the
same to both. A lost connection fails the calls in flight with :class:`ConnectionError`; the
next call reconnects, and :meth:`Link.call` retries with exponential backoff (at-least-once, as
redis-py's retry was: a script whose reply was lost may have run).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any

from tickkit import DriverError, InvalidDataError, MissingExtraError, redact

try:
    import hiredis
    from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
    from redis.exceptions import NoScriptError, ResponseError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MissingExtraError("the redis:// driver", "redis", exc.name or "redis") from None

log = logging.getLogger("tickkit.drivers.bullmq")

#: errors after which a call is retried on a new connection (asyncio.TimeoutError is not
#: TimeoutError before Python 3.11)
RETRYABLE = (ConnectionError, TimeoutError, asyncio.TimeoutError, OSError)

#: error replies that say Redis did not run the command and will soon (a restarted server still
#: loading its data, a replica without its master): the call is retried like a lost connection
TRANSIENT_REPLIES = ("LOADING", "MASTERDOWN", "TRYAGAIN")


class TransientReplyError(ConnectionError):
    """Redis refused a command for now without running it (``LOADING ...``): safe to retry."""


#: error replies that no reconnect can cure (a wrong password, a missing database): the call
#: fails at once with a DriverError
PERMANENT_REPLIES = (
    "WRONGPASS",
    "NOAUTH",
    "NOPERM",
    "ERR invalid password",
    "ERR AUTH",
    "ERR Client sent AUTH",
    "ERR DB index is out of range",
    "ERR invalid DB index",
)


class PermanentError(DriverError):
    """Redis refused the connection for a reason a retry cannot cure (credentials, database)."""


def is_permanent(text: str) -> bool:
    return text.startswith(PERMANENT_REPLIES)


def safe_repr(value: Any, limit: int = 80) -> str:
    """A repr for error messages that never fails (a huge int's repr raises ValueError) and
    stays short."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} that has no printable form>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pack(args: tuple[Any, ...]) -> bytes:
    """The RESP bytes of one command, or an :class:`InvalidDataError` naming the argument that
    cannot be sent (a lone surrogate in a string, an object that is not a string or number).
    Nothing is queued or sent before this succeeds, so a bad argument fails its own call only."""
    try:
        return bytes(hiredis.pack_command(args))
    except Exception as exc:
        error = exc
    for i, arg in enumerate(args):
        try:
            hiredis.pack_command((arg,))
        except Exception as exc:
            raise InvalidDataError(
                f"cannot send {safe_repr(arg)} (argument {i} of a {safe_repr(args[0], 20)} "
                f"command) to Redis: {type(exc).__name__}: {safe_repr(str(exc), 200)}"
            ) from None
    raise InvalidDataError(
        f"cannot send a {safe_repr(args[0] if args else None, 20)} command to Redis: "
        f"{type(error).__name__}: {safe_repr(str(error), 200)}"
    ) from None


def _ssl_context(kw: Mapping[str, Any]) -> ssl.SSLContext:
    reqs = kw.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        reqs = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "required": ssl.CERT_REQUIRED,
        }.get(reqs.lower(), ssl.CERT_REQUIRED)
    ctx = ssl.create_default_context(
        cafile=kw.get("ssl_ca_certs"), capath=kw.get("ssl_ca_path"), cadata=kw.get("ssl_ca_data")
    )
    check = kw.get("ssl_check_hostname")
    ctx.check_hostname = bool(check if check is not None else True) and reqs != ssl.CERT_NONE
    ctx.verify_mode = reqs
    if kw.get("ssl_certfile"):
        ctx.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"), kw.get("ssl_password"))
    if kw.get("ssl_min_version") is not None:
        ctx.minimum_version = kw["ssl_min_version"]
    if kw.get("ssl_ciphers"):
        ctx.set_ciphers(kw["ssl_ciphers"])
    return ctx


class Target:
    """Where and how to connect: host and port or a unix socket, database, credentials, TLS."""

    def __init__(self, kw: Mapping[str, Any], connection_class: type | None = None) -> None:
        cls = connection_class or kw.get("connection_class")
        self.path: str | None = kw.get("path")
        if cls is not None and issubclass(cls, UnixDomainSocketConnection) and not self.path:
            raise ValueError("a unix socket connection without a path")
        self.host: str = kw.get("host") or "localhost"
        self.port = int(kw.get("port") or 6379)
        self.db = int(kw.get("db") or 0)
        self.username: str | None = kw.get("username")
        self.password: str | None = kw.get("password")
        self.credential_provider = kw.get("credential_provider")
        self.connect_timeout = float(kw.get("socket_connect_timeout") or 10.0)
        use_ssl = cls is not None and issubclass(cls, SSLConnection)
        self.ssl: ssl.SSLContext | None = _ssl_context(kw) if use_ssl else None

    @classmethod
    def from_url(cls, url: str) -> Target:
        return cls(parse_url(url))

    @classmethod
    def from_client(cls, client: Any) -> Target:
        pool = client.connection_pool
        return cls(pool.connection_kwargs, pool.connection_class)

    def credentials(self) -> tuple[str | None, str | None]:
        if self.credential_provider is not None:
            got = tuple(self.credential_provider.get_credentials())
            return (got[0], got[1]) if len(got) == 2 else (None, got[0])
        return self.username, self.password


class _Protocol(asyncio.Protocol):
    """One socket: replies are handed to the waiting futures in the order calls were sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader(encoding="utf-8")
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = loop.create_future()
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self.received += 1
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.abort(ConnectionError("Redis sent a reply nobody waited for"))
                return
            future = waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                text = str(reply)
                error: type[Exception]
                if text.startswith("NOSCRIPT"):
                    error = NoScriptError
                elif text.startswith(TRANSIENT_REPLIES):
                    error = TransientReplyError
                else:
                    error = ResponseError
                future.set_exception(error(text))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        error = ConnectionError(f"connection to Redis lost: {exc or 'closed'}")
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)

    def abort(self, exc: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(exc)

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        return self.send_packed(pack(args))

    def send_packed(self, packed: bytes) -> asyncio.Future[Any]:
        """Send one encoded command; its reply slot is queued only once it is written, so that
        replies and callers stay in step whatever fails."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("not connected to Redis")
        future = self.loop.create_future()
        # written at once: Redis starts on it while this process handles other replies (when
        # the socket is busy the transport buffers, and later calls leave together)
        self.transport.write(packed)
        self.waiting.append(future)
        return future


class Script:
    """A Lua script known by its SHA1, loaded on demand (after a Redis restart too)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


class Link:
    """The multiplexed connection (see the module docstring).

    ``retries`` bounds the reconnect attempts of one call; ``give_up_after`` (seconds, or None)
    bounds the time one call spends reconnecting, so that a management command against an
    unreachable Redis fails within a few seconds while a worker keeps trying. Each failed
    attempt is logged (WARNING, with the delay before the next one).
    """

    def __init__(
        self,
        target: Target,
        *,
        retries: int = 20,
        reply_timeout: float = 60.0,
        client_name: str | None = None,
        give_up_after: float | None = None,
    ) -> None:
        self.target = target
        self.retries = retries
        self.reply_timeout = reply_timeout
        self.client_name = client_name
        self.give_up_after = give_up_after
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        t = self.target
        where = t.path or f"{t.host}:{t.port}"
        return f"<Link {where} db={t.db}>"

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            proto = self._proto
            if proto is not None and proto.transport is not None:
                return proto
            loop = asyncio.get_running_loop()
            t = self.target
            opened: list[_Protocol] = []

            async def open_and_greet() -> _Protocol:
                if t.path:
                    _, made = await loop.create_unix_connection(lambda: _Protocol(loop), t.path)
                else:
                    _, made = await loop.create_connection(
                        lambda: _Protocol(loop),
                        t.host,
                        t.port,
                        ssl=t.ssl,
                        server_hostname=t.host if t.ssl is not None else None,
                    )
                opened.append(made)
                user, password = t.credentials()
                if password is not None:
                    await made.send(("AUTH", user, password) if user else ("AUTH", password))
                if t.db:
                    await made.send(("SELECT", t.db))
                if self.client_name:
                    await made.send(("CLIENT", "SETNAME", self.client_name))
                return made

            try:
                proto = await asyncio.wait_for(open_and_greet(), t.connect_timeout)
            except BaseException as exc:
                for made in opened:  # a half-greeted connection is never used: close it
                    made.abort(ConnectionError("greeting failed"))
                if isinstance(exc, ResponseError):
                    text = redact(str(exc))
                    if is_permanent(text):
                        raise PermanentError(
                            f"Redis at {self._where()} refused the connection: {text}"
                        ) from None
                raise
            self._proto = proto
            self._arm_watchdog(loop)
            return proto

    def _where(self) -> str:
        t = self.target
        return t.path or f"{t.host}:{t.port}/{t.db}"

    def _arm_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Abort a connection whose oldest call in flight has waited a whole
        ``reply_timeout`` period with nothing received (a peer gone without a reset), so that
        the calls are retried on a new connection."""
        if self._watchdog is not None:
            return
        head: asyncio.Future[Any] | None = None
        seen = -1

        def check() -> None:
            nonlocal head, seen
            self._watchdog = None
            proto = self._proto
            if proto is None or proto.transport is None:
                return
            oldest = proto.waiting[0] if proto.waiting else None
            if oldest is not None and oldest is head and proto.received == seen:
                log.warning("no reply from Redis for %ss: reconnecting", self.reply_timeout)
                proto.abort(TimeoutError(f"no reply from Redis for {self.reply_timeout}s"))
                return
            head, seen = oldest, proto.received
            self._watchdog = loop.call_later(self.reply_timeout, check)

        self._watchdog = loop.call_later(self.reply_timeout, check)

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply, reconnecting and retrying on connection
        errors with exponential backoff (0.05 s doubling up to 2 s, ``retries`` times, within
        ``give_up_after`` seconds). An argument that cannot be encoded raises
        :class:`~tickkit.InvalidDataError` at once; a permanent refusal (wrong password,
        missing database) raises :class:`PermanentError` at once."""
        return await self._call_packed(pack(args))

    async def _call_packed(self, packed: bytes) -> Any:
        delay = 0.05
        attempt = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            try:
                proto = self._proto
                if proto is None or proto.transport is None:
                    proto = await self._connect()
                return await proto.send_packed(packed)
            except ssl.SSLCertVerificationError as exc:
                raise PermanentError(
                    f"Redis at {self._where()}: the TLS certificate was refused: {redact(str(exc))}"
                ) from None
            except RETRYABLE as exc:
                spent = loop.time() - started
                limit = self.give_up_after
                if attempt >= self.retries or (limit is not None and spent + delay > limit):
                    raise DriverError(
                        f"Redis at {self._where()} is unreachable: {redact(str(exc))} "
                        f"(gave up after {attempt + 1} attempt(s) in {spent:.1f}s)"
                    ) from None
                attempt += 1
                log.warning(
                    "Redis at %s: %s; reconnecting in %.2fs (attempt %d)",
                    self._where(),
                    redact(str(exc)) or type(exc).__name__,
                    delay,
                    attempt,
                )
                await asyncio.sleep(delay)  # a network retry: real time, not the kernel's clock
                delay = min(delay * 2, 2.0)

    async def run(self, script: Script, args: tuple[Any, ...]) -> Any:
        """EVALSHA ``script`` with no keys (tickkit's scripts name their keys from ARGV[1],
        like BullMQ's do for the queue prefix), loading it when Redis does not know it."""
        packed = pack(("EVALSHA", script.sha, 0, *args))  # a bad argument fails here, alone
        proto = self._proto
        if proto is not None and proto.transport is not None:
            # the fast path: connected; any failure goes the slow way with its retries
            try:
                return await proto.send_packed(packed)
            except NoScriptError:
                pass
            except RETRYABLE:
                pass
        try:
            return await self._call_packed(packed)
        except NoScriptError:
            return await self.call("EVAL", script.source, 0, *args)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(proto.closed), 5)
            except asyncio.TimeoutError:
                proto.abort(ConnectionError("closed"))
