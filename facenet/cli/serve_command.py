"""`facenet serve` (= `--serve`): the REST service and web page on --host:--port, over data/ and the gallery; with
--input, live cameras recognised in the service (their views, tracks and events in the API and on the page)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from facenet.cli import common
from facenet.cli.event_output import EventSinks, LiveOptions
from facenet.cli.exit_codes import Exit
from facenet.cli.frigate_command import FrigateLink, connect_frigate
from facenet.cli.options import FrigateOptions
from facenet.gallery.pg import GalleryError
from facenet.live.frigate.bridge import FrigateThread
from facenet.service.keys import KeyFileError, key_problem, load_keys
from facenet.service.store import GalleryStore
from facenet.settings import KEEP_DAYS, KEEP_FACES, max_upload_problem, retention_problems
from facenet.unknowns.store import Retention

log = logging.getLogger(__name__)


def serve_command(
    host: str, port: int, key_file: str | None, max_upload_mb: float, data_dir: str | Path, database_dir: str | Path,
    database_url: str | None, weights_dir: str | Path, model: str, detector: str, threshold: float | None,
    pretrained: bool, cameras: list[str] | None = None, live: LiveOptions | None = None,
    output_dir: str | Path = "output", as_json: bool = False, unknown_days: float = KEEP_DAYS,
    unknown_faces: int = KEEP_FACES, frigate: FrigateOptions | None = None,
) -> int:
    """Sync the gallery with data/, then serve until Ctrl-C (a graceful stop, exit 0); exit 2 on bad key
    settings or camera specs, 1 when the model, the gallery or an event sink cannot be set up.

    `cameras`: live camera specs ([name=]rtsp://…) run in the service, their events sent as `live` says (the CLI's
    --events, --mqtt_url, --webhook) and their snapshots written under `output_dir`/snapshots. `unknown_days`,
    `unknown_faces`: how long and how many unknown faces (/recognize?collect=true) are kept. `frigate` with a `url`:
    Frigate's person events are followed on a background thread (facenet/cli/frigate_command.py), their events sent
    where the cameras' go; Frigate unreachable at start: exit 1."""
    problem = key_problem(host, key_file)
    upload_problem = max_upload_problem(max_upload_mb)
    problem = problem or (f"--max_upload_mb {upload_problem}" if upload_problem else None)
    kept = retention_problems(unknown_days, unknown_faces)
    problem = problem or (f"--{kept[0][0]} {kept[0][1]}" if kept else None)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return Exit.USAGE
    try:
        keys = load_keys(key_file)
    except KeyFileError as error:  # the file changed since the check
        print(f"error: {error}", file=sys.stderr)
        return Exit.USAGE
    problem = common.serve_camera_problem(cameras or [])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return Exit.USAGE
    live = live or LiveOptions()
    link = connect_frigate(frigate, live.mqtt_url) if frigate is not None and frigate.url else None
    if frigate is not None and frigate.url and link is None:
        return Exit.FAILED
    try:
        store = _store(data_dir, database_dir, database_url, weights_dir, model, detector, threshold, pretrained,
                       Retention(unknown_days, unknown_faces))
        if store is None:
            return Exit.FAILED
        return _serve(store, host, port, keys, max_upload_mb, data_dir, cameras, live, output_dir, as_json, link)
    finally:
        if link is not None:
            link.close()


def _serve(store: GalleryStore, host: str, port: int, keys: frozenset[str], max_upload_mb: float,
           data_dir: str | Path, cameras: list[str] | None, live: LiveOptions, output_dir: str | Path, as_json: bool,
           link: FrigateLink | None) -> int:
    """Serve until Ctrl-C, with the cameras and Frigate beside; exit 1 when an event sink cannot be set up."""
    import uvicorn  # the service's stack (uvicorn, FastAPI) loads only for `serve`

    from facenet.service.app import create_app
    from facenet.service.cameras import CurrentGallery, ServiceCameras
    from facenet.service.uploads import MiB

    live_cameras = None
    try:
        if cameras:
            live_cameras = ServiceCameras(cameras, store, live.tracking(live=True), live.collecting(live=True))
            live_cameras.sink = EventSinks(live, Path(output_dir), as_json, on_record=live_cameras.keep)
        own_sink = EventSinks(live, Path(output_dir), as_json) if link is not None and not cameras else None
    except (OSError, ValueError) as problem:
        log.error("cannot send events: %s", problem)
        return Exit.FAILED
    sink = own_sink or (live_cameras.sink if live_cameras is not None else None)  # the cameras close theirs
    workers = []
    if link is not None and sink is not None:
        collector = store.collector if live.collecting(live=True) else None
        watcher = link.watcher(store.pipeline, CurrentGallery(store), store.threshold, collector)
        workers.append(FrigateThread(link.events, watcher, sink.send))
    app = create_app(store, keys, max_upload=int(max_upload_mb * MiB), cameras=live_cameras, host=host,
                     workers=workers)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    if live_cameras is not None:
        live_cameras.stopping = lambda: server.should_exit  # Ctrl-C ends the MJPEG streams, then the cameras
    print(store.snapshot.report_text.splitlines()[0], file=sys.stderr)
    print(f"Serving {len(store.snapshot.database)} people from {data_dir} on http://{host}:{port}/ (API docs: /docs; "
          f"API keys {'required' if keys else 'not required'}); Ctrl-C stops", file=sys.stderr, flush=True)
    if live_cameras is not None:
        print(f"Cameras: {', '.join(c['name'] for c in live_cameras.summaries())} (/api/v1/cameras)",
              file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises the signal again once it has stopped
        server.run()  # Ctrl-C: a graceful stop
    for line in own_sink.close() if own_sink is not None else []:
        log.warning("%s", line)
    return Exit.OK


def _store(data_dir, database_dir, database_url, weights_dir, model, detector, threshold, pretrained, retention):
    """The service's gallery, synced; None (logged) when the model or the gallery cannot be loaded."""
    try:
        pipeline = common.load_pipeline(detector, model, weights_dir, None if pretrained else database_dir)
        return GalleryStore(data_dir, pipeline, database_dir, database_url, threshold, retention)
    except (OSError, ValueError, RuntimeError, GalleryError) as problem:
        log.error("cannot load the model or the gallery: %s", problem)
        return None
