"""YuNet face detector (OpenCV Zoo, 2023mar int8 model) through `cv2.FaceDetectorYN`: boxes, scores, 5 points.

Boxes follow the package convention `(left, top, right, bottom)`, int pixels, right/bottom exclusive, clipped to the
image; points are (5, 2) float32 image pixels in YuNet's order: right eye (the one on the image's left), left eye,
nose tip, right mouth corner, left mouth corner. Faces come largest first. Images are RGB uint8 (grey accepted);
they become BGR only at the OpenCV call.

Two passes (constants below the imports):
- fine: the image, downscaled to YUNET_MAX_SIDE (1280) when larger; boxes and points are mapped back;
- coarse: only when the fine copy's shorter side exceeds YUNET_FULL_FACE_SIDE (480), a copy whose shorter side is
  YUNET_COARSE_SIDE (320), for faces that fill the photo (YuNet misses faces above ~500 px); the two passes are merged
  by non-maximum suppression.

Measured (2 CPU cores, OpenCV 4.14, this model; one-off scripts, numbers recorded here):
- true faces of 48-400 px score >= 0.88 (612 LFW DevTrain faces, images rescaled 0.15x-2.4x); in LFW's 250x250
  images the central face scores 0.90-0.95 and none of 3,443 DevTrain images is missed at 0.85.
- 640x480 frames (rocket.jpg background) tiled with shrunken LFW DevTrain photos, 180 faces per size; share found
  at score 0.85 / 0.80 / 0.60. Full resolution: 36 px wide 1.00 / 1.00 / 1.00, 24 px 0.99 / 1.00 / 1.00,
  20 px 0.92 / 0.98 / 1.00, 16 px 0.76 / 0.91 / 0.99, 12 px 0.25 / 0.68 / 0.95. On a 320x240 copy of the frame:
  36 px 0.91 / 0.97 / 1.00, 24 px 0.42 / 0.83 / 0.99, 20 px 0.03 / 0.38 / 0.93 - frames are read at full size.
- faces filling a square image (crop = the face box) are found at 160-480 px sides, not at 640 px and above (hence
  the coarse pass); with 20 % margin up to 640 px, with 100 % margin up to 960 px.
- negatives, best score over 12 versions (6 scales 0.35x-2x, each mirrored): rocket.jpg 0.23, coins.png 0.40,
  coffee.png 0.54, sklearn's china.jpg 0.18 and flower.jpg 0.31; the torso in bald_guys.jpg 0.50, the best non-face
  in two_people.jpg 0.54 (2x). dogs.jpg is the hard negative: its dog faces score 0.77 as given (0.82 mirrored) but
  0.86-0.90 at most other scales, with human-like landmark geometry - no threshold that keeps small human faces
  rejects dog faces at every scale. YUNET_SCORE_THRESHOLD = 0.85 keeps dogs.jpg (as given and mirrored) empty and
  finds every face from ~20 px in a full-resolution frame.
- photos at 0.85: 2008_001322.jpg 3/3 (0.90-0.93), 2008_007676.jpg 7 (0.90-0.92; the others are dark bystanders
  scoring <= 0.31), two_people.jpg 2/2 (0.94), alex-lacamoire.png 1 (0.93), bald_guys.jpg 24/24 (0.92-0.95),
  camera.png 1 (0.90), astronaut.png 1 (0.94); no false positive on any of them.
- time per `detect` (2 threads, median): 250x250 LFW image 8 ms; 640x480 frame 28 ms (9 ms with max_side=320);
  1280x960 photo ~220 ms; 4032x3024 photo ~300 ms (75 ms of it the resize; full resolution would take 2.6 s).

The OpenCV detector object keeps per-call state (input size, threshold): one YuNetDetector per thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facenet.detect.face import Box, Face
from facenet.models.zoo import YUNET_ONNX, zoo_file

YUNET_SCORE_THRESHOLD = 0.85
"""Minimum YuNet score: finds faces of ~20 px and up in a full-resolution frame (36 px: 180/180 found) and keeps
dogs.jpg, rocket.jpg and coins.png empty. Non-faces measured score <= 0.57 at every scale, except dog faces: 0.77 in
dogs.jpg as given, but up to 0.90 when it is rescaled (no threshold that keeps small faces rejects them all)."""

YUNET_FALLBACK_SCORE = 0.6
"""Score of the sensitive (fallback) pass: above every non-face measured but dog faces (<= 0.57); finds 95 % of
12 px faces and 99 % of 16 px ones in a full-resolution frame."""

YUNET_NMS_THRESHOLD = 0.3
"""IoU above which the weaker of two overlapping boxes is dropped (OpenCV's default)."""

YUNET_TOP_K = 5000
"""Candidates kept before non-maximum suppression (OpenCV's default)."""

YUNET_MAX_SIDE = 1280
"""Longest side YuNet reads: larger photos are downscaled (a 4032x3024 photo: faces from ~50 px, ~0.3 s)."""

YUNET_FULL_FACE_SIDE = 480
"""YuNet misses faces larger than ~500 px: a copy whose shorter side is above this also gets the coarse pass."""

YUNET_COARSE_SIDE = 320
"""Shorter side of the coarse pass's copy: a face filling the photo is found there."""

YUNET_MIN_SIDE = 12
"""Images whose shorter side is below this hold no face YuNet can find (its smallest, ~12 px): they are not run
(on 1-8 px images or 3 px strips the network returns garbage rows, even infinite boxes)."""


@dataclass(frozen=True)
class Detection:
    """One YuNet face: box (package convention), score in 0..1, and the 5 points (see the module docstring)."""

    box: Box
    score: float
    points: np.ndarray

    @property
    def area(self) -> int:
        left, top, right, bottom = self.box
        return max(0, right - left) * max(0, bottom - top)


def _resized(image: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """`image` shrunk by `factor` (>= 1), and the x/y factors mapping its pixels back."""
    height, width = image.shape[:2]
    if factor <= 1.0:
        return image, 1.0, 1.0
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return small, width / size[0], height / size[1]


class YuNetDetector:
    """YuNet through `cv2.FaceDetectorYN`; thresholds default to the YUNET_* values above."""

    def __init__(
        self,
        score_threshold: float = YUNET_SCORE_THRESHOLD,
        nms_threshold: float = YUNET_NMS_THRESHOLD,
        top_k: int = YUNET_TOP_K,
    ) -> None:
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        self._net = cv2.FaceDetectorYN.create(
            str(zoo_file(YUNET_ONNX)), "", (320, 320), score_threshold, nms_threshold, top_k
        )

    def _rows(self, rgb: np.ndarray, threshold: float) -> np.ndarray:
        """Raw (N, 15) YuNet rows (x, y, w, h, 5 points, score) of one RGB image in its own pixels."""
        height, width = rgb.shape[:2]
        self._net.setInputSize((width, height))
        self._net.setScoreThreshold(threshold)
        _, rows = self._net.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return np.zeros((0, 15), np.float32) if rows is None else rows

    def _pass(self, image: np.ndarray, threshold: float, fx: float = 1.0, fy: float = 1.0) -> np.ndarray:
        """Rows found on `image`, mapped to the caller's pixels by the factors `fx`, `fy`."""
        rows = self._rows(np.ascontiguousarray(image), threshold).astype(np.float64)
        rows[:, 0:14:2] *= fx
        rows[:, 1:14:2] *= fy
        return rows

    def detect(
        self, image: np.ndarray, max_side: int | None = None, score_threshold: float | None = None
    ) -> list[Detection]:
        """Every face of an RGB (or grey) uint8 image, largest first.

        `max_side`: longest side of the copy the fine pass reads (default YUNET_MAX_SIDE; smaller images are read
        as they are). `score_threshold`: this call's minimum score (default: the detector's).
        """
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        if min(height, width) < YUNET_MIN_SIDE:
            return []
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        max_side = YUNET_MAX_SIDE if max_side is None else max_side
        fine, fx, fy = _resized(image, max(height, width) / max_side)
        rows = self._pass(fine, threshold, fx, fy)
        if min(fine.shape[:2]) > YUNET_FULL_FACE_SIDE:
            coarse, cx, cy = _resized(fine, min(fine.shape[:2]) / YUNET_COARSE_SIDE)
            rows = np.concatenate([rows, self._pass(coarse, threshold, fx * cx, fy * cy)])
            rows = _suppress(rows, threshold, self.nms_threshold)
        found = []
        for row in rows[np.isfinite(rows).all(axis=1)]:
            x, y, w, h = row[:4]
            box = (max(0, round(x)), max(0, round(y)), min(width, round(x + w)), min(height, round(y + h)))
            if box[2] > box[0] and box[3] > box[1]:
                points = row[4:14].reshape(5, 2).astype(np.float32)
                found.append(Detection(box=box, score=float(row[14]), points=points))
        return sorted(found, key=lambda d: d.area, reverse=True)


def _suppress(rows: np.ndarray, threshold: float, nms_threshold: float) -> np.ndarray:
    """Rows of two passes merged: of overlapping boxes (IoU > nms_threshold) the best-scoring one stays."""
    if len(rows) < 2:
        return rows
    boxes = [[float(v) for v in row[:4]] for row in rows]
    keep = cv2.dnn.NMSBoxes(boxes, [float(s) for s in rows[:, 14]], threshold, nms_threshold)
    return rows[np.asarray(keep, dtype=np.int64).reshape(-1)]


class YuNetFaces:
    """YuNet behind the `Detector` protocol: every face with its 5 points, largest first."""

    kind = "yunet"

    def __init__(self) -> None:
        self._detector = YuNetDetector()

    def detect(self, image: np.ndarray, max_side: int | None = None, sensitive: bool = False) -> list[Face]:
        threshold = YUNET_FALLBACK_SCORE if sensitive else None
        found = self._detector.detect(image, max_side=max_side, score_threshold=threshold)
        faces = [Face(box=d.box, score=d.score, points=d.points) for d in found]
        return sorted(faces, key=lambda f: f.area, reverse=True)
