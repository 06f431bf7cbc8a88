"""The one JSON Lines output stream of `analyze` commands (frames, onsets, beats, windows, summary)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dancewire.errors import DancewireError


class JsonlWriter:
    """Writes one JSON object per line; `-` means standard output.

    `atomic`: the records go to a hidden temporary file beside `path`, which replaces `path` only
    when the block ends without an error. A failed analysis (corrupt input, full disk, Ctrl-C)
    leaves an existing output file as it was. Off for live streams that others read as they grow.
    """

    def __init__(self, path: str | Path, atomic: bool = False):
        self.path = str(path)
        self._tmp: str | None = None
        try:
            if self.path == "-":
                self._f = open(1, "w", closefd=False)
            elif atomic:
                target = Path(self.path)
                fd, self._tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial",
                                                 dir=target.parent)
                mask = os.umask(0)
                os.umask(mask)
                os.fchmod(fd, 0o666 & ~mask)          # the mode a plain open() would give
                self._f = os.fdopen(fd, "w")
            else:
                self._f = open(self.path, "w")
        except OSError as exc:
            raise DancewireError(f"cannot write {self.path}: {exc.strerror}") from None
        self.count = 0

    def write(self, record: dict) -> None:
        try:
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:
            raise DancewireError(f"cannot write {self.path}: {exc.strerror}") from None
        self.count += 1

    def close(self, keep: bool = True) -> None:
        """Close; an atomic writer then puts its file in place (`keep`) or removes it."""
        try:
            self._f.close()
            if self._tmp is not None and keep:
                os.replace(self._tmp, self.path)
        except OSError as exc:
            keep = False
            raise DancewireError(f"cannot write {self.path}: {exc.strerror}") from None
        finally:
            if self._tmp is not None and not keep and os.path.exists(self._tmp):
                os.unlink(self._tmp)

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(keep=exc_type is None)
