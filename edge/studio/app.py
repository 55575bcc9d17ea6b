"""The studio's server: a Starlette app with the JSON API of ``API.md`` and the page's static files.

Starlette (with uvicorn) because the studio needs little: routes, static files, a thread pool for
blocking work (decoding, the engine) and an in-process test client; no ORM, no templates, no build
step. Handlers are plain functions run in Starlette's thread pool; every error becomes one JSON line
and one log line, and the server goes on (a corrupt video is a 422, not a dead server).
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.errors import EdgeError, InputError
from edge.studio import labels as lab
from edge.studio import library as lib
from edge.studio.guard import Guard
from edge.studio.jobs import Jobs
from edge.studio.live import Live
from edge.studio.media import Frames
from edge.studio.scores import Scores, events_section, settings_json, timeline
from edge.studio.settings import StudioError, StudioSettings
from edge.studio.tasks import eval_work, teach_work

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
_STATUS = {InputError: 422}


class Studio:
    """The server's state: settings, caches, jobs, the live session."""

    def __init__(self, s: StudioSettings) -> None:
        self.s = s
        self.config = None
        if s.config is not None:
            from edge.config import load_config
            self.config = load_config(s.config)
        self.scores = Scores(s, self.config.events if self.config else None)
        self.index = lib.SpoolIndex(s.folder("work") / ".spool-index.json")
        self.frames = Frames()
        self.jobs = Jobs()
        self.live = Live(s, self.scores, self.config)
        self.scores.bundle("default")   # a bad --model fails at start, not on the first click
        if "spool" in s.folders:  # the sidecars read while the page loads: a big spool's first open waits less
            threading.Thread(target=self._warm_index, name="studio-index", daemon=True).start()

    def _warm_index(self) -> None:
        try:
            self.index.ordered(self.s.folders["spool"], "uncertain")
        except Exception as e:  # noqa: BLE001 - the request that needs the listing reports it
            logger.debug("spool index warm-up: %s", e)

    def close(self) -> None:
        self.live.stop()
        self.jobs.close()
        self.frames.close()

    # --- library --------------------------------------------------------------------------------------
    def library(self, r: Request) -> dict[str, Any]:
        b = self.scores.bundle("default")
        spool = None
        if "spool" in self.s.folders:
            try:
                n = len(self.index.clips(self.s.folders["spool"]))
                spool = {"clips": n, "labelled": len(lab.spool_labels(self.s)[0]), "error": None}
            except StudioError as e:
                spool = {"clips": 0, "labelled": 0, "error": str(e)}
        return {"roots": {k: str(self.s.folders[k]) if k in self.s.folders else None
                          for k in ("data", "spool", "recordings", "work")},
                "model": {"name": b.name, "labels": list(b.labels), "path": str(b.root), "precision": b.precision},
                "config": {"path": str(self.s.config)} if self.s.config else None,
                "classes": lib.classes(self.s, list(b.labels)), "dataset": lib.dataset_summary(self.s),
                "spool": spool, "recordings": lib.recordings(self.s)}

    def dataset_clips(self, r: Request) -> dict[str, Any]:
        return lib.dataset_clips(self.s, r.query_params.get("label"), *_page(r))

    def spool(self, r: Request) -> dict[str, Any]:
        labels, version = lab.spool_labels(self.s)
        q = r.query_params
        out = lib.spool_page(self.index, self.s, labels, q.get("order", "uncertain"), q.get("show", "unlabelled"),
                             *_page(r))
        return {**out, "version": version}

    def add_class(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        b = self.scores.bundle("default")
        lab.add_class(self.s, body.get("name"), lib.classes(self.s, []))
        return {"classes": lib.classes(self.s, list(b.labels))}

    def bundles(self, r: Request) -> dict[str, Any]:
        return {"bundles": self.scores.bundles()}

    # --- player ---------------------------------------------------------------------------------------
    def video_info(self, r: Request) -> dict[str, Any]:
        ref = r.query_params.get("path")
        return {"path": ref, **self.frames.info(self.s.resolve(ref))}

    def video_frame(self, r: Request) -> Response:
        ref = r.query_params.get("path")
        path = self.s.resolve(ref)
        i = _int(r, "i", None, 0, 1 << 31)
        w = _int(r, "w", 0, 0, 8192) or None
        st = path.stat()
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}-{i}-{w or 0}"'
        if r.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        data = self.frames.jpeg(path, i, w)
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600", "ETag": etag, "X-Frame-Index": str(i)})

    def scores_of(self, r: Request) -> dict[str, Any]:
        ref = r.query_params.get("path")
        data = self.scores.scores(self.s.resolve(ref), r.query_params.get("model"))
        return {"path": ref, **timeline(data, self.scores.settings(data["bundle"]))}

    def events_replay(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        ref = body.get("path")
        data = self.scores.scores(self.s.resolve(ref), body.get("model"))
        settings = self.scores.settings(data["bundle"], events_section(body.get("events")), "events")
        out = timeline(data, settings)
        return {"path": ref, "events": out["events"], "settings": out["settings"]}

    # --- labelling ------------------------------------------------------------------------------------
    def label_clip(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        return lab.save_clip_label(self.s, body, self.index)

    def segments(self, r: Request) -> dict[str, Any]:
        return lab.get_segments(self.s, r.query_params.get("path"))

    def save_segments(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        return lab.save_segments(self.s, body)

    def move(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        return lab.move_clip(self.s, body)

    def export_clips(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        return lab.export_clips(self.s, self.index)

    def export_recording(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        from edge.data.fieldclips import from_recording
        video, ann = lab.annotations_of(self.s, body.get("path"))
        if not lab.read_segment_list(ann):
            raise StudioError(422, f"{ann.name}: no segments saved for {video.name} yet")
        return from_recording(video, ann, self.s.folder("data"))

    # --- jobs -----------------------------------------------------------------------------------------
    def job_start(self, r: Request, body: dict[str, Any]) -> JSONResponse:
        kinds: dict[str, Callable] = {"teach": teach_work, "eval-events": eval_work}
        kind = body.get("kind")
        if kind not in kinds:
            raise StudioError(400, f"kind {kind!r}: expected {' or '.join(kinds)}")
        params, work = kinds[kind](self.s, self.scores, body)
        job = self.jobs.submit(kind, params, work)
        return JSONResponse(job.json(), status_code=202)

    def job_list(self, r: Request) -> dict[str, Any]:
        return {"jobs": [j.json() for j in self.jobs.all()]}

    def job_get(self, r: Request) -> dict[str, Any]:
        return self.jobs.get(r.path_params["id"]).json()

    def job_cancel(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        return self.jobs.cancel(r.path_params["id"]).json()

    # --- live and the config ----------------------------------------------------------------------------
    def live_sources(self, r: Request) -> dict[str, Any]:
        return self.live.sources()

    def live_start(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        sess = self.live.start(body)
        return {"id": sess.id, "labels": list(sess.bundle.labels), "fps": sess.bundle.temporal.fps,
                "settings": settings_json(sess.settings), "source": sess.what}

    def live_poll(self, r: Request) -> dict[str, Any]:
        return self.live.get(r.path_params["id"]).poll(_int(r, "since", 0, 0, 1 << 62))

    def live_frame(self, r: Request) -> Response:
        seq, data = self.live.get(r.path_params["id"]).jpeg()
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store", "X-Frame-Seq": str(seq)})

    def live_replay(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        return self.live.get(r.path_params["id"]).replay(events_section(body.get("events")))

    def live_stop(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        return {"stopped": self.live.stop()}

    def config_get(self, r: Request) -> dict[str, Any]:
        import yaml
        path, data = lab.read_config(self.s)
        raw = yaml.safe_load(data) or {}
        return {"path": str(path), "version": lab.version_of(data),
                "events": raw.get("events") if isinstance(raw, dict) else None,
                "settings": settings_json(self.scores.settings(self.scores.bundle("default")))}

    def config_events(self, r: Request, body: dict[str, Any]) -> dict[str, Any]:
        def check(cfg: Any) -> None:
            self.scores.settings(self.scores.bundle("default"), cfg.events, f"config {self.s.config}")
        out = lab.save_events(self.s, body, check)
        from edge.config import load_config
        self.config = load_config(self.s.config)
        self.scores.events = self.config.events
        return out


def _int(r: Request, key: str, default: int | None, lo: int, hi: int) -> int:
    raw = r.query_params.get(key)
    if raw is None:
        if default is None:
            raise StudioError(400, f"{key}: required (an integer)")
        return default
    try:
        v = int(raw)
    except ValueError:
        raise StudioError(400, f"{key} {raw[:40]!r}: expected an integer") from None
    if not lo <= v <= hi:
        raise StudioError(400, f"{key} {v}: expected {lo}..{hi}")
    return v


def _page(r: Request) -> tuple[int, int]:
    return _int(r, "offset", 0, 0, 1 << 31), _int(r, "limit", 100, 1, 1000)


def _error(r: Request, status: int, message: str, **extra: Any) -> JSONResponse:
    # a 404 is the page asking for what this server was not given (its first load asks for the review queue
    # before it knows whether --spool was): info, not a warning on every load
    logger.log(logging.INFO if status == 404 else logging.WARNING, "%s %s: %s", r.method, r.url.path, message)
    return JSONResponse({"error": message, **extra}, status_code=status)


def _handler(fn: Callable, with_body: bool) -> Callable:
    async def endpoint(r: Request) -> Response:
        try:
            if with_body:
                raw = await r.body()
                try:
                    body = json.loads(raw or b"{}")
                except (ValueError, UnicodeDecodeError):
                    raise StudioError(400, "request body: not JSON") from None
                if not isinstance(body, dict):
                    raise StudioError(400, "request body: expected a JSON object")
                out = await run_in_threadpool(fn, r, body)
            else:
                out = await run_in_threadpool(fn, r)
        except StudioError as e:
            return _error(r, e.status, str(e), **e.extra)
        except EdgeError as e:
            return _error(r, next((c for t, c in _STATUS.items() if isinstance(e, t)), 422), str(e))
        except Exception:  # noqa: BLE001 - one bad request must not stop the server
            logger.exception("%s %s failed", r.method, r.url.path)
            return JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)
        return out if isinstance(out, Response) else JSONResponse(out)
    return endpoint


def create_app(s: StudioSettings) -> Any:
    """The ASGI app (the Guard around Starlette); ``app.state.studio`` is the :class:`Studio`."""
    st = Studio(s)
    get, post = ["GET"], ["POST"]
    routes = [Route(path, _handler(fn, methods == post), methods=methods) for path, fn, methods in [
        ("/api/library", st.library, get),
        ("/api/dataset/clips", st.dataset_clips, get),
        ("/api/spool", st.spool, get),
        ("/api/bundles", st.bundles, get),
        ("/api/classes", st.add_class, post),
        ("/api/video/info", st.video_info, get),
        ("/api/video/frame", st.video_frame, get),
        ("/api/scores", st.scores_of, get),
        ("/api/events/replay", st.events_replay, post),
        ("/api/labels/clip", st.label_clip, post),
        ("/api/segments", st.segments, get),
        ("/api/segments", st.save_segments, post),
        ("/api/dataset/move", st.move, post),
        ("/api/export/clips", st.export_clips, post),
        ("/api/export/recording", st.export_recording, post),
        ("/api/jobs", st.job_list, get),
        ("/api/jobs", st.job_start, post),
        ("/api/jobs/{id}", st.job_get, get),
        ("/api/jobs/{id}/cancel", st.job_cancel, post),
        ("/api/live/sources", st.live_sources, get),
        ("/api/live/start", st.live_start, post),
        ("/api/live/stop", st.live_stop, post),
        ("/api/live/{id}", st.live_poll, get),
        ("/api/live/{id}/frame", st.live_frame, get),
        ("/api/live/{id}/replay", st.live_replay, post),
        ("/api/config", st.config_get, get),
        ("/api/config/events", st.config_events, post),
    ]]
    routes.append(Route("/api/{rest:path}", _handler(_no_route, False), methods=["GET", "POST"]))
    if STATIC.is_dir():
        routes.append(Mount("/", app=StaticFiles(directory=STATIC, html=True), name="static"))
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            st.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.studio = st
    guarded = Guard(app, s)
    guarded.state = app.state   # tests reach the Studio through the outer app
    return guarded


def _no_route(r: Request) -> Any:
    raise StudioError(404, f"{r.url.path}: no such endpoint (see edge/studio/API.md)")
