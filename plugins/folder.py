"""Static tasks from a folder (``Kernel(settings={"tasks_dir": ...})``); see docs/tasks-folder.md."""

from __future__ import annotations
