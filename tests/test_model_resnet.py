"""The ResNet backbones: torchvision's names and layout, CMIC's head, ImageNet weights by name."""

import pytest
import torch

from ibsr.errors import IbsrError
from ibsr.model.backbones import get_backbone

RESNETS = {arch: get_backbone(arch) for arch in ("resnet18", "resnet34", "resnet50")}

# Excerpts of torchvision's key names (torchvision.models.resnet18/50().state_dict()).
TORCHVISION_RESNET18_KEYS = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.running_mean",
    "layer1.1.conv2.weight",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.running_var",
    "layer3.1.bn1.bias",
    "layer4.0.downsample.0.weight",
    "layer4.1.conv2.weight",
    "layer4.1.bn2.running_var",
    "fc.weight",
    "fc.bias",
]
TORCHVISION_RESNET50_KEYS = [
    "conv1.weight",
    "layer1.0.conv3.weight",
    "layer1.0.bn3.running_var",
    "layer1.0.downsample.0.weight",
    "layer1.2.bn3.bias",
    "layer2.3.conv2.weight",
    "layer3.5.conv3.weight",
    "layer3.0.downsample.1.running_mean",
    "layer4.2.bn3.num_batches_tracked",
    "fc.weight",
]


def _torchvision_like_state_dict(arch):
    """What torchvision's ImageNet file holds: our backbone at width 64 with a plain 1000-way fc."""
    torch.manual_seed(0)
    body = RESNETS[arch].build(3, 64, 128)
    state = {k: v for k, v in body.state_dict().items() if not k.startswith("fc.")}
    state["fc.weight"] = torch.randn(1000, body.num_features)
    state["fc.bias"] = torch.randn(1000)
    return state


def test_resnet_keys_are_torchvision_names():
    keys18 = set(_torchvision_like_state_dict("resnet18"))
    assert set(TORCHVISION_RESNET18_KEYS) <= keys18
    assert len(keys18) == 122  # torchvision resnet18 state_dict has 122 entries
    keys50 = set(RESNETS["resnet50"].build(3, 64, 128).state_dict()) - {
        "fc.0.weight", "fc.0.bias", "fc.0.running_mean", "fc.0.running_var", "fc.0.num_batches_tracked",
        "fc.1.weight", "fc.1.bias"}
    assert set(TORCHVISION_RESNET50_KEYS) - {"fc.weight"} <= keys50
    assert len(keys50) + 2 == 320  # torchvision resnet50 state_dict has 320 entries
    conv = RESNETS["resnet50"].build(3, 64, 128).layer2[0]
    assert conv.conv1.stride == (1, 1) and conv.conv2.stride == (2, 2)  # v1.5 bottleneck


def test_resnet_head_and_widths():
    net = RESNETS["resnet50"].build(4, 8, 16)
    assert net.num_features == 8 * 8 * 4
    assert isinstance(net.fc[0], torch.nn.BatchNorm1d) and net.fc[1].weight.shape == (16, 256)
    assert net.conv1.weight.shape == (8, 4, 7, 7)
    assert net.bn1.eps == 1e-5
    assert net.eval()(torch.randn(2, 4, 32, 32)).shape == (2, 16)


@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_imagenet_weights_load_by_name(in_channels):
    imagenet = _torchvision_like_state_dict("resnet18")
    imagenet = {k: v for k, v in imagenet.items() if not k.endswith("num_batches_tracked")}  # old files lack them
    net = RESNETS["resnet18"].build(in_channels, 64, 128)
    head_before = net.fc[1].weight.clone()
    loaded = RESNETS["resnet18"].load_imagenet(net, imagenet)
    assert "layer4.1.bn2.running_var" in loaded and not any(k.startswith("fc.") for k in loaded)
    own = net.state_dict()
    assert torch.equal(own["layer2.0.downsample.1.weight"], imagenet["layer2.0.downsample.1.weight"])
    assert torch.equal(net.fc[1].weight, head_before)
    rgb = imagenet["conv1.weight"]
    if in_channels == 1:
        assert torch.allclose(own["conv1.weight"], rgb.sum(1, keepdim=True))
    elif in_channels == 4:
        assert torch.equal(own["conv1.weight"][:, :3], rgb)
        assert torch.allclose(own["conv1.weight"][:, 3], rgb.mean(1))
    else:
        assert torch.equal(own["conv1.weight"], rgb)


def test_imagenet_weights_refuse_another_width():
    with pytest.raises(IbsrError, match="width"):
        RESNETS["resnet18"].load_imagenet(RESNETS["resnet18"].build(3, 8, 128), _torchvision_like_state_dict("resnet18"))
