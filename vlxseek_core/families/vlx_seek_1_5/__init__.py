"""VLX-Seek 1.5 model family (spec vlx-seek-1.5)."""
