"""The link recovers from what would otherwise stall or end it: a batch the cloud would refuse, a spool
rolled back behind the cloud, a full disk at ack time, a second link on one spool, a broken allow-list key."""
from __future__ import annotations

import shutil
import sqlite3
import threading
import time

import numpy as np
import pytest

from cloud.ingest import IngestServer
from dancewire.errors import RetryLater
from edge.link import EdgeLink, LinkError
from edge.link.spool import Spool, SpoolBusyError
from proto import codec, keys

from link_helpers import wait_until


class Got:
    def __init__(self):
        self.t0_ms: list[int] = []
        self.grids = 0

    def on_windows(self, node_id, session, batch, epoch):
        self.t0_ms.extend(w.t0_ms for w in batch.windows)
        self.grids += len(batch.beats)


@pytest.fixture
def server(tmp_path):
    got = Got()
    srv = IngestServer("tcp://127.0.0.1:*", got, {"enc"}, state_path=tmp_path / "ledger.sqlite",
                       insecure_dev=True).start()
    srv.got = got
    yield srv
    srv.stop()


def _link(srv, spool, **kw) -> EdgeLink:
    return EdgeLink(srv.endpoint, encoder_hash="enc", embedding_dim=8, node_id="n", spool_path=spool,
                    insecure_dev=True, heartbeat_s=0.2, ack_timeout_s=0.5, **kw).start()


def _window(t: float):
    return codec.make_window(1, 0, t, t + 2, np.ones(8, np.float32))


def test_what_the_cloud_would_refuse_never_stalls_the_stream(server, tmp_path):
    link = _link(server, tmp_path / "e.sqlite")
    link.submit(_window(0))
    link.submit([codec.make_beat_grid(0, i, i + 1, bpm=120.0) for i in range(17)])  # over 16 grids: two batches
    assert link.submit(_window(1), session_id="s" * 129) is None   # the cloud refuses it: refused here
    for t in range(10, 15):
        link.submit(_window(t))
    assert link.wait_acked(5)
    assert sorted(server.got.t0_ms) == [0, 10_000, 11_000, 12_000, 13_000, 14_000] and server.got.grids == 17
    assert link.stats()["submit_invalid"] == 1 and not server.stats()["rejects"]
    assert link.submit(_window(20), session_id="s" * 129) is None   # a refused last batch: nothing to wait for
    assert link.wait_acked(2)
    link.close()


def _rolled_back(server, tmp_path):
    """A spool whose seqs 4..10 the cloud has taken, rolled back to next_seq 4 (a power cut before the
    fsync, a restored image); (its path, the epoch they were taken in)."""
    spool = tmp_path / "e.sqlite"
    link = _link(server, spool)
    for t in range(3):
        link.submit(_window(t))
    assert link.wait_acked(5)
    link.close()
    shutil.copy(spool, tmp_path / "snapshot.sqlite")      # what the disk held after seq 3 ...
    link = _link(server, spool)
    for t in range(3, 10):
        link.submit(_window(t))                           # ... seq 4..10, taken by the cloud ...
    assert link.wait_acked(5)
    link.close()
    shutil.copy(tmp_path / "snapshot.sqlite", spool)      # ... lost
    return spool, link.epoch


def test_a_spool_rolled_back_behind_the_cloud_goes_on_under_a_fresh_epoch(server, tmp_path):
    spool, old_epoch = _rolled_back(server, tmp_path)
    link = _link(server, spool)
    assert link.spool.next_seq == 4
    for t in range(100, 105):
        link.submit(_window(t))                           # numbered 4..8 again: seqs the cloud has
    assert link.wait_acked(5)
    assert [t for t in server.got.t0_ms if t >= 100_000] == [100_000, 101_000, 102_000, 103_000, 104_000]
    assert link.epoch != old_epoch and link.stats()["fresh_epochs"] == 1
    link.close()
    assert Spool(spool, fsync="never").epoch == link.epoch    # the new epoch is the spool's from now on


def test_a_rolled_back_spool_restarted_twice_before_reaching_the_cloud_loses_nothing(server, tmp_path):
    """The rollback check compared the cloud's first ack with this process's first seq, never saved:
    after a first restart that could not reach the cloud (and numbered 4..12 again), the second start
    compared with 13, the cloud's 10 passed, and the windows of seqs 4..10 were deleted unsent.
    A row the ack covered in part (10..12 with an ack of 10) was never sent again either."""
    spool, _ = _rolled_back(server, tmp_path)
    away = EdgeLink("tcp://127.0.0.1:9", encoder_hash="enc", embedding_dim=8, node_id="n", spool_path=spool,
                    insecure_dev=True, heartbeat_s=0.2).start()         # the network is not up yet
    for t in range(100, 106):
        away.submit(_window(t))                           # numbered 4..9 again
    away.submit([_window(t) for t in range(106, 109)])    # one row of 10..12: straddles the cloud's 10
    away.close(flush_timeout=0.2)
    link = _link(server, spool)                           # the second restart reaches the cloud
    for t in range(200, 202):
        link.submit(_window(t))
    assert link.wait_acked(5)
    got = sorted(t // 1000 for t in server.got.t0_ms if t >= 100_000)
    assert got == list(range(100, 109)) + [200, 201] and link.stats()["fresh_epochs"] == 1
    link.close()


class _FullDiskOnDelete:
    """A connection whose DELETEs fail as on a full disk (a DELETE needs WAL pages too)."""

    def __init__(self, db):
        self._db, self.full = db, True

    def execute(self, sql, *args):
        if self.full and sql.lstrip().upper().startswith("DELETE"):
            exc = sqlite3.OperationalError("database or disk is full")
            exc.sqlite_errorname = "SQLITE_FULL"
            raise exc
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_an_ack_the_full_disk_cannot_delete_is_kept_and_retried(tmp_path, caplog):
    s = Spool(tmp_path / "s.sqlite", fsync="never")
    s.append([(i, i, 1, b"x" * 100) for i in range(1, 11)])
    s._db = _FullDiskOnDelete(s._db)
    with caplog.at_level("ERROR"):
        assert s.ack(5) == 0                               # no exception: the link's thread lives on
    assert "disk is full" in caplog.text and len(s) == 10
    s._db.full = False                                     # space freed on the rig
    assert s.append([(11, 11, 1, b"y")]) == [True]         # the next append retries the ack first
    assert len(s) == 6 and [r[0] for r in s.pending(0)] == [6, 7, 8, 9, 10, 11]
    s.close()


def test_the_link_delivers_everything_through_a_full_disk_at_ack_time(server, tmp_path):
    link = _link(server, tmp_path / "e.sqlite")
    link.spool._db = _FullDiskOnDelete(link.spool._db)
    for t in range(20):
        link.submit(_window(t))
    assert link.wait_acked(5) and link.state == "ready"
    link.spool._db.full = False
    link.submit(_window(30))
    assert link.wait_acked(5)
    assert wait_until(lambda: len(link.spool) == 0, 5)
    assert len(set(server.got.t0_ms)) == 21
    link.close()


def test_an_unexpected_io_error_costs_the_connection_not_the_thread(server, tmp_path, monkeypatch):
    link = _link(server, tmp_path / "e.sqlite")
    assert link.wait_ready(5)
    real = link.spool.pending
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug somewhere below the link")
        return real(*a, **kw)

    monkeypatch.setattr(link.spool, "pending", flaky)
    for t in range(5):
        link.submit(_window(t))
    assert link.wait_acked(10) and link._thread.is_alive()
    assert link.stats()["io_errors"] == 1 and "a bug somewhere" in link.last_error
    link.close()


def test_a_batch_near_the_frame_limit_is_checked_with_the_largest_floor(server, tmp_path):
    link = _link(server, tmp_path / "e.sqlite")
    payload = link._encode_batch(1, [_window(0)] * 5, "")[3]
    link.close(flush_timeout=0)
    tight = len(codec.frame_batch(payload, 1))           # fits with floor 1, not with a 10-byte floor varint
    link = _link(server, tmp_path / "e2.sqlite", limits=codec.Limits(max_frame_bytes=tight))
    with pytest.raises(codec.WireError, match="over"):
        link._encode_batch(1, [_window(0)] * 5, "")        # refused at submit, never spooled to kill _pump
    link.close(flush_timeout=0)
    roomy = len(codec.frame_batch(payload, codec.MAX_SEQ))
    link = _link(server, tmp_path / "e3.sqlite", limits=codec.Limits(max_frame_bytes=roomy))
    link.submit([_window(0)] * 5)                       # the very batch measured above
    assert link.wait_acked(5)
    link.close()


def test_a_second_link_on_the_same_spool_is_refused(server, tmp_path):
    link = _link(server, tmp_path / "e.sqlite")
    with pytest.raises(SpoolBusyError, match="in use"):
        _link(server, tmp_path / "e.sqlite")
    link.close()
    _link(server, tmp_path / "e.sqlite").close()          # free again once the first one closed


def test_a_spool_refused_for_a_bad_setting_leaves_no_lock_behind(tmp_path):
    with pytest.raises(ValueError):
        Spool(tmp_path / "e.sqlite", max_bytes="lots")
    Spool(tmp_path / "e.sqlite", fsync="never").close()   # the refused one took no lock with it


class _FailingInsertOnce:
    """A connection whose first INSERT fails with an error that is not a full disk (say, a disk I/O error)."""

    def __init__(self, db):
        self._db, self.failed = db, False

    def execute(self, sql, *args):
        if not self.failed and sql.lstrip().upper().startswith("INSERT"):
            self.failed = True
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_a_failed_spool_append_loses_no_submitted_batch(server, tmp_path):
    link = _link(server, tmp_path / "e.sqlite")
    assert link.wait_ready(5)
    link.spool._db = _FailingInsertOnce(link.spool._db)
    for t in range(6):
        link.submit(_window(t))
    assert link.wait_acked(10)
    assert link.spool._db.failed and link.stats()["io_errors"] == 1
    assert sorted(set(server.got.t0_ms)) == [t * 1000 for t in range(6)]   # re-queued in order, none lost
    link.close()


def test_a_broken_key_in_the_allow_list_leaves_the_cloud_running(tmp_path, caplog):
    d = tmp_path / "keys"
    keys.generate("cloud", d)
    keys.generate("edge1", d)
    keys.allow(d / "edge1.key", d)
    srv = IngestServer("tcp://127.0.0.1:*", None, {"enc"}, state_path=tmp_path / "l.sqlite",
                       server_key=d / "cloud.key_secret", allow_dir=d / "allowed").start()
    try:
        with caplog.at_level("ERROR"):
            (d / "allowed" / "bad.key").write_text('curve\n    public-key = "' + "~" * 40 + '"\n')
            assert wait_until(lambda: "not reloaded" in caplog.text, 5)
        time.sleep(0.2)
        assert srv._thread.is_alive()
        link = EdgeLink(srv.endpoint, encoder_hash="enc", embedding_dim=8, node_id="n1",
                        spool_path=tmp_path / "e.sqlite", client_key=d / "edge1.key_secret",
                        server_key=d / "cloud.key").start()
        link.submit(_window(0))
        assert link.wait_acked(10)                         # the previous allow-list still admits edge1
        link.close()
    finally:
        srv.stop()


def test_a_frame_far_over_the_limit_is_never_buffered_by_the_cloud(server, tmp_path):
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.endpoint)
    sock.send(b"\x08\x01" + b"\x1a" + b"\xff" * (2 * codec.LIMITS.max_frame_bytes + 1))
    time.sleep(0.5)
    assert server.stats().get("frames", 0) == 0          # libzmq dropped the connection at the huge frame
    sock.close(0)
    ctx.term()
    link = _link(server, tmp_path / "e.sqlite")
    link.submit(_window(0))
    assert link.wait_acked(5)                            # and it goes on serving
    link.close()


def test_a_submit_racing_close_raises_instead_of_losing_the_window(server, tmp_path):
    """submit checked for close() before taking its lock: a close in between drained the queue and
    closed the wake fd, and the submit then queued a row nobody spooled, returned its seq, and wrote
    to a file descriptor the process may have reused."""
    link = _link(server, tmp_path / "e.sqlite")
    assert link.wait_ready(5)
    real, closing = link._chunks, threading.Thread(target=link.close)

    def descheduled(items):
        closing.start()
        assert wait_until(lambda: link._stopping, 5)
        time.sleep(0.3)                                   # close() runs to its end meanwhile
        return real(items)

    link._chunks = descheduled
    with pytest.raises(LinkError):
        link.submit(_window(1))
    closing.join(10)
    assert Spool(tmp_path / "e.sqlite", fsync="never").next_seq == 1    # no seq given to a lost window


def test_heartbeats_go_while_streaming(server, tmp_path):
    """A heartbeat went only when nothing had been sent for heartbeat_s: while streaming none went,
    so a cloud that answered nothing (its store down) was declared dead and the socket rebuilt."""
    link = _link(server, tmp_path / "e.sqlite")
    try:
        assert link.wait_ready(5)
        for t in range(30):
            link.submit(_window(t))
            time.sleep(0.05)
        st = link.stats()
        assert st["heartbeats_sent"] >= 4 and st.get("rx_heartbeat", 0) >= 1     # sent while streaming, echoed
    finally:
        link.close()


def test_an_edge_connecting_while_another_s_batches_are_deferred_gets_its_hello_answered(tmp_path):
    """A group with a deferred batch (the store down) sent no acks at all, Hello-acks included: an edge
    connecting meanwhile waited in hello_sent for as long as any edge was streaming."""
    def down(node, session, batch, epoch):
        raise RetryLater("the store is down", [])

    with IngestServer("tcp://127.0.0.1:*", down, {"enc"}, state_path=tmp_path / "l.sqlite", insecure_dev=True) as srv:
        a = _link(srv, tmp_path / "a.sqlite")
        assert a.wait_ready(5)
        stop = threading.Event()

        def stream():
            t = 0
            while not stop.is_set():
                a.submit(_window(t))
                t += 1
                time.sleep(0.002)

        th = threading.Thread(target=stream)
        th.start()
        try:
            b = EdgeLink(srv.endpoint, encoder_hash="enc", embedding_dim=8, node_id="b", spool_path=tmp_path / "b.sqlite",
                         insecure_dev=True, heartbeat_s=0.2, ack_timeout_s=0.5).start()
            assert b.wait_ready(15), b.stats()
            b.close(flush_timeout=0)
        finally:
            stop.set()
            th.join()
            a.close(flush_timeout=0)


def test_a_spooled_row_over_todays_frame_limit_is_dropped_not_retried_for_ever(server, tmp_path):
    """A row an older version spooled (its size checked with a 1-byte floor) no longer fits once the
    floor's varint grows: raised in the send loop, it cost the connection on every try, for ever."""
    spool_path = tmp_path / "e.sqlite"
    link = _link(server, spool_path)
    payload = link._encode_batch(200, [_window(0)] * 5, "")[3]
    link.close(flush_timeout=0)
    tight = len(codec.frame_batch(payload, 1))            # fits with a 1-byte floor, not with floor 200
    s = Spool(spool_path, fsync="never")
    s.append([(200, 204, 5, payload)])
    s.close()
    link = _link(server, spool_path, limits=codec.Limits(max_frame_bytes=tight))
    assert wait_until(lambda: link.stats().get("unsendable_batches") == 1, 5)
    link.submit(_window(7))
    assert link.wait_acked(5) and link.stats().get("io_errors", 0) == 0 and server.got.t0_ms == [7000]
    link.close()


def test_waiting_for_acks_ends_when_the_last_items_were_refused_by_the_spool(tmp_path):
    """wait_acked (and close's flush) waited for the newest submitted seq; seqs the full spool refused
    (drop_newest, a full disk) never reach the cloud, so the wait always ran to its timeout."""
    from port_helpers import free_port

    port = free_port()
    link = EdgeLink(f"tcp://127.0.0.1:{port}", encoder_hash="enc", embedding_dim=8, node_id="n",
                    spool_path=tmp_path / "e.sqlite", insecure_dev=True, heartbeat_s=0.2, ack_timeout_s=0.5,
                    reconnect_min_s=0.05, reconnect_max_s=0.2, spool_max_batches=3, spool_on_full="drop_newest").start()
    for t in range(5):
        link.submit(_window(t))
    assert wait_until(lambda: link.spool.stats()["refused_batches"] == 2, 5)
    got = Got()
    with IngestServer(f"tcp://127.0.0.1:{port}", got, {"enc"}, state_path=tmp_path / "l.sqlite", insecure_dev=True):
        t0 = time.monotonic()
        assert link.wait_acked(5) and time.monotonic() - t0 < 4
        assert sorted(got.t0_ms) == [0, 1000, 2000]
        link.close()
