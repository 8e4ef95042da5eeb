"""Chips -> unit vectors in one compiled, batched forward pass, with optional flip/padding averaging."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facenet.config import CHIP_SIZE, EMBEDDING_DIM, TTA_PADDINGS
from facenet.faces import Face, face_chips
from facenet.model import build_embedder, distance_scale, fingerprint

BATCH = 64
"""Faces per forward pass: bounds memory on a crowded frame or a big enrollment."""


class Embedder:
    """Compiled forward pass of an embedding model (a `tf.function` with one fixed signature).

    Calling the function directly avoids `model.predict`'s per-call overhead (about 10x for one face).
    `distance_scale` multiplies every calibrated distance threshold: 1.0 for the pretrained model, the value
    saved by training for fine-tuned weights (see `load_embedder`).
    """

    def __init__(self, model: keras.Model, distance_scale: float = 1.0) -> None:
        self.model = model
        self.fingerprint = fingerprint(model)
        self.distance_scale = distance_scale

        @tf.function(
            input_signature=[tf.TensorSpec([None, CHIP_SIZE, CHIP_SIZE, 3], tf.uint8)], reduce_retracing=True
        )
        def forward(chips: tf.Tensor) -> tf.Tensor:
            return tf.cast(model(tf.cast(chips, tf.float32), training=False), tf.float32)

        self._forward = forward

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) float32 unit vectors."""
        chips = np.asarray(chips, dtype=np.uint8)
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        parts = [self._forward(chips[i : i + BATCH]).numpy() for i in range(0, len(chips), BATCH)]
        return np.concatenate(parts)

    def embed_tta(self, chip_sets: list[np.ndarray]) -> np.ndarray:
        """Average the embeddings of several chip sets of the same faces and their mirrors; re-normalise."""
        n = len(chip_sets[0])
        stacked = np.concatenate([np.concatenate([c, c[:, :, ::-1]]) for c in chip_sets])
        mean = self.embed(stacked).reshape(-1, n, EMBEDDING_DIM).mean(axis=0)
        return normalize(mean)

    def embed_faces(self, image: np.ndarray, faces: list[Face], tta: bool = False) -> np.ndarray:
        """Embeddings of the given faces of one RGB image; `tta` averages TTA_PADDINGS chips and mirrors."""
        if not tta:
            return self.embed(face_chips(image, faces))
        if not faces:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        return self.embed_tta([face_chips(image, faces, padding) for padding in TTA_PADDINGS])


def load_embedder(
    backbone: str = "dlib_resnet", weights_dir: str | Path = "weights", imagenet_weights: str | Path | None = None
) -> Embedder:
    """The embedder recognition uses: trained weights when present, with the distance scale saved beside them."""
    model = build_embedder(backbone, weights_dir, trained=True, imagenet_weights=imagenet_weights)
    embedder = Embedder(model)
    embedder.distance_scale = distance_scale(weights_dir, backbone, embedder.fingerprint)
    return embedder


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
