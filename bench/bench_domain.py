"""Does fine-tuning help on the user's own camera? Train on a camera domain, judge on other people of that domain.

    python bench/bench_domain.py [--lfw_dir ../shared/faces/lfw_dev] [--model fused] [--loss semi_hard]
                                 [-e 20] [-m 0.5] [--people 120] [--json]

The "cheap camera" domain: every lfw_dev photo made grayscale, shrunk to 80 px and blown back up (faces ~34 px of
detail), saved as JPEG quality 35 (cached in bench/results/domain/). Training: `facenet.train.train` (the code
behind `python main.py -t True`, with its validation guard) on the domain photos of up to `--people` LFW DevTrain
people with >= 4 photos. Judged, before and after, on people the training never saw: LFW DevTest pairs in the
domain and the clean DevTest pairs (10-fold cross-validated accuracy, AUC; the LFW command's face choice). DevTrain
and DevTest people are disjoint in LFW View 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facenet.embed import Embedder  # noqa: E402
from facenet.lfw import embed_images, pair_distances, parse_pairs, within_set_folds  # noqa: E402
from facenet.metrics import auc, kfold_accuracy  # noqa: E402
from facenet.pipeline import FacePipeline  # noqa: E402

LFW_DEV = ROOT.parent / "shared" / "faces" / "lfw_dev"
DOMAIN = ROOT / "bench" / "results" / "domain"


def cheap_camera(photo: Path) -> bytes:
    """Grayscale, 80 px and back, JPEG quality 35: a low-resolution, heavily compressed grey camera."""
    with Image.open(photo) as image:
        grey = image.convert("L")
        small = grey.resize((80, 80 * grey.height // grey.width), Image.BILINEAR)
        back = small.resize(grey.size, Image.BILINEAR)
    out = io.BytesIO()
    back.save(out, format="JPEG", quality=35)
    return out.getvalue()


def make_domain(lfw_dir: Path, root: Path = DOMAIN) -> Path:
    """The domain copy of every lfw_dev photo (same layout), made once."""
    for photo in sorted(lfw_dir.rglob("*.jpg")):
        target = root / photo.relative_to(lfw_dir)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(cheap_camera(photo))
    return root


def training_folder(domain: Path, lfw_dir: Path, people: int, workdir: Path) -> Path:
    """data/<person>/ links to the domain photos of DevTrain people with >= 4 photos (at most `people`)."""
    pairs, _, _ = parse_pairs(lfw_dir / "pairsDevTrain.txt", lfw_dir)
    names = sorted({p.parent.name for pair in pairs for p in (pair.a, pair.b)})
    chosen = [n for n in names if len(list((domain / n).glob("*.jpg"))) >= 4][:people]
    data = workdir / "data"
    for name in chosen:
        (data / name).mkdir(parents=True)
        for photo in sorted((domain / name).glob("*.jpg")):
            (data / name / photo.name).symlink_to(photo)
    return data


def verification(pipeline: FacePipeline, root: Path, lfw_dir: Path) -> dict:
    """10-fold CV accuracy and AUC of the DevTest pairs with images under `root`."""
    pairs, _, _ = parse_pairs(lfw_dir / "pairsDevTest.txt", root)
    paths = list(dict.fromkeys(p for pair in pairs for p in (pair.a, pair.b)))
    found = embed_images(paths, pipeline)
    distances, same, _ = pair_distances(pairs, found)
    folds = within_set_folds(pairs)
    return {"accuracy": kfold_accuracy(distances, same, folds).accuracy, "auc": auc(distances, same)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw_dir", type=Path, default=LFW_DEV)
    parser.add_argument("--model", default="fused")
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--loss", default="semi_hard")
    parser.add_argument("-e", "--epochs", type=int, default=20)
    parser.add_argument("-m", "--margin", type=float, default=None)
    parser.add_argument("-lr", "--learning_rate", type=float, default=None)
    parser.add_argument("--people", type=int, default=120)
    parser.add_argument("--weights_dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from facenet.config import LEARNING_RATES
    from facenet.train import load_chips, train

    domain = make_domain(args.lfw_dir)
    pipeline = FacePipeline(args.detector, args.model, args.weights_dir, pretrained=True)
    results: dict = {"model": args.model, "loss": args.loss, "epochs": args.epochs}
    results["before"] = {"domain": verification(pipeline, domain, args.lfw_dir),
                         "clean": verification(pipeline, args.lfw_dir, args.lfw_dir)}
    print(f"before: {results['before']}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        data = training_folder(domain, args.lfw_dir, args.people, Path(tmp))
        chips = load_chips(data, pipeline, Path(tmp) / "chips.npz")
        results["training"] = {"people": len(chips.names), "photos": len(chips)}
        start = time.perf_counter()
        margin = {} if args.margin is None else {"margin": args.margin}
        model, run = train(chips, Path(tmp) / "weights", args.model, epochs=args.epochs, loss=args.loss,
                           learning_rate=args.learning_rate or LEARNING_RATES[args.model], pretrained=True,
                           log_dir=None, **margin)
        results["training"].update(seconds=round(time.perf_counter() - start, 1), improved=run.improved,
                                   best_epoch=run.best_epoch, val_before=run.val_before, val_after=run.val_after)
    trained = FacePipeline(pipeline.detector, Embedder(model, args.model))
    results["after"] = {"domain": verification(trained, domain, args.lfw_dir),
                        "clean": verification(trained, args.lfw_dir, args.lfw_dir)}
    gain = results["after"]["domain"]["accuracy"] - results["before"]["domain"]["accuracy"]
    loss = results["before"]["clean"]["accuracy"] - results["after"]["clean"]["accuracy"]
    results["domain_gain_points"], results["clean_loss_points"] = round(100 * gain, 2), round(100 * loss, 2)
    if args.json:
        print(json.dumps(results))
    else:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
