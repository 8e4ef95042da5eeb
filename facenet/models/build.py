"""Building the embedding model of each of MODELS, with a gallery's fine-tuned weights on top when it has some.

An embedder maps aligned RGB chips (values 0..255; one input per chip kind) to unit vectors. `dlib` is dlib's
pretrained face ResNet and `sface` OpenCV Zoo's SFace, each converted once into an exact Keras twin and cached in
the weights folder; `fused` joins both; `resnet50` is Keras' ResNet50 trunk (random init or a local ImageNet
weights file) for training on large data on a GPU. A gallery's fine-tuned weights (an adapter over the frozen
model, or the whole model) live beside its database and apply only where that gallery is named.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
from keras import layers, ops

from facenet.config import (
    CHIP_KINDS,
    CHIP_SIDES,
    CHIP_SIZE,
    DEFAULT_MODEL,
    EMBEDDING_DIM,
    PRETRAINED_FILE,
    RESNET_DAT,
    model_file,
)
from facenet.models.adapter import with_adapter
from facenet.models.cache import cached_conversion, remove_weights_temps
from facenet.models.dlib_resnet import convert
from facenet.models.interrupts import interrupt_after
from facenet.models.names import model_name
from facenet.models.sface import pretrained_sface
from facenet.models.split import fusion_head, tuned_architecture
from facenet.models.trained import WeightsError, read_trained, trained_weights_path

log = logging.getLogger(__name__)

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="facenet")
class CaffePreprocess(layers.Layer):
    """keras.applications' "caffe" preprocessing inside the graph: RGB -> BGR, minus the ImageNet means."""

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=inputs.dtype)


def pretrained_dlib_resnet(weights_dir: str | Path) -> keras.Model:
    """dlib's face ResNet as Keras (raw descriptor), converted once from the installed .dat and cached."""
    return cached_conversion(weights_dir, PRETRAINED_FILE, model_file(RESNET_DAT), convert)


def resnet50_trunk(imagenet_weights: str | Path | None = None) -> keras.Model:
    """Keras ResNet50 (no top) + a 128-d projection; ImageNet weights only from a local file."""
    inputs = keras.Input((CHIP_SIZE, CHIP_SIZE, 3), name="dlib_chip")
    trunk = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(CHIP_SIZE, CHIP_SIZE, 3), pooling="avg"
    )
    if imagenet_weights:
        trunk.load_weights(str(imagenet_weights), skip_mismatch=True)
    x = trunk(CaffePreprocess(name="caffe_preprocess")(inputs))
    outputs = layers.Dense(EMBEDDING_DIM, name="descriptor")(x)
    return keras.Model(inputs, outputs, name="resnet50")


def _chip_input(kind: str) -> keras.KerasTensor:
    side = CHIP_SIDES[kind]
    return keras.Input((side, side, 3), name=f"{kind}_chip")


def _raw_branch(kind_model: str, weights_dir: str | Path, imagenet_weights: str | Path | None) -> keras.Model:
    if kind_model == "dlib":
        return pretrained_dlib_resnet(weights_dir)
    if kind_model == "sface":
        return pretrained_sface(weights_dir)
    return resnet50_trunk(imagenet_weights)


def pretrained_embedder(
    model: str = DEFAULT_MODEL, weights_dir: str | Path = "weights", imagenet_weights: str | Path | None = None
) -> keras.Model:
    """Aligned chips (one input per CHIP_KINDS[model], RGB 0..255) -> unit vectors, with pretrained weights.

    `fused` concatenates the dlib and SFace unit vectors (SFace scaled by FUSION_SFACE_WEIGHT) and re-normalises.
    """
    model = model_name(model)
    if model == "fused":
        dlib_in, sface_in = _chip_input("dlib"), _chip_input("sface")
        raw = {"dlib": _raw_branch("dlib", weights_dir, None)(dlib_in),
               "sface": _raw_branch("sface", weights_dir, None)(sface_in)}
        return keras.Model([dlib_in, sface_in], fusion_head(raw), name="fused_embedder")
    inputs = _chip_input(CHIP_KINDS[model][0])
    raw = _raw_branch(model, weights_dir, imagenet_weights)
    return keras.Model(inputs, fusion_head({model: raw(inputs)}), name=f"{model}_embedder")


@interrupt_after()  # TensorFlow may crash on a KeyboardInterrupt raised inside a model build
def build_embedder(
    model: str = DEFAULT_MODEL,
    weights_dir: str | Path = "weights",
    trained_dir: str | Path | None = None,
    imagenet_weights: str | Path | None = None,
) -> keras.Model:
    """The embedding model of `model` (see `pretrained_embedder`), with the fine-tuned weights of the gallery in
    `trained_dir` on top when it has some (None: the pretrained model). A corrupt or mismatched trained-weights file
    raises WeightsError: recognition must not fall back silently to other weights than the user trained."""
    remove_weights_temps(weights_dir)
    embedder = pretrained_embedder(model, weights_dir, imagenet_weights)
    path = None if trained_dir is None else trained_weights_path(trained_dir, model)
    if path is None or not path.exists():
        return embedder
    trained = read_trained(path)
    if trained.record.get("cut"):
        embedder = tuned_architecture(embedder, trained.record["cut"])
    if trained.model_weights is not None:
        if [a.shape for a in trained.model_weights] != [w.shape for w in embedder.get_weights()]:
            raise WeightsError(f"{path}: weights of another architecture; delete the file or pass --pretrained")
        embedder.set_weights(trained.model_weights)
    if trained.adapter_weights is not None:
        try:
            embedder = with_adapter(embedder, trained.record["adapter_hidden"], trained.adapter_weights)
        except (ValueError, KeyError) as error:
            raise WeightsError(f"{path}: unusable adapter ({error}); delete the file or pass --pretrained") from None
    log.info("loaded trained weights %s", path)
    return embedder


