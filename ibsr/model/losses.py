"""CMIC's training objective: cross-modal instance + category contrastive losses.

A batch holds S unique shapes and B images; `scores[i, j]` is the attention score of shape i
for image j (S x B; `CMIC.score` gives B x S, so pass its transpose). With temperature tau,
each image's similarities are normalized over the batch's shapes:

    p(i | j) = exp(scores[i, j] / tau) / sum_k exp(scores[k, j] / tau)

- instance loss: mean over images j of -log p(shape of j | j)  (InfoNCE, one positive).
- category loss: mean over images j of the mean, over the batch shapes i of j's category,
  of -log p(i | j)  (every same-category shape is pulled closer).
- total = instance + beta1 * category, beta1 = 0.2, tau = 0.1 (the paper's values).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

TAU = 0.1
BETA1 = 0.2


class CMICLoss(NamedTuple):
    total: torch.Tensor
    instance: torch.Tensor
    category: torch.Tensor


def instance_loss(scores: torch.Tensor, image_shape: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """InfoNCE of each image (column) against all S shapes, target its own shape."""
    return F.cross_entropy(scores.t() / tau, image_shape.long())


def category_loss(
    scores: torch.Tensor,
    shape_category: torch.Tensor,
    image_category: torch.Tensor,
    tau: float = TAU,
) -> torch.Tensor:
    """Mean over images of the mean -log p(i | j) over the batch shapes i of j's category.

    An image whose category has no shape in the batch (impossible when its own shape is in the
    batch with a consistent category) contributes 0 rather than NaN.
    """
    log_p = torch.log_softmax(scores / tau, dim=0)  # S x B, normalized over shapes
    same = (shape_category.view(-1, 1) == image_category.view(1, -1)).to(log_p.dtype)
    per_image = -(log_p * same).sum(dim=0) / same.sum(dim=0).clamp(min=1)
    return per_image.mean()


def cmic_loss(
    scores: torch.Tensor,
    image_shape: torch.Tensor,
    shape_category: torch.Tensor,
    image_category: torch.Tensor,
    tau: float = TAU,
    beta1: float = BETA1,
) -> CMICLoss:
    """The paper's objective on one batch: `scores` S x B, `image_shape` B indices into the S
    shapes, `shape_category` S ints, `image_category` B ints."""
    instance = instance_loss(scores, image_shape, tau)
    category = category_loss(scores, shape_category, image_category, tau)
    return CMICLoss(instance + beta1 * category, instance, category)
