"""YuNet detector (facenet/detect/yunet.py) and the chips cut from its 5 points (detect/align.py), on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from facenet.detect import align
from facenet.detect.dlib import face_chip
from facenet.detect.face import Face
from facenet.detect.yunet import Detection, YuNetDetector
from facenet.images import load_image

DATA = Path(__file__).parent / "data"
MISC, PEOPLE = DATA / "misc", DATA / "people"

GROUPS = [("2008_001322.jpg", 3), ("2008_007676.jpg", 7), ("two_people.jpg", 2), ("alex-lacamoire.png", 1)]
"""Faces YuNet finds at the default score (2008_007676.jpg: the 7 clear faces score >= 0.89, the dark bystanders
behind them <= 0.31)."""


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    return YuNetDetector()


def iou(a, b) -> float:
    left, top, right, bottom = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def people_photos(count: int) -> list:
    return sorted(PEOPLE.glob("*/*.jpg"))[:count]


def check_convention(image: np.ndarray, faces: list[Detection]) -> None:
    height, width = image.shape[:2]
    for face in faces:
        assert all(isinstance(v, int) for v in face.box)
        left, top, right, bottom = face.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert face.points.shape == (5, 2) and face.points.dtype == np.float32
        assert 0.0 < face.score <= 1.0
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True), "largest first"


@pytest.mark.parametrize(("name", "count"), GROUPS)
def test_face_counts(yunet, name, count):
    image = load_image(MISC / name)
    faces = yunet.detect(image)
    assert len(faces) == count
    check_convention(image, faces)
    for face in faces:
        left, top, right, bottom = face.box
        xs, ys = face.points[:, 0], face.points[:, 1]
        assert (xs >= left).all() and (xs < right).all() and (ys >= top).all() and (ys < bottom).all()
        assert xs[0] < xs[1] and xs[3] < xs[4], "YuNet order: the image's left eye / mouth corner first"
        assert ys[[0, 1]].max() < ys[2] < ys[[3, 4]].min(), "eyes above the nose above the mouth"


@pytest.mark.parametrize("name", ["dogs.jpg", "rocket.jpg", "coins.png"])
def test_no_face(yunet, name):
    assert yunet.detect(load_image(MISC / name)) == []


def test_two_people_left_and_right(yunet):
    image = load_image(MISC / "two_people.jpg")
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in yunet.detect(image))
    width = image.shape[1]
    assert centres[0] < width / 2 < centres[1]


def test_grey_and_empty_images(yunet):
    image = load_image(MISC / "alex-lacamoire.png")
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    assert len(yunet.detect(grey)) == 1
    assert yunet.detect(np.zeros((0, 0, 3), np.uint8)) == []
    assert yunet.detect(np.zeros((8, 8, 3), np.uint8)) == []
    with pytest.raises(ValueError):
        yunet.detect(np.zeros((10, 10, 3), np.float32))


def test_small_faces_in_a_video_frame(yunet):
    """Faces ~36 px wide pasted into a 640x480 frame are found at full resolution, where they were put."""
    frame = cv2.resize(load_image(MISC / "rocket.jpg"), (640, 480), interpolation=cv2.INTER_AREA)
    expected = []
    for path, (x0, y0) in zip(people_photos(3), [(40, 60), (300, 200), (500, 330)], strict=True):
        photo = load_image(path)
        face = yunet.detect(photo)[0]
        scale = 36 / (face.box[2] - face.box[0])
        small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frame[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
        expected.append([x0 + v * scale if i % 2 == 0 else y0 + v * scale for i, v in enumerate(face.box)])
    faces = yunet.detect(frame)
    check_convention(frame, faces)
    assert len(faces) == 3
    for box in expected:
        assert max(iou(box, f.box) for f in faces) > 0.6


def test_big_photo_is_mapped_back(yunet):
    """A photo upscaled to 4000 px is detected on a downscaled copy; boxes and points come back in its pixels."""
    image = load_image(MISC / "two_people.jpg")
    factor = 4000 / image.shape[1]
    big = cv2.resize(image, (4000, round(image.shape[0] * factor)), interpolation=cv2.INTER_LINEAR)
    found = yunet.detect(big)
    check_convention(big, found)
    assert len(found) == 2
    small_faces = sorted(yunet.detect(image), key=lambda f: f.box[0])
    big_faces = sorted(found, key=lambda f: f.box[0])
    for small, large in zip(small_faces, big_faces, strict=True):
        scaled = [v * factor for v in small.box]
        assert iou(scaled, large.box) > 0.8
        width = large.box[2] - large.box[0]
        assert np.abs(small.points * factor - large.points).max() < 0.06 * width


def test_face_filling_the_photo(yunet):
    """A face that fills a 2000 px photo is too big for one pass; the coarse pass finds it."""
    image = load_image(MISC / "alex-lacamoire.png")
    left, top, right, bottom = yunet.detect(image)[0].box
    crop = image[top:bottom, left:right]
    filled = cv2.resize(crop, (2000, round(2000 * crop.shape[0] / crop.shape[1])), interpolation=cv2.INTER_LINEAR)
    faces = yunet.detect(filled)
    assert len(faces) == 1
    assert faces[0].area > 0.6 * filled.shape[0] * filled.shape[1]


def test_sface_chip_equals_align_crop(yunet):
    """Our warp is OpenCV's FaceRecognizerSF.alignCrop (BGR in, BGR out) on real faces."""
    from facenet.models.zoo import SFACE_ONNX, zoo_file

    recognizer = cv2.FaceRecognizerSF.create(str(zoo_file(SFACE_ONNX)), "")
    checked = 0
    for path in [*people_photos(4), MISC / "2008_001322.jpg", MISC / "two_people.jpg"]:
        image = load_image(path)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        for face in yunet.detect(image):
            left, top, right, bottom = face.box
            row = np.r_[left, top, right - left, bottom - top, face.points.ravel(), face.score].astype(np.float32)
            expected = cv2.cvtColor(recognizer.alignCrop(bgr, row[None]), cv2.COLOR_BGR2RGB)
            chip = align.sface_chip(image, face.points)
            assert chip.shape == (align.SFACE_CHIP, align.SFACE_CHIP, 3) and chip.dtype == np.uint8
            assert np.abs(chip.astype(int) - expected).max() <= 1
            checked += 1
    assert checked >= 5


def test_dlib_box_is_in_hog_geometry(yunet, detector):
    """The mapped YuNet box lands on dlib's HOG box (square, same place) much better than YuNet's own box."""
    for name in ("two_people.jpg", "2008_001322.jpg"):
        image = load_image(MISC / name)
        hog = [f.box for f in detector.detect(image)]
        for face in yunet.detect(image):
            box = align.dlib_box(face.box)
            assert box[2] - box[0] == box[3] - box[1]
            assert max(iou(box, h) for h in hog) > max(0.6, max(iou(face.box, h) for h in hog))


@pytest.fixture(scope="module")
def dlib_descriptor():
    """dlib's own face ResNet (the model the Keras twin is converted from): a 128-d vector per 150x150 chip."""
    from facenet.config import RESNET_DAT, model_file

    model = dlib.face_recognition_model_v1(str(model_file(RESNET_DAT)))
    return lambda chip: np.asarray(model.compute_face_descriptor(chip))


def test_dlib_chip_route(yunet, dlib_descriptor):
    """YuNet face -> dlib landmarks -> dlib chip; same person close, different people apart (dlib's 0.6)."""
    vectors = {}
    for path in sorted((PEOPLE / "Martha_Burk").glob("*.jpg"))[:2] + sorted((PEOPLE / "Juanes").glob("*.jpg"))[:1]:
        image = load_image(path)
        detection = yunet.detect(image)[0]
        shape = align.dlib_shape(image, detection)
        assert isinstance(shape, dlib.full_object_detection) and shape.num_parts == 5
        chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
        assert np.array_equal(face_chip(image, Face(box=detection.box, score=detection.score, shape=shape)), chip)
        vectors[path.stem] = dlib_descriptor(chip)
    burk_1, burk_2, juanes = vectors.values()
    assert np.linalg.norm(burk_1 - burk_2) < 0.5  # measured 0.38
    assert np.linalg.norm(burk_1 - juanes) > 0.6  # measured 0.85


def test_points_from_dlib_near_yunet_points(yunet):
    """Points estimated from dlib's landmarks fall near YuNet's own (eyes within ~0.1 eye distance)."""
    for path in people_photos(6):
        image = load_image(path)
        detection = yunet.detect(image)[0]
        shape = align.dlib_shape(image, detection)
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
        estimated = align.points_from_dlib(landmarks)
        assert estimated.shape == (5, 2) and estimated.dtype == np.float32
        eyes = np.linalg.norm(detection.points[0] - detection.points[1])
        errors = np.linalg.norm(estimated - detection.points, axis=1) / eyes
        assert errors[:2].max() < 0.2 and errors.max() < 0.4
        assert align.sface_chip(image, estimated).shape == (112, 112, 3)


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = scale * source @ rotation.T + shift
    matrix = align.similarity(source, target)
    assert np.allclose(align.transform(matrix, source), target)
    assert np.allclose(align.transform(align.invert(matrix), target), source)
    with pytest.raises(ValueError):
        align.similarity(np.ones((5, 2)), target)


def test_an_hd_camera_frame_is_read_at_the_video_side_and_keeps_its_faces(yunet):
    """A 1280x720 video frame is detected on an 800 px copy (the live path's speed) and every face of 40-120 px is
    still found, its box mapped back to the frame's pixels; the whole frame finds the same faces."""
    from facenet.detect.registry import make_detector
    from facenet.pipeline import YUNET_VIDEO_SIDE, FacePipeline

    seen, detector = [], make_detector("yunet")

    class Watched:
        kind = "yunet"

        def detect(self, image, max_side=None, sensitive=False):
            seen.append(max_side)
            return detector.detect(image, max_side=max_side, sensitive=sensitive)

    class NoModel:
        kinds = ()

    rng = np.random.default_rng(3)
    frame = cv2.resize(rng.integers(40, 200, (12, 16, 3)).astype(np.uint8), (1280, 720), interpolation=cv2.INTER_CUBIC)
    placed = []
    for k, (path, side) in enumerate(zip(people_photos(5), (90, 130, 180, 220, 260), strict=True)):
        x, y = 30 + 245 * k, 200 + 40 * k
        frame[y: y + side, x: x + side] = cv2.resize(load_image(path), (side, side), interpolation=cv2.INTER_AREA)
        placed.append((x, y, x + side, y + side))
    faces = FacePipeline(Watched(), NoModel()).detect(frame, video=True)
    assert seen == [YUNET_VIDEO_SIDE]
    whole = detector.detect(frame)
    assert len(faces) == len(whole) == 5
    for face in faces:
        assert max(iou(face.box, other.box) for other in whole) > 0.7, "the same box as the whole frame's"
        assert any(p[0] <= (face.box[0] + face.box[2]) / 2 < p[2] for p in placed)
    assert min(f.box[2] - f.box[0] for f in faces) < 45, "the smallest face (~40 px) is among them"
