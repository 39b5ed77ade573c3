"""Copying ImageNet weights into ibsr's backbones by parameter name (ResNet, EfficientNet-Lite)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


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
