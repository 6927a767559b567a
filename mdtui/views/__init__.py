"""Headless state that the TUI and the CLI render (no Textual here)."""
