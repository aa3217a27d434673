from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings

from .redis_server import RedisServer, redis_url_for_tests

# Hypothesis profiles for the property suite (tests/test_properties.py, docs/testing.md):
# - "dev" (default): quick, random, with the example database, for everyday runs;
# - "ci" (used when CI=true): more examples, derandomized (a failure reproduces on any machine
#   from the test's name alone), a deadline per example, no database;
# - "long" (HYPOTHESIS_PROFILE=long): thousands of random examples for a local hunt; the
#   falsifying example is printed with the blob to reproduce it (@reproduce_failure).
settings.register_profile("dev", max_examples=20, deadline=timedelta(seconds=5))
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=timedelta(seconds=5),
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=2_000,
    deadline=timedelta(seconds=30),
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
_ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _ci else "dev"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[tuple[str, RedisServer | None]]:
    """(url, server): a real Redis for this session. ``server`` is None when it came from
    REDIS_URL (then fault tests that restart Redis cannot run)."""
    with redis_url_for_tests() as found:
        yield found


@pytest.fixture
def redis_url(redis_server: tuple[str, RedisServer | None]) -> str:
    return redis_server[0]
