"""dancewire: shared core (CLI entry point, settings loader, errors, paths, progress)."""

__version__ = "0.1.0"
