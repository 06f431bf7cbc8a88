"""model_path() and the manifest: missing or corrupt caches give ModelCacheError, never a
half-usable path. Uses temporary DANCEWIRE_CACHE folders; the real cache is only copied."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dancewire.errors import ModelCacheError
from edge.models import registry


@pytest.fixture()
def temp_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DANCEWIRE_CACHE", str(cache))
    registry.clear_verified()
    yield cache
    registry.clear_verified()


def _fake_cache(cache: Path) -> Path:
    directory = cache / "models"
    directory.mkdir(parents=True)
    files = {}
    for name, info in registry.MODELS.items():
        (directory / info.file).write_bytes(f"not really {name}".encode() * 100)
        files[info.file] = registry.file_record(directory / info.file)
    manifest = {"format": registry.MANIFEST_FORMAT, "files": files,
                "models": {n: {"file": i.file} for n, i in registry.MODELS.items()}}
    registry.write_manifest(directory, manifest)
    return directory


def _assert_one_line_remedy(exc: ModelCacheError) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert msg.startswith("model cache missing/corrupt")
    assert "dancewire models build" in msg


def test_model_path_ok(temp_cache):
    directory = _fake_cache(temp_cache)
    assert registry.model_path("pose_detector") == directory / "pose_detector.onnx"
    assert registry.model_path("pose_landmarks") == directory / "pose_landmarks.onnx"


def test_no_cache_at_all(temp_cache):
    with pytest.raises(ModelCacheError) as info:
        registry.model_path("pose_detector")
    _assert_one_line_remedy(info.value)


def test_missing_file(temp_cache):
    directory = _fake_cache(temp_cache)
    (directory / "pose_landmarks.onnx").unlink()
    with pytest.raises(ModelCacheError) as info:
        registry.model_path("pose_landmarks")
    _assert_one_line_remedy(info.value)
    assert "pose_landmarks.onnx" in str(info.value)
    registry.model_path("pose_detector")  # the others are still fine


def test_corrupt_file_same_size(temp_cache):
    directory = _fake_cache(temp_cache)
    path = directory / "pose_detector.onnx"
    registry.model_path("pose_detector")           # verified once ...
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))                  # ... then changed: size equal, mtime not
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ModelCacheError) as info:
        registry.model_path("pose_detector")
    _assert_one_line_remedy(info.value)
    assert "sha256" in str(info.value)


def test_truncated_file(temp_cache):
    directory = _fake_cache(temp_cache)
    path = directory / "pose_landmarks.onnx"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ModelCacheError) as info:
        registry.model_path("pose_landmarks")
    _assert_one_line_remedy(info.value)


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"format": 99, "files": {}}'])
def test_bad_manifest(temp_cache, content):
    directory = _fake_cache(temp_cache)
    (directory / registry.MANIFEST).write_text(content)
    with pytest.raises(ModelCacheError) as info:
        registry.model_path("pose_detector")
    _assert_one_line_remedy(info.value)


def test_model_missing_from_manifest(temp_cache):
    directory = _fake_cache(temp_cache)
    manifest = registry.read_manifest(directory)
    del manifest["models"]["pose_landmarks"]
    registry.write_manifest(directory, manifest)
    with pytest.raises(ModelCacheError) as info:
        registry.model_path("pose_landmarks")
    _assert_one_line_remedy(info.value)


def test_unknown_name(temp_cache):
    _fake_cache(temp_cache)
    with pytest.raises(ModelCacheError, match="unknown model 'nope'"):
        registry.model_path("nope")


def test_extensible_by_manifest(temp_cache):
    """A model another build step adds to the manifest is served without code changes."""
    directory = _fake_cache(temp_cache)
    (directory / "encoder.onnx").write_bytes(b"encoder")
    manifest = registry.read_manifest(directory)
    manifest["files"]["encoder.onnx"] = registry.file_record(directory / "encoder.onnx")
    manifest["models"]["encoder"] = {"file": "encoder.onnx"}
    registry.write_manifest(directory, manifest)
    assert registry.model_path("encoder") == directory / "encoder.onnx"


def test_hash_is_computed_once_per_process(temp_cache, monkeypatch):
    _fake_cache(temp_cache)
    calls = []
    real = registry.sha256_file
    monkeypatch.setattr(registry, "sha256_file", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    for _ in range(5):
        registry.model_path("pose_detector")
    assert len(calls) == 1


def test_real_cache_copy_corrupted(built_models, temp_cache):
    """The real models, copied into a temporary cache, then damaged there."""
    shutil.copytree(built_models, temp_cache / "models")
    assert registry.model_path("pose_landmarks").parent == temp_cache / "models"
    target = temp_cache / "models" / "pose_landmarks.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ModelCacheError) as info:
        registry.model_path("pose_landmarks")
    _assert_one_line_remedy(info.value)
    (temp_cache / "models" / "pose_detector.onnx").unlink()
    with pytest.raises(ModelCacheError):
        registry.model_path("pose_detector")


def test_cli_reports_one_line(built_models, temp_cache):
    """`dancewire models info` on a broken cache: exit 2 and one line on stderr."""
    shutil.copytree(built_models, temp_cache / "models")
    (temp_cache / "models" / "pose_detector.onnx").unlink()
    proc = subprocess.run([sys.executable, "-m", "dancewire", "models", "info"], capture_output=True,
                          text=True, env={**os.environ, "DANCEWIRE_CACHE": str(temp_cache)}, timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("dancewire: error: model cache missing/corrupt")
    assert "dancewire models build" in lines[-1]
