from dataclasses import dataclass, field

import pytest

from dancewire.config import load
from dancewire.errors import DancewireError


@dataclass
class Inner:
    period: int = 5
    ratio: float = 0.5
    enabled: bool = True
    names: tuple[str, ...] = ("a",)


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_file_env_and_overrides_apply_in_order(tmp_path, monkeypatch):
    f = tmp_path / "s.toml"
    f.write_text('name = "file"\n[inner]\nperiod = 7\nratio = 2\n')
    monkeypatch.setenv("DWTEST_INNER__PERIOD", "9")
    monkeypatch.setenv("DWTEST_INNER__ENABLED", "no")
    s = load(Outer, f, "DWTEST", ["inner.names=b,c", "name=cli"])
    assert s.name == "cli"
    assert s.inner.period == 9 and isinstance(s.inner.period, int)
    assert s.inner.ratio == 2.0 and isinstance(s.inner.ratio, float)
    assert s.inner.enabled is False
    assert s.inner.names == ("b", "c")


def test_unknown_and_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(DancewireError, match="unknown setting 'inner.nope'"):
        load(Outer, overrides=["inner.nope=1"])
    with pytest.raises(DancewireError, match="bad value for setting 'inner.period'"):
        load(Outer, overrides=["inner.period=abc"])
    bad = tmp_path / "bad.toml"
    bad.write_text("this is [not toml")
    with pytest.raises(DancewireError, match="cannot read settings file"):
        load(Outer, bad)


def test_typed_toml_values_are_checked_against_the_fields(tmp_path):
    """TOML gives numbers and booleans: a number where text is wanted becomes text (`camera = 0`),
    anything else of the wrong type, or a plain value for a whole section, is a clear error."""
    f = tmp_path / "s.toml"
    f.write_text('name = 0\n[inner]\nperiod = 7.0\nratio = 1\nnames = ["p", "q"]\n')
    s = load(Outer, f)
    assert s.name == "0" and s.inner.period == 7 and isinstance(s.inner.period, int) and s.inner.names == ("p", "q")
    for text, match in (("[inner]\nperiod = 2.5\n", "expected an integer, got 2.5"),
                        ("[inner]\nenabled = 1\n", "expected true or false"),
                        ("[inner]\nratio = true\n", "expected a number"),
                        ('name = ["a"]\n', "expected text"),
                        ("inner = 3\n", "this is a section")):
        f.write_text(text)
        with pytest.raises(DancewireError, match=match):
            load(Outer, f)
    with pytest.raises(DancewireError, match="this is a section"):
        load(Outer, overrides=["inner=3"])


def test_optional_fields_get_their_type_or_none():
    """`int | None` (PEP 604) fields: "44100" is the int 44100, "none" is None (it stayed the text "44100")."""
    from edge.settings import load_edge_settings

    s = load_edge_settings(None, ["audio.mic_sample_rate=44100", "audio.mic_device=USB"])
    assert s.audio.mic_sample_rate == 44100 and isinstance(s.audio.mic_sample_rate, int)
    assert load_edge_settings(None, ["audio.mic_sample_rate=none"]).audio.mic_sample_rate is None
    with pytest.raises(DancewireError, match="mic_sample_rate"):
        load_edge_settings(None, ["audio.mic_sample_rate=fast"])


@pytest.mark.parametrize("override, match", [
    ("engine.backend=bogus", "engine settings: backend 'bogus'"),
    ("engine.precision=fp8", "engine settings: precision"),
    ("source.frame_queue=0", "source settings: frame_queue"),
    ("link.dtype=bogus", "link settings: dtype"),
    ("link.spool_on_full=bogus", "link settings: spool_on_full"),
    ("motion.hop_s=0", "motion settings: window_s and hop_s"),
    ("motion.normalization=z", "motion settings: normalization"),
    ("vision.keypoint_score=bogus", "vision settings: keypoint_score"),
    ("audio.sample_rate=100", "audio settings: sample_rate"),
    ("link.endpoint=127.0.0.1:5555", "link settings: endpoint"),     # the link thread raised it, over and over
    ("link.endpoint=tcp://cloud:0", "link settings: endpoint"),
])
def test_edge_settings_out_of_range_or_choice_fail_at_load(override, match):
    """Each was a traceback (or, for hop_s=0, a hang) once the pipeline ran; now one error at start."""
    from edge.settings import load_edge_settings

    with pytest.raises(DancewireError, match=match):
        load_edge_settings(None, [override])
    assert load_edge_settings(None, []).source.camera == "0"


@pytest.mark.parametrize("override, match", [("api_port=70000", "api_port"), ("retention_days=-1", "retention"),
                                             ("classify.k=0", "k >= 1"), ("aggregate.switch_hold=0", "switch_hold")])
def test_cloud_settings_out_of_range_fail_at_load(override, match):
    """`cloud serve --set api_port=70000` printed its URL and then hung in uvicorn, silently."""
    from cloud.settings import load_settings

    with pytest.raises(DancewireError, match=match):
        load_settings(None, [override])


def test_bad_ports_and_threads_are_argument_errors(capsys):
    from dancewire.cli import main

    for argv in (["up", "--api-port", "70000"], ["up", "--zmq-port", "-1"], ["edge", "run", "--demo", "--page", "99999"],
                 ["up", "--demo", "--source", "x.mp4"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
    assert "not in 0..65535" in capsys.readouterr().err
    assert main(["edge", "analyze", "nothing.mp4", "--threads", "0"]) == 2      # refused, not ignored
    assert "threads must be >= 1" in capsys.readouterr().err
    assert main(["cloud"]) == 2 and "enroll" in capsys.readouterr().out        # the cloud's own commands


@pytest.mark.parametrize("env, verbose, level", [("DEBUG", 0, 10), ("info", 0, 20), ("30", 0, 30), ("30", 2, 10),
                                                 ("", 1, 20)])
def test_the_log_level_takes_names_and_v_wins(monkeypatch, env, verbose, level):
    import logging

    from dancewire import log

    monkeypatch.setenv("DANCEWIRE_LOG_LEVEL", env)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    log.setup(verbose)
    assert root.level == level


def test_up_allows_its_edge_key_where_the_cloud_looks(tmp_path, monkeypatch):
    """With the cloud's allow_dir set, `up` put the edge's key into the default folder; the cloud then
    refused the edge for ever while `up` reported windows sent."""
    from dancewire.up import ensure_keys
    from proto import keys

    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path / "home"))
    ensure_keys(str(tmp_path / "allowed-here"))
    assert [p.name for p in (tmp_path / "allowed-here").glob("*.key")] == ["edge-local.key"]
    assert keys.load_public(tmp_path / "allowed-here" / "edge-local.key") == \
        keys.load_public(keys.keys_dir() / "edge-local.key")
