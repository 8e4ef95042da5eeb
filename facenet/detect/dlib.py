"""dlib's face detectors (HOG or CNN) behind the `Detector` protocol, its 5-point landmarks and its aligned
150x150 chips."""

from __future__ import annotations

import logging
from functools import cache

import cv2
import dlib
import numpy as np

from facenet.config import (
    CHIP_PADDING,
    CHIP_SIZE,
    CNN_DETECTOR_DAT,
    LANDMARKS_DAT,
    model_file,
)
from facenet.detect.face import Box, Face

HOG_UPSAMPLE = 1
"""Times HOG upsamples a photo: 1 finds faces down to about 40 px."""

HOG_THRESHOLD = 0.2
"""Minimum HOG detection score: drops the weakest false alarms (a badge, a pattern), keeps real faces."""

PHOTO_UPSAMPLE_MAX_SIDE = 2000
"""Photos larger than this are detected without upsampling: faces below ~80 px are negligible there, and
upsampling a 4096 px photo would cost seconds and ~200 MB."""

log = logging.getLogger(__name__)

DLIB_DETECTORS = ("hog", "cnn")


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
    factor = max(height, width) / max_side
    size = (round(width / factor), round(height / factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


@cache
def _shape_predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(model_file(LANDMARKS_DAT)))


def fit_shape(image: np.ndarray, box: Box) -> dlib.full_object_detection:
    """dlib's 5-point landmarks fitted inside `box` (a box in dlib's HOG geometry aligns best)."""
    return _shape_predictor()(np.ascontiguousarray(image), _rect(box))


class DlibDetector:
    """dlib face detector + 5-point landmark model; `kind` is "hog" (fast) or "cnn" (MMOD, accurate, slow)."""

    def __init__(self, kind: str = "hog", upsample: int = HOG_UPSAMPLE, quiet: bool = False) -> None:
        if kind not in DLIB_DETECTORS:
            raise ValueError(f"unknown dlib detector {kind!r}; choose one of {', '.join(DLIB_DETECTORS)}")
        self.kind = kind
        self.upsample = upsample
        self._hog = dlib.get_frontal_face_detector() if kind == "hog" else None
        self._cnn = dlib.cnn_face_detection_model_v1(str(model_file(CNN_DETECTOR_DAT))) if kind == "cnn" else None
        if kind == "cnn" and not dlib.DLIB_USE_CUDA and not quiet:
            log.warning("the CNN detector runs on the CPU here: about 2 s per 640x480 frame (HOG: ~0.05 s)")

    def _detect_rects(self, image: np.ndarray, upsample: int) -> list[tuple[dlib.rectangle, float]]:
        if self._cnn is not None:
            return [(d.rect, float(d.confidence)) for d in self._cnn(image, upsample)]
        rects, scores, _ = self._hog.run(image, upsample, HOG_THRESHOLD)
        return list(zip(rects, (float(s) for s in scores), strict=True))

    def landmarks(self, image: np.ndarray, box: Box, score: float = 0.0) -> Face:
        """Fit the 5-point landmarks inside `box` (any box: detected, mapped back or synthetic)."""
        return Face(box=box, score=score, shape=fit_shape(image, box))

    def detect(self, image: np.ndarray, max_side: int | None = None, sensitive: bool = False) -> list[Face]:
        """Every face in an RGB uint8 image, largest first.

        `max_side` detects on a copy downscaled to that size (boxes mapped back, landmarks fitted at full
        resolution): the cheap path for video frames. `sensitive` upsamples once more (the fallback pass).
        Photos larger than PHOTO_UPSAMPLE_MAX_SIDE are not upsampled: faces there are large, and upsampling
        a 4032 px photo would cost seconds and ~200 MB.
        """
        small, factor = _downscale(image, max_side) if max_side else (image, 1.0)
        upsample = self.upsample + int(sensitive) if max(image.shape[:2]) <= PHOTO_UPSAMPLE_MAX_SIDE else 0
        height, width = image.shape[:2]
        faces = []
        for rect, score in self._detect_rects(np.ascontiguousarray(small), upsample):
            left, top, right, bottom = _box(rect, factor)
            box = (max(0, left), max(0, top), min(width, right), min(height, bottom))
            if box[2] > box[0] and box[3] > box[1]:
                faces.append(self.landmarks(image, box, score))
        return sorted(faces, key=lambda f: f.area, reverse=True)


def face_chip(image: np.ndarray, face: Face, padding: float = CHIP_PADDING) -> np.ndarray:
    """The aligned CHIP_SIZE x CHIP_SIZE RGB chip of one face for the dlib ResNet (dlib's 5-point warp)."""
    return dlib.get_face_chip(np.ascontiguousarray(image), face.shape, size=CHIP_SIZE, padding=padding)
