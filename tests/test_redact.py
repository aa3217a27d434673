"""Credentials never reach a message: tickkit.redact_url and tickkit.redact, and the driver
errors that name a store URL."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickkit import DriverError, redact, redact_url
from tickkit.drivers.sqlite import SQLiteDriver

secrets = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=6, max_size=40
).filter(lambda s: s.strip() == s and "***" not in s)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:S3cretPW@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://user:pw@h/1?queue=x", "redis://user:***@h/1?queue=x"),
        ("rediss://token@h", "rediss://***@h"),
        ("redis://h?password=abc&queue=q", "redis://h?password=***&queue=q"),
        ("sqlite:///x.db?token=1", "sqlite:///x.db?token=***"),
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        # nothing secret: the very same text
        ("sqlite:///tasks.db", "sqlite:///tasks.db"),
        ("memory://", "memory://"),
        ("redis://localhost:6379/0?queue=a", "redis://localhost:6379/0?queue=a"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@given(password=secrets, user=st.sampled_from(["", "bot"]))
def test_no_password_survives(password: str, user: str) -> None:
    url = f"redis://{user}:{quote(password, safe='')}@db.example:6379/0"
    for text in (redact_url(url), redact(f"running: driver {url} (ok)")):
        assert quote(password, safe="") not in text
        assert "***" in text


def test_redact_finds_every_url_in_a_line() -> None:
    line = "a redis://:one111@h/0 b postgres://u:two222@c/d?password=three333 c"
    shown = redact(line)
    assert not any(s in shown for s in ("one111", "two222", "three333"))
    assert shown.startswith("a redis://:***@h/0 b postgres://u:***@c/d?password=***")


@pytest.mark.parametrize(
    "url",
    ["sqlite://u:hunter22@host/x.db", "sqlite:///x.db?password=hunter22&bogus=1"],
)
def test_sqlite_url_errors_mask_the_password(url: str) -> None:
    with pytest.raises(DriverError) as raised:
        SQLiteDriver.from_url(url)
    assert "hunter22" not in str(raised.value)
    assert "***" in str(raised.value)
