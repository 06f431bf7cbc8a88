"""The motion encoders (PyTorch; imported only by training, evaluation and export, never at edge runtime).

`MotionEncoder` is Tong's architecture, kept small for live use: per-frame linear embedding of the
normalised keypoints (plus their frame-to-frame differences), learned positions, a pre-norm
transformer encoder with the padding mask, masked mean pooling over frames, then a projection to
an L2-normalised embedding. Attention is written out with matmuls so the ONNX graph stays plain.
`STGCNEncoder` (shipped) is the ST-GCN variant (Yan et al. 2018, as DanceMVP uses it): graph
convolutions over the COCO-17 skeleton and temporal convolutions, then the masked mean and standard
deviation of each channel over frames and joints (the spread says how much and how unevenly a move
varies within the window, which a mean alone averages away). Both take (keypoints (B, N, 34),
mask (B, N)).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edge.motion.settings import POOLS


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).reshape(B, N, 3, h, D // h).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D // h)) + bias      # (B, h, N, N)
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, N, D)
        x = x + self.drop(self.out(y))
        return x + self.drop(self.ff(self.ln2(x)))


def _velocity(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Frame-to-frame differences of x (B, N, 34) where both samples are real, x10, first row 0."""
    vel = (x[:, 1:] - x[:, :-1]) * (m[:, 1:] * m[:, :-1])
    return torch.cat([torch.zeros_like(x[:, :1]), vel], dim=1) * 10.0


class MotionEncoder(nn.Module):
    def __init__(self, in_dim: int = 34, d_model: int = 64, heads: int = 4, layers: int = 2, ff: int = 128,
                 emb_dim: int = 64, max_len: int = 60, dropout: float = 0.1):
        super().__init__()
        self.config = dict(in_dim=in_dim, d_model=d_model, heads=heads, layers=layers, ff=ff,
                           emb_dim=emb_dim, max_len=max_len, dropout=dropout)
        self.inp = nn.Linear(2 * in_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(Block(d_model, heads, ff, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d_model)
        self.proj = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, emb_dim))

    def pooled(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, N, 34) normalised keypoints, zero where masked; mask (B, N) 1.0 for real samples."""
        m = mask.unsqueeze(-1)
        h = self.inp(torch.cat([x, _velocity(x, m)], dim=-1)) + self.pos[:, : x.shape[1]]
        bias = ((1.0 - mask) * -1e4).unsqueeze(1).unsqueeze(1)                    # (B, 1, 1, N)
        for blk in self.blocks:
            h = blk(h, bias)
        h = self.ln(h)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.pooled(x, mask)), dim=-1, eps=1e-6)


# COCO-17 bones: face, arms, torso, legs
COCO_EDGES = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12),
              (11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (0, 5), (0, 6))


def coco_adjacency() -> torch.Tensor:
    """(2, 17, 17): the identity and the symmetrically normalised bone adjacency (ST-GCN's
    "distance" partition: the joint itself, its neighbours)."""
    a = torch.zeros(17, 17)
    for i, j in COCO_EDGES:
        a[i, j] = a[j, i] = 1.0
    d = a.sum(1).clamp(min=1.0).rsqrt()
    return torch.stack([torch.eye(17), d[:, None] * a * d[None, :]])


class GraphBlock(nn.Module):
    """Spatial graph convolution (each partition's neighbours summed first, then one 1x1 conv over
    the partitions' channels; learnable edge importance), then a 9-frame temporal convolution,
    batch norm, ReLU and a residual. Summing before the conv does the (17 x 17) products on the
    block's input channels, fewer than its output channels: the same family of maps as ST-GCN's
    conv-then-sum, about a third cheaper to train here."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.register_buffer("A", coco_adjacency())
        self.importance = nn.Parameter(torch.ones(2, 17, 17))
        self.gcn = nn.Conv2d(2 * c_in, c_out, 1)
        tcn = [nn.BatchNorm2d(c_out), nn.ReLU(), nn.Conv2d(c_out, c_out, (9, 1), (stride, 1), (4, 0)), nn.BatchNorm2d(c_out)]
        self.tcn = nn.Sequential(*tcn, *([nn.Dropout(dropout)] if dropout > 0 else []))
        self.res = (nn.Identity() if c_in == c_out and stride == 1 else
                    nn.Sequential(nn.Conv2d(c_in, c_out, 1, (stride, 1)), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # x (B, C, N, 17)
        B, C, N, V = x.shape
        y = x.unsqueeze(1) @ (self.A * self.importance).unsqueeze(1)     # (B, 1, C, N, V) x (2, 1, V, V)
        y = self.gcn(y.reshape(B, 2 * C, N, V))
        return F.relu(self.tcn(y) + self.res(x))


class STGCNEncoder(nn.Module):
    def __init__(self, in_dim: int = 34, channels: tuple = (16, 32, 64), strides: tuple = (2, 2, 1),
                 emb_dim: int = 64, max_len: int = 60, dropout: float = 0.0, pool: str = "meanstd"):
        super().__init__()
        if in_dim != 2 * 17:
            raise ValueError(f"ST-GCN works on COCO-17 (x, y) keypoints: in_dim must be 34, not {in_dim}")
        if pool not in POOLS:
            raise ValueError(f"unknown pooling {pool!r} (one of {', '.join(POOLS)})")
        self.config = dict(arch="stgcn", in_dim=in_dim, channels=tuple(channels), strides=tuple(strides),
                           emb_dim=emb_dim, max_len=max_len, dropout=dropout, pool=pool)
        self.pool = pool
        self.strides = tuple(strides)
        self.bn_in = nn.BatchNorm1d(4 * 17)
        c, blocks = 4, []
        for c_out, st in zip(channels, strides):
            blocks.append(GraphBlock(c, c_out, st, dropout))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        pc = 2 * c if pool == "meanstd" else c
        self.proj = nn.Sequential(nn.Linear(pc, c), nn.GELU(), nn.Linear(c, emb_dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        m = mask.unsqueeze(-1)
        feats = torch.cat([x.reshape(B, N, 17, 2), _velocity(x, m).reshape(B, N, 17, 2)], -1)   # (B, N, 17, 4)
        h = self.bn_in(feats.reshape(B, N, 68).transpose(1, 2)).reshape(B, 17, 4, N).permute(0, 2, 3, 1)
        h = h * mask[:, None, :, None]
        tm = mask
        for blk, st in zip(self.blocks, self.strides):
            h = blk(h)
            tm = tm[:, ::st]
            h = h * tm[:, None, :, None]
        w = tm[:, None, :, None]
        den = (w.sum((2, 3)) * 17).clamp(min=1.0)
        pooled = (h * w).sum((2, 3)) / den
        if self.pool == "meanstd":
            var = ((h - pooled[:, :, None, None]) ** 2 * w).sum((2, 3)) / den
            pooled = torch.cat([pooled, (var + 1e-6).sqrt()], 1)
        return F.normalize(self.proj(pooled), dim=-1, eps=1e-6)


class MotionProfile(nn.Module):
    """How the window's motion is spread over the body and over time, computed, not learned
    (`ProfiledEncoder` appends it to a learned embedding). From the frame-to-frame speed of each
    joint (real sample pairs only; gaps are filled before the model, as at runtime):
    - each joint's mean speed over the mean of all joints (17 values: which body parts move);
    - the spectrum of the summed speed, |DFT| at 1..16 cycles per 64 samples, as shares (16);
    - hip sway against the shoulders relative to torso length, foot over wrist speed, the summed
      speed's coefficient of variation, and its mean (4).
    Standardised by `mu` / `sd` (fitted on the training windows: `fit`), L2-normalised, times `weight`."""

    DIM = 17 + 16 + 4

    def __init__(self, max_len: int = 60, weight: float = 0.6):
        super().__init__()
        self.weight = float(weight)
        self.register_buffer("mu", torch.zeros(self.DIM))
        self.register_buffer("sd", torch.ones(self.DIM))
        t = torch.arange(max_len - 1, dtype=torch.float32)[:, None]
        k = torch.arange(1, 17, dtype=torch.float32)[None, :]
        self.register_buffer("cos", torch.cos(2 * math.pi * k * t / 64.0))
        self.register_buffer("sin", torch.sin(2 * math.pi * k * t / 64.0))

    def raw(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        p = x.reshape(B, N, 17, 2)
        pm = (mask[:, 1:] * mask[:, :-1]).unsqueeze(-1)                           # (B, N-1, 1)
        n = pm.sum(1).clamp(min=1.0)                                              # (B, 1)
        v = ((p[:, 1:] - p[:, :-1]).pow(2).sum(-1) + 1e-12).sqrt() * pm           # (B, N-1, 17)
        joint = v.sum(1) / n                                                      # (B, 17)
        rel = joint / (joint.mean(1, keepdim=True) + 1e-6)
        sp = v.sum(-1, keepdim=True)                                              # (B, N-1, 1)
        sp_mean = sp.sum(1) / n
        c = (sp - sp_mean[:, None]) * pm
        re, im = c[..., 0] @ self.cos[: N - 1], c[..., 0] @ self.sin[: N - 1]
        mag = (re.pow(2) + im.pow(2) + 1e-12).sqrt()
        spec = mag / (mag.sum(1, keepdim=True) + 1e-6)
        m = mask.unsqueeze(-1)
        nm = m.sum(1).clamp(min=1.0)
        rel_hs = (p[:, :, [11, 12]].mean(2) - p[:, :, [5, 6]].mean(2)) * m        # (B, N, 2) hips - shoulders
        sway_x = rel_hs[..., 0] - (rel_hs[..., 0].sum(1, keepdim=True) / nm)
        sway = ((sway_x.pow(2) * mask).sum(1, keepdim=True) / nm + 1e-12).sqrt()
        torso = ((rel_hs.pow(2).sum(-1) + 1e-12).sqrt() * mask).sum(1, keepdim=True) / nm
        feet, hands = joint[:, [15, 16]].mean(1, keepdim=True), joint[:, [9, 10]].mean(1, keepdim=True)
        sp_sd = (c.pow(2).sum(1) / n + 1e-12).sqrt()
        misc = torch.cat([sway / (torso + 1e-6), feet / (hands + 1e-6), sp_sd / (sp_mean + 1e-6), sp_mean], 1)
        return torch.cat([rel, spec, misc], 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = (self.raw(x, mask) - self.mu) / self.sd
        return F.normalize(z, dim=-1, eps=1e-6) * self.weight

    @torch.no_grad()
    def fit(self, feats: torch.Tensor, mask: torch.Tensor) -> "MotionProfile":
        r = self.raw(feats, mask)
        self.mu.copy_(r.mean(0))
        self.sd.copy_(r.std(0) + 1e-6)
        return self


class ProfiledEncoder(nn.Module):
    """A learned encoder's embedding with the window's `MotionProfile` appended, re-normalised:
    cosine similarity becomes (cos_learned + weight^2 cos_profile) / (1 + weight^2)."""

    def __init__(self, encoder: nn.Module, profile: MotionProfile):
        super().__init__()
        self.encoder, self.profile = encoder, profile
        self.config = dict(encoder.config, emb_dim=encoder.config["emb_dim"] + MotionProfile.DIM,
                           profile={"weight": profile.weight, "encoder_emb_dim": encoder.config["emb_dim"]})

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.cat([self.encoder(x, mask), self.profile(x, mask)], 1), dim=-1, eps=1e-6)


def encoder_config(config: dict) -> dict:
    """The learned encoder's part of a config (a `ProfiledEncoder`'s without its profile)."""
    cfg = dict(config)
    prof = cfg.pop("profile", None)
    if prof:
        cfg["emb_dim"] = prof["encoder_emb_dim"]
    return cfg


def build(config: dict) -> nn.Module:
    """The encoder a checkpoint's config describes (no "arch" key: the transformer; a "profile"
    key: wrapped in a `ProfiledEncoder`, whose fitted statistics come with the state dict)."""
    cfg = encoder_config(config)
    arch = cfg.pop("arch", "transformer")
    enc = STGCNEncoder(**cfg) if arch == "stgcn" else MotionEncoder(**cfg)
    prof = config.get("profile")
    return ProfiledEncoder(enc, MotionProfile(cfg["max_len"], prof["weight"])) if prof else enc


def info_nce(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """DanceMVP's InfoNCE (NT-Xent) over 2N augmented views; the other 2(N-1) are negatives."""
    z = torch.cat([z1, z2], 0)
    n = z1.shape[0]
    sim = z @ z.t() / tau
    sim.fill_diagonal_(-1e9)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def supcon(z: torch.Tensor, labels: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020): all same-label items are positives."""
    sim = z @ z.t() / tau
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    cnt = pos.sum(1)
    loss = -(logp * pos).sum(1) / cnt.clamp(min=1)
    return loss[cnt > 0].mean()


def tong_pairwise(z: torch.Tensor, y_group: torch.Tensor, y_video: torch.Tensor, w: float = 0.33,
                  eps: float = 1.0) -> torch.Tensor:
    """Tong's loss: over all pairs, w * L(group) + (1 - w) * L(video), L = contrastive (Hadsell) loss.

    Tong used eps = 20 on unnormalised 1024-d outputs; on the unit sphere distances lie in [0, 2],
    so the margin is scaled to eps = 1. Averaged over pairs instead of summed (same optimum).
    """
    d2 = (z[:, None, :] - z[None, :, :]).pow(2).sum(-1)
    d = (d2 + 1e-9).sqrt()
    iu = torch.triu_indices(z.shape[0], z.shape[0], 1, device=z.device)

    def pair_loss(y):
        same = (y[:, None] == y[None, :]).float()
        return same * d2 + (1 - same) * F.relu(eps - d).pow(2)

    L = w * pair_loss(y_group) + (1 - w) * pair_loss(y_video)
    return L[iu[0], iu[1]].mean()
