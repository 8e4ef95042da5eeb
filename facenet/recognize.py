"""Recognition: name every face of a frame (photo, video frame, webcam frame).

Per frame: detect (video frames on a downscaled copy), embed all faces in one batch, one gallery lookup; a still
video frame reuses the previous answer. Streams, windows and summaries belong to the command line
(facenet/cli/stream_output.py); 1:1 verification is facenet/verify.py.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facenet import config
from facenet.draw import Label
from facenet.pipeline import five_points
from facenet.unknowns.sighting import FaceCut

if TYPE_CHECKING:
    from facenet.detect.face import Face
    from facenet.gallery.index import FaceDatabase
    from facenet.pipeline import FacePipeline
    from facenet.unknowns.collect import Collector


STILL_THUMB_SIZE = (64, 48)
STILL_MAX_DIFF = 8
"""A video frame whose 64x48 grey thumbnail differs from the last analysed frame's by at most this many grey
levels anywhere is "unchanged": its faces and names are reused instead of detected and embedded again."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recognition:
    """One face of a frame: its box (left, top, right, bottom), name (config.UNKNOWN when rejected),
    distance to the nearest enrolled person and 0-100 match score (both None when nobody is enrolled), and its
    5 landmarks (x, y) in YuNet's order (`pipeline.five_points`; None when the detector gave none)."""

    box: tuple[int, int, int, int]
    name: str
    distance: float | None
    score: float | None
    points: tuple[tuple[float, float], ...] | None = None
    face_id: str | None = None
    """Set when the face was collected as a sighting of a stranger (facenet.unknowns): its id in the store..."""
    group: str | None = None
    """... and the id of the stranger's group."""

    def face_record(self) -> dict:
        """The JSON form of this face that every surface shares (`box` and `match_record`'s name, distance,
        score; a tracked face adds its `track`): the CLI's line (`record`), the service's /recognize faces and
        camera tracks. Events, which have no box, carry `match_record`."""
        collected = {"face_id": self.face_id, "group": self.group} if self.face_id is not None else {}
        return {"box": [int(v) for v in self.box], **match_record(self.name, self.distance, self.score), **collected}

    def record(self, source: str, frame: int | None) -> dict:
        """The CLI's JSON line of this face: its source and frame, then `face_record`."""
        return {"source": source, "frame": frame, **self.face_record()}

    def label(self) -> Label:
        return Label(self.box, self.name, self.score)

    def scaled(self, scale: tuple[float, float]) -> Recognition:
        """The same face with its box in pixels scaled by (x, y): back to a downscaled photo's own pixels."""
        if scale == (1.0, 1.0):
            return self
        (sx, sy), (left, top, right, bottom) = scale, self.box
        box = (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
        points = None if self.points is None else tuple((x * sx, y * sy) for x, y in self.points)
        return replace(self, box=box, points=points)


DISTANCE_PLACES = 4
SCORE_PLACES = 1
"""Decimals of a face's distance and 0-100 score in every JSON rendering (CLI, service, events)."""


def match_record(name: str | None, distance: float | None, score: float | None) -> dict:
    """Who a face is, as JSON: name, distance and score rounded to DISTANCE_PLACES and SCORE_PLACES (plain floats;
    a missing or non-finite number becomes null: JSON has no NaN). The one rendering of a recognised face's answer:
    `Recognition.face_record`, and the event record (facenet/live/events.py)."""
    return {"name": name, "distance": _rounded(distance, DISTANCE_PLACES), "score": _rounded(score, SCORE_PLACES)}


def _rounded(value: float | None, places: int) -> float | None:
    return round(float(value), places) if _finite(value) else None


def _points(face: Face) -> tuple[tuple[float, float], ...] | None:
    points = five_points(face)
    return None if points is None else tuple((float(x), float(y)) for x, y in points)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class StillFrames:
    """Tells a video frame that is unchanged since the last analysed one (STILL_MAX_DIFF): its answer can be reused."""

    def __init__(self) -> None:
        self._thumb: np.ndarray | None = None

    def reset(self) -> None:
        self._thumb = None

    def still(self, image: np.ndarray) -> bool:
        """Is this frame unchanged? When not, it becomes the analysed frame the next ones are compared with."""
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(grey, STILL_THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.int16)
        previous, self._thumb = self._thumb, thumb
        if previous is None or previous.shape != thumb.shape:
            return False
        if int(np.abs(thumb - previous).max()) <= STILL_MAX_DIFF:
            self._thumb = previous  # compare with the analysed frame, so slow drift cannot accumulate
            return True
        return False


class Recognizer:
    """Names every face of a frame with one batched embedding and one database lookup.

    Video frames (`video=True`) are detected as `FacePipeline.detect` does for video, and a frame that is
    unchanged since the last analysed one reuses its results (`reuse_still`).
    """

    def __init__(
        self,
        pipeline: FacePipeline,
        database: FaceDatabase,
        threshold: float | None = None,
        reuse_still: bool = True,
        collector: Collector | None = None,
        source: str = "api",
    ) -> None:
        """`collector`: keeps each face that ends Unknown as a sighting of `source` (facenet.unknowns)."""
        self.pipeline = pipeline
        self.collector, self.source = collector, source
        self.database = database
        self.threshold = threshold
        self.reuse_still = reuse_still
        self.analysed = 0
        self.reused = 0
        self._still = StillFrames()
        self._last: list[Recognition] = []

    def reset(self) -> None:
        """Forget the previous frame (call between videos)."""
        self._still.reset()
        self._last = []

    def recognize(self, image: np.ndarray, video: bool = False) -> list[Recognition]:
        """Every face of an RGB frame, largest first, named."""
        if video and self.reuse_still and self._still.still(image):
            self.reused += 1
            return self._last
        self.analysed += 1
        faces = self.pipeline.detect(image, video=video)
        results = []
        if faces and len(self.database) == 0 and self.collector is None:  # nobody enrolled: everyone is Unknown
            results = [Recognition(f.box, config.UNKNOWN, None, None, _points(f)) for f in faces]
        elif faces:
            vectors = self.pipeline.embed(image, faces)
            results = [self._collected(image, face, vector, Recognition(face.box, m.name, m.distance, m.score,
                                                                        _points(face)))
                       for face, vector, m in zip(faces, vectors, self._answers(vectors), strict=True)]
        self._last = results
        return results

    def _answers(self, vectors: np.ndarray) -> list:
        """The gallery's answer for each vector (Unknown without distance or score when nobody is enrolled)."""
        if len(self.database) == 0:
            return [Recognition((0, 0, 0, 0), config.UNKNOWN, None, None)] * len(vectors)
        return self.database.identify(vectors, self.threshold)

    def _collected(self, image: np.ndarray, face: Face, vector: np.ndarray, result: Recognition) -> Recognition:
        """The result, with its sighting's ids when the collector kept it (an Unknown face that passes the gate)."""
        if self.collector is None or result.name != config.UNKNOWN:
            return result
        kept = self.collector.collect(FaceCut.of(image, face.box, face.score, face.points), vector, self.source)
        return result if kept is None else replace(result, face_id=kept.face_id, group=kept.group)
