"""The public API with the inputs users really pass (issue 14, items 2 and 13): PIL images and file bytes are
accepted, anything else is one clear TypeError/ValueError, tiny images have no face (never a crash)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facenet
from facenet.detect.yunet import YuNetDetector
from facenet.images import load_image

DATA = Path(__file__).parent / "data"
JUANES = DATA / "people" / "Juanes"
PHOTO = JUANES / "Juanes_0001.jpg"


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (8, 8), (3, 2000), (2000, 3), (16, 16), (11, 400)])
def test_tiny_images_have_no_face(shape):
    """YuNet returns garbage rows (infinite boxes) on images this small; they must give no face, never a crash."""
    real = load_image(DATA / "misc" / "two_people.jpg")
    tiny = np.ascontiguousarray(np.asarray(Image.fromarray(real).resize(shape[::-1])))
    noise = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    detector = YuNetDetector()
    for image in (tiny, noise):
        for threshold in (None, 0.6):
            faces = detector.detect(image, score_threshold=threshold)
            assert all(math.isfinite(v) for f in faces for v in (*f.box, f.score))
            if min(shape) < 12:
                assert faces == []


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (3, 2000)])
def test_tiny_images_through_the_api(shape, weights_dir):
    tiny = np.full((*shape, 3), 128, np.uint8)
    assert facenet.detect_faces(tiny, weights_dir=weights_dir) == []
    assert facenet.embed_faces(tiny, weights_dir=weights_dir).shape[0] == 0
    with pytest.raises(facenet.NoFaceError):
        facenet.verify(tiny, PHOTO, weights_dir=weights_dir)


def test_pil_images_and_bytes_are_accepted(weights_dir):
    pil = Image.open(PHOTO)
    data = PHOTO.read_bytes()
    by_path = facenet.embed_face(PHOTO, weights_dir=weights_dir)
    for image in (pil, pil.convert("L"), pil.convert("RGBA"), data, bytearray(data)):
        vector = facenet.embed_face(image, weights_dir=weights_dir)
        assert vector.shape == by_path.shape
    assert np.allclose(facenet.embed_face(data, weights_dir=weights_dir), by_path, atol=1e-5)
    assert facenet.verify(pil, data, weights_dir=weights_dir).same
    assert len(facenet.detect_faces(data, weights_dir=weights_dir)) == 1


@pytest.mark.parametrize("bad", [None, [1, 2, 3], 12, 3.5, {"a": 1}])
def test_other_images_are_one_clear_type_error(bad, weights_dir):
    with pytest.raises(TypeError, match="an image must be a path, bytes of an image file, a PIL.Image"):
        facenet.detect_faces(bad, weights_dir=weights_dir)
    with pytest.raises(TypeError, match="an image must be"):
        facenet.verify(bad, PHOTO, weights_dir=weights_dir)


def test_bad_bytes_and_arrays_are_value_errors(weights_dir):
    with pytest.raises(facenet.ImageError, match="image bytes"):
        facenet.detect_faces(b"not an image", weights_dir=weights_dir)
    with pytest.raises(ValueError, match="RGB uint8 array"):
        facenet.detect_faces(np.zeros((4, 4, 3), np.float32), weights_dir=weights_dir)
    with pytest.raises(ValueError, match="must not be empty"):
        facenet.detect_faces("", weights_dir=weights_dir)


def test_faces_accepts_lists_and_tuples_of_faces_only(weights_dir):
    faces = facenet.detect_faces(PHOTO, weights_dir=weights_dir)
    as_list = facenet.embed_faces(PHOTO, faces, weights_dir=weights_dir)
    as_tuple = facenet.embed_faces(PHOTO, tuple(faces), weights_dir=weights_dir)
    assert as_list.shape[0] == 1 and np.allclose(as_list, as_tuple)
    for bad in [(10, 10, 50, 50)], ((10, 10, 50, 50),), "face", 3:
        with pytest.raises(TypeError, match="faces must be a list or tuple of the Face objects"):
            facenet.embed_faces(PHOTO, bad, weights_dir=weights_dir)


@pytest.mark.parametrize("threshold", [math.nan, -1, 0, math.inf])
def test_verify_refuses_meaningless_thresholds(threshold, weights_dir):
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 2\]"):
        facenet.verify(PHOTO, PHOTO, threshold=threshold, weights_dir=weights_dir)
    with pytest.raises(TypeError, match="threshold must be a number"):
        facenet.verify(PHOTO, PHOTO, threshold="abc", weights_dir=weights_dir)
