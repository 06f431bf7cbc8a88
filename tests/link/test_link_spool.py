"""The durable spool: persistence, ack trimming, bounds and the policy when full, fsync policies."""
from __future__ import annotations

import time

import pytest

from edge.link.spool import Spool

from link_helpers import wait_until


def rows(first: int, n: int, size: int = 100, per: int = 1):
    return [(first + i * per, first + i * per + per - 1, per, bytes([i % 256]) * size) for i in range(n)]


def test_survives_reopen_with_epoch_and_sequence(tmp_path):
    s = Spool(tmp_path / "s.sqlite")
    epoch = s.epoch
    assert s.append(rows(1, 5)) == [True] * 5
    s.ack(2)
    s.close()
    s = Spool(tmp_path / "s.sqlite")
    assert s.epoch == epoch
    assert s.next_seq == 6
    assert [r[0] for r in s.pending(0)] == [3, 4, 5]
    assert s.floor() == 3
    s.ack(5)
    assert len(s) == 0 and s.floor() == 6
    s.close()
    s = Spool(tmp_path / "s.sqlite")
    assert s.next_seq == 6, "acked and deleted seqs must never be reused"
    s.close()


def test_a_new_spool_file_gets_a_new_epoch(tmp_path):
    a, b = Spool(tmp_path / "a.sqlite"), Spool(tmp_path / "b.sqlite")
    assert a.epoch != b.epoch
    a.close(), b.close()


def test_pending_after_and_ack_are_cumulative(tmp_path):
    s = Spool(tmp_path / "s.sqlite")
    s.append(rows(1, 4, per=3))            # seqs 1-3, 4-6, 7-9, 10-12
    assert [r[:2] for r in s.pending(3)] == [(4, 6), (7, 9), (10, 12)]
    assert s.ack(8) == 2                   # 1-3 and 4-6 fully covered; 7-9 is not
    assert s.floor() == 7
    s.close()


def test_full_spool_drops_oldest_by_default(tmp_path):
    s = Spool(tmp_path / "s.sqlite", max_batches=10, max_bytes=10_000)
    assert s.on_full == "drop_oldest"
    assert all(s.append(rows(1, 10)))
    assert all(s.append(rows(11, 3)))      # 3 oldest go
    st = s.stats()
    assert st["batches"] == 10 and st["dropped_batches"] == 3 and st["dropped_windows"] == 3
    assert [r[0] for r in s.pending(0)] == list(range(4, 14))
    assert s.floor() == 4                  # tells the cloud not to wait for 1..3
    # byte bound too
    assert all(s.append([(14, 14, 1, b"x" * 9_000)]))
    assert s.stats()["bytes"] <= 10_000
    s.close()


def test_full_spool_can_refuse_newest(tmp_path):
    s = Spool(tmp_path / "s.sqlite", max_batches=5, on_full="drop_newest")
    assert s.append(rows(1, 7)) == [True] * 5 + [False] * 2
    st = s.stats()
    assert st["batches"] == 5 and st["refused_batches"] == 2 and st["refused_windows"] == 2
    assert [r[0] for r in s.pending(0)] == [1, 2, 3, 4, 5]
    assert s.next_seq == 8                 # refused seqs are not reused
    s.ack(5)
    assert s.append(rows(8, 1)) == [True]
    s.close()


def test_oversized_batch_is_refused_even_when_dropping_oldest(tmp_path):
    s = Spool(tmp_path / "s.sqlite", max_bytes=1000)
    assert s.append([(1, 1, 1, b"x" * 2000)]) == [False]
    s.close()


@pytest.mark.parametrize("policy", ["interval", "always", "never"])
def test_fsync_policies(tmp_path, policy):
    s = Spool(tmp_path / "s.sqlite", fsync=policy, fsync_interval=0.05)
    s.append(rows(1, 3))
    if policy == "interval":               # the background thread fsyncs the WAL after a commit
        assert wait_until(lambda: s.stats()["fsyncs"] >= 1, 5)
        n = s.stats()["fsyncs"]
        assert s.sync() is False           # nothing new since
        s.append(rows(4, 1))
        assert wait_until(lambda: s.stats()["fsyncs"] == n + 1, 5)
    else:
        assert s.sync() is False and s.stats()["fsyncs"] == 0
    sync_mode = s._db.execute("PRAGMA synchronous").fetchone()[0]
    assert sync_mode == {"interval": 1, "always": 2, "never": 0}[policy]
    s.close()


def test_bad_policy_names(tmp_path):
    with pytest.raises(ValueError):
        Spool(tmp_path / "a.sqlite", on_full="block")
    with pytest.raises(ValueError):
        Spool(tmp_path / "b.sqlite", fsync="sometimes")


def test_edge_link_full_spool_policy_end_to_end(tmp_path):
    """With the cloud unreachable the link keeps only the newest batches, counts the rest, never blocks."""
    import numpy as np

    from edge.link import EdgeLink
    from proto import codec

    link = EdgeLink("tcp://127.0.0.1:9", encoder_hash="h", embedding_dim=8, node_id="n", insecure_dev=True,
                    spool_path=tmp_path / "s.sqlite", spool_max_batches=20).start()
    for i in range(100):                       # returns at once although nothing answers
        assert link.submit([codec.make_window(1, 0, i, i + 2, np.ones(8))]) == i + 1
    assert link.wait_acked(0.5) is False
    link.close(flush_timeout=0.0)
    st = link.stats()["spool"]
    assert st["batches"] == 20 and st["dropped_batches"] == 80 and st["dropped_windows"] == 80
    s = Spool(tmp_path / "s.sqlite")
    assert [r[0] for r in s.pending(0)] == list(range(81, 101))
    s.close()


def test_ack_trims_by_primary_key_range_not_a_full_scan(tmp_path):
    """A spool that filled during a long outage must drain quickly: acks use the first_seq index."""
    from edge.link.spool import ACKED_DELETE_SQL, ACKED_STATS_SQL

    s = Spool(tmp_path / "s.sqlite")
    for sql in (ACKED_STATS_SQL, ACKED_DELETE_SQL):
        plan = " ".join(str(r) for r in s._db.execute("EXPLAIN QUERY PLAN " + sql, (5, 5)).fetchall())
        assert "PRIMARY KEY" in plan and "SCAN spool" not in plan.replace("SCAN spool USING", ""), plan
    s.close()


def _fill_the_disk(spool: Spool) -> None:
    """From now on the file cannot grow: SQLite answers SQLITE_FULL, as on a full disk."""
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count = {pages}")


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_full_disk_follows_the_full_spool_policy(tmp_path, policy, caplog):
    s = Spool(tmp_path / "s.sqlite", on_full=policy, fsync="never")
    assert all(s.append(rows(1, 400, size=2000)))
    _fill_the_disk(s)
    with caplog.at_level("ERROR"):
        got = s.append(rows(401, 5, size=2000))               # no exception: the link thread lives on
    assert "disk is full" in caplog.text
    st = s.stats()
    count, nbytes = s._db.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM spool").fetchone()
    assert (st["batches"], st["bytes"]) == (count, nbytes)   # counters match the file after the rollback
    if policy == "drop_oldest":
        assert all(got) and st["dropped_batches"] >= 5
        assert [r[0] for r in s.pending(0, 10_000)][-5:] == [401, 402, 403, 404, 405]  # the newest are kept
        assert all(s.append(rows(406, 50, size=2000)))                       # and it goes on
    else:
        assert not any(got) and st["refused_batches"] == 5 and count == 400  # what was spooled is kept
    top = s.next_seq - 1
    assert top == (455 if policy == "drop_oldest" else 405)             # refused seqs are never reused
    held = s.stats()["batches"]
    assert s.ack(top) == held and s.stats()["batches"] == 0
    s.close()


def test_the_full_disk_cap_is_lifted_once_the_disk_has_room(tmp_path):
    s = Spool(tmp_path / "s.sqlite", on_full="drop_newest", fsync="never", max_bytes=10 * 2**20)
    assert all(s.append(rows(1, 50, size=2000)))
    assert s.ack(50) == 50                                   # the cloud took everything: nearly empty
    _fill_the_disk(s)
    s.append(rows(51, 400, size=2000))                       # the disk fills up meanwhile
    assert s.stats()["max_bytes"] < 10 * 2**20
    s._db.execute("PRAGMA max_page_count = 1000000")        # space freed on the rig
    assert s._disk_cap_until > time.monotonic()             # tried again after DISK_FULL_RETRY_S ...
    s._disk_cap_until = time.monotonic()                     # ... which has now passed
    assert all(s.append(rows(451, 5, size=2000)))            # stored again, not refused until a restart
    assert s.stats()["max_bytes"] == 10 * 2**20
    s.close()
