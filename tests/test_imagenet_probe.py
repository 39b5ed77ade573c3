"""benchmarks/imagenet_probe.py: the best view's cosine per shape, and the four rates it reports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the probe imports generalization.py beside it
spec = importlib.util.spec_from_file_location("imagenet_probe", BENCHMARKS / "imagenet_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_metrics_count_exact_category_and_family_hits():
    shape_ids = ["bookcase/pix3d_ikea_billy_1", "bookcase/pix3d_ikea_billy_2", "chair/pix3d_ikea_poang_2",
                 "chair/other_chair"]
    queries = [{"shape_id": "bookcase/pix3d_ikea_billy_1"}, {"shape_id": "chair/pix3d_ikea_poang_2"},
               {"shape_id": "chair/other_chair"}]
    score = torch.tensor([[0.2, 0.9, 0.1, 0.0],    # another BILLY first: family and category, not exact
                          [0.1, 0.0, 0.8, 0.3],    # exact
                          [0.9, 0.1, 0.2, 0.3]])   # a bookcase first; the truth is last of four
    m = probe.metrics(score, queries, shape_ids)
    assert m["top1"] == pytest.approx(1 / 3)
    assert m["top10"] == 1.0
    assert m["category"] == pytest.approx(2 / 3)
    assert m["family"] == pytest.approx(2 / 3)


def test_a_shape_scores_its_best_view():
    torch.manual_seed(0)
    net = probe.EfficientNetLite("efficientnet_lite0", embed_dim=None).eval()
    rng = np.random.default_rng(1)
    photos = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    views = rng.integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)
    views[1, 2] = photos[0]  # shape 1 has a view identical to photo 0: cosine 1, its best
    score = probe.scores(net, photos, views)
    assert score.shape == (2, 3)
    assert float(score[0, 1]) == pytest.approx(1.0, abs=1e-5)
    q = probe.features(net, photos)
    for s in range(3):
        v = probe.features(net, views[s])
        assert float(score[1, s]) == pytest.approx(float((v @ q[1]).max()), abs=1e-5)
