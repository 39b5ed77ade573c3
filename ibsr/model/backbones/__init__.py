"""The backbones a CMIC encoder can stand on: one module per family, each registering its
architectures (`registry.py`). Importing the package imports every module in it, so a new
family is one new file here, found without being listed anywhere."""

import importlib
import pkgutil

from ibsr.model.backbones.registry import Backbone, backbone_names, get_backbone, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Backbone", "backbone_names", "get_backbone", "register"]
