"""The weights folder's caches: a converted model kept beside the file it was made from, its temp files, and the
fingerprint of a model's weights (what caches and galleries are keyed by)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import keras
import numpy as np
from keras import ops

from facenet.files import file_sha256, read_checked, remove_stale_temps, write_checked

log = logging.getLogger(__name__)


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


def fingerprint(model: keras.Model) -> str:
    """A short hash of every weight (and of the fusion weight): databases made by other weights are rebuilt."""
    digest = hashlib.sha256(model.name.encode())
    if any(layer.name == "sface_weight" for layer in model.layers):
        digest.update(repr(model.get_layer("sface_weight").scale).encode())
    for weight in model.weights:
        digest.update(np.ascontiguousarray(ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]
