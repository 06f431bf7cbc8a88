"""Cloud ingest: validation of every frame, fuzzing, dedup, auth, encoder check, heartbeats, back-pressure."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from cloud.ingest import IngestServer, SqliteLedger, echo_feedback
from dancewire.errors import DancewireError
from edge.link import AuthRejectedError, EdgeLink, EncoderMismatchError, LinkError
from proto import codec
from proto import dancewire_pb2 as pb

from link_helpers import embeddings, wait_until


class Recorder:
    def __init__(self):
        self.windows: list[tuple[str, int]] = []
        self.hellos: list[str] = []

    def on_windows(self, node_id, session, batch, epoch):
        self.windows.extend((node_id, w.seq) for w in batch.windows)
        return [echo_feedback(batch)]

    def on_hello(self, node_id, hello):
        self.hellos.append(node_id)


@pytest.fixture
def plain_server(tmp_path):
    rec = Recorder()
    srv = IngestServer("tcp://127.0.0.1:*", rec, {"enc-1"}, state_path=tmp_path / "ledger.sqlite",
                       insecure_dev=True).start()
    srv.recorder = rec
    yield srv
    srv.stop()


def raw_dealer(endpoint: str, ctx: zmq.Context) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.rcvtimeo = 2000
    s.connect(endpoint)
    return s


def recv_kind(sock):
    return codec.decode(sock.recv())


def hello(node="raw", epoch=7, dim=64, enc="enc-1"):
    return codec.encode(codec.make_hello(node, enc, dim, "int8", epoch=epoch))


def batch_frame(seqs, node="raw", floor=0, dim=64):
    b = pb.WindowBatch(node_id=node, session_id="s", dtype=pb.DTYPE_INT8, floor_seq=floor)
    e = embeddings(len(seqs), dim)
    for s, v in zip(seqs, e):
        b.windows.append(codec.make_window(1, s, 0, 2, v))
    return codec.encode(b)


def edge(endpoint, tmp_path, name="n1", **kw):
    args = dict(encoder_hash="enc-1", embedding_dim=64, node_id=name, spool_path=tmp_path / f"{name}.sqlite",
                insecure_dev=True, heartbeat_s=0.2, reconnect_min_s=0.05, reconnect_max_s=0.5, ack_timeout_s=0.5)
    args.update(kw)
    return EdgeLink(endpoint, **args)


# --------------------------------------------------------------------------- validation / fuzz

def test_dedup_by_node_epoch_seq_and_cumulative_acks(plain_server):
    ctx = zmq.Context()
    s = raw_dealer(plain_server.endpoint, ctx)
    s.send(hello())
    kind, ack = recv_kind(s)
    assert kind == "ack" and (ack.epoch, ack.seq) == (7, 0)
    s.send(batch_frame([1, 2, 3]))
    kinds = [recv_kind(s) for _ in range(2)]
    assert [k for k, _ in kinds] == ["feedback", "ack"] and kinds[1][1].seq == 3
    s.send(batch_frame([2, 3, 4]))           # a resend overlapping what the cloud has
    kinds = [recv_kind(s) for _ in range(2)]
    assert kinds[1][1].seq == 4
    s.send(batch_frame([6]))                 # a gap: 5 missing -> the ack stays at 4
    assert recv_kind(s)[0] == "feedback" and recv_kind(s)[1].seq == 4
    s.send(batch_frame([6, 7], floor=6))     # the edge says 5 was dropped from its spool
    assert recv_kind(s)[0] == "feedback" and recv_kind(s)[1].seq == 7
    s.send(hello(epoch=8))                   # a new spool: a fresh sequence space
    assert recv_kind(s)[1].seq == 0
    assert plain_server.recorder.windows == [("raw", q) for q in (1, 2, 3, 4, 6, 7)]
    st_ = plain_server.stats()
    assert st_["windows"] == 6 and st_["duplicates"] == 3
    s.close()
    ctx.term()


def test_data_before_hello_gets_hello_required(plain_server):
    ctx = zmq.Context()
    s = raw_dealer(plain_server.endpoint, ctx)
    s.send(batch_frame([1]))
    kind, err = recv_kind(s)
    assert kind == "error" and err.code == pb.Error.HELLO_REQUIRED and not err.fatal
    assert plain_server.stats()["rejects"] == {"hello_required": 1}
    s.close()
    ctx.term()


def test_batch_not_matching_hello_is_rejected(plain_server):
    ctx = zmq.Context()
    s = raw_dealer(plain_server.endpoint, ctx)
    s.send(hello(dim=64))
    recv_kind(s)
    s.send(batch_frame([1], dim=32))
    kind, err = recv_kind(s)
    assert kind == "error" and err.code == pb.Error.SCHEMA and "dim 64" in err.message
    assert recv_kind(s)[1].seq == 1                     # refused for good: the ack moves past it
    s.send(batch_frame([2], node="someone-else"))       # another node's: not this epoch's to give up
    assert recv_kind(s)[1].code == pb.Error.SCHEMA
    s.send(batch_frame([2]))
    assert [recv_kind(s)[0] for _ in range(2)] == ["feedback", "ack"]
    assert plain_server.recorder.windows == [("raw", 2)]
    s.close()
    ctx.term()


FUZZ = {}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(
    st.binary(max_size=600),
    st.lists(st.binary(max_size=64), min_size=0, max_size=4),           # multipart garbage
    st.builds(lambda f, i, v: f[:i] + bytes([v]) + f[i + 1:],            # mutated valid frames
              st.sampled_from([hello(), batch_frame([1, 2]), codec.encode(pb.Heartbeat(t_us=1))]),
              st.integers(0, 300), st.integers(0, 255)),
))
def _fuzz_one(payload):
    s = FUZZ["sock"]
    if isinstance(payload, list):
        if not payload:
            return
        s.send_multipart(payload)
    else:
        s.send(payload)
    FUZZ["sent"] += 1


def test_fuzzed_and_malformed_frames_never_crash_ingest(plain_server, tmp_path):
    ctx = zmq.Context()
    FUZZ.update(sock=raw_dealer(plain_server.endpoint, ctx), sent=0)
    FUZZ["sock"].sndhwm = 100_000
    _fuzz_one()
    big = b"\x08\x01" + b"\x1a" + b"\xff" * 300_000                      # over the frame limit
    FUZZ["sock"].send(big)
    FUZZ["sock"].send_multipart([b"a", b"b", b"c"])
    assert wait_until(lambda: plain_server.stats()["frames"] >= FUZZ["sent"] + 2, 20)
    st_ = plain_server.stats()
    assert st_["rejected"] > 0 and st_["rejects"].get("too_large", 0) >= 1
    assert st_["rejects"].get("bad_frame", 0) >= 1 and st_["rejects"].get("bad_multipart", 0) >= 1
    # still serving: a real edge gets through and every window arrives once
    link = edge(plain_server.endpoint, tmp_path, "after-fuzz", session_id="class-7").start()
    e = embeddings(10)
    for i in range(10):
        link.submit([codec.make_window(1, 0, i, i + 2, e[i])])
    fb = link.feedback(timeout=10)
    assert fb is not None and fb.session_id == "class-7" and fb.dancers[0].seq == 1
    assert link.wait_acked(10)
    link.close()
    assert [s for n, s in plain_server.recorder.windows if n == "after-fuzz"] == list(range(1, 11))
    FUZZ["sock"].close()
    ctx.term()


def test_an_error_frame_of_an_unknown_code_is_logged_and_ingest_serves_on(plain_server):
    """proto3 enums take any number: an Error with code 99 (a newer edge, or garbage) made the cloud's
    log line raise, which ended the thread that serves every edge."""
    ctx = zmq.Context()
    s = raw_dealer(plain_server.endpoint, ctx)
    s.send(codec.encode(pb.Error(code=99, message="from the future")))
    s.send(hello())
    kind, ack = recv_kind(s)
    assert kind == "ack" and ack.seq == 0 and plain_server.stats()["rx_error"] == 1
    s.close()
    ctx.term()


def test_a_floor_above_the_batch_s_own_seqs_is_refused(plain_server):
    """A batch saying everything below 1000 is gone while carrying seqs 1-3 had its windows taken as
    duplicates and acked (never handled), and a floor of MAX_SEQ poisoned the epoch for good."""
    ctx = zmq.Context()
    s = raw_dealer(plain_server.endpoint, ctx)
    s.send(hello())
    assert recv_kind(s)[0] == "ack"
    s.send(batch_frame([1, 2, 3], floor=1000))
    kind, err = recv_kind(s)
    assert kind == "error" and "floor_seq" in err.message
    assert recv_kind(s)[1].seq == 3                    # refused for good, as any batch with bad values
    s.send(batch_frame([4], floor=4))
    assert [recv_kind(s)[0] for _ in range(2)] == ["feedback", "ack"]
    assert plain_server.recorder.windows == [("raw", 4)]     # the epoch is not poisoned
    s.close()
    ctx.term()


def test_each_connection_s_batches_are_handled_in_its_own_epoch(tmp_path):
    """Two connections of one node (a stale one beside a fresh spool's): the handler was told the
    epoch of whichever Hello came last, so one spool's windows were filed under the other's."""
    got = []

    def handler(node, session, batch, epoch):
        got.extend((epoch, w.seq) for w in batch.windows)

    with IngestServer("tcp://127.0.0.1:*", handler, {"enc-1"}, state_path=tmp_path / "l.sqlite",
                      insecure_dev=True) as srv:
        ctx = zmq.Context()
        a, b = raw_dealer(srv.endpoint, ctx), raw_dealer(srv.endpoint, ctx)
        a.send(hello(epoch=111))
        assert recv_kind(a)[0] == "ack"
        b.send(hello(epoch=222))
        assert recv_kind(b)[0] == "ack"
        a.send(batch_frame([1, 2]))
        assert recv_kind(a)[1].seq == 2
        b.send(batch_frame([1, 2]))
        assert recv_kind(b)[1].seq == 2
        assert got == [(111, 1), (111, 2), (222, 1), (222, 2)]
        a.close()
        b.close()
        ctx.term()


def test_a_zero_embedding_is_refused(plain_server):
    """A zero vector has no direction: normalised it stays zero and every cosine with it is 0."""
    ctx = zmq.Context()
    s = raw_dealer(plain_server.endpoint, ctx)
    s.send(hello())
    assert recv_kind(s)[0] == "ack"
    b = pb.WindowBatch(node_id="raw", session_id="s", dtype=pb.DTYPE_INT8)
    w = codec.make_window(1, 1, 0, 2, embeddings(1)[0])
    w.embedding = bytes(64)
    b.windows.append(w)
    s.send(codec.encode(b))
    kind, err = recv_kind(s)
    assert kind == "error" and "zero vector" in err.message and not plain_server.recorder.windows
    s.close()
    ctx.term()


def test_a_heartbeat_is_echoed_without_waiting_for_a_backlog_of_batches(tmp_path):
    """A group read up to 512 frames and answered all of them, heartbeat echoes included, only after
    every batch's handler: with a slow store and a backlog the edges' ack and heartbeat timeouts
    expired and they reconnected and resent. Groups stop at max_group_batches; echoes go at once."""
    gate, entered, calls, echoed_after = threading.Event(), threading.Event(), [], []

    def slow(node, session, batch, epoch):
        entered.set()
        gate.wait(10)
        calls.append(1)
        time.sleep(0.005)

    with IngestServer("tcp://127.0.0.1:*", slow, {"enc-1"}, state_path=tmp_path / "l.sqlite",
                      insecure_dev=True) as srv:
        real_send = srv._send

        def spy(out):        # how many batches were handled when the echo went out (not when it came)
            echoed_after.extend(len(calls) for _, data in out if codec.decode(data)[0] == "heartbeat")
            real_send(out)

        srv._send = spy
        ctx = zmq.Context()
        s = raw_dealer(srv.endpoint, ctx)
        try:
            s.send(hello())
            assert recv_kind(s)[0] == "ack"
            for seq in range(1, 101):
                s.send(batch_frame([seq]))
            s.send(codec.encode(pb.Heartbeat(t_us=1)))
            assert entered.wait(5)              # the first batch's handler holds the ingest ...
            time.sleep(0.3)                     # ... while the rest queue up behind it
            gate.set()
            assert wait_until(lambda: len(calls) == 100 and echoed_after, 20)
            assert echoed_after[0] < 100        # before the backlog was all handled
        finally:
            s.close()
            ctx.term()


def test_a_batch_refused_for_its_values_does_not_stall_the_acks(plain_server):
    """A spooled batch the cloud now refuses (written by an older edge before a check existed) got a
    non-fatal SCHEMA error and no ack: the cumulative ack could never pass it, so the edge resent it
    and everything after it on every ack timeout until its spool filled."""
    ctx = zmq.Context()
    s = raw_dealer(plain_server.endpoint, ctx)
    s.send(hello())
    assert recv_kind(s)[0] == "ack"
    bad = pb.WindowBatch(node_id="raw", session_id="s", dtype=pb.DTYPE_INT8)
    bad.beats.add(seq=1, t0_ms=0, t1_ms=2000, bpm=float("nan"))       # what the codec refuses
    s.send(pb.Envelope(version=codec.PROTOCOL_VERSION, batch=bad).SerializeToString())
    kinds = [recv_kind(s) for _ in range(2)]
    assert kinds[0][0] == "error" and kinds[1] == ("ack", pb.Ack(epoch=7, seq=1))
    s.send(batch_frame([2]))
    assert [recv_kind(s)[0] for _ in range(2)] == ["feedback", "ack"]
    s.send(batch_frame([3], dim=32))                                   # not the Hello's size
    kinds = [recv_kind(s) for _ in range(2)]
    assert kinds[0][0] == "error" and kinds[1][1].seq == 3
    assert plain_server.recorder.windows == [("raw", 2)] and plain_server.stats()["refused_items"] == 2
    # too many grids for one batch (an older edge could spool 17): refused for what it holds, acked past
    many = pb.WindowBatch(node_id="raw", session_id="s", dtype=pb.DTYPE_INT8)
    for seq in range(4, 21):
        many.beats.add(seq=seq, t0_ms=0, t1_ms=2000, bpm=120.0)
    s.send(pb.Envelope(version=codec.PROTOCOL_VERSION, batch=many).SerializeToString())
    kinds = [recv_kind(s) for _ in range(2)]
    assert kinds[0][0] == "error" and kinds[0][1].code == pb.Error.TOO_LARGE and kinds[1][1].seq == 20
    s.close()
    ctx.term()


def test_handler_exception_is_counted_and_does_not_stall(tmp_path):
    calls = []

    def flaky(node, session, batch, epoch):
        calls.append(batch.windows[0].seq)
        if len(calls) == 1:
            raise RuntimeError("boom")

    with IngestServer("tcp://127.0.0.1:*", flaky, {"enc-1"}, state_path=tmp_path / "l.sqlite", insecure_dev=True) as srv:
        link = edge(srv.endpoint, tmp_path).start()
        for i in range(3):
            link.submit([codec.make_window(1, 0, i, i + 2, np.ones(64))])
        assert link.wait_acked(10)
        link.close()
        assert srv.stats()["handler_errors"] == 1 and calls == [1, 2, 3]


def test_ledger_gap_and_floor_logic(tmp_path):
    led = SqliteLedger(tmp_path / "l.sqlite")
    assert led.take("n", 1, [1, 2, 4]) == [True, True, True]
    assert led.state("n", 1).hw == 2 and led.state("n", 1).above == {4}
    led.commit()
    led.close()
    led = SqliteLedger(tmp_path / "l.sqlite")     # persisted, including the out-of-order seq
    assert led.take("n", 1, [4, 3]) == [False, True]
    assert led.state("n", 1).hw == 4
    assert led.take("n", 1, [9], floor=8) == [True]  # 5..7 dropped by the edge, 8 still to come
    assert led.state("n", 1).hw == 7 and led.state("n", 1).above == {9}
    assert led.take("n", 1, [8, 9]) == [True, False]
    assert led.state("n", 1).hw == 9 and not led.state("n", 1).above
    assert led.take("n", 2**64 - 1, [1]) == [True]   # the full unsigned epoch range
    led.commit()
    led.close()
    led = SqliteLedger(tmp_path / "l.sqlite")
    assert led.state("n", 2**64 - 1).hw == 1 and led.state("n", 1).hw == 9
    led.close()


# --------------------------------------------------------------------------- security

def test_unknown_key_is_rejected_and_allowed_key_accepted(tmp_path, keyring):
    rec = Recorder()
    with IngestServer("tcp://127.0.0.1:*", rec, {"enc-1"}, state_path=tmp_path / "l.sqlite",
                      server_key=keyring / "cloud.key_secret", allow_dir=keyring / "allowed") as srv:
        good = edge(srv.endpoint, tmp_path, "good", insecure_dev=False, client_key=keyring / "edge1.key_secret",
                    server_key=keyring / "cloud.key").start()
        stranger = edge(srv.endpoint, tmp_path, "stranger", insecure_dev=False,
                        client_key=keyring / "stranger.key_secret", server_key=keyring / "cloud.key").start()
        plain = edge(srv.endpoint, tmp_path, "plain").start()            # no CURVE at all
        assert good.wait_ready(10)
        with pytest.raises(AuthRejectedError, match="allow-list"):
            stranger.wait_ready(10)
        stranger.submit([codec.make_window(1, 0, 0, 2, np.ones(64))])
        good.submit([codec.make_window(1, 0, 0, 2, np.ones(64))])
        assert good.wait_acked(10)
        assert not plain.wait_ready(1.0)
        assert wait_until(lambda: srv.stats().get("auth_failures", 0) >= 1                 # the stranger
                          and srv.stats().get("handshake_failures", 0) >= 1, 10), srv.stats()  # plaintext
        for link in (good, stranger, plain):
            link.close(flush_timeout=0.1)
        assert rec.hellos == ["good"] and rec.windows == [("good", 1)]


def test_allow_list_change_lets_a_new_key_in_without_a_restart(tmp_path, keyring):
    from proto import keys

    with IngestServer("tcp://127.0.0.1:*", Recorder(), {"enc-1"}, state_path=tmp_path / "l.sqlite",
                      server_key=keyring / "cloud.key_secret", allow_dir=keyring / "allowed") as srv:
        link = edge(srv.endpoint, tmp_path, "late", insecure_dev=False, client_key=keyring / "stranger.key_secret",
                    server_key=keyring / "cloud.key").start()
        with pytest.raises(AuthRejectedError):
            link.wait_ready(10)
        keys.allow(keyring / "stranger.key", keyring)            # what `dancewire keys allow` does
        assert wait_until(lambda: link.state == "ready", 15), repr(link.stats())
        assert srv.stats()["allowlist_reloads"] == 1
        link.close(flush_timeout=0.1)


def test_revoked_key_is_disconnected_its_data_refused_and_kept_until_allowed_again(tmp_path, keyring):
    """`dancewire keys revoke` on a running cloud: the connected edge is told (fatal UNAUTHORIZED),
    nothing it sends afterwards is taken, and its spool keeps it; allowed again, it delivers all."""
    from proto import keys

    rec = Recorder()
    with IngestServer("tcp://127.0.0.1:*", rec, {"enc-1"}, state_path=tmp_path / "l.sqlite",
                      server_key=keyring / "cloud.key_secret", allow_dir=keyring / "allowed") as srv:
        link = edge(srv.endpoint, tmp_path, "studio-b", insecure_dev=False, client_key=keyring / "edge1.key_secret",
                    server_key=keyring / "cloud.key", rejected_retry_s=0.5).start()
        e = embeddings(6)
        assert link.wait_ready(10)
        link.submit([codec.make_window(1, 0, 0, 2, e[0])])
        assert link.wait_acked(10)
        keys.revoke("edge1", keyring)
        assert wait_until(lambda: isinstance(link.error, AuthRejectedError), 10), repr(link.stats())
        assert "revoked" in str(link.error) and link.state == "rejected"
        assert srv.stats()["revoked"] == 1 and srv.stats()["rejects"]["unauthorized"] >= 1
        for i in range(1, 6):
            link.submit([codec.make_window(1, i, i, i + 2, e[i])])
        time.sleep(2.0)                                            # several refused Hellos later
        assert rec.windows == [("studio-b", 1)] and srv.stats()["connections"] == 0
        keys.allow(keyring / "edge1.key", keyring)
        assert wait_until(lambda: link.state == "ready", 15), repr(link.stats())
        assert link.wait_acked(15) and link.error is None
        assert rec.windows == [("studio-b", s) for s in range(1, 7)]
        link.close(flush_timeout=0.1)


def test_plaintext_needs_the_explicit_development_flag(tmp_path):
    with pytest.raises(LinkError, match="insecure"):
        EdgeLink(encoder_hash="h", embedding_dim=8, spool_path=tmp_path / "s.sqlite",
                 client_key=tmp_path / "missing.key_secret")
    with pytest.raises(DancewireError, match="insecure"):
        IngestServer("tcp://127.0.0.1:*", None, {"h"}, state_path=tmp_path / "l.sqlite")


def test_the_development_flag_wins_over_configured_keys(tmp_path, keyring, caplog):
    """--insecure-dev with link keys in the settings is plaintext on both sides, and says so (the
    edge used to keep CURVE under the flag while the cloud went plaintext: every handshake failed)."""
    rec = Recorder()
    with caplog.at_level("WARNING"):
        srv = IngestServer("tcp://127.0.0.1:*", rec, {"enc-1"}, state_path=tmp_path / "l.sqlite",
                           server_key=keyring / "cloud.key_secret", insecure_dev=True).start()
        link = edge(srv.endpoint, tmp_path, client_key=keyring / "edge1.key_secret",
                    server_key=keyring / "cloud.key").start()
    try:
        link.submit([codec.make_window(1, 0, 0, 2, np.ones(64))])
        assert link.wait_acked(10)
    finally:
        link.close()
        srv.stop()
    assert rec.windows == [("n1", 1)]
    said = caplog.text
    assert "PLAINTEXT" in said and "keys ignored" in said and "edge1.key_secret" in said and "key ignored" in said

# --------------------------------------------------------------------------- encoder check

def test_encoder_hash_mismatch_is_a_clear_error_at_the_edge(plain_server, tmp_path, caplog):
    link = edge(plain_server.endpoint, tmp_path, "wrong-enc", encoder_hash="enc-OLD").start()
    with pytest.raises(EncoderMismatchError) as exc:
        link.wait_ready(10)
    msg = str(exc.value)
    assert "enc-OLD" in msg and "enc-1" in msg and "encoder mismatch" in msg
    assert isinstance(link.error, EncoderMismatchError) and link.state == "rejected"
    link.submit([codec.make_window(1, 0, 0, 2, np.ones(64))])      # kept in the spool, never sent
    time.sleep(0.3)
    assert link.stats().get("sent_batches", 0) == 0
    link.close(flush_timeout=0.1)
    assert plain_server.stats()["rejects"]["encoder_mismatch"] >= 1
    assert plain_server.recorder.windows == []
    assert any("encoder mismatch" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


# --------------------------------------------------------------------------- liveness and back-pressure

def _fake_cloud(ctx, answer_hello: bool):
    r = ctx.socket(zmq.ROUTER)
    r.linger = 0
    r.rcvhwm = 10
    port = r.bind_to_random_port("tcp://127.0.0.1")
    return r, f"tcp://127.0.0.1:{port}"


def test_heartbeats_measure_rtt_and_a_silent_cloud_triggers_reconnect(plain_server, tmp_path):
    link = edge(plain_server.endpoint, tmp_path, "hb").start()
    assert link.wait_ready(10)
    assert wait_until(lambda: link.rtt_ms is not None, 5)
    assert plain_server.stats()["rx_heartbeat"] >= 1
    link.close()

    ctx = zmq.Context()
    router, endpoint = _fake_cloud(ctx, answer_hello=False)   # accepts connections, never answers
    link = edge(endpoint, tmp_path, "hb2").start()
    assert wait_until(lambda: link.stats().get("peer_timeouts", 0) >= 2 and link.stats()["connects"] >= 3, 10), \
        repr(link.stats())
    link.close(flush_timeout=0)
    router.close()
    ctx.term()


def test_a_stalled_cloud_never_blocks_submit(tmp_path):
    ctx = zmq.Context()
    router, endpoint = _fake_cloud(ctx, answer_hello=True)
    # ack_timeout_s well past the test: a loaded machine may take over the default 2 s to submit
    # 2000 batches, and the resend after an ack timeout (right behaviour) would double sent_batches
    link = edge(endpoint, tmp_path, "bp", max_inflight=32, heartbeat_s=5.0, ack_timeout_s=120.0).start()
    try:
        rid, frame = router.recv_multipart()                       # the Hello
        kind, h = codec.decode(frame)
        router.send_multipart([rid, codec.encode(pb.Ack(epoch=h.epoch, seq=0))])
        assert link.wait_ready(5)
        e = embeddings(4)
        results = []

        def camera_loop():                                         # the cloud never reads again
            for i in range(2000):
                results.append(link.submit([codec.make_window(d, 0, i, i + 2, e[d]) for d in range(4)]))

        t = threading.Thread(target=camera_loop, daemon=True)
        t.start()
        t.join(60)                                                 # a guard against a hang, not a speed goal
        assert not t.is_alive() and len(results) == 2000 and None not in results
        assert wait_until(lambda: link.stats()["spool"]["appended_batches"] == 2000, 10)
        st_ = link.stats()
        assert st_["inflight"] <= 32 and st_["sent_batches"] <= 32 + 1 and st_.get("ack_timeouts", 0) == 0
    finally:                                                       # a failure must not leave a live link behind
        link.close(flush_timeout=0)
        router.close()
        ctx.term()


def test_default_key_names_in_the_keys_folder(tmp_path, keyring, monkeypatch):
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path))          # keys folder: tmp_path/keys = keyring
    with pytest.raises(LinkError, match="dancewire keys generate edge"):
        EdgeLink(encoder_hash="enc-1", embedding_dim=64, spool_path=tmp_path / "x.sqlite")
    rec = Recorder()
    with IngestServer("tcp://127.0.0.1:*", rec, {"enc-1"}, state_path=tmp_path / "l.sqlite",
                      server_key="cloud", allow_dir=keyring / "allowed") as srv:
        link = EdgeLink(srv.endpoint, encoder_hash="enc-1", embedding_dim=64, node_id="named",
                        client_key="edge1", spool_path=tmp_path / "s.sqlite").start()   # server key: "cloud"
        link.submit([codec.make_window(1, 0, 0, 2, np.ones(64))])
        assert link.wait_acked(10)
        link.close()
    assert rec.windows == [("named", 1)]


def test_an_invalid_submission_is_counted_and_leaves_no_stalled_gap(plain_server, tmp_path):
    link = edge(plain_server.endpoint, tmp_path, "gappy").start()
    link.submit([codec.make_window(1, 0, 0, 2, np.ones(64))])
    assert link.submit([codec.make_window(1, 0, 1, 3, np.ones(32))]) is None   # wrong dimension: refused
    link.submit([codec.make_window(1, 0, 2, 4, np.ones(64))])
    assert link.wait_acked(10), repr(link.stats())                   # it took no seq: nothing to skip
    st_ = link.stats()
    link.close()
    assert st_["submit_invalid"] == 1 and "expected dim 64" in st_["last_error"]
    assert [s for n, s in plain_server.recorder.windows if n == "gappy"] == [1, 2]


def test_an_address_in_use_is_an_error_from_start_and_nothing_is_left_running(tmp_path, plain_server):
    """`cloud serve` printed "ingest on ..." and ran the API without an ingest when the port was
    taken (start() returned after 10 s); now start() raises at once and releases its ledger."""
    before = {t.name for t in threading.enumerate()}
    t0 = time.monotonic()
    with pytest.raises(DancewireError, match="cannot listen on .*in use"):
        IngestServer(plain_server.endpoint, Recorder(), {"enc-1"}, state_path=tmp_path / "second.sqlite",
                     insecure_dev=True).start()
    assert time.monotonic() - t0 < 5.0
    assert {t.name for t in threading.enumerate()} - before == set()
