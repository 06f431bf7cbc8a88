"""The API: token auth, REST, OpenAPI, Prometheus metrics and the WebSocket live stream, over real HTTP."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from cloud.service import CloudService
from cloud.settings import CloudSettings

TOKEN = "test-token"


def get(url, token=TOKEN, raw=False):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        return body.decode() if raw else json.loads(body)


@pytest.fixture
def served(tmp_path, ballroom_gallery, make_server):
    g, _ = ballroom_gallery
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz"),
                       gallery=g)
    srv = make_server(svc, TOKEN)
    yield srv
    svc.close()


def feed(service, ballroom_gallery, n, session="class-1"):
    import real_embeddings
    _, holdout = ballroom_gallery
    events = real_embeddings.simulated_session(holdout, session=session)[:n]
    for _, w, b in events:
        service.process(w, b)
    return events


def test_token_required(served):
    for path in ("/api/nodes", "/api/sessions", "/api/results", "/api/latency", "/metrics", "/api/live/snapshot",
                 "/api/gallery", "/api/dancers", "/api/sessions/x/dancers"):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(served.url + path, token=None)
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as e:
            get(served.url + path, token="wrong")
        assert e.value.code == 401
    assert get(served.url + "/api/health", token=None)["ok"]
    # token in the query string and in the X- header work too
    assert get(served.url + f"/api/nodes?token={TOKEN}", token=None) == []
    req = urllib.request.Request(served.url + "/api/nodes", headers={"X-Dancewire-Token": TOKEN})
    assert json.loads(urllib.request.urlopen(req).read()) == []


def test_rest_endpoints(served, ballroom_gallery):
    feed(served.service, ballroom_gallery, 60)
    base = served.url
    nodes = get(base + "/api/nodes")
    assert nodes[0]["node_id"] == "studio-a" and nodes[0]["online"]
    sessions = get(base + "/api/sessions")
    assert sessions[0]["session_id"] == "class-1" and sessions[0]["dancers"] == 3
    assert sessions[0]["live"]["windows"] == 60
    sess = get(base + "/api/sessions/class-1")
    assert sess["live"]["group"]["dancers"] == 3
    dancers = get(base + "/api/sessions/class-1/dancers")
    assert len(dancers) == 3 and dancers[0]["live"]["windows"] > 0
    one = get(base + "/api/dancers/" + dancers[0]["dancer"])
    assert one["dancer"] == dancers[0]["dancer"]
    res = get(base + "/api/results?session=class-1&limit=1000")
    assert len(res) == 60 and res[-1]["probs"]
    since = res[-10]["arrival"]
    later = [(r["dancer"], r["seq"]) for r in get(base + f"/api/results?since={since}")]
    assert later and later == [(r["dancer"], r["seq"]) for r in res if r["arrival"] > since]   # exactly those
    lat = get(base + "/api/latency")
    assert lat["stages"]["classify"]["count"] == 60 and lat["stages"]["total"]["p50_ms"] > 0
    assert "meaning" in lat["stages"]["store"]
    assert get(base + "/api/gallery")["styles"].keys() == {"cha-cha", "rumba", "waltz"}
    assert "routine_similarity" in get(base + "/api/scores", token=None)
    snap = get(base + "/api/live/snapshot")
    assert len(snap["dancers"]) == 3
    (grid,) = snap["beat_grids"]                       # one rig: its beats, on its own clock, and its tempo
    assert grid["session"] == "class-1" and grid["node"] and grid["beats"] and grid["bpm"] > 0
    for path in ("/api/sessions/nope", "/api/sessions/nope/dancers"):    # the dancers of no session: 404 too
        with pytest.raises(urllib.error.HTTPError) as e:
            get(base + path)
        assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:                     # NaN bound as NULL: silently nothing
        get(base + "/api/results?since=nan")
    assert e.value.code == 422
    spec = get(base + "/openapi.json", token=None)
    assert {"/api/nodes", "/api/sessions", "/api/results", "/api/latency"} <= set(spec["paths"])


def test_metrics_prometheus_text(served, ballroom_gallery):
    feed(served.service, ballroom_gallery, 20)
    text = get(served.url + "/metrics", raw=True)
    assert "# TYPE dancewire_cloud_windows_total counter" in text
    assert "dancewire_cloud_windows_total 20" in text
    assert 'dancewire_cloud_latency_seconds{stage="classify",quantile="0.5"}' in text
    for line in text.splitlines():             # every sample line is "name{labels} value"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_websocket_live_stream(served, ballroom_gallery):
    import websocket

    ws_url = served.url.replace("http", "ws") + "/api/live"
    bad = websocket.create_connection(ws_url + "?token=wrong", timeout=5)
    opcode, frame = bad.recv_data_frame(True)      # closed at once with code 4401, no data
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 4401
    bad.close()
    for header in (f"Authorization: Bearer {TOKEN}", f"X-Dancewire-Token: {TOKEN}"):   # as REST takes it
        other = websocket.create_connection(ws_url, header=[header], timeout=5)
        assert json.loads(other.recv())["type"] == "hello"
        other.close()
    ws = websocket.create_connection(ws_url + f"?token={TOKEN}", timeout=10)
    hello = json.loads(ws.recv())
    assert hello["type"] == "hello" and set(hello["styles"]) == {"cha-cha", "rumba", "waltz"}
    t = threading.Thread(target=feed, args=(served.service, ballroom_gallery, 10))
    t.start()
    kinds, windows = set(), []
    deadline = time.time() + 10
    while len(windows) < 10 and time.time() < deadline:
        m = json.loads(ws.recv())
        kinds.add(m["type"])
        if m["type"] == "window":
            windows.append(m)
            assert time.time() - m["arrival"] < 1.0
    t.join()
    assert len(windows) == 10 and {"window", "dancer", "beats", "group"} <= kinds
    assert windows[0]["probs"] and "stable_style" in windows[0] and windows[0]["nearest"]
    # messages that are not the page's (or a page gone wrong) are skipped; the stream stays open
    for junk in ("[1, 2]", '{"type": "drawn", "arrivals": ["x", null, NaN]}', '{"type": "drawn", "shown": null, "arrivals": [1]}',
                 '{"type": "drawn", "arrivals": 5}', '"drawn"'):
        ws.send(junk)
    ws.send_binary(b"\x00\x01")                         # a binary frame ended the handler (KeyError 'text')
    # the page reports when it drew a window: the cloud records the dashboard latency
    ws.send(json.dumps({"type": "drawn", "shown": time.time(), "arrivals": [w["arrival"] for w in windows]}))
    deadline = time.time() + 5
    while "dashboard" not in served.service.latency.summary() and time.time() < deadline:
        time.sleep(0.05)
    assert served.service.latency.summary()["dashboard"]["count"] == 10
    feed(served.service, ballroom_gallery, 12)       # the next batch stores the acknowledged samples
    lat = get(served.url + "/api/latency?history_s=600")
    hist = lat["history"]
    assert lat["history_truncated"] is False
    assert hist["dashboard"]["count"] == 10 and hist["publish"]["count"] >= 12
    assert served.service.counters["dashboard_bad_acks"] == 4
    ws.close()


def test_gallery_reload(served, ballroom_gallery, tmp_path):
    """After enrolment into the gallery file, the running cloud picks it up on request."""
    g, _ = ballroom_gallery
    from cloud.gallery import Gallery
    keep = [i for i, r in enumerate(g.refs) if r.style != "waltz"]   # the same references minus one style
    Gallery(g.embeddings[keep], [g.refs[i] for i in keep], dict(g.encoder)).save(served.service.settings.gallery_path)
    req = urllib.request.Request(served.url + "/api/gallery/reload", data=b"", method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    out = json.loads(urllib.request.urlopen(req).read())
    assert set(out["styles"]) == {"cha-cha", "rumba"}
    assert served.service.classifier.gallery.styles == ["cha-cha", "rumba"]
    feed(served.service, ballroom_gallery, 6)
    assert set(get(served.url + "/api/results")[-1]["probs"]) == {"cha-cha", "rumba"}
    # a corrupt file, or one that names no encoder: 400 with the reason, the running gallery stays
    path = served.service.settings.gallery_path
    for bad in (b"not a gallery", None):
        if bad is None:
            Gallery(np.zeros((0, g.dim), np.float32), []).save(path)
        else:
            path.write_bytes(bad)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 400 and "gallery" in json.loads(e.value.read())["detail"]
        assert served.service.classifier.gallery.styles == ["cha-cha", "rumba"]


def test_set_routine(served):
    import urllib.request as u
    req = u.Request(served.url + "/api/sessions/class-1/routine", data=json.dumps({"routine": "nope"}).encode(),
                    method="PUT", headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        u.urlopen(req)
    assert e.value.code == 400
    req = u.Request(served.url + "/api/sessions/never-seen/routine", data=json.dumps({"routine": ""}).encode(),
                    method="PUT", headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        u.urlopen(req)
    assert e.value.code == 404


def test_a_session_whose_id_holds_a_slash_is_reachable(served, ballroom_gallery):
    """The wire allows '/' in a session id, but {session_id} stopped at it: every session route 404'd."""
    feed(served.service, ballroom_gallery, 12, session="class/1")
    base = served.url
    assert get(base + "/api/sessions/class/1")["session_id"] == "class/1"
    assert len(get(base + "/api/sessions/class/1/dancers")) == 3
    req = urllib.request.Request(base + "/api/sessions/class/1/routine", data=json.dumps({"routine": ""}).encode(),
                                 method="PUT", headers={"Authorization": f"Bearer {TOKEN}",
                                                        "Content-Type": "application/json"})
    assert json.loads(urllib.request.urlopen(req).read())["session_id"] == "class/1"


def test_the_snapshot_holds_what_the_page_draws_not_every_dancer_ever(served, ballroom_gallery):
    """Every dancer and session the cloud ever held went into each snapshot, built under the service's
    lock (1200 of yesterday's dancers made 0.68 MB); the page drew only the active and recent ones."""
    feed(served.service, ballroom_gallery, 12)
    agg = served.service.aggregator
    with served.service.lock:
        for k in range(50):                              # yesterday's class, long idle
            key = f"old/yesterday/{k}"
            agg.restore_dancer({"key": key, "node_id": "old", "session_id": "yesterday", "track_id": k,
                                "last_arrival": time.time() - 86400, "first_arrival": time.time() - 90000})
        agg.restore_session({"session_id": "yesterday", "node_ids": ["old"], "last_arrival": time.time() - 86400,
                             "first_arrival": time.time() - 90000, "last_seen": time.time() - 86400})
    snap = get(served.url + "/api/live/snapshot")
    assert {d["session"] for d in snap["dancers"]} == {"class-1"} and len(snap["dancers"]) == 3
    assert [s["session"] for s in snap["sessions"]] == ["class-1"]
    assert len(get(served.url + "/api/dancers")) >= 3                   # all of them stay in the REST API
