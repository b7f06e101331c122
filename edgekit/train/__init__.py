"""The train stage: recipe → run folder."""
