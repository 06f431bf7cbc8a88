"""Both encoder architectures (PyTorch): unit embeddings, padding ignored, ONNX export with parity."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is the `train` extra")

from edge.motion.export import export_onnx, parity  # noqa: E402
from edge.motion.model import COCO_EDGES, MotionEncoder, STGCNEncoder, build, coco_adjacency  # noqa: E402


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


def test_stgcn_refuses_an_unknown_pooling():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        STGCNEncoder(pool="max")
