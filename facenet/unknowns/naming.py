"""Naming a group of unknown faces: its best faces become photos of data/<name>/ (a new or an existing person), the
gallery is synced so that the person is enrolled, and the group is forgotten. Used by the Python API and the service
alike; nothing is left changed when a step fails (the photos written are removed, the group kept)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from facenet.gallery.photos import clean_name, remove_photos, write_photos
from facenet.images import person_folder, person_name
from facenet.unknowns.store import NAME_FACES, UnknownStore


@dataclass(frozen=True)
class Named:
    """What naming a group did: the person's name, the photos written into his folder, whether he is new."""

    subject: str
    photos: tuple[str, ...]
    """The photos written, relative to the person's folder (api-<hash>.jpg)."""
    new_subject: bool
    enrolled: bool
    """Whether the sync enrolled him (False when none of the photos held a usable face)."""


def name_group(store: UnknownStore, group_id: str, subject: str, data_dir: Path,
               sync: Callable[[], Iterable[str]], faces: int = NAME_FACES) -> Named:
    """Write the group's `faces` best chips into data/<subject>/ (created when new), `sync()` the gallery (it
    returns the enrolled names), forget the group. BadName, UnknownGroupError: nothing was changed; an error of
    `sync` removes the photos written first."""
    subject = clean_name(subject)
    chips = store.best_chips(group_id, faces)
    existing = person_folder(data_dir, subject)
    folder = existing or data_dir / subject
    written = write_photos(folder, chips)
    try:
        enrolled = person_name(folder.name) in sync()
    except BaseException:
        remove_photos(written)
        if existing is None:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    store.forget_group(group_id)
    return Named(person_name(folder.name), tuple(p.name for p in written), existing is None, enrolled)
