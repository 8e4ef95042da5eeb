"""gallery.search: ExactIndex equals a float32 brute force (random and adversarial near-ties); ClusterIndex finds
genuine matches with exact similarities."""

from __future__ import annotations

import numpy as np
import pytest

from facenet.gallery import search
from facenet.gallery.search import ExactIndex, brute_force

faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed (requirements.txt)")


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(autouse=True)
def small_int8_gallery(monkeypatch):
    """Take the int8 path from small galleries on, so small tests exercise it."""
    monkeypatch.setattr(search, "SMALL_GALLERY", 1)


def assert_same(index: ExactIndex, vectors: np.ndarray, queries: np.ndarray, k: int) -> None:
    got_i, got_s = index.search(queries, k)
    want_i, want_s = brute_force(vectors, queries, k)
    assert got_i.shape == got_s.shape == (len(queries), k)
    np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-6)
    # same vectors, or ties: the similarity of what was returned is the one brute force found at that rank
    exact = np.einsum("qkd,qd->qk", vectors[got_i].astype(np.float64), queries.astype(np.float64))
    np.testing.assert_allclose(exact, want_s, rtol=0, atol=1e-6)
    # and the very same vectors wherever the best is not tied (no other score within float32 noise)
    scores = np.sort(queries @ vectors.T, axis=1)[:, ::-1]
    kth = min(k, len(vectors))
    padded = np.concatenate([np.full((len(queries), 1), np.inf), scores, np.full((len(queries), 1), -np.inf)], 1)
    gaps = padded[:, :-1] - padded[:, 1:]
    untied = (gaps[:, :kth] > 1e-6) & (gaps[:, 1 : kth + 1] > 1e-6)
    assert np.array_equal(got_i[:, :kth][untied], want_i[:, :kth][untied])


@pytest.mark.parametrize("dim", [128, 256])
def test_random_galleries_match_brute_force(dim):
    rng = np.random.default_rng(dim)
    vectors = unit(rng, 9000, dim)
    index = ExactIndex(vectors, threads=2)
    assert index.method.startswith("int8") and len(index._parts) == 2
    queries = np.concatenate([unit(rng, 20, dim), vectors[:5] + 0.05 * unit(rng, 5, dim)])
    for k in (1, 5):
        assert_same(index, vectors, queries, k)
    indices, _ = index.search(vectors[:50], 1)
    assert indices[:, 0].tolist() == list(range(50))


def test_near_ties_are_resolved_exactly(monkeypatch):
    """Candidates whose similarities differ by far less than the int8 error: the re-ranking must decide."""
    shortlists = []
    original = ExactIndex._search_int8

    def spy(self, queries, k, shortlist, *rest):
        shortlists.append(shortlist)
        return original(self, queries, k, shortlist, *rest)

    monkeypatch.setattr(ExactIndex, "_search_int8", spy)
    rng = np.random.default_rng(1)
    dim = 128
    query = unit(rng, 1, dim)[0]
    base = unit(rng, 3000, dim)
    # 200 vectors at similarity 0.9 + i * 1e-5 to the query (int8 error is ~1e-3): only float32 can order them
    tangent = unit(rng, 200, dim)
    tangent -= np.outer(tangent @ query, query)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    target = 0.9 + 1e-5 * rng.permutation(200)
    close = target[:, None] * query + np.sqrt(1 - target**2)[:, None] * tangent
    vectors = np.concatenate([base, close.astype(np.float32)])
    vectors = vectors[rng.permutation(len(vectors))]
    index = ExactIndex(vectors)
    assert_same(index, vectors, np.stack([query, -query]), 1)
    assert_same(index, vectors, query[None], 10)
    assert search.SHORTLIST in shortlists and search.SHORTLIST * 8 in shortlists  # the proof failed, then held
    # exact duplicates of the best: any of them is right, the similarity is the same
    twins = np.concatenate([vectors, vectors[:1], vectors[:1]])
    got_i, got_s = ExactIndex(twins).search(twins[:1], 3)
    assert set(got_i[0]) == {0, len(vectors), len(vectors) + 1}
    assert np.all(got_s[0] == got_s[0, 0])


def test_all_equal_gallery_falls_back_to_full_scan():
    """Every vector within the error bound of the best: the shortlist grows to the whole gallery and stays exact."""
    rng = np.random.default_rng(2)
    query = unit(rng, 1, 128)
    vectors = np.repeat(query, 300, axis=0) + 3e-3 * rng.standard_normal((300, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert_same(ExactIndex(vectors), vectors, query, 3)


def test_k_greater_than_one_is_ordered_best_first():
    rng = np.random.default_rng(3)
    vectors = unit(rng, 2000, 128)
    queries = unit(rng, 7, 128)
    indices, similarities = ExactIndex(vectors).search(queries, 20)
    assert np.all(np.diff(similarities, axis=1) <= 0)
    np.testing.assert_allclose(similarities, np.take_along_axis(queries @ vectors.T, indices, axis=1), atol=1e-6)
    full = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :20]
    np.testing.assert_allclose(similarities, full, atol=1e-6)


def test_k_beyond_gallery_is_padded_and_empty_index():
    rng = np.random.default_rng(4)
    vectors = unit(rng, 3, 256)
    indices, similarities = ExactIndex(vectors).search(unit(rng, 2, 256), 5)
    assert indices.shape == (2, 5) and np.all(indices[:, 3:] == -1) and np.all(np.isneginf(similarities[:, 3:]))
    assert sorted(indices[0, :3]) == [0, 1, 2]
    empty = ExactIndex(np.zeros((0, 256), np.float32))
    indices, similarities = empty.search(unit(rng, 4, 256), 1)
    assert indices.shape == (4, 1) and np.all(indices == -1) and np.all(np.isneginf(similarities))
    assert len(empty) == 0 and ExactIndex(np.zeros((0, 128)), dim=128).search(np.zeros((0, 128)), 2)[0].shape == (0, 2)


def test_many_queries_and_unnormalised_vectors():
    """The float32 path (many queries) and vectors of any norm are exact too."""
    rng = np.random.default_rng(5)
    vectors = unit(rng, 4000, 128) * rng.uniform(0.5, 2.0, (4000, 1)).astype(np.float32)
    index = ExactIndex(vectors)
    assert_same(index, vectors, unit(rng, search.BLAS_QUERIES + 3, 128), 2)
    assert_same(index, vectors, 3 * unit(rng, 4, 128), 2)


def test_wrong_dimension_is_refused():
    index = ExactIndex(np.zeros((10, 128), np.float32))
    with pytest.raises(ValueError, match="dimension 128"):
        index.search(np.zeros((1, 256), np.float32))


def clustered(rng: np.random.Generator, n: int, dim: int, groups: int = 50) -> np.ndarray:
    """Unit vectors around `groups` centres: the structure k-means cells exploit, as real embeddings have."""
    centres = unit(rng, groups, dim)
    return unit_rows(centres[rng.integers(0, groups, n)] + 0.3 * unit(rng, n, dim))


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def small_clusters(monkeypatch):
    """Cells from 1,000 vectors on, so a small gallery exercises the IVF path."""
    monkeypatch.setattr(search, "CLUSTER_MIN_TRAIN", 1000)


@pytest.mark.parametrize("dim", [128, 256])
def test_cluster_index_recalls_genuine_faces_with_exact_similarities(small_clusters, dim):
    rng = np.random.default_rng(7)
    vectors = clustered(rng, 6000, dim)
    index = search.ClusterIndex(vectors, probes=8, threads=1)
    assert index.lists == 77 and index.build_seconds > 0 and 0 < index.nbytes < vectors.nbytes
    assert index.vectors is vectors  # re-ranks from the caller's matrix: no float32 copy
    probes = unit_rows(vectors[:300] + 0.03 * unit(rng, 300, dim))
    indices, similarities = index.search(probes, 3)
    truth = brute_force(vectors, probes, 1)[0][:, 0]
    assert np.mean(indices[:, 0] == truth) >= 0.99
    assert np.all(np.diff(similarities, axis=1) <= 0)
    exact = np.einsum("qkd,qd->qk", vectors[indices].astype(np.float64), probes.astype(np.float64))
    np.testing.assert_allclose(similarities, exact, rtol=0, atol=1e-6)  # exact float32 values of the returned rows


def test_cluster_index_misses_without_probes_enough(small_clusters):
    """The recall comes from probing: one cell of 77 loses faces near cell borders (the test can fail)."""
    rng = np.random.default_rng(8)
    vectors = unit(rng, 6000, 128)  # no structure: many neighbours lie in other cells
    probes = unit_rows(vectors[:300] + 0.4 * unit(rng, 300, 128))
    truth = brute_force(vectors, probes, 1)[0][:, 0]
    index = search.ClusterIndex(vectors, probes=1, threads=1)
    assert np.mean(index.search(probes, 1)[0][:, 0] == truth) < 0.9
    index.probes = index.lists
    assert np.mean(index.search(probes, 1)[0][:, 0] == truth) >= 0.99


def test_cluster_index_grows_from_empty_one_person_at_a_time(small_clusters):
    rng = np.random.default_rng(9)
    vectors = clustered(rng, 5000, 128)
    index = search.ClusterIndex(np.zeros((0, 128), np.float32), dim=128, threads=1)
    indices, similarities = index.search(vectors[:2], 2)
    assert indices.shape == (2, 2) and np.all(indices == -1) and np.all(np.isneginf(similarities))
    index.add(vectors[:1])
    assert index.lists == 0 and index.search(vectors[:1], 1)[0][0, 0] == 0  # brute force while untrained
    for start in range(1, 999, 142):
        index.add(vectors[start : min(start + 142, 999)])
    assert index.lists == 0 and len(index) == 999
    index.add(vectors[999:1000])  # trains at CLUSTER_MIN_TRAIN
    assert index.lists == 32
    index.add(vectors[1000:3999])  # grown < 4x: added to its cells
    assert index.lists == 32 and len(index) == 3999
    index.add(vectors[3999:])  # grown 5x: retrained, cells ~sqrt(N)
    assert index.lists == 71 and len(index) == 5000
    np.testing.assert_array_equal(index.vectors, vectors)
    indices, similarities = index.search(vectors[[0, 500, 1500, 4999]], 1)
    assert indices[:, 0].tolist() == [0, 500, 1500, 4999]
    np.testing.assert_allclose(similarities[:, 0], 1.0, atol=1e-6)


def test_cluster_index_pads_k_beyond_the_gallery():
    rng = np.random.default_rng(10)
    vectors = unit(rng, 5, 256)
    indices, similarities = search.ClusterIndex(vectors).search(unit(rng, 2, 256), 7)
    assert indices.shape == (2, 7) and np.all(indices[:, 5:] == -1) and np.all(np.isneginf(similarities[:, 5:]))
    assert sorted(indices[0, :5]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="dimension 256"):
        search.ClusterIndex(vectors).search(np.zeros((1, 128), np.float32))
