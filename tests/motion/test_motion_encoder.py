"""Encoder: shipped ONNX through open_engine, PyTorch parity, int8 wire loss, MotionStage end to end."""
from __future__ import annotations

import numpy as np
import pytest

from dancewire.errors import ModelCacheError
from edge.motion.settings import WEIGHTS_DIR

ONNX = WEIGHTS_DIR / "encoder.onnx"
CKPT = WEIGHTS_DIR / "encoder.pt"
pytestmark = pytest.mark.skipif(not ONNX.exists(), reason="no shipped encoder weights (run dancewire encoder train)")


def _windows(rng, B=32):
    feats = rng.normal(0, 0.3, (B, 60, 34)).astype(np.float32)
    mask = np.ones((B, 60), bool)
    mask[:, 50:] = rng.random((B, 10)) > 0.5
    feats[~mask] = 0
    return feats, mask


def test_runtime_embeddings_are_unit_and_small():
    from edge.motion.encoder import MotionEncoder

    enc = MotionEncoder(ONNX)
    e = enc.encode_features(*_windows(np.random.default_rng(0)))
    assert e.shape == (32, enc.dim) and enc.dim <= 128 and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert len(enc.sha256) == 64 and enc.model_id
    assert ONNX.stat().st_size < 5 * 2**20


def test_onnx_parity_with_pytorch():
    pytest.importorskip("torch")
    if not CKPT.exists():
        pytest.skip("no checkpoint beside the ONNX file")
    from edge.motion.export import parity

    feats, mask = _windows(np.random.default_rng(1), 64)
    assert parity(CKPT, ONNX, feats, mask) <= 1e-4


def test_int8_wire_loss_is_bounded():
    from edge.motion.encoder import MotionEncoder
    from edge.motion.export import dequantize, quantize

    enc = MotionEncoder(ONNX)
    e = enc.encode_features(*_windows(np.random.default_rng(2), 128))
    q, s = quantize(e)
    assert q.dtype == np.int8
    back = dequantize(q, s)
    cos = np.sum(back * e, axis=1)
    assert cos.min() > 0.9995
    # the neighbour found with int8 embeddings is (near-)tied with the true nearest neighbour
    sim_f, sim_q = e @ e.T, back @ back.T
    np.fill_diagonal(sim_f, -2)
    np.fill_diagonal(sim_q, -2)
    picked = sim_f[np.arange(len(e)), np.argmax(sim_q, 1)]
    assert np.max(sim_f.max(1) - picked) < 2e-3


@pytest.mark.data
def test_int8_knn_accuracy_loss_on_real_windows(shared_data):
    from edge.motion import datasets as ds
    from edge.motion.encoder import MotionEncoder
    from edge.motion.evaluate import genre_eval, window_set
    from edge.motion.export import dequantize, quantize

    enc = MotionEncoder(ONNX)
    seqs = [q for d in ds.ballroom_dirs(shared_data)[::2] for q in ds.load_ballroom(d, ds.DEFAULT_CAMERAS[:2])]
    g, q = ds.ballroom_split(seqs)
    gw, qw = window_set(g, hop_s=1.0), window_set(q, hop_s=1.0)
    full = genre_eval(enc, gw, qw, probe=False)["top1"]
    int8 = genre_eval(lambda f, m: dequantize(*quantize(enc(f, m))), gw, qw, probe=False)["top1"]
    assert abs(full - int8) <= 0.01


@pytest.mark.data
def test_dropped_frames_barely_move_the_embedding(shared_data):
    """Real AIST++ windows with every other sample dropped at random (a camera dropping frames, a
    missed detection): the gaps are interpolated before the encoder, so the embedding stays
    where the clean window's is (zero-filled gaps: mean cosine 0.55 for v3, 0.82 for v2, in `bench encoder`)."""
    from edge.motion import datasets as ds
    from edge.motion.encoder import MotionEncoder
    from edge.motion.evaluate import window_set

    enc = MotionEncoder(ONNX)
    ws = window_set(ds.load_aistpp_pkl(shared_data / "keypoints" / "aistpp" / "gBR_sBM_cAll_d04_mBR0_ch05.pkl",
                                       views=[0, 4]), hop_s=1.0)
    rng = np.random.default_rng(0)
    dropped = ws.mask & (rng.random(ws.mask.shape) > 0.5)
    dropped[:, 0] = ws.mask[:, 0]
    clean = enc(ws.feats, ws.mask)
    holed = enc(np.where(dropped[..., None], ws.feats, 0), dropped)
    assert len(ws) > 10 and float(np.mean(np.sum(clean * holed, 1))) > 0.97


def test_stage_end_to_end():
    from edge.motion.stage import MotionStage
    from edge.records import Beat, Onset, Pose, PoseFrame

    stage = MotionStage(audio_offset=0.1)
    for k in range(12):
        stage.push_audio(Beat(0.5 * k, 0.5 * k, k % 8 + 1, 120.0))
        stage.push_audio(Onset(0.5 * k + 0.25, 0.5 * k + 0.3))
    out = []
    for i in range(120):
        t = i / 30.0
        kp = np.zeros((17, 3))
        kp[:, 0] = 300 + np.arange(17) * 3 + 30 * np.cos(np.pi * t / 0.5)
        kp[:, 1] = 100 + np.arange(17) * 20
        kp[:, 2] = 0.9
        out += stage.push(PoseFrame(i, t, 640, 480, [Pose(7, t, kp, np.zeros(4), 0.9)]))
    assert len(out) == 5                  # starts 0, 0.5, ..., 2.0 within 4 s (the last ends on the last frame)
    rec = out[0].to_json()
    assert rec["type"] == "window" and rec["dancer"] == 7 and len(rec["embedding"]) == stage.encoder.dim
    assert set(rec["rhythm"]) >= {"beat_alignment", "beat_coverage", "beat_hit_rate", "align_recall", "align_precision", "align_f1"}
    summary = stage.session_summary()
    assert 7 in summary and summary[7]["align_f1"] is not None


def test_graph_emits_eight_beat_primitives_between_downbeats():
    """With a beat grid, the graph cuts one DanceMVP eight-beat primitive per dancer and phrase,
    encoded and scored like a window, written as `primitive` records."""
    from edge.pipeline import EdgeGraph
    from edge.records import Beat, Pose, PoseFrame
    from edge.settings import EdgeSettings

    from edge.motion.stage import MotionStage

    graph = EdgeGraph(EdgeSettings(), motion=MotionStage())
    graph.deliver_audio([Beat(0.5 * k, 0.5 * k, k % 8 + 1, 120.0) for k in range(24)])   # downbeats 0, 4, 8 s
    prims = []
    for i in range(300):                                   # 10 s at 30 fps
        t = i / 30.0
        kp = np.zeros((17, 3))
        kp[:, 0] = 300 + np.arange(17) * 3 + 30 * np.cos(np.pi * t / 0.5)
        kp[:, 1] = 100 + np.arange(17) * 20
        kp[:, 2] = 0.9
        prims += graph.on_poses(PoseFrame(i, t, 640, 480, [Pose(3, t, kp, np.zeros(4), 0.9)])).primitives
    assert [(p.window.t0, p.window.t1) for p in prims] == [(0.0, 4.0), (4.0, 8.0)]
    rec = prims[0].to_json("primitive")
    assert rec["type"] == "primitive" and rec["dancer"] == 3 and len(rec["embedding"]) == graph.motion.encoder.dim
    assert np.isclose(np.linalg.norm(rec["embedding"]), 1.0, atol=1e-3) and rec["rhythm"]["align_f1"] > 0.5


def test_own_pipeline_keypoints_for_pretraining(tmp_path, shared_data):
    """`encoder train --own-keypoints`: our pose pipeline turns a real video into an unlabelled
    training sequence (COCO-17 pixels, the video's frame rate, one per dancer track)."""
    from edge.models.registry import model_path
    from edge.motion.train import OWN_GENRE, SeqBank, own_pipeline_sequences

    try:
        model_path("pose_landmarks")
    except ModelCacheError as exc:
        pytest.skip(f"pose models not built: {exc}")
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "moonwalk.mp4").symlink_to(shared_data / "video" / "controlvideo_moonwalk.mp4")
    (seq,) = own_pipeline_sequences(tmp_path, progress=lambda *_: None)
    assert seq.genre == OWN_GENRE and seq.source == "own-pipeline" and abs(seq.fps - 23.976) < 0.01
    assert seq.kp.shape[1:] == (17, 3) and np.isfinite(seq.kp[:, :, :2]).all(axis=(1, 2)).mean() > 0.9
    found = seq.kp[np.isfinite(seq.kp[:, 0, 0])]
    assert (found[:, :, 0] > 0).mean() > 0.9 and (found[:, :, 0] < 1084).mean() > 0.9       # frame pixels
    assert SeqBank([seq]).valid.sum() == np.isfinite(seq.kp[:, :, :2]).all(axis=(1, 2)).sum()


def test_own_keypoints_without_videos_says_so(tmp_path):
    """The shipped recipe pretrains on our own keypoints too; with no videos it says it trains on AIST++
    alone instead of silently dropping them."""
    from edge.motion.train import own_pipeline_sequences

    lines = []
    assert own_pipeline_sequences(tmp_path, progress=lines.append) == []
    assert lines == [f"own pose pipeline: no videos under {tmp_path / 'video'}; pretraining on AIST++ only"]


def test_only_analysis_graphs_cut_primitives():
    """The live graph sends windows only, so it neither cuts nor encodes primitives (nor keeps poses for them)."""
    from edge.pipeline import EdgeGraph
    from edge.settings import EdgeSettings

    live = EdgeGraph.build(EdgeSettings(), video=False, audio=False, encoder=False)
    offline = EdgeGraph.build(EdgeSettings(), video=False, audio=False, encoder=False, primitives=True)
    assert not live.motion.cutter.s.eight_beats and offline.motion.cutter.s.eight_beats
