"""edge/link."""
