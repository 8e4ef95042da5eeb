"""The ROC curve of the LFW benchmark as a PNG (matplotlib, imported only when a curve is drawn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facenet.eval.metrics import FAR_TARGET, auc, eer, roc, tar_at_far
from facenet.files import atomic_write


def save_roc_png(path: str | Path, distances, same, title: str) -> None:
    """The ROC curve (linear and log FAR) with the EER point, written atomically as a PNG."""
    from matplotlib.figure import Figure  # matplotlib (optional, heavy): only when a curve is drawn

    far, tar, _ = roc(distances, same)
    rate = eer(distances, same)
    negatives = int((~np.asarray(same, dtype=bool)).sum())
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    linear, logarithmic = figure.subplots(1, 2)
    for axes in (linear, logarithmic):
        axes.plot(far, tar, lw=1.5, label=f"ROC (AUC {auc(distances, same):.4f})")
        axes.plot([rate], [1 - rate], "o", label=f"EER {rate:.2%}")
        axes.set_xlabel("false accept rate")
        axes.set_ylabel("true accept rate")
        axes.grid(True, alpha=0.3)
    linear.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    linear.legend(loc="lower right")
    logarithmic.set_xscale("log")
    low = min(FAR_TARGET / 2, 0.5 / max(1, negatives))
    logarithmic.set_xlim(low, 1)
    logarithmic.set_ylim(max(0.0, tar_at_far(distances, same, low) - 0.05), 1.005)
    logarithmic.axvline(FAR_TARGET, color="grey", ls=":", lw=1)
    figure.suptitle(title)
    atomic_write(Path(path), lambda tmp: figure.savefig(tmp, format="png", dpi=100))
