"""A million shapes on one CPU machine (issue 12): write a synthetic index, then time opening it,
`ibsr-search` as a whole process, and batched queries per prefilter mode.

    flock /tmp/ibsr-bench.lock .venv/bin/python benchmarks/scale.py --shapes 1000000 \
        --index data/scale/1m --build-only
    flock /tmp/ibsr-bench.lock .venv/bin/python benchmarks/scale.py --shapes 1000000 \
        --index data/scale/1m --json benchmarks/out/scale_1m.json

The index is written through ibsr's own writer (`IndexWriter.add`, then the flat sidecar and
the FAISS prefilter as a build's end writes them: `refresh_derived`), in the real on-disk format. Its
view embeddings are drawn around those of a real catalog: `--work` holds a generated catalog
(`ibsr.synth`, all 36 categories, `--base-per-category` shapes each) indexed once with the
model (`--weights`, default the shipped one) and photos of its shapes. Synthetic shape i takes
a real shape's 12 views and adds a shift shared by its category (50 names, each tied to one
real category), a shift shared by its own views, and a little noise per view, so views cluster
by shape and by category as real ones do. Thumbnails are a few real ones, shrunk.

Measured (without --build-only): the bare import (a process importing what `ibsr-search`
imports), opening (Searcher construction in this process; and, last, once more with the
sidecar hidden, reading the table as before it existed), `ibsr-search` of one photo as a
whole process (wall time, best of 2, with its peak RSS), and per prefilter mode (category,
ann, none = the exact top-k with pruning, and the dense exhaustive pass that `none` replaces)
queries/s at B = 1 (mean over single queries) and B = 64 (best of 2), the fraction of shapes
each scored, and this process's peak RSS. Query embeddings come from the real photos, encoded
once; the timings are prefilter + rerank. Prints a table; --json writes every figure.

The serve probe (also alone: --serve-only) is an `ibsr-serve`-like process per prefilter mode
(`--probe-modes`): ibsr-serve's imports, `SearchService` open, one photo answered through the
service's queue and worker, then a forced hot reload of the same index and a second answer. It
reports the seconds of each step, the time from the end of the imports to the first answer,
and memory from /proc/self/status: peak RSS (VmHWM) and RSS split into anonymous memory (the
process's own) and file pages (mapped files: page cache, shared with every other mapping of
them). `--serve-code LABEL=DIR` (repeatable) runs the probes against the ibsr package in DIR
(e.g. an export of an earlier commit), alternating, so before and after come from one run;
`--probe-table` adds probes with the sidecar hidden (the table read, as without one);
`--probe-dense` ends each probe with one dense pass over every view (every page of the views
mapped: the most RSS a search can reach).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

MODES = ("category", "ann", "none", "dense")
CATEGORY_NAMES = 50
WRITE_CHUNK = 50_000  # shapes per commit
SHIFTS = {"category": 0.35, "shape": 0.45, "view": 0.15}  # norms of the three shifts (views are unit)
BIN = Path(sys.executable).parent


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return (names[0] if names else platform.processor()) + ("; avx512_bf16" if "avx512_bf16" in out else "; no bf16")


def build_base(work: Path, weights: str | None, per_category: int, categories: list[str], seed: int) -> Path:
    """The real catalog, its index and photos (once; later runs reuse them)."""
    from ibsr.indexer import Indexer
    from ibsr.synth import iter_shapes, write_catalog, write_queries

    index = work / "index"
    if (index / "faiss").is_dir() and (work / "queries.jsonl").exists():
        return index
    write_catalog(work, categories, per_category, seed)
    write_queries(work, list(iter_shapes(categories, per_category, seed)), 1, seed)
    Indexer(index, weights=weights, workers=min(2, os.cpu_count() or 1)).build(work / "catalog", progress=False)
    return index


def small_thumbnails(index: Path, count: int = 4) -> list[bytes]:
    """A few of the real index's thumbnails, shrunk to 1/4 (1M shapes x full-size ones: ~20 GB)."""
    from ibsr.index.table import ShapeReader

    reader = ShapeReader(index)
    blobs = list(reader.thumbnails(reader.read(["shape_id"]).column("shape_id").to_pylist()[:count]).values())
    small = []
    for png in blobs:
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        image = cv2.resize(image, (image.shape[1] // 4, image.shape[0] // 4), interpolation=cv2.INTER_AREA)
        small.append(cv2.imencode(".png", image)[1].tobytes())
    return small


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def shift(rng, shape, norm: float) -> np.ndarray:
    """Gaussian vectors of about this norm."""
    return (rng.standard_normal(shape, dtype=np.float32) * (norm / np.sqrt(shape[-1]))).astype(np.float32)


def write_synthetic(index: Path, base: Path, n: int, seed: int) -> dict:
    """n shapes around the base index's real ones, written like a build writes them."""
    from ibsr.index.layout import ShapeEntry
    from ibsr.index.lock import IndexWriteLock
    from ibsr.index.snapshot import IndexSnapshot
    from ibsr.index.writer import IndexWriter

    real = IndexSnapshot.open(base)
    meta = real.meta
    real_views = real.views.astype(np.float32)
    real_categories = np.array(real.categories)
    names_real = sorted(set(real.categories))
    # 50 names, each tied to one real category; shapes of a name start from that category's shapes
    names = [f"{names_real[k % len(names_real)]}-{k // len(names_real)}" for k in range(CATEGORY_NAMES)]
    members = [np.flatnonzero(real_categories == names_real[k % len(names_real)]) for k in range(CATEGORY_NAMES)]
    rng = np.random.default_rng(seed)
    name_shift = shift(rng, (CATEGORY_NAMES, 1, meta.embed_dim), SHIFTS["category"])
    thumbnails = small_thumbnails(base)
    started, timings = time.perf_counter(), {}
    index.mkdir(parents=True, exist_ok=True)
    with IndexWriteLock(index):
        meta.write(index)
        writer = IndexWriter(index, meta)
        for start in range(0, n, WRITE_CHUNK):
            count = min(WRITE_CHUNK, n - start)
            cats = rng.integers(CATEGORY_NAMES, size=count)
            picks = np.array([members[c][i] for c, i in zip(cats, rng.integers(1 << 30, size=count) %
                                                            np.array([len(members[c]) for c in cats]))])
            views = unit(real_views[picks] + name_shift[cats] + shift(rng, (count, 1, meta.embed_dim), SHIFTS["shape"])
                         + shift(rng, (count, meta.views, meta.embed_dim), SHIFTS["view"]))
            shapes = [ShapeEntry(f"{names[c]}/s{start + i:07d}", names[c], real.source_paths[p],
                                 f"synthetic-{start + i}", thumbnails[i % len(thumbnails)])
                      for i, (c, p) in enumerate(zip(cats, picks))]
            writer.add(shapes, views)
            print(f"  {start + count:,} / {n:,} shapes written ({time.perf_counter() - started:.0f} s)", flush=True)
        timings["rows_s"] = time.perf_counter() - started
        t = time.perf_counter()
        writer.compact()
        timings["compact_s"] = time.perf_counter() - t
        t = time.perf_counter()
        derived = writer.refresh_derived(rewrite_flat=True, rewrite_faiss=True)
        timings["derived_s"] = time.perf_counter() - t
    print(f"  prefilter {derived['faiss']}, flat sidecar written; {timings}", flush=True)
    return timings


def wall_of(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, stdout) of a child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.strip()[-500:]}")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20, out


def first_photo(work: Path) -> tuple[str, str]:
    query = json.loads((work / "queries.jsonl").read_text().splitlines()[0])
    return str(work / query["image"]), str(work / query["mask"])


def memory_gb() -> dict:
    """This process's RSS, peak RSS and RSS split into anonymous and file pages, in GB."""
    fields = {"VmRSS": "rss", "VmHWM": "peak_rss", "RssAnon": "anon", "RssFile": "file"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            out[fields[key] + "_gb"] = round(int(value.split()[0]) / 2 ** 20, 3)
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def probe(index: Path, photo: str, mask: str, weights: str | None, mode: str, table: bool, dense: bool) -> dict:
    """An `ibsr-serve`-like process (run by `serve_probes` in a child): imports, open, one
    answer through the service's queue, a forced reload and a second answer; with `dense`,
    then one dense pass over every view (every page of the views touched: the most RSS)."""
    started = time.perf_counter()
    import uvicorn  # noqa: F401 (what ibsr-serve imports before it opens the index)

    import ibsr.cli.serve  # noqa: F401
    from ibsr.serve import SearchService, ServeConfig, create_app  # noqa: F401
    from ibsr.searcher import SearchOptions
    imported, cpu_imported = time.perf_counter(), cpu_seconds()
    if table:
        import ibsr.index.snapshot as snapshot
        snapshot.read_flat = lambda *args, **kwargs: None

    def answer() -> float:
        t = time.perf_counter()
        [query] = service.served.searcher.load_queries([photo], [mask])  # as a request's decoding
        with service.admit():
            result, _ = service.submit(query, SearchOptions(prefilter=mode)).result(timeout=600)
        assert result.hits
        return time.perf_counter() - t

    service = SearchService(ServeConfig(index_dir=index, weights=weights, reload_interval_s=0))
    service.start()
    opened = time.perf_counter()
    out = {"ibsr": ibsr.cli.serve.__file__, "imports_s": imported - started, "open_s": opened - imported,
           "source": service.served.searcher.shapes.source}
    out["answer_s"] = answer()
    out["imports_to_first_answer_s"] = time.perf_counter() - imported
    out["cpu_imports_to_first_answer_s"] = cpu_seconds() - cpu_imported  # all threads: robust to a busy machine
    out["after_first_answer"] = memory_gb()
    t = time.perf_counter()
    assert service.reload()
    out["reload_s"] = time.perf_counter() - t
    out["answer_after_reload_s"] = answer()
    out["after_reload"] = memory_gb()
    service.stop()
    if dense:
        from ibsr import kernels

        searcher = service.served.searcher
        q, wq = searcher.encode(searcher.load_queries([photo], [mask]))
        t = time.perf_counter()
        kernels.rerank(q, wq, searcher.views, 10)
        out["dense_s"], out["after_dense"] = time.perf_counter() - t, memory_gb()
    return out


def serve_probes(index: Path, work: Path, weights: str | None, codes: dict[str, str], modes: list[str],
                 repeats: int, table: bool, dense: bool = False) -> list[dict]:
    """`probe` in a fresh process per (repeat, code, mode[, table]), codes alternating."""
    photo, mask = first_photo(work)
    rows = []
    for run in range(repeats):
        for label, code in codes.items():
            for mode in modes:
                for hidden in ((False, True) if table else (False,)):
                    cmd = [sys.executable, __file__, "--probe", mode, "--shapes", "0", "--index", str(index),
                           "--work", str(work), *(["--weights", weights] if weights else []),
                           *(["--probe-table"] if hidden else []), *(["--probe-dense"] if dense else [])]
                    env = {**os.environ, "PYTHONPATH": code}
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode:
                        raise SystemExit(f"probe {label} {mode} failed: {proc.stderr.strip()[-800:]}")
                    row = {"code": label, "mode": mode, "run": run, **json.loads(proc.stdout.splitlines()[-1])}
                    rows.append(row)
                    print(f"  serve probe {label} {mode} ({row['source']}): first answer "
                          f"{row['imports_to_first_answer_s']:.2f} s after the imports, peak RSS "
                          f"{row['after_reload']['peak_rss_gb']:.2f} GB", flush=True)
    return rows


def measure(index: Path, work: Path, weights: str | None, repeats: int) -> dict:
    queries = [json.loads(line) for line in (work / "queries.jsonl").read_text().splitlines()]
    photo, mask = first_photo(work)
    weights_args = ["--weights", weights] if weights else []
    bare = min(wall_of([sys.executable, "-c", "import ibsr.cli.search; from ibsr.searcher import Searcher"])[0]
               for _ in range(repeats))
    out = {"bare_import_s": bare, "search_process": {}}
    for mode in ("category", "none"):
        runs = [wall_of([str(BIN / "ibsr-search"), photo, "--mask", mask, "--index", str(index), "--prefilter", mode,
                         "--json", *weights_args]) for _ in range(repeats)]
        out["search_process"][mode] = {"wall_s": min(r[0] for r in runs), "first_wall_s": runs[0][0],
                                       "peak_rss_gb": runs[0][1],
                                       "shapes_scored": json.loads(runs[0][2])[0]["shapes_scored"]}
    out.update(measure_in_process(index, work, queries, weights, repeats))
    out["open_from_table_s"] = open_from_table(index, weights)
    return out


def open_from_table(index: Path, weights: str | None) -> float:
    """Searcher construction without the sidecar (as before it existed), for comparison; after
    the peak RSS above was taken (it holds a copy of every view)."""
    import ibsr.index.snapshot as snapshot
    from ibsr.searcher import Searcher

    read_flat, snapshot.read_flat = snapshot.read_flat, lambda *args, **kwargs: None
    try:
        t = time.perf_counter()
        searcher = Searcher(index, weights=weights)
        assert searcher.shapes.source == "table"
        return time.perf_counter() - t
    finally:
        snapshot.read_flat = read_flat


def measure_in_process(index: Path, work: Path, queries: list[dict], weights: str | None, repeats: int) -> dict:
    import torch

    from ibsr import kernels
    from ibsr.searcher import Searcher

    t = time.perf_counter()
    searcher = Searcher(index, weights=weights)
    open_s = time.perf_counter() - t
    loaded = searcher.load_queries([str(work / r["image"]) for r in queries[:64]],
                                   [str(work / r["mask"]) for r in queries[:64]])
    q, wq = searcher.encode(loaded)
    rows = {}
    for mode in MODES:
        for b in (1, 64):
            b = min(b, len(loaded))
            if b == 1:  # single queries differ in how much pruning skips: the mean of several
                calls = [search_call(searcher, mode, loaded[i:i + 1], q[i:i + 1], wq[i:i + 1])
                         for i in range(min(8, len(loaded)))]
                seconds = float(np.mean([c[0] for c in calls]))
                scored = float(np.mean([c[1] for c in calls]))
            else:
                calls = [search_call(searcher, mode, loaded[:b], q[:b], wq[:b]) for _ in range(repeats)]
                seconds, scored = min(c[0] for c in calls), calls[0][1]
            rows[f"{mode}_b{b}"] = {"mode": mode, "batch": b, "ms_per_call": 1e3 * seconds,
                                    "queries_per_s": b / seconds, "fraction_scored": scored}
            print(f"  {mode} B={b}: {1e3 * seconds:.1f} ms, {100 * scored:.2f}% scored", flush=True)
    exact = searcher.search_encoded(loaded, q, wq, topk=10, prefilter="none")
    dense = kernels.rerank(q, wq, searcher.views, 10)
    assert torch.allclose(torch.tensor([[h.score for h in r.hits] for r in exact]), dense.scores, atol=1e-5)
    return {"open_s": open_s, "open_source": searcher.shapes.source, "shapes": len(searcher),
            "torch_threads": torch.get_num_threads(), "modes": rows,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def search_call(searcher, mode: str, queries, q, wq) -> tuple[float, float]:
    """(seconds, mean fraction of shapes scored) of one prefilter + rerank call."""
    from ibsr import kernels

    t = time.perf_counter()
    if mode == "dense":  # the exhaustive pass over every shape that `none` replaced
        kernels.rerank(q, wq, searcher.views, 10)
        return time.perf_counter() - t, 1.0
    results = searcher.search_encoded(queries, q, wq, topk=10, prefilter=mode, candidates=1000)
    return time.perf_counter() - t, float(np.mean([r.shapes_scored for r in results]))


def print_table(n: int, m: dict) -> None:
    print(f"\nN = {n:,} ({m['open_source']}); bare import {m['bare_import_s']:.2f} s; open {m['open_s']:.2f} s "
          f"(from the table, without the sidecar: {m['open_from_table_s']:.2f} s); peak RSS {m['peak_rss_gb']:.2f} GB")
    for mode, s in m["search_process"].items():
        print(f"ibsr-search --prefilter {mode}: {s['wall_s']:.2f} s wall (first {s['first_wall_s']:.2f} s), "
              f"+{s['wall_s'] - m['bare_import_s']:.2f} s over the bare import, peak RSS {s['peak_rss_gb']:.2f} GB, "
              f"{100 * s['shapes_scored']:.2f}% scored")
    print("| mode | B=1 ms | B=1 queries/s | B=64 ms | B=64 queries/s | shapes scored (B=1) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode in MODES:
        one, many = m["modes"][f"{mode}_b1"], next(v for k, v in m["modes"].items() if k.startswith(mode + "_b")
                                                   and v["batch"] > 1)
        print(f"| {mode} | {one['ms_per_call']:.1f} | {one['queries_per_s']:.1f} | {many['ms_per_call']:.1f} | "
              f"{many['queries_per_s']:.1f} | {100 * one['fraction_scored']:.2f}% |")


def print_serve_table(rows: list[dict]) -> None:
    print("| code | mode | source | imports s | open s | answer s | imports to first answer s (CPU s) | peak RSS GB "
          "| anon GB | file GB | reload s | peak RSS after reload GB | anon after reload GB |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "after_dense" in r:
            print(f"  {r['code']} {r['mode']} ({r['source']}): after a dense pass over every view "
                  f"({r['dense_s']:.2f} s): {r['after_dense']}")
    for r in rows:
        first, second = r["after_first_answer"], r["after_reload"]
        first_answer = f"{r['imports_to_first_answer_s']:.2f} ({r['cpu_imports_to_first_answer_s']:.2f})"
        print(f"| {r['code']} | {r['mode']} | {r['source']} | {r['imports_s']:.2f} | {r['open_s']:.2f} | "
              f"{r['answer_s']:.2f} | {first_answer} | {first['peak_rss_gb']:.2f} | "
              f"{first['anon_gb']:.2f} | {first['file_gb']:.2f} | {r['reload_s']:.2f} | {second['peak_rss_gb']:.2f} | "
              f"{second['anon_gb']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, required=True, help="N, the synthetic index's size")
    parser.add_argument("--index", type=Path, required=True, help="where the synthetic index is (or is written)")
    parser.add_argument("--build-only", action="store_true", help="write the index, measure nothing")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--work", type=Path, default=Path("data/scale/base"), help="the real base catalog + index")
    parser.add_argument("--weights", default=None, help="model (default: the shipped one)")
    parser.add_argument("--base-per-category", type=int, default=2, help="real shapes per category in the base")
    parser.add_argument("--base-categories", type=int, default=36, help="first this many ibsr.synth categories")
    parser.add_argument("--repeats", type=int, default=2, help="runs per timed case (best kept)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--serve-only", action="store_true", help="only the serve probes")
    parser.add_argument("--serve-code", action="append", default=[], metavar="LABEL=DIR",
                        help="run the serve probes against the ibsr package in DIR (repeatable)")
    parser.add_argument("--probe-modes", nargs="+", default=["category", "none"], help="the serve probes' prefilters")
    parser.add_argument("--probe-table", action="store_true", help="also probe with the sidecar hidden")
    parser.add_argument("--probe-dense", action="store_true", help="end each probe with a dense pass")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # a probe child's mode
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.index, *first_photo(args.work), args.weights, args.probe, args.probe_table,
                               args.probe_dense)))
        return
    from ibsr.synth import CATEGORIES

    base = build_base(args.work, args.weights, args.base_per_category, list(CATEGORIES[:args.base_categories]),
                      args.seed)
    report = {"cpu": cpu_model(), "shapes": args.shapes, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_before": os.getloadavg()}
    if not (args.index / "flat").is_dir():
        report["build"] = write_synthetic(args.index, base, args.shapes, args.seed)
    if not (args.build_only or args.serve_only):
        report.update(measure(args.index, args.work, args.weights, args.repeats))
    if not args.build_only:
        import ibsr

        codes = dict(c.split("=", 1) for c in args.serve_code) or {"this": str(Path(ibsr.__file__).parents[1])}
        report["serve"] = serve_probes(args.index, args.work, args.weights, codes, args.probe_modes, args.repeats,
                                       args.probe_table, args.probe_dense)
        report["load_after"] = os.getloadavg()
    if not (args.build_only or args.serve_only):
        print_table(args.shapes, report)
    if not args.build_only:
        print_serve_table(report["serve"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
