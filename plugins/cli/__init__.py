"""The ``tickkit`` command (see docs/cli.md)."""
