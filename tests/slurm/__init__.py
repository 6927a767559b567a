"""Tests against a real one-node Slurm (a package, so its conftest does not shadow tests/conftest.py)."""
