"""Training: self-supervised InfoNCE pretraining on AIST++ (optionally also on keypoints our own pose
pipeline extracts from the shared videos), then supervised fine-tuning on AIST++'s genres.

`dancewire encoder train` runs it all on CPU (within 15 min on 2 cores): pretrain, fine-tune with
the configured loss (supervised contrastive by default, or Tong's pairwise loss; both keep the
InfoNCE term so the embedding still separates performances, not just four genres), evaluate, write
weights, ONNX and metrics. `compare=True` also fine-tunes with the other loss from the same
checkpoint and evaluates the pretrained encoder, for the report. What ships is never chosen by the
evaluation: (a), (b) and (c) are test sets, and (c) is the ballroom set, which no shipped weight may
learn from, not even by selection.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.motion import augment as aug
from edge.motion import datasets as ds
from edge.motion.normalize import fill_gaps, normalize
from edge.motion.settings import LOSSES, MotionSettings
from edge.motion.windows import sample_step, samples_per_window

log = logging.getLogger("dancewire.motion.train")
SIM_FPS = np.array([24.0, 25.0, 30.0, 30.0, 50.0, 60.0])


@dataclass
class TrainConfig:
    pretrain_steps: int = 900
    finetune_steps: int = 400
    batch: int = 96
    lr: float = 1e-3
    tau: float = 0.1
    tong_w: float = 0.33
    tong_eps: float = 1.0
    ssl_weight: float = 1.0
    seed: int = 0
    threads: int = 2
    d_model: int = 64
    layers: int = 2
    emb_dim: int = 64
    own_keypoints: bool = True   # also pretrain on what our pose pipeline extracts from the shared videos
    back_view: float = 0.5       # share of second views seen from behind (x mirrored, joint names kept)
    speed: float = 0.22          # playback speed drawn from exp(U(-speed, speed)): 0.22 is 0.8-1.25x
    pool: str = "meanstd"        # ST-GCN pooling: "meanstd" (shipped) or "mean" (v2)
    arch: str = "stgcn"          # or "transformer" (Tong's, model.MotionEncoder)
    loss: str = "supcon"         # the fine-tune that ships: "supcon" or "tong"
    compare: bool = False        # also fine-tune with the other loss and evaluate the pretrained encoder
    profile_weight: float = 0.6  # model.MotionProfile appended to the learned embedding at this weight (0: none)

    def new_model(self):
        from edge.motion.model import MotionEncoder, STGCNEncoder

        if self.arch == "stgcn":
            return STGCNEncoder(emb_dim=self.emb_dim, pool=self.pool)
        return MotionEncoder(d_model=self.d_model, layers=self.layers, emb_dim=self.emb_dim)


class SeqBank:
    """Training sequences concatenated for vectorised window sampling (with speed change by interpolation)."""

    def __init__(self, seqs: list[ds.Sequence]):
        self.seqs = seqs
        kps = [np.nan_to_num(s.kp[..., :2]).astype(np.float32) for s in seqs]
        self.valid = np.concatenate([np.isfinite(s.kp[..., :2]).all((1, 2)) for s in seqs])
        self.xy = np.concatenate(kps)
        self.len = np.array([len(s.kp) for s in seqs])
        self.off = np.concatenate([[0], np.cumsum(self.len)[:-1]])
        self.fps = np.array([s.fps for s in seqs])
        names = sorted({s.name for s in seqs})
        genres = sorted({s.genre for s in seqs})
        self.genres = genres
        self.perf = np.array([names.index(s.name) for s in seqs])
        self.genre = np.array([genres.index(s.genre) for s in seqs])
        self.views_of = {p: np.nonzero(self.perf == p)[0] for p in range(len(names))}

    def pick(self, B: int, rng) -> np.ndarray:
        """Genre-balanced choice of sequences."""
        g = rng.integers(0, len(self.genres), B)
        out = np.empty(B, int)
        for k in range(len(self.genres)):
            idx = np.nonzero(self.genre == k)[0]
            sel = g == k
            out[sel] = rng.choice(idx, sel.sum())
        return out

    def gather(self, si: np.ndarray, t0: np.ndarray, fsim: np.ndarray, speed: np.ndarray, N: int = 60):
        step = np.array([sample_step(f) for f in fsim])
        n = np.array([samples_per_window(f) for f in fsim])
        dt = step / fsim * speed
        times = t0[:, None] + np.arange(N)[None, :] * dt[:, None]
        fidx = times * self.fps[si][:, None]
        i0 = np.floor(fidx).astype(int)
        a = (fidx - i0)[..., None, None].astype(np.float32)
        T = self.len[si][:, None]
        inside = (i0 >= 0) & (i0 + 1 < T) & (np.arange(N)[None, :] < n[:, None])
        i0c = np.clip(i0, 0, T - 2) + self.off[si][:, None]
        kp = (1 - a) * self.xy[i0c] + a * self.xy[i0c + 1]
        mask = inside & self.valid[i0c] & self.valid[i0c + 1]
        return np.where(mask[..., None, None], kp, 0.0).astype(np.float32), mask

    def batch(self, B: int, rng, settings: MotionSettings, *, back_view: float, speed_range: float,
              cross_view: float = 0.8, strength: float = 1.0):
        """Two augmented views of B windows: the same moment of one performance, maybe another camera."""
        si = self.pick(B, rng)
        speed = np.exp(rng.uniform(-speed_range, speed_range, B))
        dur = self.len[si] / self.fps[si]
        t0 = rng.uniform(0, np.maximum(dur - 2.0 * speed - 0.2, 0.01))
        si2 = si.copy()
        for b in range(B):
            v = self.views_of[self.perf[si[b]]]
            if len(v) > 1 and rng.random() < cross_view:
                si2[b] = rng.choice(v)
        out = []
        second = (si2, np.maximum(t0 + rng.uniform(-0.1, 0.1, B), 0), speed * np.exp(rng.uniform(-0.08, 0.08, B)))
        for side, (idx, tt, sp) in enumerate(((si, t0, speed), second)):
            fsim = rng.choice(SIM_FPS, B)
            kp, mask = self.gather(idx, tt, fsim, sp)
            if side == 1:
                kp = aug.seen_from_behind(kp, rng, back_view)
            mask = aug.temporal_crop(mask, rng)
            kp = aug.estimator_noise(kp, mask, rng, strength)
            kp = aug.geometry(kp, mask, rng, strength)
            feats = normalize(kp, mask, settings.normalization)
            feats, mask = aug.dropout(feats, mask, rng, strength)
            out.append(fill_gaps(feats, mask, settings.fill_gap))   # as the runtime encoder conditions its input
        return out, self.genre[si], self.perf[si]


OWN_GENRE = "unlabelled (own pose pipeline)"


def own_pipeline_sequences(data_root: Path, progress=print, min_seconds: float = 2.5) -> list[ds.Sequence]:
    """Keypoints our own pose pipeline (BlazePose ONNX, tracker, cleaning) extracts from the shared
    videos: one unlabelled Sequence per dancer track, for self-supervised pretraining only. Live
    BlazePose keypoints are noisier than AIST++'s; this puts real estimator errors into the pairs."""
    from edge.sources.video import VideoFileSource
    from edge.vision.stage import PoseStage

    videos = sorted((data_root / "video").glob("*.mp4"))
    if not videos:
        progress(f"own pose pipeline: no videos under {data_root / 'video'}; pretraining on AIST++ only")
        return []
    stage = PoseStage.from_settings()
    out = []
    try:
        for v in videos:
            src = VideoFileSource(v)
            stage.reset()
            frames = []
            for f in src.frames():
                stage(f)
                frames += stage.cleaned()
            frames += stage.flush()
            fps = src.info.fps or 25.0
            for tid in sorted({p.track_id for f in frames for p in f.poses}):
                kp = np.full((len(frames), 17, 3), np.nan, np.float32)
                for i, f in enumerate(frames):
                    for p in f.poses:
                        if p.track_id == tid:
                            kp[i] = p.kp17
                if np.isfinite(kp[:, 0, 0]).sum() / fps >= min_seconds:
                    out.append(ds.Sequence(f"{v.stem}#{tid}", OWN_GENRE, kp, fps, source="own-pipeline"))
            progress(f"own pose pipeline: {v.name}: {len(frames)} frames")
    finally:
        stage.close()
    return out


def _torch_embed(model, settings: MotionSettings | None = None):
    """The PyTorch model as an evaluation `embed`, with the runtime encoder's input conditioning."""
    import torch

    fill = (settings or MotionSettings()).fill_gap

    def embed(feats, mask):
        feats, mask = fill_gaps(feats, mask, fill)
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(feats, np.float32)),
                         torch.from_numpy(mask.astype(np.float32))).numpy()
    return embed


def with_profile(model, windows, weight: float, settings: MotionSettings | None = None):
    """`model` with a `MotionProfile` appended, its statistics fitted on `windows` (the training
    performances' windows, gap-filled as at runtime); `weight` 0: the model as it is."""
    import torch

    from edge.motion.model import MotionProfile, ProfiledEncoder

    if weight <= 0:
        return model
    feats, mask = fill_gaps(windows.feats, windows.mask, (settings or MotionSettings()).fill_gap)
    prof = MotionProfile(model.config["max_len"], weight).fit(
        torch.from_numpy(np.ascontiguousarray(feats, np.float32)), torch.from_numpy(mask.astype(np.float32)))
    return ProfiledEncoder(model, prof).eval()


def _brief(m: dict) -> str:
    return (f"AIST++ genre top-1 {m['aist_genre']['top1']:.3f}, cross-view top-1 {m['cross_view']['top1']:.3f}, "
            f"ballroom top-1 {m['ballroom_enrol']['top1']:.3f}")


def untrained_reference(data_root: Path, seeds=(0, 1), cfg: TrainConfig | None = None,
                        settings: MotionSettings | None = None, model_config: dict | None = None) -> dict:
    """(a), (b) and (c) top-1 of the same architecture at its random initialisation, per seed:
    what the evaluation gives before any training (the floor that training must beat).
    `model_config`: the architecture as a trained model records it (else `cfg`'s)."""
    import torch

    from edge.motion.evaluate import evaluate_all
    from edge.motion.model import build, encoder_config

    cfg = cfg or TrainConfig()
    torch.set_num_threads(cfg.threads)
    out = {}
    for seed in seeds:
        torch.manual_seed(seed)
        model = (build(encoder_config(model_config)) if model_config else cfg.new_model()).eval()
        res = evaluate_all(_torch_embed(model, settings), data_root, settings)
        out[f"seed{seed}"] = {k: res[k]["top1"] for k in ("aist_genre", "cross_view", "ballroom_enrol")}
    return out


def train(data_root: Path, out_dir: Path, cfg: TrainConfig | None = None, settings: MotionSettings | None = None,
          progress=print) -> dict:
    import torch

    from edge.motion.evaluate import evaluate_all, window_set
    from edge.motion.model import info_nce, supcon, tong_pairwise

    cfg = cfg or TrainConfig()
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown fine-tuning loss {cfg.loss!r} (one of {', '.join(LOSSES)})")
    s = settings or MotionSettings()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.monotonic()
    seqs = [q for f in ds.aist_files(data_root) for q in ds.load_path(f)]
    train_seqs, test_seqs = ds.aist_split(seqs)
    bank = SeqBank(train_seqs)
    progress(f"train: {len(train_seqs)} sequences ({len({q.name for q in train_seqs})} performances), "
             f"held out: {sorted({q.name for q in test_seqs})}")
    own = own_pipeline_sequences(data_root, progress) if cfg.own_keypoints else []
    ssl_bank = SeqBank(train_seqs + own) if own else bank      # pretraining only: no labels needed

    def run(model, steps, loss_kind, lr, desc, bank=bank):
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        model.train()
        t0, ema = time.monotonic(), None
        for step in range(steps):
            (v1, v2), genre, perf = bank.batch(cfg.batch, rng, s, back_view=cfg.back_view, speed_range=cfg.speed)
            x1, m1 = torch.from_numpy(v1[0]), torch.from_numpy(v1[1].astype(np.float32))
            x2, m2 = torch.from_numpy(v2[0]), torch.from_numpy(v2[1].astype(np.float32))
            z1, z2 = model(x1, m1), model(x2, m2)
            loss = info_nce(z1, z2, cfg.tau)
            if loss_kind != "ssl":
                z = torch.cat([z1, z2])
                g = torch.from_numpy(np.concatenate([genre, genre]))
                p = torch.from_numpy(np.concatenate([perf, perf]))
                sup = supcon(z, g, cfg.tau) if loss_kind == "supcon" else tong_pairwise(z, g, p, cfg.tong_w, cfg.tong_eps)
                loss = sup + cfg.ssl_weight * loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            lv = float(loss.detach())
            ema = lv if ema is None else 0.95 * ema + 0.05 * lv
            if step % 50 == 0 or step == steps - 1:
                el = time.monotonic() - t0
                progress(f"{desc}: step {step + 1}/{steps} loss {ema:.3f} {el:.0f}s (eta {el / (step + 1) * (steps - step - 1):.0f}s)")
        model.eval()
        return model

    model = cfg.new_model()
    run(model, cfg.pretrain_steps, "ssl", cfg.lr, "pretrain (InfoNCE)", bank=ssl_bank)
    pre_state = {k: v.clone() for k, v in model.state_dict().items()}
    results, shipped = {}, None
    if cfg.compare:
        progress("evaluating the pretrained encoder")
        results["ssl_only"] = evaluate_all(_torch_embed(model, s), data_root, s)
        progress("ssl_only: " + _brief(results["ssl_only"]))
    train_windows = window_set(train_seqs, s, 0.5)     # the profile's statistics (no labels)
    for kind in [cfg.loss] + ([k for k in LOSSES if k != cfg.loss] if cfg.compare else []):
        m = cfg.new_model()
        m.load_state_dict(pre_state)
        run(m, cfg.finetune_steps, kind, cfg.lr * 0.5, f"fine-tune ({kind} + InfoNCE)")
        if kind == cfg.loss and cfg.profile_weight > 0:
            progress(f"evaluating {kind} without the motion profile")
            results[f"{kind}_learned_only"] = evaluate_all(_torch_embed(m, s), data_root, s)
            progress(f"{kind}, learned only: " + _brief(results[f"{kind}_learned_only"]))
        m = with_profile(m, train_windows, cfg.profile_weight, s)
        progress(f"evaluating {kind}")
        results[kind] = evaluate_all(_torch_embed(m, s), data_root, s)
        progress(f"{kind}: " + _brief(results[kind]))
        if kind == cfg.loss:
            shipped = m
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = {"state_dict": shipped.state_dict(), "config": shipped.config, "normalization": s.normalization,
            "loss": cfg.loss, "train_config": cfg.__dict__, "genres": bank.genres}
    torch.save(ckpt, out_dir / "encoder.pt")
    summary = {"shipped": cfg.loss, "results": results, "train_config": cfg.__dict__, "normalization": s.normalization,
               "train_sequences": sorted({q.name for q in train_seqs}), "test_sequences": sorted({q.name for q in test_seqs}),
               "own_pipeline_sequences": [{"name": q.name, "frames": len(q.kp), "fps": q.fps} for q in own],
               "train_seconds": round(time.monotonic() - t_start, 1)}
    (out_dir / "train_metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
