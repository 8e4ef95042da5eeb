"""Does `-t True` help on the user's domain? Train on one set of people of a domain, judge on OTHER people of it.

    python bench/bench_domain.py --domain mask|camera|lowlight [-e 20] [--loss semi_hard] [-m 0.5] [--json]

Domains (bench/domains.py, made once from lfw_dev into bench/results/domains/): surgical masks drawn from the five
landmarks, a cheap camera (grey, ~30 px faces, blur, JPEG 30), low light. Training: `facenet.fine_tune` (exactly
what `python main.py -t True -e 20 -m 0.5` runs: guard, weights beside the gallery, gallery rebuilt) on the domain
photos of every LFW DevTrain person with >= 3 photos. Judged before and after, in one run, on LFW DevTest (people
training never saw; View 1 DevTrain and DevTest people are disjoint): the 1000 DevTest pairs in the domain and clean
(10-fold cross-validated accuracy, AUC), clean-vs-domain pairs, and an open-set check: DevTest people with 2+
photos enrolled from CLEAN photos (all but one), each held-out photo queried in the domain, DevTest people with one
photo as domain strangers; named / wrongly named / rejected at the default (gallery-size-aware) threshold.

Adapter weights apply to the frozen model's vectors, so "after" vectors are the adapter applied to the "before"
ones (tests/test_adapter.py checks this equals the trained pipeline); backbone weights are re-embedded.
Results also go to bench/results/domain_<domain>_<tune>.json. With weights saved, `guard_size` says how many
held-out people the guard needs: for random sets of k DevTest people, the share whose AUC change has the sign of
the change on all DevTest people.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from domains import DOMAINS, LFW_DEV, ROOT, make_domain  # noqa: E402

from facenet.config import TUNE_MODES, UNKNOWN  # noqa: E402
from facenet.eval.lfw import parse_pairs, within_set_folds  # noqa: E402
from facenet.eval.metrics import auc, kfold_accuracy  # noqa: E402
from facenet.gallery.index import FaceDatabase  # noqa: E402
from facenet.models.vectors import normalize  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def pretrained_vectors(pipeline: FacePipeline, lfw_dir: Path, domain_root: Path,
                       test: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """DevTest vectors of the pretrained model, clean and in the domain: embedded once, then read back."""
    cache = RESULTS / "domains" / f"vectors_{domain_root.name}_{pipeline.model_id}.npz"
    if cache.exists():
        with np.load(cache) as saved:
            if saved["photos"].tolist() == [str(p) for p in test]:
                return saved["clean"], saved["domain"]
    clean, domain = embed(pipeline, lfw_dir, test), embed(pipeline, domain_root, test)
    np.savez(cache, clean=clean, domain=domain, photos=np.array([str(p) for p in test]))
    return clean, domain


def lfw_people(lfw_dir: Path) -> tuple[list[Path], list[Path], list]:
    """(DevTrain photos of people with >= 3 photos, every DevTest photo, the DevTest pairs), relative paths."""
    train_pairs, _, _ = parse_pairs(lfw_dir / "pairsDevTrain.txt", lfw_dir)
    test_pairs, _, _ = parse_pairs(lfw_dir / "pairsDevTest.txt", lfw_dir)
    train_people = sorted({p.parent.name for pair in train_pairs for p in (pair.a, pair.b)})
    train = [photo.relative_to(lfw_dir) for name in train_people
             for photo in sorted((lfw_dir / name).glob("*.jpg")) if len(list((lfw_dir / name).glob("*.jpg"))) >= 3]
    test_people = sorted({p.parent.name for pair in test_pairs for p in (pair.a, pair.b)})
    test = [photo.relative_to(lfw_dir) for name in test_people for photo in sorted((lfw_dir / name).glob("*.jpg"))]
    return train, test, test_pairs


def embed(pipeline: FacePipeline, root: Path, photos: list[Path]) -> np.ndarray:
    """Each photo's subject vector (the LFW face choice: nearest the centre, never none)."""
    found = pipeline.embed_photos([root / p for p in photos], "centre", last_resort=True, desc=f"{root.name}")
    return np.stack([found[root / p].vector for p in photos])


def verification(vectors_a: np.ndarray, vectors_b: np.ndarray, index: dict[Path, int], pairs: list,
                 lfw_dir: Path) -> dict:
    """10-fold CV accuracy and AUC of the pairs, image a from `vectors_a`, image b from `vectors_b`."""
    a = np.array([index[p.a.relative_to(lfw_dir)] for p in pairs])
    b = np.array([index[p.b.relative_to(lfw_dir)] for p in pairs])
    same = np.array([p.same for p in pairs])
    distances = np.linalg.norm(vectors_a[a] - vectors_b[b], axis=1)
    accuracy = kfold_accuracy(distances, same, within_set_folds(pairs)).accuracy
    return {"accuracy": round(100 * accuracy, 2), "auc": round(auc(distances, same), 5)}


def open_set(clean: np.ndarray, domain: np.ndarray, photos: list[Path], model: str, scale: float) -> dict:
    """Enrolled from clean photos (all but one per person with 2+), queried with held-out domain photos; people
    with one photo are domain strangers. Shares named right, named wrongly, rejected (default threshold)."""
    people: dict[str, list[int]] = {}
    for i, photo in enumerate(photos):
        people.setdefault(photo.parent.name, []).append(i)
    enrolled = {name: rows for name, rows in people.items() if len(rows) >= 2}
    database = FaceDatabase(sorted(enrolled), np.stack([normalize(clean[enrolled[n][:-1]].mean(axis=0))
                                                        for n in sorted(enrolled)]),
                            "bench", [len(enrolled[n]) - 1 for n in sorted(enrolled)], model=model,
                            distance_scale=scale)
    probes = [(rows[-1], name) for name, rows in enrolled.items()]
    matches = database.identify(domain[[row for row, _ in probes]])
    named = np.mean([got == name for got, (_, name) in zip(matches.names, probes, strict=True)])
    rejected = np.mean([got == UNKNOWN for got in matches.names])
    strangers = [rows[0] for rows in people.values() if len(rows) == 1]
    stranger_rejected = np.mean([got == UNKNOWN for got in database.identify(domain[strangers]).names])
    return {"people": len(enrolled), "named": round(100 * named, 1), "wrongly_named": round(
        100 * (1 - named - rejected), 1), "rejected": round(100 * rejected, 1), "strangers": len(strangers),
        "strangers_rejected": round(100 * stranger_rejected, 1)}


def guard_agreement(before: np.ndarray, after: np.ndarray, photos: list[Path], sizes=(5, 10, 20, 40, 80),
                    draws: int = 200, seed: int = 0) -> dict:
    """How many held-out people the guard needs: for random sets of k DevTest people (2+ photos), all pairs among
    their photos, the share of sets whose AUC change (after - before) has the sign of the change on all of them."""
    people: dict[str, list[int]] = {}
    for i, photo in enumerate(photos):
        people.setdefault(photo.parent.name, []).append(i)
    eligible = [rows for rows in people.values() if len(rows) >= 2]

    def change(groups: list[list[int]]) -> float:
        rows = np.concatenate(groups)
        labels = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
        a, b = np.triu_indices(len(rows), 1)
        same = labels[a] == labels[b]

        def area(v: np.ndarray) -> float:
            return auc(np.linalg.norm(v[rows[a]] - v[rows[b]], axis=1), same)
        return area(after) - area(before)

    truth = np.sign(change(eligible))
    rng = np.random.default_rng(seed)
    agree = {}
    for k in sizes:
        if k > len(eligible):
            continue
        signs = [np.sign(change([eligible[i] for i in rng.choice(len(eligible), k, replace=False)]))
                 for _ in range(draws)]
        agree[k] = round(100 * float(np.mean(np.array(signs) == truth)), 1)
    return {"people": len(eligible), "all_people_auc_change": round(change(eligible), 5),
            "sign_agreement_percent_by_people": agree}


def judge(clean: np.ndarray, domain: np.ndarray, index: dict, pairs: list, lfw_dir: Path, photos: list[Path],
          model: str, scale: float) -> dict:
    return {"domain": verification(domain, domain, index, pairs, lfw_dir),
            "clean": verification(clean, clean, index, pairs, lfw_dir),
            "clean_vs_domain": verification(clean, domain, index, pairs, lfw_dir),
            "open_set": open_set(clean, domain, photos, model, scale),
            "open_set_in_domain": open_set(domain, domain, photos, model, scale)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", choices=sorted(DOMAINS), default="mask")
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--model", default="fused")
    parser.add_argument("--tune", default="adapter", choices=TUNE_MODES)
    parser.add_argument("--loss", default="semi_hard")
    parser.add_argument("-e", "--epochs", type=int, default=20)
    parser.add_argument("-m", "--margin", type=float, default=0.5)
    parser.add_argument("-lr", "--learning_rate", type=float, default=None)
    parser.add_argument("--weights_dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import facenet
    from facenet.models.trained import read_trained, trained_weights_path
    from facenet.train.cached import adapter_model

    domain_root = make_domain(args.domain, args.lfw_dir)
    train, test, pairs = lfw_people(args.lfw_dir)
    index = {photo: i for i, photo in enumerate(test)}
    pipeline = FacePipeline("yunet", args.model, args.weights_dir)
    clean, domain = pretrained_vectors(pipeline, args.lfw_dir, domain_root, test)
    domain_before = domain
    results: dict = {"domain": args.domain, "model": args.model, "tune": args.tune, "loss": args.loss,
                     "epochs": args.epochs, "training": {"people": len({p.parent for p in train}),
                                                         "photos": len(train)}}
    results["before"] = judge(clean, domain, index, pairs, args.lfw_dir, test, args.model, 1.0)
    print(f"before: {json.dumps(results['before'])}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        data, gallery = Path(tmp) / "data", Path(tmp) / "database"
        for photo in train:
            (data / photo.parent).mkdir(parents=True, exist_ok=True)
            (data / photo).symlink_to(domain_root / photo)
        started = time.perf_counter()
        done = facenet.fine_tune(data, gallery, model=args.model, weights_dir=args.weights_dir, tune=args.tune,
                                 epochs=args.epochs, loss=args.loss, margin=args.margin,
                                 learning_rate=args.learning_rate, log_dir=None)
        run = done.run
        results["training"].update(seconds=round(time.perf_counter() - started, 1), saved=done.saved,
                                   best_epoch=run.best_epoch, epochs_run=run.epochs_run,
                                   epoch_seconds=run.epoch_seconds, embed_seconds=run.embed_seconds,
                                   val_before=run.val_before, val_after=run.val_after, gallery=done.gallery,
                                   guard_people=run.held_people, guard_by_person=run.by_person,
                                   guard_pairs=run.pairs, guard_photos=run.held_out,
                                   feature_megabytes=run.feature_megabytes, gain_share=run.gain_share)
        scale = run.val_after["distance_scale"] if done.saved else 1.0
        trained = read_trained(trained_weights_path(gallery, args.model)) if done.saved else None
        if trained is not None and trained.model_weights is None:
            adapter = adapter_model(clean.shape[1], trained.record["adapter_hidden"], trained.adapter_weights)
            clean, domain = (np.asarray(adapter(v, training=False)) for v in (clean, domain))
        elif trained is not None:
            after = FacePipeline("yunet", args.model, args.weights_dir, gallery)
            clean, domain = embed(after, args.lfw_dir, test), embed(after, domain_root, test)
    results["after"] = judge(clean, domain, index, pairs, args.lfw_dir, test, args.model, scale)
    if done.saved:
        results["guard_size"] = guard_agreement(domain_before, domain, test)
        np.savez(RESULTS / f"domain_{args.domain}_{args.tune}_vectors.npz", clean=clean, domain=domain,
                 scale=scale)
    before, after = results["before"], results["after"]
    results["domain_gain_points"] = round(after["domain"]["accuracy"] - before["domain"]["accuracy"], 2)
    results["clean_change_points"] = round(after["clean"]["accuracy"] - before["clean"]["accuracy"], 2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"domain_{args.domain}_{args.tune}.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results) if args.json else json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
