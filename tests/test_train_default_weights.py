"""The shipped model, ibsr/model/weights/default.pt: configs/default.toml (stage 10: the query side
on procedural photos and photos of real CAD meshes in two photo styles, with an L2-SP pull toward
ImageNet), started from stage 9's export, the end of a chain of stages (stage 1 on a GPU from
ImageNet, then stages 2, 3, 4, 5, 7 and 9 on a CPU) whose configs are recorded in
docs/model-history.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ibsr.model import LITE, default_weights_path, load_default_model, rendering_id
from ibsr.train.config import TrainConfig, load_config


STAGE7_RENDERING_ID = "86f5dba7a648714f"  # rendering_id of stage 7's model, kept by stages 8, 9 and 10
ROOT = Path(__file__).parent.parent


def test_default_weights_are_the_lite_preset_with_their_provenance(history_configs):
    path = default_weights_path()
    assert path.is_file(), "ibsr/model/weights/default.pt is missing: see docs/model-history.md"
    assert path.stat().st_size < 15 * 2**20
    model = load_default_model()
    assert model.config == LITE
    payload = torch.load(path, map_location="cpu", weights_only=True)
    info = payload["info"]
    # stored in float16 (ibsr-train export), BatchNorm statistics excepted
    weights = payload["state_dict"]
    assert weights["query_encoder.efficientnet._conv_stem.weight"].dtype == torch.float16
    assert weights["rendering_encoder.efficientnet._bn0.running_var"].dtype == torch.float32
    assert info["half"] is True
    assert info["trained_by"] == "ibsr-train" and info["command"].startswith("ibsr-train run --config ")
    # provenance: trained with exactly the settings of configs/default.toml (docs/model-history.md);
    # read back through TrainConfig so that keys added later compare at their defaults
    config = load_config(ROOT / "configs" / "default.toml")
    trained = TrainConfig.from_dict(info["config"])
    # the run named its start "default" (the shipped model then, stage 9); the recipe names that
    # export's file, as scripts/train_default.sh writes it
    assert trained.model.init == "default" and config.model.init == "data/models/real-mix-anchor.pt"
    same_start = dataclasses.replace(trained, model=dataclasses.replace(trained.model, init=config.model.init))
    assert same_start.to_dict() == config.to_dict()
    assert info["step"] == config.train.steps and config.train.imagenet_anchor > 0
    # stage 10 trained the query side only: indexes built with stage 7 stay valid, and indexes of
    # earlier models (other rendering ids) are refused by ibsr-search (docs/model-history.md)
    assert config.train.freeze == ("rendering_encoder",) and rendering_id(model) == STAGE7_RENDERING_ID
    # the chain of stages, each started from an earlier one's export, as docs/model-history.md records
    # it; its stage 10 is configs/default.toml
    old = history_configs
    chain = {"real-mix-anchor.toml": "data/models/lite-long3.pt", "lite-long3.toml": "data/models/lite-long2.pt",
             "lite-long2.toml": "data/models/lite-long-query2.pt", "lite-long-query2.toml": "data/models/lite-long-query.pt",
             "lite-long-query.toml": "data/models/lite-long.pt", "lite-long.toml": "data/models/lite.pt"}
    for name, init in chain.items():
        assert load_config(old / name).model.init == init, name
    # finite, normalized embeddings
    with torch.no_grad():
        q = model.embed_queries(torch.rand(2, 4, LITE.query_size, LITE.query_size) * 2 - 1)
    assert torch.isfinite(q).all() and torch.allclose(q.norm(dim=-1), torch.ones(2), atol=1e-5)
