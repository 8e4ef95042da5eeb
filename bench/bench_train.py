"""Training on real data: does fine-tuning help on people it never saw, how fast is a step, does the CLI finish?

    python bench/bench_train.py [--lfw_dir ../shared/faces/lfw_dev] [--epochs 20] [--losses semi_hard cosface]

(a) speed: images/s of the training step (batch 32, P x K = 8 x 4) for dlib_resnet and resnet50 (from scratch);
    resnet50's loss over a few dozen steps (it must fall);
(b) dlib_resnet fine-tuned on lfw_dev people with >= 4 photos, three quarters of them (symlinks in a temp dir;
    shared/ is only read); verification on the DISJOINT quarter (all same-person pairs + as many different-person
    pairs, no TTA) before training and after every epoch, next to the run's own held-out guard figures (AUC,
    best-threshold accuracy and threshold, accuracy at the calibrated VERIFY_THRESHOLD); for each of --losses (a
    triplet loss with -m --margin, margin losses with their own defaults) at each of --learning_rates;
(c) the issue's "done means": `python main.py -t True -e 20 -m 0.5` on a data/ of 20 lfw_dev people (fresh
    weights folder), wall time; again on all the training people with -lr 1e-6, and when weights were saved,
    `-t False` recognises with them.
Results also go to bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from facenet.gallery.thresholds import calibration  # noqa: E402
from facenet.images import list_images  # noqa: E402
from facenet.models.build import build_embedder  # noqa: E402
from facenet.models.embed import Embedder  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402
from facenet.train import (  # noqa: E402
    load_chips,
    make_dataset,
    make_train_step,
    pk_batches,
    train,
    verification_metrics,
)
from facenet.train.margin import MARGIN_LOSSES  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LFW_DEV = ROOT.parent / "shared" / "faces" / "lfw_dev"
MIN_PHOTOS = 4
SEED = 4
VERIFY_THRESHOLD = calibration("dlib").verify_threshold


def link_people(names: list[str], lfw_dir: Path, target: Path) -> Path:
    """data/<Name>/ folders of symlinks to the shared photos (never copied, never modified)."""
    for name in names:
        (target / name).mkdir(parents=True)
        for photo in list_images(lfw_dir / name):
            (target / name / photo.name).symlink_to(photo.resolve())
    return target


def disjoint_pairs(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All same-person pairs and as many random different-person pairs."""
    a, b = np.triu_indices(len(labels), 1)
    same = labels[a] == labels[b]
    neg = rng.choice(np.flatnonzero(~same), int(same.sum()), replace=False)
    keep = np.r_[np.flatnonzero(same), neg]
    return a[keep], b[keep], same[keep]


def step_speed(backbone: str, chips: np.ndarray, labels: np.ndarray, steps: int, weights_dir: Path) -> dict:
    """Images/s of the training step (first step = tracing, excluded) and the loss of every step."""
    keras.backend.clear_session()
    model = build_embedder(backbone, weights_dir, trained=False)
    step = make_train_step(model, keras.optimizers.Adam(1e-4), 0.5)
    rng = np.random.default_rng(SEED)
    batches = np.concatenate([pk_batches(labels, 32, rng=rng) for _ in range(steps // 10 + 2)])[: steps + 1]
    losses, seconds = [], 0.0
    for i, (x, y) in enumerate(make_dataset((chips,), labels, batches, SEED)):
        started = time.perf_counter()
        loss, _ = step(x, y)
        losses.append(float(loss))
        if i:
            seconds += time.perf_counter() - started
    return {"images_per_s": round(32 * steps / seconds, 1), "losses": [round(v, 4) for v in losses]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--margin", type=float, default=0.5, help="triplet losses' margin")
    parser.add_argument("--losses", nargs="+", default=["semi_hard", "cosface"])
    parser.add_argument("--learning_rates", type=float, nargs="+", default=[1e-4, 1e-6])
    parser.add_argument("--resnet_steps", type=int, default=60)
    parser.add_argument("--skip_cli", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU", "epochs": args.epochs,
                    "margin": args.margin}

    people = sorted(p.name for p in args.lfw_dir.iterdir() if len(list_images(p)) >= MIN_PHOTOS)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(people))
    held_people = sorted(people[i] for i in order[: len(people) // 4])
    train_people = sorted(people[i] for i in order[len(people) // 4 :])
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        weights = tmp / "weights"
        pipeline = FacePipeline("hog", "dlib", weights)
        started = time.perf_counter()
        train_set = load_chips(link_people(train_people, args.lfw_dir, tmp / "train"), pipeline, tmp / "train.npz")
        held_set = load_chips(link_people(held_people, args.lfw_dir, tmp / "held"), pipeline, tmp / "held.npz")
        print(f"{len(train_set)} training photos of {len(train_people)} people, {len(held_set)} photos of "
              f"{len(held_people)} disjoint people; detection {time.perf_counter() - started:.0f} s", file=sys.stderr)
        report["train"] = {"people": len(train_people), "photos": len(train_set)}
        report["disjoint"] = {"people": len(held_people), "photos": len(held_set)}

        # (a) step speed
        report["speed"] = {}
        for backbone, steps in (("dlib_resnet", 20), ("resnet50", args.resnet_steps)):
            result = step_speed(backbone, train_set.chips["dlib"], train_set.labels, steps, weights)
            losses = result["losses"]
            result["loss_first10"] = round(float(np.mean(losses[:10])), 4)
            result["loss_last10"] = round(float(np.mean(losses[-10:])), 4)
            result["loss_slope_per_step"] = round(float(np.polyfit(np.arange(len(losses)), losses, 1)[0]), 6)
            report["speed"][backbone] = result
            print(f"{backbone}: {result['images_per_s']} images/s per step; loss first 10 steps "
                  f"{result['loss_first10']}, last 10 {result['loss_last10']}", file=sys.stderr)
        keras.backend.clear_session()

        # (b) fine-tuning with each loss, judged on disjoint people, at each learning rate
        pa, pb, same = disjoint_pairs(held_set.labels, np.random.default_rng(SEED))
        report["finetune"] = {}
        for loss in args.losses:
            for learning_rate in args.learning_rates:
                report["finetune"][f"{loss} {learning_rate}"] = finetune(
                    train_set, held_set, (pa, pb, same), tmp / f"weights_{loss}_{learning_rate}", args, learning_rate,
                    loss)
                keras.backend.clear_session()

        # (c) the CLI on 20 people at the default learning rate; on all training people at the lowest one,
        # where the guard saved in (b), then recognition with the saved weights
        if not args.skip_cli:
            data = link_people(train_people[:20], args.lfw_dir, tmp / "cli_data")
            report["cli_20_people"] = cli_run(data, tmp, args, None)
            report["cli_all_people"] = cli_run(tmp / "train", tmp, args, min(args.learning_rates))

    (RESULTS / "train.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))


def brief(metrics: dict) -> str:
    return (f"AUC {metrics['auc']:.4f} acc {metrics['accuracy']:.4f} (t {metrics['threshold']:.3f}) "
            f"acc@calibrated {metrics['deployed_accuracy']:.4f}")


def finetune(train_set, held_set, pairs, weights: Path, args, learning_rate: float, loss: str) -> dict:
    """train() with the disjoint people's verification measured after every epoch (and before: epoch 0)."""
    pa, pb, same = pairs
    curve, embedders = [], {}
    tag = f"{loss} lr {learning_rate:g}"

    def disjoint(model: keras.Model) -> dict:
        emb = embedders.setdefault(id(model), Embedder(model, "dlib")).embed(held_set.chips)
        return verification_metrics(np.linalg.norm(emb[pa] - emb[pb], axis=1), same, VERIFY_THRESHOLD)

    def on_epoch(epoch: int, model: keras.Model, metrics: dict) -> None:
        curve.append({"epoch": epoch, "guard": metrics, "disjoint": disjoint(model)})
        print(f"{tag} epoch {epoch}: guard {brief(metrics)} | disjoint {brief(curve[-1]['disjoint'])}",
              file=sys.stderr)

    started = time.perf_counter()
    margin = None if loss in MARGIN_LOSSES else args.margin
    model, result = train(train_set, weights, "dlib", epochs=args.epochs, margin=margin, learning_rate=learning_rate,
                          log_dir=None, on_epoch=on_epoch, loss=loss)
    seconds = time.perf_counter() - started
    kept = disjoint(model)
    print(f"{tag}: kept {'epoch ' + str(result.best_epoch) if result.improved else 'the start'}; "
          f"disjoint {brief(kept)}; {seconds:.0f} s", file=sys.stderr)
    return {"loss": loss, "seconds": round(seconds, 1), "steps": result.steps,
            "images_per_s": round(result.images_per_second, 1), "disjoint_pairs": int(len(same)),
            "guard_pairs": result.pairs, "improved": result.improved, "best_epoch": result.best_epoch,
            "disjoint_kept_model": kept, "curve": curve, "epoch_loss": result.losses, "epoch_active": result.active,
            "epoch_head_accuracy": result.head_accuracy}


def cli_run(data: Path, tmp: Path, args, learning_rate: float | None) -> dict:
    """`python main.py -t True -e E -m M` on `data` (fresh weights folder: includes the one-time conversion)."""
    tag = f"{data.name}, lr " + ("default" if learning_rate is None else f"{learning_rate:g}")
    out = tmp / f"cli_{data.name}_{learning_rate}"
    command = [sys.executable, "main.py", "-t", "True", "-e", str(args.epochs), "-m", str(args.margin), "--json",
               "--data_dir", str(data), "--database_dir", str(out / "db"), "-wp", str(out / "weights"),
               "--tensorboard_dir", str(out / "logs")]
    command += [] if learning_rate is None else ["-lr", str(learning_rate)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = round(time.perf_counter() - started, 1)
    record = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    print(f"CLI {tag}: exit {done.returncode}, {wall} s, {record}", file=sys.stderr)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
    result = {"command": "python " + " ".join(command[1:]), "exit": done.returncode, "wall_seconds": wall,
              "json": record, "photos": len(list_images(data))}
    if record and record["saved"]:
        query = list_images(next(p for p in sorted(data.iterdir()) if p.is_dir()))[0]
        recognise = [sys.executable, "main.py", "-t", "False", "-wc", "False", "--input", str(query), "--json",
                     "--data_dir", str(data), "--database_dir", str(out / "db"), "-wp", str(out / "weights"),
                     "--output_dir", str(out / "output")]
        done = subprocess.run(recognise, cwd=ROOT, capture_output=True, text=True)
        result["recognise"] = {"exit": done.returncode, "query": query.parent.name,
                               "stdout": done.stdout.strip().splitlines()[:3],
                               "loaded_trained_weights": "loaded trained weights" in done.stderr}
        print(f"recognition with the trained weights: {result['recognise']}", file=sys.stderr)
    return result

if __name__ == "__main__":
    main()
