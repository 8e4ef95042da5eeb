"""The Keras twin of dlib's face ResNet: exact file parsing and numerical equivalence with dlib itself."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest

from facenet.config import LANDMARKS_DAT, RESNET_DAT, model_file
from facenet.images import list_images, load_image
from facenet.models.dlib_resnet import DlibFormatError, DlibReader, read_dlib_resnet

PEOPLE = Path(__file__).parent / "data" / "people"


@pytest.fixture(scope="module")
def dlib_chips() -> np.ndarray:
    """Chips of 8 real faces made by dlib's own detector, landmarks and get_face_chip."""
    detect = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(model_file(LANDMARKS_DAT)))
    chips = []
    for path in list_images(PEOPLE)[::6]:
        image = load_image(path)
        rects = detect(image, 1)
        if rects:
            chips.append(dlib.get_face_chip(image, landmarks(image, rects[0]), size=150, padding=0.25))
    assert len(chips) >= 5
    return np.stack(chips)


def test_float_encoding_from_the_spec():
    """`03 0a d7 a3 | 81 1c` = 10737418 * 2^-28 = 0.04 (the example in dlib_resnet_format.md)."""
    reader = DlibReader(bytes([0x03, 0x0A, 0xD7, 0xA3, 0x81, 0x1C]))
    assert reader.real() == pytest.approx(0.04, rel=1e-6)
    assert reader.pos == len(reader.data)


def test_reader_decodes_known_values():
    reader = DlibReader(bytes([0x01, 0x00, 0x81, 0x05, 0x02, 0x34, 0x12, 0x01, 0x03]) + b"abc" + b"1")
    assert reader.integer() == 0
    assert reader.integer() == -5
    assert reader.integer() == 0x1234
    assert reader.string() == "abc"
    assert reader.boolean() is True


def test_reader_rejects_garbage():
    with pytest.raises(DlibFormatError):
        DlibReader(bytes([0x7F])).integer()
    with pytest.raises(DlibFormatError):
        DlibReader(bytes([0x04, 0x01])).integer()
    with pytest.raises(DlibFormatError):
        DlibReader(b"x").boolean()


def test_parser_reads_the_whole_file():
    weights = read_dlib_resnet(model_file(RESNET_DAT))
    assert len(weights.convs) == 29 and len(weights.affines) == 29
    assert weights.fc.shape == (256, 128)
    n_params = sum(k.size + b.size for k, b, _ in weights.convs) + sum(g.size + b.size for g, b in weights.affines)
    assert n_params + weights.fc.size == 5_614_592
    assert weights.means == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)


def test_truncated_model_file_is_rejected(tmp_path):
    broken = tmp_path / "broken.dat"
    broken.write_bytes(model_file(RESNET_DAT).read_bytes()[:1_000_000])
    with pytest.raises(DlibFormatError, match="end of file"):
        read_dlib_resnet(broken)


def test_keras_twin_matches_dlib_descriptor(embedder, dlib_chips):
    """Raw 128-d output equals dlib's compute_face_descriptor on the same chips to <= 1e-5."""

    raw = embedder.model.get_layer("dlib_resnet")
    ours = raw(dlib_chips.astype(np.float32)).numpy()
    recognizer = dlib.face_recognition_model_v1(str(model_file(RESNET_DAT)))
    theirs = np.array([recognizer.compute_face_descriptor(chip) for chip in dlib_chips])
    assert np.abs(ours - theirs).max() <= 1e-5
    assert raw.count_params() == 5_614_592


def test_embedder_outputs_unit_vectors_that_separate_people(embedder, dlib_chips):
    vectors = embedder.embed({"dlib": dlib_chips})
    assert vectors.shape == (len(dlib_chips), 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    single = np.stack([embedder.embed({"dlib": chip[None]})[0] for chip in dlib_chips])
    np.testing.assert_allclose(single, vectors, atol=1e-5)
