"""The configs named by intent (configs/README.md): the shipped recipe whole in default.toml, the
candidates in experiments/ extending it, the ablation rows; the stages before live in
docs/model-history.md."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ibsr.train.config import load_config

CONFIGS = Path(__file__).parent.parent / "configs"

# stage 10, the shipped model's recipe: configs/experiments/both-styles-from-stage9.toml (stage 9's
# recipe on other data, longer from another start) as load_config resolved it before it was
# flattened, its start named by the file stage 9's export is written to
STAGE_10 = {
    "seed": 0,
    "data": {"train": "data/mix/both61", "val": "", "cache": "data/cache", "up_axis": "y"},
    "train": {"batch_size": 30, "epochs": 0, "steps": 600, "lr": 5e-05, "lr_decay_steps": 300,
              "attention_lr_scale": 1.0, "backbone_lr_scale": 1.0, "imagenet_anchor": 0.003,
              "feature_anchor": 0.0, "betas": [0.5, 0.999], "threads": 2, "amp": "auto", "freeze": ["rendering_encoder"],
              "device": "auto", "channels_last": True, "checkpoint_every": 50, "log_every": 25},
    "augment": {"enabled": True, "color_transfer": 0.5, "crop_scale": [0.55, 1.0], "crop_ratio": [0.75, 1.3333],
                "translate": 0.12, "flip": 0.5, "render_crop_scale": [1.0, 1.0], "render_flip": 0.0},
    "method": {"attention": True, "category_loss": True, "beta1": 0.2, "tau": 0.1, "mask": "concat", "views": 12},
    "val": {"every": 250, "topk": 10},
    "model": {"preset": "lite", "pretrained": False, "imagenet_query": "", "imagenet_render": "",
              "init": "data/models/real-mix-anchor.pt"},
}


def raw_toml(path: Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def test_default_is_stage_10s_recipe_flattened():
    resolved = load_config(CONFIGS / "default.toml").to_dict()
    assert resolved.keys() == STAGE_10.keys()
    for section, expected in STAGE_10.items():
        if not isinstance(expected, dict):
            assert resolved[section] == expected, section
            continue
        assert resolved[section].keys() == expected.keys(), section
        for key, value in expected.items():
            assert resolved[section][key] == value, f"{section}.{key}"
    assert "extends" not in raw_toml(CONFIGS / "default.toml")  # the whole recipe in one file


def test_experiments_extend_the_default_and_hold_their_rule():
    for path in sorted((CONFIGS / "experiments").glob("*.toml")):  # none while no candidate is open
        assert raw_toml(path)["extends"] == "../default.toml", path.name
        assert "# The rule that decides it" in path.read_text(), f"{path.name}: a rule is written before it trains"
        load_config(path)


def test_lite_ablation_row_is_stage_1_with_one_switch(history_configs):
    full = load_config(CONFIGS / "ablation" / "lite-full.toml")
    row = load_config(CONFIGS / "ablation" / "lite-no-attention.toml")
    assert full == load_config(history_configs / "lite.toml")  # stage 1's recipe, as it trained
    assert row.method.attention is False and row.method.__dict__ | {"attention": True} == full.method.__dict__
    assert (row.data, row.model, row.train, row.augment, row.val) == (full.data, full.model, full.train,
                                                                      full.augment, full.val)
