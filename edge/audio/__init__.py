"""edge/audio."""
