"""edge-tsm: online Temporal Shift Module video classification for edge devices."""
__version__ = "0.1.0"
