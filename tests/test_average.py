"""`ibsr-train average`: weight averages of checkpoints of one lineage."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import TINY
from ibsr.cli.train import main
from ibsr.model import ModelConfig, init_model, load_checkpoint, save_checkpoint
from ibsr.model.checkpoint import load_checkpoint_with_info, rendering_id


@pytest.fixture
def base_and_finetune(tmp_path):
    """A model and a 'fine-tune' of it that changed only the query side (the rendering encoder
    frozen, as every shipped stage since stage 8 trained)."""
    base = init_model(ModelConfig(**TINY), seed=0)
    finetune = init_model(ModelConfig(**TINY), seed=0)
    with torch.no_grad():
        for param in finetune.query_encoder.parameters():
            param.add_(torch.randn_like(param))
    paths = tmp_path / "base.pt", tmp_path / "finetune.pt"
    save_checkpoint(base, paths[0])
    save_checkpoint(finetune, paths[1])
    return paths


def _invoke(*args):
    return CliRunner().invoke(main, ["average", *map(str, args)])


def test_weighted_mean_of_the_query_side_and_the_frozen_rendering_encoder_kept(base_and_finetune, tmp_path):
    base_path, finetune_path = base_and_finetune
    out = tmp_path / "avg.pt"
    result = _invoke(base_path, finetune_path, "--weight", "1", "--weight", "3", "--no-half", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [s["weight"] for s in report["averaged_from"]] == [0.25, 0.75]
    assert report["same_rendering_as_first"] is True

    base, finetune, averaged = (load_checkpoint(p) for p in (base_path, finetune_path, out))
    for name, value in averaged.query_encoder.state_dict().items():
        a, b = base.query_encoder.state_dict()[name], finetune.query_encoder.state_dict()[name]
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.25 * a + 0.75 * b)
    changed = [n for n, v in averaged.query_encoder.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, base.query_encoder.state_dict()[n])]
    assert changed, "the averaged query side should differ from the base"
    assert rendering_id(averaged) == rendering_id(base)
    _, info = load_checkpoint_with_info(out)
    assert info["averaged_from"][1]["path"] == str(finetune_path)
    assert info["averaged_from"][0]["info"] == load_checkpoint_with_info(base_path)[1]
    assert info["command"].startswith("ibsr-train")  # the command line that made it (sys.argv)


def test_all_weight_on_one_checkpoint_gives_that_checkpoint(base_and_finetune, tmp_path):
    base_path, finetune_path = base_and_finetune
    out = tmp_path / "avg.pt"
    assert _invoke(base_path, finetune_path, "--weight", "0", "--weight", "2", "--no-half", "--out", out).exit_code == 0
    expected, got = load_checkpoint(finetune_path).state_dict(), load_checkpoint(out).state_dict()
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_averaged_rendering_encoders_are_reported_as_a_new_rendering(tiny_weights, other_weights, tmp_path):
    out = tmp_path / "avg.pt"
    result = _invoke(tiny_weights, other_weights, "--out", out)
    assert result.exit_code == 0, result.output
    assert "rebuild indexes" in result.output
    assert rendering_id(load_checkpoint(out)) != rendering_id(load_checkpoint(tiny_weights))


@pytest.mark.parametrize("weights, message", [
    (["--weight", "1"], "1 --weight values for 2 checkpoints"),
    (["--weight", "1", "--weight", "-1"], "must be finite, >= 0 and not all 0"),
    (["--weight", "0", "--weight", "0"], "must be finite, >= 0 and not all 0"),
])
def test_bad_weights_are_one_line_errors(base_and_finetune, tmp_path, weights, message):
    out = tmp_path / "avg.pt"
    result = _invoke(*base_and_finetune, *weights, "--out", out)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_other_architectures_cannot_be_averaged(tiny_weights, tmp_path):
    wider = tmp_path / "wider.pt"
    save_checkpoint(init_model(ModelConfig(**{**TINY, "width": 16}), seed=0), wider)
    out = tmp_path / "avg.pt"
    result = _invoke(tiny_weights, wider, "--out", out)
    assert result.exit_code != 0
    line = result.output.strip()
    assert "\n" not in line and str(wider) in line and "width: 8 vs 16" in line
    assert not out.exists()
