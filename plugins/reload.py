"""Hot reload of the tasks folder in development (``settings={"reload": True}``).

Needs the ``reload`` extra (watchfiles). A kernel service watches the folder the folder plugin
loaded; after each batch of changes it imports the new and changed files again, replaces or
removes their definitions in ``kernel.tasks``, and reconciles static schedules with
``kernel.sync_static()`` (a schedule that did not change keeps its next run: no double and no
lost run). A file that fails to import keeps its previous tasks and its error is logged.
``immediate`` tasks do not run again: the kernel runs them only when it starts.

Every reload publishes a :class:`~tickkit.plugins.folder.FolderUpdate`; tests and tools read them
without sleeping::

    reloader = reloader_of(kernel)
    with anyio.fail_after(10):
        await reloader.ready.wait()        # the watcher sees changes from now on
    updates = reloader.subscribe()
    (tasks_dir / "new.py").write_text(...)
    with anyio.fail_after(10):
        update = await updates.receive()

See docs/tasks-folder.md.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from tickkit import MissingExtraError, TickkitError, hookimpl

from .folder import FolderUpdate, TaskFolder, folder_of

if TYPE_CHECKING:
    from tickkit import Kernel

log = logging.getLogger("tickkit.reload")

__all__ = ["Reloader", "reload_enabled", "reloader_of"]


class _State:
    """This plugin's state in one kernel (``Kernel.plugin_state``)."""

    __slots__ = ("reloader",)

    def __init__(self) -> None:
        self.reloader: Reloader | None = None


def _state(kernel: Kernel) -> _State:
    return kernel.plugin_state(_State, _State)


def reload_enabled(kernel: Kernel) -> bool:
    """``settings["reload"]`` (a bool, default False)."""
    value = kernel.settings.get("reload", False)
    if not isinstance(value, bool):
        raise TickkitError(f"settings['reload'] must be True or False, got {value!r}")
    return value


def _awatch() -> Callable[..., Any]:
    try:
        from watchfiles import awatch
    except ImportError as exc:
        raise MissingExtraError(
            "hot reload (settings reload=True)", "reload", "watchfiles"
        ) from exc
    return awatch


class _WatchSignal:
    """The ``stop_event`` handed to watchfiles: it stops the watcher, and the watcher's first
    look at it (from its thread, once it watches) tells the reloader it is watching."""

    def __init__(self, on_watching: Callable[[], None]) -> None:
        self._stop = threading.Event()
        self._on_watching: Callable[[], None] | None = on_watching

    def is_set(self) -> bool:
        notify, self._on_watching = self._on_watching, None
        if notify is not None:
            try:
                anyio.from_thread.run_sync(notify)
            except Exception:  # the event loop is gone: nothing waits any more
                pass
        return self._stop.is_set()

    def set(self) -> None:
        self._stop.set()


class Reloader:
    """Watches one kernel's task folder and applies changes to it (see the module docstring).

    Attributes: ``ready``, an :class:`anyio.Event` set once the watcher watches (and the folder
    was compared once with what was loaded, so an edit made before is not lost); ``updates``,
    the number of updates published so far.
    """

    def __init__(self, kernel: Kernel, folder: TaskFolder) -> None:
        self.kernel = kernel
        self.folder = folder
        self.ready = anyio.Event()
        self.updates = 0
        self._watching = anyio.Event()
        self._signal = _WatchSignal(self._watching.set)
        self._lock = anyio.Lock()
        self._subscribers: list[MemoryObjectSendStream[FolderUpdate]] = []

    def subscribe(self, max_buffer_size: float = 100) -> MemoryObjectReceiveStream[FolderUpdate]:
        """A stream that receives every update published from now on (close it when done)."""
        send, receive = anyio.create_memory_object_stream[FolderUpdate](max_buffer_size)
        self._subscribers.append(send)
        return receive

    def stop(self) -> None:
        """Stop watching (the kernel calls it when it stops)."""
        self._signal.set()

    async def run(self) -> None:
        """The kernel service: watch until the kernel stops."""
        awatch = _awatch()
        from watchfiles import DefaultFilter

        default_filter = DefaultFilter()

        def wanted(change: Any, path: str) -> bool:
            return bool(default_filter(change, path)) and self.folder.relevant(path)

        async with anyio.create_task_group() as tg:
            tg.start_soon(self._catch_up)
            async for _changes in awatch(
                self.folder.root,
                watch_filter=wanted,
                stop_event=self._signal,
                rust_timeout=1_000,
            ):
                await self.apply()
            tg.cancel_scope.cancel()

    async def _catch_up(self) -> None:
        await self._watching.wait()
        await self.apply()  # what changed between the kernel's start and the watcher's
        self.ready.set()
        log.info("watching %s for changes", self.folder.root)

    async def apply(self) -> FolderUpdate | None:
        """Compare the folder with what is loaded and apply the difference to the kernel.

        Returns the published update, or None when nothing changed.
        """
        async with self._lock:
            tasks = self.kernel.tasks

            def outside(name: str) -> str | None:
                found = tasks.get(name)
                if found is None or self.folder.owner(name) is not None:
                    return None
                return found.source or "code outside the tasks folder"

            try:
                update = self.folder.refresh(outside=outside)
            except Exception:
                log.exception("reloading %s failed", self.folder.root)
                return None
            if not update:
                return None
            update.apply(tasks)
            if update.tasks_changed:
                try:
                    await self.kernel.sync_static()
                except Exception:  # the store failed: the next change or restart syncs again
                    log.exception("reconciling static schedules after a reload failed")
            log.info(
                "reloaded %s: added %s, replaced %s, removed %s%s",
                ", ".join(str(_rel(p, self.folder.root)) for p in update.files),
                update.added_names or "none",
                update.replaced_names or "none",
                list(update.removed) or "none",
                f"; {len(update.errors)} file(s) failed" if update.errors else "",
            )
            self.updates += 1
            self._publish(update)
            return update

    def _publish(self, update: FolderUpdate) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(update)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._subscribers.remove(send)
            except anyio.WouldBlock:
                log.warning("a reload subscriber is not reading; an update was dropped")


def _rel(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def reloader_of(kernel: Kernel) -> Reloader | None:
    """The reloader of a running kernel started with ``settings={"reload": True}``, or None."""
    return _state(kernel).reloader


@hookimpl
def tickkit_load_tasks(kernel: Kernel) -> None:
    # checked here, before the kernel runs anything: a bad setting or a missing extra fails start
    if reload_enabled(kernel):
        _awatch()


@hookimpl
def tickkit_kernel_services(
    kernel: Kernel,
) -> list[Callable[[], Coroutine[Any, Any, None]]] | None:
    if not reload_enabled(kernel):
        return None
    folder = folder_of(kernel)
    if folder is None:
        log.warning("reload is on but no tasks folder was loaded (set settings['tasks_dir'])")
        return None
    reloader = Reloader(kernel, folder)
    _state(kernel).reloader = reloader
    return [reloader.run]


@hookimpl
def tickkit_kernel_stopping(kernel: Kernel) -> None:
    state = _state(kernel)
    reloader, state.reloader = state.reloader, None
    if reloader is not None:
        reloader.stop()
