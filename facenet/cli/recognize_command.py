"""`facenet -t False`: sync the database with data/, then name every face of photos, folders, videos or the webcam.

Outputs: annotated photos/videos in the output folder (names mirror the inputs), JSON lines on stdout with
--json (one per face; a faceless photo or video `{"source", "frame": null, "faces": 0}`, an unreadable input
`{"source", "error"}`), a progress bar and a summary on stderr. Bad inputs get one line each and the run goes on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from facenet.cli import common
from facenet.cli.console import INTERRUPTED_LINE, emit_json, error
from facenet.cli.event_output import EventSinks, LiveOptions
from facenet.cli.exit_codes import Exit
from facenet.cli.live_command import live_command
from facenet.cli.recognize_output import (
    OutputNames,
    emit_error,
    emit_no_face,
    emit_results,
    photo_suffix,
    print_enrollment,
    print_photo,
    print_summary,
    write_photo,
)
from facenet.cli.stream_output import FrameHook, Summary, recognize_stream
from facenet.draw import Window, annotate
from facenet.files import remove_stale_temps
from facenet.gallery import GalleryOptions, open_gallery
from facenet.gallery.pg import GalleryError
from facenet.gallery.report import EnrollmentReport, SharedSync
from facenet.images import ImageError
from facenet.live.frames import FrameRecognizer
from facenet.live.streams import is_camera_spec, parse_cameras
from facenet.progress import progress
from facenet.recognize import Recognizer
from facenet.settings import KEEP_DAYS, KEEP_FACES
from facenet.sources import Input, SourceError, VideoSource, collect_inputs, read_photo
from facenet.unknowns.collect import Collector
from facenet.unknowns.store import Retention

if TYPE_CHECKING:
    from facenet.gallery.index import FaceDatabase
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)

WINDOW_TITLE = "facenet (q or Esc quits)"

HEADLESS_WEBCAM_FRAMES = 300
"""Without a display the webcam stream is written to the output folder and stops after this many frames."""


@dataclass(frozen=True)
class StreamSetup:
    """What each video or webcam stream of a run gets: its own FrameRecognizer, and the run's event sinks."""

    pipeline: FacePipeline
    database: FaceDatabase
    threshold: float | None
    track: bool
    sinks: EventSinks | None
    collector: Collector | None = None

    def recognizer(self, source: str) -> FrameRecognizer:
        return FrameRecognizer(self.pipeline, self.database, source, self.threshold, self.track,
                               collector=self.collector)

    def on_events(self) -> Callable[[list], None] | None:
        return self.sinks.send if self.sinks is not None else None


def _is_or_inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def output_exclusions(inputs: list[str], output_dir: Path) -> list[Path] | str:
    """What collect_inputs leaves out so that annotated copies are never read back as inputs; or, when the copies
    would land among the photos to recognise, the one-line reason to choose another output folder.

    Usually the whole output folder. When it is an --input folder or holds one (`--input D --output_dir D`), the
    inputs are read and only the folders this run writes into are left out: <output>/<name of each input folder>
    (so `D/D/`, where the copies of D's photos go, and where a previous run left them).
    """
    output = output_dir.resolve()
    folders = [Path(given).resolve() for given in inputs if Path(given).is_dir()]
    if not any(_is_or_inside(folder, output) for folder in folders):
        return [output_dir]
    written = [output / folder.name for folder in folders]
    for target in written:
        clash = next((folder for folder in folders if _is_or_inside(folder, target)), None)
        if clash is not None:
            return (f"--output_dir {output_dir} would write the annotated copies into the --input folder {clash}: "
                    "choose another output folder")
    for target in written:
        if target.is_dir():
            log.info("%s: left out of the inputs (annotated copies of an earlier run)", target)
    return written


def _collect(inputs: list[str], output_dir: Path, summary: Summary, as_json: bool) -> list[Input] | int:
    """The photos and videos to recognise (each missing one named and counted), or the exit code when none."""
    exclude = output_exclusions(inputs, output_dir)
    if isinstance(exclude, str):
        return error(exclude)
    items, errors = collect_inputs(inputs, exclude=exclude)
    for problem in errors:
        log.warning("%s", problem)
        if as_json:
            emit_error(problem.source, problem.reason)
    summary.errors += len(errors)
    if not items:
        log.error("nothing to recognise in %s (no photos or videos found)", ", ".join(map(str, inputs)))
        return Exit.FAILED
    return items


def _open_camera(camera: int) -> VideoSource | None:
    """The webcam; None, with one line naming it, when it cannot be opened."""
    try:
        return VideoSource.open_camera(camera)
    except SourceError as problem:
        log.error("%s", problem)
        return None


def load_recognition(
    detector: str, model: str, weights_dir: str | Path, pretrained: bool, data_dir: Path, database_dir: str | Path,
    enroll_only: bool, as_json: bool, database_url: str | None = None, rebuild_gallery: bool = False,
) -> tuple[FacePipeline, FaceDatabase] | None:
    """The pipeline and the database synced with data/ (its report printed); None, logged, when either fails.

    With `database_url`: `--enroll` syncs data/ into the shared gallery (one of another model is refused unless
    `rebuild_gallery`: dropping it would lose every site's people);
    recognition only reads it (no data/ or database/ needed, nothing pruned).
    """
    options = GalleryOptions(Path(database_dir), database_url, rebuild=rebuild_gallery)
    try:
        pipeline = common.load_pipeline(detector, model, weights_dir, None if pretrained else database_dir)
        with open_gallery(options) as gallery:
            if database_url and not enroll_only:  # a shared gallery is only read by recognition
                database = gallery.load(pipeline)
                print(f"Gallery {gallery.where}: {len(database)} people (read only)", file=sys.stderr)
                return pipeline, database
            report = gallery.sync(data_dir, pipeline)
            database = gallery.load(pipeline)
    except (OSError, ValueError, RuntimeError, GalleryError) as problem:
        log.error("cannot load the model or the database: %s", problem)
        return None
    if report.shared is not None:
        _print_shared_report(report, report.shared, as_json)
        return pipeline, database
    print_enrollment(report, enroll_only, as_json)
    if enroll_only and report.save_error:
        return None  # --enroll exists to save: not saving is a failure (exit 1), named by the sync's warning
    return pipeline, database


def _print_shared_report(report: EnrollmentReport, facts: SharedSync, as_json: bool) -> None:
    """A shared gallery's sync: its summary line (JSON: the PostgreSQL facts as before, plus "enrollment", the
    report every backend gives)."""
    if as_json:
        emit_json(report.to_json())
        return
    print(f"Enrollment into {facts.gallery}: {facts.people} people of this folder, {facts.photos} photos "
          f"({facts.examined} examined now, {facts.reused} reused, {facts.pruned} pruned, "
          f"{len(facts.skipped)} skipped); the gallery holds {facts.gallery_people} people", file=sys.stderr)


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
    database_url: str | None = None,
    rebuild_gallery: bool = False,
    live: LiveOptions | None = None,
    unknown_days: float = KEEP_DAYS,
    unknown_faces: int = KEEP_FACES,
) -> int:
    """`python main.py -t False`: sync the database with data/, then name every face of the inputs, the webcam or
    live cameras (`--input rtsp://…`, see facenet/cli/live_command.py). `unknown_days`, `unknown_faces`: the
    retention of the unknown faces it collects (--unknown_days, --unknown_faces).

    Exit codes: 0 done, 1 some input or the camera failed (each named on stderr), 2 bad arguments, 130 Ctrl-C.
    """
    live = live or LiveOptions()
    problem = common.threshold_problem(threshold) or _cameras_problem(inputs, web_cam or enroll_only)
    if problem:
        return error(problem)
    cameras = not (web_cam or enroll_only) and any(is_camera_spec(given) for given in inputs)
    output_dir, data_dir = Path(output_dir), Path(data_dir)
    if not enroll_only and output_dir.resolve().is_relative_to(data_dir.resolve()):
        return error(f"--output_dir {output_dir} is inside --data_dir {data_dir} (never written to)")
    summary = Summary()
    camera_source: VideoSource | None = None
    items: list[Input] = []
    if not enroll_only and web_cam:
        camera_source = _open_camera(camera)
        if camera_source is None:
            return Exit.FAILED
    elif not enroll_only and not cameras:
        found = _collect(inputs, output_dir, summary, as_json)
        if isinstance(found, int):
            return found
        items = found
    try:
        loaded = load_recognition(detector, model, weights_dir, pretrained, data_dir, database_dir, enroll_only,
                                  as_json, database_url, rebuild_gallery)
        if loaded is None:
            return Exit.FAILED
        if enroll_only:
            return Exit.OK
        pipeline, database = loaded
        if len(database) == 0:
            log.warning("nobody is enrolled: every face is Unknown (add photos to %s/<person name>/)", data_dir)
        live_source = cameras or camera_source is not None
        collector = (Collector(GalleryOptions(Path(database_dir), database_url), pipeline,
                               Retention(unknown_days, unknown_faces)) if live.collecting(live=live_source) else None)
        if cameras:
            return live_command(inputs, pipeline, database, threshold, as_json, output_dir, live, collector)
        _remove_partial_videos(output_dir)
        streams = live.tracking(live=camera_source is not None)
        try:
            sinks = EventSinks(live, output_dir, as_json) if streams else None
        except (OSError, ValueError) as problem:
            log.error("cannot send events: %s", problem)
            return Exit.FAILED
        setup = StreamSetup(pipeline, database, threshold, streams, sinks, collector)
        try:
            if camera_source is not None:
                return _run_webcam(camera_source, setup, summary, as_json, output_dir)
            photos = Recognizer(pipeline, database, threshold, collector=collector, source="photos")
            return _run_inputs(items, photos, setup, summary, as_json, output_dir,
                               data_dir)
        finally:
            if sinks is not None:
                for line in sinks.close():
                    log.warning("%s", line)
    except KeyboardInterrupt:
        print(INTERRUPTED_LINE, file=sys.stderr)
        return Exit.INTERRUPTED
    finally:
        if camera_source is not None:
            camera_source.close()


def _remove_partial_videos(output_dir: Path) -> None:
    """Remove the temp files of annotated videos a killed run left in the output folder (our own names only)."""
    for path in remove_stale_temps(output_dir, ["*.mp4"], recursive=True):
        log.info("%s: removed a partial video left by an interrupted run", path)


def _cameras_problem(inputs: list[str], ignored: bool) -> str | None:
    """Why the live cameras in --input cannot run (a bad spec, or mixed with files); None when fine or none."""
    if ignored or not any(is_camera_spec(given) for given in inputs):
        return None
    if not all(is_camera_spec(given) for given in inputs):
        return "--input mixes live cameras and files: run them in separate commands"
    try:
        parse_cameras(inputs)
    except ValueError as problem:
        return str(problem)
    return None


def _run_inputs(
    items: list[Input], recognizer: Recognizer, setup: StreamSetup, summary: Summary, as_json: bool,
    output_dir: Path, data_dir: Path,
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
            _run_video(item, setup, names, summary, as_json, window)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if window is not None:
            window.close()
    print_summary(summary, output_dir)
    if summary.interrupted:
        return Exit.INTERRUPTED
    return Exit.FAILED if summary.errors else Exit.OK


def _run_photo(item: Input, recognizer: Recognizer, names: OutputNames, summary: Summary, as_json: bool) -> None:
    try:
        frame = read_photo(item)
    except ImageError as problem:
        log.warning("%s", problem)
        if as_json:
            emit_error(item.source, problem.reason)
        summary.errors += 1
        return
    results = recognizer.recognize(frame.image, source=item.source)
    summary.photos += 1
    summary.add(results)
    print_photo(results, item.source, frame.scale, as_json)
    out = names.path_for(item, photo_suffix(item.path))
    if out is not None:
        try:
            write_photo(out, annotate(frame.image, [r.label() for r in results]))
        except OSError as problem:
            log.warning("%s: cannot write %s (%s)", item.source, out, problem)
            summary.errors += 1


def _json_frames(source: str, as_json: bool) -> FrameHook | None:
    """The per-frame hook of recognize_stream: JSON lines with --json."""
    return (lambda index, results: emit_results(results, source, index)) if as_json else None


def _run_video(
    item: Input, setup: StreamSetup, names: OutputNames, summary: Summary, as_json: bool, window: Window | None,
) -> None:
    faces_before = summary.faces
    try:
        with VideoSource.open_file(item.path, item.source) as video:
            recognize_stream(video, setup.recognizer(video.source), summary, names.path_for(item, ".mp4"), window,
                             on_frame=_json_frames(video.source, as_json), on_events=setup.on_events())
    except SourceError as problem:
        log.warning("%s", problem)
        if as_json:
            emit_error(item.source, problem.reason)
        summary.errors += 1
        return
    except OSError as problem:
        log.warning("%s: cannot write the annotated video (%s)", item.source, problem)
        if as_json:
            emit_error(item.source, f"cannot write the annotated video ({problem})")
        summary.errors += 1
        return
    if as_json and summary.faces == faces_before:
        emit_no_face(item.source)
    summary.videos += 1


def _run_webcam(camera: VideoSource, setup: StreamSetup, summary: Summary, as_json: bool, output_dir: Path) -> int:
    window, problem = Window.open(WINDOW_TITLE)
    out = None
    if window is None:
        out = output_dir / f"webcam{camera.source.removeprefix('camera ')}.mp4"
        log.warning("%s: writing the annotated webcam stream to %s (stops after %d frames, or Ctrl-C)",
                    problem, out, HEADLESS_WEBCAM_FRAMES)
    try:
        recognize_stream(camera, setup.recognizer(camera.source), summary, out, window,
                         max_frames=HEADLESS_WEBCAM_FRAMES if window is None else None,
                         on_frame=_json_frames(camera.source, as_json), on_events=setup.on_events())
    except (SourceError, OSError) as failure:
        log.error("%s", failure)
        return Exit.FAILED
    finally:
        if window is not None:
            window.close()
    summary.videos += 1
    print_summary(summary, output_dir if out else None)
    return Exit.OK
