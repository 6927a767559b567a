"""This machine: atomic files and locks, process identity, GPUs (NVML or fake)."""
