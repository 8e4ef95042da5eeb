"""A big gallery's lookup (the exact index of gallery.search) names exactly whom the plain matrix product names."""

from __future__ import annotations

import numpy as np

from facenet.gallery.index import SEARCH_INDEX_MIN, FaceDatabase
from facenet.models.vectors import normalize


def test_big_gallery_uses_the_exact_index_and_agrees_with_brute_force():
    rng = np.random.default_rng(1)
    centroids = normalize(rng.standard_normal((SEARCH_INDEX_MIN + 10, 128)).astype(np.float32))
    database = FaceDatabase([f"p{i}" for i in range(len(centroids))], centroids, "test", model="fused")
    queries = normalize(centroids[:40] + 0.02 * rng.standard_normal((40, 128)).astype(np.float32))
    matches = database.identify(queries, threshold=2.0)
    assert database._index is not None  # the index was used
    brute = (queries @ centroids.T).argmax(axis=1)
    assert matches.names == [f"p{i}" for i in brute]
    distances = np.sqrt(np.clip(2 - 2 * np.sum(queries * centroids[brute], axis=1), 0, 4))
    assert np.allclose(matches.distances, distances, atol=1e-5)
