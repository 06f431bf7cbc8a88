"""Enrolment: turn labelled recordings into gallery references.

Accepted inputs (the cloud never runs edge code in-process):

* ``.jsonl`` - the edge's analyze stream (``dancewire edge analyze ... `` writes it): its
  ``window`` records (t0, t1, embedding, rhythm, dancer) become references; its ``beat`` records
  (t, count) place each window in an eight-count of the routine (phrase = the number of count-1
  beats before the window's middle, less one: 0 from the first count 1; a pickup window before it
  has phrase -1 and stays out of the routine table). An optional ``summary``/``encoder`` record
  names the encoder.
* ``.npz`` - ``embeddings`` (N, D) and optionally ``t0``, ``t1``, ``phrase``, ``score``, ``video``
  (each window's performance) and ``dancer`` (its sequence) arrays and an ``encoder_hash`` string.
* keypoint files (AIST++ ``.pkl``, gendance ``.npy``, a ballroom ``DANCE_*`` folder or its
  ``skeletons.json``) - handed to ``dancewire encoder embed {input} --out {output}`` as a separate
  process (the edge's windows and encoder, no video), and its JSONL read as above;
* anything else (a video) - handed to ``dancewire edge analyze {input} --out {output}``.
  ``--analyze-cmd`` replaces either command.

Without beats, eight-counts are cut every ``phrase_s`` seconds (4 s = eight beats at 120 BPM).
"""
from __future__ import annotations

import json
import logging
import math
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.records import Reference
from dancewire.errors import BadInputError

log = logging.getLogger(__name__)

DEFAULT_ANALYZE_CMD = f"{shlex.quote(sys.executable)} -m dancewire edge analyze {{input}} --out {{output}}"
DEFAULT_EMBED_CMD = f"{shlex.quote(sys.executable)} -m dancewire encoder embed {{input}} --out {{output}}"
KEYPOINT_SUFFIXES = (".pkl", ".npy", ".json")


def default_command(path: Path) -> str:
    """The edge command that turns this input into an analyze stream: keypoints or video."""
    return DEFAULT_EMBED_CMD if path.is_dir() or path.suffix in KEYPOINT_SUFFIXES else DEFAULT_ANALYZE_CMD


@dataclass
class Labels:
    style: str
    routine: str = ""
    group: str = ""
    video: str = ""            # default: an .npz's per-window `video`, else the input's name (see input_name)
    score: float = math.nan    # one score for every window of this input
    dancer: int | None = None  # only this track of the input (default: all)


def read_jsonl(path: Path) -> tuple[list[dict], list[tuple[float, int]], dict]:
    windows, beats, encoder = [], [], {}
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise BadInputError(f"{path}:{n}: not JSON") from None
        kind = rec.get("type")
        if kind == "window" and rec.get("embedding"):
            windows.append(rec)
        elif kind == "beat" and "t" in rec:
            beats.append((float(rec["t"]), int(rec.get("count", 0))))
        elif kind in ("summary", "encoder"):
            enc = rec.get("encoder") if isinstance(rec.get("encoder"), dict) else rec
            for k_src, k_dst in (("encoder_hash", "hash"), ("hash", "hash"), ("encoder_model_id", "model_id"),
                                 ("model_id", "model_id")):
                if enc.get(k_src):
                    encoder[k_dst] = enc[k_src]
    return windows, sorted(beats), encoder


def phrases_for(mids: np.ndarray, beats: list[tuple[float, int]], phrase_s: float) -> np.ndarray:
    downs = np.array([t for t, c in beats if c == 1])
    if len(downs):
        return np.searchsorted(downs, mids, side="right") - 1
    return np.floor(mids / phrase_s).astype(int)


GENERIC_STEMS = {"skeletons", "config", "keypoints", "poses", "analyze", "out"}


def input_name(path: Path) -> str:
    """A performance's name from its input: the file's stem, or its folder's name when the stem says
    nothing about it (a ballroom DANCE_C_1/skeletons.json is DANCE_C_1, not "skeletons")."""
    return path.parent.name if path.stem in GENERIC_STEMS and path.parent.name else path.stem


def source_name(path: Path) -> str:
    """The input's identity in reference ids: folder and stem, so that cam_front/take1 and
    cam_side/take1 (enrolled under one --video) never share ids."""
    path = Path(path).absolute()
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def references_from_file(path: Path, labels: Labels, *, phrase_s: float = 4.0,
                         analyze_cmd: str | None = None) -> tuple[list[Reference], np.ndarray, dict]:
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    video = labels.video or input_name(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            emb = np.asarray(z["embeddings"], np.float32)
            n = len(emb)
            t0 = z["t0"] if "t0" in z else np.arange(n) * 0.5
            t1 = z["t1"] if "t1" in z else t0 + 2.0
            phrase = z["phrase"] if "phrase" in z else phrases_for((t0 + t1) / 2, [], phrase_s)
            score = z["score"] if "score" in z else np.full(n, labels.score)
            encoder = {"hash": str(z["encoder_hash"])} if "encoder_hash" in z else {}
            # `dancewire encoder embed` writes each window's performance and sequence: used unless --video
            videos = z["video"].astype(str) if "video" in z and not labels.video else np.full(n, video)
            tracks = z["dancer"].astype(int) if "dancer" in z else np.zeros(n, int)
        keep = [i for i in range(n) if labels.dancer is None or int(tracks[i]) == labels.dancer]
        if not keep:
            raise BadInputError(f"{path}: no windows of dancer {labels.dancer}")
        emb = emb[keep]
        rows = [(float(t0[i]), float(t1[i]), int(phrase[i]), float(score[i]), int(tracks[i]), str(videos[i]))
                for i in keep]
    else:
        wins, beats, encoder = (read_jsonl(path) if path.suffix == ".jsonl"
                                else _analyze(path, analyze_cmd or default_command(path)))
        if labels.dancer is not None:
            wins = [w for w in wins if int(w.get("dancer", 0)) == labels.dancer]
        if not wins:
            raise BadInputError(f"{path}: no window records with embeddings")
        emb = np.array([w["embedding"] for w in wins], np.float32)
        t0 = np.array([float(w["t0"]) for w in wins])
        t1 = np.array([float(w["t1"]) for w in wins])
        phrase = phrases_for((t0 + t1) / 2, beats, phrase_s)
        rows = [(t0[i], t1[i], int(phrase[i]), labels.score, int(wins[i].get("dancer", 0)), video)
                for i in range(len(wins))]
    if not np.isfinite(emb).all():
        raise BadInputError(f"{path}: embeddings contain NaN/inf")
    source = source_name(path)

    def ref_id(v: str, d: int, a: float) -> str:
        # names the input too, so the cameras of one performance enrolled under one --video (as the
        # help says) do not replace each other's references; re-enrolling an input replaces all of
        # its old ones (Gallery.merged, gallery.input_of)
        return f"{v}|{source}#{d}@{a:.2f}"

    refs = [Reference(ref_id=ref_id(v, d, a), style=labels.style, routine=labels.routine, group=labels.group,
                      video=v, t0=float(a), t1=float(b), phrase=p if labels.routine else -1,
                      score=float(sc) if sc is not None else math.nan)
            for a, b, p, sc, d, v in rows]
    return refs, emb, encoder


def _analyze(path: Path, analyze_cmd: str) -> tuple[list[dict], list[tuple[float, int]], dict]:
    """Run the edge command on `path` into a temporary JSONL, read it, and remove it."""
    with tempfile.TemporaryDirectory(prefix="dancewire-enrol-") as tmp:
        out = Path(tmp) / (path.stem + ".jsonl")
        cmd = analyze_cmd.format(input=shlex.quote(str(path)), output=shlex.quote(str(out)))
        log.info("enrol: %s", cmd)
        proc = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BadInputError(f"edge analysis of {path} failed: {tail[0]}")
        return read_jsonl(out)


def fit_gallery(gallery, settings) -> dict:
    """Fit the classifier (mixture, kNN temperature, calibration) and the Gaussian score head on `gallery` (in place)."""
    from cloud.classify import fit_classifier
    from cloud.scores import fit_gaussian

    report = {}
    if settings.calibrate:
        params, rep = fit_classifier(gallery, settings)
        for key in ("knn_weight", "knn_temperature"):
            gallery.params.pop(key, None)
        gallery.params.update(params)
        gallery.params["calibration"] = rep
        report["calibration"] = rep
    g = fit_gaussian(gallery)
    if g:
        gallery.params["gaussian"] = g
    else:
        gallery.params.pop("gaussian", None)
    report["gaussian"] = {"n": g["n"], "loss": g["loss"]} if g else None
    return report
