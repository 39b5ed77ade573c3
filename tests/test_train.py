"""ibsr.train and ibsr-train: batches, data caches, augmentation, the loop, resume, import-jittor.

Everything runs on a tiny generated dataset (3 categories x 3 shapes x 2 photos) and the tiny
model of conftest (width 8, 32 px), so each test takes seconds on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TINY
from ibsr.errors import IbsrError
from ibsr.train import CMICTask, Loop, RunDir, TrainConfig, batch_loss, load_dataset, make_batch, sample_batch
from ibsr.train.augment import apply_mask_mode, augment_queries, augment_views, plain_queries, plain_views
from ibsr.train.batch import steps_per_epoch
from ibsr.train.config import AugmentConfig

MODEL = {k: v for k, v in TINY.items() if k != "views"}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    from ibsr.cli.data import main as data_main

    root = tmp_path_factory.mktemp("train-data") / "ds"
    result = CliRunner().invoke(data_main, ["synth", "--out", str(root), "--categories", "chair,table,lamp",
                                            "--shapes-per-category", "3", "--queries-per-shape", "2",
                                            "--seed", "5", "--size", "64", "--json"])
    assert result.exit_code == 0, result.output
    return root


def tiny_config(dataset_dir, cache, **sections) -> TrainConfig:
    raw = {
        "seed": 3,
        "data": {"train": str(dataset_dir), "val": str(dataset_dir), "cache": str(cache)},
        "model": {"preset": "small", **MODEL},
        "train": {"batch_size": 6, "steps": 4, "epochs": 0, "lr": 1e-3, "threads": 1,
                  "checkpoint_every": 2, "log_every": 1},
        "val": {"every": 2},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return TrainConfig.from_dict(raw)


def cmic_task(config: TrainConfig, out, resume: bool = False, command: str = "") -> CMICTask:
    """The CMIC task of a run folder (new, or resumed), without progress bars."""
    return CMICTask(config, RunDir(out, resume), command=command, progress=False)


def run_to_end(task: CMICTask):
    return Loop(task, progress=False).run()


# --------------------------------------------------------------------------- batches


def test_batch_holds_unique_shapes_including_the_images_own_filled_to_b():
    query_shape = np.array([0, 0, 1, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9, 9])
    for step in range(20):
        batch = sample_batch(query_shape, num_shapes=12, batch_size=6, seed=1, step=step)
        assert len(batch.images) == 6
        assert len(batch.shapes) == 6 and len(set(batch.shapes.tolist())) == 6
        # every image's shape is in the batch, and image_shape points at it
        assert np.array_equal(batch.shapes[batch.image_shape], query_shape[batch.images])
        # the images' shapes come first, the fill after
        own = list(dict.fromkeys(query_shape[batch.images].tolist()))
        assert batch.shapes[:len(own)].tolist() == own


def test_batch_is_deterministic_in_seed_and_step_and_covers_an_epoch():
    query_shape = np.arange(20) % 7
    a = sample_batch(query_shape, 7, 5, seed=4, step=3)
    b = sample_batch(query_shape, 7, 5, seed=4, step=3)
    c = sample_batch(query_shape, 7, 5, seed=5, step=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.__dict__.values(), b.__dict__.values()))
    assert not (np.array_equal(a.images, c.images) and np.array_equal(a.shapes, c.shapes))
    # one epoch = every image exactly once (20 images, batches of 5)
    assert steps_per_epoch(20, 5) == 4
    seen = np.concatenate([sample_batch(query_shape, 7, 5, 4, s).images for s in range(4)])
    assert sorted(seen.tolist()) == list(range(20))


def test_batch_with_a_catalog_smaller_than_b():
    batch = make_batch(np.array([0, 1, 2]), np.array([0, 1, 1]), num_shapes=3, batch_size=8,
                       rng=np.random.default_rng(0))
    assert sorted(batch.shapes.tolist()) == [0, 1, 2]
    assert batch.image_shape.tolist() == [0, 1, 1]


# --------------------------------------------------------------------------- config


def test_config_files_load_and_typos_are_refused(tmp_path):
    from ibsr.train import load_config
    from ibsr.train.config import AdaptOptions, command_config, read_config_file

    for name in ("small", "paper"):
        config = load_config(f"configs/{name}.toml")
        assert config.method.tau == 0.1 and config.method.beta1 == 0.2 and config.train.batch_size == 30
    assert load_config("configs/paper.toml").train.lr == 5e-5
    for path in sorted(Path("configs").rglob("*.toml")):  # every shipped config, extends chains included
        tables = read_config_file(path)
        if "adapt" in tables:  # `ibsr-train adapt --config` options (default-adapt.toml), not a training run
            assert command_config(AdaptOptions, tables, str(path)).max_steps > 0, path
            continue
        assert load_config(path).data.train, path  # loads: no unknown key, its extends chain resolves
    bad = tmp_path / "bad.toml"
    for text, message in [('[data]\ntrain = "x"\n[train]\nlr_rate = 1\n', "unknown keys in [train]"),
                          ('[data]\ntrain = "x"\n[method]\nviews = 5\n', "method.views"),
                          ('[data]\ntrain = "x"\n[method]\nmask = "blend"\n', "method.mask"),
                          ('[data]\ntrain = "x"\n[train]\nbatch_size = "30"\n', "train.batch_size"),
                          ('[data]\ntrain = "x"\n[model]\nviews = 6\n', "method.views"),
                          ("[data\n", "not valid TOML")]:
        bad.write_text(text)
        with pytest.raises(IbsrError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_config(bad)


def test_config_extends_another_file_key_by_key(tmp_path):
    from ibsr.train import load_config

    small = load_config("configs/small.toml")
    row = load_config("configs/ablation/no-mask.toml")
    assert row.method.mask == "none" and row.train.steps == 1500 and row.train.lr_decay_steps == 500
    # everything not overridden is small.toml's
    assert row.train.lr == small.train.lr and row.data == small.data and row.augment == small.augment
    full = load_config("configs/ablation/full.toml")
    assert full.method == small.method
    for name, switch in [("no-attention", "attention"), ("no-category-loss", "category_loss"), ("no-mask", "mask"),
                         ("mask-multiply", "mask"), ("views-6", "views"), ("views-1", "views")]:
        config = load_config(f"configs/ablation/{name}.toml")
        assert {k for k, v in config.method.__dict__.items() if getattr(full.method, k) != v} == {switch}
        assert config.train == full.train
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(IbsrError, match="cycle"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(IbsrError, match="not found") as info:
        load_config(tmp_path / "c.toml")
    assert info.value.path.endswith("missing.toml")


def test_one_file_holds_the_tables_of_every_command_and_flags_override_it(tmp_path):
    from ibsr.train.config import (AdaptOptions, MaskTrainConfig, command_config, load_config, override,
                                   read_config_file)

    path = tmp_path / "all.toml"
    path.write_text('seed = 7\n[data]\ntrain = "x"\n[train]\nsteps = 5\n'
                    '[mask]\ndata = ["m1", "m2"]\nsteps = 40\nlr = 1\n[adapt]\nminutes = 2\nside = "both"\n')
    assert load_config(path).train.steps == 5 and load_config(path).seed == 7  # run reads its own tables
    tables = read_config_file(path)
    mask = command_config(MaskTrainConfig, tables, str(path))
    assert (mask.data, mask.steps, mask.lr, mask.seed, mask.batch_size) == (("m1", "m2"), 40, 1.0, 7, 64)
    flags = override(tables, "mask", steps=9, lr=None, seed=1, data=["m3"])  # None: a flag not given
    mask = command_config(MaskTrainConfig, flags, str(path))
    assert (mask.data, mask.steps, mask.lr, mask.seed) == (("m3",), 9, 1.0, 1)
    assert mask.to_dict()["val"] is None and mask.to_dict()["data"] == ["m3"]  # the record as it always was
    adapt = command_config(AdaptOptions, tables, str(path), base=AdaptOptions(photo_size=64))
    assert (adapt.minutes, adapt.side, adapt.seed, adapt.photo_size) == (2.0, "both", 7, 64)
    for text, message in [('[mask]\nstep = 3\n', "unknown keys in [mask]"),
                          ('[mask]\nseed = 3\n', "unknown keys in [mask]"),  # one seed, at the top
                          ('[adapt]\nminutes = "ten"\n', "adapt.minutes"),
                          ('[data]\ntrain = "x"\n[mask]\ndata = "m1"\n', "mask.data"),
                          ('[masks]\n', "unknown top-level keys")]:
        path.write_text(text)
        with pytest.raises(IbsrError, match=message.replace("[", r"\[").replace("]", r"\]")):
            command_config(AdaptOptions, read_config_file(path), str(path))
        if "[data]" in text:  # ibsr-train run checks the other commands' tables too
            with pytest.raises(IbsrError, match=message):
                load_config(path)
    with pytest.raises(IbsrError, match="--side"):
        command_config(AdaptOptions, override({}, "adapt", side="left"))
    with pytest.raises(IbsrError, match="--data"):
        command_config(MaskTrainConfig, {})


# --------------------------------------------------------------------------- data


def test_cached_data_equals_the_index_and_search_preprocessing(dataset_dir, tmp_path):
    from ibsr.geometry.mesh import file_hash
    from ibsr.indexer.discover import discover
    from ibsr.indexer.render_job import RenderJob, render_shape
    from ibsr.photos.query import load_query, query_tensor

    data = load_dataset(dataset_dir, 32, 32, tmp_path / "cache", progress=False)
    assert data.num_shapes == 9 and data.num_queries == 18 and data.categories == ["chair", "lamp", "table"]
    entry = discover(dataset_dir / "catalog")[4]
    job = RenderJob(entry.shape_id, entry.category, str(entry.path), file_hash(entry.path), "y", 32)
    assert np.array_equal(data.views[4], render_shape(job)["views"])  # the index's renderings
    record = json.loads((dataset_dir / "queries.jsonl").read_text().splitlines()[7])
    query = load_query(dataset_dir / record["image"], dataset_dir / record["mask"])
    expected = query_tensor(query, 32)  # the searcher's exact input
    np.testing.assert_allclose(plain_queries(torch.from_numpy(data.queries[7:8]))[0].numpy(), expected, atol=1e-6)
    assert data.shape_ids[data.query_shape[7]] == record["shape_id"]
    # second load comes from the cache files, identical
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    again = load_dataset(dataset_dir, 32, 32, tmp_path / "cache", progress=False)
    assert np.array_equal(again.views, data.views) and np.array_equal(again.queries, data.queries)


# --------------------------------------------------------------------------- augmentation


def test_augmentation_ranges_and_one_flip_per_shape():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (4, 4, 16, 16), dtype=np.uint8))
    x[:, 3] = torch.where(x[:, 3] > 127, 255, 0).to(torch.uint8)
    out = augment_queries(x, AugmentConfig(), np.random.default_rng(1))
    assert out.shape == (4, 4, 16, 16) and out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5
    off = AugmentConfig(color_transfer=0.0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), translate=0.0, flip=0.0)
    torch.testing.assert_close(augment_queries(x, off, np.random.default_rng(1)), plain_queries(x), atol=1e-5, rtol=0)
    views = torch.from_numpy(rng.integers(0, 256, (3, 12, 16, 16), dtype=np.uint8))
    mirror = AugmentConfig(render_crop_scale=(1.0, 1.0), render_flip=1.0)
    torch.testing.assert_close(augment_views(views, mirror, np.random.default_rng(2)),
                               plain_views(views).flip(-1), atol=1e-5, rtol=0)
    # a crop is drawn per shape: all views of a shape get the same transform
    crop = AugmentConfig(render_crop_scale=(0.5, 0.6), render_flip=0.5)
    same = torch.from_numpy(np.repeat(views[:, :1].numpy(), 12, axis=1))
    out = augment_views(same, crop, np.random.default_rng(3))
    assert torch.equal(out[:, :1].expand_as(out), out)


def test_mask_modes():
    x = torch.rand(2, 4, 8, 8) * 2 - 1
    x[:, 3] = torch.where(x[:, 3] > 0, 1.0, -1.0)
    assert torch.equal(apply_mask_mode(x, "concat"), x)
    none = apply_mask_mode(x, "none")
    assert torch.equal(none[:, :3], x[:, :3]) and bool((none[:, 3] == 1).all())
    mult = apply_mask_mode(x, "multiply")
    background = (x[:, 3:] < 0).expand(-1, 3, -1, -1)
    assert bool((mult[:, :3][background] == -1).all())
    assert torch.allclose(mult[:, :3][~background], x[:, :3][~background])


# --------------------------------------------------------------------------- training


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(dataset_dir, tmp_path):
    config = tiny_config(dataset_dir, tmp_path / "cache", data={"val": ""}, train={"steps": 8},
                         augment={"enabled": False})
    task = cmic_task(config, tmp_path / "run")
    batch = sample_batch(task.train_data.query_shape, task.train_data.num_shapes, 6, config.seed, 0)

    def fixed_loss():
        with torch.no_grad():
            return batch_loss(task.model, task.train_data, task.train_views, batch, config, None).total.item()

    before = fixed_loss()
    for _ in range(8):
        loss = task.train_step()
        assert torch.isfinite(loss.total)
    assert task.step == 8
    assert fixed_loss() < before - 0.05


@pytest.mark.parametrize("method", [{"attention": False, "category_loss": False, "mask": "multiply", "views": 3}])
def test_ablation_switches_train(dataset_dir, tmp_path, method):
    config = tiny_config(dataset_dir, tmp_path / "cache", method=method, train={"steps": 1}, val={"every": 0})
    summary = run_to_end(cmic_task(config, tmp_path / "run"))
    assert summary.step == 1 and summary.history[-1]["shapes"] == 9
    assert np.isfinite(summary.history[-1]["top1"])


def test_resume_continues_at_the_same_step_with_the_same_state(dataset_dir, tmp_path):
    cache = tmp_path / "cache"
    straight = cmic_task(tiny_config(dataset_dir, cache), tmp_path / "a")
    summary = run_to_end(straight)
    assert summary.step == 4 and [h["step"] for h in summary.history] == [0, 2, 4]

    first = cmic_task(tiny_config(dataset_dir, cache, train={"steps": 2}), tmp_path / "b")
    run_to_end(first)
    with pytest.raises(IbsrError, match="--resume"):
        cmic_task(tiny_config(dataset_dir, cache), tmp_path / "b")
    with pytest.raises(IbsrError, match="method.tau"):
        cmic_task(tiny_config(dataset_dir, cache, method={"tau": 0.2}), tmp_path / "b", resume=True)
    resumed = cmic_task(tiny_config(dataset_dir, cache), tmp_path / "b", resume=True)
    assert resumed.step == 2
    resumed_summary = run_to_end(resumed)
    assert resumed_summary.step == 4
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)
    assert [h["step"] for h in resumed_summary.history] == [0, 2, 4]
    assert resumed_summary.history[-1]["top1"] == summary.history[-1]["top1"]


def test_lr_schedule_is_constant_then_a_cosine_to_zero():
    from ibsr.train.config import TrainSection

    train = TrainSection(lr=1e-3, lr_decay_steps=4, steps=10)
    rates = [train.lr_at(step, 10) for step in range(10)]
    assert rates[:6] == [1e-3] * 6
    assert rates[6] == pytest.approx(1e-3) and rates[8] == pytest.approx(0.5e-3)
    assert all(a > b > 0 for a, b in zip(rates[6:], rates[7:]))
    assert TrainSection(lr=1e-3).lr_at(9, 10) == 1e-3


def test_a_constant_run_resumes_into_a_decay_phase_and_applies_it(dataset_dir, tmp_path):
    cache = tmp_path / "cache"
    run_to_end(cmic_task(tiny_config(dataset_dir, cache, train={"steps": 2}), tmp_path / "run"))
    with pytest.raises(IbsrError, match="changes the rate of step 1"):
        cmic_task(tiny_config(dataset_dir, cache, train={"steps": 4, "lr_decay_steps": 4}), tmp_path / "run",
                  resume=True)
    with pytest.raises(IbsrError, match="lr_decay_steps"):
        tiny_config(dataset_dir, cache, train={"steps": 4, "lr_decay_steps": 5})
    resumed = cmic_task(tiny_config(dataset_dir, cache, train={"steps": 4, "lr_decay_steps": 2}), tmp_path / "run",
                        resume=True)
    rates = []
    for _ in range(2):
        resumed.train_step()
        rates.append(resumed.optimizer.param_groups[0]["lr"])
    assert rates == [pytest.approx(1e-3), pytest.approx(0.5e-3)]


def test_best_checkpoint_is_an_ibsr_checkpoint_with_info(dataset_dir, tmp_path):
    from ibsr.model import load_checkpoint

    task = cmic_task(tiny_config(dataset_dir, tmp_path / "cache"), tmp_path / "run", command="ibsr-train run x")
    summary = run_to_end(task)
    model = load_checkpoint(summary.best_checkpoint)
    assert model.config.width == 8 and model.config.query_size == 32
    payload = torch.load(summary.best_checkpoint, weights_only=True)
    info = payload["info"]
    assert info["command"] == "ibsr-train run x" and info["config"]["method"]["tau"] == 0.1
    assert info["step"] == summary.best["step"] and set(info["val"]) >= {"top1", "top10", "category"}
    last = torch.load(summary.last_checkpoint, weights_only=True)["info"]
    assert last["step"] == 4 and last["val"]["step"] == 4 and last["val"]["top1"] == summary.history[-1]["top1"]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum("val" in line for line in lines) == 3 and sum("loss" in line for line in lines) == 4


@pytest.fixture
def python_signal_handlers():
    """Python's own SIGTERM / SIGINT handlers for the test (a Ray test earlier in the process
    leaves Ray's, which do not raise KeyboardInterrupt), the process's put back afterwards."""
    found = {sig: signal.signal(sig, handler)
             for sig, handler in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler))}
    yield
    for sig, handler in found.items():
        signal.signal(sig, handler)


def test_stop_signals_finish_the_step_save_and_resume_into_the_same_run(dataset_dir, tmp_path, monkeypatch,
                                                                        python_signal_handlers):
    """SIGTERM (or Ctrl-C) during a step: the step, its metrics line and validation are finished,
    the state is saved, the run stops with a one-line message; resumed, it ends where the
    uninterrupted run does. A second signal is the old handler's (KeyboardInterrupt at once)."""
    cache = tmp_path / "cache"
    straight = run_to_end(cmic_task(tiny_config(dataset_dir, cache), tmp_path / "straight"))
    original = CMICTask.train_step

    def signalled(task, signals=(signal.SIGTERM,)):
        if task.step == 1:
            for sig in signals:
                os.kill(os.getpid(), sig)
        return original(task)

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(CMICTask, "train_step", signalled)
    with pytest.raises(IbsrError, match="interrupted at step 2/4; state saved in .*--resume"):
        run_to_end(cmic_task(tiny_config(dataset_dir, cache), tmp_path / "run"))
    assert {sig: signal.getsignal(sig) for sig in before} == before  # the handlers are back
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["step"] == 2
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], "val" in line) for line in lines] == [(0, True), (1, False), (2, False), (2, True)]
    monkeypatch.setattr(CMICTask, "train_step", original)
    resumed = run_to_end(cmic_task(tiny_config(dataset_dir, cache), tmp_path / "run", resume=True))
    a = torch.load(straight.last_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == [{**h, "seconds": r["seconds"]} for h, r in zip(straight.history, resumed.history)]

    monkeypatch.setattr(CMICTask, "train_step",
                        lambda task: signalled(task, (signal.SIGINT, signal.SIGINT)))
    with pytest.raises(KeyboardInterrupt):
        run_to_end(cmic_task(tiny_config(dataset_dir, cache), tmp_path / "twice"))
    assert not (tmp_path / "twice" / "state.pt").exists()  # not the state of a step cut short


def test_a_run_folder_without_a_data_record_resumes_and_changed_data_is_refused(dataset_dir, tmp_path):
    """Run folders written before state.pt recorded the training data resume as before; a run
    whose training photos or meshes changed since it started is refused."""
    cache = tmp_path / "cache"
    data = tmp_path / "data"
    shutil.copytree(dataset_dir, data)
    config = tiny_config(data, cache, data={"val": ""}, train={"steps": 2})
    run_to_end(cmic_task(config, tmp_path / "old"))
    state = tmp_path / "old" / "state.pt"
    payload = torch.load(state, weights_only=True)
    assert payload["data"] == load_dataset(data, 32, 32, cache, progress=False).key
    del payload["data"]  # as the code before the run folder recorded it wrote it
    torch.save(payload, state)
    assert run_to_end(cmic_task(tiny_config(data, cache, data={"val": ""}), tmp_path / "old", resume=True)).step == 4

    run_to_end(cmic_task(config, tmp_path / "new"))
    photo = data / json.loads((data / "queries.jsonl").read_text().splitlines()[0])["image"]
    photo.write_bytes(photo.read_bytes() + b"\0")  # one photo's file changes
    with pytest.raises(IbsrError, match="training data changed"):
        cmic_task(tiny_config(data, cache, data={"val": ""}), tmp_path / "new", resume=True)


def test_attention_spread_on_hand_computable_cases():
    from ibsr.model import ModelConfig, init_model
    from ibsr.train.evaluate import attention_spread

    model = init_model(ModelConfig(**TINY))
    d = TINY["embed_dim"]
    q = torch.nn.functional.normalize(torch.ones(2, d), dim=-1)
    views = torch.eye(d)[:4].expand(2, 4, d)  # 4 orthogonal views: pairwise cosine 0
    with torch.no_grad():
        model.attention.linear_in.weight.zero_()  # W = 0: every logit 0, uniform weights
    spread = attention_spread(model, q, views)
    assert spread["effective_views"] == pytest.approx(4) and spread["max_weight"] == pytest.approx(0.25)
    assert spread["view_cosine"] == 0 and spread["wq_norm"] == 0
    with torch.no_grad():
        model.attention.linear_in.weight.zero_()
        model.attention.linear_in.weight[0] = 1000.0  # W q points along view 0 with a huge scale
    spread = attention_spread(model, q, views)
    assert spread["effective_views"] == pytest.approx(1, abs=1e-4) and spread["max_weight"] == pytest.approx(1)


# --------------------------------------------------------------------------- CLI


def test_cli_eval_scores_each_checkpoint_as_it_was_trained(dataset_dir, tmp_path):
    from ibsr.cli.train import main

    cache = tmp_path / "cache"
    full = run_to_end(cmic_task(tiny_config(dataset_dir, cache), tmp_path / "full"))
    ablated = run_to_end(cmic_task(tiny_config(dataset_dir, cache, method={"attention": False, "mask": "none",
                                                                           "views": 3}), tmp_path / "ablated"))
    result = CliRunner().invoke(main, ["eval", full.last_checkpoint, ablated.last_checkpoint, "--data",
                                       str(dataset_dir), "--cache", str(cache), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    # The same weights, data and scoring as the run's last validation: the same numbers.
    for row, summary in zip(rows, (full, ablated)):
        assert row["step"] == 4 and row["queries"] == 18 and row["shapes"] == 9
        assert {k: row[k] for k in ("top1", "top10", "category")} == \
               {k: summary.history[-1][k] for k in ("top1", "top10", "category")}
    assert (rows[1]["views"], rows[1]["mask"], rows[1]["attention"]) == (3, "none", False)
    assert "mean_of_views" not in rows[1]
    assert 1 <= rows[0]["attention_spread"]["effective_views"] <= 12
    assert 1 / 12 <= rows[0]["attention_spread"]["max_weight"] <= 1
    assert -1 <= rows[0]["attention_spread"]["view_cosine"] <= 1 and rows[0]["attention_spread"]["wq_norm"] > 0
    table = CliRunner().invoke(main, ["eval", full.last_checkpoint, "--data", str(dataset_dir), "--cache", str(cache)])
    assert table.exit_code == 0 and "mean-of-views" in table.output and "18 queries against 9 shapes" in table.output
    missing = CliRunner().invoke(main, ["eval", str(tmp_path / "nope.pt"), "--data", str(dataset_dir)])
    assert missing.exit_code == 1 and "nope.pt" in missing.output and "Traceback" not in missing.output


def test_cli_run_json_and_errors(dataset_dir, tmp_path):
    from ibsr.cli.train import main

    config = tmp_path / "c.toml"
    config.write_text(f'seed = 1\n[data]\ntrain = "{dataset_dir}"\ncache = "{tmp_path / "cache"}"\n'
                      f'[model]\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in MODEL.items()) +
                      '[train]\nbatch_size = 6\nsteps = 2\nepochs = 0\nthreads = 1\n')
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--config", str(config), "--out", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["step"] == 2 and summary["best_checkpoint"] is None and summary["last_checkpoint"].endswith("last.pt")
    again = runner.invoke(main, ["run", "--config", str(config), "--out", str(tmp_path / "r")])
    assert again.exit_code == 1 and "--resume" in again.output and "Traceback" not in again.output
    missing = runner.invoke(main, ["run", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "s")])
    assert missing.exit_code == 1 and "config not found" in missing.output
    help_text = runner.invoke(main, ["run", "--help"]).output
    assert "--resume" in help_text and "--json" in help_text


def _jittor_file(model, path):
    """The authors' on-disk format: pickle protocol 4 of {name: float32 ndarray} without
    num_batches_tracked, then SHA-1 of the stream and b"HCAJSLHD"."""
    arrays = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    stream = pickle.dumps(arrays, protocol=4)
    path.write_bytes(stream + hashlib.sha1(stream).digest() + b"HCAJSLHD")


def test_import_jittor_cli_round_trips_a_checkpoint(tmp_path):
    from ibsr.cli.train import main
    from ibsr.model import ModelConfig, init_model, load_checkpoint

    source = init_model(ModelConfig(**TINY), seed=11)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is really tested
        for name, buffer in source.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    jittor = tmp_path / "cmic_pix3d.pt"
    _jittor_file(source, jittor)
    out = tmp_path / "converted.pt"
    result = CliRunner().invoke(main, ["import-jittor", str(jittor), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "query_arch=resnet18" in result.output and "width=8" in result.output and "embed_dim=64" in result.output
    model = load_checkpoint(out)
    q, v = torch.rand(2, 4, 32, 32) * 2 - 1, torch.rand(3, 12, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.embed_queries(q), source.embed_queries(q), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(model.embed_views(v), source.embed_views(v), atol=1e-6, rtol=1e-5)
        e = torch.nn.functional.normalize(torch.randn(2, 64), dim=-1)
        torch.testing.assert_close(model.score(e, model.embed_views(v)), source.score(e, source.embed_views(v)),
                                   atol=1e-6, rtol=1e-5)
    bad = CliRunner().invoke(main, ["import-jittor", str(tmp_path / "missing.pt"), "--out", str(out)])
    assert bad.exit_code == 1 and "not found" in bad.output


def _first_step(dataset_dir, tmp_path, option: str, scale: float) -> tuple[list, dict]:
    """One training step with train.<option> = scale: the groups' rates (sorted), and how far
    each parameter moved (max abs)."""
    task = cmic_task(tiny_config(dataset_dir, tmp_path / "cache", train={option: scale}, val={"every": 0}),
                     tmp_path / f"{option}{scale}")
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    task.train_step()
    rates = sorted(g["lr"] for g in task.optimizer.param_groups)
    return rates, {n: (p.detach() - before[n]).abs().max().item() for n, p in task.model.named_parameters()}


def test_attention_lr_scale_gives_the_attention_its_own_rate(dataset_dir, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(IbsrError, match="attention_lr_scale"):
        tiny_config(dataset_dir, cache, train={"attention_lr_scale": 0})
    moved = {}
    for scale in (1.0, 30.0):
        rates, moved[scale] = _first_step(dataset_dir, tmp_path, "attention_lr_scale", scale)
        assert rates == ([pytest.approx(1e-3)] if scale == 1.0 else [pytest.approx(1e-3), pytest.approx(3e-2)])
    attention = [n for n in moved[1.0] if n.startswith("attention.")]
    learning = [n for n in attention if moved[1.0][n] > 0]  # linear_in (scoring uses no other)
    assert "attention.linear_in.weight" in learning
    # Adam's first step moves each weight by ~lr: the attention ~30x further
    for n in learning:
        assert moved[30.0][n] > 10 * moved[1.0][n], n
    others = [n for n in moved[1.0] if n not in attention]
    assert max(moved[1.0][n] for n in others) > 0
    for n in others:  # the same first gradient and rate: the same move
        assert moved[30.0][n] == pytest.approx(moved[1.0][n], rel=1e-4, abs=1e-9), n


def test_a_run_saved_before_attention_lr_scale_existed_resumes(dataset_dir, tmp_path):
    cache = tmp_path / "cache"
    run_to_end(cmic_task(tiny_config(dataset_dir, cache, train={"steps": 2}), tmp_path / "run"))
    state = tmp_path / "run" / "state.pt"
    payload = torch.load(state, weights_only=True)
    del payload["config"]["train"]["attention_lr_scale"]  # as such a run wrote it
    for group in payload["optimizer"]["param_groups"]:
        del group["lr_scale"]
    torch.save(payload, state)
    resumed = cmic_task(tiny_config(dataset_dir, cache), tmp_path / "run", resume=True)
    assert resumed.step == 2
    assert run_to_end(resumed).step == 4
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_freeze_takes_modules_inside_an_encoder(dataset_dir, tmp_path):
    """A dotted name freezes one part (weights and BatchNorm statistics); the rest still learns."""
    frozen = "query_encoder.resnet.layer1"
    config = tiny_config(dataset_dir, tmp_path / "cache", data={"val": ""}, train={"freeze": [frozen], "steps": 2})
    task = cmic_task(config, tmp_path / "run")
    part = task.model.get_submodule(frozen)
    before = {k: v.clone() for k, v in part.state_dict().items()}
    head_before = task.model.query_encoder.resnet.layer4.state_dict()["0.conv1.weight"].clone()
    for _ in range(2):
        task.train_step()
    for name, value in part.state_dict().items():
        assert torch.equal(value, before[name]), name  # running means included: eval mode
    assert not torch.equal(task.model.query_encoder.resnet.layer4.state_dict()["0.conv1.weight"], head_before)


def test_freeze_names_are_checked(dataset_dir, tmp_path):
    with pytest.raises(IbsrError, match="train.freeze"):
        tiny_config(dataset_dir, tmp_path / "cache", train={"freeze": ["backbone.layer1"]})
    config = tiny_config(dataset_dir, tmp_path / "cache", data={"val": ""},
                         train={"freeze": ["query_encoder.no_such_part"]})
    with pytest.raises(IbsrError, match="no_such_part"):
        cmic_task(config, tmp_path / "run")


def test_backbone_lr_scale_slows_the_backbones_not_their_heads(dataset_dir, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(IbsrError, match="backbone_lr_scale"):
        tiny_config(dataset_dir, cache, train={"backbone_lr_scale": 0})
    moved = {}
    for scale in (1.0, 0.01):
        rates, moved[scale] = _first_step(dataset_dir, tmp_path, "backbone_lr_scale", scale)
        assert rates == ([pytest.approx(1e-3)] if scale == 1.0 else [pytest.approx(1e-5), pytest.approx(1e-3)])
    backbone = [n for n in moved[1.0] if n.split(".")[0].endswith("_encoder") and ".fc." not in n
                and moved[1.0][n] > 0]
    heads = [n for n in moved[1.0] if ".fc." in n and moved[1.0][n] > 0]
    assert backbone and heads
    for n in backbone:  # Adam's first step moves each weight by ~lr: 100x less
        assert moved[0.01][n] < 0.05 * moved[1.0][n], n
    for n in heads:  # the heads' first gradients and rates are unchanged
        assert moved[0.01][n] == pytest.approx(moved[1.0][n], rel=1e-4, abs=1e-9), n


@pytest.mark.parametrize("anchor", ["imagenet_anchor", "feature_anchor"])
def test_anchor_settings_are_checked(dataset_dir, tmp_path, anchor):
    """An anchor's weight is at least 0, and it needs a query backbone with packaged ImageNet weights."""
    with pytest.raises(IbsrError, match=anchor):
        tiny_config(dataset_dir, tmp_path / "cache", train={anchor: -1})
    with pytest.raises(IbsrError, match=anchor):  # a ResNet query backbone has no packaged weights
        tiny_config(dataset_dir, tmp_path / "cache", train={anchor: 1.0})


def test_imagenet_anchor_pulls_the_query_backbone_toward_imagenet(dataset_dir, tmp_path):
    """L2-SP: with the anchor the loss holds the squared distance of the query backbone from its
    packaged ImageNet weights (0 at an ImageNet start), and its gradient pulls moved weights back."""
    cache = tmp_path / "cache"
    lite = {"query_arch": "efficientnet_lite0", "render_arch": "efficientnet_lite0", "pretrained": True}
    config = tiny_config(dataset_dir, cache, model=lite, train={"imagenet_anchor": 10.0}, val={"every": 0})
    task = cmic_task(config, tmp_path / "run")
    assert task.anchor and float(task.anchor_penalty().detach()) == 0.0  # starts at its ImageNet values
    param, reference = task.anchor[0]
    with torch.no_grad():
        param.add_(0.01)
    expected = 10.0 * 0.01 ** 2 * param.numel()
    assert float(task.anchor_penalty().detach()) == pytest.approx(expected, rel=1e-3)
    task.anchor_penalty().backward()
    assert torch.allclose(param.grad, torch.full_like(param, 2 * 10.0 * 0.01), rtol=1e-3)
    param.grad = None
    # the same run with and without a strong anchor: the anchored backbone stays nearer ImageNet
    training_photos = apply_mask_mode(plain_queries(torch.from_numpy(task.train_data.queries[:8])), "concat")
    distances = {}
    for name, strength in (("plain", 0.0), ("anchored", 1000.0)):
        run = cmic_task(tiny_config(dataset_dir, cache, model=lite, train={"imagenet_anchor": strength},
                                    val={"every": 0}), tmp_path / name)
        assert bool(run.anchor) == (strength > 0)
        for _ in range(3):
            run.train_step()
        backbone = [p for n, p in run.model.query_encoder.backbone.named_parameters() if not n.startswith("fc.")]
        distances[name] = sum(float(((p.detach() - ref) ** 2).sum()) for p, (_, ref) in zip(backbone, task.anchor))
    assert distances["anchored"] < 0.5 * distances["plain"]


def test_feature_anchor_holds_the_query_features_near_imagenet(dataset_dir, tmp_path):
    """The penalty is the mean squared difference of the pooled features from those of the
    packaged ImageNet weights on the batch's photos: 0 at an ImageNet start, the embeddings the
    same as without it, its gradient pulls moved features back, and training adds it to the loss."""
    cache = tmp_path / "cache"
    lite = {"query_arch": "efficientnet_lite0", "render_arch": "efficientnet_lite0", "pretrained": True}
    task = cmic_task(tiny_config(dataset_dir, cache, model=lite, train={"feature_anchor": 5.0},
                                 val={"every": 0}), tmp_path / "run")
    encoder, anchor = task.model.query_encoder, task.feature_anchor
    photos = apply_mask_mode(plain_queries(torch.from_numpy(task.train_data.queries[:8])), "concat")
    for mode in (encoder.eval, encoder.train):  # running and batch statistics alike
        mode()
        with torch.no_grad():
            embeddings, penalty = anchor.embed(encoder, photos)
            assert float(penalty) == 0.0
            assert torch.allclose(embeddings, encoder(photos), atol=1e-6)
    encoder.train()
    stem = next(encoder.backbone.parameters())
    with torch.no_grad():
        stem.add_(0.02 * torch.randn(stem.shape, generator=torch.Generator().manual_seed(0)))  # the features follow
    penalties = []
    for _ in range(3):  # plain gradient descent on the penalty alone brings the features back
        penalty = anchor.embed(encoder, photos)[1]
        penalties.append(float(penalty.detach()))
        stem.grad = None
        penalty.backward()
        with torch.no_grad():
            stem.sub_(stem.grad / stem.grad.norm() * 0.0005 * stem.numel() ** 0.5)  # a fortieth of the move
    assert penalties[0] > 0 and penalties[2] < penalties[1] < penalties[0]
    loss = task.train_step()  # the training loss holds the penalty, and the log line names it
    loss = task.train_step()
    assert anchor.last_penalty > 0
    beta1 = task.config.method.beta1
    assert float(loss.total) == pytest.approx(float(loss.instance + beta1 * loss.category) + anchor.last_penalty,
                                              rel=1e-5)
    assert task.metrics(loss)["feature_anchor"] == anchor.last_penalty
