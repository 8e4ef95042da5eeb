"""Face detection (dlib HOG or CNN), 5-point landmarks and aligned chips.

Box convention, everywhere in the package: `(left, top, right, bottom)` in integer pixels of the
image given, right/bottom exclusive (like PIL and dlib rectangles' width = right - left).
Faces are returned largest first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dlib
import numpy as np

from facenet.config import (
    CHIP_PADDING,
    CHIP_SIZE,
    CNN_DETECTOR_DAT,
    DETECTORS,
    HOG_THRESHOLD,
    HOG_UPSAMPLE,
    LANDMARKS_DAT,
    model_file,
)

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Face:
    """One detected face: its box, detector score, and the 5 landmarks (x, y) dlib aligns with."""

    box: Box
    score: float
    landmarks: np.ndarray
    shape: dlib.full_object_detection

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left) * max(0, bottom - top)


def _rect(box: Box) -> dlib.rectangle:
    left, top, right, bottom = box
    return dlib.rectangle(int(left), int(top), int(right) - 1, int(bottom) - 1)


def _box(rect: dlib.rectangle, scale: float = 1.0) -> Box:
    return (
        round(rect.left() * scale),
        round(rect.top() * scale),
        round((rect.right() + 1) * scale),
        round((rect.bottom() + 1) * scale),
    )


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink for detection only; returns the small image and the factor mapping boxes back."""
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image, 1.0
    import cv2

    factor = max(height, width) / max_side
    size = (round(width / factor), round(height / factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


class FaceDetector:
    """dlib face detector + 5-point landmark model; `kind` is "hog" (fast) or "cnn" (MMOD, accurate, slow)."""

    def __init__(self, kind: str = "hog", upsample: int = HOG_UPSAMPLE, quiet: bool = False) -> None:
        if kind not in DETECTORS:
            raise ValueError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTORS)}")
        self.kind = kind
        self.upsample = upsample
        self._hog = dlib.get_frontal_face_detector() if kind == "hog" else None
        self._cnn = dlib.cnn_face_detection_model_v1(str(model_file(CNN_DETECTOR_DAT))) if kind == "cnn" else None
        self._landmarks = dlib.shape_predictor(str(model_file(LANDMARKS_DAT)))
        self._fallback: FaceDetector | None = None
        if kind == "cnn" and not dlib.DLIB_USE_CUDA and not quiet:
            log.warning("the CNN detector runs on the CPU here: about 2 s per 640x480 frame (HOG: ~0.05 s)")

    def _detect_rects(self, image: np.ndarray, upsample: int) -> list[tuple[dlib.rectangle, float]]:
        if self._cnn is not None:
            return [(d.rect, float(d.confidence)) for d in self._cnn(image, upsample)]
        rects, scores, _ = self._hog.run(image, upsample, HOG_THRESHOLD)
        return list(zip(rects, (float(s) for s in scores), strict=True))

    def landmarks(self, image: np.ndarray, box: Box, score: float = 0.0) -> Face:
        """Fit the 5-point landmarks inside `box` (any box: detected, mapped back or synthetic)."""
        shape = self._landmarks(image, _rect(box))
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return Face(box=box, score=score, landmarks=points, shape=shape)

    def detect(self, image: np.ndarray, upsample: int | None = None, max_side: int | None = None) -> list[Face]:
        """Every face in an RGB uint8 image, largest first.

        `max_side` detects on a copy downscaled to that size (boxes mapped back, landmarks fitted
        at full resolution): the cheap path for video frames.
        """
        small, factor = _downscale(image, max_side) if max_side else (image, 1.0)
        upsample = self.upsample if upsample is None else upsample
        height, width = image.shape[:2]
        faces = []
        for rect, score in self._detect_rects(np.ascontiguousarray(small), upsample):
            left, top, right, bottom = _box(rect, factor)
            box = (max(0, left), max(0, top), min(width, right), min(height, bottom))
            if box[2] > box[0] and box[3] > box[1]:
                faces.append(self.landmarks(image, box, score))
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def detect_or_fallback(self, image: np.ndarray, centre: bool = False) -> tuple[Face, str]:
        """One face, never nothing: detector, upsampled once more, the CNN detector, the image centre.

        Picks the largest face, or with `centre` the one nearest the image centre (a portrait's subject when
        a bystander's face is larger). Returns the face and how it was found ("detected", "upsampled",
        "cnn", "centre") so callers can report it.
        """
        faces = self.detect(image)
        if faces:
            return (nearest_centre(faces, image) if centre else faces[0]), "detected"
        faces = self.detect(image, upsample=self.upsample + 1)
        if faces:
            return faces[0], "upsampled"
        if self.kind == "hog":
            if self._fallback is None:
                self._fallback = FaceDetector("cnn", upsample=1, quiet=True)
            faces = self._fallback.detect(image)
            if faces:
                return faces[0], "cnn"
        height, width = image.shape[:2]
        side = min(height, width) // 2
        cx, cy = width // 2, height // 2
        box = (cx - side // 2, cy - side // 2, cx + side - side // 2, cy + side - side // 2)
        return self.landmarks(image, box), "centre"


def face_chip(image: np.ndarray, face: Face, padding: float = CHIP_PADDING) -> np.ndarray:
    """The aligned CHIP_SIZE x CHIP_SIZE RGB chip of one face (dlib's 5-point similarity warp)."""
    return dlib.get_face_chip(np.ascontiguousarray(image), face.shape, size=CHIP_SIZE, padding=padding)


def face_chips(image: np.ndarray, faces: list[Face], padding: float = CHIP_PADDING) -> np.ndarray:
    """Chips of several faces as one (N, CHIP_SIZE, CHIP_SIZE, 3) uint8 batch."""
    if not faces:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    return np.stack([face_chip(image, face, padding) for face in faces])


def nearest_centre(faces: list[Face], image: np.ndarray) -> Face:
    """The face whose box centre is nearest the image centre."""
    height, width = image.shape[:2]

    def off_centre(face: Face) -> float:
        left, top, right, bottom = face.box
        return ((left + right) / 2 - width / 2) ** 2 + ((top + bottom) / 2 - height / 2) ** 2

    return min(faces, key=off_centre)
