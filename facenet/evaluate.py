"""Compatibility re-exports of the LFW benchmark's library, which now lives in three modules:

- facenet.metrics: ROC, AUC, EER, TAR@FAR, best threshold, k-fold accuracy (pure NumPy);
- facenet.lfw: pairs files, embedding their images, the report's numbers (`evaluate_pairs`);
- facenet.lfw_plot: the ROC curve as a PNG.

The `--lfw_pairs` command itself (printing the report, exit codes) is facenet/cli/lfw_command.py. New code imports
from the modules above; this one keeps `from facenet.evaluate import auc, best_threshold, …` working.
"""

from __future__ import annotations

from facenet.lfw import (
    ImageEmbeddings,
    Pair,
    PairsError,
    embed_images,
    evaluate_pairs,
    lfw_image_path,
    pair_distances,
    parse_pairs,
    read_pairs,
    within_set_folds,
)
from facenet.lfw_plot import save_roc_png
from facenet.metrics import (
    FAR_TARGET,
    N_FOLDS,
    KFold,
    accuracy_at,
    auc,
    best_threshold,
    eer,
    kfold_accuracy,
    roc,
    stratified_folds,
    tar_at_far,
    verification_metrics,
)

__all__ = [
    "FAR_TARGET", "N_FOLDS", "ImageEmbeddings", "KFold", "Pair", "PairsError", "accuracy_at", "auc", "best_threshold",
    "eer", "embed_images", "evaluate_pairs", "kfold_accuracy", "lfw_image_path", "pair_distances", "parse_pairs",
    "read_pairs", "roc", "save_roc_png", "stratified_folds", "tar_at_far", "verification_metrics", "within_set_folds",
]
