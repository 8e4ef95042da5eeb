"""The one JSON form of a group of unknown faces, shared by the service (GET /api/v1/unknowns) and `facenet unknowns
--json`. Times are ISO 8601 UTC like the events'; `url` is where the service serves a face's chip."""

from __future__ import annotations

from typing import Any

from facenet.live.events import iso_time
from facenet.unknowns.store import EXAMPLES, FaceInfo, Group

CHIPS = "/api/v1/unknowns/faces"


def chip_url(face_id: str) -> str:
    return f"{CHIPS}/{face_id}.jpg"


def group_summary(group: Group) -> dict[str, Any]:
    """A group as a listing shows it: its face count and its best EXAMPLES faces [{face_id, url}]."""
    return {**_group_head(group), "faces": len(group.faces),
            "examples": [{"face_id": f.face_id, "url": chip_url(f.face_id)} for f in group.best(EXAMPLES)]}


def group_record(group: Group) -> dict[str, Any]:
    """A group with all its faces, newest first [{face_id, time, source, url}] (and `not_of` on a face marked
    "not <name>")."""
    return {**_group_head(group), "faces": [_face(f) for f in group.faces]}


def _group_head(group: Group) -> dict[str, Any]:
    return {"id": group.id, "first_seen": iso_time(group.first_seen), "last_seen": iso_time(group.last_seen),
            "sources": group.sources, "ignored": group.ignored}


def _face(face: FaceInfo) -> dict[str, Any]:
    record = {"face_id": face.face_id, "time": iso_time(face.time), "source": face.source,
              "url": chip_url(face.face_id)}
    return record if face.not_of is None else {**record, "not_of": face.not_of}
