"""CompreFace's REST API (its docs/Rest-API-description.md) over the service's gallery, for CompreFace's clients
(its SDKs, Double Take, Viseron...): /api/v1/recognition (subjects, example faces, recognize, verify against a saved
image), /api/v1/detection/detect and /api/v1/verification/verify, beside the service's own /api/v1 routes.

- The key comes in the `x-api-key` header: one of the service's keys (any value when it has none).
- Photos come as multipart (`file`; `source_image` and `target_image` to verify) or base64 in JSON, as CompreFace
  takes them. Query parameters: `limit` (the N largest faces, 0: all), `det_prob_threshold` (0-1, against the box's
  `probability`, facenet/service/peers.py), `prediction_count`, `face_plugins` (`landmarks`, `calculator` for the
  embedding; any other name, `undefined` included, is ignored), `status` (execution times and plugin versions),
  `detect_faces` (false: the photo is one face crop).
- A face's `similarity` is the service's 0-100 score / 100: 0.5 at the calibrated threshold. `subjects` lists the
  `prediction_count` nearest people even below it (CompreFace has no "unknown"), but only the person the service
  names reaches 0.5: anyone else stays below (a face the service leaves unknown never reads as a match).
- Image ids are global: a UUID derived from the photo's sha256, the same in every subject and across renames and
  merges (`PhotoIds`). Photos added here are the service's own (data/<subject>/api-<sha>.<ext>); users' own photos
  are listed with ids too, but a request that would delete or move one is refused whole (code 32).
- Every refusal is CompreFace's `{"message": one line, "code": n}`: 10 a missing or wrong key (401), 11 an unknown
  image id and 42 an unknown subject (404), 28 no face, 31 several faces where one is needed, 43 a subject that
  exists, 26 a bad parameter, 33 a missing one, 34 a missing or unusable photo field, 21 an unreadable image,
  32 a user's own photo (403), 41 the gallery unreachable (503).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from facenet.files import file_sha256
from facenet.gallery.pg import GalleryError
from facenet.gallery.photos import API_PHOTO, BadName, clean_name
from facenet.gallery.thresholds import match_score, verify_threshold
from facenet.images import ImageError, person_folder
from facenet.pipeline import five_points
from facenet.service.keys import KEY_HEADER, key_accepted
from facenet.service.openapi import image_body
from facenet.service.peers import Found, Wanted, photo_faces, refusing_route, scaled_box, similarity
from facenet.service.store import (
    GalleryStore,
    NotDeletable,
    StoreError,
    SubjectExists,
    UnknownPhoto,
    UnknownSubject,
)
from facenet.service.uploads import UploadError, decode_photo, read_photos
from facenet.verify import NoFaceError, subject_vector

PREFIXES = ("/api/v1/recognition", "/api/v1/detection", "/api/v1/verification")
NO_FACE = "No face is found in the given image"
ID_NAMESPACE = uuid.UUID("6f1c2a4e-59b0-4d7e-9a51-0c3f8e2d7b16")
"""Namespace of the photos' UUIDs (uuid5 of the first 20 hex of their sha256)."""

CODES: tuple[tuple[type[Exception], int, int], ...] = (
    (NotDeletable, 32, 403), (UnknownSubject, 42, 404), (UnknownPhoto, 11, 404), (SubjectExists, 43, 400),
    (BadName, 26, 400), (NoFaceError, 28, 400), (ImageError, 21, 400), (RequestValidationError, 26, 400),
    (GalleryError, 41, 503), (StoreError, 0, 400))
"""CompreFace's code and the HTTP status of each refusal (the first kind that matches)."""


class Refusal(Exception):
    """A refusal in CompreFace's terms: its code, one line, the HTTP status."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


class SubjectBody(BaseModel):
    """A subject name (other fields, such as the Python SDK's `api_endpoint`, are ignored)."""

    subject: str = Field(min_length=1, examples=["Ada Lovelace"])


def error_body(message: str, code: int = 26) -> dict[str, Any]:
    """CompreFace's error body."""
    return {"message": message, "code": code}


def render(error: Exception) -> JSONResponse | None:
    """The CompreFace answer to a refusal (None: not one)."""
    if isinstance(error, Refusal):
        return JSONResponse(error_body(str(error), error.code), error.status)
    if isinstance(error, UploadError):
        return JSONResponse(error_body(str(error), 34), error.status)
    if isinstance(error, HTTPException):
        return JSONResponse(error_body(str(error.detail), 26), error.status_code)
    if isinstance(error, RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors())
        return JSONResponse(error_body(f"invalid request: {problems}", 26), 400)
    code, status = next(((c, s) for kind, c, s in CODES if isinstance(error, kind)), (None, None))
    return None if code is None else JSONResponse(error_body(str(error).replace("\n", " "), code), status)


class PhotoIds:
    """The global ids of the photos in data/: uuid5 of the first 20 hex of each photo's sha256. A service photo's
    name carries them (api-<hex>.<ext>); other photos are hashed once, cached by path, size and mtime."""

    def __init__(self, store: GalleryStore) -> None:
        self.store = store
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def of_hex(sha20: str) -> str:
        return str(uuid.uuid5(ID_NAMESPACE, sha20))

    def of(self, path: Path) -> str:
        """The id of a photo file."""
        match = API_PHOTO.match(path.name)
        if match:
            return self.of_hex(match.group(1))
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._hashes.get(key)
        if known is None:
            known = file_sha256(path)[:20]
            with self._lock:
                self._hashes[key] = known
        return self.of_hex(known)

    def listing(self, subject: str | None = None) -> list[tuple[str, str, str]]:
        """(image id, subject, path in its folder) of every photo (of one subject), by subject then path."""
        subjects = self.store.snapshot.subjects
        if subject is not None:
            subjects = {n: p for n, p in subjects.items() if n == _clean(subject)}
        found = []
        for name, photos in subjects.items():
            folder = person_folder(self.store.data_dir, name)
            for photo in photos if folder is not None else ():
                path = folder / photo
                if path.is_file():
                    found.append((self.of(path), name, photo))
        return found

    def find(self, image_id: str) -> list[tuple[str, str]]:
        """[(subject, path in its folder)] of the photo with this id (the same bytes in several subjects: each);
        Refusal 11 when there is none."""
        found = [(name, photo) for pid, name, photo in self.listing() if pid == image_id.lower()]
        if not found:
            raise Refusal(11, f"Image with id {image_id} not found", 404)
        return found


def _clean(name: str) -> str:
    try:
        return clean_name(name)
    except BadName:
        return name


def compreface_routes(app: FastAPI, store: GalleryStore, keys: frozenset[str], max_upload: int) -> None:
    """Add CompreFace's routes to `app` (its key check and error shape on each)."""

    def check_key(request: Request) -> None:
        if not key_accepted(request.headers.get(KEY_HEADER), keys):
            raise Refusal(10, f"missing or wrong API key (send one of the service's keys in the {KEY_HEADER} "
                          "header)", 401)

    route, ids = refusing_route(render), PhotoIds(store)
    common = {"dependencies": [Depends(check_key)], "route_class": route, "tags": ["CompreFace"]}
    recognition = APIRouter(prefix=PREFIXES[0], **common)
    _subject_routes(recognition, store)
    _face_routes(recognition, store, ids, max_upload)
    _recognize_routes(recognition, store, ids, max_upload)
    detection, verification = APIRouter(prefix=PREFIXES[1], **common), APIRouter(prefix=PREFIXES[2], **common)
    _detect_route(detection, store, max_upload)
    _verification_route(verification, store, max_upload)
    for router in (recognition, detection, verification):
        app.include_router(router)


def _subject_routes(api: APIRouter, store: GalleryStore) -> None:
    @api.post("/subjects", status_code=201)
    def add_subject(body: SubjectBody) -> dict[str, str]:
        """Create a subject (an empty data/<subject>/)."""
        return {"subject": store.add_subject(body.subject)}

    @api.get("/subjects")
    def list_subjects() -> dict[str, list[str]]:
        """Every subject's name."""
        return {"subjects": list(store.snapshot.subjects)}

    @api.put("/subjects/{subject}")
    def rename_subject(subject: str, body: SubjectBody) -> dict[str, bool]:
        """Rename a subject; to an existing name: its photos join that subject's (merged), it is removed."""
        new, old = clean_name(body.subject), store.folder(subject)
        if person_folder(store.data_dir, new) == old:
            return {"updated": False}
        if person_folder(store.data_dir, new) is not None:
            store.merge_subject(subject, new)
        else:
            store.rename_subject(subject, new)
        return {"updated": True}

    @api.delete("/subjects/{subject}")
    def delete_subject(subject: str) -> dict[str, str]:
        """Delete a subject and its photos (only photos added through the service: else code 32)."""
        [name] = store.delete_subjects([subject])
        return {"subject": name}

    @api.delete("/subjects")
    def delete_subjects() -> dict[str, int]:
        """Delete every subject (refused whole, code 32, while one holds a user's own photo)."""
        return {"deleted": len(store.delete_subjects(None))}


def _face_routes(api: APIRouter, store: GalleryStore, ids: PhotoIds, max_upload: int) -> None:
    @api.post("/faces", status_code=201, openapi_extra=image_body("file"))
    async def add_face(request: Request, subject: str = Query(""),
                       det_prob_threshold: float | None = Query(None, ge=0, le=1)) -> dict[str, str]:
        """Add an example photo of a subject (created if new); the photo must show one face."""
        if not subject.strip():
            raise Refusal(33, "Required request parameter 'subject' is missing")
        subject = clean_name(subject)
        data, name = (await read_photos(request, ("file",), max_upload))["file"]

        def work() -> dict[str, str]:
            rgb, _ = decode_photo(data, name)
            _one_face(photo_faces(store, rgb, Wanted(min_probability=det_prob_threshold or 0.0)), "given image")
            [(image, _)] = store.add_photos(subject, [(data, name)], create=True)
            return {"image_id": ids.of(Path(image)), "subject": subject}

        return await run_in_threadpool(work)

    @api.get("/faces")
    def list_faces(page: int = Query(0, ge=0), size: int = Query(20, ge=1), subject: str | None = None
                   ) -> dict[str, Any]:
        """The example photos (of one subject), `size` a page."""
        photos = ids.listing(subject or None)
        shown = photos[page * size:(page + 1) * size]
        return {"faces": [{"image_id": pid, "subject": name} for pid, name, _ in shown], "page_number": page,
                "page_size": size, "total_pages": math.ceil(len(photos) / size), "total_elements": len(photos)}

    @api.delete("/faces")
    def delete_subject_faces(subject: str = Query("")) -> dict[str, int]:
        """Delete a subject's photos and the subject (an unknown one: 0 deleted)."""
        if not subject.strip():
            raise Refusal(26, "subject name is empty: say whose photos to delete (?subject=...)")
        try:
            return {"deleted": sum(store.delete_subjects([subject]).values())}
        except UnknownSubject:
            return {"deleted": 0}

    @api.post("/faces/delete")
    def delete_faces(image_ids: Annotated[list[str], Body()]) -> list[dict[str, str]]:
        """Delete several photos by id (unknown ids are ignored; a user's own photo refuses them all)."""
        found = [(pid, name, photo) for pid, name, photo in ids.listing() if pid in {i.lower() for i in image_ids}]
        store.delete_photos([(name, photo) for _, name, photo in found])
        return [{"image_id": pid, "subject": name} for pid, name, _ in found]

    @api.delete("/faces/{image_id}")
    def delete_face(image_id: str) -> dict[str, str]:
        """Delete a photo by id (every copy the service holds; a user's own photo: code 32)."""
        found = ids.find(image_id)
        store.delete_photos(found)
        return {"image_id": image_id.lower(), "subject": found[0][0]}

    @api.get("/faces/{image_id}/img", response_class=FileResponse)
    def download(image_id: str) -> FileResponse:
        """The photo's file."""
        return FileResponse(store.photo(*ids.find(image_id)[0]))


def _recognize_routes(api: APIRouter, store: GalleryStore, ids: PhotoIds, max_upload: int) -> None:
    @api.post("/recognize", openapi_extra=image_body("file"))
    async def recognize(request: Request, query: Annotated[FaceQuery, Depends()],
                        prediction_count: int = Query(1, ge=1)) -> dict[str, Any]:
        """Every face (the `limit` largest), largest first: box, and the `prediction_count` nearest subjects."""
        photo = (await read_photos(request, ("file",), max_upload))["file"]
        plugins, status = query.plugins(), query.status

        def work() -> dict[str, Any]:
            rgb, scale, found = query.faces_of(store, *photo)
            started = time.perf_counter()
            named = store.identify(rgb, found.faces, prediction_count)
            times = _times(found, started) if status else None
            result = [{**_entry(found, i, scale, n.vector, plugins, times), "subjects": _subjects(n.nearest,
                       n.recognition.name)} for i, n in enumerate(named)]
            return _answer(result, store, status)

        return await run_in_threadpool(work)

    @api.post("/faces/{image_id}/verify", openapi_extra=image_body("file"))
    async def verify_face(request: Request, image_id: str, query: Annotated[FaceQuery, Depends()]) -> dict[str, Any]:
        """Each face of the photo (the `limit` largest) against the saved photo's face: box and similarity."""
        photo = (await read_photos(request, ("file",), max_upload))["file"]
        plugins, status = query.plugins(), query.status

        def work() -> dict[str, Any]:
            saved = store.photo(*ids.find(image_id)[0])
            reference = subject_vector(store.pipeline, decode_photo(saved.read_bytes(), image_id)[0], image_id)
            rgb, scale, found = query.faces_of(store, *photo)
            return _answer(_matches(store, rgb, scale, found, reference, plugins, status), store, status)

        return await run_in_threadpool(work)


def _detect_route(api: APIRouter, store: GalleryStore, max_upload: int) -> None:
    @api.post("/detect", openapi_extra=image_body("file"))
    async def detect(request: Request, query: Annotated[FaceQuery, Depends()]) -> dict[str, Any]:
        """Every face (the `limit` largest), largest first: box and probability (landmarks, embedding)."""
        photo = (await read_photos(request, ("file",), max_upload))["file"]
        plugins, status = query.plugins(), query.status

        def work() -> dict[str, Any]:
            rgb, scale, found = query.faces_of(store, *photo)
            started = time.perf_counter()
            vectors = store.pipeline.embed(rgb, found.faces) if "calculator" in plugins else [None] * len(found.faces)
            times = _times(found, started) if status else None
            return _answer([_entry(found, i, scale, v, plugins, times) for i, v in enumerate(vectors)], store, status)

        return await run_in_threadpool(work)


def _verification_route(api: APIRouter, store: GalleryStore, max_upload: int) -> None:
    @api.post("/verify", openapi_extra=image_body("source_image", "target_image"))
    async def verify(request: Request, query: Annotated[FaceQuery, Depends()]) -> dict[str, Any]:
        """The source photo's one face against each face of the target photo (the `limit` largest)."""
        photos = await read_photos(request, ("source_image", "target_image"), max_upload)
        plugins, status = query.plugins(), query.status

        def work() -> dict[str, Any]:
            (source, source_scale), (target, scale) = (decode_photo(*photos[k]) for k in ("source_image",
                                                                                         "target_image"))
            one = _one_face(photo_faces(store, source, query.wanted(limit=0)), "source image")
            vector = store.pipeline.embed(source, one.faces)[0]
            face = _entry(one, 0, source_scale, vector, plugins, {"detector": one.detect_ms} if status else None)
            found = _some_faces(photo_faces(store, target, query.wanted()), "target image")
            matches = _matches(store, target, scale, found, vector, plugins, status)
            entry = {"source_image_face": face, "face_matches": matches}
            return {"result": [{**entry, **({"plugins_versions": _versions(store)} if status else {})}]}

        return await run_in_threadpool(work)


# --------------------------------------------------------------------------- answers


class FaceQuery:
    """The query parameters CompreFace's recognize, detect and verify routes share (validated at the edge)."""

    def __init__(self, limit: int = Query(0, ge=0), det_prob_threshold: float | None = Query(None, ge=0, le=1),
                 face_plugins: str = "", status: bool = False, detect_faces: bool = True) -> None:
        self.limit, self.least, self.face_plugins = limit, det_prob_threshold or 0.0, face_plugins
        self.status, self.detect_faces = status, detect_faces

    def wanted(self, limit: int | None = None) -> Wanted:
        """Which faces to keep: the `limit` largest (0: all) of at least `det_prob_threshold`."""
        return Wanted(self.limit if limit is None else limit, self.least, self.detect_faces)

    def faces_of(self, store: GalleryStore, data: bytes, name: str
                 ) -> tuple[np.ndarray, tuple[float, float], Found]:
        """An uploaded photo decoded (RGB, its scale) and its faces as asked (`wanted`); code 28 when none."""
        rgb, scale = decode_photo(data, name)
        return rgb, scale, _some_faces(photo_faces(store, rgb, self.wanted()))

    def plugins(self) -> set[str]:
        """The face plugins asked for that the service has (landmarks, calculator); other names are ignored."""
        return {p.strip() for p in self.face_plugins.split(",")} & {"landmarks", "calculator"}


def _some_faces(found: Found, what: str = "given image") -> Found:
    if not found.faces:
        raise Refusal(28, NO_FACE.replace("given image", what))
    return found


def _one_face(found: Found, what: str) -> Found:
    if len(_some_faces(found, what).faces) > 1:
        raise Refusal(31, f"More than one face in the {what} ({len(found.faces)} found): one is needed")
    return found


def _times(found: Found, started: float) -> dict[str, float]:
    return {"detector": found.detect_ms, "calculator": round((time.perf_counter() - started) * 1000, 1)}


def _entry(found: Found, i: int, scale: tuple[float, float], vector: np.ndarray | None, plugins: set[str],
           times: dict[str, float] | None) -> dict[str, Any]:
    """One face of a result: its box (the photo's own pixels), and what the plugins and `status` add."""
    face = found.faces[i]
    left, top, right, bottom = scaled_box(face.box, scale)
    entry: dict[str, Any] = {"box": {"probability": found.probabilities[i], "x_min": left, "y_min": top,
                                     "x_max": right, "y_max": bottom}}
    points = five_points(face)
    if "landmarks" in plugins:
        entry["landmarks"] = [] if points is None else [[round(float(x) * scale[0]), round(float(y) * scale[1])]
                                                        for x, y in np.asarray(points)]
    if "calculator" in plugins and vector is not None:
        entry["embedding"] = [float(v) for v in vector]
    if times is not None:
        entry["execution_time"] = times
    return entry


def _subjects(nearest: list[tuple[str, float, float]], named: str) -> list[dict[str, Any]]:
    """The nearest people as CompreFace's subjects, the most similar first (only the named one reaches 0.5)."""
    candidates = [{"subject": name, "similarity": similarity(score, name == named)} for name, _, score in nearest]
    return sorted(candidates, key=lambda c: -c["similarity"])


def _matches(store: GalleryStore, rgb: np.ndarray, scale: tuple[float, float], found: Found, reference: np.ndarray,
             plugins: set[str], status: bool) -> list[dict[str, Any]]:
    """Each found face with its similarity to `reference` (0.5 at the model's 1:1 threshold)."""
    started = time.perf_counter()
    vectors = store.pipeline.embed(rgb, found.faces)
    times = _times(found, started) if status else None
    threshold = verify_threshold(store.pipeline)
    return [{**_entry(found, i, scale, v, plugins, times),
             "similarity": similarity(match_score(float(np.linalg.norm(v - reference)), threshold))}
            for i, v in enumerate(vectors)]


def _versions(store: GalleryStore) -> dict[str, str]:
    return {"detector": f"facenet.{store.pipeline.detector.kind}", "calculator": f"facenet.{store.pipeline.model}"}


def _answer(result: list[dict[str, Any]], store: GalleryStore, status: bool) -> dict[str, Any]:
    return {"result": result, **({"plugins_versions": _versions(store)} if status else {})}
