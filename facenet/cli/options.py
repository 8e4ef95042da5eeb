"""One typed options object per command, built from the parsed flags: what `facenet <command>` passes to its
*_command function (each field is a keyword argument of that function; `arguments()` gives them).

Light on purpose (no OpenCV, no TensorFlow): the options are built before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from facenet.settings import KEEP_DAYS, KEEP_FACES


class FlagView(Protocol):
    """What the builders read: absl's FlagValues (attribute per flag, `values[name].present`)."""

    def __getattr__(self, name: str) -> Any: ...

    def __getitem__(self, name: str) -> Any: ...


@dataclass(frozen=True)
class LiveOptions:
    """The flags of live cameras, tracking and events (--track, --events, --mqtt_url, --webhook, --max_frames,
    --collect_unknowns)."""

    track: bool | None = None
    events: str | None = None
    mqtt_url: str | None = None
    webhook: str | None = None
    max_frames: int = 0
    collect_unknowns: bool | None = None

    def collecting(self, live: bool) -> bool:
        """--collect_unknowns as given; by default on for the webcam and live cameras, off for photos and videos."""
        return live if self.collect_unknowns is None else self.collect_unknowns

    def tracking(self, live: bool) -> bool:
        """--track as given; by default on for live cameras and whenever events or unknown faces are asked for, off
        for files."""
        if self.track is not None:
            return self.track
        return live or bool(self.events or self.mqtt_url or self.webhook or self.collect_unknowns)


@dataclass(frozen=True)
class FrigateOptions:
    """The flags of `facenet frigate` and `serve --frigate_url` (--frigate_url, --frigate_mqtt_url,
    --frigate_topic_prefix, --frigate_cameras, --frigate_attempts)."""

    url: str | None = None
    mqtt_url: str | None = None
    """Frigate's broker as given; None: the events' --mqtt_url, else port 1883 of Frigate's host (the command's)."""
    topic_prefix: str = "frigate"
    cameras: tuple[str, ...] | None = None
    attempts: int = 5


class CommandOptions:
    """Base of the options objects: `arguments()` are the keyword arguments of the command's function."""

    def arguments(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class RecognitionOptions(CommandOptions):
    """What every command that names faces takes (recognize, serve, frigate): the gallery, the model, the decision,
    the outputs, the live settings and how long strangers' faces are kept."""

    data_dir: str
    database_dir: str
    database_url: str | None
    weights_dir: str
    model: str
    detector: str
    threshold: float | None
    pretrained: bool
    output_dir: str
    as_json: bool
    live: LiveOptions = field(default_factory=LiveOptions)
    unknown_days: float = KEEP_DAYS
    unknown_faces: int = KEEP_FACES


@dataclass(frozen=True, kw_only=True)
class RecognizeOptions(RecognitionOptions):
    """`facenet recognize` (= `-t False`): name the faces of --input or the webcam (-wc True)."""

    web_cam: bool
    inputs: list[str]
    camera: int

    def arguments(self) -> dict[str, Any]:
        return {**super().arguments(), "enroll_only": False}


@dataclass(frozen=True)
class EnrollOptions(CommandOptions):
    """`facenet enroll` (= `--enroll`): only sync the gallery with --data_dir and print the report."""

    data_dir: str
    database_dir: str
    database_url: str | None
    rebuild_gallery: bool
    weights_dir: str
    model: str
    detector: str
    pretrained: bool
    as_json: bool

    def arguments(self) -> dict[str, Any]:
        """recognize_command's arguments for an enrollment only (no inputs, no camera, no output)."""
        return {**super().arguments(), "enroll_only": True, "web_cam": False, "inputs": [], "camera": 0,
                "output_dir": "output", "threshold": None}


@dataclass(frozen=True)
class VerifyOptions(CommandOptions):
    """`facenet verify A.jpg B.jpg` (= `--verify=A.jpg,B.jpg`): same person or not."""

    paths: list[str]
    threshold: float | None
    detector: str
    model: str
    weights_dir: str
    trained_dir: str | None
    as_json: bool
    prog: str


@dataclass(frozen=True)
class TrainOptions(CommandOptions):
    """`facenet train` (= `-t True`): fine-tune on --data_dir, keep the weights only if validation improved."""

    data_dir: str
    database_dir: str
    weights_dir: str
    model: str
    detector: str
    imagenet_weights: str | None
    epochs: int
    batch_size: int
    learning_rate: float | None
    validation_split: float
    loss: str | None
    strategy: str | None
    margin: float | None
    scale: float | None
    tune: str
    log_dir: str
    pretrained: bool
    as_json: bool


@dataclass(frozen=True)
class LfwOptions(CommandOptions):
    """`facenet lfw` (= `--lfw_pairs P --lfw_dir D`): the LFW-protocol benchmark."""

    pairs: str
    lfw_dir: str | None
    train_pairs: str | None
    flip: bool
    roc_png: str | None
    detector: str
    model: str
    weights_dir: str
    trained_dir: str | None
    as_json: bool


@dataclass(frozen=True, kw_only=True)
class ServeOptions(RecognitionOptions):
    """`facenet serve` (= `--serve`): the REST service and web page, with live cameras from --input."""

    host: str
    port: int
    key_file: str | None
    max_upload_mb: float
    cameras: list[str]
    frigate: FrigateOptions = field(default_factory=FrigateOptions)


@dataclass(frozen=True, kw_only=True)
class FrigateCommandOptions(RecognitionOptions):
    """`facenet frigate`: recognise the people of Frigate's person events, write their names back, publish events."""

    frigate: FrigateOptions


@dataclass(frozen=True)
class UnknownsOptions(CommandOptions):
    """`facenet unknowns`: list the groups of unknown faces, or name (--name ID=NAME), ignore or forget one."""

    data_dir: str
    database_dir: str
    database_url: str | None
    name: str | None
    ignore: str | None
    forget: str | None
    weights_dir: str
    model: str
    detector: str
    pretrained: bool
    as_json: bool
    not_person: str | None = None
    unknown_days: float = KEEP_DAYS
    unknown_faces: int = KEEP_FACES


Options = (UnknownsOptions | RecognizeOptions | EnrollOptions | VerifyOptions | TrainOptions | LfwOptions | ServeOptions
           | FrigateCommandOptions)


# --- built from the parsed flags -----------------------------------------------------------------------------------

def chosen_model(values: FlagView) -> str:
    """The embedding model: --model, unless the older --backbone resnet50 asks for the trainable trunk."""
    return "resnet50" if values.backbone == "resnet50" else values.model


def trained_dir(values: FlagView) -> str | None:
    """Whose fine-tuned weights recognition, verify and lfw use: the gallery's (--database_dir), unless --pretrained."""
    return None if values.pretrained else values.database_dir


def serve_cameras(values: FlagView) -> list[str]:
    """The live cameras of `serve --input …` (--input's default, the example photos, is not one)."""
    return list(values.input or []) if values["input"].present else []


def _recognition(values: FlagView, max_frames: int = 0) -> dict[str, Any]:
    """The RecognitionOptions fields from the flags (`max_frames`: recognize's --max_frames; the others run on)."""
    return dict(
        data_dir=values.data_dir, database_dir=values.database_dir, database_url=values.database_url,
        weights_dir=values.weights_path, model=chosen_model(values), detector=values.detector,
        threshold=values.threshold, pretrained=values.pretrained, output_dir=values.output_dir, as_json=values.json,
        live=LiveOptions(values.track, values.events, values.mqtt_url, values.webhook, max_frames,
                         values.collect_unknowns),
        unknown_days=values.unknown_days, unknown_faces=values.unknown_faces,
    )


def _frigate(values: FlagView) -> FrigateOptions:
    cameras = tuple(values.frigate_cameras) if values.frigate_cameras else None
    return FrigateOptions(values.frigate_url, values.frigate_mqtt_url, values.frigate_topic_prefix, cameras,
                          values.frigate_attempts)


def recognize_options(values: FlagView, _paths: list[str], _prog: str) -> RecognizeOptions:
    return RecognizeOptions(web_cam=values.web_cam, inputs=list(values.input or []), camera=values.camera,
                            **_recognition(values, values.max_frames))


def enroll_options(values: FlagView, _paths: list[str], _prog: str) -> EnrollOptions:
    return EnrollOptions(
        data_dir=values.data_dir, database_dir=values.database_dir, database_url=values.database_url,
        rebuild_gallery=values.rebuild_gallery, weights_dir=values.weights_path, model=chosen_model(values),
        detector=values.detector, pretrained=values.pretrained, as_json=values.json,
    )


def verify_options(values: FlagView, paths: list[str], prog: str) -> VerifyOptions:
    """`paths`: the photos (`verify A B`'s arguments, or --verify's two)."""
    return VerifyOptions(
        paths=list(paths), threshold=values.threshold, detector=values.detector, model=chosen_model(values),
        weights_dir=values.weights_path, trained_dir=trained_dir(values), as_json=values.json, prog=prog,
    )


def train_options(values: FlagView, _paths: list[str], _prog: str) -> TrainOptions:
    """-m (None unless given), --loss and --strategy pass on only when given: each loss has its own defaults."""
    return TrainOptions(
        data_dir=values.data_dir, database_dir=values.database_dir, weights_dir=values.weights_path,
        model=chosen_model(values), detector=values.detector, imagenet_weights=values.imagenet_weights,
        epochs=values.epochs, batch_size=values.batch_size, learning_rate=values.learning_rate,
        validation_split=values.validation_split, loss=values.loss if values["loss"].present else None,
        strategy=values.strategy if values["strategy"].present else None, margin=values.margin,
        scale=values.scale, tune=values.tune, log_dir=values.tensorboard_dir, pretrained=values.pretrained,
        as_json=values.json,
    )


def lfw_options(values: FlagView, _paths: list[str], _prog: str) -> LfwOptions:
    return LfwOptions(
        pairs=values.lfw_pairs, lfw_dir=values.lfw_dir, train_pairs=values.lfw_train_pairs, flip=values.flip,
        roc_png=values.roc_png, detector=values.detector, model=chosen_model(values),
        weights_dir=values.weights_path, trained_dir=trained_dir(values), as_json=values.json,
    )


def serve_options(values: FlagView, _paths: list[str], _prog: str) -> ServeOptions:
    return ServeOptions(host=values.host, port=values.port, key_file=values.api_key_file,
                        max_upload_mb=values.max_upload_mb, cameras=serve_cameras(values), frigate=_frigate(values),
                        **_recognition(values))


def frigate_options(values: FlagView, _paths: list[str], _prog: str) -> FrigateCommandOptions:
    return FrigateCommandOptions(frigate=_frigate(values), **_recognition(values))


def unknowns_options(values: FlagView, _paths: list[str], _prog: str) -> UnknownsOptions:
    return UnknownsOptions(
        data_dir=values.data_dir, database_dir=values.database_dir, database_url=values.database_url,
        name=values.name, ignore=values.ignore, forget=values.forget, weights_dir=values.weights_path,
        model=chosen_model(values), detector=values.detector, pretrained=values.pretrained, as_json=values.json,
        not_person=values.not_person, unknown_days=values.unknown_days, unknown_faces=values.unknown_faces,
    )
