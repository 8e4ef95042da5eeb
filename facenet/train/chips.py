"""The aligned chips of data/<person>/ photos, detected once per photo and cached; read back through memory maps.

The cache lives beside `path` (config.CHIPS_CACHE_FILE in the database folder):

- `chips_cache.npz`, the index: the photo keys (sha256 + detector + chip kinds + chip geometry) in row order, the
  keys of photos without a usable face with the reason, and per chip kind the name of its chips file;
- `chips_cache.<generation>.<kind>.npy`: (N, side, side, 3) uint8 chips, uncompressed, so that training reads
  them with `np.load(mmap_mode="r")`: only the chips a batch needs are paged in, never all of them at once.

A rewrite writes the chips files of a new generation first (each atomically), then replaces the index atomically
(the commit), then deletes the files of other generations: a crash leaves the old cache or the new one, whole.
An index or chips file that cannot be read (truncated, another model's, another format) means detection runs
again. The chips of a loaded `ChipSet` are the cache's memory maps whenever the cache could be written.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facenet.config import CHIP_PADDING, CHIP_SIZE
from facenet.files import atomic_write, file_sha256
from facenet.images import list_people
from facenet.pipeline import FacePipeline, empty_chips

log = logging.getLogger(__name__)

COPY_ROWS = 256
"""Chips copied per block when a cache is written (bounds the memory of a rewrite)."""


class TrainingError(ValueError):
    """Training cannot start (too few people or photos, bad settings): one line for the user, exit code 2."""


@dataclass
class ChipSet:
    """The aligned chips of data/: one set per usable photo, with its person's index into `names`."""

    chips: dict[str, np.ndarray]
    """Per chip kind of the model: (N, side, side, 3) uint8 RGB; read-only memory maps of the cache when loaded
    with one (index them with sorted rows, a chunk at a time), else arrays in memory."""
    labels: np.ndarray
    """(N,) int32 person index."""
    names: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The chips of rows `index` of every kind, in memory."""
        return {kind: np.asarray(chips[index]) for kind, chips in self.chips.items()}


def scan_people(data_dir: str | Path) -> list[tuple[str, list[Path]]]:
    """(person, photos) per immediate subfolder of data_dir, sorted; photos lying directly in it are ignored."""
    people, loose = list_people(data_dir)
    if loose:
        log.warning("%s: %d photo(s) directly in the data folder ignored; put them in %s/<person name>/",
                    data_dir, len(loose), data_dir)
    return people


# --------------------------------------------------------------------------- the cache on disk


@dataclass
class _Cache:
    """What a cache holds: chips of `keys` by row (memory maps), photos without a face, its chips files."""

    keys: list[str] = field(default_factory=list)
    chips: dict[str, np.ndarray] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    files: list[Path] | None = field(default_factory=list)
    """None: chips in memory (the single-file format of earlier versions), to be rewritten."""


def _chips_file(index: Path, generation: str, kind: str) -> Path:
    return index.with_name(f"{index.stem}.{generation}.{kind}.npy")


def _read_cache(path: Path, kinds: tuple[str, ...]) -> _Cache:
    """The cache at `path`; empty when missing or unreadable (then detection runs again)."""
    if not path.exists():
        return _Cache()
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, failed, reasons = data["keys"].tolist(), data["failed_keys"].tolist(), data["failed_reasons"]
            if len(failed) != len(reasons):
                raise ValueError("failed keys and reasons differ in length")
            if "chip_files" in data.files:
                files = dict(zip(data["chip_kinds"].tolist(), data["chip_files"].tolist(), strict=True))
                paths = [path.with_name(Path(files[kind]).name) for kind in kinds]
                chips = {kind: np.load(file, mmap_mode="r") for kind, file in zip(kinds, paths, strict=True)}
            else:  # one .npz with the chips inside: read once into memory, rewritten in the current format
                paths, chips = None, {kind: data[f"chips_{kind}"] for kind in kinds}
        for kind, array in chips.items():
            side = empty_chips(kind).shape[1]
            if array.shape != (len(keys), side, side, 3) or array.dtype != np.uint8:
                raise ValueError(f"{kind} chips of shape {array.shape} and type {array.dtype}")
        return _Cache(keys, chips, dict(zip(failed, reasons.tolist(), strict=True)), paths)
    except Exception as error:  # noqa: BLE001 - any unreadable cache is rebuilt
        log.warning("%s: corrupt or other-model chip cache (%s); detecting faces again", path, error)
        return _Cache()


def _write_npy(path: Path, blocks: Iterator[np.ndarray], shape: tuple[int, ...]) -> None:
    """An uncompressed uint8 .npy of `shape` from row blocks, with plain writes (a full disk raises OSError, where
    writing through a memory map would kill the process), atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": "|u1", "fortran_order": False, "shape": shape})
            for block in blocks:
                handle.write(np.ascontiguousarray(block, np.uint8).tobytes())

    atomic_write(path, write)


def _write_cache(path: Path, rows: _Rows, failed: dict[str, str], kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Write the chips of `rows` as a new generation and commit it; returns its chips as memory maps."""
    generation = uuid.uuid4().hex[:12]
    files = [_chips_file(path, generation, kind) for kind in kinds]
    try:
        for kind, file in zip(kinds, files, strict=True):
            _write_npy(file, rows.blocks(kind), (len(rows), *empty_chips(kind).shape[1:]))

        def write_index(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, keys=np.array(rows.keys, dtype=str), failed_keys=np.array(list(failed), dtype=str),
                         failed_reasons=np.array(list(failed.values()), dtype=str),
                         chip_kinds=np.array(kinds, dtype=str), chip_files=np.array([f.name for f in files]))

        atomic_write(path, write_index)
    except BaseException:
        for file in files:
            file.unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f"{path.stem}.*.npy"):
        if stale not in files:
            with contextlib.suppress(OSError):  # an open memory map keeps its data (POSIX); Windows may refuse
                stale.unlink()
    return {kind: np.load(file, mmap_mode="r") for kind, file in zip(kinds, files, strict=True)}


# --------------------------------------------------------------------------- assembling the chips of data/


class _Rows:
    """The chips of the usable photos in order: each row from the old cache or from this run's detection."""

    def __init__(self, kinds: tuple[str, ...], cache: _Cache, found: dict[str, dict[str, np.ndarray]]) -> None:
        self.kinds, self.cache, self.found = kinds, cache, found
        self.cached_row = {key: row for row, key in enumerate(cache.keys)}
        self.keys: list[str] = []

    def __len__(self) -> int:
        return len(self.keys)

    def blocks(self, kind: str) -> Iterator[np.ndarray]:
        """The rows of chip kind `kind`, COPY_ROWS at a time."""
        for start in range(0, len(self.keys), COPY_ROWS):
            keys = self.keys[start : start + COPY_ROWS]
            yield np.stack([self.found[key][kind] if key in self.found else self.cache.chips[kind][self.cached_row[key]]
                            for key in keys])

    def in_memory(self) -> dict[str, np.ndarray]:
        return {kind: np.concatenate([empty_chips(kind), *self.blocks(kind)]) for kind in self.kinds}

    def same_as_cache(self) -> bool:
        return not self.found and self.cache.files is not None and self.keys == self.cache.keys


def _photo_keys(people: list[tuple[str, list[Path]]], suffix: str) -> list[tuple[int, Path, str]]:
    photos = []
    for person, (_, files) in enumerate(people):
        for file in files:
            try:
                photos.append((person, file, file_sha256(file) + suffix))
            except OSError as error:
                log.warning("%s: skipped, unreadable (%s)", file, error.strerror or error)
    return photos


def _detect_pending(
    pending: dict[str, Path], pipeline: FacePipeline
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Chips of the photos not in the cache ({key: {kind: chip}}) and why the others gave none.

    Only this run's new photos are held in memory here, until the cache is written.
    """
    found: dict[str, dict[str, np.ndarray]] = {}
    failed: dict[str, str] = {}
    keys = {file: key for key, file in pending.items()}
    for file, subject, image in pipeline.read_subjects(list(pending.values()), "largest", desc="detecting faces"):
        if subject.face is None:
            failed[keys[file]] = subject.reason
        else:
            found[keys[file]] = {kind: chips[0] for kind, chips in pipeline.chips(image, [subject.face]).items()}
    return found, failed


def load_chips(data_dir: str | Path, pipeline: FacePipeline, cache_path: str | Path | None = None) -> ChipSet:
    """The largest face of every photo of data/<person>/ as aligned chips (the pipeline's face choice and fallback
    chain, as enrollment uses); detection runs once per photo.

    Unreadable photos and photos without a face are skipped with one warning line each (also when the
    verdict comes from the cache). The cache holds exactly the current photos, in order, and is rewritten
    (atomically) when anything changed; the returned chips are its memory maps. Without a cache, or when it
    cannot be written, the chips are returned in memory.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TrainingError(f"{data_dir}: data folder not found (expected {data_dir}/<person name>/*.jpg)")
    kinds = pipeline.embedder.kinds
    cache = _read_cache(Path(cache_path), kinds) if cache_path else _Cache()
    people = scan_people(data_dir)
    photos = _photo_keys(people, f":{pipeline.detector.kind}:{'+'.join(kinds)}:{CHIP_SIZE}:{CHIP_PADDING}")
    known = set(cache.keys)
    pending = {key: file for _, file, key in photos if key not in known and key not in cache.failed}
    found, newly_failed = _detect_pending(pending, pipeline)
    rows = _Rows(kinds, cache, found)
    failed = {**cache.failed, **newly_failed}
    labels, paths, used_failed = [], [], {}
    for person, file, key in photos:
        if key in known or key in found:
            rows.keys.append(key)
            labels.append(person)
            paths.append(str(file))
        else:
            used_failed[key] = failed[key]
            log.warning("%s: skipped, %s", file, failed[key])
    chips = _cached_chips(Path(cache_path), rows, cache, used_failed, kinds) if cache_path else None
    return ChipSet(chips or rows.in_memory(), np.array(labels, np.int32), [name for name, _ in people], paths)


def _cached_chips(
    path: Path, rows: _Rows, cache: _Cache, failed: dict[str, str], kinds: tuple[str, ...]
) -> dict[str, np.ndarray] | None:
    """The chips as memory maps of the cache, rewritten first when it does not hold exactly `rows` and `failed`;
    None when it cannot be written."""
    if rows.same_as_cache() and failed.keys() == cache.failed.keys():
        return cache.chips
    try:
        return _write_cache(path, rows, failed, kinds)
    except OSError as error:
        log.warning("%s: could not write the chip cache (%s); faces will be detected again next time", path, error)
        return None
