"""ibsr-eval: metrics on hand-computed cases, the two query formats, and an end-to-end run."""

import dataclasses
import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ibsr.cli import eval as eval_cli
from ibsr.errors import IbsrError
from ibsr.eval import (accuracy_curve, compute_metrics, evaluate, format_report, per_category, pix3d_shape_id,
                       rank_of, read_queries, split_known, summarize)
from ibsr.geometry.mesh import load_mesh
from ibsr.geometry.render import render_views
from ibsr.photos.box import Box
from ibsr.searcher import SearchOptions, Searcher

# --------------------------------------------------------------------------- metrics


def test_rank_of():
    assert rank_of("b", ["a", "b", "c"]) == 2
    assert rank_of("z", ["a", "b"]) is None
    assert rank_of("a", []) is None


def test_summary_of_four_queries_with_known_ranks():
    ranks = [1, 3, 7, None]  # the last query's shape is not in its list
    hits = [True, True, False, False]
    s = summarize(ranks, hits)
    assert s["count"] == 4
    assert s["top1"] == 1 / 4 and s["top5"] == 2 / 4 and s["top10"] == 3 / 4
    assert s["category"] == 2 / 4 and s["found"] == 3 / 4
    assert s["mrr"] == pytest.approx(float((Fraction(1) + Fraction(1, 3) + Fraction(1, 7)) / 4), abs=1e-15)
    assert summarize([], [])["top1"] is None and summarize([], [])["count"] == 0


def test_per_category_and_curve():
    ranks = [1, 2, None, 10, 11]
    hits = [True, False, True, True, False]
    cats = ["lamp", "chair", "chair", "lamp", "chair"]
    table = per_category(ranks, hits, cats)
    assert list(table) == ["chair", "lamp"]
    chair, lamp = table["chair"], table["lamp"]
    assert chair["count"] == 3 and chair["top1"] == 0 and chair["top5"] == 1 / 3 and chair["top10"] == 1 / 3
    assert chair["category"] == 1 / 3 and chair["mrr"] == pytest.approx((1 / 2 + 0 + 1 / 11) / 3)
    assert lamp["count"] == 2 and lamp["top1"] == 1 / 2 and lamp["top10"] == 1 and lamp["mrr"] == pytest.approx(0.55)
    curve = accuracy_curve(ranks, 12)
    assert len(curve) == 12
    assert curve[0] == 1 / 5 and curve[1] == 2 / 5 and curve[8] == 2 / 5 and curve[9] == 3 / 5 and curve[11] == 4 / 5
    assert accuracy_curve([], 5) == []


def test_compute_metrics_from_ranked_lists():
    m = compute_metrics(
        true_ids=["chair/a", "chair/b", "table/c", "lamp/d"],
        true_categories=["chair", "chair", "table", "lamp"],
        ranked_ids=[["chair/a", "chair/b"], ["chair/a", "chair/b"], ["lamp/d", "chair/a"], []],
        ranked_categories=[["chair", "chair"], ["chair", "chair"], ["lamp", "chair"], []],
        curve_k=3)
    assert m["ranks"] == [1, 2, None, None]
    assert m["summary"]["top1"] == 1 / 4 and m["summary"]["top5"] == 2 / 4
    assert m["summary"]["category"] == 2 / 4  # table/c's top-1 is a lamp; lamp/d got no hit at all
    assert m["summary"]["mrr"] == pytest.approx(1.5 / 4)
    assert m["curve"] == [1 / 4, 2 / 4, 2 / 4]
    assert m["per_category"]["chair"]["top1"] == 1 / 2
    with pytest.raises(ValueError):
        compute_metrics(["a"], ["c"], [], [])


# --------------------------------------------------------------------------- query files


def write_photo(path, size=48, seed=0):
    rgb = np.full((size, size, 3), 230, np.uint8)
    rgb[10 + seed:30, 12:36] = (90, 60, 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def write_mask(path, size=48):
    mask = np.zeros((size, size), np.uint8)
    mask[10:30, 12:36] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)
    return path


def test_pix3d_shape_id():
    assert pix3d_shape_id("model/bed/IKEA_MALM_2/model.obj", "bed") == "bed/IKEA_MALM_2"
    assert pix3d_shape_id("model/bed/IKEA_MALM_2/model.obj") == "bed/IKEA_MALM_2"
    assert pix3d_shape_id("model\\chair\\IKEA_POANG_1\\model.obj", "chair") == "chair/IKEA_POANG_1"
    assert pix3d_shape_id("model/chair/chair_0001.obj", "chair") == "chair/chair_0001"  # flat layout
    with pytest.raises(ValueError):
        pix3d_shape_id("model.obj")


def test_read_queries_jsonl(tmp_path):
    write_photo(tmp_path / "q" / "a.png")
    write_mask(tmp_path / "q" / "a_mask.png")
    write_photo(tmp_path / "q" / "b.jpg")
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"image": "q/a.png", "mask": "q/a_mask.png", "shape_id": "chair/chair_0000",
                                "category": "chair"}) + "\n\n"
                    + json.dumps({"image": "q/b.jpg", "shape_id": "lamp/lamp_0001"}) + "\n")
    a, b = read_queries(path)
    assert (a.image, a.mask, a.shape_id, a.category, a.line) == (
        tmp_path / "q/a.png", tmp_path / "q/a_mask.png", "chair/chair_0000", "chair", 1)
    assert (b.image, b.mask, b.shape_id, b.category, b.line) == (tmp_path / "q/b.jpg", None, "lamp/lamp_0001", None, 3)
    known, unknown = split_known([a, b], ["chair/chair_0000", "table/x"])
    assert known == [a] and unknown == [b]
    assert a.box is None and a.to_dict()["box"] is None


def test_read_queries_box(tmp_path):
    write_photo(tmp_path / "a.png")
    path = tmp_path / "queries.jsonl"
    path.write_text(json.dumps({"image": "a.png", "shape_id": "chair/x", "box": [4, 2.5, 40, 30]}) + "\n"
                    + json.dumps({"image": "a.png", "shape_id": "chair/y", "box": "0,0,10,10"}) + "\n"
                    + json.dumps({"image": "a.png", "shape_id": "chair/z", "box": None}) + "\n")
    a, b, c = read_queries(path)
    assert a.box == Box(4, 2.5, 40, 30) and a.to_dict()["box"] == [4, 2.5, 40, 30]
    assert b.box == Box(0, 0, 10, 10) and c.box is None


def test_read_pix3d_json(tmp_path):
    for name in ("img/bed/0001.png", "img/chair/0002.jpg"):
        write_photo(tmp_path / name)
    for name in ("mask/bed/0001.png", "mask/chair/0002.png"):
        write_mask(tmp_path / name)
    entries = [
        {"img": "img/bed/0001.png", "mask": "mask/bed/0001.png", "model": "model/bed/IKEA_MALM_2/model.obj",
         "category": "bed", "img_size": [48, 48], "truncated": False},
        {"img": "img/chair/0002.jpg", "mask": "mask/chair/0002.png", "model": "model/chair/IKEA_POANG_1/model.obj",
         "category": "chair"},
    ]
    path = tmp_path / "pix3d.json"
    path.write_text(json.dumps(entries, indent=2))
    bed, chair = read_queries(path)
    assert (bed.shape_id, bed.category, bed.image, bed.mask) == (
        "bed/IKEA_MALM_2", "bed", tmp_path / "img/bed/0001.png", tmp_path / "mask/bed/0001.png")
    assert chair.shape_id == "chair/IKEA_POANG_1" and chair.category == "chair"
    assert bed.line == 2 and chair.line > bed.line  # the line where each entry starts
    one_line = tmp_path / "one_line.json"
    one_line.write_text(json.dumps(entries))
    assert [q.shape_id for q in read_queries(one_line)] == ["bed/IKEA_MALM_2", "chair/IKEA_POANG_1"]


@pytest.mark.parametrize("name, text, needles", [
    ("queries.jsonl", '{"image": "a.png", "shape_id": "chair/x"}\n{"image": "a.png", \n', ["line 2", "not JSON"]),
    ("queries.jsonl", '{"image": "a.png", "shape_id": "chair/x"}\n{"image": "a.png"}\n', ["line 2", "shape_id"]),
    ("queries.jsonl", '{"image": "a.png", "shape_id": "chair/x"}\n["a.png"]\n', ["line 2", "JSON object"]),
    ("queries.jsonl", '{"image": "gone.png", "shape_id": "chair/x"}\n', ["line 1", "gone.png", "not found"]),
    ("queries.jsonl", '{"image": "a.png", "mask": "nomask.png", "shape_id": "chair/x"}\n', ["line 1", "nomask.png"]),
    ("queries.jsonl", "\n\n", ["no queries"]),
    ("queries.jsonl", '{"image": "a.png", "shape_id": "chair/x", "box": [1, 2, 3]}\n',
     ["line 1", "box [1, 2, 3] is not four numbers"]),
    ("queries.jsonl", '{"image": "a.png", "shape_id": "chair/x"}\n{"image": "a.png", "shape_id": "chair/x", '
                      '"box": [30, 0, 10, 10]}\n', ["line 2", "box 30,0,10,10 is empty or inverted"]),
    ("pix3d.json", '[\n {"img": "a.png", "model": "model/chair/x/model.obj"},\n {"img": "a.png"}\n]',
     ["line 3", "model"]),
    ("pix3d.json", '[\n {"img": "a.png", "model": "model/chair/x/model.obj"},\n {"img": \n]', ["line 4", "JSON"]),
    ("pix3d.json", '{"img": "a.png"}', ["line 1", "JSON list"]),
    ("pix3d.json", '[{"img": "a.png", "model": "m.obj", "category": "chair"}]', ["line 1", "model path"]),
])
def test_bad_query_files_name_file_and_line(tmp_path, name, text, needles):
    write_photo(tmp_path / "a.png")
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(IbsrError) as err:
        read_queries(path)
    assert err.value.path == str(path)
    for needle in needles:
        assert needle in str(err.value)


def test_missing_queries_file(tmp_path):
    with pytest.raises(IbsrError, match="not found"):
        read_queries(tmp_path / "none.jsonl")


# --------------------------------------------------------------------------- end to end


def view_photo(mesh_path, out, view=1, size=64):
    """A 'photo' of a catalog mesh: one of its renderings, as RGB."""
    gray = render_views(load_mesh(mesh_path), size)[view]
    Image.fromarray(np.dstack([gray] * 3)).save(out)
    return out


@pytest.fixture(scope="module")
def eval_queries(catalog, tmp_path_factory):
    """queries.jsonl with 4 rendered photos of index shapes (one with a mask file) + one unknown shape."""
    root = tmp_path_factory.mktemp("evalq")
    (root / "photos").mkdir()
    records = []
    for i, (category, k, view) in enumerate([("chair", 0, 1), ("table", 1, 4), ("lamp", 2, 7), ("chair", 2, 10)]):
        mesh = sorted((catalog / category).iterdir())[k]
        image = view_photo(mesh, root / "photos" / f"q{i}.png", view)
        record = {"image": f"photos/{image.name}", "shape_id": f"{category}/{mesh.stem}", "category": category}
        if i == 1:
            gray = np.asarray(Image.open(image).convert("L"))
            Image.fromarray(((gray < 255) * 255).astype(np.uint8)).save(root / "photos" / "q1_mask.png")
            record["mask"] = "photos/q1_mask.png"
        records.append(record)
    records.append({"image": "photos/q0.png", "shape_id": "sofa/not_indexed", "category": "sofa"})
    path = root / "queries.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def searcher(built_index, tiny_weights):
    return Searcher(built_index, weights=tiny_weights)


def test_evaluate_ranks_match_direct_search(searcher, eval_queries):
    queries = read_queries(eval_queries)
    warnings = []
    report = evaluate(searcher, queries, progress=False, warn=warnings.append, source=str(eval_queries))
    assert report.queries == 5 and report.evaluated == 4 and report.unknown == 1 and report.failed == 0
    assert len(warnings) == 1 and "1 of 5" in warnings[0] and "sofa/not_indexed" in warnings[0]
    assert report.unknown_examples[0]["shape_id"] == "sofa/not_indexed"
    assert report.depth == report.shapes == len(searcher) == 9

    known = queries[:4]
    loaded = searcher.load_queries([q.image for q in known], [q.mask for q in known])
    direct = searcher.search_queries(loaded, topk=len(searcher))
    expected = [rank_of(q.shape_id, [h.shape_id for h in r.hits]) for q, r in zip(known, direct)]
    assert [r["rank"] for r in report.records] == expected
    assert [r["top"] for r in report.records] == [[h.shape_id for h in r.hits][:10] for r in direct]
    assert [r["mask_source"] for r in report.records] == ["grabcut", "file", "grabcut", "grabcut"]
    expected_hits = [r.hits[0].category == q.category for q, r in zip(known, direct)]
    assert report.summary == summarize(expected, expected_hits)
    assert list(report.per_category) == ["chair", "lamp", "table"]
    assert report.per_category["chair"]["count"] == 2
    assert len(report.curve) == 9 and report.curve[-1] == report.summary["found"]
    t = report.timings
    assert t["total_s"] >= t["load_s"] + t["search_s"] > 0 and t["queries_per_s"] > 0
    assert set(t["search_stages_s"]) >= {"encode", "rerank"}
    assert "records" not in report.to_dict() and len(report.to_dict(per_query=True)["records"]) == 4
    json.dumps(report.to_dict(per_query=True))  # serializable
    text = format_report(report)
    assert "all" in text and "top10" in text and "queries/s" in text and "1 with shapes not in the index" in text


def test_evaluate_exhaustive_batches_limit_and_strict(searcher, eval_queries):
    queries = read_queries(eval_queries)
    one = evaluate(searcher, queries, SearchOptions(prefilter="none"), batch_size=1, progress=False,
                   warn=lambda m: None)
    four = evaluate(searcher, queries, SearchOptions(prefilter="none"), batch_size=4, progress=False,
                    warn=lambda m: None)
    assert [r["shape_id"] for r in one.records] == [r["shape_id"] for r in four.records]
    assert one.summary["found"] == 1.0 and one.summary["top10"] == 1.0  # every shape ranked: all found
    assert [r["rank"] for r in one.records] == [r["rank"] for r in four.records]
    limited = evaluate(searcher, queries, limit=2, progress=False, warn=lambda m: None)
    assert limited.evaluated == 2
    oracle = evaluate(searcher, queries, oracle_category=True, progress=False, warn=lambda m: None)
    assert oracle.summary["category"] == 1.0 and oracle.prefilter == "oracle-category"
    with pytest.raises(IbsrError, match="not in the index"):
        evaluate(searcher, queries, strict=True, progress=False)
    renamed = [dataclasses.replace(queries[0], category="Chair")]
    warnings = []
    report = evaluate(searcher, renamed, progress=False, warn=warnings.append)
    assert warnings and "'Chair' vs 'chair'" in warnings[0] and report.summary["category"] == 0
    with pytest.raises(IbsrError, match="--topk"):
        evaluate(searcher, queries[:4], topk=5, progress=False)


def test_evaluate_skips_unreadable_photos(searcher, eval_queries, tmp_path):
    queries = read_queries(eval_queries)[:4]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    queries[2] = dataclasses.replace(queries[2], image=broken)
    warnings = []
    report = evaluate(searcher, queries, batch_size=2, progress=False, warn=warnings.append)
    assert report.evaluated == 3 and report.failed == 1 and "broken.png" in report.failed_examples[0]["error"]
    assert any("line 3" in w for w in warnings)
    with pytest.raises(IbsrError, match="broken.png"):
        evaluate(searcher, queries, strict=True, progress=False)


def test_evaluate_searches_each_query_in_its_box(searcher, eval_queries):
    queries = read_queries(eval_queries)[:4]
    queries[0] = dataclasses.replace(queries[0], box=Box(-5, 0, 40, 64))  # the photos are 64 x 64
    queries[2] = dataclasses.replace(queries[2], box=Box(100, 100, 200, 200))  # outside: that query fails
    warnings = []
    report = evaluate(searcher, queries, batch_size=4, progress=False, warn=warnings.append)
    assert report.evaluated == 3 and report.failed == 1
    assert "box 100,100,200,200 lies outside the 64x64 image" in report.failed_examples[0]["error"]
    assert report.failed_examples[0]["box"] == [100, 100, 200, 200]
    assert [r["box"] for r in report.records] == [[0, 0, 40, 64], None, None]  # the box used: clipped
    kept = [queries[i] for i in (0, 1, 3)]
    direct = searcher.search([q.image for q in kept], [q.mask for q in kept], topk=len(searcher),
                             boxes=[q.box for q in kept])
    assert [r["top"] for r in report.records] == [[h.shape_id for h in r.hits][:10] for r in direct]
    from ibsr.eval.report import measure_latency
    assert measure_latency(searcher, report)["queries"] == 3  # its reruns search the same boxes


# --------------------------------------------------------------------------- CLI


def run(args):
    return CliRunner().invoke(eval_cli.main, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0]


def test_cli_table_and_json(built_index, tiny_weights, eval_queries):
    base = ["--index", built_index, "--weights", tiny_weights, "--queries", eval_queries]
    table = run(base)
    assert table.exit_code == 0, table.output
    assert table.stderr.startswith("warning: 1 of 5 queries") and len(table.stderr.strip().splitlines()) == 1
    lines = table.stdout.splitlines()
    assert lines[0].startswith("4 queries (1 with shapes not in the index excluded) against 9 shapes, full ranking")
    header = next(line for line in lines if "top1" in line)
    assert header.split() == ["queries", "top1", "top5", "top10", "category", "mrr", "found"]
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in
            ("all", "chair", "table", "lamp")}
    assert rows["all"][1] == "4" and rows["chair"][1] == "2" and rows["lamp"][1] == "1"

    out = run([*base, "--json", "--batch-size", "3"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["evaluated"] == 4 and data["unknown"] == 1 and "records" not in data
    assert set(data["summary"]) == {"count", "top1", "top5", "top10", "category", "mrr", "found"}
    assert data["timings"]["queries_per_s"] > 0 and data["timings"]["open_s"] > 0
    per_query = json.loads(run([*base, "--json", "--per-query", "--limit", "2"]).stdout)
    assert len(per_query["records"]) == 2 and per_query["records"][0]["line"] == 1


def test_cli_errors_are_one_line(built_index, tiny_weights, eval_queries, tmp_path):
    base = ["--index", built_index, "--weights", tiny_weights]
    assert_one_line_error(run([*base, "--queries", tmp_path / "none.jsonl"]), "none.jsonl", "not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png", "shape_id": "chair/x"}\n{oops\n')
    assert_one_line_error(run([*base, "--queries", bad]), "bad.jsonl", "line 2")
    assert_one_line_error(run([*base, "--queries", eval_queries, "--strict"]), "not in the index")
    assert_one_line_error(run([*base, "--queries", eval_queries, "--batch-size", 0]), "--batch-size")
    assert_one_line_error(run(["--index", tmp_path / "noindex", "--weights", tiny_weights,
                               "--queries", eval_queries]), "noindex")
    assert "--queries" in run(["--help"]).output
