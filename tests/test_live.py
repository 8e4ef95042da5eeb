"""Live cameras, tracking and events: real RTSP (GStreamer's server) and MJPEG-over-HTTP servers looping frames of
known people, a real mosquitto broker and a real webhook receiver; the stream is killed mid-run and restarted.

The Debian parts (requirements-system.txt) skip their tests with the reason only when they are not installed.
"""

from __future__ import annotations

import _thread
import json
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_servers import (
    MjpegServer,
    Mosquitto,
    RtspServer,
    WebhookReceiver,
    free_port,
    mosquitto_missing,
    rtsp_missing,
    until,
    write_frames,
)

from facenet.images import load_image
from facenet.live import streams
from facenet.live.streams import Camera, CameraStream, is_camera_spec, parse_cameras
from facenet.live.tracking import TRACK_CHECK_FRAMES, associate, iou
from facenet.unknowns.file_store import FileUnknowns

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = Path(__file__).parent / "data" / "people"
ENROLLED = {"George Clooney": ("George_Clooney", (1, 3, 4)), "Juanes": ("Juanes", (1, 2))}


def photo(folder: str, number: int) -> Path:
    return PEOPLE / folder / f"{folder}_{number:04d}.jpg"


def frame_of(folder: str, number: int, x: int = 120, side: int = 400) -> np.ndarray:
    """A real photo scaled to side x side at column x of a 640x480 black frame."""
    frame = np.zeros((480, 640, 3), np.uint8)
    top = (480 - side) // 2
    frame[top: top + side, x: x + side] = cv2.resize(load_image(photo(folder, number)), (side, side))
    return frame


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("live") / "data"
    for name, (folder, numbers) in ENROLLED.items():
        (root / name).mkdir(parents=True)
        for number in numbers:
            shutil.copy2(photo(folder, number), root / name)
    return root


# --- camera specs ---------------------------------------------------------------------------------------------------

def test_camera_specs_names_and_errors():
    assert is_camera_spec("rtsp://10.0.0.2:554/s1") and is_camera_spec("door=HTTP://cam/video.mjpg")
    assert is_camera_spec("webcam:0") and is_camera_spec("desk=webcam:2")
    assert not is_camera_spec("photos/a=b.jpg") and not is_camera_spec("clip.mp4") and not is_camera_spec("web")
    cameras = parse_cameras(["rtsp://u:secret@10.0.0.2/s1", "door=http://cam:8080/video", "webcam:1"])
    assert [(c.name, c.webcam) for c in cameras] == [("cam1", None), ("door", None), ("cam3", 1)]
    assert cameras[0].shown == "rtsp://u:***@10.0.0.2/s1" and "secret" not in cameras[0].shown
    for bad, why in [(["webcam:x"], "webcam:N"), (["rtsp:///nohost"], "needs a host"),
                     (["a=rtsp://h/1", "a=rtsp://h/2"], "used twice")]:
        with pytest.raises(ValueError, match=why):
            parse_cameras(bad)


def test_the_command_refuses_mixed_or_bad_camera_inputs(tmp_path, capsys):
    from facenet.cli.recognize_command import recognize_command

    common = dict(web_cam=False, camera=0, output_dir=tmp_path / "out", data_dir=tmp_path / "data",
                  database_dir=tmp_path / "db", weights_dir="unused", model="dlib", detector="hog", threshold=None,
                  as_json=False, enroll_only=False)
    assert recognize_command(inputs=["rtsp://h/1", str(photo("Juanes", 1))], **common) == 2
    assert recognize_command(inputs=["webcam:first"], **common) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: --input mixes live cameras and files: run them in separate commands",
                     "error: webcam:first: a webcam is webcam:N with N a webcam index (0 or more)"]


@pytest.mark.parametrize("flags, message", [
    (["--mqtt_url", "tcp://broker"], "--mqtt_url must look like mqtt://host:1883"),
    (["--webhook", "ftp://x/hook"], "--webhook must be an http(s):// URL"),
    (["--max_frames", "-1"], "--max_frames must be 0 (no limit) or more"),
    (["--notrack", "--events", "ev.jsonl"], "cannot be used with --notrack"),
])
def test_bad_live_flags_exit_2_with_one_line(flags, message, capsys):
    from facenet.cli import app

    try:
        code, _ = app.preflight(["facenet", "--input", "rtsp://h/1", *flags])
    finally:
        app.FLAGS.unparse_flags()
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_a_camera_that_never_answers_is_one_line_and_keeps_retrying(monkeypatch):
    monkeypatch.setattr(streams, "RECONNECT_FIRST_S", 0.1)
    drops, attempts = [], []

    def opener(camera):
        attempts.append(time.monotonic())
        from facenet.live.streams import open_capture

        return open_capture(camera)

    stream = CameraStream(Camera("porch", f"rtsp://127.0.0.1:{free_port()}/live"), drops.append, opener).start()
    time.sleep(1.2)
    stream.stop()
    stream.join(10)
    assert not stream._thread.is_alive()
    assert len(attempts) >= 3, "it keeps reconnecting, with back-off"
    assert len(drops) == 1 and drops[0].reason == "cannot connect" and stream.latest() is None
    assert drops[0].text().startswith("porch (rtsp://127.0.0.1:")


# --- tracking -------------------------------------------------------------------------------------------------------

def test_association_follows_moving_boxes_and_starts_new_ones():
    tracks = [(100, 100, 200, 200), (400, 100, 480, 180)]
    faces = [(410, 105, 490, 185), (130, 100, 230, 200), (10, 300, 60, 350)]
    assert sorted(associate(tracks, faces)) == [(0, 1), (1, 0)]
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert associate(tracks, []) == [] and associate([], faces) == []


def test_tracking_keeps_one_id_and_name_per_person_and_embeds_a_few_times(tmp_path, data_dir, pipeline):
    from facenet.cli.stream_output import Summary, recognize_stream
    from facenet.gallery.file import sync_database
    from facenet.live.frames import FrameRecognizer
    from facenet.sources import VideoSource

    database, _ = sync_database(data_dir, tmp_path / "db", pipeline)
    # George walks right for 24 frames (changing photo every 8), nobody for 12 frames (1.2 s > TRACK_LOST_S),
    # then Juanes for 16 frames.
    frames = [frame_of("George_Clooney", 5 + i // 8, x=60 + 6 * i, side=360) for i in range(24)]
    frames += [np.zeros((480, 640, 3), np.uint8)] * 12 + [frame_of("Juanes", 3, x=100 + 4 * i) for i in range(16)]
    video = tmp_path / "walk.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()

    recognizer, seen, sent = FrameRecognizer(pipeline, database, "walk"), [], []
    with VideoSource.open_file(video) as source:
        recognize_stream(source, recognizer, Summary(), on_frame=lambda i, results: seen.append((i, results)),
                         on_events=sent.extend)
    events = [(e.kind, e.track, e.name) for e in sent]

    per_track = {}
    for _, results in seen:
        for r in results:
            per_track.setdefault(r.track, []).append(r.name)
    assert per_track == {1: ["George Clooney"] * 24, 2: ["Juanes"] * 16}, "one id and one steady name per person"
    faces = sum(len(r) for _, r in seen)
    print("embedded", recognizer.tracker.embedded, "of", faces)
    assert faces // TRACK_CHECK_FRAMES <= recognizer.tracker.embedded < faces // 2, "checked all along, not every frame"
    assert events == [("appeared", 1, "George Clooney"), ("named", 1, "George Clooney"), ("left", 1, "George Clooney"),
                      ("appeared", 2, "Juanes"), ("named", 2, "Juanes"), ("left", 2, "Juanes")]


def test_a_different_person_in_the_same_place_starts_a_new_track(tmp_path, data_dir, pipeline):
    from facenet.gallery.file import sync_database
    from facenet.live.tracking import TrackingRecognizer

    database, _ = sync_database(data_dir, tmp_path / "db", pipeline)
    tracker = TrackingRecognizer(pipeline, database, "desk")
    # George leaves and Juanes steps into the same place 0.3 s later (< TRACK_LOST_S: George's track is still live)
    empty = np.zeros((480, 640, 3), np.uint8)
    frames = [frame_of("George_Clooney", 6)] * 6 + [empty] * 3 + [frame_of("Juanes", 3)] * 6
    seen, events = [], []
    for i, frame in enumerate(frames):
        faces, new = tracker.recognize(frame, i, i / 10)
        seen.append(faces)
        events += [(e.kind, e.track, e.name) for e in new]
    assert [(r[0].track, r[0].name) for r in seen if r] == [(1, "George Clooney")] * 6 + [(2, "Juanes")] * 6
    events += [(e.kind, e.track, e.name) for e in tracker.finish()]
    assert events == [("appeared", 1, "George Clooney"), ("named", 1, "George Clooney"), ("left", 1, "George Clooney"),
                      ("appeared", 2, "Juanes"), ("named", 2, "Juanes"), ("left", 2, "Juanes")]


def test_a_video_file_with_events_gets_tracks_events_and_snapshots(tmp_path, data_dir, pipeline, monkeypatch, capsys):
    from facenet.cli import common
    from facenet.cli.event_output import LiveOptions
    from facenet.cli.recognize_command import recognize_command

    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kwargs: pipeline)
    monkeypatch.delenv("DISPLAY", raising=False)
    video = tmp_path / "in" / "door.mp4"
    video.parent.mkdir()
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for i in range(12):
        writer.write(cv2.cvtColor(frame_of("Juanes", 3, x=100 + 5 * i), cv2.COLOR_RGB2BGR))
    writer.release()
    arguments = dict(web_cam=False, inputs=[str(video)], camera=0, output_dir=tmp_path / "out", data_dir=data_dir,
                     database_dir=tmp_path / "db", weights_dir="unused", model="dlib", detector="hog",
                     threshold=None, as_json=True, enroll_only=False)
    assert recognize_command(**arguments, live=LiveOptions(events=str(tmp_path / "ev.jsonl"))) == 0
    faces = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(f["frame"], f["name"], f["track"]) for f in faces] == [(i, "Juanes", 1) for i in range(12)]
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [(e["event"], e["camera"], e["name"]) for e in events] == [
        (kind, str(video), "Juanes") for kind in ("appeared", "named", "left")]
    assert Path(events[-1]["snapshot"]).is_file() and events[-1]["frame"] == 11

    assert recognize_command(**arguments) == 0  # without tracking flags: the same lines as before, no track key
    assert all("track" not in json.loads(line) for line in capsys.readouterr().out.splitlines())
    blocked = tmp_path / "file"
    blocked.write_text("a file where the events' folder should be")
    assert recognize_command(**arguments, live=LiveOptions(events=str(blocked / "ev.jsonl"))) == 1


# --- live cameras through the command: RTSP + MJPEG, a drop and a restart, MQTT and a webhook ------------------------

class Controller(threading.Thread):
    """Plays the outage while the command runs in the main thread: waits for George to be named on the RTSP camera,
    kills its server, restarts it after the drop line and a few failed retries, waits for George again, then
    presses Ctrl-C (KeyboardInterrupt in the main thread, as a terminal would)."""

    def __init__(self, rtsp: RtspServer, events: Path, caplog) -> None:
        super().__init__(daemon=True)
        self.rtsp, self.events, self.caplog = rtsp, events, caplog
        self.failure: BaseException | None = None
        self.renamed: dict | None = None

    @staticmethod
    def _wait(test, what: str, timeout: float = 60) -> object:
        return until(test, what, timeout)

    def _event(self, kind: str, camera: str, later_than: int = 0) -> dict | None:
        lines = self.events.read_text().splitlines() if self.events.exists() else []
        return next((e for e in map(json.loads, lines) if e["event"] == kind and e["camera"] == camera
                     and e["track"] > later_than), None)

    def run(self) -> None:
        try:
            self._wait(lambda: self._event("named", "door"), "a track named on the RTSP camera", 120)
            self._wait(lambda: self._event("named", "gate"), "a track named on the MJPEG camera")
            self.rtsp.stop()  # the RTSP server dies mid-stream
            self._wait(lambda: any("reconnecting" in r.getMessage() for r in self.caplog.records), "the drop line")
            self._wait(lambda: self._event("left", "door"), "the track leaving the dead camera")
            time.sleep(1.6)  # failed reconnection attempts while the server is down (back-off 0.5 s, 1 s)
            self.rtsp.start()
            self.renamed = self._wait(lambda: self._event("named", "door", later_than=1), "a new track named", 60)
        except BaseException as failure:  # noqa: BLE001 - handed to the test
            self.failure = failure
        finally:
            _thread.interrupt_main()


@pytest.mark.skipif(rtsp_missing() is not None, reason=str(rtsp_missing()))
@pytest.mark.skipif(mosquitto_missing() is not None, reason=str(mosquitto_missing()))
def test_live_cameras_survive_a_dropped_stream_and_publish_events(tmp_path, data_dir, pipeline, monkeypatch,
                                                                    caplog, capsys):
    import paho.mqtt.client as mqtt

    from facenet.cli import common
    from facenet.cli.event_output import LiveOptions
    from facenet.cli.recognize_command import recognize_command

    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kwargs: pipeline)  # the model loads once per session
    caplog.set_level("INFO")
    door_frames = write_frames(tmp_path / "door", [frame_of("George_Clooney", 6)] * 10)
    gate_frames = write_frames(tmp_path / "gate", [frame_of("Juanes", 3)] * 10)
    rtsp = RtspServer(door_frames, free_port()).start()
    mjpeg, hook, broker = MjpegServer(gate_frames), WebhookReceiver(), Mosquitto(tmp_path)
    messages: list[tuple[str, str]] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    subscriber.on_message = lambda _c, _u, m: messages.append((m.topic, m.payload.decode()))
    subscriber.on_connect = lambda c, *_: c.subscribe([("facenet/#", 1), ("homeassistant/#", 1)])
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()
    events_file = tmp_path / "events.jsonl"
    controller = Controller(rtsp, events_file, caplog)
    controller.start()
    try:
        code = recognize_command(
            web_cam=False, inputs=[f"door={rtsp.url}", f"gate={mjpeg.url}"], camera=0,
            output_dir=tmp_path / "out", data_dir=data_dir, database_dir=tmp_path / "db", weights_dir="unused",
            model="dlib", detector="hog", threshold=None, as_json=True, enroll_only=False,
            live=LiveOptions(events=str(events_file), mqtt_url=broker.url, webhook=hook.url))
        controller.join(10)
    finally:
        rtsp.stop()
        mjpeg.stop()
    time.sleep(0.5)
    subscriber.loop_stop()
    broker.stop()
    hook.stop()
    if controller.failure is not None:
        raise controller.failure
    assert code == 0

    drops = [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]
    assert len(drops) == 1, f"one line per drop, none per retry: {drops}"
    assert drops[0].startswith("door (rtsp://127.0.0.1:") and "stream lost" in drops[0]
    captured = capsys.readouterr()
    faces = [json.loads(line) for line in captured.out.splitlines()]
    assert {f["source"] for f in faces} == {"door", "gate"} and all(isinstance(f["track"], int) for f in faces)
    assert {f["name"] for f in faces if f["source"] == "gate"} == {"Juanes"}
    assert {f["name"] for f in faces if f["source"] == "door"} == {"George Clooney"}
    door_frames_seen = [f["frame"] for f in faces if f["source"] == "door"]
    assert door_frames_seen == sorted(door_frames_seen), "frames keep counting across the reconnection"
    assert any(line.strip().startswith("door: ") and line.endswith(" 1 drops") for line in captured.err.splitlines())
    assert any(line.strip().startswith("gate: ") and line.endswith(" 0 drops") for line in captured.err.splitlines())

    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert all(list(e) == ["event", "camera", "time", "track", "frame", "name", "distance", "score", "snapshot"]
               for e in events)
    second = controller.renamed["track"]
    door = [(e["event"], e["track"], e["name"]) for e in events if e["camera"] == "door"]
    assert door == [(kind, track, "George Clooney") for track in (1, second) for kind in ("appeared", "named", "left")]
    assert [(e["event"], e["name"]) for e in events if e["camera"] == "gate"] == [
        ("appeared", "Juanes"), ("named", "Juanes"), ("left", "Juanes")]
    snapshot = Path(controller.renamed["snapshot"])
    assert snapshot.parent == tmp_path / "out" / "snapshots" and snapshot.name.startswith("door-")
    assert cv2.imread(str(snapshot)).shape[0] > 100, "the best face, as a JPEG"

    assert sorted(map(json.dumps, hook.received)) == sorted(map(json.dumps, events)), "every event POSTed"
    assert [json.loads(p) for t, p in messages if t == "facenet/door/event"] == [e for e in events
                                                                               if e["camera"] == "door"]
    assert [p for t, p in messages if t == "facenet/door/george_clooney/state"] == ["ON", "OFF", "ON", "OFF"]
    assert [p for t, p in messages if t == "facenet/gate/juanes/state"] == ["ON", "OFF"]
    assert [p for t, p in messages if t == "facenet/status"] == ["online", "offline"]
    discovery = "homeassistant/binary_sensor/facenet_door_george_clooney/config"
    configs = [json.loads(p) for t, p in messages if t == discovery]
    assert len(configs) == 1 and configs[0]["state_topic"] == "facenet/door/george_clooney/state"


@pytest.mark.skipif(mosquitto_missing() is not None, reason=str(mosquitto_missing()))
def test_people_replacing_each_other_at_a_camera_get_their_own_tracks_events_and_presence(
        tmp_path, data_dir, pipeline, monkeypatch, capsys):
    """The MJPEG camera shows George, then Juanes, then a stranger in the same spot with no empty frame between:
    each gets a new track and their own name on every frame; events and MQTT presence follow."""
    import paho.mqtt.client as mqtt

    from facenet.cli import common
    from facenet.cli.event_output import LiveOptions
    from facenet.cli.recognize_command import recognize_command

    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kwargs: pipeline)
    shown = [("George_Clooney", 6), ("Juanes", 3), ("Martha_Burk", 2)]  # Martha is not enrolled here
    frames = write_frames(tmp_path / "gate", [frame_of(folder, number) for folder, number in shown for _ in range(15)])
    camera, broker = MjpegServer(frames), Mosquitto(tmp_path)
    messages: list[tuple[str, str]] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    subscriber.on_message = lambda _c, _u, m: messages.append((m.topic, m.payload.decode()))
    subscriber.on_connect = lambda c, *_: c.subscribe([("facenet/gate/#", 1)])
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()
    try:
        code = recognize_command(
            web_cam=False, inputs=[f"gate={camera.url}"], camera=0, output_dir=tmp_path / "out", data_dir=data_dir,
            database_dir=tmp_path / "db", weights_dir="unused", model="dlib", detector="hog", threshold=None,
            as_json=True, enroll_only=False,
            live=LiveOptions(events=str(tmp_path / "events.jsonl"), mqtt_url=broker.url, max_frames=40))
    finally:
        camera.stop()
        time.sleep(0.5)
        subscriber.loop_stop()
        broker.stop()
    assert code == 0
    faces = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    per_track: dict[int, list[str]] = {}
    for face in faces:
        per_track.setdefault(face["track"], []).append(face["name"])
    truth = ["George Clooney", "Juanes", "Unknown"]
    assert [names[-1] for names in per_track.values()] == truth, per_track
    assert all(set(names) == {names[-1]} for names in per_track.values()), "one name per track, on every frame"

    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["track"], e["name"]) for e in events] == [
        (kind, track, name) for track, name in zip(per_track, truth, strict=True)
        for kind in ("appeared", "named", *(["unknown_seen"] if name == "Unknown" else []), "left")]
    presence = [(t.split("/")[2], p) for t, p in messages if t.endswith("/state")]
    assert presence == [("george_clooney", "ON"), ("george_clooney", "OFF"), ("juanes", "ON"), ("juanes", "OFF"),
                        ("unknown", "ON"), ("unknown", "OFF")]
    # the stranger (on by default for cameras) left one sighting and an alert, on MQTT too
    alert = next(e for e in events if e["event"] == "unknown_seen")
    assert alert["new"] is True and alert["sightings"] == 1 and Path(alert["snapshot"]).is_file()
    groups = [(g.id, len(g.faces), g.sources) for g in FileUnknowns(tmp_path / "db").groups()]
    assert groups == [(alert["group"], 1, ["gate"])]
    assert [json.loads(p) for t, p in messages if t == "facenet/gate/unknown"] == [alert]


# --- issue 22: sinks that fail, cameras that die, names that collide -------------------------------------------------

def _juanes_video(path: Path, frames: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for i in range(frames):
        writer.write(cv2.cvtColor(frame_of("Juanes", 3, x=100 + 5 * i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_for_the_events_file_is_one_warning_and_the_lost_events_are_counted(
        tmp_path, data_dir, pipeline, monkeypatch, capsys, caplog):
    from facenet.cli import common
    from facenet.cli.event_output import LiveOptions
    from facenet.cli.recognize_command import recognize_command

    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kwargs: pipeline)
    monkeypatch.delenv("DISPLAY", raising=False)
    video = _juanes_video(tmp_path / "in" / "door.mp4")
    code = recognize_command(web_cam=False, inputs=[str(video)], camera=0, output_dir=tmp_path / "out",
                             data_dir=data_dir, database_dir=tmp_path / "db", weights_dir="unused", model="dlib",
                             detector="hog", threshold=None, as_json=True, enroll_only=False,
                             live=LiveOptions(events="/dev/full"))
    assert code == 0
    faces = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(f["frame"], f["name"]) for f in faces] == [(i, "Juanes") for i in range(12)], "recognition went on"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["events file /dev/full: cannot write (No space left on device); recognition goes on, "
                        "lost events are counted",
                        "events file /dev/full: 3 of 3 events not written"], warnings
    assert (tmp_path / "out" / "door.mp4").is_file(), "the annotated video is fine and kept"


class _Receiver:
    """A real HTTP server on loopback answering every POST with `answer(handler)`; records the bodies it read."""

    def __init__(self, answer) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: list[dict] = []
        self.received, self.gets = received, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                answer(self)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.gets += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _event(number: int, camera: str = "door"):
    from facenet.live.tracking import TrackEvent

    return TrackEvent("appeared", camera, number, time.time(), number, None, None, None, time.time())


def _redirect(handler) -> None:
    handler.send_response(302)
    handler.send_header("Location", "/elsewhere")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def _trickle(handler) -> None:
    """Answers 204 slowly: one header line every 0.4 s (each within the socket timeout), 2.4 s in all."""
    handler.send_response_only(204)
    handler.flush_headers()
    try:
        for i in range(6):
            time.sleep(0.4)
            handler.wfile.write(f"X-Slow-{i}: yes\r\n".encode())
            handler.wfile.flush()
        handler.wfile.write(b"\r\n")
    except OSError:  # the client hung up: what the test expects
        return


@pytest.mark.parametrize("answer, why", [
    (_redirect, "answered HTTP 302 Found (redirects are not followed)"),
    (_trickle, "no answer within 1 s"),
])
def test_a_webhook_that_redirects_or_trickles_loses_events_loudly(answer, why, tmp_path, monkeypatch, caplog):
    from facenet.cli.event_output import EventSinks, LiveOptions
    from facenet.live import events

    monkeypatch.setattr(events, "WEBHOOK_TIMEOUT_S", 1.0)
    receiver = _Receiver(answer)
    try:
        sinks = EventSinks(LiveOptions(events=str(tmp_path / "ev.jsonl"), webhook=receiver.url), tmp_path, False)
        sinks.send([_event(n) for n in range(1, 4)])
        lost = sinks.close()
    finally:
        receiver.stop()
    where = receiver.url.removeprefix("http://").removesuffix("/hook")
    assert lost == [f"webhook {where}: 3 of 3 events not delivered"]
    assert receiver.gets == 0, "a redirect is not re-sent as a bodiless GET"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"webhook {receiver.url}: {why} (events are dropped until it answers)"], warnings
    assert len((tmp_path / "ev.jsonl").read_text().splitlines()) == 3, "the other sinks got every event"


def test_a_webhook_that_answers_2xx_loses_nothing(tmp_path):
    from facenet.cli.event_output import EventSinks, LiveOptions

    def accept(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    receiver = _Receiver(accept)
    try:
        sinks = EventSinks(LiveOptions(webhook=receiver.url), tmp_path, True)
        sinks.send([_event(n) for n in range(1, 6)])
        lost = sinks.close()
    finally:
        receiver.stop()
    assert lost == [] and [r["track"] for r in receiver.received] == [1, 2, 3, 4, 5]
    assert sinks.webhook is not None and sinks.webhook.sent == 5


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="POSIX signals")
def test_two_ctrl_c_ms_apart_still_shut_down_cleanly_with_the_summary(tmp_path):
    """`timeout -s INT` signals the process and its group: two SIGINTs a few ms apart, during the live run."""
    import os
    import signal
    import subprocess
    import sys

    (tmp_path / "data" / "Juanes").mkdir(parents=True)
    shutil.copy2(photo("Juanes", 1), tmp_path / "data" / "Juanes")
    camera = MjpegServer(write_frames(tmp_path / "gate", [frame_of("Juanes", 3)] * 10))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "-t", "False", "-wc", "False", "--model", "dlib", "-d", "hog",
         "--json", "--input", f"gate={camera.url}", "--events", str(tmp_path / "ev.jsonl")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # the run is live: a face was recognised on 3 frames (its track has appeared)
            face = process.stdout.readline()
            assert json.loads(face)["source"] == "gate", face
        process.send_signal(signal.SIGINT)
        time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        camera.stop()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "Fatal" not in stderr and "interrupted" not in stderr, stderr
    tail = stderr.strip().splitlines()[-2:]
    assert tail[0] == "Done:" and tail[1].startswith("  gate: ") and tail[1].endswith(" 0 drops"), tail
    events = [json.loads(line)["event"] for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert events[-1] == "left", "every track left and its event was written"


def test_a_camera_url_with_a_bad_port_is_refused_at_start_up_with_one_line(tmp_path, capsys):
    from facenet.cli.recognize_command import recognize_command

    common = dict(web_cam=False, camera=0, output_dir=tmp_path / "out", data_dir=tmp_path / "data",
                  database_dir=tmp_path / "db", weights_dir="unused", model="dlib", detector="hog", threshold=None,
                  as_json=False, enroll_only=False)
    assert recognize_command(inputs=["door=rtsp://admin:pw@cam:99999/stream"], **common) == 2
    assert recognize_command(inputs=["gate=http://cam:0/video"], **common) == 2
    assert recognize_command(inputs=["desk=rtsp://admin:pw@[fe80::1/live"], **common) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: camera door: bad URL (Port out of range 0-65535)",
                                "error: camera gate: bad URL (port 0)",
                                "error: camera desk: bad URL (Invalid IPv6 URL)"]
    assert "pw" not in err


def test_a_camera_thread_that_hits_an_unexpected_error_counts_a_drop_and_retries(tmp_path, monkeypatch):
    from facenet.live.streams import open_capture

    monkeypatch.setattr(streams, "RECONNECT_FIRST_S", 0.1)
    camera = MjpegServer(write_frames(tmp_path / "gate", [frame_of("Juanes", 3)] * 3))
    failures = iter([ValueError("Port out of range 0-65535"), RuntimeError("boom")])
    drops = []

    def opener(cam):
        problem = next(failures, None)
        if problem is not None:
            raise problem
        return open_capture(cam)

    stream = CameraStream(Camera("gate", camera.url), drops.append, opener).start()
    try:
        deadline = time.monotonic() + 20
        while stream.frames_read == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stream.stop()
        stream.join(10)
        camera.stop()
    assert stream.frames_read > 0, "the camera was retried and read"
    assert [d.reason for d in drops] == ["unexpected error (ValueError: Port out of range 0-65535)"]
    assert stream.drops == 1 and not stream._thread.is_alive()


def test_camera_names_that_share_a_topic_are_refused_with_one_line(tmp_path, capsys):
    from facenet.cli.recognize_command import recognize_command

    common = dict(web_cam=False, camera=0, output_dir=tmp_path / "out", data_dir=tmp_path / "data",
                  database_dir=tmp_path / "db", weights_dir="unused", model="dlib", detector="hog", threshold=None,
                  as_json=False, enroll_only=False)
    assert recognize_command(inputs=["Door=rtsp://h/1", "door=rtsp://h/2"], **common) == 2
    assert recognize_command(inputs=["front-door=rtsp://h/1", "front_door=rtsp://h/2"], **common) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: cameras Door and door: the same MQTT topic and snapshot name (door); name them apart",
        "error: cameras front-door and front_door: the same MQTT topic and snapshot name (front_door); name them apart"]
    assert [c.name for c in parse_cameras(["door=rtsp://h/1", "door2=rtsp://h/2"])] == ["door", "door2"]


def test_control_characters_in_a_name_never_make_a_fake_line():
    import logging

    from facenet.cli.event_output import event_text
    from facenet.gallery.report import EnrollmentReport
    from facenet.text import OneLineFormatter

    crafted = "Ada\nLovelace (2): a.jpg\r\n  Bob\t\x1b[2J\x85"
    report = EnrollmentReport("data", "db", threshold=0.4, people={crafted: [f"{crafted}/a.jpg"]},
                              not_enrolled=["Eve\u2028Mallory"])
    lines = report.to_text().splitlines()
    assert lines[2:] == ["  Ada\\nLovelace (2): a.jpg\\r\\n  Bob\\t\\x1b[2J\\x85 (1): a.jpg",
                         "Not enrolled (no usable photo) (1):", "  Eve\\u2028Mallory"], lines
    record = {"camera": "door", "track": 3, "event": "named", "name": crafted, "distance": 0.31, "score": 84.0,
              "snapshot": None}
    assert event_text(record) == "door #3 named Ada\\nLovelace (2): a.jpg\\r\\n  Bob\\t\\x1b[2J\\x85 (0.31, score 84)"
    log_record = logging.LogRecord("facenet", logging.WARNING, __file__, 1, "%s: no face", (crafted,), None)
    assert OneLineFormatter("%(levelname)s: %(message)s").format(log_record) == (
        "WARNING: Ada\\nLovelace (2): a.jpg\\r\\n  Bob\\t\\x1b[2J\\x85: no face")


@pytest.mark.skipif(mosquitto_missing() is not None, reason=str(mosquitto_missing()))
def test_mqtt_events_that_never_reached_the_broker_are_one_line_at_exit(tmp_path):
    from facenet.cli.event_output import EventSinks, LiveOptions

    port = free_port()  # nothing listens there for the whole run
    sinks = EventSinks(LiveOptions(mqtt_url=f"mqtt://127.0.0.1:{port}"), tmp_path, True)
    sinks.send([_event(n) for n in range(1, 5)])
    time.sleep(0.5)
    assert sinks.close() == [f"MQTT broker 127.0.0.1:{port}: 4 of 4 events not delivered"]

    broker = Mosquitto(tmp_path)  # a broker that is up: nothing lost, no line
    try:
        sinks = EventSinks(LiveOptions(mqtt_url=broker.url), tmp_path, True)
        deadline = time.monotonic() + 10
        while sinks.mqtt is not None and not sinks.mqtt.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        sinks.send([_event(n) for n in range(1, 5)])
        assert sinks.close() == []
        assert sinks.mqtt is not None and sinks.mqtt.published == 4
    finally:
        broker.stop()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_live_run_whose_sinks_all_fail_goes_on_and_its_summary_counts_the_losses(tmp_path):
    """`python main.py` on a live camera with --events /dev/full, a webhook answering 302 and an MQTT broker that is
    down for the whole run: exit 0, one warning per sink, and the summary says how many events each one lost."""
    import os
    import subprocess
    import sys

    (tmp_path / "data" / "Juanes").mkdir(parents=True)
    shutil.copy2(photo("Juanes", 1), tmp_path / "data" / "Juanes")
    camera = MjpegServer(write_frames(tmp_path / "gate", [frame_of("Juanes", 3)] * 10))
    hook, mqtt_port = _Receiver(_redirect), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    try:
        run = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), "-t", "False", "-wc", "False", "--model", "dlib", "-d", "hog",
             "--input", f"gate={camera.url}", "--max_frames", "8", "--events", "/dev/full", "--webhook", hook.url,
             "--mqtt_url", f"mqtt://127.0.0.1:{mqtt_port}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    finally:
        camera.stop()
        hook.stop()
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    sent = [record["event"] for record in hook.received]  # the bodies it read before answering 302
    assert sent == ["appeared", "named", "left"] and hook.gets == 0
    lines = run.stderr.strip().splitlines()
    assert lines[-5:-3] == ["Done:", lines[-4]] and lines[-4].startswith("  gate: 8 frames, "), lines[-5:]
    where = hook.url.removeprefix("http://").removesuffix("/hook")
    assert lines[-3:] == ["  events file /dev/full: 3 of 3 events not written",
                          f"  MQTT broker 127.0.0.1:{mqtt_port}: 3 of 3 events not delivered",
                          f"  webhook {where}: 3 of 3 events not delivered"], lines[-3:]
    warnings = sorted(line for line in lines if line.startswith("WARNING: "))
    assert warnings == sorted([
        "WARNING: events file /dev/full: cannot write (No space left on device); recognition goes on, lost events "
        "are counted",
        f"WARNING: MQTT broker 127.0.0.1:{mqtt_port} unreachable; retrying, events are queued",
        f"WARNING: webhook {hook.url}: answered HTTP 302 Found (redirects are not followed) (events are dropped "
        "until it answers)"]), warnings
