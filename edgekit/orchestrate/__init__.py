"""Orchestrators above the stages: `pipeline` (teacher → … → bench) and sweeps (one run per trial)."""
