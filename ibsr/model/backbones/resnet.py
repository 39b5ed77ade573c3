"""ResNet-18/34/50 with torchvision's parameter names, a configurable input channel count and
base width, and CMIC's embedding head.

The layout is torchvision's "v1.5" ResNet (the stride of a bottleneck sits on its 3x3 conv,
BatchNorm eps 1e-5, max-pool kernel 3 stride 2 padding 1), because the authors' Jittor weights
and ImageNet initializations are stored under exactly these names and shapes. Only the head
differs from torchvision: `fc = Sequential(BatchNorm1d(C), Linear(C, embed_dim))`, with
C = 8 * width * block.expansion.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ibsr.errors import IbsrError
from ibsr.model.backbones.pretrained import copy_by_name, first_problems, fit_stem
from ibsr.model.backbones.registry import Backbone, register


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # v1.5: the stride is here, not on conv1
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# arch name -> (block, blocks per stage)
ARCH_SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """torchvision's ResNet body followed by the CMIC head BatchNorm1d(C) -> Linear(C, D)."""

    def __init__(self, block, layers, in_channels: int = 3, width: int = 64, embed_dim: int = 128):
        super().__init__()
        self.in_channels = in_channels
        self.width = width
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width * 8 * block.expansion
        self.fc = nn.Sequential(nn.BatchNorm1d(self.num_features), nn.Linear(self.num_features, embed_dim))
        self._init_weights()

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self):
        # torchvision's initialization, so that training from scratch behaves like theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B x in_channels x H x W -> B x C pooled features (any H, W >= 32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x in_channels x H x W -> B x embed_dim (not normalized)."""
        return self.fc(self.forward_features(x))


def _blocks_per_stage(names) -> tuple[int, ...]:
    """How many blocks each of the four stages holds, read from parameter names."""
    blocks = {}
    for name in names:
        m = re.match(r"layer([1-4])\.(\d+)\.", name)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    return tuple(blocks.get(stage, 0) for stage in (1, 2, 3, 4))


def _mean_filter(rgb: torch.Tensor) -> torch.Tensor:
    """The mask channel's first filters on a ResNet: the mean of the RGB ones."""
    return rgb.mean(dim=1, keepdim=True)


@register(*ARCH_SPECS)
class ResNetBackbone(Backbone):
    family = "ResNet"
    module_name = "resnet"  # the authors' name: their checkpoints hold `query_encoder.resnet.*`

    def build(self, in_channels: int, width: int, embed_dim: int) -> ResNet:
        block, layers = ARCH_SPECS[self.name]
        return ResNet(block, layers, in_channels=in_channels, width=width, embed_dim=embed_dim)

    @torch.no_grad()
    def load_imagenet(self, net: ResNet, state_dict: dict | None = None) -> list[str]:
        """Copy a torchvision ImageNet ResNet state dict (width 64) into `net` by name.

        No package carries these weights: the file is the user's. Every backbone tensor must be
        found with the same shape; torchvision's classifier `fc.*` is ignored, and
        `num_batches_tracked` may be absent (older torchvision files).
        """
        if state_dict is None:
            raise IbsrError(f"{self.name} has no packaged ImageNet weights; give a torchvision .pth state dict")
        loaded, problems = copy_by_name(net, state_dict, "conv1.weight",
                                        lambda weight: fit_stem(weight, net.in_channels, _mean_filter),
                                        may_be_absent=lambda name: name.endswith("num_batches_tracked"))
        if problems:
            raise IbsrError(f"ImageNet weights do not fit this ResNet (width {net.width}; ImageNet needs "
                            f"width 64): {first_problems(problems)}")
        return loaded

    def jittor_width(self, arrays: dict) -> int | None:
        """The authors' ResNets are stored under torchvision's names, this network's: the blocks
        per stage and whether they are bottlenecks tell the depth, conv1's filters the width."""
        block, layers = ARCH_SPECS[self.name]
        bottleneck = "layer1.0.conv3.weight" in arrays
        if "conv1.weight" not in arrays or _blocks_per_stage(arrays) != layers or bottleneck != (block is Bottleneck):
            return None
        return arrays["conv1.weight"].shape[0]
