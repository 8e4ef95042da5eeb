"""File helpers shared by every stage that writes or hashes files: atomic writes and content hashes."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def _read_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status), else by one os.umask round-trip.

    Called once, at import: os.umask can only be read by setting it, which races with threads creating files.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split(":", 1)[1].strip(), 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK
"""Permissions of a written file: what open() would give it (mkstemp's temp files are 0600)."""


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    handle = os.open(path, flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)` on a temp file beside `path`, then rename it over `path` (never half-written).

    The temp file is fsynced before the rename and the folder after it, so a crash leaves the old or the new
    file, whole. On any error (the writer's included) the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=folder, prefix=f".{path.stem}.", suffix="".join(path.suffixes))
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # some filesystems (and Windows) cannot fsync a folder; the rename is done
        _fsync_path(folder, directory=True)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks: identifies a photo or model file by content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_record_path(path: Path) -> Path:
    """Where `write_checked` records what it wrote to `path`: `path` + ".json"."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_checked(path: Path, write: Callable[[Path], object], record: dict | None = None) -> None:
    """`atomic_write(path, write)`, then `path.json` = {"sha256": of the bytes written, **record}.

    For caches that are rebuilt when damaged: `read_checked` finds a truncated, emptied or altered file (or one
    whose record a kill left unwritten) by its checksum. The hash is taken of the temp file, before the rename.
    """
    digest: list[str] = []

    def write_and_hash(tmp: Path) -> None:
        write(tmp)
        digest.append(file_sha256(tmp))

    atomic_write(path, write_and_hash)
    text = json.dumps({**(record or {}), "sha256": digest[0]})
    atomic_write(checksum_record_path(path), lambda tmp: tmp.write_text(text))


def read_checked(path: Path, data: bytes | None = None) -> dict:
    """The record `write_checked` wrote beside `path`, once `path`'s bytes (or `data`, read from it) match its
    sha256; ValueError saying what is wrong (no record, an unreadable one, other bytes)."""
    record_path = checksum_record_path(path)
    try:
        record = json.loads(record_path.read_text())
        expected = record["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"no usable checksum record {record_path.name} ({type(error).__name__})") from None
    actual = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
    if actual != expected:
        raise ValueError("its bytes changed since it was written (truncated, emptied or altered: checksum "
                         "mismatch)")
    return record


STALE_TEMP_SECONDS = 300
"""A temp file of `atomic_write` untouched this long belongs to a killed run (a live writer touches its file far
more often: a video gets frames every few ms), so the next run may remove it."""

_TEMP_RANDOM = re.compile(r"[a-z0-9_]{8}")


def temp_target(name: str) -> str | None:
    """The file name an `atomic_write` temp file named `name` was to become (`.faces.k3j_x8a2.npz` ->
    `faces.npz`), or None when `name` is not spelled like one."""
    if not name.startswith("."):
        return None
    for start in (i for i, char in enumerate(name) if char == "." and i > 1):
        stem, random, suffixes = name[1:start], name[start + 1 : start + 9], name[start + 9 :]
        if not (_TEMP_RANDOM.fullmatch(random) and suffixes.startswith(".")):
            continue
        target = stem + suffixes[suffixes.rfind(".") :]
        if Path(target).stem == stem and "".join(Path(target).suffixes) == suffixes:
            return target
    return None


def remove_stale_temps(folder: Path, targets: Iterable[str], recursive: bool = False,
                       older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the temp files a killed `atomic_write` left in `folder` for files named like `targets` (glob
    patterns of the final names: "faces.npz", "*.tflite"); only regular files untouched for `older_than` seconds.
    Returns what was removed. Nothing else is ever touched (only names `atomic_write` itself makes)."""
    folder = Path(folder)
    patterns = list(targets)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*") if recursive else folder.glob(".*")
    now = time.time()
    removed = []
    for path in candidates:
        target = temp_target(path.name)
        if target is None or not any(fnmatch.fnmatchcase(target, pattern) for pattern in patterns):
            continue
        with contextlib.suppress(OSError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime >= older_than:
                path.unlink()
                removed.append(path)
    return removed
