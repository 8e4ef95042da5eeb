"""A picture of an embedding space: the 2-D PCA projection of the embeddings, one colour per person, as PNG.

PCA is NumPy's SVD of the centred embeddings (no scikit-learn). Matplotlib is used through its object API
(Figure + the Agg canvas), so no global pyplot state or display backend is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenet.files import atomic_write

LEGEND_MAX_PEOPLE = 20
"""A legend is drawn up to this many people; beyond it the colours alone tell people apart."""


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> ((N, 2) coordinates on the first two principal axes, their share of the variance (2,))."""
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"PCA needs at least two embeddings, got shape {x.shape}")
    centred = x - x.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ axes[:2].T
    if coords.shape[1] < 2:  # a single feature: pad the missing axis
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    variance = singular**2
    share = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    return coords, np.pad(share, (0, 2 - len(share)))


def save_pca_plot(
    path: str | Path,
    embeddings: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    title: str,
    highlight: np.ndarray | None = None,
) -> Path:
    """Write the PCA scatter of `embeddings` (colour = labels[i] -> names) to a PNG, atomically.

    `highlight` (indices) are drawn as crosses instead of dots: the held-out validation photos.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    coords, share = pca_2d(embeddings)
    labels = np.asarray(labels)
    marked = np.zeros(len(labels), bool)
    if highlight is not None:
        marked[np.asarray(highlight, dtype=int)] = True
    people = np.unique(labels)
    cmap = colormaps["tab20" if len(people) <= 20 else "hsv"]
    figure = Figure(figsize=(8, 6.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for rank, person in enumerate(people):
        colour = cmap(rank / max(len(people), 1)) if len(people) > 20 else cmap(rank)
        mine = labels == person
        axes.scatter(*coords[mine & ~marked].T, s=28, color=colour, label=names[person])
        if np.any(mine & marked):
            axes.scatter(*coords[mine & marked].T, s=44, color=colour, marker="x")
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(f"PC 1 ({share[0]:.0%} of variance)")
    axes.set_ylabel(f"PC 2 ({share[1]:.0%} of variance)")
    if len(people) <= LEGEND_MAX_PEOPLE:
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if highlight is not None and marked.any():
        figure.text(0.01, 0.01, "x = held-out validation photo", fontsize=7)
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path
