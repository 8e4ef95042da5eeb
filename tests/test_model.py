"""Building embedders, the converted-weights cache, trained weights, fingerprints, atomic writes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from facenet.config import PRETRAINED_FILE
from facenet.files import atomic_write
from facenet.model import (
    build_embedder,
    distance_scale,
    fingerprint,
    save_trained_weights,
    trained_weights_path,
)

CHIPS = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3)).astype(np.float32)


def test_cache_is_reused_and_rebuilt_when_corrupt(weights_dir, tmp_path, caplog, embedder):
    folder = tmp_path / "w"
    shutil.copytree(weights_dir, folder)
    cache = folder / PRETRAINED_FILE
    assert cache.exists(), "the session embedder converted and cached the model"
    before = cache.stat().st_mtime_ns
    reference = build_embedder("dlib_resnet", folder)(CHIPS).numpy()
    assert cache.stat().st_mtime_ns == before  # loaded, not converted again
    cache.write_bytes(b"not a keras file")
    rebuilt = build_embedder("dlib_resnet", folder)
    assert "stale or corrupt" in caplog.text
    np.testing.assert_allclose(rebuilt(CHIPS).numpy(), reference, atol=1e-6)
    assert cache.stat().st_size > 10_000_000


def test_trained_weights_win_and_corrupt_ones_are_ignored(weights_dir, tmp_path, caplog):
    folder = tmp_path / "w"
    shutil.copytree(weights_dir, folder)
    model = build_embedder("dlib_resnet", folder)
    pretrained_print = fingerprint(model)
    kernel = model.get_layer("descriptor").kernel
    kernel.assign(kernel.numpy() * -1.0)
    path = save_trained_weights(model, folder, "dlib_resnet")
    assert path == trained_weights_path(folder, "dlib_resnet") and path.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temp file left behind"
    reloaded = build_embedder("dlib_resnet", folder)
    assert fingerprint(reloaded) == fingerprint(model) != pretrained_print
    np.testing.assert_allclose(reloaded(CHIPS).numpy(), model(CHIPS).numpy(), atol=1e-6)
    path.write_bytes(b"\x89HDF garbage")
    fallback = build_embedder("dlib_resnet", folder)
    assert "unusable trained weights" in caplog.text
    assert fingerprint(fallback) == pretrained_print


def test_resnet50_backbone_gives_unit_vectors(tmp_path):
    model = build_embedder("resnet50", tmp_path)
    out = model(CHIPS).numpy()
    assert out.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_unknown_backbone_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone"):
        build_embedder("vgg", tmp_path)


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


def test_distance_scale_belongs_to_its_weights(weights_dir, tmp_path, caplog):
    folder = tmp_path / "w"
    shutil.copytree(weights_dir, folder)
    model = build_embedder("dlib_resnet", folder)
    assert distance_scale(folder, "dlib_resnet", fingerprint(model)) == 1.0  # nothing trained yet
    kernel = model.get_layer("descriptor").kernel
    kernel.assign(kernel.numpy() * 0.5)
    save_trained_weights(model, folder, "dlib_resnet", distance_scale=2.25)
    trained = build_embedder("dlib_resnet", folder)
    assert distance_scale(folder, "dlib_resnet", fingerprint(trained)) == 2.25
    assert distance_scale(folder, "dlib_resnet", "0123456789abcdef") == 1.0  # another model's record
    assert "belongs to other weights" in caplog.text
    (folder / "dlib_resnet_trained.json").write_text("{broken")
    assert distance_scale(folder, "dlib_resnet", fingerprint(trained)) == 1.0
    assert "unreadable distance scale" in caplog.text
