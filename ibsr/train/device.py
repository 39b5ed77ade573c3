"""The torch device a training command runs on, from its option value, and its precision."""

from __future__ import annotations

import torch

from ibsr.errors import IbsrError
from ibsr.precision import cpu_has_bf16


def torch_device(name: str, option: str = "--device") -> torch.device:
    """"auto" = CUDA when torch sees a GPU, else the CPU; anything else must be a torch device
    that exists here. `option` names the setting in errors (e.g. "train.device")."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise IbsrError(f"{option} = {name!r} is not a torch device (auto, cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IbsrError(f"{option} = {name!r} but torch sees no CUDA GPU; use auto or cpu")
    return device


def autocast(device: torch.device, mode: str):
    """bf16 autocast for `train.amp`: "auto" = on CUDA, or on a CPU with native bf16."""
    enabled = mode == "bf16" or (mode == "auto" and (device.type == "cuda" or cpu_has_bf16()))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
