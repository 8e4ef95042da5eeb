"""`--input rtsp://…,http://…,webcam:N`: recognise live cameras until Ctrl-C (or --max_frames each).

Per face: a JSON line with --json (`source` = the camera name, plus its `track`); per track event: a line (or JSON
line) on stdout, MQTT, a webhook (facenet/cli/event_output.py). One line on stderr per stream drop; the camera is
reconnected with back-off and the run goes on. The closing summary gives frames/s and drops per camera.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from facenet.cli.event_output import EventSinks, LiveOptions
from facenet.cli.exit_codes import Exit
from facenet.cli.recognize_output import emit_results
from facenet.live.cameras import CameraCount, run_cameras
from facenet.live.streams import Drop

if TYPE_CHECKING:
    from facenet.gallery.index import FaceDatabase
    from facenet.pipeline import FacePipeline
    from facenet.unknowns.collect import Collector

log = logging.getLogger(__name__)


def _drop_line(drop: Drop) -> None:
    log.warning("%s", drop.text())


def live_command(
    specs: list[str], pipeline: FacePipeline, database: FaceDatabase, threshold: float | None, as_json: bool,
    output_dir: Path, options: LiveOptions, collector: Collector | None = None,
) -> int:
    """Run the cameras (strangers' tracks leave sightings with `collector`); exit 0 when stopped by Ctrl-C or
    --max_frames, 1 when an event sink cannot be set up."""
    try:
        sinks = EventSinks(options, output_dir, as_json)
    except (OSError, ValueError) as problem:
        log.error("cannot send events: %s", problem)
        return Exit.FAILED
    on_frame = (lambda frame, results: emit_results(results, frame.source, frame.index)) if as_json else None
    lost: list[str] = []
    with ctrl_c_stops() as stop:
        try:
            counts = run_cameras(specs, pipeline, database, threshold, options.tracking(live=True),
                                 on_frame=on_frame, on_events=sinks.send, on_drop=_drop_line,
                                 max_frames=options.max_frames or None, stop=stop, collector=collector)
        finally:
            lost = sinks.close()
        print(summary_text(counts, lost), file=sys.stderr, flush=True)
    return Exit.OK


@contextmanager
def ctrl_c_stops() -> Iterator[threading.Event]:
    """While inside: Ctrl-C (SIGINT) sets the returned event, which stops the cameras; a second Ctrl-C (a terminal
    and `timeout -s INT` both signal, ms apart) is ignored, so the shutdown always finishes and prints its summary."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, lambda _signal, _frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def summary_text(counts: dict[str, CameraCount], lost: list[str] | None = None) -> str:
    """One line per camera: frames analysed, frames/s, drops; then one per event sink that lost events."""
    if not counts:
        text = "Done: no camera ran"
    else:
        text = "Done:\n" + "\n".join(f"  {name}: {count.frames} frames, {count.fps:.1f} frames/s, "
                                     f"{count.drops} drops" for name, count in counts.items())
    return "\n".join([text, *(f"  {line}" for line in lost or [])])

