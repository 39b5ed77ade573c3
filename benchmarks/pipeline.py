"""End-to-end speed: index build rate (render / encode separately) and search latency per stage.

    python benchmarks/pipeline.py --shapes-per-category 25 --photos 64 --json benchmarks/out/pipeline.json

Generates a synthetic catalog and photos (ibsr.synth), builds an index with the given model
(default: the shipped one), then searches the photos one at a time and as one batch, for
each prefilter mode. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ibsr.eval import read_queries
from ibsr.indexer import Indexer
from ibsr.searcher import Searcher
from ibsr.synth import FURNITURE, iter_shapes, write_catalog, write_queries

CATEGORIES = FURNITURE  # the 8 categories of the figures in RESULTS.md


def build(root: Path, args) -> dict:
    write_catalog(root, CATEGORIES, args.shapes_per_category, args.seed)
    per_category = max(1, args.photos // len(CATEGORIES))
    shapes = [s for s in iter_shapes(CATEGORIES, min(per_category, args.shapes_per_category), args.seed)]
    write_queries(root, shapes, 1, args.seed)
    indexer = Indexer(root / "index", weights=args.weights, workers=args.workers, batch_size=args.batch_size)
    report = indexer.build(root / "catalog", progress=False)
    return {"shapes": report.indexed, "workers": args.workers, "wall_s": round(report.wall_seconds, 2),
            "render_s_summed_over_workers": round(report.render_seconds, 2),
            "encode_s": round(report.encode_seconds, 2), "write_s": round(report.write_seconds, 2),
            **report.rates()}


def search(root: Path, args) -> list[dict]:
    records = read_queries(root / "queries.jsonl")
    images = [r.image for r in records]
    masks = [r.mask for r in records]
    rows = []
    for mode in ("none", "category", "ann"):
        for batched in (False, True):
            searcher = Searcher(root / "index", weights=args.weights)
            searcher.search(images[:1], masks[:1], topk=10, prefilter=mode, candidates=args.candidates)  # warm-up
            searcher.timings.clear()
            start = time.perf_counter()
            if batched:
                searcher.search(images, masks, topk=10, prefilter=mode, candidates=args.candidates)
            else:
                for image, mask in zip(images, masks):
                    searcher.search([image], [mask], topk=10, prefilter=mode, candidates=args.candidates)
            total = time.perf_counter() - start
            n = len(images)
            rows.append({"prefilter": mode, "batch": n if batched else 1, "queries": n,
                         "ms_per_query": round(1000 * total / n, 2), "queries_per_s": round(n / total, 1),
                         **{f"{k}_ms_per_query": round(1000 * v / n, 2) for k, v in searcher.timings.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes-per-category", type=int, default=25)
    parser.add_argument("--photos", type=int, default=64, help="query photos (spread over the 8 categories)")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--workers", type=int, default=2, help="render worker processes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=50, help="--prefilter ann candidates")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", default=None, help="write results here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ibsr-bench-"))
    try:
        result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                              "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
                  "build": build(root, args), "search": search(root, args)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("build:", json.dumps(result["build"]))
    print(f"\n{'prefilter':<9} {'batch':>5} {'ms/query':>9} {'q/s':>7}  per-stage ms/query")
    for row in result["search"]:
        stages = ", ".join(f"{k[:-13]} {v}" for k, v in row.items() if k.endswith("_ms_per_query"))
        print(f"{row['prefilter']:<9} {row['batch']:>5} {row['ms_per_query']:>9} {row['queries_per_s']:>7}  {stages}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
