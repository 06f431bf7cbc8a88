"""Runs MediaPipe's legacy `mp.solutions.pose` over pre-decoded frames; used by
pose_vs_mediapipe.py inside its own virtualenv (mediapipe 0.10.21 pins numpy<2, protobuf<5).

Standalone on purpose: imports nothing from dancewire. Input: a JSON job file naming .npy
clips (N, H, W, 3 BGR uint8) and, per output frame, one frame index per clip (the clips are
resized to one height and put side by side). Output: JSON with per-frame latencies.
"""
from __future__ import annotations

import json
import os
import sys
import time


def main(job_path: str, out_path: str) -> int:
    job = json.loads(open(job_path).read())
    if job.get("cpus"):
        os.sched_setaffinity(0, set(job["cpus"]))
    import numpy as np
    import mediapipe as mp

    clips = [np.load(p, mmap_mode="r") for p in job["clips"]]
    pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                                  enable_segmentation=False, min_detection_confidence=0.5,
                                  min_tracking_confidence=0.5)
    latencies, found = [], 0
    for idx in job["frames"]:
        parts = [np.asarray(c[i]) for c, i in zip(clips, idx)]
        bgr = parts[0] if len(parts) == 1 else np.hstack(parts)
        t0 = time.perf_counter()
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])         # mediapipe wants RGB
        result = pose.process(rgb)
        latencies.append(time.perf_counter() - t0)
        found += result.pose_landmarks is not None
    pose.close()
    json.dump({"mediapipe": mp.__version__, "numpy": np.__version__, "latencies_s": latencies,
               "frames_with_pose": found, "cpus": sorted(os.sched_getaffinity(0))}, open(out_path, "w"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
