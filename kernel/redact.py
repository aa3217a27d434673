"""Keep credentials out of logs, errors, CLI output, pages and metric labels.

Every place that shows a store URL (or text that may contain one) passes it through
:func:`redact_url` or :func:`redact` first.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

#: query parameters whose values are secrets (compared case-insensitively)
SECRET_PARAMS = frozenset(
    {"password", "passwd", "pass", "pwd", "secret", "token", "auth", "api_key", "apikey"}
)
MASK = "***"

# scheme://userinfo@ : the userinfo (``user:password`` or a lone token) is masked. The userinfo
# runs to the LAST ``@`` before whitespace: a password written without percent-encoding may hold
# ``/ # ? @ +`` (``redis://:S3cr/et@h``), and a URL parser would cut it at the first of them.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>\S*)@")
# where a secret is cut into pieces by a URL parser (its messages may echo one piece)
_DELIMITERS = re.compile(r"[/#?@&=;:+%\s]+")
#: a piece of a secret shorter than this is not searched for in a parser's message
_MIN_PIECE = 3
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:" + "|".join(sorted(SECRET_PARAMS)) + r"))=(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """``url`` with its password (and any secret query parameter) replaced by ``***``.

    ``redis://:S3cret@host:6379/0`` becomes ``redis://:***@host:6379/0``; ``redis://user:pw@h``
    becomes ``redis://user:***@h``; a URL without credentials is returned unchanged. Everything
    between ``scheme://`` and the last ``@`` counts as credentials, so a password with a raw
    ``/ # ? @`` in it is masked whole. Never raises.
    """
    if not isinstance(url, str):
        return redact(repr(url))
    masked = _mask_userinfo(url)
    try:
        parts = urlsplit(masked)
        query = parts.query
        if not query:
            return masked
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            return masked
        query = urlencode(
            [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
        if "//" not in masked:
            return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        # urlunsplit drops an empty authority (sqlite:///x.db would become sqlite:/x.db)
        rebuilt = f"{parts.scheme}://{parts.netloc}{parts.path}?{query}"
        if parts.fragment:
            rebuilt += f"#{parts.fragment}"
        return rebuilt
    except (ValueError, UnicodeError):
        return redact(masked)


def _mask_userinfo(text: str) -> str:
    def userinfo(match: re.Match[str]) -> str:
        user, sep, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:{MASK}@" if sep else f"{match['scheme']}{MASK}@"

    return _USERINFO.sub(userinfo, text)


def secrets_of(url: str) -> list[str]:
    """The secrets in ``url`` (its password and secret query values), raw and decoded, with the
    pieces a URL parser may cut them into; longest first. Empty when ``url`` has none."""
    if not isinstance(url, str):
        return []
    found: set[str] = set()
    for match in _USERINFO.finditer(url):
        user, sep, password = match["userinfo"].partition(":")
        found.add(password if sep else user)
    for match in _SECRET_QUERY.finditer(url):
        found.add(match["value"])
    pieces: set[str] = set()
    for secret in found:
        for variant in (secret, unquote(secret), unquote_plus(secret)):
            # every run from a cut point to a cut point (the ends and each delimiter's edges)
            starts, ends = [0], [len(variant)]
            for cut in _DELIMITERS.finditer(variant):
                ends.append(cut.start())
                starts.append(cut.end())
            pieces.update(variant[i:j] for i in starts for j in ends if j > i)
    return sorted((p for p in pieces if len(p) >= _MIN_PIECE), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` (a parser's or a driver's message about ``url``) with every URL's credentials
    masked and every piece of ``url``'s own secrets replaced by ``***``: a parser that cut an
    unencoded password at a ``/`` may echo a piece of it without its URL around it."""
    text = redact(text)
    for piece in secrets_of(url):
        text = text.replace(piece, MASK)
    return text


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it masked (for log lines and errors)."""
    if not isinstance(text, str):
        text = str(text)

    text = _mask_userinfo(text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}={MASK}", text)
