"""Wire messages (``proto``) <-> cloud records. The only cloud module that knows the wire format."""
from __future__ import annotations

import numpy as np

from cloud.records import BeatGridIn, FeedbackOut, WindowIn


def signed64(n: int) -> int:
    """A fixed64 (e.g. an edge's random epoch) as the signed 64-bit integer SQL BIGINT can hold."""
    n = int(n) & 0xFFFFFFFFFFFFFFFF
    return n - (1 << 64) if n >= (1 << 63) else n


def hello_info(hello) -> dict:
    return {"software_version": hello.software_version, "encoder_model_id": hello.encoder_model_id,
            "encoder_hash": hello.encoder_hash, "embedding_dim": int(hello.embedding_dim),
            "capabilities": list(hello.capabilities), "epoch": signed64(hello.epoch), "session_id": hello.session_id}


def windows_from_pb(node_id: str, session: str, batch, epoch: int = 0) -> tuple[list[WindowIn], list[BeatGridIn]]:
    from proto import codec

    emb = codec.batch_embeddings(batch).astype(np.float64)    # float32 norms overflow or vanish at extreme scales
    if len(emb):
        emb = (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-300)).astype(np.float32)
    sid = session or batch.session_id
    windows = [WindowIn(node_id=node_id, session_id=sid, track_id=int(w.track_id), seq=int(w.seq),
                        t0=w.t0_ms / 1000.0, t1=w.t1_ms / 1000.0, embedding=emb[i],
                        rhythm=codec.rhythm_from_pb(w.rhythm) if w.HasField("rhythm") else {},
                        pose_quality=float(w.pose_quality), epoch=epoch)
               for i, w in enumerate(batch.windows)]
    beats = [BeatGridIn(node_id=node_id, session_id=sid, seq=int(g.seq), t0=g.t0_ms / 1000.0, t1=g.t1_ms / 1000.0,
                        bpm=float(g.bpm), confidence=float(g.confidence), beats=[t / 1000.0 for t in g.beat_ms],
                        counts=[int(c) for c in g.beat_count], onsets=[t / 1000.0 for t in g.onset_ms],
                        epoch=epoch)
             for g in batch.beats]
    return windows, beats


def feedback_to_pb(fb: FeedbackOut):
    from proto import codec
    from proto import dancewire_pb2 as pb

    msg = pb.Feedback(session_id=fb.session_id, t_us=int(fb.t_us))
    for d in fb.dancers:
        msg.dancers.append(codec.make_dancer_feedback(
            d.track_id, d.seq, d.styles, t0=d.t0, t1=d.t1, style=d.style, confidence=d.confidence,
            nearest=[(n.ref_id, n.label, n.score) for n in d.nearest],
            nearest_groups=[(n.ref_id, n.label, n.score) for n in d.nearest_groups],
            scores={k: v for k, v in d.scores.items() if np.isfinite(v)}))
    return msg
