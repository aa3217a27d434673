"""The ``tickkit`` command (see docs/cli.md): ``tickkit run`` is a worker; ``list``, ``show``,
``add``, ``delete``, ``pause``, ``resume`` and ``run-now`` manage a store; ``next`` previews a
schedule; ``drivers`` and ``plugins`` show what is installed.

The console script ``tickkit`` and ``python -m tickkit`` both call :func:`main`.
"""

from __future__ import annotations

from .app import build_parser, main

__all__ = ["build_parser", "main"]
