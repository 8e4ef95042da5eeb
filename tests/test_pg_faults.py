"""Shared-gallery faults (issue 14) on a real PostgreSQL + pgvector (pgserver): a site enrolling with another model
must not drop every site's people without --rebuild_gallery; passwords never show, however malformed the URL."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg[binary] is in requirements.txt")

from facenet.cli import common  # noqa: E402
from facenet.gallery.pg import GalleryError, PgGallery, mask_url  # noqa: E402

PEOPLE = Path(__file__).parent / "data" / "people"
OTHER_MODEL, OTHER_DIM = "fused:0123456789abcdef", 256
SITES = {"site_a": ["Ann", "Bob"], "site_b": ["Cy"]}


@pytest.fixture
def url(pg_url) -> str:
    """This test's own empty database on the run's one server (tests/conftest.py)."""
    return pg_url


def unit(seed: str, dim: int) -> np.ndarray:
    vector = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:12], 16)).standard_normal(dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def examine(pending):
    return {sha: {"reason": None} for sha in pending}, {sha: unit(sha, OTHER_DIM) for sha in pending}


def people_in(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM facenet_people ORDER BY name")]


def enroll(tmp_path, pipeline, url: str, monkeypatch, **kwargs) -> int:
    from facenet.cli.recognize_command import recognize_command

    monkeypatch.setattr(common, "load_pipeline", lambda *args, **kw: pipeline)
    data = tmp_path / "data"
    if not data.exists():
        (data / "Juanes").mkdir(parents=True)
        for number in (1, 2):
            shutil.copy2(PEOPLE / "Juanes" / f"Juanes_000{number}.jpg", data / "Juanes")
    return recognize_command(web_cam=False, inputs=[], camera=0, output_dir=tmp_path / "out", data_dir=data,
                             database_dir=tmp_path / "db", weights_dir=tmp_path / "w", model="dlib", detector="hog",
                             threshold=None, as_json=True, enroll_only=True, database_url=url, **kwargs)


def test_another_model_never_drops_other_sites_people_without_rebuild_gallery(url, tmp_path, pipeline, monkeypatch,
                                                                             caplog, capsys):
    with PgGallery(url) as gallery:  # two sites enrolled with the fused model
        for site, names in SITES.items():
            photos = [(name, [(f"{name}/1.jpg", hashlib.sha256(f"{site}/{name}".encode()).hexdigest())])
                      for name in names]
            gallery.sync_photos(photos, examine, OTHER_MODEL, OTHER_DIM)
    assert people_in(url) == ["Ann", "Bob", "Cy"]

    with caplog.at_level(logging.WARNING):
        assert enroll(tmp_path, pipeline, url, monkeypatch) == 1  # a third site, with --model dlib
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "3 people" in errors[0] and "--rebuild_gallery" in errors[0], errors
    assert "\n" not in errors[0] and capsys.readouterr().out == ""
    assert people_in(url) == ["Ann", "Bob", "Cy"]  # nothing dropped, nothing added
    with PgGallery(url) as gallery:
        assert gallery.meta()["model_id"] == OTHER_MODEL

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert enroll(tmp_path, pipeline, url, monkeypatch, rebuild_gallery=True) == 0
    assert people_in(url) == ["Juanes"]
    (dropped,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert "3 people" in dropped and OTHER_MODEL in dropped


def test_the_flag_reaches_the_enrollment(monkeypatch):
    import facenet.cli.recognize_command as command
    from facenet import cli
    from facenet.cli import console

    calls = []
    monkeypatch.setattr(console, "import_tensorflow_quietly", lambda: None)
    monkeypatch.setattr(command, "recognize_command", lambda **kwargs: calls.append(kwargs) or 0)
    for extra, expected in (([], False), (["--rebuild_gallery"], True)):
        code, invocation = cli.preflight(["facenet", "--enroll", "--database_url", "postgresql://x@h/db", *extra])
        assert code is None and cli.run(invocation) == 0
        assert calls.pop()["rebuild_gallery"] is expected
    cli.FLAGS.unparse_flags()


@pytest.mark.parametrize(("url", "secrets"), [
    ("postgresql://site:se%ZZcretPW@127.0.0.1:9/faces", ["se%ZZcretPW", "cretPW"]),
    ("mysql://site:MyPW777@127.0.0.1:9/faces", ["MyPW777"]),
    ("postgresql://site:my secret pw@127.0.0.1:9/faces", ["my secret pw", "secret"]),
    ("postgresql://site:p%40ss%20w0rd@127.0.0.1:9/faces?sslmode=bogus", ["p%40ss%20w0rd", "p@ss w0rd", "w0rd"]),
    ("host=127.0.0.1 port=9 password='two w0rds' dbname", ["two w0rds", "w0rds"]),
])
def test_malformed_urls_never_show_the_password(url, secrets, tmp_path, pipeline, monkeypatch, caplog, capsys):
    with pytest.raises(GalleryError) as caught:
        PgGallery(url)
    message = str(caught.value)
    assert "\n" not in message and "cannot connect" in message
    with caplog.at_level(logging.DEBUG):
        assert enroll(tmp_path, pipeline, url, monkeypatch) == 1
    out, err = capsys.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot connect" in logged
    for text in (message, mask_url(url), out, err, logged):
        assert not [secret for secret in secrets if secret in text], text
