"""Embedding throughput: our compiled Keras twin vs dlib's own `compute_face_descriptor`, on the same real chips.

    python bench/bench_embedding.py [--chips 64] [--repeats 5] [--source DIR] [--weights_path weights]

Both run in this one process on the same aligned 150x150 chips, one at a time (batch 1) and as one batched
call (our `Embedder.embed(chips)` vs dlib's `compute_face_descriptor(list_of_chips)`). Each figure is the
best of `--repeats` interleaved timed rounds after a warm-up. Prints a markdown table and the raw-descriptor agreement.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dlib  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from facenet.config import RESNET_DAT, model_file  # noqa: E402
from facenet.images import list_images  # noqa: E402
from facenet.models.build import build_embedder, pretrained_dlib_resnet  # noqa: E402
from facenet.models.embed import Embedder  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402

SOURCES = (ROOT.parent / "shared/faces/lfw_dev", ROOT.parent / "shared/faces/people", ROOT / "tests/data/people")


def real_chips(count: int, source: Path | None, pipeline: FacePipeline) -> tuple[np.ndarray, Path]:
    """`count` aligned dlib chips of the subject of the first photos (sorted) of the first source that exists, cut
    by the FacePipeline as enrollment cuts them."""
    folder = source or next(s for s in SOURCES if s.is_dir())
    chips = []
    for _, subject, image in pipeline.read_subjects(list_images(folder)[: 2 * count], "largest"):
        if subject.face is not None:
            chips.append(pipeline.chips(image, [subject.face])["dlib"][0])
        if len(chips) == count:
            break
    if len(chips) < count:
        print(f"only {len(chips)} faces found in {folder}; benchmarking those", file=sys.stderr)
    return np.stack(chips), folder


def best_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each run over `repeats` rounds, the runs interleaved within each round (so load
    from other processes hits all of them alike), after one warm-up call each."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=64, help="number of real face chips")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement (best is kept)")
    parser.add_argument("--source", type=Path, default=None, help="photo folder (default: shared LFW, else tests)")
    parser.add_argument("--weights_path", default=None, help="converted-model cache (default: a temp folder)")
    args = parser.parse_args()

    weights_dir = args.weights_path or tempfile.mkdtemp(prefix="bench_weights_")
    ours = Embedder(build_embedder("dlib", weights_dir, trained=False), "dlib")
    chips, folder = real_chips(args.chips, args.source, FacePipeline("yunet", ours, weights_dir))
    n = len(chips)
    facerec = dlib.face_recognition_model_v1(str(model_file(RESNET_DAT)))
    chip_list = [np.ascontiguousarray(c) for c in chips]

    rows = best_seconds(
        {
            ("facenet Embedder (Keras, tf.function)", "1"): lambda: [ours.embed({"dlib": c[None]}) for c in chips],
            ("dlib compute_face_descriptor(chip)", "1"): lambda: [facerec.compute_face_descriptor(c) for c in chips],
            ("facenet Embedder (Keras, tf.function)", str(n)): lambda: ours.embed({"dlib": chips}),
            ("dlib compute_face_descriptor(list)", str(n)): lambda: facerec.compute_face_descriptor(chip_list),
        },
        args.repeats,
    )

    raw = pretrained_dlib_resnet(weights_dir)
    twin = raw(tf.constant(chips, tf.float32), training=False).numpy()
    reference = np.array([np.array(d) for d in facerec.compute_face_descriptor(chip_list)])
    max_diff = float(np.abs(twin - reference).max())

    rate = {key: n / seconds for key, seconds in rows.items()}
    print(f"{n} real chips from {folder}; {os.cpu_count()} CPU cores; best of {args.repeats} interleaved rounds\n")
    print("| embedding | batch | faces/s | ms/face |")
    print("|---|---:|---:|---:|")
    for (name, batch), faces_per_s in rate.items():
        print(f"| {name} | {batch} | {faces_per_s:.1f} | {1000 / faces_per_s:.2f} |")
    keys = list(rate)
    print(f"\nspeed-up at batch 1: {rate[keys[0]] / rate[keys[1]]:.1f}x; "
          f"batched ({n}) vs dlib's batched call: {rate[keys[2]] / rate[keys[3]]:.1f}x")
    print(f"raw 128-d descriptors, Keras twin vs dlib on the same chips: max |diff| = {max_diff:.2e}")
    print(f"\ncommand: python bench/bench_embedding.py --chips {args.chips} --repeats {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
