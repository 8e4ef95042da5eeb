"""Recognition: name every face of a frame (photo, video frame, webcam frame).

Per frame: detect (video frames on a downscaled copy), embed all faces in one batch, one gallery lookup; a still
video frame reuses the previous answer. Streams, windows and summaries belong to the command line
(facenet/cli/stream_output.py); 1:1 verification is facenet/verify.py.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facenet import config
from facenet.detect.face import Recognition
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


def face_points(face: Face) -> tuple[tuple[float, float], ...] | None:
    """A face's 5 landmarks (x, y) in YuNet's order as plain floats (`pipeline.five_points`; None without them)."""
    points = five_points(face)
    return None if points is None else tuple((float(x), float(y)) for x, y in points)


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

    def recognize(self, image: np.ndarray, video: bool = False, source: str | None = None) -> list[Recognition]:
        """Every face of an RGB frame, largest first, named (`source`: where a collected face was seen, instead of
        the recognizer's)."""
        if video and self.reuse_still and self._still.still(image):
            self.reused += 1
            return self._last
        self.analysed += 1
        faces = self.pipeline.detect(image, video=video)
        self._last = self._named(image, faces, source or self.source)
        return self._last

    def _named(self, image: np.ndarray, faces: list[Face], source: str) -> list[Recognition]:
        """The faces with the gallery's answer for each (Unknown, without numbers, when nobody is enrolled), each
        Unknown one collected when there is a collector."""
        if not faces:
            return []
        if len(self.database) == 0 and self.collector is None:
            return [Recognition(f.box, config.UNKNOWN, None, None, face_points(f)) for f in faces]
        vectors = self.pipeline.embed(image, faces)
        lookup = (self.database.identify(vectors, self.threshold) if len(self.database)
                  else [(config.UNKNOWN, None, None)] * len(faces))
        return [self._collected(image, f, vector, source, Recognition(f.box, name, distance, score, face_points(f)))
                for f, vector, (name, distance, score) in zip(faces, vectors, lookup, strict=True)]

    def _collected(self, image: np.ndarray, face: Face, vector: np.ndarray, source: str, result: Recognition
                   ) -> Recognition:
        """The result, with its sighting's ids when the collector kept it (an Unknown face that passes the gate)."""
        if self.collector is None or result.name != config.UNKNOWN:
            return result
        kept = self.collector.collect(FaceCut.of(image, face.box, face.score, face.points), vector, source)
        return result if kept is None else replace(result, face_id=kept.face_id, group=kept.group)
