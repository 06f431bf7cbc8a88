"""Encode and decode wire frames: the Envelope, the protocol version, size limits, embedding packing.

Every frame on the wire is one ``Envelope`` (see ``proto/dancewire.proto``) whose field 1 is
the protocol version. ``encode(body)`` wraps a body message and enforces the frame limit;
``decode(frame)`` checks size, parses, checks the version and validates the body against
``Limits``, raising ``WireError`` (with a short ``reason`` used to count rejects) on anything
it cannot use. It never raises anything else for any input bytes.

Embeddings travel as bytes: fp16 (2 bytes a dimension) or int8 with one float scale per
vector (symmetric: value = q * scale, scale = max|x| / 127). ``quantize``/``dequantize``
convert one vector, ``batch_embeddings`` a whole batch at once.

Both the edge and the cloud import this module; neither imports the other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from google.protobuf.message import DecodeError, Message

from dancewire.errors import BadInputError
from proto import dancewire_pb2 as pb

#: Version written into every Envelope. Bump it on any incompatible change of meaning.
PROTOCOL_VERSION = 1
#: Versions a receiver accepts.
SUPPORTED_VERSIONS = frozenset({1})


@dataclass(frozen=True)
class Limits:
    """Size limits checked on encode (frame size) and decode (everything)."""
    max_frame_bytes: int = 256 * 1024
    max_windows_per_batch: int = 64
    max_beat_grids_per_batch: int = 16
    max_embedding_dim: int = 1024
    max_id_chars: int = 128          # node_id, session_id, labels, ref ids, hashes
    max_text_chars: int = 1024       # Error.message and similar free text
    max_capabilities: int = 32
    max_events_per_grid: int = 1024  # beats or onsets in one BeatGrid
    max_extra_metrics: int = 32      # RhythmMetrics.extra / DancerFeedback.scores entries
    max_dancers_per_feedback: int = 64
    max_styles: int = 64
    max_neighbors: int = 32


LIMITS = Limits()


def socket_max_bytes(limits: Limits = LIMITS) -> int:
    """ZMQ_MAXMSGSIZE for a socket: libzmq drops a peer sending more before it is buffered (a frame a
    little over the limit still arrives and is refused with a clear error by `decode`)."""
    return 2 * limits.max_frame_bytes

# Body message type -> the Envelope oneof field that carries it.
_BODY_FIELD = {pb.Hello: "hello", pb.WindowBatch: "batch", pb.Heartbeat: "heartbeat",
               pb.Ack: "ack", pb.Error: "error", pb.Feedback: "feedback"}

# Reject reasons (the cloud counts rejects by these) and the Error code each maps to.
REASON_CODES = {
    "too_large": pb.Error.TOO_LARGE,
    "bad_frame": pb.Error.BAD_FRAME,
    "bad_version": pb.Error.BAD_VERSION,
    "schema": pb.Error.SCHEMA,
    "encoder_mismatch": pb.Error.ENCODER_MISMATCH,
    "hello_required": pb.Error.HELLO_REQUIRED,
    "unauthorized": pb.Error.UNAUTHORIZED,
    "bad_multipart": pb.Error.BAD_FRAME,
    "unexpected": pb.Error.SCHEMA,
}

DTYPES = {"fp16": pb.DTYPE_FP16, "int8": pb.DTYPE_INT8}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
ITEMSIZE = {pb.DTYPE_FP16: 2, pb.DTYPE_INT8: 1}
_NP = {pb.DTYPE_FP16: np.dtype("<f2"), pb.DTYPE_INT8: np.dtype("i1")}

RHYTHM_FIELDS = ("intensity", "beat_alignment", "beat_coverage", "beat_hit_rate",
                 "align_precision", "align_recall", "align_f1", "tempo_bpm")


class WireError(BadInputError):
    """A frame that cannot be used. ``reason`` is a short key from ``REASON_CODES``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    @property
    def code(self) -> int:
        return REASON_CODES.get(self.reason, pb.Error.SCHEMA)


# --------------------------------------------------------------------------- envelope

def envelope(body: Message, version: int = PROTOCOL_VERSION) -> pb.Envelope:
    env = pb.Envelope(version=version)
    try:
        getattr(env, _BODY_FIELD[type(body)]).CopyFrom(body)
    except KeyError:
        raise TypeError(f"not a wire body message: {type(body).__name__}") from None
    return env


def encode(body: Message, limits: Limits = LIMITS, version: int = PROTOCOL_VERSION) -> bytes:
    """One body message -> one frame (serialized Envelope). Raises WireError if over the frame limit."""
    data = envelope(body, version).SerializeToString()
    if len(data) > limits.max_frame_bytes:
        raise WireError("too_large", f"frame of {len(data)} bytes is over the {limits.max_frame_bytes}-byte limit")
    return data


def decode(frame: bytes, limits: Limits = LIMITS) -> tuple[str, Any]:
    """One frame -> (kind, body message). Raises WireError for anything unusable, nothing else."""
    if len(frame) > limits.max_frame_bytes:
        raise WireError("too_large", f"frame of {len(frame)} bytes is over the {limits.max_frame_bytes}-byte limit")
    env = pb.Envelope()
    try:
        env.ParseFromString(frame)
    except (DecodeError, RuntimeError, ValueError) as exc:  # upb raises DecodeError; be generous
        raise WireError("bad_frame", f"not a dancewire frame ({exc.__class__.__name__})") from None
    if env.version not in SUPPORTED_VERSIONS:
        raise WireError("bad_version", f"protocol version {env.version} is not supported "
                        f"(this side speaks {sorted(SUPPORTED_VERSIONS)})")
    kind = env.WhichOneof("body")
    if kind is None:
        raise WireError("schema", "frame has no body")
    body = getattr(env, kind)
    _VALIDATORS[kind](body, limits)
    return kind, body


def validate(body: Message, limits: Limits = LIMITS) -> None:
    """Check a body message as `decode` would on the other side. Raises WireError."""
    _VALIDATORS[_BODY_FIELD[type(body)]](body, limits)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_BATCH_FLOOR_TAG = bytes([(4 << 3) | 0])    # WindowBatch.floor_seq, varint
_ENVELOPE_BATCH_TAG = bytes([(3 << 3) | 2])  # Envelope.batch, length-delimited


def frame_batch(batch_bytes: bytes, floor_seq: int = 0, limits: Limits = LIMITS,
                version: int = PROTOCOL_VERSION) -> bytes:
    """A frame for an already serialized WindowBatch (as the edge spools it), setting floor_seq.

    Protobuf merges concatenated fields (the last scalar wins), so this decodes
    exactly like ``encode(batch with floor_seq)`` without parsing the stored batch again.
    """
    body = batch_bytes + (_BATCH_FLOOR_TAG + _varint(floor_seq) if floor_seq else b"")
    data = b"\x08" + _varint(version) + _ENVELOPE_BATCH_TAG + _varint(len(body)) + body
    if len(data) > limits.max_frame_bytes:
        raise WireError("too_large", f"frame of {len(data)} bytes is over the {limits.max_frame_bytes}-byte limit")
    return data


# --------------------------------------------------------------------------- validation

def _check(cond: bool, message: str, reason: str = "schema") -> None:
    if not cond:
        raise WireError(reason, message)


def _check_id(value: str, name: str, limits: Limits, required: bool = False) -> None:
    if required and not value:
        raise WireError("schema", f"{name} is empty")
    if len(value) > limits.max_id_chars:
        raise WireError("too_large", f"{name} is longer than {limits.max_id_chars} characters")
    if not value.isprintable():
        raise WireError("schema", f"{name} holds control characters")   # NUL: PostgreSQL text refuses it


MAX_SEQ = 2**63 - 1   # seq / floor_seq are uint64 on the wire; the stores keep signed 64-bit integers
MAX_MS = 2**53        # |times| in ms (285,000 years): beyond it a time does not survive seconds as a float


def _finite(x: float) -> bool:
    return x == x and x not in (math.inf, -math.inf)


def _validate_hello(m: pb.Hello, limits: Limits) -> None:
    _check_id(m.node_id, "node_id", limits, required=True)
    _check_id(m.software_version, "software_version", limits)
    _check_id(m.encoder_model_id, "encoder_model_id", limits)
    _check_id(m.encoder_hash, "encoder_hash", limits, required=True)
    _check_id(m.session_id, "session_id", limits)
    _check(0 < m.embedding_dim <= limits.max_embedding_dim,
           f"embedding_dim {m.embedding_dim} not in 1..{limits.max_embedding_dim}")
    _check(m.embedding_dtype in ITEMSIZE, f"unknown embedding dtype {m.embedding_dtype}")
    _check(len(m.capabilities) <= limits.max_capabilities, "too many capabilities", "too_large")
    for cap in m.capabilities:
        _check_id(cap, "capability", limits)


def _validate_rhythm(r: pb.RhythmMetrics, limits: Limits) -> None:
    if len(r.extra) > limits.max_extra_metrics:
        raise WireError("too_large", f"more than {limits.max_extra_metrics} extra rhythm metrics")
    for key in r.extra:
        _check_id(key, "rhythm metric name", limits)
    # a metric is a finite number or absent (rhythm_to_pb omits the rest); a NaN would reach the
    # dashboard's JSON, which browsers cannot parse
    for name, value in [*((f, getattr(r, f)) for f in RHYTHM_FIELDS if r.HasField(f)), *r.extra.items()]:
        _check(_finite(value), f"rhythm metric {name} is not a finite number")


def _validate_batch(m: pb.WindowBatch, limits: Limits) -> None:
    _check_id(m.node_id, "node_id", limits, required=True)
    _check_id(m.session_id, "session_id", limits)
    itemsize = ITEMSIZE.get(m.dtype)
    _check(itemsize is not None, f"unknown embedding dtype {m.dtype}")
    n, g = len(m.windows), len(m.beats)
    _check(n + g > 0, "batch carries no windows and no beat grids")
    _check(n <= limits.max_windows_per_batch, f"{n} windows over the limit of {limits.max_windows_per_batch}", "too_large")
    _check(g <= limits.max_beat_grids_per_batch, f"{g} beat grids over the limit", "too_large")
    _check(m.floor_seq <= MAX_SEQ, f"floor_seq over {MAX_SEQ}")
    seqs = [w.seq for w in m.windows] + [b.seq for b in m.beats]
    _check(m.floor_seq <= min(seqs, default=MAX_SEQ), "floor_seq above a seq the batch carries "
           "(it would declare the batch's own items gone)")
    max_bytes = limits.max_embedding_dim * itemsize
    int8 = m.dtype == pb.DTYPE_INT8
    for w in m.windows:
        _check(0 < w.seq <= MAX_SEQ, f"window seq must be in 1..{MAX_SEQ}")
        _check(w.t1_ms >= w.t0_ms, "window t1 before t0")
        _check(-MAX_MS <= w.t0_ms and w.t1_ms <= MAX_MS, f"window time beyond +-{MAX_MS} ms")
        size = len(w.embedding)
        _check(0 < size <= max_bytes and size % itemsize == 0, f"embedding of {size} bytes is not a valid vector")
        if int8:
            _check(_finite(w.scale) and w.scale > 0.0, "int8 embedding needs a positive finite scale")
        q = w.pose_quality
        _check(0.0 <= q <= 1.0, "pose_quality not in [0, 1]")
        if w.HasField("rhythm"):
            _validate_rhythm(w.rhythm, limits)
    for b in m.beats:
        _check(0 < b.seq <= MAX_SEQ, f"beat grid seq must be in 1..{MAX_SEQ}")
        _check(b.t1_ms >= b.t0_ms, "beat grid t1 before t0")
        _check(-MAX_MS <= b.t0_ms and b.t1_ms <= MAX_MS, f"beat grid time beyond +-{MAX_MS} ms")
        _check(all(-MAX_MS <= t <= MAX_MS for t in b.beat_ms) and all(-MAX_MS <= t <= MAX_MS for t in b.onset_ms),
               f"beat or onset time beyond +-{MAX_MS} ms")
        _check(len(b.beat_ms) <= limits.max_events_per_grid and len(b.onset_ms) <= limits.max_events_per_grid,
               "too many beats or onsets in one grid", "too_large")
        _check(len(b.beat_count) in (0, len(b.beat_ms)), "beat_count must be empty or parallel to beat_ms")
        _check(_finite(b.bpm) and b.bpm >= 0.0, "beat grid bpm is not a finite tempo")   # JSON has no NaN
        _check(_finite(b.confidence), "beat grid confidence is not a finite number")
    if n:
        sizes = {len(w.embedding) for w in m.windows}
        _check(len(sizes) == 1, "embeddings in one batch differ in length")


def _validate_heartbeat(m: pb.Heartbeat, limits: Limits) -> None:
    pass


def _validate_ack(m: pb.Ack, limits: Limits) -> None:
    pass


def _validate_error(m: pb.Error, limits: Limits) -> None:
    _check(len(m.message) <= limits.max_text_chars, "error message too long", "too_large")
    _check(len(m.expected) <= limits.max_text_chars and len(m.got) <= limits.max_text_chars,
           "error detail too long", "too_large")


def _validate_neighbors(items, limits: Limits) -> None:
    _check(len(items) <= limits.max_neighbors, "too many neighbours", "too_large")
    for n in items:
        _check_id(n.ref_id, "ref_id", limits)
        _check_id(n.label, "label", limits)


def _validate_feedback(m: pb.Feedback, limits: Limits) -> None:
    _check_id(m.session_id, "session_id", limits)
    _check(len(m.dancers) <= limits.max_dancers_per_feedback, "too many dancers in feedback", "too_large")
    for d in m.dancers:
        _check(len(d.styles) <= limits.max_styles, "too many styles", "too_large")
        for s in d.styles:
            _check_id(s.label, "style label", limits)
        _check_id(d.style, "style", limits)
        _validate_neighbors(d.nearest, limits)
        _validate_neighbors(d.nearest_groups, limits)
        _check(len(d.scores) <= limits.max_extra_metrics, "too many scores", "too_large")
        for key in d.scores:
            _check_id(key, "score name", limits)


_VALIDATORS = {"hello": _validate_hello, "batch": _validate_batch, "heartbeat": _validate_heartbeat,
               "ack": _validate_ack, "error": _validate_error, "feedback": _validate_feedback}


# --------------------------------------------------------------------------- embeddings

def dtype_code(dtype: str | int) -> int:
    """'int8' / 'fp16' (or a pb.Dtype value) -> pb.Dtype value."""
    if isinstance(dtype, str):
        try:
            return DTYPES[dtype.lower()]
        except KeyError:
            raise ValueError(f"unknown embedding dtype {dtype!r} (use one of {sorted(DTYPES)})") from None
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown embedding dtype {dtype!r}")
    return int(dtype)


def quantize(vector: np.ndarray, dtype: str | int = "int8") -> tuple[bytes, float]:
    """One float vector -> (packed bytes, scale). Scale is 1.0 for fp16.

    int8 is symmetric per vector: scale = max|x| / 127, q = round(x / scale).
    """
    code = dtype_code(dtype)
    v = np.asarray(vector, dtype=np.float32).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError("embedding has non-finite values")
    if code == pb.DTYPE_FP16:
        return v.astype("<f2").tobytes(), 1.0
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    q = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
    return q.tobytes(), scale


def dequantize(data: bytes, dtype: str | int = "int8", scale: float = 1.0) -> np.ndarray:
    """Packed bytes -> float32 vector."""
    code = dtype_code(dtype)
    arr = np.frombuffer(data, dtype=_NP[code]).astype(np.float32)
    if code == pb.DTYPE_INT8:
        arr *= np.float32(scale)
    return arr


def batch_embeddings(batch: pb.WindowBatch) -> np.ndarray:
    """All embeddings of a (validated) batch as one float32 array (n_windows, dim)."""
    n = len(batch.windows)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    code = batch.dtype
    raw = b"".join(w.embedding for w in batch.windows)
    arr = np.frombuffer(raw, dtype=_NP[code]).astype(np.float32).reshape(n, -1)
    if code == pb.DTYPE_INT8:
        arr *= np.fromiter((w.scale for w in batch.windows), dtype=np.float32, count=n)[:, None]
    return arr


# --------------------------------------------------------------------------- builders

def to_ms(t: float) -> int:
    """Seconds on the node clock -> integer milliseconds (rounded)."""
    return int(round(float(t) * 1000.0))


def rhythm_to_pb(rhythm: Mapping[str, Any] | None, out: pb.RhythmMetrics | None = None) -> pb.RhythmMetrics:
    """A rhythm dict (name -> float or None) -> RhythmMetrics; unknown names go to `extra`, None is omitted."""
    msg = out if out is not None else pb.RhythmMetrics()
    for key, value in (rhythm or {}).items():
        if value is None:
            continue
        value = float(value)
        if not _finite(value):
            continue
        if key in RHYTHM_FIELDS:
            setattr(msg, key, value)
        else:
            msg.extra[key] = value
    return msg


def rhythm_from_pb(msg: pb.RhythmMetrics) -> dict[str, float]:
    """RhythmMetrics -> dict of the metrics present."""
    out = {name: getattr(msg, name) for name in RHYTHM_FIELDS if msg.HasField(name)}
    out.update(msg.extra)
    return out


def make_window(track_id: int, seq: int, t0: float, t1: float, embedding: np.ndarray,
                rhythm: Mapping[str, Any] | None = None, pose_quality: float = 0.0,
                dtype: str | int = "int8") -> pb.WindowEmbedding:
    """One dancer-window message. t0/t1 in seconds on the node clock."""
    data, scale = quantize(embedding, dtype)
    w = pb.WindowEmbedding(track_id=int(track_id), seq=int(seq), t0_ms=to_ms(t0), t1_ms=to_ms(t1),
                           embedding=data, pose_quality=min(1.0, max(0.0, float(pose_quality))))
    if dtype_code(dtype) == pb.DTYPE_INT8:
        w.scale = scale
    if rhythm:
        rhythm_to_pb(rhythm, w.rhythm)
    return w


def pose_quality_of(result: Any) -> float:
    """Pose quality of a WindowResult-like object: its own `pose_quality` if it has one,
    else the share of real frames in the window's mask times the mean keypoint score."""
    q = getattr(result, "pose_quality", None)
    if q is not None:
        return float(q)
    window = getattr(result, "window", None)
    mask = getattr(window, "mask", None)
    if mask is None or len(mask) == 0:
        return 0.0
    mask = np.asarray(mask, bool)
    share = float(mask.mean())
    kp = getattr(window, "kp", None)
    if kp is not None and np.ndim(kp) == 3 and np.asarray(kp).shape[-1] >= 3 and mask.any():
        conf = float(np.clip(np.nanmean(np.asarray(kp)[mask, :, 2]), 0.0, 1.0))
        return share * conf
    return share


def window_from_result(result: Any, seq: int, dtype: str | int = "int8") -> pb.WindowEmbedding:
    """An ``edge.records.WindowResult`` (duck-typed: .window.track_id/t0/t1, .embedding, .rhythm)."""
    w = result.window
    return make_window(w.track_id, seq, w.t0, w.t1, result.embedding, getattr(result, "rhythm", None),
                       pose_quality_of(result), dtype)


def make_beat_grid(seq: int, t0: float, t1: float, beats: Iterable[tuple[float, int]] = (),
                   onsets: Iterable[float] = (), bpm: float = 0.0, confidence: float = 0.0) -> pb.BeatGrid:
    """beats: (time s, count 1..8) pairs; onsets: times in s."""
    g = pb.BeatGrid(seq=int(seq), t0_ms=to_ms(t0), t1_ms=to_ms(t1), bpm=float(bpm), confidence=float(confidence))
    for t, count in beats:
        g.beat_ms.append(to_ms(t))
        g.beat_count.append(int(count))
    g.onset_ms.extend(to_ms(t) for t in onsets)
    return g


def make_hello(node_id: str, encoder_hash: str, embedding_dim: int, dtype: str | int = "int8", *,
               encoder_model_id: str = "", software_version: str = "", epoch: int = 0,
               session_id: str = "", capabilities: Iterable[str] = ()) -> pb.Hello:
    if not software_version:
        from dancewire import __version__ as software_version
    return pb.Hello(node_id=node_id, software_version=software_version, encoder_model_id=encoder_model_id,
                    encoder_hash=encoder_hash, embedding_dim=int(embedding_dim),
                    embedding_dtype=dtype_code(dtype), capabilities=list(capabilities),
                    epoch=int(epoch), session_id=session_id)


def make_error(code: int, message: str, fatal: bool = False, expected: str = "", got: str = "",
               limits: Limits = LIMITS) -> pb.Error:
    cut = limits.max_text_chars
    return pb.Error(code=code, message=message[:cut], fatal=fatal, expected=expected[:cut], got=got[:cut])


def make_dancer_feedback(track_id: int, seq: int = 0, styles: Mapping[str, float] | None = None, *,
                         t0: float | None = None, t1: float | None = None, style: str = "",
                         confidence: float = 0.0, nearest: Iterable[tuple[str, str, float]] = (),
                         nearest_groups: Iterable[tuple[str, str, float]] = (),
                         scores: Mapping[str, float] | None = None) -> pb.DancerFeedback:
    """nearest / nearest_groups: (ref_id, label, score) triples."""
    d = pb.DancerFeedback(track_id=int(track_id), seq=int(seq), style=style, confidence=float(confidence))
    if t0 is not None:
        d.t0_ms = to_ms(t0)
    if t1 is not None:
        d.t1_ms = to_ms(t1)
    for label, p in (styles or {}).items():
        d.styles.add(label=str(label), p=float(p))
    for ref_id, label, score in nearest:
        d.nearest.add(ref_id=str(ref_id), label=str(label), score=float(score))
    for ref_id, label, score in nearest_groups:
        d.nearest_groups.add(ref_id=str(ref_id), label=str(label), score=float(score))
    for key, value in (scores or {}).items():
        d.scores[str(key)] = float(value)
    return d
