"""The wheel as `pip install` sees it: what it carries, and the installed commands run from it.

The wheel is built once per session from a copy of the checkout (pyproject.toml, README.md,
ibsr/), so the checkout gets no build/ or ibsr.egg-info, and a build/lib left there by an
earlier build cannot add modules deleted since. It is installed with `--no-deps` into a fresh
virtual environment whose only other packages are those of the running environment, reached
through a .pth file of plain paths: torch and the rest are not downloaded again, and the .pth
files of the running environment's site-packages (the editable install's finder among them)
are never executed, so `ibsr` can only come from the wheel (asserted).
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# What the installed package reads at run time besides its modules (checked by name too, in
# case git is not there to list the tracked files).
RUN_TIME_FILES = ["ibsr/model/weights/default.pt", "ibsr/runtime/calibration_photos.npz", "ibsr/serve/static/index.html", "ibsr/serve/static/app.js",
                  "ibsr/serve/static/vendor/three/three.module.js", "ibsr/serve/static/vendor/three/three.core.js",
                  "ibsr/serve/static/vendor/three/LICENSE", "ibsr/serve/static/vendor/three/VERSION"]


def run(args, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{args}\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    # Copied as it is (caches included): the wheel must leave them out by itself.
    shutil.copytree(ROOT / "ibsr", src / "ibsr", symlinks=True)
    # --no-isolation: an isolated build installs setuptools from an index, which a machine
    # without network may not have; the test extra installs `build` and setuptools instead.
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", work / "dist", src])
    [path] = (work / "dist").glob("ibsr-*.whl")
    yield path
    shutil.rmtree(work, ignore_errors=True)  # ~60 MB: the copy (weights), its build/ and the wheel


def tracked_package_files() -> list[str] | None:
    try:
        proc = subprocess.run(["git", "ls-files", "ibsr"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.split() if proc.returncode == 0 and proc.stdout else None


def test_wheel_carries_the_package_its_data_and_readme(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(z.read(metadata).decode())
    dist_info = metadata.split("/")[0]
    assert all(n.startswith(("ibsr/", dist_info + "/")) for n in names), sorted(names)  # no tests/, data/, ...
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert set(RUN_TIME_FILES) - names == set()
    tracked = tracked_package_files()
    if tracked is not None:
        assert set(tracked) - names == set(), "tracked files the wheel lacks (add them to package-data)"
        extra_data = {n for n in names if n.startswith("ibsr/") and not n.endswith(".py")} - set(tracked)
        assert extra_data == set(), "data files in the wheel that git does not track"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip() == (ROOT / "README.md").read_text().strip()


def clean_env() -> dict:
    """The running environment's variables, less what would point the commands elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "IBSR_INDEX", "IBSR_MASK_WEIGHTS")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    return env


@pytest.fixture
def venv(wheel, tmp_path) -> tuple[Path, Path]:
    """A fresh virtual environment with the wheel installed; it sees the running environment's
    site-packages last."""
    env_dir = tmp_path / "venv"
    run([sys.executable, "-m", "venv", env_dir])
    python = env_dir / "bin" / "python"
    # Before the .pth below: pip then never sees the running environment's ibsr (which it would
    # offer to uninstall) and installs no dependency (--no-deps; --no-index by PIP_NO_INDEX).
    run([python, "-m", "pip", "install", "--no-deps", wheel], cwd=tmp_path, env=clean_env())
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       env=clean_env()).stdout.strip())
    # Plain paths, appended after the venv's own site-packages: the wheel's ibsr comes first,
    # and the .pth files found there are not run (the editable install's finder stays out).
    (purelib / "zz_running_env.pth").write_text("".join(p + "\n" for p in site.getsitepackages()))
    yield python, purelib
    shutil.rmtree(env_dir, ignore_errors=True)


def test_installed_wheel_indexes_searches_and_serves(venv, tmp_path):
    python, purelib = venv
    bin_dir = python.parent
    kw = dict(cwd=tmp_path, env=clean_env())  # not the checkout: nothing of the source tree is importable

    where = json.loads(run([python, "-c", "import json, ibsr, ibsr.serve.app as a, ibsr.model.checkpoint as c, "
                                          "ibsr.model.segmenter as s; print(json.dumps([ibsr.__file__, str(a.STATIC), "
                                          "str(c.default_weights_path()), str(s.default_mask_weights_path())]))"],
                           **kw).stdout)
    package = purelib.resolve() / "ibsr"
    assert Path(where[0]).resolve() == package / "__init__.py"
    static, weights, mask_weights = (Path(p).resolve() for p in where[1:])
    assert static == package / "serve" / "static" and weights == package / "model" / "weights" / "default.pt"
    for name in ["index.html", "app.js", "style.css", "vendor/three/three.module.js", "vendor/three/LICENSE"]:
        assert (static / name).is_file(), name
    assert weights.is_file()

    run([bin_dir / "ibsr-data", "synth", "--out", "data", "--categories", "chair,table", "--shapes-per-category", 1,
         "--queries-per-shape", 1, "--size", 128, "--json"], **kw)
    catalog = [json.loads(line) for line in (tmp_path / "data" / "catalog.jsonl").read_text().splitlines()]
    shape_ids = {shape["shape_id"] for shape in catalog}
    assert len(shape_ids) == 2
    # No --weights: the wheel's own default.pt.
    built = json.loads(run([bin_dir / "ibsr-index", "build", "data/catalog", "--index", "idx", "--workers", 0,
                            "--quiet", "--json"], **kw).stdout)
    assert built["indexed"] == 2 and built["failed"] == []
    query = json.loads((tmp_path / "data" / "queries.jsonl").read_text().splitlines()[0])
    [result] = json.loads(run([bin_dir / "ibsr-search", Path("data") / query["image"], "--index", "idx",
                               "--topk", 2, "--json"], **kw).stdout)
    assert {hit["shape_id"] for hit in result["hits"]} == shape_ids
    assert result["hits"][0]["shape_id"] == query["shape_id"]  # the trained weights, not a random init
    # The automatic mask comes from the wheel's mask network when it ships one.
    assert result["mask_source"] == ("model" if mask_weights.is_file() else "grabcut")

    # The page and every vendored file, served by the installed package (no server process,
    # so no port or start-up wait).
    files = sorted(p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file())
    served = run([python, "-c", SERVE_CHECK, "idx", *files], **kw).stdout.split()
    assert served == ["200"] * (1 + len(files))
    run([bin_dir / "ibsr-serve", "--help"], **kw)


SERVE_CHECK = """
import sys
from pathlib import Path
from fastapi.testclient import TestClient
from ibsr.serve import SearchService, ServeConfig, create_app

service = SearchService(ServeConfig(index_dir=Path(sys.argv[1]), reload_interval_s=0))
with TestClient(create_app(service)) as client:
    print(client.get("/").status_code)
    for name in sys.argv[2:]:
        print(client.get("/static/" + name).status_code)
"""
