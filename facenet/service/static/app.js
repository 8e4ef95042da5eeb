// facenet web page: enroll by dropping photos, see the gallery and the report, recognise a photo or the webcam,
// watch the service's live cameras (serve --input) and their events, and name, merge, ignore or forget the faces it
// saw but did not know (Seen).
// Plain JS over the REST API (/api/v1); the API key, when the service wants one, is kept in localStorage.
"use strict";

const API = "/api/v1";
const $ = (id) => document.getElementById(id);
let webcamTimer = null;
let webcamStream = null;
let keyRequired = false;
const CAMERA_POLL_MS = 1000;
const SEEN_POLL_MS = 5000;
const FRAME_POLL_MS = 250;
const UNKNOWN = "Unknown";
let lastPhoto = null;  // the photo (or webcam frame) the stage's faces were recognised in: what "not X" marks

// The 0-100 match score a face or track shows (50 at the threshold), or null: none for an Unknown one, whose score
// is the nearest enrolled person's and means nothing on a stranger (as on the service's annotated frames).
function shownScore({ name, score }) {
  return name === UNKNOWN || score == null ? null : score;
}

// What a face's box on the stage says: the name, then its score when it has one.
function faceLabel(face) {
  const score = shownScore(face);
  return score == null ? face.name : `${face.name} ${score}`;
}

// A face's line in the list under the stage: the name, the same score as its box, and the box.
function faceLine(face) {
  const score = shownScore(face);
  return `${face.name} — ${score == null ? "" : `score ${score}, `}box ${face.box.join(", ")}`;
}

function headers() {
  const key = localStorage.getItem("facenet-key") || "";
  return key ? { "x-api-key": key } : {};
}

async function call(method, path, body) {
  const init = { method, headers: headers() };
  if (body instanceof FormData) init.body = body;
  else if (body instanceof Blob) {
    init.body = body;
    init.headers["content-type"] = body.type || "application/octet-stream";
  }
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const response = await fetch(API + path, init);
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function element(tag, { dataset = {}, ...props } = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  Object.assign(node.dataset, dataset);
  for (const child of children) node.append(child);
  return node;
}

// ---------------------------------------------------------------- gallery and report

async function refresh() {
  try {
    const { subjects } = await call("GET", "/subjects");
    const list = $("gallery");
    list.replaceChildren(...subjects.map(subjectItem));
    for (const s of subjects) loadThumbs(s.subject);
    const { text } = await call("GET", "/report");
    $("report").textContent = text;
  } catch (error) {
    $("report").textContent = "";
    $("gallery").replaceChildren(element("li", { className: "error", textContent: error.message }));
  }
}

function subjectItem(s) {
  const state = s.enrolled ? "enrolled" : "not-enrolled";
  return element("li", { className: "subject", dataset: { subject: s.subject } },
    element("strong", { textContent: s.subject }), ` ${s.photos} photo(s) `,
    element("span", { className: state, textContent: s.enrolled ? "enrolled" : "not enrolled" }),
    element("div", { className: "thumbs" }));
}

async function loadThumbs(subject) {
  const { faces } = await call("GET", `/subjects/${encodeURIComponent(subject)}/faces`);
  const item = [...document.querySelectorAll(".subject")].find((li) => li.dataset.subject === subject);
  if (!item) return;
  const box = item.querySelector(".thumbs");
  for (const face of faces.slice(0, 12)) {
    const path = `/subjects/${encodeURIComponent(subject)}/faces/${face.image_id.split("/").map(encodeURIComponent).join("/")}`;
    const img = element("img", { title: `${face.image_id}${face.used ? "" : " (not used)"}` });
    const thumb = element("span", { className: "thumb" }, img);
    if (face.added_by_service) {
      const remove = element("button", { textContent: "×", title: "delete this photo" });
      remove.onclick = async () => { await call("DELETE", path); refresh(); };
      thumb.append(remove);
    }
    box.append(thumb);
    call("GET", path).then((blob) => { img.src = URL.createObjectURL(blob); });
  }
}

// ---------------------------------------------------------------- enrollment

async function enroll(files) {
  const name = $("enroll-name").value.trim();
  const status = $("enroll-status");
  if (!name) { status.replaceChildren(element("li", { className: "error", textContent: "type the person's name first" })); return; }
  status.replaceChildren();
  const { subjects } = await call("GET", "/subjects");
  if (!subjects.some((s) => s.subject === name)) {
    try { await call("POST", "/subjects", { subject: name }); }
    catch (error) { status.append(element("li", { className: "error", textContent: error.message })); return; }
  }
  for (const file of files) {
    const form = new FormData();
    form.append("file", file);
    try {
      const answer = await call("POST", `/subjects/${encodeURIComponent(name)}/faces`, form);
      const how = answer.used ? "enrolled" : "saved, not used (see the report)";
      status.append(element("li", { className: "added", textContent: `${file.name}: ${how}` }));
    } catch (error) {
      status.append(element("li", { className: "error", textContent: `${file.name}: ${error.message}` }));
    }
  }
  refresh();
}

// ---------------------------------------------------------------- recognition

function drawFaces(answer) {
  const stage = $("stage");
  stage.querySelectorAll(".face-box").forEach((box) => box.remove());
  const list = $("faces");
  list.replaceChildren();
  for (const face of answer.faces) {
    const [left, top, right, bottom] = face.box;
    const unknown = face.name === UNKNOWN;
    const box = element("div", { className: "face-box" + (unknown ? " unknown" : ""), dataset: { name: face.name } },
      element("span", { className: "face-label", textContent: faceLabel(face) }));
    Object.assign(box.style, {
      left: `${(100 * left) / answer.width}%`, top: `${(100 * top) / answer.height}%`,
      width: `${(100 * (right - left)) / answer.width}%`, height: `${(100 * (bottom - top)) / answer.height}%`,
    });
    stage.append(box);
    const item = element("li", { className: "face", dataset: { name: face.name, box: face.box.join(",") } },
      element("span", { className: "face-line", textContent: faceLine(face) }));
    if (!unknown && lastPhoto) item.append(" ", notButton(face.name, () => markNotFace(lastPhoto, face)));
    list.append(item);
  }
}

// "not <name>": the face was wrongly named; look-alikes are no longer named so (POST …/not).
function notButton(name, mark) {
  return element("button", { textContent: `not ${name}`, className: "not-person", title: "wrongly named: " +
    "the face becomes an unknown one, and faces like it are no longer named " + name, onclick: async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      await mark();
      button.textContent = `marked: not ${name}`;
      refreshSeen(true);
    } catch (error) {
      button.textContent = error.message;
    }
  } });
}

function markNotFace(photo, face) {
  const box = encodeURIComponent(face.box.join(","));
  return call("POST", `/subjects/${encodeURIComponent(face.name)}/not?box=${box}`, photo);
}

async function recognise(blob) {
  const photo = blob instanceof File ? blob : new Blob([blob], { type: "image/jpeg" });
  const answer = await call("POST", "/recognize", photo);
  lastPhoto = photo;
  return answer;
}

// Show one of the photo and the webcam on the stage (the other hidden), with no boxes yet.
function showOnStage(media) {
  drawFaces({ faces: [] });
  $("photo").hidden = media !== $("photo");
  $("webcam").hidden = media !== $("webcam");
  $("recognize-status").className = "";
}

async function recognisePhoto(file) {
  stopWebcam();
  const photo = $("photo");
  if (photo.src) URL.revokeObjectURL(photo.src);
  const src = photo.src = URL.createObjectURL(file);
  showOnStage(photo);
  $("recognize-status").textContent = "recognising…";
  try {
    const answer = await recognise(file);
    if (photo.src !== src || photo.hidden) return;  // another photo or the webcam was chosen meanwhile
    drawFaces(answer);
    $("recognize-status").textContent = `${answer.faces.length} face(s)`;
  } catch (error) {
    if (photo.src !== src || photo.hidden) return;
    drawFaces({ faces: [] });
    $("recognize-status").textContent = error.message;
    $("recognize-status").className = "error";
  }
}

async function startWebcam() {
  try {
    webcamStream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  } catch (error) {
    $("recognize-status").textContent = `webcam: ${error.message}`;
    return;
  }
  const video = $("webcam");
  video.srcObject = webcamStream;
  showOnStage(video);
  $("webcam-start").disabled = true;
  $("webcam-stop").disabled = false;
  let frames = 0;
  const canvas = document.createElement("canvas");
  const step = async () => {
    if (!webcamStream) return;
    if (video.videoWidth) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      const blob = await new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.85));
      try {
        const answer = await recognise(blob);
        if (!webcamStream) return;
        drawFaces(answer);
        frames += 1;
        $("recognize-status").textContent = `webcam: ${frames} frame(s), ${answer.faces.length} face(s)`;
      } catch (error) {
        $("recognize-status").textContent = `webcam: ${error.message}`;
      }
    }
    webcamTimer = setTimeout(step, 150);
  };
  step();
}

function stopWebcam() {
  clearTimeout(webcamTimer);
  if (webcamStream) webcamStream.getTracks().forEach((track) => track.stop());
  webcamStream = null;
  $("webcam-start").disabled = false;
  $("webcam-stop").disabled = true;
}

// ---------------------------------------------------------------- live cameras (serve --input)

const snapshotUrls = new Map();  // event id -> object URL of its snapshot (fetched once)

function cameraCard(camera) {
  let card = [...document.querySelectorAll("#camera-list .camera")].find((c) => c.dataset.camera === camera.name);
  if (card) return card;
  const view = element("img", { className: "camera-view", alt: `camera ${camera.name}` });
  card = element("div", { className: "camera", dataset: { camera: camera.name } },
    element("h3", {}, camera.name, element("span", { className: "camera-status" })),
    view, element("ul", { className: "camera-tracks" }));
  $("camera-list").append(card);
  if (keyRequired) pollFrames(camera, view);  // an <img> cannot send the x-api-key header: fetch each frame
  else view.src = camera.stream;              // the annotated MJPEG stream
  return card;
}

async function pollFrames(camera, view) {
  try {
    const blob = await call("GET", camera.latest.replace(API, ""));
    const old = view.src;
    view.src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  } catch (error) { /* no frame yet, or a wrong key: try again */ }
  setTimeout(() => pollFrames(camera, view), FRAME_POLL_MS);
}

function showCamera(camera) {
  const card = cameraCard(camera);
  card.dataset.status = camera.status;
  const status = card.querySelector(".camera-status");
  status.className = `camera-status ${camera.status}`;
  status.textContent = ` ${camera.status} · ${camera.frames} frames`;
  card.querySelector(".camera-tracks").replaceChildren(...camera.tracks.map((t) => element("li",
    { className: "person", dataset: { name: t.name, track: t.track ?? "" } },
    element("strong", { textContent: t.name }), shownScore(t) == null ? "" : ` ${shownScore(t)}`)));
}

function eventItem(event) {
  const item = element("li", { className: `event ${event.event}`, dataset: { event: event.event, name: event.name ?? "" } });
  if (event.snapshot_url) {
    const img = element("img", { alt: "" });
    item.append(img);
    const cached = snapshotUrls.get(event.id);
    if (cached) img.src = cached;
    else call("GET", event.snapshot_url.replace(API, "")).then((blob) => {
      const url = URL.createObjectURL(blob);
      snapshotUrls.set(event.id, url);
      img.src = url;
    }).catch(() => {});
  }
  const time = new Date(event.time).toLocaleTimeString();
  item.append(`${time} ${event.camera} #${event.track} ${event.event}${event.name ? " " + event.name : ""}`);
  if (event.event === "named" && event.name && event.name !== UNKNOWN && event.snapshot_url) {
    item.append(" ", notButton(event.name, () => call("POST", `/events/${event.id}/not`)));
  }
  return item;
}

async function pollCameras() {
  try {
    const { cameras } = await call("GET", "/cameras");
    $("cameras").hidden = cameras.length === 0;
    if (cameras.length) {
      cameras.forEach(showCamera);
      const { events } = await call("GET", "/events?limit=30");
      $("events").replaceChildren(...events.map(eventItem));
      const kept = new Set(events.map((e) => e.id));
      for (const [id, url] of snapshotUrls) if (!kept.has(id)) { URL.revokeObjectURL(url); snapshotUrls.delete(id); }
    }
  } catch (error) { /* a wrong key: the gallery shows the message */ }
  setTimeout(pollCameras, CAMERA_POLL_MS);
}

// ---------------------------------------------------------------- seen: the faces it did not know (/unknowns)

const chipUrls = new Map();  // face id -> object URL of its chip (fetched once)
let seenDrawn = "";          // the groups and subjects last drawn, to redraw only when they change

// What the Seen view says; `loading`: a failed refresh, cleared by the next one that works.
function seenSays(text, isError = false, loading = false) {
  $("seen-status").textContent = text;
  $("seen-status").className = isError ? "error" : "";
  $("seen-status").dataset.loading = loading ? "yes" : "";
}

// Whether the user is typing a name or choosing a group to merge with: a poll must not wipe that.
function seenBusy() {
  return [...document.querySelectorAll("#unknown-groups input, #unknown-groups select")]
    .some((field) => field.value || field === document.activeElement);
}

async function refreshSeen(force = false) {
  try {
    const [{ groups }, { subjects }] = await Promise.all([call("GET", "/unknowns"), call("GET", "/subjects")]);
    if ($("seen-status").dataset.loading) seenSays("");
    const drawn = JSON.stringify([groups, subjects.map((s) => s.subject)]);
    // Forced or not, the same groups are never drawn twice: a redraw would drop what the user is pointing at.
    if (drawn === seenDrawn || (!force && seenBusy())) return;
    seenDrawn = drawn;
    $("subject-names").replaceChildren(...subjects.map((s) => element("option", { value: s.subject })));
    const typed = new Map([...document.querySelectorAll("#unknown-groups .group")]
      .map((item) => [item.dataset.group, item.querySelector(".group-name").value]));
    $("unknown-groups").replaceChildren(...groups.map((group) => groupItem(group, groups, typed.get(group.id))));
    $("seen-empty").hidden = groups.length > 0;
    const shown = new Set(groups.flatMap((g) => g.examples.map((e) => e.face_id)));
    for (const [id, url] of chipUrls) if (!shown.has(id)) { URL.revokeObjectURL(url); chipUrls.delete(id); }
  } catch (error) { seenSays(error.message, true, true); }
}

function chipImage(example) {
  const img = element("img", { alt: "", dataset: { face: example.face_id } });
  const cached = chipUrls.get(example.face_id);
  if (cached) img.src = cached;
  else call("GET", example.url.replace(API, "")).then((blob) => {
    const url = URL.createObjectURL(blob);
    chipUrls.set(example.face_id, url);
    img.src = url;
  }).catch(() => {});
  return img;
}

const shortId = (id) => id.slice(0, 6);
const seenAt = (iso) => new Date(iso).toLocaleString();

// A group's card: its best faces, facts, and what can be done to it (`typed`: a name being typed, kept on a redraw).
function groupItem(group, groups, typed = "") {
  const seen = group.first_seen === group.last_seen ? `seen ${seenAt(group.last_seen)}`
    : `first seen ${seenAt(group.first_seen)} · last seen ${seenAt(group.last_seen)}`;
  const facts = `group ${shortId(group.id)} · ${group.faces} face(s) · ${seen} · ${group.sources.join(", ")}`
    + (group.ignored ? " · ignored" : "");
  const name = element("input", { className: "group-name", placeholder: "who is this?", autocomplete: "off",
    value: typed });
  name.setAttribute("list", "subject-names");  // a new name, or one of the subjects
  const merge = element("select", { className: "merge-with" }, element("option", { value: "", textContent: "merge with…" }),
    ...groups.filter((g) => g.id !== group.id).map((g) => element("option",
      { value: g.id, textContent: `group ${shortId(g.id)} (${g.faces} face(s))` })));
  const actions = element("div", { className: "group-actions" }, name,
    actionButton("name", "name-group", () => nameGroup(group, name.value.trim())),
    merge, actionButton("merge", "merge-group", () => mergeGroup(group, merge.value)),
    actionButton(group.ignored ? "unignore" : "ignore", "ignore-group",
      () => groupCall(group, "POST", "/ignore", { ignored: !group.ignored })),
    actionButton("forget", "forget-group", () => forgetGroup(group)));
  return element("li", { className: "group" + (group.ignored ? " ignored" : ""), dataset: { group: group.id } },
    element("div", { className: "examples" }, ...group.examples.map(chipImage)),
    element("div", { className: "group-facts", textContent: facts }), actions);
}

function actionButton(text, className, onclick) {
  return element("button", { textContent: text, className, onclick });
}

// One change to a group; the answer, or null when refused (the reason shown).
async function groupCall(group, method, path, body) {
  try {
    const answer = await call(method, `/unknowns/${encodeURIComponent(group.id)}${path}`, body);
    seenSays("");
    return answer;
  } catch (error) {
    seenSays(`group ${shortId(group.id)}: ${error.message}`, true);
    return null;
  } finally {
    refreshSeen(true);
  }
}

async function nameGroup(group, subject) {
  if (!subject) { seenSays("type the person's name, or pick a subject", true); return; }
  seenSays(`naming group ${shortId(group.id)} as ${subject}…`);
  const named = await groupCall(group, "POST", "/name", { subject });
  if (!named) return;
  seenSays(`named ${named.subject}: ${named.photos.length} photo(s) added to `
    + `${named.new_subject ? "a new subject" : "the subject"} ${named.subject}`);
  refresh();
}

async function mergeGroup(group, other) {
  if (!other) { seenSays("choose the group to merge with", true); return; }
  await groupCall(group, "POST", "/merge", { group: other });
}

async function forgetGroup(group) {
  if (confirm(`Forget group ${shortId(group.id)} and its ${group.faces} face(s)?`)) await groupCall(group, "DELETE", "");
}

async function forgetAll() {
  if (!confirm("Forget every unknown face it kept?")) return;
  try {
    const { deleted_faces: gone } = await call("DELETE", "/unknowns");
    seenSays(`forgot ${gone} face(s)`);
  } catch (error) { seenSays(error.message, true); }
  refreshSeen(true);
}

async function pollSeen() {
  await refreshSeen();
  setTimeout(pollSeen, SEEN_POLL_MS);
}

// ---------------------------------------------------------------- wiring

async function start() {
  const health = await (await fetch(API + "/health")).json();
  $("health").textContent = `${health.people} people enrolled · model ${health.model}`;
  keyRequired = health.key_required;
  if (health.key_required) {
    $("key-row").hidden = false;
    $("api-key").value = localStorage.getItem("facenet-key") || "";
  }
  $("api-key").onchange = () => {
    localStorage.setItem("facenet-key", $("api-key").value.trim());
    refresh();
    refreshSeen(true);
  };
  const zone = $("drop-zone");
  zone.ondragover = (event) => { event.preventDefault(); zone.classList.add("over"); };
  zone.ondragleave = () => zone.classList.remove("over");
  zone.ondrop = (event) => { event.preventDefault(); zone.classList.remove("over"); enroll([...event.dataTransfer.files]); };
  $("enroll-files").onchange = (event) => { enroll([...event.target.files]); event.target.value = ""; };
  $("recognize-file").onchange = (event) => { if (event.target.files[0]) recognisePhoto(event.target.files[0]); };
  $("webcam-start").onclick = startWebcam;
  $("webcam-stop").onclick = stopWebcam;
  $("sync").onclick = async () => { await call("POST", "/sync"); refresh(); };
  $("seen-refresh").onclick = () => refreshSeen(true);
  $("seen-forget-all").onclick = forgetAll;
  refresh();
  pollCameras();
  pollSeen();
}

start();
