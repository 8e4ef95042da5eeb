"""Building embedders, the converted-weights cache, the one-file trained weights (and their distance scale),
fingerprints and model ids, atomic writes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from facenet.config import CHIP_KINDS, PRETRAINED_FILE
from facenet.files import atomic_write
from facenet.models.build import build_embedder
from facenet.models.cache import fingerprint
from facenet.models.embed import Embedder, load_embedder
from facenet.models.names import model_name
from facenet.models.trained import (
    TRAINED_FORMAT,
    WeightsError,
    distance_scale,
    read_trained,
    save_trained_weights,
    trained_checksum,
    trained_weights_path,
)

CHIPS = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3)).astype(np.float32)


@pytest.fixture
def folder(weights_dir, tmp_path, embedder):
    """A private weights folder holding the converted pretrained model (`embedder` made sure it exists)."""
    folder = tmp_path / "w"
    shutil.copytree(weights_dir, folder)
    return folder


def named_after(name: str, kind: str) -> bool:
    """A keras input named after its chip kind ("dlib" or "dlib_chip")."""
    return name in (kind, f"{kind}_chip")


def descriptor(model):
    """The last dense layer of the dlib twin, inside the embedder."""
    return model.get_layer("dlib_resnet").get_layer("descriptor").kernel


def test_cache_is_reused_and_rebuilt_when_corrupt(folder, caplog):
    cache = folder / PRETRAINED_FILE
    assert cache.exists(), "the session embedder converted and cached the model"
    before = cache.stat().st_mtime_ns
    reference = build_embedder("dlib", folder)(CHIPS).numpy()
    assert cache.stat().st_mtime_ns == before  # loaded, not converted again
    cache.write_bytes(b"not a keras file")
    rebuilt = build_embedder("dlib", folder)
    assert "stale or corrupt" in caplog.text
    np.testing.assert_allclose(rebuilt(CHIPS).numpy(), reference, atol=1e-6)
    assert cache.stat().st_size > 10_000_000


def test_model_names_and_the_old_backbone_alias(tmp_path):
    assert model_name("dlib_resnet") == "dlib" and model_name("fused") == "fused"
    assert trained_weights_path(tmp_path, "dlib_resnet") == tmp_path / "dlib_trained.weights.npz"
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        model_name("vgg")


def test_the_keras_input_is_named_after_the_chip_kind(embedder):
    (only,) = embedder.model.inputs
    assert named_after(only.name, "dlib"), only.name
    assert (embedder.name, embedder.kinds, embedder.dim) == ("dlib", CHIP_KINDS["dlib"], 128)
    assert embedder.model_id == f"dlib:{fingerprint(embedder.model)}" and len(embedder.fingerprint) == 16
    vectors = embedder.embed({"dlib": CHIPS.astype(np.uint8)})
    assert vectors.shape == (2, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed({"dlib": np.zeros((0, 150, 150, 3), np.uint8)}).shape == (0, 128)
    # the name comes from the keras model's own name when not given
    assert Embedder(embedder.model).name == "dlib"


def test_trained_weights_win_and_live_in_one_file(folder):
    before = set(folder.iterdir())
    model = build_embedder("dlib", folder, folder)
    pretrained_print = fingerprint(model)
    kernel = descriptor(model)
    kernel.assign(kernel.numpy() * -1.0)
    path = save_trained_weights(model, folder, "dlib", distance_scale=1.5)
    assert path == trained_weights_path(folder, "dlib") == folder / "dlib_trained.weights.npz"
    assert set(folder.iterdir()) - before == {path}, "one file: weights and distance scale together, no temp file"
    trained = read_trained(path)
    arrays = trained.model_weights
    assert trained.record == {"format": TRAINED_FORMAT, "model": "dlib", "fingerprint": fingerprint(model),
                              "distance_scale": 1.5, "backbone": True, "start": "pretrained", "adapter_hidden": None,
                              "cut": None,
                              "checksum": trained_checksum(trained.record, arrays)}
    assert [a.shape for a in arrays] == [w.shape for w in model.get_weights()]
    assert trained.adapter_weights is None
    reloaded = build_embedder("dlib", folder, folder)
    assert fingerprint(reloaded) == fingerprint(model) != pretrained_print
    np.testing.assert_allclose(reloaded(CHIPS).numpy(), model(CHIPS).numpy(), atol=1e-6)
    assert fingerprint(build_embedder("dlib", folder)) == pretrained_print
    loaded = load_embedder("dlib", folder, folder)
    assert loaded.fingerprint == fingerprint(model) and loaded.distance_scale == 1.5
    pretrained = load_embedder("dlib", folder)
    assert pretrained.fingerprint == pretrained_print and pretrained.distance_scale == 1.0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_trained_weights_raise_naming_the_file(folder, damage):
    model = build_embedder("dlib", folder, folder)
    pretrained_print = fingerprint(model)
    path = save_trained_weights(model, folder, "dlib", distance_scale=1.2)
    if damage == "garbage":
        path.write_bytes(b"\x89HDF garbage")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"")
    for load in (lambda: build_embedder("dlib", folder, folder), lambda: load_embedder("dlib", folder, folder),
                 lambda: distance_scale(folder, "dlib"), lambda: read_trained(path)):
        with pytest.raises(WeightsError, match="unusable trained weights") as error:
            load()
        message = str(error.value)
        assert str(path) in message and "--pretrained" in message and "\n" not in message
    assert isinstance(error.value, ValueError)  # the commands' ValueError handlers turn it into one line
    # --pretrained (no gallery named) ignores the file altogether
    assert fingerprint(build_embedder("dlib", folder)) == pretrained_print
    pretrained = load_embedder("dlib", folder)
    assert pretrained.fingerprint == pretrained_print and pretrained.distance_scale == 1.0
    assert distance_scale(None, "dlib") == 1.0


def write_npz(path, record: dict | None, **arrays) -> None:
    extra = {} if record is None else {"record": np.frombuffer(json.dumps(record).encode(), np.uint8)}
    with open(path, "wb") as handle:
        np.savez(handle, **extra, **arrays)


@pytest.mark.parametrize(("record", "says"), [
    (None, "record"),
    ({"format": "something else", "distance_scale": 1.0}, "format"),
    ({"format": TRAINED_FORMAT, "distance_scale": 0.0}, "invalid distance scale"),
    ({"format": TRAINED_FORMAT, "distance_scale": float("inf")}, "invalid distance scale"),
    ({"format": TRAINED_FORMAT}, "distance_scale"),
])
def test_trained_file_with_a_bad_record_is_refused(tmp_path, record, says):
    path = tmp_path / "dlib_trained.weights.npz"
    write_npz(path, record, w0000=np.zeros(3, np.float32))
    with pytest.raises(WeightsError, match=says) as error:
        read_trained(path)
    assert str(path) in str(error.value)


def test_trained_weights_of_another_architecture_are_refused(folder):
    path = trained_weights_path(folder, "dlib")
    record = {"format": TRAINED_FORMAT, "model": "dlib", "fingerprint": "x", "distance_scale": 1.0}
    write_npz(path, {**record, "checksum": trained_checksum(record, [np.zeros(3, np.float32)])},
              w0000=np.zeros(3, np.float32))
    with pytest.raises(WeightsError, match="another architecture") as error:
        build_embedder("dlib", folder, folder)
    assert str(path) in str(error.value)
    assert load_embedder("dlib", folder).distance_scale == 1.0


def test_resnet50_gives_unit_vectors(tmp_path):
    model = build_embedder("resnet50", tmp_path)
    (only,) = model.inputs
    assert named_after(only.name, "dlib"), only.name  # it reads dlib chips
    out = model(CHIPS).numpy()
    assert out.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_unknown_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        build_embedder("vgg", tmp_path)
    with pytest.raises(ValueError, match="unknown model"):
        load_embedder("vgg", tmp_path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "db.json"
    target.write_text("old")

    def explode(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.json"]
    atomic_write(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"


def test_distance_scale_belongs_to_its_weights(folder):
    model = build_embedder("dlib", folder, folder)
    assert distance_scale(folder, "dlib") == 1.0  # nothing trained yet
    kernel = descriptor(model)
    kernel.assign(kernel.numpy() * 0.5)
    save_trained_weights(model, folder, "dlib", distance_scale=2.25)
    assert distance_scale(folder, "dlib") == 2.25
    assert distance_scale(None, "dlib") == 1.0  # the pretrained model is the calibrated one
    assert distance_scale(folder, "sface") == 1.0  # another model's weights: nothing trained for it
    embedder = load_embedder("dlib", folder, folder)
    assert embedder.distance_scale == 2.25 and embedder.fingerprint == fingerprint(model)
    # a later save replaces weights and scale together
    kernel.assign(kernel.numpy() * 2.0)
    save_trained_weights(model, folder, "dlib", distance_scale=1.1)
    assert distance_scale(folder, "dlib") == 1.1
    assert load_embedder("dlib", folder, folder).fingerprint == fingerprint(model)
