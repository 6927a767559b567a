"""experiments.toml -> a validated Plan of Experiment specs (extends, sweeps, from, line map)."""
