"""Loaders for the labelled keypoint formats, and the ballroom set's projection to COCO-17 2D.

* AIST++ ``keypoints2d`` .pkl: (9 views, T, 17, 3) COCO-17 pixels at 60 fps; genre from the name (gBR...).
* gendance_aist_small .npy: (T, 34) standardised COCO-17 at 30 fps; pixels = a * scale + mean with
  ``kps_scaler_extracted.npz`` (searched in the parent folders); genre from the name.
* ballroom (Tang et al. 2018) ``DANCE_<G>_<n>/skeletons.json``: (T, 23, 3) 3D mocap at 25 fps, y up,
  plus the root trajectory ``center``; projected through virtual pinhole cameras and mapped to COCO-17.
"""
from __future__ import annotations

import json
import logging
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dancewire.errors import BadInputError

log = logging.getLogger(__name__)

AIST_GENRES = {"BR": "Break", "PO": "Pop", "LO": "Lock", "MH": "Middle Hip-hop", "LH": "LA Hip-hop",
               "HO": "House", "WA": "Waack", "KR": "Krump", "JS": "Street Jazz", "JB": "Ballet Jazz"}
BALLROOM_GENRES = {"C": "Cha-cha", "R": "Rumba", "W": "Waltz"}
_AIST_RE = re.compile(r"g(BR|PO|LO|MH|LH|HO|WA|KR|JS|JB)_s(\w\w)_c(\w+?)_d(\d\d)_m(\w\w\d)_ch(\d\d)")
_BALLROOM_RE = re.compile(r"DANCE_([CRW])_(\d+)")
AIST_FPS = 60.0
GENDANCE_FPS = 30.0
BALLROOM_FPS = 25.0
# Standardisation used by gendance_aist_small when no scaler file is found (its kps_scaler_extracted.npz).
GENDANCE_DEFAULT_SCALER = (np.array([958.14021941, 612.2909555]), np.array([132.3107168, 128.45317772]))


@dataclass
class Sequence:
    """One dancer's keypoint stream from one (real or virtual) camera."""
    name: str                  # unique id of the performance (shared by its camera views)
    genre: str                 # full genre name
    kp: np.ndarray             # (T, 17, 3) COCO-17 x, y (pixels), confidence
    fps: float
    view: str = "0"
    dancer: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)


def parse_aist_name(name: str) -> dict | None:
    m = _AIST_RE.search(name)
    if not m:
        return None
    g, sit, cam, dancer, music, ch = m.groups()
    return {"genre": AIST_GENRES[g], "code": "g" + g, "situation": sit, "dancer": "d" + dancer,
            "music": music, "choreo": ch}


def load_aistpp_pkl(path: str | Path, views: list[int] | None = None) -> list[Sequence]:
    path = Path(path)
    info = parse_aist_name(path.name)
    if info is None:
        raise BadInputError(f"{path.name}: no AIST++ genre code (gBR, gHO, ...) in the file name")
    try:
        with open(path, "rb") as fh:
            d = pickle.load(fh)
        kp = np.asarray(d["keypoints2d"], np.float32)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadInputError(f"cannot read {path} as AIST++ keypoints2d: {exc.__class__.__name__}: {exc}") from None
    if kp.ndim == 3:
        kp = kp[None]
    if kp.ndim != 4 or kp.shape[2:] != (17, 3):
        raise BadInputError(f"{path}: expected keypoints2d of shape (views, T, 17, 3), got {kp.shape}")
    out = []
    for v in range(kp.shape[0]) if views is None else views:
        out.append(Sequence(path.stem, info["genre"], kp[v], AIST_FPS, view=f"c{v + 1:02d}",
                            dancer=info["dancer"], source="aistpp", meta=info))
    return out


def _find_scaler(path: Path) -> tuple[np.ndarray, np.ndarray]:
    for parent in list(path.parents)[:4]:
        f = parent / "kps_scaler_extracted.npz"
        if f.exists():
            z = np.load(f)
            return np.asarray(z["mean"], float), np.asarray(z["scale"], float)
    return GENDANCE_DEFAULT_SCALER


def load_gendance_npy(path: str | Path) -> Sequence:
    path = Path(path)
    info = parse_aist_name(path.name)
    if info is None:
        raise BadInputError(f"{path.name}: no AIST++ genre code (gBR, gHO, ...) in the file name")
    try:
        a = np.load(path).astype(np.float64)
    except (OSError, EOFError, ValueError, TypeError) as exc:
        raise BadInputError(f"cannot read {path} as a .npy array: {exc}") from None
    if a.ndim != 2 or a.shape[1] != 34:
        raise BadInputError(f"{path}: expected (T, 34) standardised keypoints, got {a.shape}")
    mean, scale = _find_scaler(path)
    xy = a.reshape(-1, 17, 2) * scale + mean
    kp = np.concatenate([xy, np.ones(xy.shape[:2] + (1,))], -1).astype(np.float32)
    return Sequence(path.stem, info["genre"], kp, GENDANCE_FPS, view="c01", dancer=info["dancer"],
                    source="gendance", meta=info)


# --- ballroom: 23-joint mocap -> COCO-17 ---------------------------------------------------------
# Joint order (from the authors' drawing code, checked by plotting): 0/1 right/left side of the head,
# 2 pelvis, 3-4-5-6 right shoulder/elbow/wrist/hand, 7-8-9 right hip/knee/ankle, 10/11 right heel/toe,
# 12-13-14-15 left arm, 16-17-18 left leg, 19/20 left heel/toe, 21/22 extra hand points.
# "Right" assumes a right-handed frame (side = forward x up, forward from heel to toe); were the
# capture left-handed, the projections are mirror images, which the encoder is trained to ignore.
BALLROOM_TO_COCO = {5: 12, 6: 3, 7: 13, 8: 4, 9: 14, 10: 5, 11: 16, 12: 7, 13: 17, 14: 8, 15: 18, 16: 9}


def ballroom_to_coco3d(sk: np.ndarray) -> np.ndarray:
    """(T, 23, 3) ballroom joints -> (T, 17, 3) COCO-17 3D points; face points built from the head pair."""
    sk = np.asarray(sk, np.float64)
    out = np.zeros(sk.shape[:-2] + (17, 3))
    for c, b in BALLROOM_TO_COCO.items():
        out[..., c, :] = sk[..., b, :]
    r_head, l_head = sk[..., 0, :], sk[..., 1, :]
    mid = 0.5 * (r_head + l_head)
    side = r_head - l_head                                  # towards the dancer's right
    width = np.linalg.norm(side, axis=-1, keepdims=True) + 1e-6
    up = np.array([0.0, 1.0, 0.0])
    fwd = np.cross(up, side)
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True) + 1e-6
    unit = side / width
    out[..., 0, :] = mid + 0.8 * width * fwd - 0.15 * width * up            # nose
    out[..., 1, :] = mid + 0.6 * width * fwd - 0.25 * width * unit + 0.15 * width * up   # left eye
    out[..., 2, :] = mid + 0.6 * width * fwd + 0.25 * width * unit + 0.15 * width * up   # right eye
    out[..., 3, :] = l_head
    out[..., 4, :] = r_head
    return out


@dataclass(frozen=True)
class VirtualCamera:
    azimuth_deg: float
    elevation_deg: float
    distance_m: float = 6.0
    focal_px: float = 1200.0
    width: int = 1920
    height: int = 1080

    @property
    def name(self) -> str:
        return f"az{self.azimuth_deg:+.0f}el{self.elevation_deg:.0f}d{self.distance_m:.0f}"


DEFAULT_CAMERAS = (VirtualCamera(0, 10, 6.0), VirtualCamera(50, 15, 7.0, 1000),
                   VirtualCamera(-70, 5, 5.5, 1400, 1280, 720), VirtualCamera(160, 25, 8.0, 1500))


def project(points_m: np.ndarray, cam: VirtualCamera, target: np.ndarray) -> np.ndarray:
    """Pinhole projection of (..., 3) world points (metres, y up) seen by `cam` aiming at `target`."""
    az, el = np.radians(cam.azimuth_deg), np.radians(cam.elevation_deg)
    eye = target + cam.distance_m * np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rel = points_m - eye
    depth = np.maximum(rel @ fwd, 0.1)
    u = cam.focal_px * (rel @ right) / depth + cam.width / 2
    v = cam.focal_px * (rel @ down) / depth + cam.height / 2
    return np.stack([u, v], -1)


def load_ballroom(folder: str | Path, cameras=DEFAULT_CAMERAS) -> list[Sequence]:
    """One Sequence per virtual camera; world = skeleton + centre (centimetres), projected in metres."""
    folder = Path(folder)
    m = _BALLROOM_RE.search(folder.name)
    if not m:
        raise BadInputError(f"{folder}: ballroom folders are named DANCE_<C|R|W>_<n>")
    try:
        d = json.loads((folder / "skeletons.json").read_text())
        sk = np.asarray(d["skeletons"], np.float64)
        centre = np.asarray(d.get("center", np.zeros((len(sk), 3))), np.float64)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadInputError(f"cannot read {folder / 'skeletons.json'}: {exc.__class__.__name__}: {exc}") from None
    if sk.ndim != 3 or sk.shape[1:] != (23, 3) or centre.shape != (len(sk), 3):
        raise BadInputError(f"{folder / 'skeletons.json'}: expected skeletons (T, 23, 3) and center (T, 3), "
                            f"got {sk.shape} and {centre.shape}")
    cfg = {}
    if (folder / "config.json").exists():
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise BadInputError(f"cannot read {folder / 'config.json'}: {exc}") from None
        if not isinstance(cfg, dict):
            raise BadInputError(f"{folder / 'config.json'}: expected a JSON object")
    fps = ballroom_motion_fps(len(sk), cfg)
    if fps < 20.0:
        # The Waltz recordings are stored subsampled (config spans ~4.2x more 25-fps frames than the
        # skeleton holds: ~6 fps); bring them back to 25 fps by linear interpolation before projecting.
        t_src = np.arange(len(sk)) / fps
        t_dst = np.arange(0.0, t_src[-1] + 1e-9, 1.0 / BALLROOM_FPS)
        sk = np.stack([np.interp(t_dst, t_src, sk[:, j, c]) for j in range(sk.shape[1]) for c in range(3)], -1)
        sk = sk.reshape(len(t_dst), -1, 3)
        centre = np.stack([np.interp(t_dst, t_src, centre[:, c]) for c in range(3)], -1)
    world = (ballroom_to_coco3d(sk) + centre[:, None, :]) / 100.0
    floor = world[..., 1].min()
    world[..., 1] -= floor
    target = np.array([np.median(world[:, :, 0]), 1.0, np.median(world[:, :, 2])])
    out = []
    for cam in cameras:
        xy = project(world, cam, target)
        kp = np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], -1).astype(np.float32)
        out.append(Sequence(folder.name, BALLROOM_GENRES[m.group(1)], kp, BALLROOM_FPS, view=cam.name,
                            dancer=folder.name, source="ballroom", meta={"config": cfg, "camera": cam}))
    return out


def ballroom_motion_fps(n_frames: int, cfg: dict) -> float:
    """Frame rate of a ballroom skeleton: 25 fps, unless config.json's span (in 25-fps frames) is more
    than twice the skeleton's length (the Waltz files: ~4.2x, i.e. stored at ~6 fps)."""
    span = float(cfg.get("end_position", 0)) - float(cfg.get("start_position", 0))
    if n_frames > 1 and span > 2.0 * n_frames:
        return BALLROOM_FPS * n_frames / span
    return BALLROOM_FPS


def load_path(path: str | Path, cameras=DEFAULT_CAMERAS) -> list[Sequence]:
    """Any of the three formats: a .pkl, a .npy, a DANCE_* folder or its skeletons.json."""
    path = Path(path)
    if path.suffix == ".pkl":
        return load_aistpp_pkl(path)
    if path.suffix == ".npy":
        return [load_gendance_npy(path)]
    if path.name == "skeletons.json":
        return load_ballroom(path.parent, cameras)
    if path.is_dir() and (path / "skeletons.json").exists():
        return load_ballroom(path, cameras)
    raise BadInputError(f"{path}: not a keypoint file this loader knows (.pkl, .npy, skeletons.json)")


def load_folder(folder: str | Path, cameras=DEFAULT_CAMERAS) -> list[Sequence]:
    """Every labelled sequence under `folder`, in a stable order."""
    folder = Path(folder)
    if not folder.exists():
        raise BadInputError(f"{folder}: no such file or folder")
    if folder.is_file() or (folder / "skeletons.json").exists():
        return load_path(folder, cameras)
    out: list[Sequence] = []
    files = set(folder.rglob("*"))
    for child in folder.iterdir():           # symlinked sub-folders too (rglob does not follow them)
        if child.is_dir() and child.is_symlink():
            files |= set(child.rglob("*")) | {child / q.relative_to(child.resolve()) for q in child.resolve().rglob("*")}
    unlabelled = []
    for p in sorted(files):
        if p.suffix in (".pkl", ".npy") and parse_aist_name(p.name):
            out.extend(load_path(p, cameras))
        elif p.name == "skeletons.json" and _BALLROOM_RE.search(p.parent.name):
            out.extend(load_ballroom(p.parent, cameras))
        elif p.suffix in (".pkl", ".npy") or p.name == "skeletons.json":
            unlabelled.append(str(p.relative_to(folder)))
    why = (f"{len(unlabelled)} keypoint files without a genre in their name (AIST++ code gBR, gHO, ... in the "
           f"file name; ballroom folders DANCE_<C|R|W>_<n>): {', '.join(unlabelled[:5])}"
           + (", ..." if len(unlabelled) > 5 else "")) if unlabelled else ""
    if not out:
        raise BadInputError(f"{folder}: no labelled keypoint sequences (.pkl, .npy, DANCE_*/skeletons.json)"
                            + (f"; skipped {why}" if why else ""))
    if why:
        log.warning("%s: skipped %s", folder, why)
    return out


def aist_files(data_root: Path) -> list[Path]:
    kp = data_root / "keypoints"
    return sorted((kp / "aistpp").glob("*.pkl")) + sorted((kp / "gendance_aist_small").rglob("*.npy"))


def ballroom_dirs(data_root: Path) -> list[Path]:
    def key(p: Path):
        m = _BALLROOM_RE.search(p.name)
        return (m.group(1), int(m.group(2)))
    return sorted((p for p in (data_root / "keypoints" / "ballroom_tang2018").glob("DANCE_*") if p.is_dir()), key=key)


def ballroom_audio_start(folder: Path) -> float | None:
    """Media time in audio.mp3 at which motion frame 0 happens (config start_position / 25 fps)."""
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        return None
    cfg = json.loads(cfg_path.read_text())
    if "start_position" not in cfg:
        return None
    return float(cfg["start_position"]) / BALLROOM_FPS


def aist_split(seqs: list[Sequence]) -> tuple[list[Sequence], list[Sequence]]:
    """Held-out split with no shared performance: by dancer where a genre has several dancers,
    else the last half (rounded up) of each genre's performances, sorted by name, are held out."""
    by_genre: dict[str, list[str]] = {}
    dancers: dict[str, set] = {}
    for s in seqs:
        by_genre.setdefault(s.genre, [])
        if s.name not in by_genre[s.genre]:
            by_genre[s.genre].append(s.name)
        dancers.setdefault(s.genre, set()).add(s.dancer)
    test_names: set[str] = set()
    for genre, names in by_genre.items():
        names = sorted(names)
        if len(dancers[genre]) > 1:
            ds = sorted(dancers[genre])
            held = set(ds[len(ds) // 2:])
            test_names |= {s.name for s in seqs if s.genre == genre and s.dancer in held}
        elif len(names) > 1:
            test_names |= set(names[len(names) // 2:])
    train = [s for s in seqs if s.name not in test_names]
    test = [s for s in seqs if s.name in test_names]
    return train, test


def ballroom_split(seqs: list[Sequence]) -> tuple[list[Sequence], list[Sequence]]:
    """Enrolment split: within each genre, alternate performances (sorted by number) go to the
    gallery (even positions) and the queries (odd positions); all virtual cameras of a performance
    stay together."""
    names: dict[str, list[str]] = {}
    for s in seqs:
        lst = names.setdefault(s.genre, [])
        if s.name not in lst:
            lst.append(s.name)
    gallery = set()
    for genre, lst in names.items():
        lst = sorted(lst, key=lambda n: int(_BALLROOM_RE.search(n).group(2)))
        gallery |= set(lst[0::2])
    return [s for s in seqs if s.name in gallery], [s for s in seqs if s.name not in gallery]


def decode_audio(path: str | Path, sample_rate: int = 44100) -> np.ndarray:
    """Mono float32 samples of an audio file (PyAV)."""
    import av

    chunks = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def music_events(path: str | Path, sample_rate: int = 44100, start: float = 0.0, end: float | None = None):
    """Onsets and beats of a song from `start` to `end` (seconds), found by the edge's own causal
    analyzer (`edge.audio`, as live), as `edge.records` Onset and Beat lists on the song's clock."""
    from edge.audio.analyzer import AudioAnalyzer
    from edge.records import AudioBlock, Beat, Onset

    x = decode_audio(path, sample_rate)
    a, b = int(max(0.0, start) * sample_rate), len(x) if end is None else min(len(x), int(end * sample_rate))
    analyzer = AudioAnalyzer(sample_rate=sample_rate)
    events = []
    for i in range(a, b, 1024):
        events += analyzer.process(AudioBlock(t=i / sample_rate, samples=x[i:min(i + 1024, b)],
                                              sample_rate=sample_rate))
    events += analyzer.flush()
    return [e for e in events if isinstance(e, Onset)], [e for e in events if isinstance(e, Beat)]
