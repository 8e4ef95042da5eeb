"""LFW-protocol verification benchmark: pairs file + image root -> distances -> 10-fold accuracy, ROC, AUC, EER.

Distances are Euclidean between unit vectors; a pair is predicted "same person" when its distance is
<= the threshold. The metric functions are pure NumPy so other stages (database threshold calibration)
can reuse them on any (distances, same) arrays.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from facenet.config import HOW_TEXT

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)

N_FOLDS = 10
"""Cross-validation folds for a pairs file without folds of its own (LFW View 1)."""

FAR_TARGET = 1e-3


class Pair(NamedTuple):
    """Two image paths and whether they show the same person."""

    a: Path
    b: Path
    same: bool


class PairsError(ValueError):
    """A malformed pairs file; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")


# --------------------------------------------------------------------------- pairs files


def lfw_image_path(lfw_dir: str | Path, name: str, number: int) -> Path:
    """`<lfw_dir>/<Name>/<Name>_<NNNN>.jpg`, LFW's layout."""
    return Path(lfw_dir) / name / f"{name}_{number:04d}.jpg"


def _number(text: str, path: Path, line: int) -> int:
    if not text.isdigit() or int(text) < 1:
        raise PairsError(path, line, f"image number must be a positive integer, got {text!r}")
    return int(text)


def _parse_header(fields: list[str], path: Path) -> tuple[int, int]:
    """(folds, pairs per class per fold) from `10 300` (View 2) or `500` (View 1)."""
    if len(fields) not in (1, 2) or not all(f.isdigit() and int(f) > 0 for f in fields):
        raise PairsError(path, 1, f"header must be 'N' (View 1) or 'FOLDS N' (View 2), got {' '.join(fields)!r}")
    return (1, int(fields[0])) if len(fields) == 1 else (int(fields[0]), int(fields[1]))


def parse_pairs(path: str | Path, lfw_dir: str | Path = "") -> tuple[list[Pair], np.ndarray, int]:
    """Read a pairs file: its pairs in order, the file's fold index of each pair, and its number of folds.

    Each fold is N matched lines (`Name n1 n2`) then N mismatched lines (`Name1 n1 Name2 n2`).
    Raises PairsError (file and line number) on anything else, and OSError if the file cannot be read.
    """
    path = Path(path)
    lines = [(number, line.split()) for number, line in enumerate(path.read_text().splitlines(), 1)]
    lines = [(number, fields) for number, fields in lines if fields]
    if not lines:
        raise PairsError(path, 0, "empty pairs file")
    if lines[0][0] != 1:
        raise PairsError(path, 1, "the first line must be the header")
    n_folds, per_class = _parse_header(lines[0][1], path)
    body = lines[1:]
    expected = n_folds * 2 * per_class
    pairs: list[Pair] = []
    folds: list[int] = []
    for index, (number, fields) in enumerate(body[:expected]):
        fold, offset = divmod(index, 2 * per_class)
        same = offset < per_class
        if same and len(fields) == 3:
            name, n1, n2 = fields
            pair = Pair(lfw_image_path(lfw_dir, name, _number(n1, path, number)),
                        lfw_image_path(lfw_dir, name, _number(n2, path, number)), True)
        elif not same and len(fields) == 4:
            name1, n1, name2, n2 = fields
            pair = Pair(lfw_image_path(lfw_dir, name1, _number(n1, path, number)),
                        lfw_image_path(lfw_dir, name2, _number(n2, path, number)), False)
        else:
            wanted = "matched 'Name n1 n2'" if same else "mismatched 'Name1 n1 Name2 n2'"
            raise PairsError(path, number, f"expected a {wanted} line (fold {fold + 1}), got {' '.join(fields)!r}")
        pairs.append(pair)
        folds.append(fold)
    if len(body) < expected:
        raise PairsError(path, 0, f"header promises {expected} pair lines, the file has {len(body)}")
    if len(body) > expected:
        raise PairsError(path, body[expected][0], f"extra line after the {expected} pairs the header promises")
    return pairs, np.asarray(folds, dtype=np.int64), n_folds


def stratified_folds(same: np.ndarray, k: int = N_FOLDS) -> np.ndarray:
    """Fold index per pair, dealing matched and mismatched pairs round-robin so every fold has both."""
    same = np.asarray(same, dtype=bool)
    folds = np.empty(len(same), dtype=np.int64)
    for cls in (True, False):
        members = np.flatnonzero(same == cls)
        folds[members] = np.arange(len(members)) % k
    return folds


def read_pairs(path: str | Path, lfw_dir: str | Path = "") -> tuple[list[Pair], np.ndarray]:
    """Pairs of an LFW pairs file and the fold of each pair, ready for `kfold_accuracy`.

    A View 2 file keeps its own folds; a single-fold file (View 1) is split into N_FOLDS stratified folds
    (fewer if a class has fewer pairs).
    """
    pairs, folds, n_folds = parse_pairs(path, lfw_dir)
    return pairs, (folds if n_folds >= 2 else _within_set_folds(pairs))


def _within_set_folds(pairs: list[Pair]) -> np.ndarray:
    same = np.array([p.same for p in pairs])
    return stratified_folds(same, max(2, min(N_FOLDS, int(same.sum()), int((~same).sum()))))


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- embedding the images


@dataclass
class ImageEmbeddings:
    """One unit vector per readable image; images whose face needed a fallback (and which); unreadable ones."""

    vectors: dict[Path, np.ndarray] = field(default_factory=dict)
    recovered: dict[Path, str] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)


def embed_images(paths: list[Path], pipeline: FacePipeline, flip: bool = False) -> ImageEmbeddings:
    """Embed the subject of every image: the face nearest the centre (LFW crops are centred on the named person;
    the largest face is sometimes a bystander), never none (the pipeline's fallback chain ends in a centre box).

    `flip` averages dlib chips at TTA_PADDINGS and every chip's mirror (6 forward passes per image).
    Unreadable images are logged and skipped.
    """
    result = ImageEmbeddings()
    found = pipeline.embed_photos(paths, "centre", last_resort=True, tta=flip, desc="embedding images")
    for path, photo in found.items():
        subject = photo.subject
        if photo.vector is None:
            log.warning("%s: %s", path, subject.reason)
            result.failed[path] = subject.reason
            continue
        result.vectors[path] = photo.vector
        if subject.how != "detected":
            result.recovered[path] = subject.how
            log.info("%s: no face found by %s; %s", path, pipeline.detector.kind, HOW_TEXT[subject.how])
    return result


def pair_distances(
    pairs: list[Pair], found: ImageEmbeddings, what: str = "pairs"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distances, same, indexes) of the pairs whose two images were embedded; ValueError if a class is empty."""
    usable = np.array([i for i, p in enumerate(pairs) if p.a in found.vectors and p.b in found.vectors], np.int64)
    same = np.array([pairs[i].same for i in usable], dtype=bool)
    if not same.any() or same.all():
        raise ValueError(f"too few readable images: the usable {what} need both matched and mismatched pairs")
    a = np.stack([found.vectors[pairs[i].a] for i in usable]).astype(np.float64)
    b = np.stack([found.vectors[pairs[i].b] for i in usable]).astype(np.float64)
    return np.linalg.norm(a - b, axis=1), same, usable


# --------------------------------------------------------------------------- the report


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


def save_roc_png(path: str | Path, distances, same, title: str) -> None:
    """The ROC curve (linear and log FAR) with the EER point, written atomically as a PNG."""
    from matplotlib.figure import Figure

    from facenet.files import atomic_write

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


def format_report(report: dict) -> str:
    """The human-readable LFW report."""
    how = ", ".join(f"{n} {HOW_TEXT[k]}" for k, n in report["fallback"].items() if n)
    if report["threshold_from"] == "cross-validation":
        accuracy_how = f"{report['folds']}-fold, {report['protocol']}; threshold chosen on the other folds"
        threshold_how = "best on all pairs"
    else:
        accuracy_how = f"threshold from {report['threshold_from']}; {report['folds']} folds"
        threshold_how = f"from {report['threshold_from']}; best on these pairs {report['best_threshold']:.4f}"
    lines = [
        f"LFW verification on {report['pairs_file']}: {report['matched']} matched + {report['mismatched']} "
        f"mismatched pairs, {report['images']} images"
        + (", flip TTA (3 paddings x mirror, 6 passes)" if report["flip"] else ""),
        f"  accuracy       {report['accuracy']:.2%} ± {report['accuracy_std']:.2%}  ({accuracy_how})",
    ]
    if report["threshold_from"] != "cross-validation":
        lines.append(f"  cross-val.     {report['cv_accuracy']:.2%} ± {report['cv_accuracy_std']:.2%}  "
                     f"({report['folds']}-fold within {report['pairs_file']})")
    lines += [
        f"  AUC            {report['auc']:.4f}",
        f"  EER            {report['eer']:.2%}",
        f"  TAR@FAR=1e-3   {report['tar_at_far_1e-3']:.2%} (ROC interpolated; best real threshold with "
        f"FAR <= 1e-3: {report['tar_at_far_1e-3_floor']:.2%})",
        f"  threshold      {report['threshold']:.4f} ({threshold_how}; {report['threshold_accuracy']:.2%} correct)",
        f"  no face        {report['no_face']} of {report['images']} images" + (f": {how}" if how else ""),
    ]
    if report["unreadable"]:
        lines.append(f"  unreadable     {report['unreadable']} images; {report['excluded_pairs']} pairs excluded")
    if report.get("roc_png"):
        lines.append(f"  ROC curve      {report['roc_png']}")
    lines.append(f"  time           {report['seconds']:.1f} s for {report['embedded']} images"
                 f" ({report['images_per_second']:.1f} images/s, start-up excluded)")
    return "\n".join(lines)


def evaluate_pairs(
    pairs: list[Pair],
    folds: np.ndarray,
    pipeline: FacePipeline,
    flip: bool = False,
    train_pairs: list[Pair] | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Embed every distinct image once, then score the pairs whose two images could be read.

    With `train_pairs`, the threshold is the best one on those pairs (LFW's train/test protocol) instead of
    cross-validation. Returns the report (metrics + counts) and the distances and labels of the pairs used.
    Raises ValueError when the usable pairs lack a class.
    """
    start = time.perf_counter()
    test_paths = list(dict.fromkeys(p for pair in pairs for p in (pair.a, pair.b)))
    train_paths = list(dict.fromkeys(p for pair in train_pairs or [] for p in (pair.a, pair.b)))
    found = embed_images(list(dict.fromkeys(test_paths + train_paths)), pipeline, flip)
    distances, same, usable = pair_distances(pairs, found, "test pairs")
    excluded = len(pairs) - len(usable)
    if excluded:
        log.warning("%d of %d pairs excluded: they use unreadable images", excluded, len(pairs))
    threshold, extra = None, {}
    if train_pairs:
        train_distances, train_same, train_usable = pair_distances(train_pairs, found, "train pairs")
        threshold, train_accuracy = best_threshold(train_distances, train_same)
        extra = {
            "train_pairs": len(train_usable),
            "train_accuracy": train_accuracy,
            "train_images": sum(p in found.vectors for p in train_paths),
            "train_no_face": sum(p in found.recovered for p in train_paths),
        }
    report = verification_metrics(distances, same, np.asarray(folds)[usable], threshold)
    seconds = time.perf_counter() - start
    fallback = Counter(found.recovered[p] for p in test_paths if p in found.recovered)
    report.update(
        images=sum(p in found.vectors for p in test_paths),
        no_face=sum(fallback.values()),
        fallback={k: fallback.get(k, 0) for k in HOW_TEXT},
        unreadable=sum(p in found.failed for p in test_paths),
        pairs=len(usable),
        matched=int(same.sum()),
        mismatched=int((~same).sum()),
        excluded_pairs=excluded,
        threshold_from="cross-validation",
        **extra,
        flip=flip,
        detector=pipeline.detector.kind,
        model=pipeline.model,
        model_id=pipeline.model_id,
        embedded=len(found.vectors),
        seconds=round(seconds, 2),
        images_per_second=round(len(found.vectors) / seconds, 2),
    )
    return report, distances, same


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _load_pairs(pairs: str, lfw_dir: str) -> tuple[list[Pair], np.ndarray, int] | str:
    """parse_pairs, or the one-line error message."""
    try:
        return parse_pairs(pairs, lfw_dir)
    except FileNotFoundError:
        return f"{pairs}: pairs file not found"
    except IsADirectoryError:
        return f"{pairs}: is a directory, not a pairs file"
    except (OSError, UnicodeDecodeError) as error:
        return f"{pairs}: cannot read pairs file ({error})"
    except PairsError as error:
        return str(error)


def lfw_command(
    pairs: str,
    lfw_dir: str | None,
    flip: bool,
    as_json: bool,
    detector: str,
    model: str,
    weights_dir: str,
    roc_png: str | None,
    train_pairs: str | None = None,
    pretrained: bool = False,
) -> int:
    """`main.py --lfw_pairs`: the LFW verification report (stdout, or stderr + one JSON line with --json).

    The threshold is cross-validated within `pairs`, or taken from `train_pairs` when given. Exit codes:
    0 done; 2 bad input (missing file or folder, malformed pairs file, none of the images there);
    1 too few readable images to score. Pairs whose images cannot be read are reported and excluded.
    """
    if not lfw_dir:
        return _fail("--lfw_dir is required with --lfw_pairs (the folder holding <Name>/<Name>_<NNNN>.jpg)", 2)
    if not Path(lfw_dir).is_dir():
        return _fail(f"{lfw_dir}: LFW image folder not found", 2)
    parsed = _load_pairs(pairs, lfw_dir)
    if isinstance(parsed, str):
        return _fail(parsed, 2)
    pair_list, folds, file_folds = parsed
    train_list = None
    if train_pairs:
        parsed_train = _load_pairs(train_pairs, lfw_dir)
        if isinstance(parsed_train, str):
            return _fail(parsed_train, 2)
        train_list = parsed_train[0]
    if file_folds < 2:
        folds = _within_set_folds(pair_list)
    paths = {p for pair in pair_list for p in (pair.a, pair.b)}
    if not any(p.is_file() for p in paths):
        example = min(paths)
        return _fail(f"{lfw_dir}: none of the {len(paths)} images of {pairs} is there (e.g. {example})", 2)

    from facenet.pipeline import FacePipeline

    try:
        pipeline = FacePipeline(detector, model, weights_dir, pretrained)
        report, distances, same = evaluate_pairs(pair_list, folds, pipeline, flip, train_list)
    except (ValueError, RuntimeError) as error:
        return _fail(str(error), 1)
    report["pairs_file"] = str(pairs)
    report["protocol"] = "folds of the file" if file_folds >= 2 else "stratified folds within the single set"
    if train_pairs:
        report["threshold_from"] = str(train_pairs)
    report["roc_png"] = None
    if roc_png:
        title = f"LFW {Path(pairs).name}, {model} + {detector}" + (" (flip TTA)" if flip else "")
        try:
            save_roc_png(roc_png, distances, same, title)
            report["roc_png"] = str(roc_png)
        except OSError as error:
            log.warning("%s: could not save the ROC curve (%s)", roc_png, error)
    print(format_report(report), file=sys.stderr if as_json else sys.stdout)
    if as_json:
        from facenet.console import emit_json

        emit_json(report)
    return 0
