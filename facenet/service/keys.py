"""API keys of the service: where they come from and how a request's key is checked.

Keys come from the environment variable FACENET_API_KEYS (comma-separated) and/or a file (one key per line,
blank lines and `#` comments ignored); never from a command-line flag, which other users of the machine can read in
the process list. A request carries its key in the `x-api-key` header.
"""

from __future__ import annotations

import hmac
import os
import unicodedata
from pathlib import Path

KEY_HEADER = "x-api-key"
KEYS_ENV = "FACENET_API_KEYS"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class KeyFileError(ValueError):
    """An unreadable or empty key file, or a key a header cannot carry; the message names where it came from."""


def _key_problem(key: str) -> str | None:
    """Why a header cannot carry `key` (HTTP headers are Latin-1 bytes: only visible ASCII matches reliably)."""
    bad = next((c for c in key if not " " <= c <= "~"), None)
    if bad is None:
        return None
    return (f"an API key holds {unicodedata.name(bad, repr(bad)).lower()} (U+{ord(bad):04X}), which an x-api-key "
            "header cannot carry: use visible ASCII characters only (letters, digits, punctuation)")


def load_keys(key_file: str | Path | None = None, environ: dict[str, str] | None = None) -> frozenset[str]:
    """Every accepted key: FACENET_API_KEYS plus the lines of `key_file`; KeyFileError for an unreadable or empty
    file, or a key with a character other than visible ASCII (it could never match a header)."""
    environ = os.environ if environ is None else environ
    keys = {k.strip() for k in environ.get(KEYS_ENV, "").split(",") if k.strip()}
    problem = next(filter(None, map(_key_problem, sorted(keys))), None)
    if problem:
        raise KeyFileError(f"{KEYS_ENV}: {problem}")
    if key_file:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise KeyFileError(f"{key_file}: cannot read the API key file ({error})") from None
        found = {line.strip() for line in lines if line.strip() and not line.strip().startswith("#")}
        for number, line in enumerate(lines, 1):
            problem = line.strip() in found and _key_problem(line.strip())
            if problem:
                raise KeyFileError(f"{key_file}: line {number}: {problem}")
        if not found:
            raise KeyFileError(f"{key_file}: the API key file holds no key")
        keys |= found
    return frozenset(keys)


def key_accepted(given: str | None, keys: frozenset[str]) -> bool:
    """True when no key is required, or `given` is one of `keys` (compared in constant time)."""
    if not keys:
        return True
    given_bytes = (given or "").encode("utf-8")
    return any(hmac.compare_digest(given_bytes, key.encode("utf-8")) for key in keys)


def key_problem(host: str, key_file: str | Path | None, environ: dict[str, str] | None = None) -> str | None:
    """Why these key settings cannot serve (one line), checked before anything heavy loads; None when they can:
    an unreadable or empty key file, or no key at all for an address other than loopback."""
    try:
        keys = load_keys(key_file, environ)
    except KeyFileError as error:
        return str(error)
    if not keys and host not in LOOPBACK_HOSTS:
        return (f"refusing to serve on {host} without API keys: set {KEYS_ENV}=key1,key2 or --api_key_file "
                "(without keys, serve on 127.0.0.1 only)")
    return None
