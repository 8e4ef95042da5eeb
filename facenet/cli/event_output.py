"""Where track events go: a JSON-lines file or stdout (--events), MQTT (--mqtt_url), a webhook (--webhook); without
--events, one human line per event on stdout (a JSON line with --json). Every named/left event first saves the
track's best face as a JPEG under <output>/snapshots/. A sink that fails is reported once per outage and
recognition goes on."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from facenet.cli.console import emit_json
from facenet.cli.options import LiveOptions
from facenet.live.events import MqttPublisher, WebhookPoster, event_record, save_snapshot
from facenet.live.tracking import TrackEvent
from facenet.text import one_line

log = logging.getLogger(__name__)


def event_text(record: dict) -> str:
    """One event in words: `door #3 named Ada Lovelace (0.31, score 84) snapshot output/snapshots/…`."""
    text = f"{record['camera']} #{record['track']} {record['event']}"
    if record["event"] != "appeared" and record["name"]:
        text += f" {record['name']}"
        if record["distance"] is not None and record["score"] is not None:
            text += f" ({record['distance']:.2f}, score {record['score']:.0f})"
    if record["snapshot"]:
        text += f" snapshot {record['snapshot']}"
    return one_line(text)


class EventSinks:
    """Sends each track event to every configured place; `close` flushes them. `on_record(record, event)` also
    gets each event's JSON record (the service keeps the recent ones)."""

    def __init__(self, options: LiveOptions, output_dir: Path, as_json: bool,
                 on_record: Callable[[dict, TrackEvent], None] | None = None) -> None:
        self.output_dir = output_dir
        self._on_record = on_record
        self._lock = threading.Lock()
        self.sent = 0
        self.file_lost = 0
        """Events that could not be written to the --events file (a full disk): warned once, counted here."""
        self._events_path = options.events
        self._file: IO[str] | None = None
        self._stdout_json = options.events == "-" or (options.events is None and as_json)
        if options.events and options.events != "-":
            Path(options.events).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(options.events, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        self._human = options.events is None and not as_json
        self.mqtt = MqttPublisher(options.mqtt_url, _problem) if options.mqtt_url else None
        self.webhook = WebhookPoster(options.webhook, _problem) if options.webhook else None

    def send(self, events: list[TrackEvent]) -> None:
        """Send the events (one caller at a time: the service's cameras and Frigate's loop share the sinks)."""
        with self._lock:
            for event in events:
                self._send(event)

    def _send(self, event: TrackEvent) -> None:
        try:
            snapshot = save_snapshot(self.output_dir, event)
        except OSError as problem:
            log.warning("%s: cannot save the snapshot of track %s (%s)", event.camera, event.track, problem)
            snapshot = None
        record = event_record(event, snapshot)
        self.sent += 1
        if self._stdout_json:
            emit_json(record)
        elif self._human:
            print(event_text(record), file=sys.stdout, flush=True)
        if self._file is not None:
            self._write(json.dumps(record, ensure_ascii=False) + "\n")
        if self.mqtt is not None:
            self.mqtt.publish(record)
        if self.webhook is not None:
            self.webhook.publish(record)
        if self._on_record is not None:
            self._on_record(record, event)

    def _write(self, line: str) -> None:
        """One line to the --events file; a failure (disk full) is warned once and the event counted as lost."""
        assert self._file is not None
        try:
            self._file.write(line)
        except OSError as problem:
            self._file_failed(problem)
            self.file_lost += 1

    def _file_failed(self, problem: OSError) -> None:
        if not self.file_lost:
            log.warning("events file %s: cannot write (%s); recognition goes on, lost events are counted",
                        self._events_path, problem.strerror or problem)

    def close(self) -> list[str]:
        """Flush and close every sink; returns one line per sink that lost events (`N of M events not ...`)."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError as problem:  # the last line could not be flushed
                self._file_failed(problem)
                self.file_lost = max(self.file_lost, 1)
        if self.mqtt is not None:
            self.mqtt.close()
        if self.webhook is not None:
            self.webhook.close()
        return self.losses()

    def losses(self) -> list[str]:
        """One line per sink that lost events, e.g. `events file ev.jsonl: 3 of 12 events not written`."""
        lines = []
        if self.file_lost:
            lines.append(f"events file {self._events_path}: {self.file_lost} of {self.sent} events not written")
        if self.mqtt is not None and self.mqtt.lost:
            lines.append(f"MQTT broker {self.mqtt.where}: {self.mqtt.lost} of {self.mqtt.published} events not "
                         "delivered")
        if self.webhook is not None and self.webhook.lost:
            lines.append(f"webhook {self.webhook.where}: {self.webhook.lost} of {self.webhook.published} events not "
                         "delivered")
        return lines


def _problem(text: str) -> None:
    log.warning("%s", text)
