"""Runtime encoder: ONNX through `edge.engines.open_engine` (no torch at the edge).

`MotionEncoder.encode(windows)` -> (B, D) float32 L2-normalised embeddings; `model_id` and
`sha256` identify the weights on the wire.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dancewire.errors import ModelCacheError
from edge.motion.normalize import fill_gaps, normalize
from edge.motion.settings import MotionSettings
from edge.records import Window


class MotionEncoder:
    def __init__(self, onnx_path: str | Path | None = None, backend: str | None = None, threads: int | None = None,
                 settings: MotionSettings | None = None):
        """`backend` and `threads` default to the settings' (`motion.backend`, `motion.threads`). On
        TensorRT the engine is built at `motion.precision` for batches up to `motion.batch`."""
        from edge.engines import open_engine
        from edge.motion.export import OUTPUT, sha256

        self.settings = settings or MotionSettings()
        self.path = Path(onnx_path or self.settings.encoder_onnx)
        if not self.path.exists():
            raise ModelCacheError(f"motion encoder not found at {self.path}; run `dancewire encoder train` "
                                  "then `dancewire encoder export`")
        s = self.settings
        self.engine = open_engine(self.path, backend or s.backend, threads=threads or s.threads,
                                  precision=s.precision, max_batch=s.batch)
        self.sha256 = sha256(self.path)
        meta = self.metadata = self._metadata()
        self.model_id = meta.get("model_id", self.path.stem)
        self.normalization = meta.get("normalization", self.settings.normalization)
        self.max_frames = int(meta.get("max_frames", self.settings.max_frames))
        self._out = OUTPUT
        self.dim = int(meta.get("emb_dim", self.engine.outputs[0].shape[-1] or 0))

    def _metadata(self) -> dict:
        try:
            import onnx
            proto = onnx.load(str(self.path), load_external_data=False)
            return {p.key: p.value for p in proto.metadata_props}
        except Exception:  # metadata is optional
            return {}

    def encode_features(self, feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """feats (B, N, 34) normalised, mask (B, N) -> (B, D); short interior gaps are filled first."""
        feats, mask = fill_gaps(feats, mask, self.settings.fill_gap)
        feats = np.ascontiguousarray(feats, np.float32)
        mask = np.ascontiguousarray(mask, np.float32)
        if len(feats) == 0:
            return np.zeros((0, self.dim), np.float32)
        step = self.engine.max_batch
        out = [self.engine.run({"keypoints": feats[i:i + step], "mask": mask[i:i + step]})[self._out]
               for i in range(0, len(feats), step)]
        e = np.concatenate(out).astype(np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-8)

    def features(self, windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        N = self.max_frames
        kp = np.zeros((len(windows), N, 17, 3), np.float32)
        mask = np.zeros((len(windows), N), bool)
        for i, w in enumerate(windows):
            n = min(N, len(w.kp))
            kp[i, :n] = w.kp[:n, :, :3] if w.kp.shape[-1] >= 3 else np.pad(w.kp[:n], ((0, 0), (0, 0), (0, 1)))
            mask[i, :n] = w.mask[:n]
        return normalize(kp, mask, self.normalization), mask

    def encode(self, windows: list[Window]) -> np.ndarray:
        feats, mask = self.features(windows)
        return self.encode_features(feats, mask)

    def __call__(self, feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.encode_features(feats, mask)

    def close(self) -> None:
        self.engine.close()
