"""Shared fixtures: the third-party data folder and the built models."""
from __future__ import annotations

from pathlib import Path

import pytest

from dancewire.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $DANCEWIRE_DATA); tests that need it skip when it is absent."""
    root = shared_data_dir()
    if not (root / "README.md").exists():
        pytest.skip(f"shared data not found at {root} (set DANCEWIRE_DATA)")
    return root
