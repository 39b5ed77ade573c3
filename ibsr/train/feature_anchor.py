"""A penalty that holds the query backbone's features near ImageNet's on the training photos.

The weight anchor (`train.imagenet_anchor`, L2-SP) holds the weights; this one holds what they
compute (feature distillation, as in Learning without Forgetting, Li & Hoiem 2016): a frozen copy
of the query backbone with its packaged ImageNet weights sees each batch's photos too, and the
loss gains `train.feature_anchor` x the mean squared difference of the two pooled feature
vectors. Training on synthetic photos alone may drift the features wherever the contrastive loss
does not look; the penalty keeps them close to the ones that ImageNet's real photos taught,
directions the loss does not need included.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ibsr.model.cmic import QueryEncoder


class FeatureAnchor:
    def __init__(self, encoder: QueryEncoder, weight: float):
        self.weight = weight
        self.reference = copy.deepcopy(encoder.backbone)
        encoder.spec.load_imagenet(self.reference)  # the mask channel's filters zero: ImageNet's RGB features
        self.reference.requires_grad_(False)
        for module in self.reference.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0  # batch statistics in training mode, ImageNet's running ones kept
        self.last_penalty = 0.0

    def embed(self, encoder: QueryEncoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the query embeddings `encoder(x)` would give, the penalty): one forward through
        `encoder` that keeps its pooled features for the comparison."""
        backbone: nn.Module = encoder.backbone
        # BatchNorm in the same mode as the trained copy, module by module (batch statistics in
        # training, running ones in eval and in frozen parts): the penalty then measures what the
        # weights changed, and is 0 at an ImageNet start in either mode
        for mine, theirs in zip(backbone.modules(), self.reference.modules()):
            theirs.training = mine.training
        features = backbone.forward_features(x)
        embeddings = F.normalize(backbone.fc(features), dim=-1)
        with torch.no_grad():
            reference = self.reference.forward_features(x)
        penalty = self.weight * ((features.float() - reference.float()) ** 2).mean()
        self.last_penalty = float(penalty.detach())
        return embeddings, penalty
