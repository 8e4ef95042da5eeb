"""Fine-tuning the embedder on data/<person>/ photos, guarded by validation on held-out photos.

Stages, each a module so that tests and benchmarks can drive them one by one:

- `chips`: `load_chips` (detect once, cache the aligned chips, read them back as memory maps);
- `validation`: `split_validation` (hold out photos per person), `validation_pairs` (sampled, capped),
  `verification_metrics` and the guard `is_better`;
- `batches`: `pk_batches` (P identities x K photos);
- `augment`: `augment_chip` and `make_dataset` (tf.data reading each batch's chips from the memory maps);
- `step`: the loss settings, the triplet step `make_train_step`, the margin-loss step, devices and precision;
- `keep`: the keep loss the cached tunes add (each view held near where the run started it);
- `logs`: TensorBoard scalars, PCA and t-SNE plots before and after;
- `loop`: `train` (epochs, validation after each, the best weights kept in memory).

The command that saves the weights and rebuilds the database is `facenet.cli.train_command.train_command`.
"""

from facenet.config import CHIPS_CACHE_FILE, LOSSES
from facenet.train.augment import augment_chip, make_dataset
from facenet.train.batches import pk_batches
from facenet.train.chips import ChipSet, TrainingError, load_chips, scan_people
from facenet.train.logs import TrainingLogs
from facenet.train.loop import TrainResult, check_settings, train
from facenet.train.step import (
    TRIPLET_MARGIN,
    LossSettings,
    device_setup,
    freeze_batch_norm,
    loss_settings,
    make_step,
    make_train_step,
)
from facenet.train.validation import (
    MAX_VALIDATION_PAIRS,
    Validator,
    embed_rows,
    split_validation,
    validation_pairs,
    verification_metrics,
)

__all__ = [
    "CHIPS_CACHE_FILE",
    "LOSSES",
    "MAX_VALIDATION_PAIRS",
    "TRIPLET_MARGIN",
    "ChipSet",
    "LossSettings",
    "TrainResult",
    "TrainingError",
    "TrainingLogs",
    "Validator",
    "augment_chip",
    "check_settings",
    "device_setup",
    "embed_rows",
    "freeze_batch_norm",
    "load_chips",
    "loss_settings",
    "make_dataset",
    "make_step",
    "make_train_step",
    "pk_batches",
    "scan_people",
    "split_validation",
    "train",
    "validation_pairs",
    "verification_metrics",
]

