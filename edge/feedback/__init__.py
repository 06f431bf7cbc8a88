"""edge/feedback."""
