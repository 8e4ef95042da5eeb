"""The service's unknown faces (issue 24): `POST /recognize?collect=true` keeps the strangers' faces, /api/v1/unknowns
lists, shows, names (enrolls), ignores, merges and forgets them. FastAPI's TestClient over the file gallery (and one
end-to-end naming over PostgreSQL), real photos of people never enrolled, the real HOG + dlib pipeline; the Seen view
of the web page in a real Chromium."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import PEOPLE
from tests.test_service import KEY, LFW, files_of
from tests.test_service_http import browser, serving, wait_for  # noqa: F401 - `browser`: the Chromium fixture

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

COSTA = [LFW / "Albert_Costa" / f"Albert_Costa_{n:04d}.jpg" for n in (2, 4, 5, 6)]
"""A stranger with four photos (dlib distances 0.24-0.34 between them; 0.59+ from the people enrolled here)."""
ATCHUGARRY = [LFW / "Alejandro_Atchugarry" / f"Alejandro_Atchugarry_{n:04d}.jpg" for n in (1, 2)]
SENER = [LFW / "Abdullatif_Sener" / f"Abdullatif_Sener_{n:04d}.jpg" for n in (1, 2)]
KNOWN = {"Jon_Voight": 3, "Barbra_Streisand": 3}
"""The people enrolled (not George Clooney: Albert Costa is within the threshold of him)."""
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
API_PHOTO = re.compile(r"^api-[0-9a-f]{20}\.jpg$")


def make_known(data: Path) -> None:
    for name, count in KNOWN.items():
        (data / name).mkdir(parents=True)
        for n in range(1, count + 1):
            (data / name / f"{name}_{n:04d}.jpg").write_bytes((PEOPLE / name / f"{name}_{n:04d}.jpg").read_bytes())


def recognise(client: httpx.Client, photo: Path, collect: bool = True) -> list[dict]:
    answer = client.post("/api/v1/recognize", params={"collect": "true"} if collect else None,
                         files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert answer.status_code == 200, answer.text
    return answer.json()["faces"]


def collected(client: httpx.Client, photo: Path) -> dict:
    """The one face of a stranger's photo, collected."""
    [face] = recognise(client, photo)
    assert face["name"] == "Unknown" and re.fullmatch(r"[0-9a-f]{12}", face["face_id"]), face
    return face


def folders(data: Path) -> list[str]:
    return sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_dir())


def when(text: str) -> datetime:
    assert ISO.match(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def service(tmp_path_factory, pipeline):
    """(client with the key, store, root) of a service over a file gallery of two people."""
    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    root = tmp_path_factory.mktemp("unknowns")
    make_known(root / "data")
    store = GalleryStore(root / "data", pipeline, root / "db")
    client = TestClient(create_app(store, frozenset({KEY})), headers={"x-api-key": KEY})
    return client, store, root


@pytest.fixture
def client(service):
    """The service's client, with no unknown faces kept."""
    client = service[0]
    assert client.delete("/api/v1/unknowns").status_code == 200
    return client


def test_collected_strangers_answer_their_face_and_group_and_are_listed(client, service):
    _, store, root = service
    [plain] = recognise(client, COSTA[0], collect=False)
    assert plain["name"] == "Unknown" and "face_id" not in plain and "group" not in plain
    assert client.get("/api/v1/unknowns").json() == {"groups": []}  # nothing kept without collect
    [known] = recognise(client, PEOPLE / "Jon_Voight" / "Jon_Voight_0001.jpg")
    assert known["name"] == "Jon_Voight" and "face_id" not in known  # the people it knows are not collected

    first, second = collected(client, COSTA[0]), collected(client, COSTA[1])
    assert first["group"] == second["group"] and first["face_id"] != second["face_id"]
    other = collected(client, ATCHUGARRY[0])
    assert other["group"] != first["group"]

    groups = client.get("/api/v1/unknowns").json()["groups"]
    assert [g["id"] for g in groups] == [other["group"], first["group"]]  # most recently seen first
    costa = groups[1]
    assert set(costa) == {"id", "faces", "first_seen", "last_seen", "sources", "ignored", "examples"}
    assert (costa["faces"], costa["sources"], costa["ignored"]) == (2, ["api"], False)
    now = datetime.now(UTC)
    assert now - timedelta(minutes=5) < when(costa["first_seen"]) <= when(costa["last_seen"]) <= now
    assert {e["face_id"] for e in costa["examples"]} == {first["face_id"], second["face_id"]}
    assert all(e["url"] == f"/api/v1/unknowns/faces/{e['face_id']}.jpg" for e in costa["examples"])

    shown = client.get(f"/api/v1/unknowns/{first['group']}").json()
    assert {k: shown[k] for k in ("id", "sources", "ignored")} == {"id": first["group"], "sources": ["api"],
                                                                  "ignored": False}
    assert [f["face_id"] for f in shown["faces"]] == [second["face_id"], first["face_id"]]  # newest first
    assert all(f["source"] == "api" and ISO.match(f["time"]) for f in shown["faces"])
    assert (shown["first_seen"], shown["last_seen"]) == (costa["first_seen"], costa["last_seen"])

    chip = client.get(shown["faces"][0]["url"])
    assert chip.status_code == 200 and chip.headers["content-type"] == "image/jpeg"
    assert chip.content == (root / "db" / "unknowns" / "faces" / f"{second['face_id']}.jpg").read_bytes()
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(chip.content, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert len(store.detect(rgb)) == 1  # the chip is his face, with room around it


def test_naming_a_group_enrolls_him_and_a_failed_sync_changes_nothing(client, service, monkeypatch):
    from facenet.gallery.pg import GalleryError

    _, store, root = service
    data = root / "data"
    faces = [collected(client, photo) for photo in COSTA[:3]]
    group = faces[0]["group"]
    assert {f["group"] for f in faces} == {group}
    chips = {client.get(f"/api/v1/unknowns/faces/{f['face_id']}.jpg").content for f in faces}
    before, tree = files_of(data), folders(data)

    def down(*_args: object, **_kwargs: object) -> None:
        raise GalleryError("the gallery is unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(store, "_sync", down)
        failed = client.post(f"/api/v1/unknowns/{group}/name", json={"subject": "Albert Costa"})
    assert failed.status_code == 503 and failed.json() == {"detail": "the gallery is unreachable"}
    assert files_of(data) == before and folders(data) == tree  # data/ as it was
    assert len(client.get(f"/api/v1/unknowns/{group}").json()["faces"]) == 3  # the group kept

    named = client.post(f"/api/v1/unknowns/{group}/name", json={"subject": "Albert Costa"})
    assert named.status_code == 200, named.text
    answer = named.json()
    assert (answer["subject"], answer["new_subject"]) == ("Albert Costa", True)
    assert len(answer["photos"]) == 3 and all(API_PHOTO.match(p) for p in answer["photos"])
    folder = data / "Albert Costa"
    assert sorted(p.name for p in folder.iterdir()) == sorted(answer["photos"])
    assert {p.read_bytes() for p in folder.iterdir()} == chips  # his faces, as collected
    assert client.get(f"/api/v1/unknowns/{group}").status_code == 404  # forgotten once named
    subjects = {s["subject"]: s for s in client.get("/api/v1/subjects").json()["subjects"]}
    assert subjects["Albert Costa"] == {"subject": "Albert Costa", "photos": 3, "enrolled": True}
    [again] = recognise(client, COSTA[3])  # a photo never collected
    assert again["name"] == "Albert Costa" and "face_id" not in again
    assert client.get("/api/v1/unknowns").json() == {"groups": []}
    assert client.delete("/api/v1/subjects/Albert Costa").json()["deleted_photos"] == 3


def test_naming_a_group_as_an_existing_subject_adds_to_his_folder(client, service):
    data = service[2] / "data"
    assert client.post("/api/v1/subjects", json={"subject": "Sener"}).status_code == 201
    group = collected(client, SENER[0])["group"]
    answer = client.post(f"/api/v1/unknowns/{group}/name", json={"subject": "Sener"}).json()
    assert answer["subject"] == "Sener" and answer["new_subject"] is False and len(answer["photos"]) == 1
    assert [p.name for p in (data / "Sener").iterdir()] == answer["photos"]
    assert recognise(client, SENER[1], collect=False)[0]["name"] == "Sener"  # his, the largest face of the photo
    assert client.delete("/api/v1/subjects/Sener").json()["deleted_photos"] == 1


def test_ignore_merge_forget_and_forget_all(client, service):
    root = service[2]
    a, b, c = (collected(client, photo) for photo in (ATCHUGARRY[0], SENER[0], COSTA[0]))
    ignored = client.post(f"/api/v1/unknowns/{a['group']}/ignore")  # no body: ignore
    assert ignored.status_code == 200 and ignored.json()["ignored"] is True
    assert [f["face_id"] for f in ignored.json()["faces"]] == [a["face_id"]]
    listed = {g["id"]: g for g in client.get("/api/v1/unknowns").json()["groups"]}
    assert (listed[a["group"]]["ignored"], listed[b["group"]]["ignored"]) == (True, False)
    for flag in (False, True):
        answer = client.post(f"/api/v1/unknowns/{a['group']}/ignore", json={"ignored": flag})
        assert answer.json()["ignored"] is flag
        assert client.get(f"/api/v1/unknowns/{a['group']}").json()["ignored"] is flag

    merged = client.post(f"/api/v1/unknowns/{b['group']}/merge", json={"group": a["group"]})
    assert merged.status_code == 200 and merged.json()["id"] == b["group"]
    assert {f["face_id"] for f in merged.json()["faces"]} == {a["face_id"], b["face_id"]}
    assert client.get(f"/api/v1/unknowns/{a['group']}").status_code == 404
    assert [g["faces"] for g in client.get("/api/v1/unknowns").json()["groups"]] == [1, 2]

    assert client.delete(f"/api/v1/unknowns/{b['group']}").json() == {"id": b["group"], "deleted_faces": 2}
    assert client.get(f"/api/v1/unknowns/faces/{a['face_id']}.jpg").status_code == 404
    assert not (root / "db" / "unknowns" / "faces" / f"{a['face_id']}.jpg").exists()
    assert [g["id"] for g in client.get("/api/v1/unknowns").json()["groups"]] == [c["group"]]
    assert collected(client, COSTA[1])["group"] == c["group"]
    assert client.delete("/api/v1/unknowns").json() == {"deleted_faces": 2}
    assert client.get("/api/v1/unknowns").json() == {"groups": []}
    assert list((root / "db" / "unknowns" / "faces").iterdir()) == []


def test_unknown_ids_are_404_and_bad_requests_change_nothing(client, service):
    data = service[2] / "data"
    group = collected(client, ATCHUGARRY[0])["group"]
    before, tree = files_of(data), folders(data)
    missing = "000000000000"
    says = {"detail": f"no group of unknown faces {missing!r}"}
    for method, path, body in (("get", "", None), ("delete", "", None), ("post", "/name", {"subject": "X"}),
                               ("post", "/ignore", None), ("post", "/merge", {"group": group})):
        answer = client.request(method, f"/api/v1/unknowns/{missing}{path}", json=body)
        assert (answer.status_code, answer.json()) == (404, says), (method, path)
    merge = client.post(f"/api/v1/unknowns/{group}/merge", json={"group": missing})
    assert (merge.status_code, merge.json()) == (404, says)
    chip = client.get(f"/api/v1/unknowns/faces/{missing}.jpg")
    assert (chip.status_code, chip.json()) == (404, {"detail": f"no unknown face {missing!r}"})
    assert client.get("/api/v1/unknowns/faces/..%2F..%2Fdata.jpg").status_code == 404
    bad_name = client.post(f"/api/v1/unknowns/{group}/name", json={"subject": "../evil"})
    assert bad_name.status_code == 400 and "cannot be a folder name" in bad_name.json()["detail"]
    no_name = client.post(f"/api/v1/unknowns/{group}/name", json={})
    assert no_name.status_code == 422 and no_name.json()["detail"].startswith("invalid request: body.subject")
    assert files_of(data) == before and folders(data) == tree
    assert len(client.get(f"/api/v1/unknowns/{group}").json()["faces"]) == 1


def test_the_key_is_required(client, service):
    group = collected(client, ATCHUGARRY[0])
    url = f"/api/v1/unknowns/faces/{group['face_id']}.jpg"
    for method, path in (("get", "/api/v1/unknowns"), ("get", f"/api/v1/unknowns/{group['group']}"), ("get", url),
                         ("post", f"/api/v1/unknowns/{group['group']}/ignore"),
                         ("delete", f"/api/v1/unknowns/{group['group']}"), ("delete", "/api/v1/unknowns")):
        answer = client.request(method, path, headers={"x-api-key": "wrong"})
        assert answer.status_code == 401, (method, path)
    stranger = client.post("/api/v1/recognize?collect=true", headers={"x-api-key": ""},
                           files={"file": ("a.jpg", ATCHUGARRY[1].read_bytes(), "image/jpeg")})
    assert stranger.status_code == 401
    [kept] = client.get("/api/v1/unknowns").json()["groups"]
    assert kept["faces"] == 1 and client.get(url).status_code == 200


def test_naming_over_postgresql(tmp_path, pg_url, pipeline, monkeypatch):
    """The shared gallery keeps the faces in its tables; naming enrolls him there; a failed sync changes nothing."""
    import psycopg

    from facenet.gallery.pg import GalleryError
    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    data = tmp_path / "data"
    make_known(data)
    store = GalleryStore(data, pipeline, tmp_path / "local", database_url=pg_url)
    client = TestClient(create_app(store, frozenset({KEY})), headers={"x-api-key": KEY})
    group = {collected(client, photo)["group"] for photo in COSTA[:2]}
    assert len(group) == 1
    [listed] = client.get("/api/v1/unknowns").json()["groups"]
    assert listed["faces"] == 2 and listed["id"] in group
    [face] = listed["examples"][:1]
    assert client.get(face["url"]).content[:3] == b"\xff\xd8\xff"
    assert not (tmp_path / "local" / "unknowns").exists()  # in the database, not beside it

    before = files_of(data)
    with monkeypatch.context() as patch:
        patch.setattr(store, "_sync", lambda *_a, **_k: (_ for _ in ()).throw(GalleryError("gone")))
        assert client.post(f"/api/v1/unknowns/{listed['id']}/name", json={"subject": "Albert Costa"}).status_code == 503
    assert files_of(data) == before and not (data / "Albert Costa").exists()

    answer = client.post(f"/api/v1/unknowns/{listed['id']}/name", json={"subject": "Albert Costa"}).json()
    assert answer["new_subject"] is True and len(answer["photos"]) == 2
    with psycopg.connect(pg_url) as conn:
        people = {row[0] for row in conn.execute("SELECT name FROM facenet_people")}
        left = conn.execute("SELECT count(*) FROM facenet_unknown_faces").fetchone()[0]
    assert people == {"Jon_Voight", "Barbra_Streisand", "Albert Costa"} and left == 0
    assert [f["name"] for f in recognise(client, COSTA[3])] == ["Albert Costa"]


def test_the_retention_flags_of_serve_and_recognize():
    from facenet.cli import app as cli
    from facenet.settings import KEEP_DAYS, KEEP_FACES

    serve = cli.parse(["facenet", "serve", "--unknown_days", "7", "--unknown_faces", "500"]).options
    assert (serve.unknown_days, serve.unknown_faces) == (7.0, 500)
    recognize = cli.parse(["facenet", "recognize", "--unknown_days", "inf"]).options
    assert (recognize.unknown_days, recognize.unknown_faces) == (float("inf"), KEEP_FACES)
    assert (cli.parse(["facenet", "serve"]).options.unknown_days) == KEEP_DAYS
    for args, says in ((["--unknown_days", "0"], "--unknown_days must be more than 0 (days), got 0.0"),
                       (["--unknown_days", "nan"], "--unknown_days must be more than 0 (days), got nan"),
                       (["--unknown_faces", "0"], "--unknown_faces must be at least 1, got 0")):
        cli.FLAGS.unparse_flags()
        cli.FLAGS(["facenet", *args])
        assert cli.check_flags() == says
    cli.FLAGS.unparse_flags()


# --------------------------------------------------------------------------- the Seen view in a real browser


def test_the_seen_view_names_merges_ignores_and_forgets(browser, tmp_path, pipeline):  # noqa: F811
    """Strangers recognised with collect=true show up in the page's Seen view with their faces; naming one there
    enrolls him (his next photo is named through the API); merging, ignoring and forgetting all work from it too."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from facenet.service.app import create_app
    from facenet.service.store import GalleryStore

    make_known(tmp_path / "data")
    app = create_app(GalleryStore(tmp_path / "data", pipeline, tmp_path / "db"), frozenset({KEY}))
    with serving(app) as (url, _port):
        api = httpx.Client(base_url=url, headers={"x-api-key": KEY}, timeout=120)
        groups = {collected(api, photo)["group"] for photo in COSTA[:2]}
        browser.get(url + "/")
        wait_for(browser, "#api-key")[0].send_keys(KEY + "\n")
        browser.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
        [group] = wait_for(browser, "#unknown-groups .group", "2 face(s)")
        assert group.get_attribute("data-group") in groups and len(groups) == 1
        assert "first seen" in group.text and "last seen" in group.text and "api" in group.text
        loaded = "return [...document.querySelectorAll('#unknown-groups .group img')].map((i) => i.naturalWidth)"
        WebDriverWait(browser, 30).until(lambda d: len(d.execute_script(loaded)) == 2 and all(d.execute_script(loaded)))

        group.find_element("css selector", ".group-name").send_keys("Albert Costa")
        group.find_element("css selector", ".name-group").click()
        wait_for(browser, "#seen-status", "named Albert Costa: 2 photo(s) added to a new subject Albert Costa")
        wait_for(browser, "#gallery .subject", "Albert Costa")
        wait_for(browser, "#seen-empty")
        assert browser.find_element("css selector", "#seen-empty").is_displayed()
        assert all(API_PHOTO.match(p.name) for p in (tmp_path / "data" / "Albert Costa").iterdir())
        assert [f["name"] for f in recognise(api, COSTA[3])] == ["Albert Costa"]

        a, b = collected(api, ATCHUGARRY[0]), collected(api, SENER[0])
        browser.find_element("css selector", "#seen-refresh").click()
        WebDriverWait(browser, 30).until(lambda d: len(d.find_elements("css selector", "#unknown-groups .group")) == 2)
        item = browser.find_element("css selector", f'#unknown-groups .group[data-group="{b["group"]}"]')
        Select(item.find_element("css selector", ".merge-with")).select_by_value(a["group"])
        item.find_element("css selector", ".merge-group").click()
        [merged] = wait_for(browser, "#unknown-groups .group", "2 face(s)")
        assert merged.get_attribute("data-group") == b["group"]
        assert len(browser.find_elements("css selector", "#unknown-groups .group")) == 1
        merged.find_element("css selector", ".ignore-group").click()
        [ignored] = wait_for(browser, "#unknown-groups .group.ignored")
        assert ignored.find_element("css selector", ".ignore-group").text == "unignore"
        assert api.get(f"/api/v1/unknowns/{b['group']}").json()["ignored"] is True

        browser.find_element("css selector", "#seen-forget-all").click()
        WebDriverWait(browser, 10).until(expected_conditions.alert_is_present()).accept()
        wait_for(browser, "#seen-status", "forgot 2 face(s)")
        assert api.get("/api/v1/unknowns").json() == {"groups": []}
        assert not browser.find_elements("css selector", "#unknown-groups .group")


def test_recognize_keeps_no_more_unknown_faces_than_unknown_faces_says(tmp_path, run_in_process):
    """--unknown_faces reaches the command line's collection: of a photo's two strangers one is kept."""
    data, db = tmp_path / "data", tmp_path / "db"
    make_known(data)
    where = ["--data_dir", str(data), "--database_dir", str(db), "--input", str(PEOPLE.parent / "misc" /
                                                                             "two_people.jpg")]
    seen = run_in_process("recognize", "--json", "--collect_unknowns", "--unknown_faces", "1", *where, cwd=tmp_path)
    assert seen.returncode == 0, seen.stderr
    assert sum("face_id" in line for line in seen.stdout.splitlines()) == 2  # both collected, the oldest then pruned
    from facenet.gallery import GalleryOptions, open_gallery

    with open_gallery(GalleryOptions(db)) as gallery:
        assert [len(g.faces) for g in gallery.unknowns().groups()] == [1]
