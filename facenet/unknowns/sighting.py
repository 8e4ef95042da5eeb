"""A sighting: one face that ended Unknown, kept so that strangers can be grouped, named or ignored later.

It holds the face chip (JPEG bytes of the face box grown by CHIP_MARGIN, so that enrollment finds the face again when
the chip becomes a photo of data/<person>/), its unit embedding, when and where it was seen, and its quality. The
quality gate (`quality_ok`) keeps blurred, tiny and side-on faces out: they group badly and enroll worse.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np

Box = tuple[int, int, int, int]

CHIP_MARGIN = 0.5
"""The chip is the face box grown by this share of its size on every side (clipped to the frame)."""

CHIP_MAX_SIDE = 400
"""A chip larger than this (pixels, longer side) is scaled down: enough for enrollment, small on disk."""

CHIP_JPEG_QUALITY = 92

MIN_FACE_PX = 40
"""Shorter side (pixels) of the smallest face kept: smaller faces are named poorly and enroll badly."""

MIN_DETECTOR_SCORE = 0.8
"""YuNet confidence below which a face is not kept (half-hidden faces, faces of posters at an angle). dlib's HOG and
CNN detectors score on other scales (their own thresholds already drop weak detections): not checked for them."""

MIN_SHARPNESS = 60.0
"""Variance of the Laplacian of the face, greyscale, resized to SHARPNESS_SIDE: below it the face is blurred.
Measured on 150 LFW photos (YuNet's face): sharp 135-1080 (1st-99th percentile), the same faces at ~48 px still
>= 87 (1st percentile), blurred with a Gaussian of sigma 2: median 70, 25% under 55."""

SHARPNESS_SIDE = 64

MAX_TURN = 0.4
"""How far the nose tip may sit sideways from the eyes' midpoint, as a share of the eye distance, before the face
counts as side-on (150 LFW faces: median 0.09, 95th percentile 0.29, 99th 0.52)."""


@dataclass(frozen=True)
class Quality:
    """How good a face is to keep: its size (shorter side, px), detector score, sharpness and turn (see the gate)."""

    size: int
    detector: float
    sharpness: float
    turn: float | None
    """Nose offset from the eyes' midpoint / eye distance; None without landmarks."""

    def ok(self, min_detector: float | None = MIN_DETECTOR_SCORE) -> tuple[bool, str]:
        """(passes the gate, why not when it does not); `min_detector` None: the detector's score is not checked."""
        if self.size < MIN_FACE_PX:
            return False, f"face too small ({self.size} px < {MIN_FACE_PX})"
        if min_detector is not None and self.detector < min_detector:
            return False, f"detector unsure ({self.detector:.2f} < {min_detector})"
        if self.sharpness < MIN_SHARPNESS:
            return False, f"face blurred (sharpness {self.sharpness:.0f} < {MIN_SHARPNESS:.0f})"
        if self.turn is not None and self.turn > MAX_TURN:
            return False, f"face turned aside ({self.turn:.2f} > {MAX_TURN})"
        return True, ""

    @property
    def rank(self) -> float:
        """Which of a stranger's faces are best (to show, and to enroll when he is named): bigger, surer, sharper,
        more frontal first."""
        frontal = 1.0 - min(self.turn or 0.0, 1.0)
        return self.size * self.detector * frontal * min(self.sharpness, 400.0) ** 0.5

    def record(self) -> dict:
        return {"size": self.size, "detector": round(self.detector, 4), "sharpness": round(self.sharpness, 1),
                "turn": None if self.turn is None else round(self.turn, 3)}

    @classmethod
    def from_record(cls, record: dict) -> Quality:
        return cls(int(record["size"]), float(record["detector"]), float(record["sharpness"]),
                   None if record.get("turn") is None else float(record["turn"]))


@dataclass(frozen=True)
class Sighting:
    """One unknown face as it is stored: `face_id` (12 hex), time (epoch seconds), source (camera name, video or
    "api"), its unit embedding, chip (JPEG) and quality; `group` is set by the store; `not_of` marks a negative."""

    face_id: str
    time: float
    source: str
    vector: np.ndarray = field(repr=False)
    chip: bytes = field(repr=False)
    quality: Quality
    group: str = ""
    not_of: str | None = None
    """Set when a person marked this face as "not <name>" (a wrongly named face): a negative example of that
    enrolled person (see FaceDatabase.negatives)."""


@dataclass(frozen=True)
class FaceCut:
    """A face cut out of its frame with room around it (CHIP_MARGIN), its box and landmarks in the cut's pixels, and
    its detector score: what a sighting is made from (a track keeps its best one until it is collected)."""

    image: np.ndarray = field(repr=False)
    box: Box
    score: float
    points: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, image: np.ndarray, box: Box, score: float, points: np.ndarray | None) -> FaceCut:
        """The cut of the face at `box` (with its landmarks, if any) of an RGB frame (copied out of it)."""
        left, top, right, bottom = box
        mx, my = round((right - left) * CHIP_MARGIN), round((bottom - top) * CHIP_MARGIN)
        x0, y0, x1, y1 = _clip((left - mx, top - my, right + mx, bottom + my), image.shape)
        moved = None if points is None else np.asarray(points, np.float32).reshape(-1, 2) - (x0, y0)
        return cls(image[y0:y1, x0:x1].copy(), (left - x0, top - y0, right - x0, bottom - y0), float(score), moved)

    def quality(self) -> Quality:
        return quality(self.image, self.box, self.score, self.points)

    def around(self, margin: float) -> np.ndarray:
        """The face box grown by `margin` (<= CHIP_MARGIN) of its size on every side, as the frame held it (a
        view of the cut: the frame's edges clip it the same way)."""
        left, top, right, bottom = self.box
        mx, my = round((right - left) * margin), round((bottom - top) * margin)
        x0, y0, x1, y1 = _clip((left - mx, top - my, right + mx, bottom + my), self.image.shape)
        return self.image[y0:y1, x0:x1]

    def chip(self) -> bytes:
        """JPEG bytes of the cut, at most CHIP_MAX_SIDE on its longer side."""
        import cv2  # OpenCV: importing the gallery stays light

        crop = np.ascontiguousarray(self.image)
        longer = max(crop.shape[:2])
        if longer > CHIP_MAX_SIDE:
            scale = CHIP_MAX_SIDE / longer
            crop = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                              interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, CHIP_JPEG_QUALITY])
        if not ok:  # pragma: no cover - OpenCV encodes any non-empty uint8 image
            raise ValueError("the face chip could not be encoded as JPEG")
        return data.tobytes()


def new_id() -> str:
    """A fresh id for a face or a group: 12 random hex digits."""
    return secrets.token_hex(6)


def face_turn(points: np.ndarray | None) -> float | None:
    """Nose offset from the eyes' midpoint over the eye distance, from 5 landmarks in YuNet's order (right eye, left
    eye, nose tip, mouth corners); None without them."""
    if points is None:
        return None
    p = np.asarray(points, np.float64).reshape(-1, 2)
    eyes = np.linalg.norm(p[1] - p[0])
    if eyes < 1e-6:
        return None
    axis = (p[1] - p[0]) / eyes
    return float(abs(np.dot(p[2] - (p[0] + p[1]) / 2, axis)) / eyes)


def sharpness(image: np.ndarray, box: Box) -> float:
    """Variance of the Laplacian of the face (greyscale, resized to SHARPNESS_SIDE square): low when blurred."""
    import cv2  # OpenCV: importing the gallery stays light

    left, top, right, bottom = _clip(box, image.shape)
    face = image[top:bottom, left:right]
    if face.size == 0:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(face), cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
    grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def quality(image: np.ndarray, box: Box, detector_score: float, points: np.ndarray | None) -> Quality:
    """The quality of the face at `box` of an RGB image."""
    left, top, right, bottom = box
    return Quality(max(0, min(right - left, bottom - top)), float(detector_score), sharpness(image, box),
                   face_turn(points))


def chip(image: np.ndarray, box: Box) -> bytes:
    """JPEG bytes of the face box grown by CHIP_MARGIN (clipped), at most CHIP_MAX_SIDE on its longer side."""
    return FaceCut.of(image, box, 0.0, None).chip()


def _clip(box: Box, shape: tuple[int, ...]) -> Box:
    height, width = shape[:2]
    left, top, right, bottom = box
    return max(0, left), max(0, top), min(width, right), min(height, bottom)
