"""The model zoo: every module in this package is imported, so each family registers itself in MODELS."""

import importlib
import pkgutil

from edgekit.models.contract import MODELS, Classifier, build_model, from_checkpoint
from edgekit.models.count import count_macs, count_params
from edgekit.models.spec import ModelSpec

# Adding a family is adding one file: importing it runs its @MODELS.register.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "MODELS",
    "Classifier",
    "ModelSpec",
    "build_model",
    "from_checkpoint",
    "count_macs",
    "count_params",
]
