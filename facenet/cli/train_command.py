"""`facenet -t True`: train, save the weights only if validation improved, rebuild the database; print the outcome.

The library (`facenet.train`) returns results and raises errors; this module turns them into lines, a JSON record
and an exit code.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from facenet.cli import INTERRUPTED_EXIT
from facenet.cli.console import emit_json
from facenet.cli.console import error as console_error
from facenet.config import CHIPS_CACHE_FILE, LEARNING_RATES
from facenet.model import WeightsError, model_name, save_trained_weights, trained_weights_path
from facenet.pipeline import FacePipeline
from facenet.train import TrainingError, TrainResult, check_settings, load_chips, loss_settings, train
from facenet.train.validation import fmt_metrics
from facenet.zoo import ZooError

log = logging.getLogger(__name__)

_OFF_THRESHOLD = " (some ranked pairs better, but the rescaled threshold lost accuracy: try a lower -lr)"


def _current_weights(weights_dir: str | Path, model: str, imagenet_weights: str | None) -> str:
    """The weights recognition uses when nothing new is saved: trained, else pretrained/ImageNet ('' for none)."""
    trained = trained_weights_path(weights_dir, model)
    if trained.exists():
        return str(trained)
    if model != "resnet50":
        return f"the pretrained {model} model"
    return str(imagenet_weights or "")


def _rebuild_database(data_dir: str | Path, database_dir: str | Path, weights_dir: str | Path, model: str,
                      detector: str) -> str:
    """Re-enroll data/ with the saved weights (a fresh float32 model: the fingerprint recognition will see)."""
    try:
        from facenet.database import sync_database

        database, _ = sync_database(data_dir, database_dir, FacePipeline(detector, model, weights_dir))
    except Exception as error:  # noqa: BLE001 - the weights are saved; recognition rebuilds a stale database
        log.warning("database not rebuilt (%s); the next recognition run rebuilds it", error)
        return "not rebuilt (see the warning above)"
    return f"rebuilt with the new weights ({len(database)} people)"


def _chosen_loss(loss: str | None, strategy: str | None) -> str:
    """--loss, else the older --strategy (an alias of the two triplet losses), else semi_hard."""
    if loss and strategy and strategy != loss:
        log.warning("--strategy %s ignored: --loss %s supersedes it", strategy, loss)
    return loss or strategy or "semi_hard"


def _report(result: TrainResult, weights: str, database: str, seconds: float) -> list[str]:
    lines = [
        f"validation ({result.pairs} pairs, {result.held_out} held-out photos): before "
        f"{fmt_metrics(result.val_before)}; after {fmt_metrics(result.val_after)}"
        + (f" (epoch {result.best_epoch})" if result.improved else ""),
        f"saved {weights} (better than the starting point); database {database}" if result.improved else
        f"not saved: no epoch beat the starting point{_OFF_THRESHOLD if result.off_threshold else ''}; "
        f"recognition keeps using {weights or 'the untrained model'}",
        f"{result.epochs_run} epoch(s), {result.steps} steps ({result.loss} loss), "
        f"{result.images_per_second:.0f} images/s, {seconds} s",
    ]
    if result.run_dir:
        lines.append(f"logs: tensorboard --logdir {result.run_dir}  plots: "
                     + ", ".join(str(p) for p in result.plots))
    if result.interrupted:
        lines.insert(0, f"interrupted after {result.epochs_run} complete epoch(s)")
    return lines


def _train_and_save(data_dir: str, weights_dir: str, database_dir: str, model: str, imagenet_weights: str | None,
                    detector: str, pretrained: bool, **options) -> tuple[TrainResult, str, str]:
    """Load the chips, train, save when better, rebuild the database: (result, weights in use, database status)."""
    pipeline = FacePipeline(detector, model, weights_dir, pretrained)
    chip_set = load_chips(data_dir, pipeline, Path(database_dir) / CHIPS_CACHE_FILE)
    log.info("%d chips of %d people from %s", len(chip_set), len(set(chip_set.labels.tolist())), data_dir)
    trained, result = train(chip_set, weights_dir, pipeline.model, imagenet_weights, pretrained=pretrained, **options)
    weights = _current_weights(weights_dir, pipeline.model, imagenet_weights)
    database = "unchanged"
    if result.improved:
        weights = str(save_trained_weights(trained, weights_dir, pipeline.model, result.val_after["distance_scale"]))
        if result.interrupted:
            database = "will be rebuilt by the next recognition run"
        else:
            database = _rebuild_database(data_dir, database_dir, weights_dir, pipeline.model, detector)
    return result, weights, database


def train_command(
    data_dir: str,
    weights_dir: str,
    database_dir: str,
    model: str,
    imagenet_weights: str | None,
    epochs: int,
    margin: float | None,
    batch_size: int,
    learning_rate: float | None,
    strategy: str | None,
    detector: str,
    log_dir: str,
    validation_split: float,
    as_json: bool,
    pretrained: bool = False,
    loss: str | None = None,
    scale: float | None = None,
) -> int:
    """Train, save only if validation improved, rebuild the database; returns the exit code.

    `loss` (semi_hard, batch_hard, cosface, arcface, sphereface) supersedes the older `strategy`; `margin` and
    `scale` None: the loss's defaults. Exit codes: 0 done (saved or not), 1 unusable weights or saving failed,
    2 cannot train (one line on stderr), 130 interrupted by Ctrl-C (the validated best of the completed epochs
    is saved if it beat the start; the database is left for the next run to rebuild). With `as_json` the last
    stdout line is {val_before, val_after, saved, weights, seconds}.
    """
    started = time.monotonic()
    if learning_rate is None:
        learning_rate = LEARNING_RATES.get(model_name(model), 1e-4)
    try:
        settings = loss_settings(_chosen_loss(loss, strategy), margin, scale)
        check_settings(epochs, batch_size, learning_rate, validation_split)
        result, weights, database = _train_and_save(
            data_dir, weights_dir, database_dir, model, imagenet_weights, detector, pretrained, epochs=epochs,
            margin=settings.margin, batch_size=batch_size, learning_rate=learning_rate, log_dir=log_dir,
            validation_split=validation_split, loss=settings.loss, scale=settings.scale,
        )
    except (WeightsError, ZooError) as error:
        return console_error(str(error), 1)
    except OSError as error:
        return console_error(f"cannot save the trained weights ({error}); the previous weights are unchanged", 1)
    except TrainingError as error:
        return console_error(str(error), 2)
    except KeyboardInterrupt:
        return console_error("nothing saved, the previous weights are unchanged", INTERRUPTED_EXIT, "interrupted")
    seconds = round(time.monotonic() - started, 1)
    lines = _report(result, weights, database, seconds)
    if as_json:
        for line in lines:
            print(line, file=sys.stderr)
        emit_json({"val_before": _rounded(result.val_before), "val_after": _rounded(result.val_after),
                   "saved": result.improved, "weights": weights, "seconds": seconds})
    else:
        print("\n".join(lines))
    return INTERRUPTED_EXIT if result.interrupted else 0


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 4) for key, value in metrics.items()}
