"""A seeded corpus of cron patterns in cron-parser 5's syntax, for the differential test against
Node BullMQ's cron-parser (tests/test_cron_differential.py)."""

from __future__ import annotations

import random

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MACROS = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "@minutely",
    "@weekdays",
    "@weekends",
]
#: zones: UTC, half-hour offsets, a 30-minute DST shift, both hemispheres
ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/Santiago",
    "Australia/Adelaide",
]
#: start instants (UTC ISO): ordinary days and the days before DST changes of the zones above
STARTS = [
    "2026-01-01T00:00:00+00:00",
    "2026-03-07T12:00:00+00:00",
    "2026-03-28T12:00:00+00:00",
    "2026-04-04T00:00:00+00:00",
    "2026-04-04T12:00:00+00:00",
    "2026-09-05T12:00:00+00:00",
    "2026-09-26T00:00:00+00:00",
    "2026-10-03T00:00:00+00:00",
    "2026-10-24T12:00:00+00:00",
    "2026-10-31T12:00:00+00:00",
    "2026-07-15T08:30:00+00:00",
]


def _number(rng: random.Random, lo: int, hi: int) -> int:
    return rng.randint(lo, hi)


def _item(rng: random.Random, lo: int, hi: int, names: list[str] | None, dense: bool) -> str:
    """One list item: a value, a name, a range, a step (``*/n``, ``a-b/n``, ``a/n``)."""
    kind = rng.choice(["value", "range", "step", "rangestep", "startstep", "name"])
    if kind == "name" and names:
        a = rng.randrange(len(names))
        if rng.random() < 0.5:
            b = rng.randrange(a, len(names))
            return f"{names[a]}-{names[b]}"
        return names[a].upper() if rng.random() < 0.3 else names[a]
    if kind == "range":
        a = _number(rng, lo, hi)
        return f"{a}-{_number(rng, a, hi)}"
    if kind == "step":
        return f"*/{rng.randint(2, max(2, (hi - lo) // 2 if dense else hi - lo))}"
    if kind == "rangestep":
        a = _number(rng, lo, hi)
        return f"{a}-{_number(rng, a, hi)}/{rng.randint(1, 7)}"
    if kind == "startstep":
        return f"{_number(rng, lo, hi)}/{rng.randint(1, 9)}"
    return str(_number(rng, lo, hi))


def _values(item: str, lo: int, hi: int, names: list[str] | None) -> set[int]:
    """The values of a generated item (to keep list items apart: cron-parser refuses overlaps)."""
    text = item.lower()
    for i, name in enumerate(names or []):
        text = text.replace(name, str(i + lo if names is not None and lo == 1 else i))
    rng_text, _, step = text.partition("/")
    if rng_text == "*":
        a, b = lo, hi
    elif "-" in rng_text:
        a, b = (int(x) for x in rng_text.split("-"))
    else:
        a = int(rng_text)
        b = hi if step else a
    values = set(range(a, b + 1, int(step or 1)))
    return {v % 7 for v in values} if hi == 7 else values


def _field(
    rng: random.Random,
    lo: int,
    hi: int,
    names: list[str] | None = None,
    star: float = 0.4,
    dense: bool = True,
) -> str:
    if rng.random() < star:
        return "*"
    items: list[str] = []
    taken: set[int] = set()
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        item = _item(rng, lo, hi, names, dense)
        values = _values(item, lo, hi, names)
        if not values & taken:
            items.append(item)
            taken |= values
    return ",".join(items)


def _dom(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return rng.choice(["*", "*", "?"])
    if r < 0.55:
        return rng.choice(["L", "1,L", "15,L", "L"])
    return _field(rng, 1, 31, star=0)


def _dow(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return rng.choice(["*", "*", "?"])
    if r < 0.55:
        return f"{rng.randint(0, 7)}#{rng.randint(1, 4)}"
    if r < 0.62:
        return f"{rng.choice([str(rng.randint(0, 7)), rng.choice(DAYS)])}L"
    if r < 0.66:
        return f"{rng.choice(DAYS)}#{rng.randint(1, 5)}"
    if r < 0.74:
        # a list with L items: cron-parser reads it as the union of its items
        last = [
            f"{rng.choice([str(d), DAYS[d % 7]])}L" for d in rng.sample(range(8), rng.randint(1, 2))
        ]
        items = [*last, _field(rng, 0, 7, DAYS, star=0)] if rng.random() < 0.8 else last
        if len(items) == 1:
            items.append(str(rng.randint(0, 7)))
        rng.shuffle(items)
        return ",".join(items)
    return _field(rng, 0, 7, DAYS, star=0)


def corpus(seed: int = 12, size: int = 520) -> list[str]:
    """``size`` distinct patterns (macros first), every syntax element, combined."""
    rng = random.Random(seed)
    out: list[str] = list(MACROS)
    seen = set(out)
    # hand-picked rows of docs/time.md's table and the readings that differ from classic cron
    for fixed in [
        "0 9 * * 1#2",
        "30 18 * * 5L",
        "0 0 1,L * *",
        "0 0 */2 * *",
        "0 0 * * 1/2",
        "0 0 1/2 * mon",
        "0 0 13 * */2",
        "30 2 * * *",
        "30 1 * * *",
        "*/30 * * * *",
        "0,15,30 2 * * *",
        "15 */2 * * *",
        "45 1 * * *",
        "0 12 * JAN 7",
        "*/20 * * * * *",
        "0 0 29 2 *",
        "0 0 1-5,3 * *",
        # day-of-week lists with L items (the union of the items), and L after a number > 7
        "0 0 * * 1,5L",
        "0 0 * * 5L,1",
        "0 0 * * 0,6L",
        "0 12 * * 5L,6L",
        "0 0 * * 1-3,5L",
        "0 0 * * */3,friL",
        "0 0 15 * 1,5L",
        "0 0 L * mon,5L",
        "0 0 * * 14L",
        "0 0 * * 8L",
        "0 0 * * 1#2,5L",
    ]:
        out.append(fixed)
        seen.add(fixed)
    while len(out) < size:
        six = rng.random() < 0.2
        second = _field(rng, 0, 59, star=0.3) if six else None
        minute = _field(rng, 0, 59, star=0.15)
        hour = _field(rng, 0, 23, star=0.35)
        month = _field(rng, 1, 12, MONTHS, star=0.7)
        fields = [minute, hour, _dom(rng), month, _dow(rng)]
        if second is not None:
            fields.insert(0, second)
        pattern = " ".join(fields)
        if pattern not in seen:
            seen.add(pattern)
            out.append(pattern)
    return out
