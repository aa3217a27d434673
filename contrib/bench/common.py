"""Small helpers shared by the benchmarks in contrib/bench (statistics and the result table).

Keep this module small and stable: every benchmark imports it. It needs only the standard
library, so a benchmark can run it in a bare subprocess too.

Typical use::

    from common import Row, machine_summary, median, percentile, print_table

    rows = [
        Row("fires/s, 100k due at once", "jobs/s", {"tickkit": 41000.0, "APScheduler": 9000.0},
            higher_is_better=True),
        Row("lateness p99", "ms", {"tickkit": 1.2, "APScheduler": 3.4}, higher_is_better=False),
    ]
    print_table("memory driver", rows)

The first column of values is the subject; every other column gets a ratio column
``subject / other`` and each row says whether a ratio above or below 1 favours the subject.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Row",
    "format_value",
    "machine_summary",
    "median",
    "percentile",
    "print_table",
    "run_json_subprocess",
]


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (mean of the two middle ones for an even count)."""
    data = sorted(values)
    if not data:
        raise ValueError("median of an empty sequence")
    mid = len(data) // 2
    if len(data) % 2:
        return float(data[mid])
    return (data[mid - 1] + data[mid]) / 2.0


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, linearly interpolated between ranks."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {p!r}")
    data = sorted(values)
    if not data:
        raise ValueError("percentile of an empty sequence")
    pos = (len(data) - 1) * p / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


@dataclass
class Row:
    """One line of a result table: a metric measured for several implementations."""

    metric: str
    unit: str
    #: value per implementation label, in column order; None: not measured (printed as "n/a")
    values: Mapping[str, float | None]
    #: True when a larger value is better (throughput), False when smaller is (latency, bytes)
    higher_is_better: bool
    #: a short remark printed after the row (settings, number of runs...)
    note: str = field(default="")


def format_value(value: float | None) -> str:
    """A number with about four significant digits, thousands separated; None is "n/a"."""
    if value is None or math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _ratio(subject: float | None, other: float | None) -> str:
    if subject is None or other is None or other == 0 or math.isnan(subject) or math.isnan(other):
        return "n/a"
    return f"{subject / other:.2f}x"


def print_table(
    title: str,
    rows: Sequence[Row],
    *,
    labels: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    file: Any = None,
) -> None:
    """Print ``rows`` as a fixed-width table with ratio columns ``labels[0] / labels[i]``.

    ``labels``: the implementation columns in order (default: the keys of the first row).
    ``notes``: lines printed under the table (settings, machine, how to read the ratios).
    """
    out = file if file is not None else sys.stdout
    if labels is None:
        labels = list(rows[0].values) if rows else []
    subject = labels[0] if labels else ""
    header = ["metric", "unit", *labels]
    header += [f"{subject}/{other}" for other in labels[1:]]
    header.append("better")
    body: list[list[str]] = []
    for row in rows:
        cells = [row.metric, row.unit]
        cells += [format_value(row.values.get(label)) for label in labels]
        cells += [_ratio(row.values.get(subject), row.values.get(o)) for o in labels[1:]]
        cells.append("ratio > 1" if row.higher_is_better else "ratio < 1")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(header))
    print(f"\n{title}", file=out)
    print(rule, file=out)
    print(line(header), file=out)
    print(rule, file=out)
    for row, cells in zip(rows, body, strict=True):
        print(line(cells), file=out)
        if row.note:
            print(f"    ({row.note})", file=out)
    print(rule, file=out)
    for note in notes:
        print(note, file=out)
    out.flush()


def machine_summary() -> str:
    """One line describing the interpreter and the machine the numbers come from."""
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU(s)"
    )


def run_json_subprocess(argv: Sequence[str], *, timeout: float = 600.0) -> Any:
    """Run ``argv`` in a fresh process and return the JSON value on its last stdout line.

    Used to measure something (memory above all) in a clean interpreter; stderr passes through,
    a non-zero exit raises :class:`RuntimeError` with the command and its output.
    """
    proc = subprocess.run(
        list(argv), stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark subprocess {list(argv)!r} exited with {proc.returncode}: {proc.stdout!r}"
        )
    return json.loads(lines[-1])
