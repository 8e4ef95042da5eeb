"""`facenet frigate`: beside Frigate, until Ctrl-C. Its person events (MQTT `<prefix>/events`) are recognised from
their snapshots and the camera's latest frame, each enrolled name is written back as the event's sub label, and our
own events go where the live cameras' go (--events, --mqtt_url, --webhook: facenet/cli/event_output.py); strangers
leave one sighting per event (--collect_unknowns, on by default). facenet/live/frigate does the work.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from facenet.cli import common
from facenet.cli.console import error
from facenet.cli.event_output import EventSinks, LiveOptions
from facenet.cli.exit_codes import Exit
from facenet.cli.live_command import ctrl_c_stops
from facenet.cli.options import FrigateOptions
from facenet.cli.recognize_command import load_recognition
from facenet.gallery import GalleryOptions
from facenet.live.frigate.api import FrigateApi, FrigateError
from facenet.live.frigate.bridge import FrigateEvents, frigate_broker, run_frigate
from facenet.live.frigate.watcher import FrigateCount, FrigateWatcher, Gallery
from facenet.settings import KEEP_DAYS, KEEP_FACES
from facenet.unknowns.collect import Collector
from facenet.unknowns.store import Retention

if TYPE_CHECKING:
    from facenet.pipeline import FacePipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrigateLink:
    """A reached Frigate: its API, the subscription to its events, and the command's Frigate flags."""

    api: FrigateApi
    events: FrigateEvents
    options: FrigateOptions

    def watcher(self, pipeline: FacePipeline, database: Gallery, threshold: float | None,
                collector: Collector | None) -> FrigateWatcher:
        return FrigateWatcher(self.api, pipeline, database, threshold, collector, self.options.cameras,
                              self.options.attempts)

    def close(self) -> None:
        self.events.close()


def connect_frigate(options: FrigateOptions, mqtt_url: str | None = None) -> FrigateLink | None:
    """Frigate's API (its version asked) and its events (subscribed on --frigate_mqtt_url, else `mqtt_url`, else
    port 1883 of Frigate's host); None, one line logged, when either cannot be reached or a URL is bad."""
    try:
        api = FrigateApi(options.url or "")
        version = api.version()
        events = FrigateEvents(frigate_broker(api, options.mqtt_url or mqtt_url), options.topic_prefix)
        events.connect()
    except (FrigateError, ValueError) as problem:
        log.error("cannot follow Frigate: %s", problem)
        return None
    cameras = ", ".join(options.cameras) if options.cameras else "every camera"
    print(f"Frigate {version} at {api.where}: person events of {cameras} from {events.topic} on {events.where}",
          file=sys.stderr, flush=True)
    return FrigateLink(api, events, options)


def frigate_command(
    frigate: FrigateOptions, data_dir: str | Path, database_dir: str | Path, database_url: str | None,
    weights_dir: str | Path, model: str, detector: str, threshold: float | None, pretrained: bool,
    output_dir: str | Path, as_json: bool, live: LiveOptions | None = None, unknown_days: float = KEEP_DAYS,
    unknown_faces: int = KEEP_FACES,
) -> int:
    """Reach Frigate, sync the gallery with data/, then follow Frigate's person events until Ctrl-C (exit 0, with a
    summary); exit 1 when Frigate, the model, the gallery or an event sink cannot be set up (one line), 2 on a bad
    --threshold."""
    live = live or LiveOptions()
    problem = common.threshold_problem(threshold)
    if problem:
        return error(problem)
    link = connect_frigate(frigate, live.mqtt_url)
    if link is None:
        return Exit.FAILED
    try:
        loaded = load_recognition(detector, model, weights_dir, pretrained, Path(data_dir), database_dir, False,
                                  as_json, database_url)
        if loaded is None:
            return Exit.FAILED
        pipeline, database = loaded
        collector = (Collector(GalleryOptions(Path(database_dir), database_url), pipeline,
                               Retention(unknown_days, unknown_faces)) if live.collecting(live=True) else None)
        return _follow(link.events, link.watcher(pipeline, database, threshold, collector), live, Path(output_dir),
                       as_json)
    finally:
        link.close()


def _follow(events: FrigateEvents, watcher: FrigateWatcher, live: LiveOptions, output_dir: Path,
            as_json: bool) -> int:
    try:
        sinks = EventSinks(live, output_dir, as_json)
    except (OSError, ValueError) as problem:
        log.error("cannot send events: %s", problem)
        return Exit.FAILED
    print("Following Frigate's person events; Ctrl-C stops", file=sys.stderr, flush=True)
    with ctrl_c_stops() as stop:
        try:
            count = run_frigate(events, watcher, sinks.send, stop)
        finally:
            lost = sinks.close()
        print(summary_text(events.received, count, lost), file=sys.stderr, flush=True)
    return Exit.OK


def summary_text(received: int, count: FrigateCount, lost: list[str] | None = None) -> str:
    """`Done: 14 Frigate messages, 3 person events, 9 images fetched, 1 name written back, 1 unknown sighting`,
    then one line per event sink that lost events."""
    text = (f"Done: {_plural(received, 'Frigate message')}, {_plural(count.events, 'person event')}, "
            f"{_plural(count.fetched, 'image')} fetched, {_plural(count.written, 'name')} written back, "
            f"{_plural(count.sightings, 'unknown sighting')}")
    return "\n".join([text, *(f"  {line}" for line in lost or [])])


def _plural(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
