"""Secrets in database URLs: a PostgreSQL gallery's URL or conninfo shown without its password, driver errors
reduced to one password-free line, and the `GalleryError` every failure becomes."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from typing import Any

from facenet import redact


class GalleryError(Exception):
    """A one-line, password-free reason why the gallery cannot be used."""


def mask_url(url: str) -> str:
    """The URL (or key=value conninfo) with the password removed, for messages and logs."""
    parts = redact.split_url(url)
    if parts is not None:  # a URL: never trusted to parse (a password may hold "@", "/", "?", "#", ":")
        scheme, user, _, rest = parts
        where = re.split(r"[?#]", rest, maxsplit=1)[0]
        return hide_secrets(f"{scheme}://{user + '@' if user else ''}{where}", url)
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable conninfo shows nothing of itself
        return "<database url>"
    user = info.get("user") or ""
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    db = info.get("dbname") or ""
    return hide_secrets(f"postgresql://{user + '@' if user else ''}{host}{port}/{db}", url)


def _parsed_password(url: str) -> list[str]:
    """The password psycopg parses from `url` (a conninfo too), beside what facenet.redact reads without parsing."""
    with contextlib.suppress(Exception):
        from psycopg.conninfo import conninfo_to_dict

        return [str(conninfo_to_dict(url).get("password") or "")]
    return []


def hide_secrets(text: str, url: str) -> str:
    """`text` with every spelling of `url`'s password replaced by ***: for any message that may quote the URL.

    Read without trusting the URL to parse (facenet.redact: the userinfo up to the last "@", `password=` keywords
    and query parameters, raw, percent-decoded and in pieces), plus what psycopg parses.
    """
    return redact.hide_secrets(text, url, _parsed_password(url))


def reason(error: BaseException, url: str) -> str:
    """The first meaningful line of a driver error, without the password."""
    text = " ".join(hide_secrets(str(error), url).split())
    for prefix in ("connection failed: ", "FATAL: "):
        text = text.replace(prefix, "")
    return text[:300]


def url_sets(parameter: str, url: str) -> bool:
    """Whether the URL's parameters (not its text: a database may be named connect_timeout_test) set `parameter`."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return parameter in conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - an unparsable URL: connect says why
        return False


def gallery_errors(method: Callable) -> Callable:
    """Turn a lost connection or tables dropped underneath (a rebuild by another client) into a GalleryError."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        import psycopg

        try:
            return method(self, *args, **kwargs)
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable) as error:
            raise GalleryError(f"{self.where}: {reason(error, self.url)}") from None

    return wrapper
