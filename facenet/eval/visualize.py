"""A picture of an embedding space: a 2-D projection of the embeddings, one colour per person, as PNG.

Two projections: PCA (NumPy's SVD of the centred embeddings; linear, shows the global layout and distances) and
t-SNE (scikit-learn, imported only when asked for; non-linear, shows which photos cluster together, not how far
apart the clusters are). Matplotlib is used through its object API (Figure + the Agg canvas), so no global pyplot
state or display backend is touched.
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


def _tsne_2d(embeddings: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """(N, D) -> ((N, 2) t-SNE coordinates, the perplexity used): PCA-initialised, seeded, so reproducible.

    The perplexity (30, scikit-learn's default) is clamped to (N - 1) / 3 for small N: each point's
    neighbourhood of about 3 x perplexity points must fit in the data. Runs on one OpenMP thread: on busy cores
    libgomp's spinning barriers made the Barnes-Hut iterations 5-10x slower with two threads than with one
    (2 loaded cores, 40 to 2000 points).
    """
    from sklearn.manifold import TSNE  # scikit-learn (heavy): only when a t-SNE plot is made
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"t-SNE needs at least two embeddings, got shape {x.shape}")
    if x.shape[1] < 2:  # a single feature: PCA initialisation needs two
        x = np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    perplexity = min(30.0, (len(x) - 1) / 3)
    if np.all(x == x[0]):  # no spread: the PCA initialisation would divide by 0 (scikit-learn then segfaults)
        return np.zeros((len(x), 2)), perplexity
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x), perplexity


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
    coords, share = pca_2d(embeddings)
    axis_names = (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%} of variance)")
    return _save_scatter(path, coords, labels, names, title, axis_names, highlight)


def save_tsne_plot(
    path: str | Path,
    embeddings: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    title: str,
    highlight: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write the t-SNE scatter of `embeddings` to a PNG, atomically; drawn like `save_pca_plot`.

    Needs scikit-learn. Raises ValueError for fewer than two embeddings.
    """
    coords, perplexity = _tsne_2d(embeddings, seed)
    axis_names = (f"t-SNE 1 (perplexity {perplexity:.3g})", "t-SNE 2")
    return _save_scatter(path, coords, labels, names, title, axis_names, highlight)


def _save_scatter(
    path: str | Path,
    coords: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    title: str,
    axis_names: tuple[str, str],
    highlight: np.ndarray | None,
) -> Path:
    """The drawing both plots share: one colour per person, `highlight` as crosses, legend up to
    LEGEND_MAX_PEOPLE people; written to `path` as PNG through a temp file."""
    from matplotlib import colormaps  # matplotlib (heavy): only when a plot is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    axes.set_xlabel(axis_names[0])
    axes.set_ylabel(axis_names[1])
    if len(people) <= LEGEND_MAX_PEOPLE:
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if highlight is not None and marked.any():
        figure.text(0.01, 0.01, "x = held-out validation photo", fontsize=7)
    figure.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path
