"""The one JSON Lines output stream of `analyze` commands (frames, onsets, beats, windows, summary)."""
from __future__ import annotations

import json
from pathlib import Path

from dancewire.errors import DancewireError


class JsonlWriter:
    """Writes one JSON object per line; `-` means standard output."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            self._f = open(1, "w", closefd=False) if self.path == "-" else open(self.path, "w")
        except OSError as exc:
            raise DancewireError(f"cannot write {self.path}: {exc.strerror}") from None
        self.count = 0

    def write(self, record: dict) -> None:
        try:
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:
            raise DancewireError(f"cannot write {self.path}: {exc.strerror}") from None
        self.count += 1

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
