"""Track events out of the process: their JSON record, the best-face snapshot, MQTT and a webhook.

An event is one JSON object (EVENT_KEYS): `{"event": "named", "camera": "door", "time": "2026-12-05T06:01:02.345Z",
"track": 3, "frame": 120, "name": "Ada Lovelace", "distance": 0.31, "score": 84.2, "snapshot": "output/snapshots/…"}`.

MQTT (Home Assistant friendly; `<camera>` and `<person>` are slugs: lowercase ASCII, `_` for anything else):
- `<prefix>/<camera>/event`: every event (QoS 1, not retained);
- `<prefix>/<camera>/<person>/state`: `ON` while a track of that person is on that camera, else `OFF` (retained;
  `unknown` is the person slug of Unknown faces);
- `<prefix>/<camera>/unknown`: the last `unknown_seen` event there (retained), with its Home Assistant discovery
  (`homeassistant/sensor/<prefix>_<camera>_last_unknown/config`: a "Last unknown at <camera>" sensor whose state is
  the stranger's group id);
- `<prefix>/status`: `online`, or `offline` (retained; the broker's last will when the process dies);
- `homeassistant/binary_sensor/<prefix>_<camera>_<person>/config`: MQTT discovery of that state as an occupancy
  binary sensor (retained, sent the first time the person is seen on that camera).

Network sinks never block or stop recognition: MQTT reconnects by itself (messages are queued meanwhile) and the
webhook posts from a background thread; problems go to `on_problem` (one line per outage).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from facenet.detect.face import match_record
from facenet.files import atomic_write
from facenet.live.tracking import TrackEvent
from facenet.redact import mask_url, url_host
from facenet.text import slug

EVENT_KEYS = ("event", "camera", "time", "track", "frame", "name", "distance", "score", "snapshot")
UNKNOWN_KEYS = ("group", "new", "sightings", "face_id")
"""What an `unknown_seen` event adds: the stranger's group id, whether he is new or returning, how many sightings
the group now has, and the id of this sighting's face in the store of unknown faces."""
MQTT_PREFIX = "facenet"
MQTT_DEFAULT_PORT = 1883
WEBHOOK_TIMEOUT_S = 5.0
"""The most one POST may take, from connecting to the end of the answer (a receiver that trickles is cut off)."""
SNAPSHOT_FOLDER = "snapshots"

Problem = Callable[[str], None]


def iso_time(epoch: float) -> str:
    """UTC time as ISO 8601 with milliseconds and a Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_record(event: TrackEvent, snapshot: Path | None) -> dict:
    """The event's JSON object (keys EVENT_KEYS; an `unknown_seen` adds UNKNOWN_KEYS)."""
    record = {
        "event": event.kind, "camera": event.camera, "time": iso_time(event.time), "track": event.track,
        "frame": event.frame, **match_record(event.name, event.distance, event.score),
        "snapshot": str(snapshot) if snapshot is not None else None,
    }
    if event.unknown is not None:
        seen = event.unknown
        record.update(group=seen.group, new=seen.new, sightings=seen.sightings, face_id=seen.face_id)
    return record


def snapshot_path(output_dir: Path, event: TrackEvent) -> Path:
    """`<output>/snapshots/<camera>-<track start, UTC>-<track id>.jpg`: one file per track, never reused."""
    started = datetime.fromtimestamp(event.first_seen, UTC).strftime("%Y%m%d-%H%M%S")
    return output_dir / SNAPSHOT_FOLDER / f"{slug(event.camera)}-{started}-{event.track}.jpg"


def save_snapshot(output_dir: Path, event: TrackEvent) -> Path | None:
    """Write the track's best face so far as a JPEG (atomically; `named` and `left` rewrite it); None without one.

    Raises OSError when it cannot be written.
    """
    if event.crop is None or event.crop.size == 0 or event.kind == "appeared":
        return None
    path = snapshot_path(output_dir, event)
    atomic_write(path, lambda tmp: Image.fromarray(event.crop).save(tmp, format="JPEG", quality=92))
    return path


def mqtt_client(url: str, client_id: str) -> tuple[Any, str, int]:
    """A paho client (protocol 3.1.1, callback API 2) for `mqtt(s)://[user:password@]host[:port]`, with its
    credentials, TLS for mqtts and a reconnect back-off of 1-30 s, and the broker's host and port; not connected.
    ValueError (one line, password masked) for another URL."""
    import paho.mqtt.client as mqtt  # optional: only with an MQTT URL

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # e.g. a password with "/" read as host:port: no usable host
        parts, port = parts._replace(netloc=""), None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or not url_host(url):
        raise ValueError(f"{mask_url(url)}: an MQTT URL is mqtt://[user:password@]host[:port]")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if parts.username:
        client.username_pw_set(parts.username, parts.password)
    if parts.scheme == "mqtts":
        client.tls_set()
    client.reconnect_delay_set(1, 30)
    return client, parts.hostname, port or MQTT_DEFAULT_PORT


class MqttPublisher:
    """Publishes events and per-person presence to an MQTT broker (topic layout: the module doc)."""

    def __init__(self, url: str, on_problem: Problem | None = None, prefix: str = MQTT_PREFIX) -> None:
        self.client, host, port = mqtt_client(url, f"{prefix}-{id(self):x}")
        self.prefix, self._on_problem, self._lost = prefix, on_problem, False
        self._names: dict[tuple[str, int], str] = {}
        self._present: Counter = Counter()
        self._discovered: set[tuple[str, str]] = set()
        self.published = 0
        self._pending: set[int] = set()
        """Message ids of the events the broker has not acknowledged yet."""
        self._acked: set[int] = set()
        """Acknowledged ids not (yet) known as events: an ack can come before `publish` returns."""
        self._lock = threading.Lock()
        self.client.will_set(f"{prefix}/status", "offline", qos=1, retain=True)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_connect_fail = self._unreachable
        self.client.on_publish = self._acknowledged
        self.where = f"{host}:{port}"
        self.client.connect_async(host, port)
        self.client.loop_start()

    def _connected(self, client, userdata, flags, reason, properties=None) -> None:
        if reason.is_failure:
            self._problem(f"MQTT broker {self.where} refused the connection ({reason})")
            return
        self._lost = False
        client.publish(f"{self.prefix}/status", "online", qos=1, retain=True)

    def _disconnected(self, client, userdata, flags, reason, properties=None) -> None:
        if reason.is_failure:
            self._problem(f"MQTT broker {self.where}: connection lost ({reason}); reconnecting, events are queued")

    def _unreachable(self, client, userdata) -> None:
        self._problem(f"MQTT broker {self.where} unreachable; retrying, events are queued")

    def _problem(self, text: str) -> None:
        if not self._lost and self._on_problem is not None:
            self._on_problem(text)
        self._lost = True

    def publish(self, record: dict) -> None:
        """Send one event record, and the presence states it changes."""
        camera = slug(record["camera"])
        self.published += 1
        mid = self.client.publish(f"{self.prefix}/{camera}/event", json.dumps(record), qos=1).mid
        with self._lock:
            if mid in self._acked:
                self._acked.discard(mid)
            else:
                self._pending.add(mid)
        if record["event"] == "unknown_seen":
            self._last_unknown(camera, record)
        key = (camera, record["track"])
        if record["event"] in ("named", "left") and key in self._names:
            self._set_presence(camera, self._names.pop(key), -1)
        if record["event"] == "named" and record["name"]:
            self._names[key] = record["name"]
            self._set_presence(camera, record["name"], +1)

    def _set_presence(self, camera: str, name: str, change: int) -> None:
        person = slug(name)
        before = self._present[camera, person]
        self._present[camera, person] = after = max(0, before + change)
        if (camera, person) not in self._discovered:
            self._discovered.add((camera, person))
            self._discover(camera, person, name)
        if (before > 0) != (after > 0):
            self.client.publish(self.state_topic(camera, person), "ON" if after else "OFF", qos=1, retain=True)

    def state_topic(self, camera: str, person: str) -> str:
        return f"{self.prefix}/{camera}/{person}/state"

    def _discover(self, camera: str, person: str, name: str) -> None:
        unique = f"{self.prefix}_{camera}_{person}"
        config = {"name": f"{name} at {camera}", "unique_id": unique, "device_class": "occupancy",
                  "state_topic": self.state_topic(camera, person), "availability_topic": f"{self.prefix}/status",
                  "device": {"identifiers": [f"{self.prefix}_{camera}"], "name": f"facenet {camera}"}}
        self.client.publish(f"homeassistant/binary_sensor/{unique}/config", json.dumps(config), qos=1, retain=True)

    def _last_unknown(self, camera: str, record: dict) -> None:
        """`<prefix>/<camera>/unknown`: the last stranger seen there (retained), and its Home Assistant sensor."""
        topic = f"{self.prefix}/{camera}/unknown"
        if (camera, "") not in self._discovered:
            self._discovered.add((camera, ""))
            unique = f"{self.prefix}_{camera}_last_unknown"
            config = {"name": f"Last unknown at {camera}", "unique_id": unique, "state_topic": topic,
                      "value_template": "{{ value_json.group }}", "json_attributes_topic": topic,
                      "availability_topic": f"{self.prefix}/status", "icon": "mdi:account-question",
                      "device": {"identifiers": [f"{self.prefix}_{camera}"], "name": f"facenet {camera}"}}
            self.client.publish(f"homeassistant/sensor/{unique}/config", json.dumps(config), qos=1, retain=True)
        self.client.publish(topic, json.dumps(record), qos=1, retain=True)

    def close(self, timeout: float = 5.0) -> None:
        """Mark the service offline, flush what is queued (up to `timeout` s when connected) and disconnect; what
        never reached the broker is counted in `lost`."""
        info = self.client.publish(f"{self.prefix}/status", "offline", qos=1, retain=True)
        if self.client.is_connected():
            info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def lost(self) -> int:
        """Events not acknowledged by the broker (after `close`: dropped, e.g. queued while it was down)."""
        with self._lock:
            return len(self._pending)

    def _acknowledged(self, client, userdata, mid, reason=None, properties=None) -> None:
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                if len(self._acked) > 10000:  # status, presence and discovery ids: never looked up again
                    self._acked.clear()
                self._acked.add(mid)


class WebhookError(OSError):
    """A POST the receiver did not accept: no 2xx answer (a redirect is not followed), or none in time."""


class WebhookPoster:
    """POSTs each event record as JSON to a URL from a background thread (recognition never waits for it).

    Only a 2xx answer within WEBHOOK_TIMEOUT_S counts as delivered; a redirect, an error status or a slow answer is a
    failure (reported once per outage). `lost` / `published` count what did not arrive.
    """

    def __init__(self, url: str, on_problem: Problem | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{mask_url(url)}: a webhook is an http(s):// URL")
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        self.url, self._on_problem, self._failing = url, on_problem, False
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self.sent = 0
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    @property
    def where(self) -> str:
        """host:port of the receiver, for messages (no credentials, no secret path)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    @property
    def lost(self) -> int:
        """Events published but not delivered (failed, or still queued at close)."""
        return self.published - self.sent

    def publish(self, record: dict) -> None:
        self.published += 1
        self._queue.put(record)

    def _post(self, record: dict) -> None:
        """One POST; raises WebhookError (not 2xx, too slow) or OSError (cannot connect)."""
        parts = urlsplit(self.url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(parts.hostname, parts.port, timeout=WEBHOOK_TIMEOUT_S)
        timed_out = threading.Event()

        def cut_off() -> None:  # the deadline: unblock a receiver that trickles bytes within each socket timeout
            timed_out.set()
            if connection.sock is not None:
                with contextlib.suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(WEBHOOK_TIMEOUT_S, cut_off)
        timer.start()
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("POST", path, json.dumps(record).encode(), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as problem:
            if timed_out.is_set():
                raise WebhookError(f"no answer within {WEBHOOK_TIMEOUT_S:g} s") from problem
            raise WebhookError(str(problem) or type(problem).__name__) from problem
        finally:
            timer.cancel()
            connection.close()
        if timed_out.is_set():
            raise WebhookError(f"no answer within {WEBHOOK_TIMEOUT_S:g} s")
        if not 200 <= response.status < 300:
            moved = " (redirects are not followed)" if 300 <= response.status < 400 else ""
            raise WebhookError(f"answered HTTP {response.status} {response.reason}{moved}")

    def _run(self) -> None:
        while (record := self._queue.get()) is not None:
            try:
                self._post(record)
            except (OSError, ValueError) as problem:
                if not self._failing and self._on_problem is not None:
                    self._on_problem(f"webhook {mask_url(self.url)}: {problem} (events are dropped until it answers)")
                self._failing = True
            else:
                self._failing = False
                self.sent += 1

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to `timeout` s), then stop; what is left is counted in `lost`."""
        self._queue.put(None)
        self._thread.join(timeout)
