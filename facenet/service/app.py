"""The REST service and web page of `facenet serve` (FastAPI): subjects, example faces, recognize, verify, detect.

Every /api/v1 route but /api/v1/health needs the `x-api-key` header when keys are configured. Every error is a 4xx
(or 503 when a shared gallery is unreachable) with one JSON message: {"detail": "..."}. The OpenAPI docs are at
/docs, the web page at /. With live cameras (`serve --input`, facenet/service/cameras.py) the /api/v1/cameras and
/api/v1/events routes show them; they run from the app's startup to its shutdown. The faces recognition saw but did
not know (`/recognize?collect=true`) are under /api/v1/unknowns (facenet/service/unknowns.py). Beside them, for
existing clients, CompreFace's REST API (/api/v1/recognition, /detection, /verification: facenet/service/compreface.py)
and DeepStack's face API (/v1/vision/face...: facenet/service/deepstack.py), each with its own key check and error
shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Protocol

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from facenet.config import UNKNOWN
from facenet.detect.face import Recognition
from facenet.gallery.pg import GalleryError
from facenet.gallery.photos import BadName, clean_name, is_api_photo
from facenet.images import ImageError, person_name
from facenet.pipeline import five_points
from facenet.service.cameras import EVENTS_KEPT, ServiceCameras
from facenet.service.compreface import PREFIXES as COMPREFACE_PREFIXES
from facenet.service.compreface import compreface_routes
from facenet.service.compreface import error_body as compreface_error
from facenet.service.deepstack import FACE as DEEPSTACK_FACE
from facenet.service.deepstack import deepstack_routes
from facenet.service.deepstack import error_body as deepstack_error
from facenet.service.guard import OriginGuard
from facenet.service.keys import KEY_HEADER, key_accepted
from facenet.service.openapi import image_body as _image_body
from facenet.service.store import (
    GalleryStore,
    NotDeletable,
    StoreError,
    SubjectExists,
    UnknownPhoto,
    UnknownSubject,
)
from facenet.service.unknowns import not_record, unknown_routes
from facenet.service.uploads import BodyLimit, MiB, UploadError, decode_photo, read_photos
from facenet.unknowns.store import UnknownGroupError, UnknownStoreError
from facenet.verify import NoFaceError

DEFAULT_MAX_UPLOAD = 10 * MiB
STATUS = {BadName: 400, UnknownSubject: 404, UnknownPhoto: 404, SubjectExists: 409, NotDeletable: 403,
          ImageError: 400, NoFaceError: 400, UnknownGroupError: 404}
"""HTTP status of each refusal."""


class SubjectBody(BaseModel):
    """A subject name."""

    subject: str = Field(min_length=1, examples=["Ada Lovelace"])


def _face(box: tuple[int, ...], points: Any, scale: tuple[float, float]) -> dict[str, Any]:
    """Box and landmarks in the uploaded photo's own pixels."""
    sx, sy = scale
    left, top, right, bottom = box
    return {"box": [round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)],
            "landmarks": None if points is None else [[round(float(x) * sx, 1), round(float(y) * sy, 1)]
                                                     for x, y in np.asarray(points)]}


def _recognised(result: Recognition, scale: tuple[float, float]) -> dict[str, Any]:
    """A /recognize face: the shared JSON form of a face (Recognition.face_record) in the photo's own pixels, with
    its landmarks after the box."""
    scaled = result.scaled(scale)
    return {**_face(result.box, result.points, scale), **scaled.face_record()}


def _size(rgb: np.ndarray, scale: tuple[float, float]) -> dict[str, int]:
    return {"width": round(rgb.shape[1] * scale[0]), "height": round(rgb.shape[0] * scale[1])}


def _rounded(value: float | None, places: int) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), places)


MJPEG_BOUNDARY = "frame"
STREAM_POLL_S = 0.05
"""How often an MJPEG stream looks for a new annotated frame."""


class Worker(Protocol):
    """Work the service runs beside its routes (e.g. facenet.live.frigate.bridge.FrigateThread)."""

    def start(self) -> object: ...

    def stop(self) -> None: ...


def create_app(store: GalleryStore, keys: frozenset[str] = frozenset(), max_upload: int = DEFAULT_MAX_UPLOAD,
               cameras: ServiceCameras | None = None, host: str | None = None,
               workers: Sequence[Worker] = ()) -> FastAPI:
    """The FastAPI application over `store`; `keys`: accepted API keys (none: open); `max_upload`: bytes;
    `cameras`: live cameras, started with the app and stopped with it; `host`: the address it listens on (on
    loopback, requests whose Host names another host are refused: DNS rebinding; None: no Host check); `workers`:
    started after the cameras, stopped before them (they may share their event sink).
    Cross-origin writes are refused and security headers added whatever the keys (facenet/service/guard.py)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if cameras is not None:
            cameras.start()
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            for worker in reversed(workers):
                await run_in_threadpool(worker.stop)
            if cameras is not None:
                await run_in_threadpool(cameras.stop)

    app = FastAPIOffline(title="facenet", version="1", summary="Face recognition service: subjects, example faces "
                         "(saved under data/<person>/), recognize, verify, detect, live cameras.",
                         lifespan=lifespan)  # /docs without a CDN
    _error_handlers(app)
    app.add_middleware(BodyLimit, limit=max_upload, shape=_error_shape)
    app.add_middleware(OriginGuard, host=host)  # outermost: its refusals and headers cover every answer

    def check_key(request: Request) -> None:
        if not key_accepted(request.headers.get(KEY_HEADER), keys):
            raise HTTPException(401, f"missing or wrong API key (send it in the {KEY_HEADER} header)")

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(check_key)])
    _subject_routes(api, store)
    _face_routes(api, store, max_upload)
    _image_routes(api, store, max_upload)
    _camera_routes(api, cameras, store)
    unknown_routes(api, store, max_upload)
    compreface_routes(app, store, keys, max_upload)
    deepstack_routes(app, store, keys, max_upload)

    @app.get("/api/v1/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness, and what a client needs to know: is a key required, the upload limit, the model."""
        return {"status": "ok", "key_required": bool(keys), "max_upload_bytes": max_upload,
                "people": len(store.snapshot.database), "model": store.pipeline.model}

    app.include_router(api)
    _page_routes(app)
    return app


def _error_shape(path: str, message: str) -> dict[str, Any]:
    """The error body for a path: CompreFace's or DeepStack's under their routes, else {"detail": message}."""
    if path.startswith(COMPREFACE_PREFIXES):
        return compreface_error(message)
    if path.startswith(DEEPSTACK_FACE):
        return deepstack_error(message)
    return {"detail": message}


def _error_handlers(app: FastAPI) -> None:
    """Every refusal is {"detail": one line}."""

    @app.exception_handler(StoreError)
    @app.exception_handler(BadName)
    @app.exception_handler(ImageError)
    @app.exception_handler(NoFaceError)
    @app.exception_handler(UnknownGroupError)
    async def refused(_request: Request, error: Exception) -> JSONResponse:
        status = next((code for kind, code in STATUS.items() if isinstance(error, kind)), 400)
        return JSONResponse({"detail": str(error)}, status_code=status)

    @app.exception_handler(UploadError)
    async def bad_upload(_request: Request, error: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors())
        return JSONResponse({"detail": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(GalleryError)
    @app.exception_handler(UnknownStoreError)
    async def gallery_down(_request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)


def _subject_routes(api: APIRouter, store: GalleryStore) -> None:
    @api.get("/subjects", tags=["subjects"])
    def list_subjects() -> dict[str, Any]:
        """Every subject (a data/ folder): its photo count and whether it is enrolled."""
        snap = store.snapshot
        enrolled = snap.database.enrolled(snap.subjects)
        return {"subjects": [{"subject": name, "photos": len(photos), "enrolled": name in enrolled}
                             for name, photos in snap.subjects.items()]}

    @api.post("/subjects", status_code=201, tags=["subjects"])
    def add_subject(body: SubjectBody) -> dict[str, str]:
        """Create a subject: an empty folder data/<subject>/."""
        return {"subject": store.add_subject(body.subject)}

    @api.put("/subjects/{subject}", tags=["subjects"])
    def rename_subject(subject: str, body: SubjectBody) -> dict[str, str]:
        """Rename a subject: its folder is renamed, its photos are not touched."""
        return {"subject": store.rename_subject(subject, body.subject)}

    @api.delete("/subjects/{subject}", tags=["subjects"])
    def delete_subject(subject: str) -> dict[str, Any]:
        """Delete a subject whose folder holds only photos added through the service (else 403)."""
        return {"subject": subject, "deleted_photos": store.delete_subject(subject)}

    @api.get("/report", tags=["subjects"])
    def report() -> dict[str, Any]:
        """The last sync's enrollment report (as JSON and as text)."""
        snap = store.snapshot
        return {"report": snap.enrollment.to_json(), "text": snap.report_text}

    @api.post("/sync", tags=["subjects"])
    def sync() -> dict[str, Any]:
        """Sync the gallery with data/ (after photos were added or removed by hand); the new report."""
        snap = store.sync()
        return {"report": snap.enrollment.to_json(), "text": snap.report_text}


def _used(store: GalleryStore, subject: str) -> set[str]:
    """The subject's photos (relative to its folder) that the last sync enrolled."""
    paths = store.snapshot.enrollment.people.get(subject, [])
    return {p.partition("/")[2] for p in paths}  # the folder on disk may be NFD


def _face_routes(api: APIRouter, store: GalleryStore, max_upload: int) -> None:
    @api.get("/subjects/{subject}/faces", tags=["example faces"])
    def list_faces(subject: str) -> dict[str, Any]:
        """The subject's photos: id (path in its folder), added through the service or not, used for enrollment."""
        folder = store.folder(subject)
        name = person_name(folder.name)
        used, photos = _used(store, name), store.snapshot.subjects.get(name, ())
        return {"subject": name, "faces": [
            {"image_id": p, "added_by_service": is_api_photo(folder / p), "used": p in used} for p in photos]}

    @api.post("/subjects/{subject}/faces", status_code=201, tags=["example faces"], openapi_extra=_image_body("file"))
    async def add_face(subject: str, request: Request) -> dict[str, Any]:
        """Add an example photo (it must show a face): saved as data/<subject>/api-<hash>.<ext>, then synced."""
        data, name = (await read_photos(request, ("file",), max_upload))["file"]
        image_id, created = await run_in_threadpool(store.add_photo, subject, data, name)
        return {"subject": subject, "image_id": image_id, "created": created,
                "used": image_id in _used(store, clean_name(subject))}

    @api.get("/subjects/{subject}/faces/{image_id:path}", tags=["example faces"], response_class=FileResponse)
    def get_face(subject: str, image_id: str) -> FileResponse:
        """The photo's file."""
        return FileResponse(store.photo(subject, image_id))

    @api.delete("/subjects/{subject}/faces/{image_id:path}", tags=["example faces"])
    def delete_face(subject: str, image_id: str) -> dict[str, str]:
        """Delete a photo that was added through the service (your own photos: 403, never deleted)."""
        store.delete_photo(subject, image_id)
        return {"subject": subject, "deleted": image_id}


def _image_routes(api: APIRouter, store: GalleryStore, max_upload: int) -> None:
    @api.post("/recognize", tags=["recognition"], openapi_extra=_image_body("file"))
    async def recognize(request: Request, collect: bool = False) -> dict[str, Any]:
        """Every face, largest first: box (left, top, right, bottom), 5 landmarks, name or "Unknown", distance,
        0-100 score (50 = at the threshold). `collect=true`: each Unknown face that passes the quality gate is kept
        (GET /unknowns) and answers also its `face_id` and `group`."""
        data, name = (await read_photos(request, ("file",), max_upload))["file"]

        def work() -> dict[str, Any]:
            rgb, scale = decode_photo(data, name)
            faces = [_recognised(r, scale) for r in store.recognize(rgb, collect)]
            return {**_size(rgb, scale), "faces": faces}

        return await run_in_threadpool(work)

    @api.post("/detect", tags=["recognition"], openapi_extra=_image_body("file"))
    async def detect(request: Request) -> dict[str, Any]:
        """Every face, largest first: box, detector score, 5 landmarks."""
        data, name = (await read_photos(request, ("file",), max_upload))["file"]

        def work() -> dict[str, Any]:
            rgb, scale = decode_photo(data, name)
            faces = [{**_face(f.box, five_points(f), scale), "score": _rounded(f.score, 4)}
                     for f in store.detect(rgb)]
            return {**_size(rgb, scale), "faces": faces}

        return await run_in_threadpool(work)

    @api.post("/verify", tags=["recognition"], openapi_extra=_image_body("source_image", "target_image"))
    async def verify(request: Request) -> dict[str, Any]:
        """Same person or not: the largest face of each photo, the model's calibrated 1:1 threshold."""
        photos = await read_photos(request, ("source_image", "target_image"), max_upload)

        def work() -> dict[str, Any]:
            (a, _), (b, _) = (decode_photo(*photos[k]) for k in ("source_image", "target_image"))
            answer = store.verify(a, b, (photos["source_image"][1], photos["target_image"][1]))
            return {"same": answer.same, "distance": round(answer.distance, 4), "threshold": answer.threshold}

        return await run_in_threadpool(work)


def _camera_routes(api: APIRouter, cameras: ServiceCameras | None, store: GalleryStore) -> None:
    def known(name: str) -> ServiceCameras:
        if cameras is None or cameras.camera(name) is None:
            raise HTTPException(404, f"no camera {name!r}")
        return cameras

    @api.get("/cameras", tags=["cameras"])
    def list_cameras() -> dict[str, Any]:
        """Every live camera (`serve --input`): status (connecting, live, reconnecting, stopped), frames analysed,
        drops, frame size, and its current tracks [{track, name, box, distance, score}]."""
        return {"cameras": cameras.summaries() if cameras is not None else []}

    @api.get("/cameras/{name}", tags=["cameras"])
    def get_camera(name: str) -> dict[str, Any]:
        """One camera, as in the list."""
        return known(name).camera(name)

    @api.get("/cameras/{name}/latest.jpg", tags=["cameras"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def latest(name: str) -> Response:
        """The camera's newest analysed frame, annotated (boxes, names, scores), as a JPEG."""
        _, data = known(name).latest(name)
        if data is None:
            raise HTTPException(404, f"camera {name!r} has no frame yet")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "no-store"})

    @api.get("/cameras/{name}/stream.mjpg", tags=["cameras"], response_class=StreamingResponse,
             responses={200: {"content": {f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}": {}}}})
    def stream(name: str) -> StreamingResponse:
        """The camera's annotated live view: a multipart/x-mixed-replace stream of JPEGs (usable as an <img> src)."""
        source = known(name)

        async def parts() -> AsyncIterator[bytes]:
            seen = -1
            while not source.stopped():
                seq, data = source.latest(name)
                if data is not None and seq != seen:
                    seen = seq
                    yield (f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                           ).encode() + data + b"\r\n"
                else:
                    await asyncio.sleep(STREAM_POLL_S)

        return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
                                 headers={"cache-control": "no-store"})

    @api.get("/events", tags=["cameras"])
    def events(limit: int = Query(EVENTS_KEPT, ge=1, le=EVENTS_KEPT)) -> dict[str, Any]:
        """Recent track events of the cameras, newest first: the CLI's event record (event, camera, time, track,
        frame, name, distance, score, snapshot) plus its `id` and `snapshot_url` (the best face as a JPEG)."""
        return {"events": cameras.recent(limit) if cameras is not None else []}

    @api.post("/events/{event_id}/not", tags=["unknown faces"])
    def not_event(event_id: int) -> dict[str, Any]:
        """"Not this person" for a named event: its snapshot's face was wrongly named; it becomes an unknown
        sighting and a negative example of that name (see POST /subjects/{subject}/not)."""
        kept = cameras.event(event_id) if cameras is not None else None
        if kept is None or kept[1] is None:
            raise HTTPException(404, f"no snapshot for event {event_id} (no such recent event, or it has none)")
        record, data = kept
        if record["name"] in (None, UNKNOWN):
            raise HTTPException(400, f"event {event_id} names nobody (it is {record['name'] or 'not named'})")
        rgb, _ = decode_photo(data, f"event {event_id}")
        return not_record(record["name"], store.not_person(rgb, record["name"], source=record["camera"]))

    @api.get("/events/{event_id}/snapshot.jpg", tags=["cameras"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def event_snapshot(event_id: int) -> Response:
        """The event's snapshot: its track's best face at that time (JPEG)."""
        data = cameras.snapshot(event_id) if cameras is not None else None
        if data is None:
            raise HTTPException(404, f"no snapshot for event {event_id} (no such recent event, or it has none)")
        return Response(data, media_type="image/jpeg")


class _Revalidated(StaticFiles):
    """The page's files, revalidated on every load (an upgraded service never runs a stale app.js)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Any:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "no-cache"
        return response


def _page_routes(app: FastAPI) -> None:
    static = resources.files("facenet.service") / "static"
    app.mount("/static", _Revalidated(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"))
