"""Unit vectors: the one normalisation every embedding, centroid and mean goes through (NumPy only, so galleries
and benches use it without loading TensorFlow)."""

from __future__ import annotations

import numpy as np


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def unit_distance(similarity: np.ndarray | float) -> np.ndarray:
    """Euclidean distance of unit vectors from their inner product, d^2 = 2 - 2 x.c (float64, rounding clipped)."""
    return np.sqrt(np.clip(2.0 - 2.0 * np.asarray(similarity, np.float64), 0.0, 4.0))
