"""Small faces in a 640x480 video: how many frames name the enrolled person when faces are ~56 px and ~36 px wide.

    python bench/bench_small_faces.py [--lfw_dir ../shared/faces/lfw_dev] [--people 30] [--sizes 56,36]
                                      [--frames-per-photo 5] [--pipelines yunet:fused,hog:dlib] [--json]

Gallery: the first `--people` lfw_dev people with >= 6 photos, 5 full-size photos each, enrolled with
`sync_database` (the product's enrollment). Queries: every other photo of those people, shrunk so that its face
(YuNet's box on the original) is S px wide, pasted at a pseudo-random place of a 640x480 frame over a blurred
texture, shown for `--frames-per-photo` frames (mp4v, decoded again as a user's video would be). Each pipeline runs
the product's video loop (`Recognizer(..., reuse_still=False)`, `video=True`) on every frame; per frame the face
nearest the pasted position is judged: named correctly, named wrongly (another enrolled person), Unknown, or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facenet.gallery.file import sync_database  # noqa: E402
from facenet.images import list_images, load_image  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402
from facenet.recognize import Recognizer  # noqa: E402
from facenet.sources import VideoSource  # noqa: E402

LFW_DEV = ROOT.parent / "shared" / "faces" / "lfw_dev"
SIZE = (640, 480)


def gallery(lfw_dir: Path, people: int, workdir: Path) -> tuple[Path, list[tuple[Path, str]]]:
    """data/ with 5 photos of each of the first `people` people having >= 6; the other photos as queries."""
    data, queries = workdir / "data", []
    chosen = [d for d in sorted(lfw_dir.iterdir()) if d.is_dir() and len(list_images(d)) >= 6][:people]
    for person in chosen:
        photos = list_images(person)
        (data / person.name).mkdir(parents=True)
        for photo in photos[:5]:
            shutil.copy2(photo, data / person.name / photo.name)
        queries.extend((photo, person.name) for photo in photos[5:])
    return data, queries


def background(rng: np.random.Generator) -> np.ndarray:
    """A blurred random texture: no face, not a flat colour."""
    noise = rng.integers(0, 255, (SIZE[1] // 8, SIZE[0] // 8, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, SIZE, interpolation=cv2.INTER_CUBIC), (0, 0), 3)


def make_frames(queries: list[tuple[Path, str]], face_px: int, detector: FacePipeline, seed: int = 0):
    """(frame, truth name, face centre) per query photo whose face YuNet finds at full size."""
    rng = np.random.default_rng(seed)
    for photo, name in queries:
        image = load_image(photo)
        faces = detector.detector.detect(image)
        if not faces:
            continue
        left, top, right, bottom = faces[0].box
        scale = face_px / max(1, right - left)
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = small.shape[:2]
        x, y = int(rng.integers(0, SIZE[0] - w)), int(rng.integers(0, SIZE[1] - h))
        frame = background(rng)
        frame[y : y + h, x : x + w] = small
        centre = (x + scale * (left + right) / 2, y + scale * (top + bottom) / 2)
        yield frame, name, centre


def write_video(frames: list[np.ndarray], path: Path, repeat: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, SIZE)
    for frame in frames:
        for _ in range(repeat):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def judge(recognizer: Recognizer, video: Path, truth: list[tuple[str, tuple[float, float]]], repeat: int) -> dict:
    counts = {"correct": 0, "wrong": 0, "unknown": 0, "missed": 0}
    with VideoSource.open_file(video) as source:
        for index, frame in enumerate(source):
            name, (cx, cy) = truth[index // repeat]
            results = recognizer.recognize(frame.image, video=True)
            near = [r for r in results if r.box[0] - 4 <= cx <= r.box[2] + 4 and r.box[1] - 4 <= cy <= r.box[3] + 4]
            if not near:
                counts["missed"] += 1
            elif near[0].name == name:
                counts["correct"] += 1
            elif near[0].name == "Unknown":
                counts["unknown"] += 1
            else:
                counts["wrong"] += 1
    frames = sum(counts.values())
    return {**counts, "frames": frames, **{f"{k}_rate": round(v / max(frames, 1), 4) for k, v in counts.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--people", type=int, default=30)
    parser.add_argument("--sizes", default="56,36")
    parser.add_argument("--frames-per-photo", type=int, default=5)
    parser.add_argument("--pipelines", default="yunet:fused,hog:dlib", help="detector:model pairs to compare")
    parser.add_argument("--weights_path", default=str(ROOT / "weights"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_small_"))
    results: dict = {}
    try:
        data, queries = gallery(args.lfw_dir, args.people, workdir)
        pipelines = [FacePipeline(d, m, args.weights_path)
                     for d, m in (pair.split(":") for pair in args.pipelines.split(","))]
        for face_px in (int(v) for v in args.sizes.split(",")):
            made = list(make_frames(queries, face_px, pipelines[0]))
            video = workdir / f"small_{face_px}.mp4"
            write_video([f for f, _, _ in made], video, args.frames_per_photo)
            truth = [(name, centre) for _, name, centre in made]
            for pipeline in pipelines:
                database, _ = sync_database(data, workdir / f"db_{pipeline.detector.kind}_{pipeline.model}", pipeline)
                key = f"{pipeline.detector.kind}+{pipeline.model} {face_px}px"
                results[key] = judge(Recognizer(pipeline, database, reuse_still=False), video, truth,
                                     args.frames_per_photo)
                results[key]["people_enrolled"] = len(database)
                print(f"{key}: {results[key]}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
        return 0
    print("| pipeline, face width | frames | named correctly | named wrongly | Unknown | missed |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, row in results.items():
        print(f"| {key} | {row['frames']} | {row['correct_rate']:.1%} | {row['wrong_rate']:.1%} | "
              f"{row['unknown_rate']:.1%} | {row['missed_rate']:.1%} |")
    return 0


if __name__ == "__main__":
    from facenet.progress import show_progress

    show_progress(True)  # the library is silent unless asked
    sys.exit(main())
