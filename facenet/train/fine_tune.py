"""`fine_tune`: the whole training contract for library callers and the command line alike.

Photos of data/<person>/ -> chips (cached) -> training (an adapter over the frozen model, or the backbone) -> the
guard (held-out photos must verify better) -> the gallery's trained weights (beside its database, atomically) ->
the gallery rebuilt with them. Trained weights belong to one gallery: training on one folder never changes the
recognition of another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from facenet.config import (
    CACHED_TUNES,
    CHIPS_CACHE_FILE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DETECTOR,
    DEFAULT_EPOCHS,
    DEFAULT_LOSS,
    DEFAULT_MODEL,
    DEFAULT_TUNE,
    DEFAULT_VALIDATION_SPLIT,
    TUNE_MODES,
    default_weights_dir,
)
from facenet.config import learning_rate as default_learning_rate
from facenet.gallery.file import sync_database
from facenet.models.names import model_name
from facenet.models.split import CutError
from facenet.models.trained import (
    WeightsError,
    read_trained,
    save_trained_weights,
    trained_weights_path,
)
from facenet.pipeline import FacePipeline
from facenet.train.cached import CachedOptions, train_cached
from facenet.train.chips import ChipSet, TrainingError, load_chips
from facenet.train.loop import TrainResult, check_settings, train
from facenet.train.step import LossSettings, loss_settings

log = logging.getLogger(__name__)


@dataclass
class FineTuneResult:
    """What `fine_tune` did: the training run, whether weights were saved, which weights the gallery uses now,
    what training started from, and the gallery's state."""

    run: TrainResult
    saved: bool
    weights: str
    """The trained-weights file the gallery uses after the run, or "the pretrained <model> model"."""
    start: str
    """"pretrained" or "trained" (the gallery's own fine-tuned weights were trained further)."""
    gallery: str
    """"rebuilt with the new weights (N people)", "unchanged", or why it was not rebuilt."""
    tune: str
    seconds: float
    chips: int
    people: int


@dataclass(frozen=True)
class _Setup:
    data_dir: Path
    database_dir: Path
    weights_dir: Path
    model: str
    detector: str
    tune: str
    pretrained: bool

    @property
    def trained_path(self) -> Path:
        return trained_weights_path(self.database_dir, self.model)

    @property
    def start(self) -> str:
        return "trained" if not self.pretrained and self.trained_path.exists() else "pretrained"

    @property
    def trained_dir(self) -> Path | None:
        return None if self.pretrained else self.database_dir


def check_tune(tune: str) -> None:
    if tune not in TUNE_MODES:
        raise TrainingError(f"unknown --tune {tune!r}; choose one of {', '.join(TUNE_MODES)}")


def fine_tune(
    data_dir: str | Path = "data",
    database_dir: str | Path = "database",
    *,
    model: str = DEFAULT_MODEL,
    detector: str = DEFAULT_DETECTOR,
    weights_dir: str | Path | None = None,
    tune: str = DEFAULT_TUNE,
    epochs: int = DEFAULT_EPOCHS,
    loss: str = DEFAULT_LOSS,
    margin: float | None = None,
    scale: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float | None = None,
    validation_split: float = DEFAULT_VALIDATION_SPLIT,
    pretrained: bool = False,
    imagenet_weights: str | Path | None = None,
    log_dir: str | Path | None = None,
) -> FineTuneResult:
    """Fine-tune the gallery's embedding on its photos; keep the weights only if held-out photos verify better.

    Starts from the gallery's own trained weights when it has some, else (or with `pretrained`) from the
    pretrained model. `learning_rate` None: the per-model, per-mode default (`config.learning_rate`). Raises
    TrainingError (bad settings, too few photos), WeightsError (an unusable trained-weights file) and OSError
    (the weights could not be saved; the previous ones stay). Ctrl-C: the best validated epoch so far is saved
    when it beat the start, the gallery is left for the next sync to rebuild (`run.interrupted`).
    """
    started = time.monotonic()
    check_tune(tune)
    name = model_name(model)
    settings = loss_settings(loss, margin, scale)
    rate = default_learning_rate(name, tune) if learning_rate is None else learning_rate
    check_settings(epochs, batch_size, rate, validation_split)
    setup = _Setup(Path(data_dir), Path(database_dir), Path(weights_dir or default_weights_dir()), name, detector,
                   tune if name != "resnet50" else "backbone", pretrained)
    pipeline = FacePipeline(detector, name, setup.weights_dir, setup.trained_dir)  # an unusable file: WeightsError
    start = read_trained(setup.trained_path) if setup.start == "trained" else None
    start_cut = start.record.get("cut") if start is not None else None
    if setup.tune == "backbone" and start_cut:
        raise TrainingError(f"cannot train --tune backbone from {setup.trained_path}: its weights were trained with "
                            f"--tune {start_cut}; train with that --tune again, or start over with --pretrained")
    log.info("training the %s of the %s model, starting from the %s weights%s", setup.tune, name, setup.start,
             f" ({setup.trained_path})" if setup.start == "trained" else "")
    chip_set = load_chips(setup.data_dir, pipeline, setup.database_dir / CHIPS_CACHE_FILE)
    log.info("%d chips of %d people from %s", len(chip_set), len(set(chip_set.labels.tolist())), data_dir)
    trained, run = _train(setup, pipeline, chip_set, settings, epochs, batch_size, rate, validation_split,
                          imagenet_weights, log_dir, start.distance_scale if start is not None else 1.0)
    result = FineTuneResult(run, run.improved, _weights_in_use(setup), setup.start, "unchanged", setup.tune, 0.0,
                            len(chip_set), len(chip_set.names))
    if run.improved:
        # an adapter trained over fine-tuned model weights keeps them, in their cut
        backbone = setup.tune != "adapter" or (start is not None and start.model_weights is not None)
        cut = setup.tune if setup.tune in ("top", "top2") else start_cut
        result.weights = str(save_trained_weights(trained, setup.database_dir, name, run.val_after["distance_scale"],
                                                  backbone=backbone, start=setup.start, cut=cut))
        result.gallery = "will be rebuilt by the next run" if run.interrupted else _rebuild(setup)
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _train(setup: _Setup, pipeline: FacePipeline, chip_set: ChipSet, settings: LossSettings, epochs: int,
           batch_size: int, rate: float, validation_split: float, imagenet_weights: str | Path | None,
           log_dir: str | Path | None, start_scale: float) -> tuple[keras.Model, TrainResult]:
    if setup.tune in CACHED_TUNES:
        setup.database_dir.mkdir(parents=True, exist_ok=True)
        options = CachedOptions(tune=setup.tune, epochs=epochs, batch_size=batch_size, learning_rate=rate,
                                validation_split=validation_split, scratch_dir=setup.database_dir,
                                start_scale=start_scale)
        try:
            return train_cached(chip_set, pipeline.embedder.model, setup.model, settings, options, log_dir)
        except CutError as error:
            raise TrainingError(f"cannot train --tune {setup.tune} from {setup.trained_path}: {error}; train with "
                                "that --tune again, or start over with --pretrained") from None
    return train(chip_set, setup.weights_dir, setup.model, imagenet_weights, epochs=epochs, margin=settings.margin,
                 batch_size=batch_size, learning_rate=rate, log_dir=log_dir, validation_split=validation_split,
                 loss=settings.loss, scale=settings.scale, trained_dir=setup.trained_dir)


def _weights_in_use(setup: _Setup) -> str:
    """The weights recognition of this gallery uses when nothing new is saved."""
    if setup.trained_path.exists():
        return str(setup.trained_path)
    return f"the pretrained {setup.model} model" if setup.model != "resnet50" else "the untrained resnet50 model"


def _rebuild(setup: _Setup) -> str:
    """Re-enroll data/ with the saved weights (a fresh float32 model: the fingerprint recognition will see)."""
    try:
        database, _ = sync_database(setup.data_dir, setup.database_dir,
                                    FacePipeline(setup.detector, setup.model, setup.weights_dir, setup.database_dir))
    except (OSError, ValueError, WeightsError) as error:  # the weights are saved; the next run rebuilds the gallery
        log.warning("gallery not rebuilt (%s); the next recognition run rebuilds it", error)
        return "not rebuilt (see the warning above)"
    return f"rebuilt with the new weights ({len(database)} people)"
