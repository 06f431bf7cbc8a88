"""Both encoder architectures (PyTorch): unit embeddings, padding ignored, ONNX export with parity."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the `train` extra")

from edge.motion.export import export_onnx, parity  # noqa: E402
from edge.motion.model import (COCO_EDGES, MotionEncoder, MotionProfile, ProfiledEncoder, STGCNEncoder,  # noqa: E402
                                build, coco_adjacency, encoder_config)


def _windows(seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(0, 0.3, (6, 60, 34)).astype(np.float32)
    mask = np.ones((6, 60), np.float32)
    mask[1, 30:] = 0          # a short window (padding at the end)
    mask[2, :12] = 0          # one that starts late
    feats[mask == 0] = 0
    return feats, mask


def _trained_bn(model):
    """Batch-norm statistics away from their defaults, so eval mode is exercised for real."""
    model.train()
    with torch.no_grad():
        for s in range(3):
            f, m = _windows(s + 10)
            model(torch.from_numpy(f), torch.from_numpy(m))
    return model.eval()


@pytest.mark.parametrize("make", [MotionEncoder, STGCNEncoder, lambda: STGCNEncoder(pool="mean")],
                         ids=["transformer", "stgcn", "stgcn-mean-pool"])
def test_embeddings_are_unit_and_ignore_padded_samples(make):
    torch.manual_seed(0)
    model = _trained_bn(make())
    f, m = _windows()
    with torch.no_grad():
        z = model(torch.from_numpy(f), torch.from_numpy(m)).numpy()
        junk = f.copy()
        junk[m == 0] = 5.0                      # whatever sits under the mask
        z2 = model(torch.from_numpy(junk), torch.from_numpy(m)).numpy()
    assert z.shape == (6, 64) and np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert np.allclose(z, z2, atol=1e-5)
    assert not np.allclose(z[0], z[3], atol=1e-3)            # different windows, different embeddings
    rebuilt = build(model.config)
    assert type(rebuilt) is type(model) and rebuilt.config == model.config


def test_skeleton_graph_is_coco17_and_normalised():
    ident, adj = coco_adjacency()
    assert torch.equal(ident, torch.eye(17))
    assert torch.equal(adj > 0, adj.T > 0) and int((adj > 0).sum()) == 2 * len(COCO_EDGES)
    assert all(adj[i, j] > 0 for i, j in [(5, 7), (7, 9), (11, 13), (13, 15), (5, 11)])   # arm and leg chains


def test_stgcn_exports_to_onnx_with_parity(tmp_path):
    torch.manual_seed(1)
    model = _trained_bn(STGCNEncoder())
    ckpt = tmp_path / "stgcn.pt"
    torch.save({"state_dict": model.state_dict(), "config": model.config, "normalization": "ban"}, ckpt)
    onnx_path = export_onnx(ckpt, tmp_path / "stgcn.onnx")
    f, m = _windows(3)
    assert parity(ckpt, onnx_path, f, m) < 1e-4
    # the file records its architecture, so tools (bench encoder's untrained reference) can rebuild it
    from edge.motion.encoder import MotionEncoder
    recorded = json.loads(MotionEncoder(onnx_path).metadata["config"])
    assert build(recorded).config == model.config and recorded["pool"] == "meanstd"
    from benchmarks.encoder import _part_embedders
    assert _part_embedders(MotionEncoder(onnx_path)) == {}            # no profile: bench encoder skips its parts


def test_stgcn_refuses_an_unknown_pooling():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        STGCNEncoder(pool="max")


def _moving(n=60, joints=(9, 10), cycles=8.0, amp=0.2):
    """One window: a still pose whose `joints` swing sideways `cycles` times per 64 samples."""
    rest = np.random.default_rng(0).normal(0, 0.3, (17, 2)).astype(np.float32)
    x = np.repeat(rest[None], n, 0)
    x[:, list(joints), 0] += amp * np.sin(2 * np.pi * cycles * np.arange(n) / 64.0)[:, None]
    return x.reshape(1, n, 34), np.ones((1, n), np.float32)


def test_motion_profile_says_which_joints_move_and_how_often():
    prof = MotionProfile()
    x, m = _moving(joints=(9, 10), cycles=4.0)
    r = prof.raw(torch.from_numpy(x), torch.from_numpy(m))[0].numpy()
    rel, spec, misc = r[:17], r[17:33], r[33:]
    assert set(np.argsort(rel)[-2:]) == {9, 10} and rel[[9, 10]].min() > 5 * np.delete(rel, [9, 10]).max()
    assert np.argmax(spec) + 1 == 8      # bin k = k cycles per 64 samples; speed peaks twice per swing
    assert misc[1] < 0.1                                     # feet barely move against the wrists
    x2, _ = _moving(joints=(15, 16), cycles=3.0)
    r2 = prof.raw(torch.from_numpy(x2), torch.from_numpy(m))[0].numpy()
    assert set(np.argsort(r2[:17])[-2:]) == {15, 16} and np.argmax(r2[17:33]) + 1 == 6 and r2[34] > 10
    # twice the size: same profile except the mean speed, which doubles
    r3 = prof.raw(torch.from_numpy(2 * x), torch.from_numpy(m))[0].numpy()
    assert np.allclose(r3[:36], r[:36], rtol=1e-3, atol=1e-3) and np.isclose(r3[36], 2 * r[36], rtol=1e-4)


def test_motion_profile_ignores_masked_samples():
    prof = MotionProfile()
    x, m = _moving(n=40)
    pad = np.zeros((1, 60, 34), np.float32)
    pad[:, :40] = x
    mask = np.zeros((1, 60), np.float32)
    mask[:, :40] = 1
    junk = pad.copy()
    junk[:, 40:] = 7.0
    a = prof.raw(torch.from_numpy(pad), torch.from_numpy(mask))
    b = prof.raw(torch.from_numpy(junk), torch.from_numpy(mask))
    late = np.zeros_like(pad)
    late[:, 20:] = x                                          # the same motion starting later
    c = prof.raw(torch.from_numpy(late), torch.from_numpy(np.roll(mask, 20, 1)))
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, c, atol=1e-4)


def test_profiled_encoder_mixes_the_two_cosines_by_the_weight_and_rebuilds():
    torch.manual_seed(0)
    enc = _trained_bn(STGCNEncoder())
    f, m = _windows()
    ft, mt = torch.from_numpy(f), torch.from_numpy(m)
    prof = MotionProfile(weight=0.6).fit(ft, mt)
    model = ProfiledEncoder(enc, prof).eval()
    with torch.no_grad():
        z = model(ft, mt).numpy()
        zl = enc(ft, mt).numpy()
        zp = prof(ft, mt).numpy() / 0.6
    assert z.shape == (6, 64 + MotionProfile.DIM) and np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert np.allclose(z @ z.T, (zl @ zl.T + 0.36 * zp @ zp.T) / 1.36, atol=1e-5)
    rebuilt = build(model.config)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert np.allclose(rebuilt.eval()(ft, mt).numpy(), z, atol=1e-6)
    assert encoder_config(model.config) == enc.config


def test_profiled_encoder_exports_to_onnx_with_parity(tmp_path):
    torch.manual_seed(2)
    enc = _trained_bn(STGCNEncoder())
    f, m = _windows(4)
    prof = MotionProfile().fit(torch.from_numpy(f), torch.from_numpy(m))
    model = ProfiledEncoder(enc, prof).eval()
    ckpt = tmp_path / "p.pt"
    torch.save({"state_dict": model.state_dict(), "config": model.config, "normalization": "ban"}, ckpt)
    onnx_path = export_onnx(ckpt, tmp_path / "p.onnx")
    assert parity(ckpt, onnx_path, *_windows(5)) < 1e-4
    from edge.motion.encoder import MotionEncoder
    runtime = MotionEncoder(onnx_path)
    assert runtime.dim == 64 + MotionProfile.DIM and runtime.model_id == "dancewire-motion-stgcn64-v5"
    # bench encoder's parts: the ONNX output's two slices are the learned and the profile embeddings
    from benchmarks.encoder import _part_embedders
    parts = _part_embedders(runtime)
    q, qm = _windows(6)
    with torch.no_grad():
        zl = enc(torch.from_numpy(q), torch.from_numpy(qm)).numpy()
        zp = prof(torch.from_numpy(q), torch.from_numpy(qm)).numpy()
    zp /= np.linalg.norm(zp, axis=1, keepdims=True)
    assert np.allclose(parts["learned_only"](q, qm), zl, atol=1e-4)
    assert np.allclose(parts["profile_only"](q, qm), zp, atol=1e-4)


def test_a_failed_parity_check_leaves_the_runtime_file_as_it_was(tmp_path, monkeypatch):
    """`encoder export` wrote the target (by default the runtime encoder.onnx) and only then checked
    parity: a failed check left the unchecked file in place."""
    from edge.motion import cli, export
    from edge.motion.encoder import MotionEncoder

    torch.manual_seed(1)
    model = _trained_bn(STGCNEncoder())
    ckpt = tmp_path / "stgcn.pt"
    torch.save({"state_dict": model.state_dict(), "config": model.config, "normalization": "ban"}, ckpt)
    target = tmp_path / "encoder.onnx"
    target.write_bytes(b"the encoder in use")
    monkeypatch.setattr(export, "parity", lambda *a: 1e-2)
    with pytest.raises(Exception, match="left as it was"):
        cli._export_and_check(ckpt, target, None)
    assert target.read_bytes() == b"the encoder in use" and list(tmp_path.glob("*.onnx")) == [target]
    monkeypatch.undo()
    assert cli._export_and_check(ckpt, target, None) < 1e-4
    assert json.loads(MotionEncoder(target).metadata["config"])["arch"] == model.config["arch"]   # with its metadata
    assert not list(tmp_path.glob(".*partial*"))
