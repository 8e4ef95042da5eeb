"""The local cache of a PostgreSQL sync's photo hashes (by size + mtime): a shared gallery hashes a photo once."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from facenet.files import atomic_write

log = logging.getLogger(__name__)

HASH_CACHE = "photo_hashes.json"
"""Where a PostgreSQL sync keeps the photo hashes of its data folder (in the local cache folder it is given)."""


def read_hashes(cache_dir: str | Path | None, data_dir: Path) -> dict[str, Any]:
    """{relative path: photo record} hashed by the last sync of this very folder; empty when none or unreadable."""
    if cache_dir is None:
        return {}
    try:
        cached = json.loads((Path(cache_dir) / HASH_CACHE).read_text(encoding="utf-8"))
        if cached.get("data_dir") != str(data_dir.resolve()):
            return {}
        return {p["path"]: p for p in cached["photos"] if {"path", "size", "mtime_ns", "sha256"} <= p.keys()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def write_hashes(cache_dir: str | Path | None, data_dir: Path, photos: list[dict[str, Any]]) -> None:
    """Save the photo hashes for the next sync (atomically); a failure only costs hashing again."""
    if cache_dir is None:
        return
    text = json.dumps({"data_dir": str(data_dir.resolve()), "photos": photos}, ensure_ascii=False)
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(cache_dir) / HASH_CACHE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as error:
        log.warning("%s: could not cache the photo hashes (%s)", Path(cache_dir) / HASH_CACHE, error)
