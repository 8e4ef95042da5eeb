"""Swap videos: people replacing each other in one place (no empty frame between, every 4th a stranger), tracking
vs frame by frame, in the same run.

    python bench/bench_swaps.py [--lfw ../shared/faces/lfw_dev] [--people 24] [--frames 30] [--videos 4]
                                [--sides 220,120] [--model fused] [--detector yunet] [--json]

People: LFW View 1 DevTrain (never the test pairs). Enrolled: DevTrain people with 3 or more photos (their first 2
enrolled, the 3rd shown); strangers: DevTrain people with one photo, never enrolled. Each video (tests/swap_videos.py)
shows `--people` of them in turn for `--frames` frames each at one spot of a 640x480 wall (each --side in turn: the
photo's side in px; the face is ~45% of it), drifting a little, with sensor noise. Judged from the 6th frame of each
person on: the share of frames whose largest face has the right label (the name; Unknown for strangers), frames of a
stranger named, frames of an enrolled person named as someone else, and per person the frame from which the label
stayed right. Also frames/s of each loop (decode excluded) and embeddings per frame.
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
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from swap_videos import judge, swap_frames  # noqa: E402

from facenet import config  # noqa: E402
from facenet.gallery.file import sync_database  # noqa: E402
from facenet.images import list_images, load_image  # noqa: E402
from facenet.live.frames import FrameRecognizer  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402
from facenet.sources import Frame  # noqa: E402

FPS = 25.0


def dev_train_people(lfw: Path) -> tuple[list[str], list[str]]:
    """DevTrain people with 3+ photos (to enroll), and DevTrain people with exactly one photo (strangers)."""
    rows = [line.split("\t") for line in (lfw / "pairsDevTrain.txt").read_text().splitlines()[1:]]
    named = {row[0] for row in rows if len(row) == 3} | {row[i] for row in rows if len(row) == 4 for i in (0, 2)}
    counts = {name: len(list_images(lfw / name)) for name in sorted(named) if (lfw / name).is_dir()}
    return [n for n, c in counts.items() if c >= 3], [n for n, c in counts.items() if c == 1]


def run(recognizer: FrameRecognizer, frames: list[np.ndarray]) -> tuple[list[str | None], float]:
    labels, start = [], time.perf_counter()
    for i, image in enumerate(frames):
        faces = recognizer.recognize(Frame("bench", i, image), i / FPS).faces
        labels.append(faces[0].name if faces else None)
    recognizer.finish()
    return labels, len(frames) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared/faces/lfw_dev")
    parser.add_argument("--people", type=int, default=24)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--sides", default="220,120")
    parser.add_argument("--model", default=config.DEFAULT_MODEL)
    parser.add_argument("--detector", default=config.DEFAULT_DETECTOR)
    parser.add_argument("--weights_path", default=str(config.default_weights_dir()))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sides = [int(side) for side in args.sides.split(",")]

    enrollable, singles = dev_train_people(args.lfw)
    rng = np.random.default_rng(0)
    strangers_each = args.people // 4
    plan = []
    for v in range(args.videos):
        enrolled = list(rng.choice(enrollable, args.people - strangers_each, replace=False))
        strangers = list(rng.choice(singles, strangers_each, replace=False))
        plan.append((enrolled, strangers, sides[v % len(sides)]))
    workdir = Path(tempfile.mkdtemp(prefix="bench_swaps_"))
    pipeline = FacePipeline(args.detector, args.model, args.weights_path)
    rows = []
    try:
        everyone = sorted({name for enrolled, _, _ in plan for name in enrolled})
        for name in everyone:  # one gallery of every enrolled person of every video: the others are distractors
            (workdir / "data" / name).mkdir(parents=True)
            for photo in list_images(args.lfw / name)[:2]:
                shutil.copy2(photo, workdir / "data" / name)
        database, _ = sync_database(workdir / "data", workdir / "database", pipeline)
        for v, (enrolled, strangers, side) in enumerate(plan):
            shown, truth, who = [], [], iter(enrolled)
            others = iter(strangers)
            for k in range(args.people):
                name = next(others) if k % 4 == 3 else next(who)
                shown.append(list_images(args.lfw / name)[0 if k % 4 == 3 else 2])
                truth.append(config.UNKNOWN if k % 4 == 3 else name)
            frames = swap_frames([load_image(p) for p in shown], args.frames, seed=v, side=side)
            row = {"video": v + 1, "side": side, "frames": len(frames)}
            for mode, track in (("frame_by_frame", False), ("tracking", True)):
                recognizer = FrameRecognizer(pipeline, database, "bench", track=track)
                run(recognizer, frames[:3])  # warm up (TFLite interpreter, YuNet), untimed
                recognizer = FrameRecognizer(pipeline, database, "bench", track=track)
                labels, fps = run(recognizer, frames)
                judged = judge(labels, truth, args.frames, config.UNKNOWN)
                row[mode] = {"fps": round(fps, 1), "right": round(judged.right_share, 4),
                             "stranger_named": judged.stranger_named, "wrong_name": judged.wrong_name,
                             "settled_by_frame": max(judged.late) + 1}
                if track:
                    row[mode]["embeddings_per_frame"] = round(recognizer.tracker.embedded / len(frames), 3)
                    row[mode]["tracks"] = recognizer.tracker._next_id - 1
            rows.append(row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = {"model": pipeline.model, "detector": args.detector, "people_enrolled": len(database),
               "people_per_video": args.people, "frames_per_person": args.frames, "cpu_cores": os.cpu_count(),
               "load_average": round(os.getloadavg()[0], 1), "videos": rows}
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{results['model']} + {results['detector']}: {args.videos} swap videos 640x480 of {args.people} people "
          f"x {args.frames} frames ({strangers_each} strangers each), {len(database)} people enrolled, "
          f"{results['cpu_cores']} CPU cores, load {results['load_average']}")
    print("| video | face px | loop | right labels (6th frame on) | strangers named | wrong names | "
          "right from frame | frames/s | embeddings/frame |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        for mode in ("frame_by_frame", "tracking"):
            r = row[mode]
            print(f"| {row['video']} | ~{round(row['side'] * 0.45)} | {mode.replace('_', ' ')} | {r['right']:.1%} | "
                  f"{r['stranger_named']} | {r['wrong_name']} | {r['settled_by_frame']} | {r['fps']} | "
                  f"{r.get('embeddings_per_frame', 1.0)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
