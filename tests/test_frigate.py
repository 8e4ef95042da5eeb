"""Beside Frigate: its person events recognised, the enrolled name written back as the event's sub label, our own
events published, one sighting per stranger's event.

Frigate itself is a Docker image that cannot run here: the tests run against a stand-in that follows Frigate's
documented HTTP API and MQTT message schema (tests/live_servers.py FrigateStandIn, frigate_message) — a real HTTP
server serving real photos (George Clooney enrolled, Jon Voight a stranger) and recording the sub label POSTs — and a
real mosquitto broker. HOG + dlib (the `pipeline` fixture), small LFW photos.
"""

from __future__ import annotations

import _thread
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_servers import (
    FrigateStandIn,
    Mosquitto,
    free_port,
    frigate_message,
    mosquitto_missing,
    until,
)

from facenet.config import UNKNOWN
from facenet.gallery import GalleryOptions
from facenet.live.frigate.api import FrigateApi
from facenet.live.frigate.bridge import last_states
from facenet.live.frigate.messages import parse_event
from facenet.live.frigate.watcher import FrigateWatcher
from facenet.unknowns.collect import Collector
from facenet.unknowns.file_store import FileUnknowns

PEOPLE = Path(__file__).parent / "data" / "people"
ENROLLED = {"George Clooney": ("George_Clooney", (1, 3, 4)), "Juanes": ("Juanes", (1, 2))}
GEORGE = PEOPLE / "George_Clooney" / "George_Clooney_0006.jpg"  # not enrolled: named at score ~81
STRANGER = PEOPLE / "Jon_Voight" / "Jon_Voight_0001.jpg"  # never enrolled: Unknown
PERSON_BOX = [120, 40, 520, 440]
"""Where the person stands in the cameras' latest frames (640x480, the photo scaled to 400x400)."""
EMPTY_CORNER = [560, 400, 640, 480]
"""A box of the latest frames where nobody is (black)."""
MQTT = pytest.mark.skipif(mosquitto_missing() is not None, reason=str(mosquitto_missing()))


def latest_frame(photo: Path) -> bytes:
    """A 640x480 camera frame (JPEG) with the photo at PERSON_BOX."""
    frame = np.zeros((480, 640, 3), np.uint8)
    x1, y1, x2, y2 = PERSON_BOX
    frame[y1:y2, x1:x2] = cv2.resize(cv2.imread(str(photo)), (x2 - x1, y2 - y1))
    return cv2.imencode(".jpg", frame)[1].tobytes()


@pytest.fixture
def gallery(tmp_path, pipeline):
    """George Clooney and Juanes enrolled: (data dir, database dir, FaceDatabase)."""
    from facenet.gallery.file import sync_database

    data = tmp_path / "data"
    for name, (folder, numbers) in ENROLLED.items():
        (data / name).mkdir(parents=True)
        for number in numbers:
            shutil.copy2(PEOPLE / folder / f"{folder}_{number:04d}.jpg", data / name)
    database, _ = sync_database(data, tmp_path / "db", pipeline)
    return data, tmp_path / "db", database


@pytest.fixture
def frigate():
    """The stand-in: event `george` on camera door, `stranger` on gate, `gone` on door without a snapshot."""
    stand_in = FrigateStandIn()
    stand_in.snapshots.update(george=GEORGE.read_bytes(), stranger=STRANGER.read_bytes())
    stand_in.latest.update(door=latest_frame(GEORGE), gate=latest_frame(STRANGER))
    stand_in.known.update({"george", "stranger", "gone"})
    yield stand_in
    stand_in.stop()


def watcher_of(frigate, gallery, pipeline, attempts: int = 3, cameras=None) -> FrigateWatcher:
    _, db, database = gallery
    return FrigateWatcher(FrigateApi(frigate.url), pipeline, database, None, Collector(GalleryOptions(db), pipeline),
                          cameras, attempts)


def feed(watcher: FrigateWatcher, *messages: str) -> list:
    return [event for message in messages for event in watcher.handle(parse_event(message))]


# --- Frigate's messages -------------------------------------------------------------------------------------------

def test_frigates_documented_messages_are_read_and_anything_else_refused_in_one_line():
    event = parse_event(frigate_message("update", "1607123955.475377-mxklsc", "front_door", box=[424, 500, 536, 712]))
    assert (event.type, event.id, event.camera, event.label, event.box, event.sub_label) == (
        "update", "1607123955.475377-mxklsc", "front_door", "person", (424, 500, 536, 712), None)
    assert parse_event(frigate_message("new", "a", "door", sub_label=["John Smith", 0.79])).sub_label_score == 0.79
    legacy = json.loads(frigate_message("end", "a", "door"))
    legacy["after"]["sub_label"] = "Ada"  # Frigate <= 0.12: a plain string, no score
    assert (parse_event(json.dumps(legacy)).sub_label, parse_event(json.dumps(legacy)).sub_label_score) == ("Ada", None)
    for bad, says in ((b"\xff", "not JSON"), ('{"type": "new"}', "not a Frigate event"),
                      (frigate_message("new", "../../etc", "door"), "is not [A-Za-z0-9._-]"),
                      (frigate_message("new", "a", "door/x"), "no camera name")):
        with pytest.raises(ValueError, match=r".*") as refused:
            parse_event(bad)
        assert says in str(refused.value) and "\n" not in str(refused.value)


def test_a_batch_keeps_each_events_last_state_and_none_of_an_ended_one():
    events = [parse_event(frigate_message(kind, event_id, "door")) for kind, event_id in
              (("new", "a"), ("new", "b"), ("update", "a"), ("update", "b"), ("end", "b"), ("update", "a"))]
    assert [(e.type, e.id) for e in last_states(events)] == [("end", "b"), ("update", "a")]
    assert last_states(events)[1] is events[5]


# --- the watcher: one event at a time, against the stand-in ------------------------------------------------------

def test_the_enrolled_person_is_written_back_once_with_his_score(frigate, gallery, pipeline):
    watcher = watcher_of(frigate, gallery, pipeline)
    events = feed(watcher, frigate_message("new", "george", "door", box=PERSON_BOX),
                  *[frigate_message("update", "george", "door", box=PERSON_BOX)] * 4)
    (event_id, body), = frigate.sub_labels
    named, = events
    assert (event_id, body["subLabel"], named.kind, named.name, named.track) == (
        "george", "George Clooney", "named", "George Clooney", "george")
    assert body["subLabelScore"] == round(named.score / 100, 3) and 0.6 < body["subLabelScore"] <= 1
    assert frigate.fetches("george") == 1, "named surely at once: no more attempts"
    snapshot = next(query for method, path, query in frigate.requests if path.endswith("/george/snapshot.jpg"))
    assert snapshot["crop"] == ["1"] and snapshot["h"] == ["500"]
    assert ("GET", "/api/door/latest.jpg", {}) in frigate.requests
    left = feed(watcher, frigate_message("end", "george", "door", sub_label=["George Clooney", body["subLabelScore"]]))
    assert [(e.kind, e.name) for e in left] == [("left", "George Clooney")]
    assert FileUnknowns(gallery[1]).groups() == [], "an enrolled person leaves no sighting"
    assert (watcher.count.events, watcher.count.written, watcher.count.sightings) == (1, 1, 0)


def test_a_stranger_is_fetched_a_bounded_number_of_times_and_leaves_one_sighting(frigate, gallery, pipeline):
    watcher = watcher_of(frigate, gallery, pipeline, attempts=3)
    early = feed(watcher, frigate_message("new", "stranger", "gate"),
                 *[frigate_message("update", "stranger", "gate")] * 6)
    assert frigate.fetches("stranger") == 3 and frigate.sub_labels == [], "3 attempts, never Unknown written back"
    assert [(e.kind, e.name) for e in early] == [("named", UNKNOWN), ("unknown_seen", UNKNOWN)]
    assert early[1].unknown.new and early[1].unknown.sightings == 1
    late = feed(watcher, frigate_message("update", "stranger", "gate"), frigate_message("end", "stranger", "gate"))
    assert [(e.kind, e.name) for e in late] == [("left", UNKNOWN)] and frigate.fetches("stranger") == 3
    group, = FileUnknowns(gallery[1]).groups()
    assert [(face.source, face.face_id) for face in group.faces] == [("gate", early[1].unknown.face_id)]


def test_a_stranger_whose_event_ends_early_still_leaves_exactly_one_sighting(frigate, gallery, pipeline):
    watcher = watcher_of(frigate, gallery, pipeline, attempts=5)
    events = feed(watcher, frigate_message("new", "stranger", "gate"), frigate_message("update", "stranger", "gate"),
                  frigate_message("end", "stranger", "gate"), frigate_message("end", "stranger", "gate"))
    assert frigate.fetches("stranger") == 2
    assert [e.kind for e in events] == ["named", "unknown_seen", "left"]
    assert len(FileUnknowns(gallery[1]).groups()[0].faces) == 1


def test_missing_snapshots_other_labels_and_other_cameras_are_skipped(frigate, gallery, pipeline):
    watcher = watcher_of(frigate, gallery, pipeline, cameras=["door", "garden"])
    frigate.latest.pop("door")
    assert feed(watcher, frigate_message("new", "gone", "door"), frigate_message("end", "gone", "door")) == []
    assert feed(watcher, frigate_message("new", "car", "door", label="car")) == []
    assert feed(watcher, frigate_message("new", "stranger", "gate")) == []
    paths = [path for _, path, _ in frigate.requests]
    assert paths == ["/api/events/gone/snapshot.jpg", "/api/door/latest.jpg"], "404s skipped; no car, no gate"
    assert frigate.sub_labels == [] and FileUnknowns(gallery[1]).groups() == []


@pytest.mark.parametrize(("held", "written"), [(["Someone", 0.99], False), (["Someone", None], False),
                                               (["Someone", 0.2], True)])
def test_a_sub_label_is_written_only_when_better_than_the_one_held(frigate, gallery, pipeline, held, written):
    watcher = watcher_of(frigate, gallery, pipeline)
    events = feed(watcher, frigate_message("new", "george", "door", sub_label=held, box=PERSON_BOX))
    assert [e.name for e in events] == ["George Clooney"], "our own event either way"
    assert [body["subLabel"] for _, body in frigate.sub_labels] == (["George Clooney"] if written else [])


def test_frigate_going_away_is_one_line_and_nothing_breaks(frigate, gallery, pipeline, caplog):
    watcher = watcher_of(frigate, gallery, pipeline)
    frigate.stop()
    assert feed(watcher, frigate_message("new", "george", "door"), frigate_message("new", "stranger", "gate")) == []
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1 and "unreachable" in lines[0] and frigate.url in lines[0], lines


# --- the command and the service, over a real mosquitto ------------------------------------------------------------

class Frigate(threading.Thread):
    """Plays Frigate on MQTT while a command runs in the main thread: George's event on door (new, an update, end), a
    car, a message that is not an event, an event without snapshot; then (`stranger`) the stranger's event on gate
    (new, then updates one at a time until his attempts are spent, two more, end) and another event without
    snapshot; then, once `finished()`, Ctrl-C (as a terminal would)."""

    def __init__(self, broker: Mosquitto, stand_in: FrigateStandIn, attempts: int, stranger: bool,
                 finished: Callable[[], bool]) -> None:
        super().__init__(daemon=True)
        import paho.mqtt.client as mqtt

        self.stand_in, self.attempts, self.stranger, self.finished = stand_in, attempts, stranger, finished
        self.failure: BaseException | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def send(self, *args, **kwargs) -> None:
        self.client.publish("frigate/events", frigate_message(*args, **kwargs), qos=1).wait_for_publish(5)

    def run(self) -> None:
        try:
            until(lambda: any(p == "/api/version" for _, p, _ in self.stand_in.requests), "the command to start", 120)
            time.sleep(1.0)  # subscribed (the version is asked before the broker is reached)
            self.send("new", "george", "door", box=PERSON_BOX)
            until(lambda: self.stand_in.sub_labels, "George's name written back")
            self.send("update", "george", "door", sub_label=["George Clooney", 0.8], box=PERSON_BOX)
            self.send("new", "car", "door", label="car")
            self.client.publish("frigate/events", "not a Frigate event", qos=1).wait_for_publish(5)
            self.send("new", "gone", "door", box=EMPTY_CORNER)
            self.send("end", "george", "door", sub_label=["George Clooney", 0.8], box=PERSON_BOX)
            if self.stranger:
                self._stranger()
            until(self.finished, "the last events")
        except BaseException as failure:  # noqa: BLE001 - handed to the test
            self.failure = failure
        finally:
            self.client.loop_stop()
            _thread.interrupt_main()

    def _stranger(self) -> None:
        self.send("new", "stranger", "gate")
        for attempt in range(1, self.attempts):
            until(lambda n=attempt: self.stand_in.fetches("stranger") == n, f"the stranger's attempt {attempt}")
            self.send("update", "stranger", "gate")
        until(lambda: self.stand_in.fetches("stranger") == self.attempts, "the stranger's last attempt")
        self.send("update", "stranger", "gate")
        self.send("update", "stranger", "gate")
        self.send("end", "stranger", "gate")
        self.send("new", "gone2", "gate", box=EMPTY_CORNER)  # handled after the stranger's end


def event_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@MQTT
def test_facenet_frigate_names_writes_back_publishes_and_collects(tmp_path, gallery, frigate, pipeline, monkeypatch,
                                                                  run_in_process):
    import paho.mqtt.client as mqtt

    from facenet.cli import common

    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kwargs: pipeline)
    data, db, _ = gallery
    broker = Mosquitto(tmp_path)
    messages: list[tuple[str, str]] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    subscriber.on_message = lambda _c, _u, m: messages.append((m.topic, m.payload.decode()))
    subscriber.on_connect = lambda c, *_: c.subscribe("facenet/#", 1)
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()
    def last_handled() -> bool:  # the event after the stranger's end: its snapshot and latest frame asked for
        return [path for _, path, _ in frigate.requests[-2:]] == ["/api/events/gone2/snapshot.jpg",
                                                                  "/api/gate/latest.jpg"]

    player = Frigate(broker, frigate, 3, True, last_handled)
    player.start()
    try:
        result = run_in_process(
            "frigate", "--frigate_url", frigate.url, "--mqtt_url", broker.url, "--frigate_attempts", "3",
            "--data_dir", str(data), "--database_dir", str(db), "--model", "dlib", "-d", "hog",
            "--events", "events.jsonl", "--output_dir", "out", cwd=tmp_path)
        player.join(10)
        time.sleep(0.3)
    finally:
        subscriber.loop_stop()
        broker.stop()
    if player.failure is not None:
        raise player.failure
    assert result.returncode == 0, result.stderr

    events = event_lines(tmp_path / "events.jsonl")
    assert [(e["event"], e["camera"], e["track"], e["name"]) for e in events] == [
        ("named", "door", "george", "George Clooney"), ("left", "door", "george", "George Clooney"),
        ("named", "gate", "stranger", UNKNOWN), ("unknown_seen", "gate", "stranger", UNKNOWN),
        ("left", "gate", "stranger", UNKNOWN)]
    assert frigate.sub_labels == [("george", {"subLabel": "George Clooney",
                                              "subLabelScore": round(events[0]["score"] / 100, 3)})]
    assert frigate.fetches("george") == 1 and frigate.fetches("stranger") == 3 and frigate.fetches("car") == 0
    assert frigate.fetches("gone") == frigate.fetches("gone2") == 1
    assert Path(events[0]["snapshot"]).is_file() and "door-" in events[0]["snapshot"]
    group, = FileUnknowns(db).groups()
    assert [face.source for face in group.faces] == ["gate"] and events[3]["group"] == group.id
    assert [json.loads(p) for t, p in messages if t.endswith("/event")] == events
    assert [p for t, p in messages if t == "facenet/door/george_clooney/state"] == ["ON", "OFF"]
    assert json.loads(dict(messages)["facenet/gate/unknown"])["group"] == group.id
    err = result.stderr.splitlines()
    assert any(line.startswith(f"Frigate 0.14.1-standin at 127.0.0.1:{frigate.url.rsplit(':', 1)[1]}: person "
                               f"events of every camera from frigate/events on 127.0.0.1:{broker.port}")
               for line in err), err
    assert ("Done: 13 Frigate messages, 4 person events, 10 images fetched, 1 name written back, 1 unknown "
            "sighting") in err, err
    skipped = [line for line in err if "not a Frigate event" in line]
    assert skipped == ["WARNING: frigate/events: a message that is not a Frigate event, skipped (not JSON (Expecting "
                       "value: line 1 column 1 (char 0)))"], err


@MQTT
def test_serve_follows_frigate_in_the_service(tmp_path, gallery, frigate, pipeline, monkeypatch, run_in_process):
    """`serve --frigate_url` in-process (Ctrl-C: uvicorn's graceful stop), uvicorn's logging set-up left out: its
    dictConfig would close pytest's log capture."""
    import uvicorn

    from facenet.cli import common

    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kwargs: pipeline)
    monkeypatch.setattr(uvicorn.Config, "configure_logging", lambda _config: None)
    data, db, _ = gallery
    broker = Mosquitto(tmp_path)
    player = Frigate(broker, frigate, 3, False, lambda: len(event_lines(tmp_path / "events.jsonl")) == 2)
    player.start()
    try:
        result = run_in_process("serve", "--port", str(free_port()), "--frigate_url", frigate.url,
                                "--frigate_mqtt_url", broker.url, "--data_dir", str(data), "--database_dir", str(db),
                                "--model", "dlib", "-d", "hog", "--events", "events.jsonl", cwd=tmp_path)
        player.join(10)
    finally:
        broker.stop()
    if player.failure is not None:
        raise player.failure
    assert result.returncode == 0, result.stderr
    assert [(event_id, body["subLabel"]) for event_id, body in frigate.sub_labels] == [("george", "George Clooney")]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["track"], e["name"]) for e in events] == [("named", "george", "George Clooney"),
                                                                   ("left", "george", "George Clooney")]


# --- Frigate that cannot be reached: one line, before the model loads ----------------------------------------------

@pytest.fixture
def no_model(monkeypatch):
    from facenet.cli import common

    def refused(*args, **kwargs):
        raise AssertionError("the model must not load when Frigate cannot be reached")

    monkeypatch.setattr(common, "load_pipeline", refused)


class NotFrigate:
    """An HTTP server that answers 404 to everything (a web server, not Frigate's API)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_error(404)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize("command", ["frigate", "serve"])
def test_an_unreachable_frigate_is_one_line_and_exit_1(tmp_path, no_model, run_in_process, command):
    url = f"http://127.0.0.1:{free_port()}"
    result = run_in_process(command, "--frigate_url", url, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [f"ERROR: cannot follow Frigate: Frigate at {url} unreachable ([Errno 111] "
                                          "Connection refused)"]


def test_a_url_that_is_not_frigate_or_a_missing_broker_is_one_line(tmp_path, no_model, frigate, run_in_process):
    web = NotFrigate()
    result = run_in_process("frigate", "--frigate_url", web.url, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        f"ERROR: cannot follow Frigate: {web.url} answered 404 to /api/version: not Frigate's API (its port is 5000)"]
    web.server.shutdown()
    port = free_port()
    result = run_in_process("frigate", "--frigate_url", frigate.url, "--frigate_mqtt_url",
                            f"mqtt://user:secret@127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        f"ERROR: cannot follow Frigate: Frigate's MQTT broker mqtt://user:***@127.0.0.1:{port} unreachable "
        "([Errno 111] Connection refused)"]


@pytest.mark.parametrize(("flags", "says"), [
    (["--frigate_url", "ftp://frigate"], "--frigate_url ftp://frigate: a Frigate URL is http(s)://host[:port]"),
    (["--frigate_url", "http://u:pw@frigate:5000"], "--frigate_url http://u:***@frigate:5000: a Frigate URL is"),
    (["--frigate_url", "http://f:5000", "--frigate_mqtt_url", "tcp://b"], "--frigate_mqtt_url must look like mqtt://"),
    (["--frigate_url", "http://f:5000", "--frigate_topic_prefix", "frigate/#"], "without wildcards"),
    (["--frigate_url", "http://f:5000", "--frigate_attempts", "0"], "--frigate_attempts must be at least 1, got 0"),
    ([], "facenet frigate needs --frigate_url http://HOST:5000"),
])
def test_bad_frigate_flags_exit_2_with_one_line(flags, says, capsys):
    from facenet.cli import app

    try:
        code, _ = app.preflight(["facenet", "frigate", *flags])
    finally:
        app.FLAGS.unparse_flags()
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
