"""The one frame loop's recogniser: the successive frames of one source (a video file, the webcam, a camera) in,
named faces and track events out. Video files, the webcam and live cameras all go through `FrameRecognizer`, so
tracking and events are the same everywhere.

Drive it with `recognize(frame, t)` for each frame (`t`: stream time in seconds, the frame number / fps for a file,
the clock for a live source), `idle(t)` while a live source gives no frame, and `finish()` at the end: each returns
the track events it caused. Without tracking it is plain per-frame recognition (`Recognizer`) and gives no events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from facenet.detect.face import Recognition
from facenet.live.tracking import TrackEvent, TrackingRecognizer
from facenet.recognize import Recognizer

if TYPE_CHECKING:
    from facenet.gallery.index import FaceDatabase
    from facenet.pipeline import FacePipeline
    from facenet.sources import Frame
    from facenet.unknowns.collect import Collector


@dataclass(frozen=True)
class Recognized:
    """One frame's named faces (largest first; each with its `track` when tracking) and the events it caused."""

    faces: list[Recognition]
    events: list[TrackEvent] = field(default_factory=list)


class FrameRecognizer:
    """Names the faces of one source's frames, with tracks and events (`track=True`) or frame by frame."""

    def __init__(
        self, pipeline: FacePipeline, database: FaceDatabase, source: str, threshold: float | None = None,
        track: bool = True, reuse_still: bool = True, collector: Collector | None = None,
    ) -> None:
        """`reuse_still`: a frame unchanged since the last analysed one keeps its answer (recognize.StillFrames);
        `collector`: each tracked stranger leaves one sighting (facenet.unknowns; frame-by-frame recognition of a
        stream collects nothing: one sighting per frame would flood the store)."""
        self.tracker = (TrackingRecognizer(pipeline, database, source, threshold, reuse_still=reuse_still,
                                           collector=collector) if track else None)
        self.plain = None if track else Recognizer(pipeline, database, threshold, reuse_still)
        self._last_frame: int | None = None

    def recognize(self, frame: Frame, t: float) -> Recognized:
        """Every face of the frame (an RGB `Frame` at stream time `t`), named; and the track events it caused."""
        self._last_frame = frame.index
        if self.tracker is None:
            return Recognized(self.plain.recognize(frame.image, video=True))
        faces, events = self.tracker.recognize(frame.image, frame.index, t)
        return Recognized(faces, events)

    def idle(self, t: float) -> list[TrackEvent]:
        """No frame came by stream time `t` (a dropped camera): tracks gone for long enough leave."""
        return self.tracker.idle(t) if self.tracker is not None else []

    def finish(self) -> list[TrackEvent]:
        """The source ended (or the run stops): every track leaves, at the last frame seen."""
        return self.tracker.finish(self._last_frame) if self.tracker is not None else []
