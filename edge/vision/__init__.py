"""edge/vision."""
