"""Recognition on live cameras: several streams in one process, each with its own `FrameRecognizer` (the one frame
loop's recogniser: tracks and events, or plain per-frame recognition), processed round-robin on the newest frame of
each camera.

Returns per-camera counts; what to do with faces and events is the caller's (`on_frame`, `on_events` hooks: the
command prints and publishes them). Stops after `max_frames` analysed frames per camera, when `stop` is set, or on
Ctrl-C (the normal way to stop a live run: every track then leaves, and the counts are returned).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from facenet.detect.face import Recognition
from facenet.live.frames import FrameRecognizer
from facenet.live.streams import CameraSet, CameraStream, Drop, parse_cameras
from facenet.live.tracking import TrackEvent

if TYPE_CHECKING:
    from facenet.gallery.index import FaceDatabase
    from facenet.pipeline import FacePipeline
    from facenet.sources import Frame
    from facenet.unknowns.collect import Collector

FaceHook = Callable[["Frame", list[Recognition]], None]
EventHook = Callable[[list[TrackEvent]], None]


@dataclass
class CameraCount:
    """One camera's run: frames analysed, the seconds from its first to its last analysed frame, stream drops."""

    frames: int = 0
    first: float | None = None
    last: float = 0.0
    drops: int = 0

    @property
    def fps(self) -> float:
        """Analysed frames per second (0 before two frames)."""
        span = self.last - self.first if self.first is not None else 0.0
        return (self.frames - 1) / span if self.frames > 1 and span > 0 else 0.0


def run_cameras(
    specs: list[str],
    pipeline: FacePipeline,
    database: FaceDatabase,
    threshold: float | None = None,
    track: bool = True,
    on_frame: FaceHook | None = None,
    on_events: EventHook | None = None,
    on_drop: Callable[[Drop], None] | None = None,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
    collector: Collector | None = None,
) -> dict[str, CameraCount]:
    """Recognise the cameras of `specs` (see streams.parse_cameras) until `max_frames` each, `stop`, or Ctrl-C;
    `collector`: each tracked stranger leaves a sighting (facenet.unknowns)."""
    cameras = parse_cameras(specs)
    streams = [CameraStream(camera, on_drop) for camera in cameras]
    recognizers = {camera.name: FrameRecognizer(pipeline, database, camera.name, threshold, track,
                                                   collector=collector) for camera in cameras}
    counts = {camera.name: CameraCount() for camera in cameras}
    cameras_set = CameraSet(streams).start()
    try:
        while not (stop is not None and stop.is_set()) and not _all_done(counts, max_frames):
            fresh = cameras_set.next_frames()
            for stream, frame in fresh:
                _analyse(stream, frame, recognizers[stream.camera.name], counts, max_frames, on_frame, on_events)
            _expire_idle(recognizers, {stream.camera.name for stream, _ in fresh}, on_events)
    except KeyboardInterrupt:
        pass
    finally:
        cameras_set.stop()
        for stream in streams:
            counts[stream.camera.name].drops = stream.drops
        leaving = [event for recognizer in recognizers.values() for event in recognizer.finish()]
        if leaving and on_events is not None:
            on_events(leaving)
    return counts


def _expire_idle(recognizers: dict[str, FrameRecognizer], fresh: set[str], on_events: EventHook | None) -> None:
    """Cameras without a new frame (a dropped stream) still see their tracks leave."""
    now = time.monotonic()
    for name, recognizer in recognizers.items():
        events = recognizer.idle(now) if name not in fresh else []
        if events and on_events is not None:
            on_events(events)


def _all_done(counts: dict[str, CameraCount], max_frames: int | None) -> bool:
    return max_frames is not None and all(count.frames >= max_frames for count in counts.values())


def _analyse(
    stream: CameraStream, frame: Frame, recognizer: FrameRecognizer, counts: dict[str, CameraCount],
    max_frames: int | None, on_frame: FaceHook | None, on_events: EventHook | None,
) -> None:
    count = counts[stream.camera.name]
    if max_frames is not None and count.frames >= max_frames:
        return
    now = time.monotonic()
    recognized = recognizer.recognize(frame, now)
    count.frames += 1
    count.first = now if count.first is None else count.first
    count.last = time.monotonic()
    if on_frame is not None:
        on_frame(frame, recognized.faces)
    if recognized.events and on_events is not None:
        on_events(recognized.events)
