"""`ibsr-train adapt`: synthetic photos of a user's catalog, fine-tuning, the held-out measurement,
the time budget, resume, and query-side checkpoints accepted by an index built with the base.

The catalog is 9 procedural shapes written as meshes only, plus a plain trimesh box saved as
.obj (a mesh ibsr did not generate); the model is conftest's tiny one (width 8, 32 px).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner

from ibsr.cli import train as train_cli
from ibsr.errors import IbsrError
from ibsr.model import checkpoint_id, load_checkpoint, load_checkpoint_with_info, rendering_id, save_checkpoint
from ibsr.searcher import Searcher
from ibsr.train import adapt as adapt_module
from ibsr.train import loop as loop_module
from ibsr.train.adapt import CALIBRATION_STEPS, adapt, read_record
from ibsr.train.cmic import CMICTask
from ibsr.train.config import AdaptOptions

SHAPES = 10  # 9 procedural + the box
TEST_OPTIONS = dict(photos_per_shape=3, photo_size=64, batch_size=6, threads=1, workers=0)


def run_cli(*args):
    return CliRunner().invoke(train_cli.main, ["adapt", *[str(a) for a in args]])


def cli_options(max_steps=12, workers=0):
    return ["--photos-per-shape", 3, "--photo-size", 64, "--batch-size", 6, "--threads", 1,
            "--workers", workers, "--max-steps", max_steps, "--minutes", 5]


@pytest.fixture(scope="module")
def user_catalog(tmp_path_factory):
    from ibsr.synth import write_catalog

    root = tmp_path_factory.mktemp("user")
    write_catalog(root, ["chair", "table", "lamp"], 3, seed=3)
    box = root / "catalog" / "box" / "plain_box.obj"
    box.parent.mkdir()
    trimesh.creation.box((1.0, 0.6, 0.3)).export(box)
    return root / "catalog"


@pytest.fixture(scope="module")
def adapted(user_catalog, tiny_weights, tmp_path_factory):
    """One query-side run through the CLI (photo worker processes included): its JSON report."""
    out = tmp_path_factory.mktemp("adapted") / "adapted.pt"
    result = run_cli(user_catalog, "--out", out, "--weights", tiny_weights, *cli_options(workers=2), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def heldout_photo(report) -> str:
    heldout = report["work"] + "/heldout"
    first = json.loads(open(heldout + "/queries.jsonl").readline())
    return f"{heldout}/{first['image']}"


def test_adapt_writes_a_checkpoint_that_records_what_it_measured(adapted, tiny_weights):
    model, info = load_checkpoint_with_info(adapted["out"])
    base = load_checkpoint(tiny_weights)
    assert info["adapted_from"]["encoder_id"] == checkpoint_id(tiny_weights) == adapted["base"]["encoder_id"]
    assert info["step"] == adapted["steps"] == 12 and info["side"] == "query"
    assert info["shapes"] == SHAPES and info["photos"] == {"per_shape": 3, "size": 64, "seed": 0,
                                                           "train": 2 * SHAPES, "heldout": SHAPES}
    for when in ("before", "after"):
        assert set(info[when]) >= {"top1", "top10", "category"} and info[when]["queries"] == SHAPES
        assert info[when]["shapes"] == SHAPES
    # the photo side moved, the rendering side did not (weights and BatchNorm statistics)
    assert rendering_id(model) == rendering_id(base) == adapted["rendering_id"]
    assert not torch.equal(model.query_encoder.resnet.conv1.weight, base.query_encoder.resnet.conv1.weight)
    assert not torch.equal(model.attention.linear_in.weight, base.attention.linear_in.weight)
    assert not adapted["rebuild_index"]
    assert info["lr"] == adapt_module.FALLBACK_LR  # the tiny base's info does not say its training rate
    assert adapted["worse_on_held_out"] == (info["after"]["top1"] < info["before"]["top1"])


@pytest.mark.parametrize("after_top1, warned", [(0.5, True), (0.7, False)])
def test_a_model_worse_on_its_held_out_photos_is_written_with_a_warning(tmp_path, monkeypatch, after_top1, warned):
    metrics = {"top1": 0.6, "top10": 0.9, "category": 0.9, "queries": 10, "shapes": 10}

    def finished(catalog, out, options, **kwargs):
        return {"out": str(out), "encoder_id": "e", "base": {"path": "base.pt", "encoder_id": "b"}, "shapes": 10,
                "steps": 3, "lr": 1e-5, "seconds_per_step": 1.0, "seconds": 3.0, "rebuild_index": False,
                "before": metrics, "after": {**metrics, "top1": after_top1}, "worse_on_held_out": after_top1 < 0.6}

    monkeypatch.setattr(adapt_module, "adapt", finished)
    result = run_cli(tmp_path, "--out", tmp_path / "a.pt")
    assert result.exit_code == 0, result.output
    assert ("warning: the adapted model puts fewer held-out photos first" in result.output) is warned
    assert ("(60.0% -> 50.0%)" in result.output) is warned
    assert "wrote " in result.output  # written either way: the user chooses


def test_default_learning_rate_is_a_fifth_of_the_bases(tiny_weights, user_catalog, tmp_path):
    trained = save_checkpoint(load_checkpoint(tiny_weights), tmp_path / "trained.pt",
                              {"config": {"train": {"lr": 5e-4}}})
    options = AdaptOptions(**TEST_OPTIONS)
    assert adapt_module.Adaptation(user_catalog, tmp_path / "a.pt", options, trained).lr == pytest.approx(1e-4)
    chosen = dataclasses.replace(options, lr=3e-5)
    assert adapt_module.Adaptation(user_catalog, tmp_path / "a.pt", chosen, trained).lr == 3e-5
    # a weight average (ibsr-train average, as the shipped model is) answers for its first model
    averaged = save_checkpoint(load_checkpoint(tiny_weights), tmp_path / "averaged.pt",
                               {"averaged_from": [{"weight": 0.7, "info": {"config": {"train": {"lr": 5e-4}}}},
                                                  {"weight": 0.3, "info": {"config": {"train": {"lr": 1e-6}}}}]})
    assert adapt_module.Adaptation(user_catalog, tmp_path / "a.pt", options, averaged).lr == pytest.approx(1e-4)


def test_category_loss_can_be_turned_off_for_catalogs_whose_folders_are_not_categories(tiny_weights, user_catalog,
                                                                                        tmp_path):
    def method(options):
        return adapt_module.Adaptation(user_catalog, tmp_path / "a.pt", options, tiny_weights).config(1, 0, 1).method

    assert method(AdaptOptions(**TEST_OPTIONS)).category_loss is True
    assert method(AdaptOptions(**TEST_OPTIONS, category_loss=False)).category_loss is False
    result = run_cli(user_catalog, "--out", tmp_path / "off.pt", "--weights", tiny_weights,
                     *cli_options(max_steps=2), "--no-category-loss", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    _, info = load_checkpoint_with_info(report["out"])
    assert info["config"]["method"]["category_loss"] is False
    assert read_record(report["work"])["options"]["category_loss"] is False  # --resume keeps it


def test_whole_copies_train_on_every_photo_searched_whole_too(tiny_weights, user_catalog, tmp_path):
    from ibsr.photos.query import CROP_MARGIN
    from ibsr.train.data import query_input

    result = run_cli(user_catalog, "--out", tmp_path / "whole.pt", "--weights", tiny_weights,
                     *cli_options(max_steps=2), "--whole-copies", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    work = Path(report["work"])
    train = [json.loads(x) for x in open(work / "train" / "queries.jsonl")]
    exact = [q for q in train if not q["mask"].endswith("whole-64.png")]
    whole = [q for q in train if q["mask"].endswith("whole-64.png")]
    assert len(exact) == len(whole) == 2 * SHAPES
    assert sorted((q["image"], q["shape_id"]) for q in exact) == sorted((q["image"], q["shape_id"]) for q in whole)
    heldout = [json.loads(x) for x in open(work / "heldout" / "queries.jsonl")]
    assert len(heldout) == SHAPES and not any(q["mask"].endswith("whole-64.png") for q in heldout)
    rgb = cv2.cvtColor(cv2.imread(str(work / "train" / whole[0]["image"])), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(work / "train" / whole[0]["mask"]), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == rgb.shape[:2] == (64, 64) and (mask == 255).all()
    # searched whole, as the mask floor searches a photo: the crop holds all of the photo (and
    # the margin), not a crop around the object
    x = query_input(rgb, mask > 127, 64)
    assert np.array_equal(x, query_input(rgb, np.ones((64, 64), bool), 64))
    assert (x[3] > 127).mean() == pytest.approx(1 / (1 + 2 * CROP_MARGIN) ** 2, abs=0.05)
    record = read_record(work)
    assert record["options"]["whole_copies"] is True and record["photos"]["train"] == 4 * SHAPES
    assert "whole_copies" in adapt_module.RUN_KEYS  # --resume refuses to change it


def test_photos_and_held_out_split(adapted):
    work = adapted["work"]
    lines = lambda split: [json.loads(x) for x in open(f"{work}/{split}/queries.jsonl")]  # noqa: E731
    train, heldout = lines("train"), lines("heldout")
    assert len(train) == 2 * SHAPES and len(heldout) == SHAPES
    assert {q["shape_id"] for q in heldout} == {q["shape_id"] for q in train}
    assert "box/plain_box" in {q["shape_id"] for q in heldout}  # a mesh ibsr did not generate
    assert not {q["image"] for q in train} & {q["image"] for q in heldout}
    assert all(q["image"].endswith("_2.jpg") for q in heldout)  # the last photo of each shape
    record = read_record(work)
    assert record["status"] == "finished" and record["plan"]["steps"] == 12


def test_query_side_checkpoint_is_accepted_by_an_index_built_with_the_base(adapted, built_index, tiny_weights,
                                                                             other_weights, tmp_path):
    photo = heldout_photo(adapted)
    base_hits = Searcher(built_index, weights=tiny_weights).search([photo], topk=5)[0].hits
    adapted_hits = Searcher(built_index, weights=adapted["out"]).search([photo], topk=5)[0].hits
    assert len(adapted_hits) == 5
    assert [h.score for h in adapted_hits] != pytest.approx([h.score for h in base_hits])
    # another rendering encoder is refused, as before
    with pytest.raises(IbsrError, match="encoder"):
        Searcher(built_index, weights=other_weights)
    # ... even when its info claims the base: the rendering id is recomputed from the weights
    model, info = load_checkpoint_with_info(adapted["out"])
    with torch.no_grad():
        model.rendering_encoder.resnet.conv1.weight.add_(0.01)
    forged = save_checkpoint(model, tmp_path / "forged.pt", info)
    with pytest.raises(IbsrError, match="encoder"):
        Searcher(built_index, weights=forged)


def test_index_written_before_rendering_ids_still_reads_and_matches_through_the_base(adapted, index_copy,
                                                                                      tiny_weights, tmp_path):
    meta_file = index_copy / "ibsr_index.json"
    meta = json.loads(meta_file.read_text())
    del meta["rendering_id"]
    meta_file.write_text(json.dumps(meta))
    Searcher(index_copy, weights=tiny_weights)
    Searcher(index_copy, weights=adapted["out"])  # accepted: its info names the index's encoder as base
    model, info = load_checkpoint_with_info(adapted["out"])
    forged = save_checkpoint(model, tmp_path / "other-base.pt", {**info, "adapted_from": {
        **info["adapted_from"], "encoder_id": "0" * 16}})
    with pytest.raises(IbsrError, match="encoder"):
        Searcher(index_copy, weights=forged)


def test_side_both_changes_the_rendering_encoder_and_asks_for_a_rebuild(adapted, user_catalog, tiny_weights,
                                                                        built_index, tmp_path):
    # the same work folder: a new run there reuses its photos
    photos = sorted((Path(adapted["work"]) / "photos" / "queries").rglob("*.jpg"))
    made = [p.stat().st_mtime_ns for p in photos]
    out = tmp_path / "both.pt"
    result = run_cli(user_catalog, "--out", out, "--weights", tiny_weights, "--work", adapted["work"],
                     *cli_options(max_steps=4), "--side", "both")
    assert result.exit_code == 0, result.output
    assert [p.stat().st_mtime_ns for p in photos] == made and len(photos) == 3 * SHAPES
    assert "the rendering encoder changed: index the catalog with it" in result.output
    assert rendering_id(load_checkpoint(out)) != rendering_id(load_checkpoint(tiny_weights))
    with pytest.raises(IbsrError, match="encoder"):
        Searcher(built_index, weights=out)


class SteadyClock:
    """adapt's clock, made independent of the machine: a training step takes STEP_S, anything
    else 1 ms, on a loaded CI machine as on a quiet one."""

    STEP_S = 0.1

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.001
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def test_minutes_bound_the_steps(adapted, user_catalog, tiny_weights, tmp_path, monkeypatch):
    work = adapted["work"]  # photos already made: the budget goes to training
    clock = SteadyClock()
    monkeypatch.setattr(adapt_module, "time", clock)
    monkeypatch.setattr(loop_module, "time", clock)  # the loop times the steps
    step = CMICTask.train_step

    def steady_step(task):
        clock.now += SteadyClock.STEP_S
        return step(task)

    monkeypatch.setattr(CMICTask, "train_step", steady_step)
    tiny = adapt(user_catalog, tmp_path / "a.pt", AdaptOptions(**TEST_OPTIONS, minutes=0.001), tiny_weights,
                 work=work, progress=False)
    assert tiny["steps"] == CALIBRATION_STEPS  # nothing left after the calibration steps
    minutes = 0.05  # 30 steps of 0.1 s
    report = adapt(user_catalog, tmp_path / "b.pt", AdaptOptions(**TEST_OPTIONS, minutes=minutes), tiny_weights,
                   work=work, progress=False)
    plan = report["plan"]
    assert report["steps"] == plan["steps"] > plan["constant_steps"] > CALIBRATION_STEPS
    # half of the calibration's estimate at a constant rate, then what fits at the measured rate
    assert plan["constant_steps"] == CALIBRATION_STEPS + (plan["estimated_steps"] - CALIBRATION_STEPS) // 2
    extra = plan["steps"] - plan["constant_steps"]
    assert extra * plan["seconds_per_step"] <= plan["seconds_left"] < minutes * 60
    assert plan["lr_decay_steps"] == min(round(0.3 * plan["steps"]), extra)
    assert report["seconds"] < 2 * minutes * 60


def test_interrupted_run_resumes_to_the_uninterrupted_weights(adapted, user_catalog, tiny_weights, tmp_path,
                                                              monkeypatch):
    out, work = tmp_path / "resumed.pt", tmp_path / "work"
    original = CMICTask.train_step

    stops = [7, 10]  # one in the constant-rate stage (steps 4-8), one in the final one (8-12)

    def interrupted(self):  # SIGTERM during the step before: it is finished, then the run stops
        if stops and self.step == stops[0] - 1:
            stops.pop(0)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    monkeypatch.setattr(CMICTask, "train_step", interrupted)
    options = AdaptOptions(**TEST_OPTIONS, max_steps=12)
    with pytest.raises(IbsrError, match="interrupted at step 7/8"):
        adapt(user_catalog, out, options, tiny_weights, work=work, progress=False)
    with pytest.raises(IbsrError, match="interrupted at step 10/12"):
        adapt(user_catalog, out, options, tiny_weights, work=work, resume=True, progress=False)
    monkeypatch.undo()
    assert not out.exists()
    # a new run would lose the interrupted one: refused without --resume
    with pytest.raises(IbsrError, match="--resume"):
        adapt(user_catalog, out, options, tiny_weights, work=work, progress=False)
    # --resume needs no options: the run's own settings, weights and step plan are recorded
    result = run_cli(user_catalog, "--out", out, "--work", work, "--resume", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["steps"] == 12
    resumed, fixture = load_checkpoint(out).state_dict(), load_checkpoint(adapted["out"]).state_dict()
    assert all(torch.allclose(resumed[k].float(), fixture[k].float(), atol=1e-6) for k in fixture)
    with pytest.raises(IbsrError, match="already finished"):
        adapt(user_catalog, out, options, tiny_weights, work=work, resume=True, progress=False)


def test_frozen_view_embeddings_give_the_loss_of_embedding_every_batch(adapted, tiny_weights, user_catalog):
    from ibsr.train import RunDir, batch_loss, sample_batch
    from ibsr.train.batch import step_rng

    adaptation = adapt_module.Adaptation(user_catalog, adapted["out"], AdaptOptions(**TEST_OPTIONS),
                                         tiny_weights, work=adapted["work"], progress=False)
    config = adaptation.config(1, 0, 1)
    # float32 throughout (bf16 autocast, where the CPU has it, would round the embedded views)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, amp="off"))
    task = CMICTask(config, RunDir(adapted["work"] + "/check-run"), progress=False)
    assert task.view_embeddings is not None
    batch = sample_batch(task.train_data.query_shape, task.train_data.num_shapes, 6, 0, 0)
    args = (task.model, task.train_data, task.train_views, batch, task.config)
    cached = batch_loss(*args, step_rng(0, 1, 0), task.view_embeddings)
    embedded = batch_loss(*args, step_rng(0, 1, 0), None)
    assert cached.total.item() == pytest.approx(embedded.total.item(), rel=1e-6)
    shutil.rmtree(adapted["work"] + "/check-run")


def test_bad_input_is_one_line(tiny_weights, tmp_path):
    empty = tmp_path / "empty"
    (empty / "chair").mkdir(parents=True)
    (empty / "chair" / "notes.txt").write_text("no meshes here")
    broken = tmp_path / "broken"
    (broken / "chair").mkdir(parents=True)
    (broken / "chair" / "a.obj").write_text("this is not a mesh\n")
    (broken / "chair" / "b.obj").write_bytes(b"")
    (tmp_path / "file").write_text("x")
    out = tmp_path / "out" / "adapted.pt"
    cases = [
        ([tmp_path / "missing", "--out", out], ["missing", "catalog not found"]),
        ([empty, "--out", out], ["no supported meshes"]),
        ([broken, "--out", out], ["at least 2 usable meshes", "0 of 2"]),
        ([empty, "--out", tmp_path / "file" / "adapted.pt"], ["cannot write the adapted checkpoint"]),
        ([empty, "--out", tmp_path], ["is a folder"]),
        ([empty, "--out", tmp_path / "new" / "adapted.pt", "--resume"], ["nothing to resume"]),
        ([empty, "--out", out, "--device", "gpu"], ["--device = 'gpu'"]),
    ]
    for args, needles in cases:
        result = run_cli(*args, "--weights", tiny_weights, "--workers", 0, "--json")  # --json: no progress bars
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
        assert all(n in lines[-1] for n in needles), result.output
        # broken meshes are each named on one warning line before the error
        assert all(line.startswith("skipped ") for line in lines[:-1]), lines
    assert not out.exists()


def test_a_config_file_gives_the_options_flags_override_it_and_resume_starts_from_the_record(tmp_path, monkeypatch):
    seen = {}

    def stop_here(catalog, out, options, weights=None, **kwargs):
        seen.update(options=options, weights=weights)
        raise IbsrError("stopped before any work")

    monkeypatch.setattr(adapt_module, "adapt", stop_here)
    config = tmp_path / "adapt.toml"
    config.write_text('seed = 4\n[adapt]\nminutes = 3\nside = "both"\nphoto_size = 64\n')
    result = run_cli(tmp_path, "--out", tmp_path / "a.pt", "--config", config, "--side", "query")
    assert "stopped before any work" in result.output
    assert seen["options"] == AdaptOptions(seed=4, minutes=3.0, side="query", photo_size=64)
    work = tmp_path / "work"
    work.mkdir()
    (work / "adapt.json").write_text(json.dumps({"version": 1, "base": {"path": "base.pt"}, "options": dataclasses.asdict(
        AdaptOptions(photo_size=48, seed=9, max_steps=5))}))
    config.write_text('[adapt]\nminutes = 3\n')
    run_cli(tmp_path, "--out", tmp_path / "a.pt", "--work", work, "--resume", "--config", config, "--max-steps", 6)
    assert seen["options"] == AdaptOptions(photo_size=48, seed=9, minutes=3.0, max_steps=6)
    assert seen["weights"] == "base.pt"
    config.write_text('[adapt]\nminute = 3\n')
    result = run_cli(tmp_path, "--out", tmp_path / "a.pt", "--config", config)
    assert result.exit_code == 1 and "unknown keys in [adapt]" in result.output


def test_help_states_the_defaults_that_apply():
    help_text = CliRunner().invoke(train_cli.main, ["adapt", "--help"], terminal_width=200).output
    defaults = AdaptOptions()
    for option, field in [("--minutes", "minutes"), ("--photos-per-shape", "photos_per_shape"),
                          ("--photo-size", "photo_size"), ("--side", "side"), ("--lr", "lr"),
                          ("--batch-size", "batch_size"), ("--seed", "seed"), ("--up-axis", "up_axis"),
                          ("--workers", "workers"), ("--threads", "threads"), ("--max-steps", "max_steps"),
                          ("--device", "device")]:
        shown = re.search(rf"{option} .*?\[default: ([^\]]+)\]", help_text, re.S).group(1).split()[0]
        assert str(shown) == str(getattr(defaults, field)) or float(shown) == getattr(defaults, field), option
