"""`python main.py serve` as a real server (uvicorn in a subprocess on a free loopback port), used over HTTP: many
concurrent readers while a writer enrolls, keys and size limits on the wire, and the web page in a real Chromium
(Debian's chromium + chromium-driver, driven by selenium) uploading real photos and reading the browser's fake
webcam (a y4m clip of a real photo)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_service import HELD_OUT, KEY, LFW, STRANGER, files_of, make_data

httpx = pytest.importorskip("httpx")

MAIN = Path(__file__).resolve().parents[1] / "main.py"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
STARTUP_S = 240
CAMERA_PHOTO = HELD_OUT.parent / "George_Clooney_0003.jpg"  # what the fake webcam shows (250x250, centred)
NOBODY = LFW / "Al_Pacino" / "Al_Pacino_0001.jpg"  # never enrolled: Unknown


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "FACENET_API_KEYS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    """(base URL, data dir) of the service in uvicorn on a free loopback port (a thread of this process, sharing
    the test session's pipeline): one API key, a 2 MiB upload limit."""

    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    root = tmp_path_factory.mktemp("serve")
    make_data(root / "data")
    app = create_app(GalleryStore(root / "data", pipeline, root / "db"), frozenset({KEY}), max_upload=2 << 20)
    with serving(app) as (url, _port):
        yield url, root / "data"


@contextlib.contextmanager
def serving(app) -> Iterator[tuple[str, int]]:
    """(base URL, port) of `app` in uvicorn on a free loopback port, a thread of this process; stopped at exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def post_photo(url: str, path: Path, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/recognize", files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                      headers={"x-api-key": key}, timeout=120)


def test_concurrent_readers_while_a_writer_enrolls(server):
    url, data = server
    headers = {"x-api-key": KEY}

    def writer() -> list[int]:
        codes = [httpx.post(f"{url}/api/v1/subjects", json={"subject": "Zach"}, headers=headers).status_code]
        codes.append(httpx.post(f"{url}/api/v1/subjects/Zach/faces", content=STRANGER.read_bytes(), timeout=120,
                                headers={**headers, "content-type": "image/jpeg"}).status_code)
        return codes

    with ThreadPoolExecutor(8) as pool:
        readers = [pool.submit(post_photo, url, HELD_OUT) for _ in range(24)]
        written = pool.submit(writer)
        answers = [r.result() for r in readers]
    assert written.result() == [201, 201]
    assert all(a.status_code == 200 for a in answers)
    assert {tuple(f["name"] for f in a.json()["faces"]) for a in answers} == {("George_Clooney",)}
    assert [f["name"] for f in post_photo(url, STRANGER).json()["faces"]] == ["Zach"]
    assert httpx.delete(f"{url}/api/v1/subjects/Zach", headers=headers).json()["deleted_photos"] == 1
    assert not (data / "Zach").exists()


def test_keys_and_limits_on_the_wire(server):
    url, data = server
    before = files_of(data)
    assert post_photo(url, HELD_OUT, key="wrong").status_code == 401
    assert httpx.get(f"{url}/api/v1/subjects").json() == {
        "detail": "missing or wrong API key (send it in the x-api-key header)"}
    huge = httpx.post(f"{url}/api/v1/recognize", content=b"\xff" * (3 << 20), timeout=60,
                      headers={"x-api-key": KEY, "content-type": "image/jpeg"})
    assert huge.status_code == 413 and "limit is 2.0 MiB" in huge.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(48):
            yield b"\xff" * (64 << 10)

    streamed = httpx.post(f"{url}/api/v1/recognize", content=chunks(), timeout=60,
                          headers={"x-api-key": KEY, "content-type": "image/jpeg"})
    assert streamed.status_code == 413
    broken = httpx.post(f"{url}/api/v1/subjects/Jon_Voight/faces", files={"file": ("x.jpg", b"\xff\xd8\xff garbage")},
                        headers={"x-api-key": KEY})
    assert broken.status_code == 400 and broken.json()["detail"].startswith("x.jpg: ")
    assert files_of(data) == before
    assert post_photo(url, HELD_OUT).status_code == 200  # the server is still fine


def test_facenet_serve_command_serves_until_stopped(tmp_path, embedder, weights_dir):
    """`python main.py serve` end to end: keys from a file, the gallery synced from data/, recognition over HTTP,
    a graceful stop on Ctrl-C (exit 0) (`embedder` makes sure the converted model is cached in weights_dir)."""
    make_data(tmp_path / "data")
    (tmp_path / "keys.txt").write_text("# one key per line\n" + KEY + "\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(MAIN), "serve", "--port", str(port), "--api_key_file", "keys.txt", "--data_dir", "data",
         "--database_dir", "db", "-wp", str(weights_dir), "--model", "dlib", "-d", "hog"],
        cwd=tmp_path, env=serve_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert process.poll() is None, process.communicate()[1]
        assert [f["name"] for f in post_photo(url, HELD_OUT).json()["faces"]] == ["George_Clooney"]
        assert httpx.get(f"{url}/api/v1/subjects").status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr
    assert f"Serving 3 people from data on {url}/" in stderr and "API keys required" in stderr
    assert (tmp_path / "db" / "faces.npz").is_file()


@pytest.mark.parametrize(("args", "says"), [
    (("--port", "70000"), "--port must be in 0-65535"),
    (("--max_upload_mb", "0"), "--max_upload_mb must be more than 0"),
    (("--host", "0.0.0.0"), "refusing to serve on 0.0.0.0 without API keys"),
    (("--api_key_file", "missing-keys.txt"), "missing-keys.txt: cannot read the API key file"),
])
def test_serve_refuses_bad_settings(tmp_path, args, says):
    result = subprocess.run([sys.executable, str(MAIN), "serve", *args], cwd=tmp_path, env=serve_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and says in result.stderr
    assert result.stderr.strip().count("\n") == 0


# --------------------------------------------------------------------------- the web page in a real browser


def fake_webcam(path: Path, photo: Path, frames: int = 10) -> Path:
    """A y4m clip of a real photo (centred in 352x288) for Chromium's fake video capture device."""
    frame = np.full((288, 352, 3), 90, np.uint8)
    face = cv2.imread(str(photo))
    top, left = (288 - face.shape[0]) // 2, (352 - face.shape[1]) // 2
    frame[top:top + face.shape[0], left:left + face.shape[1]] = face
    planes = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes()
    with path.open("wb") as out:
        out.write(b"YUV4MPEG2 W352 H288 F10:1 Ip A1:1 C420jpeg\n")
        for _ in range(frames):
            out.write(b"FRAME\n" + planes)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no browser: install Debian's chromium and chromium-driver (requirements-system.txt)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    root = tmp_path_factory.mktemp("browser")
    camera = fake_webcam(root / "cam.y4m", CAMERA_PHOTO)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera}",
                 f"--user-data-dir={root / 'profile'}", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, css: str, text: str | None = None, timeout: float = 90):
    """The elements matching `css` (one of them containing `text`), once there."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d):
        elements = d.find_elements("css selector", css)
        return elements if elements and (text is None or any(text in e.text for e in elements)) else False

    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(found, f"no {css} with {text!r}")


SCREEN_PX = 3  # how far (CSS pixels) a drawn box may sit from where the API's box lands on screen

DRAWN = """
    const media = document.getElementById(arguments[0]);
    const rect = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    const items = [...document.querySelectorAll('#faces li.face')];
    return {media: rect(media),
            natural: [media.naturalWidth || media.videoWidth, media.naturalHeight || media.videoHeight],
            boxes: [...document.querySelectorAll('#stage .face-box')].map(rect),
            listed: items.map((li) => li.dataset.box.split(',').map(Number))};"""


def on_screen(box: list[int], media: list[float], natural: list[int], fit_contain: bool) -> np.ndarray:
    """Where the pixels of `box` (in the image's own pixels) are on screen: the image element's rect scaled from
    its natural size (a video shows its frame letterboxed inside its element: object-fit contain)."""
    left, top, right, bottom = media
    sx, sy = (right - left) / natural[0], (bottom - top) / natural[1]
    if fit_contain:
        sx = sy = min(sx, sy)
        left += (right - left - natural[0] * sx) / 2
        top += (bottom - top - natural[1] * sy) / 2
    return np.array([left + box[0] * sx, top + box[1] * sy, left + box[2] * sx, top + box[3] * sy])


def drawn_vs_api(driver, media_id: str, api_boxes: list[list[int]] | None = None) -> float:
    """The worst distance (CSS px) between a drawn box's edges and the API's box for that face, on screen (no
    `api_boxes`: the boxes of the API answer the page lists, read at the same moment)."""
    drawn = driver.execute_script(DRAWN, media_id)
    api_boxes = drawn["listed"] if api_boxes is None else api_boxes
    assert drawn["natural"][0] > 0 and len(drawn["boxes"]) == len(api_boxes) > 0, drawn
    expected = [on_screen(b, drawn["media"], drawn["natural"], media_id == "webcam") for b in api_boxes]
    return max(np.abs(np.array(rect) - want).max() for rect, want in zip(drawn["boxes"], expected, strict=True))


def js_number(value: float) -> str:
    """How JavaScript writes a number of the API's JSON (84.0 -> "84", 84.3 -> "84.3")."""
    return str(int(value)) if value == int(value) else repr(value)


def wide_photo(path: Path, photo: Path, size: tuple[int, int] = (1000, 460), at: tuple[int, int] = (640, 150)
               ) -> Path:
    """`photo` pasted at `at` (x, y) on a grey canvas of `size` (w, h): wider than the stage, shown scaled down."""
    canvas = np.full((size[1], size[0], 3), 90, np.uint8)
    face = cv2.imread(str(photo))
    canvas[at[1]:at[1] + face.shape[0], at[0]:at[0] + face.shape[1]] = face
    cv2.imwrite(str(path), canvas)
    return path


def test_web_page_enrolls_recognises_a_photo_and_the_webcam(server, browser, tmp_path):
    url, data = server
    browser.get(url + "/")
    key = wait_for(browser, "#api-key")[0]
    assert key.is_displayed()  # the service wants a key: the page asks for it
    key.send_keys(KEY + "\n")
    browser.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
    wait_for(browser, "#gallery .subject", "George_Clooney")

    # enroll: a name and a photo (the drop zone and the file chooser share one handler)
    browser.find_element("css selector", "#enroll-name").send_keys("Zach Safrin")
    browser.find_element("css selector", "#enroll-files").send_keys(str(STRANGER))
    wait_for(browser, "#enroll-status li", "Zach_Safrin_0001.jpg: enrolled")
    wait_for(browser, "#gallery .subject", "Zach Safrin")
    assert [p.name for p in (data / "Zach Safrin").iterdir()][0].startswith("api-")
    wait_for(browser, "#report", "Enrollment:")

    # drop a photo on the drop zone (a real drop event carrying a File, fetched from the service itself): Jon
    # Voight's photo dropped on Zach Safrin is saved, but enrollment leaves the duplicate out, and the page says so
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/subjects/Jon_Voight/faces/Jon_Voight_0001.jpg', {headers: {'x-api-key': arguments[0]}})
          .then((r) => r.blob()).then((blob) => {
            const drop = new DataTransfer();
            drop.items.add(new File([blob], 'dropped.jpg', {type: 'image/jpeg'}));
            document.getElementById('drop-zone').dispatchEvent(
              new DragEvent('drop', {dataTransfer: drop, bubbles: true, cancelable: true}));
            done();
          });""", KEY)
    wait_for(browser, "#enroll-status li", "dropped.jpg: saved, not used (see the report)")
    assert len(list((data / "Zach Safrin").iterdir())) == 2
    report = httpx.get(f"{url}/api/v1/report", headers={"x-api-key": KEY}).json()["report"]
    assert [d["same_as"] for d in report["duplicates"] if d["path"].startswith("Zach Safrin/api-")] == [
        "Jon_Voight/Jon_Voight_0001.jpg"]

    # recognise an uploaded photo: the names, and each box drawn on screen exactly where the API puts the face
    # (a 250 px photo shown at its own size, smaller than the stage; then a 1000 px one shown scaled down)
    wide = wide_photo(tmp_path / "wide.jpg", HELD_OUT)
    for photo in (HELD_OUT, wide):
        api = post_photo(url, photo).json()
        browser.find_element("css selector", "#recognize-file").send_keys(str(photo))
        wait_for(browser, "#recognize-status", "1 face(s)")
        [face] = wait_for(browser, "#faces li.face", "George_Clooney")
        assert face.get_attribute("data-box") == ",".join(map(str, api["faces"][0]["box"]))
        [box] = browser.find_elements("css selector", "#stage .face-box")
        # the list shows the same 0-100 score as the box drawn on the photo: the API's (not its distance)
        score, where = js_number(api["faces"][0]["score"]), ", ".join(map(str, api["faces"][0]["box"]))
        assert box.text == f"George_Clooney {score}"
        line = face.find_element("css selector", ".face-line").text
        assert line == f"George_Clooney — score {score}, box {where}"
        assert line.split(" — score ")[1].split(",")[0] == box.text.split()[-1]
        assert face.find_element("css selector", "button.not-person").text == "not George_Clooney"
        assert drawn_vs_api(browser, "photo", [f["box"] for f in api["faces"]]) <= SCREEN_PX
        assert not browser.find_element("css selector", "#webcam").is_displayed()
    assert browser.execute_script("return document.getElementById('photo').clientWidth") < api["width"] / 2
    left, top, right, bottom = api["faces"][0]["box"]  # on the 250 px photo pasted at (640, 150)
    assert 640 <= left < right <= 890 and 150 <= top < bottom <= 400
    browser.find_element("css selector", "#recognize-file").send_keys(str(STRANGER))
    [zach] = wait_for(browser, "#faces li.face", "Zach Safrin")
    # "not Zach Safrin" on that face: it becomes an unknown face, and the same face is no longer named so
    zach.find_element("css selector", "button.not-person").click()
    wait_for(browser, "#faces li.face button.not-person", "marked: not Zach Safrin")
    assert [f["name"] for f in post_photo(url, STRANGER).json()["faces"]] == ["Unknown"]

    # someone never enrolled: the API gives Unknown a score (the nearest person's), the page shows just "Unknown"
    [nobody] = post_photo(url, NOBODY).json()["faces"]
    assert nobody["name"] == "Unknown" and nobody["score"] is not None
    browser.find_element("css selector", "#recognize-file").send_keys(str(NOBODY))
    [face] = wait_for(browser, "#faces li.face", "Unknown")
    assert face.text == f"Unknown — box {', '.join(map(str, nobody['box']))}"  # no "not …" button on a stranger
    assert [b.text for b in browser.find_elements("css selector", "#stage .face-box")] == ["Unknown"]

    # the webcam (Chromium's fake device playing a photo of George Clooney): boxes on the face in the video too
    browser.find_element("css selector", "#webcam-start").click()
    wait_for(browser, "#recognize-status", "webcam: ")
    wait_for(browser, "#faces li.face", "George_Clooney")
    assert not browser.find_element("css selector", "#photo").is_displayed()
    [listed] = browser.execute_script(DRAWN, "webcam")["listed"]
    left, top, right, bottom = np.add(post_photo(url, CAMERA_PHOTO).json()["faces"][0]["box"], [51, 19] * 2)
    centre = (listed[0] + listed[2]) / 2, (listed[1] + listed[3]) / 2  # on the face of the photo pasted at (51, 19)
    assert 51 <= listed[0] < listed[2] <= 301 and 19 <= listed[1] < listed[3] <= 269, listed
    assert left < centre[0] < right and top < centre[1] < bottom, (listed, (left, top, right, bottom))
    assert drawn_vs_api(browser, "webcam") <= SCREEN_PX
    browser.find_element("css selector", "#webcam-stop").click()

    # the OpenAPI docs render offline (Swagger UI from the wheel, no CDN)
    browser.get(url + "/docs")
    wait_for(browser, ".opblock-summary-path", "/api/v1/recognize")
    httpx.delete(f"{url}/api/v1/subjects/Zach Safrin", headers={"x-api-key": KEY})
