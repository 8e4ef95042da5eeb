"""A gallery's fine-tuned weights: one checksummed .npz beside its database (the model's own weights and/or an
adapter's, and the distance scale), written atomically and refused when changed or implausible."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from facenet.files import atomic_write
from facenet.models.adapter import adapter_of
from facenet.models.cache import fingerprint
from facenet.models.names import model_name

DISTANCE_SCALE_RANGE = (0.2, 5.0)
"""Plausible distance scales of fine-tuned weights (how much training spread the faces; 1.0 = as calibrated).
Fine-tuning moves it by a few percent; a file claiming more is refused, since every threshold is multiplied by it."""

TRAINED_SUFFIX = "_trained.weights.npz"


def trained_weights_path(gallery_dir: str | Path, model: str) -> Path:
    """Where training saves (and recognition loads) a gallery's fine-tuned weights of a model: beside its database
    (`database/<model>_trained.weights.npz`), so that training on one gallery never changes another. ONE .npz file
    holding the weight arrays and a JSON record (model, parts, fingerprint, distance scale), written atomically."""
    return Path(gallery_dir) / f"{model_name(model)}{TRAINED_SUFFIX}"


class WeightsError(ValueError):
    """Trained weights that cannot be loaded; the message names the file and the way out."""


def save_trained_weights(model: keras.Model, gallery_dir: str | Path, name: str, distance_scale: float = 1.0,
                         backbone: bool = True, start: str = "pretrained", cut: str | None = None) -> Path:
    """Write a gallery's fine-tuned weights and their distance scale atomically, as one file (never one without the
    other), with a checksum of both so that a changed file is refused rather than trusted.

    `backbone`: the file holds the embedding model's own weights (it was fine-tuned); else only its adapter's (the
    backbone is the pretrained one). `distance_scale` says how far the new embedding spreads faces compared with the
    one the thresholds were calibrated for (held-out different-person distances, `validation.SPREAD_EXPONENT`);
    recognition multiplies its thresholds by it; a scale outside DISTANCE_SCALE_RANGE is refused (WeightsError,
    nothing written): such weights would misname people. `start` records what training started from ("pretrained"
    or "trained"); `cut`, the `--tune top|top2` shape of the model's weights (`split.tuned_architecture`).
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
              "adapter_hidden": adapter.hidden if adapter is not None else None, "cut": cut if backbone else None}
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
