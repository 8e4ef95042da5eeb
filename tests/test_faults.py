"""Faults found by trying to break facenet (issue 14): damaged or tampered caches, databases and weights; a killed
enrollment; saving that fails; noise on stderr. Real photos, real models, real subprocesses killed with SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from facenet.config import PRETRAINED_FILE
from facenet.files import STALE_TEMP_SECONDS, read_checked, remove_stale_temps, write_checked
from facenet.gallery.file import (
    CHECKPOINT_PARTS,
    DATABASE_FILE,
    ENROLL_CHECKPOINT_PHOTOS,
    ENROLLMENT_REPORT,
    read_database,
    sync_database,
)
from facenet.models.build import pretrained_dlib_resnet
from facenet.models.tflite import TFLiteRunner, cached_runner, cached_tflite
from facenet.models.trained import WeightsError, read_trained, save_trained_weights, trained_checksum
from facenet.progress import progress, progress_bar, show_progress

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = Path(__file__).parent / "data" / "people"
DLIB_HOG = ("--model", "dlib", "-d", "hog")


def run_main(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def make_data(root: Path, people: dict[str, int]) -> Path:
    """{person folder in tests/data/people: number of photos} copied to root/<person>/."""
    for name, count in people.items():
        (root / name).mkdir(parents=True)
        for photo in sorted((PEOPLE / name).glob("*.jpg"))[:count]:
            shutil.copy2(photo, root / name / photo.name)
    return root


def old(path: Path, data: bytes = b"PK\x03\x04 half") -> Path:
    """A file as a kill leaves it, untouched for longer than STALE_TEMP_SECONDS."""
    path.write_bytes(data)
    past = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(path, (past, past))
    return path


# --------------------------------------------------------------------------- caches (items 5 and 12)


@pytest.fixture(scope="module")
def small_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3), name="dlib_chip")
    outputs = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("damage", ["empty", "truncated", "altered", "no record"])
def test_damaged_tflite_cache_is_rebuilt_with_one_warning(small_model, tmp_path, caplog, damage):
    path = tmp_path / "dlib_0123.tflite"
    good = cached_tflite(small_model, path)
    assert path.read_bytes() == good and json.loads((tmp_path / "dlib_0123.tflite.json").read_text())["sha256"]
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "altered":  # one byte changed: it may still load, and answer differently
        changed = bytearray(good)
        changed[len(good) - 200] ^= 0xFF
        path.write_bytes(bytes(changed))
    else:
        (tmp_path / "dlib_0123.tflite.json").unlink()
    with caplog.at_level(logging.WARNING, logger="facenet.models.tflite"):
        rebuilt = cached_tflite(small_model, path)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(path) in warning and "converting again" in warning and "\n" not in warning
    chips = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(TFLiteRunner(rebuilt)(chips), small_model(chips).numpy(), rtol=1e-5, atol=1e-3)
    caplog.clear()
    assert cached_tflite(small_model, path) == path.read_bytes() and not caplog.records  # sound again


def test_cache_the_interpreter_refuses_is_converted_again(small_model, tmp_path, caplog):
    """A cache whose record matches but which TFLite cannot read (say, written by another TensorFlow version)."""
    path = tmp_path / "dlib_0123.tflite"
    write_checked(path, lambda tmp: tmp.write_bytes(b"TFL3 from another TensorFlow"))
    with caplog.at_level(logging.WARNING, logger="facenet.models.tflite"):
        runner = cached_runner(small_model, path)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(path) in warning and "converting again" in warning
    chips = np.ones((1, 8, 8, 3), np.float32)
    np.testing.assert_allclose(runner(chips), small_model(chips).numpy(), rtol=1e-5, atol=1e-3)
    assert read_checked(path, path.read_bytes())["sha256"]


def test_altered_keras_twin_is_converted_again(embedder, weights_dir, tmp_path, caplog):
    for name in (PRETRAINED_FILE, PRETRAINED_FILE + ".json"):
        shutil.copy(weights_dir / name, tmp_path / name)
    cache = tmp_path / PRETRAINED_FILE
    data = bytearray(cache.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the weights: the archive may still load, with other weights
    cache.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="facenet.models.cache"):
        model = pretrained_dlib_resnet(tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert str(cache) in warning and "checksum" in warning and "converting again" in warning
    chips = np.random.default_rng(1).uniform(0, 255, (2, 150, 150, 3)).astype(np.float32)
    reference = keras.models.load_model(weights_dir / PRETRAINED_FILE, compile=False)
    np.testing.assert_allclose(model(chips).numpy(), reference(chips).numpy(), atol=1e-5)
    assert cache.read_bytes() != bytes(data)


# --------------------------------------------------------------------------- trained weights (item 12)


def rewrite(path: Path, record: dict, arrays: list[np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, record=np.frombuffer(json.dumps(record).encode(), np.uint8),
                 **{f"w{i:04d}": a for i, a in enumerate(arrays)})


def test_tampered_trained_weights_and_implausible_scales_are_refused(embedder, tmp_path):
    path = save_trained_weights(embedder.model, tmp_path, "dlib", distance_scale=1.1)
    trained = read_trained(path)
    arrays, record = trained.model_weights, trained.record
    swapped = [a.copy() for a in arrays]
    swapped[-1] = swapped[-1][::-1].copy()  # the last layer's values reordered, same shapes
    rewrite(path, record, swapped)
    with pytest.raises(WeightsError, match="checksum") as caught:
        read_trained(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    for scale in (1e6, 0.01):  # even with a checksum made to match
        forged = {**record, "distance_scale": scale}
        rewrite(path, {**forged, "checksum": trained_checksum(forged, arrays)}, arrays)
        with pytest.raises(WeightsError, match="invalid distance scale") as caught:
            read_trained(path)
        assert str(path) in str(caught.value)
    with pytest.raises(ValueError, match="invalid distance scale"):
        save_trained_weights(embedder.model, tmp_path, "dlib", distance_scale=1e6)


# --------------------------------------------------------------------------- the database file (items 6, 11, 12)


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, pipeline) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("enrolled")
    data = make_data(root / "data", {"Juanes": 2, "Martha_Burk": 2, "Jon_Voight": 2})
    sync_database(data, root / "database", pipeline)
    return data, root / "database"


@pytest.fixture
def copy(enrolled, tmp_path) -> tuple[Path, Path]:
    shutil.copytree(enrolled[0], tmp_path / "data")
    shutil.copytree(enrolled[1], tmp_path / "database")
    return tmp_path / "data", tmp_path / "database"


def rewrite_database(path: Path, change) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    manifest = json.loads(arrays["manifest"].tobytes())
    change(manifest, arrays)
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def swap_centroids(manifest: dict, arrays: dict) -> None:
    arrays["centroids"] = arrays["centroids"][[1, 0, 2]]


def twelve_names_for_six(manifest: dict, arrays: dict) -> None:
    manifest["people"] = manifest["people"] * 4  # 12 names
    arrays["centroids"] = np.concatenate([arrays["centroids"]] * 2)  # 6 centroids


@pytest.mark.parametrize("change", [swap_centroids, twelve_names_for_six])
def test_tampered_or_inconsistent_database_is_rebuilt_naming_the_file(copy, pipeline, caplog, change):
    data, database_dir = copy
    path = database_dir / DATABASE_FILE
    rewrite_database(path, change)
    with caplog.at_level(logging.WARNING):
        assert read_database(database_dir) is None
        database, report = sync_database(data, database_dir, pipeline)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all(str(path) in w for w in warnings), warnings
    reason = "checksum" if change is swap_centroids else "12 people"
    assert reason in report.rebuilt and all(reason in w for w in warnings)
    assert report.embedded == 6 and sorted(database.names) == ["Jon_Voight", "Juanes", "Martha_Burk"]
    # the rebuilt file names the right person again
    probe = pipeline.embed_photos([PEOPLE / "Juanes" / "Juanes_0003.jpg"])
    assert read_database(database_dir).identify(next(iter(probe.values())).vector[None]).names == ["Juanes"]


def test_report_that_cannot_be_written_is_named_and_the_database_still_saved(copy, pipeline, caplog):
    data, database_dir = copy
    shutil.copy2(PEOPLE / "Juanes" / "Juanes_0003.jpg", data / "Juanes")
    blocked = database_dir / f"{ENROLLMENT_REPORT}.json"
    blocked.unlink()
    blocked.mkdir()  # root ignores permissions: a folder in the way fails the write for anyone
    with caplog.at_level(logging.WARNING):
        _, report = sync_database(data, database_dir, pipeline)
    assert report.saved and report.save_error.startswith(str(blocked))
    assert read_database(database_dir).photo_counts.tolist() == [2, 3, 2]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(blocked) in warning and DATABASE_FILE not in warning


# --------------------------------------------------------------------------- command line (items 10, 11)


def test_killed_enrollment_resumes_and_the_next_run_clears_its_litter(tmp_path, weights_dir, embedder):
    data = tmp_path / "data"
    shutil.copytree(PEOPLE, data)  # 50 photos: a checkpoint part after 32, so a kill at 32..49 leaves work to keep
    photos = len(list(data.rglob("*.jpg")))
    database = tmp_path / "database"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    command = [sys.executable, str(ROOT / "main.py"), "--enroll", "--data_dir", str(data), "--database_dir",
               str(database), "-wp", str(weights_dir), *DLIB_HOG]
    with subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as enrolling:
        deadline = time.monotonic() + 240
        while not list(database.glob(CHECKPOINT_PARTS)) and enrolling.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert enrolling.poll() is None, "enrollment ended before it could be killed"
        os.kill(enrolling.pid, signal.SIGKILL)
    assert not (database / DATABASE_FILE).exists()
    saved = len(list(database.glob(CHECKPOINT_PARTS))) * ENROLL_CHECKPOINT_PHOTOS
    # litter of kills during saves (ours), and look-alikes that are not ours
    (tmp_path / "out" / "inputs").mkdir(parents=True)
    litter = [old(database / ".faces.k3j_x8a2.npz"), old(weights_dir / ".dlib_trained.weights.ab12cd34.weights.npz"),
              old(tmp_path / "out" / "inputs" / ".clip.zz99yy88.mp4")]
    mine = [old(database / ".faces.notes.npz"), old(data / "Juanes" / ".Juanes.abcdefgh.jpg", b"a user's photo"),
            old(tmp_path / "out" / "inputs" / "clip.mp4")]
    (tmp_path / "inputs").mkdir()
    shutil.copy2(PEOPLE / "Juanes" / "Juanes_0003.jpg", tmp_path / "inputs" / "probe.jpg")
    result = run_main("-t", "False", "-wc", "False", "--input", "inputs", "--output_dir", "out", "--json",
                      "--data_dir", str(data), "--database_dir", str(database), "-wp", str(weights_dir), *DLIB_HOG,
                      cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads((database / f"{ENROLLMENT_REPORT}.json").read_text())
    assert report["resumed"] >= saved >= ENROLL_CHECKPOINT_PHOTOS
    assert report["examined"] == photos - report["resumed"] and report["reused"] == report["resumed"]
    assert sum(map(len, report["people"].values())) + len(report["skipped"]) == photos
    assert [json.loads(line)["name"] for line in result.stdout.splitlines()] == ["Juanes"]
    assert not list(database.glob(CHECKPOINT_PARTS))  # merged into the saved database, then removed
    assert [p for p in litter if p.exists()] == [] and all(p.exists() for p in mine)


@pytest.mark.parametrize("blocked", ["database", "report"])
def test_enroll_that_cannot_save_exits_1_naming_the_file(tmp_path, pipeline, monkeypatch, caplog, capsys, blocked):
    """The --enroll command (in process, with the test's pipeline): root ignores permissions, so a regular file in
    the database folder's place, or a folder in the report's, is what cannot be written."""
    from facenet.cli import common
    from facenet.cli.recognize_command import recognize_command

    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kwargs: pipeline)
    data = make_data(tmp_path / "data", {"Juanes": 2})
    if blocked == "database":
        (tmp_path / "blocker").write_text("a file where the database folder should be")
        database_dir, target = tmp_path / "blocker" / "db", tmp_path / "blocker" / "db" / DATABASE_FILE
    else:
        database_dir = tmp_path / "db"
        target = database_dir / f"{ENROLLMENT_REPORT}.json"
        target.mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        code = recognize_command(web_cam=False, inputs=[], camera=0, output_dir=tmp_path / "out", data_dir=data,
                                 database_dir=database_dir, weights_dir=tmp_path / "w", model="dlib",
                                 detector="hog", threshold=None, as_json=True, enroll_only=True)
    assert code == 1
    (report,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert report["save_error"].startswith(f"{target}: ")
    blamed = [r.getMessage() for r in caplog.records if str(target) in r.getMessage()]
    assert len(blamed) == 1 and ("could not save the database" if blocked == "database" else
                                 "could not write the enrollment report") in blamed[0]
    assert report["saved"] == (blocked == "report") == (database_dir / DATABASE_FILE).is_file()
    assert sorted(p.name for p in (data / "Juanes").iterdir()) == ["Juanes_0001.jpg", "Juanes_0002.jpg"]


# --------------------------------------------------------------------------- temp files, progress, noise (10, 14)


def test_only_our_stale_temp_names_are_removed(tmp_path):
    ours = [old(tmp_path / ".faces.a1b2c3d4.npz"), old(tmp_path / f".{ENROLLMENT_REPORT}.q_w_e_r_.json")]
    fresh = tmp_path / ".faces.z9y8x7w6.npz"
    fresh.write_bytes(b"a writer is busy with this one")
    others = [old(tmp_path / "faces.npz"), old(tmp_path / ".faces.npz"), old(tmp_path / ".faces.toolongname.npz"),
              old(tmp_path / ".photo.a1b2c3d4.jpg"), old(tmp_path / ".faces.ABCDEFGH.npz")]
    (tmp_path / ".faces.a1b2c3d5.npz").mkdir()  # a folder named like one is not ours to remove
    assert sorted(remove_stale_temps(tmp_path, ["faces.npz", f"{ENROLLMENT_REPORT}.*"])) == sorted(ours)
    assert all(p.exists() for p in [fresh, *others, tmp_path / ".faces.a1b2c3d5.npz"])


def test_library_progress_is_off_unless_asked_and_plain_off_a_terminal(capfd):
    assert list(progress(range(5), desc="enrolling")) == list(range(5))
    bar = progress_bar(total=20, desc="training", unit="batch")
    for _ in range(20):
        bar.update()
    bar.close()
    assert capfd.readouterr().err == ""
    show_progress(True)
    try:
        bar = progress_bar(total=20, desc="training", unit="batch")
        for step in range(20):
            bar.set_postfix({"loss": f"{1 / (step + 1):.3f}"})
            bar.update()
        bar.close()
    finally:
        show_progress(False)
    err = capfd.readouterr().err
    assert "\r" not in err and len(err.splitlines()) == 10 and err.splitlines()[-1].startswith("training: 20/20 batch")


NOISE = ("oneDNN", "XNNPACK", "cpu_feature_guard", "absl::InitializeLog", "SavedModel", "fingerprint",
         "tf_tfl_flatbuffer", "mlir", "TensorFlow binary is optimized")

CONVERTER = ("Sharding callback duration", "Using new converter", "unsupported characters")
"""TensorFlow's converter's INFO lines (Python logging), which a command's log handler would otherwise print."""

FIRST_RUN = """
import sys
from pathlib import Path
import facenet  # sets what TensorFlow reads at import, before anything imports it
import keras, numpy as np
from facenet.models.tflite import TFLiteRunner, cached_runner, cached_tflite
inputs = keras.Input((8, 8, 3), name="dlib_chip")
model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))
data = cached_tflite(model, Path(sys.argv[1]) / "tiny.tflite")  # converted: the converter's first run
print(TFLiteRunner(data)(np.zeros((2, 8, 8, 3), np.float32)).shape)
"""


def test_a_first_run_through_the_library_prints_nothing_on_stderr(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", FIRST_RUN, str(tmp_path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 4)" and (tmp_path / "tiny.tflite").is_file()
    noisy = [line for line in result.stderr.splitlines() if any(word in line for word in NOISE)]
    assert noisy == [], result.stderr


def test_a_first_command_line_run_prints_no_converter_lines(tmp_path, weights_dir):
    """The command's first run converts the model to TFLite: TensorFlow's converter INFO lines ("Sharding callback
    duration", "Writing fingerprint", "Using new converter", …) are not the command's to print."""
    weights = tmp_path / "weights"
    weights.mkdir()
    for path in weights_dir.iterdir():  # the Keras twin, not its TFLite copy: this run converts it
        if not path.name.endswith((".tflite", ".tflite.json")):
            shutil.copy2(path, weights / path.name)
    (tmp_path / "data" / "Juanes").mkdir(parents=True)
    shutil.copy2(Path(__file__).parent / "data" / "people" / "Juanes" / "Juanes_0001.jpg", tmp_path / "data" / "Juanes")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "-t", "False", "-wc", "False", "--input",
                             str(Path(__file__).parent / "data" / "people" / "Juanes" / "Juanes_0002.jpg"),
                             "-wp", str(weights), "--model", "dlib", "-d", "hog"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert any(name.endswith(".tflite") for name in os.listdir(weights)), "the run converted the model"
    noisy = [line for line in result.stderr.splitlines() if any(word in line for word in NOISE + CONVERTER)]
    assert noisy == [], result.stderr
    assert "Juanes" in result.stdout


def test_margin_help_gives_each_loss_its_default_not_one_number():
    from facenet.cli.app import help_text
    from facenet.train.margin import DEFAULTS
    from facenet.train.step import TRIPLET_MARGIN

    text = help_text(command="train")
    start = text.index("-m,--margin")
    entry = text[start : text.index("\n  --", start)]  # up to the next flag
    assert "(default:" not in entry  # no single default: the chosen loss's own applies
    assert f"batch_hard {TRIPLET_MARGIN:g}" in entry
    for loss, values in DEFAULTS.items():
        assert f"{loss} {values['margin']:g}" in entry, (loss, entry)
