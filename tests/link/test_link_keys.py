"""`dancewire keys ...`: generate, list, allow, revoke."""
from __future__ import annotations

import stat

import pytest

from dancewire.cli import main
from proto import keys


def test_generate_list_allow_revoke(tmp_path, capsys):
    d = tmp_path / "keys"
    assert main(["keys", "generate", "cloud", "--dir", str(d)]) == 0
    assert main(["keys", "--dir", str(d), "generate", "edge-a"]) == 0
    secret = d / "edge-a.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" not in (d / "edge-a.key").read_text()
    assert main(["keys", "generate", "cloud", "--dir", str(d)]) == 2        # no silent overwrite
    assert main(["keys", "allow", str(d / "edge-a.key"), "--dir", str(d)]) == 0
    allowed = d / "allowed" / "edge-a.key"
    assert "secret-key" not in allowed.read_text()
    capsys.readouterr()
    assert main(["keys", "list", "--dir", str(d)]) == 0
    out = capsys.readouterr().out
    pub = keys.load_public(d / "edge-a.key").decode()
    assert "keypair   cloud" in out and "allowed   edge-a" in out and pub in out
    assert main(["keys", "revoke", "edge-a", "--dir", str(d)]) == 0
    assert not allowed.exists()


def test_default_folder_is_under_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCEWIRE_HOME", str(tmp_path / "home"))
    assert main(["keys", "generate", "rig1"]) == 0
    assert (tmp_path / "home" / "keys" / "rig1.key_secret").exists()


def test_allow_refuses_garbage_and_a_secret_never_gets_copied(tmp_path):
    d = tmp_path / "keys"
    bad = tmp_path / "bad.key"
    bad.write_text("curve\n    public-key = \"nope\"\n")
    with pytest.raises(keys.KeysError):
        keys.allow(bad, d)
    pub, sec = keys.generate("e", d)
    target = keys.allow(sec, d, name="from-secret")      # given the secret file by mistake
    assert "secret-key" not in target.read_text()
    with pytest.raises(keys.KeysError):
        keys.allow(pub, d, name="again")                  # same key twice
    with pytest.raises(keys.KeysError):
        keys.generate("../evil", d)


def test_a_key_with_characters_outside_z85_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text('curve\n    public-key = "' + "~" * 40 + '"\n')   # 40 characters, "~" is not z85
    with pytest.raises(keys.KeysError, match="z85"):
        keys.load_public(bad)
    d = tmp_path / "keys"
    keys.generate("cloud", d)
    (keys.allowed_dir(d) / "broken.key").write_text(bad.read_text())
    with pytest.raises(keys.KeysError):                 # what the cloud's allow-list reload catches
        keys.list_keys(d)


def test_a_secret_key_others_can_read_is_warned_about(tmp_path, caplog):
    _, sec = keys.generate("e", tmp_path / "keys")
    with caplog.at_level("WARNING"):
        keys.load_keypair(sec)
    assert "can be read by other users" not in caplog.text
    sec.chmod(0o644)
    with caplog.at_level("WARNING"):
        keys.load_keypair(sec)
    assert "can be read by other users" in caplog.text and "chmod 600" in caplog.text
