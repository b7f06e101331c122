"""edgekit: YAML recipe → compact, measured, deployable image classifier."""

__version__ = "0.1.0"
