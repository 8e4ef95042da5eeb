"""`facenet -t True`: train, save the weights only if validation improved, rebuild the database; print the outcome.

The library (`facenet.train`) returns results and raises errors; this module turns them into lines, a JSON record
and an exit code.
"""

from __future__ import annotations

import logging
import sys

from facenet.cli.console import emit_json
from facenet.cli.console import error as console_error
from facenet.cli.exit_codes import Exit
from facenet.config import DEFAULT_LOSS, DEFAULT_TUNE
from facenet.models.trained import WeightsError
from facenet.models.zoo import ZooError
from facenet.train import TrainingError
from facenet.train.fine_tune import FineTuneResult, fine_tune
from facenet.train.validation import GAIN_CONFIDENCE, GAIN_DRAWS, GUARD_PEOPLE, GUARD_STRONG_PEOPLE, fmt_metrics

log = logging.getLogger(__name__)

_OFF_THRESHOLD = (" (some ranked pairs better, but at the rescaled thresholds it lost accuracy or named more held-out"
                  " people as someone else: try a lower -lr)")


def chosen_loss(loss: str | None, strategy: str | None) -> str:
    """--loss, else the older --strategy (an alias of the two triplet losses), else semi_hard."""
    if loss and strategy and strategy != loss:
        log.warning("--strategy %s ignored: --loss %s supersedes it", strategy, loss)
    return loss or strategy or DEFAULT_LOSS


def _guard_line(done: FineTuneResult) -> str:
    """What the guard compared, in words, with its figures before and after."""
    run = done.run
    after = f"after (epoch {run.best_epoch}) " if run.improved else "after (best epoch) " if run.epochs_run else ""
    whose = (f"{run.held_people} held-out people never trained on" if run.by_person else
             f"{run.held_people} of the {done.people} people (held-out photos, never trained on)")
    return (f"guard: {run.pairs} verification pairs of {run.held_out} photos of {whose}; before "
            f"{fmt_metrics(run.val_before)}; {after}{fmt_metrics(run.val_after)}")


def verdict(done: FineTuneResult) -> str:
    """The one line a user reads: helped or not, on whom, with labelled figures, and what happened to the gallery."""
    run = done.run
    before, after = run.val_before, run.val_after
    who = (f"{run.held_out} photos of {run.held_people} held-out people" if run.by_person else
           f"{run.held_out} held-out photos")
    figures = (f"accuracy on {who}: {100 * before['accuracy']:.1f}% -> {100 * after['accuracy']:.1f}% "
               f"(AUC {before['auc']:.4f} -> {after['auc']:.4f})")
    if "strangers_rejected" in before and "strangers_rejected" in after:
        figures += (f", held-out photos rejected as strangers by the other held-out people "
                    f"{100 * before['strangers_rejected']:.1f}% -> {100 * after['strangers_rejected']:.1f}%")
    outcome = (f"helped: {figures}; saved, gallery {done.gallery}" if done.saved else
               f"did not help: {figures}; nothing saved{_OFF_THRESHOLD if run.off_threshold else ''}")
    if run.gain_share is not None:
        outcome += (f"; the AUC gain held in {100 * run.gain_share:.0f}% of {GAIN_DRAWS} resamples of the held-out "
                    f"people" + ("" if done.saved else f" (under {100 * GAIN_CONFIDENCE:.0f}%: within chance)"))
    return f"verdict: {outcome}{_weak(run)}"


def _weak(run) -> str:
    """Why the verdict is weak, if it is: photos of trained people, or too few new people."""
    needed = round(GUARD_STRONG_PEOPLE / max(run.split, 0.01))
    if not run.by_person:
        return (f" (a weak verdict: it measured photos of people it trained on, not new people; with about "
                f"{round(GUARD_PEOPLE / max(run.split, 0.01))}+ people of 2+ photos it holds out whole people, "
                f"with {needed}+ its verdict is reliable)")
    if run.held_people < GUARD_STRONG_PEOPLE:
        return (f" (a weak verdict: {run.held_people} held-out people; {GUARD_STRONG_PEOPLE}+ make it reliable, "
                f"i.e. about {needed} people of 2+ photos)")
    return ""


def _report(done: FineTuneResult) -> list[str]:
    run = done.run
    lines = [
        f"trained the {done.tune} of the model, starting from the {done.start} weights, on {done.chips} photos",
        _guard_line(done),
        f"saved {done.weights}" if done.saved else f"recognition keeps using {done.weights}",
        f"{run.epochs_run} epoch(s), {run.steps} steps ({run.loss} loss), {run.images_per_second:.0f} images/s, "
        f"{done.seconds} s" + (f" ({run.embed_seconds:.0f} s of it the one-off pass, {run.feature_megabytes:.0f} MB "
                                "of features)" if run.embed_seconds else ""),
    ]
    if run.run_dir:
        lines.append(f"logs: tensorboard --logdir {run.run_dir}  plots: " + ", ".join(str(p) for p in run.plots))
    if run.interrupted:
        lines.insert(0, f"interrupted after {run.epochs_run} complete epoch(s)")
    return [*lines, verdict(done)]


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
    tune: str = DEFAULT_TUNE,
) -> int:
    """`facenet.fine_tune` (train, save only if validation improved, rebuild the gallery); returns the exit code.

    `loss` (semi_hard, batch_hard, cosface, arcface, sphereface) supersedes the older `strategy`; `margin` and
    `scale` None: the loss's defaults. Exit codes: 0 done (saved or not), 1 unusable weights or saving failed,
    2 cannot train (one line on stderr), 130 interrupted by Ctrl-C (the validated best of the completed epochs
    is saved if it beat the start; the gallery is left for the next run to rebuild). With `as_json` the last
    stdout line is {val_before, val_after, saved, weights, seconds, start, tune}.
    """
    try:
        done = fine_tune(
            data_dir, database_dir, model=model, detector=detector, weights_dir=weights_dir, tune=tune,
            epochs=epochs, loss=chosen_loss(loss, strategy), margin=margin, scale=scale, batch_size=batch_size,
            learning_rate=learning_rate, validation_split=validation_split, pretrained=pretrained,
            imagenet_weights=imagenet_weights, log_dir=log_dir,
        )
    except (WeightsError, ZooError) as error:
        return console_error(str(error), Exit.FAILED)
    except OSError as error:
        return console_error(f"cannot save the trained weights ({error}); the previous weights are unchanged",
                             Exit.FAILED)
    except TrainingError as error:
        return console_error(str(error), Exit.USAGE)
    except KeyboardInterrupt:
        return console_error("nothing saved, the previous weights are unchanged", Exit.INTERRUPTED, "interrupted")
    lines = _report(done)
    if as_json:
        for line in lines:
            print(line, file=sys.stderr)
        emit_json({"val_before": _rounded(done.run.val_before), "val_after": _rounded(done.run.val_after),
                   "saved": done.saved, "weights": done.weights, "seconds": done.seconds, "start": done.start,
                   "tune": done.tune})
    else:
        print("\n".join(lines))
    return Exit.INTERRUPTED if done.run.interrupted else Exit.OK


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 4) for key, value in metrics.items()}
