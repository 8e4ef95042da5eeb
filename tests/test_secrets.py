"""Passwords never show (issue 22, item 5): whatever characters a password holds, no message about a database,
camera, MQTT or webhook URL contains it; a URL without a password works with PGPASSWORD (libpq reads it)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from facenet.gallery.pg import GalleryError, PgGallery, mask_url
from facenet.live.streams import parse_cameras

NASTY = ["Xk9/Qz+7Lm", "P@ssw0rd!", "a:b:c?d#e", "qu?ery12", "ha#sh123", "p%2Fq123", "two words here",
         "pä$$wörd", "x@y/z:w?v#u", "end@", "@start", "spaced out@/"]


def spellings(password: str) -> list[str]:
    """The password and the pieces of it long enough to recognise (what must never show)."""
    pieces = {password, quote(password, safe=""), password.replace("%2F", "/")}
    pieces |= {piece for piece in password.replace("@", " ").replace("/", " ").replace(":", " ").split()
               if len(piece) >= 4}
    return sorted(pieces)


def leaked(text: str, password: str) -> list[str]:
    return [piece for piece in spellings(password) if piece in text]


@pytest.mark.parametrize("password", NASTY)
def test_database_messages_never_hold_the_password(password):
    url = f"postgresql://facenet:{password}@127.0.0.1:9/faces"
    shown = mask_url(url)
    assert not leaked(shown, password), shown
    assert shown == "postgresql://facenet@127.0.0.1:9/faces"
    with pytest.raises(GalleryError) as caught:
        PgGallery(url, connect_timeout=2)
    message = str(caught.value)
    assert "cannot connect" in message and "\n" not in message
    assert not leaked(message, password), message


@pytest.mark.parametrize("password", NASTY)
def test_camera_mqtt_and_webhook_messages_never_hold_the_password(password):
    camera = parse_cameras([f"door=rtsp://admin:{password}@10.0.0.2/stream"])[0]
    assert camera.shown == "rtsp://admin:***@10.0.0.2/stream"
    messages = []
    for specs in ([f"door=rtsp://admin:{password}@/stream"],  # no host
                  ["door=rtsp://10.0.0.3/s", f"door=rtsp://admin:{password}@10.0.0.2/stream"]):  # a name twice
        with pytest.raises(ValueError) as caught:
            parse_cameras(specs)
        messages.append(str(caught.value))
    assert "needs a host" in messages[0] and "used twice" in messages[1]
    pytest.importorskip("paho.mqtt")
    from facenet.live.events import MqttPublisher, WebhookPoster

    for make, url in ((MqttPublisher, f"mqtt://user:{password}@:1883"),
                      (WebhookPoster, f"ftp://user:{password}@hooks.example/x")):
        with pytest.raises(ValueError) as caught:
            make(url)
        messages.append(str(caught.value))
    for message in messages:
        assert "***" in message and not leaked(message, password), message


def test_a_url_without_password_uses_pgpassword(tmp_path, monkeypatch, pg_server):
    """A role that needs a password (scram over the socket): the URL without one connects with PGPASSWORD set, a
    wrong PGPASSWORD gets a one-line error without it. (On the run's one server: pg_hba.conf asks the password of
    that role alone.)"""
    psycopg = pytest.importorskip("psycopg")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("DROP DATABASE IF EXISTS sitedb")
        conn.execute("DROP ROLE IF EXISTS site")
        conn.execute("CREATE ROLE site LOGIN PASSWORD 'S3cret/Pass@word'")
        conn.execute("CREATE DATABASE sitedb OWNER site")
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        if "local all site scram-sha-256" not in hba.read_text():
            hba.write_text("local all site scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    info = conninfo_to_dict(admin)
    url = f"postgresql://site@/sitedb?host={info['host']}"
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(GalleryError) as caught:
        PgGallery(url)
    assert "password" in str(caught.value)
    monkeypatch.setenv("PGPASSWORD", "S3cret/Pass@word")
    with PgGallery(url) as gallery:
        assert gallery.stats()["people"] == 0
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:sitedb:site:S3cret/Pass@word\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    with PgGallery(make_conninfo(url)) as gallery:
        assert gallery.meta() is None
    assert os.environ.get("PGPASSWORD") is None


def test_a_silent_server_gives_up_within_the_connect_timeout_whatever_the_database_is_called():
    """A database named connect_timeout_test on a socket that accepts and never answers: GalleryError in ~5 s
    (the URL's text mentions connect_timeout, its parameters do not)."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    url = f"postgresql://facenet@127.0.0.1:{listener.getsockname()[1]}/connect_timeout_test"
    outcome: list[BaseException | float] = []

    def connect() -> None:
        start = time.monotonic()
        try:
            PgGallery(url)
        except GalleryError as error:
            outcome.extend([error, time.monotonic() - start])

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(20)
    for conn in (*accepted, listener):  # unblocks a connect still waiting
        conn.close()
    thread.join(5)
    assert outcome, "still waiting for the silent server after 20 s"
    error, seconds = outcome
    assert 4 <= seconds <= 8, seconds
    assert "cannot connect" in str(error) and "\n" not in str(error)


def test_the_api_refusing_to_fine_tune_a_shared_gallery_never_shows_the_password(tmp_path, pg_database, weights_dir):
    """facenet.Gallery over a PostgreSQL URL with a password (the run's one server trusts the socket, so it connects
    whatever the password): fine_tune's refusal names the gallery without the password, as a URL or a conninfo."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    import facenet

    (tmp_path / "data").mkdir()
    plain = pg_database()
    info = conninfo_to_dict(plain)
    for password, url in (
        ("Fine%2FTune-S3cret", f"postgresql://{info['user']}:Fine%2FTune-S3cret@/{info['dbname']}?host={info['host']}"),
        ("two w0rds S3cret", make_conninfo(plain, password="two w0rds S3cret")),
    ):
        gallery = facenet.Gallery(tmp_path / "data", url, model="dlib", detector="hog", weights_dir=weights_dir,
                                  cache_dir=tmp_path / "cache")
        assert gallery.people == []
        with pytest.raises(ValueError, match="fine-tuning keeps its weights beside a gallery folder") as caught:
            gallery.fine_tune(epochs=1)
        message = str(caught.value)
        assert "***" in message and info["dbname"] in message, message
        assert not leaked(message, password) and "Fine/Tune" not in message, message
