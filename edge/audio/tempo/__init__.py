"""Online tempo and beat tracking."""
from edge.audio.tempo.beats import BeatTracker

__all__ = ["BeatTracker"]
