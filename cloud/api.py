"""HTTP API and live stream (FastAPI): REST for nodes, sessions, dancers, results and latency,
a WebSocket live stream, token authentication, Prometheus ``/metrics`` and the dashboard.

Authentication: every ``/api`` route and the live stream need the token, given as
``Authorization: Bearer <token>``, an ``X-Dancewire-Token`` header, or ``?token=`` (the
dashboard's WebSocket uses the query form). The dashboard's static files carry no data and
are served without it; the page asks for the token (or takes it from the URL fragment
``#token=...``). ``/metrics`` needs the token too unless ``metrics_public`` is set.
OpenAPI: ``/openapi.json``.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from cloud.scores import MEANINGS
from cloud.store import StoreUnavailable
from dancewire.errors import BadInputError

log = logging.getLogger(__name__)
DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"


class Node(BaseModel):
    node_id: str
    first_seen: float
    last_seen: float
    online: bool = Field(description="a window or hello within the last 10 s")
    info: dict[str, Any] = {}


class Session(BaseModel):
    session_id: str
    node_id: str
    first_seen: float
    last_seen: float
    routine: str = ""
    dancers: int = 0
    live: dict[str, Any] | None = Field(None, description="live per-session aggregate (if in memory)")


class Dancer(BaseModel):
    dancer: str = Field(description="node/session/track")
    session_id: str
    node_id: str
    track_id: int
    first_seen: float
    last_seen: float
    style: str = Field(description="stable style label after hysteresis")
    confidence: float
    live: dict[str, Any] | None = None


class Result(BaseModel):
    node_id: str
    epoch: int
    seq: int
    session_id: str
    dancer: str
    t0: float
    t1: float
    arrival: float
    style: str | None = Field(None, description="per-window argmax style")
    confidence: float | None = None
    probs: dict[str, float] | None = Field(None, description="calibrated per-window style probabilities")
    stable_style: str | None = None
    stable_confidence: float | None = None
    nearest: list[dict] | None = Field(None, description="nearest reference videos (Tong's video level)")
    nearest_groups: list[dict] | None = Field(None, description="nearest groups (Tong's group level)")
    scores: dict[str, float | None] | None = None
    phrase: int | None = None
    beat_count: int | None = None
    late: bool = False
    classify_ms: float | None = None


class RoutineBody(BaseModel):
    routine: str


def create_app(service, token: str) -> FastAPI:
    app = FastAPI(title="dancewire cloud", version="1",
                  description="Style, likeness and scores of dancers from many studios, live.")
    app.state.service = service

    @app.exception_handler(StoreUnavailable)
    def store_unavailable(request: Request, exc: StoreUnavailable):
        """The database is down or full: 503 with the reason (the live stream goes on)."""
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    def check(given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def token_of(request: Request | WebSocket) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.headers.get("x-dancewire-token") or request.query_params.get("token")

    def auth(request: Request) -> None:
        if not check(token_of(request)):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    api = [Depends(auth)]

    def live_session(session_id: str) -> dict | None:
        with service.lock:                 # the ingest thread updates the aggregator
            return service.aggregator.session_summary(session_id) or None

    def live_dancer(key: str) -> dict | None:
        with service.lock:
            return service.aggregator.dancer_summary(key)

    @app.get("/api/health", tags=["meta"])
    def health() -> dict:
        """Liveness; no token needed."""
        return {"ok": True, "uptime_s": time.time() - service.started}

    @app.get("/api/nodes", response_model=list[Node], dependencies=api, tags=["nodes"])
    def nodes():
        now = time.time()
        return [Node(**r, online=now - r["last_seen"] <= 10.0) for r in service.store.nodes()]

    @app.get("/api/sessions", response_model=list[Session], dependencies=api, tags=["sessions"])
    def sessions(limit: int = Query(100, ge=1, le=1000)):
        out = []
        for r in service.store.sessions(limit):
            live = live_session(r["session_id"])
            out.append(Session(**r, live=live))
        return out

    # session ids may hold '/' (the wire allows it): `:path`, the suffixed routes first
    @app.put("/api/sessions/{session_id:path}/routine", dependencies=api, tags=["sessions"])
    def set_routine(session_id: str, body: RoutineBody) -> dict:
        """Compare this session's dancers with one enrolled routine ("" = each dancer's nearest)."""
        if body.routine and body.routine not in service.gallery.routine_tables:
            raise HTTPException(400, f"routine {body.routine!r} is not enrolled with eight-counts")
        if not service.set_routine(session_id, body.routine):
            raise HTTPException(404, "no such session")
        return {"session_id": session_id, "routine": body.routine}

    @app.get("/api/sessions/{session_id:path}/dancers", response_model=list[Dancer], dependencies=api, tags=["dancers"])
    def session_dancers(session_id: str):
        if service.store.session(session_id) is None:    # as /api/sessions/{id}: an unknown session is 404
            raise HTTPException(404, "no such session")
        return [Dancer(**r, live=live_dancer(r["dancer"])) for r in service.store.dancers(session_id)]

    @app.get("/api/sessions/{session_id:path}", response_model=Session, dependencies=api, tags=["sessions"])
    def session(session_id: str):
        r = service.store.session(session_id)
        if r is None:
            raise HTTPException(404, "no such session")
        r.pop("state", None)
        n = len(service.store.dancers(session_id))
        return Session(**r, dancers=n, live=live_session(session_id))

    @app.get("/api/dancers", response_model=list[Dancer], dependencies=api, tags=["dancers"])
    def dancers():
        return [Dancer(**r, live=live_dancer(r["dancer"])) for r in service.store.dancers()]

    @app.get("/api/dancers/{dancer:path}", response_model=Dancer, dependencies=api, tags=["dancers"])
    def dancer(dancer: str):
        rows = [r for r in service.store.dancers() if r["dancer"] == dancer]
        if not rows:
            raise HTTPException(404, "no such dancer")
        return Dancer(**rows[0], live=live_dancer(dancer))

    @app.get("/api/results", response_model=list[Result], dependencies=api, tags=["results"])
    def results(session: str | None = None, dancer: str | None = None,
                since: float | None = Query(None, allow_inf_nan=False), limit: int = Query(500, ge=1, le=10000)):
        """Per-window results, oldest first (the newest `limit` after `since`, an arrival time)."""
        return service.store.results(session, dancer, since, limit)

    @app.get("/api/latency", dependencies=api, tags=["meta"])
    def latency(history_s: float = Query(0.0, ge=0, description="also summarise the stored samples of this many seconds")) -> dict:
        """Per-stage latency (ms) over the most recent windows, with each stage's meaning; with `history_s`,
        also the stored samples (publish: arrival -> live push; dashboard: arrival -> drawn) over that period,
        the newest 200,000 at most (`history_truncated` says when older ones were left out)."""
        out = {"stages": service.latency.summary(), "counters": service.counters}
        if history_s > 0:
            out["history"], out["history_truncated"] = service.store.latency_history(time.time() - history_s)
        return out

    @app.get("/api/gallery", dependencies=api, tags=["meta"])
    def gallery() -> dict:
        return service.gallery.summary() | {"index": service.classifier.index.kind}

    @app.post("/api/gallery/reload", dependencies=api, tags=["meta"])
    def reload_gallery() -> dict:
        """Load the gallery file again (after `dancewire cloud enroll`), without restarting the cloud."""
        try:
            service.reload_gallery()
        except BadInputError as exc:
            raise HTTPException(400, str(exc)) from None
        return service.gallery.summary() | {"index": service.classifier.index.kind}

    @app.get("/api/scores", tags=["meta"])
    def scores() -> dict:
        """What each score name means (no token needed)."""
        return MEANINGS

    @app.get("/api/live/snapshot", dependencies=api, tags=["live"])
    def snapshot(session: str | None = None) -> dict:
        """Everything the dashboard needs to draw before the live stream takes over: the active dancers
        and those of the recent results (the page draws no others; yesterday's stay in /api/dancers),
        and their sessions."""
        agg = service.aggregator
        recent = service.store.results(session, None, time.time() - 120, 2000)
        shown = {r["dancer"] for r in recent}
        with service.lock:
            dancers = [s for k, d in agg.dancers.items() if session in (None, d.session_id)
                       for s in (agg.dancer_summary(k),) if s["active"] or k in shown]
            now = time.time()           # and sessions with a dancer shown or music in the last hour
            keep = {s["session"] for s in dancers} | {sid for sid, ss in agg.sessions.items() if now - ss.last_seen < 3600}
            sessions = [agg.session_summary(sid) for sid in agg.sessions if session in (None, sid) and sid in keep]
            # per rig: each node's beats are on its own media clock
            grids = [{"session": sid, "node": node, "bpm": g.bpm, "beats": g.beats[-400:],
                      "epoch": g.last_epoch, "seq": g.last_seq, "run_seq": g.run_seq}
                     for sid, ss in agg.sessions.items() if session in (None, sid) and sid in keep
                     for node, g in ss.grids.items()]
        return {"dancers": dancers, "sessions": sessions, "results": recent, "beat_grids": grids,
                "styles": list(service.gallery.styles), "dancer_timeout_s": service.settings.aggregate.dancer_timeout_s,
                "nodes": [n.model_dump() for n in nodes()], "latency": service.latency.summary(), "server_time": time.time()}

    @app.websocket("/api/live")
    async def live(ws: WebSocket):
        if not check(token_of(ws)):            # as REST: header or ?token= (the browser can only use the query)
            await ws.accept()                      # so that the page sees the code and asks for a token
            await ws.close(code=4401, reason="missing or wrong token")
            return
        await ws.accept()
        q = service.hub.subscribe()

        async def sender():
            while True:
                text = await q.get()
                await ws.send_text(text)

        task = asyncio.create_task(sender())
        try:
            await ws.send_text(json.dumps({"type": "hello", "styles": list(service.gallery.styles),
                                           "server_time": time.time()}))
            while True:
                frame = await ws.receive()
                if frame.get("type") == "websocket.disconnect":
                    break
                msg = frame.get("text")
                if msg is None:
                    continue                        # a binary frame: not the page's (it ended the handler)
                try:
                    data = json.loads(msg)
                except ValueError:
                    continue
                if not isinstance(data, dict) or data.get("type") != "drawn":
                    continue                        # a browser's message is untrusted: skip what is not ours
                now = time.time()
                shown, arrivals = data.get("shown", now), data.get("arrivals")
                if isinstance(arrivals, list):
                    for arrival in arrivals[:256]:
                        service.dashboard_ack(arrival, shown, now)   # ignores values that are not finite numbers
        except WebSocketDisconnect:
            pass
        finally:
            task.cancel()
            service.hub.unsubscribe(q)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["meta"])
    def metrics(request: Request):
        """Prometheus text format."""
        if not service.settings.metrics_public:
            auth(request)
        return PlainTextResponse(service.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/dashboard/")

    @app.get("/dashboard/", include_in_schema=False)
    def index():
        return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR), name="dashboard")
    return app


def ws_impl() -> str:
    """uvicorn's sans-I/O websockets implementation where this uvicorn has it."""
    try:
        from uvicorn.config import WS_PROTOCOLS
        return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "auto"
    except ImportError:
        return "auto"


def new_token() -> str:
    return secrets.token_urlsafe(24)
