"""Static tasks from a folder (``Kernel(settings={"tasks_dir": ...})``); see docs/tasks-folder.md.

Every ``.py`` file under the folder is imported, recursively, skipping files and folders whose
names start with ``_`` (or ``.``). A file defines tasks with ``@tickkit.task(...)``; each file is
imported with a fresh module name inside :func:`tickkit.registry.collecting`, so the plugin knows
which tasks each file defines (the default registry stays untouched) and the same file can be
imported again on reload.

Settings (``kernel.settings``):

- ``tasks_dir``: the folder (a path). Absent: ``app/tasks/`` under the working directory when that
  folder exists, else no folder is loaded.

A file that fails to import is reported (``file:line: error``) on the ``tickkit.folder`` logger
and skipped; the other files load and the kernel starts. Two tasks with one name raise
:class:`~tickkit.DuplicateTaskError` naming both files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import linecache
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from tickkit import DuplicateTaskError, TaskDefinition, TaskRegistry, TickkitError, hookimpl
from tickkit.plugin_api import collecting

if TYPE_CHECKING:
    from tickkit import Kernel

log = logging.getLogger("tickkit.folder")

#: the folder loaded when ``tasks_dir`` is not set (relative to the working directory)
DEFAULT_TASKS_DIR = Path("app") / "tasks"

__all__ = [
    "DEFAULT_TASKS_DIR",
    "FolderUpdate",
    "LoadError",
    "TaskFile",
    "TaskFolder",
    "folder_of",
    "tasks_dir",
]

_module_numbers = itertools.count(1)


@attrs.define
class _State:
    """This plugin's state in one kernel (``Kernel.plugin_state``)."""

    folder: TaskFolder | None = None


def _state(kernel: Kernel) -> _State:
    return kernel.plugin_state(_State, _State)


@attrs.frozen
class LoadError:
    """A task file that could not be loaded: where and why."""

    path: Path
    #: the line in ``path`` the error points at (None when unknown)
    line: int | None
    #: ``ExceptionType: message``
    message: str
    #: the formatted traceback, when the error came from running the file
    traceback: str | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"


@attrs.frozen
class TaskFile:
    """One loaded task file and the tasks it defines."""

    path: Path
    tasks: tuple[TaskDefinition, ...]
    #: the ``sys.modules`` name it was imported under
    module: str


@attrs.frozen(repr=False)
class FolderUpdate:
    """What one look at the folder changed (also the event a reload publishes)."""

    #: tasks that are new
    added: tuple[TaskDefinition, ...] = ()
    #: tasks defined again (their file changed)
    replaced: tuple[TaskDefinition, ...] = ()
    #: names of tasks that are gone
    removed: tuple[str, ...] = ()
    #: files that failed to load in this look (their previous tasks, if any, are kept)
    errors: tuple[LoadError, ...] = ()
    #: files imported again, added or removed
    files: tuple[Path, ...] = ()

    @property
    def added_names(self) -> list[str]:
        return [d.name for d in self.added]

    @property
    def replaced_names(self) -> list[str]:
        return [d.name for d in self.replaced]

    @property
    def tasks_changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)

    def __bool__(self) -> bool:
        return bool(self.files or self.errors)

    def __repr__(self) -> str:
        return (
            f"FolderUpdate(added={self.added_names}, replaced={self.replaced_names}, "
            f"removed={list(self.removed)}, errors={[str(e) for e in self.errors]}, "
            f"files={[str(p) for p in self.files]})"
        )

    def apply(self, registry: TaskRegistry) -> None:
        """Make ``registry`` match: remove the removed names, add or replace the others."""
        for name in self.removed:
            registry.remove(name)
        for definition in (*self.added, *self.replaced):
            registry.add(definition, replace=True)


def _skipped(name: str) -> bool:
    return name.startswith(("_", "."))


def _line_of(definition: TaskDefinition) -> int | None:
    source = definition.source or ""
    match = re.search(r":(\d+)$", source)
    return int(match.group(1)) if match else None


def _where(path: Path, definition: TaskDefinition) -> str:
    line = _line_of(definition)
    return f"{path} (line {line})" if line is not None else str(path)


class TaskFolder:
    """The task files of one folder and the tasks each defines.

    :meth:`refresh` compares the folder with what was loaded (by content) and imports the files
    that are new or changed; it is how the kernel loads the folder at start and how hot reload
    picks up edits.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        #: loaded files by path
        self.files: dict[Path, TaskFile] = {}
        #: files whose last import failed, by path
        self.errors: dict[Path, LoadError] = {}
        #: the content digest last imported (or tried) per file
        self._seen: dict[Path, str] = {}

    def definitions(self) -> list[TaskDefinition]:
        return [d for f in self.files.values() for d in f.tasks]

    def owner(self, name: str) -> Path | None:
        """The file that defines task ``name``, or None."""
        for file in self.files.values():
            if any(d.name == name for d in file.tasks):
                return file.path
        return None

    def relevant(self, path: str | Path) -> bool:
        """True when ``path`` is under the folder and no part of it is skipped (``_``, ``.``)."""
        try:
            rel = Path(path).resolve().relative_to(self.root)
        except ValueError:
            return False
        return not any(_skipped(part) for part in rel.parts)

    def scan(self) -> dict[Path, bytes]:
        """The task files now in the folder, with their content, in a stable order."""
        found: dict[Path, bytes] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
            for filename in sorted(filenames):
                if filename.endswith(".py") and not _skipped(filename):
                    path = Path(dirpath, filename)
                    try:
                        found[path] = path.read_bytes()
                    except OSError:  # removed while we looked: the next look sees it gone
                        continue
        return found

    def refresh(
        self,
        *,
        outside: Callable[[str], str | None] = lambda _name: None,
        strict: bool = False,
    ) -> FolderUpdate:
        """Import new and changed files, forget removed ones, and say what changed.

        ``outside(name)``: where a task of that name defined outside this folder comes from (or
        None); such a name cannot be taken by a file. ``strict``: raise
        :class:`~tickkit.DuplicateTaskError` on two tasks with one name (at start); otherwise the
        file that brought the second one is reported as an error and its previous tasks are kept.
        Other import errors are always reported, never raised.
        """
        on_disk = self.scan()
        digests = {p: hashlib.sha256(b).hexdigest() for p, b in on_disk.items()}
        known = {*self._seen, *self.files, *self.errors}
        gone = sorted(p for p in known if p not in on_disk)
        changed = [p for p in on_disk if self._seen.get(p) != digests[p]]
        errors: dict[Path, LoadError] = {}
        proposed: dict[Path, TaskFile] = {}
        for path in changed:
            self._seen[path] = digests[path]
            try:
                proposed[path] = _import(path, on_disk[path])
            except DuplicateTaskError as exc:
                if strict:
                    raise
                errors[path] = _error_for(path, exc)
            except (Exception, SystemExit) as exc:
                errors[path] = _error_for(path, exc)
        self._check_names(proposed, gone, errors, outside, strict)

        before = {d.name: d for d in self.definitions()}
        for path in gone:
            self._seen.pop(path, None)
            self.errors.pop(path, None)
            old = self.files.pop(path, None)
            if old is not None:
                sys.modules.pop(old.module, None)
        for path, file in proposed.items():
            old = self.files.get(path)
            if old is not None:
                sys.modules.pop(old.module, None)
            self.files[path] = file
            self.errors.pop(path, None)
        self.errors.update(errors)
        after = {d.name: d for d in self.definitions()}
        for error in errors.values():
            log.error("could not load tasks from %s", error)
            if error.traceback:
                log.debug("%s", error.traceback)
        return FolderUpdate(
            added=tuple(d for n, d in after.items() if n not in before),
            replaced=tuple(d for n, d in after.items() if n in before and before[n] is not d),
            removed=tuple(n for n in before if n not in after),
            errors=tuple(errors.values()),
            files=tuple(sorted({*proposed, *gone, *errors})),
        )

    def _check_names(
        self,
        proposed: dict[Path, TaskFile],
        gone: list[Path],
        errors: dict[Path, LoadError],
        outside: Callable[[str], str | None],
        strict: bool,
    ) -> None:
        """Drop proposed files that would define a name twice (or raise when ``strict``).

        Files that did not change keep their names; among changed files the first in path
        order wins. A dropped file keeps its previous tasks, so the check runs again.
        """
        while True:
            owners: dict[str, tuple[Path, TaskDefinition]] = {}
            kept = [p for p in self.files if p not in proposed and p not in gone]
            clash: tuple[Path, str] | None = None
            for path in [*kept, *sorted(proposed)]:
                file = proposed.get(path) or self.files[path]
                for definition in file.tasks:
                    first = owners.get(definition.name)
                    elsewhere = outside(definition.name) if path in proposed else None
                    if first is None and elsewhere is None:
                        owners[definition.name] = (path, definition)
                        continue
                    one = _where(*first) if first is not None else elsewhere
                    message = (
                        f"two tasks are named {definition.name!r}: one in {one}, "
                        f"the other in {_where(path, definition)}"
                    )
                    if strict:
                        raise DuplicateTaskError(message)
                    clash = (path, message)
                    errors[path] = LoadError(
                        path, _line_of(definition), f"DuplicateTaskError: {message}"
                    )
                    break
                if clash is not None:
                    break
            if clash is None:
                return
            dropped = proposed.pop(clash[0])  # kept files never clash: they were consistent
            sys.modules.pop(dropped.module, None)
            # looked at again next time, when the other definition may be gone
            self._seen.pop(clash[0], None)


def _module_name(path: Path) -> str:
    slug = re.sub(r"\W", "_", path.stem)
    return f"_tickkit_tasks_{next(_module_numbers)}_{slug}"


def _import(path: Path, source: bytes) -> TaskFile:
    """Run a task file as a new module and collect the tasks it defines."""
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    registry = TaskRegistry()
    linecache.checkcache(str(path))
    sys.modules[name] = module
    try:
        # compiled from the bytes that were read (not a cached .pyc): what is loaded is what
        # was compared
        code = compile(source, str(path), "exec", dont_inherit=True)
        with collecting(registry):
            exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return TaskFile(path, tuple(registry), name)


def _error_for(path: Path, exc: BaseException) -> LoadError:
    line: int | None = None
    text: str | None = None
    if isinstance(exc, SyntaxError) and exc.filename == str(path):
        line = exc.lineno
        message = f"{type(exc).__name__}: {exc.msg}"
    else:
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            if frame.f_code.co_filename == str(path):
                line = lineno
        message = f"{type(exc).__name__}: {exc}"
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return LoadError(path, line, message, text)


def tasks_dir(kernel: Kernel) -> Path | None:
    """The folder this kernel loads tasks from (``settings["tasks_dir"]``), or None."""
    value = kernel.settings.get("tasks_dir")
    if value is None:
        default = Path.cwd() / DEFAULT_TASKS_DIR
        return default if default.is_dir() else None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise TickkitError(f"settings['tasks_dir'] must be a folder path, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise TickkitError(f"tasks folder {str(value)!r} does not exist or is not a folder")
    return path


def folder_of(kernel: Kernel) -> TaskFolder | None:
    """The task folder this kernel loaded when it started, or None (also once it stopped:
    the kernel drops its plugins' state when it closes)."""
    return _state(kernel).folder


@hookimpl
def tickkit_load_tasks(kernel: Kernel) -> list[TaskDefinition] | None:
    root = tasks_dir(kernel)
    if root is None:
        return None
    folder = TaskFolder(root)
    if kernel.settings.get("tasks_dir") is None:
        # a script that happens to run beside such a folder gets its tasks too: say so
        log.info(
            "settings['tasks_dir'] is not set: loading the default tasks folder %s", folder.root
        )

    def outside(name: str) -> str | None:
        found = kernel.tasks.get(name)
        return None if found is None else (found.source or "code outside the tasks folder")

    update = folder.refresh(outside=outside, strict=True)
    _state(kernel).folder = folder
    log.info(
        "loaded %d task(s) from %d file(s) in %s%s",
        len(update.added),
        len(folder.files),
        folder.root,
        f" ({len(update.errors)} file(s) failed)" if update.errors else "",
    )
    return list(update.added)
