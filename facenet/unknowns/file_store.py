"""The file gallery's store of unknown faces: `<database_dir>/unknowns/`.

`unknowns.npz` holds the sightings' vectors (one array per embedding model) and a JSON manifest (each face's id,
time, source, quality, group and model; the groups' flags; a sha256 of the vectors), written atomically on every
change (never pickle). `faces/<face id>.jpg` holds the chips, written before the manifest names them; a chip the
manifest does not name (a killed write) is removed at the next change. A damaged or foreign `unknowns.npz` is
reported and replaced by an empty store at the next change, never trusted. Writers in other processes wait on an
advisory lock (`.lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facenet.files import atomic_write
from facenet.unknowns.sighting import Quality, Sighting
from facenet.unknowns.store import FaceInfo, Retention, UnknownStore

log = logging.getLogger(__name__)

FOLDER = "unknowns"
STORE_FILE = "unknowns.npz"
STORE_FORMAT = "facenet-unknown-faces"
STORE_VERSION = 1
CHIP = re.compile(r"^[0-9a-f]{12}\.jpg$")


class FileUnknowns(UnknownStore):
    """The unknown faces kept beside a file gallery (`database_dir/unknowns/`)."""

    def __init__(self, database_dir: str | Path, retention: Retention | None = None) -> None:
        self.folder = Path(database_dir) / FOLDER
        self.retention = retention or Retention()
        self.where = str(self.folder / STORE_FILE)
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._state: dict[str, Any] | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._dirty = False

    def negatives(self, model_id: str) -> dict[str, np.ndarray]:
        """As UnknownStore.negatives; nothing (and no folder made) when there is no store yet."""
        if not (self.folder / STORE_FILE).is_file():
            return {}
        try:
            return super().negatives(model_id)
        except OSError as error:  # a read-only gallery folder: recognition goes on without the corrections
            log.warning("%s: cannot read the faces marked 'not <name>' (%s); recognising without them", self.where,
                        error.strerror or error)
            return {}

    # ------------------------------------------------------------------ locking and the file

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / ".lock", "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    self._load()
                    yield
                    if self._dirty:
                        self._save()
                finally:
                    self._depth, self._dirty = 0, False

    def _load(self) -> dict[str, Any]:
        """The state on disk (cached while the file is unchanged); empty when missing or unusable."""
        path = self.folder / STORE_FILE
        try:
            info = path.stat()
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            stamp = None
        if self._state is None or stamp != self._stamp:
            self._state, self._stamp = (_read(path) if stamp else None) or _empty(), stamp
        return self._state

    def _save(self) -> None:
        state = self._state
        assert state is not None
        arrays = {f"vectors_{i}": np.stack([state["vectors"][fid] for fid in ids]).astype(np.float32)
                  for i, (_, ids) in enumerate(_by_model(state))}
        manifest = {"format": STORE_FORMAT, "version": STORE_VERSION, "faces": state["faces"],
                    "flags": state["flags"], "models": [model for model, _ in _by_model(state)],
                    "rows": [ids for _, ids in _by_model(state)], "checksum": _checksum(arrays)}
        data = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
        atomic_write(self.folder / STORE_FILE, lambda tmp: _savez(tmp, manifest=data, **arrays))
        self._stamp = None  # reread (cheap) rather than trust a stamp taken around another writer
        self._remove_orphan_chips()

    def _remove_orphan_chips(self) -> None:
        named = {f"{face['face_id']}.jpg" for face in self._state["faces"]}
        chips = self.folder / "faces"
        if chips.is_dir():
            for path in chips.iterdir():
                if CHIP.match(path.name) and path.name not in named:
                    path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the primitives

    def _vectors(self, model_id: str) -> tuple[list[str], np.ndarray, list[str]]:
        state = self._load()
        faces = [f for f in state["faces"] if f["model"] == model_id]
        ids = [f["face_id"] for f in faces]
        vectors = (np.stack([state["vectors"][fid] for fid in ids]) if ids else np.zeros((0, 0), np.float32))
        return ids, vectors, [f["group"] for f in faces]

    def _marked(self, model_id: str) -> list[tuple[str, np.ndarray]]:
        state = self._load()
        return [(f["not_of"], state["vectors"][f["face_id"]]) for f in state["faces"]
                if f.get("not_of") and f["model"] == model_id]

    def _put(self, sighting: Sighting, model_id: str, group: str, new: bool, merged: tuple[str, ...]) -> None:
        atomic_write(self.folder / "faces" / f"{sighting.face_id}.jpg", lambda tmp: tmp.write_bytes(sighting.chip))
        state = self._load()
        for other in merged:
            self._regroup(other, group)
        state["faces"].append({"face_id": sighting.face_id, "time": sighting.time, "source": sighting.source,
                               "quality": sighting.quality.record(), "group": group, "model": model_id,
                               "not_of": sighting.not_of})
        state["vectors"][sighting.face_id] = np.asarray(sighting.vector, np.float32)
        self._dirty = True

    def _faces(self) -> list[FaceInfo]:
        return [FaceInfo(f["face_id"], f["time"], f["source"], Quality.from_record(f["quality"]), f["group"],
                         f.get("not_of")) for f in self._load()["faces"]]

    def _flags(self) -> dict[str, bool]:
        return dict(self._load()["flags"])

    def _chip(self, face_id: str) -> bytes | None:
        if not re.fullmatch(r"[0-9a-f]{12}", face_id) or not any(
                f["face_id"] == face_id for f in self._load()["faces"]):
            return None
        with contextlib.suppress(OSError):
            return (self.folder / "faces" / f"{face_id}.jpg").read_bytes()
        return None

    def _set_ignored(self, group_id: str, ignored: bool) -> None:
        self._load()["flags"][group_id] = ignored
        self._dirty = True

    def _regroup(self, old: str, new: str) -> None:
        state = self._load()
        for face in state["faces"]:
            if face["group"] == old:
                face["group"] = new
        if state["flags"].pop(old, False):
            state["flags"][new] = True
        self._dirty = True

    def _delete(self, face_ids: list[str]) -> None:
        state, gone = self._load(), set(face_ids)
        state["faces"] = [f for f in state["faces"] if f["face_id"] not in gone]
        for fid in gone:
            state["vectors"].pop(fid, None)
        alive = {f["group"] for f in state["faces"]}
        state["flags"] = {g: flag for g, flag in state["flags"].items() if g in alive}
        self._dirty = True


def _empty() -> dict[str, Any]:
    return {"faces": [], "flags": {}, "vectors": {}}


def _by_model(state: dict[str, Any]) -> list[tuple[str, list[str]]]:
    models: dict[str, list[str]] = {}
    for face in state["faces"]:
        models.setdefault(face["model"], []).append(face["face_id"])
    return list(models.items())


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def _savez(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _read(path: Path) -> dict[str, Any] | None:
    """The state in `path`, or None (with a warning) when it is damaged, foreign or of another version."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            manifest = json.loads(npz["manifest"].tobytes().decode())
            arrays = {name: npz[name] for name in npz.files if name.startswith("vectors_")}
        if manifest.get("format") != STORE_FORMAT or manifest.get("version") != STORE_VERSION:
            raise ValueError("not a store of unknown faces of this version")
        if _checksum(arrays) != manifest["checksum"]:
            raise ValueError("its vectors changed since it was written (checksum mismatch)")
        vectors = {}
        for i, ids in enumerate(manifest["rows"]):
            vectors.update(zip(ids, arrays[f"vectors_{i}"], strict=True))
        if set(vectors) != {f["face_id"] for f in manifest["faces"]}:
            raise ValueError("its faces and vectors disagree")
        return {"faces": manifest["faces"], "flags": manifest["flags"], "vectors": vectors}
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        log.warning("%s: unreadable store of unknown faces (%s); starting an empty one", path, error)
        return None
