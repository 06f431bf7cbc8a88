"""Settings of the motion area: windows, normalization, rhythm metrics, encoder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Training choices, here (torch-free) so the CLI can offer them without importing the trainer.
LOSSES = ("supcon", "tong")    # fine-tuning loss: supervised contrastive (default) or Tong's pairwise
POOLS = ("meanstd", "mean")    # ST-GCN pooling over frames and joints: mean and std (default) or mean only


@dataclass(frozen=True)
class MotionSettings:
    # Windows (Tong: 2 s, <= 60 samples at about 30 fps, step s = max(1, floor(f/30))).
    window_s: float = 2.0
    max_frames: int = 60
    base_fps: float = 30.0
    hop_s: float = 0.5                 # live hop between window starts
    min_valid: int = 18                # windows with fewer real samples are dropped
    fill_gap: int = 15                 # interior gaps up to this many samples (~0.5 s) are interpolated for the encoder
    min_joint_conf: float = 0.15       # a sample is real when the pose's mean confidence reaches this
    max_track_gap_s: float = 1.0       # a track unseen this long is flushed and forgotten
    eight_beats: bool = True           # also cut DanceMVP eight-beat primitives when beats arrive (edge analyze)
    # Normalization: "ban" (relocate, scale by body size) or "tong" (first-frame right ankle).
    normalization: str = "ban"
    # Rhythm metrics.
    align_tol_s: float = 0.2           # DanceMVP: motion and music peaks match within 0.2 s
    align_sigma_s: float = 0.1           # beat-align score Gaussian width
    smooth_s: float = 0.1              # Gaussian smoothing of joint speed before peak picking
    min_peak_gap_s: float = 0.2        # minimum distance between two motion beats / peaks
    rhythm_gap_s: float = 0.3          # a hole in a dancer's poses longer than this breaks the motion curve
    # Encoder runtime.
    encoder_onnx: Path = WEIGHTS_DIR / "encoder.onnx"
    backend: str = "onnxruntime"
    threads: int = 1                   # ONNX Runtime threads
    precision: str = "fp16"            # TensorRT: "fp32" or "fp16" (the wire's int8 is the embedding's, not the engine's)
    batch: int = 32                    # windows per engine call (TensorRT's profile max)

    def validate(self) -> "MotionSettings":
        from dancewire.config import require
        from edge.engines import BACKENDS
        from edge.motion.normalize import METHODS

        require(self.window_s > 0 and self.hop_s > 0, "motion", "window_s and hop_s must be > 0")
        require(self.base_fps > 0 and self.max_frames >= 1, "motion", "base_fps must be > 0 and max_frames >= 1")
        require(1 <= self.min_valid <= self.max_frames, "motion", "min_valid must be in [1, max_frames]")
        require(self.normalization in METHODS, "motion", f"normalization {self.normalization!r} not in {METHODS}")
        require(self.backend in BACKENDS, "motion", f"backend {self.backend!r} not in {BACKENDS}")
        require(self.threads >= 1 and self.batch >= 1, "motion", "threads and batch must be >= 1")
        require(self.precision in ("fp32", "fp16"), "motion",
                f"precision {self.precision!r} not in ('fp32', 'fp16'); the encoder has no INT8 calibration")
        return self
