"""Photos facenet itself writes into data/<person>/ (the service's uploads, a named stranger's best faces), and the
rule for a person's name as a folder name.

Such a photo is named `api-<first 20 hex of its sha256><ext>`: only a file of that name whose bytes still have that
hash may ever be deleted by facenet. Users' own photos are never deleted, moved or rewritten.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from facenet.files import atomic_write
from facenet.images import image_format, person_name

API_PHOTO = re.compile(r"^api-([0-9a-f]{20})\.[a-z]+$")
"""Name of a photo written by facenet: api-<sha256 prefix>.<ext>."""

MAX_NAME_BYTES = 200
"""Longest person name (UTF-8 bytes): a folder name must fit the file system's 255."""

HIDDEN_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Control characters (a tab or line break would split a name across lines of text output and logs) and the
bidirectional marks and overrides, which make a name show as other letters than it holds ("Trojan Source"). The
joiners that some scripts need in names (U+200C, U+200D) stay allowed."""


class BadName(ValueError):
    """A person's name that cannot be a folder name."""


def clean_name(name: str) -> str:
    """A person's name usable as a folder name (NFC, trimmed); BadName says why not."""
    name = person_name(str(name)).strip()
    if not name:
        raise BadName("the subject name is empty")
    if name in (".", "..") or name.startswith(".") or any(c in name for c in '/\\\0'):
        raise BadName(f"{name!r} cannot be a folder name (no '/', '\\', leading '.' or NUL)")
    if hidden := HIDDEN_CHARACTERS.search(name):
        raise BadName(f"{name!r} holds the invisible character U+{ord(hidden.group()):04X} (a control character "
                      "or a bidirectional override): type the name without it")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadName(f"the subject name is longer than {MAX_NAME_BYTES} bytes")
    return name


def api_photo_name(data: bytes) -> str:
    """The file name facenet gives a photo it writes: api-<sha256 prefix><ext of its format>."""
    return f"api-{hashlib.sha256(data).hexdigest()[:20]}{image_format(data) or '.jpg'}"


def is_api_photo(path: Path) -> bool:
    """True when `path` is a photo facenet wrote and its bytes are still the ones it wrote."""
    from facenet.files import file_sha256

    match = API_PHOTO.match(path.name)
    return bool(match) and path.is_file() and file_sha256(path).startswith(match.group(1))


def write_photos(folder: Path, photos: list[bytes]) -> list[Path]:
    """Write each photo into `folder` (created if missing) as `api_photo_name`, atomically; the paths written now
    (a photo already there is left alone). On an error, what this call wrote is removed again."""
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for data in photos:
            target = folder / api_photo_name(data)
            if not target.exists():
                atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
                written.append(target)
    except BaseException:
        remove_photos(written)
        raise
    return written


def remove_photos(paths: list[Path]) -> None:
    """Remove photos facenet wrote (`write_photos`' answer): to undo a change that failed."""
    for path in paths:
        if is_api_photo(path):
            path.unlink(missing_ok=True)
