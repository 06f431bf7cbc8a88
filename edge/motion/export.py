"""Export the trained encoder to ONNX (parity with PyTorch checked to 1e-4) and the int8 wire format."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

TRANSFORMER_MODEL_ID = "dancewire-motion-tx64-v1"
# v5: v4 + the computed motion profile; v4: own keypoints in pretraining; v3: AIST++ only; v2: mean pool,
# zero-filled gaps, no back views
STGCN_MODEL_ID = "dancewire-motion-stgcn64-v4"
PROFILED_STGCN_MODEL_ID = "dancewire-motion-stgcn64-v5"
INPUTS = ("keypoints", "mask")
OUTPUT = "embedding"


def load_model(ckpt_path: str | Path):
    import torch

    from edge.motion.model import build

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cfg = dict(ckpt["config"])
    model = build(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def export_onnx(ckpt_path: str | Path, onnx_path: str | Path, opset: int = 17) -> Path:
    import onnx
    import torch

    model, ckpt = load_model(ckpt_path)
    N = model.config["max_len"]
    x = torch.zeros(2, N, model.config["in_dim"])
    m = torch.ones(2, N)
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (x, m), str(onnx_path), input_names=list(INPUTS), output_names=[OUTPUT],
                      dynamic_axes={"keypoints": {0: "batch"}, "mask": {0: "batch"}, OUTPUT: {0: "batch"}},
                      opset_version=opset, dynamo=False)
    proto = onnx.load(str(onnx_path))
    if model.config.get("arch", "transformer") == "transformer":
        model_id = TRANSFORMER_MODEL_ID + ("+profile" if "profile" in model.config else "")
    else:
        model_id = PROFILED_STGCN_MODEL_ID if "profile" in model.config else STGCN_MODEL_ID
    meta = {"model_id": model_id, "normalization": ckpt.get("normalization", "ban"), "max_frames": str(N),
            "emb_dim": str(model.config["emb_dim"]), "loss": str(ckpt.get("loss", "")),
            "training_data": "AIST++ 2D keypoints (CC BY 4.0, Li et al. 2021)",
            "config": json.dumps(model.config)}   # the architecture, so tools can rebuild it (model.build)
    del proto.metadata_props[:]
    for k, v in meta.items():
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(proto, str(onnx_path))
    return onnx_path


def parity(ckpt_path: str | Path, onnx_path: str | Path, feats: np.ndarray, mask: np.ndarray) -> float:
    """Largest |PyTorch - ONNX Runtime| over the embeddings of the given windows."""
    import torch

    from edge.engines import open_engine

    model, _ = load_model(ckpt_path)
    with torch.no_grad():
        ref = model(torch.from_numpy(feats.astype(np.float32)), torch.from_numpy(mask.astype(np.float32))).numpy()
    eng = open_engine(onnx_path, "onnxruntime", threads=1)
    got = eng.run({"keypoints": feats.astype(np.float32), "mask": mask.astype(np.float32)})[OUTPUT]
    return float(np.max(np.abs(ref - got)))


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- int8 wire format ----------------------------------------------------------------------------
def quantize(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, D) float -> (B, D) int8 and (B,) float32 scale (per vector: max |e| / 127)."""
    emb = np.atleast_2d(np.asarray(emb, np.float32))
    scale = np.maximum(np.abs(emb).max(1), 1e-8) / 127.0
    q = np.clip(np.round(emb / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Back to float and re-normalised (the scale cancels out under cosine similarity)."""
    e = np.asarray(q, np.float32) * (1.0 if scale is None else np.asarray(scale, np.float32)[:, None])
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-8)
