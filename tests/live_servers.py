"""Real servers for the live-camera tests: GStreamer's RTSP server, an MJPEG-over-HTTP server, a mosquitto broker and
a webhook receiver, each on a free loopback port. Each helper says why it cannot run (a missing Debian package:
requirements-system.txt) so the tests skip with that reason only when the component is absent.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

SYSTEM_PYTHON = "/usr/bin/python3"
"""Debian's Python, which has python3-gi and GStreamer's introspection data (the venv's Python has neither)."""

RTSP_SERVER = '''
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
port, folder, fps = sys.argv[1], sys.argv[2], sys.argv[3]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f'( multifilesrc location="{folder}/%04d.jpg" index=0 loop=true caps="image/jpeg,framerate={fps}/1" '
                   "! jpegdec ! videoconvert ! jpegenc quality=90 ! rtpjpegpay name=pay0 pt=26 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    sys.exit("cannot listen on port " + port)
print("ready", flush=True)
GLib.MainLoop().run()
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    """RGB frames as folder/0000.jpg, 0001.jpg, … (what both stream servers loop over)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def rtsp_missing() -> str | None:
    """Why GStreamer's RTSP server cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer, Gst; Gst.init(None); "
                            "assert Gst.ElementFactory.find('rtpjpegpay') and Gst.ElementFactory.find('jpegenc')"],
                           capture_output=True, text=True)
    if probe.returncode:
        return ("GStreamer's RTSP server is not installed (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-base: requirements-system.txt)")
    return None


class RtspServer:
    """gst-rtsp-server looping a folder of JPEG frames: rtsp://127.0.0.1:PORT/live. `stop`/`start` drop it."""

    def __init__(self, frames: Path, port: int, fps: int = 10) -> None:
        self.frames, self.port, self.fps = frames, port, fps
        self.url = f"rtsp://127.0.0.1:{port}/live"
        self.process: subprocess.Popen | None = None

    def start(self) -> RtspServer:
        self.process = subprocess.Popen([SYSTEM_PYTHON, "-c", RTSP_SERVER, str(self.port), str(self.frames),
                                         str(self.fps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the RTSP server did not start: {self.process.stderr.read()}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class MjpegServer:
    """multipart/x-mixed-replace JPEG frames over HTTP (what IP cameras serve as MJPEG): http://127.0.0.1:PORT/video."""

    def __init__(self, frames: Path, port: int = 0, fps: float = 10.0) -> None:
        jpegs = [path.read_bytes() for path in sorted(frames.glob("*.jpg"))]
        delay = 1.0 / fps
        stopped = self.stopped = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(10**9):
                        if stopped.is_set():  # `stop` ends the open streams too: the camera sees a drop
                            return
                        jpeg = jpegs[i % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                        time.sleep(delay)
                except OSError:
                    return

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


class WebhookReceiver:
    """A real HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def mosquitto_missing() -> str | None:
    if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
        return None
    return "mosquitto is not installed (apt-get install mosquitto: requirements-system.txt)"


class Mosquitto:
    """A real mosquitto broker on a free loopback port (anonymous, no persistence)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("mosquitto did not start")
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def until(check, what: str, timeout: float = 60, every: float = 0.05):
    """`check()`'s first true value, polled every `every` s; fails the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


class FrigateStandIn:
    """A stand-in for Frigate's HTTP API (Frigate is a Docker image that cannot run here): the routes facenet uses,
    answering as Frigate documents them (docs/docs/integrations/api.md; frigate/api/ of Frigate 0.14-0.16), on a free
    loopback port.

    - GET /api/version: "0.14.1-standin" (plain text);
    - GET /api/events/<id>/snapshot.jpg: `snapshots[id]` (JPEG), else 404 `{"success": false, "message": ...}`;
    - GET /api/<camera>/latest.jpg: `latest[camera]`, else 404;
    - POST /api/events/<id>/sub_label: checked like Frigate's body model (subLabel a string of at most 100
      characters, subLabelScore in (0, 1]: else 422), 404 for an event it does not know (`known`), else 200 and
      recorded in `sub_labels` as (id, body).

    Every request is recorded in `requests` as (method, path, query)."""

    def __init__(self) -> None:
        self.snapshots: dict[str, bytes] = {}
        self.latest: dict[str, bytes] = {}
        self.known: set[str] = set()
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.sub_labels: list[tuple[str, dict]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = stand_in._record(self)
                parts = path.strip("/").split("/")
                if path == "/api/version":
                    self._send(200, b"0.14.1-standin", "text/plain")
                elif parts[:2] == ["api", "events"] and len(parts) == 4 and parts[3] == "snapshot.jpg":
                    self._image(stand_in.snapshots.get(parts[2]), "Event not found")
                elif parts[0] == "api" and len(parts) == 3 and parts[2] == "latest.jpg":
                    self._image(stand_in.latest.get(parts[1]), "Camera not found")
                else:
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                path = stand_in._record(self)
                parts = path.strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not (parts[:2] == ["api", "events"] and len(parts) == 4 and parts[3] == "sub_label"):
                    self._json(404, {"detail": "Not Found"})
                elif parts[2] not in stand_in.known:
                    self._json(404, {"success": False, "message": f"Event {parts[2]} not found."})
                elif (problem := sub_label_problem(body)) is not None:
                    self._json(422, {"detail": problem})
                else:
                    stand_in.sub_labels.append((parts[2], json.loads(body)))
                    self._json(200, {"success": True, "message": f"Event {parts[2]} sub label set"})

            def _image(self, data: bytes | None, missing: str) -> None:
                if data is None:
                    self._json(404, {"success": False, "message": missing})
                else:
                    self._send(200, data, "image/jpeg")

            def _json(self, status: int, body: dict) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _record(self, handler: BaseHTTPRequestHandler) -> str:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(handler.path)
        self.requests.append((handler.command, parts.path, parse_qs(parts.query)))
        return parts.path

    def fetches(self, event_id: str) -> int:
        """How many times the event's snapshot was asked for."""
        return sum(1 for method, path, _ in self.requests if path == f"/api/events/{event_id}/snapshot.jpg")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sub_label_problem(body: bytes) -> str | None:
    """Why Frigate's EventsSubLabelBody would refuse this body (subLabel: str, max 100; subLabelScore: 0 < s <= 1)."""
    try:
        fields = json.loads(body)
    except ValueError:
        return "not JSON"
    label, score = fields.get("subLabel"), fields.get("subLabelScore")
    if not isinstance(label, str) or len(label) > 100:
        return "subLabel: a string of at most 100 characters"
    if score is not None and not (isinstance(score, int | float) and 0 < score <= 1):
        return "subLabelScore: greater than 0, at most 1"
    return None


def frigate_message(kind: str, event_id: str, camera: str, label: str = "person", sub_label: list | None = None,
                    box: list[int] | None = None, start: float = 1_700_000_000.0) -> str:
    """One `frigate/events` message as Frigate publishes it (docs/docs/integrations/mqtt.md): type, before, after."""
    after = {"id": event_id, "camera": camera, "frame_time": start + 1, "snapshot": None, "label": label,
             "sub_label": sub_label, "top_score": 0.91, "false_positive": False, "start_time": start,
             "end_time": start + 5 if kind == "end" else None, "score": 0.87, "box": box or [0, 0, 250, 250],
             "area": 62500, "ratio": 1.0, "region": [0, 0, 320, 320], "current_zones": [], "entered_zones": [],
             "thumbnail": None, "has_snapshot": True, "has_clip": False, "stationary": False,
             "motionless_count": 0, "position_changes": 0, "attributes": {}}
    return json.dumps({"type": kind, "before": {**after, "end_time": None}, "after": after})
