"""The cloud behind the link's real ZeroMQ ingest: Hello + WindowBatch in, Feedback + Ack out."""
from __future__ import annotations

import time

import numpy as np
import pytest
from port_helpers import free_port

from cloud.service import CloudService
from cloud.settings import CloudSettings
from cloud.wire import signed64
from dancewire.errors import BadInputError

zmq = pytest.importorskip("zmq")
codec = pytest.importorskip("proto.codec")
pb = pytest.importorskip("proto.dancewire_pb2")
ingest = pytest.importorskip("cloud.ingest")


def recv_until(sock, kind, timeout=10.0):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        if sock.poll(100):
            k, body = codec.decode(sock.recv())
            seen.append((k, body))
            if k == kind:
                return body, seen
    raise AssertionError(f"no {kind} (got {seen})")


def test_windows_over_zeromq(tmp_path, ballroom_gallery):
    g, holdout = ballroom_gallery
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz"),
                       gallery=g)
    port = free_port()
    server = ingest.IngestServer(f"tcp://127.0.0.1:{port}", svc, svc.encoder_hashes(),
                                 state_path=tmp_path / "ingest.sqlite", insecure_dev=True)
    server.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        epoch = (1 << 63) + 12345                      # a fixed64 epoch above the signed range
        dim = holdout[0]["emb"].shape[1]
        sock.send(codec.encode(codec.make_hello("studio-b", g.encoder["hash"], dim, "int8", epoch=epoch,
                                                session_id="class-2")))
        recv_until(sock, "ack")
        s = holdout[0]
        seq = 1                                        # sequence numbers start at 1
        sent = []
        for start in range(0, 24, 8):                  # three batches of 8 windows, with beats
            batch = pb.WindowBatch(node_id="studio-b", session_id="class-2", dtype=pb.DTYPE_INT8)
            batch.beats.append(codec.make_beat_grid(seq, start * 0.5, start * 0.5 + 4,
                                                    [(start * 0.5 + 0.5 * k, k % 8 + 1) for k in range(8)], bpm=120))
            seq += 1
            for k in range(start, start + 8):
                (t0, t1), e = s["times"][k], s["emb"][k]
                batch.windows.append(codec.make_window(0, seq, t0, t1, e, {"beat_alignment": 0.7}, 0.9, "int8"))
                sent.append(seq)
                seq += 1
            sock.send(codec.encode(batch))
            fb, seen = recv_until(sock, "feedback")
            ack, _ = recv_until(sock, "ack")
            assert ack.seq == seq - 1
            d = fb.dancers[0]
            assert fb.session_id == "class-2" and d.track_id == 0 and d.seq == sent[-1]
            assert abs(sum(p.p for p in d.styles) - 1) < 1e-3
            assert d.nearest and d.nearest_groups and "beat_alignment" in d.scores
        assert d.style == s["style"]                  # stable label after 24 windows of one cha-cha dancer
        assert svc.store.count("windows") == 24 and svc.store.count("beats") == 3
        assert {r["epoch"] for r in svc.store.query("SELECT epoch FROM windows")} == {signed64(epoch)}
        assert signed64(epoch) < 0
        # the same batch again (an edge that missed the ack): deduplicated before the handler
        sock.send(codec.encode(batch))
        recv_until(sock, "ack")
        assert svc.store.count("windows") == 24
        # an edge with another encoder is refused
        other = ctx.socket(zmq.DEALER)
        other.connect(f"tcp://127.0.0.1:{port}")
        other.send(codec.encode(codec.make_hello("studio-c", "another-encoder", dim, "int8", epoch=1)))
        err, _ = recv_until(other, "error")
        assert err.fatal and err.code == pb.Error.ENCODER_MISMATCH
        other.close(0)
    finally:
        sock.close(0)
        ctx.term()
        server.stop()
        svc.close()


def test_gallery_reloaded_with_another_encoder_turns_old_edges_away(tmp_path, ballroom_gallery):
    """The ingest asks the service which encoder its gallery holds on every Hello and batch: after
    a reload with references of another encoder, an edge still on the old one is refused (fatal
    ENCODER_MISMATCH) at its next batch, which is not stored, and an edge on the new one gets in."""
    from cloud.gallery import Gallery

    g, holdout = ballroom_gallery
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz"),
                       gallery=g)
    port = free_port()
    server = ingest.IngestServer(f"tcp://127.0.0.1:{port}", svc, svc.encoder_hashes,
                                 state_path=tmp_path / "ingest.sqlite", insecure_dev=True).start()
    ctx = zmq.Context()
    old, new = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    s, dim = holdout[0], holdout[0]["emb"].shape[1]

    def batch(node, seqs):
        b = pb.WindowBatch(node_id=node, session_id="class-3", dtype=pb.DTYPE_INT8)
        for q in seqs:
            (t0, t1), e = s["times"][q], s["emb"][q]
            b.windows.append(codec.make_window(0, q + 1, t0, t1, e, None, 0.9, "int8"))
        return codec.encode(b)

    try:
        for sock in (old, new):
            sock.connect(f"tcp://127.0.0.1:{port}")
        old.send(codec.encode(codec.make_hello("studio-old", g.encoder["hash"], dim, "int8", epoch=1)))
        recv_until(old, "ack")
        old.send(batch("studio-old", [0, 1]))
        recv_until(old, "feedback")
        assert svc.store.count("windows") == 2
        svc.reload_gallery(Gallery(g.embeddings, g.refs, {"hash": "encoder-v9", "model_id": "v9"}))
        old.send(batch("studio-old", [2, 3]))
        err, _ = recv_until(old, "error")
        assert err.fatal and err.code == pb.Error.ENCODER_MISMATCH and err.expected == "encoder-v9"
        assert svc.store.count("windows") == 2 and server.stats()["rejects"]["encoder_mismatch"] == 1
        old.send(batch("studio-old", [4]))                   # the connection is forgotten: Hello again
        err, _ = recv_until(old, "error")
        assert err.code == pb.Error.HELLO_REQUIRED
        new.send(codec.encode(codec.make_hello("studio-new", "encoder-v9", dim, "int8", epoch=1)))
        recv_until(new, "ack")
        new.send(batch("studio-new", [0, 1, 2]))
        recv_until(new, "feedback")
        assert svc.store.count("windows") == 5
        with pytest.raises(BadInputError, match="names no encoder"):
            svc.reload_gallery(Gallery(np.zeros((0, dim), np.float32), []))
        assert server.encoder_hashes == {"encoder-v9"}
    finally:
        old.close(0)
        new.close(0)
        ctx.term()
        server.stop()
        svc.close()


def test_embeddings_round_trip_int8():
    """What the classifier sees after int8 quantisation is within 1% (cosine) of what the edge had."""
    from cloud.wire import windows_from_pb
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 128)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    batch = pb.WindowBatch(node_id="n", session_id="s", dtype=pb.DTYPE_INT8)
    for i in range(5):
        batch.windows.append(codec.make_window(i, i + 1, 0, 2, e[i], None, 0.5, "int8"))
    ws, beats = windows_from_pb("n", "s", batch, epoch=3)
    assert [w.track_id for w in ws] == list(range(5)) and not beats
    cos = np.array([w.embedding @ e[i] for i, w in enumerate(ws)])
    assert np.all(cos > 0.99) and all(w.epoch == 3 and w.t1 == 2.0 for w in ws)


def _batch(holdout, first_seq, n, session="class-3"):
    s = holdout[0]
    b = pb.WindowBatch(node_id="studio-c", session_id=session, dtype=pb.DTYPE_INT8)
    for i in range(n):
        (t0, t1), e = s["times"][first_seq - 1 + i], s["emb"][first_seq - 1 + i]
        b.windows.append(codec.make_window(0, first_seq + i, t0, t1, e, {"beat_alignment": 0.7}, 0.9, "int8"))
    return b


def _serve(tmp_path, g):
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz"),
                       gallery=g)
    server = ingest.IngestServer(f"tcp://127.0.0.1:{free_port()}", svc, svc.encoder_hashes(),
                                 state_path=tmp_path / "ingest.sqlite", insecure_dev=True).start()
    return svc, server


def _dealer(server):
    """A raw edge socket on the server (the tests speak the wire themselves)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.endpoint)
    return ctx, sock


def test_windows_the_store_cannot_take_are_answered_not_acked_and_survive_a_cloud_restart(tmp_path, ballroom_gallery):
    """Disk full: the rig still gets its feedback, but no ack, so the edge keeps the windows. The
    cloud then dies with them held in memory; restarted, it takes the resent windows and stores
    every one (they were acked while held, and a restart lost them)."""
    g, holdout = ballroom_gallery
    dim = holdout[0]["emb"].shape[1]
    svc, server = _serve(tmp_path, g)
    ctx, sock = _dealer(server)
    hello = codec.encode(codec.make_hello("studio-c", g.encoder["hash"], dim, "int8", epoch=7, session_id="class-3"))
    try:
        sock.send(hello)
        recv_until(sock, "ack")
        sock.send(codec.encode(_batch(holdout, 1, 8)))
        recv_until(sock, "feedback")
        assert recv_until(sock, "ack")[0].seq == 8
        db = svc.store.conn
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")   # the disk is full
        sock.send(codec.encode(_batch(holdout, 9, 8)))
        fb, _ = recv_until(sock, "feedback")
        assert fb.dancers and fb.dancers[0].seq == 16                      # answered
        late = []
        deadline = time.time() + 1.5
        while time.time() < deadline:
            if sock.poll(100):
                late.append(codec.decode(sock.recv())[0])
        assert "ack" not in late and server.stats()["deferred_groups"] >= 1   # not acked
        assert svc.store.count("windows") == 8
    finally:
        sock.close(0)
        server.stop()
        svc.close()                                                         # the cloud dies, windows 9..16 held
    svc, server = _serve(tmp_path, g)                                       # restarted, with room on the disk
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.endpoint)
    try:
        sock.send(hello)
        assert recv_until(sock, "ack")[0].seq == 8                          # resume after the last stored window
        sock.send(codec.encode(_batch(holdout, 9, 8)))                      # the edge's spool sends them again
        assert recv_until(sock, "ack")[0].seq == 16
        assert svc.store.count("windows") == 16 and svc.store.count("results") == 16
    finally:
        sock.close(0)
        ctx.term()
        server.stop()
        svc.close()


def test_a_failed_prune_does_not_turn_a_held_batch_into_an_acked_one(tmp_path, ballroom_gallery):
    """The hourly retention ran inside the batch: with the store down it raised out of process(), the
    handler's RetryLater never came, and the ingest acked a batch only held in memory."""
    from dancewire.errors import RetryLater

    g, holdout = ballroom_gallery
    dim = holdout[0]["emb"].shape[1]
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz",
                                     retention_days=30), gallery=g)
    try:
        svc.on_hello("studio-c", codec.make_hello("studio-c", g.encoder["hash"], dim, "int8", epoch=7))
        svc.store.execute("PRAGMA query_only=ON")                        # the store cannot write
        svc._last_prune = 0.0                                             # and the prune is due
        with pytest.raises(RetryLater):
            svc.on_windows("studio-c", "class-3", _batch(holdout, 1, 4), 7)
        assert svc.counters["prune_failures"] == 1 and len(svc._unwritten) == 1
    finally:
        svc.close()


def test_a_held_batch_dropped_unstored_is_taken_again_when_resent(tmp_path, ballroom_gallery):
    """Past MAX_UNWRITTEN the oldest held batch goes; it was never acked, so its edge sends it again,
    and it used to be called a duplicate and acked without ever being stored."""
    from dancewire.errors import RetryLater

    g, holdout = ballroom_gallery
    dim = holdout[0]["emb"].shape[1]
    svc = CloudService(CloudSettings(db_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", gallery_path=tmp_path / "g.npz"),
                       gallery=g)
    svc.MAX_UNWRITTEN = 2
    try:
        svc.on_hello("studio-c", codec.make_hello("studio-c", g.encoder["hash"], dim, "int8", epoch=7))
        svc.store.execute("PRAGMA query_only=ON")
        for seq in range(1, 6):
            with pytest.raises(RetryLater):
                svc.on_windows("studio-c", "class-3", _batch(holdout, seq, 1), 7)
        assert svc.counters["store_dropped_batches"] == 3
        svc.store.execute("PRAGMA query_only=OFF")                       # the store is back
        for seq in range(1, 6):                                           # the edge resends its spool
            svc.on_windows("studio-c", "class-3", _batch(holdout, seq, 1), 7)
        assert sorted(r["seq"] for r in svc.store.query("SELECT seq FROM windows")) == [1, 2, 3, 4, 5]
    finally:
        svc.close()


def test_an_int8_scale_that_overflows_is_refused_at_the_ingest(tmp_path, ballroom_gallery):
    """A finite but huge int8 scale decodes to infinity and normalises to NaN, which then stuck in the
    dancer's and session's sums and reached the dashboard as a literal NaN."""
    g, holdout = ballroom_gallery
    dim = holdout[0]["emb"].shape[1]
    svc, server = _serve(tmp_path, g)
    ctx, sock = _dealer(server)
    try:
        sock.send(codec.encode(codec.make_hello("studio-c", g.encoder["hash"], dim, "int8", epoch=7)))
        recv_until(sock, "ack")
        b = _batch(holdout, 1, 2)
        b.windows[0].scale = 3e38
        sock.send(codec.encode(b))
        err, _ = recv_until(sock, "error")
        assert "NaN or infinity" in err.message and server.stats()["rejects"].get("schema") == 1
        assert svc.store.count("windows") == 0
    finally:
        sock.close(0)
        ctx.term()
        server.stop()
        svc.close()


def test_extreme_int8_scales_still_give_unit_embeddings():
    """A scale of 1e36 overflowed the float32 norm and 1e-45 underflowed it: both embeddings came out
    all zeros, and were stored and classified as such."""
    from cloud.wire import windows_from_pb

    rng = np.random.default_rng(3)
    for scale in (1e36, 1e-45, 0.01):
        b = pb.WindowBatch(node_id="n", session_id="s", dtype=pb.DTYPE_INT8)
        w = codec.make_window(0, 1, 0.0, 2.0, rng.normal(size=64), dtype="int8")
        w.scale = scale
        b.windows.append(w)
        codec.validate(b)
        (win,), _ = windows_from_pb("n", "s", b)
        assert np.linalg.norm(win.embedding) == pytest.approx(1.0, abs=1e-5), scale
