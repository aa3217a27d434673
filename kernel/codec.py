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
            return json.dumps(data, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidDataError(
                f"task data must be JSON (dicts with string keys, lists, strings, numbers, "
                f"booleans, None), got {_short(data)}: {exc}"
            ) from None

    def decode(self, text: str) -> Any:
        return json.loads(text)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
