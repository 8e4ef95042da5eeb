"""Building the embedding model for a backbone, caching and loading its weights, and its fingerprint.

The embedder maps an RGB chip (CHIP_SIZE x CHIP_SIZE, values 0..255) to a 128-d unit vector.
`dlib_resnet` is dlib's pretrained face ResNet, converted once from the installed model package and
cached in the weights folder; `resnet50` is Keras' ResNet50 trunk (random init or a local ImageNet
weights file) for training on large data on a GPU. Fine-tuned weights live beside them and win when present.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from facenet.config import (
    BACKBONES,
    CHIP_SIZE,
    EMBEDDING_DIM,
    PRETRAINED_FILE,
    RESNET_DAT,
    model_file,
)
from facenet.dlib_resnet import convert
from facenet.files import atomic_write, file_sha256

log = logging.getLogger(__name__)

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="facenet")
class CaffePreprocess(layers.Layer):
    """keras.applications' "caffe" preprocessing inside the graph: RGB -> BGR, minus the ImageNet means."""

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=inputs.dtype)


def pretrained_dlib_resnet(weights_dir: str | Path) -> keras.Model:
    """dlib's face ResNet as Keras (raw descriptor): from the cache in `weights_dir`, else converted and cached.

    A cache that is corrupt or was made from a different .dat file is rebuilt with a warning.
    """
    weights_dir = Path(weights_dir)
    cache, meta = weights_dir / PRETRAINED_FILE, weights_dir / (PRETRAINED_FILE + ".json")
    source = model_file(RESNET_DAT)
    source_hash = file_sha256(source)
    if cache.exists():
        try:
            if json.loads(meta.read_text())["source_sha256"] != source_hash:
                raise ValueError("made from a different dlib model file")
            return keras.models.load_model(cache, compile=False)
        except Exception as error:  # noqa: BLE001 - any unreadable cache is rebuilt
            log.warning("%s: stale or corrupt converted model (%s); converting again", cache, error)
    log.info("converting %s to Keras (once) into %s", source.name, cache)
    model = convert(source)
    try:
        atomic_write(cache, lambda tmp: model.save(tmp))
        atomic_write(meta, lambda tmp: tmp.write_text(json.dumps({"source_sha256": source_hash})))
    except OSError as error:
        log.warning("could not cache the converted model in %s (%s); will convert again next time", weights_dir, error)
    return model


def resnet50_trunk(imagenet_weights: str | Path | None = None) -> keras.Model:
    """Keras ResNet50 (no top) + a 128-d projection; ImageNet weights only from a local file."""
    inputs = keras.Input((CHIP_SIZE, CHIP_SIZE, 3), name="chip")
    trunk = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(CHIP_SIZE, CHIP_SIZE, 3), pooling="avg"
    )
    if imagenet_weights:
        trunk.load_weights(str(imagenet_weights), skip_mismatch=True)
    x = trunk(CaffePreprocess(name="caffe_preprocess")(inputs))
    outputs = layers.Dense(EMBEDDING_DIM, name="descriptor")(x)
    return keras.Model(inputs, outputs, name="resnet50")


def trained_weights_path(weights_dir: str | Path, backbone: str) -> Path:
    """Where training saves (and evaluation loads) the fine-tuned weights of a backbone."""
    return Path(weights_dir) / f"{backbone}_trained.weights.h5"


def build_embedder(
    backbone: str = "dlib_resnet",
    weights_dir: str | Path = "weights",
    trained: bool = True,
    imagenet_weights: str | Path | None = None,
) -> keras.Model:
    """chip (N, 150, 150, 3) in 0..255 -> (N, 128) unit vectors, for one of BACKBONES.

    With `trained`, fine-tuned weights saved by training are loaded on top when they exist;
    a corrupt or mismatched file is reported and ignored.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    raw = pretrained_dlib_resnet(weights_dir) if backbone == "dlib_resnet" else resnet50_trunk(imagenet_weights)
    outputs = layers.UnitNormalization(name="unit_sphere", dtype="float32")(raw.output)
    model = keras.Model(raw.input, outputs, name=f"{backbone}_embedder")
    path = trained_weights_path(weights_dir, backbone)
    if trained and path.exists():
        try:
            model.load_weights(path)
            log.info("loaded trained weights %s", path)
        except Exception as error:  # noqa: BLE001 - a bad file must not stop recognition
            log.warning("%s: unusable trained weights (%s); using the pretrained model", path, error)
            return build_embedder(backbone, weights_dir, trained=False, imagenet_weights=imagenet_weights)
    return model


def save_trained_weights(
    model: keras.Model, weights_dir: str | Path, backbone: str, distance_scale: float = 1.0
) -> Path:
    """Write fine-tuned weights atomically (temp file + rename), with their distance scale beside them.

    `distance_scale` says how far the new embedding spreads faces compared with the one the thresholds were
    calibrated for (ratio of median different-person distances); recognition multiplies its thresholds by it.
    """
    path = trained_weights_path(weights_dir, backbone)
    atomic_write(path, lambda tmp: model.save_weights(tmp))
    record = {"fingerprint": fingerprint(model), "distance_scale": float(distance_scale)}
    atomic_write(_scale_path(weights_dir, backbone), lambda tmp: tmp.write_text(json.dumps(record) + "\n"))
    return path


def _scale_path(weights_dir: str | Path, backbone: str) -> Path:
    return Path(weights_dir) / f"{backbone}_trained.json"


def distance_scale(weights_dir: str | Path, backbone: str, model_fingerprint: str) -> float:
    """The distance scale saved with trained weights whose fingerprint is `model_fingerprint`; else 1.0.

    A record of other weights (or an unreadable one) is ignored with a warning: the thresholds then stay
    those calibrated for the pretrained model.
    """
    path = _scale_path(weights_dir, backbone)
    if not path.exists():
        return 1.0
    try:
        record = json.loads(path.read_text())
        scale = float(record["distance_scale"])
        if record["fingerprint"] != model_fingerprint:
            if trained_weights_path(weights_dir, backbone).exists():
                log.warning("%s: belongs to other weights; thresholds not rescaled", path)
            return 1.0
        if not 0.0 < scale < float("inf"):
            raise ValueError(f"invalid scale {scale}")
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("%s: unreadable distance scale (%s); thresholds not rescaled", path, error)
        return 1.0
    return scale


def fingerprint(model: keras.Model) -> str:
    """A short hash of every weight: databases made by other weights are detected and rebuilt."""
    digest = hashlib.sha256(model.name.encode())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]
