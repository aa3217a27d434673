from __future__ import annotations

import logging
import os
import sys
import threading
import time
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


# --- no test run may hang at exit -------------------------------------------------------------
# A test that fails before it stops a store (an aiosqlite connection's thread, say) leaves a
# non-daemon thread behind, and the interpreter then waits for it forever after the summary:
# CI would hang until its time limit. Such a thread fails the run instead, naming it.
_LEFT_BEHIND: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        alive = [
            t
            for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()
        ]
        if not alive or time.monotonic() > deadline:
            break
        alive[0].join(0.1)
    if alive:
        _LEFT_BEHIND.extend(t.name for t in alive)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if _LEFT_BEHIND:
        sys.stdout.flush()
        sys.stderr.write(
            f"\nthreads still running after the tests: {', '.join(_LEFT_BEHIND)}; a test did not "
            "close what it opened (the run fails instead of hanging)\n"
        )
        sys.stderr.flush()
        os._exit(int(pytest.ExitCode.TESTS_FAILED))


@pytest.fixture(autouse=True)
def _tickkit_logger_restored() -> Iterator[None]:
    """Each test gets the ``tickkit`` logger as it found it: a CLI run in-process sets its
    level, handler and ``propagate = False`` (the command owns its output), which would hide
    later tests' records from caplog."""
    logger = logging.getLogger("tickkit")
    saved = (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]
    logger.disabled = saved[3]
