"""Logging set-up: the CLI logs, it does not print diagnostics."""
from __future__ import annotations

import logging
import os


def setup(verbose: int = 0) -> None:
    level = logging.WARNING - 10 * verbose
    level = int(os.environ.get("DANCEWIRE_LOG_LEVEL", level))
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
