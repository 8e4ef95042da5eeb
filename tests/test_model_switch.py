"""`--pretrained` is a toggle (issue 23): a gallery with fine-tuned weights, enrolled by the command with and
without `--pretrained`, back and forth. Each model embeds the photos once; switching back embeds nothing and gives
the same names and vectors as that model's first run. Real photos, real trained weights (a perturbed adapter),
the real model loading of the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from facenet.cli.recognize_command import recognize_command
from facenet.gallery.file import read_database
from facenet.models.adapter import adapter_of, with_adapter
from facenet.models.build import build_embedder
from facenet.models.trained import save_trained_weights

PEOPLE = Path(__file__).parent / "data" / "people"
ENROLLED = {"Juanes": (1, 2), "Martha_Burk": (2, 3), "Jon_Voight": (1, 2)}


def test_pretrained_back_and_forth_embeds_each_photo_once_per_model(tmp_path, weights, capsys, embedded_photos,
                                                                    monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    data, database = tmp_path / "data", tmp_path / "database"
    for name, numbers in ENROLLED.items():
        (data / name).mkdir(parents=True)
        for n in numbers:
            shutil.copy2(PEOPLE / name / f"{name}_{n:04d}.jpg", data / name)
    adapted = with_adapter(build_embedder("dlib", weights), 16)
    layer = adapter_of(adapted)
    rng = np.random.default_rng(0)
    layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32) for w in layer.get_weights()])
    database.mkdir()
    save_trained_weights(adapted, database, "dlib", backbone=False)

    def enroll(pretrained: bool) -> tuple[dict, list[str], np.ndarray]:
        embedded_photos.clear()
        code = recognize_command(web_cam=False, inputs=[], camera=0, output_dir=tmp_path / "out", data_dir=data,
                                 database_dir=database, weights_dir=weights, model="dlib", detector="hog",
                                 threshold=None, as_json=True, enroll_only=True, pretrained=pretrained)
        assert code == 0
        report = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert report["embedded"] == len(embedded_photos)
        saved = read_database(database, report["fingerprint"])
        return report, sorted(embedded_photos), saved.centroids

    photos = sorted(f"{name}_{n:04d}.jpg" for name, numbers in ENROLLED.items() for n in numbers)
    trained, trained_embedded, trained_centroids = enroll(pretrained=False)
    plain, plain_embedded, plain_centroids = enroll(pretrained=True)
    assert trained_embedded == plain_embedded == photos  # the first run of each model embeds every photo
    assert trained["fingerprint"] != plain["fingerprint"] and trained["people"] == plain["people"]
    assert not np.allclose(trained_centroids, plain_centroids, atol=1e-3)  # two models, two sets of vectors
    for _ in range(2):
        again, embedded, centroids = enroll(pretrained=False)
        assert embedded == [] and again["examined"] == 0 and again["rebuilt"] is None
        assert again["fingerprint"] == trained["fingerprint"] and again["people"] == trained["people"]
        assert np.array_equal(centroids, trained_centroids)
        again, embedded, centroids = enroll(pretrained=True)
        assert embedded == [] and again["examined"] == 0 and again["rebuilt"] is None
        assert again["fingerprint"] == plain["fingerprint"] and again["people"] == plain["people"]
        assert np.array_equal(centroids, plain_centroids)
