"""1:N identification: accuracy on enrolled people, rejection of strangers, lookup and enrollment speed.

    python bench/bench_identify.py [--model fused] [--people ../shared/faces/people] [--lfw_dir ../shared/faces/lfw_dev]

(a) enroll `people` (all but the last photo of each person) with sync_database, query each held-out photo
    and 200 faces of LFW people who are not enrolled (strangers, from DevTest: calibration only saw DevTrain);
(b) the same with a gallery built from lfw_dev (every person with >= 6 photos: 5 enrolled, the rest queried);
(c) how the default holds strangers out as the gallery grows (DevTest people only, 10 random draws);
(e) enrollment photos/s. (Lookup speed at 100k-10M people: bench/bench_search.py.)
Each at the default (gallery-size-aware) threshold and at a few fixed thresholds. Every photo goes through the
FacePipeline with enrollment's face choice (bench/calibrate.py's cached lfw_dev embeddings of both branches; the
fused vectors are formed as the fused model forms them). Results also go to bench/results/identify_<model>.json.
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

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibrate import LFW_DEV, RESULTS, ROOT, branch_embeddings, fused, people_of  # noqa: E402

from facenet.config import FUSION_SFACE_WEIGHT, UNKNOWN  # noqa: E402
from facenet.gallery.file import sync_database  # noqa: E402
from facenet.gallery.index import FaceDatabase  # noqa: E402
from facenet.gallery.thresholds import calibration  # noqa: E402
from facenet.images import list_images  # noqa: E402
from facenet.models.vectors import normalize  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402

FIXED = (0.8, 0.9, 1.0, 1.15)
"""Fixed thresholds tried, as multiples of the model's calibrated 1:1 threshold."""
STRANGERS = 200
MODEL = "fused"


def rates(database: FaceDatabase, probes: np.ndarray, truth: list[str], strangers: np.ndarray, threshold=None):
    """(share of enrolled probes named correctly, share of strangers rejected as Unknown)."""
    named = np.mean([got == t for got, t in zip(database.identify(probes, threshold).names, truth, strict=True)])
    rejected = np.mean([got == UNKNOWN for got in database.identify(strangers, threshold).names])
    return float(named), float(rejected)


def table(title: str, database: FaceDatabase, probes, truth, strangers) -> dict:
    """Print and return the figures at the default threshold and at the FIXED ones."""
    print(f"\n{title}: {len(database)} people enrolled, {len(truth)} enrolled queries, {len(strangers)} strangers")
    rows = {"default": rates(database, probes, truth, strangers)}
    verify = calibration(database.model).verify_threshold
    rows.update({f"{f * verify:.4g}": rates(database, probes, truth, strangers, f * verify) for f in FIXED})
    print(f"  {'threshold':>24} {'named':>8} {'strangers rejected':>19}")
    for label, (named, rejected) in rows.items():
        shown = f"default {database.threshold:.3f} (typ.)" if label == "default" else label
        print(f"  {shown:>24} {named:8.1%} {rejected:19.1%}")
    return {"people": len(database), "queries": len(truth), "strangers": len(strangers), "threshold":
            database.threshold, "rates": rows}


def stranger_rows(data: dict, exclude: set[str], pool: set[str], count: int | None, seed: int = 0) -> np.ndarray:
    """One photo each of up to `count` people of `pool` not in `exclude` (random, seeded)."""
    names = data["names"]
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in pool and name not in exclude:
            first.setdefault(str(name), i)
    chosen = sorted(first)
    if count is not None:
        chosen = sorted(np.random.default_rng(seed).choice(chosen, size=count, replace=False))
    return np.array([first[n] for n in chosen])


def in_memory_gallery(data: dict, people: dict[str, list[int]], enrolled: int | None) -> tuple:
    """Gallery of the first `enrolled` photos of each person (None: all but the last); the others are queries."""
    names, centroids, counts, probes, truth = [], [], [], [], []
    for name, rows in sorted(people.items()):
        keep = rows[:enrolled] if enrolled else rows[:-1]
        names.append(name)
        centroids.append(normalize(data["embeddings"][keep].mean(axis=0)))
        counts.append(len(keep))
        for row in rows[len(keep) :]:
            probes.append(data["embeddings"][row])
            truth.append(name)
    database = FaceDatabase(names, np.stack(centroids), "bench", counts, model=MODEL)
    return database, np.stack(probes), truth


def bench_people(people_dir: Path, data: dict, test_people: set[str], pipeline: FacePipeline) -> dict:
    """(a): real enrollment through sync_database, real queries of the held-out photos."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, held_out = Path(tmp) / "data", []
        for folder in sorted(p for p in people_dir.iterdir() if p.is_dir()):
            photos = list_images(folder)
            (data_dir / folder.name).mkdir(parents=True)
            for photo in photos[:-1]:
                shutil.copy2(photo, data_dir / folder.name / photo.name)
            held_out.append(photos[-1])
        start = time.perf_counter()
        database, report = sync_database(data_dir, Path(tmp) / "database", pipeline)
        seconds = time.perf_counter() - start
    print(f"\n(a) enrollment: {report.examined} photos in {seconds:.1f} s ({report.examined / seconds:.1f} photos/s), "
          f"{len(report.skipped)} skipped, {len(report.several_faces)} with several faces", file=sys.stderr)
    found = pipeline.embed_photos(held_out, "largest", last_resort=True)
    chips = [found[photo].vector for photo in held_out]
    truth = [p.parent.name for p in held_out]
    strangers = data["embeddings"][stranger_rows(data, set(truth), test_people, STRANGERS)]
    result = table("(a) shared/faces/people, last photo held out", database, np.stack(chips), truth, strangers)
    for (got, distance, score), name in zip(database.identify(np.stack(chips)), truth, strict=True):
        print(f"    {name:34} -> {got:34} distance {distance:.3f} score {score:5.1f}")
    result["enroll_photos_per_s"] = report.examined / seconds
    return result


def bench_lfw_gallery(data: dict, test_people: set[str]) -> dict:
    """(b): every lfw_dev person with >= 6 photos, 5 enrolled, the rest queried; strangers not enrolled."""
    people: dict[str, list[int]] = {}
    for i, name in enumerate(data["names"]):
        people.setdefault(str(name), []).append(i)
    gallery = {n: rows for n, rows in people.items() if len(rows) >= 6}
    database, probes, truth = in_memory_gallery(data, gallery, enrolled=5)
    strangers = data["embeddings"][stranger_rows(data, set(gallery), test_people, STRANGERS)]
    result = {"200 strangers": table("(b) lfw_dev, >= 6 photos, 5 enrolled", database, probes, truth, strangers)}
    everyone = stranger_rows(data, set(gallery), set(people), None)
    result["all strangers"] = table("(b') the same, every other lfw_dev person as a stranger", database, probes,
                                    truth, data["embeddings"][everyone])
    return result


def bench_growth(data: dict, test_people: set[str], draws: int = 10) -> dict:
    """(c): DevTest people with >= 2 photos enrolled (all but one photo), single-photo people as strangers."""
    people: dict[str, list[int]] = {}
    for i, name in enumerate(data["names"]):
        if name in test_people:
            people.setdefault(str(name), []).append(i)
    multi = sorted(n for n, rows in people.items() if len(rows) >= 2)
    strangers = data["embeddings"][[rows[0] for n, rows in sorted(people.items()) if len(rows) == 1]]
    print(f"\n(c) gallery growth: DevTest people, all but one photo enrolled, {len(strangers)} strangers, "
          f"{draws} random galleries per size")
    print(f"  {'people':>6} {'default thr':>11} {'named':>7} {'rejected':>9} | {'1:1 thr named':>13} {'rejected':>9}")
    result = {}
    for size in (12, 50, 200, len(multi)):
        figures = []
        for seed in range(draws if size < len(multi) else 1):
            chosen = np.random.default_rng(seed).choice(multi, size=size, replace=False)
            database, probes, truth = in_memory_gallery(data, {n: people[n] for n in chosen}, enrolled=None)
            fixed = calibration(MODEL).verify_threshold
            figures.append((database.threshold, *rates(database, probes, truth, strangers),
                            *rates(database, probes, truth, strangers, fixed)))
        mean = np.mean(figures, axis=0)
        print(f"  {size:6d} {mean[0]:11.3f} {mean[1]:7.1%} {mean[2]:9.1%} | {mean[3]:13.1%} {mean[4]:9.1%}")
        result[size] = dict(zip(("threshold", "named", "rejected", "named_fixed", "rejected_fixed"), mean.tolist(),
                                strict=True))
    return result


def bench_enroll_speed(lfw_dir: Path, pipeline: FacePipeline, photos: int = 300) -> dict:
    """Enrollment photos/s from scratch (detect + embed + save), and a re-sync with nothing changed."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        for photo in list_images(lfw_dir)[:photos]:
            (data_dir / photo.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(photo, data_dir / photo.parent.name / photo.name)
        start = time.perf_counter()
        _, report = sync_database(data_dir, Path(tmp) / "database", pipeline)
        first = time.perf_counter() - start
        start = time.perf_counter()
        sync_database(data_dir, Path(tmp) / "database", pipeline)
        again = time.perf_counter() - start
    print(f"\n(e) enrollment of {report.examined} lfw_dev photos: {first:.1f} s = {report.examined / first:.1f} "
          f"photos/s; re-sync with nothing changed: {again * 1000:.0f} ms")
    return {"photos": report.examined, "seconds": first, "photos_per_s": report.examined / first,
            "resync_seconds": again}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=Path, default=ROOT.parent / "shared" / "faces" / "people")
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--weights_dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--model", default="fused", choices=("fused", "sface", "dlib"))
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--skip_enroll_speed", action="store_true")
    args = parser.parse_args()
    global MODEL
    MODEL = args.model
    data = branch_embeddings(args.lfw_dir, args.detector, args.weights_dir)
    data["embeddings"] = fused(data, FUSION_SFACE_WEIGHT) if MODEL == "fused" else data[MODEL]
    pipeline = FacePipeline(args.detector, MODEL, args.weights_dir)
    test_people = people_of(args.lfw_dir / "pairsDevTest.txt", args.lfw_dir)
    results = {
        "model": MODEL,
        "a_people": bench_people(args.people, data, test_people, pipeline),
        "b_lfw_gallery": bench_lfw_gallery(data, test_people),
        "c_growth": bench_growth(data, test_people),
    }
    if not args.skip_enroll_speed:
        results["e_enroll"] = bench_enroll_speed(args.lfw_dir, pipeline)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"identify_{MODEL}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    from facenet.progress import show_progress

    show_progress(True)  # the library is silent unless asked
    main()
