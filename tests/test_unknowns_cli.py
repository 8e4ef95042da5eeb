"""`facenet unknowns` and --collect_unknowns as a user types them: strangers of a photo collected, listed, one named
(then recognised by name), one ignored, one forgotten; a face marked "not <name>"; bad requests refused in one line
with data/ untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

DATA = Path(__file__).parent / "data"
TWO = DATA / "misc" / "two_people.jpg"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_strangers_of_a_photo_are_collected_listed_named_ignored_and_forgotten(tmp_path, run_in_process):
    data, db = tmp_path / "data", tmp_path / "db"
    shutil.copytree(DATA / "people" / "Juanes", data / "Juanes")
    where = ["--data_dir", str(data), "--database_dir", str(db)]
    plain = run_in_process("recognize", "--input", str(TWO), "--json", *where, cwd=tmp_path)
    assert plain.returncode == 0 and all("face_id" not in face for face in _json_lines(plain.stdout))
    assert not (db / "unknowns").exists()  # off for photos unless asked

    seen = run_in_process("recognize", "--input", str(TWO), "--json", "--collect_unknowns", *where, cwd=tmp_path)
    faces = _json_lines(seen.stdout)
    assert seen.returncode == 0 and [f["name"] for f in faces] == ["Unknown", "Unknown"]
    listed = run_in_process("unknowns", "--json", *where, cwd=tmp_path)
    groups = json.loads(listed.stdout)["groups"]
    assert sorted(g["id"] for g in groups) == sorted(f["group"] for f in faces)
    assert all(g["faces"] == 1 and g["sources"] == [str(TWO)] and not g["ignored"] for g in groups)
    left, right = faces  # largest first: the left one (x 234) is Obama in this photo

    before = _tree(data)
    for bad, line in ((["--name", "nogroup=Ada"], "no group of unknown faces 'nogroup'"),
                      (["--name", f"{left['group']}=../x"], "cannot be a folder name")):
        refused = run_in_process("unknowns", *bad, *where, cwd=tmp_path)
        assert refused.returncode == 1 and line in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert run_in_process("unknowns", "--name", "Ada", *where, cwd=tmp_path).returncode == 2
    assert _tree(data) == before

    named = run_in_process("unknowns", "--name", f"{left['group']}=Barack Obama", "--json", *where, cwd=tmp_path)
    answer = json.loads(named.stdout)
    assert named.returncode == 0 and answer["subject"] == "Barack Obama" and answer["new_subject"]
    assert sorted(p.name for p in (data / "Barack Obama").iterdir()) == answer["photos"] and answer["photos"]
    again = _json_lines(run_in_process("recognize", "--input", str(TWO), "--json", *where, cwd=tmp_path).stdout)
    assert [f["name"] for f in again] == ["Barack Obama", "Unknown"] and again[0]["box"] == left["box"]

    ignored = run_in_process("unknowns", "--ignore", right["group"], "--json", *where, cwd=tmp_path)
    assert ignored.returncode == 0 and json.loads(ignored.stdout)["ignored"] is True
    forgot = run_in_process("unknowns", "--forget", right["group"], "--json", *where, cwd=tmp_path)
    assert json.loads(forgot.stdout) == {"id": right["group"], "deleted_faces": 1}
    assert json.loads(run_in_process("unknowns", "--json", *where, cwd=tmp_path).stdout) == {"groups": []}

    marked = run_in_process("unknowns", "--not_person", f"{TWO}=Juanes", "--json", *where, cwd=tmp_path)
    assert marked.returncode == 0 and json.loads(marked.stdout)["not"] == "Juanes"
    groups = json.loads(run_in_process("unknowns", "--json", *where, cwd=tmp_path).stdout)["groups"]
    assert [g["id"] for g in groups] == [json.loads(marked.stdout)["group"]]
