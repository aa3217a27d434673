"""A job's retry delays: :class:`Backoff` (fixed or exponential, capped, with jitter)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from .errors import InvalidTaskError, short
from .times import MAX_DURATION, _number, to_seconds


def _backoff_seconds(value: float | int | timedelta | None) -> float:
    seconds = to_seconds(value, "backoff delay")
    return 0.0 if seconds is None else seconds


def _backoff_max(value: float | int | timedelta | None) -> float | None:
    return to_seconds(value, "backoff max_delay")


@attrs.frozen
class Backoff:
    """How long to wait before a retry.

    ``fixed``: ``delay`` every time. ``exponential``: ``delay * 2 ** (attempt - 1)`` for the retry
    after attempt ``attempt`` (1, 2, 4, ... times ``delay``), capped at ``max_delay``. ``jitter``
    (0 to 1) takes up to that fraction off each delay at random, so retries of many jobs spread.
    Delays are whole milliseconds (rounded), at most ``MAX_DURATION``.
    """

    kind: str = attrs.field(default="fixed")
    delay: float = attrs.field(default=0.0, converter=_backoff_seconds)
    max_delay: float | None = attrs.field(default=None, converter=_backoff_max)
    jitter: float = attrs.field(default=0.0)

    @kind.validator
    def _check_kind(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or value not in ("fixed", "exponential"):
            raise InvalidTaskError(
                f"backoff type must be 'fixed' or 'exponential', got {short(value)}"
            )

    @jitter.validator
    def _check_jitter(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if not _number(value) or not 0 <= value <= 1:
            raise InvalidTaskError(f"backoff jitter must be between 0 and 1, got {short(value)}")

    @classmethod
    def fixed(cls, delay: float | timedelta) -> Backoff:
        return cls("fixed", delay)

    @classmethod
    def exponential(
        cls,
        delay: float | timedelta,
        *,
        max_delay: float | timedelta | None = None,
        jitter: float = 0.0,
    ) -> Backoff:
        return cls("exponential", delay, max_delay, jitter)

    @classmethod
    def coerce(cls, value: Backoff | Mapping[str, Any] | float | timedelta | None) -> Backoff:
        """Accept a Backoff, seconds, a timedelta, or a dict with ``type``, ``delay``,
        ``max_delay`` and ``jitter``."""
        if value is None:
            return cls()
        if isinstance(value, Backoff):
            return value
        if isinstance(value, Mapping):
            unknown = [key for key in value if key not in _BACKOFF_KEYS]
            if unknown:
                raise InvalidTaskError(
                    f"unknown backoff option(s) {short(unknown)} in {short(value)} "
                    f"(known: {', '.join(_BACKOFF_KEYS)})"
                )
            if "type" in value and "kind" in value:
                raise InvalidTaskError(f"backoff {short(value)} gives both 'type' and 'kind'")
            jitter = value.get("jitter", 0.0)
            return cls(
                value.get("type", value.get("kind", "fixed")),
                value.get("delay", 0.0),
                value.get("max_delay"),
                0.0 if jitter is None else jitter,
            )
        return cls.fixed(value)

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the retry that follows failed attempt ``attempt`` (1-based);
        never more than ``MAX_DURATION``."""
        if self.kind == "fixed":
            delay = self.delay
        else:
            # 2 ** 64 times any delay is past MAX_DURATION already: no float overflow
            delay = self.delay * (2 ** min(max(attempt - 1, 0), 64))
        if self.max_delay is not None:
            delay = min(delay, self.max_delay)
        delay = min(delay, MAX_DURATION.total_seconds())
        if self.jitter:
            delay -= delay * self.jitter * (rng or random).random()
        return delay

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "delay": self.delay,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }


_BACKOFF_KEYS = ("type", "kind", "delay", "max_delay", "jitter")
