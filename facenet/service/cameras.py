"""Live cameras inside the service (`facenet serve --input door=rtsp://…`): the CLI's live loop
(facenet.live.cameras.run_cameras) on a background thread, recognising against the service's current gallery.

Per camera it keeps the newest annotated frame as a JPEG (what latest.jpg and the MJPEG stream serve), its status
(connecting, live, reconnecting, stopped), frames analysed, drops and current tracks. Track events go to `sink`
(the command's --events, --mqtt_url, --webhook: facenet/cli/event_output.py EventSinks, which hands each record back
to `keep`) and into a ring of the last EVENTS_KEPT events, each with its best-face snapshot as a JPEG in memory.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from facenet.draw import annotate
from facenet.live.cameras import run_cameras
from facenet.live.events import event_record
from facenet.live.streams import Drop, parse_cameras

if TYPE_CHECKING:
    from collections.abc import Callable

    from facenet.detect.face import Recognition
    from facenet.live.tracking import TrackEvent
    from facenet.service.store import GalleryStore
    from facenet.sources import Frame

log = logging.getLogger(__name__)

EVENTS_KEPT = 200
"""Recent track events kept in memory (oldest dropped first) for GET /api/v1/events."""

STALE_FRAMES = 2
"""Frames read before a drop that may still be analysed after it (one being analysed, one waiting): a camera is
live again only after more frames than this since its drop."""

JPEG_QUALITY = 80
STOP_WAIT_S = 15.0
"""How long the service's shutdown waits for the camera thread (a stream read times out after 5 s)."""


class EventSink(Protocol):
    """Where track events go besides the ring (the command's EventSinks)."""

    def send(self, events: list[TrackEvent]) -> None: ...

    def close(self) -> None: ...


class CurrentGallery:
    """The service's current FaceDatabase, whatever sync swapped in last: what the cameras recognise against."""

    def __init__(self, store: GalleryStore) -> None:
        self._store = store

    def __len__(self) -> int:
        return len(self._store.snapshot.database)

    def identify(self, vectors: np.ndarray, threshold: float | None = None) -> Any:
        return self._store.snapshot.database.identify(vectors, threshold)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store.snapshot.database, name)


def jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """An RGB image as JPEG bytes."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode the frame as JPEG")
    return data.tobytes()


def _track(record: dict[str, Any]) -> dict[str, Any]:
    """A face of a camera's current frame for the API: its shared JSON form (Recognition.face_record)."""
    return {"track": record.get("track"), **{key: record[key] for key in ("name", "box", "distance", "score")}}


@dataclass
class CameraState:
    """One camera as the API shows it; `seq` counts annotated frames (the MJPEG stream waits for a new one)."""

    name: str
    url: str
    status: str = "connecting"
    frames: int = 0
    drops: int = 0
    since_drop: int = 0
    size: tuple[int, int] | None = None
    tracks: list[dict[str, Any]] = field(default_factory=list)
    jpeg: bytes | None = None
    seq: int = 0

    def summary(self) -> dict[str, Any]:
        base = f"/api/v1/cameras/{self.name}"
        width, height = self.size or (None, None)
        return {"name": self.name, "url": self.url, "status": self.status, "frames": self.frames,
                "drops": self.drops, "width": width, "height": height, "tracks": list(self.tracks),
                "stream": f"{base}/stream.mjpg", "latest": f"{base}/latest.jpg"}


class ServiceCameras:
    """The service's cameras: `start` runs them on a thread, `stop` ends it and closes the event sink.

    `track`: follow faces across frames (tracks and events); raises ValueError for a bad camera spec. Without a
    `sink`, events only go to the ring (their record's snapshot is then null).
    """

    def __init__(self, specs: list[str], store: GalleryStore, track: bool = True, collect: bool = False) -> None:
        """`collect`: strangers' tracks leave sightings in the gallery's unknown faces (the store's collector)."""
        self.specs, self.store, self.track, self.collect = list(specs), store, track, collect
        self.cameras = {c.name: CameraState(c.name, c.shown) for c in parse_cameras(self.specs)}
        self.sink: EventSink | None = None
        """Set by the command: gets every event, and calls `keep` with each one's record."""
        self.events: collections.deque[tuple[dict[str, Any], bytes | None]] = collections.deque(maxlen=EVENTS_KEPT)
        self.stopping: Callable[[], bool] = lambda: False
        """Also true while the web server shuts down (set by the command): the MJPEG streams end then."""
        self._next_id = 1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="service cameras", daemon=True)

    # ------------------------------------------------------------------ running

    def start(self) -> ServiceCameras:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the cameras (every track leaves: its events are sent), then flush and close the sink."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S)
        if self.sink is not None:
            self.sink.close()

    def stopped(self) -> bool:
        return self._stop.is_set() or self.stopping()

    def _run(self) -> None:
        try:
            run_cameras(self.specs, self.store.pipeline, CurrentGallery(self.store), self.store.threshold,
                        self.track, on_frame=self._frame, on_events=self._events,
                        on_drop=self._drop, stop=self._stop,
                        collector=self.store.collector if self.collect else None)
        except Exception:  # the service keeps answering; the cameras show as stopped
            log.exception("the cameras stopped")
        with self._lock:
            for camera in self.cameras.values():
                camera.status, camera.tracks = "stopped", []

    def _frame(self, frame: Frame, results: list[Recognition]) -> None:
        data = jpeg(annotate(frame.image, [r.label() for r in results]))
        tracks = [_track(r.face_record()) for r in results]
        with self._lock:
            camera = self.cameras[frame.source]
            camera.frames += 1
            camera.since_drop += 1
            if camera.status != "reconnecting" or camera.since_drop > STALE_FRAMES:
                camera.status = "live"
            camera.size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
            camera.tracks, camera.jpeg = tracks, data
            camera.seq += 1

    def _drop(self, drop: Drop) -> None:
        log.warning("%s", drop.text())
        with self._lock:
            camera = self.cameras[drop.camera.name]
            camera.status, camera.drops, camera.since_drop = "reconnecting", drop.count, 0

    def _events(self, events: list[TrackEvent]) -> None:
        if self.sink is not None:
            self.sink.send(events)
        else:
            for event in events:
                self.keep(event_record(event, None), event)
        with self._lock:
            for event in events:
                if event.kind == "left" and event.camera in self.cameras:
                    camera = self.cameras[event.camera]
                    camera.tracks = [t for t in camera.tracks if t["track"] != event.track]

    def keep(self, record: dict[str, Any], event: TrackEvent) -> None:
        """Keep an event's record (with an id and its snapshot) in the ring."""
        snapshot = jpeg(event.crop, 92) if event.crop is not None and event.crop.size else None
        with self._lock:
            event_id, self._next_id = self._next_id, self._next_id + 1
            url = f"/api/v1/events/{event_id}/snapshot.jpg" if snapshot is not None else None
            self.events.append(({"id": event_id, **record, "snapshot_url": url}, snapshot))

    # ------------------------------------------------------------------ reading (the API)

    def summaries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [camera.summary() for camera in self.cameras.values()]

    def camera(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            camera = self.cameras.get(name)
            return None if camera is None else camera.summary()

    def latest(self, name: str) -> tuple[int, bytes | None]:
        """(frame counter, newest annotated JPEG or None); KeyError for an unknown camera."""
        with self._lock:
            camera = self.cameras[name]
            return camera.seq, camera.jpeg

    def recent(self, limit: int = EVENTS_KEPT) -> list[dict[str, Any]]:
        """The kept events, newest first."""
        with self._lock:
            return [record for record, _ in reversed(self.events)][:limit]

    def snapshot(self, event_id: int) -> bytes | None:
        """The JPEG of a kept event's snapshot; None when the event is gone or has none."""
        kept = self.event(event_id)
        return None if kept is None else kept[1]

    def event(self, event_id: int) -> tuple[dict[str, Any], bytes | None] | None:
        """A kept event's record and snapshot JPEG; None when the event is gone."""
        with self._lock:
            return next(((record, data) for record, data in self.events if record["id"] == event_id), None)
