"""The wire schema: generated module in sync with the .proto, codec round trips, versions, limits, packing."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from proto import codec, regen
from proto import dancewire_pb2 as pb


def test_generated_module_matches_proto_source():
    pytest.importorskip("grpc_tools")
    assert regen.differences() == [], "run: dancewire proto regen"


def test_regen_cli_check(capsys):
    pytest.importorskip("grpc_tools")
    from dancewire.cli import main

    assert main(["proto", "regen", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def _batch(n=3, dtype="int8", dim=64):
    rng = np.random.default_rng(1)
    b = pb.WindowBatch(node_id="studio-a", session_id="s1", dtype=codec.dtype_code(dtype), floor_seq=7)
    for i in range(n):
        e = rng.normal(size=dim)
        b.windows.append(codec.make_window(i + 1, 10 + i, 1.0 + i, 3.0 + i, e / np.linalg.norm(e),
                                           {"intensity": 2.5, "beat_alignment": 0.75, "custom": 1.5}, 0.8, dtype))
    b.beats.append(codec.make_beat_grid(10 + n, 0.0, 4.0, beats=[(0.5, 1), (1.0, 2)], onsets=[0.49], bpm=120))
    return b


@pytest.mark.parametrize("body", [
    codec.make_hello("n1", "abc", 64, "int8", encoder_model_id="tong-v1", epoch=2**63 + 5, capabilities=["beats"]),
    _batch(),
    pb.Heartbeat(t_us=123, echo_us=45),
    pb.Ack(epoch=2**64 - 1, seq=99),
    codec.make_error(pb.Error.ENCODER_MISMATCH, "wrong encoder", True, "a", "b"),
    pb.Feedback(session_id="s1", t_us=5, dancers=[codec.make_dancer_feedback(
        1, 10, {"house": 0.7, "krump": 0.3}, t0=1.0, t1=3.0, style="house", confidence=0.7,
        nearest=[("ref-1", "house", 0.93)], nearest_groups=[("crew", "house", 0.8)], scores={"routine": 0.6})]),
])
def test_every_body_round_trips_with_the_version(body):
    frame = codec.encode(body)
    env = pb.Envelope.FromString(frame)
    assert env.version == codec.PROTOCOL_VERSION
    kind, back = codec.decode(frame)
    assert back == body
    assert kind == env.WhichOneof("body")


def test_unsupported_version_is_rejected():
    frame = codec.encode(pb.Heartbeat(t_us=1), version=codec.PROTOCOL_VERSION + 1)
    with pytest.raises(codec.WireError) as exc:
        codec.decode(frame)
    assert exc.value.reason == "bad_version"
    with pytest.raises(codec.WireError) as exc:
        codec.decode(pb.Envelope(heartbeat=pb.Heartbeat()).SerializeToString())  # version 0 / missing
    assert exc.value.reason == "bad_version"


def test_size_limits():
    limits = codec.Limits(max_frame_bytes=300, max_windows_per_batch=2)
    with pytest.raises(codec.WireError) as exc:
        codec.encode(_batch(3), limits)
    assert exc.value.reason == "too_large"
    with pytest.raises(codec.WireError) as exc:
        codec.decode(b"\x08\x01" + b"\x00" * 400, limits)
    assert exc.value.reason == "too_large"
    with pytest.raises(codec.WireError) as exc:
        codec.decode(codec.encode(_batch(3)), codec.Limits(max_windows_per_batch=2))
    assert exc.value.reason == "too_large"
    big = codec.make_hello("n" * 500, "abc", 64)
    with pytest.raises(codec.WireError):
        codec.decode(codec.encode(big))


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: b.windows[0].ClearField("embedding"), "schema"),
    (lambda b: setattr(b.windows[0], "embedding", b"\x01" * 65), "schema"),   # differs from the others
    (lambda b: setattr(b.windows[0], "scale", float("nan")), "schema"),
    (lambda b: setattr(b.windows[0], "pose_quality", 2.0), "schema"),
    (lambda b: setattr(b.windows[0], "seq", 0), "schema"),
    (lambda b: setattr(b.windows[0], "t1_ms", -5), "schema"),
    (lambda b: setattr(b, "node_id", ""), "schema"),
    (lambda b: setattr(b, "dtype", 0), "schema"),
    (lambda b: setattr(b, "session_id", "class\x00-1"), "schema"),    # PostgreSQL text cannot hold NUL
    (lambda b: setattr(b, "node_id", "studio\nb"), "schema"),
    (lambda b: setattr(b.windows[0], "seq", 2**63), "schema"),       # the stores keep signed 64-bit seqs
    (lambda b: setattr(b, "floor_seq", 2**64 - 1), "schema"),
    (lambda b: b.beats.add(seq=2**63), "schema"),
    (lambda b: b.beats.add(seq=9, bpm=float("inf")), "schema"),      # would reach the dashboard as Infinity
    (lambda b: b.beats.add(seq=9, bpm=120.0, confidence=float("nan")), "schema"),
    (lambda b: setattr(b.windows[0], "t1_ms", 2**62), "schema"),      # seconds as a float lose it: feedback failed
    (lambda b: b.beats.add(seq=9, bpm=120.0, beat_ms=[2**60]), "schema"),
    (lambda b: setattr(b, "floor_seq", 1000), "schema"),              # would declare the batch's own seqs gone
])
def test_schema_violations_are_rejected(mutate, reason):
    b = _batch()
    codec.validate(b)                                   # the unmutated batch is fine
    mutate(b)
    with pytest.raises(codec.WireError) as exc:
        codec.decode(codec.encode(b))
    assert exc.value.reason == reason
    with pytest.raises(codec.WireError):
        codec.validate(b)                               # the edge's check before spooling says the same


@pytest.mark.parametrize("dtype, tol", [("int8", 0.5 / 127), ("fp16", 1e-3)])
def test_quantize_round_trip(dtype, tol):
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = rng.normal(size=128).astype(np.float32)
        v /= np.linalg.norm(v)
        data, scale = codec.quantize(v, dtype)
        assert len(data) == 128 * codec.ITEMSIZE[codec.dtype_code(dtype)]
        back = codec.dequantize(data, dtype, scale)
        assert np.max(np.abs(back - v)) <= tol * np.max(np.abs(v)) + 1e-7
        assert float(back @ v) / float(np.linalg.norm(back)) > 0.9995   # cosine to the original


def test_batch_embeddings_matches_per_vector_dequantize():
    b = _batch(5)
    arr = codec.batch_embeddings(b)
    assert arr.shape == (5, 64) and arr.dtype == np.float32
    for row, w in zip(arr, b.windows):
        np.testing.assert_array_equal(row, codec.dequantize(w.embedding, "int8", w.scale))


def test_rhythm_dict_round_trip_keeps_unknown_names_and_drops_none():
    msg = codec.rhythm_to_pb({"intensity": 1.5, "beat_hit_rate": None, "groove": 0.25, "bad": float("nan")})
    assert codec.rhythm_from_pb(msg) == {"intensity": 1.5, "groove": 0.25}


@pytest.mark.parametrize("field", ["beat_coverage", "groove"])
def test_a_rhythm_metric_that_is_not_finite_is_refused(field):
    """Our edge omits non-finite metrics; another sender's NaN was taken, kept as the dancer's latest
    rhythm, and written into the dashboard's JSON as a literal NaN that browsers cannot parse."""
    b = _batch(2)
    if field in codec.RHYTHM_FIELDS:
        setattr(b.windows[1].rhythm, field, float("nan"))
    else:
        b.windows[1].rhythm.extra[field] = float("inf")
    raw = pb.Envelope(version=codec.PROTOCOL_VERSION, batch=b).SerializeToString()
    with pytest.raises(codec.WireError, match=f"rhythm metric {field} is not a finite number"):
        codec.decode(raw)
    if field in codec.RHYTHM_FIELDS:                  # the same batch with a finite value decodes
        setattr(b.windows[1].rhythm, field, 0.5)
    else:
        del b.windows[1].rhythm.extra[field]
    assert codec.decode(pb.Envelope(version=codec.PROTOCOL_VERSION, batch=b).SerializeToString())[0] == "batch"


def test_frame_batch_decodes_like_encode_with_floor():
    b = _batch()
    b.floor_seq = 0
    for item in [*b.windows, *b.beats]:
        item.seq += 2**40                               # a floor never lies above the batch's own seqs
    raw = b.SerializeToString()
    kind, back = codec.decode(codec.frame_batch(raw, 2**40 + 3))
    b.floor_seq = 2**40 + 3
    assert kind == "batch" and back == b


def test_window_from_result_uses_the_edge_record():
    from edge.records import Window, WindowResult

    kp = np.zeros((10, 17, 3), np.float32)
    kp[..., 2] = 0.5
    mask = np.array([True] * 8 + [False] * 2)
    res = WindowResult(Window(3, 1.25, 3.25, kp, mask, np.linspace(1.25, 3.25, 10)),
                       np.ones(64, np.float32) / 8.0, {"intensity": 4.0})
    w = codec.window_from_result(res, 42)
    assert (w.track_id, w.seq, w.t0_ms, w.t1_ms) == (3, 42, 1250, 3250)
    assert w.pose_quality == pytest.approx(0.8 * 0.5)
    assert codec.rhythm_from_pb(w.rhythm) == {"intensity": 4.0}


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_decode_raises_only_wire_error_on_any_bytes(data):
    try:
        kind, body = codec.decode(data)
    except codec.WireError:
        return
    codec.validate(body)                                    # what decode lets through is a valid message
    assert codec.decode(codec.encode(body))[1] == body      # and it means the same once re-encoded


def test_random_bytes_are_almost_never_a_message():
    rng = np.random.default_rng(0)
    taken = 0
    for _ in range(2000):
        try:
            codec.decode(rng.bytes(int(rng.integers(1, 512))))
            taken += 1
        except codec.WireError:
            pass
    assert taken < 20


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decode_survives_mutated_valid_frames(data):
    frame = bytearray(codec.encode(_batch()))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        kind, body = codec.decode(bytes(frame[:cut]))
    except codec.WireError:
        return
    codec.validate(body)                                    # a mutation that decode takes is still valid


def test_feedback_round_trip_for_the_rig():
    fb = pb.Feedback(session_id="s1", t_us=5, dancers=[codec.make_dancer_feedback(
        2, 10, {"house": 0.75, "krump": 0.25}, t0=1.0, t1=3.0, style="house", confidence=0.75,
        nearest=[("ref-1", "house", 0.5)], scores={"routine_similarity": 80.0})])
    kind, got = codec.decode(codec.encode(fb))
    assert kind == "feedback" and got.session_id == "s1"
    (d,) = got.dancers
    assert d.track_id == 2 and d.style == "house" and {s.label: s.p for s in d.styles} == {"house": 0.75, "krump": 0.25}
    assert (d.t0_ms, d.t1_ms) == (1000, 3000) and [(n.ref_id, n.label, n.score) for n in d.nearest] == [("ref-1", "house", 0.5)]
    assert dict(d.scores) == {"routine_similarity": 80.0}