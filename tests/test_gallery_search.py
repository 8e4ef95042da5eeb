"""A big gallery's lookup (the exact index of gallery.search) names exactly whom the plain matrix product names; a
bigger one's (the cluster index) names the same with recall >= 0.99 and exact distances."""

from __future__ import annotations

import numpy as np

from facenet.gallery import index, search
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


def test_a_bigger_gallery_switches_to_the_cluster_index(monkeypatch):
    """From CLUSTER_INDEX_MIN people on the lookup is approximate (recall, not exactness) with exact distances;
    one person fewer keeps the exact index. Constants lowered so small data crosses them."""
    monkeypatch.setattr(index, "SEARCH_INDEX_MIN", 1000)
    monkeypatch.setattr(index, "CLUSTER_INDEX_MIN", 3000)
    monkeypatch.setattr(search, "CLUSTER_MIN_TRAIN", 1000)
    rng = np.random.default_rng(2)
    centroids = normalize(rng.standard_normal((3000, 256)).astype(np.float32))
    queries = normalize(centroids[:100] + 0.01 * rng.standard_normal((100, 256)).astype(np.float32))
    exact = FaceDatabase([f"p{i}" for i in range(2999)], centroids[:2999], "test", model="fused")
    exact.identify(queries, threshold=2.0)
    assert isinstance(exact._index, search.ExactIndex)
    database = FaceDatabase([f"p{i}" for i in range(3000)], centroids, "test", model="fused")
    matches = database.identify(queries, threshold=2.0)
    assert isinstance(database._index, search.ClusterIndex) and database._index.lists > 0
    assert np.mean(np.array(matches.names) == np.array([f"p{i}" for i in range(100)])) >= 0.99
    best = [int(name[1:]) for name in matches.names]
    held = centroids.astype(np.float16).astype(np.float32)  # what a gallery this big holds and re-ranks from
    distances = np.sqrt(np.clip(2 - 2 * np.sum(queries * held[best], axis=1), 0, 4))
    np.testing.assert_allclose(matches.distances, distances, atol=1e-5)
    float32 = np.sqrt(np.clip(2 - 2 * np.sum(queries * centroids[best], axis=1), 0, 4))
    assert 0 < np.abs(matches.distances - float32).max() < 1e-3
    nearest = database.nearest_people(queries[:3], 2, threshold=2.0)
    assert [row[0][0] for row in nearest] == matches.names[:3] and all(len(row) == 2 for row in nearest)


def test_a_cluster_sized_gallery_holds_its_centroids_in_half_the_memory(monkeypatch):
    """From CLUSTER_INDEX_MIN people on the centroids are float16 (half the bytes), the index re-ranks from them
    without a copy, and `everyone()` still hands out float32; one person fewer keeps float32."""
    monkeypatch.setattr(index, "SEARCH_INDEX_MIN", 1000)
    monkeypatch.setattr(index, "CLUSTER_INDEX_MIN", 3000)
    monkeypatch.setattr(search, "CLUSTER_MIN_TRAIN", 1000)
    rng = np.random.default_rng(3)
    centroids = normalize(rng.standard_normal((3000, 256)).astype(np.float32))
    smaller = FaceDatabase([f"p{i}" for i in range(2999)], centroids[:2999], "test", model="fused")
    assert smaller.centroids.dtype == np.float32
    database = FaceDatabase([f"p{i}" for i in range(3000)], centroids, "test", model="fused")
    assert database.centroids.dtype == np.float16 and database.centroids.nbytes == centroids.nbytes // 2
    database.identify(centroids[:2], threshold=2.0)
    assert database._index.vectors is database.centroids  # no float32 copy behind the index
    names, vectors = database.everyone()
    assert vectors.dtype == np.float32 and names == database.names
    np.testing.assert_allclose(vectors, centroids, atol=1e-3)
