"""The /api/v1/unknowns routes: the faces the service saw but did not know (`POST /recognize?collect=true`, cameras),
grouped by stranger, to be named (enrolled), ignored, merged or forgotten. Times are ISO 8601 UTC like the events'."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from facenet.service.openapi import image_body as _image_body
from facenet.service.store import GalleryStore
from facenet.service.uploads import decode_photo, read_photos
from facenet.unknowns.records import group_record, group_summary
from facenet.unknowns.store import Collected


class NameBody(BaseModel):
    """The person a group is: a new subject or an existing one."""

    subject: str = Field(min_length=1, examples=["Ada Lovelace"])


class IgnoreBody(BaseModel):
    """Ignore the group (no more alerts) or stop ignoring it."""

    ignored: bool = True


class MergeBody(BaseModel):
    """The group whose faces join this one (the same stranger, as a person saw)."""

    group: str = Field(min_length=1, examples=["3f2a9c0b1d4e"])


def parse_box(text: str | None) -> tuple[int, int, int, int] | None:
    """`left,top,right,bottom` in the photo's pixels, as a query parameter; HTTPException 422 when malformed."""
    if text is None:
        return None
    try:
        left, top, right, bottom = (int(round(float(v))) for v in text.split(","))
    except ValueError:
        raise HTTPException(422, f"box {text!r}: give left,top,right,bottom in pixels") from None
    if right <= left or bottom <= top:
        raise HTTPException(422, f"box {text!r}: right must exceed left and bottom top")
    return left, top, right, bottom


def not_record(name: str, kept: Collected) -> dict[str, Any]:
    """The answer to a "not <name>" mark: the person, and the face's id and group among the unknown faces."""
    return {"subject": name, "face_id": kept.face_id, "group": kept.group}


def unknown_routes(api: APIRouter, store: GalleryStore, max_upload: int) -> None:
    """Add the routes to `api` (the /api/v1 router: keys checked); an unknown group or face id is 404."""

    @api.get("/unknowns", tags=["unknown faces"])
    def list_groups() -> dict[str, Any]:
        """Every group of unknown faces, the most recently seen first: face count, first and last seen, sources,
        ignored, and its best faces as examples [{face_id, url}]."""
        return {"groups": [group_summary(g) for g in store.unknown_groups()]}

    @api.delete("/unknowns", tags=["unknown faces"])
    def forget_all() -> dict[str, int]:
        """Forget every unknown face (and so every group)."""
        return {"deleted_faces": store.forget_unknowns()}

    @api.get("/unknowns/faces/{face_id}.jpg", tags=["unknown faces"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def chip(face_id: str) -> Response:
        """An unknown face's chip: the face with room around it (JPEG)."""
        return Response(store.unknown_chip(face_id), media_type="image/jpeg")

    @api.get("/unknowns/{group_id}", tags=["unknown faces"])
    def get_group(group_id: str) -> dict[str, Any]:
        """One group with all its faces, newest first [{face_id, time, source, url}]."""
        return group_record(store.unknown_group(group_id))

    @api.delete("/unknowns/{group_id}", tags=["unknown faces"])
    def forget_group(group_id: str) -> dict[str, Any]:
        """Forget a group and its faces."""
        return {"id": group_id, "deleted_faces": store.forget_group(group_id)}

    @api.post("/unknowns/{group_id}/name", tags=["unknown faces"])
    def name(group_id: str, body: NameBody) -> dict[str, Any]:
        """Name the stranger: his best faces become api-<hash>.jpg photos of data/<subject>/ (new or existing),
        the gallery is synced so that he is recognised from now on, and the group is forgotten. If the sync fails,
        data/ is put back as it was and the group kept."""
        named = store.name_group(group_id, body.subject)
        return {"subject": named.subject, "photos": list(named.photos), "new_subject": named.new_subject,
                "enrolled": named.enrolled}

    @api.post("/unknowns/{group_id}/ignore", tags=["unknown faces"])
    def ignore(group_id: str, body: IgnoreBody | None = None) -> dict[str, Any]:
        """Keep the group but raise no more alerts for it (`{"ignored": false}`: alert again); the group."""
        return group_record(store.ignore_group(group_id, body.ignored if body is not None else True))

    @api.post("/subjects/{subject}/not", tags=["unknown faces"], openapi_extra=_image_body("file"))
    async def not_person(subject: str, request: Request, box: str | None = Query(
            None, description="left,top,right,bottom of the face in the photo (default: its largest face)")
    ) -> dict[str, Any]:
        """"Not this person": the face (at `box`, else the largest) was wrongly named `subject`. It becomes an
        unknown sighting and a negative example of `subject`: faces nearer to it than to `subject`'s own photos
        are no longer named `subject`."""
        where = parse_box(box)
        data, name = (await read_photos(request, ("file",), max_upload))["file"]

        def work() -> dict[str, Any]:
            rgb, scale = decode_photo(data, name)
            inside = None if where is None else tuple(round(v / f) for v, f in zip(where, scale * 2, strict=True))
            return not_record(subject, store.not_person(rgb, subject, inside, "api"))

        return await run_in_threadpool(work)

    @api.post("/unknowns/{group_id}/merge", tags=["unknown faces"])
    def merge(group_id: str, body: MergeBody) -> dict[str, Any]:
        """The other group's faces join this one (the same stranger); the merged group."""
        return group_record(store.merge_groups(group_id, body.group))
