"""MaskNet: the learned automatic object mask (a query photo without mask file or alpha).

An ImageNet-initialized EfficientNet-Lite encoder (RGB; its 1x1 head conv and classifier are
dropped: the decoder reads the stages) and a light FPN decoder:

    photo (B x 3 x H x W, [-1, 1]) -> encoder stages at strides 4, 8, 16, 32
        -> 1x1 lateral convs to `decoder_channels`, top-down: upsample + add + 3x3 conv
        -> 3x3 conv + 1x1 conv at stride 4 -> bilinear upsample -> B x 1 x H x W logits

Trained on the synthetic photos' exact masks (`ibsr-train mask`, ibsr/train/mask.py); used by
the searcher through `ibsr.photos.mask_model`. Any input size works (TF "SAME" padding gives
ceil(H / stride) features; the decoder upsamples to each tap's own size); the predictor feeds
a fixed `MaskConfig.size` square.

Checkpoint: one `torch.save` dict, read with `torch.load(weights_only=True)`:

    {"format": "ibsr-mask", "version": 1, "config": MaskConfig.to_dict(),
     "state_dict": float16 floating tensors (BatchNorm running statistics float32), "info": {...}}

Loading casts every floating tensor back to float32. A missing or unreadable file is one
`IbsrError` line naming it.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ibsr.errors import IbsrError
from ibsr.files import atomic_path
from ibsr.model.checkpoint import half_precision, key_mismatches
from ibsr.model.backbones import get_backbone
from ibsr.model.backbones.efficientnet_lite import PACKAGES, EfficientNetLite, imagenet_state_dict

FORMAT = "ibsr-mask"
VERSION = 1
TAP_STAGES = (1, 2, 4, 6)  # stages whose last block feeds the decoder: strides 4, 8, 16, 32
HEAD_MODULES = ("_conv_head", "_bn1", "_fc")  # the classifier end of the encoder, unused here
_HOW_TO_MAKE = "train one with `ibsr-train mask` (configs/README.md), or pass --mask-method grabcut"


@dataclass(frozen=True)
class MaskConfig:
    arch: str = "efficientnet_lite0"  # encoder (an ibsr.model.backbones.efficientnet_lite variant)
    size: int = 224  # side of the square the predictor resizes photos to
    decoder_channels: int = 64
    # Below this certainty (`mask_certainty`) the photo is outside what the network learnt, and
    # the searcher takes the whole photo as the object; 0 = never. `ibsr-train mask` sets it to
    # the 1st percentile over its training photos.
    certainty_floor: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> "MaskConfig":
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise IbsrError(f"bad mask config {data!r}: expected keys among {', '.join(sorted(names))}")
        config = cls(**data)
        if config.arch not in PACKAGES or not (isinstance(config.size, int) and 32 <= config.size <= 1024):
            raise IbsrError(f"bad mask config {data!r}: arch one of {', '.join(PACKAGES)}, size 32-1024 px")
        if not (isinstance(config.certainty_floor, (int, float)) and 0 <= config.certainty_floor < 1):
            raise IbsrError(f"bad mask config {data!r}: certainty_floor must be at least 0 and below 1")
        return config


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class MaskNet(nn.Module):
    """Photo -> object-mask logits at the input's resolution."""

    def __init__(self, config: MaskConfig = MaskConfig()):
        super().__init__()
        self.config = config
        self.encoder = EfficientNetLite(config.arch, in_channels=3, embed_dim=None)
        for name in HEAD_MODULES:  # never run: the decoder taps the stages (and 1.7 M fewer weights)
            delattr(self.encoder, name)
        self.taps = [self.encoder.stage_ends[s] for s in TAP_STAGES]
        tap_channels = [self.encoder._blocks[i]._bn2.num_features for i in self.taps]
        c = config.decoder_channels
        self.lateral = nn.ModuleList(_conv_bn_relu(ch, c, 1) for ch in tap_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(c, c, 3) for _ in tap_channels[:-1])
        self.head = nn.Sequential(_conv_bn_relu(c, c, 3), nn.Conv2d(c, 1, 1))

    def load_imagenet(self) -> None:
        """The encoder's ImageNet weights (from the installed package); the decoder keeps its init."""
        state = {k: v for k, v in imagenet_state_dict(self.config.arch).items() if not k.startswith(HEAD_MODULES)}
        get_backbone(self.config.arch).load_imagenet(self.encoder, state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [-1, 1] -> B x 1 x H x W logits."""
        features = []
        for i, f in self.encoder.forward_blocks(x):
            if i in self.taps:
                features.append(f)
            if i == self.taps[-1]:
                break
        p = self.lateral[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):  # top-down, stride 16 -> 4
            lateral = self.lateral[level](features[level])
            p = self.smooth[level](lateral + F.interpolate(p, size=lateral.shape[-2:], mode="bilinear",
                                                           align_corners=False))
        logits = self.head(p)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def init_mask_net(config: MaskConfig = MaskConfig(), seed: int = 0, imagenet: bool = True) -> MaskNet:
    """A new MaskNet, identical for the same (config, seed); the global RNG is left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MaskNet(config)
    if imagenet:
        model.load_imagenet()
    return model


def mask_certainty(probability) -> float:
    """How sure the network is of its mask: the mean of |2p - 1| over the pixels it gives at
    least 0.1 (1 = every such pixel certain). The background it is sure of is left out, so a
    photo that is mostly background does not look certain. Synthetic photos like its training
    ones score ~0.9; real photos it half-understands (a fragment of the object marked) far less."""
    p = torch.as_tensor(probability, dtype=torch.float32)
    considered = p[p >= 0.1]
    return float((2 * considered - 1).abs().mean()) if considered.numel() else 0.0


def default_mask_weights_path() -> pathlib.Path:
    """The mask network the searcher uses by default: $IBSR_MASK_WEIGHTS when set (e.g. a
    deployment's own; the test suite points it at nothing), else the package's shipped file."""
    override = os.environ.get("IBSR_MASK_WEIGHTS")
    return pathlib.Path(override) if override else pathlib.Path(__file__).resolve().parent / "weights" / "mask.pt"


def save_mask_checkpoint(model: MaskNet, path, info: dict | None = None) -> pathlib.Path:
    """Write `model` (float16 weights) to `path` atomically."""
    path = pathlib.Path(path)
    state = half_precision({k: v.detach().cpu() for k, v in model.state_dict().items()})
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "state_dict": state,
               "info": dict(info or {})}
    # 0o644: a file to ship and share must be readable; an open file: torch.save's archive name
    # does not depend on the temporary name.
    with atomic_path(path, mode=0o644) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return path


def load_mask_checkpoint(path, map_location="cpu") -> tuple[MaskNet, dict]:
    """(the MaskNet stored in `path` in eval mode and float32, its info dict)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise IbsrError(f"mask network not found; {_HOW_TO_MAKE}", path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for bad files: all mean "unreadable"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise IbsrError(f"not a readable mask network (truncated, or not a torch file: {reason}); "
                        f"{_HOW_TO_MAKE}", path) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise IbsrError(f"not an ibsr mask network (no format tag {FORMAT!r}); {_HOW_TO_MAKE}", path)
    if payload.get("version") != VERSION:
        raise IbsrError(f"mask network format version {payload.get('version')!r} is not supported (this ibsr "
                        f"reads {VERSION}); {_HOW_TO_MAKE}", path)
    try:
        model = MaskNet(MaskConfig.from_dict(payload.get("config")))
    except IbsrError as e:
        raise IbsrError(f"{e}; {_HOW_TO_MAKE}", path) from None
    state = payload.get("state_dict")
    problems = key_mismatches(model.state_dict(), state) if isinstance(state, dict) else ["no state_dict"]
    if problems:
        raise IbsrError(f"mask network weights do not match its config ({'; '.join(problems)}); the file is "
                        f"damaged: {_HOW_TO_MAKE}", path)
    model.load_state_dict(state)  # copies into the float32 parameters: float16 comes back as float32
    info = payload.get("info")
    return model.eval(), info if isinstance(info, dict) else {}
