"""DeepStack's face API at the root, for its clients (Home Assistant's deepstack_face through deepstack-python,
Double Take, Node-RED...): POST /v1/vision/face (detect), /v1/vision/face/register, /recognize, /list, /delete and
/match, with form fields as DeepStack takes them, over the service's gallery.

- The key comes in the form field `api_key` (or the `x-api-key` header): one of the service's keys when it has
  some; none is needed when it has none. A missing or wrong one is 401 `{"success": false, "error": "Incorrect api
  key"}`.
- `image` is the photo. register: any number of image fields of any name, with `userid`; the photos that show a
  face are added to the subject (created when new: data/<userid>/api-<sha>.<ext>), never replacing its others.
  match: two image fields.
- A recognised face's `confidence` is the service's 0-100 score / 100 (0.5 at the calibrated threshold); a stranger
  is `"unknown"` with confidence 0. `min_confidence` can only make naming stricter: a face is named when the service
  names it and its confidence also reaches `min_confidence` (DeepStack's own default of 0.67 is not applied: its
  similarity is another scale). On /v1/vision/face it is the least detection probability (facenet/service/peers.py).
- Every answer has `success` and `duration` (seconds); every refusal is `{"success": false, "error": one line,
  "duration": 0}` with a 4xx status (503 when the gallery cannot be reached), and leaves data/ unchanged.
"""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from facenet.config import UNKNOWN
from facenet.gallery.pg import GalleryError
from facenet.gallery.photos import BadName, clean_name
from facenet.gallery.thresholds import match_score
from facenet.images import ImageError, person_folder
from facenet.service.keys import KEY_HEADER, key_accepted
from facenet.service.peers import Wanted, photo_faces, refusing_route, scaled_box, similarity
from facenet.service.store import GalleryStore, NotDeletable, StoreError, SubjectExists, UnknownSubject
from facenet.service.uploads import UploadError, decode_photo
from facenet.verify import NoFaceError

PREFIX = "/v1/vision"
FACE = PREFIX + "/face"
MAX_IMAGES = 64
"""Image fields one register request may carry."""

STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotDeletable, 403), (UnknownSubject, 404), (SubjectExists, 409), (BadName, 400), (NoFaceError, 400),
    (ImageError, 400), (RequestValidationError, 400), (GalleryError, 503), (StoreError, 400))
"""The HTTP status of each refusal (the first kind that matches)."""

Photo = tuple[bytes, str]


class Refusal(Exception):
    """A refusal in DeepStack's terms: one line and the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_body(message: str) -> dict[str, Any]:
    """DeepStack's error body."""
    return {"success": False, "error": message, "duration": 0}


def render(error: Exception) -> JSONResponse | None:
    """The DeepStack answer to a refusal (None: not one)."""
    if isinstance(error, (Refusal, UploadError)):
        return JSONResponse(error_body(str(error)), error.status)
    if isinstance(error, HTTPException):
        return JSONResponse(error_body(str(error.detail)), error.status_code)
    status = next((s for kind, s in STATUS if isinstance(error, kind)), None)
    return None if status is None else JSONResponse(error_body(str(error).replace("\n", " ")), status)


class Form:
    """A DeepStack request's form: its image files in order [(bytes, name)] and its text fields."""

    def __init__(self, images: list[tuple[str, Photo]], fields: dict[str, str]) -> None:
        self.images, self.fields = images, fields

    def image(self) -> Photo:
        """The `image` field's photo."""
        photo = next((p for field, p in self.images if field == "image"), None)
        if photo is None:
            raise Refusal(400, "No valid image file found (send the photo in the multipart field 'image')")
        return photo

    def min_confidence(self) -> float:
        """The `min_confidence` field (0 when absent)."""
        text = self.fields.get("min_confidence", "").strip()
        try:
            value = float(text) if text else 0.0
        except ValueError:
            raise Refusal(400, f"Invalid value for min_confidence: {text[:40]!r}") from None
        if not math.isfinite(value):
            raise Refusal(400, f"Invalid value for min_confidence: {text[:40]!r}")
        if value > 1:
            raise Refusal(400, "min_confidence cannot be greater than 1")
        return value

    def userid(self) -> str:
        userid = self.fields.get("userid", "").strip()
        if not userid:
            raise Refusal(400, "userid not specified")
        return userid


def deepstack_routes(app: FastAPI, store: GalleryStore, keys: frozenset[str], max_upload: int) -> None:
    """Add DeepStack's face routes to `app` (its key check and error shape on each)."""

    async def form(request: Request) -> Form:
        """The request's form, its key checked."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        images: list[tuple[str, Photo]] = []
        fields: dict[str, str] = {}
        if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            async with request.form(max_files=MAX_IMAGES, max_fields=MAX_IMAGES, max_part_size=max_upload) as got:
                for field, value in got.multi_items():
                    if isinstance(value, UploadFile):
                        images.append((field, (await value.read(), value.filename or field)))
                    else:
                        fields.setdefault(field, value)
        if not key_accepted(fields.get("api_key") or request.headers.get(KEY_HEADER), keys):
            raise Refusal(401, "Incorrect api key")
        return Form(images, fields)

    api = APIRouter(prefix=FACE, route_class=refusing_route(render), tags=["DeepStack"])

    @api.post("", openapi_extra=_form_body("image", "min_confidence", "api_key"))
    @api.post("/", include_in_schema=False)
    async def detect(request: Request) -> dict[str, Any]:
        """Every face, largest first, with the detector's probability (at least `min_confidence`)."""
        started, asked = time.perf_counter(), await form(request)
        (data, name), least = asked.image(), asked.min_confidence()

        def work() -> list[dict[str, Any]]:
            rgb, scale = decode_photo(data, name)
            found = photo_faces(store, rgb, Wanted(min_probability=least))
            return [{"confidence": p, **_box(f.box, scale)} for f, p in zip(found.faces, found.probabilities,
                                                                             strict=True)]

        return _done({"predictions": await run_in_threadpool(work)}, started)

    @api.post("/recognize", openapi_extra=_form_body("image", "min_confidence", "api_key"))
    async def recognize(request: Request) -> dict[str, Any]:
        """Every face, largest first: its userid and confidence, or "unknown" and 0."""
        started, asked = time.perf_counter(), await form(request)
        (data, name), least = asked.image(), asked.min_confidence()

        def work() -> list[dict[str, Any]]:
            rgb, scale = decode_photo(data, name)
            return [_prediction(r.name, r.score, least) | _box(r.box, scale) for r in store.recognize(rgb)]

        return _done({"predictions": await run_in_threadpool(work)}, started)

    @api.post("/register", openapi_extra=_form_body("image", "userid", "api_key"))
    async def register(request: Request) -> dict[str, Any]:
        """Add the photos that show a face to `userid` (created when new); the others are skipped."""
        started, asked = time.perf_counter(), await form(request)
        userid = clean_name(asked.userid())
        if not asked.images:
            raise Refusal(400, "No valid image file found (send the photos as multipart files)")

        def work() -> str:
            faces = [photo for _, photo in asked.images if _has_face(store, photo)]
            if not faces:
                raise Refusal(400, "no face detected in the image(s) given")
            existed = person_folder(store.data_dir, userid) is not None
            store.add_photos(userid, faces, create=True)
            return "face updated" if existed else "face added"

        return _done({"message": await run_in_threadpool(work)}, started)

    @api.post("/list", openapi_extra=_form_body("api_key"))
    async def list_faces(request: Request) -> dict[str, Any]:
        """Every subject's name."""
        started = time.perf_counter()
        await form(request)
        return _done({"faces": list(store.snapshot.subjects)}, started)

    @api.post("/delete", openapi_extra=_form_body("userid", "api_key"))
    async def delete(request: Request) -> dict[str, Any]:
        """Delete a subject and its photos (only photos added through the service: else 403; unknown: done)."""
        started, asked = time.perf_counter(), await form(request)
        userid = asked.userid()
        if person_folder(store.data_dir, userid) is not None:
            await run_in_threadpool(store.delete_subjects, [userid])
        return _done({}, started)

    @api.post("/match", openapi_extra=_form_body("image1", "image2", "api_key"))
    async def match(request: Request) -> dict[str, Any]:
        """How similar the largest faces of two photos are (0.5 at the model's 1:1 threshold)."""
        started, asked = time.perf_counter(), await form(request)
        if len(asked.images) != 2:
            raise Refusal(400, {0: "No valid image file found", 1: "expected two image files, only one found"}.get(
                len(asked.images), "only two images allowed"))
        (_, first), (_, second) = asked.images

        def work() -> float:
            answer = store.verify(decode_photo(*first)[0], decode_photo(*second)[0], (first[1], second[1]))
            return similarity(match_score(answer.distance, answer.threshold))

        return _done({"similarity": await run_in_threadpool(work)}, started)

    app.include_router(api)


def _has_face(store: GalleryStore, photo: Photo) -> bool:
    """Does the photo show a face (as enrollment finds one)? ImageError when it cannot be read."""
    return store.pipeline.subject(decode_photo(*photo)[0], "largest").face is not None


def _prediction(name: str, score: float | None, least: float) -> dict[str, Any]:
    """Who a face is for DeepStack: named by the service and at least `least` confident, else unknown with 0."""
    confidence = similarity(score)
    if name == UNKNOWN or confidence < least:
        return {"confidence": 0, "userid": "unknown"}
    return {"confidence": confidence, "userid": name}


def _box(box: tuple[int, ...], scale: tuple[float, float]) -> dict[str, int]:
    left, top, right, bottom = scaled_box(box, scale)
    return {"x_min": left, "y_min": top, "x_max": right, "y_max": bottom}


def _done(answer: dict[str, Any], started: float) -> dict[str, Any]:
    return {"success": True, **answer, "duration": round(time.perf_counter() - started, 4)}


def _form_body(*fields: str) -> dict[str, Any]:
    """OpenAPI description of a DeepStack form: photo fields (image*) and text fields."""
    properties = {f: {"type": "string", "format": "binary"} if f.startswith("image") else {"type": "string"}
                  for f in fields}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": properties}}}}}

