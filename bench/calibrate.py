"""Calibrate the decision constants of each model on LFW View 1 DevTrain; prints what gallery/thresholds.py keeps.

    python bench/calibrate.py [--lfw_dir ../shared/faces/lfw_dev] [--detector yunet] [--weights_dir weights]

Every lfw_dev photo is embedded once through the FacePipeline with enrollment's face choice (the largest face,
the pipeline's fallback chain; photos without a face are left out as enrollment leaves them out), by both
branches of the fused model (dlib and SFace unit vectors), cached in bench/results/ by model id and detector.
Then, on DevTrain only: the SFace weight of the fused embedding (best DevTrain accuracy, AUC breaking ties),
and per model the 1:1 threshold and the stranger-distance model behind the gallery thresholds. DevTest
accuracy at the DevTrain threshold is printed for information, never used for a choice.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facenet.eval.lfw import parse_pairs  # noqa: E402
from facenet.eval.metrics import accuracy_at, auc, best_threshold  # noqa: E402
from facenet.images import list_images  # noqa: E402
from facenet.models.vectors import normalize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LFW_DEV = ROOT.parent / "shared" / "faces" / "lfw_dev"
MIN_TAIL_PAIRS = 100
"""A lower quantile of the impostor distances is kept only when at least this many pairs lie below it. Beyond, a
few pairs decide it, and on DevTrain those are LFW's label errors, not strangers: below the 1e-5.5 quantile (19 of
5.9 M pairs) sit Joseph_Blatter vs Sepp_Blatter (one man under two names, 6 pairs from 0.42), Charlotte_Rampling vs
Ludivine_Sagnier (0.24) and Kelly vs Sharon_Osbourne (0.29). The gallery thresholds extend the last kept point with
a scaled Gaussian tail (gallery.thresholds._z)."""
WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
"""SFace weights of the fused embedding tried on DevTrain."""


def branch_embeddings(lfw_dir: Path, detector: str, weights_dir: Path) -> dict[str, np.ndarray]:
    """{"paths", "names", "dlib", "sface", "how"}: both branches' unit vectors of every lfw_dev photo with a face."""
    import keras

    from facenet.pipeline import FacePipeline

    pipeline = FacePipeline(detector, "fused", weights_dir)
    cache = RESULTS / f"lfw_dev_{pipeline.embedder.fingerprint}_{detector}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    fused = pipeline.embedder.model
    branches = keras.Model(fused.inputs, [fused.get_layer("dlib_unit").output, fused.get_layer("sface_unit").output])
    paths, how, chips = [], [], {"dlib": [], "sface": []}
    for path, subject, image in pipeline.read_subjects(list_images(lfw_dir), "largest", desc="lfw_dev"):
        if subject.face is None:
            print(f"left out {path}: {subject.reason}", file=sys.stderr)
            continue
        for kind, chip in pipeline.chips(image, [subject.face]).items():
            chips[kind].append(chip[0])
        paths.append(path)
        how.append(subject.how)
    dlib_vectors, sface_vectors = [], []
    for start in range(0, len(paths), 64):
        d, s = branches([np.stack(chips[k][start : start + 64]).astype(np.float32) for k in ("dlib", "sface")])
        dlib_vectors.append(np.asarray(d))
        sface_vectors.append(np.asarray(s))
    result = {
        "paths": np.array([str(p.relative_to(lfw_dir)) for p in paths]),
        "names": np.array([p.parent.name for p in paths]),
        "dlib": np.concatenate(dlib_vectors),
        "sface": np.concatenate(sface_vectors),
        "how": np.array(how),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **result)
    return result


def fused(data: dict, weight: float) -> np.ndarray:
    """The fused embedding for an SFace weight: what the fused Keras model computes."""
    return normalize(np.concatenate([data["dlib"], weight * data["sface"]], axis=1))


def pair_distances(data: dict, embeddings: np.ndarray, pairs_file: Path, lfw_dir: Path
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sphere distances of the pairs whose two photos were embedded, and their same/different labels."""
    pairs, _, _ = parse_pairs(pairs_file, lfw_dir)
    row = {path: i for i, path in enumerate(data["paths"])}
    kept = [(row[a], row[b], p.same) for p in pairs
            if (a := str(p.a.relative_to(lfw_dir))) in row and (b := str(p.b.relative_to(lfw_dir))) in row]
    a, b, same = (np.array(column) for column in zip(*kept, strict=True))
    return np.linalg.norm(embeddings[a] - embeddings[b], axis=1), same.astype(bool)


def people_of(pairs_file: Path, lfw_dir: Path) -> set[str]:
    pairs, _, _ = parse_pairs(pairs_file, lfw_dir)
    return {path.parent.name for p in pairs for path in (p.a, p.b)}


def impostor_model(data: dict, embeddings: np.ndarray, people: set[str], max_photos: int = 6, seed: int = 0) -> dict:
    """Distances from photos to other people's centroids of k = 1..max_photos photos: mean per k, pooled std.

    The mean falls with k (an averaged face is nearer to everyone) as a + b / k; the spread does not change.
    """
    names = data["names"]
    mask = np.isin(names, sorted(people))
    probes, probe_names = embeddings[mask], names[mask]
    rng = np.random.default_rng(seed)
    by_person: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if mask[i]:
            by_person.setdefault(str(name), []).append(i)
    ks, means, stds = [], [], []
    for k in range(1, max_photos + 1):
        chosen = {n: rng.permutation(rows)[:k] for n, rows in sorted(by_person.items()) if len(rows) >= k}
        centroids = normalize(np.stack([embeddings[rows].mean(axis=0) for rows in chosen.values()]))
        distance = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * probes @ centroids.T))
        impostor = distance[probe_names[:, None] != np.array(list(chosen))[None, :]]
        ks.append(k)
        means.append(float(impostor.mean()))
        stds.append(float(impostor.std()))
        print(f"  centroids of {k} photo(s): {len(chosen)} people, {impostor.size} impostor distances, "
              f"mean {means[-1]:.4f} std {stds[-1]:.4f}", file=sys.stderr)
    slope, intercept = np.polyfit(1.0 / np.array(ks), np.array(means), 1)
    return {"mean_many": float(intercept), "mean_one": float(intercept + slope), "std": float(np.mean(stds))}


def impostor_z_table(data: dict, embeddings: np.ndarray, people: set[str], fars: tuple[float, ...]
                     ) -> list[tuple[float, float]]:
    """Standardised lower quantiles of photo-to-photo impostor distances (all pairs of different people), for the
    false-accept rates with at least MIN_TAIL_PAIRS pairs below."""
    names = data["names"]
    mask = np.isin(names, sorted(people))
    vectors, labels = embeddings[mask], names[mask]
    parts = []
    for start in range(0, len(vectors), 512):
        block = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * vectors[start : start + 512] @ vectors.T))
        rows = np.arange(start, min(start + 512, len(vectors)))[:, None]
        keep = (np.arange(len(vectors))[None, :] > rows) & (labels[rows] != labels[None, :])
        parts.append(block[keep])
    impostor = np.concatenate(parts)
    mean, std = impostor.mean(), impostor.std()
    print(f"  photo pairs of different people: {impostor.size}, mean {mean:.4f} std {std:.4f}", file=sys.stderr)
    return [(far, float((np.quantile(impostor, far) - mean) / std)) for far in fars
            if far * impostor.size >= MIN_TAIL_PAIRS]


def choose_weight(data: dict, lfw_dir: Path) -> float:
    """The SFace weight of the fused embedding with the best DevTrain accuracy (AUC breaks ties)."""
    scores = {}
    for weight in WEIGHTS:
        distances, same = pair_distances(data, fused(data, weight), lfw_dir / "pairsDevTrain.txt", lfw_dir)
        scores[weight] = (best_threshold(distances, same)[1], auc(distances, same))
        print(f"  fused, SFace weight {weight}: DevTrain accuracy {scores[weight][0]:.2%}, AUC {scores[weight][1]:.5f}",
              file=sys.stderr)
    return max(WEIGHTS, key=lambda w: scores[w])


def calibrate(name: str, data: dict, embeddings: np.ndarray, lfw_dir: Path) -> None:
    """Print the `Calibration` of one model (DevTrain), with DevTest accuracy at its threshold for information."""
    distances, same = pair_distances(data, embeddings, lfw_dir / "pairsDevTrain.txt", lfw_dir)
    verify, train_accuracy = best_threshold(distances, same)
    test_distances, test_same = pair_distances(data, embeddings, lfw_dir / "pairsDevTest.txt", lfw_dir)
    print(f"{name}: 1:1 threshold {verify:.4f}, DevTrain accuracy {train_accuracy:.2%} ({len(same)} pairs), "
          f"DevTest accuracy {accuracy_at(test_distances, test_same, verify):.2%} ({len(test_same)} pairs)",
          file=sys.stderr)
    people = people_of(lfw_dir / "pairsDevTrain.txt", lfw_dir)
    model = impostor_model(data, embeddings, people)
    log_fars = (-1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0, -4.5, -5.0, -5.5, -6.0)
    table = impostor_z_table(data, embeddings, people, tuple(10.0**e for e in log_fars))
    z = ", ".join(f"({np.log10(far):.1f}, {value:.3f})" for far, value in table)
    print(f'    "{name}": Calibration(\n        verify_threshold={verify:.4f},\n'
          f"        impostor_mean_one={model['mean_one']:.4f},\n        impostor_mean_many={model['mean_many']:.4f},\n"
          f"        impostor_std={model['std']:.4f},\n        impostor_z=({z}),\n    ),")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--weights_dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--fusion_weight", type=float, default=None, help="skip the search; use this SFace weight")
    args = parser.parse_args()
    data = branch_embeddings(args.lfw_dir, args.detector, args.weights_dir)
    print(f"{len(data['paths'])} photos embedded; fallbacks: "
          f"{dict(zip(*np.unique(data['how'], return_counts=True), strict=True))}", file=sys.stderr)
    weight = args.fusion_weight if args.fusion_weight is not None else choose_weight(data, args.lfw_dir)
    print(f"# --- derived by bench/calibrate.py --detector {args.detector} on LFW View 1 DevTrain")
    print(f"FUSION_SFACE_WEIGHT = {weight}")
    for name, embeddings in (("dlib", data["dlib"]), ("sface", data["sface"]), ("fused", fused(data, weight))):
        calibrate(name, data, embeddings, args.lfw_dir)


if __name__ == "__main__":
    main()
