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


@pytest.fixture(autouse=True)
def _close_leaked_links(monkeypatch):
    """Every EdgeLink and IngestServer a test made is closed when it ends, even if an assertion
    skipped the test's own close(): a live zmq socket left to garbage collection blocks
    Context.term() later, in another test, and hangs the suite."""
    from cloud.ingest import IngestServer
    from edge.link.client import EdgeLink

    made: list = []
    for cls in (EdgeLink, IngestServer):
        init = cls.__init__

        def tracking_init(self, *args, _init=init, **kwargs):
            _init(self, *args, **kwargs)
            made.append(self)          # only what was made: a refused constructor holds nothing

        monkeypatch.setattr(cls, "__init__", tracking_init)
    yield
    for obj in reversed(made):
        if isinstance(obj, EdgeLink) and getattr(obj, "_thread", None) is not None:
            obj.close(flush_timeout=0)
        elif isinstance(obj, IngestServer) and getattr(obj, "_thread", None) is not None:
            obj.stop()
