"""Recognition: name every face in photos, folders, videos and the webcam; and 1:1 verification of two photos.

Per frame: detect (video frames on a downscaled copy), embed all faces in one batch, one database lookup.
Outputs: annotated photos/videos in the output folder (names mirror the inputs), JSON lines on stdout with
--json, a progress bar and a summary on stderr. Bad inputs get one line each and the run goes on.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from facenet import config
from facenet.console import emit_json, progress
from facenet.draw import Label, Window, annotate
from facenet.images import ImageError
from facenet.sources import Input, SourceError, VideoSource, collect_inputs, read_photo

if TYPE_CHECKING:
    from facenet.database import EnrollmentReport, FaceDatabase
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)

PHOTO_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".webp": "WEBP"}
"""Annotated photos keep their format when Pillow writes it in colour; others are written as PNG."""

WINDOW_TITLE = "facenet (q or Esc quits)"


@dataclass(frozen=True)
class Recognition:
    """One face of a frame: its box (left, top, right, bottom), name (config.UNKNOWN when rejected),
    distance to the nearest enrolled person and 0-100 match score (both None when nobody is enrolled)."""

    box: tuple[int, int, int, int]
    name: str
    distance: float | None
    score: float | None

    def record(self, source: str, frame: int | None) -> dict:
        """The JSON line of this face (non-finite numbers become null: JSON has no NaN)."""
        return {
            "source": source,
            "frame": frame,
            "box": [int(v) for v in self.box],
            "name": self.name,
            "distance": round(self.distance, 4) if _finite(self.distance) else None,
            "score": round(self.score, 1) if _finite(self.score) else None,
        }

    def label(self) -> Label:
        return Label(self.box, self.name, self.distance)

    def scaled(self, scale: tuple[float, float]) -> Recognition:
        """The same face with its box in pixels scaled by (x, y): back to a downscaled photo's own pixels."""
        if scale == (1.0, 1.0):
            return self
        (sx, sy), (left, top, right, bottom) = scale, self.box
        box = (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))
        return Recognition(box, self.name, self.distance, self.score)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class Recognizer:
    """Names every face of a frame with one batched embedding and one database lookup.

    Video frames (`video=True`) are detected as `FacePipeline.detect` does for video, and a frame that is
    unchanged since the last analysed one reuses its results (`reuse_still`).
    """

    def __init__(
        self,
        pipeline: FacePipeline,
        database: FaceDatabase,
        threshold: float | None = None,
        reuse_still: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.database = database
        self.threshold = threshold
        self.reuse_still = reuse_still
        self.analysed = 0
        self.reused = 0
        self._thumb: np.ndarray | None = None
        self._last: list[Recognition] = []

    def reset(self) -> None:
        """Forget the previous frame (call between videos)."""
        self._thumb, self._last = None, []

    def _still(self, image: np.ndarray) -> bool:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(grey, config.STILL_THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.int16)
        previous, self._thumb = self._thumb, thumb
        if previous is None or previous.shape != thumb.shape:
            return False
        if int(np.abs(thumb - previous).max()) <= config.STILL_MAX_DIFF:
            self._thumb = previous  # compare with the analysed frame, so slow drift cannot accumulate
            return True
        return False

    def recognize(self, image: np.ndarray, video: bool = False) -> list[Recognition]:
        """Every face of an RGB frame, largest first, named."""
        if video and self.reuse_still and self._still(image):
            self.reused += 1
            return self._last
        self.analysed += 1
        faces = self.pipeline.detect(image, video=video)
        results = []
        if faces and len(self.database) == 0:
            results = [Recognition(f.box, config.UNKNOWN, None, None) for f in faces]
        elif faces:
            matches = self.database.identify(self.pipeline.embed(image, faces), self.threshold)
            results = [Recognition(f.box, m.name, m.distance, m.score) for f, m in zip(faces, matches, strict=True)]
        self._last = results
        return results


@dataclass
class Summary:
    """Counts for the closing lines on stderr."""

    photos: int = 0
    videos: int = 0
    frames: int = 0
    faces: int = 0
    names: Counter = field(default_factory=Counter)
    errors: int = 0
    interrupted: bool = False
    started: float = field(default_factory=time.perf_counter)
    stream_frames: int = 0
    stream_seconds: float = 0.0
    """Video/webcam frames and the seconds spent on them: the frame rate of the video loop alone."""

    def add(self, results: Iterable[Recognition]) -> None:
        self.frames += 1
        for result in results:
            self.faces += 1
            self.names[result.name] += 1

    def to_text(self, output_dir: Path | None) -> str:
        seconds = time.perf_counter() - self.started
        unknown = self.names.get(config.UNKNOWN, 0)
        known = ", ".join(f"{name} x{count}" for name, count in self.names.most_common() if name != config.UNKNOWN)
        rate = self.stream_frames / self.stream_seconds if self.stream_seconds > 0 else 0.0
        video_rate = f" (video: {rate:.1f} frames/s)" if self.stream_frames else ""
        lines = [
            f"Done{' (interrupted)' if self.interrupted else ''}: {_count(self.photos + self.videos, 'file')} "
            f"({_count(self.photos, 'photo')}, {_count(self.videos, 'video')}), {_count(self.frames, 'frame')}, "
            f"{_count(self.faces, 'face')} in {seconds:.1f} s{video_rate}",
            f"  named: {known or 'nobody'}",
            f"  unknown: {unknown}",
            f"  errors: {self.errors}",
        ]
        if output_dir is not None:
            lines.append(f"  annotated output: {output_dir}")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _bad_threshold(threshold: float | None) -> bool:
    return threshold is not None and not (0.0 < threshold <= 2.0)


def load_pipeline(detector: str, model: str, weights_dir: str | Path, pretrained: bool = False) -> FacePipeline:
    """The face pipeline of the commands. TensorFlow is imported only here: argument errors, a missing camera or
    photo fail in a fraction of a second."""
    from facenet.pipeline import FacePipeline

    return FacePipeline(detector, model, weights_dir, pretrained)


def _write_photo(path: Path, image: np.ndarray) -> None:
    from facenet.files import atomic_write

    fmt = PHOTO_FORMATS[path.suffix.lower()]
    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format=fmt, **({"quality": 92} if fmt == "JPEG"
                                                                                      else {})))


def _emit(results: list[Recognition], source: str, frame: int | None) -> None:
    for result in results:
        emit_json(result.record(source, frame))


def _describe(results: list[Recognition]) -> str:
    if not results:
        return "no face found"
    return ", ".join(f"{r.name} ({r.distance:.2f}, score {r.score:.0f})" if _finite(r.distance) and _finite(r.score)
                     else r.name for r in results)  # nobody enrolled: the name alone, no made-up number


def _run_photo(item: Input, recognizer: Recognizer, names: OutputNames, summary: Summary, as_json: bool) -> None:
    try:
        frame = read_photo(item)
    except ImageError as error:
        log.warning("%s", error)
        summary.errors += 1
        return
    results = recognizer.recognize(frame.image)
    summary.photos += 1
    summary.add(results)
    if as_json:
        _emit([r.scaled(frame.scale) for r in results], item.source, None)
        if not results:
            log.info("%s: no face found", item.source)
    else:
        tqdm.write(f"{item.source}: {_describe(results)}", file=sys.stdout)
    suffix = item.path.suffix.lower() if item.path.suffix.lower() in PHOTO_FORMATS else ".png"
    out = names.path_for(item, suffix)
    if out is not None:
        try:
            _write_photo(out, annotate(frame.image, [r.label() for r in results]))
        except OSError as error:
            log.warning("%s: cannot write %s (%s)", item.source, out, error)
            summary.errors += 1


def recognize_stream(
    video: VideoSource,
    recognizer: Recognizer,
    summary: Summary,
    as_json: bool,
    out: Path | None,
    window: Window | None,
    max_frames: int | None = None,
) -> None:
    """Recognise every frame of a video or camera; write the annotated stream to `out` (atomically) and/or show it.

    Stops at the end, at `max_frames`, on q/Esc in the window, or on Ctrl-C (what was written is kept).
    """
    from facenet.files import atomic_write

    recognizer.reset()
    started, first_frame = time.perf_counter(), summary.frames

    def loop(target: Path | None) -> None:
        writer = None
        frames = progress(video, desc=Path(video.source).name or video.source,
                          total=video.frame_count, unit="frame")
        try:
            for frame in frames:
                results = recognizer.recognize(frame.image, video=True)
                summary.add(results)
                if as_json:
                    _emit(results, video.source, frame.index)
                annotated = annotate(frame.image, [r.label() for r in results])
                if target is not None:
                    if writer is None:
                        height, width = annotated.shape[:2]
                        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), video.fps,
                                                 (width, height))
                        if not writer.isOpened():
                            raise SourceError(video.source, f"cannot write the annotated video {out}")
                    writer.write(cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
                if window is not None and not window.show(annotated):
                    log.info("%s: stopped from the window", video.source)
                    break
                if window is not None and window.failed and target is None:
                    break
                if max_frames is not None and video.frames_read >= max_frames:
                    log.info("%s: stopped after %d frames", video.source, max_frames)
                    break
        except KeyboardInterrupt:
            summary.interrupted = not video.live
            log.info("%s: stopped (Ctrl-C)", video.source)
        finally:
            if writer is not None:
                writer.release()
        if video.frames_read == 0:
            raise SourceError(video.source, "no frame could be decoded")

    try:
        if out is None:
            loop(None)
        else:
            atomic_write(out, loop)
    finally:
        summary.stream_frames += summary.frames - first_frame
        summary.stream_seconds += time.perf_counter() - started


def _run_video(
    item: Input, recognizer: Recognizer, names: OutputNames, summary: Summary, as_json: bool, window: Window | None
) -> None:
    try:
        with VideoSource.open_file(item.path, item.source) as video:
            out = names.path_for(item, ".mp4")
            recognize_stream(video, recognizer, summary, as_json, out, window)
    except SourceError as error:
        log.warning("%s", error)
        summary.errors += 1
        return
    except OSError as error:
        log.warning("%s: cannot write the annotated video (%s)", item.source, error)
        summary.errors += 1
        return
    summary.videos += 1


def _sync(
    data_dir: str | Path, database_dir: str | Path, pipeline: FacePipeline
) -> tuple[FaceDatabase, EnrollmentReport]:
    from facenet.database import sync_database

    return sync_database(data_dir, database_dir, pipeline)


def _report_text(report: EnrollmentReport, full: bool) -> str:
    """The enrollment report; only its two summary lines when the database did not change (and not --enroll)."""
    text = report.to_text()
    return text if full or report.saved else "\n".join(text.splitlines()[:2])


def recognize_command(
    web_cam: bool,
    inputs: list[str],
    camera: int,
    output_dir: str | Path,
    data_dir: str | Path,
    database_dir: str | Path,
    weights_dir: str | Path,
    model: str,
    detector: str,
    threshold: float | None,
    as_json: bool,
    enroll_only: bool,
    pretrained: bool = False,
) -> int:
    """`python main.py -t False`: sync the database with data/, then name every face of the inputs or webcam.

    Exit codes: 0 done, 1 some input or the camera failed (each named on stderr), 2 bad arguments, 130 Ctrl-C.
    """
    if _bad_threshold(threshold):
        return _usage_error(f"--threshold must be in (0, 2] (unit-sphere distance), got {threshold}")
    output_dir, data_dir = Path(output_dir), Path(data_dir)
    if not enroll_only and output_dir.resolve().is_relative_to(data_dir.resolve()):
        return _usage_error(f"--output_dir {output_dir} is inside --data_dir {data_dir} (never written to)")
    summary = Summary()
    camera_source: VideoSource | None = None
    items: list[Input] = []
    if not enroll_only and web_cam:
        try:
            camera_source = VideoSource.open_camera(camera)
        except SourceError as error:
            log.error("%s", error)
            return 1
    elif not enroll_only:
        items, errors = collect_inputs(inputs, exclude=[output_dir])
        for error in errors:
            log.warning("%s", error)
        summary.errors += len(errors)
        if not items:
            log.error("nothing to recognise in %s (no photos or videos found)", ", ".join(map(str, inputs)))
            return 1
    try:
        try:
            pipeline = load_pipeline(detector, model, weights_dir, pretrained)
            database, report = _sync(data_dir, database_dir, pipeline)
        except (OSError, ValueError, RuntimeError) as error:
            log.error("cannot load the model or the database: %s", error)
            return 1
        if enroll_only and as_json:
            emit_json(report.to_dict())
        else:
            print(_report_text(report, full=enroll_only), file=sys.stderr, flush=True)
        if enroll_only:
            return 0
        if len(database) == 0:
            log.warning("nobody is enrolled: every face is Unknown (add photos to %s/<person name>/)", data_dir)
        recognizer = Recognizer(pipeline, database, threshold)
        if camera_source is not None:
            return _run_webcam(camera_source, recognizer, summary, as_json, output_dir)
        return _run_inputs(items, recognizer, summary, as_json, output_dir, data_dir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if camera_source is not None:
            camera_source.close()


def _run_inputs(
    items: list[Input], recognizer: Recognizer, summary: Summary, as_json: bool, output_dir: Path, data_dir: Path
) -> int:
    names = OutputNames(output_dir, items, data_dir)
    window = None
    if any(item.kind == "video" for item in items):
        window, problem = Window.open(WINDOW_TITLE)
        if problem:
            log.info("%s: annotated videos are written to %s without a preview window", problem, output_dir)
    photos = [item for item in items if item.kind == "photo"]
    try:
        for item in progress(photos, desc="photos", unit="photo") if len(photos) > 1 else photos:
            _run_photo(item, recognizer, names, summary, as_json)
        for item in (item for item in items if item.kind == "video"):
            if summary.interrupted:
                break
            _run_video(item, recognizer, names, summary, as_json, window)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if window is not None:
            window.close()
    print(summary.to_text(output_dir), file=sys.stderr, flush=True)
    if summary.interrupted:
        return 130
    return 1 if summary.errors else 0


def _run_webcam(
    camera: VideoSource, recognizer: Recognizer, summary: Summary, as_json: bool, output_dir: Path
) -> int:
    window, problem = Window.open(WINDOW_TITLE)
    out = None
    if window is None:
        out = output_dir / f"webcam{camera.source.removeprefix('camera ')}.mp4"
        log.warning("%s: writing the annotated webcam stream to %s (stops after %d frames, or Ctrl-C)",
                    problem, out, config.HEADLESS_WEBCAM_FRAMES)
    try:
        recognize_stream(camera, recognizer, summary, as_json, out, window,
                    max_frames=config.HEADLESS_WEBCAM_FRAMES if window is None else None)
    except (SourceError, OSError) as error:
        log.error("%s", error)
        return 1
    finally:
        if window is not None:
            window.close()
    summary.videos += 1
    print(summary.to_text(output_dir if out else None), file=sys.stderr, flush=True)
    return 0


def verify_command(
    paths: list[str],
    as_json: bool,
    threshold: float | None,
    detector: str,
    model: str,
    weights_dir: str | Path,
    pretrained: bool = False,
) -> int:
    """`--verify=A.jpg,B.jpg`: are the largest faces of two photos the same person?

    Prints same/different and the distance (with --json one object: same, distance, threshold; or, when a photo
    fails, {"error": …}). Exit codes: 0 answered, 1 a photo is unreadable or has no face (named on stderr),
    2 bad arguments.
    """
    if len(paths) != 2:
        print(f"usage: python main.py --verify=A.jpg,B.jpg (exactly two photos, got {len(paths)})", file=sys.stderr)
        return 2
    if _bad_threshold(threshold):
        return _usage_error(f"--threshold must be in (0, 2] (unit-sphere distance), got {threshold}")
    try:
        pipeline = load_pipeline(detector, model, weights_dir, pretrained)
    except (OSError, ValueError, RuntimeError) as error:
        log.error("cannot load the model: %s", error)
        return 1
    found = pipeline.embed_photos([Path(p) for p in paths], "largest", desc="verifying")
    errors = [f"{path}: {result.subject.reason}" for path, result in found.items() if result.vector is None]
    for path, result in found.items():
        if result.subject.faces > 1:
            log.info("%s: %d faces, comparing the largest", path, result.subject.faces)
    if errors:
        for error in errors:
            log.error("%s", error)
        if as_json:
            emit_json({"error": "; ".join(errors)})
        return 1
    if threshold is None:
        threshold = round(config.calibration(pipeline.model).verify_threshold * pipeline.embedder.distance_scale, 4)
    first, second = (found[Path(p)].vector for p in paths)
    distance = float(np.linalg.norm(first - second))
    same = distance <= threshold
    if as_json:
        emit_json({"same": same, "distance": round(distance, 4), "threshold": threshold})
    else:
        verdict = "same person" if same else "different people"
        sign = "<=" if same else ">"
        print(f"{verdict}: distance {distance:.3f} {sign} threshold {threshold:.3f}  ({paths[0]} vs {paths[1]})")
    return 0
