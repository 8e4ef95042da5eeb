"""What a training run leaves to look at: TensorBoard scalars and pictures of the embedding space (PCA, t-SNE)
before and after, in <log_dir>/<timestamp>/."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)

PLOT_MAX_POINTS = 2000
"""Photos drawn in a plot at most (a seeded sample beyond): t-SNE's cost grows with the points."""

PROJECTIONS = ("pca", "tsne")
"""The plots of each stage: <projection>_before.png and <projection>_after.png."""


def _scalar_metadata() -> bytes:
    """TensorBoard's scalar plugin tag, so that scalars are written without the tensorboard package."""
    from tensorflow.core.framework import summary_pb2  # TensorFlow's protos: only when logs are written

    plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    return summary_pb2.SummaryMetadata(plugin_data=plugin).SerializeToString()


def plot_rows(count: int, seed: int) -> np.ndarray:
    """The photos (rows) the plots draw: all of them, or PLOT_MAX_POINTS sampled with `seed`, sorted."""
    if count <= PLOT_MAX_POINTS:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(count, PLOT_MAX_POINTS, replace=False)).astype(np.int64)


class TrainingLogs:
    """log_dir/<timestamp>/: TensorBoard scalars and the plots; a folder that cannot be written is skipped
    (log_dir None: nothing is written)."""

    def __init__(self, log_dir: str | Path | None) -> None:
        self.run_dir: Path | None = None
        self.writer = tf.summary.create_noop_writer()
        self.metadata = _scalar_metadata()
        if log_dir is not None:
            self.run_dir = _new_run_dir(Path(log_dir))
        if self.run_dir is not None:
            self.writer = tf.summary.create_file_writer(str(self.run_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self.writer.as_default():
            for tag, value in values.items():
                tf.summary.write(tag, float(value), step=step, metadata=self.metadata)

    def plots(self, stage: str, embeddings: np.ndarray, labels: np.ndarray, names: list[str],
              held: np.ndarray, title: str) -> list[Path]:
        """<projection>_<stage>.png for each of PROJECTIONS; `held` (indices into embeddings) drawn as crosses.

        A plot that cannot be made (no scikit-learn for t-SNE, a folder that cannot be written) is skipped with
        a warning: plots never stop training.
        """
        if self.run_dir is None:
            return []
        from facenet.eval.visualize import save_pca_plot, save_tsne_plot  # matplotlib/sklearn: plots only

        written = []
        for projection, save in zip(PROJECTIONS, (save_pca_plot, save_tsne_plot), strict=True):
            path = self.run_dir / f"{projection}_{stage}.png"
            try:
                written.append(save(path, embeddings, labels, names, title, highlight=held))
            except (OSError, ValueError, ImportError) as error:
                log.warning("%s: plot not written (%s)", path, error)
        return written

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _new_run_dir(log_dir: Path) -> Path | None:
    """A fresh log_dir/<timestamp>[-n]/ folder; None (with a warning) when log_dir cannot be written."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        candidate = log_dir / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        except OSError as error:
            log.warning("%s: cannot write training logs (%s); continuing without them", log_dir, error)
            return None
        return candidate
    return None
