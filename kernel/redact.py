"""Keep credentials out of logs, errors, CLI output, pages and metric labels.

Every place that shows a store URL (or text that may contain one) passes it through
:func:`redact_url` or :func:`redact` first.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: query parameters whose values are secrets (compared case-insensitively)
SECRET_PARAMS = frozenset(
    {"password", "passwd", "pass", "pwd", "secret", "token", "auth", "api_key", "apikey"}
)
MASK = "***"

# scheme://userinfo@ : the userinfo (``user:password`` or a lone token) is masked
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s]*)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:" + "|".join(sorted(SECRET_PARAMS)) + r"))=(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """``url`` with its password (and any secret query parameter) replaced by ``***``.

    ``redis://:S3cret@host:6379/0`` becomes ``redis://:***@host:6379/0``; ``redis://user:pw@h``
    becomes ``redis://user:***@h``; a URL without credentials is returned unchanged. Never
    raises: a value that does not parse as a URL goes through :func:`redact` instead.
    """
    if not isinstance(url, str):
        return redact(repr(url))
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        changed = False
        if "@" in netloc:
            changed = True
            userinfo, _, host = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            # ``scheme://token@host`` (no colon): the lone userinfo is the secret
            netloc = f"{user}:{MASK}@{host}" if sep else f"{MASK}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
                changed = True
                query = urlencode(
                    [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*"
                )
        if not changed:
            return url
        if "//" not in url:
            return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        # urlunsplit drops an empty authority (sqlite:///x.db would become sqlite:/x.db)
        rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
        if query:
            rebuilt += f"?{query}"
        if parts.fragment:
            rebuilt += f"#{parts.fragment}"
        return rebuilt
    except ValueError:
        return redact(url)


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it masked (for log lines and errors)."""
    if not isinstance(text, str):
        text = str(text)

    def userinfo(match: re.Match[str]) -> str:
        user, sep, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:{MASK}@" if sep else f"{match['scheme']}{MASK}@"

    text = _USERINFO.sub(userinfo, text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}={MASK}", text)
