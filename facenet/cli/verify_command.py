"""`facenet --verify=A.jpg,B.jpg`: are the largest faces of two photos the same person?"""

from __future__ import annotations

import logging
from pathlib import Path

from facenet.cli import common
from facenet.cli.console import emit_json, error
from facenet.cli.exit_codes import Exit
from facenet.verify import UnverifiablePhotos, verify_photos

log = logging.getLogger(__name__)


def _fail(message: str, lines: list[str], as_json: bool) -> int:
    """Each line logged as an error; with --json also the one answer on stdout, `{"error": message}`. Exit 1."""
    for line in lines:
        log.error("%s", line)
    if as_json:
        emit_json({"error": message})
    return Exit.FAILED


def verify_command(
    paths: list[str],
    as_json: bool,
    threshold: float | None,
    detector: str,
    model: str,
    weights_dir: str | Path,
    trained_dir: str | Path | None = None,
    prog: str = "facenet",
) -> int:
    """`--verify=A.jpg,B.jpg`: are the largest faces of two photos the same person?

    `trained_dir`: the gallery whose fine-tuned weights to use (None: pretrained). Prints same/different and the
    distance (with --json one object: same, distance, threshold; or, when the model
    or a photo fails, {"error": …}). Exit codes: 0 answered, 1 the model cannot be loaded or a photo is unreadable
    or has no face (named on stderr), 2 bad arguments. `prog` names the command in the usage line.
    """
    if len(paths) != 2:
        return error(f"{prog} --verify=A.jpg,B.jpg (exactly two photos, got {len(paths)})", Exit.USAGE, prefix="usage")
    problem = common.threshold_problem(threshold)
    if problem:
        return error(problem)
    try:
        pipeline = common.load_pipeline(detector, model, weights_dir, trained_dir)
    except (OSError, ValueError, RuntimeError) as failure:
        message = f"cannot load the model: {failure}"
        return _fail(message, [message], as_json)
    try:
        answer = verify_photos(pipeline, paths, threshold)
    except UnverifiablePhotos as failure:
        return _fail(str(failure), failure.problems, as_json)
    if as_json:
        emit_json({"same": answer.same, "distance": round(answer.distance, 4), "threshold": answer.threshold})
    else:
        verdict = "same person" if answer.same else "different people"
        sign = "<=" if answer.same else ">"
        print(f"{verdict}: distance {answer.distance:.3f} {sign} threshold {answer.threshold:.3f}  "
              f"({paths[0]} vs {paths[1]})")
    return Exit.OK
