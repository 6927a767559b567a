"""The Textual front end of mdtui (imported lazily: only a bare `mdtui` pays for Textual)."""
