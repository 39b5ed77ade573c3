"""scripts/device_train.py: `run` end to end on this CPU at a tiny scale (the command a lent GPU runs
at full scale), and the checks that refuse a config before any data is made.

The "real" meshes are generated (`ibsr.synth.write_catalog`) and listed in a manifest of their own
shape ids, so nothing under ../shared is read; the model is conftest's TINY on configs/small.toml.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_train.py"
STEPS = 3
SCALE = 0.01  # every count of the stage-10 mix becomes 1, but the home style's 400 per category: 4
REAL = {"chair": 2, "table": 2}  # meshes per category of the stand-in "real" set
TRAIN_CATEGORIES = 30  # `ibsr-data synth --categories train`, one shape each at this scale


def tiny_config(folder: Path, **data) -> Path:
    """configs/small.toml cut to STEPS steps of the TINY model, training on `data.train`."""
    model = "\n".join(f"{key} = {json.dumps(value)}" for key, value in TINY.items() if key != "views")
    data = {"train": "data/mix/both61", "val": "", "cache": "data/cache", **data}
    table = "\n".join(f"{key} = {json.dumps(value)}" for key, value in data.items())
    path = folder / "candidate.toml"
    path.write_text(f'extends = "{ROOT / "configs" / "small.toml"}"\n[data]\n{table}\n[model]\n{model}\n'
                    f"[train]\nbatch_size = 4\nsteps = {STEPS}\nlr_decay_steps = 1\nthreads = 1\n"
                    f"checkpoint_every = {STEPS}\nlog_every = 1\n")
    return path


def real_manifest(folder: Path) -> Path:
    """Generated meshes under shape ids no procedural shape has (a merge refuses one id, two meshes)."""
    from ibsr.synth import write_catalog

    rows = []
    for category, count in REAL.items():
        for record in write_catalog(folder / category, [category], count, seed=3):
            rows.append([f"{category}/real_{len(rows)}", category, str(folder / category / record["path"])])
    manifest = folder / "train.csv"
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([["shape_id", "category", "path"], *rows])
    return manifest


def device_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800)  # a guard against a hang, not a speed test: ~30 s here


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_run_makes_the_mix_trains_and_exports(tmp_path):
    from ibsr.model import load_checkpoint

    manifest = real_manifest(tmp_path / "real")
    config = tiny_config(tmp_path)
    result = device_train(tmp_path, "run", "--config", str(config), "--out", "out", "--scale", str(SCALE),
                          "--workers", "1", "--meshes", str(manifest))
    assert result.returncode == 0, result.stderr[-3000:]
    phases = [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("phase ")]
    assert sorted(phases) == sorted(f"phase {p}" for p in ("real-photos", "home-photos", "procedural61", "merge",
                                                          "train", "export", "all"))
    merged = tmp_path / "data" / "mix" / "both61"
    shapes = lines(merged / "catalog.jsonl")
    assert len(shapes) == TRAIN_CATEGORIES + sum(REAL.values())
    home_per_mesh = {c: max(1, math.ceil(round(400 * SCALE) / n)) for c, n in REAL.items()}
    expected_photos = TRAIN_CATEGORIES + sum(REAL.values()) + sum(n * home_per_mesh[c] for c, n in REAL.items())
    assert len(lines(merged / "queries.jsonl")) == expected_photos
    model = load_checkpoint(tmp_path / "out" / "model.pt")
    assert model.config.query_size == TINY["query_size"] and model.config.width == TINY["width"]
    assert [m["step"] for m in lines(tmp_path / "out" / "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert (tmp_path / "out" / "metrics.jsonl").read_text() == (tmp_path / "out" / "run" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("data, model, message", [
    ({"train": "data/mix/other"}, "", "data.train is 'data/mix/other' but this script makes data/mix/both61"),
    ({}, 'init = "missing.pt"\n', "model.init missing.pt is not here"),
    ({}, "", "no mesh manifest"),
])
def test_run_refuses_what_would_fail_before_making_data(tmp_path, data, model, message):
    config = tiny_config(tmp_path, **data)
    config.write_text(config.read_text().replace("[model]\n", f"[model]\n{model}"))
    result = device_train(tmp_path, "run", "--config", str(config), "--out", "out", "--scale", str(SCALE),
                          "--workers", "1", "--meshes", str(tmp_path / "none.csv"))
    assert result.returncode == 1
    error = result.stderr.splitlines()
    where = tmp_path / "none.csv" if message == "no mesh manifest" else config
    assert len(error) == 1 and error[0].startswith(f"error: {where}: {message}"), result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def load_script():
    spec = importlib.util.spec_from_file_location("device_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_packages_come_from_the_packed_site_for_this_process_and_its_commands(tmp_path, monkeypatch):
    """The device's path: a package this Python lacks is unpacked from .device/site.tar.xz and seen
    by the ibsr commands the script starts (PYTHONPATH), not only by the script."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    script = load_script()
    package = tmp_path / "packed" / "ibsr_device_probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("WHERE = __file__\n")
    archive = tmp_path / "site.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(package, arcname="ibsr_device_probe")
    monkeypatch.setattr(script, "DEVICE_LACKS", {"ibsr-device-probe": "ibsr_device_probe"})
    monkeypatch.setattr(script, "SITE_ARCHIVE", tmp_path / "absent.tar.xz")
    with pytest.raises(script.IbsrError, match="ibsr_device_probe not installed and not packed"):
        script.provide_missing_packages(tmp_path / "site")
    monkeypatch.setattr(script, "SITE_ARCHIVE", archive)
    monkeypatch.setenv("PYTHONPATH", "")
    script.provide_missing_packages(tmp_path / "site")
    child = subprocess.run([sys.executable, "-c", "import ibsr_device_probe as p, ibsr.errors; print(p.WHERE)"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == str(tmp_path / "site" / "ibsr_device_probe" / "__init__.py")
    assert os.environ["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "site"), str(ROOT)]
