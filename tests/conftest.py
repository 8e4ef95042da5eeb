"""Shared fixtures: the real pretrained dlib embedder, the HOG detector, the face pipeline made of both, the
photos in tests/data, main.py's command line run in-process, and the run's one PostgreSQL + pgvector server with a
fresh database per test.

The expectations of the tests were calibrated on dlib + HOG, so the fixtures name them explicitly (the library's
defaults are YuNet + the fused model).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from facenet.config import PRETRAINED_FILE

DATA = Path(__file__).parent / "data"
MAIN = Path(__file__).resolve().parent.parent / "main.py"
MISC = DATA / "misc"
PEOPLE = DATA / "people"


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A weights folder holding the converted pretrained model (converted once per test session)."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def embedder(weights_dir):
    """The pretrained dlib ResNet twin as an `Embedder` (chips in as {"dlib": (N, 150, 150, 3)})."""
    from facenet.models.build import build_embedder
    from facenet.models.embed import Embedder

    return Embedder(build_embedder("dlib", weights_dir), "dlib")


@pytest.fixture
def weights(tmp_path, embedder, weights_dir) -> Path:
    """A fresh weights folder holding the converted pretrained dlib model (copied, not converted again)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in (PRETRAINED_FILE, PRETRAINED_FILE + ".json"):
        shutil.copy(weights_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def detector():
    """dlib's HOG detector (with its 5-point landmarks)."""
    from facenet.detect.dlib import DlibDetector

    return DlibDetector("hog")


@pytest.fixture(scope="session")
def pipeline(detector, embedder):
    """HOG + dlib as one `FacePipeline`: what enrollment, recognition, training and evaluation run through."""
    from facenet.pipeline import FacePipeline

    return FacePipeline(detector, embedder)


# --------------------------------------------------------------------------- the command line in-process


@dataclass
class InProcess:
    """What `run_in_process` gives: like subprocess.CompletedProcess (returncode, stdout, stderr)."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_in_process(capsys, caplog, monkeypatch) -> Callable[..., InProcess]:
    """`run_in_process(*args, cwd=folder)`: `python main.py *args` in this process, as facenet.cli.app.main runs it
    (preflight's flag parsing and checks, then `run`'s dispatch to the command), without paying a new interpreter
    and TensorFlow import: for tests that need no process of their own (each command keeps one smoke test that
    starts main.py). stderr is what the command printed there plus each log record main.py would show (its
    filter), formatted as its handler does: `LEVEL: message` on one line. No display, as in tests/test_cli.py."""
    from facenet.cli import app
    from facenet.text import OneLineFormatter

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    formatter = OneLineFormatter("%(levelname)s: %(message)s")

    def run(*args: str, cwd: Path) -> InProcess:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        caplog.clear()
        try:
            with caplog.at_level(logging.INFO):
                code, rest = app.preflight([str(MAIN), *args])
                if code is None:
                    code = app.run(rest)
        finally:
            app.FLAGS.unparse_flags()
        out, err = capsys.readouterr()
        logged = "".join(formatter.format(r) + "\n" for r in caplog.records if app._own_info(r))
        return InProcess(code, out, err + logged)

    return run


# --------------------------------------------------------------------------- PostgreSQL + pgvector

_databases = iter(range(1_000_000))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """The one PostgreSQL 16 + pgvector server of the test run (the pgserver wheel, about 2 s to start), deleted
    at the end. Tests get their own database on it (`pg_url`, `pg_database`), never a server of their own; a test
    that stops it (`pg_ctl stop`) starts it again before it ends, whatever happens."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver (requirements-dev.txt) bundles PostgreSQL + pgvector")
    psycopg = pytest.importorskip("psycopg", reason="psycopg[binary] is in requirements.txt")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:  # a throwaway server: no durability needed
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def pg_database(pg_server) -> Callable[..., str]:
    """`pg_database(name=None)`: the URL of a new, empty database on the session's server (named `name`, else a
    fresh name): for module-scoped fixtures and tests that need several."""
    from psycopg import connect, sql
    from psycopg.conninfo import make_conninfo

    def create(name: str | None = None) -> str:
        name = name or f"facenet_{next(_databases)}"
        with connect(pg_server.get_uri(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_conninfo(pg_server.get_uri(), dbname=name)

    return create


@pytest.fixture
def pg_url(pg_database) -> str:
    """A fresh, empty database of this test on the session's server."""
    return pg_database()


@pytest.fixture
def embedded_photos(monkeypatch) -> list[str]:
    """Every photo the pipeline embeds from now on (by file name), counted where it happens."""
    from facenet.pipeline import FacePipeline

    seen: list[str] = []
    real = FacePipeline.embed_photos

    def counted(self, paths, *args, **kwargs):
        seen.extend(Path(p).name for p in paths)
        return real(self, paths, *args, **kwargs)

    monkeypatch.setattr(FacePipeline, "embed_photos", counted)
    return seen
