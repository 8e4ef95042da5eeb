"""The records of a face, enriched by each stage: the detector's `Face` (box, score, landmarks) and the `Recognition`
of a recognised face (box, name, distance, score, landmarks, track), with its one JSON form (`match_record`); the box
convention and the `Detector` protocol every detector follows.

Box convention, everywhere in the package: `(left, top, right, bottom)` in integer pixels of the
image given, right/bottom exclusive (like PIL and dlib rectangles' width = right - left).
Faces are returned largest first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import dlib

    from facenet.draw import Label

Box = tuple[int, int, int, int]


@dataclass(frozen=True, repr=False)
class Face:
    """One detected face: its box and detector score, and the landmarks each chip is aligned with.

    `shape`: dlib's 5-point landmarks (eye corners, nose bottom) for the dlib chip; `points`: (5, 2) float32 in
    YuNet's order (right eye, left eye, nose tip, right and left mouth corners) for the SFace chip. A detector fills
    what it finds; `FacePipeline` adds what its model's chips need. Its repr shows numbers only (the landmarks as
    (x, y) pairs), never a dlib object's address.
    """

    box: Box
    score: float
    shape: dlib.full_object_detection | None = None
    points: np.ndarray | None = None

    @property
    def landmarks(self) -> np.ndarray:
        """dlib's 5 landmarks as a (5, 2) float32 array."""
        return np.array([(p.x, p.y) for p in self.shape.parts()], dtype=np.float32)

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left) * max(0, bottom - top)

    def __repr__(self) -> str:
        """`Face(box=(l, t, r, b), score=0.9731, shape=((x, y), …), points=((x, y), …))`: plain numbers."""
        box = tuple(int(v) for v in self.box)
        shape = None if self.shape is None else tuple((int(p.x), int(p.y)) for p in self.shape.parts())
        points = None if self.points is None else tuple(
            (round(float(x), 2), round(float(y), 2)) for x, y in np.asarray(self.points).reshape(-1, 2))
        return f"Face(box={box}, score={round(float(self.score), 4)}, shape={shape}, points={points})"


class Detector(Protocol):
    """What `FacePipeline` needs of a detector: its kind (one of DETECTORS) and every face of an RGB image."""

    kind: str

    def detect(self, image: np.ndarray, max_side: int | None = None, sensitive: bool = False) -> list[Face]:
        """Every face, largest first; `max_side` detects on a downscaled copy, `sensitive` is the fallback pass."""
        ...


@dataclass(frozen=True)
class Recognition:
    """One recognised face of a frame: its box, name (config.UNKNOWN when rejected), distance to the nearest enrolled
    person and 0-100 match score (both None when nobody is enrolled), its 5 landmarks (x, y) in YuNet's order (None
    when the detector gave none), `track`: the id of the track that named it (None without tracking), and when the
    face was collected as a stranger's sighting (facenet.unknowns), its `face_id` and `group` in that store."""

    box: Box
    name: str
    distance: float | None
    score: float | None
    points: tuple[tuple[float, float], ...] | None = None
    track: int | None = None
    face_id: str | None = None
    group: str | None = None

    def face_record(self) -> dict:
        """The JSON form of this face that every surface shares (`box` and `match_record`'s name, distance,
        score; a tracked face adds its `track`, a collected one its `face_id` and `group`): the CLI's line
        (`record`), the service's /recognize faces and camera tracks. Events, which have no box, carry
        `match_record`."""
        record = {"box": [int(v) for v in self.box], **match_record(self.name, self.distance, self.score)}
        if self.track is not None:
            record["track"] = self.track
        if self.face_id is not None:
            record.update(face_id=self.face_id, group=self.group)
        return record

    def record(self, source: str, frame: int | None) -> dict:
        """The CLI's JSON line of this face: its source and frame, then `face_record`."""
        return {"source": source, "frame": frame, **self.face_record()}

    def label(self) -> Label:
        """What `draw.annotate` draws for this face."""
        from facenet.draw import Label  # OpenCV: this module stays light

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
    return round(float(value), places) if value is not None and math.isfinite(value) else None
