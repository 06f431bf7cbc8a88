"""`dancewire cloud enroll|gallery|token|migrate|prune` on real files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cloud.gallery import Gallery
from dancewire.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path / "home"))
    return tmp_path


def write_jsonl(path, seq, with_beats=True):
    """The edge's analyze stream for one sequence: window records (+ beats, 120 BPM)."""
    lines = [{"type": "summary", "encoder": {"encoder_hash": "standin-v1", "model_id": "standin"}}]
    if with_beats:
        lines += [{"type": "beat", "t": 0.5 * k, "known_at": 0.5 * k, "count": k % 8 + 1, "bpm": 120.0}
                  for k in range(int(seq["times"][-1, 1] / 0.5) + 1)]
    lines += [{"type": "window", "dancer": 1, "t0": float(a), "t1": float(b), "embedding": e.tolist(),
               "rhythm": {"beat_alignment": 0.5}} for (a, b), e in zip(seq["times"], seq["emb"])]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_enroll_jsonl_and_npz(home, ballroom, capsys):
    gal = home / "g.npz"
    by = {s["name"]: s for s in ballroom}
    write_jsonl(home / "DANCE_W_1.jsonl", by["DANCE_W_1"])
    write_jsonl(home / "DANCE_W_3.jsonl", by["DANCE_W_3"], with_beats=False)
    assert main(["cloud", "enroll", str(home / "DANCE_W_1.jsonl"), str(home / "DANCE_W_3.jsonl"), "--style", "waltz",
                 "--routine", "waltz-basic", "--group", "ballroom-club", "--gallery", str(gal), "--score", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == len(by["DANCE_W_1"]["emb"]) + len(by["DANCE_W_3"]["emb"])
    g = Gallery.load(gal)
    assert g.encoder["hash"] == "standin-v1" and g.routines[0] == "waltz-basic"
    w1 = [r for r in g.refs if r.video == "DANCE_W_1"]
    assert w1[0].group == "ballroom-club" and w1[0].score == 8.0
    # with beats: eight-count = count-1 beats before the window's middle (every 4 s at 120 BPM)
    assert [r.phrase for r in w1] == [int(((r.t0 + r.t1) / 2) // 4.0) for r in w1]
    assert "waltz-basic" in g.routine_tables
    # an .npz of embeddings
    r = by["DANCE_R_2"]
    np.savez(home / "rumba.npz", embeddings=r["emb"], t0=r["times"][:, 0], t1=r["times"][:, 1],
             encoder_hash=np.array("standin-v1"))
    c = by["DANCE_C_2"]
    np.savez(home / "chacha.npz", embeddings=c["emb"], encoder_hash=np.array("standin-v1"))
    assert main(["cloud", "enroll", str(home / "rumba.npz"), "--style", "rumba", "--gallery", str(gal)]) == 0
    assert main(["cloud", "enroll", str(home / "chacha.npz"), "--style", "cha-cha", "--gallery", str(gal)]) == 0
    capsys.readouterr()
    assert main(["cloud", "gallery", "--gallery", str(gal)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["styles"]) == {"waltz", "rumba", "cha-cha"} and summary["videos"] == 4
    assert summary["calibration"]["samples"] > 50
    # re-enrolling the same file replaces its references instead of duplicating them
    assert main(["cloud", "enroll", str(home / "rumba.npz"), "--style", "rumba", "--gallery", str(gal)]) == 0
    assert len(Gallery.load(gal)) == summary["references"]


def test_enroll_npz_keeps_its_performances(home, ballroom):
    """An .npz from `dancewire encoder embed` names each window's performance (`video`) and
    sequence (`dancer`): they become the references' videos and ids, unless --video overrides."""
    by = {s["name"]: s for s in ballroom}
    parts = [by["DANCE_R_2"], by["DANCE_R_3"]]
    n = [len(s["emb"]) for s in parts]
    np.savez(home / "two.npz", embeddings=np.concatenate([s["emb"] for s in parts]),
             t0=np.concatenate([s["times"][:, 0] for s in parts]), t1=np.concatenate([s["times"][:, 1] for s in parts]),
             video=np.repeat([s["name"] for s in parts], n), dancer=np.repeat([0, 1], n),
             encoder_hash=np.array("standin-v1"))
    gal = home / "g.npz"
    assert main(["cloud", "enroll", str(home / "two.npz"), "--style", "rumba", "--gallery", str(gal)]) == 0
    g = Gallery.load(gal)
    assert [sum(r.video == s["name"] for r in g.refs) for s in parts] == n
    assert len({r.ref_id for r in g.refs}) == len(g.refs) == sum(n)
    assert main(["cloud", "enroll", str(home / "two.npz"), "--style", "rumba", "--video", "one-take",
                 "--gallery", str(home / "h.npz")]) == 0
    assert {r.video for r in Gallery.load(home / "h.npz").refs} == {"one-take"}


def test_enroll_through_a_command_leaves_no_temporary_files(home, ballroom, monkeypatch, capsys):
    """The edge command's JSONL goes to a temporary folder that is removed once read, whether
    the command worked or failed (enrolling a studio's library must not fill /tmp)."""
    import shlex
    import sys
    import tempfile

    scratch = home / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    write_jsonl(home / "made.jsonl", {s["name"]: s for s in ballroom}["DANCE_W_1"])
    copy = f"{shlex.quote(sys.executable)} -c 'import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])'"
    video = home / "rehearsal.mp4"
    video.write_bytes(b"not read by the stand-in command")
    gal = home / "g.npz"
    assert main(["cloud", "enroll", str(video), "--style", "waltz", "--gallery", str(gal), "--no-fit",
                 "--analyze-cmd", f"{copy} {shlex.quote(str(home / 'made.jsonl'))} {{output}}"]) == 0
    assert {r.video for r in Gallery.load(gal).refs} == {"rehearsal"}
    assert main(["cloud", "enroll", str(video), "--style", "waltz", "--gallery", str(gal), "--no-fit",
                 "--analyze-cmd", f"{shlex.quote(sys.executable)} -c 'raise SystemExit(\"no camera\")'"]) == 2
    assert "edge analysis of" in capsys.readouterr().err
    assert list(scratch.iterdir()) == []


def test_enroll_errors(home, capsys):
    bad = home / "bad.jsonl"
    bad.write_text("{not json\n")
    assert main(["cloud", "enroll", str(bad), "--style", "x", "--gallery", str(home / "g.npz")]) == 2
    assert "not JSON" in capsys.readouterr().err
    empty = home / "empty.jsonl"
    empty.write_text(json.dumps({"type": "beat", "t": 0.5, "count": 1}) + "\n")
    assert main(["cloud", "enroll", str(empty), "--style", "x", "--gallery", str(home / "g.npz")]) == 2
    assert "no window records" in capsys.readouterr().err
    assert main(["cloud", "enroll", str(home / "missing.jsonl"), "--style", "x"]) == 2
    np.savez(home / "other.npz", embeddings=np.ones((3, 16)), encoder_hash=np.array("enc-a"))
    np.savez(home / "other2.npz", embeddings=np.ones((3, 16)), encoder_hash=np.array("enc-b"))
    assert main(["cloud", "enroll", str(home / "other.npz"), "--style", "a", "--gallery", str(home / "h.npz")]) == 0
    assert main(["cloud", "enroll", str(home / "other2.npz"), "--style", "b", "--gallery", str(home / "h.npz")]) == 2
    assert "encoder" in capsys.readouterr().err
    assert main(["cloud", "gallery", "--gallery", str(home / "none.npz")]) == 2


def test_token_migrate_prune(home, capsys):
    assert main(["cloud", "token"]) == 0
    t1 = capsys.readouterr().out.strip()
    assert main(["cloud", "token"]) == 0 and capsys.readouterr().out.strip() == t1
    assert (home / "home" / "cloud-token").stat().st_mode & 0o777 == 0o600
    assert main(["cloud", "token", "--new"]) == 0 and capsys.readouterr().out.strip() != t1
    db = f"sqlite:///{home / 'x.sqlite3'}"
    assert main(["cloud", "migrate", "--set", f"db_url={db}"]) == 0
    from cloud.store import MIGRATIONS
    assert f"schema version {max(v for v, _, _ in MIGRATIONS)} (sqlite)" in capsys.readouterr().out
    assert main(["cloud", "prune", "--set", f"db_url={db}", "--days", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["windows"] == 0
    assert main(["cloud", "migrate", "--set", "db_url=mysql://x"]) == 2


def test_enroll_video_through_the_edge(home, shared_data, capsys):
    """A real video enrolled through `dancewire edge analyze` in its own process (needs the edge's models)."""
    import shlex
    import sys

    from dancewire.paths import REPO_ROOT, cache_dir

    encoder = REPO_ROOT / "edge" / "motion" / "weights" / "encoder.onnx"
    pose = cache_dir() / "models" / "pose_landmarks.onnx"
    if not (encoder.exists() and pose.exists()):
        pytest.skip("edge encoder weights or pose models not built (dancewire models build; encoder training)")
    video = shared_data / "video" / "qengineering_Dance.mp4"
    cmd = f"{shlex.quote(sys.executable)} -m dancewire edge analyze {{input}} --out {{output}} --max-frames 200"
    gal = home / "g.npz"
    assert main(["cloud", "enroll", str(video), "--style", "freestyle", "--gallery", str(gal), "--analyze-cmd", cmd,
                 "--no-fit"]) == 0
    g = Gallery.load(gal)
    assert len(g) >= 3 and g.encoder.get("hash") and g.dim >= 16
    assert {r.video for r in g.refs} == {"qengineering_Dance"}
    assert np.allclose(np.linalg.norm(g.embeddings, axis=1), 1.0, atol=1e-4)


def test_enroll_keypoint_files_by_default(home, shared_data, capsys):
    """Keypoint files (AIST++ .pkl, a ballroom folder) enrol with no extra flags: the edge's
    `encoder embed` runs in its own process with the shipped encoder."""
    from edge.motion.encoder import MotionEncoder

    kp = shared_data / "keypoints"
    pkl = sorted((kp / "aistpp").glob("*.pkl"))[0]
    waltz = kp / "ballroom_tang2018" / "DANCE_W_1"
    gal = home / "g.npz"
    assert main(["cloud", "enroll", str(pkl), "--style", "Break", "--group", "AIST++", "--gallery", str(gal),
                 "--no-fit"]) == 0
    assert main(["cloud", "enroll", str(waltz), "--style", "waltz", "--routine", "waltz-basic", "--gallery",
                 str(gal), "--no-fit"]) == 0
    g = Gallery.load(gal)
    assert g.encoder["hash"] == MotionEncoder().sha256
    assert {r.style for r in g.refs} == {"Break", "waltz"} and {r.video for r in g.refs} == {pkl.stem, "DANCE_W_1"}
    assert sum(r.style == "Break" for r in g.refs) > 20 and np.isfinite(g.embeddings).all()


def test_enroll_cameras_of_one_performance_under_one_video_and_one_dancer(home, ballroom):
    """Two camera files enrolled with one --video (as the help says) keep both cameras' references
    (they replaced each other: same ids); --dancer keeps one track of an .npz too."""
    s = {x["name"]: x for x in ballroom}["DANCE_R_2"]
    n = len(s["emb"])
    for cam in ("front", "side"):
        np.savez(home / f"{cam}.npz", embeddings=s["emb"], t0=s["times"][:, 0], t1=s["times"][:, 1],
                 dancer=np.arange(n) % 2, encoder_hash=np.array("standin-v1"))
    gal = home / "g.npz"
    assert main(["cloud", "enroll", str(home / "front.npz"), str(home / "side.npz"), "--style", "rumba",
                 "--video", "perf1", "--gallery", str(gal), "--no-fit"]) == 0
    g = Gallery.load(gal)
    assert len(g) == 2 * n and {r.video for r in g.refs} == {"perf1"}
    assert main(["cloud", "enroll", str(home / "front.npz"), "--style", "rumba", "--video", "perf1",
                 "--gallery", str(gal), "--no-fit"]) == 0
    assert len(Gallery.load(gal)) == 2 * n                        # re-enrolling a file replaces its own
    one = home / "one.npz"
    assert main(["cloud", "enroll", str(home / "front.npz"), "--style", "rumba", "--dancer", "1",
                 "--gallery", str(one), "--no-fit"]) == 0
    assert len(Gallery.load(one)) == n // 2
    assert main(["cloud", "enroll", str(home / "front.npz"), "--style", "rumba", "--dancer", "7",
                 "--gallery", str(one), "--no-fit"]) == 2


def test_enrolling_files_that_share_a_name_keeps_them_apart(home, ballroom, capsys):
    """DANCE_C_2/skeletons.json and DANCE_C_4/skeletons.json (the ballroom layout), or cam_front/take1
    and cam_side/take1 under one --video: the second replaced the first's references, and "added" said
    12 for a gallery of 6. Re-enrolling an input replaces all its old references, even when its
    windows moved (they were kept beside the new ones)."""
    by = {s["name"]: s for s in ballroom}
    gal = home / "g.npz"
    files = []
    for name, folder in (("DANCE_C_2", "DANCE_C_2"), ("DANCE_C_4", "DANCE_C_4")):
        (home / folder).mkdir()
        write_jsonl(home / folder / "skeletons.jsonl", by[name])
        files.append(home / folder / "skeletons.jsonl")
    assert main(["cloud", "enroll", *map(str, files), "--style", "cha-cha", "--gallery", str(gal), "--no-fit"]) == 0
    g = Gallery.load(gal)
    n = len(by["DANCE_C_2"]["emb"]) + len(by["DANCE_C_4"]["emb"])
    assert json.loads(capsys.readouterr().out)["added"] == len(g) == n
    assert set(g.videos) == {"DANCE_C_2", "DANCE_C_4"}                 # the folders, not "skeletons"
    for cam in ("cam_front", "cam_side"):
        (home / cam).mkdir()
        write_jsonl(home / cam / "take1.jsonl", by["DANCE_C_7"])
    assert main(["cloud", "enroll", str(home / "cam_front/take1.jsonl"), str(home / "cam_side/take1.jsonl"),
                 "--style", "cha-cha", "--video", "take-1", "--gallery", str(gal), "--no-fit"]) == 0
    assert len(Gallery.load(gal)) == n + 2 * len(by["DANCE_C_7"]["emb"])
    moved = dict(by["DANCE_C_7"], times=by["DANCE_C_7"]["times"] + 0.03)   # re-analysed: windows 30 ms later
    write_jsonl(home / "cam_front" / "take1.jsonl", moved)
    assert main(["cloud", "enroll", str(home / "cam_front/take1.jsonl"), "--style", "rumba", "--video", "take-1",
                 "--gallery", str(gal), "--no-fit"]) == 0
    g = Gallery.load(gal)
    assert len(g) == n + 2 * len(by["DANCE_C_7"]["emb"])
    front = [r for r in g.refs if "cam_front/take1#" in r.ref_id]
    assert {r.style for r in front} == {"rumba"} and len(front) == len(by["DANCE_C_7"]["emb"])


def test_an_input_without_an_encoder_is_not_merged_into_a_gallery_with_one(home, ballroom):
    by = {s["name"]: s for s in ballroom}
    gal = home / "g.npz"
    write_jsonl(home / "named.jsonl", by["DANCE_W_1"])
    assert main(["cloud", "enroll", str(home / "named.jsonl"), "--style", "waltz", "--gallery", str(gal), "--no-fit"]) == 0
    np.savez(home / "unnamed.npz", embeddings=by["DANCE_R_2"]["emb"])          # no encoder_hash
    assert main(["cloud", "enroll", str(home / "unnamed.npz"), "--style", "rumba", "--gallery", str(gal)]) == 2
    assert Gallery.load(gal).encoder["hash"] == "standin-v1" and len(Gallery.load(gal)) == len(by["DANCE_W_1"]["emb"])
