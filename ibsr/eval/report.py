"""`ibsr-eval --report out.html` and `--shape-metrics`: where the model fails, on one page.

    report = evaluate(searcher, queries)
    latency = measure_latency(searcher, report)            # single-query searches, per stage
    shapes = shape_metrics(report, searcher)               # Chamfer distance + voxel IoU
    write_html_report("out.html", report, searcher, latency, shapes)

The page is self-contained (no script, no network): inline CSS, charts as inline SVG,
query photos and shape thumbnails as data URIs. It holds the summary table (top-1/5/10,
category accuracy, MRR, prefilter recall, queries/s), latency percentiles per stage,
per-category bars, the accuracy-versus-k curve, a confusion summary between categories
and a gallery of failed and correct queries with their top-5 shapes.

Latency is measured apart from the batched run, whose throughput is queries/s: each of a
sample of queries is searched alone (as `ibsr-search` does) and the Searcher's stage
timers give load+mask, encode, prefilter and rerank times of that one query.

Shape metrics compare each query's top-1 shape with its true shape, as Pix3D's evaluation
compares a prediction with the truth: both meshes are loaded and normalized as the indexer
does (`load_mesh`: centred, unit bounding sphere, up axis of the index), then
- Chamfer distance: `POINTS` points sampled on each surface (fixed seed); the mean distance
  from each point to the nearest point of the other cloud, summed over both directions
  (0 for the same shape; in units of the bounding-sphere radius);
- voxel IoU: both meshes voxelized on one grid of `2 / VOXELS` pitch (VOXELS^3 over the
  unit sphere's box), interiors filled; intersection over union of the occupied voxels.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from ibsr.eval.metrics import KS
from ibsr.searcher.options import DEFAULT_PREFILTER, SearchOptions
from ibsr.searcher.prefilters import prefilter_names

LATENCY_SAMPLE = 50  # queries searched alone for the latency percentiles
GALLERY_FAILED = 12
GALLERY_CORRECT = 6
GALLERY_HITS = 5
POINTS = 2048
VOXELS = 32
SEED = 0
CONFUSION_MATRIX_MAX = 12  # categories up to which the full matrix is shown
STAGES = ("load", "encode", "prefilter", "rerank")


# --------------------------------------------------------------------------- measuring


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float | None]:
    """{"p50": ..., "p95": ..., "p99": ...} (linear interpolation); None without values."""
    values = np.asarray(list(values), dtype=np.float64)
    return {f"p{q}": (float(np.percentile(values, q)) if values.size else None) for q in qs}


def measure_latency(searcher, report, sample: int = LATENCY_SAMPLE, options: SearchOptions | None = None) -> dict:
    """Per-stage latency percentiles (seconds) of single-query searches on up to `sample` of
    the report's evaluated queries (evenly spaced), with the prefilter and settings of `options`
    (a `SearchOptions`: the evaluation's; its prefilter gives way to the report's, and to the
    default one after an oracle-category evaluation).

    Returns {"queries": n, "topk": k, "stages": {stage: {"p50", "p95", "p99"}}} with stages
    load (decode + mask), encode, prefilter, rerank and total.
    """
    from ibsr.errors import IbsrError
    from ibsr.photos.box import Box

    records = report.records
    if not records:
        return {"queries": 0, "topk": 0, "stages": {}}
    picked = [records[int(i)] for i in np.unique(np.linspace(0, len(records) - 1, min(sample, len(records))).round())]
    topk = min(max(KS), len(searcher))
    mode = report.prefilter if report.prefilter in prefilter_names() else DEFAULT_PREFILTER
    options = replace(options or SearchOptions(), topk=topk, prefilter=mode)
    times: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    for record in picked:
        before = dict(searcher.timings)
        start = time.perf_counter()
        try:
            box = record.get("box")  # the box searched: checked already, the same pixels again
            loaded = searcher.load_queries([record["image"]], [record["mask"]], [Box.from_value(box) if box else None])
            searcher.search_queries(loaded, options)
        except IbsrError:
            continue
        times["total"].append(time.perf_counter() - start)
        for stage in STAGES:
            times[stage].append(searcher.timings.get(stage, 0.0) - before.get(stage, 0.0))
    return {"queries": len(times["total"]), "topk": topk,
            "stages": {stage: percentiles(values) for stage, values in times.items()}}


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean nearest-neighbour distance a->b plus b->a (point clouds N x 3, M x 3)."""
    from scipy.spatial import cKDTree

    return float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def voxel_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two sets of occupied voxels given as K x 3 integer indices on one grid."""
    sa, sb = {tuple(v) for v in a.tolist()}, {tuple(v) for v in b.tolist()}
    union = len(sa | sb)
    return len(sa & sb) / union if union else 1.0


def shape_geometry(path, up_axis: str = "y", points: int = POINTS, voxels: int = VOXELS) -> dict:
    """Surface samples and filled voxel indices of one normalized mesh."""
    import trimesh

    from ibsr.geometry.mesh import load_mesh

    mesh = load_mesh(Path(path), up_axis=up_axis)
    samples, _ = trimesh.sample.sample_surface(mesh, points, seed=SEED)
    pitch = 2.0 / voxels
    grid = mesh.voxelized(pitch).fill()
    # trimesh puts voxel centres on multiples of the pitch: integer indices on one common grid
    return {"points": np.asarray(samples, np.float64), "voxels": np.round(grid.points / pitch).astype(np.int64)}


def shape_metrics(report, searcher, points: int = POINTS, voxels: int = VOXELS) -> dict:
    """Chamfer distance and voxel IoU between each query's top-1 shape and its true shape.

    Meshes are read from the index's source paths; a query whose true or retrieved mesh is not
    there (or fails to load) is left out and counted in `missing`. Returns {"summary": {count,
    chamfer, iou, chamfer_failed, iou_failed, missing}, "per_category": {category: {count,
    chamfer, iou}}, "per_query": [{line, shape_id, retrieved, chamfer, iou} ...]} (means).
    """
    from ibsr.errors import IbsrError

    path_of = dict(zip(searcher.shapes.shape_ids, searcher.shapes.source_paths))
    up_axis = searcher.meta.up_axis
    cache: dict[str, dict | None] = {}

    def geometry(shape_id):
        if shape_id not in cache:
            path = path_of.get(shape_id)
            try:
                cache[shape_id] = shape_geometry(path, up_axis, points, voxels) if path and os.path.isfile(path) else None
            except IbsrError:
                cache[shape_id] = None
        return cache[shape_id]

    pairs: dict[tuple[str, str], tuple[float, float]] = {}
    per_query, missing = [], 0
    for record in report.records:
        truth, retrieved = record["shape_id"], (record["top"] or [None])[0]
        a, b = geometry(truth), geometry(retrieved) if retrieved else None
        if a is None or b is None:
            missing += 1
            continue
        key = (truth, retrieved)
        if key not in pairs:
            pairs[key] = (0.0, 1.0) if truth == retrieved else \
                (chamfer_distance(a["points"], b["points"]), voxel_iou(a["voxels"], b["voxels"]))
        cd, iou = pairs[key]
        per_query.append({"line": record["line"], "category": record["category"], "shape_id": truth,
                          "retrieved": retrieved, "rank": record["rank"], "chamfer": cd, "iou": iou})

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows) if rows else None

    failed = [r for r in per_query if r["rank"] != 1]
    by_category: dict[str, list] = {}
    for row in per_query:
        by_category.setdefault(row["category"], []).append(row)
    return {
        "points": points, "voxels": voxels,
        "summary": {"count": len(per_query), "chamfer": mean(per_query, "chamfer"), "iou": mean(per_query, "iou"),
                    "chamfer_failed": mean(failed, "chamfer"), "iou_failed": mean(failed, "iou"), "missing": missing},
        "per_category": {c: {"count": len(rows), "chamfer": mean(rows, "chamfer"), "iou": mean(rows, "iou")}
                         for c, rows in sorted(by_category.items())},
        "per_query": per_query,
    }


def format_shape_metrics(metrics: dict) -> str:
    s = metrics["summary"]
    if not s["count"]:
        return f"shape metrics: no query has both meshes on disk ({s['missing']} left out)"
    text = (f"shape metrics (top-1 vs true shape, {s['count']} queries): Chamfer {s['chamfer']:.4f}, "
            f"voxel IoU {s['iou']:.3f}")
    if s["chamfer_failed"] is not None:
        text += f"; on top-1 misses: Chamfer {s['chamfer_failed']:.4f}, IoU {s['iou_failed']:.3f}"
    if s["missing"]:
        text += f" ({s['missing']} queries left out: mesh not on disk)"
    return text


def confusion(records: list[dict], category_of: dict[str, str]) -> dict[str, Counter]:
    """true category -> Counter of top-1 categories ("(none)" when a query got no hit)."""
    table: dict[str, Counter] = {}
    for record in records:
        predicted = category_of.get(record["top"][0], "?") if record["top"] else "(none)"
        table.setdefault(record["category"], Counter())[predicted] += 1
    return table


# --------------------------------------------------------------------------- page

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1120px;color:#222;
 padding:0 16px}
h1{margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:14px}td,th{padding:4px 10px;text-align:right;border-bottom:1px solid #eee}
th:first-child,td:first-child{text-align:left}th{background:#f5f5f5}
.cards{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.gallery .item{border:1px solid #ddd;border-radius:6px;padding:8px;margin:10px 0;display:flex;gap:10px;
 align-items:flex-start}
.item .photo img{width:150px;height:150px;object-fit:contain;background:#fafafa;border:1px solid #ddd}
.item .photo{width:170px;flex:none;font-size:12px;overflow-wrap:anywhere}
.hit{width:136px;font-size:11px;text-align:center;overflow-wrap:anywhere}
.hit img{width:128px;border:3px solid #ccc;border-radius:4px;background:#fff}
.hit.ok img{border-color:#2e9d4b}.hit.bad img{border-color:#d0453a}.hit.truth img{border-color:#2e6fd0}
.tag{display:inline-block;padding:1px 6px;border-radius:8px;font-size:11px;color:#fff}
.tag.ok{background:#2e9d4b}.tag.bad{background:#d0453a}
.matrix td{text-align:center;min-width:36px}.matrix td.diag{font-weight:bold}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.note{color:#666;font-size:12px;max-width:900px}
"""
COLORS = {"top1": "#2e6fd0", "top10": "#8fb3ea", "category": "#2e9d4b"}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ms(value) -> str:
    return "-" if value is None else f"{1000 * value:.1f}"


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _png_uri(data: bytes | None) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode() if data else ""


def photo_uri(path, side: int = 300) -> str:
    """A small JPEG data URI of a query photo ("" if it cannot be read)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                image = image.point(lambda v: v / 257).convert("L")
            image = image.convert("RGB")
            image.thumbnail((side, side))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=85)
    except Exception:  # a photo the evaluation could not read either: shown as missing
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def svg_category_bars(per_category: dict[str, dict], width: int = 560) -> str:
    """Horizontal bars per category: top-1, top-10 and category accuracy."""
    keys = [("top1", "top-1"), ("top10", "top-10"), ("category", "category")]
    label_w, bar_h, gap, top = 150, 9, 10, 24
    row_h = bar_h * len(keys) + gap
    height = top + row_h * len(per_category) + 24
    plot_w = width - label_w - 60
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' font-family='sans-serif' font-size='11' role='img' "
             f"aria-label='accuracy per category'>"]
    for i, (key, label) in enumerate(keys):
        parts.append(f"<rect x='{label_w + i * 90}' y='4' width='10' height='10' fill='{COLORS[key]}'/>"
                     f"<text x='{label_w + i * 90 + 14}' y='13'>{label}</text>")
    for tick in (0, 25, 50, 75, 100):
        x = label_w + plot_w * tick / 100
        parts.append(f"<line x1='{x:.1f}' y1='{top - 4}' x2='{x:.1f}' y2='{height - 20}' stroke='#e4e4e4'/>"
                     f"<text x='{x:.1f}' y='{height - 6}' text-anchor='middle' fill='#666'>{tick}%</text>")
    for row, (category, m) in enumerate(per_category.items()):
        y0 = top + row * row_h
        parts.append(f"<text x='{label_w - 8}' y='{y0 + row_h / 2:.1f}' text-anchor='end' "
                     f"dominant-baseline='middle'>{_e(category)} ({m['count']})</text>")
        for i, (key, _) in enumerate(keys):
            value = m.get(key) or 0.0
            w = plot_w * value
            y = y0 + i * bar_h
            parts.append(f"<rect x='{label_w}' y='{y}' width='{w:.1f}' height='{bar_h - 1}' fill='{COLORS[key]}'>"
                         f"<title>{_e(category)} {key}: {_pct(m.get(key))}</title></rect>")
            parts.append(f"<text x='{label_w + w + 4:.1f}' y='{y + bar_h - 1.5}' font-size='9' fill='#444'>"
                         f"{_pct(m.get(key))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def svg_curve(curve: list[float], width: int = 520, height: int = 300) -> str:
    """Top-k instance accuracy for k = 1..len(curve), as a line with axes."""
    left, right, top, bottom = 48, 16, 14, 40
    pw, ph = width - left - right, height - top - bottom
    n = len(curve)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' font-family='sans-serif' font-size='11' role='img' "
             f"aria-label='accuracy versus k'>"]

    def xy(k, value):
        x = left + (pw * (k - 1) / (n - 1) if n > 1 else pw / 2)
        return x, top + ph * (1 - value)

    for tick in (0, 25, 50, 75, 100):
        y = top + ph * (1 - tick / 100)
        parts.append(f"<line x1='{left}' y1='{y:.1f}' x2='{left + pw}' y2='{y:.1f}' stroke='#e4e4e4'/>"
                     f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#666'>{tick}%</text>")
    if n:
        step = max(1, math.ceil(n / 10))
        for k in sorted({1, *range(step, n + 1, step), n}):
            x, _ = xy(k, 0)
            parts.append(f"<line x1='{x:.1f}' y1='{top + ph}' x2='{x:.1f}' y2='{top + ph + 4}' stroke='#888'/>"
                         f"<text x='{x:.1f}' y='{top + ph + 16}' text-anchor='middle' fill='#666'>{k}</text>")
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(k, v) for k, v in enumerate(curve, start=1)))
        parts.append(f"<polyline points='{points}' fill='none' stroke='{COLORS['top1']}' stroke-width='2'/>")
        for k in KS:
            if k <= n:
                x, y = xy(k, curve[k - 1])
                parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='{COLORS['top1']}'>"
                             f"<title>top-{k}: {_pct(curve[k - 1])}</title></circle>"
                             f"<text x='{x + 6:.1f}' y='{y + 14:.1f}' fill='#333'>top-{k} {_pct(curve[k - 1])}</text>")
    parts.append(f"<line x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}' stroke='#888'/>"
                 f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}' stroke='#888'/>"
                 f"<text x='{left + pw / 2}' y='{height - 6}' text-anchor='middle'>k (shapes returned)</text></svg>")
    return "".join(parts)


def _summary_table(report, latency, shapes) -> str:
    s, t = report.summary, report.timings
    qps = t.get("queries_per_s")
    rows = [("queries evaluated", f"{report.evaluated} of {report.queries}"),
            ("shapes in the index", report.shapes),
            *((f"top-{k} accuracy", _pct(s[f"top{k}"])) for k in KS),
            ("category accuracy (top-1)", _pct(s["category"])),
            ("mean reciprocal rank", "-" if s["mrr"] is None else f"{s['mrr']:.3f}"),
            (f"prefilter recall ({report.prefilter})", _pct(s["found"])),
            ("queries/s (batched run)", "-" if qps is None else f"{qps:.1f}")]
    if shapes and shapes["summary"]["count"]:
        ss = shapes["summary"]
        rows += [("Chamfer distance, top-1 vs truth (mean)", f"{ss['chamfer']:.4f}"),
                 (f"voxel IoU {shapes['voxels']}³, top-1 vs truth (mean)", f"{ss['iou']:.3f}")]
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    table = f"<table id='summary'><tr><th>metric</th><th>value</th></tr>{body}</table>"
    lat = ""
    if latency and latency.get("queries"):
        names = {"load": "load + mask", "encode": "encode", "prefilter": "prefilter", "rerank": "rerank",
                 "total": "total"}
        body = "".join(f"<tr><td>{names[stage]}</td>" + "".join(f"<td>{_ms(p[q])}</td>" for q in ("p50", "p95", "p99"))
                       + "</tr>" for stage, p in latency["stages"].items())
        lat = (f"<div><table id='latency'><tr><th>latency (ms)</th><th>p50</th><th>p95</th><th>p99</th></tr>{body}"
               f"</table><p class='note'>{latency['queries']} queries searched one at a time (top "
               f"{latency['topk']}, prefilter as above), after the batched run.</p></div>")
    stages = t.get("search_stages_s", {})
    run = (f"<p class='note'>Batched run: {t['total_s']:.2f} s in all, load + mask {t['load_s']:.2f} s, encode + "
           f"rerank {t['search_s']:.2f} s" + (" (" + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()) + ")"
                                              if stages else "") + ".</p>")
    return f"<div class='cards'><div>{table}{run}</div>{lat}</div>"


def _per_category_table(report, shapes) -> str:
    with_shapes = bool(shapes and shapes["summary"]["count"])
    head = ("<tr><th>category</th><th>queries</th>" + "".join(f"<th>top-{k}</th>" for k in KS)
            + "<th>category</th><th>MRR</th><th>found</th>"
            + ("<th>Chamfer</th><th>IoU</th>" if with_shapes else "") + "</tr>")
    rows = []
    for category, m in report.per_category.items():
        cells = [m["count"], *(_pct(m[f"top{k}"]) for k in KS), _pct(m["category"]),
                 "-" if m["mrr"] is None else f"{m['mrr']:.3f}", _pct(m["found"])]
        if with_shapes:
            g = shapes["per_category"].get(category)
            cells += ["-", "-"] if not g or g["chamfer"] is None else [f"{g['chamfer']:.4f}", f"{g['iou']:.3f}"]
        rows.append(f"<tr><td>{_e(category)}</td>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f"<table id='per-category'>{head}{''.join(rows)}</table>"


def _confusion_html(table: dict[str, Counter]) -> str:
    if not table:
        return "<p>No queries.</p>"
    truths = sorted(table)
    predicted = sorted({p for counts in table.values() for p in counts} | set(truths))
    pairs = sorted(((n, t, p) for t, counts in table.items() for p, n in counts.items() if p != t),
                   key=lambda x: (-x[0], x[1], x[2]))
    parts = []
    if len(predicted) <= CONFUSION_MATRIX_MAX:
        head = "<tr><th>true \\ top-1</th>" + "".join(f"<th>{_e(p)}</th>" for p in predicted) + "</tr>"
        rows = []
        for t in truths:
            total = sum(table[t].values())
            cells = []
            for p in predicted:
                n = table[t].get(p, 0)
                share = n / total if total else 0
                color = (46, 157, 75) if p == t else (208, 69, 58)
                style = f" style='background:rgba({color[0]},{color[1]},{color[2]},{0.1 + 0.6 * share:.2f})'" if n else ""
                cells.append(f"<td class='{'diag' if p == t else ''}'{style}>{n or ''}</td>")
            rows.append(f"<tr><td>{_e(t)}</td>{''.join(cells)}</tr>")
        parts.append(f"<table class='matrix' id='confusion'>{head}{''.join(rows)}</table>")
    if pairs:
        items = "".join(f"<tr><td>{_e(t)} → {_e(p)}</td><td>{n}</td><td>{_pct(n / sum(table[t].values()))}</td></tr>"
                        for n, t, p in pairs[:10])
        parts.append("<div><table id='confused-pairs'><tr><th>most confused (true → top-1)</th><th>queries</th>"
                     f"<th>of the true category</th></tr>{items}</table></div>")
    else:
        parts.append("<p>Every query's top-1 shape has the query's category.</p>")
    return f"<div class='cards'>{''.join(parts)}</div>"


def _gallery_item(record, thumbnails, photos, category_of, geometry) -> str:
    rank, truth = record["rank"], record["shape_id"]
    ok = rank == 1
    tag = ("<span class='tag ok'>correct</span>" if ok else
           f"<span class='tag bad'>{'rank ' + str(rank) if rank else 'not found'}</span>")
    photo = photos.get(record["image"], "")
    img = f"<img alt='query photo' src='{photo}'>" if photo else "<div>(photo not readable)</div>"
    extra = ""
    if geometry is not None:
        extra = f"<br>top-1 Chamfer {geometry['chamfer']:.4f}, IoU {geometry['iou']:.3f}"
    parts = [f"<div class='item'><div class='photo'>{img}<br>{tag} <b>{_e(truth)}</b><br>"
             f"line {record['line']}, mask: {_e(record.get('mask_source', ''))}{extra}</div>"]
    for position, shape_id in enumerate(record["top"][:GALLERY_HITS], start=1):
        cls = "ok" if shape_id == truth else "bad"
        parts.append(f"<div class='hit {cls}'><img alt='{_e(shape_id)}' src='{_png_uri(thumbnails.get(shape_id))}'>"
                     f"<br>{position}. {_e(shape_id)}<br><small>{_e(category_of.get(shape_id, ''))}</small></div>")
    if not ok and truth not in record["top"][:GALLERY_HITS]:
        parts.append(f"<div class='hit truth'><img alt='true shape {_e(truth)}' src='{_png_uri(thumbnails.get(truth))}'>"
                     f"<br>truth: {_e(truth)}<br><small>{'rank ' + str(rank) if rank else 'not ranked'}</small></div>")
    parts.append("</div>")
    return "".join(parts)


def _spread(items: list, n: int) -> list:
    """n items evenly spaced over `items` (first and last included), in order."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.unique(np.linspace(0, len(items) - 1, n).round())]


def gallery_records(records: list[dict], failed: int = GALLERY_FAILED, correct: int = GALLERY_CORRECT):
    """(failed, correct) records shown. Misses are sorted by how far the true shape fell (not
    ranked first) and sampled evenly, from the worst to the near misses; hits are sampled
    evenly in file order."""
    misses = sorted((r for r in records if r["rank"] != 1), key=lambda r: (-(r["rank"] or 10 ** 9), r["line"]))
    return _spread(misses, failed), _spread([r for r in records if r["rank"] == 1], correct)


def html_report(report, thumbnails: dict[str, bytes], photos: dict[str, str], category_of: dict[str, str],
                latency: dict | None = None, shapes: dict | None = None, title: str = "ibsr evaluation") -> str:
    """The page as a string, from data only (no index access): see `write_html_report`."""
    misses, hits = gallery_records(report.records)
    geometry = {}
    if shapes:
        geometry = {(g["line"], g["shape_id"]): g for g in shapes["per_query"]}

    def items(records):
        return "".join(_gallery_item(r, thumbnails, photos, category_of, geometry.get((r["line"], r["shape_id"])))
                       for r in records) or "<p>None.</p>"

    ranking = "full ranking" if report.depth == report.shapes else f"top {report.depth}"
    meta = (f"index <code>{_e(report.index)}</code> · queries <code>{_e(report.source or '-')}</code> · {ranking} · "
            f"prefilter {_e(report.prefilter)} · written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    excluded = ""
    if report.unknown or report.failed:
        excluded = (f"<p class='note'>Excluded from the metrics: {report.unknown} queries whose shape is not in the "
                    f"index, {report.failed} unreadable photos.</p>")
    total_misses = sum(1 for r in report.records if r["rank"] != 1)
    shapes_note = ""
    if shapes:
        ss = shapes["summary"]
        shapes_note = (f"<p class='note'>Shape metrics: each query's top-1 shape against its true shape, both normalized "
                       f"as indexed; Chamfer distance over {shapes['points']} surface points per shape (mean nearest "
                       f"distance both ways, unit = bounding-sphere radius), IoU of filled {shapes['voxels']}³ voxels. "
                       f"{ss['count']} queries measured" + (f", {ss['missing']} left out (mesh not on disk)"
                                                            if ss["missing"] else "") + ".</p>")
    return f"""<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>
<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head><body>
<h1>{_e(title)}</h1><p class='meta'>{meta}</p>{excluded}
<h2>Summary</h2>{_summary_table(report, latency, shapes)}{shapes_note}
<h2>Per category</h2><div class='cards'><div>{svg_category_bars(report.per_category)}</div>
<div>{_per_category_table(report, shapes)}</div></div>
<h2>Accuracy versus k</h2>{svg_curve(report.curve)}
<h2>Confusion between categories</h2>{_confusion_html(confusion(report.records, category_of))}
<h2>Failed queries</h2><p class='note'>Queries whose true shape is not ranked first: {len(misses)} of
{total_misses}, from the one whose true shape fell furthest to near misses. Each row: the photo, then the top
{GALLERY_HITS} shapes (green: the true shape; red: another shape; blue: the true shape when it is not in the top
{GALLERY_HITS}).</p><div class='gallery'>{items(misses)}</div>
<h2>Correct queries</h2><div class='gallery'>{items(hits)}</div>
</body></html>"""


def write_html_report(path, report, searcher, latency: dict | None = None, shapes: dict | None = None) -> Path:
    """Write the self-contained page for `report` (thumbnails from the searcher's index)."""
    misses, hits = gallery_records(report.records)
    shown = misses + hits
    shape_ids = sorted({s for r in shown for s in r["top"][:GALLERY_HITS]} | {r["shape_id"] for r in shown})
    thumbnails = searcher.shapes.thumbnails(shape_ids)
    photos = {r["image"]: photo_uri(r["image"]) for r in shown}
    category_of = dict(zip(searcher.shapes.shape_ids, searcher.shapes.categories))
    page = html_report(report, thumbnails, photos, category_of, latency, shapes)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        from ibsr.errors import IbsrError
        raise IbsrError(f"cannot write the report ({exc.strerror or exc}); choose another --report path", path) from None
    return path
