"""The Ray backend: a Ray build equals the local build, survives a killed worker, and `--ray`
says how to install Ray when it is missing. Ray runs locally on 2 CPUs (one per test module).

Without Ray installed these tests are skipped, except under CI (CI=true), where they fail:
CI installs the `ray` extra.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ibsr.errors import IbsrError
from ibsr.index.snapshot import IndexSnapshot
from ibsr.index.table import ShapeReader
from ibsr.indexer import Indexer

if os.environ.get("CI", "").lower() not in ("1", "true"):
    pytest.importorskip("ray", reason="Ray is optional: pip install 'ibsr[ray]'")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def assert_same_index(got_dir: Path, want_dir: Path) -> None:
    got, want = IndexSnapshot.open(got_dir), IndexSnapshot.open(want_dir)
    assert got.shape_ids == want.shape_ids  # none missing, none duplicated, same order
    assert got.categories == want.categories
    assert got.source_paths == want.source_paths
    # float16 storage: embeddings equal within its rounding (the two builds batch differently)
    np.testing.assert_allclose(got.views.astype(np.float32), want.views.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(got.vectors, want.vectors, atol=2e-3)
    assert got.faiss_source == "stored" and got.source == "flat"  # both written as a local build writes them


def test_ray_build_equals_local_build(ray_local, catalog_copy, built_index, tiny_weights, tmp_path):
    broken = catalog_copy / "chair" / "broken.obj"
    broken.write_text("v 0 0 0\nthis is not a mesh\n")
    index = tmp_path / "ray_index"
    report = Indexer(index, weights=tiny_weights, batch_size=4).build(catalog_copy, progress=False, ray="local")
    assert report.indexed == 9 and report.unchanged == 0
    assert [f["path"] for f in report.failed] == [str(broken)]  # reported as in the local build
    assert report.faiss is not None and report.flat is not None
    assert report.render_seconds > 0 and report.encode_seconds > 0
    got, want = IndexSnapshot.open(index), IndexSnapshot.open(built_index)
    assert got.shape_ids == want.shape_ids and got.categories == want.categories
    np.testing.assert_allclose(got.views.astype(np.float32), want.views.astype(np.float32), atol=2e-3)
    np.testing.assert_allclose(got.vectors, want.vectors, atol=2e-3)
    thumbs = ShapeReader(index).thumbnails(got.shape_ids[:1])
    assert thumbs[got.shape_ids[0]].startswith(b"\x89PNG")

    again = Indexer(index, weights=tiny_weights, batch_size=4).build(catalog_copy, progress=False, ray="local")
    assert again.indexed == 0 and again.unchanged == 9  # incremental, as the local build
    with pytest.raises(IbsrError, match="broken.obj"):
        Indexer(tmp_path / "strict", weights=tiny_weights).build(catalog_copy, progress=False, strict=True,
                                                                 ray="local")


def ray_workers() -> dict[int, str]:
    """pid -> process title of this user's Ray worker processes ("ray::..."), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and "IDLE" not in title:
            found[int(entry.name)] = title
    return found


def commits(index: Path) -> int:
    versions = index / "shapes.lance" / "_versions"
    return len(list(versions.iterdir())) if versions.is_dir() else 0


def test_killed_ray_worker_neither_loses_nor_duplicates(ray_local, catalog, built_index, tiny_weights, tmp_path):
    index = tmp_path / "killed"
    outcome = {}

    def build():
        try:
            outcome["report"] = Indexer(index, weights=tiny_weights, batch_size=1).build(catalog, progress=False,
                                                                                         ray="local")
        except BaseException as exc:  # noqa: BLE001 (a failed build is allowed: the rerun must fix it)
            outcome["error"] = exc

    thread = threading.Thread(target=build)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        workers = ray_workers()
        # Mid-build: after the first commit, kill a busy worker, the encoder actor if it is busy.
        # (the new table is versions 1-2; version 3 is the first batch)
        if commits(index) >= 3 and workers:
            busy = sorted((("MapBatches" not in title, pid), title) for pid, title in workers.items()
                          if ".submit" in title or "Map(render_row)" in title)
            if not busy:
                time.sleep(0.01)
                continue
            (_, pid), title = busy[0]
            os.kill(pid, signal.SIGKILL)
            killed = title
        time.sleep(0.02)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert killed is not None, "the build ended before a worker could be killed"
    print(f"killed {killed!r}: the build {'failed (' + repr(outcome['error'])[:200] + '), rerun' if 'error' in outcome else 'completed'}")
    if "error" in outcome:  # Ray could not recover: a rerun must complete the index
        report = Indexer(index, weights=tiny_weights, batch_size=1).build(catalog, progress=False, ray="local")
        assert report.indexed + report.unchanged == 9
    else:
        assert outcome["report"].indexed == 9, killed
    assert_same_index(index, built_index)


def test_ray_eval_equals_local_eval(ray_local, built_index, tiny_weights, eval_queries_ray):
    from ibsr.eval import evaluate, read_queries
    from ibsr.eval.ray_eval import evaluate_with_ray
    from ibsr.searcher import Searcher

    searcher = Searcher(built_index, weights=tiny_weights)
    queries = read_queries(eval_queries_ray)
    local = evaluate(searcher, queries, batch_size=2, progress=False, warn=lambda m: None)
    remote = evaluate_with_ray(searcher, queries, batch_size=2, progress=False,
                               warn=lambda m: None)
    assert remote.evaluated == local.evaluated == 4 and remote.failed == local.failed == 1
    assert [r["rank"] for r in remote.records] == [r["rank"] for r in local.records]
    assert [r["top"] for r in remote.records] == [r["top"] for r in local.records]
    assert [r["mask_source"] for r in remote.records] == [r["mask_source"] for r in local.records]
    assert [r["box"] for r in remote.records] == [r["box"] for r in local.records] == [None] * 3 + [[0, 2, 51, 64]]
    assert remote.summary == local.summary
    assert remote.failed_examples[0]["error"] == local.failed_examples[0]["error"]
    oracle = evaluate_with_ray(searcher, queries, oracle_category=True, limit=2,
                               progress=False, warn=lambda m: None)
    assert oracle.evaluated == 2 and oracle.summary["category"] == 1.0


def test_cli_ray_flag(ray_local, catalog, built_index, tiny_weights, eval_queries_ray, tmp_path):
    from ibsr.cli import eval as eval_cli
    from ibsr.cli import index as index_cli

    index = tmp_path / "cli_index"
    result = CliRunner().invoke(index_cli.main, ["build", str(catalog), "--index", str(index), "--weights",
                                                 str(tiny_weights), "--quiet", "--ray"])
    assert result.exit_code == 0, result.output
    assert "9 shapes indexed" in result.output
    assert_same_index(index, built_index)
    result = CliRunner().invoke(eval_cli.main, ["--index", str(index), "--weights", str(tiny_weights), "--queries",
                                                str(eval_queries_ray), "--ray", "--json"])
    assert result.exit_code == 0, result.output
    import json
    assert json.loads(result.stdout)["evaluated"] == 4


def test_ray_missing_says_how_to_install(monkeypatch, catalog, tiny_weights, tmp_path):
    from ibsr.cli import eval as eval_cli
    from ibsr.cli import index as index_cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    index = tmp_path / "none"
    result = CliRunner().invoke(index_cli.main, ["build", str(catalog), "--index", str(index), "--weights",
                                                 str(tiny_weights), "--ray"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: --ray needs Ray, which is not installed: pip install 'ibsr[ray]' (or: pip install 'ray[data]>=2.9')"]
    assert not index.exists()  # nothing written before the check
    result = CliRunner().invoke(eval_cli.main, ["--index", str(index), "--queries", str(tmp_path / "q.jsonl"),
                                                "--ray", "auto"])
    assert result.exit_code == 1 and "pip install 'ibsr[ray]'" in result.output


@pytest.fixture(scope="module")
def eval_queries_ray(catalog, tmp_path_factory):
    """4 rendered photos of index shapes (one with a mask, one with a box), one unreadable photo, one unknown
    shape."""
    import json

    from PIL import Image

    from ibsr.geometry.mesh import load_mesh
    from ibsr.geometry.render import render_views

    root = tmp_path_factory.mktemp("rayq")
    records = []
    for i, (category, k, view) in enumerate([("chair", 0, 1), ("table", 1, 4), ("lamp", 2, 7), ("chair", 2, 10)]):
        mesh = sorted((catalog / category).iterdir())[k]
        gray = render_views(load_mesh(mesh), 64)[view]
        Image.fromarray(np.dstack([gray] * 3)).save(root / f"q{i}.png")
        record = {"image": f"q{i}.png", "shape_id": f"{category}/{mesh.stem}", "category": category}
        if i == 1:
            Image.fromarray(((gray < 255) * 255).astype(np.uint8)).save(root / "q1_mask.png")
            record["mask"] = "q1_mask.png"
        if i == 3:
            record["box"] = [-4, 2, 50.5, 64]  # reaches the workers; clipped there to 0,2,51,64
        records.append(record)
        if i == 2:
            (root / "broken.png").write_bytes(b"not an image")
            records.append({"image": "broken.png", "shape_id": f"{category}/{mesh.stem}"})
    records.append({"image": "q0.png", "shape_id": "sofa/not_indexed", "category": "sofa"})
    path = root / "queries.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
