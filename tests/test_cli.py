"""`python main.py` as users type it: -t False recognises (never trains), bad inputs each get one line naming
them and never a traceback, exit codes, --enroll, --verify, unusable trained weights, a missing camera.

A subprocess run pays the TensorFlow import and model load (~5 s), so the bad inputs are batched into one run and
only the smoke tests of recognition and --verify start `main.py`; the others run the same command line in this
process (`run_in_process`: main.py's flag parsing and dispatch, its stderr rebuilt from the log records).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
DATA = Path(__file__).parent / "data"
PEOPLE, MISC = DATA / "people", DATA / "misc"
JSON_KEYS = {"source", "frame", "box", "name", "distance", "score"}
DLIB_HOG = ("--model", "dlib", "-d", "hog")
"""The model and detector the expectations were calibrated on (the defaults are fused + YuNet)."""


def photo(folder: str, number: int) -> Path:
    return PEOPLE / folder / f"{folder}_{number:04d}.jpg"


def run_main(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([sys.executable, str(MAIN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def segments(stderr: str) -> list[str]:
    """stderr split into lines, also at tqdm's carriage returns."""
    return [s for s in stderr.replace("\r", "\n").split("\n") if s.strip()]


def naming(stderr: str, name: str) -> list[str]:
    return [s for s in segments(stderr) if name in s]


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def make_bad_inputs(folder: Path) -> None:
    """Every awkward input of the issue, from the real test photos."""
    folder.mkdir()
    (folder / "zero.jpg").write_bytes(b"")
    shutil.copy2(MISC / "truncated.jpg", folder / "truncated.jpg")
    (folder / "text.jpg").write_text("this is a text file, not a JPEG\n")
    (folder / "notes.txt").write_text("not a photo: ignored quietly\n")
    (folder / "broken.mp4").write_text("not a video either\n")
    for name in ("camera.png", "coins.png", "alex-lacamoire.png"):
        shutil.copy2(MISC / name, folder / name)
    grey = np.asarray(Image.open(photo("Juanes", 3)).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(folder / "juanes16.png")  # 16-bit greyscale PNG
    rotated = Image.open(photo("George_Clooney", 5)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(folder / "george_exif.jpg", exif=exif, quality=95)
    huge = Image.new("L", (10000, 10000), 90)
    huge.paste(Image.open(photo("George_Clooney", 5)).convert("L").resize((2500, 2500)), (3000, 4000))
    huge.save(folder / "huge.jpg", quality=80)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[40:440, 120:520] = cv2.resize(np.asarray(Image.open(photo("Juanes", 3))), (400, 400))
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 480))
    for _ in range(3):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def make_data(data: Path) -> None:
    for name, folder, numbers in (("George Clooney", "George_Clooney", (3, 4)), ("Juanes", "Juanes", (1, 2))):
        (data / name).mkdir(parents=True)
        for number in numbers:
            shutil.copy2(photo(folder, number), data / name)
    (data / "Nobody").mkdir()
    (data / "Nobody" / "broken.jpg").write_text("no photo here")
    (data / "README.txt").write_text("non-image files in data/ are ignored quietly")
    (data / "George Clooney" / "notes.txt").write_text("ignored too")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, embedder, weights_dir) -> Path:
    """A working folder with data/ and inputs/; `embedder` makes sure the converted model is cached."""
    root = tmp_path_factory.mktemp("cli")
    make_data(root / "data")
    make_bad_inputs(root / "inputs")
    return root


def test_t_false_recognises_every_input_and_names_each_bad_one(run_dir, weights_dir):
    def weights_files() -> list[str]:
        """The weights folder but the TFLite copies recognition adds (earlier tests may have made some)."""
        return sorted(p.name for p in weights_dir.iterdir() if not p.name.endswith((".tflite", ".tflite.json")))

    weights_before = weights_files()
    data_before = snapshot(run_dir / "data")
    result = run_main("-t", "False", "-wc", "False", "--input", "inputs", "--json", "--data_dir", "data",
                      "--database_dir", "db", "-wp", str(weights_dir), "--output_dir", "out", *DLIB_HOG, cwd=run_dir)
    err = result.stderr
    assert "Traceback" not in err and result.returncode == 1, err  # 1: some inputs were bad

    # Recognised, not trained: face records on stdout, annotated files, no trained weights, no training logs.
    lines = records(result.stdout)
    faces = [r for r in lines if "box" in r]
    assert faces and all(set(r) == JSON_KEYS for r in faces)
    # every other input has one line too: no face, or why it could not be read
    assert sorted(Path(r["source"]).name for r in lines if r.get("faces") == 0) == ["camera.png", "coins.png"]
    assert sorted(Path(r["source"]).name for r in lines if "error" in r) == [
        "broken.mp4", "text.jpg", "truncated.jpg", "zero.jpg"]
    by_file = {}
    for r in faces:
        by_file.setdefault(Path(r["source"]).name, []).append(r)
    assert sorted(by_file) == ["alex-lacamoire.png", "clip.mp4", "george_exif.jpg", "huge.jpg", "juanes16.png"]
    assert [r["name"] for r in by_file["george_exif.jpg"]] == ["George Clooney"]
    assert [r["name"] for r in by_file["juanes16.png"]] == ["Juanes"]
    assert [r["name"] for r in by_file["alex-lacamoire.png"]] == ["Unknown"]
    assert [(r["frame"], r["name"]) for r in by_file["clip.mp4"]] == [(0, "Juanes"), (1, "Juanes"), (2, "Juanes")]
    (huge,) = by_file["huge.jpg"]
    left, top, right, bottom = huge["box"]  # in the file's own pixels, though it was downscaled to decode
    assert huge["name"] == "George Clooney" and 3000 < left < right < 5500 and 4000 < top < bottom < 6500
    assert all(r["frame"] is None for name, rs in by_file.items() if name != "clip.mp4" for r in rs)
    written = sorted(p.name for p in (run_dir / "out" / "inputs").iterdir())
    assert written == ["alex-lacamoire.png", "camera.png", "clip.mp4", "coins.png", "george_exif.jpg", "huge.jpg",
                       "juanes16.png"]
    # recognition adds only its TFLite copy of the model (converted once, like the .keras twin) to the weights
    assert weights_files() == weights_before
    assert not (run_dir / "logs").exists()

    # Each bad input: one line naming it and the reason.
    for name, reason in [("zero.jpg", "empty file"), ("truncated.jpg", "cannot decode"),
                         ("text.jpg", "not a readable image"), ("broken.mp4", "cannot open video"),
                         ("camera.png", "no face found"), ("coins.png", "no face found")]:
        lines = naming(err, name)
        assert len(lines) == 1 and reason in lines[0], (name, lines)
    assert naming(err, "notes.txt") == [] and naming(err, "README.txt") == []
    assert any("Nobody" in line and "not enrolled" in line for line in segments(err))
    assert "errors: 4" in err  # zero, truncated, text, broken.mp4 (faceless photos are not errors)
    assert snapshot(run_dir / "data") == data_before


def test_corrupt_database_is_rebuilt_with_a_warning(tmp_path, weights_dir, run_in_process):
    """--enroll over a half-written faces.npz rebuilds it with a warning naming the file. On a gallery of its own
    (it used to corrupt the one the previous test left, and skip when run alone), in-process."""
    make_data(tmp_path / "data")
    enroll = ("-t", "false", "--enroll", "--json", "--data_dir", "data", "--database_dir", "db",
              "-wp", str(weights_dir), *DLIB_HOG)
    first = run_in_process(*enroll, cwd=tmp_path)
    assert first.returncode == 0 and records(first.stdout)[0]["rebuilt"] == "no database yet", first.stderr
    database = tmp_path / "db" / "faces.npz"
    data_before = snapshot(tmp_path / "data")
    database.write_bytes(database.read_bytes()[:200])  # a half-written file
    result = run_in_process(*enroll, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (report,) = records(result.stdout)
    assert sorted(report["people"]) == ["George Clooney", "Juanes"] and report["not_enrolled"] == ["Nobody"]
    assert report["rebuilt"].startswith("unreadable") and report["fingerprint"].startswith("dlib:")
    assert report["skipped"] == [{"path": "Nobody/broken.jpg", "reason": report["skipped"][0]["reason"]}]
    assert report["skipped"][0]["reason"].startswith("unreadable: ")
    assert [line for line in naming(result.stderr, "faces.npz") if "unreadable" in line]
    assert snapshot(tmp_path / "data") == data_before


def test_stray_argument_after_t_false_fails_cleanly(tmp_path):
    result = run_main("-t", "False", "extra", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert segments(result.stderr) == ["error: unexpected arguments 'extra' (flags take True/False as values)"]


def test_missing_webcam_is_one_line_and_exit_1(tmp_path, run_in_process):
    result = run_in_process("-t", "False", "-wc", "True", "--camera", "99", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert segments(result.stderr) == ["ERROR: camera 99: cannot open the webcam (no such camera, or it is in use)"]


def test_verify_json(tmp_path, weights_dir):
    a, b = photo("Juanes", 1), photo("Juanes", 3)
    result = run_main(f"--verify={a},{b}", "--json", "-wp", str(weights_dir), *DLIB_HOG, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (answer,) = records(result.stdout)
    assert set(answer) == {"same", "distance", "threshold"} and answer["same"] is True
    command = run_main("verify", str(a), str(b), "--json", "-wp", str(weights_dir), *DLIB_HOG, cwd=tmp_path)
    assert command.returncode == 0 and records(command.stdout) == [answer], command.stderr  # the same command


def test_verify_errors(tmp_path, weights_dir, run_in_process):
    a, b = photo("Juanes", 1), photo("Juanes", 3)
    result = run_in_process(f"--verify={a}", cwd=tmp_path)
    assert result.returncode == 2 and segments(result.stderr) == [
        "usage: python main.py --verify=A.jpg,B.jpg (exactly two photos, got 1)"]

    # a faceless photo: exit 1, one line on stderr naming it, and with --json exactly one JSON object on stdout
    result = run_in_process(f"--verify={MISC / 'dogs.jpg'},{b}", "--json", "-wp", str(weights_dir), *DLIB_HOG,
                            cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert naming(result.stderr, "dogs.jpg") == [f"ERROR: {MISC / 'dogs.jpg'}: no face"]
    assert len(result.stdout.splitlines()) == 1
    (error,) = records(result.stdout)
    assert error == {"error": f"{MISC / 'dogs.jpg'}: no face"}


def test_unusable_trained_weights_are_one_line_and_exit_1(tmp_path, weights_dir, run_dir, run_in_process):
    folder = tmp_path / "w"
    shutil.copytree(weights_dir, folder)
    gallery = tmp_path / "db"
    gallery.mkdir()
    corrupt = gallery / "dlib_trained.weights.npz"  # a gallery's trained weights live beside its database
    corrupt.write_bytes(b"PK\x03\x04 a half-written zip file")
    a, b = photo("Juanes", 1), photo("Juanes", 3)
    for args in ([f"--verify={a},{b}", "--json", "--database_dir", str(gallery)],
                 ["-t", "True", "-e", "1", "--data_dir", str(run_dir / "data"), "--database_dir", str(gallery),
                  "--tensorboard_dir", str(tmp_path / "logs")]):
        result = run_in_process(*args, "-wp", str(folder), *DLIB_HOG, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert all(set(record) == {"error"} for record in records(result.stdout))  # never an answer
        if args[0].startswith("--verify"):  # --verify --json: the failure is its one JSON answer
            (failure,) = records(result.stdout)
            assert failure["error"].startswith("cannot load the model: ") and str(corrupt) in failure["error"]
        (line,) = [s for s in segments(result.stderr) if str(corrupt) in s]
        assert "unusable trained weights" in line and "--pretrained" in line
        assert [s for s in segments(result.stderr) if s.lower().startswith("error")] == [line]
    assert corrupt.read_bytes() == b"PK\x03\x04 a half-written zip file"  # left for the user to decide
    assert not (tmp_path / "logs").exists()

    # --pretrained ignores the trained file: the same answer as with the pretrained model alone
    result = run_in_process(f"--verify={a},{b}", "--json", "--pretrained", "--database_dir", str(gallery), "-wp",
                            str(folder), *DLIB_HOG, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (answer,) = records(result.stdout)
    plain = run_in_process(f"--verify={a},{b}", "--json", "-wp", str(weights_dir), *DLIB_HOG, cwd=tmp_path)
    assert answer == records(plain.stdout)[0] and answer["same"] is True


def test_nobody_enrolled_prints_null_distances(tmp_path, weights_dir, run_in_process):
    (tmp_path / "data").mkdir()
    result = run_in_process("-t", "False", "--input", str(photo("Juanes", 3)), "--json", "--data_dir", "data",
                      "--database_dir", "db", "-wp", str(weights_dir), "--output_dir", "out", *DLIB_HOG, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (face,) = records(result.stdout)
    assert set(face) == JSON_KEYS and (face["name"], face["distance"], face["score"]) == ("Unknown", None, None)
    assert '"distance": null' in result.stdout
    assert any("nobody is enrolled" in line for line in segments(result.stderr))


@pytest.mark.parametrize(("words", "train", "web_cam"), [(["-t", "False", "-wc", "True"], False, True),
                                                         (["-t", "false", "-wc", "0"], False, False),
                                                         (["-t", "1", "-wc", "no"], True, False)])
def test_true_false_words_parse_as_separate_arguments(words, train, web_cam):
    sys.path.insert(0, str(ROOT))
    try:
        import main
    finally:
        sys.path.remove(str(ROOT))
    try:
        rest = main.FLAGS(["main.py", *words])
        assert (main.FLAGS.train, main.FLAGS.web_cam, rest) == (train, web_cam, ["main.py"])
    finally:
        main.FLAGS.unparse_flags()
