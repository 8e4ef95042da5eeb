"""Faults found by a hostile probe of `facenet serve` (issue 22), checked on a real server (uvicorn on a loopback
port, no API keys, as `serve` runs by default): every refusal is a 4xx with one JSON line, and data/ is unchanged
byte for byte afterwards."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import PEOPLE
from tests.test_service import ENROLLED, HELD_OUT, files_of, make_data
from tests.test_service_http import MAIN, free_port, serve_env, serving

httpx = pytest.importorskip("httpx")

RENE = [PEOPLE / "Juanes" / f"Juanes_{n:04d}.jpg" for n in (1, 2, 3)]


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, pipeline):
    """(base URL, port, data dir) of the service on 127.0.0.1 without keys (serve's default)."""

    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    root = tmp_path_factory.mktemp("faults")
    make_data(root / "data")
    app = create_app(GalleryStore(root / "data", pipeline, root / "db"), max_upload=2 << 20, host="127.0.0.1")
    with serving(app) as (url, port):
        yield url, port, root / "data"


def photo_form() -> dict:
    return {"file": ("me.jpg", HELD_OUT.read_bytes(), "image/jpeg")}


def test_cross_origin_writes_and_foreign_hosts_are_refused_without_keys(open_server):
    url, port, data = open_server
    before = files_of(data)
    faces = f"{url}/api/v1/subjects/Jon_Voight/faces"
    for origin in ("http://evil.example", f"http://localhost:{port + 1}", "null"):
        answer = httpx.post(faces, files=photo_form(), headers={"origin": origin}, timeout=120)
        assert answer.status_code == 403, answer.text
        assert answer.json() == {"detail": f"refused a cross-origin POST from {origin!r}: only the service's own "
                                           "page may change the gallery"}
    for method, path, body in (("POST", "/api/v1/subjects", {"subject": "Mallory"}), ("POST", "/api/v1/sync", None),
                               ("PUT", "/api/v1/subjects/Jon_Voight", {"subject": "Mallory"}),
                               ("DELETE", "/api/v1/subjects/Jon_Voight", None)):
        answer = httpx.request(method, url + path, json=body, headers={"origin": "http://evil.example"})
        assert answer.status_code == 403 and answer.json()["detail"].startswith(
            f"refused a cross-origin {method} from 'http://evil.example'"), answer.text
    no_cors = httpx.post(faces, files=photo_form(), headers={"sec-fetch-site": "same-site"}, timeout=120)
    assert no_cors.status_code == 403 and "Sec-Fetch-Site" in no_cors.json()["detail"]
    # DNS rebinding: evil.example resolves to 127.0.0.1, its page is same-origin with itself
    for method in ("GET", "POST"):
        answer = httpx.request(method, f"{url}/api/v1/subjects", json={"subject": "Mallory"},
                               headers={"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}"})
        assert answer.status_code == 421, answer.text
        assert answer.json() == {"detail": f"refused Host 'evil.example:{port}': this service listens on 127.0.0.1 "
                                           "and answers only to a loopback name (localhost, 127.0.0.1, [::1]) "
                                           "(DNS rebinding)"}
    assert files_of(data) == before
    # the service's own page (same origin) and clients without an Origin (curl) still write
    own = httpx.post(f"{url}/api/v1/subjects", json={"subject": "Zed"}, headers={"origin": url})
    assert own.status_code == 201 and own.json() == {"subject": "Zed"} and (data / "Zed").is_dir()
    by_name = httpx.delete(f"http://localhost:{port}/api/v1/subjects/Zed", headers={"origin": f"http://localhost:{port}"})
    assert by_name.status_code == 200 and by_name.json() == {"subject": "Zed", "deleted_photos": 0}
    proxied = httpx.post(f"{url}/api/v1/subjects", json={"subject": "Zed"},  # nginx in front: Host is upstream's
                         headers={"origin": "https://faces.example.com", "x-forwarded-host": "faces.example.com"})
    assert proxied.status_code == 201 and proxied.json() == {"subject": "Zed"}
    assert httpx.delete(f"{url}/api/v1/subjects/Zed").json() == {"subject": "Zed", "deleted_photos": 0}
    assert files_of(data) == before and not (data / "Zed").exists()


def test_page_and_api_answers_carry_security_headers(open_server):
    url, _, _ = open_server
    for path in ("/", "/static/app.js", "/api/v1/health", "/api/v1/subjects", "/api/v1/nothing"):
        answer = httpx.get(url + path)
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy, path
        assert "frame-ancestors 'none'" in policy and "unsafe" not in policy, path
    docs = httpx.get(url + "/docs")
    assert docs.status_code == 200 and "frame-ancestors 'none'" in docs.headers["content-security-policy"]


def test_a_decomposed_unicode_folder_from_a_mac_is_served_under_its_one_name(open_server):
    """data/Rene + U+0301 (NFD, as copied from a Mac) is the subject "René" (NFC) for sync, listing, uploads and
    recognition, and every later write still works (it was 500 after writing to data/)."""
    url, _, data = open_server
    nfd, nfc = "Rene\u0301", "Ren\u00e9"
    (data / nfd).mkdir()
    shutil.copy2(RENE[0], data / nfd / "rene.jpg")
    try:
        synced = httpx.post(f"{url}/api/v1/sync", timeout=300)
        assert synced.status_code == 200, synced.text
        assert synced.json()["report"]["people"][nfc] == [f"{nfd}/rene.jpg"]
        subjects = {s["subject"]: s for s in httpx.get(f"{url}/api/v1/subjects").json()["subjects"]}
        assert subjects[nfc] == {"subject": nfc, "photos": 1, "enrolled": True}
        for spelling in (nfc, nfd):
            listed = httpx.get(f"{url}/api/v1/subjects/{spelling}/faces")
            assert listed.status_code == 200 and listed.json() == {"subject": nfc, "faces": [
                {"image_id": "rene.jpg", "added_by_service": False, "used": True}]}
        named = httpx.post(f"{url}/api/v1/recognize", files={"file": ("r.jpg", RENE[2].read_bytes())}, timeout=120)
        assert [f["name"] for f in named.json()["faces"]] == [nfc]
        before = files_of(data)
        added = httpx.post(f"{url}/api/v1/subjects/{nfc}/faces", files={"file": ("r.jpg", RENE[1].read_bytes())},
                           timeout=300)
        assert added.status_code == 201, added.text
        image_id = added.json()["image_id"]
        assert added.json() == {"subject": nfc, "image_id": image_id, "created": True, "used": True}
        assert files_of(data) == {**before, f"{nfd}/{image_id}": hashlib.sha256(RENE[1].read_bytes()).hexdigest()}
        assert sorted(p.name for p in data.iterdir()) == sorted([*ENROLLED, nfd])  # no second, NFC folder
        again = httpx.post(f"{url}/api/v1/subjects", json={"subject": nfc})
        assert again.status_code == 409 and again.json() == {"detail": f"subject {nfc!r} already exists"}
        gone = httpx.delete(f"{url}/api/v1/subjects/{nfc}/faces/{image_id}", timeout=300)
        assert gone.status_code == 200 and gone.json() == {"subject": nfc, "deleted": image_id}
        assert files_of(data) == before
    finally:
        shutil.rmtree(data / nfd)
        httpx.post(f"{url}/api/v1/sync", timeout=300)


def test_a_failed_sync_puts_data_back_before_answering(tmp_path, pipeline, monkeypatch):
    """When the sync after a write fails (the shared gallery went down...), data/ is put back before the error."""
    from facenet.gallery.pg import GalleryError
    from facenet.service.store import GalleryStore

    (tmp_path / "data" / "Juanes").mkdir(parents=True)
    shutil.copy2(RENE[0], tmp_path / "data" / "Juanes")
    store = GalleryStore(tmp_path / "data", pipeline, tmp_path / "db")
    mine, _ = store.add_photo("Juanes", RENE[1].read_bytes())
    store.add_subject("Empty")
    (tmp_path / "data" / "Only_api").mkdir()
    shutil.copy2(tmp_path / "data" / "Juanes" / mine, tmp_path / "data" / "Only_api" / mine)
    store.sync()
    before = files_of(tmp_path / "data")
    folders = sorted(p.name for p in (tmp_path / "data").iterdir())

    def down(*_args: object, **_kwargs: object) -> None:
        raise GalleryError("the gallery is unreachable")

    monkeypatch.setattr(store, "_sync", down)
    for write in (lambda: store.add_photo("Juanes", RENE[2].read_bytes()), lambda: store.add_subject("New"),
                  lambda: store.rename_subject("Empty", "Renamed"), lambda: store.delete_photo("Juanes", mine),
                  lambda: store.delete_subject("Only_api"), lambda: store.delete_subject("Empty"),
                  lambda: store.add_photos("Brand new", [(RENE[2].read_bytes(), "r.jpg")], create=True),
                  lambda: store.merge_subject("Only_api", "Juanes"), lambda: store.merge_subject("Empty", "Juanes"),
                  lambda: store.delete_subjects(["Only_api", "Empty"]),
                  lambda: store.delete_photos([("Juanes", mine), ("Only_api", mine)])):
        with pytest.raises(GalleryError, match="unreachable"):
            write()
        assert files_of(tmp_path / "data") == before
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == folders


def huge_png(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height black pixels: a few hundred KB that decode to width * height bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), b"\0" * (width + 1)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_a_small_png_that_decodes_huge_is_refused_by_its_declared_size(open_server):
    url, _, data = open_server
    bomb = huge_png(13000, 13000)
    assert len(bomb) < 1 << 20
    before = files_of(data)
    says = ("big.png: image too large: 13000x13000 pixels (169 Mpx) declared, the limit is 50 Mpx for PNG "
            "(MAX_DECODED_PIXELS in facenet/images.py); refused before decoding")
    for path in ("/api/v1/recognize", "/api/v1/detect", "/api/v1/subjects/Jon_Voight/faces"):
        answer = httpx.post(url + path, files={"file": ("big.png", bomb, "image/png")}, timeout=120)
        assert answer.status_code == 400 and answer.json() == {"detail": says}, (path, answer.text)
    assert files_of(data) == before


def test_the_service_decodes_a_few_photos_at_a_time(open_server, monkeypatch):
    import facenet.images
    from facenet.service.uploads import MAX_DECODES

    url, _, _ = open_server
    decode, running, most, lock = facenet.images._decode, [0], [0], threading.Lock()

    def slow_decode(*args: object, **kwargs: object) -> object:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        try:
            return decode(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(facenet.images, "_decode", slow_decode)
    photo = HELD_OUT.read_bytes()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: httpx.post(f"{url}/api/v1/detect", timeout=120, files={
            "file": ("g.jpg", photo, "image/jpeg")}), range(6)))
    assert [a.status_code for a in answers] == [200] * 6 and all(len(a.json()["faces"]) == 1 for a in answers)
    assert most[0] == MAX_DECODES


def test_deeply_nested_json_is_a_400_not_a_500(open_server):
    url, _, data = open_server
    before = files_of(data)
    nested = b'{"a":' * 50_000
    for path in ("/api/v1/recognize", "/api/v1/verify", "/api/v1/subjects/Jon_Voight/faces"):
        answer = httpx.post(url + path, content=nested, headers={"content-type": "application/json"}, timeout=60)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json() == {"detail": "the JSON body is nested too deeply: send an object of base64 photo fields"}
    subject = httpx.post(f"{url}/api/v1/subjects", content=nested, headers={"content-type": "application/json"})
    assert subject.status_code == 400 and subject.json() == {"detail": "There was an error parsing the body"}
    assert files_of(data) == before
    assert httpx.get(f"{url}/api/v1/health").json()["status"] == "ok"


@pytest.mark.parametrize(("args", "keys", "says"), [
    (("--max_upload_mb", "inf"), None, "error: --max_upload_mb must be more than 0 and finite (MiB), got inf"),
    (("--max_upload_mb", "nan"), None, "error: --max_upload_mb must be more than 0 and finite (MiB), got nan"),
    (("--max_upload_mb", "-1"), None, "error: --max_upload_mb must be more than 0 and finite (MiB), got -1.0"),
    ((), "ok-key,cl\u00e9", "error: FACENET_API_KEYS: an API key holds latin small letter e with acute (U+00E9), "
                          "which an x-api-key header cannot carry: use visible ASCII characters only (letters, "
                          "digits, punctuation)"),
    (("--api_key_file", "keys.txt"), None, "error: keys.txt: line 3: an API key holds latin small letter e with "
                                           "acute (U+00E9), which an x-api-key header cannot carry: use visible "
                                           "ASCII characters only (letters, digits, punctuation)"),
])
def test_serve_refuses_bad_limits_and_keys_up_front(tmp_path, args, keys, says):
    (tmp_path / "keys.txt").write_text("# one key per line\nok-key\nmot-de-passe-\u00e9t\u00e9\n", encoding="utf-8")
    env = {**serve_env(), **({"FACENET_API_KEYS": keys} if keys else {})}
    result = subprocess.run([sys.executable, str(MAIN), "serve", "--port", str(free_port()), *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == says, result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was loaded or written
