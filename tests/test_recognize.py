"""Recognition in-process: sources, drawing, the per-frame pipeline, and the commands on real photos and videos.

The gallery is enrolled with the real database from tests/data/people (two photos each, one name with a space
and one with an accent); held-out photos of the same people must be named, LFW strangers must not.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facenet import config
from facenet.cli import common
from facenet.cli import recognize_command as recognize_command_module
from facenet.cli.recognize_command import output_exclusions, recognize_command
from facenet.cli.recognize_output import OutputNames
from facenet.cli.verify_command import verify_command
from facenet.draw import KNOWN_RGB, UNKNOWN_RGB, Label, Window, annotate, label_text
from facenet.gallery.thresholds import calibration
from facenet.images import load_image
from facenet.pipeline import VIDEO_DETECT_SIDE, FacePipeline
from facenet.recognize import Recognition, Recognizer
from facenet.sources import Input, SourceError, VideoSource, collect_inputs
from facenet.verify import UnverifiablePhotos, verify_photos

DATA = Path(__file__).parent / "data"
PEOPLE, MISC = DATA / "people", DATA / "misc"

ENROLLED = {
    "George Clooney": ("George_Clooney", (3, 4)),
    "Juanes": ("Juanes", (1, 2)),
    "Adél Al-Jubeir": ("Adel_Al-Jubeir", (1, 2)),
    "Jon_Voight": ("Jon_Voight", (1, 2)),
    "Martha_Burk": ("Martha_Burk", (1, 2)),
}
HELD_OUT = [("George_Clooney", 5, "George Clooney"), ("Juanes", 3, "Juanes"), ("Adel_Al-Jubeir", 3, "Adél Al-Jubeir")]
STRANGERS = [("Mary_Carey", 1), ("Paul_Tagliabue", 2)]
JSON_KEYS = {"source", "frame", "box", "name", "distance", "score"}
VERIFY_THRESHOLD = calibration("dlib").verify_threshold


def photo(folder: str, number: int) -> Path:
    return PEOPLE / folder / f"{folder}_{number:04d}.jpg"


def fit_640x480(image: np.ndarray, shift: int = 0) -> np.ndarray:
    """A real photo upscaled into a 640x480 black frame (a webcam-sized frame), optionally shifted right."""
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[40:440, 120 + shift : 520 + shift] = cv2.resize(image, (400, 400), interpolation=cv2.INTER_CUBIC)
    return frame


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("enroll") / "data"
    for name, (folder, numbers) in ENROLLED.items():
        (root / name).mkdir(parents=True)
        for number in numbers:
            shutil.copy2(photo(folder, number), root / name)
    return root


@pytest.fixture(scope="module")
def database(data_dir, pipeline):
    from facenet.gallery.file import sync_database

    return sync_database(data_dir, data_dir.parent / "database", pipeline)[0]


@pytest.fixture
def recognizer(pipeline, database) -> Recognizer:
    return Recognizer(pipeline, database)


@pytest.fixture
def fast_model(monkeypatch, pipeline) -> list[tuple]:
    """The commands use the session's pipeline instead of loading the model again (the CLI tests load it);
    returns the (detector, model, weights_dir, trained_dir) each command asked for."""
    asked = []

    def load_pipeline(detector, model, weights_dir, trained_dir=None):
        asked.append((detector, model, weights_dir, trained_dir))
        return pipeline

    monkeypatch.setattr(common, "load_pipeline", load_pipeline)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return asked


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- sources


def test_collect_inputs_walks_folders_and_keeps_order(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy2(MISC / "two_people.jpg", folder / "b.jpg")
    shutil.copy2(MISC / "camera.png", folder / "sub" / "a.png")
    write_video(folder / "clip.mp4", [load_image(MISC / "two_people.jpg")] * 2)
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".hidden.jpg").write_bytes(b"")
    (folder / "out").mkdir()
    shutil.copy2(MISC / "dogs.jpg", folder / "out" / "old_result.jpg")
    single = MISC / "rocket.jpg"

    items, errors = collect_inputs([str(single), str(folder), str(tmp_path / "missing.jpg")], exclude=[folder / "out"])

    assert [(i.path.name, i.kind) for i in items] == [
        ("rocket.jpg", "photo"), ("b.jpg", "photo"), ("clip.mp4", "video"), ("a.png", "photo")]
    assert items[0].source == str(single) and items[0].relative == Path("rocket.jpg")
    assert items[3].relative == Path("in/sub/a.png") and items[3].source == str(folder / "sub" / "a.png")
    assert [str(e) for e in errors] == [f"{tmp_path / 'missing.jpg'}: no such file or folder"]


def test_video_source_yields_numbered_rgb_frames(tmp_path):
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 220
    path = write_video(tmp_path / "red.mp4", [red] * 5, fps=12)
    with VideoSource.open_file(path) as video:
        frames = list(video)
        assert video.fps == pytest.approx(12, abs=0.5)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    image = frames[2].image
    assert image.shape == (48, 64, 3) and image[..., 0].mean() > 180 > 40 > image[..., 2].mean()


def test_unreadable_video_and_missing_camera_raise_one_line_errors(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(SourceError, match=r"fake\.mp4: cannot open video"):
        VideoSource.open_file(fake)
    with pytest.raises(SourceError, match="no such video"):
        VideoSource.open_file(tmp_path / "absent.mp4")
    with pytest.raises(SourceError, match="camera 99: cannot open the webcam") as error:
        VideoSource.open_camera(99)
    assert "\n" not in str(error.value)


def test_output_names_mirror_inputs_and_never_overwrite(tmp_path):
    data = tmp_path / "data"
    (data / "Ann").mkdir(parents=True)
    inputs = [Input(tmp_path / "x.jpg", "x.jpg", "photo", Path("x.jpg")),
              Input(tmp_path / "a" / "x.jpg", "a/x.jpg", "photo", Path("x.jpg")),
              Input(data / "Ann" / "1.jpg", "data/Ann/1.jpg", "photo", Path("Ann/1.jpg"))]
    names = OutputNames(tmp_path, inputs, data)  # output folder == the folder of the first input
    assert names.path_for(inputs[0], ".jpg") == tmp_path / "x-2.jpg"  # x.jpg itself is an input
    assert names.path_for(inputs[1], ".jpg") == tmp_path / "x-3.jpg"
    assert names.path_for(inputs[1], ".mp4") == tmp_path / "x.mp4"
    assert OutputNames(tmp_path, inputs, tmp_path).path_for(inputs[2], ".jpg") is None  # would land in data/


# --------------------------------------------------------------------------- drawing


def test_annotate_boxes_known_green_unknown_red_without_touching_the_input():
    image = load_image(MISC / "two_people.jpg")
    before = image.copy()
    labels = [Label((100, 50, 300, 250), "Zoë Ñúñez", 84.0), Label((600, 60, 800, 260), config.UNKNOWN, 20.0)]
    out = annotate(image, labels)
    assert np.array_equal(image, before) and out.shape == image.shape and out is not image
    assert tuple(out[150, 100]) == KNOWN_RGB and tuple(out[150, 299]) == KNOWN_RGB
    assert tuple(out[160, 600]) == UNKNOWN_RGB
    assert tuple(out[150, 200]) == tuple(image[150, 200])  # inside the box untouched
    label = out[251:270, 100:180]
    assert (label == KNOWN_RGB).all(axis=-1).mean() > 0.4 and (label.min(axis=-1) > 240).any()  # text on green
    assert np.array_equal(annotate(image, []), image)
    assert label_text("Ann", 84.4) == "Ann (score 84)" and label_text("Ann", None) == "Ann"


def test_an_unknown_face_is_labelled_unknown_without_the_nearest_person_s_score():
    from facenet.cli.recognize_output import describe

    faces = [Recognition((0, 0, 9, 9), "Ann", 0.312, 78.4), Recognition((0, 0, 9, 9), config.UNKNOWN, 0.7351, 31.0),
             Recognition((0, 0, 9, 9), config.UNKNOWN, None, None)]
    assert describe(faces) == "Ann (0.31, score 78), Unknown (0.74), Unknown"  # the CLI's line, as the page says it
    assert label_text(config.UNKNOWN, 48.0) == label_text(config.UNKNOWN, None) == "Unknown"
    assert label_text("Ann", 48.0) == "Ann (score 48)"  # a named face keeps its score
    image = load_image(MISC / "two_people.jpg")
    box = (600, 60, 800, 260)
    assert np.array_equal(annotate(image, [Label(box, config.UNKNOWN, 48.0)]),
                          annotate(image, [Label(box, config.UNKNOWN, None)]))  # the drawn label too
    assert not np.array_equal(annotate(image, [Label(box, "Ann", 48.0)]), annotate(image, [Label(box, "Ann", None)]))


def test_label_goes_above_a_box_at_the_bottom_edge():
    image = np.zeros((100, 200, 3), np.uint8)
    out = annotate(image, [Label((50, 40, 150, 100), "Ann", 90.0)])
    assert (out[30:39, 50:80] == KNOWN_RGB).all(axis=-1).any()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="$DISPLAY decides only on Linux")
def test_no_window_without_a_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    window, problem = Window.open("test")
    assert window is None and "DISPLAY" in problem


# --------------------------------------------------------------------------- the per-frame pipeline


@pytest.mark.parametrize(("folder", "number", "name"), HELD_OUT)
def test_held_out_photos_are_named(recognizer, database, folder, number, name):
    image = load_image(photo(folder, number))
    (result,) = recognizer.recognize(image)
    assert result.name == name
    assert result.distance < database.threshold and result.score > 50
    left, top, right, bottom = result.box
    assert 0 <= left < right <= image.shape[1] and 0 <= top < bottom <= image.shape[0]


@pytest.mark.parametrize(("folder", "number"), STRANGERS)
def test_strangers_are_unknown_until_the_threshold_is_loosened(pipeline, database, folder, number):
    image = load_image(photo(folder, number))
    (strict,) = Recognizer(pipeline, database).recognize(image)
    assert strict.name == config.UNKNOWN and strict.distance > database.threshold and strict.score < 50
    (loose,) = Recognizer(pipeline, database, threshold=1.9).recognize(image)
    assert loose.name in ENROLLED and loose.distance == pytest.approx(strict.distance)


def test_a_tight_threshold_rejects_even_the_right_person(pipeline, database):
    (result,) = Recognizer(pipeline, database, threshold=0.05).recognize(load_image(photo("Juanes", 3)))
    assert result.name == config.UNKNOWN and result.distance > 0.05


def test_every_face_of_a_frame_in_one_batch_and_one_lookup(embedder, detector, database):
    calls = {"embed": [], "identify": []}

    class Spy:
        def __init__(self, target, key):
            self.target, self.key = target, key

        def __getattr__(self, attr):
            return getattr(self.target, attr)

        def __len__(self):
            return len(self.target)

        def embed(self, chips):
            calls["embed"].append({kind: len(batch) for kind, batch in chips.items()})
            return self.target.embed(chips)

        def identify(self, embeddings, threshold=None):
            calls["identify"].append(len(embeddings))
            return self.target.identify(embeddings, threshold)

    image = load_image(MISC / "2008_001322.jpg")
    results = Recognizer(FacePipeline(detector, Spy(embedder, "embed")), Spy(database, "identify")).recognize(image)
    assert [r.box for r in results] == [f.box for f in detector.detect(image)]
    assert len(results) == 3 and calls == {"embed": [{"dlib": 3}], "identify": [3]}
    assert all(r.name == config.UNKNOWN for r in results)


def test_video_frames_detect_downscaled_and_reuse_unchanged_frames(embedder, detector, database):
    seen = []

    class CountingDetector:
        def __getattr__(self, attr):
            return getattr(detector, attr)

        def detect(self, image, max_side=None, sensitive=False):
            seen.append(max_side)
            assert not sensitive  # recognition never falls back to the sensitive pass
            return detector.detect(image, max_side=max_side, sensitive=sensitive)

    recognizer = Recognizer(FacePipeline(CountingDetector(), embedder), database)
    frame = fit_640x480(load_image(photo("George_Clooney", 5)))
    (first,) = recognizer.recognize(frame, video=True)
    assert first.name == "George Clooney" and seen == [VIDEO_DETECT_SIDE]
    noisy = np.clip(frame.astype(int) + np.random.default_rng(0).integers(-2, 3, frame.shape), 0, 255)
    assert recognizer.recognize(noisy.astype(np.uint8), video=True) == [first] and len(seen) == 1
    (moved,) = recognizer.recognize(fit_640x480(load_image(photo("George_Clooney", 5)), shift=60), video=True)
    assert len(seen) == 2 and moved.name == "George Clooney"
    assert abs((moved.box[0] - first.box[0]) - 60) <= 8
    recognizer.reset()
    recognizer.recognize(frame, video=True)
    assert len(seen) == 3 and (recognizer.analysed, recognizer.reused) == (3, 1)
    every = Recognizer(FacePipeline(CountingDetector(), embedder), database, reuse_still=False)
    every.recognize(frame, video=True)
    every.recognize(frame, video=True)
    assert len(seen) == 5


def test_exif_rotated_photo_is_found_upright(tmp_path, detector, recognizer):
    from PIL import Image

    rotated = Image.open(photo("George_Clooney", 5)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert detector.detect(np.asarray(rotated)) == []  # sideways, the face is not found...
    (result,) = recognizer.recognize(load_image(tmp_path / "rotated.jpg"))  # ...upright it is, and named
    assert result.name == "George Clooney"


# --------------------------------------------------------------------------- commands


def run_recognize(tmp_path, data_dir, inputs, **overrides) -> int:
    arguments = dict(web_cam=False, inputs=[str(p) for p in inputs], camera=0, output_dir=tmp_path / "out",
                     data_dir=data_dir, database_dir=data_dir.parent / "database", weights_dir="unused",
                     model="dlib", detector="hog", threshold=None, as_json=True, enroll_only=False)
    arguments.update(overrides)
    return recognize_command(**arguments)


def test_recognize_command_names_photos_and_video_frames(tmp_path, data_dir, fast_model, capsys, caplog):
    caplog.set_level("INFO")
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy2(photo("Juanes", 3), folder / "juanes.jpg")
    shutil.copy2(MISC / "two_people.jpg", folder / "two.jpg")
    george = fit_640x480(load_image(photo("George_Clooney", 6)))
    stranger = fit_640x480(load_image(photo("Mary_Carey", 1)))
    write_video(folder / "clip.mp4", [george] * 4 + [stranger] * 3)

    assert run_recognize(tmp_path, data_dir, [folder]) == 0
    assert fast_model == [("hog", "dlib", "unused", data_dir.parent / "database")]  # the gallery's own weights

    captured = capsys.readouterr()
    records = json_lines(captured.out)
    assert all(set(r) == JSON_KEYS for r in records)
    photos = [r for r in records if r["frame"] is None]
    assert sorted((Path(r["source"]).name, r["name"]) for r in photos) == [
        ("juanes.jpg", "Juanes"), ("two.jpg", config.UNKNOWN), ("two.jpg", config.UNKNOWN)]
    frames = [r for r in records if r["frame"] is not None]
    assert [r["frame"] for r in frames] == list(range(7))
    assert [r["name"] for r in frames] == ["George Clooney"] * 4 + [config.UNKNOWN] * 3
    assert {r["source"] for r in frames} == {str(folder / "clip.mp4")}
    for r in records:
        left, top, right, bottom = r["box"]
        assert left < right and top < bottom and 0 <= r["score"] <= 100 and 0 <= r["distance"] <= 2
    out = tmp_path / "out" / "inputs"
    assert load_image(out / "two.jpg").shape == load_image(folder / "two.jpg").shape
    assert count_frames(out / "clip.mp4") == 7
    assert "Done: 3 files (2 photos, 1 video), 9 frames, 10 faces" in captured.err
    assert "George Clooney x4" in captured.err and "unknown: 5" in captured.err
    assert any("no display" in m and "without a preview window" in m for m in caplog.messages)


def test_bad_inputs_are_named_and_the_run_goes_on(tmp_path, data_dir, fast_model, capsys, caplog):
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "broken.mp4").write_text("not a video")
    shutil.copy2(photo("Juanes", 3), folder / "ok.jpg")
    assert run_recognize(tmp_path, data_dir, [folder, tmp_path / "nowhere"]) == 1
    warnings = [m for m in caplog.messages if "empty.jpg" in m or "broken.mp4" in m or "nowhere" in m]
    assert len(warnings) == 3
    lines = json_lines(capsys.readouterr().out)
    assert [r["name"] for r in lines if "box" in r] == ["Juanes"]
    assert {Path(r["source"]).name: r["error"] for r in lines if "error" in r} == {
        "empty.jpg": "empty file (0 bytes)", "broken.mp4": "cannot open video (unknown or corrupt format)",
        "nowhere": "no such file or folder"}


def test_headless_webcam_writes_a_bounded_annotated_stream(tmp_path, data_dir, fast_model, monkeypatch, capsys,
                                                           caplog):
    clip = write_video(tmp_path / "camera.mp4", [fit_640x480(load_image(photo("Juanes", 3)))] * 12)
    monkeypatch.setattr(VideoSource, "open_camera",
                        classmethod(lambda cls, index: cls(cv2.VideoCapture(str(clip)), f"camera {index}", live=True)))
    monkeypatch.setattr(recognize_command_module, "HEADLESS_WEBCAM_FRAMES", 5)
    assert run_recognize(tmp_path, data_dir, [], web_cam=True, camera=3) == 0
    records = json_lines(capsys.readouterr().out)
    faces, events = [r for r in records if "source" in r], [r for r in records if "event" in r]
    assert [(r["frame"], r["name"], r["source"], r["track"]) for r in faces] == [
        (i, "Juanes", "camera 3", 1) for i in range(5)], "the webcam is tracked like every live camera"
    assert [(e["event"], e["camera"], e["name"]) for e in events] == [
        (kind, "camera 3", "Juanes") for kind in ("appeared", "named", "left")]
    assert count_frames(tmp_path / "out" / "webcam3.mp4") == 5
    assert any("webcam3.mp4" in m and "5 frames" in m for m in caplog.messages)


def test_missing_camera_fails_with_one_line(tmp_path, data_dir, fast_model, caplog):
    assert run_recognize(tmp_path, data_dir, [], web_cam=True, camera=99) == 1
    assert [m for m in caplog.messages if "camera 99" in m] == [
        "camera 99: cannot open the webcam (no such camera, or it is in use)"]


def test_empty_data_folder_names_everyone_unknown_without_a_placeholder_distance(tmp_path, fast_model, capsys,
                                                                                 caplog):
    empty = tmp_path / "data"
    empty.mkdir()
    assert run_recognize(tmp_path, empty, [photo("Juanes", 3)]) == 0
    (record,) = json_lines(capsys.readouterr().out)
    assert set(record) == JSON_KEYS
    assert (record["name"], record["distance"], record["score"]) == (config.UNKNOWN, None, None)  # JSON null
    assert any("nobody is enrolled" in m for m in caplog.messages)
    # the human output: the name alone, no made-up number
    assert run_recognize(tmp_path, empty, [photo("Juanes", 3)], as_json=False, output_dir=tmp_path / "out2") == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert line == f"{photo('Juanes', 3)}: {config.UNKNOWN}"
    assert load_image(tmp_path / "out2" / "Juanes_0003.jpg").shape == load_image(photo("Juanes", 3)).shape


def test_nobody_enrolled_gives_unknown_with_no_distance(pipeline):
    from facenet.gallery.index import FaceDatabase

    nobody = FaceDatabase([], np.zeros((0, 128)), pipeline.model_id, model="dlib", dim=128)
    results = Recognizer(pipeline, nobody).recognize(load_image(MISC / "two_people.jpg"))
    assert len(results) == 2
    assert all((r.name, r.distance, r.score) == (config.UNKNOWN, None, None) for r in results)
    record = results[0].record("x.jpg", None)
    assert (record["distance"], record["score"]) == (None, None)
    assert json.loads(json.dumps(record)) == record
    assert label_text(results[0].label().name, results[0].label().score) == config.UNKNOWN
    assert Recognition((0, 0, 1, 1), "Ann", 0.31234, 77.77).record("y", 3) == {
        "source": "y", "frame": 3, "box": [0, 0, 1, 1], "name": "Ann", "distance": 0.3123, "score": 77.8}


def test_enroll_only_prints_the_report_as_one_json_line(tmp_path, data_dir, fast_model, capsys):
    assert run_recognize(tmp_path, data_dir, ["does-not-matter"], enroll_only=True) == 0
    (report,) = json_lines(capsys.readouterr().out)
    assert sorted(report["people"]) == sorted(ENROLLED)
    assert report["duplicates"] == [] and report["fingerprint"].startswith("dlib:")
    assert not (tmp_path / "out").exists()


def test_commands_ask_for_the_model_detector_and_the_gallerys_weights(tmp_path, data_dir, fast_model, capsys):
    """Trained weights are per gallery: recognition asks for --database_dir's unless --pretrained; --verify for the
    gallery it is given (the command line passes --database_dir unless --pretrained)."""
    assert run_recognize(tmp_path, data_dir, ["x"], enroll_only=True, pretrained=True) == 0
    assert run_recognize(tmp_path, data_dir, ["x"], enroll_only=True) == 0
    assert verify_command([str(photo("Juanes", 1)), str(photo("Juanes", 3))], True, None, "hog", "dlib", "w",
                          trained_dir="g") == 0
    assert verify_command([str(photo("Juanes", 1)), str(photo("Juanes", 3))], True, None, "hog", "dlib", "w") == 0
    capsys.readouterr()
    assert fast_model == [("hog", "dlib", "unused", None), ("hog", "dlib", "unused", data_dir.parent / "database"),
                          ("hog", "dlib", "w", "g"), ("hog", "dlib", "w", None)]


def test_unusable_trained_weights_stop_the_commands_with_one_line(tmp_path, weights_dir, embedder, caplog, capsys):
    folder = tmp_path / "w"
    shutil.copytree(weights_dir, folder)
    from facenet.models.trained import trained_weights_path

    gallery = tmp_path / "db"
    gallery.mkdir()
    corrupt = trained_weights_path(gallery, "dlib")
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    data = tmp_path / "data"
    data.mkdir()
    code = recognize_command(web_cam=False, inputs=[str(photo("Juanes", 3))], camera=0, output_dir=tmp_path / "out",
                             data_dir=data, database_dir=gallery, weights_dir=folder, model="dlib",
                             detector="hog", threshold=None, as_json=True, enroll_only=False)
    assert code == 1 and capsys.readouterr().out == ""
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert str(corrupt) in error.getMessage() and "--pretrained" in error.getMessage()
    assert sorted(p.name for p in gallery.iterdir()) == [corrupt.name] and not (tmp_path / "out").exists()
    caplog.clear()
    pair = [str(photo("Juanes", 1)), str(photo("Juanes", 3))]
    assert verify_command(pair, True, None, "hog", "dlib", folder, trained_dir=gallery) == 1
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert str(corrupt) in error.getMessage()
    (answer,) = json_lines(capsys.readouterr().out)  # --json: the failure is the one answer on stdout too
    assert set(answer) == {"error"} and answer["error"] == error.getMessage()
    assert answer["error"].startswith("cannot load the model: ")
    caplog.clear()
    assert verify_command(pair, False, None, "hog", "dlib", folder, trained_dir=gallery) == 1
    assert capsys.readouterr().out == ""  # without --json stdout stays empty
    # --pretrained (no gallery's weights) ignores the file
    assert verify_command(pair, True, None, "hog", "dlib", folder) == 0
    assert json_lines(capsys.readouterr().out)[0]["same"] is True


def test_bad_arguments_exit_2(tmp_path, data_dir, fast_model, capsys):
    assert run_recognize(tmp_path, data_dir, [MISC], output_dir=data_dir / "out") == 2
    assert run_recognize(tmp_path, data_dir, [MISC], threshold=-1.0) == 2
    assert capsys.readouterr().err.count("error:") == 2


def test_verify_same_and_different_people(fast_model, capsys):
    assert verify_command([str(photo("Juanes", 1)), str(photo("Juanes", 3))], True, None, "hog", "dlib", "") == 0
    assert verify_command([str(photo("Juanes", 1)), str(photo("George_Clooney", 5))], True, None, "hog",
                          "dlib", "") == 0
    assert verify_command([str(photo("Juanes", 1)), str(photo("George_Clooney", 5))], True, 1.9, "hog",
                          "dlib", "") == 0
    same, different, loose = json_lines(capsys.readouterr().out)
    assert set(same) == {"same", "distance", "threshold"}
    assert same["same"] is True and same["distance"] < VERIFY_THRESHOLD == same["threshold"]
    assert different["same"] is False and different["distance"] > VERIFY_THRESHOLD
    assert loose == {"same": True, "distance": different["distance"], "threshold": 1.9}


def test_verify_threshold_follows_the_distance_scale_of_trained_weights(pipeline, monkeypatch, capsys):
    from facenet.models.embed import Embedder

    spread = FacePipeline(pipeline.detector, Embedder(pipeline.embedder.model, "dlib", distance_scale=2.0))
    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kwargs: spread)
    assert verify_command([str(photo("Juanes", 1)), str(photo("George_Clooney", 5))], True, None, "hog", "dlib",
                          "") == 0
    (answer,) = json_lines(capsys.readouterr().out)
    assert answer["threshold"] == round(2.0 * VERIFY_THRESHOLD, 4)


def test_verify_prints_a_verdict_for_people(fast_model, capsys):
    assert verify_command([str(photo("Juanes", 1)), str(MISC / "two_people.jpg")], False, None, "hog",
                          "dlib", "") == 0
    out = capsys.readouterr().out
    assert out.startswith("different people: distance ") and "> threshold" in out


def test_verify_errors(fast_model, capsys, caplog):
    assert verify_command([str(MISC / "dogs.jpg")], False, None, "hog", "dlib", "") == 2
    assert capsys.readouterr().err == "usage: facenet --verify=A.jpg,B.jpg (exactly two photos, got 1)\n"
    assert verify_command(["a", "b", "c"], True, None, "hog", "dlib", "", prog="python -m facenet.cli") == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "usage: python -m facenet.cli --verify=A.jpg,B.jpg (exactly two photos, got 3)\n"
    assert fast_model == []  # refused before loading anything
    assert verify_command([str(MISC / "dogs.jpg"), str(photo("Juanes", 1))], False, None, "hog", "dlib", "") == 1
    assert capsys.readouterr().out == ""
    assert [m for m in caplog.messages if "dogs.jpg" in m] == [f"{MISC / 'dogs.jpg'}: no face"]
    caplog.clear()
    assert verify_command([str(MISC / "truncated.jpg"), str(photo("Juanes", 1))], True, None, "hog", "dlib", "") == 1
    assert any(m.startswith(f"{MISC / 'truncated.jpg'}: unreadable: cannot decode") for m in caplog.messages)
    (error,) = json_lines(capsys.readouterr().out)  # --json: exactly one object, naming the photo
    assert set(error) == {"error"} and error["error"].startswith(f"{MISC / 'truncated.jpg'}: unreadable: ")


def test_verify_json_on_a_faceless_photo_prints_one_error_object(fast_model, capsys):
    assert verify_command([str(MISC / "dogs.jpg"), str(MISC / "rocket.jpg")], True, None, "hog", "dlib", "") == 1
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    assert json.loads(out) == {"error": f"{MISC / 'dogs.jpg'}: no face; {MISC / 'rocket.jpg'}: no face"}


def test_verify_photos_returns_the_answer_and_raises_on_a_bad_photo(pipeline):
    answer = verify_photos(pipeline, [photo("Juanes", 1), photo("Juanes", 3)])
    assert answer.same is True and answer.distance < answer.threshold == VERIFY_THRESHOLD
    loose = verify_photos(pipeline, [photo("Juanes", 1), photo("George_Clooney", 5)], threshold=1.9)
    assert loose.same is True and loose.threshold == 1.9
    with pytest.raises(UnverifiablePhotos) as raised:
        verify_photos(pipeline, [MISC / "dogs.jpg", MISC / "rocket.jpg"])
    assert raised.value.problems == [f"{MISC / 'dogs.jpg'}: no face", f"{MISC / 'rocket.jpg'}: no face"]
    with pytest.raises(ValueError, match="exactly two photos, got 1"):
        verify_photos(pipeline, [photo("Juanes", 1)])


# --------------------------------------------------------------------------- the output folder among the inputs


def test_output_folder_apart_from_the_inputs_is_left_out_whole(tmp_path):
    (tmp_path / "in" / "output").mkdir(parents=True)
    assert output_exclusions([str(tmp_path / "in")], tmp_path / "in" / "output") == [tmp_path / "in" / "output"]
    assert output_exclusions([str(tmp_path / "x.jpg")], tmp_path / "out") == [tmp_path / "out"]


def test_output_folder_that_is_or_holds_an_input_folder_leaves_out_only_where_it_writes(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    assert output_exclusions([str(photos)], photos) == [photos / "photos"]
    deep = tmp_path / "out" / "b" / "a"
    deep.mkdir(parents=True)
    assert output_exclusions([str(deep)], tmp_path / "out") == [tmp_path / "out" / "a"]
    # the copies would land among the photos to recognise: refused
    problem = output_exclusions([str(photos / "sub")], photos)
    assert problem == (f"--output_dir {photos} would write the annotated copies into the --input folder "
                       f"{photos / 'sub'}: choose another output folder")
    (photos / "photos").mkdir()
    assert isinstance(output_exclusions([str(photos), str(photos / "photos")], photos), str)


def test_input_folder_as_its_own_output_folder(tmp_path, data_dir, fast_model, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy2(photo("Juanes", 3), folder / "juanes.jpg")
    shutil.copy2(photo("George_Clooney", 5), folder / "george.jpg")
    for run in range(2):  # the second run reads the same two photos, not the copies the first one wrote
        assert run_recognize(tmp_path, data_dir, [folder], output_dir=folder) == 0, run
        out, err = capsys.readouterr()
        assert sorted((Path(r["source"]).name, r["name"]) for r in json_lines(out)) == [
            ("george.jpg", "George Clooney"), ("juanes.jpg", "Juanes")]
        assert "nothing to recognise" not in err and "Done: 2 files (2 photos, 0 videos)" in err
        assert sorted(p.name for p in (folder / "photos").iterdir()) == ["george.jpg", "juanes.jpg"]
    assert sorted(p.name for p in folder.iterdir()) == ["george.jpg", "juanes.jpg", "photos"]  # inputs untouched


def test_output_folder_that_would_mix_copies_with_inputs_exits_2(tmp_path, data_dir, fast_model, capsys):
    inside = tmp_path / "out" / "inputs"
    inside.mkdir(parents=True)
    shutil.copy2(photo("Juanes", 3), inside / "juanes.jpg")
    assert run_recognize(tmp_path, data_dir, [inside], output_dir=tmp_path / "out") == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == (f"error: --output_dir {tmp_path / 'out'} would write the annotated copies "
                                         f"into the --input folder {inside}: choose another output folder")
    assert fast_model == [] and sorted(p.name for p in inside.iterdir()) == ["juanes.jpg"]
