"""Building the embedding model of each of MODELS, caching and loading its weights, and its fingerprint.

An embedder maps aligned RGB chips (values 0..255; one input per chip kind) to unit vectors. `dlib` is dlib's
pretrained face ResNet and `sface` OpenCV Zoo's SFace, each converted once into an exact Keras twin and cached in
the weights folder; `fused` joins both; `resnet50` is Keras' ResNet50 trunk (random init or a local ImageNet
weights file) for training on large data on a GPU. A gallery's fine-tuned weights (an adapter over the frozen
model, or the whole model) live beside its database and apply only where that gallery is named.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from facenet.adapter import adapter_of, with_adapter
from facenet.config import (
    BACKBONE_ALIASES,
    CHIP_KINDS,
    CHIP_SIDES,
    CHIP_SIZE,
    DEFAULT_MODEL,
    DISTANCE_SCALE_RANGE,
    EMBEDDING_DIM,
    FUSION_SFACE_WEIGHT,
    MODELS,
    PRETRAINED_FILE,
    RESNET_DAT,
    model_file,
)
from facenet.dlib_resnet import convert
from facenet.files import atomic_write, file_sha256, read_checked, remove_stale_temps, write_checked

log = logging.getLogger(__name__)

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="facenet")
class CaffePreprocess(layers.Layer):
    """keras.applications' "caffe" preprocessing inside the graph: RGB -> BGR, minus the ImageNet means."""

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=inputs.dtype)


def cached_conversion(weights_dir: str | Path, name: str, source: Path, convert_source) -> keras.Model:
    """`convert_source(source)` cached as `weights_dir/name` (+ `.json`: the source's sha256 and the cache's own):
    loaded from the cache when it was made from this very file and its bytes are those written, else converted
    again (a stale, truncated or altered cache with a one-line warning)."""
    weights_dir = Path(weights_dir)
    cache = weights_dir / name
    source_hash = file_sha256(source)
    if cache.exists():
        try:
            if read_checked(cache).get("source_sha256") != source_hash:
                raise ValueError(f"made from a different {source.name}")
            return keras.models.load_model(cache, compile=False)
        except Exception as error:  # noqa: BLE001 - any unreadable cache is rebuilt
            log.warning("%s: stale or corrupt converted model (%s); converting again", cache, error)
    log.info("converting %s to Keras (once) into %s", source.name, cache)
    model = convert_source(source)
    try:
        write_checked(cache, lambda tmp: model.save(tmp), {"source_sha256": source_hash})
    except OSError as error:
        log.warning("could not cache the converted model in %s (%s); will convert again next time", weights_dir, error)
    return model


WEIGHTS_FILES = ("*.keras", "*.keras.json", "*_trained.weights.npz", "*.tflite", "*.tflite.json")
"""What this package writes in a weights folder (temp files of these left by a killed run are removed)."""


def remove_weights_temps(weights_dir: str | Path) -> None:
    """Remove temp files a killed conversion or training left in the weights folder (our own names only)."""
    for path in remove_stale_temps(Path(weights_dir), WEIGHTS_FILES):
        log.info("%s: removed a temp file left by an interrupted run", path)


def pretrained_dlib_resnet(weights_dir: str | Path) -> keras.Model:
    """dlib's face ResNet as Keras (raw descriptor), converted once from the installed .dat and cached."""
    return cached_conversion(weights_dir, PRETRAINED_FILE, model_file(RESNET_DAT), convert)


def resnet50_trunk(imagenet_weights: str | Path | None = None) -> keras.Model:
    """Keras ResNet50 (no top) + a 128-d projection; ImageNet weights only from a local file."""
    inputs = keras.Input((CHIP_SIZE, CHIP_SIZE, 3), name="dlib_chip")
    trunk = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(CHIP_SIZE, CHIP_SIZE, 3), pooling="avg"
    )
    if imagenet_weights:
        trunk.load_weights(str(imagenet_weights), skip_mismatch=True)
    x = trunk(CaffePreprocess(name="caffe_preprocess")(inputs))
    outputs = layers.Dense(EMBEDDING_DIM, name="descriptor")(x)
    return keras.Model(inputs, outputs, name="resnet50")


def model_name(name: str) -> str:
    """The canonical model name (old `--backbone` names accepted); ValueError for an unknown one."""
    name = BACKBONE_ALIASES.get(name, name)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return name


TRAINED_SUFFIX = "_trained.weights.npz"


def trained_weights_path(gallery_dir: str | Path, model: str) -> Path:
    """Where training saves (and recognition loads) a gallery's fine-tuned weights of a model: beside its database
    (`database/<model>_trained.weights.npz`), so that training on one gallery never changes another. ONE .npz file
    holding the weight arrays and a JSON record (model, parts, fingerprint, distance scale), written atomically."""
    return Path(gallery_dir) / f"{model_name(model)}{TRAINED_SUFFIX}"


def _chip_input(kind: str) -> keras.KerasTensor:
    side = CHIP_SIDES[kind]
    return keras.Input((side, side, 3), name=f"{kind}_chip")


def _raw_branch(kind_model: str, weights_dir: str | Path, imagenet_weights: str | Path | None) -> keras.Model:
    if kind_model == "dlib":
        return pretrained_dlib_resnet(weights_dir)
    if kind_model == "sface":
        from facenet.sface import pretrained_sface

        return pretrained_sface(weights_dir)
    return resnet50_trunk(imagenet_weights)


def _unit(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    return layers.UnitNormalization(name=name, dtype="float32")(x)


def pretrained_embedder(
    model: str = DEFAULT_MODEL, weights_dir: str | Path = "weights", imagenet_weights: str | Path | None = None
) -> keras.Model:
    """Aligned chips (one input per CHIP_KINDS[model], RGB 0..255) -> unit vectors, with pretrained weights.

    `fused` concatenates the dlib and SFace unit vectors (SFace scaled by FUSION_SFACE_WEIGHT) and re-normalises.
    """
    model = model_name(model)
    if model == "fused":
        dlib_in, sface_in = _chip_input("dlib"), _chip_input("sface")
        dlib_unit = _unit(_raw_branch("dlib", weights_dir, None)(dlib_in), "dlib_unit")
        sface_unit = _unit(_raw_branch("sface", weights_dir, None)(sface_in), "sface_unit")
        weighted = layers.Rescaling(FUSION_SFACE_WEIGHT, name="sface_weight", dtype="float32")(sface_unit)
        joined = layers.Concatenate(name="fusion", dtype="float32")([dlib_unit, weighted])
        return keras.Model([dlib_in, sface_in], _unit(joined, "unit_sphere"), name="fused_embedder")
    inputs = _chip_input(CHIP_KINDS[model][0])
    raw = _raw_branch(model, weights_dir, imagenet_weights)
    return keras.Model(inputs, _unit(raw(inputs), "unit_sphere"), name=f"{model}_embedder")


def build_embedder(
    model: str = DEFAULT_MODEL,
    weights_dir: str | Path = "weights",
    trained_dir: str | Path | None = None,
    imagenet_weights: str | Path | None = None,
) -> keras.Model:
    """The embedding model of `model` (see `pretrained_embedder`), with the fine-tuned weights of the gallery in
    `trained_dir` on top when it has some (None: the pretrained model). A corrupt or mismatched trained-weights file
    raises WeightsError: recognition must not fall back silently to other weights than the user trained."""
    remove_weights_temps(weights_dir)
    embedder = pretrained_embedder(model, weights_dir, imagenet_weights)
    path = None if trained_dir is None else trained_weights_path(trained_dir, model)
    if path is None or not path.exists():
        return embedder
    trained = read_trained(path)
    if trained.model_weights is not None:
        if [a.shape for a in trained.model_weights] != [w.shape for w in embedder.get_weights()]:
            raise WeightsError(f"{path}: weights of another architecture; delete the file or pass --pretrained")
        embedder.set_weights(trained.model_weights)
    if trained.adapter_weights is not None:
        try:
            embedder = with_adapter(embedder, trained.record["adapter_hidden"], trained.adapter_weights)
        except (ValueError, KeyError) as error:
            raise WeightsError(f"{path}: unusable adapter ({error}); delete the file or pass --pretrained") from None
    log.info("loaded trained weights %s", path)
    return embedder


class WeightsError(ValueError):
    """Trained weights that cannot be loaded; the message names the file and the way out."""


def save_trained_weights(model: keras.Model, gallery_dir: str | Path, name: str, distance_scale: float = 1.0,
                         backbone: bool = True, start: str = "pretrained") -> Path:
    """Write a gallery's fine-tuned weights and their distance scale atomically, as one file (never one without the
    other), with a checksum of both so that a changed file is refused rather than trusted.

    `backbone`: the file holds the embedding model's own weights (it was fine-tuned); else only its adapter's (the
    backbone is the pretrained one). `distance_scale` says how far the new embedding spreads faces compared with the
    one the thresholds were calibrated for (ratio of median different-person distances); recognition multiplies its
    thresholds by it; a scale outside DISTANCE_SCALE_RANGE is refused (WeightsError, nothing written): such weights
    would misname people. `start` records what training started from ("pretrained" or "trained").
    """
    path = trained_weights_path(gallery_dir, name)
    try:
        _check_scale(float(distance_scale))
    except ValueError as error:
        raise WeightsError(f"{path}: not saved, {error}: the training diverged; the previous weights are "
                           "unchanged") from None
    adapter = adapter_of(model)
    base_weights = [w for layer in model.layers if layer is not adapter for w in layer.get_weights()]
    record = {"format": TRAINED_FORMAT, "model": model_name(name), "fingerprint": fingerprint(model),
              "distance_scale": float(distance_scale), "backbone": bool(backbone), "start": start,
              "adapter_hidden": adapter.hidden if adapter is not None else None}
    named = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(base_weights)} if backbone else {}
    if adapter is not None:
        named.update({f"a{i:04d}": np.asarray(w) for i, w in enumerate(adapter.get_weights())})
    record["checksum"] = trained_checksum(record, [named[key] for key in sorted(named)])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, record=np.frombuffer(json.dumps(record).encode(), np.uint8), **named)

    atomic_write(path, write)
    return path


TRAINED_FORMAT = "facenet-trained-weights-2"
"""Format 2 holds the model's weights (w*) and/or an adapter's (a*) and a checksum of everything; release 0.2's
format 1 (no checksum, global) is refused like any other unusable file: train again."""


@dataclass(frozen=True)
class TrainedWeights:
    """A trained-weights file: the model's own weights (None: pretrained backbone), the adapter's (None: no
    adapter), and the JSON record."""

    model_weights: list[np.ndarray] | None
    adapter_weights: list[np.ndarray] | None
    record: dict

    @property
    def distance_scale(self) -> float:
        return float(self.record["distance_scale"])


def trained_checksum(record: dict, arrays: list[np.ndarray]) -> str:
    """sha256 of a trained-weights record (without its checksum) and of every array's dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in record.items() if k != "checksum"}, sort_keys=True).encode())
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _check_scale(scale: float) -> None:
    low, high = DISTANCE_SCALE_RANGE
    if not low <= scale <= high:
        raise ValueError(f"invalid distance scale {scale} (plausible: {low}..{high})")


def read_trained(path: str | Path) -> TrainedWeights:
    """The weights and record of a trained-weights file; WeightsError naming the file when it is unusable:
    unreadable, another format, an implausible distance scale, or bytes other than those training wrote."""
    try:
        with np.load(path, allow_pickle=False) as data:
            record = json.loads(data["record"].tobytes().decode())
            keys = sorted(k for k in data.files if k[0] in "wa" and k[1:].isdigit())
            arrays = {key: data[key] for key in keys}
        if record.get("format") != TRAINED_FORMAT:
            raise ValueError(f"format {record.get('format')!r}")
        _check_scale(float(record["distance_scale"]))
        if record.get("checksum") != trained_checksum(record, [arrays[key] for key in keys]):
            raise ValueError("checksum mismatch: changed since training wrote it")
    except Exception as error:  # noqa: BLE001 - zip, JSON, key errors: one clear line
        raise WeightsError(f"{path}: unusable trained weights ({error}); delete the file or pass --pretrained "
                           "to use the pretrained model") from None
    model_weights = [arrays[key] for key in keys if key[0] == "w"]
    adapter_weights = [arrays[key] for key in keys if key[0] == "a"]
    return TrainedWeights(model_weights if record.get("backbone", True) else None, adapter_weights or None, record)


def distance_scale(trained_dir: str | Path | None, model: str) -> float:
    """The distance scale recorded with a gallery's trained weights (1.0 for the pretrained model)."""
    path = None if trained_dir is None else trained_weights_path(trained_dir, model)
    if path is None or not path.exists():
        return 1.0
    return read_trained(path).distance_scale


def legacy_trained_weights(weights_dir: str | Path, model: str) -> Path | None:
    """A trained-weights file left in the weights folder by release 0.2 (where they were global), else None."""
    path = Path(weights_dir) / f"{model_name(model)}{TRAINED_SUFFIX}"
    return path if path.exists() else None


def fingerprint(model: keras.Model) -> str:
    """A short hash of every weight (and of the fusion weight): databases made by other weights are rebuilt."""
    digest = hashlib.sha256(model.name.encode())
    if any(layer.name == "sface_weight" for layer in model.layers):
        digest.update(repr(model.get_layer("sface_weight").scale).encode())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]
