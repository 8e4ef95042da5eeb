"""Passwords kept out of messages: URLs with credentials (database, camera, MQTT, webhook) are shown without them.

A URL is never trusted to parse: its userinfo runs from `scheme://` to the LAST "@" (a password typed with "@",
"/", "?", "#" or ":" unescaped stays whole), and every spelling of its password (raw, percent-decoded, and the
pieces a parser would cut it into) is hidden from any text that may quote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

HIDDEN = "***"
MIN_PIECE = 3
"""Shortest piece of a password hidden on its own (shorter pieces would blank ordinary characters)."""

_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://")
_KEYWORD_PASSWORD = re.compile(r"(?:^|[\s?&;])password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&;]*)", re.IGNORECASE)
_CUTS = re.compile(r"[@/:?#&=;\s]+")


def split_url(url: str) -> tuple[str, str | None, str | None, str] | None:
    """(scheme, user, password, the rest after the userinfo) of `scheme://[user[:password]@]rest`; None when `url`
    has no scheme. user and password are None when absent; the userinfo ends at the last "@"."""
    match = _SCHEME.match(url)
    if match is None:
        return None
    rest = url[match.end():].strip()
    if "@" not in rest:
        return match.group(1), None, None, rest
    info, rest = rest.rsplit("@", 1)
    user, colon, password = info.partition(":")
    return match.group(1), user, password if colon else None, rest


def url_host(url: str) -> str:
    """The host of `scheme://[userinfo@]host[:port][/…]` (the userinfo up to the last "@"); "" when none."""
    parts = split_url(url)
    if parts is None:
        return ""
    where = re.split(r"[/?#]", parts[3], maxsplit=1)[0]
    return (where.rsplit(":", 1)[0] if not where.endswith("]") else where).strip("[]")


def url_secrets(url: str, extra: Iterable[str] = ()) -> list[str]:
    """Every spelling of the password(s) in `url` (userinfo and `password=` parameters) and `extra`, longest first:
    raw, percent-decoded, and their pieces between URL delimiters of at least MIN_PIECE characters."""
    found = {secret for secret in extra if secret}
    parts = split_url(url)
    if parts is not None and parts[2]:
        found.add(parts[2])
    found.update(value.strip("'") for value in _KEYWORD_PASSWORD.findall(url))
    found |= {unquote(secret) for secret in found}
    found |= {piece for secret in found for piece in _CUTS.split(secret) if len(piece) >= MIN_PIECE}
    return sorted((secret for secret in found if secret), key=len, reverse=True)


def hide_secrets(text: str, url: str, extra: Iterable[str] = ()) -> str:
    """`text` with every spelling of `url`'s password replaced by *** (a password shorter than MIN_PIECE is never
    quoted by `mask_url`, but cannot be told apart from other text)."""
    for secret in url_secrets(url, extra):
        if len(secret) >= MIN_PIECE:
            text = text.replace(secret, HIDDEN)
    return text


def mask_url(url: str) -> str:
    """`url` for messages: `scheme://user:***@host…` (the userinfo up to the last "@"), never its password."""
    parts = split_url(url)
    if parts is None:
        return hide_secrets(url, url)
    scheme, user, password, rest = parts
    userinfo = "" if user is None else f"{user}{':' + HIDDEN if password is not None else ''}@"
    return hide_secrets(f"{scheme}://{userinfo}{rest}", url)
