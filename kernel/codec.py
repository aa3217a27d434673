"""Task data codecs: task data is JSON, never pickle."""

from __future__ import annotations

import abc
import json
from typing import Any

from .errors import InvalidDataError


class Codec(abc.ABC):
    """Turns task data into the text a driver stores, and back."""

    @abc.abstractmethod
    def encode(self, data: Any) -> str:
        """Return the stored text for ``data``; raise InvalidDataError for data it refuses."""

    @abc.abstractmethod
    def decode(self, text: str) -> Any:
        """Return the data that ``encode`` was given."""


class JSONCodec(Codec):
    """Strict JSON: no NaN or infinity, string keys only, no arbitrary objects."""

    def encode(self, data: Any) -> str:
        try:
            text = json.dumps(data, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidDataError(
                f"task data must be JSON (dicts with string keys, lists, strings, numbers, "
                f"booleans, None), got {_short(data)}: {exc}"
            ) from None
        # json.dumps turns keys 1, 2.5, True and None into strings: the task would get other
        # data than it was given
        bad = _non_string_key(data)
        if bad is not _NO_KEY:
            raise InvalidDataError(
                f"task data must be JSON: dict keys must be strings, got key {_short(bad)} "
                f"in {_short(data)}"
            )
        return text

    def decode(self, text: str) -> Any:
        return json.loads(text)


_NO_KEY: Any = object()


def _non_string_key(data: Any) -> Any:
    """The first dict key in ``data`` that is not a string, or ``_NO_KEY``."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return key
                if isinstance(item, (dict, list, tuple)):
                    stack.append(item)
        elif isinstance(value, (list, tuple)):
            stack.extend(item for item in value if isinstance(item, (dict, list, tuple)))
    return _NO_KEY


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
