"""Copying ImageNet weights into ibsr's backbones by parameter name, the RGB stem fitted to the
encoder's input channels (shared by the families of this package)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ibsr.errors import IbsrError


def fit_stem(weight: torch.Tensor, in_channels: int, mask_filters: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Fit an RGB first conv (O x 3 x k x k) to `in_channels` inputs.

    1 (grayscale renderings): the sum over RGB, so a gray image r = g = b answers as in the RGB
    network. 4 (RGB + mask): RGB unchanged, and the mask channel's filters (O x 1 x k x k) are
    `mask_filters(weight)`, each family's own choice.
    """
    if in_channels == 3:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if in_channels == 4:
        return torch.cat([weight, mask_filters(weight)], dim=1)
    raise IbsrError(f"cannot adapt the ImageNet stem to {in_channels} input channels (only 1, 3 or 4)")


@torch.no_grad()
def copy_by_name(model: nn.Module, state_dict: dict, stem: str, adapt_stem: Callable[[torch.Tensor], torch.Tensor],
                 may_be_absent: Callable[[str], bool] = lambda name: False) -> tuple[list[str], list[str]]:
    """Copy every tensor of `model` (CMIC's head `fc.*` excepted) from `state_dict`, the stem
    weight `stem` through `adapt_stem` (the model's input channels). Returns (names loaded,
    problems: missing names and shape mismatches), leaving the verdict to the caller."""
    loaded, problems = [], []
    for name, target in model.state_dict().items():
        if name.startswith("fc."):
            continue
        if name not in state_dict:
            if not may_be_absent(name):
                problems.append(f"missing {name}")
            continue
        value = torch.as_tensor(state_dict[name])
        if name == stem:
            value = adapt_stem(value)
        if value.shape != target.shape:
            problems.append(f"{name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            continue
        target.copy_(value.to(target.dtype))
        loaded.append(name)
    return loaded, problems


def first_problems(problems: list[str]) -> str:
    """The first three problems, and how many more."""
    return "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
