"""The LFW verification benchmark: pairs files, embedding their images, and the report's numbers.

A pairs file + an image root -> one embedding per distinct image -> pair distances -> the metrics of
facenet.eval.metrics (10-fold accuracy, ROC, AUC, EER, TAR@FAR). Returns values and raises errors; the command
(facenet/cli/lfw_command.py) prints them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from facenet.config import HOW_TEXT
from facenet.eval.metrics import N_FOLDS, best_threshold, stratified_folds, verification_metrics

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)


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


def read_pairs(path: str | Path, lfw_dir: str | Path = "") -> tuple[list[Pair], np.ndarray]:
    """Pairs of an LFW pairs file and the fold of each pair, ready for `kfold_accuracy`.

    A View 2 file keeps its own folds; a single-fold file (View 1) is split into N_FOLDS stratified folds
    (fewer if a class has fewer pairs).
    """
    pairs, folds, n_folds = parse_pairs(path, lfw_dir)
    return pairs, (folds if n_folds >= 2 else within_set_folds(pairs))


def within_set_folds(pairs: list[Pair]) -> np.ndarray:
    """Stratified folds for a single-set pairs file: N_FOLDS, fewer when a class has fewer pairs (at least 2)."""
    same = np.array([p.same for p in pairs])
    return stratified_folds(same, max(2, min(N_FOLDS, int(same.sum()), int((~same).sum()))))


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


def _unique_paths(pairs: list[Pair] | None) -> list[Path]:
    return list(dict.fromkeys(p for pair in pairs or [] for p in (pair.a, pair.b)))


def _train_threshold(train_pairs: list[Pair], found: ImageEmbeddings) -> tuple[float, dict]:
    """The best threshold on the train pairs (LFW's train/test protocol), and the report's train_* numbers."""
    distances, same, usable = pair_distances(train_pairs, found, "train pairs")
    threshold, accuracy = best_threshold(distances, same)
    paths = _unique_paths(train_pairs)
    return threshold, {
        "train_pairs": len(usable),
        "train_accuracy": accuracy,
        "train_images": sum(p in found.vectors for p in paths),
        "train_no_face": sum(p in found.recovered for p in paths),
    }


def _image_counts(paths: list[Path], found: ImageEmbeddings) -> dict:
    """Images embedded, recovered by a fallback (and which), unreadable."""
    fallback = Counter(found.recovered[p] for p in paths if p in found.recovered)
    return {
        "images": sum(p in found.vectors for p in paths),
        "no_face": sum(fallback.values()),
        "fallback": {k: fallback.get(k, 0) for k in HOW_TEXT},
        "unreadable": sum(p in found.failed for p in paths),
    }


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
    test_paths = _unique_paths(pairs)
    found = embed_images(list(dict.fromkeys(test_paths + _unique_paths(train_pairs))), pipeline, flip)
    distances, same, usable = pair_distances(pairs, found, "test pairs")
    excluded = len(pairs) - len(usable)
    if excluded:
        log.warning("%d of %d pairs excluded: they use unreadable images", excluded, len(pairs))
    threshold, train = _train_threshold(train_pairs, found) if train_pairs else (None, {})
    report = verification_metrics(distances, same, np.asarray(folds)[usable], threshold)
    seconds = time.perf_counter() - start
    report.update(
        **_image_counts(test_paths, found),
        pairs=len(usable),
        matched=int(same.sum()),
        mismatched=int((~same).sum()),
        excluded_pairs=excluded,
        threshold_from="cross-validation",
        **train,
        flip=flip,
        detector=pipeline.detector.kind,
        model=pipeline.model,
        model_id=pipeline.model_id,
        embedded=len(found.vectors),
        seconds=round(seconds, 2),
        images_per_second=round(len(found.vectors) / seconds, 2),
    )
    return report, distances, same
