"""Aligned chips -> unit vectors in one compiled, batched forward pass, with optional flip/padding averaging."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facenet.config import CHIP_KINDS
from facenet.models.build import build_embedder
from facenet.models.cache import fingerprint
from facenet.models.names import model_name
from facenet.models.trained import distance_scale, legacy_trained_weights
from facenet.models.vectors import normalize

INFERENCE_RUNTIME = "tflite"
"""How recognition runs a model: "tflite" (a converted copy, XNNPACK: ~1.5x faster on 2 cores, within 3e-5 of
Keras) or "tf" (the Keras model as a tf.function). Training always uses the Keras model."""

log = logging.getLogger(__name__)

BATCH = 64
"""Faces per forward pass: bounds memory on a crowded frame or a big enrollment."""

Chips = dict[str, np.ndarray]
"""Aligned chips of the same faces per chip kind ("dlib": (N, 150, 150, 3), "sface": (N, 112, 112, 3)), uint8 RGB."""


class Embedder:
    """Compiled forward pass of an embedding model (a `tf.function` with one fixed signature).

    Calling the function directly avoids `model.predict`'s per-call overhead (about 10x for one face).
    `distance_scale` multiplies every calibrated distance threshold: 1.0 for the pretrained model, the value
    saved by training for fine-tuned weights (see `load_embedder`). `name` is the model (one of MODELS): it picks
    the chip kinds and the calibrated thresholds.
    """

    def __init__(
        self, model: keras.Model, name: str | None = None, distance_scale: float = 1.0, tflite_dir: Path | None = None
    ) -> None:
        self.model = model
        self.name = model_name(name or model.name.removesuffix("_embedder"))
        self.kinds = CHIP_KINDS[self.name]
        self.dim = int(model.output.shape[-1])
        self.fingerprint = fingerprint(model)
        self.distance_scale = distance_scale
        specs = [tf.TensorSpec([None, *tensor.shape[1:]], tf.uint8) for tensor in model.inputs]

        @tf.function(input_signature=specs, reduce_retracing=True)
        def forward(*chips: tf.Tensor) -> tf.Tensor:
            inputs = [tf.cast(c, tf.float32) for c in chips]
            return tf.cast(model(inputs if len(inputs) > 1 else inputs[0], training=False), tf.float32)

        self._forward = forward
        self._tflite_path = None if tflite_dir is None else Path(tflite_dir) / f"{self.name}_{self.fingerprint}.tflite"
        self._runner = None

    def _run(self, *chips: np.ndarray) -> np.ndarray:
        """One batch through TFLite when a cache folder was given (converted on first use), else the tf.function."""
        if self._tflite_path is None:
            return self._forward(*chips).numpy()
        if self._runner is None:
            from facenet.models.tflite import cached_runner  # the TFLite runtime: only when that runtime runs

            self._runner = cached_runner(self.model, self._tflite_path, [tensor.name for tensor in self.model.inputs])
        return self._runner(*chips)

    @property
    def model_id(self) -> str:
        """`<model>:<fingerprint>`: what galleries and caches record to know which embedding made them."""
        return f"{self.name}:{self.fingerprint}"

    def embed(self, chips: Chips) -> np.ndarray:
        """Chips of N faces (one array per chip kind) -> (N, dim) float32 unit vectors."""
        arrays = [np.asarray(chips[kind], dtype=np.uint8) for kind in self.kinds]
        if len(arrays[0]) == 0:
            return np.zeros((0, self.dim), np.float32)
        parts = [self._run(*(a[i : i + BATCH] for a in arrays)) for i in range(0, len(arrays[0]), BATCH)]
        return np.concatenate(parts)

    def embed_tta(self, chip_sets: list[Chips]) -> np.ndarray:
        """Average the embeddings of several chip sets of the same faces and their mirrors; re-normalise."""
        n = len(chip_sets[0][self.kinds[0]])
        stacked = {kind: np.concatenate([np.concatenate([c[kind], c[kind][:, :, ::-1]]) for c in chip_sets])
                   for kind in self.kinds}
        mean = self.embed(stacked).reshape(-1, n, self.dim).mean(axis=0)
        return normalize(mean)


def load_embedder(
    model: str, weights_dir: str | Path, trained_dir: str | Path | None = None,
    imagenet_weights: str | Path | None = None, runtime: str = INFERENCE_RUNTIME,
) -> Embedder:
    """The embedder recognition uses: the gallery's trained weights in `trained_dir` when it has some (None: the
    pretrained model), with their distance scale, run by `runtime` ("tflite": a converted copy cached in
    weights_dir; "tf": the Keras model). Raises model.WeightsError for an unusable trained-weights file (never a
    silent fall-back)."""
    legacy = legacy_trained_weights(weights_dir, model)
    if legacy is not None:
        log.warning("%s is no longer used: trained weights belong to a gallery now (beside its database); train "
                    "again with -t True to adapt that gallery", legacy)
    keras_model = build_embedder(model, weights_dir, trained_dir, imagenet_weights)
    tflite_dir = Path(weights_dir) if runtime == "tflite" else None
    return Embedder(keras_model, model, distance_scale(trained_dir, model), tflite_dir)
