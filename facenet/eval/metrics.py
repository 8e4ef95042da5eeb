"""Verification metrics of pair distances: ROC, AUC, EER, TAR@FAR, the best threshold and LFW's k-fold accuracy.

Pure NumPy on (distances, same) arrays: Euclidean distances between unit vectors, and whether each pair shows the
same person. A pair is predicted "same person" when its distance is <= the threshold. Used by the LFW benchmark
(facenet.eval.lfw), training's validation and the threshold calibration (bench/calibrate.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

N_FOLDS = 10
"""Cross-validation folds for a pairs file without folds of its own (LFW View 1)."""

FAR_TARGET = 1e-3


def stratified_folds(same: np.ndarray, k: int = N_FOLDS) -> np.ndarray:
    """Fold index per pair, dealing matched and mismatched pairs round-robin so every fold has both."""
    same = np.asarray(same, dtype=bool)
    folds = np.empty(len(same), dtype=np.int64)
    for cls in (True, False):
        members = np.flatnonzero(same == cls)
        folds[members] = np.arange(len(members)) % k
    return folds



def _as_arrays(distances, same) -> tuple[np.ndarray, np.ndarray]:
    distances = np.asarray(distances, dtype=np.float64).ravel()
    same = np.asarray(same, dtype=bool).ravel()
    if distances.shape != same.shape:
        raise ValueError(f"{len(distances)} distances but {len(same)} labels")
    return distances, same


def _sweep(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct distance t (ascending): matched and mismatched pairs accepted by `distance <= t`."""
    order = np.argsort(distances, kind="stable")
    d, s = distances[order], same[order]
    last = np.r_[d[1:] != d[:-1], True]
    return d[last], np.cumsum(s)[last], np.cumsum(~s)[last]


def roc(distances, same) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of the rule `distance <= t`: (FAR, TAR, t) for every distinct t, from (0, 0, -inf) to (1, 1, max)."""
    distances, same = _as_arrays(distances, same)
    n_same, n_diff = int(same.sum()), int((~same).sum())
    if n_same == 0 or n_diff == 0:
        raise ValueError("a ROC needs both matched and mismatched pairs")
    thresholds, tp, fp = _sweep(distances, same)
    far = np.r_[0.0, fp / n_diff]
    tar = np.r_[0.0, tp / n_same]
    return far, tar, np.r_[-np.inf, thresholds]


def best_threshold(distances, same) -> tuple[float, float]:
    """(threshold, accuracy) of the best-accuracy rule `distance <= threshold`.

    The threshold sits midway between the two distances it separates (a gap, not a sample), and among
    equally accurate thresholds the middle one is taken, so it transfers better to unseen pairs.
    """
    distances, same = _as_arrays(distances, same)
    if len(distances) == 0:
        raise ValueError("no pairs to choose a threshold on")
    values, tp, fp = _sweep(distances, same)
    n_diff = int((~same).sum())
    correct = np.r_[n_diff, tp + (n_diff - fp)]  # candidate 0 accepts nothing
    ties = np.flatnonzero(correct == correct.max())
    best = int(ties[(len(ties) - 1) // 2])
    if best == 0:
        threshold = float(np.nextafter(values[0], -np.inf))
    elif best == len(values):
        threshold = float(values[-1])
    else:
        threshold = float((values[best - 1] + values[best]) / 2)
    return threshold, float(correct[best] / len(distances))


def accuracy_at(distances, same, threshold: float) -> float:
    """Share of pairs the rule `distance <= threshold` classifies correctly."""
    distances, same = _as_arrays(distances, same)
    return float(np.mean((distances <= threshold) == same))


class KFold(NamedTuple):
    """Cross-validated accuracy: mean and (population) std over folds, and each fold's accuracy and threshold."""

    accuracy: float
    std: float
    accuracies: np.ndarray
    thresholds: np.ndarray


def kfold_accuracy(distances, same, folds) -> KFold:
    """Accuracy of each fold at the best threshold of the other folds (LFW's protocol), mean ± std."""
    distances, same = _as_arrays(distances, same)
    folds = np.asarray(folds).ravel()
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        if test.all():
            raise ValueError("cross-validation needs at least two folds")
        threshold, _ = best_threshold(distances[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(accuracy_at(distances[test], same[test], threshold))
    accuracies = np.asarray(accuracies)
    return KFold(float(accuracies.mean()), float(accuracies.std()), accuracies, np.asarray(thresholds))


def auc(distances, same) -> float:
    """Area under the ROC: the chance a matched pair is closer than a mismatched one (ties count half)."""
    far, tar, _ = roc(distances, same)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def eer(distances, same) -> float:
    """Equal error rate: where FAR equals the false-reject rate, linearly interpolated along the ROC."""
    far, tar, _ = roc(distances, same)
    gap = far - (1.0 - tar)  # rises from -1 to +1 along the curve
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0 or i == 0:
        return float(far[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def tar_at_far(distances, same, far: float = FAR_TARGET, interpolate: bool = True) -> float:
    """True accept rate at a false accept rate.

    `interpolate`: read the ROC polyline at exactly `far` (a randomised mix of the two neighbouring
    thresholds; needed when `far` is below one false accept). Otherwise: the best TAR of a real threshold
    whose FAR is <= `far` (with fewer than 1/far mismatched pairs, the TAR at zero false accepts).
    """
    rates, tar, _ = roc(distances, same)
    if not interpolate:
        return float(tar[rates <= far].max())
    unique, first = np.unique(rates, return_index=True)
    top = np.maximum.reduceat(tar, first)  # the top of each vertical ROC segment
    return float(np.interp(far, unique, top))


def verification_metrics(distances, same, folds, threshold: float | None = None) -> dict:
    """Every number of the LFW report for the given pair distances.

    Without `threshold`: LFW's cross-validation (each fold at the best threshold of the others), and the
    best threshold on all pairs. With `threshold` (chosen on other pairs): each fold's accuracy at it.
    """
    distances, same = _as_arrays(distances, same)
    folds = np.asarray(folds).ravel()
    cv = kfold_accuracy(distances, same, folds)
    best, best_accuracy = best_threshold(distances, same)
    if threshold is None:
        accuracy, std, threshold = cv.accuracy, cv.std, best
    else:
        per_fold = np.array([accuracy_at(distances[folds == f], same[folds == f], threshold) for f in np.unique(folds)])
        accuracy, std = float(per_fold.mean()), float(per_fold.std())
    return {
        "accuracy": accuracy,
        "accuracy_std": std,
        "auc": auc(distances, same),
        "eer": eer(distances, same),
        "tar_at_far_1e-3": tar_at_far(distances, same, FAR_TARGET),
        "tar_at_far_1e-3_floor": tar_at_far(distances, same, FAR_TARGET, interpolate=False),
        "threshold": float(threshold),
        "threshold_accuracy": accuracy_at(distances, same, threshold),
        "cv_accuracy": cv.accuracy,
        "cv_accuracy_std": cv.std,
        "best_threshold": best,
        "best_threshold_accuracy": best_accuracy,
        "folds": len(cv.accuracies),
    }
