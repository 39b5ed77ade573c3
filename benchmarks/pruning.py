"""Exact pruned rerank (`--prefilter none`, formerly `exact`) vs the dense exhaustive rerank.

Synthetic view embeddings clustered like a real index's (measured on the 900-shape real
index of benchmarks/serve.py: pooled cosine 0.75 within a category and ~0 across, views of
one shape at cosine 0.86, a view 0.34 from its shape's mean): unit category centres,
shapes around them, views around their shape plus a per-category offset per view slot.
Queries sit near a random shape (cosine ~0.7). Calls the search layer directly (no LanceDB).

    OMP_NUM_THREADS=1 python benchmarks/pruning.py --shapes 100000 --json benchmarks/out/pruning.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import numpy as np
import torch

from ibsr import kernels
from ibsr.index.bounds import ShapeBounds
from ibsr.searcher.pruned import pruned_rerank

D, V, CATEGORIES = 128, 12, 50


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def sigma_for_cosine(cos: float) -> float:
    """Per-dimension noise that leaves two noisy copies of a unit vector at about this cosine."""
    return float(np.sqrt((1 / cos - 1) / D))


def clustered_views(n: int, rng: np.random.Generator, chunk: int = 1 << 14):
    """(views n x V x D float16, pooled vectors n x D float32, shape centres n x D)."""
    centres = unit(rng.normal(size=(CATEGORIES, D)))
    slot_offsets = rng.normal(scale=sigma_for_cosine(0.86) / np.sqrt(2), size=(CATEGORIES, V, D))
    category = rng.integers(0, CATEGORIES, n)
    shapes = unit(centres[category] + rng.normal(scale=sigma_for_cosine(0.75), size=(n, D))).astype(np.float32)
    views = np.empty((n, V, D), dtype=np.float16)
    for i in range(0, n, chunk):
        s = slice(i, i + chunk)
        noise = rng.normal(scale=sigma_for_cosine(0.86) / np.sqrt(2), size=(len(shapes[s]), V, D))
        views[s] = unit(shapes[s][:, None] + slot_offsets[category[s]] + noise)
    return views, unit(views.astype(np.float32).mean(axis=1)), shapes


def queries(shapes: np.ndarray, b: int, rng: np.random.Generator):
    q = unit(shapes[rng.integers(0, len(shapes), b)] + rng.normal(scale=sigma_for_cosine(0.7), size=(b, D)))
    q = torch.from_numpy(q.astype(np.float32))
    w = torch.from_numpy(rng.normal(scale=D ** -0.5, size=(D, D)).astype(np.float32))
    return q, q @ w.t()


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return (names[0] if names else platform.processor()) + ("; avx512_bf16" if "avx512_bf16" in out else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, nargs="+", default=[100_000], help="catalog sizes N")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="queries per call B")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    print(f"# cpu: {cpu_model()}; torch threads: {torch.get_num_threads()}")
    print("| N | B | k | exhaustive ms | pruned ms | speed-up | shapes scored | bounds build s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in args.shapes:
        views, _, shapes = clustered_views(n, rng)
        views_t = torch.from_numpy(views)
        build_s, bounds = best_of(lambda: ShapeBounds.build(views), 1)
        for b in args.batches:
            q, wq = queries(shapes, b, rng)
            full_s, full = best_of(lambda: kernels.rerank(q, wq, views_t, args.topk), args.repeats)
            pruned_s, pruned = best_of(lambda: pruned_rerank(q, wq, views_t, bounds, args.topk), args.repeats)
            assert torch.equal(full.indices, pruned.ranked.indices) or torch.allclose(full.scores, pruned.ranked.scores)
            row = {"shapes": n, "batch": b, "topk": args.topk, "exhaustive_ms": 1e3 * full_s,
                   "pruned_ms": 1e3 * pruned_s, "speedup": full_s / pruned_s,
                   "fraction_scored": float(pruned.scored.mean() / n),
                   "bounds_build_s": build_s}
            rows.append(row)
            print(f"| {n:,} | {b} | {args.topk} | {row['exhaustive_ms']:.1f} | {row['pruned_ms']:.1f} | "
                  f"{row['speedup']:.2f}x | {100 * row['fraction_scored']:.1f}% | {build_s:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "torch_threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
