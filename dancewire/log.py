"""Logging set-up: the CLI logs, it does not print diagnostics."""
from __future__ import annotations

import logging
import os


def setup(verbose: int = 0) -> None:
    """WARNING, less by 10 per -v; without -v, $DANCEWIRE_LOG_LEVEL (a number or a name: DEBUG, INFO...)."""
    level = logging.WARNING - 10 * verbose
    env = os.environ.get("DANCEWIRE_LOG_LEVEL", "").strip()
    if env and not verbose:
        named = logging.getLevelName(env.upper())
        level = int(env) if env.lstrip("-").isdigit() else named if isinstance(named, int) else level
    logging.basicConfig(level=max(level, logging.DEBUG),
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
