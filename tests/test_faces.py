"""Detection, landmarks and aligned chips on real photos, in the one box convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facenet.faces import FaceDetector, face_chip, face_chips
from facenet.images import load_image

MISC = Path(__file__).parent / "data" / "misc"


def iou(a: tuple, b: tuple) -> float:
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize(("name", "at_least", "at_most"), [("two_people.jpg", 2, 2), ("2008_001322.jpg", 3, 3),
                                                           ("2008_007676.jpg", 6, 10)])
def test_every_face_of_a_group_photo_largest_first(detector, name, at_least, at_most):
    image = load_image(MISC / name)
    faces = detector.detect(image)
    assert at_least <= len(faces) <= at_most
    areas = [face.area for face in faces]
    assert areas == sorted(areas, reverse=True)
    height, width = image.shape[:2]
    for face in faces:
        left, top, right, bottom = face.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert all(isinstance(v, int) for v in face.box)
        inside = (face.landmarks[:, 0] >= left - 5) & (face.landmarks[:, 0] <= right + 5)
        assert inside.all() and face.landmarks.shape == (5, 2)


def test_two_people_boxes_are_left_and_right(detector):
    faces = detector.detect(load_image(MISC / "two_people.jpg"))
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert centres[0] < 1126 / 2 < centres[1]


@pytest.mark.parametrize("name", ["dogs.jpg", "rocket.jpg", "coins.png"])
def test_no_face_in_faceless_photos(detector, name):
    assert detector.detect(load_image(MISC / name)) == []


def test_rgba_photo_has_one_face(detector):
    assert len(detector.detect(load_image(MISC / "alex-lacamoire.png"))) == 1


def test_downscaled_detection_maps_boxes_back(detector):
    image = load_image(MISC / "two_people.jpg")
    full = detector.detect(image)
    fast = detector.detect(image, max_side=560)
    assert len(fast) == len(full) == 2
    by_left = sorted(full, key=lambda f: f.box[0]), sorted(fast, key=lambda f: f.box[0])
    for a, b in zip(*by_left, strict=True):
        assert iou(a.box, b.box) > 0.5


def test_chips_are_aligned_150_square(detector):
    image = load_image(MISC / "2008_001322.jpg")
    faces = detector.detect(image)
    chips = face_chips(image, faces)
    assert chips.shape == (3, 150, 150, 3) and chips.dtype == np.uint8
    assert np.array_equal(chips[0], face_chip(image, faces[0]))
    assert face_chips(image, []).shape == (0, 150, 150, 3)


def test_fallback_always_yields_a_face(detector):
    face, how = detector.detect_or_fallback(load_image(MISC / "two_people.jpg"))
    assert how == "detected"
    face, how = detector.detect_or_fallback(load_image(MISC / "rocket.jpg"))
    assert how in ("upsampled", "cnn", "centre")
    assert face.area > 0


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="unknown detector"):
        FaceDetector("haar")
