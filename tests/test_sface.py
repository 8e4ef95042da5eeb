"""The Keras twin of OpenCV Zoo's SFace: equal to OpenCV's FaceRecognizerSF.feature on real faces; cached; checked."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import facenet.models.sface as sface
import facenet.models.zoo as zoo
from facenet.config import SFACE_CHIP_SIZE, SFACE_PRETRAINED_FILE
from facenet.models.sface import SFaceFormatError, dequantize_linear, pretrained_sface
from facenet.models.tflite import TFLiteRunner, to_tflite
from facenet.models.zoo import SFACE_ONNX, YUNET_ONNX, ZooError, zoo_file

PEOPLE = Path(__file__).parent / "data" / "people"


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="session")
def sface_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sface_weights")


@pytest.fixture(scope="session")
def sface_model(sface_dir) -> keras.Model:
    """Converted once per session (and cached in `sface_dir`)."""
    return pretrained_sface(sface_dir)


@pytest.fixture(scope="session")
def opencv_faces() -> tuple[np.ndarray, np.ndarray]:
    """BGR 112x112 chips of real faces aligned by OpenCV's own YuNet + alignCrop, and OpenCV's SFace features."""
    detector = cv2.FaceDetectorYN.create(str(zoo_file(YUNET_ONNX)), "", (320, 320))
    recognizer = cv2.FaceRecognizerSF.create(str(zoo_file(SFACE_ONNX)), "")
    chips = []
    for path in sorted(PEOPLE.glob("*/*.jpg"))[::6]:
        image = cv2.imread(str(path))
        detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = detector.detect(image)
        if faces is not None:
            chips.append(recognizer.alignCrop(image, faces[0]))
    assert len(chips) >= 5
    chips = np.stack(chips)
    assert chips.shape[1:] == (SFACE_CHIP_SIZE, SFACE_CHIP_SIZE, 3)
    return chips, np.concatenate([recognizer.feature(chip) for chip in chips])


def _rgb(chips_bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chips_bgr[..., ::-1]).astype(np.float32)


def test_twin_equals_opencv_feature(sface_model, opencv_faces):
    chips, expected = opencv_faces
    features = sface_model.predict(_rgb(chips), verbose=0)
    assert features.shape == expected.shape == (len(chips), 128)
    assert np.all(_cosine(features, expected) >= 0.99999)
    assert np.abs(features - expected).max() < 1e-3 * np.abs(expected).max()  # raw, not normalised, like OpenCV
    # the model wants RGB: OpenCV's blobFromImage(swapRB=True) turns its BGR chip into RGB before the network
    assert np.all(_cosine(sface_model.predict(chips.astype(np.float32), verbose=0), expected) < 0.99)


def test_layers_are_plain_keras_with_stable_names(sface_model):
    names = [layer.name for layer in sface_model.layers]
    assert names[:4] == ["chip", "preprocess", "conv_1_conv2d", "conv_1_relu"]
    assert names[-1] == "pre_fc1" and sface_model.get_layer("preprocess").dtype == "float32"
    assert sface_model.get_layer("conv_3_dw_conv2d").strides == (2, 2)  # ONNX's symmetric pad: explicit padding
    assert 9_500_000 < sface_model.count_params() < 9_700_000  # ONNX's 9.67 M, batch norms folded into biases


def test_cache_round_trip(sface_dir, sface_model, opencv_faces, monkeypatch):
    monkeypatch.setattr(sface, "convert_sface", lambda path: pytest.fail("the cache was not used"))
    loaded = pretrained_sface(sface_dir)
    chips = _rgb(opencv_faces[0][:3])
    np.testing.assert_allclose(loaded.predict(chips, verbose=0), sface_model.predict(chips, verbose=0), atol=1e-6)


@pytest.mark.parametrize("damage", ["corrupt", "stale"])
def test_bad_cache_is_rebuilt(damage, sface_dir, sface_model, opencv_faces, tmp_path, caplog):
    for name in (SFACE_PRETRAINED_FILE, SFACE_PRETRAINED_FILE + ".json"):
        shutil.copy(sface_dir / name, tmp_path / name)
    if damage == "corrupt":
        (tmp_path / SFACE_PRETRAINED_FILE).write_bytes(b"not a keras archive")
    else:
        (tmp_path / (SFACE_PRETRAINED_FILE + ".json")).write_text('{"source_sha256": "another file"}')
    with caplog.at_level(logging.WARNING, logger="facenet.models.cache"):
        rebuilt = pretrained_sface(tmp_path)
    assert "converting again" in caplog.text
    chips = _rgb(opencv_faces[0][:2])
    np.testing.assert_allclose(rebuilt.predict(chips, verbose=0), sface_model.predict(chips, verbose=0), atol=1e-6)
    keras.models.load_model(tmp_path / SFACE_PRETRAINED_FILE, compile=False)  # the rewritten cache is sound


def test_wrong_sha256_is_refused(monkeypatch, tmp_path):
    monkeypatch.setitem(zoo.SHA256, SFACE_ONNX, "0" * 64)
    zoo_file.cache_clear()
    try:
        with pytest.raises(ZooError, match="sha256"):
            zoo_file(SFACE_ONNX)
        with pytest.raises(ZooError):
            pretrained_sface(tmp_path)
        assert not (tmp_path / SFACE_PRETRAINED_FILE).exists()
    finally:
        zoo_file.cache_clear()


def test_unexpected_node_names_itself(tmp_path):
    model = onnx.load(str(zoo_file(SFACE_ONNX)))
    node = next(n for n in model.graph.node if n.name == "conv_5_relu")
    node.op_type = "Elu"
    onnx.save(model, str(tmp_path / "altered.onnx"))
    with pytest.raises(SFaceFormatError, match="conv_5_relu"):
        sface.convert_sface(tmp_path / "altered.onnx")


@pytest.mark.parametrize(
    ("shape", "scale_shape", "axis", "block_size"), [((6, 70), (6, 3), 1, 32), ((128,), (2,), 0, 64)]
)
def test_block_dequantization_matches_onnx_reference(shape, scale_shape, axis, block_size):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    scale = rng.uniform(1e-3, 1e-2, scale_shape).astype(np.float32)
    zero = rng.integers(-128, 128, scale_shape, dtype=np.int8)
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=axis, block_size=block_size)
    inputs = [
        helper.make_tensor_value_info(name, kind, array.shape)
        for name, kind, array in (
            ("x", TensorProto.INT8, x),
            ("s", TensorProto.FLOAT, scale),
            ("z", TensorProto.INT8, zero),
        )
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_model(
        helper.make_graph([node], "dq", inputs, [output]), opset_imports=[helper.make_opsetid("", 21)]
    )
    expected = ReferenceEvaluator(graph).run(None, {"x": x, "s": scale, "z": zero})[0]
    np.testing.assert_array_equal(dequantize_linear(x, scale, zero, axis, block_size), expected)
    with pytest.raises(SFaceFormatError):
        dequantize_linear(x, scale[..., :1], zero[..., :1], axis, block_size)


def test_tflite_runner_matches_keras(sface_model, opencv_faces):
    chips = opencv_faces[0]
    runner = TFLiteRunner(to_tflite(sface_model), num_threads=2, max_batch=4)
    expected = sface_model.predict(_rgb(chips), verbose=0)
    rgb_uint8 = np.ascontiguousarray(chips[..., ::-1])
    np.testing.assert_allclose(runner(rgb_uint8), expected, atol=1e-4)  # uint8, batches of 4 + a remainder
    np.testing.assert_allclose(runner(_rgb(chips[:1])), expected[:1], atol=1e-4)
    assert runner(np.zeros((0, SFACE_CHIP_SIZE, SFACE_CHIP_SIZE, 3), np.float32)).shape == (0, 128)
