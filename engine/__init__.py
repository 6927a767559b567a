"""The mdtui training engine: run as ``python -m engine RUN_DIR``; speaks event protocol v1."""

__version__ = "0.1.0"
