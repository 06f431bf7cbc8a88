"""edge/motion."""
