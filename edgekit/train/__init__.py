"""The train stage: recipe → run folder.

Importing it binds the registries a recipe's `train.optimizer`, `train.scheduler` and `distill` sections
choose from, so any stage that validates a recipe (export, prune, sweeps) has them.
"""

from edgekit.train import losses, optim  # noqa: F401  (registering binds them to the recipe schema)
