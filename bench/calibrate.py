"""Calibrate the decision thresholds on LFW View 1 DevTrain; prints the constants kept in facenet/config.py.

    python bench/calibrate.py [--lfw_dir ../shared/faces/lfw_dev]

Every lfw_dev photo is embedded once (largest face; detector fallbacks when HOG finds none) and cached
in bench/results/, keyed by the embedder's fingerprint, so reruns take seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facenet.console import progress  # noqa: E402
from facenet.embed import normalize  # noqa: E402
from facenet.faces import face_chip  # noqa: E402
from facenet.images import ImageError, list_images, load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LFW_DEV = ROOT.parent / "shared" / "faces" / "lfw_dev"


def lfw_embeddings(lfw_dir: Path, embedder, detector) -> dict[str, np.ndarray]:
    """Embeddings of every photo under `lfw_dir`: {"paths", "names", "embeddings", "how"}, cached per model."""
    cache = RESULTS / f"lfw_dev_{embedder.fingerprint}_{detector.kind}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    paths = list_images(lfw_dir)
    chips, how, kept = [], [], []
    start = time.perf_counter()
    for path in progress(paths, "embedding lfw_dev", unit="photo"):
        try:
            image = load_image(path)
        except ImageError as error:
            print(f"skipped {error}", file=sys.stderr)
            continue
        faces = detector.detect(image)
        face, found = (faces[0], "detected") if faces else detector.detect_or_fallback(image)
        chips.append(face_chip(image, face))
        how.append(found)
        kept.append(path)
    embeddings = embedder.embed(np.stack(chips))
    elapsed = time.perf_counter() - start
    print(f"embedded {len(kept)} photos in {elapsed:.0f} s ({len(kept) / elapsed:.1f} photos/s)", file=sys.stderr)
    result = {
        "paths": np.array([str(p.relative_to(lfw_dir)) for p in kept]),
        "names": np.array([p.parent.name for p in kept]),
        "embeddings": normalize(embeddings),
        "how": np.array(how),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **result)
    return result


def read_pairs(path: Path) -> list[tuple[str, str, bool]]:
    """LFW pairs file -> (relative path A, relative path B, same person)."""

    def photo(name: str, number: str) -> str:
        return f"{name}/{name}_{int(number):04d}.jpg"

    pairs = []
    for line in Path(path).read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 3:
            pairs.append((photo(fields[0], fields[1]), photo(fields[0], fields[2]), True))
        elif len(fields) == 4:
            pairs.append((photo(fields[0], fields[1]), photo(fields[2], fields[3]), False))
    return pairs


def pair_distances(data: dict, pairs: list[tuple[str, str, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sphere distances of the pairs whose two photos were embedded, and their same/different labels."""
    row = {path: i for i, path in enumerate(data["paths"])}
    kept = [(row[a], row[b], same) for a, b, same in pairs if a in row and b in row]
    a, b, same = (np.array(column) for column in zip(*kept, strict=True))
    return np.linalg.norm(data["embeddings"][a] - data["embeddings"][b], axis=1), same.astype(bool)


def best_accuracy_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The middle of the widest run of thresholds with the best same/different accuracy, and that accuracy."""
    order = np.argsort(distances)
    cut = np.sort(distances)
    # accuracy when the threshold sits just above cut[i]: pairs 0..i called "same"
    correct = np.cumsum(same[order]) + (~same).sum() - np.cumsum(~same[order])
    best = correct.max()
    i = int(np.argmax(correct))
    upper = cut[i + 1] if i + 1 < len(cut) else cut[i] + 0.01
    return float((cut[i] + upper) / 2), float(best / len(distances))


def people_of(pairs: list[tuple[str, str, bool]]) -> set[str]:
    return {path.split("/")[0] for a, b, _ in pairs for path in (a, b)}


def impostor_model(data: dict, people: set[str], max_photos: int = 6, seed: int = 0) -> dict:
    """Distances from photos to other people's centroids of k = 1..max_photos photos: mean per k, pooled std.

    The mean falls with k (an averaged face is nearer to everyone) as a + b / k; the spread does not change.
    """
    names, embeddings = data["names"], data["embeddings"]
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


def impostor_z_table(data: dict, people: set[str], fars: tuple[float, ...]) -> list[tuple[float, float]]:
    """Standardised lower quantiles of photo-to-photo impostor distances (all pairs of different people)."""
    names, embeddings = data["names"], data["embeddings"]
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
    return [(far, float((np.quantile(impostor, far) - mean) / std)) for far in fars]


def load_models(weights_dir: Path):
    """The pretrained embedder and the HOG detector, as the CLI builds them."""
    from facenet.embed import Embedder
    from facenet.faces import FaceDetector
    from facenet.model import build_embedder

    return Embedder(build_embedder("dlib_resnet", weights_dir, trained=False)), FaceDetector("hog")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--weights_dir", type=Path, default=ROOT / "weights")
    args = parser.parse_args()
    embedder, detector = load_models(args.weights_dir)
    data = lfw_embeddings(args.lfw_dir, embedder, detector)
    train = read_pairs(args.lfw_dir / "pairsDevTrain.txt")
    test = read_pairs(args.lfw_dir / "pairsDevTest.txt")

    distances, same = pair_distances(data, train)
    verify, train_accuracy = best_accuracy_threshold(distances, same)
    test_distances, test_same = pair_distances(data, test)
    test_accuracy = float(((test_distances <= verify) == test_same).mean())
    print(f"1:1 verification: threshold {verify:.4f}, DevTrain accuracy {train_accuracy:.2%} ({len(same)} pairs), "
          f"DevTest accuracy {test_accuracy:.2%} ({len(test_same)} pairs)", file=sys.stderr)

    people = people_of(train)
    model = impostor_model(data, people)
    log_fars = (-1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0, -4.5, -5.0, -5.5, -6.0)
    table = impostor_z_table(data, people, tuple(10.0**e for e in log_fars))
    print(f"# --- derived by bench/calibrate.py on LFW View 1 DevTrain ({len(people)} people), embedder "
          f"{embedder.fingerprint}")
    print(f"VERIFY_THRESHOLD = {verify:.4f}")
    print(f"IMPOSTOR_MEAN_ONE = {model['mean_one']:.4f}")
    print(f"IMPOSTOR_MEAN_MANY = {model['mean_many']:.4f}")
    print(f"IMPOSTOR_STD = {model['std']:.4f}")
    print("IMPOSTOR_Z = (")
    for log_far, (_, z) in zip(log_fars, table, strict=True):
        print(f"    ({log_far}, {z:.3f}),")
    print(")")


if __name__ == "__main__":
    main()
