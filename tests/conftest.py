from __future__ import annotations

from collections.abc import Iterator

import pytest

from .redis_server import RedisServer, redis_url_for_tests


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
