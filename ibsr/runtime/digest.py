"""A fingerprint of a module's numbers: two modules with the same digest give the same outputs
in eval mode. The ONNX cache (onnx_backend.py) names its files by it, so a file is only ever
reused for the same weights; `ibsr.model.rendering_id` is the rendering encoder's, by which an
index accepts a query model whose views embed exactly as its own encoder's.
"""

from __future__ import annotations

import hashlib

import torch


def module_digest(module: torch.nn.Module, tag: str) -> str:
    """First 16 hex digits of a SHA-256 over `tag` and the module's weights and BatchNorm
    statistics (as float32, in name order): equal digests, equal outputs in eval mode.
    BatchNorm's `num_batches_tracked` is left out: it never changes an eval-mode output."""
    digest = hashlib.sha256(tag.encode())
    for name, value in sorted(module.state_dict().items()):
        if name.endswith("num_batches_tracked"):
            continue
        tensor = value.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]
