"""Aligned chips from 5 points: SFace's 112x112 crop, and dlib's 150x150 chip for YuNet faces.

- `sface_chip`: OpenCV's `FaceRecognizerSF.alignCrop` geometry, re-implemented: the least-squares similarity
  transform (Umeyama, no reflection) from YuNet's 5 points to OpenCV's fixed 112x112 template, then a bilinear
  `warpAffine` with black borders. Same chip as alignCrop (converted to RGB) - tests/test_yunet.py checks it.
- `dlib_shape`: the dlib landmarks of a YuNet face, so that `dlib.get_face_chip` (facenet/detect/dlib.py) cuts the chip
  the dlib face ResNet expects.
- `points_from_dlib`: YuNet-order points estimated from dlib's 5 landmarks, so that HOG/CNN faces get SFace chips.

Measured on LFW View 1 DevTrain only (deep-funneled 250x250; 3,443 images, 2,200 pairs, 10-fold accuracy; the face
nearest the image centre; YuNet at 0.85 found one in every image; HOG = today's route: HOG, HOG upsampled, CNN).
The two constant sets below were fitted on 400 DevTrain images whose faces both detectors find, errors are on the
other 2,991:

- dlib chip for YuNet faces, dlib face ResNet twin (pretrained), pair distances:

  | route                                        | 10-fold acc     | AUC     | EER    | d'    |
  |----------------------------------------------|-----------------|---------|--------|-------|
  | HOG box + dlib landmarks (today)             | 98.95 +- 0.46 % | 0.99888 | 1.27 % | 4.710 |
  | (a) YuNet box -> `dlib_box` + dlib landmarks | 98.64 +- 0.54 % | 0.99924 | 1.18 % | 4.732 |
  | (b) YuNet points -> dlib template directly   | 98.86 +- 0.55 % | 0.99908 | 1.09 % | 4.640 |

  The accuracies differ by 1-7 pairs of 2,200: noise. (a) is kept: best AUC and d', and its vectors stay next to
  the HOG route's (median distance between an image's two vectors 0.028, vs 0.119 for (b)), so thresholds
  calibrated on HOG chips (VERIFY_THRESHOLD 0.4391; best threshold with (a) 0.4337) and galleries enrolled with
  HOG remain valid. (b) with integer landmarks (a dlib.full_object_detection) scored the same as with float ones.
- `dlib_box` (DLIB_BOX_MAP, 3 parameters, equivariant to shifts and scale): IoU with the HOG box 0.81 mean
  (YuNet's own box: 0.72); the landmarks fitted in it differ from those fitted in the HOG box by 0.9 % of the eye
  distance on average (2.6 % in YuNet's own box). A 20-parameter affine map of the raw coordinates fits LFW's fixed
  geometry better (IoU 0.87) but not faces of other sizes.
- `points_from_dlib` vs YuNet's own points, mean error / eye distance: eyes 0.08, nose 0.14, mouth corners 0.11.
  SFace (OpenCV's `FaceRecognizerSF`, cosine as Euclidean distance of unit vectors) loses nothing with them:
  YuNet's points 99.36 +- 0.51 % (AUC 0.99892, EER 0.91 %), estimated from the HOG route's landmarks
  99.55 +- 0.35 % (AUC 0.99793, EER 0.55 %), from route (a)'s 99.64 +- 0.40 % (AUC 0.99847).
- `sface_chip` equals alignCrop's chip exactly: 0 grey levels apart on all 1,939 faces YuNet finds at 0.6 in
  tests/data, shared/faces/misc and 1,500 LFW images.
- cost: `sface_chip` 0.15 ms, `dlib_shape` 0.25 ms, `points_from_dlib` 0.05 ms.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import dlib
import numpy as np

from facenet.detect.dlib import fit_shape
from facenet.detect.face import Box

SFACE_CHIP = 112
"""Side of SFace's aligned chip (OpenCV's alignCrop size)."""

SFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
"""Where alignCrop puts YuNet's 5 points in the 112x112 chip (OpenCV's face_recognize.cpp)."""

SFACE_TEMPLATE_MEAN = np.array([56.0262, 71.9008])
"""The template centre as OpenCV writes it (rounded; the exact mean differs by 2e-5 px)."""

DLIB_TEMPLATE = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
"""dlib's 5-point chip template on the unit square, before padding (dlib's `get_face_chip_details`): outer and
inner corner of the eye on the image's right, outer and inner corner of the other eye, bottom of the nose."""

YUNET_IN_DLIB_TEMPLATE = np.array(
    [[0.2265, 0.2050], [0.7806, 0.2101], [0.4996, 0.5223], [0.2631, 0.7650], [0.7371, 0.7748]]
)
"""Mean position of YuNet's 5 points in dlib's template frame (each face mapped there by the similarity that
takes its dlib landmarks to DLIB_TEMPLATE), measured on 400 DevTrain images."""

DLIB_BOX_MAP = (-0.0255, 0.0372, 1.1210)
"""YuNet box -> dlib HOG box: centre x += a * width, centre y += b * height, side = c * width (a square box);
least squares on 400 DevTrain faces that both detectors find."""


class Landmarked(Protocol):
    """Anything with a box and YuNet's 5 points: a `yunet.Detection` or a `faces.Face` from YuNet."""

    box: Box
    points: np.ndarray


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift; no reflection) mapping `source` to `target`
    (Umeyama's method, the one OpenCV's alignCrop uses)."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    src, dst = source - source_mean, target - target_mean
    variance = (src**2).sum(axis=1).mean()
    if not np.isfinite(variance) or variance <= 0:
        raise ValueError("the points coincide: no similarity transform")
    covariance = dst.T @ src / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.array([1.0, -1.0 if np.linalg.det(covariance) < 0 else 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / variance
    shift = target_mean - scale * rotation @ source_mean
    return np.column_stack([scale * rotation, shift])


def transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) through a 2x3 affine matrix."""
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def sface_matrix(points: np.ndarray) -> np.ndarray:
    """alignCrop's 2x3 warp for YuNet's 5 points: `similarity` to SFACE_TEMPLATE in OpenCV's own arithmetic.

    OpenCV centres the points and multiplies them in float32 (sums in float64); the same roundings here keep the
    matrix on the same side of warpAffine's 1/32 px grid, so the chips match alignCrop's exactly.
    """
    source = np.asarray(points, np.float32).reshape(5, 2)
    source_mean = source.sum(axis=0, dtype=np.float32) / np.float32(5)
    src = source - source_mean
    dst = SFACE_TEMPLATE.astype(np.float32) - SFACE_TEMPLATE_MEAN.astype(np.float32)
    covariance = (dst[:, :, None] * src[:, None, :]).astype(np.float64).sum(axis=0) / 5
    variance = ((src * src).astype(np.float64).sum(axis=0) / 5).sum()
    if not np.isfinite(variance) or variance <= 0:
        raise ValueError("the points coincide: no similarity transform")
    u, s, vt = np.linalg.svd(covariance)
    d = np.array([1.0, -1.0 if np.linalg.det(covariance) < 0 else 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = 1.0 / variance * (s * d).sum()
    shift = SFACE_TEMPLATE_MEAN.astype(np.float32).astype(np.float64) - scale * rotation @ source_mean
    return np.column_stack([scale * rotation, shift])


def sface_chip(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(112, 112, 3) uint8 RGB chip for SFace from an RGB image and YuNet's 5 points: alignCrop's crop."""
    matrix = sface_matrix(points)
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (SFACE_CHIP, SFACE_CHIP), flags=cv2.INTER_LINEAR)


def dlib_box(yunet_box: Box) -> Box:
    """A YuNet box in the geometry of dlib's HOG boxes (DLIB_BOX_MAP); not clipped to the image."""
    left, top, right, bottom = yunet_box
    width, height = right - left, bottom - top
    a, b, c = DLIB_BOX_MAP
    cx, cy, side = (left + right) / 2 + a * width, (top + bottom) / 2 + b * height, max(1, round(c * width))
    new_left, new_top = round(cx - side / 2), round(cy - side / 2)
    return new_left, new_top, new_left + side, new_top + side


def dlib_shape(image: np.ndarray, detection: Landmarked) -> dlib.full_object_detection:
    """dlib's 5 landmarks of a YuNet face, for `dlib.get_face_chip`: dlib's landmark model inside `dlib_box`.

    Route (a) of the module docstring. A face cut by the image border has a clipped box, so its landmarks are
    fitted in a slightly shifted box.
    """
    return fit_shape(image, dlib_box(detection.box))


def points_from_dlib(shape_points: np.ndarray) -> np.ndarray:
    """YuNet-order 5 points (float32) estimated from dlib's 5 landmarks (dlib's part order, (5, 2)).

    The mean YuNet face (YUNET_IN_DLIB_TEMPLATE) is mapped back through the similarity that takes these landmarks
    to dlib's template: eyes and nose follow the landmarks, the mouth corners are the average face's.
    """
    to_template = similarity(np.asarray(shape_points, np.float64).reshape(5, 2), DLIB_TEMPLATE)
    return transform(invert(to_template), YUNET_IN_DLIB_TEMPLATE).astype(np.float32)
