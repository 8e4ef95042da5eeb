"""Label flicker and speed with tracking off vs on, on a hard video of known people and strangers, in the same run.

    python bench/bench_tracking.py [--people ../shared/faces/people] [--strangers ../shared/faces/lfw_dev]
                                   [--enroll 2] [--max-photos 36] [--n-strangers 12] [--frames 40] [--json]
                                   [--model fused] [--detector yunet] [--weights_path weights]

The gallery: the first `--enroll` photos of every person in `--people`. The video (640x480, 25 fps): each other photo
of those people, and `--n-strangers` photos of people not enrolled (lfw_dev), shown for `--frames` frames each,
small and moving like a person walking past a camera: the photo drifts sideways and zooms (face ~40 -> ~80 px) over a
textured background, with sensor noise and every 4th frame motion-blurred; 10 empty frames between people. Then the
same frames go through:

- off: plain per-frame recognition (`Recognizer`, every frame detected and embedded);
- on: `TrackingRecognizer` (one track per person, names from the mean of its best embeddings).

Reported per mode: frames/s (decode excluded: frames are decoded once beforehand), embeddings per frame, label flips
per minute of video (a change of the largest face's label between consecutive frames showing the same person,
frames without a face skipped), and the share of face frames labelled correctly (the enrolled name; Unknown for
strangers) and wrongly (another person's name).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from bench_video import build_gallery  # noqa: E402

from facenet import config  # noqa: E402
from facenet.gallery.file import sync_database  # noqa: E402
from facenet.images import list_images, load_image  # noqa: E402
from facenet.live.tracking import TrackingRecognizer  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402
from facenet.recognize import Recognizer  # noqa: E402

FPS = 25.0
GAP = 10
SIZE = (640, 480)


def background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random texture (a wall, a street), RGB."""
    small = rng.integers(40, 200, (12, 16, 3)).astype(np.uint8)
    return cv2.resize(small, SIZE, interpolation=cv2.INTER_CUBIC)


def walking_frames(photo: np.ndarray, frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The photo crossing the frame: it drifts sideways and grows (LFW faces are ~45% of the photo: ~40 -> ~80 px)."""
    width, height = SIZE
    scene = background(rng)
    direction = 1 if rng.random() < 0.5 else -1
    start_x = int(rng.integers(20, 200)) if direction > 0 else int(rng.integers(360, 540))
    top = int(rng.integers(60, 200))
    out = []
    for i in range(frames):
        side = int(90 + 90 * i / max(1, frames - 1))
        x = int(np.clip(start_x + direction * 4 * i - (side if direction < 0 else 0), 0, width - side))
        y = int(np.clip(top - side // 4, 0, height - side))
        frame = scene.copy()
        frame[y: y + side, x: x + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
        noisy = frame.astype(np.float32) + rng.normal(0, 6, frame.shape)
        frame = np.clip(noisy, 0, 255).astype(np.uint8)
        if i % 4 == 3:
            kernel = np.zeros((7, 7), np.float32)
            kernel[3, :] = 1 / 7
            frame = cv2.filter2D(frame, -1, kernel)
        out.append(frame)
    return out


def make_frames(queries: list[Path], truth: list[str], frames: int, seed: int = 0):
    """All frames (RGB) and, per frame, who is shown (None in the gaps)."""
    rng = np.random.default_rng(seed)
    images, shown = [], []
    for path, name in zip(queries, truth, strict=True):
        images.extend(walking_frames(load_image(path), frames, rng))
        shown.extend([name] * frames)
        images.extend([background(rng)] * GAP)
        shown.extend([None] * GAP)
    return images, shown


def measure(label_of, images: list[np.ndarray], shown: list[str | None]) -> dict:
    """Run `label_of(image, index)` (-> largest face's label or None, embeddings made) over the frames."""
    labels, embeddings = [], 0
    start = time.perf_counter()
    for index, image in enumerate(images):
        label, embedded = label_of(image, index)
        labels.append(label)
        embeddings += embedded
    seconds = time.perf_counter() - start
    flips, previous, faces, correct, wrong = 0, None, 0, 0, 0
    for index, (label, who) in enumerate(zip(labels, shown, strict=True)):
        if who is None or label is None:
            continue
        faces += 1
        correct += label == who
        wrong += label not in (who, config.UNKNOWN)
        if previous is not None and shown[previous] == who and labels[previous] != label:
            flips += 1
        previous = index
    minutes = len(images) / FPS / 60
    return {"fps": round(len(images) / seconds, 1), "embeddings_per_frame": round(embeddings / len(images), 3),
            "flips": flips, "flips_per_minute": round(flips / minutes, 1), "face_frames": faces,
            "correct": round(correct / max(faces, 1), 4), "wrong": round(wrong / max(faces, 1), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=Path, default=ROOT.parent / "shared/faces/people")
    parser.add_argument("--strangers", type=Path, default=ROOT.parent / "shared/faces/lfw_dev")
    parser.add_argument("--enroll", type=int, default=2)
    parser.add_argument("--max-photos", type=int, default=36)
    parser.add_argument("--n-strangers", type=int, default=12)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--model", default=config.DEFAULT_MODEL)
    parser.add_argument("--detector", default=config.DEFAULT_DETECTOR)
    parser.add_argument("--weights_path", default=str(config.default_weights_dir()))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    try:
        data, queries, truth = build_gallery(args.people, args.enroll, args.max_photos, workdir)
        enrolled = {p.name for p in args.people.iterdir()}
        others = sorted(p for p in args.strangers.iterdir() if p.is_dir() and p.name not in enrolled)
        for person in others[:: max(1, len(others) // args.n_strangers)][: args.n_strangers]:
            queries.append(list_images(person)[0])
            truth.append(config.UNKNOWN)
        order = np.random.default_rng(1).permutation(len(queries))
        queries, truth = [queries[i] for i in order], [truth[i] for i in order]
        images, shown = make_frames(queries, truth, args.frames)
        pipeline = FacePipeline(args.detector, args.model, args.weights_path)
        database, _ = sync_database(data, workdir / "database", pipeline)

        plain = Recognizer(pipeline, database, reuse_still=False)

        def off(image, _index):
            results = plain.recognize(image, video=True)
            return (results[0].name if results else None), len(results)

        tracker = TrackingRecognizer(pipeline, database, "bench")

        def on(image, index):
            before = tracker.embedded
            results, _events = tracker.recognize(image, index, index / FPS)
            return (results[0].name if results else None), tracker.embedded - before

        off(images[0], 0)  # warm up both paths (TFLite interpreter, YuNet) before timing
        results = {"model": pipeline.model, "detector": args.detector, "frames": len(images),
                   "people": len(queries), "strangers": truth.count(config.UNKNOWN),
                   "video_seconds": round(len(images) / FPS, 1), "cpu_cores": os.cpu_count(),
                   "load_average": round(os.getloadavg()[0], 1),
                   "tracking_off": measure(off, images, shown), "tracking_on": measure(on, images, shown)}
        results["tracking_on"]["tracks"] = tracker._next_id - 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{results['model']} + {results['detector']}: {results['frames']} frames 640x480 "
          f"({results['video_seconds']} s at 25 fps), {results['people']} people walking past "
          f"({results['strangers']} strangers), {results['cpu_cores']} CPU cores, load {results['load_average']}")
    print("| tracking | frames/s | embeddings/frame | label flips/min | labelled correctly | wrong name | tracks |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in ("off", "on"):
        row = results[f"tracking_{mode}"]
        print(f"| {mode} | {row['fps']} | {row['embeddings_per_frame']} | {row['flips_per_minute']} | "
              f"{row['correct']:.1%} | {row['wrong']:.1%} | {row.get('tracks', '-')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
