"""``python -m tickkit``: runs the ``tickkit`` console script.

The command itself is a plugin (``tickkit.plugins.cli``); the kernel finds it through the
``console_scripts`` entry point rather than importing it, so the kernel imports no plugin.
"""

from __future__ import annotations

import sys
from importlib import metadata


def main(argv: list[str] | None = None) -> int:
    found = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "tickkit"]
    if not found:
        print("tickkit: the command is not installed (reinstall tickkit)", file=sys.stderr)
        return 1
    cli = found[0].load()
    result: int = cli(argv)
    return result


if __name__ == "__main__":
    sys.exit(main())
