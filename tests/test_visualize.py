"""Tests for facenet.eval.visualize's t-SNE plot (the PCA plot is covered in test_train.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from facenet.eval.visualize import save_tsne_plot

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def clusters(n_people: int = 4, per_person: int = 10, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(n_people), per_person)
    embeddings = 3.0 * rng.normal(size=(n_people, dim))[labels] + rng.normal(size=(len(labels), dim))
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), labels


def test_tsne_plot_writes_png(tmp_path) -> None:
    embeddings, labels = clusters()
    names = ["Ada", "Bob", "Cy", "Di"]
    path = save_tsne_plot(tmp_path / "plots" / "tsne.png", embeddings, labels, names, "t-SNE test", highlight=[0, 12])
    assert path == tmp_path / "plots" / "tsne.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000
    assert [p.name for p in path.parent.iterdir()] == ["tsne.png"]  # no temp file left behind


@pytest.mark.parametrize("n", [2, 3])
def test_tsne_plot_tiny_inputs(tmp_path, n: int) -> None:
    """The perplexity is clamped so that even two or three points give a plot."""
    embeddings, labels = clusters(n_people=n, per_person=1)
    path = save_tsne_plot(tmp_path / "tiny.png", embeddings, labels, ["a", "b", "c"][:n], "tiny")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_tsne_plot_needs_two_points(tmp_path) -> None:
    embeddings, labels = clusters()
    with pytest.raises(ValueError, match="at least two"):
        save_tsne_plot(tmp_path / "one.png", embeddings[:1], labels[:1], ["Ada"], "one point")
    with pytest.raises(ValueError, match="at least two"):
        save_tsne_plot(tmp_path / "none.png", embeddings[:0], labels[:0], [], "no points")
    assert not (tmp_path / "one.png").exists()


def test_tsne_plot_reproducible_and_identical_points(tmp_path) -> None:
    embeddings, labels = clusters(per_person=5)
    first = save_tsne_plot(tmp_path / "a.png", embeddings, labels, list("ABCD"), "seeded", seed=3).read_bytes()
    assert save_tsne_plot(tmp_path / "b.png", embeddings, labels, list("ABCD"), "seeded", seed=3).read_bytes() == first
    # No spread at all (one photo enrolled five times): drawn at one spot, not a crash inside scikit-learn.
    same = np.repeat(embeddings[:1], 5, axis=0)
    path = save_tsne_plot(tmp_path / "same.png", same, np.zeros(5, int), ["A"], "same")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
