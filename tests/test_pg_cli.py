"""`--database_url` end to end on a real PostgreSQL + pgvector (pgserver): two folders enrolled into one gallery,
a recognition client with only the URL (no data/, no database/) names people from another working folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parents[1]
PEOPLE = Path(__file__).parent / "data" / "people"


@pytest.fixture
def url(pg_url) -> str:
    """This test's own empty database on the run's one server (tests/conftest.py)."""
    return pg_url


def facenet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "main.py"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def folder(root: Path, people: dict[str, list[str]]) -> Path:
    for name, photos in people.items():
        (root / name).mkdir(parents=True)
        for photo in photos:
            shutil.copy2(PEOPLE / name / photo, root / name / photo)
    return root


def test_two_folders_one_gallery_and_a_read_only_client(url, tmp_path):
    first = folder(tmp_path / "site_a", {"Juanes": ["Juanes_0001.jpg", "Juanes_0002.jpg"]})
    second = folder(tmp_path / "site_b", {"Martha_Burk": ["Martha_Burk_0001.jpg", "Martha_Burk_0002.jpg"]})
    for data in (first, second):
        run = facenet("--enroll", "--json", "--data_dir", str(data), "--database_url", url, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout.splitlines()[-1])
        assert report["people"] == 1 and report["embedded"] == 2
    client = tmp_path / "camera_room"
    client.mkdir()
    run = facenet("-t", "False", "-wc", "False", "--json", "--database_url", url, "--output_dir", str(tmp_path / "o"),
                  "--input", str(PEOPLE / "Juanes" / "Juanes_0003.jpg"), cwd=client)
    assert run.returncode == 0, run.stderr
    assert "2 people (read only)" in run.stderr
    (record,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert record["name"] == "Juanes"
    assert list(client.iterdir()) == []  # no data/, database/ or weights/ made there
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM facenet_people").fetchone()[0] == 2


def test_unreachable_server_is_one_line_and_exit_1(tmp_path):
    run = facenet("-t", "False", "-wc", "False", "--database_url", "postgresql://facenet:secret@127.0.0.1:9/x",
                  "--input", str(PEOPLE / "Juanes" / "Juanes_0003.jpg"), cwd=tmp_path)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if "127.0.0.1" in line]
    assert len(lines) == 1 and "secret" not in run.stderr and "Traceback" not in run.stderr
