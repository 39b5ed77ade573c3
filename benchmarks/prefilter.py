"""Prefilter recall and speed: how often each mode keeps the exhaustive answer in its candidates.

    python benchmarks/prefilter.py --index DIR --queries queries.jsonl [--weights W] --json out.json

For every query, the exhaustive rerank (`--prefilter none`, the ground truth) gives the top-1
and top-10 shapes; each prefilter mode gives a candidate set. Recall@1 is the share of
queries whose exhaustive top-1 is among the candidates; recall@10 the mean share of the
exhaustive top-10 that is. Speed is the batched search time per query of that mode.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ibsr import kernels
from ibsr.eval import read_queries
from ibsr.searcher import Searcher

MODES = [("none", {}), ("category", {"neighbors": 10}), ("category", {"neighbors": 3}),
         ("ann", {"candidates": 50}), ("ann", {"candidates": 200})]


def candidate_sets(searcher: Searcher, q: np.ndarray, mode: str, options: dict) -> list[set[int]]:
    groups = searcher.prefilter.groups(q, mode, options.get("candidates", 1), options.get("neighbors", 10), None)
    sets: list[set[int]] = [set() for _ in range(len(q))]
    everything = set(range(len(searcher)))
    for group in groups:
        for j, i in enumerate(group.queries.tolist()):
            if group.per_query_rows is not None:
                sets[i] = {int(r) for r in group.per_query_rows[j] if r >= 0}
            else:
                sets[i] = everything if group.rows is None else set(group.rows.tolist())
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--queries", required=True, help="queries.jsonl (ibsr-data synth) or pix3d.json")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    searcher = Searcher(Path(args.index), weights=args.weights)
    records = read_queries(Path(args.queries))[: args.limit]
    queries = searcher.load_queries([r.image for r in records], [r.mask for r in records])
    q, wq = searcher.encode(queries)
    exact = kernels.rerank(q, wq, searcher.views, 10).indices.numpy()
    rows = []
    for mode, options in MODES:
        sets = candidate_sets(searcher, q.numpy(), mode, options)
        recall1 = np.mean([exact[i, 0] in s for i, s in enumerate(sets)])
        recall10 = np.mean([np.mean([r in s for r in exact[i]]) for i, s in enumerate(sets)])
        searcher.timings.clear()
        start = time.perf_counter()
        searcher.search_queries(queries, topk=10, prefilter=mode, **options)
        seconds = time.perf_counter() - start
        rows.append({"mode": mode, **options, "queries": len(queries), "recall_at_1": round(float(recall1), 4),
                     "recall_at_10": round(float(recall10), 4),
                     "mean_candidates": round(float(np.mean([len(s) for s in sets])), 1),
                     "ms_per_query": round(1000 * seconds / len(queries), 3),
                     "stages_ms_per_query": {k: round(1000 * v / len(queries), 3) for k, v in searcher.timings.items()}})
    print(f"{len(queries)} queries, {len(searcher)} shapes, torch threads {torch.get_num_threads()}")
    print(f"{'mode':<22} {'recall@1':>9} {'recall@10':>10} {'candidates':>11} {'ms/query':>9}")
    for row in rows:
        name = row["mode"] + "".join(f" {k}={v}" for k, v in row.items() if k in ("neighbors", "candidates"))
        print(f"{name:<22} {row['recall_at_1']:>9.3f} {row['recall_at_10']:>10.3f} {row['mean_candidates']:>11} "
              f"{row['ms_per_query']:>9}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
