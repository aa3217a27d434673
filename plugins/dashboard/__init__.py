"""A web dashboard for any tickkit store: see what is scheduled, what ran, what failed, and act.

Three ways to run it (``pip install 'tickkit[dashboard]'``; docs/dashboard.md):

- ``tickkit dashboard --driver sqlite:///tasks.db`` (the CLI, a uvicorn server);
- :func:`create_app`, an ASGI application to mount inside an existing web app;
- beside a running worker: ``Kernel(plugins=["tickkit.plugins.dashboard"],
  settings={"dashboard": {"port": 8787}})`` (the plugin's ``tickkit_kernel_services``).

The dashboard uses only the public job API (``Kernel.list_tasks``, ``count_tasks``,
``get_task``, ``get_runs``, ``pause_task``, ``resume_task``, ``run_task_now``,
``update_task``, ``delete_task``), so it works on every driver.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from tickkit import Kernel, MissingExtraError, PluginError, hookimpl

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "check_bind",
    "create_app",
    "serve",
    "tickkit_kernel_services",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
#: the environment variable the CLI and the kernel setting read the token from
TOKEN_ENV = "TICKKIT_DASHBOARD_TOKEN"


def _require_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"the dashboard needs Starlette and uvicorn ({exc.name} is missing): "
            "pip install 'tickkit[dashboard]'"
        ) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only accepts connections from this machine."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse (``PluginError``) to serve on an address other machines reach without a token."""
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise PluginError("the dashboard token must be a non-empty string")
    if not is_loopback(host) and not token:
        raise PluginError(
            f"the dashboard refuses to listen on {host!r} without a token: other machines "
            f"could manage your jobs; pass --token (or set {TOKEN_ENV}), or bind 127.0.0.1"
        )


def create_app(
    kernel_or_driver_url: Kernel | str,
    *,
    token: str | None = None,
    refresh: float = 5.0,
    page_size: int = 50,
    title: str = "tickkit",
) -> Starlette:
    """The dashboard as an ASGI application (Starlette).

    ``kernel_or_driver_url``: an open or running :class:`~tickkit.Kernel` (the app uses it and
    leaves it open), or a driver URL (the app opens a kernel on that store at its first request
    and stops it when the app shuts down). ``token``: when given, every request (pages, the
    JSON endpoint and actions; not the static CSS/JS) needs it, as the cookie set by
    ``/login?token=...``, or an ``Authorization: Bearer`` or ``X-Tickkit-Token`` header.
    ``refresh``: seconds between the live updates' polls (0: none). ``page_size``: jobs per
    table page.
    """
    _require_extra()
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise PluginError("the dashboard token must be a non-empty string")
    if not isinstance(kernel_or_driver_url, (Kernel, str)):
        raise PluginError(
            f"create_app needs a Kernel or a driver URL, got {type(kernel_or_driver_url).__name__}"
        )
    if isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or not refresh >= 0:
        raise PluginError(f"refresh must be a number of seconds >= 0, got {refresh!r}")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 500:
        raise PluginError(f"page_size must be an int from 1 to 500, got {page_size!r}")
    from .app import build_app

    return build_app(
        kernel_or_driver_url, token=token, refresh=float(refresh), page_size=page_size, title=title
    )


def tokens_equal(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def serve(
    app: Any,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    signals: bool = False,
) -> None:
    """Serve ``app`` with uvicorn until cancelled (asyncio only). Refuses an address other
    machines reach without a ``token`` (:func:`check_bind`). With ``signals`` uvicorn handles
    SIGINT/SIGTERM (a graceful stop: ``tickkit dashboard``); without, the program that calls it
    owns them (a worker serving the dashboard beside it)."""
    _require_extra()
    check_bind(host, token)
    import uvicorn

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise PluginError("the dashboard server runs on asyncio only (uvicorn)") from None

    class _Server(uvicorn.Server):
        # the host program handles signals (a worker's Ctrl-C stops the worker)
        def install_signal_handlers(self) -> None:
            return None

        def capture_signals(self) -> Any:
            import contextlib

            return contextlib.nullcontext()

    # bound here, not by uvicorn: uvicorn ends the whole process (sys.exit) when it cannot bind
    sock = bind(host, port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = _Server(config) if not signals else uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    finally:
        if not task.done():
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await task
        sock.close()
    if not server.started and task.done() and task.exception() is None:
        raise PluginError(f"the dashboard could not start on {host}:{port} (see the log)")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; ``PluginError`` naming them when it
    cannot be had (a port in use, an address this machine does not have)."""
    addr = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise PluginError(f"the dashboard cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise PluginError(f"the dashboard cannot listen on {host}:{port}: {reason}") from None
    return sock


def _settings(kernel: Kernel) -> tuple[str, int, str | None, float]:
    raw = kernel.settings.get("dashboard", {})
    if raw is True or raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise PluginError(f"the dashboard setting must be a mapping, got {raw!r}")
    unknown = set(raw) - {"host", "port", "token", "refresh"}
    if unknown:
        raise PluginError(f"unknown dashboard setting(s): {', '.join(sorted(map(str, unknown)))}")
    host = raw.get("host", DEFAULT_HOST)
    if not isinstance(host, str) or not host.strip():
        raise PluginError(f"dashboard host must be a host name or address, got {host!r}")
    port = raw.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise PluginError(f"dashboard port must be an int from 0 to 65535, got {port!r}")
    token = raw.get("token") or os.environ.get(TOKEN_ENV) or None
    refresh = raw.get("refresh", 5.0)
    check_bind(host, token)
    return host, port, token, refresh


@hookimpl
def tickkit_kernel_services(kernel: Kernel) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    """Serve the dashboard beside the worker (settings: ``{"dashboard": {"host", "port",
    "token", "refresh"}}``; all optional)."""
    _require_extra()
    host, port, token, refresh = _settings(kernel)
    app = create_app(kernel, token=token, refresh=refresh)

    async def run() -> None:
        await serve(app, host=host, port=port, token=token)

    return [run]
