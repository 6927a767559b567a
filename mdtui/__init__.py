"""mdtui: a keyboard-driven terminal experiment manager for CNN-classifier research."""

__version__ = "0.1.0"
