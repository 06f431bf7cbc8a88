"""The training recipe end to end on a few real sequences: it ships the loss it is told to,
never the one the evaluation (test sets, ballroom included) would pick."""
from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch", reason="torch is the `train` extra")

from edge.motion import datasets as ds  # noqa: E402
from edge.motion.normalize import fill_gaps  # noqa: E402
from edge.motion.settings import MotionSettings  # noqa: E402
from edge.motion.train import SeqBank, TrainConfig, train  # noqa: E402


def _subset(shared_data, root):
    """A data folder of symlinks: two Break and two Krump performances, two ballroom dances per genre."""
    kp = shared_data / "keypoints"
    links = [kp / "aistpp" / f"gBR_sBM_cAll_d04_mBR0_ch0{k}.pkl" for k in (1, 4)]
    links += sorted((kp / "gendance_aist_small" / "krump_dance").rglob("*.npy"))
    links += [kp / "gendance_aist_small" / "kps_scaler_extracted.npz"]
    links += [kp / "ballroom_tang2018" / d for d in ("DANCE_C_2", "DANCE_C_4", "DANCE_R_2", "DANCE_R_3")]
    for src in links:
        dst = root / "keypoints" / src.relative_to(kp)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, dst)
    return root


TINY = dict(pretrain_steps=3, finetune_steps=2, batch=8, threads=1)


def test_the_configured_loss_ships_and_compare_only_adds_to_the_report(shared_data, tmp_path):
    root = _subset(shared_data, tmp_path / "data")
    lines: list[str] = []
    summary = train(root, tmp_path / "out", TrainConfig(loss="tong", compare=True, **TINY), progress=lines.append)
    assert summary["shipped"] == "tong"
    assert set(summary["results"]) == {"ssl_only", "supcon", "tong", "tong_learned_only"}
    ckpt = torch.load(tmp_path / "out" / "encoder.pt", weights_only=False)
    assert ckpt["loss"] == "tong" and ckpt["config"]["arch"] == "stgcn"
    # the motion profile ships with statistics fitted on the training windows
    assert ckpt["config"]["profile"] == {"weight": 0.6, "encoder_emb_dim": 64}
    assert ckpt["config"]["emb_dim"] == 64 + 37 and float(ckpt["state_dict"]["profile.sd"].min()) > 0
    assert float(ckpt["state_dict"]["profile.mu"].abs().sum()) > 0
    assert json.loads((tmp_path / "out" / "train_metrics.json").read_text())["shipped"] == "tong"
    assert any("pretrain (InfoNCE): step 3/3" in ln for ln in lines)     # progress is shown
    assert summary["test_sequences"] == ["gBR_sBM_cAll_d04_mBR0_ch04", "gKR_sFM_cAll_d28_mKR1_ch02"]

    plain = train(root, tmp_path / "plain", TrainConfig(profile_weight=0, **TINY), progress=lines.append)
    assert plain["shipped"] == "supcon" and set(plain["results"]) == {"supcon"}
    assert "profile" not in torch.load(tmp_path / "plain" / "encoder.pt", weights_only=False)["config"]


def test_an_unknown_loss_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown fine-tuning loss 'triplet'"):
        train(tmp_path, tmp_path / "out", TrainConfig(loss="triplet"))


def test_training_windows_are_gap_filled_like_the_runtime_encoders_input(shared_data):
    """Frame dropout leaves short interior gaps; the runtime encoder interpolates them, so the
    training batches must reach the model already filled (none left that fill_gaps would fill;
    without the filling most windows of a batch have some, frame dropout drops up to 15 %)."""
    import numpy as np

    seqs = ds.load_path(shared_data / "keypoints" / "aistpp" / "gBR_sBM_cAll_d04_mBR0_ch01.pkl")[:3]
    s = MotionSettings()
    rng = np.random.default_rng(0)
    cfg = TrainConfig()
    (v1, v2), _, _ = SeqBank(seqs).batch(64, rng, s, back_view=cfg.back_view, speed_range=cfg.speed)
    for feats, mask in (v1, v2):
        assert mask.sum(1).min() >= s.min_valid
        _, refilled = fill_gaps(feats, mask, s.fill_gap)
        assert np.array_equal(refilled, mask)
