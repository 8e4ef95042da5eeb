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
