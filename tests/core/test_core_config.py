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
