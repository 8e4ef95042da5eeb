"""`--lfw_pairs P --lfw_dir D`: the LFW verification report on stdout (on stderr, plus one JSON line, with --json)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facenet.cli import common
from facenet.cli.console import emit_json, error
from facenet.cli.exit_codes import Exit
from facenet.config import HOW_TEXT
from facenet.eval.lfw import Pair, PairsError, evaluate_pairs, parse_pairs, within_set_folds

log = logging.getLogger(__name__)


@dataclass
class Benchmark:
    """The checked inputs of a run: test pairs and their folds, the file's own fold count, optional train pairs."""

    pairs: list[Pair]
    folds: np.ndarray
    file_folds: int
    train_pairs: list[Pair] | None


def _load_pairs(pairs: str, lfw_dir: str) -> tuple[list[Pair], np.ndarray, int] | str:
    """parse_pairs, or the one-line error message."""
    try:
        return parse_pairs(pairs, lfw_dir)
    except FileNotFoundError:
        return f"{pairs}: pairs file not found"
    except IsADirectoryError:
        return f"{pairs}: is a directory, not a pairs file"
    except (OSError, UnicodeDecodeError) as problem:
        return f"{pairs}: cannot read pairs file ({problem})"
    except PairsError as problem:
        return str(problem)


def _check_inputs(pairs: str, lfw_dir: str | None, train_pairs: str | None) -> Benchmark | str:
    """The pairs to score, or the one-line reason they cannot be (a missing folder or file, a malformed file,
    none of the images there)."""
    if not lfw_dir:
        return "--lfw_dir is required with --lfw_pairs (the folder holding <Name>/<Name>_<NNNN>.jpg)"
    if not Path(lfw_dir).is_dir():
        return f"{lfw_dir}: LFW image folder not found"
    parsed = _load_pairs(pairs, lfw_dir)
    if isinstance(parsed, str):
        return parsed
    pair_list, folds, file_folds = parsed
    train_list = None
    if train_pairs:
        parsed_train = _load_pairs(train_pairs, lfw_dir)
        if isinstance(parsed_train, str):
            return parsed_train
        train_list = parsed_train[0]
    paths = {p for pair in pair_list for p in (pair.a, pair.b)}
    if not any(p.is_file() for p in paths):
        return f"{lfw_dir}: none of the {len(paths)} images of {pairs} is there (e.g. {min(paths)})"
    if file_folds < 2:
        folds = within_set_folds(pair_list)
    return Benchmark(pair_list, folds, file_folds, train_list)


def _save_roc(roc_png: str, distances: np.ndarray, same: np.ndarray, title: str) -> str | None:
    """The ROC curve saved to `roc_png` (its path), or None with a warning when it cannot be written."""
    from facenet.eval.plot import save_roc_png  # matplotlib: only when a curve is asked for

    try:
        save_roc_png(roc_png, distances, same, title)
    except OSError as problem:
        log.warning("%s: could not save the ROC curve (%s)", roc_png, problem)
        return None
    return str(roc_png)


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
    trained_dir: str | None = None,
) -> int:
    """`main.py --lfw_pairs`: the LFW verification report (stdout, or stderr + one JSON line with --json).

    `trained_dir`: the gallery whose fine-tuned weights to use (None: pretrained). The threshold is cross-
    validated within `pairs`, or taken from `train_pairs` when given. Exit codes:
    0 done; 2 bad input (missing file or folder, malformed pairs file, none of the images there);
    1 too few readable images to score. Pairs whose images cannot be read are reported and excluded.
    """
    benchmark = _check_inputs(pairs, lfw_dir, train_pairs)
    if isinstance(benchmark, str):
        return error(benchmark, Exit.USAGE)
    try:
        pipeline = common.load_pipeline(detector, model, weights_dir, trained_dir)
        report, distances, same = evaluate_pairs(benchmark.pairs, benchmark.folds, pipeline, flip,
                                                 benchmark.train_pairs)
    except (ValueError, RuntimeError) as problem:
        return error(str(problem), Exit.FAILED)
    report["pairs_file"] = str(pairs)
    report["protocol"] = ("folds of the file" if benchmark.file_folds >= 2 else
                          "stratified folds within the single set")
    if train_pairs:
        report["threshold_from"] = str(train_pairs)
    report["roc_png"] = None
    if roc_png:
        title = f"LFW {Path(pairs).name}, {model} + {detector}" + (" (flip TTA)" if flip else "")
        report["roc_png"] = _save_roc(roc_png, distances, same, title)
    print(format_report(report), file=sys.stderr if as_json else sys.stdout)
    if as_json:
        emit_json(report)
    return Exit.OK


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
