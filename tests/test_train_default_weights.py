"""The shipped model, ibsr/model/weights/default.pt (stage 11): the weight average (`ibsr-train
average`, 0.7 / 0.3) of stage 10 (configs/default.toml: the query side on procedural photos and
photos of real CAD meshes in two photo styles, with an L2-SP pull toward ImageNet, started from
stage 9's export, the end of a chain of stages whose configs docs/model-history.md records) and
`ibsr-train adapt` of stage 10 to the real training meshes (configs/default-adapt.toml)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ibsr.model import LITE, default_weights_path, load_default_model, rendering_id
from ibsr.train.config import AdaptOptions, TrainConfig, command_config, load_config, read_config_file


STAGE7_RENDERING_ID = "86f5dba7a648714f"  # rendering_id of stage 7's model, kept by stages 8 to 11
STAGE10_ID = "2589ee1aa96af062"  # encoder id of stage 10's export (the shipped default.pt before stage 11)
ROOT = Path(__file__).parent.parent


def test_default_weights_are_the_lite_preset_with_their_provenance(history_configs):
    path = default_weights_path()
    assert path.is_file(), "ibsr/model/weights/default.pt is missing: see docs/model-history.md"
    assert path.stat().st_size < 15 * 2**20
    model = load_default_model()
    assert model.config == LITE
    payload = torch.load(path, map_location="cpu", weights_only=True)
    info = payload["info"]
    # stored in float16 (ibsr-train average writes as export does), BatchNorm statistics excepted
    weights = payload["state_dict"]
    assert weights["query_encoder.efficientnet._conv_stem.weight"].dtype == torch.float16
    assert weights["rendering_encoder.efficientnet._bn0.running_var"].dtype == torch.float32
    assert info["command"].startswith("ibsr-train average ")
    stage10, adapted = info["averaged_from"]
    assert (stage10["weight"], adapted["weight"]) == (0.7, 0.3)
    # stage 10: trained with exactly the settings of configs/default.toml; read back through
    # TrainConfig so that keys added later compare at their defaults
    trained_info = stage10["info"]
    assert stage10["encoder_id"] == STAGE10_ID and trained_info["half"] is True
    assert trained_info["trained_by"] == "ibsr-train" and trained_info["command"].startswith("ibsr-train run --config ")
    config = load_config(ROOT / "configs" / "default.toml")
    trained = TrainConfig.from_dict(trained_info["config"])
    # the run named its start "default" (the shipped model then, stage 9); the recipe names that
    # export's file, as scripts/train_default.sh writes it
    assert trained.model.init == "default" and config.model.init == "data/models/real-mix-anchor.pt"
    same_start = dataclasses.replace(trained, model=dataclasses.replace(trained.model, init=config.model.init))
    assert same_start.to_dict() == config.to_dict()
    assert trained_info["step"] == config.train.steps and config.train.imagenet_anchor > 0
    # the adapt: of stage 10, with configs/default-adapt.toml's options
    adapt_info = adapted["info"]
    options = command_config(AdaptOptions, read_config_file(ROOT / "configs" / "default-adapt.toml"), "default-adapt")
    assert adapt_info["adapted_by"] == "ibsr-train adapt" and adapt_info["adapted_from"]["encoder_id"] == STAGE10_ID
    assert adapt_info["step"] == options.max_steps and adapt_info["side"] == options.side == "query"
    assert adapt_info["lr"] == pytest.approx(config.train.lr / 5)  # options.lr = 0: a fifth of the base's
    assert adapt_info["photos"]["per_shape"] == options.photos_per_shape and adapt_info["photos"]["seed"] == options.seed
    assert options.whole_copies and "--whole-copies" in adapt_info["command"]
    assert adapt_info["shapes"] == 198 and adapt_info["catalog"].endswith("data/real/train.csv")
    # every part trained the query side only: indexes built with stage 7 stay valid, and indexes of
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
