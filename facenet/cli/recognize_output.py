"""What recognition writes: annotated photos under the output folder (names mirroring the inputs), a line or JSON
lines per photo or frame on stdout, the enrollment report and the closing summary on stderr."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm import tqdm

from facenet import config
from facenet.cli.console import emit_json
from facenet.cli.stream_output import Summary
from facenet.config import UNKNOWN
from facenet.detect.face import Recognition
from facenet.files import atomic_write
from facenet.sources import Input
from facenet.text import one_line

if TYPE_CHECKING:
    from facenet.gallery.report import EnrollmentReport

log = logging.getLogger(__name__)

PHOTO_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".webp": "WEBP"}
"""Annotated photos keep their format when Pillow writes it in colour; others are written as PNG."""


class OutputNames:
    """Output paths mirroring the inputs' names under the output folder; never an input, never inside data/."""

    def __init__(self, output_dir: Path, inputs: list[Input], data_dir: Path) -> None:
        self.output_dir = output_dir
        self._inputs = {item.path.resolve() for item in inputs}
        self._data_dir = data_dir.resolve()
        self._taken: set[Path] = set()

    def path_for(self, item: Input, suffix: str) -> Path | None:
        """Where the annotated `item` goes (None, with a warning, when that would be inside the data folder)."""
        base = self.output_dir / item.relative.with_suffix(suffix)
        candidate, n = base, 1
        while candidate.resolve() in self._taken or candidate.resolve() in self._inputs:
            n += 1
            candidate = base.with_name(f"{base.stem}-{n}{suffix}")
        if candidate.resolve().is_relative_to(self._data_dir):
            log.warning("%s: not written, %s is inside the data folder %s", item.source, candidate, self._data_dir)
            return None
        self._taken.add(candidate.resolve())
        return candidate


def photo_suffix(path: Path) -> str:
    """The annotated photo's extension: the input's when Pillow writes that format, else .png."""
    return path.suffix.lower() if path.suffix.lower() in PHOTO_FORMATS else ".png"


def write_photo(path: Path, image: np.ndarray) -> None:
    """An annotated photo, written atomically in the format of its extension (JPEG at quality 92)."""
    fmt = PHOTO_FORMATS[path.suffix.lower()]
    options = {"quality": 92} if fmt == "JPEG" else {}
    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format=fmt, **options))


def emit_results(results: list[Recognition], source: str, frame: int | None) -> None:
    """One JSON line per face."""
    for result in results:
        emit_json(result.record(source, frame))


def emit_no_face(source: str) -> None:
    """--json: the line of a photo, or a whole video, in which no face was found (so every input has a line)."""
    emit_json({"source": source, "frame": None, "faces": 0})


def emit_error(source: str, reason: str) -> None:
    """--json: the line of an input that could not be read."""
    emit_json({"source": source, "error": reason})


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def describe(results: list[Recognition]) -> str:
    """The faces of a photo in words: `Ann (0.31, score 78), Unknown (0.74)`: an Unknown face's distance to the nearest
    enrolled person, no score (that would be the nearest person's: meaningless on a stranger, as on the page)."""
    if not results:
        return "no face found"
    return ", ".join(_words(r) for r in results)


def _words(result: Recognition) -> str:
    if not _finite(result.distance):  # nobody enrolled: the name alone, no made-up number
        return result.name
    if result.name == UNKNOWN or not _finite(result.score):
        return f"{result.name} ({result.distance:.2f})"
    return f"{result.name} ({result.distance:.2f}, score {result.score:.0f})"


def print_photo(results: list[Recognition], source: str, scale: tuple[float, float], as_json: bool) -> None:
    """A photo's faces on stdout: JSON lines (boxes in the file's own pixels), or one line above the progress bar."""
    if as_json:
        emit_results([r.scaled(scale) for r in results], source, None)
        if not results:
            emit_no_face(source)
            log.info("%s: no face found", source)
    else:
        tqdm.write(one_line(f"{source}: {describe(results)}"), file=sys.stdout)


def enrollment_text(report: EnrollmentReport, full: bool) -> str:
    """The enrollment report; only its two summary lines when the database did not change (and not --enroll)."""
    text = report.to_text()
    return text if full or report.saved else "\n".join(text.splitlines()[:2])


def print_enrollment(report: EnrollmentReport, enroll_only: bool, as_json: bool) -> None:
    """--enroll --json: the report as one JSON line; otherwise its text on stderr (in full with --enroll)."""
    if enroll_only and as_json:
        emit_json(report.to_dict())
    else:
        print(enrollment_text(report, full=enroll_only), file=sys.stderr, flush=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary_text(summary: Summary, output_dir: Path | None) -> str:
    """The closing lines: files, frames and faces, who was named, unknowns, errors, where the output went."""
    seconds = time.perf_counter() - summary.started
    unknown = summary.names.get(config.UNKNOWN, 0)
    known = ", ".join(f"{name} x{count}" for name, count in summary.names.most_common() if name != config.UNKNOWN)
    rate = summary.stream_frames / summary.stream_seconds if summary.stream_seconds > 0 else 0.0
    video_rate = f" (video: {rate:.1f} frames/s)" if summary.stream_frames else ""
    files = summary.photos + summary.videos
    lines = [
        f"Done{' (interrupted)' if summary.interrupted else ''}: {_count(files, 'file')} "
        f"({_count(summary.photos, 'photo')}, {_count(summary.videos, 'video')}), {_count(summary.frames, 'frame')}, "
        f"{_count(summary.faces, 'face')} in {seconds:.1f} s{video_rate}",
        f"  named: {known or 'nobody'}",
        f"  unknown: {unknown}",
        f"  errors: {summary.errors}",
    ]
    if output_dir is not None:
        lines.append(f"  annotated output: {output_dir}")
    return "\n".join(lines)


def print_summary(summary: Summary, output_dir: Path | None) -> None:
    print(summary_text(summary, output_dir), file=sys.stderr, flush=True)
