"""Main-object selection on real photos: the automatic mask as found vs `main_object` of it.

A design measured and not shipped: on real_dev (stage-7 model) it lowered the right-category
rate from 64.5% to 58.9% (37 photos only without it, 12 only with it, p < 0.001) for no
top-1 gain, by the rule fixed before the run (benchmarks/RESULTS.md "Main-object selection").
The learned mask splits most real photos into many regions (416 of 440), and the pieces it
drops are mostly the object's own. Kept here so a better design is measured the same way.

    python benchmarks/selection.py --index data/generalization41/index/default-real-catalog \
        --queries data/generalization41/data/real-photos/queries.jsonl --json benchmarks/out/selection.json

The index and queries are the ones `benchmarks/generalization.py` makes for its real rows
(real_dev's photos; or `real-rendered`'s, whose masks are then ignored). Each photo's automatic
mask is computed once; the photo is searched with every region the mask found and with the
main object only (`main_object` below), exhaustive ranking over the index.
Prints top-1, top-10, right category and family top-1 for both, how many photos the selection
changed, and the photos only one of the two puts first with a two-sided sign test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from generalization import cpu_name, sign_test  # noqa: E402

from ibsr.eval.queries import read_queries  # noqa: E402
from ibsr.eval.real_sets import family  # noqa: E402
from ibsr.photos.query import Query, load_query  # noqa: E402
from ibsr.searcher import Searcher  # noqa: E402

KEEP = 0.25  # fixed before the run, not tuned
REACH = 0.1


def main_object(mask: np.ndarray) -> np.ndarray:
    """The main object of an automatic mask that found several separate regions: the region of
    the largest area x centrality (1 at the photo's centre, 0 at a corner), and the regions of
    at least KEEP of its area that lie near it (REACH of its size: one object cut in two by an
    occluder). One region: unchanged."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:  # background + at most one region
        return mask
    height, width = mask.shape
    area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    offset = (centroids[1:] - [(width - 1) / 2, (height - 1) / 2]) / [width / 2, height / 2]
    centrality = np.clip(1 - np.hypot(*offset.T) / np.sqrt(2), 0, 1)
    best = int(np.argmax(area * centrality))
    x, y, w, h = stats[1 + best, :4]
    reach_x, reach_y = w * REACH, h * REACH
    keep = [best + 1]
    for i in range(1, count):
        bx, by, bw, bh = stats[i, :4]
        near = bx <= x + w + reach_x and bx + bw >= x - reach_x and by <= y + h + reach_y and by + bh >= y - reach_y
        if i != best + 1 and near and area[i - 1] >= KEEP * area[best]:
            keep.append(i)
    return np.isin(labels, keep)


def score(searcher, queries, loaded, families) -> list[dict]:
    results = searcher.search_queries(loaded, topk=len(searcher), prefilter="none")
    rows = []
    for q, result in zip(queries, results):
        ids = [h.shape_id for h in result.hits]
        rows.append({"top1": ids[0] == q.shape_id, "top10": q.shape_id in ids[:10],
                     "category": result.hits[0].category == (q.category or q.shape_id.split("/")[0]),
                     "family": family(ids[0]) == families.get(str(q.image), family(q.shape_id))})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=None, help="Query model (default: the index's own).")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    queries = read_queries(args.queries)
    families = {}
    for line in args.queries.read_text().splitlines():
        row = json.loads(line)
        if "family" in row:
            families[str(args.queries.parent / row["image"])] = row["family"]
    searcher = Searcher(args.index, weights=args.weights)
    raw = [load_query(q.image) for q in queries]  # masks ignored: automatic
    selected = [Query(r.path, r.rgb, main_object(r.mask), r.mask_source) for r in raw]
    changed = sum(not np.array_equal(r.mask, s.mask) for r, s in zip(raw, selected))
    out = {"photos": len(queries), "changed": changed, "cpu": cpu_name(), "index": str(args.index),
           "queries": str(args.queries)}
    per = {name: score(searcher, queries, loaded, families) for name, loaded in (("all", raw), ("main", selected))}
    print(f"{len(queries)} photos, the selection changed the mask of {changed}")
    print(f"{'mask':<6} {'top-1':>7} {'top-10':>7} {'category':>8} {'family':>7}")
    for name, rows in per.items():
        means = {k: float(np.mean([r[k] for r in rows])) for k in ("top1", "top10", "category", "family")}
        out[name] = means
        print(f"{name:<6} " + " ".join(f"{means[k]:>{w}.1%}" for k, w in (("top1", 7), ("top10", 7),
                                                                            ("category", 8), ("family", 7))))
    for metric in ("top1", "family", "category"):
        only_all = sum(a[metric] and not m[metric] for a, m in zip(per["all"], per["main"]))
        only_main = sum(m[metric] and not a[metric] for a, m in zip(per["all"], per["main"]))
        out[f"paired_{metric}"] = {"only_all": only_all, "only_main": only_main,
                                   "sign_test_p": round(sign_test(only_all, only_main), 3)}
        print(f"{metric}: only with all regions {only_all}, only with the main object {only_main} "
              f"(p = {sign_test(only_all, only_main):.3f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
