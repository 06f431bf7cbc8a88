"""Runtime access to the model cache: ``model_path(name)`` and the manifest behind it.

The cache lives in ``dancewire.paths.cache_dir() / "models"`` and is written only by
``dancewire models build``. Its ``manifest.json`` records every file's size and sha256
and, per model name, which file holds it and its tensors. ``model_path`` checks a file
against the manifest before handing it out (the hash once per process and file version:
size and mtime must match the checked ones afterwards), and raises ``ModelCacheError``
with a one-line remedy when anything is missing or does not match.

Other areas add their models by writing entries into ``MODELS`` and the manifest's
``models`` table (see ``write_manifest``); ``model_path`` knows nothing model-specific.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from dancewire.errors import ModelCacheError
from dancewire.paths import cache_dir

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ModelInfo:
    """A model that some build step puts into the cache."""
    name: str
    file: str
    description: str
    build_command: str = "dancewire models build"


# Known model names -> where the build puts them. Extend (e.g. "encoder") from its owner's
# build step; `model_path` also accepts any name found in the manifest's "models" table.
MODELS: dict[str, ModelInfo] = {
    "pose_detector": ModelInfo("pose_detector", "pose_detector.onnx",
                               "BlazePose person detector, NCHW, dynamic batch"),
    "pose_landmarks": ModelInfo("pose_landmarks", "pose_landmarks.onnx",
                                "BlazePose GHUM full landmarks without segmentation/heatmap, "
                                "NCHW, dynamic batch"),
    "pose_landmarks_full": ModelInfo("pose_landmarks_full", "pose_landmarks_full.onnx",
                                     "BlazePose GHUM full landmarks, all five outputs, NCHW, batch 1"),
}

_lock = threading.Lock()
_verified: dict[tuple[str, str], tuple[int, int]] = {}   # (path, sha256) -> (size, mtime_ns)


def models_dir() -> Path:
    """``cache_dir()/models`` (not created here)."""
    return cache_dir() / "models"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _error(what: str, build_command: str = "dancewire models build") -> ModelCacheError:
    return ModelCacheError(f"model cache missing/corrupt ({what}): run `{build_command}`")


def read_manifest(directory: str | Path | None = None) -> dict:
    """The parsed manifest; ``ModelCacheError`` when it is absent or unreadable."""
    directory = Path(directory) if directory is not None else models_dir()
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise _error(f"no {path}") from None
    except (OSError, ValueError) as exc:
        raise _error(f"unreadable {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise _error(f"{path} has an unknown format")
    return manifest


def verify_file(path: str | Path, sha256: str, size: int | None = None, *, rehash: bool = False,
                build_command: str = "dancewire models build") -> Path:
    """Check one file against its recorded hash. Cheap after the first call in a process."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise _error(f"{path.name} missing", build_command) from None
    if size is not None and st.st_size != size:
        raise _error(f"{path.name} has {st.st_size} bytes, expected {size}", build_command)
    key = (str(path), sha256)
    stamp = (st.st_size, st.st_mtime_ns)
    with _lock:
        if not rehash and _verified.get(key) == stamp:
            return path
    digest = sha256_file(path)
    if digest != sha256:
        with _lock:
            _verified.pop(key, None)
        raise _error(f"{path.name} sha256 mismatch", build_command)
    with _lock:
        _verified[key] = stamp
    return path


def model_entry(name: str, directory: str | Path | None = None) -> dict:
    """The manifest's record for a model: file, tensors, source, licence."""
    directory = Path(directory) if directory is not None else models_dir()
    info = MODELS.get(name)
    build_command = info.build_command if info else "dancewire models build"
    try:
        manifest = read_manifest(directory)
    except ModelCacheError:
        if info is None:
            raise ModelCacheError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})") from None
        raise
    entry = manifest.get("models", {}).get(name)
    if entry is None:
        if info is None:
            known = sorted(set(MODELS) | set(manifest.get("models", {})))
            raise ModelCacheError(f"unknown model {name!r} (known: {', '.join(known)})")
        raise _error(f"{name} not in manifest", build_command)
    return entry


def model_path(name: str, directory: str | Path | None = None) -> Path:
    """Path of a verified model file, e.g. ``model_path("pose_landmarks")``.

    Raises ``ModelCacheError`` ("model cache missing/corrupt (...): run `dancewire models
    build`") when the manifest, the file or its hash is wrong.
    """
    directory = Path(directory) if directory is not None else models_dir()
    entry = model_entry(name, directory)
    info = MODELS.get(name)
    build_command = info.build_command if info else "dancewire models build"
    file = entry.get("file", "")
    record = read_manifest(directory)["files"].get(file)
    if not file or record is None or "sha256" not in record:
        raise _error(f"{name}: no hash recorded for {file or '?'}", build_command)
    return verify_file(directory / file, record["sha256"], record.get("size"),
                       build_command=build_command)


def verify_cache(directory: str | Path | None = None, *, rehash: bool = True) -> dict:
    """Check every file the manifest lists; returns the manifest or raises ModelCacheError."""
    directory = Path(directory) if directory is not None else models_dir()
    manifest = read_manifest(directory)
    for file, record in manifest["files"].items():
        verify_file(directory / file, record["sha256"], record.get("size"), rehash=rehash)
    return manifest


def file_record(path: str | Path) -> dict:
    path = Path(path)
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def write_manifest(directory: str | Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (a reader sees the old or the new one, never half)."""
    directory = Path(directory)
    path = directory / MANIFEST
    tmp = directory / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def clear_verified() -> None:
    """Forget which files this process already hashed (tests)."""
    with _lock:
        _verified.clear()
