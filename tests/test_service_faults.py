"""Faults found by a hostile probe of `facenet serve` (issue 22), checked on a real server (uvicorn on a loopback
port, no API keys, as `serve` runs by default): every refusal is a 4xx with one JSON line, and data/ is unchanged
byte for byte afterwards."""

from __future__ import annotations

import threading
import time

import pytest

from tests.test_service import HELD_OUT, files_of, make_data
from tests.test_service_http import free_port

httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, pipeline):
    """(base URL, port, data dir) of the service on 127.0.0.1 without keys (serve's default)."""
    import uvicorn

    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    root = tmp_path_factory.mktemp("faults")
    make_data(root / "data")
    port = free_port()
    app = create_app(GalleryStore(root / "data", pipeline, root / "db"), max_upload=2 << 20, host="127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", port, root / "data"
    server.should_exit = True
    thread.join(timeout=30)


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
