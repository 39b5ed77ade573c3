"""Thread cliffs (issue 12): the CPU rerank and the encoders on a quiet machine and with a
competing process keeping one core busy, the old way against the new, ratios in one run.

    flock /tmp/ibsr-bench.lock .venv/bin/python benchmarks/threads.py --json benchmarks/out/threads.json

Variants (same process, same inputs):
  old   one OpenMP team: torch.set_num_threads(<usable CPUs>) in the calling thread, the
        work in one call (the rerank's chunk loop in this thread; one encoder call per batch),
        float32: what ibsr did before issue 12.
  new   ibsr as shipped: independent chunks (rerank chunks, one photo or one shape per item)
        on the pool of single-threaded workers (`ibsr.cpus.parallel_map`), float32
        (IBSR_PRECISION=float32, so the threads alone are compared).
  new-bf16  the same with IBSR_PRECISION=bf16 (bf16 autocast; under `auto`, what the query
        encoder uses on CPUs with AVX512-BF16/AMX; index builds stay float32).
Workloads: rerank of N x 12 x 128 float16 unit vectors (k = 10) for B = 1 and B = 64; the
shipped default model's query encoder on a batch of --photos photos and on one photo; its
rendering encoder on --view-shapes shapes of 12 views (as an index build batch does).
"Loaded": a subprocess running `while True: pass` (one core busy) for the whole cell.
Each cell: one warm-up, then the median of --repeat runs (fewer past --max-seconds).
A second table: the rerank's GEMM in float32 vs bf16 (IBSR_PRECISION=bf16), quiet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ibsr import cpus, kernels  # noqa: E402
from ibsr.kernels import torch_path  # noqa: E402
from ibsr.model import inference, load_default_model  # noqa: E402
from ibsr.precision import cpu_has_bf16  # noqa: E402
from rerank import make_queries, make_views  # noqa: E402


def cpu_model() -> str:
    return next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")


def cpu_flags() -> str:
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)


@contextlib.contextmanager
def competing_process(on: bool):
    """One core kept busy by another process while the block runs."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def variant(name: str, threads: int):
    """old: the work inline in this thread, one OpenMP team of `threads`; new: the pool."""
    saved = os.environ.get("IBSR_PRECISION")
    os.environ["IBSR_PRECISION"] = "bf16" if name == "new-bf16" else "float32"
    inline = lambda fn, items: map(fn, items)  # noqa: E731
    patched = [(torch_path, "parallel_map"), (inference, "parallel_map")]
    originals = [getattr(m, a) for m, a in patched]
    if name == "old":
        torch.set_num_threads(threads)
        for m, a in patched:
            setattr(m, a, inline)
    try:
        yield
    finally:
        for (m, a), f in zip(patched, originals):
            setattr(m, a, f)
        torch.set_num_threads(1)
        os.environ.pop("IBSR_PRECISION") if saved is None else os.environ.__setitem__("IBSR_PRECISION", saved)


def timings_ms(fn, repeat: int, max_seconds: float) -> list[float]:
    """Sorted ms of up to `repeat` calls after one warm-up, stopping after `max_seconds`."""
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < repeat and (not times or time.perf_counter() - start < max_seconds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return sorted(times)


def median_ms(fn, repeat: int, max_seconds: float) -> tuple[float, int]:
    times = timings_ms(fn, repeat, max_seconds)
    return times[len(times) // 2], len(times)


def workloads(args):
    views = make_views(args.shapes, "cpu")
    model = load_default_model()
    c = model.config
    g = torch.Generator().manual_seed(0)
    photos = torch.rand(args.photos, 4, c.query_size, c.query_size, generator=g) * 2 - 1
    shapes = torch.rand(args.view_shapes, c.views, 1, c.render_size, c.render_size, generator=g) * 2 - 1
    out = {}
    for B in args.b:
        q, wq = make_queries(B, "cpu")
        out[f"rerank N={args.shapes} B={B}"] = (lambda q=q, wq=wq: kernels.rerank(q, wq, views, 10)), ("old", "new")
    enc = ("old", "new", "new-bf16")
    out[f"query encoder, {args.photos} photos"] = (lambda: inference.embed_queries(model, photos)), enc
    out["query encoder, 1 photo"] = (lambda: inference.embed_queries(model, photos[:1])), enc
    views_name = f"rendering encoder, {args.view_shapes} shapes x 12 views"
    out[views_name] = (lambda: inference.embed_views(model, shapes)), enc
    return out, views


def main():
    # torch's threads and precision are what this measures (ONNX Runtime: benchmarks/runtime.py)
    os.environ.setdefault("IBSR_RUNTIME", "torch")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, default=100_000)
    parser.add_argument("--b", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--view-shapes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    threads = cpus.usable_cpus()
    torch.set_num_threads(1)
    loads = [os.getloadavg()[0]]
    work, views = workloads(args)
    rows = []
    for name, (fn, variants) in work.items():
        for v in variants:
            row = {"workload": name, "variant": v, "loadavg_1min": round(os.getloadavg()[0], 2)}
            for loaded in (False, True):
                with competing_process(loaded), variant(v, threads):
                    ms, row["runs"] = median_ms(fn, args.repeat, args.max_seconds)
                    row["loaded_ms" if loaded else "quiet_ms"] = ms
            row["ratio"] = row["loaded_ms"] / row["quiet_ms"]
            rows.append(row)
            print(f"{name:<40} {v:<8} quiet {row['quiet_ms']:9.1f} ms  loaded {row['loaded_ms']:9.1f} ms  "
                  f"x{row['ratio']:.2f}", flush=True)
    precision_rows = []
    for B in args.b:
        q, wq = make_queries(B, "cpu")
        ref = kernels.rerank(q, wq, views, 10)
        for p in ("float32", "bf16"):
            with variant("new", threads):
                os.environ["IBSR_PRECISION"] = p
                ms, runs = median_ms(lambda: kernels.rerank(q, wq, views, 10), args.repeat, args.max_seconds)
                got = kernels.rerank(q, wq, views, 10)
            pairs = zip(got.indices.tolist(), ref.indices.tolist())
            overlap = sum(len(set(a) & set(b)) for a, b in pairs) / ref.indices.numel()
            row = {"B": B, "precision": p, "ms": ms, "runs": runs, "top10_overlap_vs_float32": overlap,
                   "max_abs_score_diff": float((got.scores - ref.scores).abs().max())}
            precision_rows.append(row)
            print(f"rerank N={args.shapes} B={B} {p:<8} {ms:9.1f} ms  top-10 overlap {overlap:.3f}  "
                  f"max |score diff| {row['max_abs_score_diff']:.2e}", flush=True)
    loads.append(os.getloadavg()[0])
    meta = {"cpu": cpu_model(), "flags": cpu_flags(), "bf16_native": cpu_has_bf16(), "usable_cpus": threads,
            "pool_workers": cpus.torch_workers(), "torch": torch.__version__, "loadavg_1min_before_after": loads,
            "args": {k: str(v) for k, v in vars(args).items()}}
    print(json.dumps(meta))
    print("\n| workload | variant | quiet ms | one core busy ms | busy / quiet | load avg |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['workload']} | {r['variant']} | {r['quiet_ms']:.1f} | {r['loaded_ms']:.1f} | {r['ratio']:.2f}x "
              f"| {r['loadavg_1min']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows, "precision": precision_rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
