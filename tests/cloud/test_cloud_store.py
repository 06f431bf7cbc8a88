"""The store, on SQLite (WAL) and on a real PostgreSQL server, through the same code."""
from __future__ import annotations

import time

import numpy as np
import pytest

from cloud.records import BeatGridIn
from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.store import MIGRATIONS, Store, parse_url


def test_parse_url(tmp_path):
    assert parse_url(f"sqlite:///{tmp_path}/x.db") == ("sqlite", f"{tmp_path}/x.db")
    assert parse_url("sqlite:///rel.db") == ("sqlite", "rel.db")
    assert parse_url("sqlite://:memory:") == ("sqlite", ":memory:")
    assert parse_url("postgresql://u@h:5/db")[0] == "postgresql"


def test_migrations_apply_once(db_url):
    s = Store(db_url)
    latest = max(v for v, _, _ in MIGRATIONS)
    assert s.schema_version() == latest
    assert s.migrate() == []                     # nothing left to apply
    s.close()
    s = Store(db_url)                            # re-open: still nothing to apply
    assert s.schema_version() == latest and s.migrate() == []
    if s.dialect == "sqlite":
        assert s.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    s.close()


def test_an_older_database_is_upgraded_in_place(db_url, monkeypatch):
    """A database made by a dancewire with only migration 1 keeps its data when a newer one opens it;
    a database newer than this dancewire is refused with a clear error."""
    import cloud.store as store_mod
    from cloud.records import WindowIn
    from dancewire.errors import DancewireError

    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS[:1])
    old = Store(db_url)
    assert old.schema_version() == 1
    old.write_batch([WindowIn("n", "s", 0, 1, 0.0, 2.0, np.ones(4, np.float32) / 2)], [])
    old.execute("INSERT INTO beats (node_id, session_id, seq, t0, t1, bpm, arrival, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("n", "s", 1, 0.0, 2.0, 120.0, time.time(), "{}"))
    old.close()
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    new = Store(db_url)                               # applies 2.. on open
    latest = max(v for v, _, _ in MIGRATIONS)
    assert new.schema_version() == latest and new.count("windows") == 1
    assert new.query("SELECT epoch, seq, bpm FROM beats") == [{"epoch": 0, "seq": 1, "bpm": 120.0}]   # migration 3 kept it
    new.write_batch([], [], latency=[(time.time(), "classify", 1.5)])     # migration 2's table works
    assert new.count("latency") == 1
    new.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (latest + 1, "from the future", time.time()))
    new.close()
    with pytest.raises(DancewireError, match="newer than this dancewire"):
        Store(db_url)


def stream_into(service, ballroom_gallery, n_windows=None, session="class-1"):
    import real_embeddings
    _, holdout = ballroom_gallery
    events = real_embeddings.simulated_session(holdout, session=session)
    if n_windows:
        events = events[:n_windows]
    feedback = []
    for _, windows, grids in events:
        feedback += service.process(windows, grids)
    return events, feedback


def test_a_full_disk_loses_no_window(tmp_path, ballroom_gallery, caplog):
    """The store's disk fills up mid-session (SQLite answers SQLITE_FULL): windows are still classified
    and answered, held in memory with one clear error, and all stored once there is room again."""
    g, _ = ballroom_gallery
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz"),
                       gallery=g)
    events, _ = stream_into(svc, ballroom_gallery, 40)
    db = svc.store.conn
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")   # the disk is full
    import real_embeddings
    _, holdout = ballroom_gallery
    later = real_embeddings.simulated_session(holdout, session="class-1")[40:120]
    feedback = []
    with caplog.at_level("ERROR"):
        for _, windows, grids in later:
            feedback += svc.process(windows, grids)
    assert "cannot write now" in caplog.text and svc.counters["store_failures"] > 0
    assert feedback and feedback[-1].dancers                       # the rig still gets its answers
    assert svc.store.count("windows") < 120 and svc.metrics_text().count("dancewire_cloud_store_held_batches") >= 1
    db.execute("PRAGMA max_page_count = 1073741823")                # room again
    more = real_embeddings.simulated_session(holdout, session="class-1")[120:121]
    for _, windows, grids in more:
        svc.process(windows, grids)
    assert svc.store.count("windows") == 121 and svc.store.count("results") == 121
    assert len(svc._unwritten) == 0
    svc.close()


def test_a_batch_the_database_refuses_does_not_hold_up_the_next_ones(db_url, tmp_path, ballroom_gallery, caplog):
    """A value the database refuses (here a latency sample without a time, NOT NULL) costs that one
    batch, said in the log; every later batch is stored (before, the refused batch stayed at the
    head of the queue and every write after it failed, unbounded). Non-finite dashboard acks, the
    way such a value got in, are ignored."""
    import real_embeddings

    g, holdout = ballroom_gallery
    svc = CloudService(CloudSettings(db_url=db_url, gallery_path=tmp_path / "g.npz"), gallery=g)
    events = real_embeddings.simulated_session(holdout, session="class-1")[:30]
    for _, windows, grids in events[:10]:
        svc.process(windows, grids)
    svc.dashboard_ack(float("nan"), time.time())
    svc.dashboard_ack(True, time.time())
    assert svc.counters["dashboard_bad_acks"] == 2
    with svc._latency_lock:
        svc._latency_pending.append((None, "dashboard", 1.0))      # what a NaN ack used to become
    with caplog.at_level("ERROR"):
        for _, windows, grids in events[10:]:
            svc.process(windows, grids)
    assert svc.counters["store_rejected_batches"] == 1 and "refused a batch" in caplog.text
    stored = svc.store.count("windows")
    assert stored == sum(len(w) for _, w, _ in events) - len(events[10][1]) and not svc._unwritten
    svc.close()


def test_a_routine_set_for_a_session_survives_a_restart(db_url, tmp_path, ballroom_gallery):
    """PUT /api/sessions/{id}/routine: kept in the session's saved state, so a restarted cloud
    still compares that session with it (it went back to '' after a restart and the next window);
    a session never seen is refused."""
    g, _ = ballroom_gallery
    routine = sorted(g.routine_tables)[0]
    settings = CloudSettings(db_url=db_url, gallery_path=tmp_path / "g.npz")
    svc = CloudService(settings, gallery=g)
    events, _ = stream_into(svc, ballroom_gallery, 6)
    assert svc.set_routine("class-1", routine) and not svc.set_routine("no-such-class", routine)
    svc.close()
    svc2 = CloudService(settings, gallery=g)
    assert svc2.aggregator.sessions["class-1"].routine == routine
    import real_embeddings
    _, holdout = ballroom_gallery
    for _, windows, grids in real_embeddings.simulated_session(holdout, session="class-1")[6:8]:
        svc2.process(windows, grids)
    assert svc2.store.session("class-1")["routine"] == routine
    assert "no-such-class" not in svc2.aggregator.sessions
    svc2.close()


def test_service_writes_reads_and_survives_restart(db_url, tmp_path, ballroom_gallery):
    g, holdout = ballroom_gallery
    settings = CloudSettings(db_url=db_url, gallery_path=tmp_path / "g.npz")
    svc = CloudService(settings, gallery=g)
    events, feedback = stream_into(svc, ballroom_gallery, 120)
    n = sum(len(w) for _, w, _ in events)
    st = svc.store
    assert st.count("windows") == n and st.count("results") == n
    assert st.count("beats") == sum(len(b) for _, _, b in events)
    assert {d["dancer"] for d in st.dancers("class-1")} == {f"studio-a/class-1/{k}" for k in range(len(holdout))}
    rows = st.results("class-1", limit=10000)
    assert len(rows) == n and rows[0]["arrival"] <= rows[-1]["arrival"]
    r = rows[-1]
    assert abs(sum(r["probs"].values()) - 1) < 1e-3 and r["nearest"] and r["nearest_groups"]
    meta, emb = st.window_embeddings("class-1")
    assert emb.shape == (n, holdout[0]["emb"].shape[1])
    assert feedback and feedback[-1].dancers
    before = {k: svc.aggregator.dancer_summary(k) for k in svc.aggregator.dancers}
    # re-sending the same windows (an edge retrying after a lost ack) changes nothing
    for _, windows, grids in events[:10]:
        svc.process(windows, grids)
    assert st.count("windows") == n and svc.counters["duplicates"] == sum(len(w) for _, w, _ in events[:10])
    svc.close()

    # restart: nothing lost, the aggregates continue where they were
    svc2 = CloudService(settings, gallery=g)
    assert svc2.store.count("results") == n
    for k, s in before.items():
        s2 = svc2.aggregator.dancer_summary(k)
        assert s2["style"] == s["style"] and s2["windows"] == s["windows"]
        assert s2["overall"] == pytest.approx(s["overall"])
    for _, windows, grids in events[:5]:         # still recognised as duplicates after the restart
        svc2.process(windows, grids)
    assert svc2.store.count("windows") == n
    svc2.close()


def test_retention(db_url):
    from cloud.records import WindowIn
    s = Store(db_url)
    old = time.time() - 40 * 86400
    w_old = WindowIn("n", "s-old", 0, 1, 0.0, 2.0, np.zeros(4, np.float32), arrival=old)
    w_new = WindowIn("n", "s-new", 0, 2, 0.0, 2.0, np.zeros(4, np.float32))
    s.write_batch([w_old, w_new], [], beats=[BeatGridIn("n", "s-new", 3, 0, 2, 120, 1, [0.5], [1])])
    s.execute("UPDATE sessions SET last_seen = ? WHERE session_id = ?", (old, "s-old"))
    counts = s.prune(30)
    assert counts["windows"] == 1 and counts["sessions"] == 1
    assert s.count("windows") == 1 and [x["session_id"] for x in s.sessions()] == ["s-new"]
    assert s.prune(0) == {}
    s.close()


def test_stored_embeddings_line_up_with_their_windows(db_url):
    """Windows stored while `store_embeddings` was off have no embedding: they are left out of the
    rows too, so row i is still embedding i."""
    from cloud.records import WindowIn
    s = Store(db_url)
    vec = [np.full(4, k, np.float32) for k in range(3)]
    s.write_batch([WindowIn("n", "s", 0, 1, 0.0, 2.0, vec[0])], [])
    s.write_batch([WindowIn("n", "s", 0, 2, 1.0, 3.0, vec[1])], [], store_embeddings=False)
    s.write_batch([WindowIn("n", "s", 0, 3, 2.0, 4.0, vec[2])], [])
    rows, emb = s.window_embeddings("s")
    assert [r["seq"] for r in rows] == [1, 3] and emb.shape == (2, 4)
    assert all(np.array_equal(e, vec[r["seq"] - 1]) for r, e in zip(rows, emb))
    s.close()


def test_a_latency_history_read_takes_the_newest_samples_only(db_url, monkeypatch):
    s = Store(db_url)
    now = time.time()
    s.write_batch([], [], latency=[(now - 10 + k, "publish", float(k)) for k in range(10)])
    hist, truncated = s.latency_history(now - 60)
    assert not truncated and hist["publish"]["count"] == 10 and hist["publish"]["max_ms"] == 9.0
    monkeypatch.setattr(Store, "HISTORY_ROWS", 4)
    hist, truncated = s.latency_history(now - 60)
    assert truncated and hist["publish"]["count"] == 4
    assert hist["publish"]["p50_ms"] == np.percentile([6.0, 7.0, 8.0, 9.0], 50)   # the newest four
    s.close()


def test_retention_forgets_in_memory_what_it_deletes(db_url, tmp_path, ballroom_gallery):
    """The hourly prune deleted old dancers and sessions from the store, but the running cloud kept
    them in memory for ever (and in its summaries) until a restart."""
    settings = CloudSettings(db_url=db_url, gallery_path=tmp_path / "g.npz", retention_days=30)
    svc = CloudService(settings, gallery=ballroom_gallery[0])
    stream_into(svc, ballroom_gallery, 20, session="old-class")
    old = time.time() - 40 * 86400                              # 40 days pass for that class
    for table, col in (("windows", "arrival"), ("results", "arrival"), ("beats", "arrival"),
                       ("dancers", "last_seen"), ("sessions", "last_seen")):
        svc.store.execute(f"UPDATE {table} SET {col} = ?", (old,))
    for d in svc.aggregator.dancers.values():
        d.first_arrival = d.last_arrival = old
    ss = svc.aggregator.sessions["old-class"]
    ss.first_arrival = ss.last_arrival = ss.last_seen = old
    svc._last_prune = 0.0                                        # the prune is due with the next batch
    stream_into(svc, ballroom_gallery, 8, session="new-class")
    assert set(svc.aggregator.sessions) == {"new-class"}
    assert {d.session_id for d in svc.aggregator.dancers.values()} == {"new-class"}
    assert [x["session_id"] for x in svc.store.sessions()] == ["new-class"]
    live = sorted(svc.aggregator.dancers)
    svc.close()
    svc2 = CloudService(settings, gallery=ballroom_gallery[0])  # a restart holds the same
    assert sorted(svc2.aggregator.dancers) == live and set(svc2.aggregator.sessions) == {"new-class"}
    svc2.close()


def test_a_database_that_turned_read_only_holds_batches_instead_of_dropping_them(db_url, tmp_path, ballroom_gallery):
    """PostgreSQL after a failover onto a hot standby answers 25006 read_only_sql_transaction, which
    psycopg raises as InternalError: it was taken for a batch with bad values, dropped, and (acked by
    the ingest) lost, and so was every batch after it. It is the database's state: held, then written."""
    settings = CloudSettings(db_url=db_url, gallery_path=tmp_path / "g.npz")
    svc = CloudService(settings, gallery=ballroom_gallery[0])
    stream_into(svc, ballroom_gallery, 4)
    before = svc.store.count("windows")
    if svc.store.dialect == "postgresql":
        svc.store.execute("SET default_transaction_read_only = on")
    else:
        svc.store.execute("PRAGMA query_only = ON")
    events, _ = stream_into(svc, ballroom_gallery, 10)
    assert svc.counters["store_rejected_batches"] == 0 and len(svc._unwritten) > 0
    svc.store.execute("SET default_transaction_read_only = off" if svc.store.dialect == "postgresql"
                      else "PRAGMA query_only = OFF")
    events, _ = stream_into(svc, ballroom_gallery, 12)          # the next batch writes the held ones first
    assert not svc._unwritten and svc.store.count("windows") == sum(len(w) for _, w, _ in events) > before
    svc.close()


def test_beat_grids_of_two_spool_epochs_are_both_kept(db_url):
    """A fresh spool numbers its grids from 1 again: the beats table was keyed without the epoch, so
    the new run's grids were dropped as already stored (and acked)."""
    s = Store(db_url)
    s.write_batch([], [], beats=[BeatGridIn("n", "s", 1, 0, 2, 121, 1, [0.5], [1], epoch=5)])
    s.write_batch([], [], beats=[BeatGridIn("n", "s", 1, 0, 2, 99, 1, [0.6], [1], epoch=-8)])
    assert sorted(r["bpm"] for r in s.query("SELECT bpm FROM beats")) == [99.0, 121.0]
    s.close()


def test_transaction_rolls_back(db_url):
    s = Store(db_url)
    with pytest.raises(RuntimeError):
        with s.transaction():
            s.execute("INSERT INTO nodes (node_id, first_seen, last_seen) VALUES (?, ?, ?)", ("x", 1.0, 1.0))
            raise RuntimeError("boom")
    assert s.count("nodes") == 0
    s.close()


def test_postgresql_connection_lost_is_reconnected_and_nothing_is_lost(db_url, tmp_path, ballroom_gallery):
    """The server ends the store's connection (what a restart or failover does): the batch that met
    it is held, the next one reconnects and stores both, and reads work again (they failed forever
    on the closed connection)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("a server that ends connections: PostgreSQL only (SQLite is a file)")
    import psycopg
    import real_embeddings

    g, holdout = ballroom_gallery
    svc = CloudService(CloudSettings(db_url=db_url, gallery_path=tmp_path / "g.npz"), gallery=g)
    events = real_embeddings.simulated_session(holdout, session="class-1")[:12]
    for _, windows, grids in events[:4]:
        svc.process(windows, grids)
    pid = svc.store.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    for _, windows, grids in events[4:]:
        svc.process(windows, grids)
    assert svc.counters["store_failures"] >= 1 and not svc._unwritten
    assert svc.store.count("windows") == sum(len(w) for _, w, _ in events)
    assert svc.store.query("SELECT pg_backend_pid() AS pid")[0]["pid"] != pid and svc.store.nodes()
    svc.close()


def test_postgresql_connections_time_out_and_a_lost_read_is_unavailable(db_url, tmp_path):
    """No timeout nor keepalive was set: a server gone without closing the connection hung every write
    and read (under the service lock) for TCP's ~15 minutes. A read that met a lost connection was a
    500 rather than the API's 503; the next one reconnects."""
    if not db_url.startswith("postgresql"):
        pytest.skip("connection parameters and losses: PostgreSQL only")
    import psycopg

    from cloud.store import PG_DEFAULTS, Store, StoreUnavailable

    s = Store(db_url)
    params = s.conn.info.get_parameters()
    assert {k: params.get(k) for k in PG_DEFAULTS} == PG_DEFAULTS
    mine = Store(db_url + "?connect_timeout=2")                          # the URL's own value wins
    assert mine.conn.info.get_parameters()["connect_timeout"] == "2"
    mine.close()
    pid = s.query("SELECT pg_backend_pid() AS pid")[0]["pid"]
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreUnavailable):
        s.query("SELECT 1 AS one")
    assert s.query("SELECT 1 AS one") == [{"one": 1}]
    s.close()


def test_processes_opening_a_fresh_database_at_once_migrate_it_once(db_url):
    """`cloud serve` and `cloud migrate` (or two replicas) on a new database: both read "nothing
    applied" before their transactions, and the second failed on "table ... already exists"."""
    import subprocess
    import sys

    start = time.time() + 2.0
    code = (f"import time\nwhile time.time() < {start}: pass\n"
            f"from cloud.store import Store\nStore({db_url!r}).close()\nprint('ok')")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-300:] for _, e in outs]
    s = Store(db_url)
    assert [r["version"] for r in s.query("SELECT version FROM schema_migrations ORDER BY version")] == \
        [v for v, _, _ in MIGRATIONS]
    s.close()
