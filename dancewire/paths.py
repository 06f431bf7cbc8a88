"""Where things live: the shared data folder and the local cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED_DIR = REPO_ROOT / "cloud" / "seed"      # the seed gallery `dancewire up` enrols on a fresh cloud


def shared_data_dir() -> Path:
    """Third-party test/training data: $DANCEWIRE_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("DANCEWIRE_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """Build cache (models, engines, venvs): $DANCEWIRE_CACHE, else ~/.cache/dancewire."""
    env = os.environ.get("DANCEWIRE_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "dancewire"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir() -> Path:
    """Per-rig state (keys, calibration, spool, SQLite): $DANCEWIRE_HOME, else ~/.local/share/dancewire."""
    env = os.environ.get("DANCEWIRE_HOME")
    path = Path(env) if env else Path.home() / ".local" / "share" / "dancewire"
    path.mkdir(parents=True, exist_ok=True)
    return path
