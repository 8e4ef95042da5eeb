"""Live cameras inside the service: `python main.py serve --input door=http://…` as a real server (a subprocess)
reading a real MJPEG-over-HTTP camera that shows an enrolled person, publishing to a real mosquitto broker; its
cameras, frames, MJPEG stream, events and snapshots over HTTP, a dropped and restored camera, the web page in a real
Chromium, a graceful Ctrl-C. The API-key rules of the camera routes are checked in-process (a camera that never
answers: no model call)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_servers import MjpegServer, Mosquitto, mosquitto_missing, until, write_frames

from facenet.live.events import EVENT_KEYS
from tests.test_live import frame_of, photo
from tests.test_service import KEY
from tests.test_service_http import MAIN, STARTUP_S, browser, free_port, serve_env, wait_for  # noqa: F401 - fixture

httpx = pytest.importorskip("httpx")

ENROLLED = {"Juanes": ("Juanes", (1, 2)), "George Clooney": ("George_Clooney", (1, 3, 4))}
FRAME_SIZE = (640, 480)
WAIT_S = 60


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def green_pixels(bgr: np.ndarray) -> int:
    """Pixels of the known-face box colour (draw.KNOWN_RGB, 46/204/64), with JPEG slack."""
    b, g, r = (bgr[..., i].astype(int) for i in range(3))
    return int(np.count_nonzero((g > 160) & (r < 110) & (b < 120)))


class Service:
    """The running `serve` subprocess and the servers around it."""

    def __init__(self, root: Path, weights_dir: Path) -> None:
        self.root = root
        data = root / "data"
        for name, (folder, numbers) in ENROLLED.items():
            (data / name).mkdir(parents=True)
            for number in numbers:
                (data / name / photo(folder, number).name).write_bytes(photo(folder, number).read_bytes())
        self.frames = write_frames(root / "door", [frame_of("Juanes", 3)] * 5)
        self.camera = MjpegServer(self.frames, fps=10)
        self.port = int(self.camera.url.split(":")[2].split("/")[0])
        self.broker = Mosquitto(root)
        self.messages: list[tuple[str, str]] = []
        import paho.mqtt.client as mqtt

        self.subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.subscriber.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload.decode()))
        self.subscriber.on_connect = lambda c, *_: c.subscribe("facenet/#", 1)
        self.subscriber.connect("127.0.0.1", self.broker.port)
        self.subscriber.loop_start()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, str(MAIN), "serve", "--port", str(port), "--input", f"door={self.camera.url}",
             "--mqtt_url", self.broker.url, "--events", "events.jsonl", "--output_dir", "out", "--data_dir", "data",
             "--database_dir", "db", "-wp", str(weights_dir), "--model", "dlib", "-d", "hog"],
            cwd=root, env=serve_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_started(self) -> None:
        def up() -> bool:
            assert self.process.poll() is None, self.process.communicate()[1]
            try:
                return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        until(up, "the service to start", STARTUP_S)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def door(self) -> dict:
        return self.get("/api/v1/cameras/door").json()

    def events(self) -> list[dict]:
        return self.get("/api/v1/events").json()["events"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=30)
        self.camera.stop()
        self.subscriber.loop_stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory, embedder, weights_dir):
    """`main.py serve` with one MJPEG camera `door` showing Juanes (enrolled), events to a file and MQTT, no keys
    (`embedder` makes sure the converted model is cached in weights_dir)."""
    if mosquitto_missing():
        pytest.skip(mosquitto_missing())
    service = Service(tmp_path_factory.mktemp("cameras"), weights_dir)
    try:
        service.wait_started()
        yield service
    finally:
        service.close()


def named_on_door(service: Service, name: str = "Juanes") -> dict | None:
    camera = service.door()
    return camera if any(t["name"] == name for t in camera["tracks"]) else None


def test_the_camera_is_live_with_the_person_in_front_of_it(service):
    camera = until(lambda: named_on_door(service), "a track named Juanes on door")
    listed = service.get("/api/v1/cameras").json()["cameras"]
    assert [c["name"] for c in listed] == ["door"]
    assert camera["status"] == "live" and camera["frames"] > 0 and camera["drops"] == 0
    assert (camera["width"], camera["height"]) == FRAME_SIZE
    assert camera["url"] == service.camera.url
    assert camera["stream"] == "/api/v1/cameras/door/stream.mjpg"
    [track] = camera["tracks"]
    assert set(track) == {"track", "name", "box", "distance", "score"}
    assert track["track"] == 1 and track["name"] == "Juanes"
    assert 0 <= track["distance"] < 0.6 and 50 < track["score"] <= 100
    left, top, right, bottom = track["box"]
    assert 120 <= left < right <= 520 and 40 <= top < bottom <= 440, "inside the photo pasted at x 120-520"
    missing = service.get("/api/v1/cameras/porch")
    assert missing.status_code == 404 and missing.json() == {"detail": "no camera 'porch'"}


def test_latest_frame_and_mjpeg_stream_are_annotated_frames(service):
    until(lambda: named_on_door(service), "a track named Juanes on door")
    latest = service.get("/api/v1/cameras/door/latest.jpg")
    assert latest.status_code == 200 and latest.headers["content-type"] == "image/jpeg"
    image = decode(latest.content)
    assert image.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    raw = cv2.imread(str(service.frames / "0000.jpg"))
    assert green_pixels(raw) < 50 < 500 < green_pixels(image), "the known face is boxed in green"

    buffer = b""
    with httpx.stream("GET", f"{service.url}/api/v1/cameras/door/stream.mjpg", timeout=30) as response:
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        for chunk in response.iter_bytes():
            buffer += chunk
            if buffer.count(b"--frame\r\n") >= 3:  # two whole parts
                break
    parts = [b"--frame\r\n" + part.removesuffix(b"\r\n") for part in buffer.split(b"--frame\r\n")[1:3]]
    assert len(parts) == 2
    for part in parts:
        head, _, body = part.partition(b"\r\n\r\n")
        assert head.startswith(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ")
        assert int(head.rsplit(b" ", 1)[1]) == len(body)
        assert decode(body).shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)


def test_events_with_snapshots_in_the_api_the_events_file_and_mqtt(service):
    def named() -> list[dict] | None:
        events = service.events()
        return events if any(e["event"] == "named" and e["name"] == "Juanes" for e in events) else None

    events = until(named, "a named event")
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True), "newest first"
    assert [(e["event"], e["camera"], e["track"], e["name"]) for e in reversed(events)][:2] == [
        ("appeared", "door", 1, "Juanes"), ("named", "door", 1, "Juanes")]
    assert all(list(e) == ["id", *EVENT_KEYS, "snapshot_url"] for e in events)
    named_event = next(e for e in events if e["event"] == "named")
    assert named_event["snapshot_url"] == f"/api/v1/events/{named_event['id']}/snapshot.jpg"
    assert Path(named_event["snapshot"]).parts[:2] == ("out", "snapshots")
    assert (service.root / named_event["snapshot"]).is_file()
    snapshot = service.get(named_event["snapshot_url"])
    assert snapshot.status_code == 200 and snapshot.headers["content-type"] == "image/jpeg"
    height, width = decode(snapshot.content).shape[:2]
    assert 100 < width <= 400 and 100 < height <= 400, "the best face, grown a little, as a JPEG"
    assert service.get("/api/v1/events/999999/snapshot.jpg").status_code == 404

    lines = [json.loads(line) for line in (service.root / "events.jsonl").read_text().splitlines()]
    records = [{k: e[k] for k in EVENT_KEYS} for e in reversed(events)]
    assert lines[:len(records)] == records, "the API holds the records the CLI writes"
    until(lambda: ("facenet/door/juanes/state", "ON") in service.messages, "the MQTT presence state", 10)
    published = [json.loads(p) for t, p in service.messages if t == "facenet/door/event"]
    assert published[:2] == records[:2]
    assert ("facenet/status", "online") in service.messages


def test_a_dropped_camera_shows_reconnecting_and_comes_back(service):
    until(lambda: named_on_door(service), "a track named Juanes on door")
    service.camera.stop()  # the camera's server goes away, its open stream too
    camera = until(lambda: (c := service.door())["status"] == "reconnecting" and c, "the drop", 20)
    assert camera["drops"] == 1
    health = service.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", "the service keeps answering"
    until(lambda: not service.door()["tracks"], "the track to leave the dead camera", 10)
    assert any(e["event"] == "left" and e["track"] == 1 for e in service.events())
    frames = service.door()["frames"]

    service.camera = MjpegServer(service.frames, port=service.port, fps=10)  # the camera comes back
    camera = until(lambda: (c := named_on_door(service)) and c["status"] == "live" and c,
                   "Juanes named again, live, after the reconnection", 40)
    assert camera["frames"] > frames + 2 and camera["drops"] == 1
    assert camera["tracks"][0]["track"] > 1, "a new track"


def test_the_web_page_shows_the_camera_and_who_is_there(service, browser):  # noqa: F811 - the fixture
    browser.get(service.url + "/")
    wait_for(browser, "#cameras .camera .person", "Juanes", timeout=WAIT_S)
    view = browser.find_element("css selector", "#cameras .camera img.camera-view")
    assert view.get_attribute("src") == f"{service.url}/api/v1/cameras/door/stream.mjpg"
    until(lambda: browser.execute_script("return arguments[0].naturalWidth", view) == FRAME_SIZE[0],
          "the MJPEG stream to show in the page", 20)
    assert "live" in browser.find_element("css selector", "#cameras .camera-status").text
    wait_for(browser, "#events li.event", "named Juanes", timeout=10)
    assert browser.find_elements("css selector", "#events li.event img")


def test_ctrl_c_stops_the_cameras_and_the_streams(service):
    with httpx.stream("GET", f"{service.url}/api/v1/cameras/door/stream.mjpg", timeout=30) as response:
        next(response.iter_bytes())  # a stream is open, as in a browser tab
        started = time.monotonic()
        service.process.send_signal(signal.SIGINT)
        _, stderr = service.process.communicate(timeout=40)
    assert service.process.returncode == 0 and "Traceback" not in stderr, stderr
    assert time.monotonic() - started < 30
    assert "Cameras: door (/api/v1/cameras)" in stderr
    lines = [json.loads(line) for line in (service.root / "events.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "left", "the tracks leave when the service stops"
    until(lambda: ("facenet/status", "offline") in service.messages, "MQTT offline", 10)


# --------------------------------------------------------------------------- in-process: keys, no cameras, flags


def test_camera_routes_need_the_key_and_a_dead_camera_is_reconnecting(tmp_path, pipeline):
    from fastapi.testclient import TestClient

    from facenet.service.app import create_app
    from facenet.service.cameras import CurrentGallery, ServiceCameras
    from facenet.service.store import GalleryStore

    store = GalleryStore(tmp_path / "data", pipeline, tmp_path / "db")
    cameras = ServiceCameras([f"porch=rtsp://127.0.0.1:{free_port()}/live"], store)
    routes = ["/api/v1/cameras", "/api/v1/cameras/porch", "/api/v1/cameras/porch/latest.jpg",
              "/api/v1/cameras/porch/stream.mjpg", "/api/v1/events", "/api/v1/events/1/snapshot.jpg"]
    with TestClient(create_app(store, frozenset({KEY}), cameras=cameras)) as client:
        for route in routes:
            answer = client.get(route)
            assert answer.status_code == 401 and "x-api-key" in answer.json()["detail"], route
        assert client.get("/api/v1/health").status_code == 200
        headers = {"x-api-key": KEY}
        porch = until(lambda: (c := client.get(routes[1], headers=headers).json())["status"] == "reconnecting" and c,
                      "the camera that never answers to show as reconnecting", 20)
        assert porch["frames"] == 0 and porch["drops"] == 1 and porch["tracks"] == [] and porch["width"] is None
        assert client.get(routes[0], headers=headers).json() == {"cameras": [porch]}
        latest = client.get(routes[2], headers=headers)
        assert latest.status_code == 404 and latest.json() == {"detail": "camera 'porch' has no frame yet"}
        assert client.get(routes[4], headers=headers).json() == {"events": []}
        assert client.get(routes[5], headers=headers).status_code == 404

        gallery = CurrentGallery(store)  # what the cameras recognise against follows the service's gallery
        assert len(gallery) == 0
        store.add_subject("Juanes")
        store.add_photo("Juanes", photo("Juanes", 1).read_bytes(), "j.jpg")
        image = cv2.cvtColor(cv2.imread(str(photo("Juanes", 2))), cv2.COLOR_BGR2RGB)
        vector = pipeline.embed(image, pipeline.detect(image)[:1])
        assert len(gallery) == 1 and gallery.identify(vector).names == ["Juanes"]
    assert cameras.stopped() and cameras.summaries()[0]["status"] == "stopped"


def test_with_keys_the_page_shows_the_camera_by_fetching_its_frames(tmp_path, pipeline, browser):  # noqa: F811
    """An <img> cannot send the key header: with keys the page fetches latest.jpg (with the header) instead."""
    import uvicorn

    from facenet.service.app import create_app
    from facenet.service.cameras import ServiceCameras
    from facenet.service.store import GalleryStore

    (tmp_path / "data" / "Juanes").mkdir(parents=True)
    for number in (1, 2):
        (tmp_path / "data" / "Juanes" / photo("Juanes", number).name).write_bytes(photo("Juanes", number).read_bytes())
    store = GalleryStore(tmp_path / "data", pipeline, tmp_path / "db")
    camera = MjpegServer(write_frames(tmp_path / "door", [frame_of("Juanes", 3)] * 5), fps=10)
    cameras = ServiceCameras([f"door={camera.url}"], store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store, frozenset({KEY}), cameras=cameras), host="127.0.0.1",
                                           port=port, log_level="warning"))
    cameras.stopping = lambda: server.should_exit
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        until(lambda: server.started, "uvicorn to start", 30)
        browser.get(f"http://127.0.0.1:{port}/")
        key = wait_for(browser, "#api-key")[0]
        key.send_keys(KEY + "\n")
        browser.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
        wait_for(browser, "#cameras .camera .person", "Juanes", timeout=WAIT_S)
        view = browser.find_element("css selector", "#cameras .camera img.camera-view")
        until(lambda: browser.execute_script("return arguments[0].naturalWidth", view) == FRAME_SIZE[0],
              "a frame in the page", 20)
        assert view.get_attribute("src").startswith("blob:"), "fetched with the key, not the MJPEG URL"
        wait_for(browser, "#events li.event", "named Juanes", timeout=10)
    finally:
        server.should_exit = True
        thread.join(30)
        camera.stop()
    assert not thread.is_alive() and cameras.stopped()


def test_without_cameras_the_camera_routes_are_empty(tmp_path, pipeline):
    from fastapi.testclient import TestClient

    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    client = TestClient(create_app(GalleryStore(tmp_path / "data", pipeline, tmp_path / "db")))
    assert client.get("/api/v1/cameras").json() == {"cameras": []}
    assert client.get("/api/v1/events").json() == {"events": []}
    assert client.get("/api/v1/cameras/door").status_code == 404
    page = client.get("/").text
    assert '<section id="cameras" hidden>' in page


@pytest.mark.parametrize(("inputs", "says"), [
    ("photos/a.jpg", "serve --input takes live cameras only"),
    ("door=rtsp://h/1,door=http://h/v", "the camera name 'door' is used twice"),
    ("webcam:x", "a webcam is webcam:N"),
])
def test_serve_refuses_bad_cameras_with_one_line(inputs, says, capsys):
    from facenet.cli import app

    try:
        code, _ = app.preflight(["facenet", "--serve", "--input", inputs])
    finally:
        app.FLAGS.unparse_flags()
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and says in err[0]

