"""`facenet unknowns`: the strangers recognition collected, grouped by person; name, ignore or forget a group.

    facenet unknowns                   # list the groups, most recently seen first
    facenet unknowns --name 3f2a…=Ada  # his best faces become photos of data/Ada/, Ada is enrolled
    facenet unknowns --ignore 3f2a…    # keep the group, no more alerts
    facenet unknowns --forget 3f2a…    # delete the group and its faces
    facenet unknowns --not_person photo.jpg=Ada   # its largest face is not Ada: look-alikes are no longer named Ada
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from facenet.cli import common
from facenet.cli.console import emit_json, error
from facenet.cli.exit_codes import Exit
from facenet.gallery import GalleryOptions, open_gallery
from facenet.gallery.pg import GalleryError
from facenet.gallery.photos import BadName
from facenet.images import ImageError, load_image
from facenet.live.events import iso_time
from facenet.settings import KEEP_DAYS, KEEP_FACES
from facenet.unknowns.collect import Collector
from facenet.unknowns.naming import name_group
from facenet.unknowns.records import group_record, group_summary
from facenet.unknowns.store import Retention, UnknownGroupError, UnknownStore
from facenet.verify import NoFaceError

log = logging.getLogger(__name__)


def unknowns_command(
    data_dir: str, database_dir: str, database_url: str | None, name: str | None, ignore: str | None,
    forget: str | None, weights_dir: str, model: str, detector: str, pretrained: bool, as_json: bool,
    not_person: str | None = None, unknown_days: float = KEEP_DAYS, unknown_faces: int = KEEP_FACES,
) -> int:
    """List the groups of unknown faces, or act on one (--name ID=NAME, --ignore ID, --forget ID; one at a time),
    or mark a photo's largest face "not NAME" (--not_person PHOTO=NAME). Exit codes: 0 done, 1 no such group, no
    face, or the gallery failed, 2 bad arguments."""
    asked = [flag for flag, value in (("--name", name), ("--ignore", ignore), ("--forget", forget),
                                      ("--not_person", not_person)) if value]
    if len(asked) > 1:
        return error(f"{asked[0]} and {asked[1]}: one action at a time")
    for flag, value, form in (("--name", name, "GROUP_ID=Person Name"), ("--not_person", not_person,
                                                                        "PHOTO=Person Name")):
        if value is not None and "=" not in value:
            return error(f"{flag} {value!r}: write it as {form}")
    options = GalleryOptions(Path(database_dir), database_url)
    try:
        with open_gallery(options) as gallery:
            retention = Retention(unknown_days, unknown_faces)
            store = gallery.unknowns(retention)
            if name is not None:
                group_id, _, person = name.partition("=")
                pipeline = common.load_pipeline(detector, model, weights_dir, None if pretrained else database_dir)

                def enrolled_names() -> list[str]:
                    gallery.sync(Path(data_dir), pipeline)
                    return gallery.load(pipeline).names

                named = name_group(store, group_id.strip(), person, Path(data_dir), enrolled_names)
                enrolled = "enrolled" if named.enrolled else "NOT enrolled: no usable face in those photos"
                return _done({"subject": named.subject, "photos": list(named.photos), "new_subject":
                              named.new_subject, "enrolled": named.enrolled}, f"named {named.subject}: "
                              f"{len(named.photos)} photos written to {Path(data_dir) / named.subject}, {enrolled}",
                             as_json)
            if not_person is not None:
                return _mark_not(not_person, Collector(options, common.load_pipeline(
                    detector, model, weights_dir, None if pretrained else database_dir), retention), as_json)
            if ignore is not None:
                group = store.ignore_group(ignore)
                return _done(group_record(group), f"ignored group {group.id} (no more alerts)", as_json)
            if forget is not None:
                count = store.forget_group(forget)
                return _done({"id": forget, "deleted_faces": count}, f"forgot group {forget} ({count} faces)",
                             as_json)
            _list(store, as_json)
            return Exit.OK
    except (UnknownGroupError, BadName, ImageError, NoFaceError) as problem:
        return error(str(problem), Exit.FAILED)
    except (OSError, RuntimeError, GalleryError) as problem:
        log.error("%s", problem)
        return Exit.FAILED


def _mark_not(given: str, collector: Collector, as_json: bool) -> int:
    photo, _, person = given.rpartition("=")
    kept = collector.mark_not(load_image(photo), person.strip(), source=photo)
    return _done({"face_id": kept.face_id, "group": kept.group, "not": person.strip()},
                 f"{photo}: its face is not {person.strip()} (kept as unknown face {kept.face_id}, group "
                 f"{kept.group}); faces nearer to it than to {person.strip()} are no longer named so", as_json)


def _list(store: UnknownStore, as_json: bool) -> None:
    groups = store.groups()
    if as_json:
        emit_json({"groups": [group_summary(group) for group in groups]})
        return
    if not groups:
        print("No unknown faces collected yet.", file=sys.stderr)
    for group in groups:
        faces = f"{len(group.faces)} face{'s' if len(group.faces) != 1 else ''}"
        flag = ", ignored" if group.ignored else ""
        print(f"{group.id}: {faces}, last seen {iso_time(group.last_seen)} (first {iso_time(group.first_seen)}) "
              f"at {', '.join(group.sources)}{flag}")


def _done(record: dict, text: str, as_json: bool) -> int:
    if as_json:
        emit_json(record)
    else:
        print(text)
    return Exit.OK
