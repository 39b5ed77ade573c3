"""End-to-end speed: index build rate (render / encode separately) and search latency per stage.

    python benchmarks/pipeline.py --shapes-per-category 25 --photos 64 --json benchmarks/out/pipeline.json
    python benchmarks/pipeline.py --shapes-per-category 10 --photos 16 --runtime torch onnx \
        --json benchmarks/out/pipeline_runtime.json

Generates a synthetic catalog and photos (ibsr.synth), builds an index with the given model
(default: the shipped one), then searches the photos one at a time and as one batch, for
each prefilter mode. Prints a table and writes JSON.

`--runtime torch onnx`: the build and the searches once per runtime, in this order, in this
process (IBSR_RUNTIME is set before each; `ibsr.runtime` reads it at every call, and the
views are encoded in this process: the render workers run no network), each into its own
index from the same catalog.
"""

from __future__ import annotations

import argparse
import json
import os
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


def generate(root: Path, args) -> None:
    write_catalog(root, CATEGORIES, args.shapes_per_category, args.seed)
    per_category = max(1, args.photos // len(CATEGORIES))
    shapes = [s for s in iter_shapes(CATEGORIES, min(per_category, args.shapes_per_category), args.seed)]
    write_queries(root, shapes, 1, args.seed)


def build(root: Path, args, index: str = "index") -> dict:
    indexer = Indexer(root / index, weights=args.weights, workers=args.workers, batch_size=args.batch_size)
    report = indexer.build(root / "catalog", progress=False)
    return {"shapes": report.indexed, "workers": args.workers, "wall_s": round(report.wall_seconds, 2),
            "render_s_summed_over_workers": round(report.render_seconds, 2),
            "encode_s": round(report.encode_seconds, 2), "write_s": round(report.write_seconds, 2),
            **report.rates()}


def search(root: Path, args, index: str = "index") -> list[dict]:
    records = read_queries(root / "queries.jsonl")
    images = [r.image for r in records]
    masks = [r.mask for r in records]
    rows = []
    for mode in ("none", "category", "ann"):
        for batched in (False, True):
            searcher = Searcher(root / index, weights=args.weights)
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


def cpu_info() -> dict:
    """Model name and the flags that matter to the runtimes, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine()}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return {"model": fields.get("model name", platform.machine()), "family": fields.get("cpu family"),
            "model_number": fields.get("model"), "flags": {f: f in flags for f in wanted}}


def set_runtime(value: str | None) -> None:
    if value is None:
        os.environ.pop("IBSR_RUNTIME", None)
    else:
        os.environ["IBSR_RUNTIME"] = value


def run_once(root: Path, args, runtime: str) -> dict:
    set_runtime(args.env_runtime if runtime == "env" else runtime)
    index = "index" if runtime == "env" else f"index-{runtime}"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    load_before = os.getloadavg()[0]
    result = {"runtime": runtime, "started_utc": started, "load_1min_before": round(load_before, 2),
              "build": build(root, args, index)}
    result["load_1min_after_build"] = round(os.getloadavg()[0], 2)
    if not args.no_search:
        result["search"] = search(root, args, index)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes-per-category", type=int, default=25)
    parser.add_argument("--photos", type=int, default=64, help="query photos (spread over the 8 categories)")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--workers", type=int, default=2, help="render worker processes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=50, help="--prefilter ann candidates")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--runtime", nargs="+", choices=("env", "auto", "torch", "onnx"), default=["env"],
                        help="build (and search) once per runtime, IBSR_RUNTIME set before each (env: as inherited); "
                             "the first is the baseline")
    parser.add_argument("--no-search", action="store_true", help="only the index builds")
    parser.add_argument("--json", default=None, help="write results here")
    args = parser.parse_args(argv)
    args.env_runtime = os.environ.get("IBSR_RUNTIME")
    root = Path(tempfile.mkdtemp(prefix="ibsr-bench-"))
    try:
        generate(root, args)
        runs = [run_once(root, args, runtime) for runtime in args.runtime]
    finally:
        shutil.rmtree(root, ignore_errors=True)
        set_runtime(args.env_runtime)
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "cpuinfo": cpu_info(),
                          "threads": torch.get_num_threads(),
                          "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
              "runs": runs}
    if len(runs) == 1:  # the layout of single-runtime runs before --runtime
        result.update(build=runs[0]["build"], search=runs[0].get("search", []))
    base = runs[0]["build"]["overall_shapes_per_s"]
    for run in runs:
        rate = run["build"]["overall_shapes_per_s"]
        run["build"]["vs_baseline_overall"] = round(rate / base, 2) if rate and base else None
        print(f"runtime {run['runtime']} (load {run['load_1min_before']} -> {run['load_1min_after_build']}) "
              f"build:", json.dumps(run["build"]))
        print(f"\n{'prefilter':<9} {'batch':>5} {'ms/query':>9} {'q/s':>7}  per-stage ms/query")
        for row in run.get("search", []):
            stages = ", ".join(f"{k[:-13]} {v}" for k, v in row.items() if k.endswith("_ms_per_query"))
            print(f"{row['prefilter']:<9} {row['batch']:>5} {row['ms_per_query']:>9} {row['queries_per_s']:>7}  {stages}")
    print(f"\n| runtime | shapes | wall s | shapes/s | render s (summed) | encode s | encode shapes/s | vs {runs[0]['runtime']} |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        b = run["build"]
        print(f"| {run['runtime']} | {b['shapes']} | {b['wall_s']} | {b['overall_shapes_per_s']} "
              f"| {b['render_s_summed_over_workers']} | {b['encode_s']} | {b['encode_shapes_per_s']} "
              f"| {b['vs_baseline_overall']}x |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
