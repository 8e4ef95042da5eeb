"""Gallery thresholds and scores, in one place: the stranger-distance model calibrated per model
(CALIBRATION, printed by bench/calibrate.py from LFW View 1 DevTrain), the per-comparison false-accept share that keeps
a whole gallery at GALLERY_FAR, each person's threshold from their photo count, the 0-100 score, and the verify
threshold of a pipeline (its model's calibration times its trained weights' distance scale).

The default decision holds false accepts of strangers down as the gallery grows: a stranger is compared with P
people, so each comparison may accept only a share f = 1 - (1 - GALLERY_FAR) ** (1 / P); each person's threshold is
the f-quantile of the distance from a stranger to a centroid of that person's k photos (mean falling with k, a
measured lower tail).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from facenet.settings import MAX_DISTANCE

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

# The calibrated values below are printed by `python bench/calibrate.py` (LFW View 1 DevTrain, each pretrained
# model through the default YuNet route); rerun it and paste its output after changing a model. Distances are
# Euclidean on the unit sphere.

@dataclass(frozen=True)
class Calibration:
    """One model's calibrated decision constants (unit-sphere Euclidean distances), from LFW View 1 DevTrain.

    verify_threshold: the best-accuracy 1:1 threshold on DevTrain pairs. A stranger's distance to the centroid of
    k photos of someone has mean impostor_mean_many + (impostor_mean_one - impostor_mean_many) / k and spread
    impostor_std; impostor_z maps log10(false-accept rate) to the standardised quantile of that distance (the
    measured lower tail, a little heavier than a Gaussian's; beyond the table the Gaussian tail is scaled to meet
    its last point).
    """

    verify_threshold: float
    impostor_mean_one: float
    impostor_mean_many: float
    impostor_std: float
    impostor_z: tuple[tuple[float, float], ...]


CALIBRATION: dict[str, Calibration] = {
    "dlib": Calibration(
        verify_threshold=0.4337,
        impostor_mean_one=0.5733,
        impostor_mean_many=0.5363,
        impostor_std=0.0623,
        impostor_z=((-1.0, -1.303), (-1.5, -1.881), (-2.0, -2.345), (-2.5, -2.750), (-3.0, -3.121), (-3.5, -3.470),
                    (-4.0, -3.795), (-4.5, -4.093)),
    ),
    "sface": Calibration(
        verify_threshold=1.1399,
        impostor_mean_one=1.3521,
        impostor_mean_many=1.3351,
        impostor_std=0.0659,
        impostor_z=((-1.0, -1.294), (-1.5, -1.915), (-2.0, -2.432), (-2.5, -2.892), (-3.0, -3.318), (-3.5, -3.715),
                    (-4.0, -4.105), (-4.5, -4.476)),
    ),
    "fused": Calibration(
        verify_threshold=0.6464,
        impostor_mean_one=0.7940,
        impostor_mean_many=0.7420,
        impostor_std=0.0483,
        impostor_z=((-1.0, -1.308), (-1.5, -1.940), (-2.0, -2.462), (-2.5, -2.913), (-3.0, -3.320), (-3.5, -3.688),
                    (-4.0, -4.043), (-4.5, -4.372)),
    ),
}
"""Per model: printed by `python bench/calibrate.py`; rerun it and paste its output after changing a
model, its detector route or its alignment. `resnet50` (trained from scratch) borrows dlib's."""


def calibration(model: str) -> Calibration:
    """The calibrated constants of `model` (resnet50 and unknown names fall back to dlib's)."""
    return CALIBRATION.get(model, CALIBRATION["dlib"])


GALLERY_FAR = 0.01
"""Default share of strangers (people not enrolled) that may be named as someone, whatever the gallery size."""

SCORE_STEEPNESS = 4.0
"""Match score = 100 / (1 + (distance / threshold) ** SCORE_STEEPNESS): 100 identical, 50 at the threshold."""

FARTHEST = MAX_DISTANCE
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


def person_thresholds(people: int, counts: np.ndarray, model: str, target_far: float = GALLERY_FAR,
                      scale: float = 1.0) -> np.ndarray:
    """`gallery_threshold` of each person from their photo count (`counts`, any shape; at least 1 photo counts) in a
    gallery of `people`, times `scale` (trained weights' distance scale): one computation per distinct count."""
    counts = np.maximum(np.asarray(counts, int), 1)
    by_count = {int(k): scale * gallery_threshold(people, int(k), model, target_far) for k in np.unique(counts)}
    return np.array([by_count[int(k)] for k in np.ravel(counts)], np.float64).reshape(np.shape(counts))


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
