"""The store of unknown faces: sightings grouped by stranger, what a group is, and what can be done to one.

`UnknownStore` holds the rules (collect with the quality gate and retention, online grouping, listing, ignoring,
forgetting, merging, the best faces of a group); its two backends keep the data beside their gallery: files in the
file gallery's folder (`FileUnknowns`), tables in the PostgreSQL gallery (`PgUnknowns`, so that several sites see one
stranger as one group). Naming a group (its best faces become photos of data/<name>/) is done by the gallery that
owns data/ (facenet.api.Gallery, the service's GalleryStore) with `best_chips`, then `forget_group`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from facenet.settings import KEEP_DAYS, KEEP_FACES  # the default retention (light: the CLI's flags use it)
from facenet.unknowns.grouping import assign
from facenet.unknowns.sighting import Quality, Sighting, new_id

EXAMPLES = 4
"""Faces shown for a group in a listing (its best, by `Quality.rank`)."""

NAME_FACES = 5
"""Faces of a group that become photos of the person it is named as (its best, by `Quality.rank`)."""


class UnknownGroupError(LookupError):
    """No such group (or face) in the store of unknown faces."""


class UnknownStoreError(OSError):
    """The store of unknown faces cannot be written (a full disk, no permission): one line saying where and why."""


@dataclass(frozen=True)
class Retention:
    """How long and how many sightings the store keeps (the --unknown_days / --unknown_faces flags)."""

    days: float = KEEP_DAYS
    faces: int = KEEP_FACES

    def __post_init__(self) -> None:
        if not self.days > 0 or self.faces < 1:
            raise ValueError(f"retention must keep something: days {self.days} > 0 and faces {self.faces} >= 1")


@dataclass(frozen=True)
class FaceInfo:
    """A stored sighting without its vector and chip: what lists show."""

    face_id: str
    time: float
    source: str
    quality: Quality
    group: str
    not_of: str | None = None


@dataclass(frozen=True)
class Group:
    """One stranger: his sightings (newest first) and whether he is ignored (no more alerts)."""

    id: str
    faces: tuple[FaceInfo, ...]
    ignored: bool = False

    @property
    def first_seen(self) -> float:
        return min(face.time for face in self.faces)

    @property
    def last_seen(self) -> float:
        return max(face.time for face in self.faces)

    @property
    def sources(self) -> list[str]:
        """Where he was seen, most sightings first."""
        return [source for source, _ in Counter(face.source for face in self.faces).most_common()]

    def best(self, count: int) -> list[FaceInfo]:
        """His `count` best faces (Quality.rank), best first."""
        return sorted(self.faces, key=lambda face: -face.quality.rank)[:count]


@dataclass(frozen=True)
class Collected:
    """What collecting one face did: its id, its group (new or returning, how many sightings it now has, ignored),
    and the groups this face joined into it."""

    face_id: str
    group: str
    new: bool
    sightings: int
    ignored: bool
    merged: tuple[str, ...] = ()


class UnknownStore:
    """The rules over a backend's primitives (the `_` methods each backend defines). Safe across processes: every
    change runs inside the backend's exclusive `_locked` section."""

    retention: Retention

    # ------------------------------------------------------------------ the rules

    def collect(self, sighting: Sighting, model_id: str, threshold: float) -> Collected:
        """Store one unknown face (the caller applied the quality gate) in the group of the stranger it belongs to
        (`grouping.assign` against the stored faces of the same model, at the 1:1 `threshold`), then apply the
        retention."""
        with self._locked():
            ids, vectors, groups = self._vectors(model_id)
            known = set(groups)
            done = assign(np.asarray(sighting.vector, np.float32), vectors, groups, threshold,
                          lambda: _fresh(known))
            self._put(sighting, model_id, done.group, done.new, done.merged)
            self._prune(time.time())
            group = self._group(done.group)
        return Collected(sighting.face_id, done.group, done.new, len(group.faces) if group else 1,
                         bool(group and group.ignored), done.merged)

    def groups(self) -> list[Group]:
        """Every group, the most recently seen first."""
        with self._locked():
            faces, flags = self._faces(), self._flags()
        members: dict[str, list[FaceInfo]] = {}
        for face in sorted(faces, key=lambda f: -f.time):
            members.setdefault(face.group, []).append(face)
        return sorted((Group(gid, tuple(found), flags.get(gid, False)) for gid, found in members.items()),
                      key=lambda g: -g.last_seen)

    def group(self, group_id: str) -> Group:
        """One group with all its faces; UnknownGroupError when there is none of that id."""
        with self._locked():
            found = self._group(group_id)
        if found is None:
            raise UnknownGroupError(f"no group of unknown faces {group_id!r}")
        return found

    def chip(self, face_id: str) -> bytes:
        """The JPEG chip of a stored face; UnknownGroupError when there is none of that id."""
        with self._locked():
            data = self._chip(face_id)
        if data is None:
            raise UnknownGroupError(f"no unknown face {face_id!r}")
        return data

    def best_chips(self, group_id: str, count: int = NAME_FACES) -> list[bytes]:
        """The JPEG chips of a group's `count` best faces (what naming the group enrolls)."""
        return [self.chip(face.face_id) for face in self.group(group_id).best(count)]

    def ignore_group(self, group_id: str, ignored: bool = True) -> Group:
        """Keep the group but raise no more alerts for it (or again, with ignored=False)."""
        with self._locked():
            self.group(group_id)
            self._set_ignored(group_id, ignored)
            return self.group(group_id)

    def forget_group(self, group_id: str) -> int:
        """Delete a group and its faces; how many faces went."""
        with self._locked():
            faces = self.group(group_id).faces
            self._delete([face.face_id for face in faces])
        return len(faces)

    def merge_groups(self, keep: str, other: str) -> Group:
        """Make `other`'s faces part of `keep` (the same stranger, as a person saw); the merged group."""
        with self._locked():
            first, second = self.group(keep), self.group(other)
            if first.id != second.id:
                self._regroup(second.id, first.id)
                if second.ignored and not first.ignored:
                    self._set_ignored(first.id, True)
            return self.group(keep)

    def negatives(self, model_id: str) -> dict[str, np.ndarray]:
        """{enrolled name: (k, d) unit vectors of the faces marked "not <name>"} of `model_id`'s embeddings."""
        with self._locked():
            marked = self._marked(model_id)
        found: dict[str, list[np.ndarray]] = {}
        for name, vector in marked:
            found.setdefault(name, []).append(np.asarray(vector, np.float32))
        return {name: np.stack(rows) for name, rows in found.items()}

    def forget_all(self) -> int:
        """Delete every unknown face; how many went."""
        with self._locked():
            faces = self._faces()
            self._delete([face.face_id for face in faces])
        return len(faces)

    def _group(self, group_id: str) -> Group | None:
        faces = sorted((f for f in self._faces() if f.group == group_id), key=lambda f: -f.time)
        return Group(group_id, tuple(faces), self._flags().get(group_id, False)) if faces else None

    def _prune(self, now: float) -> None:
        """Forget sightings beyond the retention: older than its days, and the oldest beyond its count. Faces marked
        "not <name>" are kept (a person's correction, like an enrolled photo, stays until forgotten)."""
        faces = sorted((f for f in self._faces() if not f.not_of), key=lambda f: -f.time)
        cutoff = now - self.retention.days * 86400
        old = [f.face_id for i, f in enumerate(faces) if f.time < cutoff or i >= self.retention.faces]
        if old:
            self._delete(old)

    # ------------------------------------------------------------------ what a backend defines

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive section against every other writer (threads and processes); re-entrant."""
        raise NotImplementedError
        yield

    def _vectors(self, model_id: str) -> tuple[list[str], np.ndarray, list[str]]:
        """(face ids, (n, d) float32 vectors, group ids) of the stored faces embedded by `model_id`."""
        raise NotImplementedError

    def _marked(self, model_id: str) -> list[tuple[str, np.ndarray]]:
        """(name, vector) of each face of `model_id` marked "not <name>" (only those are read)."""
        raise NotImplementedError

    def _put(self, sighting: Sighting, model_id: str, group: str, new: bool, merged: tuple[str, ...]) -> None:
        """Store a face in `group` (a new one when `new`); move the `merged` groups' faces into `group`."""
        raise NotImplementedError

    def _faces(self) -> list[FaceInfo]:
        raise NotImplementedError

    def _flags(self) -> dict[str, bool]:
        """{group id: ignored} of the groups that have a flag."""
        raise NotImplementedError

    def _chip(self, face_id: str) -> bytes | None:
        raise NotImplementedError

    def _set_ignored(self, group_id: str, ignored: bool) -> None:
        raise NotImplementedError

    def _regroup(self, old: str, new: str) -> None:
        """Move every face of group `old` into group `new`."""
        raise NotImplementedError

    def _delete(self, face_ids: list[str]) -> None:
        """Delete faces (and their chips), and the flags of groups left empty."""
        raise NotImplementedError


def _fresh(known: set[str]) -> str:
    """A group id not among `known`."""
    while (candidate := new_id()) in known:
        pass
    known.add(candidate)
    return candidate
