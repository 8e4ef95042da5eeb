"""Frames per second per camera with several live cameras in one process, tracking off vs on, in the same run.

    python bench/bench_cameras.py [--cameras 1,2] [--seconds 40] [--model fused] [--detector yunet] [--json]

Each camera is a real MJPEG-over-HTTP server on loopback (multipart/x-mixed-replace, 25 frames/s) looping the
walking-people video of bench/bench_tracking.py (known people and strangers, small moving faces). The product's live
loop (`facenet.live.cameras.run_cameras`: a reader thread per camera keeps its newest frame; round-robin)
runs for `--seconds`; reported: analysed frames/s of each camera (frames a slow CPU cannot keep up with are
skipped, not queued). Label flips are measured on every frame by bench/bench_tracking.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cv2  # noqa: E402
from bench_tracking import make_frames  # noqa: E402
from bench_video import build_gallery  # noqa: E402

from facenet import config  # noqa: E402
from facenet.gallery.file import sync_database  # noqa: E402
from facenet.live.cameras import run_cameras  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402


def serve_mjpeg(jpegs: list[bytes], fps: float = 25.0) -> ThreadingHTTPServer:
    """A loopback MJPEG server looping the JPEGs at `fps`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            start, i = time.monotonic(), 0
            try:
                while True:
                    jpeg = jpegs[i % len(jpegs)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                     + f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                    i += 1
                    time.sleep(max(0.0, start + i / fps - time.monotonic()))
            except OSError:
                return

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(specs: list[str], pipeline, database, track: bool, seconds: float) -> dict:
    """Each camera's analysed frames and frames/s over `seconds`."""
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    counts = run_cameras(specs, pipeline, database, track=track, stop=stop)
    return {name: {"frames": count.frames, "fps": round(count.fps, 1), "drops": count.drops}
            for name, count in counts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=Path, default=ROOT.parent / "shared/faces/people")
    parser.add_argument("--cameras", default="1,2")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--model", default=config.DEFAULT_MODEL)
    parser.add_argument("--detector", default=config.DEFAULT_DETECTOR)
    parser.add_argument("--weights_path", default=str(config.default_weights_dir()))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_cameras_"))
    servers = []
    try:
        data, queries, truth = build_gallery(args.people, 2, 24, workdir)
        images, _ = make_frames(queries, truth, 40)
        jpegs = [cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
                 for im in images]
        pipeline = FacePipeline(args.detector, args.model, args.weights_path)
        database, _ = sync_database(data, workdir / "database", pipeline)
        results = {"model": pipeline.model, "detector": args.detector, "seconds": args.seconds,
                   "cpu_cores": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1), "runs": []}
        for n in (int(v) for v in args.cameras.split(",")):
            servers = [serve_mjpeg(jpegs[i * len(jpegs) // n:] + jpegs[: i * len(jpegs) // n]) for i in range(n)]
            specs = [f"cam{i + 1}=http://127.0.0.1:{s.server_address[1]}/video" for i, s in enumerate(servers)]
            for track in (False, True):
                results["runs"].append({"cameras": n, "tracking": track,
                                        "per_camera": run(specs, pipeline, database, track, args.seconds)})
            for server in servers:
                server.shutdown()
                server.server_close()
            servers = []
    finally:
        for server in servers:
            server.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{results['model']} + {results['detector']}, {args.seconds:g} s per run, {results['cpu_cores']} CPU cores, "
          f"load {results['load_average']}; each camera streams 640x480 MJPEG at 25 frames/s")
    print("| cameras | tracking | analysed frames/s per camera | drops |")
    print("|---:|---|---|---:|")
    for row in results["runs"]:
        cams = row["per_camera"]
        print(f"| {row['cameras']} | {'on' if row['tracking'] else 'off'} | "
              f"{', '.join(str(c['fps']) for c in cams.values())} | {sum(c['drops'] for c in cams.values())} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
