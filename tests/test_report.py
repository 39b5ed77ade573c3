"""ibsr-eval --report / --shape-metrics: the pieces, the page, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner
from PIL import Image

from ibsr.cli import eval as eval_cli
from ibsr.eval import EvalReport, accuracy_curve, evaluate, per_category, read_queries, summarize
from ibsr.eval.report import (chamfer_distance, confusion, html_report, measure_latency, percentiles,
                              shape_geometry, shape_metrics, svg_category_bars, svg_curve, voxel_iou,
                              write_html_report)
from ibsr.geometry.mesh import load_mesh
from ibsr.geometry.render import render_views
from ibsr.searcher import Searcher

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")

# --------------------------------------------------------------------------- pure pieces


def test_percentiles():
    p = percentiles([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    assert p["p50"] == 6 and p["p95"] == pytest.approx(10.5) and p["p99"] == pytest.approx(10.9)
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_confusion_counts_top1_categories():
    category_of = {"chair/a": "chair", "chair/b": "chair", "table/c": "table"}
    records = [{"category": "chair", "top": ["chair/a"]}, {"category": "chair", "top": ["table/c", "chair/b"]},
               {"category": "table", "top": ["chair/b"]}, {"category": "table", "top": []}]
    table = confusion(records, category_of)
    assert table == {"chair": Counter({"chair": 1, "table": 1}), "table": Counter({"chair": 1, "(none)": 1})}


def test_chamfer_and_voxel_iou():
    a = np.array([[0.0, 0, 0], [1, 0, 0]])
    assert chamfer_distance(a, a) == 0
    assert chamfer_distance(a, a + [0, 0.5, 0]) == pytest.approx(1.0)  # 0.5 each way
    cube = np.array([[x, y, z] for x in range(2) for y in range(2) for z in range(2)])
    assert voxel_iou(cube, cube) == 1.0
    assert voxel_iou(cube, cube[:4]) == 0.5
    assert voxel_iou(cube[:4], cube[4:]) == 0.0


def test_shape_geometry_is_seeded_and_normalized(tmp_path):
    box, sphere = tmp_path / "box.obj", tmp_path / "sphere.obj"
    trimesh.creation.box((2.0, 1.0, 0.5)).export(box)
    trimesh.creation.icosphere(subdivisions=3, radius=3.0).export(sphere)
    g1, g2 = shape_geometry(box), shape_geometry(box)
    np.testing.assert_array_equal(g1["points"], g2["points"])  # fixed seed
    assert np.abs(g1["points"]).max() <= 1.0 + 1e-6  # normalized to the unit sphere
    assert len(g1["voxels"]) > 0
    s = shape_geometry(sphere)
    assert chamfer_distance(g1["points"], s["points"]) > 0.05
    iou = voxel_iou(g1["voxels"], s["voxels"])
    assert 0.05 < iou < 0.9
    # a filled sphere of radius 1 on a 32^3 grid: about pi/6 of the cube's voxels are inside
    assert 0.4 < len(s["voxels"]) / 32 ** 3 < 0.65


def test_svgs_are_well_formed():
    bars = svg_category_bars({"chair": {"count": 2, "top1": 0.5, "top10": 1.0, "category": 1.0},
                              "a<b": {"count": 1, "top1": None, "top10": 0.0, "category": 0.0}})
    curve = svg_curve([0.25, 0.5, 0.75] + [1.0] * 20)
    for svg in (bars, curve, svg_curve([]), svg_curve([0.5])):
        ET.fromstring(svg)  # parses: escaped, balanced
    assert "a&lt;b" in bars and "top-1 25.0%" in curve and "top-5 100.0%" in curve


def fake_report(records) -> EvalReport:
    ranks = [r["rank"] for r in records]
    hits = [r["category_hit"] for r in records]
    cats = [r["category"] for r in records]
    return EvalReport(index="idx", shapes=12, depth=12, prefilter="category", queries=len(records) + 1,
                      evaluated=len(records), unknown=1, failed=0, summary=summarize(ranks, hits),
                      per_category=per_category(ranks, hits, cats), curve=accuracy_curve(ranks, 12),
                      timings={"total_s": 1.0, "load_s": 0.4, "search_s": 0.5, "queries_per_s": 3.0,
                               "search_stages_s": {"encode": 0.2, "rerank": 0.3}},
                      source="q.jsonl", records=records)


def test_page_is_self_contained():
    records = [{"image": f"p{i}.png", "mask": None, "line": i + 1, "shape_id": f"chair/s{i}", "category": "chair",
                "rank": [1, 3, None][i], "category_hit": i != 2, "mask_source": "grabcut",
                "top": [f"chair/s{(i + j) % 3}" for j in range(3)]} for i in range(3)]
    png = Image.new("RGB", (4, 4))
    import io
    buf = io.BytesIO()
    png.save(buf, format="PNG")
    thumbs = {f"chair/s{i}": buf.getvalue() for i in range(3)}
    latency = {"queries": 3, "topk": 10, "stages": {s: percentiles([0.01, 0.02]) for s in
                                                    ("load", "encode", "prefilter", "rerank", "total")}}
    page = html_report(fake_report(records), thumbs, {}, {f"chair/s{i}": "chair" for i in range(3)}, latency)
    assert "<table id='summary'>" in page and "<table id='latency'>" in page and "id='confusion'" in page
    assert page.count("class='item'") == 3  # 2 failed + 1 correct
    assert "not found" in page and "rank 3" in page
    assert "<script" not in page.lower()
    external = re.findall(r"(?:src|href)\s*=\s*['\"]?(https?:)", page) + re.findall(r"url\(", page)
    assert not external  # nothing loaded from outside the page
    assert "data:image/png;base64," in page


# --------------------------------------------------------------------------- on an index


@pytest.fixture(scope="module")
def report_queries(catalog, tmp_path_factory):
    """6 rendered photos of index shapes, 2 per category (one with a mask file)."""
    root = tmp_path_factory.mktemp("reportq")
    records = []
    for i, (category, k, view) in enumerate([("chair", 0, 1), ("table", 1, 4), ("lamp", 2, 7), ("chair", 2, 10),
                                             ("table", 0, 2), ("lamp", 0, 5)]):
        mesh = sorted((catalog / category).iterdir())[k]
        gray = render_views(load_mesh(mesh), 96)[view]
        rgb = np.dstack([gray, (gray * 0.9).astype(np.uint8), gray])
        Image.fromarray(rgb).save(root / f"q{i}.png")
        record = {"image": f"q{i}.png", "shape_id": f"{category}/{mesh.stem}", "category": category}
        if i == 1:
            Image.fromarray(((gray < 255) * 255).astype(np.uint8)).save(root / "q1_mask.png")
            record["mask"] = "q1_mask.png"
        records.append(record)
    path = root / "queries.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def evaluated(built_index, tiny_weights, report_queries):
    searcher = Searcher(built_index, weights=tiny_weights)
    report = evaluate(searcher, read_queries(report_queries), batch_size=4, progress=False,
                      source=str(report_queries))
    return searcher, report


def test_shape_metrics_and_latency(evaluated):
    searcher, report = evaluated
    metrics = shape_metrics(report, searcher)
    assert metrics["summary"]["count"] == 6 and metrics["summary"]["missing"] == 0
    for row in metrics["per_query"]:
        if row["retrieved"] == row["shape_id"]:
            assert row["chamfer"] == 0 and row["iou"] == 1
        else:
            assert row["chamfer"] > 0 and row["iou"] < 1
    assert set(metrics["per_category"]) == {"chair", "lamp", "table"}
    latency = measure_latency(searcher, report, sample=3)
    assert latency["queries"] == 3
    assert set(latency["stages"]) == {"load", "encode", "prefilter", "rerank", "total"}
    total, rerank = latency["stages"]["total"], latency["stages"]["rerank"]
    assert 0 < rerank["p50"] <= total["p50"] and total["p50"] <= total["p95"] <= total["p99"]


def test_cli_report_and_shape_metrics(built_index, tiny_weights, report_queries, tmp_path):
    out = tmp_path / "sub" / "report.html"
    result = CliRunner().invoke(eval_cli.main, ["--index", str(built_index), "--weights", str(tiny_weights),
                                                "--queries", str(report_queries), "--report", str(out),
                                                "--shape-metrics", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["report"] == str(out) and out.is_file()
    assert data["shape_metrics"]["summary"]["count"] == 6 and "per_query" not in data["shape_metrics"]
    assert set(data["latency"]["stages"]) >= {"load", "encode", "rerank", "total"}
    page = out.read_text()
    assert "<table id='summary'>" in page and page.count("class='item'") == 6
    text = CliRunner().invoke(eval_cli.main, ["--index", str(built_index), "--weights", str(tiny_weights),
                                              "--queries", str(report_queries), "--shape-metrics"])
    assert text.exit_code == 0 and "shape metrics (top-1 vs true shape, 6 queries): Chamfer" in text.stdout
    bad = CliRunner().invoke(eval_cli.main, ["--index", str(built_index), "--weights", str(tiny_weights),
                                             "--queries", str(report_queries), "--report", str(out / "x.html")])
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and "--report" in bad.output


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def test_page_renders_in_headless_chromium(evaluated, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail("chromium is not installed (apt-get install chromium); CI must render the report")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    searcher, report = evaluated
    page = write_html_report(tmp_path / "report.html", report, searcher, measure_latency(searcher, report, sample=2),
                             shape_metrics(report, searcher))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    url = page.resolve().as_uri()
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2000", url],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 0
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text, charts and thumbnails drawn
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, timeout=120, text=True).stdout
    assert 'id="summary"' in dom and "top-1 accuracy" in dom and "<svg" in dom
    if os.environ.get("IBSR_REPORT_SCREENSHOT"):  # keep the screenshot to look at
        shutil.copy(shot, os.environ["IBSR_REPORT_SCREENSHOT"])
