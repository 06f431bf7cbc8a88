"""Fixtures for the link tests: CURVE keys, a cloud ingest subprocess."""
from __future__ import annotations

from pathlib import Path

import pytest

from link_helpers import CloudProcess
from port_helpers import free_port


@pytest.fixture
def keyring(tmp_path):
    """A cloud keypair, an allowed edge keypair and a stranger's keypair in tmp_path/keys."""
    from proto import keys

    d = tmp_path / "keys"
    keys.generate("cloud", d)
    keys.generate("edge1", d)
    keys.generate("stranger", d)
    keys.allow(d / "edge1.key", d)
    return d


@pytest.fixture
def cloud_process(tmp_path):
    made = []

    def make(keydir: Path | None, encoder_hash: str = "enc-1", port: int | None = None) -> CloudProcess:
        cp = CloudProcess(port or free_port(), tmp_path / "cloud.sqlite", keydir, encoder_hash)
        made.append(cp)
        return cp

    yield make
    for cp in made:
        cp.stop()


