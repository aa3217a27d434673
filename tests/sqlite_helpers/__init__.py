"""Scripts that the SQLite driver's multi-process tests run in separate Python processes."""
