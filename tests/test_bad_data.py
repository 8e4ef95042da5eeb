"""A data/ folder with entries that cannot be enrolled (issue 14, items 3, 4, 9): symlink loops, names that are not
UTF-8, hidden person folders, dangling symlinks and FIFOs. Each gets a "skipped" line naming it; the rest is
enrolled; nothing blocks, nothing crashes (report and database written)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

from facenet.gallery.file import ENROLLMENT_REPORT, sync_database
from facenet.images import display_path, scan_data_folder

PEOPLE = Path(__file__).parent / "data" / "people"
JUANES = sorted((PEOPLE / "Juanes").glob("*.jpg"))
MARY = sorted((PEOPLE / "Mary_Carey").glob("*.jpg"))

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlinks, FIFOs and byte file names are POSIX")


def bad_data(root: Path) -> Path:
    """data/ with two good people and one of each bad entry; returns the data folder."""
    data = root / "data"
    (data / "Juanes" / "sub").mkdir(parents=True)
    (data / "Mary Carey").mkdir()
    shutil.copy2(JUANES[0], data / "Juanes" / "a.jpg")
    shutil.copy2(JUANES[1], data / "Juanes" / "sub" / "b.jpg")
    shutil.copy2(MARY[0], data / "Mary Carey" / "m.jpg")
    shutil.copy2(MARY[1], os.fsencode(data / "Mary Carey") + b"/caf\xe9.jpg")  # Latin-1 file name
    os.mkdir(os.fsencode(data) + b"/Ren\xe9")  # Latin-1 person folder
    shutil.copy2(JUANES[2], os.fsencode(data) + b"/Ren\xe9/r.jpg")
    (data / ".Hidden Person").mkdir()
    shutil.copy2(JUANES[2], data / ".Hidden Person" / "h.jpg")
    os.symlink("loop.jpg", data / "Juanes" / "loop.jpg")  # a link to itself
    os.symlink("dirloop", data / "dirloop")  # a loop at the top of data/
    os.symlink("gone.jpg", data / "Juanes" / "dangling.jpg")
    os.mkfifo(data / "Juanes" / "pipe.jpg")
    return data


def test_scan_lists_every_bad_entry_with_a_reason(tmp_path):
    data = bad_data(tmp_path)
    layout = scan_data_folder(data)
    assert [(name, [p.name for p in photos]) for name, photos in layout.people] == [
        ("Juanes", ["a.jpg", "b.jpg"]), ("Mary Carey", ["m.jpg"])]
    reasons = {display_path(p.relative_to(data)): reason for p, reason in layout.skipped}
    assert reasons == {
        ".Hidden Person": "hidden folder (its name starts with a dot): not enrolled",
        "Ren\\xe9": "the name is not valid UTF-8 (rename it)",
        "Mary Carey/caf\\xe9.jpg": "the name is not valid UTF-8 (rename it)",
        "dirloop": "symlink loop",
        "Juanes/loop.jpg": "symlink loop",
        "Juanes/dangling.jpg": "dangling symlink (its target is missing)",
        "Juanes/pipe.jpg": "a FIFO (named pipe), not a photo; never opened",
    }


def test_enrollment_goes_on_and_reports_each_bad_entry(tmp_path, pipeline, caplog):
    data = bad_data(tmp_path)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(out=sync_database(data, tmp_path / "db", pipeline)),
                              daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "enrollment blocked (a FIFO opened for reading?)"
    database, report = result["out"]
    assert sorted(database.names) == ["Juanes", "Mary Carey"]
    skipped = {s["path"]: s["reason"] for s in report.skipped}
    assert {".Hidden Person", "Ren\\xe9", "Mary Carey/caf\\xe9.jpg", "dirloop", "Juanes/loop.jpg",
            "Juanes/dangling.jpg", "Juanes/pipe.jpg"} <= set(skipped)
    text = (tmp_path / "db" / f"{ENROLLMENT_REPORT}.txt").read_text(encoding="utf-8")
    assert "Ren\\xe9: the name is not valid UTF-8" in text and "Juanes/pipe.jpg: a FIFO" in text
    stored = json.loads((tmp_path / "db" / f"{ENROLLMENT_REPORT}.json").read_text(encoding="utf-8"))
    assert {s["path"] for s in stored["skipped"]} == set(skipped)
    assert any("Ren\\xe9" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    again, report2 = sync_database(data, tmp_path / "db", pipeline)  # the second sync reuses everything
    assert sorted(again.names) == ["Juanes", "Mary Carey"] and report2.examined == 0


def test_a_dog_is_not_enrolled_as_a_person(tmp_path, weights_dir):
    """dogs.jpg: YuNet's normal pass sees no face, its sensitive pass sees a dog's face. Alone in a folder it is
    not enrolled; beside real photos it is left out (far from them); both are reported as skipped."""
    import facenet

    fused = facenet.face_pipeline(weights_dir=weights_dir)  # the default pipeline: YuNet + fused model
    dogs = Path(__file__).parent / "data" / "misc" / "dogs.jpg"
    data = tmp_path / "data"
    (data / "Rex").mkdir(parents=True)
    shutil.copy2(dogs, data / "Rex" / "dogs.jpg")
    (data / "Juanes").mkdir()
    for photo in JUANES[:2]:
        shutil.copy2(photo, data / "Juanes" / photo.name)
    Image.open(dogs).save(data / "Juanes" / "zz_dog.png")  # other bytes than Rex's copy
    database, report = sync_database(data, tmp_path / "db", fused)
    assert database.names == ["Juanes"] and report.not_enrolled == ["Rex"]
    assert report.people["Juanes"] == [f"Juanes/{p.name}" for p in JUANES[:2]]
    skipped = {s["path"]: s["reason"] for s in report.skipped}
    assert skipped["Rex/dogs.jpg"].startswith("only the detector's sensitive pass found a face")
    assert "no photo of this person found by the normal pass confirms it" in skipped["Rex/dogs.jpg"]
    assert "from the person's other photos" in skipped["Juanes/zz_dog.png"]
    again, report2 = sync_database(data, tmp_path / "db", fused)  # the stored verdicts give the same answer
    assert again.names == ["Juanes"] and {s["path"] for s in report2.skipped} == set(skipped)
