"""The peer APIs driven by their real clients over HTTP: a real server (uvicorn on a free loopback port, as in
tests/test_service_http.py) and
- CompreFace's Python SDK, `compreface-sdk` 0.6.0 from PyPI (it pins requests-toolbelt 0.9.1, which needs urllib3<2),
- `deepstack-python` 0.8 from PyPI, what Home Assistant's deepstack_face integration uses,
each in a virtualenv of its own that the test session makes once (they pin what the project's own environment must
not), run as a child process that prints what the client returned; and Double Take's exact requests (its
api/src/util/detectors/compreface.js and deepstack.js: multipart fields, query parameters, headers) replayed with
httpx, with its own reading of the answers. Skipped, saying so, only when PyPI cannot be reached."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import MISC
from tests.test_service import HELD_OUT, KEY, STRANGER, files_of, make_data
from tests.test_service_compreface import NEW

httpx = pytest.importorskip("httpx")

CLIENTS = {"compreface": ["compreface-sdk==0.6.0", "urllib3<2"],
           "deepstack": ["deepstack-python==0.8", "pillow"]}
"""What each client's virtualenv installs (deepstack-python imports PIL without requiring it)."""
OFFLINE_SIGNS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                 "Network is unreachable", "Name or service not known", "ConnectTimeout", "ProxyError",
                 "Could not fetch URL")
"""What pip prints when the package index cannot be reached (any other failure fails the test)."""
NAME = "Paul Tagliabue"
PHOTOS = sorted(NEW.iterdir())  # 4 photos of someone make_data does not enroll: 3 to add, 1 to recognise


@pytest.fixture(scope="session")
def client_python(tmp_path_factory):
    """`client_python(name)`: the Python of a virtualenv holding that client (CLIENTS), made once per session."""
    made: dict[str, Path] = {}

    def python(name: str) -> Path:
        if name not in made:
            folder = tmp_path_factory.mktemp(f"venv-{name}")
            venv.EnvBuilder(with_pip=True).create(folder)
            exe = folder / "bin" / "python"
            result = subprocess.run([str(exe), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                     *CLIENTS[name]], capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                said = result.stdout + result.stderr
                if any(sign in said for sign in OFFLINE_SIGNS):
                    pytest.skip(f"PyPI cannot be reached to install {' '.join(CLIENTS[name])}: {said.strip()[-300:]}")
                pytest.fail(f"pip install {' '.join(CLIENTS[name])} failed: {said.strip()[-2000:]}")
            made[name] = exe
        return made[name]

    return python


@pytest.fixture
def server(tmp_path, pipeline):
    """(base URL, data dir) of a real server: one key, 3 people enrolled from users' own photos."""
    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore
    from tests.test_service_http import serving

    make_data(tmp_path / "data")
    app = create_app(GalleryStore(tmp_path / "data", pipeline, tmp_path / "db"), frozenset({KEY}))
    with serving(app) as (url, _port):
        yield url, tmp_path / "data"


def run_client(python: Path, script: str, *args: object) -> dict:
    """Run `script` in the client's Python with `args`; what it printed (JSON)."""
    result = subprocess.run([str(python), "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


COMPREFACE_SDK = """
import json, sys
from compreface import CompreFace
domain, port, key, name, *photos = sys.argv[1:]
compre_face = CompreFace(domain, port, {"limit": 0, "det_prob_threshold": 0.8, "prediction_count": 2,
                                        "status": "true"})
recognition = compre_face.init_face_recognition(key)
faces, subjects = recognition.get_face_collection(), recognition.get_subjects()
out = {"subject": subjects.add(name)}
out["added"] = [faces.add(image_path=p, subject=name) for p in photos[:3]]
out["recognized"] = recognition.recognize(image_path=photos[3])
out["stranger"] = recognition.recognize(image_path=photos[4])
out["listed"] = faces.list()
out["subjects"] = subjects.list()
out["verify"] = faces.verify(photos[3], out["added"][0]["image_id"])
out["detected"] = compre_face.init_face_detection(key).detect(photos[3])
out["verified"] = compre_face.init_face_verification(key).verify(photos[3], photos[0])
out["renamed"] = subjects.update(name, "Paul")
out["deleted_one"] = faces.delete(out["added"][2]["image_id"])
out["deleted_all"] = faces.delete_all("Paul")
out["wrong_key"] = CompreFace(domain, port).init_face_recognition("wrong").recognize(image_path=photos[3])
print(json.dumps(out))
"""


def test_compreface_python_sdk(server, client_python):
    url, data = server
    users = files_of(data)
    domain, port = url.rsplit(":", 1)
    out = run_client(client_python("compreface"), COMPREFACE_SDK, domain, port, KEY, NAME, *PHOTOS, STRANGER)
    assert out["subject"] == {"subject": NAME}
    assert [a["subject"] for a in out["added"]] == [NAME] * 3 and len({a["image_id"] for a in out["added"]}) == 3
    [face] = out["recognized"]["result"]
    assert face["subjects"][0]["subject"] == NAME and face["subjects"][0]["similarity"] >= 0.5
    assert len(face["subjects"]) == 2 and face["subjects"][1]["similarity"] < 0.5
    assert "execution_time" in face and "plugins_versions" in out["recognized"]
    [stranger] = out["stranger"]["result"]
    assert stranger["subjects"][0]["similarity"] < 0.5
    assert out["listed"]["total_elements"] == 14 + 3
    assert out["subjects"] == {"subjects": ["Barbra_Streisand", "George_Clooney", "Jon_Voight", NAME]}
    assert out["verify"]["result"][0]["similarity"] >= 0.5
    assert len(out["detected"]["result"]) == 1 and out["detected"]["result"][0]["box"]["probability"] >= 0.85
    assert out["verified"]["result"][0]["face_matches"][0]["similarity"] >= 0.5
    assert out["renamed"] == {"updated": True}
    assert out["deleted_one"] == {"image_id": out["added"][2]["image_id"], "subject": "Paul"}
    assert out["deleted_all"] == {"deleted": 2}
    assert out["wrong_key"]["code"] == 10
    assert files_of(data) == users


DEEPSTACK_PYTHON = """
import json, sys
import deepstack.core as ds
host, port, key, name, *photos = sys.argv[1:]
read = lambda p: open(p, "rb").read()
face = ds.DeepstackFace(ip=host, port=int(port), api_key=key, timeout=120)
out = {"registered": [face.register(name, read(p)) for p in photos[:3]]}
out["recognized"] = face.recognize(read(photos[3]))
out["matched"] = ds.get_recognized_faces(out["recognized"])
out["stranger"] = face.recognize(read(photos[4]))
out["detected"] = face.detect(read(photos[3]))
try:
    ds.DeepstackFace(ip=host, port=int(port), api_key="wrong").recognize(read(photos[3]))
except ds.DeepstackException as error:
    out["wrong_key"] = str(error)
print(json.dumps(out))
"""


def test_deepstack_python_as_home_assistant_uses_it(server, client_python):
    url, data = server
    host, port = url.removeprefix("http://").rsplit(":", 1)
    out = run_client(client_python("deepstack"), DEEPSTACK_PYTHON, host, port, KEY, NAME, *PHOTOS, STRANGER)
    assert out["registered"] == ["face added", "face updated", "face updated"]
    assert len(list((data / NAME).iterdir())) == 3
    [face] = out["recognized"]
    assert face["userid"] == NAME and face["confidence"] >= 0.5
    assert out["matched"] == {NAME: round(face["confidence"] * 100, 1)}  # what Home Assistant shows
    assert [(f["userid"], f["confidence"]) for f in out["stranger"]] == [("unknown", 0)]
    assert len(out["detected"]) == 1 and out["detected"][0]["x_max"] > out["detected"][0]["x_min"]
    assert out["wrong_key"] == "Error from Deepstack request, status code: 401"


def double_take_file(path: Path) -> dict:
    """What Double Take's `formData.append(field, fs.createReadStream(path))` sends: the file's name, its type."""
    return {"file": (path.name, path.read_bytes(), "image/jpeg")}


def test_double_take_requests_replayed(server):
    """Double Take's CompreFace and DeepStack detectors: train (add), recognize with its default parameters
    (`face_plugins=undefined`, `det_prob_threshold=0.8`), its reading of the answer, and remove."""
    url, data = server
    users = files_of(data)
    key = {"x-api-key": KEY}
    for photo in PHOTOS[:3]:  # train: POST /faces?subject=<name>, errors not tolerated
        trained = httpx.post(f"{url}/api/v1/recognition/faces", params={"subject": NAME}, headers=key,
                             files=double_take_file(photo), timeout=120)
        assert trained.status_code == 201, trained.text
    for photo, name in ((PHOTOS[3], NAME.lower()), (STRANGER, "unknown"), (HELD_OUT, "george_clooney")):
        answer = httpx.post(f"{url}/api/v1/recognition/recognize?face_plugins=undefined",
                            params={"det_prob_threshold": 0.8}, headers=key, files=double_take_file(photo),
                            timeout=120)
        assert answer.status_code == 200, answer.text
        [found] = compreface_normalize(answer.json(), match=50, unknown=50)
        assert found["name"] == name and found["match"] == (name != "unknown")
    no_face = httpx.post(f"{url}/api/v1/recognition/recognize?face_plugins=undefined", headers=key,
                         params={"det_prob_threshold": 0.8}, files=double_take_file(MISC / "dogs.jpg"), timeout=120)
    assert compreface_normalize(no_face.json(), 50, 50) == []  # Double Take reads code 28 as no face
    removed = httpx.delete(f"{url}/api/v1/recognition/faces", params={"subject": NAME}, headers=key)
    assert removed.json() == {"deleted": 3} and files_of(data) == users

    form = {"api_key": KEY}  # DeepStack: train, recognize, remove, the key as a form field
    for photo in PHOTOS[:2]:
        trained = httpx.post(f"{url}/v1/vision/face/register", data={**form, "userid": NAME}, timeout=120,
                             files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
        assert trained.json()["success"] is True
    for photo, name in ((PHOTOS[3], NAME.lower()), (STRANGER, "unknown")):
        answer = httpx.post(f"{url}/v1/vision/face/recognize", data=form, timeout=120,
                            files={"image": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
        [found] = deepstack_normalize(answer, match=50, unknown=50)
        assert found["name"] == name and found["match"] == (name != "unknown")
    assert httpx.post(f"{url}/v1/vision/face/delete", data={**form, "userid": NAME}).json()["success"] is True
    assert files_of(data) == users


def compreface_normalize(data: dict, match: float, unknown: float) -> list[dict]:
    """Double Take's reading of a CompreFace answer (compreface.js `normalize`), min_area left at 0."""
    if "result" not in data:
        assert data["code"] == 28, data
        return []
    found = []
    for face in data["result"]:
        best = face["subjects"][0] if face["subjects"] else None
        confidence = round(best["similarity"] * 100, 2) if best else 0
        found.append({"name": best["subject"].lower() if best and confidence >= unknown else "unknown",
                      "confidence": confidence, "match": confidence >= match})
    return found


def deepstack_normalize(data: dict, match: float, unknown: float) -> list[dict]:
    """Double Take's reading of a DeepStack answer (deepstack.js `normalize`), min_area left at 0."""
    assert data["success"] is True
    found = []
    for face in data["predictions"]:
        confidence = round(face["confidence"] * 100, 2)
        found.append({"name": face["userid"].lower() if confidence >= unknown else "unknown",
                      "confidence": confidence, "match": face["userid"] != "unknown" and confidence >= match})
    return found

