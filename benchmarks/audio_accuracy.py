"""Audio accuracy: onset/beat F-measure (mir_eval) and detection latency vs human annotations.

Data (../shared/data/audio, never copied): madmom's `sample.wav` with its 15 hand-annotated
onsets; MDB Drums' Rock and Reggae tracks (full mix and drum-only stem) with their drum
onsets (all classes, one time per distinct annotation) and beats.

Systems, all in one run:
* `dancewire`  the causal AudioAnalyzer fed 1024-sample blocks, exactly as live;
* `aubio_default`  aubio.onset / aubio.tempo with the constructors' defaults (1024/512);
* `librosa_offline`  librosa.onset.onset_detect and librosa.beat.beat_track over the whole
  file (non-causal: an upper reference, no latency).

Metrics: onset F-measure with a 50 ms window, beat F-measure with a 70 ms window after a
warm-up (`--warmup`, default 4 s: annotations and estimates before it are dropped, as
mir_eval's trim_beats does), detection latency = when the event is out minus the matched
annotation (median, p95): for dancewire its `known_at`, the end of the block it came back with (all
of a block's samples arrive at its end); for aubio the end of its 512-sample hop.
For dancewire the fraction of beats whose eight-count agrees with the
annotated bar position (count 1 or 5 on the bar's first beat, ...).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

ONSET_WINDOW = 0.05
BEAT_WINDOW = 0.07


def add_arguments(p) -> None:
    p.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data or $DANCEWIRE_DATA)")
    p.add_argument("--warmup", type=float, default=4.0, help="seconds of beats ignored at the start (default 4)")
    p.add_argument("--block-size", type=int, default=1024, help="block size fed to the causal analyzer")
    p.add_argument("--no-librosa", action="store_true", help="skip the librosa baseline (slow first start)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override an audio setting for the dancewire system (repeatable)")


# ---------------------------------------------------------------------- data
def _tracks(root: Path) -> list[dict]:
    a = root / "audio"
    tracks = [{"name": "madmom_sample", "set": "madmom", "audio": a / "madmom" / "sample.wav",
               "onsets": _read_times(a / "madmom" / "sample.onsets"), "beats": None, "bars": None}]
    for song in ("Rock", "Reggae"):
        onsets = combine_onsets(_read_times(a / "mdb_drums" / "annotations" / "class" / f"MusicDelta_{song}_class.txt"))
        beat_rows = _read_rows(a / "mdb_drums" / "annotations" / "beats" / f"MusicDelta_{song}_MIX.beats")
        beats = np.array([r[0] for r in beat_rows])
        bars = np.array([int(r[1]) for r in beat_rows])
        tracks.append({"name": f"mdb_{song.lower()}_drums", "set": "mdb_drums", "audio": a / "mdb_drums" / "drum_only" / f"MusicDelta_{song}_Drum.wav",
                       "onsets": onsets, "beats": beats, "bars": bars})
        tracks.append({"name": f"mdb_{song.lower()}_mix", "set": "mdb_mix", "audio": a / "mdb_drums" / "full_mix" / f"MusicDelta_{song}_MIX.wav",
                       "onsets": onsets, "beats": beats, "bars": bars})
    return tracks


COMBINE_S = 0.03   # hits on two drums this close are one onset to hear (madmom's combine_events default)


def combine_onsets(times: np.ndarray, within: float = COMBINE_S) -> np.ndarray:
    """Per-drum annotations as onsets: hits closer than `within` to the previous kept one are one
    onset (a detector's single onset can match only one reference: kept apart, a perfect detector
    scored F 0.80 on MDB Rock, recall stuck at 0.67)."""
    kept: list[float] = []
    for t in np.sort(np.asarray(times, float)):
        if not kept or t - kept[-1] >= within:
            kept.append(float(t))
    return np.array(kept)


def _read_rows(path: Path) -> list[list[float]]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        rows.append([float(parts[0])] + [float(p) if _isnum(p) else p for p in parts[1:]])
    return rows


def _isnum(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _read_times(path: Path) -> np.ndarray:
    return np.array(sorted(r[0] for r in _read_rows(path)))


# ---------------------------------------------------------------------- systems
def _dancewire(x: np.ndarray, sr: int, settings, block: int) -> dict:
    from edge.audio.analyzer import AudioAnalyzer
    from edge.records import AudioBlock, Beat, Onset

    an = AudioAnalyzer(settings, sr)
    events = []            # (event, when it is out: its known_at, the end of the block it came back with)
    t0 = time.perf_counter()
    for i in range(0, x.size, block):
        events += [(e, e.known_at) for e in an.process(AudioBlock(t=i / sr, samples=x[i:i + block], sample_rate=sr))]
    events += [(e, e.known_at) for e in an.flush()]
    elapsed = time.perf_counter() - t0
    on = [(e, k) for e, k in events if isinstance(e, Onset)]
    be = [(e, k) for e, k in events if isinstance(e, Beat)]
    return {"onsets": np.array([e.t for e, _ in on]), "onsets_known": np.array([k for _, k in on]),
            "beats": np.array([e.t for e, _ in be]), "beats_known": np.array([k for _, k in be]),
            "counts": np.array([e.count for e, _ in be]), "bpm": an.summary()["bpm"],
            "realtime_factor": (x.size / sr) / max(elapsed, 1e-9)}


def _aubio_default(x: np.ndarray, sr: int) -> dict:
    import aubio

    o = aubio.onset("default", 1024, 512, sr)
    tp = aubio.tempo("default", 1024, 512, sr)
    hop = 512
    on, on_k, be, be_k = [], [], [], []
    for i in range(x.size // hop):
        chunk = np.ascontiguousarray(x[i * hop:(i + 1) * hop], dtype=np.float32)
        known = (i + 1) * hop / sr
        if o(chunk)[0]:
            on.append(o.get_last_s())
            on_k.append(known)
        if tp(chunk)[0]:
            be.append(tp.get_last_s())
            be_k.append(known)
    return {"onsets": np.array(on), "onsets_known": np.array(on_k), "beats": np.array(be),
            "beats_known": np.array(be_k), "bpm": float(tp.get_bpm())}


def _librosa(x: np.ndarray, sr: int) -> dict:
    import librosa

    onsets = librosa.onset.onset_detect(y=x, sr=sr, units="time")
    tempo, beats = librosa.beat.beat_track(y=x, sr=sr, units="time")
    return {"onsets": np.asarray(onsets), "onsets_known": None, "beats": np.asarray(beats),
            "beats_known": None, "bpm": float(np.atleast_1d(tempo)[0])}


# ---------------------------------------------------------------------- scoring
def _latency(ref: np.ndarray, est: np.ndarray, known: np.ndarray | None, window: float) -> list[float]:
    import mir_eval

    if known is None or est.size == 0 or ref.size == 0:
        return []
    return [float(known[j] - ref[i]) for i, j in mir_eval.util.match_events(ref, est, window)]


def _score_onsets(ref, res) -> dict:
    import mir_eval

    est = res["onsets"]
    f, p, r = mir_eval.onset.f_measure(ref, est, window=ONSET_WINDOW) if est.size else (0.0, 0.0, 0.0)
    n_match = len(mir_eval.util.match_events(ref, est, ONSET_WINDOW)) if est.size else 0
    lat = _latency(ref, est, res["onsets_known"], ONSET_WINDOW)
    return {"f": round(float(f), 4), "precision": round(float(p), 4), "recall": round(float(r), 4),
            "n_ref": int(ref.size), "n_est": int(est.size), "n_match": n_match, "latencies": lat}


def _score_beats(ref, bars, res, warmup: float) -> dict:
    import mir_eval

    ref_t = ref[ref >= warmup]
    est = res["beats"]
    keep = est >= warmup
    est_t = est[keep]
    f = mir_eval.beat.f_measure(ref_t, est_t, f_measure_threshold=BEAT_WINDOW) if est_t.size else 0.0
    known = res["beats_known"][keep] if res["beats_known"] is not None else None
    lat = _latency(ref_t, est_t, known, BEAT_WINDOW)
    out = {"f": round(float(f), 4), "n_ref": int(ref_t.size), "n_est": int(est_t.size), "latencies": lat,
           "bpm": None if res.get("bpm") is None else round(float(res["bpm"]), 2)}
    if "counts" in res and est_t.size and ref_t.size:
        counts = res["counts"][keep]
        bar_ref = bars[ref >= warmup]
        pairs = mir_eval.util.match_events(ref_t, est_t, BEAT_WINDOW)
        agree = [((counts[j] - 1) % 4) == ((int(bar_ref[i]) - 1) % 4) for i, j in pairs]
        out["downbeat_agreement"] = round(float(np.mean(agree)), 4) if agree else None
    return out


def _pool(items: list[dict]) -> dict:
    """F-measure over several tracks pooled (matches, estimates and references summed)."""
    tp = sum(i["n_match"] for i in items)
    ne = sum(i["n_est"] for i in items)
    nr = sum(i["n_ref"] for i in items)
    p = tp / ne if ne else 0.0
    r = tp / nr if nr else 0.0
    return {"f": round(2 * p * r / (p + r), 4) if p + r else 0.0, "precision": round(p, 4), "recall": round(r, 4),
            "mean_track_f": round(float(np.mean([i["f"] for i in items])), 4)}


def _lat_stats(values: list[float]) -> dict:
    if not values:
        return {"median_ms": None, "p95_ms": None, "n": 0}
    a = np.asarray(values) * 1e3
    return {"median_ms": round(float(np.median(a)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2), "n": int(a.size)}


def evaluate(data_root: Path, settings=None, warmup: float = 4.0, block: int = 1024,
             librosa: bool = True, log=print) -> dict:
    from edge.audio.settings import AudioSettings
    from edge.sources.audio_file import read_audio

    settings = settings or AudioSettings()
    sr = settings.sample_rate
    systems = ["dancewire", "aubio_default"] + (["librosa_offline"] if librosa else [])
    per_track: dict[str, dict] = {}
    rtf = []
    for tr in _tracks(data_root):
        x, _ = read_audio(tr["audio"], sr)
        entry = {"file": str(tr["audio"].relative_to(data_root)), "set": tr["set"], "duration_s": round(x.size / sr, 3)}
        for name in systems:
            t0 = time.perf_counter()
            if name == "dancewire":
                res = _dancewire(x, sr, settings, block)
                rtf.append(res["realtime_factor"])
            elif name == "aubio_default":
                res = _aubio_default(x, sr)
            else:
                res = _librosa(x, sr)
            sc = {"onsets": _score_onsets(tr["onsets"], res)}
            if tr["beats"] is not None:
                sc["beats"] = _score_beats(tr["beats"], tr["bars"], res, warmup)
            sc["seconds"] = round(time.perf_counter() - t0, 3)
            entry[name] = sc
            log(f"{tr['name']:22s} {name:16s} onset F {sc['onsets']['f']:.3f}"
                + (f"  beat F {sc['beats']['f']:.3f}" if "beats" in sc else ""))
        per_track[tr["name"]] = entry

    summary: dict[str, dict] = {}
    for name in systems:
        s: dict = {}
        for set_name in ("madmom", "mdb_drums", "mdb_mix"):
            items = [t[name]["onsets"] for t in per_track.values() if t["set"] == set_name]
            s[f"onset_{set_name}"] = _pool(items)
            beats = [t[name]["beats"] for t in per_track.values() if t["set"] == set_name and "beats" in t[name]]
            if beats:
                s[f"beat_f_{set_name}"] = round(float(np.mean([b["f"] for b in beats])), 4)
        s["onset_latency"] = _lat_stats([v for t in per_track.values() for v in t[name]["onsets"]["latencies"]])
        s["beat_latency"] = _lat_stats([v for t in per_track.values() if "beats" in t[name]
                                        for v in t[name]["beats"]["latencies"]])
        all_beats = [t[name]["beats"]["f"] for t in per_track.values() if "beats" in t[name]]
        s["beat_f_mdb_all"] = round(float(np.mean(all_beats)), 4) if all_beats else None
        if name == "dancewire":
            agree = [t[name]["beats"].get("downbeat_agreement") for t in per_track.values() if "beats" in t[name]]
            agree = [a for a in agree if a is not None]
            s["downbeat_agreement_mean"] = round(float(np.mean(agree)), 4) if agree else None
            s["realtime_factor_median"] = round(float(np.median(rtf)), 1) if rtf else None
        summary[name] = s

    for t in per_track.values():  # keep the JSON small: latencies are summarised
        for name in systems:
            for kind in ("onsets", "beats"):
                if kind in t[name]:
                    t[name][kind]["latency"] = _lat_stats(t[name][kind].pop("latencies"))

    dw = summary["dancewire"]
    goals = {
        "onset_f_madmom_ge_0.9": dw["onset_madmom"]["f"] >= 0.9,
        "median_onset_latency_le_20ms": dw["onset_latency"]["median_ms"] is not None and dw["onset_latency"]["median_ms"] <= 20.0,
        "beat_f_mdb_mix_ge_0.8": (dw.get("beat_f_mdb_mix") or 0) >= 0.8,
        "beat_f_mdb_drums_ge_0.8": (dw.get("beat_f_mdb_drums") or 0) >= 0.8,
    }
    if librosa:
        lb = summary["librosa_offline"]
        goals["onset_f_mdb_drums_ge_librosa"] = dw["onset_mdb_drums"]["f"] >= lb["onset_mdb_drums"]["f"]
        goals["onset_f_mdb_mix_ge_librosa"] = dw["onset_mdb_mix"]["f"] >= lb["onset_mdb_mix"]["f"]
    return {"summary": summary, "goals": goals, "tracks": per_track}


def run(args) -> dict:
    from dancewire.config import load
    from dancewire.errors import DancewireError
    from dancewire.paths import shared_data_dir
    from edge.audio.settings import AudioSettings

    root = args.data or shared_data_dir()
    if not (root / "audio" / "madmom" / "sample.wav").exists():
        raise DancewireError(f"audio benchmark data not found under {root}/audio (set DANCEWIRE_DATA or --data)")
    settings = load(AudioSettings, None, None, args.overrides).validate()
    result = evaluate(root, settings, args.warmup, args.block_size, librosa=not args.no_librosa,
                      log=lambda m: print(m, flush=True))
    dw = result["summary"]["dancewire"]
    metrics = {
        "onset_f_madmom": dw["onset_madmom"]["f"],
        "onset_f_mdb_drums": dw["onset_mdb_drums"]["f"],
        "onset_f_mdb_mix": dw["onset_mdb_mix"]["f"],
        "onset_latency_median_ms": dw["onset_latency"]["median_ms"],
        "onset_latency_p95_ms": dw["onset_latency"]["p95_ms"],
        "beat_f_mdb_mix": dw.get("beat_f_mdb_mix"),
        "beat_f_mdb_drums": dw.get("beat_f_mdb_drums"),
        "beat_latency_median_ms": dw["beat_latency"]["median_ms"],
        "beat_latency_p95_ms": dw["beat_latency"]["p95_ms"],
        "downbeat_agreement": dw.get("downbeat_agreement_mean"),
        "realtime_factor": dw.get("realtime_factor_median"),
    }
    for base in ("aubio_default", "librosa_offline"):
        if base in result["summary"]:
            b = result["summary"][base]
            metrics[f"{base}_onset_f_madmom"] = b["onset_madmom"]["f"]
            metrics[f"{base}_onset_f_mdb_drums"] = b["onset_mdb_drums"]["f"]
            metrics[f"{base}_onset_f_mdb_mix"] = b["onset_mdb_mix"]["f"]
            metrics[f"{base}_beat_f_mdb_mix"] = b.get("beat_f_mdb_mix")
            metrics[f"{base}_beat_f_mdb_drums"] = b.get("beat_f_mdb_drums")
            if b["onset_latency"]["median_ms"] is not None:
                metrics[f"{base}_onset_latency_median_ms"] = b["onset_latency"]["median_ms"]
    return {"metrics": metrics, "goals": result["goals"], "summary": result["summary"],
            "tracks": result["tracks"], "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
            "windows": {"onset_s": ONSET_WINDOW, "beat_s": BEAT_WINDOW, "beat_warmup_s": args.warmup}}
