"""Detection, landmarks and aligned chips on real photos, in the one box convention; the pipeline's face choice
and its one fallback chain (detector, sensitive pass, centre box only as a last resort)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facenet.config import CHIP_KINDS, DETECTORS, HOW_TEXT
from facenet.detect.dlib import HOG_UPSAMPLE, PHOTO_UPSAMPLE_MAX_SIDE, DlibDetector, face_chip, fit_shape
from facenet.detect.face import Face
from facenet.detect.registry import make_detector
from facenet.images import load_image
from facenet.pipeline import FacePipeline, centre_box, nearest_centre

DATA = Path(__file__).parent / "data"
MISC = DATA / "misc"
LFW_SMALL = DATA / "lfw_small"
MISSED_AT_FIRST = LFW_SMALL / "Alan_Greenspan" / "Alan_Greenspan_0001.jpg"
"""HOG at its usual upsampling misses this face; the sensitive pass (one more upsampling) finds it."""


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
        assert inside.all() and face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32


def test_two_people_boxes_are_left_and_right(detector):
    faces = detector.detect(load_image(MISC / "two_people.jpg"))
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    assert centres[0] < 1126 / 2 < centres[1]


@pytest.mark.parametrize("name", ["dogs.jpg", "rocket.jpg", "coins.png"])
def test_no_face_in_faceless_photos(detector, name):
    image = load_image(MISC / name)
    assert detector.detect(image) == []
    assert detector.detect(image, sensitive=True) == []  # the sensitive pass does not invent faces here either


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


def test_sensitive_pass_upsamples_once_more_but_never_a_big_photo(monkeypatch):
    detector = DlibDetector("hog")
    asked = []
    monkeypatch.setattr(detector, "_detect_rects", lambda image, upsample: asked.append(upsample) or [])
    small = np.zeros((480, 640, 3), np.uint8)
    big = np.zeros((PHOTO_UPSAMPLE_MAX_SIDE + 8, 100, 3), np.uint8)
    for image in (small, big):
        assert detector.detect(image) == [] and detector.detect(image, sensitive=True) == []
    assert asked == [HOG_UPSAMPLE, HOG_UPSAMPLE + 1, 0, 0]


def test_sensitive_pass_finds_a_face_the_first_pass_misses(detector):
    image = load_image(MISSED_AT_FIRST)
    assert detector.detect(image) == []
    (face,) = detector.detect(image, sensitive=True)
    assert face.area > 0 and face.shape is not None


def test_fit_shape_gives_the_detectors_landmarks(detector):
    image = load_image(MISC / "two_people.jpg")
    for face in detector.detect(image):
        refitted = Face(face.box, face.score, fit_shape(image, face.box))
        np.testing.assert_array_equal(refitted.landmarks, face.landmarks)


def test_chips_are_aligned_150_square(detector):
    image = load_image(MISC / "2008_001322.jpg")
    faces = detector.detect(image)
    chips = [face_chip(image, face) for face in faces]
    assert len(chips) == 3 and all(c.shape == (150, 150, 3) and c.dtype == np.uint8 for c in chips)


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="unknown dlib detector"):
        DlibDetector("haar")
    with pytest.raises(ValueError, match="unknown dlib detector"):
        DlibDetector("yunet")  # YuNet lives behind the pipeline, not in dlib's DlibDetector
    with pytest.raises(ValueError, match="unknown detector 'haar'"):
        make_detector("haar")
    assert DETECTORS == ("yunet", "hog", "cnn")
    assert make_detector("hog").kind == "hog"


# --------------------------------------------------------------------------- the pipeline's faces


def test_pipeline_detect_completes_the_landmarks_its_model_needs(pipeline, detector):
    image = load_image(MISC / "2008_001322.jpg")
    faces = pipeline.detect(image)
    assert [f.box for f in faces] == [f.box for f in detector.detect(image)]
    assert all(f.shape is not None for f in faces)  # the dlib chip is aligned on dlib's 5 points
    chips = pipeline.chips(image, faces)
    assert set(chips) == set(CHIP_KINDS["dlib"]) == {"dlib"}
    np.testing.assert_array_equal(chips["dlib"], np.stack([face_chip(image, f) for f in faces]))
    assert pipeline.chips(image, [])["dlib"].shape == (0, 150, 150, 3)
    vectors = pipeline.embed(image, faces)
    assert vectors.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert pipeline.embed(image, []).shape == (0, 128)


def test_subject_is_the_largest_face_or_the_centre_one(pipeline):
    image = load_image(MISC / "two_people.jpg")
    faces = pipeline.detect(image)
    largest = pipeline.subject(image)
    assert (largest.how, largest.faces, largest.reason) == ("detected", 2, None)
    assert largest.face.box == faces[0].box
    centre = pipeline.subject(image, "centre")
    assert centre.how == "detected" and centre.face.box == nearest_centre(faces, image).box
    with pytest.raises(ValueError, match="unknown face choice"):
        pipeline.subject(image, "leftmost")


def test_fallback_chain_detector_then_sensitive_then_centre_only_as_last_resort(pipeline):
    missed = load_image(MISSED_AT_FIRST)
    found = pipeline.subject(missed)
    assert (found.how, found.faces) == ("sensitive", 1) and found.face.shape is not None
    assert pipeline.subject(missed, last_resort=True).how == "sensitive"  # the centre box stays the last resort

    rocket = load_image(MISC / "rocket.jpg")
    none = pipeline.subject(rocket)
    assert none.face is None and none.reason == "no face" and none.how == ""
    centre = pipeline.subject(rocket, last_resort=True)
    assert centre.how == "centre" and centre.face.box == centre_box(rocket) and centre.face.area > 0
    assert centre.face.shape is not None  # landmarks fitted inside the box: the chip can still be cut
    assert set(HOW_TEXT) == {"sensitive", "centre"}  # the old "upsampled"/"cnn" fallbacks are gone


def test_centre_box_is_a_centred_square_of_half_the_short_side():
    image = np.zeros((300, 500, 3), np.uint8)
    left, top, right, bottom = centre_box(image)
    assert right - left == bottom - top == 150
    assert (left + right) / 2 == 250 and (top + bottom) / 2 == 150


def test_read_subjects_and_embed_photos_give_a_reason_per_photo(pipeline, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    paths = [MISC / "two_people.jpg", MISC / "rocket.jpg", empty, MISSED_AT_FIRST]
    found = pipeline.embed_photos(paths, chunk=1)
    assert list(found) == paths
    assert [found[p].subject.how for p in paths] == ["detected", "", "", "sensitive"]
    assert found[MISC / "rocket.jpg"].subject.reason == "no face" and found[MISC / "rocket.jpg"].vector is None
    assert found[empty].subject.reason.startswith("unreadable: ") and found[empty].vector is None
    image = load_image(MISC / "two_people.jpg")
    expected = pipeline.embed(image, [pipeline.subject(image).face])[0]
    np.testing.assert_allclose(found[MISC / "two_people.jpg"].vector, expected, atol=1e-5)
    assert isinstance(pipeline, FacePipeline) and pipeline.model == "dlib"


def test_face_repr_is_plain_numbers_without_addresses(detector):
    import dlib

    shape = dlib.full_object_detection(dlib.rectangle(1, 2, 30, 40), [dlib.point(10 + i, 20 + i) for i in range(5)])
    points = np.array([[10.5, 20.25], [11, 21], [12.125, 22], [13, 23], [14, 24.004]], np.float32)
    face = Face(box=(1, 2, 30, 40), score=np.float32(0.97312), shape=shape, points=points)
    assert repr(face) == ("Face(box=(1, 2, 30, 40), score=0.9731, shape=((10, 20), (11, 21), (12, 22), (13, 23), "
                          "(14, 24)), points=((10.5, 20.25), (11.0, 21.0), (12.12, 22.0), (13.0, 23.0), (14.0, 24.0)))")
    assert repr(Face(box=(0, 0, 5, 5), score=0.0)) == "Face(box=(0, 0, 5, 5), score=0.0, shape=None, points=None)"
    found = detector.detect(load_image(MISC / "two_people.jpg"))[0]  # a real dlib shape from the HOG detector
    text = repr(found)
    assert "0x" not in text and "object at" not in text
    pairs = ", ".join(f"({x}, {y})" for x, y in found.landmarks.astype(int).tolist())
    assert text.endswith(f", shape=({pairs}), points=None)")
