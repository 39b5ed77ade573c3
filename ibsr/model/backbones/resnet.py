"""ResNet-18/34/50 with torchvision's parameter names, a configurable input channel count and
base width, and CMIC's embedding head.

The layout is torchvision's "v1.5" ResNet (the stride of a bottleneck sits on its 3x3 conv,
BatchNorm eps 1e-5, max-pool kernel 3 stride 2 padding 1), because the authors' Jittor weights
and ImageNet initializations are stored under exactly these names and shapes. Only the head
differs from torchvision: `fc = Sequential(BatchNorm1d(C), Linear(C, embed_dim))`, with
C = 8 * width * block.expansion.
"""

from __future__ import annotations

import torch
from torch import nn

from ibsr.errors import IbsrError
from ibsr.model.backbones.pretrained import copy_by_name, first_problems


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


def resnet(arch: str, in_channels: int = 3, width: int = 64, embed_dim: int = 128) -> ResNet:
    """Build `arch` ("resnet18" | "resnet34" | "resnet50") with CMIC's head."""
    if arch not in ARCH_SPECS:
        raise IbsrError(f"unknown ResNet {arch!r}; choose one of {', '.join(ARCH_SPECS)}")
    block, layers = ARCH_SPECS[arch]
    return ResNet(block, layers, in_channels=in_channels, width=width, embed_dim=embed_dim)


def _adapt_conv1(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Fit ImageNet's RGB conv1 (O x 3 x 7 x 7) to `in_channels` inputs.

    1 channel (grayscale renderings): the sum over RGB, so a gray image g = r = g = b gives the
    same response as the RGB network. 4 channels (RGB + mask): RGB unchanged, the mask channel
    initialized as the mean of the RGB filters.
    """
    if in_channels == 3:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if in_channels == 4:
        return torch.cat([weight, weight.mean(dim=1, keepdim=True)], dim=1)
    raise IbsrError(f"cannot adapt ImageNet conv1 to {in_channels} input channels (only 1, 3 or 4)")


@torch.no_grad()
def load_imagenet_backbone(model: ResNet, state_dict: dict) -> list[str]:
    """Copy a torchvision ImageNet ResNet state dict (width 64) into `model`'s backbone by name.

    Every backbone tensor of `model` must be found with the same shape (conv1 excepted: it is
    adapted to the model's input channels); torchvision's classifier `fc.*` is ignored and the
    CMIC head keeps its own initialization. `num_batches_tracked` may be absent (older
    torchvision files). Returns the names that were loaded.
    """
    loaded, problems = copy_by_name(model, state_dict, "conv1.weight",
                                    lambda weight: _adapt_conv1(weight, model.in_channels),
                                    may_be_absent=lambda name: name.endswith("num_batches_tracked"))
    if problems:
        raise IbsrError(f"ImageNet weights do not fit this ResNet (width {model.width}; ImageNet needs "
                        f"width 64): {first_problems(problems)}")
    return loaded
