"""Gallery thresholds and scores, in one place: the stranger-distance model calibrated per model
(config.CALIBRATION, by bench/calibrate.py on LFW View 1 DevTrain), the per-comparison false-accept share that keeps
a whole gallery at GALLERY_FAR, each person's threshold from their photo count, the 0-100 score, and the verify
threshold of a pipeline (its model's calibration times its trained weights' distance scale).

The default decision holds false accepts of strangers down as the gallery grows: a stranger is compared with P
people, so each comparison may accept only a share f = 1 - (1 - GALLERY_FAR) ** (1 / P); each person's threshold is
the f-quantile of the distance from a stranger to a centroid of that person's k photos (mean falling with k, a
measured lower tail).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from facenet.config import GALLERY_FAR, SCORE_STEEPNESS, Calibration, calibration

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

FARTHEST = 2.0
"""Largest distance between unit vectors: what a face is from an empty gallery."""


def _z(far: float, table: tuple[tuple[float, float], ...]) -> float:
    """Standardised stranger-distance quantile at a false-accept rate: the measured table, Gaussian beyond it."""
    far = min(max(far, 1e-300), 1.0 - 1e-12)
    log_far = np.log10(far)
    (high_log, high_z), (low_log, low_z) = table[0], table[-1]
    gaussian = NormalDist().inv_cdf
    if log_far > high_log:
        return gaussian(far) * high_z / gaussian(10.0**high_log)
    if log_far < low_log:
        return gaussian(far) * low_z / gaussian(10.0**low_log)
    logs, zs = zip(*reversed(table), strict=True)
    return float(np.interp(log_far, logs, zs))


def impostor_quantile(far: float, photos: int, model: str) -> float:
    """Distance below which a share `far` of strangers falls from the centroid of `photos` photos of someone."""
    c: Calibration = calibration(model)
    mean = c.impostor_mean_many + (c.impostor_mean_one - c.impostor_mean_many) / max(int(photos), 1)
    return float(mean + c.impostor_std * _z(far, c.impostor_z))


def comparison_far(people: int, target_far: float = GALLERY_FAR) -> float:
    """Per-comparison false-accept rate that keeps a stranger's chance of matching ANY of `people` at target_far."""
    return float(-np.expm1(np.log1p(-target_far) / max(int(people), 1)))


def gallery_threshold(people: int, photos: int, model: str, target_far: float = GALLERY_FAR) -> float:
    """Default threshold for someone enrolled with `photos` photos in a gallery of `people` people (of `model`).

    Falls as the gallery grows (more people, more chances for a stranger to land near one of them) and rises
    slightly with fewer photos per person (a one-photo centroid sits farther from everyone).
    """
    return impostor_quantile(comparison_far(people, target_far), photos, model)


def match_score(distance: float | np.ndarray, threshold: float | np.ndarray) -> float | np.ndarray:
    """0-100 score: 100 / (1 + (distance / threshold) ** SCORE_STEEPNESS).

    100 for identical faces, 50 exactly at the threshold (above 50 = accepted), towards 0 far away.
    """
    ratio = np.asarray(distance, dtype=np.float64) / np.maximum(np.asarray(threshold, dtype=np.float64), 1e-9)
    score = 100.0 / (1.0 + np.maximum(ratio, 0.0) ** SCORE_STEEPNESS)
    return float(score) if score.ndim == 0 else score


def verify_threshold(pipeline: FacePipeline) -> float:
    """The 1:1 decision threshold of a pipeline: its model's calibrated one, scaled like its trained weights (rounded
    to 4 places, as reports show it)."""
    return round(calibration(pipeline.model).verify_threshold * pipeline.embedder.distance_scale, 4)
