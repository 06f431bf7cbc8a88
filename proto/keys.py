"""CURVE key management for the link: keypairs, the cloud's allow-list of edge public keys.

Layout under ``keys_dir()`` (default ``dancewire.paths.state_dir()/keys``):

    NAME.key          public certificate (zmq.auth format; safe to copy to the other side)
    NAME.key_secret   secret certificate (mode 0600; never leaves the machine)
    allowed/NAME.key  edge public keys the cloud accepts (its ZAP allow-list)

A rig generates ``edge-NAME`` and the cloud ``cloud``; the edge gets a copy of
``cloud.key`` (the server key), the cloud puts the edge's ``.key`` into ``allowed/``
(``dancewire keys allow FILE``). Only public certificates ever cross between machines.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dancewire.errors import DancewireError
from dancewire.paths import state_dir

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ALLOWED = "allowed"


class KeysError(DancewireError):
    """A key file that is missing, malformed or in the wrong place."""


def keys_dir(directory: str | os.PathLike | None = None) -> Path:
    path = Path(directory) if directory is not None else state_dir() / "keys"
    path.mkdir(parents=True, exist_ok=True)
    try:
        path.chmod(0o700)
    except OSError:
        pass
    return path


def allowed_dir(directory: str | os.PathLike | None = None) -> Path:
    path = keys_dir(directory) / ALLOWED
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise KeysError(f"bad key name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return name


@dataclass(frozen=True)
class KeyInfo:
    name: str
    public_key: str         # z85, 40 characters
    has_secret: bool
    allowed: bool           # in the allow-list folder (cloud side)
    path: Path


def generate(name: str, directory: str | os.PathLike | None = None, force: bool = False) -> tuple[Path, Path]:
    """Create NAME.key and NAME.key_secret; refuses to overwrite unless `force`."""
    import zmq.auth

    _check_name(name)
    folder = keys_dir(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if (public.exists() or secret.exists()) and not force:
        raise KeysError(f"key {name!r} already exists in {folder} (use --force to replace it)")
    old = os.umask(0o077)
    try:
        pub_file, sec_file = zmq.auth.create_certificates(str(folder), name, metadata={"name": name})
    finally:
        os.umask(old)
    Path(sec_file).chmod(0o600)
    Path(pub_file).chmod(0o644)
    return Path(pub_file), Path(sec_file)


def load_public(path: str | os.PathLike) -> bytes:
    """The z85 public key in a certificate file (public or secret)."""
    import zmq.auth

    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read public key from {path}: {exc}") from None
    return _valid(public, path)


def load_keypair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a NAME.key_secret file."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read keypair from {path}: {exc}") from None
    if not secret:
        raise KeysError(f"{path} holds no secret key (pass the .key_secret file)")
    mode = os.stat(path).st_mode
    if mode & 0o077:
        log.warning("secret key %s can be read by other users (mode %o); make it private: chmod 600 %s",
                    path, mode & 0o777, path)
    return _valid(public, path), _valid(secret, path)


def _valid(key: bytes, path) -> bytes:
    import zmq.utils.z85 as z85

    try:
        if len(key) != 40 or len(z85.decode(key)) != 32:
            raise ValueError
    except Exception:   # z85.decode raises KeyError / struct.error for characters outside its alphabet
        raise KeysError(f"{path}: not a 40-character z85 CURVE key") from None
    return key


def resolve(name_or_path: str | os.PathLike, directory: str | os.PathLike | None = None,
            secret: bool = False) -> Path:
    """A key given by path, or by name in the keys folder."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    folder = keys_dir(directory)
    candidate = folder / (f"{name_or_path}.key_secret" if secret else f"{name_or_path}.key")
    if candidate.exists():
        return candidate
    raise KeysError(f"no key {str(name_or_path)!r} (looked for {p} and {candidate}); "
                    f"create one with: dancewire keys generate NAME")


def allow(public_key_file: str | os.PathLike, directory: str | os.PathLike | None = None,
          name: str | None = None, folder: str | os.PathLike | None = None) -> Path:
    """Add an edge's public key to the allow-list (`folder`, as the cloud's `allow_dir` names one;
    default: the keys folder's own). Writes a public-only certificate."""
    import zmq.auth.certs as certs

    src = Path(public_key_file)
    public = load_public(src)
    stem = src.name.split(".key")[0]
    name = _check_name(name or stem)
    allowed = Path(folder) if folder else allowed_dir(directory)
    allowed.mkdir(parents=True, exist_ok=True)
    target = allowed / f"{name}.key"
    for other in allowed.glob("*.key"):
        if other != target and load_public(other) == public:
            raise KeysError(f"that key is already allowed as {other.stem!r}")
    certs._write_key_file(target, certs._cert_public_banner, public, metadata={"name": name})
    target.chmod(0o644)
    return target


def revoke(name: str, directory: str | os.PathLike | None = None) -> Path:
    target = allowed_dir(directory) / f"{_check_name(name)}.key"
    if not target.exists():
        raise KeysError(f"{name!r} is not in the allow-list {target.parent}")
    target.unlink()
    return target


def list_keys(directory: str | os.PathLike | None = None) -> list[KeyInfo]:
    """Own keypairs and public keys in the keys folder, then the allow-list."""
    folder = keys_dir(directory)
    out: list[KeyInfo] = []
    for pub in sorted(folder.glob("*.key")):
        secret = pub.with_name(pub.name + "_secret")
        out.append(KeyInfo(pub.stem, load_public(pub).decode(), secret.exists(), False, pub))
    for pub in sorted(allowed_dir(directory).glob("*.key")):
        out.append(KeyInfo(pub.stem, load_public(pub).decode(), False, True, pub))
    return out
