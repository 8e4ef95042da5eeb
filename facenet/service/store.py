"""The service's gallery: subjects and their example photos in data/<person>/ (the source of truth), the enrolled
database synced from it, and recognition against an immutable snapshot.

One writer, many readers: every change (a subject added, renamed or deleted, a photo added or deleted, a sync)
runs under one lock, writes data/ atomically, syncs the gallery (file or PostgreSQL backend) and then swaps in a
new `Snapshot`; readers take the current snapshot reference and never wait for a sync. The face models are not
thread-safe, so each detector or model call is serialised (`locked_pipeline`), call by call.

Photos the service writes are named `api-<first 20 hex of their sha256><ext>` (facenet/gallery/photos.py): only such
a file whose bytes still have that hash may be deleted through the service. Users' own photos are never deleted,
moved or rewritten; a subject holding any of them cannot be deleted nor merged into another (renaming renames its
folder, the photos untouched). Batch changes (several photos added or deleted, several subjects deleted, a merge)
sync once.

The faces it saw but did not know (`recognize(..., collect=True)`) are kept in the gallery's store of unknown faces
(facenet.unknowns: beside the file gallery, or in the PostgreSQL gallery's tables), under the `retention` given.
Naming a group writes its best faces into data/<name>/ under the write lock and syncs, like any other change.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facenet.config import UNKNOWN
from facenet.detect.face import Recognition
from facenet.files import atomic_write
from facenet.gallery import GalleryOptions, open_gallery
from facenet.gallery.photos import api_photo_name, clean_name, is_api_photo, remove_photos, write_photos
from facenet.images import list_images, list_people, person_folder, person_name
from facenet.recognize import Recognizer, face_points
from facenet.service.uploads import decode_photo
from facenet.unknowns.collect import Collector
from facenet.unknowns.naming import Named, name_group
from facenet.unknowns.store import Collected, Group, Retention
from facenet.verify import NoFaceError, Verification, verify_with

if TYPE_CHECKING:
    from facenet.detect.face import Face
    from facenet.gallery.index import FaceDatabase
    from facenet.gallery.report import EnrollmentReport
    from facenet.pipeline import FacePipeline
    from facenet.unknowns.store import UnknownStore

log = logging.getLogger(__name__)

class StoreError(Exception):
    """A request the gallery cannot honour; the message says why in one line."""


class UnknownSubject(StoreError):
    """No folder data/<name>/."""


class UnknownPhoto(StoreError):
    """No such photo in the subject's folder."""


class SubjectExists(StoreError):
    """The folder of that name is already there."""


class NotDeletable(StoreError):
    """A user's own photo, or a subject that holds some: the service never deletes them."""


@dataclass(frozen=True)
class Snapshot:
    """What readers see between two changes: the enrolled database, the last sync's report, the folders."""

    database: FaceDatabase
    enrollment: EnrollmentReport
    """The last sync's report (`.people`: the photos each enrolled person's centroid was made of)."""
    report_text: str
    subjects: dict[str, tuple[str, ...]]
    """Each data/ subfolder's photos, relative to it (subfolders included), sorted."""


@dataclass(frozen=True)
class Identified:
    """A face named against one snapshot (`GalleryStore.identify`): its `Recognition`, its unit vector, and the
    enrolled people nearest to it as (name, distance, 0-100 score), nearest first."""

    recognition: Recognition
    vector: np.ndarray
    nearest: list[tuple[str, float, float]]


class _Locked:
    """An object whose method calls hold a shared lock; its other attributes pass through."""

    def __init__(self, target: Any, lock: threading.RLock) -> None:
        self._target, self._lock = target, lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked


def locked_pipeline(pipeline: FacePipeline) -> FacePipeline:
    """A copy of `pipeline` whose detector and embedder calls hold one lock (YuNet, dlib and the Keras/TFLite models
    are not thread-safe): a request waits for one detection or one embedding batch, never for a whole sync."""
    lock = threading.RLock()
    shared = copy.copy(pipeline)
    shared.detector = _Locked(pipeline.detector, lock)
    shared.embedder = _Locked(pipeline.embedder, lock)
    return shared


class _Kept:
    """A file's bytes and times, to put it back as it was."""

    def __init__(self, path: Path) -> None:
        self.path, self.data, stat = path, path.read_bytes(), path.stat()
        self.times = (stat.st_atime_ns, stat.st_mtime_ns)

    def restore(self) -> None:
        atomic_write(self.path, lambda tmp: tmp.write_bytes(self.data))
        os.utime(self.path, ns=self.times)


class GalleryStore:
    """Subjects, example photos and the synced gallery behind the REST service (see the module docstring)."""

    def __init__(self, data_dir: str | Path, pipeline: FacePipeline, database_dir: str | Path = "database",
                 database_url: str | None = None, threshold: float | None = None,
                 retention: Retention | None = None) -> None:
        """`retention`: how long and how many unknown faces are kept (the --unknown_days / --unknown_faces flags)."""
        self.data_dir, self.database_dir = Path(data_dir), Path(database_dir)
        self.options = GalleryOptions(self.database_dir, database_url)
        self.threshold = threshold
        self.pipeline = locked_pipeline(pipeline)
        self.retention = retention or Retention()
        self.collector = Collector(self.options, self.pipeline, self.retention)
        self._write = threading.Lock()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.snapshot: Snapshot = self._sync()

    # ------------------------------------------------------------------ reading

    def recognize(self, rgb: np.ndarray, collect: bool = False) -> list[Recognition]:
        """Every face of an RGB photo, largest first, named against the current snapshot. `collect`: keep each
        Unknown face that passes the quality gate as a sighting of "api" (its `face_id` and `group` set)."""
        return Recognizer(self.pipeline, self.snapshot.database, self.threshold, reuse_still=False,
                          collector=self.collector if collect else None, source="api").recognize(rgb)

    def identify(self, rgb: np.ndarray, faces: list[Face], count: int = 1) -> list[Identified]:
        """Name the given (completed) faces of an RGB photo as `recognize` does, against one snapshot, with their
        vectors and the `count` enrolled people nearest to each (the peer APIs' candidates)."""
        database = self.snapshot.database
        vectors = self.pipeline.embed(rgb, faces)
        lookup = (database.identify(vectors, self.threshold) if len(database)
                  else [(UNKNOWN, None, None)] * len(faces))
        nearest = database.nearest_people(vectors, count, self.threshold)
        return [Identified(Recognition(f.box, name, distance, score, face_points(f)), vector, near)
                for f, vector, (name, distance, score), near in zip(faces, vectors, lookup, nearest, strict=True)]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Every face of an RGB photo, largest first, with landmarks."""
        return self.pipeline.detect(rgb)

    def verify(self, a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("first photo", "second photo")
               ) -> Verification:
        """Same person or not: the largest face of each photo, the model's calibrated 1:1 threshold."""
        return verify_with(self.pipeline, a, b, names=names)

    def folder(self, name: str) -> Path:
        """data/<name>/ of an existing subject (its name in any Unicode form on disk); UnknownSubject otherwise."""
        folder = person_folder(self.data_dir, clean_name(name))
        if folder is None:
            raise UnknownSubject(f"unknown subject {name!r} (no folder {self.data_dir / clean_name(name)})")
        return folder

    def photo(self, name: str, image_id: str) -> Path:
        """The path of one of the subject's photos (image_id: its path relative to the folder)."""
        folder = self.folder(name)
        for path in list_images(folder):
            if path.relative_to(folder).as_posix() == image_id:
                return path
        raise UnknownPhoto(f"subject {name!r} has no photo {image_id!r}")

    # ------------------------------------------------------------------ unknown faces

    @contextmanager
    def unknowns(self) -> Iterator[UnknownStore]:
        """The gallery's store of unknown faces, open for one request (UnknownGroupError for an unknown id,
        GalleryError when a PostgreSQL gallery cannot be reached)."""
        with open_gallery(self.options) as gallery:
            yield gallery.unknowns(self.retention)

    def unknown_groups(self) -> list[Group]:
        """Every group of unknown faces, the most recently seen first."""
        with self.unknowns() as store:
            return store.groups()

    def unknown_group(self, group_id: str) -> Group:
        """One group of unknown faces, with all its faces (newest first)."""
        with self.unknowns() as store:
            return store.group(group_id)

    def unknown_chip(self, face_id: str) -> bytes:
        """The JPEG chip of a stored unknown face."""
        with self.unknowns() as store:
            return store.chip(face_id)

    def ignore_group(self, group_id: str, ignored: bool = True) -> Group:
        """Keep the group but raise no more alerts for it (or again, with ignored=False)."""
        with self.unknowns() as store:
            return store.ignore_group(group_id, ignored)

    def merge_groups(self, keep: str, other: str) -> Group:
        """`other`'s faces become part of `keep`; the merged group."""
        with self.unknowns() as store:
            return store.merge_groups(keep, other)

    def forget_group(self, group_id: str) -> int:
        """Delete a group and its faces; how many faces went."""
        with self.unknowns() as store:
            return store.forget_group(group_id)

    def forget_unknowns(self) -> int:
        """Delete every unknown face; how many went."""
        with self.unknowns() as store:
            return store.forget_all()

    def not_person(self, rgb: np.ndarray, name: str, box: tuple[int, int, int, int] | None = None,
                   source: str = "api") -> Collected:
        """"Not <name>": the face at `box` (default: the largest) becomes an unknown sighting and a negative of
        `name`; from the next request on, faces nearer to it than to `name` are not named `name`. UnknownSubject
        when nobody of that name is enrolled, NoFaceError when no face is there."""
        enrolled = self.snapshot.database.names
        if name not in enrolled:
            raise UnknownSubject(f"nobody named {name!r} is enrolled")
        kept = self.collector.mark_not(rgb, name, box, source)
        with self.unknowns() as store:
            self.snapshot.database.negatives = store.negatives(self.pipeline.model_id)
        return kept

    # ------------------------------------------------------------------ writing (one at a time)

    def name_group(self, group_id: str, subject: str) -> Named:
        """Name a stranger: his group's best faces become api-<hash>.jpg photos of data/<subject>/ (new or
        existing), the gallery is synced (he is recognised from now on) and the group forgotten. When the sync
        fails, the photos written are removed again (data/ as it was) and the group is kept."""
        with self._write, self.unknowns() as store:
            return name_group(store, group_id, subject, self.data_dir, lambda: self._swap().database.names)

    def sync(self) -> Snapshot:
        """Sync the gallery with data/ (after photos were added or removed by hand)."""
        with self._write:
            return self._swap()

    def add_subject(self, name: str) -> str:
        """Create data/<name>/ (empty: the person is enrolled once a photo with a face is added)."""
        name = clean_name(name)
        with self._write:
            folder = self.data_dir / name
            if folder.exists() or person_folder(self.data_dir, name) is not None:
                raise SubjectExists(f"subject {name!r} already exists")
            folder.mkdir()
            self._swap(undo=folder.rmdir)
        return name

    def rename_subject(self, name: str, new_name: str) -> str:
        """Rename data/<name>/ to data/<new_name>/ (its photos are not touched) and sync."""
        new_name = clean_name(new_name)
        with self._write:
            folder, target = self.folder(name), self.data_dir / new_name
            if target.exists() or person_folder(self.data_dir, new_name) is not None:
                raise SubjectExists(f"subject {new_name!r} already exists")
            folder.rename(target)
            self._swap(removed=(person_name(folder.name),), undo=lambda: target.rename(folder))
        return new_name

    def merge_subject(self, name: str, into: str) -> int:
        """Move the photos of data/<name>/ into the existing data/<into>/ and remove <name>, with one sync; how many
        photos it held. Only a folder of photos the service added can be merged (NotDeletable otherwise: users'
        photos are never moved); a photo <into> already holds (same bytes, same name) is dropped from <name>."""
        with self._write:
            source, target = self.folder(name), self.folder(into)
            if source == target:
                return 0
            photos = self._service_only(source)
            kept = [_Kept(p) for p in photos if (target / p.name).exists()]
            moved = [(p, target / p.name) for p in photos if not (target / p.name).exists()]
            for photo in kept:
                photo.path.unlink()
            for old, new in moved:
                old.rename(new)
            source.rmdir()

            def undo() -> None:
                source.mkdir(exist_ok=True)
                for old, new in moved:
                    new.rename(old)
                for photo in kept:
                    photo.restore()

            self._swap(removed=(person_name(source.name),), undo=undo)
        return len(photos)

    def delete_subject(self, name: str) -> int:
        """Delete a subject whose folder holds only photos the service added; returns how many were removed."""
        [removed] = self.delete_subjects([name]).values()
        return removed

    def delete_subjects(self, names: list[str] | None = None) -> dict[str, int]:
        """Delete subjects (None: every subject) whose folders hold only photos the service added, with one sync;
        {subject: photos removed}. NotDeletable, and nothing deleted, when one of them holds anything else."""
        with self._write:
            folders = [self.folder(n) for n in (self.snapshot.subjects if names is None else names)]
            folders = list(dict.fromkeys(folders))
            photos = {folder: self._service_only(folder) for folder in folders}
            kept = [_Kept(path) for paths in photos.values() for path in paths]  # small: put back if the sync fails
            for folder, paths in photos.items():
                for path in paths:
                    path.unlink()
                folder.rmdir()

            def undo() -> None:
                for folder in photos:
                    folder.mkdir(exist_ok=True)
                for photo in kept:
                    photo.restore()

            self._swap(removed=tuple(person_name(f.name) for f in folders), undo=undo)
        return {person_name(folder.name): len(paths) for folder, paths in photos.items()}

    def add_photo(self, name: str, data: bytes, source: str = "upload") -> tuple[str, bool]:
        """Save an uploaded photo with a face as data/<name>/api-<hash><ext> (atomically) and sync.

        Returns (image_id, created: False when the same bytes were already there). ImageError for a photo that
        cannot be read, NoFaceError when no face is found: then nothing is written.
        """
        return self.add_photos(name, [(data, source)])[0]

    def add_photos(self, name: str, photos: list[tuple[bytes, str]], create: bool = False) -> list[tuple[str, bool]]:
        """Save uploaded photos [(bytes, name for messages)], each with a face, as data/<name>/api-<hash><ext>
        (atomically) with one sync; `create`: make data/<name>/ when it is missing (removed again on a failure).

        Returns (image_id, created: False when the same bytes were already there) per photo. ImageError for a photo
        that cannot be read, NoFaceError when one shows no face: then nothing is written.
        """
        name = clean_name(name)
        if not create:
            self.folder(name)
        for data, source in photos:
            rgb, _ = decode_photo(data, source)
            if self.pipeline.subject(rgb, "largest").face is None:
                raise NoFaceError(f"{source}: no face found")
        with self._write:
            folder = person_folder(self.data_dir, name) if create else self.folder(name)
            made = folder is None
            folder = self.data_dir / name if folder is None else folder

            def undo() -> None:
                remove_photos(written)
                if made:
                    folder.rmdir()

            written: list[Path] = []
            try:
                written = write_photos(folder, [data for data, _ in photos])
            except BaseException:
                undo()
                raise
            if written or made:
                self._swap(undo=undo)
        new, answers = set(written), []
        for data, _ in photos:
            path = folder / api_photo_name(data)
            answers.append((path.name, path in new))
            new.discard(path)
        return answers

    def delete_photo(self, name: str, image_id: str) -> None:
        """Delete a photo the service added (NotDeletable for any other) and sync."""
        self.delete_photos([(name, image_id)])

    def delete_photos(self, photos: list[tuple[str, str]]) -> None:
        """Delete photos the service added [(subject, image_id)] with one sync; NotDeletable, and nothing deleted,
        when one of them is any other photo."""
        with self._write:
            paths = list(dict.fromkeys(self.photo(name, image_id) for name, image_id in photos))
            own = next((path for path in paths if not is_api_photo(path)), None)
            if own is not None:
                raise NotDeletable(f"{own} was not added through the service: facenet never deletes your own "
                                   "photos (remove it by hand)")
            kept = [_Kept(path) for path in paths]
            for photo in kept:
                photo.path.unlink()
            self._swap(undo=lambda: [photo.restore() for photo in kept])

    def _service_only(self, folder: Path) -> list[Path]:
        """The photos of a folder, which must all be photos the service added (NotDeletable otherwise)."""
        entries = sorted(folder.rglob("*"))
        own = [p for p in entries if not is_api_photo(p)]
        if own:
            raise NotDeletable(f"subject {folder.name!r} holds {len(own)} file(s) not added through the service "
                               f"(e.g. {own[0].relative_to(folder).as_posix()!r}); facenet never deletes your own "
                               f"photos: remove them from {folder} by hand first")
        return entries

    # ------------------------------------------------------------------ sync

    def _swap(self, removed: tuple[str, ...] = (), undo: Callable[[], None] | None = None) -> Snapshot:
        """Sync and swap in the new snapshot. When the sync fails (PostgreSQL down...), `undo` first puts data/ back
        as it was before the change, so an error never leaves data/ changed and the gallery not."""
        try:
            self.snapshot = self._sync(removed)
        except BaseException:
            if undo is not None:
                try:
                    undo()
                except OSError as error:
                    log.error("could not undo the change of %s after a failed sync: %s", self.data_dir, error)
            raise
        return self.snapshot

    def _sync(self, removed: tuple[str, ...] = ()) -> Snapshot:
        """Sync the backend with data/ (`removed`: subjects that left, to drop from a shared gallery)."""
        with open_gallery(self.options) as gallery:
            for name in removed:  # first: should the sync fail, data/ is put back and they are enrolled again
                gallery.remove_person(name)
            report = gallery.sync(self.data_dir, self.pipeline)
            database = gallery.load(self.pipeline)
        facts = report.shared
        if facts is None:
            text = report.to_text()
        else:
            text = (f"Gallery: {len(database)} people; this folder: {facts.people} people, {facts.photos} "
                    f"photos ({facts.embedded} embedded, {facts.reused} reused, {len(facts.skipped)} skipped)")
        return Snapshot(database, report, text, self._subjects())

    def _subjects(self) -> dict[str, tuple[str, ...]]:
        people, _ = list_people(self.data_dir, skip=self.database_dir)
        return {name: tuple(Path(*p.relative_to(self.data_dir).parts[1:]).as_posix() for p in photos)
                for name, photos in people}  # relative to the folder as named on disk (NFD from a Mac too)
