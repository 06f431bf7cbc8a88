"""edge/models."""
