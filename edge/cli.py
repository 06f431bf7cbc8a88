"""`dancewire edge|models|audio|encoder ...`: each edge area registers its own subcommand."""
from __future__ import annotations

import argparse
import importlib

# (subcommand, module exposing `register(subparsers)`), in help order.
AREA_COMMANDS = (
    ("edge.pipeline_cli", "edge"),
    ("edge.models.cli", "models"),
    ("edge.audio.cli", "audio"),
    ("edge.motion.cli", "encoder"),
)


def register(sub: argparse._SubParsersAction) -> None:
    for module_name, _ in AREA_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(sub)
