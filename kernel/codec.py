"""Task data codecs: task data is JSON, never pickle."""

from __future__ import annotations

import abc
import json
import math
import re
from typing import Any

from .errors import InvalidDataError, short

#: how deep task data may nest (a list in a dict counts 2); deeper data is refused
MAX_DEPTH = 64
#: the range of integers in task data: signed 64-bit, what every store and language keeps
#: (Discord snowflakes fit); larger ones are refused rather than silently rounded
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1

#: a lone surrogate cannot be encoded to UTF-8, so no store can hold it
_SURROGATE = re.compile("[\ud800-\udfff]")


def find_surrogate(text: str) -> int:
    """The index of the first lone surrogate in ``text``, or -1."""
    if text.isascii():
        return -1
    found = _SURROGATE.search(text)
    return found.start() if found is not None else -1


class Codec(abc.ABC):
    """Turns task data into the text a driver stores, and back."""

    @abc.abstractmethod
    def encode(self, data: Any) -> str:
        """Return the stored text for ``data``; raise InvalidDataError for data it refuses."""

    @abc.abstractmethod
    def decode(self, text: str) -> Any:
        """Return the data that ``encode`` was given."""


class JSONCodec(Codec):
    """Strict JSON: dicts with string keys, lists (tuples become lists), strings, booleans,
    None, integers in the signed 64-bit range and finite floats, nested at most ``MAX_DEPTH``
    deep; no lone surrogates in strings or keys."""

    def encode(self, data: Any) -> str:
        problem = check_json(data)
        if problem is not None:
            where, why = problem
            place = f" (at data{where})" if where else ""
            raise InvalidDataError(f"task data must be JSON: {why} in {short(data)}{place}")
        try:
            return json.dumps(data, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError, RecursionError) as exc:  # pragma: no cover - check_json
            raise InvalidDataError(
                f"task data must be JSON, got {short(data)}: {short(exc)}"
            ) from None

    def decode(self, text: str) -> Any:
        return json.loads(text)


def check_json(data: Any) -> tuple[str, str] | None:
    """Why ``data`` is not the JSON tickkit stores, as (path, reason), or None when it is.

    Iterative (no recursion), so hostile nesting cannot exhaust the stack.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, str):
            at = find_surrogate(value)
            if at >= 0:
                return path, f"the string {short(value)} holds a lone surrogate at index {at}"
            continue
        if isinstance(value, int):
            if not MIN_INT <= value <= MAX_INT:
                return path, f"the integer {short(value)} is outside the signed 64-bit range"
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return path, f"the number {short(value)} is not finite"
            continue
        if isinstance(value, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                return path, f"it nests deeper than {MAX_DEPTH} levels"
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        return path, f"dict keys must be strings, got key {short(key)}"
                    at = find_surrogate(key)
                    if at >= 0:
                        return path, f"the key {short(key)} holds a lone surrogate at index {at}"
                    stack.append((item, f"{path}[{short(key, 40)}]", depth + 1))
            else:
                for index, item in enumerate(value):
                    stack.append((item, f"{path}[{index}]", depth + 1))
            continue
        return path, f"{type(value).__name__} is not a JSON type (got {short(value)})"
    return None
