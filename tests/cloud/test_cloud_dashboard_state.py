"""The dashboard's own state in a real headless browser: beats per rig (a restart, a late grid, a second studio),
the cloud's clock rather than the browser's, a snapshot that fails once, a stale token in the link,
yesterday's dancers, and a gallery reloaded while the page is open."""
from __future__ import annotations

import time

import numpy as np
import pytest

from cloud.gallery import Gallery
from cloud.records import BeatGridIn, Reference, WindowIn
from cloud.service import CloudService
from cloud.settings import CloudSettings

from test_cloud_dashboard import browser, close, wait_for

TOKEN = "state-token"
DIM = 16


def _gallery(styles=("salsa", "tango", "waltz"), seed=0) -> Gallery:
    rng = np.random.default_rng(seed)
    refs, embs = [], []
    for style in styles:
        base = rng.normal(size=DIM)
        for k in range(8):
            refs.append(Reference(f"{style}@{k}", style, video=f"{style}-v", group=f"{style}-crew"))
            embs.append(base + 0.1 * rng.normal(size=DIM))
    return Gallery(np.stack(embs).astype(np.float32), refs, {"model_id": "m", "hash": "h", "dim": DIM})


def _window(emb, node="n1", session="s1", track=1, seq=1, t0=0.0, arrival=None) -> WindowIn:
    kw = {} if arrival is None else {"arrival": arrival}
    return WindowIn(node, session, track, seq, t0, t0 + 2.0, np.array(emb, np.float32), {}, 1.0, 0, **kw)


def _grid(node="n1", session="s1", seq=1, t0=0.0, t1=80.0, bpm=120.0) -> BeatGridIn:
    ts = list(np.arange(t0, t1, 60.0 / bpm).round(3))
    return BeatGridIn(node, session, seq, t0, t1, bpm, 1.0, ts, [k % 8 + 1 for k in range(len(ts))], [])


@pytest.fixture
def cloud(tmp_path, make_server):
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz",
                                     retention_days=0), gallery=_gallery())
    srv = make_server(svc, TOKEN)
    yield svc, srv
    svc.close()


def _js(drv, expr):
    return drv.execute_script("return " + expr)


def _shown_count(drv, svc, node, session, media_at, period=0.5):
    """(count on the page, the music's counts while reading it). Read mid-beat, and allow the page's
    10 Hz redraw to be up to 0.2 s behind (a loaded machine), so a beat's edge cannot flip the check."""
    while not 0.3 <= media_at() % period <= 0.4:
        time.sleep(0.01)
    grid = svc.aggregator.sessions[session].grids[node]
    music = {grid.position(media_at() - 0.2)[1]}
    shown = int(_js(drv, "document.getElementById('eight').dataset.count"))
    return shown, music | {grid.position(media_at())[1]}


def test_beats_stay_per_rig_through_a_restart_and_a_second_studio(cloud):
    svc, srv = cloud
    g = svc.gallery
    for i in range(3):                                       # yesterday's class, 2 h ago
        svc.process([_window(g.embeddings[8], session="yesterday", track=10 + i, seq=10 + i, arrival=time.time() - 7200)])
    svc.process([], [_grid(seq=1, t0=40.0, t1=80.0)])
    start = time.time()
    svc.process([_window(g.embeddings[0], seq=1, t0=58.0, arrival=start)])   # media time 60 s now
    drv = browser(1200, 900)
    try:
        drv.get(f"{srv.url}/dashboard/#token={TOKEN}")
        wait_for(lambda: _js(drv, "document.getElementById('status').textContent") == "live", what="live")
        assert _js(drv, "location.hash") == ""                       # the token left the address bar
        cards = _js(drv, "[...document.querySelectorAll('.card[data-dancer]')].map(c => c.dataset.dancer)")
        assert cards == ["n1/s1/1"]                                  # not yesterday's three
        shown, music = _shown_count(drv, svc, "n1", "s1", lambda: 60.0 + time.time() - start)
        assert shown in music
        # another studio at 90 BPM: this rig keeps its tempo and count
        svc.process([], [_grid(node="n2", session="s2", t0=0.0, t1=10.0, bpm=90.0)])
        time.sleep(0.5)
        assert "120 BPM" in _js(drv, "document.getElementById('eight-info').textContent")
        shown, music = _shown_count(drv, svc, "n1", "s1", lambda: 60.0 + time.time() - start)
        assert shown in music
        # the rig restarts into the session: its clock is back near 0
        restart = time.time()
        svc.process([], [_grid(seq=2, t0=0.0, t1=30.0)])
        svc.process([_window(g.embeddings[0], seq=2, t0=2.0, arrival=restart)])
        time.sleep(0.5)
        shown, music = _shown_count(drv, svc, "n1", "s1", lambda: 4.0 + time.time() - restart)
        assert shown in music, ("the page dropped the restarted rig's beats",
                                _js(drv, "[window.dancewire.offset, window.dancewire.lastRig, window.dancewire.latest.t1, "
                                         "window.dancewire.beats.get(window.dancewire.lastRig).slice(0, 3)]"))
        # a late grid of the run before the restart, then the new run's next grid: the cloud and the page
        # leave the late one out (merged, it made the next grid look like another restart that wiped the beats)
        svc.process([], [_grid(seq=1, t0=40.0, t1=80.0)])
        svc.process([], [_grid(seq=3, t0=30.0, t1=60.0)])
        time.sleep(0.5)
        assert _js(drv, "window.dancewire.beats.get(window.dancewire.lastRig)[0][0]") == 0
        shown, music = _shown_count(drv, svc, "n1", "s1", lambda: 4.0 + time.time() - restart)
        assert shown in music
        # the gallery gains a style while the page is open: it gets its bar
        rng = np.random.default_rng(5)
        hip = rng.normal(size=DIM).astype(np.float32)
        g2 = Gallery(np.concatenate([g.embeddings, np.stack([hip + 0.05 * rng.normal(size=DIM) for _ in range(8)])]
                                    ).astype(np.float32),
                     list(g.refs) + [Reference(f"hiphop@{k}", "hiphop", video="hiphop-v") for k in range(8)],
                     dict(g.encoder))
        svc.reload_gallery(g2)
        svc.process([_window(hip / np.linalg.norm(hip), seq=3, t0=4.0)])
        wait_for(lambda: "hiphop" in _js(drv, "[...document.querySelectorAll('.card .bar')].map(b => b.dataset.style)"),
                 what="a bar for the new style")
    finally:
        close(drv)


def test_the_page_counts_on_the_clouds_clock_not_the_browsers(cloud):
    svc, srv = cloud
    svc.process([], [_grid(t0=0.0, t1=80.0)])
    start = time.time()
    svc.process([_window(svc.gallery.embeddings[0], seq=1, t0=58.0, arrival=start)])
    drv = browser(1200, 900)
    try:   # this browser's clock runs 1 s fast: two beats at 120 BPM
        drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
            "source": "(() => { const real = Date.now.bind(Date); Date.now = () => real() + 1000; })();"})
        drv.get(f"{srv.url}/dashboard/#token={TOKEN}")
        wait_for(lambda: _js(drv, "document.getElementById('status').textContent") == "live", what="live")
        assert abs(_js(drv, "window.dancewire.offset") + 1.0) < 0.2
        for _ in range(3):
            shown, music = _shown_count(drv, svc, "n1", "s1", lambda: 60.0 + time.time() - start)
            assert shown in music
            time.sleep(0.13)
    finally:
        close(drv)


@pytest.mark.parametrize("error", ["bug", "store down"])
def test_a_snapshot_that_fails_once_is_tried_again(cloud, error):
    """A store that is down answers 503 with a JSON body: the page parsed it as an empty snapshot
    and went live with no styles, dancers or beats (only a 500 with a text body was retried)."""
    from cloud.store import StoreUnavailable

    svc, srv = cloud
    svc.process([_window(svc.gallery.embeddings[0], seq=1)])
    real, calls = svc.store.results, {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug") if error == "bug" else StoreUnavailable("the store is restarting")
        return real(*a, **kw)

    svc.store.results = flaky
    drv = browser(1200, 900)
    try:
        drv.get(f"{srv.url}/dashboard/#token={TOKEN}")
        wait_for(lambda: _js(drv, "document.getElementById('status').textContent") == "live", what="live after a retry")
        assert calls["n"] >= 2 and _js(drv, "document.querySelectorAll('.card[data-dancer]').length") == 1
    finally:
        close(drv)


def test_a_stale_token_in_the_link_does_not_beat_the_one_typed_in(cloud):
    from selenium.webdriver.common.by import By

    _, srv = cloud
    drv = browser(1200, 900)
    try:
        drv.get(f"{srv.url}/dashboard/#token=rotated-last-week")
        wait_for(lambda: drv.find_element(By.ID, "login").is_displayed(), what="token form")
        drv.find_element(By.ID, "token-input").send_keys(TOKEN)
        drv.find_element(By.CSS_SELECTOR, "#login button").click()
        wait_for(lambda: _js(drv, "document.getElementById('status').textContent") == "live", what="live after login")
        assert _js(drv, "window.dancewire.token") == TOKEN
    finally:
        close(drv)


def test_after_a_dropped_stream_the_page_catches_up_and_shows_idle_dancers(tmp_path, make_server):
    """The live stream reconnected without the snapshot, so what was published while it was down
    never showed (a new dancer, a reloaded gallery's styles); and dancer summaries come only with
    windows, so a dancer who stopped was never shown idle on an open page."""
    from cloud.settings import AggregateSettings

    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz",
                                     retention_days=0, aggregate=AggregateSettings(dancer_timeout_s=3.0)),
                       gallery=_gallery())
    srv = make_server(svc, TOKEN)
    drv = browser(1200, 900)
    cards = "Array.from(document.querySelectorAll('.card[data-dancer]')).map(c => [c.dataset.dancer, c.className])"
    try:
        svc.process([_window(svc.gallery.embeddings[0], track=1, seq=1)])
        drv.get(f"{srv.url}/dashboard/#token={TOKEN}")
        wait_for(lambda: _js(drv, "document.getElementById('status').textContent") == "live", what="live")
        _js(drv, "window.dancewire.ws.close() || true")                  # the stream drops ...
        svc.reload_gallery(_gallery(styles=("salsa", "tango", "hiphop"), seed=0))
        svc.process([_window(svc.gallery.embeddings[0], track=2, seq=2, arrival=time.time())])   # ... meanwhile
        wait_for(lambda: "n1/s1/2" in [k for k, _ in _js(drv, cards)], what="the dancer published while down")
        assert sorted(_js(drv, "window.dancewire.styles")) == ["hiphop", "salsa", "tango"]
        wait_for(lambda: all("idle" in c for _, c in _js(drv, cards)), timeout=12, what="dancers shown idle")
    finally:
        close(drv)
