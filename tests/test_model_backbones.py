"""The backbone registry: what every registered architecture promises a CMIC encoder (a new
family is checked here without a line added)."""

import numpy as np
import pytest
import torch

from ibsr.errors import IbsrError
from ibsr.model import CMIC, ModelConfig
from ibsr.model.backbones import Backbone, backbone_names, get_backbone, register

SHIPPED = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def test_every_shipped_architecture_is_registered_and_nothing_else_is_accepted():
    assert set(SHIPPED) <= set(backbone_names())  # checkpoints of every existing config keep loading
    for arch in backbone_names():
        assert ModelConfig(query_arch=arch, render_arch=arch).query_arch == arch
    with pytest.raises(IbsrError, match="unknown backbone 'vgg16'"):
        get_backbone("vgg16")
    with pytest.raises(IbsrError, match="is not one of"):
        ModelConfig(query_arch="vgg16")


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="registered twice"):
        register("resnet18")(Backbone)


@pytest.mark.parametrize("arch", backbone_names())
def test_build_gives_cmic_head_under_module_name(arch):
    backbone = get_backbone(arch)
    for in_channels in (1, 4):  # renderings, RGB + mask queries
        net = backbone.build(in_channels, 8, 16).eval()
        assert isinstance(net.fc[0], torch.nn.BatchNorm1d) and net.fc[1].out_features == 16
        with torch.no_grad():
            assert net(torch.rand(2, in_channels, 64, 64) * 2 - 1).shape == (2, 16)
    keys = CMIC(ModelConfig(query_arch=arch, render_arch=arch, width=8, embed_dim=16)).state_dict()
    assert all(k.startswith((f"query_encoder.{backbone.module_name}.", f"rendering_encoder.{backbone.module_name}.",
                             "attention.")) for k in keys)


@pytest.mark.parametrize("arch", backbone_names())
def test_packaged_imagenet_weights_load_or_are_refused(arch):
    backbone = get_backbone(arch)
    net = backbone.build(4, 64, 16)
    head = net.fc[1].weight.clone()
    if not backbone.packaged_imagenet:
        with pytest.raises(IbsrError, match="no packaged ImageNet weights"):
            backbone.load_imagenet(net)
        return
    loaded = backbone.load_imagenet(net)
    assert loaded and not any(name.startswith("fc.") for name in loaded)
    assert torch.equal(net.fc[1].weight, head)  # CMIC's head keeps its initialization


def _encoder_arrays(arch: str, encoder: str) -> dict[str, np.ndarray]:
    """One encoder's tensors as the authors' Jittor checkpoint stores them (no num_batches_tracked)."""
    prefix = f"{encoder}.{get_backbone(arch).module_name}."
    model = CMIC(ModelConfig(query_arch=arch, render_arch=arch, width=8, embed_dim=16))
    return {k[len(prefix):]: v.numpy() for k, v in model.state_dict().items()
            if k.startswith(prefix) and not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("arch", backbone_names())
def test_jittor_arrays_are_told_apart(arch):
    """An architecture that reads Jittor checkpoints recognizes its own arrays (and their width)
    on both sides, and no other registered architecture claims them."""
    for encoder in ("query_encoder", "rendering_encoder"):
        arrays = _encoder_arrays(arch, encoder)
        claims = {name: get_backbone(name).jittor_width(arrays) for name in backbone_names()}
        own = claims.pop(arch)
        assert own in (None, 8)
        assert all(width is None for width in claims.values()), claims
