"""LFW View 1 DevTest per model, plain and flip, in one pass: dlib, SFace and fused from the same chips.

    python bench/bench_lfw_models.py [--lfw_dir ../shared/faces/lfw_dev] [--detector yunet] [--json]

Every DevTrain + DevTest image goes through the FacePipeline exactly as `main.py --lfw_pairs` does (the face nearest
the centre, the fallback chain ending in a centre box); both branches of the fused model embed its chips (plain:
one pass; flip: dlib chips at 3 paddings and SFace's crop, each with its mirror). Per model, the threshold is the
best one on DevTrain pairs and DevTest accuracy is read at it; 10-fold CV within DevTest, AUC and TAR@FAR=1e-3 too.
The fused rows equal `main.py --lfw_pairs ... --model fused [--flip]` (the same vectors, formed outside the model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facenet.config import FUSION_SFACE_WEIGHT  # noqa: E402
from facenet.eval.lfw import ImageEmbeddings, pair_distances, parse_pairs, within_set_folds  # noqa: E402
from facenet.eval.metrics import accuracy_at, auc, best_threshold, kfold_accuracy, tar_at_far  # noqa: E402
from facenet.models.vectors import normalize  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402

LFW_DEV = ROOT.parent / "shared" / "faces" / "lfw_dev"


def branch_vectors(pipeline: FacePipeline, paths: list[Path], flip: bool) -> dict[str, dict[Path, np.ndarray]]:
    """{"dlib", "sface", "fused"}: {path: unit vector}, averaged over the flip passes as Embedder.embed_tta does;
    the chips of every image are gathered first and embedded in batches."""
    import keras

    fused = pipeline.embedder.model
    branches = keras.Model(fused.inputs, [fused.get_layer("dlib_unit").output, fused.get_layer("sface_unit").output])
    kept, chips = [], {"dlib": [], "sface": []}
    for path, subject, image in pipeline.read_subjects(paths, "centre", last_resort=True, desc="lfw images"):
        if subject.face is None:
            continue
        sets = pipeline.tta_chips(image, [subject.face]) if flip else [pipeline.chips(image, [subject.face])]
        for kind in chips:
            passes = np.concatenate([c[kind] for c in sets])
            chips[kind].append(np.concatenate([passes, passes[:, :, ::-1]]) if flip else passes)
        kept.append(path)
    per_image = len(chips["dlib"][0])
    dlib_all, sface_all = (np.concatenate(chips[k]) for k in ("dlib", "sface"))
    outputs = [branches.predict_on_batch([dlib_all[i : i + 64].astype(np.float32),
                                          sface_all[i : i + 64].astype(np.float32)])
               for i in range(0, len(dlib_all), 64)]
    d = np.concatenate([o[0] for o in outputs]).reshape(len(kept), per_image, -1)
    s = np.concatenate([o[1] for o in outputs]).reshape(len(kept), per_image, -1)
    passes = normalize(np.concatenate([d, FUSION_SFACE_WEIGHT * s], axis=2))
    return {"dlib": dict(zip(kept, normalize(d.mean(axis=1)), strict=True)),
            "sface": dict(zip(kept, normalize(s.mean(axis=1)), strict=True)),
            "fused": dict(zip(kept, normalize(passes.mean(axis=1)), strict=True))}


def report(vectors: dict[Path, np.ndarray], test, train) -> dict:
    found = ImageEmbeddings(vectors=vectors)
    train_d, train_same, _ = pair_distances(train, found)
    threshold, _ = best_threshold(train_d, train_same)
    distances, same, _ = pair_distances(test, found)
    folds = within_set_folds(test)
    return {"accuracy": accuracy_at(distances, same, threshold), "cv_accuracy": kfold_accuracy(distances, same,
            folds).accuracy, "auc": auc(distances, same), "tar_at_far_1e-3": tar_at_far(distances, same, 1e-3),
            "threshold": threshold}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--weights_dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    test = parse_pairs(args.lfw_dir / "pairsDevTest.txt", args.lfw_dir)[0]
    train = parse_pairs(args.lfw_dir / "pairsDevTrain.txt", args.lfw_dir)[0]
    paths = list(dict.fromkeys(p for pair in test + train for p in (pair.a, pair.b)))
    pipeline = FacePipeline(args.detector, "fused", args.weights_dir)
    results = {}
    for flip in (False, True):
        for model, vectors in branch_vectors(pipeline, paths, flip).items():
            results[f"{model} {'flip' if flip else 'plain'}"] = report(vectors, test, train)
            print(model, flip, results[f"{model} {'flip' if flip else 'plain'}"], file=sys.stderr)
    if args.json:
        print(json.dumps(results))
        return 0
    print("| model | DevTest accuracy (DevTrain threshold) | 10-fold CV | AUC | TAR@FAR=1e-3 | threshold |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, row in results.items():
        print(f"| {key} | {row['accuracy']:.2%} | {row['cv_accuracy']:.2%} | {row['auc']:.4f} | "
              f"{row['tar_at_far_1e-3']:.1%} | {row['threshold']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
