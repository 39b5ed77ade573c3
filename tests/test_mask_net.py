"""The learned automatic mask: the network, its checkpoint, `ibsr-train mask`, and its use by the
searcher (model when installed, GrabCut when absent, when told, or when the network finds nothing)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ibsr.cli import data as data_cli
from ibsr.cli import eval as eval_cli
from ibsr.cli import search as search_cli
from ibsr.cli import train as train_cli
from ibsr.errors import IbsrError
from ibsr.model import scale_pixels, segmenter
from ibsr.model.segmenter import (MaskConfig, MaskNet, init_mask_net, load_mask_checkpoint, mask_certainty,
                                  save_mask_checkpoint)
from ibsr.photos import mask_model
from ibsr.photos.box import Box
from ibsr.photos.mask import grabcut_mask
from ibsr.photos.query import load_query
from ibsr.train.config import MaskTrainConfig
from ibsr.train.mask import MaskTask, load_mask_photos, mask_loss

REPO = Path(__file__).resolve().parent.parent
SIZE = 64  # network input side in these tests (the shipped one uses 224)


def invoke(cli, args):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def constant_net(tmp_path, logit: float, certainty_floor: float = 0.0):
    """A real MaskNet checkpoint whose output is `logit` everywhere (last conv zero, bias set):
    +8 = the whole photo is the object, -8 = nothing is."""
    model = MaskNet(MaskConfig(size=SIZE, certainty_floor=certainty_floor)).eval()
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.fill_(logit)
    return save_mask_checkpoint(model, tmp_path / f"const{logit:+.1f}-floor{certainty_floor}.pt")


def photo(tmp_path, name="q.png"):
    rgb = np.full((60, 70, 3), 230, np.uint8)
    rgb[15:45, 20:50] = (90, 60, 30)
    Image.fromarray(rgb).save(tmp_path / name)
    return tmp_path / name


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """12 synthetic 64 px photos with exact masks, as `ibsr-data synth` writes them."""
    out = tmp_path_factory.mktemp("maskdata") / "set"
    result = invoke(data_cli, ["synth", "--out", out, "--categories", "chair,lamp", "--shapes-per-category", 2,
                               "--queries-per-shape", 3, "--size", SIZE, "--seed", 5, "--json"])
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------- network and checkpoint


def test_output_has_the_input_size_for_odd_sizes():
    model = MaskNet(MaskConfig(size=SIZE)).eval()
    with torch.no_grad():
        for h, w in [(64, 64), (37, 53), (101, 29)]:
            assert model(torch.zeros(2, 3, h, w)).shape == (2, 1, h, w)
    rgb = np.random.default_rng(0).integers(0, 256, (45, 71, 3), dtype=np.uint8)
    mask = mask_model.predict_mask(model, rgb)
    assert mask.shape == (45, 71) and mask.dtype == bool


def test_checkpoint_round_trip_stores_float16_and_predicts_the_same(tmp_path):
    model = init_mask_net(MaskConfig(size=SIZE), seed=3, imagenet=True).eval()
    with torch.no_grad():  # decoder statistics as training leaves them, some below float16's precision
        for name, buffer in model.named_buffers():
            if name.endswith("running_var") and not name.startswith("encoder."):
                buffer.uniform_(0.5, 2.0).add_(1e-7)
    path = save_mask_checkpoint(model, tmp_path / "mask.pt", {"note": "test"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "ibsr-mask" and raw["config"] == {"arch": "efficientnet_lite0", "size": SIZE,
                                                              "decoder_channels": 64, "certainty_floor": 0.0}
    dtypes = {k: v.dtype for k, v in raw["state_dict"].items()}
    assert dtypes["encoder._conv_stem.weight"] == dtypes["head.1.bias"] == torch.float16
    assert all(dtypes[k] == torch.float32 for k in dtypes if k.endswith(("running_mean", "running_var")))
    assert not any(k.startswith(("encoder._conv_head", "encoder._fc")) for k in dtypes)  # head dropped
    loaded, info = load_mask_checkpoint(path)
    assert info == {"note": "test"} and not loaded.training
    assert all(v.dtype in (torch.float32, torch.int64) for v in loaded.state_dict().values())
    for name, value in model.state_dict().items():  # float16-rounded weights, exact statistics
        expected = value if name.endswith(("running_mean", "running_var", "num_batches_tracked")) else value.half()
        assert torch.equal(loaded.state_dict()[name], expected.to(value.dtype)), name
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    with torch.no_grad():
        before, after = torch.sigmoid(model(x)), torch.sigmoid(loaded(x))
    assert (before - after).abs().max() < 0.02


def test_missing_or_corrupt_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    other = tmp_path / "other.pt"
    torch.save({"format": "ibsr-checkpoint", "state_dict": {}}, other)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(save_mask_checkpoint(MaskNet(MaskConfig(size=SIZE)), tmp_path / "ok.pt").read_bytes()[:5000])
    for path, needle in [(tmp_path / "nope.pt", "not found"), (bad, "not a readable"), (truncated, "not a readable"),
                         (other, "not an ibsr mask network")]:
        with pytest.raises(IbsrError) as err:
            load_mask_checkpoint(path)
        assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    result = invoke(search_cli, [photo(tmp_path), "--mask-method", "model", "--mask-weights", bad,
                                 "--index", tmp_path])
    assert_one_line_error(result, str(bad), "not a readable mask network")


# --------------------------------------------------------------------------- training


def batch_stat_loss(model, photos) -> float:
    """BCE + Dice on every photo, un-augmented, with batch statistics (what the steps lower),
    leaving the model's buffers as they were."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        x = scale_pixels(torch.from_numpy(photos.images))
        loss = mask_loss(model(x), torch.from_numpy(photos.masks).float() / 255)[0].item()
    model.load_state_dict(state)
    return loss


def train_args(tiny_set, out, steps=20):
    return ["mask", "--data", tiny_set, "--val", tiny_set, "--out", out, "--steps", steps, "--batch-size", 4,
            "--size", SIZE, "--cache", out.parent / "cache", "--threads", 1, "--device", "cpu", "--json"]


def test_tiny_training_lowers_the_loss_and_resumes_exactly(tiny_set, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    result = invoke(train_cli, train_args(tiny_set, tmp_path / "full"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["step"] == 20 and summary["train_photos"] == 12 and summary["val"]["photos"] == 12
    assert 0.0 <= summary["val"]["iou_mean"] <= 1.0
    photos = load_mask_photos([tiny_set], SIZE, tmp_path / "cache", progress=False)
    trained, info = load_mask_checkpoint(tmp_path / "full" / "last.pt")
    assert info["step"] == 20 and info["val"] == summary["val"] and info["trained_by"] == "ibsr-train mask"
    assert 0 < trained.config.certainty_floor < 1  # measured on its training photos at the end
    start = batch_stat_loss(init_mask_net(MaskConfig(size=SIZE), seed=0), photos)
    assert batch_stat_loss(trained, photos) < 0.8 * start

    # The same run, stopped by Ctrl-C during step 8 (it finishes the step, saves the state), then resumed.
    original = MaskTask.train_step

    def stop_at_8(self):
        if self.step == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(MaskTask, "train_step", stop_at_8)
    stopped = invoke(train_cli, train_args(tiny_set, tmp_path / "split"))
    assert_one_line_error(stopped, "interrupted at step 8/20", "--resume")
    monkeypatch.setattr(MaskTask, "train_step", original)
    assert_one_line_error(invoke(train_cli, train_args(tiny_set, tmp_path / "split")), "already holds a run")
    assert_one_line_error(invoke(train_cli, [*train_args(tiny_set, tmp_path / "split"), "--resume", "--lr", "0.01"]),
                          "differ from the run's in lr")
    resumed = invoke(train_cli, [*train_args(tiny_set, tmp_path / "split"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit


def test_init_fine_tunes_the_given_network(tiny_set, tmp_path):
    """--init starts from that checkpoint (here one that calls every pixel the object), not from
    ImageNet and a new decoder; a checkpoint of another input size is a one-line error."""
    start = constant_net(tmp_path, 8.0)
    photos = scale_pixels(torch.from_numpy(load_mask_photos([tiny_set], SIZE, tmp_path / "cache",
                                                            progress=False).images))
    outputs = {}
    for name, extra in (("init", ["--init", start]), ("fresh", [])):
        result = invoke(train_cli, [*train_args(tiny_set, tmp_path / name, steps=1), "--lr", 1e-9, *extra])
        assert result.exit_code == 0, result.output
        trained, info = load_mask_checkpoint(tmp_path / name / "last.pt")
        assert info["config"]["init"] == (str(start) if extra else "")
        with torch.no_grad():
            outputs[name] = trained.eval()(photos)
    assert outputs["init"].min() > 7.9  # one step at lr 1e-9 leaves the constant network as it was
    assert outputs["fresh"].max() < 7.9
    wrong_size = invoke(train_cli, [*train_args(tiny_set, tmp_path / "other", steps=1), "--init", start,
                                    "--size", 32])
    assert_one_line_error(wrong_size, str(start), "pass --size 64")


def test_a_config_file_holds_the_options_and_flags_override_it(tiny_set, tmp_path):
    config = tmp_path / "mask.toml"
    config.write_text(f'seed = 2\n[mask]\ndata = ["{tiny_set}"]\nsteps = 2\nbatch_size = 4\nsize = {SIZE}\n'
                      f'threads = 1\ndevice = "cpu"\ncache = "{tmp_path / "cache"}"\n')
    result = invoke(train_cli, ["mask", "--config", config, "--out", tmp_path / "run", "--steps", 3, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["step"] == 3 and summary["val"] is None
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (recorded["steps"], recorded["seed"], recorded["data"], recorded["val"]) == (3, 2, [str(tiny_set)], None)
    assert_one_line_error(invoke(train_cli, ["mask", "--out", tmp_path / "other"]), "--data")
    config.write_text('[mask]\nsteps = "many"\n')
    assert_one_line_error(invoke(train_cli, ["mask", "--config", config, "--out", tmp_path / "other"]), "mask.steps")


def test_help_states_the_defaults_that_apply():
    help_text = CliRunner().invoke(train_cli.main, ["mask", "--help"], terminal_width=200).output
    defaults = MaskTrainConfig()
    for option, field in [("--steps", "steps"), ("--batch-size", "batch_size"), ("--lr", "lr"), ("--size", "size"),
                          ("--seed", "seed"), ("--device", "device"), ("--threads", "threads"), ("--cache", "cache"),
                          ("--checkpoint-every", "checkpoint_every")]:
        shown = re.search(rf"{option} .*?\[default: ([^\]]+)\]", help_text, re.S).group(1).split()[0]
        assert str(shown) == str(getattr(defaults, field)) or float(shown) == getattr(defaults, field), option


def test_training_refuses_photos_without_masks(tiny_set, tmp_path):
    data = tmp_path / "nomask"
    data.mkdir()
    lines = [json.loads(line) for line in (tiny_set / "queries.jsonl").read_text().splitlines()]
    for line in lines:
        line["image"] = str(tiny_set / line["image"])
        line.pop("mask")
    (data / "queries.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = invoke(train_cli, train_args(data, tmp_path / "run"))
    assert_one_line_error(result, "has no mask", "queries.jsonl")


# --------------------------------------------------------------------------- the searcher's automatic mask


def test_automatic_mask_uses_the_network_when_installed(tmp_path, monkeypatch):
    image = photo(tmp_path)
    rgb = np.asarray(Image.open(image).convert("RGB"))
    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(tmp_path / "absent.pt"))
    query = load_query(image)
    assert query.mask_source == "grabcut" and np.array_equal(query.mask, grabcut_mask(rgb))
    with pytest.raises(IbsrError, match="mask network not found"):
        load_query(image, mask_method="model")

    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(constant_net(tmp_path, +8.0)))
    query = load_query(image)
    assert query.mask_source == "model" and query.mask.all()  # the network's whole-frame answer
    forced = load_query(image, mask_method="grabcut")
    assert forced.mask_source == "grabcut" and np.array_equal(forced.mask, grabcut_mask(rgb))
    given = np.zeros((60, 70), np.uint8)
    given[10:20, 10:20] = 255
    Image.fromarray(given).save(tmp_path / "given.png")
    assert load_query(image, tmp_path / "given.png").mask_source == "file"  # a mask file comes first

    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(constant_net(tmp_path, -8.0)))  # finds nothing
    for method in ("auto", "model"):
        query = load_query(image, mask_method=method)
        assert query.mask_source == "grabcut-fallback" and np.array_equal(query.mask, grabcut_mask(rgb))


def test_a_tiny_network_mask_falls_back_to_grabcut(tmp_path, monkeypatch):
    image = photo(tmp_path)
    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(constant_net(tmp_path, +8.0)))

    def speck(model, rgb):
        mask = np.zeros(rgb.shape[:2], bool)
        mask[30, 35] = True  # 1 pixel of 4200: under the 0.5% floor
        return mask, 1.0

    monkeypatch.setattr(mask_model, "predict_mask_and_certainty", speck)
    assert load_query(image).mask_source == "grabcut-fallback"


def test_mask_certainty_counts_only_what_is_not_sure_background():
    assert mask_certainty(np.array([0.0, 0.05, 1.0, 1.0])) == pytest.approx(1.0)  # sure background left out
    assert mask_certainty(np.full((4, 4), 0.5)) == pytest.approx(0.0)
    assert mask_certainty(np.array([0.02, 0.3, 0.9])) == pytest.approx((0.4 + 0.8) / 2)
    assert mask_certainty(np.zeros((3, 3))) == 0.0  # nothing marked at all


def test_an_uncertain_network_mask_gives_way_to_the_whole_photo(tmp_path, monkeypatch):
    """Below its certainty floor the network's mask is not used: the photo is the object (a box:
    the box is). A checkpoint without a floor (0, as before floors existed) never does this."""
    image = photo(tmp_path)
    unsure = constant_net(tmp_path, 0.5, certainty_floor=0.5)  # p = 0.62 everywhere: certainty 0.245
    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(unsure))
    query = load_query(image)
    assert query.mask_source == "whole-photo" and query.mask.all() and query.mask.shape == (60, 70)
    boxed = load_query(image, box=Box(10, 5, 40, 30))
    expected = np.zeros((60, 70), bool)
    expected[5:30, 10:40] = True
    assert boxed.mask_source == "whole-photo" and np.array_equal(boxed.mask, expected)
    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(constant_net(tmp_path, 0.5)))  # no floor
    assert load_query(image).mask_source == "model"
    sure = constant_net(tmp_path, 8.0, certainty_floor=0.5)  # certainty ~1: above its floor
    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(sure))
    assert load_query(image).mask_source == "model"
    with pytest.raises(IbsrError, match="certainty_floor"):
        MaskConfig.from_dict({"certainty_floor": 1.5})


def test_mask_floor_script_writes_the_network_with_its_floor(tiny_set, tmp_path):
    """scripts/mask_floor.py: the floor is the 1st percentile of the network's certainty on the
    photos (here all 12, so between the two least certain), the weights are the same."""
    start = constant_net(tmp_path, 0.0)
    start_model, _ = load_mask_checkpoint(start)
    with torch.no_grad():  # a decoder that answers per photo: certainties differ
        start_model.head[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    save_mask_checkpoint(start_model, start)
    start_model, _ = load_mask_checkpoint(start)  # as stored: float16 weights
    out = tmp_path / "floor.pt"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "mask_floor.py"), str(start), "--data",
                             str(tiny_set), "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    model, info = load_mask_checkpoint(out)
    assert model.config.certainty_floor == printed["certainty_floor"] and info["certainty_floor"]["photos"] == 12
    photos = load_mask_photos([tiny_set], SIZE, tmp_path / "cache", progress=False)
    with torch.no_grad():
        prob = torch.sigmoid(model(scale_pixels(torch.from_numpy(photos.images))))
    certainties = sorted(mask_certainty(p) for p in prob)
    assert certainties[0] - 1e-3 <= model.config.certainty_floor <= certainties[1] + 1e-3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), start_model.state_dict().values()))
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "mask_floor.py"), str(tmp_path / "none.pt"),
                          "--data", str(tiny_set), "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: ") and "Traceback" not in bad.stderr


def test_search_and_eval_mask_options(built_index, tiny_weights, catalog, tmp_path, monkeypatch):
    from ibsr.synth import catalog_shape, write_queries

    image = photo(tmp_path)
    common = ["--index", built_index, "--weights", tiny_weights, "--topk", 3, "--json"]

    def sources(*options):
        result = invoke(search_cli, [image, *common, *options])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)[0]["mask_source"]

    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(tmp_path / "absent.pt"))
    assert sources() == "grabcut"
    assert_one_line_error(invoke(search_cli, [image, *common, "--mask-method", "model"]), "mask network not found")
    full = constant_net(tmp_path, +8.0)
    assert sources("--mask-weights", full) == "model"  # a given network, whatever is installed
    monkeypatch.setenv("IBSR_MASK_WEIGHTS", str(full))
    assert sources() == "model" and sources("--mask-method", "grabcut") == "grabcut"

    # ibsr-eval: the queries' mask files are used unless --ignore-masks
    write_queries(tmp_path / "q", [catalog_shape("chair", 0, 3), catalog_shape("lamp", 1, 3)], 1, 3, size=SIZE)
    queries = tmp_path / "q" / "queries.jsonl"
    base = ["--index", built_index, "--weights", tiny_weights, "--queries", queries, "--json", "--per-query",
            "--no-progress"]
    for options, expected in [([], "file"), (["--ignore-masks"], "model"),
                              (["--ignore-masks", "--mask-method", "grabcut"], "grabcut")]:
        result = invoke(eval_cli, [*base, *options])
        assert result.exit_code == 0, result.output
        records = json.loads(result.output)["records"]
        assert len(records) == 2 and {r["mask_source"] for r in records} == {expected}, options


# --------------------------------------------------------------------------- the shipped network

SHIPPED = Path(segmenter.__file__).resolve().parent / "weights" / "mask.pt"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no mask network shipped yet (docs/model-history.md makes one)")
def test_shipped_network_beats_grabcut_on_unseen_photos(tmp_path):
    """Photos of shapes (and categories: kettle, laptop, guitar, airplane) it never trained on."""
    from ibsr.synth import catalog_shape, write_queries

    raw = torch.load(SHIPPED, weights_only=True)
    assert raw["state_dict"]["head.1.weight"].dtype == torch.float16
    model, info = load_mask_checkpoint(SHIPPED)
    assert info.get("trained_by") == "ibsr-train mask"
    categories = ["chair", "mug", "car", "sink", "kettle", "laptop", "guitar", "airplane"]
    write_queries(tmp_path, [catalog_shape(c, i, 4242) for c in categories for i in range(2)], 1, 4242)
    model_iou, grabcut_iou = [], []
    for line in (tmp_path / "queries.jsonl").read_text().splitlines():
        record = json.loads(line)
        rgb = np.asarray(Image.open(tmp_path / record["image"]).convert("RGB"))
        truth = np.asarray(Image.open(tmp_path / record["mask"])) > 127
        for ious, mask in ((model_iou, mask_model.predict_mask(model, rgb)), (grabcut_iou, grabcut_mask(rgb))):
            ious.append((mask & truth).sum() / max(1, (mask | truth).sum()))
    assert np.mean(model_iou) > 0.85 and np.mean(model_iou) > np.mean(grabcut_iou) + 0.1, (model_iou, grabcut_iou)
