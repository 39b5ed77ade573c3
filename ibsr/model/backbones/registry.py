"""Architecture name -> `Backbone`: what a CMIC encoder needs to know of the network it stands on.

A family (ResNet, EfficientNet-Lite) subclasses `Backbone` once, in its own module of this
package, and registers each of its architectures with `@register(name, ...)`; the registry holds
one instance per name. Everything that depends on the architecture (the encoders, the config's
check, the training's starting weights, the Jittor import) asks `get_backbone(name)`.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ibsr.errors import IbsrError


class Backbone:
    """One registered architecture (`name`) of a family."""

    family = ""  # the family's name in messages, e.g. "ResNet"
    # The encoder's attribute that holds the network: the prefix of its parameter names in
    # checkpoints (`query_encoder.<module_name>.conv1.weight`), so it may never change.
    module_name = ""
    packaged_imagenet = False  # whether an installed package carries its ImageNet weights

    def __init__(self, name: str):
        self.name = name

    def build(self, in_channels: int, width: int, embed_dim: int) -> nn.Module:
        """The network with CMIC's head `fc` (BatchNorm1d(C) -> Linear(C, embed_dim)): B x
        in_channels x H x W -> B x embed_dim, not normalized. `in_channels` is 4 for queries
        (RGB + mask), 1 for renderings; `width` is the base width where the family has one."""
        raise NotImplementedError

    def load_imagenet(self, net: nn.Module, state_dict: dict | None = None) -> list[str]:
        """Copy ImageNet weights (`state_dict`, or the packaged ones when None) into `net` by
        name, the first conv fitted to its input channels; CMIC's head keeps its own
        initialization. Returns the names loaded; weights that do not fit are an `IbsrError`."""
        raise NotImplementedError

    def jittor_width(self, arrays: dict[str, np.ndarray]) -> int | None:
        """The base width if `arrays` (one encoder's tensors in the authors' Jittor checkpoint,
        found under `module_name` and named as in `build`'s network, that prefix removed) are
        this architecture; None otherwise, and always for a family their checkpoints never hold."""
        return None


_REGISTRY: dict[str, Backbone] = {}


def register(*names: str):
    """Class decorator: register an instance of the `Backbone` subclass under each name."""
    def decorate(cls: type[Backbone]) -> type[Backbone]:
        for name in names:
            if name in _REGISTRY:
                raise ValueError(f"backbone {name!r} is registered twice")
            _REGISTRY[name] = cls(name)
        return cls
    return decorate


def backbone_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_backbone(name: str) -> Backbone:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise IbsrError(f"unknown backbone {name!r}; choose one of {', '.join(_REGISTRY)}") from None
