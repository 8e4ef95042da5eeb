"""Frigate's events over MQTT into a FrigateWatcher: `FrigateEvents` subscribes to `<prefix>/events` on Frigate's
broker (paho's thread only queues the messages); `run_frigate` reads them in batches on the caller's thread until
`stop`, and hands each message's events to `on_events`; `FrigateThread` runs that in the background (the service).

Within a batch an event's `new` / `update` messages count as its last one (it carries the newest state; one attempt),
and none of them is tried when its `end` is in the batch too. A broker that is down at start is one line (FrigateError);
later outages are one line each and paho reconnects by itself (messages sent meanwhile are lost: Frigate does not
retain them).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from facenet.live.events import MQTT_DEFAULT_PORT, mqtt_client
from facenet.live.frigate.api import FrigateApi, FrigateError
from facenet.live.frigate.messages import FrigateEvent, parse_event
from facenet.live.frigate.watcher import FrigateCount, FrigateWatcher
from facenet.live.tracking import TrackEvent
from facenet.redact import mask_url

log = logging.getLogger(__name__)

TOPIC_PREFIX = "frigate"
CONNECT_TIMEOUT_S = 10.0
POLL_S = 0.25
"""How often the loop looks at `stop` while no message comes."""
STOP_WAIT_S = 15.0

EventHook = Callable[[list[TrackEvent]], None]


def frigate_broker(api: FrigateApi, mqtt_url: str | None = None) -> str:
    """Frigate's MQTT broker: `mqtt_url`, else port 1883 of Frigate's host."""
    host = f"[{api.host}]" if ":" in api.host else api.host
    return mqtt_url or f"mqtt://{host}:{MQTT_DEFAULT_PORT}"


class FrigateEvents:
    """A subscription to Frigate's `<prefix>/events` (QoS 1) on the broker at `mqtt_url`; ValueError for a URL that
    is not mqtt(s)://."""

    def __init__(self, mqtt_url: str, prefix: str = TOPIC_PREFIX) -> None:
        self.client, self._host, self._port = mqtt_client(mqtt_url, f"facenet-frigate-{id(self):x}")
        self.url, self.topic, self.where = mqtt_url, f"{prefix.strip('/')}/events", f"{self._host}:{self._port}"
        self.received = 0
        """Messages read from the topic."""
        self.bad = 0
        """Messages on the topic that were not Frigate events (the first is logged)."""
        self._queue: queue.Queue[bytes] = queue.Queue()
        self._answered = threading.Event()
        self._refused: str | None = None
        self._lost = False
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_message = lambda _client, _userdata, message: self._queue.put(message.payload)

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Connect and subscribe; FrigateError (one line) when the broker cannot be reached or refuses."""
        try:
            self.client.connect(self._host, self._port)
        except (OSError, ValueError) as error:
            raise FrigateError(f"Frigate's MQTT broker {mask_url(self.url)} unreachable ({error})") from None
        self.client.loop_start()
        if not self._answered.wait(timeout) or self._refused:
            self.close()
            why = self._refused or f"no answer within {timeout:g} s"
            raise FrigateError(f"Frigate's MQTT broker {mask_url(self.url)} refused the connection ({why})")

    def _connected(self, client, userdata, flags, reason, properties=None) -> None:
        if reason.is_failure:
            if self._answered.is_set() and not self._lost:  # a reconnection refused (credentials changed)
                log.warning("Frigate's MQTT broker %s refused the connection (%s)", self.where, reason)
                self._lost = True
            self._refused = str(reason)
        else:
            client.subscribe(self.topic, qos=1)
            if self._lost:
                log.warning("Frigate's MQTT broker %s: connected again", self.where)
            self._lost = False
        self._answered.set()

    def _disconnected(self, client, userdata, flags, reason, properties=None) -> None:
        if reason.is_failure and not self._lost:
            log.warning("Frigate's MQTT broker %s: connection lost (%s); reconnecting", self.where, reason)
            self._lost = True

    def batch(self, timeout: float = POLL_S) -> list[FrigateEvent]:
        """The messages queued (waiting up to `timeout` s for one), an event's `new` / `update` ones reduced to its
        last, or to none when its `end` is among them."""
        try:
            payloads = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self._queue.empty():
            payloads.append(self._queue.get_nowait())
        self.received += len(payloads)
        return last_states([event for event in map(self._parse, payloads) if event is not None])

    def _parse(self, payload: bytes) -> FrigateEvent | None:
        try:
            return parse_event(payload)
        except ValueError as error:
            if not self.bad:
                log.warning("%s: a message that is not a Frigate event, skipped (%s)", self.topic, error)
            self.bad += 1
            return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def last_states(events: list[FrigateEvent]) -> list[FrigateEvent]:
    """`events` in order, keeping of each event's `new` / `update` messages only its last, and none when its `end`
    is there too."""
    ended = {event.id for event in events if event.type == "end"}
    last = {event.id: event for event in events if event.type != "end"}
    return [event for event in events if event.type == "end" or (event.id not in ended and last[event.id] is event)]


def run_frigate(events: FrigateEvents, watcher: FrigateWatcher, on_events: EventHook | None = None,
                stop: threading.Event | None = None) -> FrigateCount:
    """Handle Frigate's events until `stop` is set; the counts. A message whose handling fails unexpectedly is
    logged and skipped."""
    stop = stop or threading.Event()
    while not stop.is_set():
        for event in events.batch():
            if stop.is_set():
                break
            _handle(watcher, event, on_events)
    return watcher.count


def _handle(watcher: FrigateWatcher, event: FrigateEvent, on_events: EventHook | None) -> None:
    try:
        found = watcher.handle(event)
    except Exception:  # one event must not stop the others
        log.exception("Frigate event %s on %s: skipped", event.id, event.camera)
        return
    if found and on_events is not None:
        on_events(found)


class FrigateThread:
    """`run_frigate` on a background thread (the service's): `start`, then `stop` ends it and closes the
    subscription."""

    def __init__(self, events: FrigateEvents, watcher: FrigateWatcher, on_events: EventHook | None = None) -> None:
        self.events, self.watcher, self.on_events = events, watcher, on_events
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frigate", daemon=True)

    def start(self) -> FrigateThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        run_frigate(self.events, self.watcher, self.on_events, self._stop)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT_S)
        self.events.close()
