"""The demo source, for machines with no camera or microphone. Clearly labelled as generated.

It produces procedural music (drum kit + bass at a fixed tempo) as `AudioBlock`s and
procedural dancers at keypoint level as `PoseFrame`s, so every stage after pose estimation
(tracking-free windows, rhythm metrics, encoder, link, cloud, feedback) runs for real.
Each dancer moves on the beat with its own movement pattern; the music and the motion share
the rig clock, so the beat-alignment figures are meaningful (the dancers are on the beat).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from edge.records import AudioBlock, Pose, PoseFrame, stamp

DEMO_LABEL = "DEMO SOURCE (generated music and skeletons, no camera/mic)"

# A standing COCO-17 skeleton, in units of body height (y down), centred on the hips.
_REST = np.array([
    [0.00, -0.86], [-0.03, -0.89], [0.03, -0.89], [-0.07, -0.87], [0.07, -0.87],
    [-0.13, -0.70], [0.13, -0.70], [-0.17, -0.47], [0.17, -0.47], [-0.18, -0.26], [0.18, -0.26],
    [-0.09, -0.02], [0.09, -0.02], [-0.10, 0.44], [0.10, 0.44], [-0.10, 0.90], [0.10, 0.90],
], dtype=np.float64)


@dataclass
class DemoSettings:
    bpm: float = 112.0
    sample_rate: int = 44100
    block: int = 512
    fps: float = 30.0
    dancers: int = 3
    width: int = 1280
    height: int = 720
    seed: int = 7


class DemoMusic:
    """Kick on 1 and 3, snare on 2 and 4, closed hi-hat on eighths, a bass note per beat."""

    def __init__(self, settings: DemoSettings):
        self.s = settings
        self._n = 0
        self._rng = np.random.default_rng(settings.seed)

    def blocks(self) -> Iterator[AudioBlock]:
        while True:
            yield self.next_block()

    def next_block(self) -> AudioBlock:
        sr, n0, n = self.s.sample_rate, self._n, self.s.block
        t = (n0 + np.arange(n)) / sr
        beat = 60.0 / self.s.bpm
        phase = t % beat                       # time since the last beat
        beat_idx = np.floor(t / beat).astype(int)
        eighth = t % (beat / 2)
        kick = np.where(beat_idx % 2 == 0, np.sin(2 * np.pi * (50 + 90 * np.exp(-phase * 30)) * phase)
                        * np.exp(-phase * 18), 0.0)
        snare_env = np.where(beat_idx % 2 == 1, np.exp(-phase * 25), 0.0)
        snare = snare_env * self._rng.standard_normal(n) * 0.5
        hat = np.exp(-eighth * 80) * self._rng.standard_normal(n) * 0.12
        bass_f = np.array([55.0, 55.0, 65.4, 49.0])[(beat_idx // 2) % 4]
        bass = 0.25 * np.sin(2 * np.pi * bass_f * t) * np.exp(-phase * 3)
        samples = np.clip(0.6 * kick + snare + hat + bass, -1, 1).astype(np.float32)
        self._n += n
        block = AudioBlock(t=n0 / sr, samples=samples, sample_rate=sr)
        stamp(block.stamps, "capture")
        return block


class DemoDancers:
    """Procedural dancers: each bounces on the beat with its own arm/leg pattern."""

    PATTERNS = ("bounce-clap", "arm-wave", "step-touch")

    def __init__(self, settings: DemoSettings):
        self.s = settings
        self._rng = np.random.default_rng(settings.seed + 1)
        self._index = 0

    def _pose(self, k: int, t: float) -> np.ndarray:
        s = self.s
        beat = 60.0 / s.bpm
        ph = 2 * np.pi * t / beat                  # one cycle per beat, minimum speed on the beat
        height = 0.4 * s.height                     # the skeleton spans 1.8 units: ~72% of the frame
        cx = s.width * (0.5 if s.dancers == 1 else 0.16 + 0.68 * k / (s.dancers - 1))
        cy = s.height * 0.55
        kp = _REST.copy()
        pattern = self.PATTERNS[k % len(self.PATTERNS)]
        bounce = 0.03 * (1 - np.cos(ph))           # down on the off-beat, up (still) on the beat
        kp[:, 1] += bounce
        kp[13:, 1] -= bounce * np.array([1, 1, 0, 0])  # knees bend
        if pattern == "bounce-clap":
            close = 0.5 * (1 + np.cos(ph))         # hands together on the beat
            kp[9, 0] = -0.02 - 0.16 * (1 - close)
            kp[10, 0] = 0.02 + 0.16 * (1 - close)
            kp[[9, 10], 1] = -0.45
            kp[[7, 8], 1] = -0.5
        elif pattern == "arm-wave":
            wave = np.sin(ph / 2)
            kp[[7, 9], 1] += np.array([-0.25, -0.55]) * max(wave, 0)
            kp[[8, 10], 1] += np.array([-0.25, -0.55]) * max(-wave, 0)
        else:  # step-touch: side steps, one per beat
            side = 0.12 * np.sin(ph / 2)
            kp[:, 0] += side
            kp[15, 0] += 0.05 * np.cos(ph / 2)
            kp[16, 0] -= 0.05 * np.cos(ph / 2)
        xy = kp * height + np.array([cx, cy])
        xy += self._rng.normal(0, 1.2, xy.shape)   # pose-estimator-like jitter, pixels
        score = np.full((17, 1), 0.9)
        return np.hstack([xy, score])

    def next_frame(self) -> PoseFrame:
        t = self._index / self.s.fps
        poses = []
        for k in range(self.s.dancers):
            kp = self._pose(k, t)
            box = np.array([kp[:, 0].min(), kp[:, 1].min(), kp[:, 0].max(), kp[:, 1].max()])
            poses.append(Pose(track_id=k + 1, t=t, kp17=kp, box=box, score=0.9))
        pf = PoseFrame(index=self._index, t=t, width=self.s.width, height=self.s.height, poses=poses)
        stamp(pf.stamps, "capture")
        self._index += 1
        return pf

    def canvas(self) -> np.ndarray:
        """A dark frame carrying the demo label, for the overlay to draw on."""
        import cv2

        img = np.full((self.s.height, self.s.width, 3), 24, np.uint8)
        (w, _), _ = cv2.getTextSize(DEMO_LABEL, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
        cv2.putText(img, DEMO_LABEL, ((self.s.width - w) // 2, self.s.height - 20), cv2.FONT_HERSHEY_SIMPLEX,
                    0.7, (0, 200, 255), 2, cv2.LINE_AA)
        return img
